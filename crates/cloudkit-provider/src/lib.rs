//! The provisioning provider abstraction.
//!
//! A [`Provider`] starts provision and deprovision jobs for a `ComputeInstance`, reports the
//! state of jobs it started and cancels them where it can. The reconciler only ever talks to
//! `Arc<dyn Provider>` values held in a [`ProviderRegistry`]: one *active* provider starts new
//! jobs, and every job is read back through the provider that started it (the job's recorded
//! `provider`), so a CI provisioned through one provider can be deprovisioned through another.
//!
//! Embedding another provider in a controller:
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use cloudkit_api::{ComputeInstance, JobState, JobStatus, ProviderKind};
//! use cloudkit_provider::*;
//!
//! #[derive(Debug)]
//! struct Noop;
//!
//! #[async_trait]
//! impl Provider for Noop {
//!     fn kind(&self) -> ProviderKind { ProviderKind::Eda }
//!     fn polls_remotely(&self) -> bool { false }
//!     async fn provision(&self, _ci: &ComputeInstance, _launch: &Launch) -> Result<StartedJob, ProviderError> {
//!         Ok(StartedJob::new("noop-1", JobState::Succeeded))
//!     }
//!     async fn deprovision(&self, _ci: &ComputeInstance, _launch: &Launch) -> Result<DeprovisionOutcome, ProviderError> {
//!         Ok(DeprovisionOutcome::Skipped { message: "nothing was provisioned".into() })
//!     }
//!     async fn job_state(&self, _ci: &ComputeInstance, job: &JobStatus) -> Result<JobObservation, ProviderError> {
//!         Ok(JobObservation::new(job.state))
//!     }
//! }
//!
//! let registry = ProviderRegistry::new(Arc::new(Noop));
//! assert_eq!(registry.active().kind(), ProviderKind::Eda);
//! ```

mod error;
mod registry;
mod secret;
pub mod settings;

use std::fmt::Debug;
use std::time::Duration;

use async_trait::async_trait;
use cloudkit_api::{AapJobKind, ComputeInstance, JobState, JobStatus, JobType, ProviderKind};

pub use error::{ProviderError, ProviderErrorKind, format_duration};
pub use registry::ProviderRegistry;
pub use secret::Secret;

/// What the reconciler hands a provider when it starts a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Provision or deprovision.
    pub job_type: JobType,
    /// A key unique to this intent (CI, job type, configuration or deletion, attempt). Providers
    /// that can, send it along with the launch so that [`Provider::find_launch`] can find the job
    /// again when the operator lost the answer.
    pub launch_key: String,
}

impl Launch {
    /// A launch of `job_type` identified by `launch_key`.
    pub fn new(job_type: JobType, launch_key: impl Into<String>) -> Self {
        Launch {
            job_type,
            launch_key: launch_key.into(),
        }
    }
}

/// A job a provider has started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartedJob {
    /// The provider's id for the job (AAP numeric id, `eda-webhook-N`).
    pub job_id: String,
    /// The state right after the start.
    pub state: JobState,
    /// Human-readable detail.
    pub message: Option<String>,
    /// Whether a failure of this job must keep the CI from being deleted.
    pub block_deletion_on_failure: bool,
    /// AAP only: job or workflow job.
    pub aap_job_kind: Option<AapJobKind>,
}

impl StartedJob {
    /// A started job with no message, not blocking deletion.
    pub fn new(job_id: impl Into<String>, state: JobState) -> Self {
        StartedJob {
            job_id: job_id.into(),
            state,
            message: None,
            block_deletion_on_failure: false,
            aap_job_kind: None,
        }
    }
}

/// The answer to a deprovision request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeprovisionOutcome {
    /// A deprovision job was started.
    Started(StartedJob),
    /// Not yet: ask again after `retry_after` (for example, a provision may still be about to
    /// create something).
    Waiting {
        /// Why.
        message: String,
        /// When to ask again.
        retry_after: Duration,
    },
    /// Nothing to deprovision (for example, nothing was ever provisioned).
    Skipped {
        /// Why.
        message: String,
    },
}

/// The state of a job as a provider sees it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobObservation {
    /// Current state.
    pub state: JobState,
    /// Human-readable detail (the first line of a traceback for a failed AAP job, say).
    pub message: Option<String>,
}

impl JobObservation {
    /// An observation with no message.
    pub fn new(state: JobState) -> Self {
        JobObservation {
            state,
            message: None,
        }
    }

    /// An observation with a message.
    pub fn with_message(state: JobState, message: impl Into<String>) -> Self {
        JobObservation {
            state,
            message: Some(message.into()),
        }
    }
}

/// The answer to a cancel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The provider accepted the request; the job turns `Canceled` (or finishes) later.
    Requested,
    /// The job can no longer be cancelled: it already finished.
    AlreadyFinished,
    /// This provider cannot cancel jobs; wait for the job to finish instead.
    Unsupported,
}

/// The answer to [`Provider::find_launch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchLookup {
    /// The launch reached the provider: this is its job.
    Found(StartedJob),
    /// The provider has no job for the launch key: the launch never reached it, so launching now
    /// does not duplicate work.
    NotFound,
    /// The provider cannot tell (a fire-and-forget webhook): the launch may or may not have
    /// happened.
    Unknowable,
}

/// A way to start provisioning work. Object safe: hold it as `Arc<dyn Provider>`.
///
/// With the `mock` feature this crate exports `MockProvider`, generated by mockall.
#[cfg_attr(any(test, feature = "mock"), mockall::automock)]
#[async_trait]
pub trait Provider: Send + Sync + Debug {
    /// Which provider this is; recorded on every job it starts.
    fn kind(&self) -> ProviderKind;

    /// Whether the state of its jobs is fetched over the network (and so should be polled at an
    /// interval). When false, [`Provider::job_state`] only looks at the CI, and changes to the CI
    /// are what wakes the reconciler.
    fn polls_remotely(&self) -> bool;

    /// Starts a provision job for `ci` (whose `status.desiredConfigVersion` is the configuration
    /// to apply).
    async fn provision(
        &self,
        ci: &ComputeInstance,
        launch: &Launch,
    ) -> Result<StartedJob, ProviderError>;

    /// Starts a deprovision job for `ci`, or answers that it must wait or that there is nothing
    /// to do.
    async fn deprovision(
        &self,
        ci: &ComputeInstance,
        launch: &Launch,
    ) -> Result<DeprovisionOutcome, ProviderError>;

    /// The current state of `job`, which this provider started.
    async fn job_state(
        &self,
        ci: &ComputeInstance,
        job: &JobStatus,
    ) -> Result<JobObservation, ProviderError>;

    /// Asks the provider to cancel `job`.
    async fn cancel(&self, job: &JobStatus) -> Result<CancelOutcome, ProviderError> {
        let _ = job;
        Ok(CancelOutcome::Unsupported)
    }

    /// Whether [`Provider::cancel`] can stop a running job. When false, the reconciler waits for
    /// the job instead (bounded by a grace period where the provider cannot report progress).
    fn can_cancel(&self) -> bool {
        false
    }

    /// Whether a deprovision that could not even be started keeps the CI from being deleted, as
    /// a failed deprovision job of this provider does.
    fn blocks_deletion_on_failure(&self) -> bool {
        false
    }

    /// Whether [`Provider::find_launch`] can answer `Found` / `NotFound`. When true, a launch
    /// whose outcome is unknown (a timeout after sending) is looked up later instead of being
    /// counted as failed.
    fn can_find_launches(&self) -> bool {
        false
    }

    /// Finds the job started by a launch whose answer was lost (the operator stopped between
    /// sending the launch and recording the job id). `job` is the recorded intent, with its
    /// `launch_key`.
    async fn find_launch(
        &self,
        ci: &ComputeInstance,
        job: &JobStatus,
    ) -> Result<LaunchLookup, ProviderError> {
        let _ = (ci, job);
        Ok(LaunchLookup::Unknowable)
    }
}
