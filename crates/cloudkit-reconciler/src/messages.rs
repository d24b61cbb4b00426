//! The texts the rules write: condition reasons and messages, job messages, event messages.
//!
//! Users read these in `kubectl describe`, and tests match them; the rules in
//! [`decide`](crate::decide) only choose which one applies.

use std::time::Duration;

use cloudkit_api::metadata::{
    AAP_FINALIZER, MANAGEMENT_STATE_ANNOTATION, RETRY_ANNOTATION, TENANT_ANNOTATION,
};
use cloudkit_api::{JobStatus, JobType, history::latest_job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// Condition reasons (the `ConfigurationApplied` and `DeletionBlocked` vocabularies).
pub mod reason {
    /// The desired configuration is applied.
    pub const APPLIED: &str = "Applied";
    /// A provision is under way.
    pub const APPLYING: &str = "Applying";
    /// The latest provision for the desired configuration failed and will not be retried.
    pub const PROVISION_FAILED: &str = "ProvisionFailed";
    /// A failed provision will be retried automatically.
    pub const RETRY_SCHEDULED: &str = "RetryScheduled";
    /// The spec cannot be acted on.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A provider could not be reached, refused, or is not configured.
    pub const PROVIDER_ERROR: &str = "ProviderError";
    /// `management-state: manual`.
    pub const MANUAL: &str = "ManagementManual";
    /// Deletion waits for a human.
    pub const DEPROVISION_FAILED: &str = "DeprovisionFailed";
    /// Deletion is not blocked (any more).
    pub const NOT_BLOCKED: &str = "NotBlocked";
    /// `Accepted`: the CI names no tenant.
    pub const TENANT_MISSING: &str = "TenantMissing";
    /// `Accepted`: the Tenant is being created or is not Ready yet.
    pub const TENANT_NOT_READY: &str = "TenantNotReady";
    /// `Accepted`: the Tenant failed.
    pub const TENANT_FAILED: &str = "TenantFailed";
    /// `Accepted`: the Tenant is Ready.
    pub const TENANT_READY: &str = "TenantReady";
    /// `Progressing`: a configuration is being applied or a job runs.
    pub const PROGRESSING: &str = "Progressing";
    /// `Progressing`: nothing is under way.
    pub const IDLE: &str = "Idle";
    /// `Deleting`: deletion has started.
    pub const DELETING: &str = "Deleting";
}

/// `Progressing=True` message (the Go operator's).
pub(crate) const APPLYING_CONFIGURATION: &str = "Applying configuration";

/// `Progressing=False` message.
pub(crate) const NOTHING_IN_PROGRESS: &str = "No configuration change or job in progress";

/// `Deleting=True` message.
pub(crate) const DELETION_STARTED: &str = "Deletion has started";

/// `Accepted=False` message of a CI without a tenant.
pub(crate) fn tenant_missing() -> String {
    format!(
        "no tenant: set the annotation {TENANT_ANNOTATION} to the name of the tenant the VM belongs to"
    )
}

/// `Accepted=False` message while the Tenant is created or not Ready.
pub(crate) fn tenant_not_ready(name: &str, message: Option<&str>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!("waiting for tenant {name} to be Ready: {m}"),
        _ => format!("waiting for tenant {name} to be Ready"),
    }
}

/// `Accepted=False` message of a failed Tenant.
pub(crate) fn tenant_failed(name: &str, message: Option<&str>) -> String {
    format!(
        "tenant {name} failed: {}",
        message
            .filter(|m| !m.is_empty())
            .unwrap_or("no reason given")
    )
}

/// `Accepted=True` message.
pub(crate) fn tenant_ready(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) => format!("tenant {name} is Ready (namespace {ns})"),
        None => format!("tenant {name} is Ready"),
    }
}

/// Event message when a manual CI is deleted.
pub(crate) const RELEASED: &str = "management-state is manual: released without deprovisioning";

/// Condition message of a manual CI whose configuration is not applied.
pub(crate) const MANUAL: &str = "management-state is manual: the operator starts no jobs";

/// Job message of a new intent.
pub(crate) const LAUNCHING: &str = "launching";

/// Job message of a provision intent cancelled because deletion came first.
pub(crate) const NEVER_LAUNCHED: &str = "never launched; deletion requested before it started";

/// Job message of an EDA provision whose trigger may or may not have been delivered.
pub(crate) const UNCONFIRMED_TRIGGER: &str =
    "the operator stopped before the trigger was confirmed; waiting for the automation to report";

/// Condition message when a deprovision retry was asked for.
pub(crate) const DEPROVISION_RETRIED: &str = "deprovision retried on request";

/// A job's id, or a placeholder for an intent.
pub(crate) fn display_id(job: &JobStatus) -> &str {
    if job.job_id.is_empty() {
        "(not yet assigned)"
    } else {
        &job.job_id
    }
}

/// `": <message>"`, or nothing for a job without a message.
fn suffix(job: &JobStatus) -> String {
    job.message
        .as_deref()
        .map(|m| format!(": {m}"))
        .unwrap_or_default()
}

/// The condition message for a non-terminal job whose provider is not configured.
pub(crate) fn orphan(job: &JobStatus) -> String {
    format!(
        "{} job {} was started by provider {}, which is not configured; configure it to follow the job",
        job.job_type,
        display_id(job),
        job.owner()
    )
}

/// The condition message when the desired configuration is applied.
pub(crate) fn applied(desired: &str) -> String {
    format!("configuration {desired} is applied")
}

/// The condition message when a job's state could not be read.
pub(crate) fn unreadable(job: &JobStatus, error: &str) -> String {
    format!("cannot read {} job {}: {error}", job.job_type, job.job_id)
}

/// The event message of a job that reached a terminal state.
pub(crate) fn finished(job: &JobStatus) -> String {
    format!(
        "{} job {} ({}) {}{}",
        job.job_type,
        display_id(job),
        job.owner(),
        job.state,
        suffix(job)
    )
}

/// The job message of an EDA provision that showed no sign of the automation within `grace`.
pub(crate) fn silent_provision(grace: Duration) -> String {
    format!(
        "no sign of the automation within {}: finalizer {AAP_FINALIZER} never appeared; the trigger may not have arrived",
        cloudkit_provider::format_duration(grace)
    )
}

/// The job message of a provision that deletion stopped waiting for.
pub(crate) fn abandoned(automation_started: bool) -> &'static str {
    if automation_started {
        "abandoned: deletion requested and the automation reported no result within the grace period"
    } else {
        "abandoned: deletion requested and the automation had not started within the grace period"
    }
}

/// The `DeletionBlocked` message for a failed deprovision: what failed and the two ways out.
pub(crate) fn deletion_blocked(latest: &JobStatus) -> String {
    format!(
        "deprovision job {} {}{}. The VM may still exist. To run deprovision again, set annotation {}={{new value}}; to release the CI without deprovisioning, set annotation {}=manual",
        display_id(latest),
        latest.state,
        suffix(latest),
        RETRY_ANNOTATION,
        MANAGEMENT_STATE_ANNOTATION,
    )
}

/// The condition message when the latest provision failed.
pub(crate) fn failed(jobs: &[JobStatus]) -> String {
    match latest_job(jobs, JobType::Provision) {
        Some(j) => format!(
            "provision job {} (attempt {}) {}{}",
            display_id(j),
            j.attempt.unwrap_or(1),
            j.state,
            suffix(j)
        ),
        None => "provision failed".into(),
    }
}

/// The condition message when a failed provision will be retried at `at`.
pub(crate) fn retry_scheduled(jobs: &[JobStatus], at: Timestamp) -> String {
    format!("{}; retrying at {}", failed(jobs), Time(at).0)
}

/// The condition message while launches wait for `not_before`: why (a refusal), and when the
/// next attempt comes.
pub(crate) fn wait(job_type: JobType, refusal: Option<&str>, not_before: Timestamp) -> String {
    match refusal {
        Some(why) => format!(
            "{}; next {job_type} attempt at {}",
            why.trim_end_matches('.'),
            Time(not_before).0
        ),
        None => format!(
            "the provider asked to wait: next {job_type} attempt at {}",
            Time(not_before).0
        ),
    }
}

/// The `Applying` condition message for `desired` given the history.
pub(crate) fn applying(jobs: &[JobStatus], desired: &str) -> String {
    match latest_job(jobs, JobType::Provision) {
        Some(j) if j.config_version.as_deref() == Some(desired) || !j.is_terminal() => format!(
            "applying configuration {desired}: provision job {} is {}",
            display_id(j),
            j.state
        ),
        _ => format!("applying configuration {desired}"),
    }
}
