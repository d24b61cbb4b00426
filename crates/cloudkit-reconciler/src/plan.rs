//! What goes into [`decide`](crate::decide) besides the CI ([`Observed`]) and what comes out
//! ([`Plan`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cloudkit_api::{
    ComputeInstanceStatus, JobState, JobStatus, JobType, ProviderKind, TenantPhase,
};
use cloudkit_provider::{JobObservation, LaunchLookup, ProviderErrorKind};
use k8s_openapi::jiff::Timestamp;

use crate::availability::VmView;
use crate::restart::{DeleteVmi, VmiState};

/// A provider error reduced to what decisions need (provider errors are not `Clone`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorInfo {
    /// The class.
    pub kind: ProviderErrorKind,
    /// One line, no credentials.
    pub message: String,
    /// For rate limits.
    pub retry_after: Option<Duration>,
}

impl From<&cloudkit_provider::ProviderError> for ErrorInfo {
    fn from(e: &cloudkit_provider::ProviderError) -> Self {
        ErrorInfo {
            kind: e.kind(),
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    }
}

/// What the providers said this pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Current state of non-terminal jobs, by job id.
    pub jobs: BTreeMap<String, JobObservation>,
    /// Jobs whose state could not be read this pass, by job id.
    pub job_errors: BTreeMap<String, ErrorInfo>,
    /// Answers for intents without a job id, by launch key.
    pub lookups: BTreeMap<String, LaunchLookup>,
    /// A provider asked not to be called for this CI before this time (rate limit), or refused
    /// the last launch.
    pub launch_not_before: Option<Timestamp>,
    /// Why the provider refused the last launch, when it did (see [`Observed::launch_not_before`]).
    pub launch_refusal: Option<String>,
    /// Jobs this process already asked to cancel; not asked again.
    pub cancel_requested: BTreeSet<String>,
    /// The Tenant the CI needs (SPEC 9.4). `None`: tenants are not managed here (a controller
    /// that embeds the rules without the Tenant controller); no job waits for one.
    pub tenant: Option<TenantView>,
    /// The VirtualMachines labelled for the CI (SPEC 10). `None`: VMs are not tracked; the
    /// availability and restart rules do not run.
    pub vms: Option<VmView>,
    /// The VirtualMachineInstance named by the CI's VM reference, looked up while a restart is
    /// pending or under way ([`crate::restart::needs_vmi`]).
    pub vmi: VmiState,
    /// Why the last deletion of a VMI for a restart failed, if it did.
    pub restart_error: Option<String>,
}

/// What the operator knows of the Tenant a CI needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantView {
    /// The CI names no tenant: no `status.tenantReference`, no (or an empty) annotation
    /// `cloudkit.openshift.io/tenant`.
    Unnamed,
    /// The Tenant the CI needs does not exist yet.
    Missing {
        /// Name of the Tenant object (`tenant-<enc(tenant name)>`).
        name: String,
        /// The tenant's name (`spec.name`).
        tenant_name: String,
    },
    /// It exists.
    Present(TenantState),
}

/// An existing Tenant, as far as the CI's rules are concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantState {
    /// Name of the Tenant object.
    pub name: String,
    /// Namespace of the Tenant object (the CI's).
    pub namespace: String,
    /// Its phase.
    pub phase: Option<TenantPhase>,
    /// The message of its `Ready` condition.
    pub message: Option<String>,
    /// The namespace it owns (`status.namespace`), where the CI's VirtualMachine lives.
    pub tenant_namespace: Option<String>,
    /// Whether the CI is one of its owners.
    pub owned_by_ci: bool,
}

/// A change to the Tenant a CI needs, made before the status is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantChange {
    /// Create it, owned by the CI.
    Create {
        /// Name of the Tenant object.
        name: String,
        /// The tenant's name (`spec.name`).
        tenant_name: String,
    },
    /// Add the CI to its owners (not as controller: several CIs share a Tenant).
    Own {
        /// Name of the Tenant object.
        name: String,
    },
}

/// What to do with the operator's finalizer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FinalizerChange {
    /// Leave it.
    #[default]
    Keep,
    /// Add it (before any job is started).
    Add,
    /// Remove it: the CI may go.
    Remove,
}

/// The one provider call of a pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProviderCall {
    /// Start the job recorded as an intent (a status entry without a job id) under
    /// `launch_key`. The intent must be written before the call.
    Launch {
        /// The provider to start it with.
        provider: ProviderKind,
        /// Provision or deprovision.
        job_type: JobType,
        /// The intent's key (a [`cloudkit_api::LaunchKey`] as text, exactly as recorded).
        launch_key: String,
    },
    /// Ask the provider to cancel a job.
    Cancel {
        /// The provider that owns the job.
        provider: ProviderKind,
        /// The job.
        job_id: String,
    },
}

/// Severity of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Needs attention.
    Warning,
}

/// A Kubernetes Event to record on the CI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSpec {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable message.
    pub message: String,
}

impl EventSpec {
    pub(crate) fn normal(reason: &str, message: String) -> Self {
        EventSpec {
            type_: EventType::Normal,
            reason: reason.to_string(),
            message,
        }
    }

    pub(crate) fn warning(reason: &str, message: String) -> Self {
        EventSpec {
            type_: EventType::Warning,
            reason: reason.to_string(),
            message,
        }
    }
}

/// A job that reached a terminal state this pass (for metrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinishedJob {
    /// Provision or deprovision.
    pub job_type: JobType,
    /// Owner.
    pub provider: ProviderKind,
    /// Terminal state.
    pub state: JobState,
    /// From start to now.
    pub duration: Duration,
}

/// The outcome of [`decide`](crate::decide).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// The status as it should be, when it differs from the current one. When and whether it
    /// is written before the provider call is [`Plan::status_write`].
    pub status: Option<ComputeInstanceStatus>,
    /// The finalizer change, executed before a launch and after everything else for a removal.
    pub finalizer: FinalizerChange,
    /// A new CI's first provision intent (also in [`Plan::status`]), recorded in the annotation
    /// `cloudkit.openshift.io/provision-intent` of the patch that adds the finalizer instead of
    /// by a status write of its own (see [`cloudkit_api::intent`]): one write and one round trip
    /// fewer before every first launch, with the same guarantees.
    pub first_intent: Option<JobStatus>,
    /// At most one provider call.
    pub call: Option<ProviderCall>,
    /// A change to the CI's Tenant, made before the status write.
    pub tenant: Option<TenantChange>,
    /// A VirtualMachineInstance to delete for a restart, after the status (which records the
    /// restart's intent) is written.
    pub restart: Option<DeleteVmi>,
    /// Events to record.
    pub events: Vec<EventSpec>,
    /// Jobs that finished this pass.
    pub finished: Vec<FinishedJob>,
    /// When to look again, besides on changes to the CI.
    pub requeue_after: Option<Duration>,
}

impl Plan {
    /// The status to write before the provider call, if any. None when the first intent rides
    /// on the finalizer's patch (the rest of the status goes with the launch's answer), nor
    /// when the finalizer is removed with no call to make (the object is about to go; its last
    /// status would be written for nobody).
    pub fn status_write(&self) -> Option<&ComputeInstanceStatus> {
        let released = self.finalizer == FinalizerChange::Remove && self.call.is_none();
        if released || self.first_intent.is_some() {
            return None;
        }
        self.status.as_ref()
    }

    /// Asks to look again after `after` at the latest.
    pub(crate) fn requeue(&mut self, after: Duration) {
        self.requeue_after = Some(match self.requeue_after {
            Some(current) => current.min(after),
            None => after,
        });
    }
}
