//! What the feedback controller does for one `ComputeInstance` (SPEC 13), as a pure function.
//!
//! The controller's shell reads the CI, calls `Get` when the CI has the
//! [`UUID_LABEL`] (see [`object_id`]), turns the answer into a
//! [`Fetch`], asks [`decide`] for a [`Plan`] and carries its steps out in order, stopping at the
//! first step that fails (so a finalizer is never released after a failed Update).

use std::time::Duration;

use cloudkit_api::ComputeInstance;
use cloudkit_api::metadata::UUID_LABEL;
use jiff::Timestamp;

use crate::client::CallError;
use crate::mapping::map_status;
use crate::proto::private::v1 as pb;

/// Finalizer that keeps a CI with the [`UUID_LABEL`] until the fulfillment service has been told
/// of its deletion.
pub const FEEDBACK_FINALIZER: &str = "cloudkit.openshift.io/computeinstance-feedback";

/// Longest wait between two attempts while the service cannot be reached.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The outcome of `Get` for the CI's object.
#[derive(Clone, Debug, PartialEq)]
pub enum Fetch {
    /// The CI has no [`UUID_LABEL`]: nothing was fetched.
    Unlabelled,
    /// The object as the service stores it.
    Found(Box<pb::ComputeInstance>),
    /// The service has no such object.
    NotFound,
    /// The service could not be reached or refused the call; the text says why (it never holds
    /// the token).
    Failed(String),
}

impl Fetch {
    /// The outcome of a `Get` call.
    pub fn from_result(result: Result<pb::ComputeInstance, CallError>) -> Fetch {
        match result {
            Ok(object) => Fetch::Found(Box::new(object)),
            Err(e) if e.is_not_found() => Fetch::NotFound,
            Err(e) => Fetch::Failed(e.to_string()),
        }
    }
}

/// Reason of a Warning event, in the form Kubernetes expects (`UpperCamelCase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarningReason {
    /// The service could not be reached or refused a call; feedback retries with backoff.
    FulfillmentUnavailable,
    /// The service has no object for the CI's uuid.
    FulfillmentObjectNotFound,
}

impl WarningReason {
    /// The event reason.
    pub fn as_str(self) -> &'static str {
        match self {
            WarningReason::FulfillmentUnavailable => "FulfillmentUnavailable",
            WarningReason::FulfillmentObjectNotFound => "FulfillmentObjectNotFound",
        }
    }
}

/// One step of a plan, carried out in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Add [`FEEDBACK_FINALIZER`] to the CI.
    AddFinalizer,
    /// `Update{object}` (no mask).
    Update(Box<pb::ComputeInstance>),
    /// Remove [`FEEDBACK_FINALIZER`] from the CI.
    RemoveFinalizer,
    /// `Signal{id}`; a failure is logged, not retried.
    Signal(String),
    /// Record a Warning event on the CI.
    Warn {
        /// The event reason.
        reason: WarningReason,
        /// The event message.
        message: String,
    },
    /// Try again later, with [`backoff`] (counts as a failure for the metric).
    RetryWithBackoff,
}

/// What to do for one CI; empty when there is nothing to do.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// The service's object id of a CI: its [`UUID_LABEL`], when present and non-empty.
pub fn object_id(ci: &ComputeInstance) -> Option<&str> {
    ci.metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(UUID_LABEL))
        .map(String::as_str)
        .filter(|id| !id.is_empty())
}

/// The plan for `ci`, given the outcome of `Get` for its object.
pub fn decide(ci: &ComputeInstance, fetch: Fetch, now: Timestamp) -> Plan {
    let deleting = ci.metadata.deletion_timestamp.is_some();
    let finalizers = ci.metadata.finalizers.as_deref().unwrap_or_default();
    let has_finalizer = finalizers.iter().any(|f| f == FEEDBACK_FINALIZER);
    let only_finalizer = has_finalizer && finalizers.iter().all(|f| f == FEEDBACK_FINALIZER);
    let mut steps = Vec::new();

    let id = match (object_id(ci), fetch) {
        (None, _) => {
            // Not the service's CI (any longer): nothing to report; a leftover finalizer must not
            // hold its deletion.
            if deleting && has_finalizer {
                steps.push(Step::RemoveFinalizer);
            }
            return Plan { steps };
        }
        // A labelled CI whose object was not fetched: nothing can be decided yet.
        (Some(_), Fetch::Unlabelled) => return Plan { steps },
        (Some(_), Fetch::Failed(reason)) => {
            // Deletion waits: the service must learn of it.
            steps.push(Step::Warn {
                reason: WarningReason::FulfillmentUnavailable,
                message: format!("fulfillment service: {reason}"),
            });
            steps.push(Step::RetryWithBackoff);
            return Plan { steps };
        }
        (Some(id), Fetch::NotFound) => {
            if deleting {
                // The service has nothing left to learn; holding the deletion would block it
                // for ever (the Go operator did).
                if has_finalizer {
                    steps.push(Step::RemoveFinalizer);
                }
                steps.push(Step::Warn {
                    reason: WarningReason::FulfillmentObjectNotFound,
                    message: format!(
                        "the fulfillment service has no compute instance {id}; deletion goes on without telling it"
                    ),
                });
            } else {
                steps.push(Step::Warn {
                    reason: WarningReason::FulfillmentObjectNotFound,
                    message: format!("the fulfillment service has no compute instance {id}"),
                });
                steps.push(Step::RetryWithBackoff);
            }
            return Plan { steps };
        }
        (Some(id), Fetch::Found(object)) => {
            let mut mapped = map_status(ci, &object, now);
            if deleting {
                let status = mapped.object.status.get_or_insert_with(Default::default);
                status.state = pb::ComputeInstanceState::Deleting as i32;
                mapped.changed = mapped.object != *object;
            } else if !has_finalizer {
                steps.push(Step::AddFinalizer);
            }
            if mapped.changed {
                steps.push(Step::Update(Box::new(mapped.object)));
            }
            id.to_owned()
        }
    };

    if deleting && only_finalizer {
        steps.push(Step::RemoveFinalizer);
        steps.push(Step::Signal(id));
    }
    Plan { steps }
}

/// Wait before the next attempt after `failures` consecutive failures (1 or more): 1 s, then
/// doubling, at most [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32
        .checked_shl(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    FIRST_BACKOFF.saturating_mul(factor).min(MAX_BACKOFF)
}
