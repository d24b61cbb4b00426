//! SPEC 7 scenarios 1, 4, 6, 7 and 8 against a real API server and the AWX simulator acting as
//! the playbooks. Every assertion reads the status persisted by the API server.

use std::time::Duration;

use cloudkit_aap_sim::Outcome;
use cloudkit_api::metadata::*;
use cloudkit_api::{JobState, JobType, Phase, ProviderKind, config_version};
use cloudkit_provider::ProviderRegistry;
use cloudkit_reconciler::{Settings, find_condition};
use cloudkit_test_support::*;

use crate::harness::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aap_job_states_follow_the_controller_and_ci_reaches_running() {
    let ns = env().namespace("s1").await;
    let sim = simulator(
        phases(600, 400, 1200),
        phases(100, 0, 200),
        Outcome::Successful,
    )
    .await;
    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    let api = api(&ns).await;
    CiFixture::new("vm-1").create(&api).await;

    // Record every state the persisted job goes through.
    let mut seen: Vec<JobState> = Vec::new();
    let done = {
        let start = std::time::Instant::now();
        loop {
            let ci = api.get("vm-1").await.unwrap();
            if let Some(j) = latest(&ci, JobType::Provision).filter(|j| !j.job_id.is_empty()) {
                if seen.last() != Some(&j.state) {
                    seen.push(j.state);
                }
                // The playbook writes the annotation just before AAP reports success, so the
                // phase can turn Running a poll before the job turns Succeeded.
                if ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
                    && j.state == JobState::Succeeded
                {
                    break ci;
                }
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out; states seen {seen:?}; status {:?}",
                ci.status
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let order = [
        JobState::Pending,
        JobState::Waiting,
        JobState::Running,
        JobState::Succeeded,
    ];
    let positions: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "states out of order: {seen:?}"
    );
    assert!(
        seen.contains(&JobState::Running),
        "Running observed: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&JobState::Succeeded), "{seen:?}");

    let status = done.status.clone().unwrap();
    let job = latest(&done, JobType::Provision).unwrap();
    assert!(
        job.job_id.parse::<u64>().is_ok(),
        "AAP's numeric id: {}",
        job.job_id
    );
    assert_eq!(job.provider, Some(ProviderKind::Aap));
    let desired = config_version(&done.spec);
    assert_eq!(job.config_version.as_deref(), Some(desired.as_str()));
    assert_eq!(
        status.desired_config_version.as_deref(),
        Some(desired.as_str())
    );
    assert_eq!(
        status.reconciled_config_version.as_deref(),
        Some(desired.as_str())
    );
    let annotation = done
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECONCILED_CONFIG_VERSION_ANNOTATION));
    assert_eq!(
        annotation,
        Some(&desired),
        "the playbook wrote the annotation"
    );
    let cond = find_condition(&status.conditions, CONDITION_CONFIGURATION_APPLIED).unwrap();
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("True", "Applied")
    );
    let finalizers = done.metadata.finalizers.clone().unwrap_or_default();
    assert!(
        finalizers.contains(&FINALIZER.to_string())
            && finalizers.contains(&AAP_FINALIZER.to_string())
    );
    assert_eq!(sim.simulator().stats().launches, 1);

    eventually("JobStarted and JobSucceeded events", || async {
        let reasons = event_reasons(&ns, "vm-1").await;
        reasons.iter().any(|r| r == "JobStarted") && reasons.iter().any(|r| r == "JobSucceeded")
    })
    .await;
    let text = op.metrics.render();
    assert!(
        text.contains(r#"cloudkit_jobs_started_total{type="provision",provider="aap"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"cloudkit_jobs_finished_total{type="provision",provider="aap",state="Succeeded"} 1"#
        ),
        "{text}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_during_provision_cancels_then_deprovisions_once() {
    let ns = env().namespace("s4").await;
    let sim = simulator(
        phases(100, 0, 20_000),
        phases(100, 0, 300),
        Outcome::Successful,
    )
    .await;
    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    let api = api(&ns).await;
    CiFixture::new("vm-4").create(&api).await;
    let ci = wait_for(&api, "vm-4", Some(&sim), "a running provision job", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Running)
    })
    .await;
    let provision_id = latest(&ci, JobType::Provision).unwrap().job_id;

    delete(&api, "vm-4").await;
    let last = wait_gone(&api, "vm-4", Some(&sim))
        .await
        .expect("seen before it went");

    let stats = sim.simulator().stats();
    assert_eq!(stats.launches_by_template.get(PROVISION_TEMPLATE), Some(&1));
    assert_eq!(
        stats.launches_by_template.get(DEPROVISION_TEMPLATE),
        Some(&1),
        "exactly one deprovision"
    );
    assert!(
        stats.cancels >= 1,
        "the provision job was cancelled: {stats:?}"
    );
    assert_eq!(stats.jobs_by_status.get("canceled"), Some(&1), "{stats:?}");
    assert_eq!(
        stats.jobs_by_status.get("successful"),
        Some(&1),
        "{stats:?}"
    );

    // Never both at once: the deprovision job started after the provision job finished.
    let provision = sim_job(&sim, &provision_id).await;
    let deprovision_id = latest(&last, JobType::Deprovision)
        .map(|j| j.job_id)
        .unwrap_or_default();
    let deprovision = if deprovision_id.is_empty() {
        // The CI went before its last status was seen: find the job at the simulator.
        let list = sim_get(&sim, "v2/jobs/?order_by=-id").await;
        list["results"][0].clone()
    } else {
        sim_job(&sim, &deprovision_id).await
    };
    assert_eq!(provision["status"], "canceled");
    let finished = provision["finished"]
        .as_str()
        .expect("provision finished")
        .to_string();
    let created = deprovision["created"]
        .as_str()
        .or(deprovision["started"].as_str())
        .expect("deprovision timestamps")
        .to_string();
    assert!(
        created >= finished,
        "deprovision created {created} before provision finished {finished}"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_deletion_is_released_by_each_escape_hatch() {
    let ns = env().namespace("s6").await;
    let sim = simulator(phases(50, 0, 100), phases(50, 0, 100), Outcome::Failed).await;
    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    let api = api(&ns).await;
    for name in ["vm-retry", "vm-manual"] {
        CiFixture::new(name).create(&api).await;
    }
    for name in ["vm-retry", "vm-manual"] {
        wait_for(&api, name, Some(&sim), "phase Running", |ci| {
            ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
        })
        .await;
        delete(&api, name).await;
    }
    for name in ["vm-retry", "vm-manual"] {
        let ci = wait_for(&api, name, Some(&sim), "DeletionBlocked=True", |ci| {
            ci.status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, CONDITION_DELETION_BLOCKED))
                .is_some_and(|c| c.status == "True")
        })
        .await;
        let cond = find_condition(
            &ci.status.as_ref().unwrap().conditions,
            CONDITION_DELETION_BLOCKED,
        )
        .unwrap();
        assert!(
            cond.message.contains(RETRY_ANNOTATION) && cond.message.contains("manual"),
            "{}",
            cond.message
        );
        let d = latest(&ci, JobType::Deprovision).unwrap();
        assert_eq!(
            (d.state, d.block_deletion_on_failure),
            (JobState::Failed, Some(true))
        );
        assert_eq!(ci.status.as_ref().unwrap().phase, Some(Phase::Deleting));
    }
    eventually("a DeletionBlocked event", || async {
        event_reasons(&ns, "vm-retry")
            .await
            .iter()
            .any(|r| r == "DeletionBlocked")
    })
    .await;
    // Still there a while later: the block holds.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(api.get_opt("vm-retry").await.unwrap().is_some());
    let deprovisions = sim
        .simulator()
        .stats()
        .launches_by_template
        .get(DEPROVISION_TEMPLATE)
        .copied();
    assert_eq!(
        deprovisions,
        Some(2),
        "one deprovision per deletion, no automatic repeats"
    );

    // Hatch 1: retry. This time the automation succeeds (the simulator reads the outcome from
    // the CI's templateParameters).
    merge_patch(
        &api,
        "vm-retry",
        serde_json::json!({"spec": {"templateParameters": "{\"sim_outcome\": \"successful\"}"}, "metadata": {"annotations": {RETRY_ANNOTATION: "1"}}}),
    )
    .await;
    wait_gone(&api, "vm-retry", Some(&sim)).await;

    // Hatch 2: manual. The operator lets go without deprovisioning; the automation's own
    // finalizer stays for whoever cleans up the VM.
    annotate(&api, "vm-manual", MANAGEMENT_STATE_ANNOTATION, "manual").await;
    let ci = wait_for(
        &api,
        "vm-manual",
        Some(&sim),
        "operator finalizer released",
        |ci| {
            !ci.metadata
                .finalizers
                .clone()
                .unwrap_or_default()
                .contains(&FINALIZER.to_string())
        },
    )
    .await;
    assert_eq!(
        ci.metadata.finalizers,
        Some(vec![AAP_FINALIZER.to_string()])
    );
    assert_eq!(
        sim.simulator()
            .stats()
            .launches_by_template
            .get(DEPROVISION_TEMPLATE)
            .copied(),
        Some(3),
        "the retry ran one more deprovision; manual ran none"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_stays_bounded_across_reprovisions() {
    let ns = env().namespace("s7").await;
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let settings = Settings {
        history_limit: 3,
        ..settings()
    };
    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings).await;
    let api = api(&ns).await;
    CiFixture::new("vm-7").create(&api).await;
    for round in 0..7 {
        if round > 0 {
            let params = format!("{{\"round\": {round}}}");
            merge_patch(
                &api,
                "vm-7",
                serde_json::json!({"spec": {"templateParameters": params}}),
            )
            .await;
        }
        let ci = wait_for(
            &api,
            "vm-7",
            Some(&sim),
            "the new configuration applied",
            |ci| {
                let s = ci.status.clone().unwrap_or_default();
                let desired = config_version(&ci.spec);
                s.reconciled_config_version.as_deref() == Some(desired.as_str())
                    && latest(ci, JobType::Provision).is_some_and(|j| {
                        j.config_version.as_deref() == Some(desired.as_str())
                            && j.state == JobState::Succeeded
                    })
            },
        )
        .await;
        assert!(
            jobs(&ci).len() <= 3,
            "round {round}: {} jobs",
            jobs(&ci).len()
        );
    }
    let ci = api.get("vm-7").await.unwrap();
    let history = jobs(&ci);
    assert_eq!(history.len(), 3);
    assert!(history.iter().all(|j| j.state == JobState::Succeeded));
    assert_eq!(
        sim.simulator().stats().launches,
        7,
        "one provision per configuration"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_change_reprovisions_once_and_restart_request_does_not() {
    let ns = env().namespace("s8").await;
    let sim = simulator(phases(20, 0, 100), phases(20, 0, 50), Outcome::Successful).await;
    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    let api = api(&ns).await;
    CiFixture::new("vm-8").create(&api).await;
    let first = wait_for(&api, "vm-8", Some(&sim), "Running", |ci| {
        ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    let version = first
        .status
        .as_ref()
        .unwrap()
        .desired_config_version
        .clone();

    let now = Time(k8s_openapi::jiff::Timestamp::now());
    merge_patch(
        &api,
        "vm-8",
        serde_json::json!({"spec": {"restartRequestedAt": now}}),
    )
    .await;
    // Evidence that a pass saw the restart request before asserting it launched nothing.
    let ci = wait_observed(&api, "vm-8", Some(&sim)).await;
    assert_eq!(
        sim.simulator().stats().launches,
        1,
        "a restart request is not a new configuration"
    );
    assert_eq!(ci.status.as_ref().unwrap().desired_config_version, version);

    merge_patch(
        &api,
        "vm-8",
        serde_json::json!({"spec": {"templateParameters": "{\"size\": \"large\"}"}}),
    )
    .await;
    let ci = wait_for(
        &api,
        "vm-8",
        Some(&sim),
        "the new configuration applied",
        |ci| {
            let s = ci.status.clone().unwrap_or_default();
            s.reconciled_config_version.as_deref() == Some(config_version(&ci.spec).as_str())
        },
    )
    .await;
    assert_eq!(ci.status.as_ref().unwrap().phase, Some(Phase::Running));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        sim.simulator().stats().launches,
        2,
        "exactly one re-provision"
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_token_shows_in_the_condition_and_heals() {
    let ns = env().namespace("auth").await;
    let sim = simulator(
        phases(100, 0, 60_000),
        phases(100, 0, 200),
        Outcome::Successful,
    )
    .await;
    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    let api = api(&ns).await;
    CiFixture::new("vm-1").create(&api).await;
    wait_for(&api, "vm-1", Some(&sim), "a running provision job", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Running)
    })
    .await;

    let mut faults = sim.simulator().faults();
    faults.unauthorized = true;
    sim.simulator().set_faults(faults.clone()).unwrap();
    let ci = wait_for(
        &api,
        "vm-1",
        Some(&sim),
        "a condition naming the 401",
        |ci| {
            ci.status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, CONDITION_CONFIGURATION_APPLIED))
                .is_some_and(|c| c.reason == "ProviderError" && c.message.contains("401"))
        },
    )
    .await;
    let job = latest(&ci, JobType::Provision).unwrap();
    assert_eq!(job.state, JobState::Running, "the job is not given up on");
    eventually("a ProviderAuthFailed event", || async {
        event_reasons(&ns, "vm-1")
            .await
            .iter()
            .any(|r| r == "ProviderAuthFailed")
    })
    .await;

    // A CI created meanwhile: its launch is refused, which is no failed attempt.
    CiFixture::new("vm-2").create(&api).await;
    let ci = wait_for(&api, "vm-2", Some(&sim), "a refused launch", |ci| {
        ci.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, CONDITION_CONFIGURATION_APPLIED))
            .is_some_and(|c| c.message.contains("launch refused") && c.message.contains("401"))
    })
    .await;
    assert!(
        jobs(&ci).iter().all(|j| !j.is_terminal()),
        "no failed job: {:?}",
        jobs(&ci)
    );

    faults.unauthorized = false;
    sim.simulator().set_faults(faults).unwrap();
    wait_for(
        &api,
        "vm-1",
        Some(&sim),
        "the error condition cleared",
        |ci| {
            ci.status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, CONDITION_CONFIGURATION_APPLIED))
                .is_some_and(|c| c.reason != "ProviderError")
        },
    )
    .await;
    let ci = wait_for(&api, "vm-2", Some(&sim), "vm-2's job running", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Running)
    })
    .await;
    let job = latest(&ci, JobType::Provision).unwrap();
    assert_eq!(job.attempt, Some(1), "the refusal used no attempt");
    assert_eq!(sim.simulator().stats().launches, 2);
    op.stop().await;
}
