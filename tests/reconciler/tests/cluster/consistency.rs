//! No duplicate and no lost jobs (SPEC 5.4), on a real API server with the AWX simulator.
//!
//! "Killing the operator" here aborts the controller task at a chosen instant inside a pass: no
//! further write or call happens, and the next controller starts with an empty memory, exactly
//! as a new process would. Everything that survives is in the API server and the simulator.

use std::sync::Arc;

use cloudkit_aap_sim::Outcome;
use cloudkit_api::intent::{status_never_written, with_recorded_intent};
use cloudkit_api::{ComputeInstance, JobState, JobType};
use cloudkit_provider::ProviderRegistry;
use cloudkit_reconciler::{Context, Metrics};
use cloudkit_test_support::*;

use crate::harness::*;
use kube::ResourceExt;

/// Waits for the first provision intent of a new CI: recorded with the finalizer, in the
/// provision-intent annotation, before any status write.
async fn intent_recorded(api: &kube::Api<ComputeInstance>, name: &str) -> ComputeInstance {
    let ci = wait_for(api, name, None, "a recorded provision intent", |ci| {
        latest(&with_recorded_intent(ci), JobType::Provision)
            .is_some_and(|j| j.job_id.is_empty() && j.launch_key.is_some())
    })
    .await;
    assert!(
        ci.finalizers()
            .contains(&cloudkit_api::metadata::FINALIZER.to_string()),
        "the intent travels with the finalizer"
    );
    assert!(
        status_never_written(ci.status.as_ref()),
        "no status write before the launch: {:?}",
        ci.status
    );
    with_recorded_intent(&ci).into_owned()
}

async fn crash_and_recover(after_launch: bool) {
    let ns = env()
        .namespace(if after_launch { "c2" } else { "c1" })
        .await;
    let sim = simulator(phases(50, 0, 200), phases(50, 0, 100), Outcome::Successful).await;
    let hook = if after_launch {
        Hook::StallAfterLaunch
    } else {
        Hook::StallBeforeLaunch
    };
    let (hooked, hook_reached) = Hooked::wrap(aap_provider(&sim), hook);
    let first = Operator::start(&ns, ProviderRegistry::new(hooked), settings()).await;
    let api = api(&ns).await;
    CiFixture::new("vm").create(&api).await;
    let ci = intent_recorded(&api, "vm").await;
    let key = latest(&ci, JobType::Provision).unwrap().launch_key.unwrap();
    // Wait until the pass is inside the provider (and, for AfterLaunch, the launch happened).
    reached(&hook_reached, "the provider").await;
    let expected = if after_launch { 1 } else { 0 };
    assert_eq!(sim.simulator().stats().launches, expected);
    first.kill();

    let second = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    let ci = wait_for(&api, "vm", Some(&sim), "the provision to succeed", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Succeeded)
    })
    .await;
    let job = latest(&ci, JobType::Provision).unwrap();
    let stats = sim.simulator().stats();
    assert_eq!(
        stats.launches, 1,
        "exactly one job at the controller: {stats:?}"
    );
    assert_eq!(
        stats.launches_by_key.get(&key),
        Some(&1),
        "under the recorded key: {stats:?}"
    );
    assert_eq!(job.launch_key.as_deref(), Some(key.as_str()));
    assert!(job.job_id.parse::<u64>().is_ok(), "{}", job.job_id);
    assert_eq!(
        jobs(&ci)
            .iter()
            .filter(|j| j.job_type == JobType::Provision)
            .count(),
        1
    );
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_recording_the_intent_and_launching() {
    crash_and_recover(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_launching_and_recording_the_job_id() {
    crash_and_recover(true).await;
}

/// A write to the CI during the launch: the answer is still recorded, once, with the job id the
/// launch returned, and nothing is launched twice. A metadata write (the automation adding its
/// finalizer as its job starts) does not even refuse the answer's write, which tests the intent
/// rather than the resourceVersion; a status write refuses it once, and the answer is re-applied
/// to the fresh object.
async fn a_write_during_the_launch(ns: &str, status: bool) {
    let ns = env().namespace(ns).await;
    let sim = simulator(phases(50, 0, 200), phases(50, 0, 100), Outcome::Successful).await;
    let client = env().admin_client().await;
    let hook = if status {
        Hook::InterfereWithStatus(client)
    } else {
        Hook::Interfere(client)
    };
    let (interfering, reached_hook) = Hooked::wrap(aap_provider(&sim), hook);
    let op = Operator::start(&ns, ProviderRegistry::new(interfering), settings()).await;
    let api = api(&ns).await;
    CiFixture::new("vm").create(&api).await;
    reached(&reached_hook, "the launch").await;
    let ci = wait_for(&api, "vm", Some(&sim), "a recorded job id", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| !j.job_id.is_empty())
    })
    .await;
    if !status {
        let labels = ci.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("touched-during-launch").map(String::as_str),
            Some("yes")
        );
    }
    let job = latest(&ci, JobType::Provision).unwrap();
    let stats = sim.simulator().stats();
    assert_eq!(stats.launches, 1, "{stats:?}");
    let sim_ids: Vec<String> = sim
        .simulator()
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path.contains("/launch/"))
        .map(|r| r.status.to_string())
        .collect();
    assert_eq!(sim_ids, vec!["201".to_string()]);
    // Recorded from the launch's answer, not recovered later by looking the launch up (which
    // would list the template's jobs).
    let lookups = sim
        .simulator()
        .requests()
        .iter()
        .filter(|r| r.path.contains("_templates/") && r.path.ends_with("/jobs/"))
        .count();
    assert_eq!(lookups, 0);
    let metrics = op.metrics.render();
    let refused = metrics.contains("cloudkit_write_conflicts_total{write=\"answer\"} 1");
    assert_eq!(refused, status, "refused answer writes:\n{metrics}");
    wait_for(&api, "vm", Some(&sim), "the job to finish", |ci| {
        latest(ci, JobType::Provision)
            .is_some_and(|j| j.job_id == job.job_id && j.state == JobState::Succeeded)
    })
    .await;
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_write_during_the_launch_does_not_refuse_the_answer() {
    a_write_during_the_launch("c3", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_during_the_launch_refuses_the_answer_once_and_keeps_the_job_id() {
    a_write_during_the_launch("c3s", true).await;
}

/// A poll finds the job running, and before its pass writes that, the automation writes the
/// CI's metadata: the write records the job's state all the same, without a refusal, since it
/// tests the job's entry rather than the resourceVersion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metadata_write_during_a_poll_does_not_refuse_the_polled_state() {
    let ns = env().namespace("c3p").await;
    let sim = simulator(phases(50, 0, 3000), phases(50, 0, 100), Outcome::Successful).await;
    let client = env().admin_client().await;
    let (interfering, reached_hook) =
        Hooked::wrap(aap_provider(&sim), Hook::InterfereWithPoll(client));
    let op = Operator::start(&ns, ProviderRegistry::new(interfering), settings()).await;
    let api = api(&ns).await;
    CiFixture::new("vm").create(&api).await;
    reached(&reached_hook, "a poll that found the job running").await;
    let ci = wait_for(&api, "vm", Some(&sim), "the job recorded running", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Running)
    })
    .await;
    let labels = ci.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("touched-during-launch").map(String::as_str),
        Some("yes")
    );
    let metrics = op.metrics.render();
    assert!(
        !metrics.contains("cloudkit_write_conflicts_total{write=\"status\"}"),
        "a refused status write:\n{metrics}"
    );
    assert_eq!(sim.simulator().stats().launches, 1);
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_from_a_stale_object_does_not_launch() {
    let ns = env().namespace("c4").await;
    let sim = simulator(phases(50, 0, 200), phases(50, 0, 100), Outcome::Successful).await;
    let api = api(&ns).await;
    let created = CiFixture::new("vm").create(&api).await;
    // A snapshot from before the operator acted: what a lagging cache would hand a reconcile.
    let stale = api.get("vm").await.unwrap();
    assert_eq!(
        stale.metadata.resource_version,
        created.metadata.resource_version
    );

    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    wait_for(&api, "vm", Some(&sim), "a recorded job id", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| !j.job_id.is_empty())
    })
    .await;
    assert_eq!(sim.simulator().stats().launches, 1);

    // A second controller context (another replica, or this one with a stale cache) reconciles
    // the old snapshot: it decides to provision, but its intent write carries the old
    // resourceVersion and is refused, so it never calls the provider.
    let other = Arc::new(Context::new(
        env().admin_client().await,
        ProviderRegistry::new(aap_provider(&sim)),
        settings(),
        Metrics::shared(),
    ));
    let mut stale_with_finalizer = stale.clone();
    stale_with_finalizer.metadata.finalizers = Some(vec![cloudkit_api::metadata::FINALIZER.into()]);
    for snapshot in [stale, stale_with_finalizer] {
        let result = cloudkit_reconciler::reconcile(Arc::new(snapshot), Arc::clone(&other)).await;
        assert!(
            result.is_ok(),
            "a conflict is a requeue, not an error: {result:?}"
        );
    }
    // Both reconciles have returned, so a launch either made has reached the simulator.
    let stats = sim.simulator().stats();
    assert_eq!(
        stats.launches, 1,
        "no launch from a stale object: {stats:?}"
    );
    let ci = api.get("vm").await.unwrap();
    assert_eq!(
        jobs(&ci)
            .iter()
            .filter(|j| j.job_type == JobType::Provision)
            .count(),
        1
    );
    op.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eda_trigger_lost_before_it_was_sent_is_sent_after_the_grace_period() {
    let ns = env().namespace("c-eda").await;
    let webhook = CountingWebhook::start().await;
    let url = webhook.url().to_string();
    let eda = cloudkit_reconciler::Settings {
        active: cloudkit_api::ProviderKind::Eda,
        retry_limit: 1,
        ..settings()
    };
    let (hooked, hook_reached) = Hooked::wrap(eda_provider(&url), Hook::StallBeforeLaunch);
    let first = Operator::start(&ns, ProviderRegistry::new(hooked), eda.clone()).await;
    let api = api(&ns).await;
    CiFixture::new("vm").create(&api).await;
    intent_recorded(&api, "vm").await;
    reached(&hook_reached, "the webhook call").await;
    assert_eq!(webhook.hits(), 0, "killed before the POST");
    first.kill();

    // The next operator cannot ask a webhook whether it got the trigger: it takes it as sent,
    // and when no sign of the automation comes within the grace period, it tries again.
    let second = Operator::start(&ns, ProviderRegistry::new(eda_provider(&url)), eda).await;
    let ci = wait_for(&api, "vm", None, "a second attempt that was sent", |ci| {
        latest(ci, JobType::Provision).is_some_and(|j| j.attempt == Some(2) && !j.job_id.is_empty())
    })
    .await;
    assert_eq!(webhook.hits(), 1, "one trigger reached the webhook");
    let provisions: Vec<_> = jobs(&ci)
        .into_iter()
        .filter(|j| j.job_type == JobType::Provision)
        .collect();
    assert_eq!(provisions.len(), 2, "{provisions:?}");
    assert_eq!(provisions[0].state, JobState::Failed);
    assert!(
        provisions[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("no sign of the automation")),
        "{:?}",
        provisions[0].message
    );
    assert_eq!(provisions[1].state, JobState::Running);
    second.stop().await;
}
