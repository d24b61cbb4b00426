//! Mapping a `ComputeInstance`'s state onto the fulfillment service's object
//! (fulfillment-wire.md section 3, the Go operator's rules).
//!
//! The mapping only touches `status`: `id`, `metadata` and `spec` (including the `Any` values of
//! the template parameters) are left exactly as the server returned them, because Update has no
//! field mask and replaces the stored object with the one sent.

use cloudkit_api::{ComputeInstance, Phase};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::proto::private::v1 as pb;
use crate::proto::shared::v1::ConditionStatus;

/// Kubernetes condition types that feedback reads from a `ComputeInstance`.
///
/// They are the Go operator's condition types; the operator writes them on the CI.
pub mod condition_types {
    /// The CI can be acted on.
    pub const ACCEPTED: &str = "Accepted";
    /// A configuration is being applied or a job runs.
    pub const PROGRESSING: &str = "Progressing";
    /// The virtual machine is ready.
    pub const AVAILABLE: &str = "Available";
    /// A requested restart is under way.
    pub const RESTART_IN_PROGRESS: &str = "RestartInProgress";
    /// A requested restart could not be carried out.
    pub const RESTART_FAILED: &str = "RestartFailed";
}

/// Annotation the automation writes on a CI with its floating IP address; feedback reports it as
/// the object's `status.ip_address`.
pub const FLOATING_IP_ANNOTATION: &str = "cloudkit.openshift.io/floating-ip-address";

/// What feedback reads from a `ComputeInstance`: the inputs of the mapping, nothing else.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// `status.phase`; `None` leaves the object's state as it is.
    pub phase: Option<Phase>,
    /// `status.conditions`.
    pub conditions: Vec<Condition>,
    /// The [`FLOATING_IP_ANNOTATION`], when present.
    pub floating_ip: Option<String>,
    /// `status.lastRestartedAt`, when set.
    pub last_restarted_at: Option<Timestamp>,
}

impl Observed {
    /// Reads the mapping's inputs from a CI.
    pub fn from_compute_instance(ci: &ComputeInstance) -> Self {
        let status = ci.status.as_ref();
        Observed {
            phase: status.and_then(|s| s.phase),
            conditions: status.map(|s| s.conditions.clone()).unwrap_or_default(),
            floating_ip: ci
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(FLOATING_IP_ANNOTATION))
                .cloned(),
            last_restarted_at: status
                .and_then(|s| s.last_restarted_at.as_ref())
                .map(|t| t.0),
        }
    }

    fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// The result of mapping a CI onto the fetched object.
#[derive(Clone, Debug, PartialEq)]
pub struct Mapped {
    /// The fetched object with its status updated: what Update must send.
    pub object: pb::ComputeInstance,
    /// Whether `object` differs from the fetched one; no Update is needed when it does not.
    pub changed: bool,
}

/// Maps `ci` onto `fetched` (the object as Get returned it); `now` stamps the conditions whose
/// status changes.
pub fn map_status(ci: &ComputeInstance, fetched: &pb::ComputeInstance, now: Timestamp) -> Mapped {
    map_observed(&Observed::from_compute_instance(ci), fetched, now)
}

/// [`map_status`] from already extracted inputs.
pub fn map_observed(observed: &Observed, fetched: &pb::ComputeInstance, now: Timestamp) -> Mapped {
    let mut object = fetched.clone();
    apply_observed(observed, &mut object, now);
    let changed = object != *fetched;
    Mapped { object, changed }
}

/// Writes the mapping into `object` in place.
pub fn apply_observed(observed: &Observed, object: &mut pb::ComputeInstance, now: Timestamp) {
    let now = to_proto_timestamp(now);
    let status = object.status.get_or_insert_with(Default::default);

    if let Some(phase) = observed.phase {
        status.state = state_of(phase) as i32;
    }

    let (progressing, progressing_message) = progressing(observed);
    write_condition(
        status,
        pb::ComputeInstanceConditionType::Progressing,
        progressing,
        progressing_message,
        &now,
    );
    for (type_, kind) in [
        (
            condition_types::AVAILABLE,
            pb::ComputeInstanceConditionType::Available,
        ),
        (
            condition_types::RESTART_IN_PROGRESS,
            pb::ComputeInstanceConditionType::RestartInProgress,
        ),
        (
            condition_types::RESTART_FAILED,
            pb::ComputeInstanceConditionType::RestartFailed,
        ),
    ] {
        if let Some(condition) = observed.condition(type_) {
            write_condition(
                status,
                kind,
                condition_status(&condition.status),
                condition.message.clone(),
                &now,
            );
        }
    }

    if let Some(ip) = observed.floating_ip.as_deref().filter(|ip| !ip.is_empty()) {
        ip.clone_into(&mut status.ip_address);
    }
    if let Some(at) = observed.last_restarted_at {
        status.last_restarted_at = Some(to_proto_timestamp(at));
    }
}

/// The object state for a CI phase.
pub fn state_of(phase: Phase) -> pb::ComputeInstanceState {
    match phase {
        Phase::Starting => pb::ComputeInstanceState::Starting,
        Phase::Running => pb::ComputeInstanceState::Running,
        Phase::Failed => pb::ComputeInstanceState::Failed,
        Phase::Deleting => pb::ComputeInstanceState::Deleting,
    }
}

/// Kubernetes condition status to the wire's: `True`, `False`, anything else unspecified.
pub fn condition_status(status: &str) -> ConditionStatus {
    match status {
        "True" => ConditionStatus::True,
        "False" => ConditionStatus::False,
        _ => ConditionStatus::Unspecified,
    }
}

/// PROGRESSING from the CI's `Progressing` and `Accepted` conditions.
///
/// A known `Progressing` decides; `Accepted=True` stands in only while `Progressing` is absent or
/// Unknown (a CI no pass has reached yet). The Go operator let `Accepted=True` win over
/// `Progressing=False`, so a running VM whose tenant was accepted showed PROGRESSING for ever
/// (docs/deviations.md).
fn progressing(observed: &Observed) -> (ConditionStatus, String) {
    let progressing = observed.condition(condition_types::PROGRESSING);
    let accepted = observed.condition(condition_types::ACCEPTED);
    let known = |c: Option<&Condition>| c.is_some_and(|c| c.status != "Unknown");
    if !known(progressing) && !known(accepted) {
        (ConditionStatus::Unspecified, String::new())
    } else if let Some(c) = progressing.filter(|c| c.status == "True") {
        (ConditionStatus::True, c.message.clone())
    } else if known(progressing) {
        (ConditionStatus::False, String::new())
    } else if let Some(c) = accepted.filter(|c| c.status == "True") {
        (ConditionStatus::True, c.message.clone())
    } else {
        (ConditionStatus::False, String::new())
    }
}

/// Finds the condition of `kind` (first match; appended with status FALSE when absent), sets its
/// status and message, and stamps `last_transition_time` only when the status changed. `reason`
/// is left alone.
fn write_condition(
    status: &mut pb::ComputeInstanceStatus,
    kind: pb::ComputeInstanceConditionType,
    value: ConditionStatus,
    message: String,
    now: &prost_types::Timestamp,
) {
    if !status.conditions.iter().any(|c| c.r#type == kind as i32) {
        status.conditions.push(pb::ComputeInstanceCondition {
            r#type: kind as i32,
            status: ConditionStatus::False as i32,
            ..Default::default()
        });
    }
    let Some(condition) = status
        .conditions
        .iter_mut()
        .find(|c| c.r#type == kind as i32)
    else {
        return;
    };
    if condition.status != value as i32 {
        condition.status = value as i32;
        condition.last_transition_time = Some(*now);
    }
    condition.message = Some(message);
}

/// A `jiff` timestamp as a protobuf one (nanoseconds always in `0..1e9`).
pub fn to_proto_timestamp(ts: Timestamp) -> prost_types::Timestamp {
    let mut seconds = ts.as_second();
    let mut nanos = ts.subsec_nanosecond();
    if nanos < 0 {
        seconds -= 1;
        nanos += 1_000_000_000;
    }
    prost_types::Timestamp { seconds, nanos }
}
