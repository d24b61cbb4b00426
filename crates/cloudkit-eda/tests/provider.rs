//! The EDA provider: job ids, the deprovision skip and job states read from the CI.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use cloudkit_api::{JobState, JobType, ProviderKind};
use cloudkit_eda::ACCEPTED_MESSAGE;
use cloudkit_provider::{
    CancelOutcome, DeprovisionOutcome, Launch, LaunchLookup, Provider, ProviderErrorKind,
    StartedJob,
};
use support::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn server() -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    server
}

async fn paths(server: &MockServer) -> Vec<String> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| r.url.path().to_string())
        .collect()
}

fn running(id: &str) -> StartedJob {
    let mut job = StartedJob::new(id, JobState::Running);
    job.message = Some(ACCEPTED_MESSAGE.into());
    job.block_deletion_on_failure = false;
    job
}

fn launch(job_type: JobType) -> Launch {
    Launch::new(job_type, "ns/vm/key-1")
}

#[tokio::test]
async fn identity() {
    let server = server().await;
    let (provider, _) = provider(config_for(&server));
    assert_eq!(provider.kind(), ProviderKind::Eda);
    assert!(!provider.polls_remotely());
    let job = job("eda-webhook-1", JobType::Provision, JobState::Running);
    assert_eq!(
        provider.cancel(&job).await.unwrap(),
        CancelOutcome::Unsupported
    );
    assert_eq!(
        provider.find_launch(&ci("ns", "vm"), &job).await.unwrap(),
        LaunchLookup::Unknowable
    );
    assert!(
        paths(&server).await.is_empty(),
        "nothing goes over the network"
    );
}

#[tokio::test]
async fn provision_then_deprovision_share_one_counter() {
    let server = server().await;
    let (provider, _) = provider(config_for(&server));
    let mut vm = with_finalizer(ci("ns", "vm"));

    let first = provider
        .provision(&vm, &launch(JobType::Provision))
        .await
        .unwrap();
    assert_eq!(first, running("eda-webhook-1"));

    // The reconciler records the job; the next id continues the count across types.
    status(&mut vm)
        .jobs
        .push(job(&first.job_id, JobType::Provision, JobState::Succeeded));
    let second = provider
        .deprovision(&vm, &launch(JobType::Deprovision))
        .await
        .unwrap();
    assert_eq!(
        second,
        DeprovisionOutcome::Started(running("eda-webhook-2"))
    );
    assert_eq!(paths(&server).await, [PROVISION_PATH, DEPROVISION_PATH]);
}

#[tokio::test]
async fn ids_follow_mixed_histories() {
    // (recorded ids with their types, next id)
    let rows: [(&[(&str, JobType)], &str); 5] = [
        (&[], "eda-webhook-1"),
        (&[("9219", JobType::Provision)], "eda-webhook-1"),
        (
            &[
                ("eda-webhook-1", JobType::Provision),
                ("eda-webhook-2", JobType::Deprovision),
                ("eda-webhook-3", JobType::Provision),
            ],
            "eda-webhook-4",
        ),
        (
            &[
                ("eda-webhook-7", JobType::Deprovision),
                ("eda-webhook-2", JobType::Provision),
                ("9219", JobType::Provision),
            ],
            "eda-webhook-8",
        ),
        (
            &[
                ("eda-webhook-x", JobType::Provision),
                ("eda-webhook-0", JobType::Provision),
                ("eda-webhook-", JobType::Deprovision),
                ("", JobType::Provision),
            ],
            "eda-webhook-1",
        ),
    ];
    for (history, want) in rows {
        let server = server().await;
        let (provider, _) = provider(config_for(&server));
        let mut vm = with_finalizer(ci("ns", "vm"));
        status(&mut vm).jobs = history
            .iter()
            .map(|(id, t)| job(id, *t, JobState::Succeeded))
            .collect();
        let p = provider
            .provision(&vm, &launch(JobType::Provision))
            .await
            .unwrap();
        assert_eq!(p.job_id, want, "provision after {history:?}");
        let d = provider
            .deprovision(&vm, &launch(JobType::Deprovision))
            .await
            .unwrap();
        assert_eq!(
            d,
            DeprovisionOutcome::Started(running(want)),
            "deprovision after {history:?}"
        );
    }
}

#[tokio::test]
async fn deprovision_without_the_aap_finalizer_is_skipped_without_a_request() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let (provider, _) = provider(config_for(&server));
    let mut only_ours = ci("ns", "vm");
    only_ours.metadata.finalizers = Some(vec!["cloudkit.openshift.io/computeinstance".into()]);
    for vm in [ci("ns", "vm"), only_ours] {
        let got = provider
            .deprovision(&vm, &launch(JobType::Deprovision))
            .await
            .unwrap();
        match got {
            DeprovisionOutcome::Skipped { message } => {
                assert!(
                    message.contains("cloudkit.openshift.io/computeinstance-aap"),
                    "{message}"
                );
            }
            other => panic!("expected Skipped, got {other:?}"),
        }
    }
    assert!(paths(&server).await.is_empty());
}

#[tokio::test]
async fn failed_triggers_start_no_job() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PROVISION_PATH))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(DEPROVISION_PATH))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let (provider, _) = provider(config_for(&server));
    let vm = with_finalizer(ci("ns", "vm"));
    let err = provider
        .provision(&vm, &launch(JobType::Provision))
        .await
        .expect_err("500");
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    let err = provider
        .deprovision(&vm, &launch(JobType::Deprovision))
        .await
        .expect_err("401");
    assert_eq!(err.kind(), ProviderErrorKind::Auth);
}

#[tokio::test]
async fn rate_limited_provision_reports_the_remaining_time() {
    let server = server().await;
    let (provider, clock) =
        provider(config_for(&server).with_minimum_request_interval(TEN_SECONDS));
    let vm = ci("ns", "vm");
    provider
        .provision(&vm, &launch(JobType::Provision))
        .await
        .unwrap();
    clock.advance(std::time::Duration::from_secs(4));
    let err = provider
        .provision(&vm, &launch(JobType::Provision))
        .await
        .expect_err("limited");
    assert_eq!(err.retry_after(), Some(std::time::Duration::from_secs(6)));
    assert_eq!(paths(&server).await.len(), 1);
}

/// One row of the job-state table: what the CI and the recorded job look like, what comes out.
struct Row {
    name: &'static str,
    job_type: JobType,
    recorded: JobState,
    config_version: Option<&'static str>,
    annotation: Option<&'static str>,
    status_reconciled: Option<&'static str>,
    status_desired: Option<&'static str>,
    aap_finalizer: bool,
    want: JobState,
}

const fn row(name: &'static str, job_type: JobType, want: JobState) -> Row {
    Row {
        name,
        job_type,
        recorded: JobState::Running,
        config_version: None,
        annotation: None,
        status_reconciled: None,
        status_desired: None,
        aap_finalizer: true,
        want,
    }
}

#[tokio::test]
async fn job_state_is_read_from_the_ci() {
    use JobState::{Canceled, Failed, Running, Succeeded, Unknown};
    use JobType::{Deprovision, Provision};
    let rows = [
        Row {
            config_version: Some("v2"),
            annotation: Some("v2"),
            ..row("annotation names the job's version", Provision, Succeeded)
        },
        Row {
            config_version: Some("v2"),
            status_reconciled: Some("v2"),
            ..row("status names the job's version", Provision, Succeeded)
        },
        Row {
            config_version: Some("v2"),
            annotation: Some("v2"),
            status_reconciled: Some("v1"),
            ..row("fresh annotation, stale status", Provision, Succeeded)
        },
        Row {
            config_version: Some("v2"),
            annotation: Some("v1"),
            status_reconciled: Some("v1"),
            status_desired: Some("v2"),
            ..row("older version reconciled", Provision, Running)
        },
        Row {
            config_version: Some("v1"),
            annotation: Some("v2"),
            status_desired: Some("v2"),
            ..row(
                "newer version reconciled, not this job's",
                Provision,
                Running,
            )
        },
        Row {
            config_version: Some("v2"),
            ..row("nothing reported yet", Provision, Running)
        },
        Row {
            config_version: Some("v2"),
            annotation: Some(""),
            status_reconciled: Some(""),
            ..row("empty reports", Provision, Running)
        },
        Row {
            status_desired: Some("v3"),
            annotation: Some("v3"),
            ..row("legacy job, annotation = desired", Provision, Succeeded)
        },
        Row {
            status_desired: Some("v3"),
            status_reconciled: Some("v3"),
            recorded: Unknown,
            ..row("legacy Unknown job, status = desired", Provision, Succeeded)
        },
        Row {
            status_desired: Some("v3"),
            status_reconciled: Some("v2"),
            recorded: Unknown,
            ..row("legacy job, desired not reconciled", Provision, Unknown)
        },
        Row {
            annotation: Some("v3"),
            ..row("legacy job, no desired version", Provision, Running)
        },
        Row {
            aap_finalizer: true,
            ..row("deprovision, finalizer still there", Deprovision, Running)
        },
        Row {
            aap_finalizer: false,
            ..row("deprovision, finalizer gone", Deprovision, Succeeded)
        },
        Row {
            aap_finalizer: false,
            recorded: Unknown,
            ..row("legacy deprovision, finalizer gone", Deprovision, Succeeded)
        },
        Row {
            recorded: Failed,
            config_version: Some("v2"),
            annotation: Some("v2"),
            ..row("terminal Failed stays", Provision, Failed)
        },
        Row {
            recorded: Canceled,
            config_version: Some("v2"),
            ..row("terminal Canceled stays", Provision, Canceled)
        },
        Row {
            recorded: Succeeded,
            config_version: Some("v2"),
            annotation: Some("v1"),
            ..row("terminal Succeeded stays", Provision, Succeeded)
        },
        Row {
            recorded: Failed,
            aap_finalizer: false,
            ..row("terminal deprovision stays", Deprovision, Failed)
        },
    ];

    let server = MockServer::start().await;
    let (provider, _) = provider(config_for(&server));
    for r in rows {
        let mut vm = ci("ns", "vm");
        if r.aap_finalizer {
            vm = with_finalizer(vm);
        }
        if let Some(v) = r.annotation {
            vm = with_annotation(vm, v);
        }
        status(&mut vm).reconciled_config_version = r.status_reconciled.map(Into::into);
        status(&mut vm).desired_config_version = r.status_desired.map(Into::into);
        let mut job = job("eda-webhook-1", r.job_type, r.recorded);
        job.config_version = r.config_version.map(Into::into);
        job.message = Some("recorded message".into());

        let got = provider.job_state(&vm, &job).await.unwrap();
        assert_eq!(got.state, r.want, "{}", r.name);
        let message = got.message.unwrap_or_default();
        if r.recorded.is_terminal() {
            assert_eq!(message, "recorded message", "{}", r.name);
        } else if r.want == r.recorded {
            // Still waiting: the recorded message (the webhook's acceptance) stays, so the
            // status is not rewritten; a job recorded without one gets the waiting text.
            assert_eq!(message, "recorded message", "{}", r.name);
            job.message = None;
            let fresh = provider.job_state(&vm, &job).await.unwrap();
            let text = fresh.message.unwrap_or_default();
            assert!(
                text.starts_with("waiting for the automation"),
                "{}: {text}",
                r.name
            );
        } else {
            assert!(
                message.starts_with("the automation"),
                "{}: {message}",
                r.name
            );
        }
    }
    assert!(
        paths(&server).await.is_empty(),
        "job states never go over the network"
    );
}
