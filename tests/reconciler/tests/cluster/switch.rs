//! SPEC 7 scenario 5: provisioned through EDA, the operator restarted with AAP, deprovisioned
//! through AAP; and the shell's handling of provider errors, with mocked providers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudkit_aap_sim::Outcome;
use cloudkit_api::metadata::*;
use cloudkit_api::{ComputeInstanceSpec, JobState, JobType, Phase, ProviderKind, config_version};
use cloudkit_provider::{MockProvider, Provider, ProviderError, ProviderRegistry};
use cloudkit_reconciler::{Settings, find_condition};
use cloudkit_test_support::*;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_with_eda_then_deprovisioned_with_aap_after_a_restart() {
    let ns = env().namespace("s5").await;
    let webhook = CountingWebhook::start().await;
    let url = webhook.url().to_string();
    let sim = simulator(phases(50, 0, 100), phases(50, 0, 200), Outcome::Successful).await;
    let api = api(&ns).await;

    let eda_settings = Settings {
        active: ProviderKind::Eda,
        ..settings()
    };
    let eda_op =
        Operator::start(&ns, ProviderRegistry::new(eda_provider(&url)), eda_settings).await;
    let created = create(
        &api,
        "vm-5",
        ComputeInstanceSpec::for_template("test_template"),
    )
    .await;
    let ci = wait_for(&api, "vm-5", None, "eda-webhook-1 running", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.job_id == "eda-webhook-1")
    })
    .await;
    assert_eq!(webhook.hits(), 1);
    let job = latest(&ci, JobType::Provision).unwrap();
    assert_eq!(
        (job.state, job.provider),
        (JobState::Running, Some(ProviderKind::Eda))
    );

    // The automation: adds its finalizer, then reports the applied configuration.
    let desired = config_version(&created.spec);
    merge_patch(
        &api,
        "vm-5",
        serde_json::json!({"metadata": {
            "finalizers": [FINALIZER, AAP_FINALIZER],
            "annotations": {RECONCILED_CONFIG_VERSION_ANNOTATION: desired},
        }}),
    )
    .await;
    wait_for(&api, "vm-5", None, "eda-webhook-1 succeeded", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Succeeded)
            && ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    eda_op.kill();

    // Restarted with AAP as the active provider (EDA still configured to read its old jobs).
    let registry = ProviderRegistry::new(aap_provider(&sim)).with_reader(eda_provider(&url));
    let aap_op = Operator::start(&ns, registry, settings()).await;
    delete(&api, "vm-5").await;
    let ci = wait_for(&api, "vm-5", Some(&sim), "an AAP deprovision job", |ci| {
        latest(ci, JobType::Deprovision).is_some_and(|j| !j.job_id.is_empty())
    })
    .await;
    let history = jobs(&ci);
    assert_eq!(history.len(), 2, "the history holds both: {history:?}");
    assert_eq!(
        (history[0].job_id.as_str(), history[0].owner()),
        ("eda-webhook-1", ProviderKind::Eda)
    );
    assert_eq!(history[1].owner(), ProviderKind::Aap);
    assert!(history[1].job_id.parse::<u64>().is_ok());
    wait_gone(&api, "vm-5", Some(&sim)).await;
    assert_eq!(webhook.hits(), 1, "no EDA deprovision");
    let stats = sim.simulator().stats();
    assert_eq!(
        stats.launches_by_template.get(DEPROVISION_TEMPLATE),
        Some(&1)
    );
    assert_eq!(stats.launches_by_template.get(PROVISION_TEMPLATE), None);
    aap_op.stop().await;
}

fn mock(configure: impl FnOnce(&mut MockProvider)) -> Arc<dyn Provider> {
    let mut m = MockProvider::new();
    m.expect_kind().return_const(ProviderKind::Aap);
    m.expect_polls_remotely().return_const(true);
    m.expect_can_cancel().return_const(true);
    m.expect_can_find_launches().return_const(true);
    m.expect_blocks_deletion_on_failure().return_const(true);
    configure(&mut m);
    Arc::new(m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_launch_is_not_retried_early() {
    let ns = env().namespace("m1").await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let provider = mock(|m| {
        m.expect_provision().returning(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::RateLimited {
                retry_after: Duration::from_secs(30),
            })
        });
    });
    let op = Operator::start(&ns, ProviderRegistry::new(provider), settings()).await;
    let api = api(&ns).await;
    create(&api, "vm", ComputeInstanceSpec::for_template("t")).await;
    let ci = wait_for(&api, "vm", None, "a ProviderError condition", |ci| {
        ci.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, CONDITION_CONFIGURATION_APPLIED))
            .is_some_and(|c| c.reason == "ProviderError")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one call inside the retry-after window"
    );
    assert!(
        jobs(&ci).is_empty(),
        "a refused launch leaves no job: {:?}",
        jobs(&ci)
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_trigger_is_recorded_and_reported() {
    let ns = env().namespace("m2").await;
    let provider = mock(|m| {
        m.expect_provision().times(1).returning(|_, _| {
            Err(ProviderError::Configuration(
                "no job template named \"p\"".into(),
            ))
        });
    });
    let op = Operator::start(&ns, ProviderRegistry::new(provider), settings()).await;
    let api = api(&ns).await;
    create(&api, "vm", ComputeInstanceSpec::for_template("t")).await;
    let ci = wait_for(&api, "vm", None, "phase Failed", |ci| {
        ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Failed)
    })
    .await;
    let job = latest(&ci, JobType::Provision).unwrap();
    assert_eq!(job.state, JobState::Failed);
    assert!(
        job.message
            .as_deref()
            .unwrap()
            .contains("no job template named"),
        "{job:?}"
    );
    let cond = find_condition(
        &ci.status.as_ref().unwrap().conditions,
        CONDITION_CONFIGURATION_APPLIED,
    )
    .unwrap();
    assert_eq!(cond.reason, "ProvisionFailed");
    eventually("TriggerFailed and ProvisionFailed events", || async {
        let r = event_reasons(&ns, "vm").await;
        r.iter().any(|x| x == "TriggerFailed") && r.iter().any(|x| x == "ProvisionFailed")
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_failure_while_polling_is_shown_and_polling_continues_at_the_interval() {
    let ns = env().namespace("m3").await;
    let polls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&polls);
    let provider = mock(|m| {
        m.expect_provision()
            .times(1)
            .returning(|_, _| Ok(cloudkit_provider::StartedJob::new("42", JobState::Pending)));
        m.expect_job_state().returning(move |_, _| {
            counter.fetch_add(1, Ordering::SeqCst);
            Err(ProviderError::Auth(
                "HTTP 401 from the AAP controller".into(),
            ))
        });
    });
    let op = Operator::start(&ns, ProviderRegistry::new(provider), settings()).await;
    let api = api(&ns).await;
    create(&api, "vm", ComputeInstanceSpec::for_template("t")).await;
    let ci = wait_for(&api, "vm", None, "the auth problem on the CI", |ci| {
        ci.status
            .as_ref()
            .and_then(|s| find_condition(&s.conditions, CONDITION_CONFIGURATION_APPLIED))
            .is_some_and(|c| c.reason == "ProviderError" && c.message.contains("401"))
    })
    .await;
    assert_eq!(
        latest(&ci, JobType::Provision).unwrap().state,
        JobState::Pending
    );
    eventually("a ProviderAuthFailed event", || async {
        event_reasons(&ns, "vm")
            .await
            .iter()
            .any(|r| r == "ProviderAuthFailed")
    })
    .await;
    let before = polls.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = polls.load(Ordering::SeqCst) - before;
    // Poll interval 200 ms with jitter: about 10 in 2 s; never a tight loop.
    assert!((3..=20).contains(&during), "{during} polls in 2 s");
    op.stop().await;
}
