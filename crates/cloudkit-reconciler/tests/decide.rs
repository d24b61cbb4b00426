//! Every rule of SPEC section 5 as rows of the pure decision function.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use cloudkit_api::metadata::*;
use cloudkit_api::{
    ComputeInstance, ComputeInstanceSpec, ComputeInstanceStatus, JobState, JobStatus, JobType,
    LaunchKey, Phase, ProviderKind, config_version,
};
use cloudkit_provider::{JobObservation, LaunchLookup, ProviderErrorKind, StartedJob};
use cloudkit_reconciler::*;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

const T0: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

fn caps_aap() -> Capabilities {
    Capabilities {
        polls_remotely: true,
        can_cancel: true,
        can_find_launches: true,
        blocks_deletion_on_failure: true,
    }
}

fn caps_eda() -> Capabilities {
    Capabilities::default()
}

fn settings(active: ProviderKind) -> Settings {
    Settings {
        history_limit: 10,
        retry_limit: 3,
        poll_interval: Duration::from_secs(30),
        eda_grace: Duration::from_secs(300),
        launch_window: Duration::from_secs(35),
        restart_timeout: Duration::from_secs(600),
        active,
        providers: BTreeMap::from([
            (ProviderKind::Aap, caps_aap()),
            (ProviderKind::Eda, caps_eda()),
        ]),
    }
}

fn aap() -> Settings {
    settings(ProviderKind::Aap)
}

fn ci() -> ComputeInstance {
    let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("test_template"));
    ci.metadata.namespace = Some("ns".into());
    ci.metadata.uid = Some("uid-1".into());
    ci.metadata.generation = Some(1);
    ci.metadata.finalizers = Some(vec![FINALIZER.into()]);
    ci
}

fn desired(ci: &ComputeInstance) -> String {
    config_version(&ci.spec)
}

fn annotate(ci: &mut ComputeInstance, key: &str, value: &str) {
    ci.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(key.into(), value.into());
}

fn job(id: &str, t: JobType, secs: i64, state: JobState, provider: ProviderKind) -> JobStatus {
    let mut j = JobStatus::new(id, t, Time(at(secs)), state);
    j.provider = Some(provider);
    if state.is_terminal() {
        j.completion_timestamp = Some(Time(at(secs + 10)));
    }
    j
}

fn provision(ci: &ComputeInstance, id: &str, secs: i64, state: JobState) -> JobStatus {
    let mut j = job(id, JobType::Provision, secs, state, ProviderKind::Aap);
    j.config_version = Some(desired(ci));
    j.attempt = Some(1);
    j
}

fn with_jobs(mut ci: ComputeInstance, jobs: Vec<JobStatus>) -> ComputeInstance {
    ci.status.get_or_insert_with(Default::default).jobs = jobs;
    ci
}

fn deleting(mut ci: ComputeInstance) -> ComputeInstance {
    ci.metadata.deletion_timestamp = Some(Time(at(0)));
    ci
}

fn obs() -> Observed {
    Observed::default()
}

fn observe(id: &str, state: JobState) -> Observed {
    let mut o = Observed::default();
    o.jobs.insert(id.into(), JobObservation::new(state));
    o
}

fn status(plan: &Plan) -> &ComputeInstanceStatus {
    plan.status.as_ref().expect("a status write")
}

fn applied(plan: &Plan) -> (String, String, String) {
    let c = find_condition(&status(plan).conditions, CONDITION_CONFIGURATION_APPLIED)
        .expect("condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn launched(plan: &Plan) -> Option<(ProviderKind, JobType, String)> {
    match &plan.call {
        Some(ProviderCall::Launch {
            provider,
            job_type,
            launch_key,
        }) => Some((*provider, *job_type, launch_key.clone())),
        _ => None,
    }
}

fn event_reasons(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.reason.as_str()).collect()
}

// ---- 5.1 create and update ----

#[test]
fn unmanaged_does_nothing_at_all() {
    let mut c = ci();
    c.metadata.finalizers = None;
    annotate(&mut c, MANAGEMENT_STATE_ANNOTATION, "unmanaged");
    let plan = decide(&c, &obs(), at(0), &aap());
    assert_eq!(plan, Plan::default());
    let c = deleting(c);
    assert_eq!(decide(&c, &obs(), at(0), &aap()), Plan::default());
}

#[test]
fn new_ci_gets_finalizer_and_one_provision_intent() {
    let mut c = ci();
    c.metadata.finalizers = None;
    let plan = decide(&c, &obs(), at(0), &aap());
    assert_eq!(plan.finalizer, FinalizerChange::Add);
    let (provider, t, key) = launched(&plan).expect("launch");
    assert_eq!((provider, t), (ProviderKind::Aap, JobType::Provision));
    let st = status(&plan);
    assert_eq!(st.jobs.len(), 1);
    let intent = &st.jobs[0];
    assert_eq!(intent.job_id, "");
    assert_eq!(intent.state, JobState::Pending);
    assert_eq!(intent.provider, Some(ProviderKind::Aap));
    assert_eq!(intent.config_version.as_deref(), Some(desired(&c).as_str()));
    assert_eq!(intent.launch_key.as_deref(), Some(key.as_str()));
    assert_eq!(intent.attempt, Some(1));
    assert_eq!(intent.timestamp, Time(at(0)));
    assert_eq!(
        key,
        LaunchKey::provision("uid-1", desired(&c), 1).to_string()
    );
    assert_eq!(st.phase, Some(Phase::Starting));
    assert_eq!(
        st.desired_config_version.as_deref(),
        Some(desired(&c).as_str())
    );
    assert_eq!(st.observed_generation, Some(1));
    assert_eq!(applied(&plan).1, reason::APPLYING);
}

#[test]
fn eda_active_launches_through_eda() {
    let plan = decide(&ci(), &obs(), at(0), &settings(ProviderKind::Eda));
    assert_eq!(launched(&plan).map(|l| l.0), Some(ProviderKind::Eda));
}

#[test]
fn manual_starts_no_job_but_reports_state() {
    let mut c = ci();
    c.metadata.finalizers = None;
    annotate(&mut c, MANAGEMENT_STATE_ANNOTATION, "manual");
    let plan = decide(&c, &obs(), at(0), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(plan.finalizer, FinalizerChange::Add);
    assert_eq!(applied(&plan).1, reason::MANUAL);
    assert_eq!(
        status(&plan).desired_config_version.as_deref(),
        Some(desired(&c).as_str())
    );
}

#[test]
fn invalid_template_parameters_no_job_condition_and_one_event() {
    let mut c = ci();
    c.spec.template_parameters = Some("[1, 2]".into());
    let plan = decide(&c, &obs(), at(0), &aap());
    assert_eq!(plan.call, None);
    let (s, r, m) = applied(&plan);
    assert_eq!((s.as_str(), r.as_str()), ("False", reason::INVALID_SPEC));
    assert!(m.contains("spec.templateParameters"), "{m}");
    assert_eq!(event_reasons(&plan), vec!["InvalidSpec"]);
    assert!(status(&plan).jobs.is_empty());

    // The next pass over the written status: no new event, no write.
    c.status = plan.status.clone();
    let again = decide(&c, &obs(), at(5), &aap());
    assert!(again.events.is_empty(), "{:?}", again.events);
    assert_eq!(again.status, None);
}

#[test]
fn aap_states_follow_the_provider_and_success_reconciles() {
    let c = ci();
    let mut launched = provision(&c, "9076", 0, JobState::Pending);
    launched.message = Some("AAP job 9076 launched".into());
    let c = with_jobs(c.clone(), vec![launched]);

    let plan = decide(&c, &observe("9076", JobState::Running), at(30), &aap());
    assert_eq!(status(&plan).jobs[0].state, JobState::Running);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));
    assert_eq!(plan.call, None);

    let plan = decide(&c, &observe("9076", JobState::Succeeded), at(60), &aap());
    let st = status(&plan);
    assert_eq!(st.jobs[0].state, JobState::Succeeded);
    assert_eq!(st.jobs[0].completion_timestamp, Some(Time(at(60))));
    assert_eq!(
        st.jobs[0].message, None,
        "the launch message is stale once the job finished"
    );
    // AAP direct: success reconciles even without the annotation (seeded open bug).
    assert_eq!(
        st.reconciled_config_version.as_deref(),
        Some(desired(&c).as_str())
    );
    assert_eq!(st.phase, Some(Phase::Running));
    assert_eq!(applied(&plan).0, "True");
    assert_eq!(event_reasons(&plan), vec!["JobSucceeded"]);
    assert_eq!(plan.finished.len(), 1);
    assert_eq!(plan.finished[0].duration, Duration::from_secs(60));
}

#[test]
fn annotation_is_copied_and_running_phase_follows() {
    let mut c = ci();
    let d = desired(&c);
    let mut j = provision(&c, "eda-webhook-1", 0, JobState::Running);
    j.provider = Some(ProviderKind::Eda);
    c = with_jobs(c, vec![j]);
    annotate(&mut c, RECONCILED_CONFIG_VERSION_ANNOTATION, &d);
    let plan = decide(
        &c,
        &observe("eda-webhook-1", JobState::Succeeded),
        at(10),
        &settings(ProviderKind::Eda),
    );
    let st = status(&plan);
    assert_eq!(st.reconciled_config_version.as_deref(), Some(d.as_str()));
    assert_eq!(st.phase, Some(Phase::Running));
    // EDA jobs are not polled over the network.
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn spec_change_reprovisions_once_and_keeps_running() {
    let mut c = ci();
    let old = desired(&c);
    c = with_jobs(c.clone(), vec![provision(&c, "1", 0, JobState::Succeeded)]);
    annotate(&mut c, RECONCILED_CONFIG_VERSION_ANNOTATION, &old);
    c.spec.template_parameters = Some(r#"{"size": "large"}"#.into());
    let plan = decide(&c, &obs(), at(100), &aap());
    let (_, t, _) = launched(&plan).expect("re-provision");
    assert_eq!(t, JobType::Provision);
    let st = status(&plan);
    assert_eq!(st.jobs.len(), 2);
    assert_eq!(
        st.jobs[1].config_version.as_deref(),
        Some(desired(&c).as_str())
    );
    assert_eq!(
        st.phase,
        Some(Phase::Running),
        "a later spec change keeps Running"
    );
    assert_eq!(applied(&plan).1, reason::APPLYING);

    // With that intent recorded (and running), nothing more is launched.
    let mut c2 = c.clone();
    c2.status = plan.status.clone();
    c2.status.as_mut().unwrap().jobs[1].job_id = "2".into();
    c2.status.as_mut().unwrap().jobs[1].state = JobState::Running;
    let plan = decide(&c2, &observe("2", JobState::Running), at(101), &aap());
    assert_eq!(plan.call, None);
}

#[test]
fn restart_request_does_not_reprovision() {
    let mut c = ci();
    let d = desired(&c);
    c = with_jobs(c.clone(), vec![provision(&c, "1", 0, JobState::Succeeded)]);
    annotate(&mut c, RECONCILED_CONFIG_VERSION_ANNOTATION, &d);
    c.spec.restart_requested_at = Some(Time(at(50)));
    let plan = decide(&c, &obs(), at(100), &aap());
    assert_eq!(plan.call, None);
}

#[test]
fn never_two_provision_jobs_at_once() {
    let mut c = ci();
    c = with_jobs(c.clone(), vec![provision(&c, "1", 0, JobState::Running)]);
    c.spec.template_parameters = Some(r#"{"a": 1}"#.into());
    let plan = decide(&c, &observe("1", JobState::Running), at(10), &aap());
    assert_eq!(plan.call, None);
}

#[test]
fn failed_provision_retries_with_capped_backoff_then_stays_failed() {
    // (attempt that failed, seconds since it completed, expect launch, expect phase Failed)
    // Backoff: 30 s after attempt 1, 60 s after 2, 120 s after 3; attempt 4 is the last.
    let rows = [
        (1, 29, false, false),
        (1, 30, true, false),
        (2, 59, false, false),
        (2, 60, true, false),
        (3, 120, true, false),
        (4, 100_000, false, true),
    ];
    for (attempt, since, launch, failed) in rows {
        let c = ci();
        let mut j = provision(&c, "1", 0, JobState::Failed);
        j.attempt = Some(attempt);
        j.completion_timestamp = Some(Time(at(0)));
        let c = with_jobs(c, vec![j]);
        let plan = decide(&c, &obs(), at(since), &aap());
        assert_eq!(
            launched(&plan).is_some(),
            launch,
            "attempt {attempt} +{since}s"
        );
        let st = status(&plan);
        if launch {
            assert_eq!(st.jobs.last().unwrap().attempt, Some(attempt + 1));
        }
        assert_eq!(
            st.phase == Some(Phase::Failed),
            failed,
            "attempt {attempt} phase"
        );
        let reason = applied(&plan).1;
        match (launch, failed) {
            (false, false) => {
                assert_eq!(reason, reason::RETRY_SCHEDULED);
                let wait = plan.requeue_after.expect("requeue until the retry");
                assert!(
                    wait > Duration::ZERO && wait <= Duration::from_secs(120),
                    "{wait:?}"
                );
            }
            (false, true) => {
                assert_eq!(reason, reason::PROVISION_FAILED);
                assert!(event_reasons(&plan).contains(&"ProvisionFailed"));
                assert_eq!(plan.requeue_after, None);
            }
            _ => {}
        }
    }
}

#[test]
fn backoff_caps_at_ten_minutes() {
    let s = Settings {
        retry_limit: 50,
        ..aap()
    };
    assert_eq!(s.retry_backoff(1), Duration::from_secs(30));
    assert_eq!(s.retry_backoff(3), Duration::from_secs(120));
    // SPEC 5.1: the back-off never exceeds ten minutes; compared with the spec's number, not the
    // implementation's constant, so that a changed constant fails here.
    let ten_minutes = Duration::from_secs(600);
    assert_eq!(s.retry_backoff(10), ten_minutes);
    assert_eq!(s.retry_backoff(u32::MAX), ten_minutes);
}

#[test]
fn retry_annotation_retries_once_per_new_value() {
    let c = ci();
    let mut j = provision(&c, "1", 0, JobState::Failed);
    j.attempt = Some(4);
    let mut c = with_jobs(c, vec![j]);
    annotate(&mut c, RETRY_ANNOTATION, "try-again");
    let plan = decide(&c, &obs(), at(20), &aap());
    assert!(launched(&plan).is_some());
    let new = status(&plan).jobs.last().unwrap();
    assert_eq!(new.attempt, Some(5));
    assert_eq!(new.retry_token.as_deref(), Some("try-again"));

    // That job fails too: the same annotation value does not retry again.
    let mut failed = new.clone();
    failed.job_id = "2".into();
    failed.state = JobState::Failed;
    failed.completion_timestamp = Some(Time(at(30)));
    let mut c2 = c.clone();
    c2.status.as_mut().unwrap().jobs.push(failed);
    let plan = decide(&c2, &obs(), at(10_000), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(status(&plan).phase, Some(Phase::Failed));
}

#[test]
fn canceled_provision_counts_as_failed() {
    let c = ci();
    let mut j = provision(&c, "1", 0, JobState::Canceled);
    j.attempt = Some(4);
    let c = with_jobs(c, vec![j]);
    let plan = decide(&c, &obs(), at(1000), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(status(&plan).phase, Some(Phase::Failed));
}

#[test]
fn go_operator_jobs_without_config_version() {
    // (reconciled annotation equals desired?, expect launch)
    for (reconciled, launch) in [(true, false), (false, true)] {
        let mut c = ci();
        let mut j = job(
            "9076",
            JobType::Provision,
            0,
            JobState::Succeeded,
            ProviderKind::Aap,
        );
        j.provider = None;
        c = with_jobs(c, vec![j]);
        let value = if reconciled {
            desired(&c)
        } else {
            "0000000000000000".into()
        };
        annotate(&mut c, RECONCILED_CONFIG_VERSION_ANNOTATION, &value);
        let plan = decide(&c, &obs(), at(10), &aap());
        assert_eq!(launched(&plan).is_some(), launch, "reconciled={reconciled}");
    }
}

#[test]
fn reverting_to_the_applied_configuration_does_nothing() {
    let mut c = ci();
    let applied_version = desired(&c);
    let mut j = provision(&c, "2", 10, JobState::Failed);
    j.config_version = Some("aaaaaaaaaaaaaaaa".into());
    j.attempt = Some(9);
    c = with_jobs(
        c.clone(),
        vec![provision(&c, "1", 0, JobState::Succeeded), j],
    );
    annotate(
        &mut c,
        RECONCILED_CONFIG_VERSION_ANNOTATION,
        &applied_version,
    );
    let plan = decide(&c, &obs(), at(100), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(status(&plan).phase, Some(Phase::Running));
    assert_eq!(applied(&plan).0, "True");
}

#[test]
fn evidence_naming_the_desired_version_wins() {
    let d = "dddddddddddddddd";
    let mut ok = JobStatus::new("1", JobType::Provision, Time(at(0)), JobState::Succeeded);
    ok.config_version = Some(d.into());
    let mut old = JobStatus::new("0", JobType::Provision, Time(at(-10)), JobState::Succeeded);
    old.config_version = Some("oooooooooooooooo".into());
    let rows: Vec<(Option<&str>, Vec<JobStatus>, Option<&str>)> = vec![
        (None, vec![], None),
        (Some("aaaaaaaaaaaaaaaa"), vec![], Some("aaaaaaaaaaaaaaaa")),
        (Some("aaaaaaaaaaaaaaaa"), vec![ok.clone()], Some(d)),
        (Some(d), vec![old.clone()], Some(d)),
        (None, vec![old.clone()], Some("oooooooooooooooo")),
        (
            Some("aaaaaaaaaaaaaaaa"),
            vec![old.clone()],
            Some("aaaaaaaaaaaaaaaa"),
        ),
    ];
    for (annotation, jobs, want) in rows {
        assert_eq!(
            reconciled_version(annotation, &jobs, d).as_deref(),
            want,
            "{annotation:?} {}",
            jobs.len()
        );
    }
}

#[test]
fn no_status_write_when_nothing_changed() {
    let c = ci();
    let first = decide(
        &with_jobs(c.clone(), vec![provision(&c, "1", 0, JobState::Running)]),
        &observe("1", JobState::Running),
        at(5),
        &aap(),
    );
    let mut c2 = with_jobs(c.clone(), vec![]);
    c2.status = first.status.clone();
    let second = decide(&c2, &observe("1", JobState::Running), at(35), &aap());
    assert_eq!(second.status, None, "same observation, nothing to write");
    assert_eq!(second.requeue_after, Some(Duration::from_secs(30)));
}

#[test]
fn history_stays_bounded_across_many_reprovisions() {
    let mut c = ci();
    let s = Settings {
        history_limit: 3,
        ..aap()
    };
    for round in 0..20i64 {
        c.spec.template_parameters = Some(format!(r#"{{"round": {round}}}"#));
        let plan = decide(&c, &obs(), at(round * 100), &s);
        let mut st = plan.status.clone().unwrap();
        let last = st.jobs.last_mut().unwrap();
        assert_eq!(last.job_id, "");
        last.job_id = format!("{round}");
        last.state = JobState::Succeeded;
        let version = last.config_version.clone().unwrap();
        c.status = Some(st);
        annotate(&mut c, RECONCILED_CONFIG_VERSION_ANNOTATION, &version);
        assert!(c.status.as_ref().unwrap().jobs.len() <= 3);
    }
    let ids: Vec<_> = c
        .status
        .unwrap()
        .jobs
        .iter()
        .map(|j| j.job_id.clone())
        .collect();
    assert_eq!(ids, vec!["17", "18", "19"]);
}

// ---- lost launches (5.4) ----

fn intent(ci: &ComputeInstance, secs: i64, provider: ProviderKind) -> JobStatus {
    let mut j = provision(ci, "", secs, JobState::Pending);
    j.provider = Some(provider);
    j.completion_timestamp = None;
    j.launch_key = Some("uid-1/provision/x/1".into());
    j
}

#[test]
fn a_young_intent_may_still_be_in_flight() {
    let c = ci();
    let c = with_jobs(c.clone(), vec![intent(&c, 0, ProviderKind::Aap)]);
    let mut o = obs();
    o.lookups
        .insert("uid-1/provision/x/1".into(), LaunchLookup::NotFound);
    let plan = decide(&c, &o, at(10), &aap());
    assert_eq!(
        plan.call, None,
        "never launched while another process may be launching"
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(25)));
}

#[test]
fn a_lost_launch_is_looked_up_not_repeated() {
    let c = ci();
    let c = with_jobs(c.clone(), vec![intent(&c, 0, ProviderKind::Aap)]);

    let mut o = obs();
    let mut found = StartedJob::new("77", JobState::Running);
    found.block_deletion_on_failure = true;
    o.lookups
        .insert("uid-1/provision/x/1".into(), LaunchLookup::Found(found));
    let plan = decide(&c, &o, at(60), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(status(&plan).jobs[0].job_id, "77");
    assert_eq!(status(&plan).jobs[0].state, JobState::Running);

    let mut o = obs();
    o.lookups
        .insert("uid-1/provision/x/1".into(), LaunchLookup::NotFound);
    let plan = decide(&c, &o, at(60), &aap());
    assert_eq!(
        launched(&plan),
        Some((
            ProviderKind::Aap,
            JobType::Provision,
            "uid-1/provision/x/1".into()
        )),
        "relaunched under the same key, no new entry"
    );
    assert!(plan.status.is_none() || status(&plan).jobs.len() == 1);

    let c = with_jobs(c.clone(), vec![intent(&c, 0, ProviderKind::Eda)]);
    let mut o = obs();
    o.lookups
        .insert("uid-1/provision/x/1".into(), LaunchLookup::Unknowable);
    let plan = decide(&c, &o, at(60), &settings(ProviderKind::Eda));
    assert_eq!(
        plan.call, None,
        "an unconfirmed webhook trigger is never sent twice"
    );
    assert_eq!(status(&plan).jobs[0].job_id, "eda-webhook-1");
    assert_eq!(status(&plan).jobs[0].state, JobState::Running);
}

// ---- the first intent rides on the finalizer's patch (5.4, docs/consistency.md rule 2) ----

fn recorded_in_annotation(c: &mut ComputeInstance, job: &JobStatus) {
    annotate(
        c,
        PROVISION_INTENT_ANNOTATION,
        &cloudkit_api::intent::encode(job),
    );
}

#[test]
fn the_first_intent_of_a_new_ci_is_recorded_with_the_finalizer() {
    let new = || {
        let mut c = ci();
        c.metadata.finalizers = None;
        c
    };
    let with_status = |mut c: ComputeInstance, st: ComputeInstanceStatus| {
        c.status = Some(st);
        c
    };
    let refused_before = ComputeInstanceStatus {
        desired_config_version: Some(desired(&ci())),
        ..Default::default()
    };
    let mut manual = new();
    annotate(&mut manual, MANAGEMENT_STATE_ANNOTATION, "manual");
    // (case, CI, expect the intent on the finalizer's patch)
    let rows: Vec<(&str, ComputeInstance, bool)> = vec![
        ("a new CI", new(), true),
        (
            "an empty status, as some clients create it",
            with_status(new(), ComputeInstanceStatus::default()),
            true,
        ),
        (
            "the status was written once (a refused launch)",
            with_status(new(), refused_before),
            false,
        ),
        ("the finalizer is there already", ci(), false),
        ("manual: no launch", manual, false),
        ("deleting: no finalizer to add", deleting(new()), false),
    ];
    for (case, c, on_finalizer) in rows {
        let plan = decide(&c, &obs(), at(0), &aap());
        let launched_key = launched(&plan).map(|l| l.2);
        match &plan.first_intent {
            Some(intent) => {
                assert!(on_finalizer, "{case}: {intent:?}");
                assert_eq!(plan.finalizer, FinalizerChange::Add, "{case}");
                assert_eq!(
                    intent.launch_key, launched_key,
                    "{case}: the launched intent"
                );
                assert_eq!(
                    status(&plan).jobs,
                    vec![intent.clone()],
                    "{case}: the status holds it too, for the answer's write"
                );
                assert_eq!(
                    plan.status_write(),
                    None,
                    "{case}: no status write of its own"
                );
            }
            None => {
                assert!(!on_finalizer, "{case}");
                assert_eq!(
                    plan.status_write(),
                    plan.status.as_ref(),
                    "{case}: the status, if any, is written as usual"
                );
            }
        }
    }
}

#[test]
fn an_intent_recorded_with_the_finalizer_counts_as_the_status() {
    let c = ci();
    let key = LaunchKey::provision("uid-1", desired(&c), 1).to_string();
    let mut pending = intent(&c, 0, ProviderKind::Aap);
    pending.launch_key = Some(key.clone());
    let mut recorded = c.clone();
    recorded_in_annotation(&mut recorded, &pending);

    let plan = decide(&recorded, &obs(), at(10), &aap());
    assert_eq!(
        plan.call, None,
        "no second launch while it may be in flight"
    );
    assert_eq!(plan.first_intent, None);
    assert_eq!(status(&plan).jobs, vec![pending.clone()]);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(25)));

    let mut o = obs();
    o.lookups.insert(key.clone(), LaunchLookup::NotFound);
    let plan = decide(&recorded, &o, at(60), &aap());
    assert_eq!(
        launched(&plan),
        Some((ProviderKind::Aap, JobType::Provision, key)),
        "a lost first launch is launched again under its key"
    );
    assert_eq!(
        plan.first_intent, None,
        "the finalizer is there: the status takes it"
    );
    assert!(plan.status_write().is_some());

    let mut copied = c.clone();
    copied.metadata.uid = Some("uid-2".into());
    recorded_in_annotation(&mut copied, &pending);
    let plan = decide(&copied, &obs(), at(60), &aap());
    let (_, _, key) = launched(&plan).expect("a launch of its own");
    assert_eq!(
        key,
        LaunchKey::provision("uid-2", desired(&c), 1).to_string(),
        "another CI's intent does not count"
    );
}

#[test]
fn an_unconfirmed_deprovision_trigger_is_sent_again() {
    let c = ci();
    let mut d = intent(&c, 0, ProviderKind::Eda);
    d.job_type = JobType::Deprovision;
    d.config_version = None;
    d.launch_key = Some("uid-1/deprovision/delete/1".into());
    let mut p = provision(&c, "eda-webhook-1", 0, JobState::Succeeded);
    p.provider = Some(ProviderKind::Eda);
    let c = deleting(with_jobs(c.clone(), vec![p, d]));
    let mut o = obs();
    o.lookups.insert(
        "uid-1/deprovision/delete/1".into(),
        LaunchLookup::Unknowable,
    );
    let plan = decide(&c, &o, at(60), &settings(ProviderKind::Eda));
    assert_eq!(
        launched(&plan),
        Some((
            ProviderKind::Eda,
            JobType::Deprovision,
            "uid-1/deprovision/delete/1".into()
        )),
        "a deprovision run twice is harmless; one never run leaves the CI behind"
    );
}

#[test]
fn an_eda_provision_with_no_sign_of_the_automation_fails_after_the_grace_period() {
    let eda = settings(ProviderKind::Eda); // grace 300 s
    // (provider, -aap finalizer present, seconds since the job started, expect failed)
    let rows = [
        (ProviderKind::Eda, false, 100, false),
        (ProviderKind::Eda, false, 300, true),
        (ProviderKind::Eda, true, 10_000, false),
        (ProviderKind::Aap, false, 10_000, false),
    ];
    for (provider, finalizer, age, failed) in rows {
        let mut c = ci();
        if finalizer {
            c.metadata.finalizers = Some(vec![FINALIZER.into(), AAP_FINALIZER.into()]);
        }
        let mut p = provision(&c, "eda-webhook-1", 0, JobState::Running);
        p.provider = Some(provider);
        p.completion_timestamp = None;
        let c = with_jobs(c.clone(), vec![p]);
        let o = if provider == ProviderKind::Aap {
            observe("eda-webhook-1", JobState::Running)
        } else {
            obs()
        };
        let plan = decide(&c, &o, at(age), &eda);
        let row = format!("{provider} finalizer={finalizer} +{age}s");
        let job = plan.status.as_ref().map_or_else(
            || c.status.clone().unwrap().jobs[0].clone(),
            |s| s.jobs[0].clone(),
        );
        assert_eq!(job.state == JobState::Failed, failed, "{row}: {job:?}");
        if failed {
            assert!(
                job.message
                    .as_deref()
                    .unwrap()
                    .contains("no sign of the automation")
            );
            assert_eq!(plan.call, None, "{row}: the retry waits for its backoff");
            assert!(plan.requeue_after.is_some(), "{row}");
        } else if provider == ProviderKind::Eda && !finalizer {
            assert_eq!(
                plan.requeue_after,
                Some(Duration::from_secs(200)),
                "{row}: looks again when the grace period ends"
            );
        }
    }
}

#[test]
fn rate_limited_provider_is_not_called_early() {
    let mut o = obs();
    o.launch_not_before = Some(at(20));
    let plan = decide(&ci(), &o, at(5), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(15)));
    assert_eq!(applied(&plan).1, reason::PROVIDER_ERROR);
    let plan = decide(&ci(), &o, at(20), &aap());
    assert!(launched(&plan).is_some());
}

// ---- provider switch (4.1) ----

#[test]
fn jobs_are_read_through_their_owner_and_orphans_reported() {
    let c = ci();
    let mut j = provision(&c, "eda-webhook-1", 0, JobState::Running);
    j.provider = None; // legacy entry: the id says eda
    let c = with_jobs(c, vec![j]);
    let only_aap = Settings {
        providers: BTreeMap::from([(ProviderKind::Aap, caps_aap())]),
        ..aap()
    };
    let plan = decide(&c, &obs(), at(5), &only_aap);
    assert_eq!(plan.call, None);
    let (_, r, m) = applied(&plan);
    assert_eq!(r, reason::PROVIDER_ERROR);
    assert!(m.contains("eda-webhook-1") && m.contains("eda"), "{m}");
}

#[test]
fn provisioned_with_eda_deprovisioned_with_aap() {
    let c = ci();
    let mut j = provision(&c, "eda-webhook-1", 0, JobState::Succeeded);
    j.provider = Some(ProviderKind::Eda);
    let c = deleting(with_jobs(c, vec![j]));
    let plan = decide(&c, &obs(), at(100), &aap());
    assert_eq!(
        launched(&plan).map(|l| (l.0, l.1)),
        Some((ProviderKind::Aap, JobType::Deprovision))
    );
    let st = status(&plan);
    assert_eq!(st.jobs.len(), 2, "history holds both");
    assert_eq!(st.phase, Some(Phase::Deleting));
}

// ---- 5.2 delete ----

#[test]
fn deleting_without_our_finalizer_does_nothing() {
    let mut c = deleting(ci());
    c.metadata.finalizers = Some(vec![AAP_FINALIZER.into()]);
    assert_eq!(decide(&c, &obs(), at(0), &aap()), Plan::default());
}

#[test]
fn manual_on_delete_releases_without_deprovisioning() {
    let c = ci();
    let mut c = deleting(with_jobs(
        c.clone(),
        vec![provision(&c, "1", 0, JobState::Succeeded)],
    ));
    annotate(&mut c, MANAGEMENT_STATE_ANNOTATION, "manual");
    let plan = decide(&c, &obs(), at(0), &aap());
    assert_eq!(plan.finalizer, FinalizerChange::Remove);
    assert_eq!(plan.call, None);
}

#[test]
fn delete_during_aap_provision_cancels_then_deprovisions_once() {
    let c = ci();
    let c = deleting(with_jobs(
        c.clone(),
        vec![provision(&c, "7265", 0, JobState::Running)],
    ));
    let plan = decide(&c, &observe("7265", JobState::Running), at(10), &aap());
    assert_eq!(
        plan.call,
        Some(ProviderCall::Cancel {
            provider: ProviderKind::Aap,
            job_id: "7265".into()
        })
    );
    assert_eq!(status(&plan).phase, Some(Phase::Deleting));
    assert!(
        status(&plan)
            .jobs
            .iter()
            .all(|j| j.job_type == JobType::Provision),
        "no deprovision yet"
    );

    // Cancel already requested: wait, do not ask again, still no deprovision.
    let mut o = observe("7265", JobState::Running);
    o.cancel_requested.insert("7265".into());
    let plan = decide(&c, &o, at(40), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));

    // Canceled: exactly one deprovision starts.
    let plan = decide(&c, &observe("7265", JobState::Canceled), at(70), &aap());
    assert_eq!(
        launched(&plan),
        Some((
            ProviderKind::Aap,
            JobType::Deprovision,
            LaunchKey::deprovision("uid-1", 1).to_string()
        ))
    );
    let deprovisions = status(&plan)
        .jobs
        .iter()
        .filter(|j| j.job_type == JobType::Deprovision)
        .count();
    assert_eq!(deprovisions, 1);
}

#[test]
fn delete_during_eda_provision_waits_for_the_grace_period() {
    let c = ci();
    let mut j = provision(&c, "eda-webhook-1", 0, JobState::Running);
    j.provider = Some(ProviderKind::Eda);
    let c = deleting(with_jobs(c, vec![j]));
    let s = settings(ProviderKind::Eda);
    let plan = decide(&c, &obs(), at(100), &s);
    assert_eq!(plan.call, None);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(200)));

    let plan = decide(&c, &obs(), at(300), &s);
    let st = status(&plan);
    assert_eq!(st.jobs[0].state, JobState::Failed);
    assert!(
        st.jobs[0]
            .message
            .as_deref()
            .unwrap()
            .contains("had not started")
    );
    assert_eq!(launched(&plan).map(|l| l.1), Some(JobType::Deprovision));
}

#[test]
fn deprovision_outcomes() {
    // (state, blockDeletionOnFailure, expect finalizer removed, expect blocked)
    let rows = [
        (JobState::Succeeded, true, true, false),
        (JobState::Failed, false, true, false),
        (JobState::Canceled, false, true, false),
        (JobState::Failed, true, false, true),
        (JobState::Canceled, true, false, true),
    ];
    for (state, block, removed, blocked) in rows {
        let c = ci();
        let mut d = job("9079", JobType::Deprovision, 10, state, ProviderKind::Aap);
        d.block_deletion_on_failure = Some(block);
        d.message = Some("Job failed".into());
        let c = deleting(with_jobs(
            c.clone(),
            vec![provision(&c, "9076", 0, JobState::Succeeded), d],
        ));
        let plan = decide(&c, &obs(), at(100), &aap());
        assert_eq!(
            plan.finalizer == FinalizerChange::Remove,
            removed,
            "{state} block={block}"
        );
        assert_eq!(plan.call, None, "exactly one deprovision per deletion");
        if removed {
            assert!(
                plan.status.is_some(),
                "{state} block={block}: the phase changed"
            );
            assert_eq!(
                plan.status_write(),
                None,
                "{state} block={block}: the object is about to go, its last status is not written"
            );
        }
        if blocked {
            let cond =
                find_condition(&status(&plan).conditions, CONDITION_DELETION_BLOCKED).unwrap();
            assert_eq!(cond.status, "True");
            assert!(cond.message.contains(RETRY_ANNOTATION), "{}", cond.message);
            assert!(
                cond.message.contains("management-state=manual"),
                "{}",
                cond.message
            );
            assert_eq!(event_reasons(&plan), vec!["DeletionBlocked"]);
            assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));

            // Re-checked later: still blocked, no second event.
            let mut c2 = c.clone();
            c2.status = plan.status.clone();
            let again = decide(&c2, &obs(), at(130), &aap());
            assert!(again.events.is_empty());
            assert_eq!(again.finalizer, FinalizerChange::Keep);
        }
    }
}

#[test]
fn a_deprovision_whose_trigger_failed_is_tried_again_with_backoff_then_given_up() {
    let eda = settings(ProviderKind::Eda);
    // (attempt that failed, seconds since, expect: a launch of the next attempt, finalizer gone)
    let rows = [
        (1, 10, false, false), // backoff 30 s not over: wait
        (1, 30, true, false),
        (2, 59, false, false), // backoff 60 s
        (2, 60, true, false),
        (3, 120, true, false),
        (4, 10_000, false, true), // retry limit 3 spent: the EDA job does not block deletion
    ];
    for (attempt, since, relaunch, removed) in rows {
        let c = ci();
        let mut d = job(
            "",
            JobType::Deprovision,
            0,
            JobState::Failed,
            ProviderKind::Eda,
        );
        d.attempt = Some(attempt);
        d.block_deletion_on_failure = Some(false);
        d.message = Some("trigger failed: answered HTTP 500".into());
        d.completion_timestamp = Some(Time(at(0)));
        let mut p = provision(&c, "eda-webhook-1", 0, JobState::Succeeded);
        p.provider = Some(ProviderKind::Eda);
        let c = deleting(with_jobs(c.clone(), vec![p, d]));
        let plan = decide(&c, &obs(), at(since), &eda);
        let row = format!("attempt {attempt} +{since}s");
        assert_eq!(
            launched(&plan).map(|l| l.1),
            relaunch.then_some(JobType::Deprovision),
            "{row}"
        );
        if relaunch {
            let intent = status(&plan).jobs.last().unwrap();
            assert_eq!(intent.attempt, Some(attempt + 1), "{row}");
        }
        assert_eq!(plan.finalizer == FinalizerChange::Remove, removed, "{row}");
        if !relaunch && !removed {
            assert!(
                plan.requeue_after.is_some(),
                "{row}: comes back after the backoff"
            );
        }
    }

    // A deprovision that ran (it has a job id) and failed is not launched again on its own.
    let c = ci();
    let mut d = job(
        "eda-webhook-2",
        JobType::Deprovision,
        0,
        JobState::Failed,
        ProviderKind::Eda,
    );
    d.block_deletion_on_failure = Some(false);
    let c = deleting(with_jobs(c, vec![d]));
    let plan = decide(&c, &obs(), at(1000), &eda);
    assert_eq!(plan.call, None);
    assert_eq!(plan.finalizer, FinalizerChange::Remove);
}

#[test]
fn blocked_deletion_released_by_retry_annotation() {
    let c = ci();
    let mut d = job(
        "9079",
        JobType::Deprovision,
        10,
        JobState::Failed,
        ProviderKind::Aap,
    );
    d.block_deletion_on_failure = Some(true);
    d.attempt = Some(1);
    let mut c = deleting(with_jobs(c, vec![d]));
    annotate(&mut c, RETRY_ANNOTATION, "1");
    let plan = decide(&c, &obs(), at(100), &aap());
    assert_eq!(launched(&plan).map(|l| l.1), Some(JobType::Deprovision));
    let st = status(&plan);
    assert_eq!(st.jobs.last().unwrap().attempt, Some(2));
    let cond = find_condition(&st.conditions, CONDITION_DELETION_BLOCKED).unwrap();
    assert_eq!(cond.status, "False");
}

#[test]
fn deprovision_in_flight_is_waited_for() {
    let c = ci();
    let d = job(
        "9079",
        JobType::Deprovision,
        10,
        JobState::Running,
        ProviderKind::Aap,
    );
    let c = deleting(with_jobs(c, vec![d]));
    let plan = decide(&c, &observe("9079", JobState::Running), at(20), &aap());
    assert_eq!(plan.call, None);
    assert_eq!(plan.finalizer, FinalizerChange::Keep);
}

#[test]
fn auth_errors_become_a_condition_and_an_event() {
    let c = ci();
    let c = with_jobs(c.clone(), vec![provision(&c, "1", 0, JobState::Running)]);
    let mut o = obs();
    o.job_errors.insert(
        "1".into(),
        ErrorInfo {
            kind: ProviderErrorKind::Auth,
            message: "authentication failed: 401".into(),
            retry_after: None,
        },
    );
    let plan = decide(&c, &o, at(5), &aap());
    let (_, r, m) = applied(&plan);
    assert_eq!(r, reason::PROVIDER_ERROR);
    assert!(m.contains("401"), "{m}");
    assert!(event_reasons(&plan).contains(&"ProviderAuthFailed"));
    assert_eq!(
        plan.requeue_after,
        Some(Duration::from_secs(30)),
        "not faster than the poll interval"
    );
}

// ---- launch answers ----

fn pending(ci: &ComputeInstance) -> ComputeInstanceStatus {
    let mut st = ComputeInstanceStatus::default();
    st.jobs.push(intent(ci, 0, ProviderKind::Aap));
    st
}

fn answer(st: &mut ComputeInstanceStatus, a: LaunchAnswer, caps: Capabilities) -> Option<Effect> {
    apply_launch_answer(
        st,
        "uid-1/provision/x/1",
        a,
        caps,
        Duration::from_secs(35),
        Duration::from_secs(30),
        at(1),
    )
}

#[test]
fn started_answer_records_the_id() {
    let c = ci();
    let mut st = pending(&c);
    let mut s = StartedJob::new("9076", JobState::Pending);
    s.aap_job_kind = Some(cloudkit_api::AapJobKind::WorkflowJob);
    let e = answer(&mut st, LaunchAnswer::Started(s), caps_aap()).unwrap();
    assert_eq!(st.jobs[0].job_id, "9076");
    assert_eq!(
        st.jobs[0].aap_job_kind,
        Some(cloudkit_api::AapJobKind::WorkflowJob)
    );
    assert_eq!(e.started, Some((JobType::Provision, ProviderKind::Aap)));
    assert_eq!(e.events[0].reason, "JobStarted");
    // Applying it again (after a conflict re-read that already has the id) finds no intent.
    assert!(
        answer(
            &mut st,
            LaunchAnswer::Started(StartedJob::new("9076", JobState::Pending)),
            caps_aap()
        )
        .is_none()
    );
}

#[test]
fn failed_answers() {
    let err = |kind, retry_after| ErrorInfo {
        kind,
        message: "boom".into(),
        retry_after,
    };
    let c = ci();

    let mut st = pending(&c);
    let e = answer(
        &mut st,
        LaunchAnswer::Failed(err(
            ProviderErrorKind::RateLimited,
            Some(Duration::from_secs(9)),
        )),
        caps_eda(),
    )
    .unwrap();
    assert!(st.jobs.is_empty(), "a rate-limited launch leaves no entry");
    assert_eq!(e.not_before, Some(at(10)));

    let mut st = pending(&c);
    let e = answer(
        &mut st,
        LaunchAnswer::Failed(err(ProviderErrorKind::Transport, None)),
        caps_aap(),
    )
    .unwrap();
    assert_eq!(st.jobs[0].job_id, "");
    assert!(
        !st.jobs[0].is_terminal(),
        "an ambiguous AAP launch is kept for lookup"
    );
    assert_eq!(e.requeue_after, Some(Duration::from_secs(35)));

    let mut st = pending(&c);
    let e = answer(
        &mut st,
        LaunchAnswer::Failed(err(ProviderErrorKind::Transport, None)),
        caps_eda(),
    )
    .unwrap();
    assert_eq!(st.jobs[0].state, JobState::Failed);
    assert_eq!(e.events[0].reason, "TriggerFailed");

    let mut st = pending(&c);
    answer(
        &mut st,
        LaunchAnswer::Failed(err(ProviderErrorKind::Configuration, None)),
        caps_aap(),
    )
    .unwrap();
    assert_eq!(st.jobs[0].state, JobState::Failed);
    assert!(
        st.jobs[0]
            .message
            .as_deref()
            .unwrap()
            .starts_with("trigger failed")
    );
}

#[test]
fn deprovision_answers() {
    let c = ci();
    let mk = || {
        let mut st = pending(&c);
        st.jobs[0].job_type = JobType::Deprovision;
        st
    };
    let mut st = mk();
    let e = answer(
        &mut st,
        LaunchAnswer::Skipped {
            message: "nothing provisioned".into(),
        },
        caps_eda(),
    )
    .unwrap();
    assert!(e.remove_finalizer);
    assert!(st.jobs.is_empty());

    let mut st = mk();
    let e = answer(
        &mut st,
        LaunchAnswer::Waiting {
            message: "later".into(),
            retry_after: Duration::from_secs(5),
        },
        caps_eda(),
    )
    .unwrap();
    assert!(!e.remove_finalizer);
    assert_eq!(e.requeue_after, Some(Duration::from_secs(5)));

    let mut st = mk();
    answer(
        &mut st,
        LaunchAnswer::Failed(ErrorInfo {
            kind: ProviderErrorKind::Configuration,
            message: "no such template".into(),
            retry_after: None,
        }),
        caps_aap(),
    )
    .unwrap();
    assert_eq!(
        st.jobs[0].block_deletion_on_failure,
        Some(true),
        "an AAP deprovision that never started blocks deletion"
    );

    // A refused deprovision (401) is not a failed one: nothing blocks, it is asked again later.
    let mut st = mk();
    let e = answer(
        &mut st,
        LaunchAnswer::Failed(ErrorInfo {
            kind: ProviderErrorKind::Auth,
            message: "401".into(),
            retry_after: None,
        }),
        caps_aap(),
    )
    .unwrap();
    assert!(st.jobs.is_empty());
    assert_eq!(e.not_before, Some(at(31)));
    assert_eq!(e.events[0].reason, "ProviderAuthFailed");
}

#[test]
fn a_refused_launch_is_no_attempt_and_the_condition_says_why_until_the_next() {
    let c = ci();
    let plan = decide(&c, &obs(), at(0), &aap());
    let (_, _, key) = launched(&plan).expect("launch");
    let mut st = plan.status.clone().unwrap();
    let e = apply_launch_answer(
        &mut st,
        &key,
        LaunchAnswer::Failed(ErrorInfo {
            kind: ProviderErrorKind::Auth,
            message: "authentication failed: AAP answered HTTP 401".into(),
            retry_after: None,
        }),
        caps_aap(),
        Duration::from_secs(35),
        Duration::from_secs(30),
        at(1),
    )
    .unwrap();
    assert!(
        st.jobs.is_empty(),
        "no job, no failed attempt: {:?}",
        st.jobs
    );
    assert_eq!(
        e.not_before,
        Some(at(31)),
        "not faster than the poll interval"
    );
    assert_eq!(e.requeue_after, Some(Duration::from_secs(30)));
    assert_eq!(e.events[0].reason, "ProviderAuthFailed");
    let cond = find_condition(&st.conditions, CONDITION_CONFIGURATION_APPLIED).unwrap();
    assert_eq!(cond.reason, reason::PROVIDER_ERROR);
    assert!(
        cond.message.contains("401") && cond.message.contains("next provision attempt"),
        "{}",
        cond.message
    );

    // Passes before the next attempt (our own write wakes one) launch nothing and write nothing.
    let mut c2 = c.clone();
    c2.status = Some(st);
    let mut o = obs();
    o.launch_not_before = e.not_before;
    o.launch_refusal = e.refusal.clone();
    let waiting = decide(&c2, &o, at(2), &aap());
    assert_eq!(waiting.call, None);
    assert_eq!(waiting.status, None, "the condition already says it all");

    // Then the same attempt again, under the same launch key.
    let again = decide(&c2, &o, at(31), &aap());
    let (_, _, key2) = launched(&again).expect("launched again");
    assert_eq!(key2, key);
}

#[test]
fn after_a_launch_answer_the_next_pass_has_nothing_to_write() {
    for settings in [aap(), settings(ProviderKind::Eda)] {
        let c = ci();
        let plan = decide(&c, &obs(), at(0), &settings);
        let (_, _, key) = launched(&plan).expect("launch");
        assert!(applied(&plan).2.contains("(not yet assigned)"));
        let mut st = plan.status.clone().unwrap();
        let id = if settings.active == ProviderKind::Eda {
            "eda-webhook-1"
        } else {
            "9076"
        };
        let state = if settings.active == ProviderKind::Eda {
            JobState::Running
        } else {
            JobState::Pending
        };
        let caps = settings.capabilities(settings.active).unwrap();
        apply_launch_answer(
            &mut st,
            &key,
            LaunchAnswer::Started(StartedJob::new(id, state)),
            caps,
            Duration::from_secs(35),
            Duration::from_secs(30),
            at(0),
        )
        .unwrap();
        let cond = find_condition(&st.conditions, CONDITION_CONFIGURATION_APPLIED).unwrap();
        assert!(cond.message.contains(id), "{}", cond.message);

        let mut c2 = c.clone();
        c2.status = Some(st);
        let again = decide(&c2, &obs(), at(1), &settings);
        assert_eq!(
            again.status, None,
            "{:?}: nothing new, nothing to write",
            settings.active
        );
        assert_eq!(again.call, None);
    }
}
