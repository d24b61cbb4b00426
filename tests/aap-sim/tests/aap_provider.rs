//! Contract tests: the operator's AAP provider (`cloudkit-aap`) against this simulator, end to end
//! over HTTP (job phases on a clock, cancellation, templates that do not prompt for variables,
//! purged jobs, a revoked token). They live here, not in `cloudkit-aap`, so that no product crate
//! depends on the simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cloudkit_aap::{AapConfig, AapProvider};
use cloudkit_aap_sim::{Faults, Phases, SimHandle, Simulator, TemplateSpec};
use cloudkit_api::{
    AapJobKind, ComputeInstance, ComputeInstanceSpec, JobState, JobStatus, JobType,
};
use cloudkit_provider::{
    CancelOutcome, DeprovisionOutcome, Launch, LaunchLookup, Provider, ProviderError,
    ProviderErrorKind, Secret, StartedJob,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// The token the provider sends; no error may ever show it.
const TOKEN: &str = "tok-3f9c2a7e-never-shown";
const PROVISION: &str = "provision_vm";
const DEPROVISION: &str = "deprovision_vm";

fn config_for(base: &str) -> AapConfig {
    AapConfig::new(base, Secret::new(TOKEN), PROVISION, DEPROVISION)
        .and_then(|c| c.with_request_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

fn ci() -> ComputeInstance {
    let mut spec = ComputeInstanceSpec::for_template("osac.templates.ocp_virt_vm");
    spec.cores = Some(2);
    let mut ci = ComputeInstance::new("vm-1", spec);
    ci.metadata.namespace = Some("tenant-a".into());
    ci.metadata.uid = Some("0b6f8e6c-1111-2222-3333-444455556666".into());
    ci
}

/// A history entry as the operator records it after a launch.
fn recorded(id: &str, job_type: JobType, kind: Option<AapJobKind>) -> JobStatus {
    let mut job = JobStatus::new(id, job_type, Time(Timestamp::UNIX_EPOCH), JobState::Pending);
    job.aap_job_kind = kind;
    job
}

/// Asserts the promises of every provider error message: one line, short, no token (in
/// Display, Debug or any source).
fn assert_clean(err: &ProviderError) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "multi-line message: {text}");
    assert!(
        text.len() <= 1024,
        "message longer than 1 KiB: {} bytes",
        text.len()
    );
    let mut all = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        all.push_str(&format!(" | {s} | {s:?}"));
        source = s.source();
    }
    assert!(!all.contains(TOKEN), "token shown in error: {all}");
}

fn phases(secs: u64) -> Phases {
    let d = Duration::from_secs(secs);
    Phases::new(d, d, d)
}

async fn sim(templates: Vec<TemplateSpec>) -> SimHandle {
    let mut builder = Simulator::builder().token(TOKEN).fast();
    for t in templates {
        builder = builder.template(t);
    }
    builder.spawn("127.0.0.1:0".parse().unwrap()).await.unwrap()
}

fn standard() -> Vec<TemplateSpec> {
    vec![
        TemplateSpec::job(PROVISION).with_phases(phases(20)),
        TemplateSpec::workflow(DEPROVISION).with_phases(phases(20)),
    ]
}

fn provider_at(url: &str) -> AapProvider {
    AapProvider::new(&config_for(url)).unwrap()
}

fn as_recorded(started: &StartedJob, job_type: JobType) -> JobStatus {
    recorded(&started.job_id, job_type, started.aap_job_kind)
}

/// Polls until the job is terminal; returns every distinct state seen, in order.
async fn poll_to_end(p: &AapProvider, job: &JobStatus) -> Vec<JobState> {
    let mut seen: Vec<JobState> = Vec::new();
    for _ in 0..400 {
        let state = p.job_state(&ci(), job).await.unwrap().state;
        if seen.last() != Some(&state) {
            seen.push(state);
        }
        if state.is_terminal() {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("job {} never finished: {seen:?}", job.job_id);
}

#[tokio::test]
async fn provision_and_deprovision_run_to_success_on_both_api_prefixes() {
    let handle = sim(standard()).await;
    for url in [handle.api_url(), handle.controller_url()] {
        let p = provider_at(&url);
        let started = p
            .provision(&ci(), &Launch::new(JobType::Provision, "k-prov"))
            .await
            .unwrap();
        assert_eq!(started.state, JobState::Pending);
        assert_eq!(started.aap_job_kind, Some(AapJobKind::Job));
        let states = poll_to_end(&p, &as_recorded(&started, JobType::Provision)).await;
        assert_eq!(states.last(), Some(&JobState::Succeeded), "{states:?}");
        assert!(!states.contains(&JobState::Unknown), "{states:?}");

        let DeprovisionOutcome::Started(started) = p
            .deprovision(&ci(), &Launch::new(JobType::Deprovision, "k-deprov"))
            .await
            .unwrap()
        else {
            panic!("deprovision not started");
        };
        assert_eq!(started.aap_job_kind, Some(AapJobKind::WorkflowJob));
        assert!(started.block_deletion_on_failure);
        let states = poll_to_end(&p, &as_recorded(&started, JobType::Deprovision)).await;
        assert_eq!(states.last(), Some(&JobState::Succeeded), "{states:?}");
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn a_failed_job_reports_its_traceback() {
    let handle = sim(standard()).await;
    let p = provider_at(&handle.api_url());
    let mut ci = ci();
    ci.spec.template_parameters =
        Some(r#"{"sim_outcome": "failed", "sim_message": "quota exceeded in zone a"}"#.into());
    let started = p
        .provision(&ci, &Launch::new(JobType::Provision, "k"))
        .await
        .unwrap();
    let job = as_recorded(&started, JobType::Provision);
    poll_to_end(&p, &job).await;
    let seen = p.job_state(&ci, &job).await.unwrap();
    assert_eq!(seen.state, JobState::Failed);
    assert!(
        seen.message
            .as_deref()
            .unwrap_or_default()
            .contains("quota exceeded in zone a"),
        "{seen:?}"
    );
    handle.shutdown().await;
}

#[tokio::test]
async fn a_running_job_is_cancelled() {
    let handle = sim(vec![
        TemplateSpec::job(PROVISION).with_phases(phases(3_600)),
        TemplateSpec::workflow(DEPROVISION).with_phases(phases(3_600)),
    ])
    .await;
    let p = provider_at(&handle.api_url());
    for job_type in JobType::ALL {
        let launch = Launch::new(job_type, "k");
        let started = match job_type {
            JobType::Provision => p.provision(&ci(), &launch).await.unwrap(),
            JobType::Deprovision => match p.deprovision(&ci(), &launch).await.unwrap() {
                DeprovisionOutcome::Started(s) => s,
                other => panic!("{other:?}"),
            },
        };
        let job = as_recorded(&started, job_type);
        assert_eq!(p.cancel(&job).await.unwrap(), CancelOutcome::Requested);
        let states = poll_to_end(&p, &job).await;
        assert_eq!(states.last(), Some(&JobState::Canceled), "{states:?}");
        assert_eq!(
            p.cancel(&job).await.unwrap(),
            CancelOutcome::AlreadyFinished
        );
    }
    handle.shutdown().await;
}

#[tokio::test]
async fn a_template_that_ignores_variables_is_refused_and_its_job_cancelled() {
    let handle = sim(vec![
        TemplateSpec::job(PROVISION)
            .with_phases(phases(3_600))
            .with_ask_variables(false),
        TemplateSpec::workflow(DEPROVISION),
    ])
    .await;
    let p = provider_at(&handle.api_url());
    let err = p
        .provision(&ci(), &Launch::new(JobType::Provision, "k"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("Prompt on launch"), "{err}");
    let launched = handle.simulator().stats().launches;
    assert_eq!(launched, 1);
    // The job that would have run without our variables was cancelled.
    let cancels = handle
        .simulator()
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/cancel/"))
        .count();
    assert_eq!(cancels, 1);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_lost_launch_is_found_by_its_key() {
    let handle = sim(standard()).await;
    let p = provider_at(&handle.api_url());
    let mut other = ci();
    other.metadata.name = Some("vm-2".into());
    p.provision(
        &other,
        &Launch::new(JobType::Provision, "tenant-a/vm-2/p/1"),
    )
    .await
    .unwrap();
    let started = p
        .provision(&ci(), &Launch::new(JobType::Provision, "tenant-a/vm-1/p/1"))
        .await
        .unwrap();
    let mut intent = recorded("", JobType::Provision, None);
    intent.launch_key = Some("tenant-a/vm-1/p/1".into());
    let LaunchLookup::Found(found) = p.find_launch(&ci(), &intent).await.unwrap() else {
        panic!("launch not found");
    };
    assert_eq!(found.job_id, started.job_id);
    assert_eq!(found.aap_job_kind, Some(AapJobKind::Job));

    intent.launch_key = Some("tenant-a/vm-1/p/2".into());
    assert_eq!(
        p.find_launch(&ci(), &intent).await.unwrap(),
        LaunchLookup::NotFound
    );

    let DeprovisionOutcome::Started(started) = p
        .deprovision(
            &ci(),
            &Launch::new(JobType::Deprovision, "tenant-a/vm-1/d/1"),
        )
        .await
        .unwrap()
    else {
        panic!("deprovision not started");
    };
    let mut intent = recorded("", JobType::Deprovision, None);
    intent.launch_key = Some("tenant-a/vm-1/d/1".into());
    let LaunchLookup::Found(found) = p.find_launch(&ci(), &intent).await.unwrap() else {
        panic!("workflow launch not found");
    };
    assert_eq!(found.job_id, started.job_id);
    assert_eq!(found.aap_job_kind, Some(AapJobKind::WorkflowJob));
    assert!(found.block_deletion_on_failure);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_purged_job_is_failed() {
    let handle = sim(vec![
        TemplateSpec::job(PROVISION).with_phases(phases(1)),
        TemplateSpec::workflow(DEPROVISION),
    ])
    .await;
    handle
        .simulator()
        .set_faults(Faults {
            purge_after: Some(Duration::from_millis(1)),
            ..Faults::default()
        })
        .unwrap();
    let p = provider_at(&handle.api_url());
    let started = p
        .provision(&ci(), &Launch::new(JobType::Provision, "k"))
        .await
        .unwrap();
    let job = as_recorded(&started, JobType::Provision);
    let mut last = None;
    for _ in 0..400 {
        let seen = p.job_state(&ci(), &job).await.unwrap();
        if seen
            .message
            .as_deref()
            .is_some_and(|m| m.contains("no longer has"))
        {
            last = Some(seen);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seen = last.expect("the job was never purged");
    assert_eq!(seen.state, JobState::Failed);
    handle.shutdown().await;
}

#[tokio::test]
async fn a_revoked_token_and_a_missing_template_are_typed() {
    let handle = sim(vec![TemplateSpec::job(PROVISION)]).await;
    let p = provider_at(&handle.api_url());
    // The deprovision template does not exist.
    let err = p
        .deprovision(&ci(), &Launch::new(JobType::Deprovision, "k"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains(DEPROVISION), "{err}");

    handle
        .simulator()
        .set_faults(Faults {
            unauthorized: true,
            ..Faults::default()
        })
        .unwrap();
    let err = p
        .provision(&ci(), &Launch::new(JobType::Provision, "k"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Auth, "{err}");
    assert_clean(&err);
    handle.shutdown().await;
}
