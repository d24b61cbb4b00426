//! The mapping of fulfillment-wire.md section 3, one rule per row.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, ComputeInstanceStatus, Phase};
use cloudkit_feedback::mapping::{
    FLOATING_IP_ANNOTATION, Observed, condition_types as ct, map_observed, map_status,
    to_proto_timestamp,
};
use cloudkit_feedback::proto::private::v1::{
    ComputeInstance as Object, ComputeInstanceCondition, ComputeInstanceConditionType as Type,
    ComputeInstanceSpec as ObjectSpec, ComputeInstanceState as State,
    ComputeInstanceStatus as ObjectStatus, Metadata,
};
use cloudkit_feedback::proto::shared::v1::ConditionStatus as Wire;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use prost::Message;

fn now() -> Timestamp {
    "2026-12-02T08:00:00Z".parse().unwrap()
}

fn earlier() -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: 1_767_225_600,
        nanos: 0,
    }
}

/// A Kubernetes condition on the CI.
fn cond(type_: &str, status: &str, message: &str) -> Condition {
    Condition {
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
        message: message.to_owned(),
        observed_generation: None,
        reason: "SomeReason".to_owned(),
        status: status.to_owned(),
        type_: type_.to_owned(),
    }
}

fn observed(conditions: Vec<Condition>) -> Observed {
    Observed {
        conditions,
        ..Observed::default()
    }
}

/// A condition on the object as the service initialises it: FALSE, no message.
fn wire_cond(kind: Type, status: Wire) -> ComputeInstanceCondition {
    ComputeInstanceCondition {
        r#type: kind as i32,
        status: status as i32,
        last_transition_time: Some(earlier()),
        reason: Some("ServiceReason".to_owned()),
        message: None,
    }
}

/// The object as the service creates it: STARTING, all six conditions FALSE, and metadata and a
/// spec with an `Any` parameter.
fn fetched() -> Object {
    let conditions = [
        Type::Progressing,
        Type::Available,
        Type::Failed,
        Type::Degraded,
        Type::RestartInProgress,
        Type::RestartFailed,
    ]
    .into_iter()
    .map(|kind| ComputeInstanceCondition {
        r#type: kind as i32,
        status: Wire::False as i32,
        last_transition_time: Some(earlier()),
        reason: None,
        message: None,
    })
    .collect();
    Object {
        id: "ci-1".to_owned(),
        metadata: Some(Metadata {
            creation_timestamp: Some(earlier()),
            name: "ci-1".to_owned(),
            creators: vec!["alice".to_owned()],
            tenants: vec!["tenant-a".to_owned()],
            ..Metadata::default()
        }),
        spec: Some(ObjectSpec {
            template: "small".to_owned(),
            template_parameters: BTreeMap::from([(
                "cpu".to_owned(),
                prost_types::Any {
                    type_url: "type.googleapis.com/google.protobuf.Int32Value".to_owned(),
                    value: vec![0x08, 0x04],
                },
            )]),
            restart_requested_at: None,
        }),
        status: Some(ObjectStatus {
            state: State::Starting as i32,
            conditions,
            ..ObjectStatus::default()
        }),
    }
}

fn with_conditions(conditions: Vec<ComputeInstanceCondition>) -> Object {
    let mut object = fetched();
    object.status = Some(ObjectStatus {
        conditions,
        ..ObjectStatus::default()
    });
    object
}

fn status(object: &Object) -> &ObjectStatus {
    object.status.as_ref().unwrap()
}

fn condition(object: &Object, kind: Type) -> &ComputeInstanceCondition {
    status(object)
        .conditions
        .iter()
        .find(|c| c.r#type == kind as i32)
        .unwrap()
}

#[test]
fn each_phase_sets_the_state_and_an_absent_phase_leaves_it() {
    // An unknown phase cannot reach the mapping: `Phase` is a closed enum, so a CI with another
    // value does not deserialize. The "unknown leaves the state" rule is the `None` row.
    let rows = [
        (Some(Phase::Starting), State::Starting),
        (Some(Phase::Running), State::Running),
        (Some(Phase::Failed), State::Failed),
        (Some(Phase::Deleting), State::Deleting),
        (None, State::Failed),
    ];
    for (phase, want) in rows {
        let mut object = fetched();
        object.status.as_mut().unwrap().state = State::Failed as i32;
        let input = Observed {
            phase,
            ..Observed::default()
        };
        let mapped = map_observed(&input, &object, now());
        assert_eq!(status(&mapped.object).state, want as i32, "phase {phase:?}");
    }
}

#[test]
fn condition_status_values_map_true_false_and_anything_else_to_unspecified() {
    let rows = [
        ("True", Wire::True),
        ("False", Wire::False),
        ("Unknown", Wire::Unspecified),
        ("", Wire::Unspecified),
        ("true", Wire::Unspecified),
    ];
    for (k8s, want) in rows {
        let input = observed(vec![cond(ct::AVAILABLE, k8s, "m")]);
        let mapped = map_observed(&input, &fetched(), now());
        assert_eq!(
            condition(&mapped.object, Type::Available).status,
            want as i32,
            "{k8s:?}"
        );
    }
}

#[test]
fn progressing_follows_progressing_then_accepted() {
    type Row = (
        Option<(&'static str, &'static str)>,
        Option<(&'static str, &'static str)>,
        Wire,
        &'static str,
    );
    // (CI Progressing (status, message), CI Accepted (status, message), PROGRESSING, message)
    let rows: [Row; 11] = [
        (None, None, Wire::Unspecified, ""),
        (
            Some(("Unknown", "p")),
            Some(("Unknown", "a")),
            Wire::Unspecified,
            "",
        ),
        (None, Some(("Unknown", "a")), Wire::Unspecified, ""),
        (Some(("Unknown", "p")), None, Wire::Unspecified, ""),
        (Some(("True", "applying")), None, Wire::True, "applying"),
        (
            Some(("True", "applying")),
            Some(("True", "accepted")),
            Wire::True,
            "applying",
        ),
        // Deviation from Go (which answered TRUE "accepted"): a known Progressing decides.
        (
            Some(("False", "done")),
            Some(("True", "accepted")),
            Wire::False,
            "",
        ),
        (
            Some(("Unknown", "p")),
            Some(("True", "accepted")),
            Wire::True,
            "accepted",
        ),
        (None, Some(("True", "accepted")), Wire::True, "accepted"),
        (
            Some(("False", "done")),
            Some(("False", "no tenant")),
            Wire::False,
            "",
        ),
        (
            Some(("Unknown", "p")),
            Some(("False", "no tenant")),
            Wire::False,
            "",
        ),
    ];
    for (progressing, accepted, want, message) in rows {
        let mut conditions = Vec::new();
        if let Some((s, m)) = progressing {
            conditions.push(cond(ct::PROGRESSING, s, m));
        }
        if let Some((s, m)) = accepted {
            conditions.push(cond(ct::ACCEPTED, s, m));
        }
        let mapped = map_observed(&observed(conditions), &fetched(), now());
        let got = condition(&mapped.object, Type::Progressing);
        let row = format!("Progressing {progressing:?}, Accepted {accepted:?}");
        assert_eq!(got.status, want as i32, "{row}");
        assert_eq!(got.message.as_deref(), Some(message), "{row}");
    }
    // A lone False Progressing is known, so the answer is FALSE, not UNSPECIFIED.
    let mapped = map_observed(
        &observed(vec![cond(ct::PROGRESSING, "False", "done")]),
        &fetched(),
        now(),
    );
    let got = condition(&mapped.object, Type::Progressing);
    assert_eq!(
        (got.status, got.message.as_deref()),
        (Wire::False as i32, Some(""))
    );
}

#[test]
fn available_and_restart_conditions_are_copied_when_the_ci_has_them() {
    let rows = [
        (ct::AVAILABLE, Type::Available),
        (ct::RESTART_IN_PROGRESS, Type::RestartInProgress),
        (ct::RESTART_FAILED, Type::RestartFailed),
    ];
    for (k8s, kind) in rows {
        for (value, want) in [
            ("True", Wire::True),
            ("False", Wire::False),
            ("Unknown", Wire::Unspecified),
        ] {
            let input = observed(vec![cond(k8s, value, "the message")]);
            let mapped = map_observed(&input, &fetched(), now());
            let got = condition(&mapped.object, kind);
            assert_eq!(got.status, want as i32, "{k8s}={value}");
            assert_eq!(got.message.as_deref(), Some("the message"), "{k8s}={value}");
        }
        // Absent on the CI: the object's condition stays as it was.
        let mapped = map_observed(&Observed::default(), &fetched(), now());
        assert_eq!(
            condition(&mapped.object, kind),
            condition(&fetched(), kind),
            "{k8s} absent"
        );
    }
}

#[test]
fn transition_time_changes_only_with_the_status() {
    let object = with_conditions(vec![wire_cond(Type::Available, Wire::False)]);

    let same = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "False", "still down")]),
        &object,
        now(),
    );
    let got = condition(&same.object, Type::Available);
    assert_eq!(got.last_transition_time, Some(earlier()));
    assert_eq!(got.message.as_deref(), Some("still down"));
    assert!(same.changed, "the message changed");

    let flipped = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "True", "up")]),
        &object,
        now(),
    );
    let got = condition(&flipped.object, Type::Available);
    assert_eq!(got.status, Wire::True as i32);
    assert_eq!(got.last_transition_time, Some(to_proto_timestamp(now())));
}

#[test]
fn an_absent_condition_is_appended_as_false_first() {
    let object = with_conditions(vec![]);

    // Appended FALSE, then written FALSE: the status did not change, so no transition time.
    let mapped = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "False", "down")]),
        &object,
        now(),
    );
    let got = condition(&mapped.object, Type::Available);
    assert_eq!(got.status, Wire::False as i32);
    assert_eq!(got.last_transition_time, None);
    assert_eq!(got.message.as_deref(), Some("down"));

    // Appended FALSE, then written TRUE: a change, stamped now.
    let mapped = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "True", "up")]),
        &object,
        now(),
    );
    let got = condition(&mapped.object, Type::Available);
    assert_eq!(got.status, Wire::True as i32);
    assert_eq!(got.last_transition_time, Some(to_proto_timestamp(now())));

    // PROGRESSING is always written, so it is always appended when missing.
    assert_eq!(
        status(&mapped.object)
            .conditions
            .iter()
            .map(|c| c.r#type)
            .collect::<Vec<_>>(),
        vec![Type::Progressing as i32, Type::Available as i32]
    );
}

#[test]
fn the_first_condition_of_a_type_is_the_one_written() {
    let object = with_conditions(vec![
        wire_cond(Type::Available, Wire::False),
        wire_cond(Type::Available, Wire::False),
    ]);
    let mapped = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "True", "up")]),
        &object,
        now(),
    );
    let conditions = &status(&mapped.object).conditions;
    assert_eq!(conditions[0].status, Wire::True as i32);
    assert_eq!(conditions[1], wire_cond(Type::Available, Wire::False));
}

#[test]
fn an_empty_message_is_sent_with_presence() {
    let mapped = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "True", "")]),
        &fetched(),
        now(),
    );
    assert_eq!(
        condition(&mapped.object, Type::Available).message,
        Some(String::new())
    );
    // ... and survives the wire with presence.
    let decoded = Object::decode(mapped.object.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        condition(&decoded, Type::Available).message,
        Some(String::new())
    );
}

#[test]
fn reason_is_not_written() {
    let object = with_conditions(vec![wire_cond(Type::Available, Wire::False)]);
    let mapped = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "True", "up")]),
        &object,
        now(),
    );
    assert_eq!(
        condition(&mapped.object, Type::Available).reason.as_deref(),
        Some("ServiceReason")
    );
    let fresh = map_observed(
        &observed(vec![cond(ct::AVAILABLE, "True", "up")]),
        &with_conditions(vec![]),
        now(),
    );
    assert_eq!(condition(&fresh.object, Type::Available).reason, None);
}

#[test]
fn failed_and_degraded_are_never_written() {
    let object = with_conditions(vec![
        wire_cond(Type::Failed, Wire::True),
        wire_cond(Type::Degraded, Wire::True),
    ]);
    let input = observed(vec![
        cond("Failed", "False", "fine"),
        cond("Degraded", "False", "fine"),
        cond("ConfigurationApplied", "True", "applied"),
    ]);
    let mapped = map_observed(&input, &object, now());
    assert_eq!(
        condition(&mapped.object, Type::Failed),
        &wire_cond(Type::Failed, Wire::True)
    );
    assert_eq!(
        condition(&mapped.object, Type::Degraded),
        &wire_cond(Type::Degraded, Wire::True)
    );
    // Only PROGRESSING was added.
    assert_eq!(status(&mapped.object).conditions.len(), 3);
}

#[test]
fn the_floating_ip_is_set_when_present_and_never_cleared() {
    let rows = [
        (Some("192.0.2.7"), "198.51.100.1", "192.0.2.7"),
        (Some(""), "198.51.100.1", "198.51.100.1"),
        (None, "198.51.100.1", "198.51.100.1"),
        (Some("192.0.2.7"), "", "192.0.2.7"),
    ];
    for (annotation, before, want) in rows {
        let mut object = fetched();
        object.status.as_mut().unwrap().ip_address = before.to_owned();
        let input = Observed {
            floating_ip: annotation.map(str::to_owned),
            ..Observed::default()
        };
        let mapped = map_observed(&input, &object, now());
        assert_eq!(
            status(&mapped.object).ip_address,
            want,
            "{annotation:?} over {before:?}"
        );
    }
}

#[test]
fn last_restarted_at_is_set_when_present_and_never_cleared() {
    let restarted: Timestamp = "2026-12-01T10:00:00.5Z".parse().unwrap();
    let mut object = fetched();
    object.status.as_mut().unwrap().last_restarted_at = Some(earlier());

    let set = Observed {
        last_restarted_at: Some(restarted),
        ..Observed::default()
    };
    let mapped = map_observed(&set, &object, now());
    assert_eq!(
        status(&mapped.object).last_restarted_at,
        Some(prost_types::Timestamp {
            seconds: restarted.as_second(),
            nanos: 500_000_000
        })
    );

    let mapped = map_observed(&Observed::default(), &object, now());
    assert_eq!(status(&mapped.object).last_restarted_at, Some(earlier()));
}

#[test]
fn id_metadata_spec_and_any_values_are_untouched_byte_for_byte() {
    let mut object = fetched();
    let spec = object.spec.as_mut().unwrap();
    // An Any whose bytes are not even a valid message of its type: carried, never interpreted.
    spec.template_parameters.insert(
        "opaque".to_owned(),
        prost_types::Any {
            type_url: "type.example.com/unknown.Type".to_owned(),
            value: vec![0xff, 0x00, 0x13, 0x37],
        },
    );
    spec.restart_requested_at = Some(earlier());
    let metadata = object.metadata.as_mut().unwrap();
    metadata.deletion_timestamp = Some(earlier());
    metadata.finalizers = vec!["fulfillment".to_owned()];
    metadata.labels = BTreeMap::from([("a".to_owned(), "b".to_owned())]);
    metadata.annotations = BTreeMap::from([("c".to_owned(), "d".to_owned())]);

    let input = Observed {
        phase: Some(Phase::Deleting),
        conditions: vec![
            cond(ct::PROGRESSING, "True", "p"),
            cond(ct::AVAILABLE, "True", "a"),
            cond(ct::RESTART_IN_PROGRESS, "False", "r"),
            cond(ct::RESTART_FAILED, "False", "f"),
        ],
        floating_ip: Some("192.0.2.7".to_owned()),
        last_restarted_at: Some(now()),
    };
    let mapped = map_observed(&input, &object, now());
    assert!(mapped.changed);
    assert_eq!(mapped.object.id, object.id);
    assert_eq!(
        mapped.object.metadata.as_ref().unwrap().encode_to_vec(),
        object.metadata.as_ref().unwrap().encode_to_vec()
    );
    assert_eq!(
        mapped.object.spec.as_ref().unwrap().encode_to_vec(),
        object.spec.as_ref().unwrap().encode_to_vec()
    );
    // `hub` is the service's; feedback leaves it.
    let mut with_hub = object.clone();
    with_hub.status.as_mut().unwrap().hub = "hub-1".to_owned();
    assert_eq!(
        status(&map_observed(&input, &with_hub, now()).object).hub,
        "hub-1"
    );
}

#[test]
fn nothing_changed_means_no_update() {
    let input = Observed {
        phase: Some(Phase::Running),
        conditions: vec![
            cond(ct::PROGRESSING, "True", "p"),
            cond(ct::AVAILABLE, "True", "up"),
        ],
        floating_ip: Some("192.0.2.7".to_owned()),
        last_restarted_at: None,
    };
    let first = map_observed(&input, &fetched(), now());
    assert!(first.changed);
    // The next pass, later, over what the service now stores: nothing to send.
    let later: Timestamp = "2026-12-02T09:00:00Z".parse().unwrap();
    let second = map_observed(&input, &first.object, later);
    assert!(!second.changed);
    assert_eq!(second.object, first.object);
}

#[test]
fn an_object_without_status_gets_one() {
    let mut object = fetched();
    object.status = None;
    let mapped = map_observed(
        &Observed {
            phase: Some(Phase::Starting),
            ..Observed::default()
        },
        &object,
        now(),
    );
    assert!(mapped.changed);
    assert_eq!(status(&mapped.object).state, State::Starting as i32);
    assert_eq!(
        condition(&mapped.object, Type::Progressing).status,
        Wire::Unspecified as i32
    );
}

#[test]
fn map_status_reads_the_ci() {
    let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("small"));
    ci.metadata.annotations = Some(BTreeMap::from([(
        FLOATING_IP_ANNOTATION.to_owned(),
        "192.0.2.7".to_owned(),
    )]));
    ci.status = Some(ComputeInstanceStatus {
        phase: Some(Phase::Running),
        conditions: vec![
            cond(ct::ACCEPTED, "True", "accepted"),
            cond(ct::AVAILABLE, "True", "vm ready"),
        ],
        last_restarted_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            "2026-02-01T10:00:00Z".parse().unwrap(),
        )),
        ..ComputeInstanceStatus::default()
    });
    let mapped = map_status(&ci, &fetched(), now());
    let got = status(&mapped.object);
    assert_eq!(got.state, State::Running as i32);
    assert_eq!(got.ip_address, "192.0.2.7");
    assert_eq!(
        got.last_restarted_at.as_ref().map(|t| t.seconds),
        Some(
            "2026-02-01T10:00:00Z"
                .parse::<Timestamp>()
                .unwrap()
                .as_second()
        )
    );
    let progressing = condition(&mapped.object, Type::Progressing);
    assert_eq!(
        (progressing.status, progressing.message.as_deref()),
        (Wire::True as i32, Some("accepted"))
    );
    let available = condition(&mapped.object, Type::Available);
    assert_eq!(
        (available.status, available.message.as_deref()),
        (Wire::True as i32, Some("vm ready"))
    );

    // A CI without status maps to PROGRESSING UNSPECIFIED and leaves the rest.
    let bare = ComputeInstance::new("vm-2", ComputeInstanceSpec::for_template("small"));
    let mapped = map_status(&bare, &fetched(), now());
    assert_eq!(status(&mapped.object).state, State::Starting as i32);
    assert_eq!(
        condition(&mapped.object, Type::Progressing).status,
        Wire::Unspecified as i32
    );
}

#[test]
fn proto_timestamps_keep_nanoseconds_non_negative() {
    let before_epoch: Timestamp = "1969-12-31T23:59:59.25Z".parse().unwrap();
    assert_eq!(
        to_proto_timestamp(before_epoch),
        prost_types::Timestamp {
            seconds: -1,
            nanos: 250_000_000
        }
    );
    assert_eq!(
        to_proto_timestamp(now()),
        prost_types::Timestamp {
            seconds: now().as_second(),
            nanos: 0
        }
    );
}
