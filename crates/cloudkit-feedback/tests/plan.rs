//! The feedback controller's decisions (SPEC 13), one situation per row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use cloudkit_api::metadata::UUID_LABEL;
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, ComputeInstanceStatus, Phase};
use cloudkit_feedback::fake::FakeFulfillment;
use cloudkit_feedback::plan::{
    FEEDBACK_FINALIZER, Fetch, MAX_BACKOFF, Plan, Step, WarningReason, backoff, decide, object_id,
};
use cloudkit_feedback::proto::private::v1::{ComputeInstance as Object, ComputeInstanceState};
use cloudkit_feedback::{CallError, map_status};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const ID: &str = "0b5f5d7e-3c5a-4d43-a1a4-8a0f0d1f6f1e";
const OTHER_FINALIZER: &str = "cloudkit.openshift.io/computeinstance";

fn now() -> Timestamp {
    "2026-12-02T08:00:00Z".parse().unwrap()
}

/// A fixture builder: `ci().labelled().running().deleting().finalizers(&[...])`.
struct CiBuilder(ComputeInstance);

fn ci() -> CiBuilder {
    CiBuilder(ComputeInstance::new(
        "vm-1",
        ComputeInstanceSpec::for_template("small"),
    ))
}

impl CiBuilder {
    fn labelled(mut self) -> Self {
        self.0.metadata.labels = Some(BTreeMap::from([(UUID_LABEL.to_owned(), ID.to_owned())]));
        self
    }
    fn running(mut self) -> Self {
        self.0.status = Some(ComputeInstanceStatus {
            phase: Some(Phase::Running),
            ..ComputeInstanceStatus::default()
        });
        self
    }
    fn deleting(mut self) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(now()));
        self
    }
    fn finalizers(mut self, finalizers: &[&str]) -> Self {
        self.0.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        self
    }
    fn build(self) -> ComputeInstance {
        self.0
    }
}

/// The object as the service stores it (STARTING, conditions FALSE).
fn object() -> Object {
    FakeFulfillment::object(ID, "small")
}

fn found(object: Object) -> Fetch {
    Fetch::Found(Box::new(object))
}

/// The object after `ci` was mapped onto it (what a previous pass stored).
fn in_sync(ci: &ComputeInstance) -> Object {
    map_status(ci, &object(), now()).object
}

fn deleting_state(mut object: Object) -> Object {
    object.status.as_mut().unwrap().state = ComputeInstanceState::Deleting as i32;
    object
}

fn kinds(plan: &Plan) -> Vec<&'static str> {
    plan.steps
        .iter()
        .map(|s| match s {
            Step::AddFinalizer => "add-finalizer",
            Step::Update(_) => "update",
            Step::RemoveFinalizer => "remove-finalizer",
            Step::Signal(_) => "signal",
            Step::Warn { .. } => "warn",
            Step::RetryWithBackoff => "retry",
        })
        .collect()
}

#[test]
fn every_situation_has_its_plan() {
    let running = ci().labelled().running();
    let synced = in_sync(&running.0.clone());
    let rows: Vec<(&str, ComputeInstance, Fetch, Vec<&str>)> = vec![
        (
            "unlabelled CI",
            ci().running().build(),
            Fetch::Unlabelled,
            vec![],
        ),
        (
            "unlabelled CI being deleted keeps no finalizer",
            ci().deleting().finalizers(&[FEEDBACK_FINALIZER]).build(),
            Fetch::Unlabelled,
            vec!["remove-finalizer"],
        ),
        (
            "unlabelled CI being deleted without the finalizer",
            ci().deleting().finalizers(&[OTHER_FINALIZER]).build(),
            Fetch::Unlabelled,
            vec![],
        ),
        (
            "labelled CI not fetched yet",
            ci().labelled().build(),
            Fetch::Unlabelled,
            vec![],
        ),
        (
            "new CI: finalizer first, then the state",
            ci().labelled().running().build(),
            found(object()),
            vec!["add-finalizer", "update"],
        ),
        (
            "finalized CI whose state changed",
            ci().labelled()
                .running()
                .finalizers(&[FEEDBACK_FINALIZER])
                .build(),
            found(object()),
            vec!["update"],
        ),
        (
            "finalized CI already in sync: no Update",
            ci().labelled()
                .running()
                .finalizers(&[FEEDBACK_FINALIZER])
                .build(),
            found(synced.clone()),
            vec![],
        ),
        (
            "in sync but without the finalizer",
            running.build(),
            found(synced.clone()),
            vec!["add-finalizer"],
        ),
        (
            "deleting, other finalizers left: push DELETING and wait",
            ci().labelled()
                .running()
                .deleting()
                .finalizers(&[OTHER_FINALIZER, FEEDBACK_FINALIZER])
                .build(),
            found(synced.clone()),
            vec!["update"],
        ),
        (
            "deleting, ours the last: push DELETING, release, Signal",
            ci().labelled()
                .running()
                .deleting()
                .finalizers(&[FEEDBACK_FINALIZER])
                .build(),
            found(synced.clone()),
            vec!["update", "remove-finalizer", "signal"],
        ),
        (
            "deleting, ours the last, DELETING already pushed",
            ci().labelled()
                .running()
                .deleting()
                .finalizers(&[FEEDBACK_FINALIZER])
                .build(),
            found(deleting_state(synced.clone())),
            vec!["remove-finalizer", "signal"],
        ),
        (
            "deleting without our finalizer: never added, DELETING still pushed",
            ci().labelled()
                .running()
                .deleting()
                .finalizers(&[OTHER_FINALIZER])
                .build(),
            found(synced.clone()),
            vec!["update"],
        ),
        (
            "service unreachable: warn and back off, deletion waits",
            ci().labelled()
                .deleting()
                .finalizers(&[FEEDBACK_FINALIZER])
                .build(),
            Fetch::Failed("connection refused".to_owned()),
            vec!["warn", "retry"],
        ),
        (
            "service unreachable for a live CI",
            ci().labelled().running().build(),
            Fetch::Failed("connection refused".to_owned()),
            vec!["warn", "retry"],
        ),
        (
            "NotFound while deleting: release with a Warning",
            ci().labelled()
                .deleting()
                .finalizers(&[OTHER_FINALIZER, FEEDBACK_FINALIZER])
                .build(),
            Fetch::NotFound,
            vec!["remove-finalizer", "warn"],
        ),
        (
            "NotFound while deleting, no finalizer of ours",
            ci().labelled()
                .deleting()
                .finalizers(&[OTHER_FINALIZER])
                .build(),
            Fetch::NotFound,
            vec!["warn"],
        ),
        (
            "NotFound for a live CI: no finalizer, warn and retry",
            ci().labelled().running().build(),
            Fetch::NotFound,
            vec!["warn", "retry"],
        ),
    ];
    for (name, ci, fetch, want) in rows {
        let plan = decide(&ci, fetch, now());
        assert_eq!(kinds(&plan), want, "{name}");
    }
}

#[test]
fn the_update_sends_the_mapped_object_and_deletion_forces_deleting() {
    let live = ci()
        .labelled()
        .running()
        .finalizers(&[FEEDBACK_FINALIZER])
        .build();
    let plan = decide(&live, found(object()), now());
    let Step::Update(sent) = &plan.steps[0] else {
        panic!("{plan:?}")
    };
    assert_eq!(**sent, map_status(&live, &object(), now()).object);
    assert_eq!(
        sent.status.as_ref().unwrap().state,
        ComputeInstanceState::Running as i32
    );

    // The CI still says Running (the reconciler has not written Deleting yet): DELETING anyway.
    let deleting = ci()
        .labelled()
        .running()
        .deleting()
        .finalizers(&[FEEDBACK_FINALIZER])
        .build();
    let plan = decide(&deleting, found(object()), now());
    let Step::Update(sent) = &plan.steps[0] else {
        panic!("{plan:?}")
    };
    assert_eq!(
        sent.status.as_ref().unwrap().state,
        ComputeInstanceState::Deleting as i32
    );
    // Metadata and spec go back as fetched.
    assert_eq!(sent.metadata, object().metadata);
    assert_eq!(sent.spec, object().spec);
    assert_eq!(plan.steps.last(), Some(&Step::Signal(ID.to_owned())));
}

#[test]
fn warnings_name_the_object_and_the_cause() {
    let plan = decide(
        &ci().labelled().build(),
        Fetch::Failed("Get: the fulfillment service could not be reached: refused".to_owned()),
        now(),
    );
    let Step::Warn { reason, message } = &plan.steps[0] else {
        panic!("{plan:?}")
    };
    assert_eq!(reason.as_str(), "FulfillmentUnavailable");
    assert!(message.contains("refused"), "{message}");

    let plan = decide(
        &ci()
            .labelled()
            .deleting()
            .finalizers(&[FEEDBACK_FINALIZER])
            .build(),
        Fetch::NotFound,
        now(),
    );
    let Step::Warn { reason, message } = &plan.steps[1] else {
        panic!("{plan:?}")
    };
    assert_eq!(*reason, WarningReason::FulfillmentObjectNotFound);
    assert_eq!(reason.as_str(), "FulfillmentObjectNotFound");
    assert!(message.contains(ID), "{message}");
}

#[test]
fn get_results_become_fetch_outcomes() {
    assert_eq!(Fetch::from_result(Ok(object())), found(object()));
    let not_found = CallError::Status {
        method: "Get",
        status: Box::new(tonic::Status::not_found("gone")),
    };
    assert_eq!(Fetch::from_result(Err(not_found)), Fetch::NotFound);
    let denied = CallError::Status {
        method: "Get",
        status: Box::new(tonic::Status::permission_denied("no")),
    };
    assert!(
        matches!(Fetch::from_result(Err(denied)), Fetch::Failed(m) if m.contains("PermissionDenied"))
    );
    let timeout = CallError::Timeout {
        method: "Get",
        timeout: Duration::from_secs(30),
    };
    assert!(matches!(Fetch::from_result(Err(timeout)), Fetch::Failed(_)));
}

#[test]
fn the_object_id_is_the_uuid_label() {
    assert_eq!(object_id(&ci().labelled().build()), Some(ID));
    assert_eq!(object_id(&ci().build()), None);
    let mut empty = ci().build();
    empty.metadata.labels = Some(BTreeMap::from([(UUID_LABEL.to_owned(), String::new())]));
    assert_eq!(object_id(&empty), None);
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let rows = [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 4),
        (9, 256),
        (10, 300),
        (40, 300),
        (u32::MAX, 300),
    ];
    for (failures, seconds) in rows {
        assert_eq!(
            backoff(failures),
            Duration::from_secs(seconds),
            "{failures}"
        );
    }
    assert_eq!(MAX_BACKOFF, Duration::from_secs(300));
}
