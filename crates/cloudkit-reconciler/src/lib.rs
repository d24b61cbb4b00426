//! The `ComputeInstance` reconciler.
//!
//! The rules live in [`decide`], a pure function from a CI, what the providers reported and the
//! current time to a [`Plan`]; [`apply_launch_answer`] is its pure counterpart for a provider's
//! answer to a launch. The Kubernetes glue executes plans.

mod conditions;
mod controller;
mod decide;
mod metrics;
mod outcome;
mod settings;

pub use conditions::{find_condition, is_true, set_condition};
pub use controller::{Context, Error, FIELD_MANAGER, capabilities, reconcile, run};
pub use decide::{
    Action, ErrorInfo, EventSpec, EventType, FinalizerChange, FinishedJob, Observed, Plan, decide,
    reason, reconciled_version,
};
pub use metrics::Metrics;
pub use outcome::{Effect, LaunchAnswer, apply_launch_answer, pending_intent};
pub use settings::{Capabilities, MAX_RETRY_BACKOFF, Settings};
