//! The EDA implementation of [`cloudkit_provider::Provider`].

use async_trait::async_trait;
use cloudkit_api::metadata::{AAP_FINALIZER, RECONCILED_CONFIG_VERSION_ANNOTATION};
use cloudkit_api::{ComputeInstance, JobState, JobStatus, JobType, ProviderKind, history};
use cloudkit_provider::{
    CancelOutcome, DeprovisionOutcome, JobObservation, Launch, LaunchLookup, Provider,
    ProviderError, StartedJob,
};

use crate::client::EdaClient;
use crate::config::{ConfigError, EdaConfig, Webhook};

/// Message of a job right after its trigger was accepted.
pub const ACCEPTED_MESSAGE: &str =
    "webhook accepted the event; waiting for the automation to report";

/// Starts jobs by POSTing the CI to an Event-Driven Ansible webhook.
///
/// The webhook returns no job id and cannot be asked about a run, so:
/// - job ids are made up: `eda-webhook-N`, one counter over the CI's whole history;
/// - a job's state is read from the CI itself, never over the network
///   ([`Provider::polls_remotely`] is false): a provision job has succeeded once the automation
///   reports its configuration version as reconciled, a deprovision job once the automation has
///   removed the `cloudkit.openshift.io/computeinstance-aap` finalizer;
/// - jobs cannot be cancelled and a lost launch cannot be found again.
#[derive(Clone, Debug)]
pub struct EdaProvider {
    client: EdaClient,
}

impl EdaProvider {
    /// A provider with its own client (real clock).
    pub fn new(config: EdaConfig) -> Result<Self, ConfigError> {
        Ok(Self::with_client(EdaClient::new(config)?))
    }

    /// A provider sending through `client`.
    pub fn with_client(client: EdaClient) -> Self {
        EdaProvider { client }
    }

    /// The webhook client.
    pub fn client(&self) -> &EdaClient {
        &self.client
    }

    fn started(&self, ci: &ComputeInstance) -> StartedJob {
        let status_jobs = ci.status.as_ref().map(|s| s.jobs.as_slice()).unwrap_or(&[]);
        let mut job = StartedJob::new(history::next_eda_job_id(status_jobs), JobState::Running);
        job.message = Some(ACCEPTED_MESSAGE.to_owned());
        job.block_deletion_on_failure = false;
        job
    }
}

/// The configuration versions the automation reported as applied: the annotation (fresh) and
/// `status.reconciledConfigVersion` (a copy made by the operator). Empty values are left out.
pub fn reported_config_versions(ci: &ComputeInstance) -> impl Iterator<Item = &str> {
    let annotation = ci
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECONCILED_CONFIG_VERSION_ANNOTATION))
        .map(String::as_str);
    let status = ci
        .status
        .as_ref()
        .and_then(|s| s.reconciled_config_version.as_deref());
    [annotation, status]
        .into_iter()
        .flatten()
        .filter(|v| !v.is_empty())
}

fn provision_state(ci: &ComputeInstance, job: &JobStatus) -> JobObservation {
    // Jobs recorded by the Go operator carry no configVersion: they were launched for the
    // desired version of their time, which is the best guess left.
    let target = job
        .config_version
        .as_deref()
        .or_else(|| {
            ci.status
                .as_ref()
                .and_then(|s| s.desired_config_version.as_deref())
        })
        .filter(|v| !v.is_empty());
    let Some(target) = target else {
        return JobObservation::with_message(
            job.state,
            "waiting for the automation to report the configuration as applied",
        );
    };
    if reported_config_versions(ci).any(|v| v == target) {
        return JobObservation::with_message(
            JobState::Succeeded,
            format!("the automation reported configuration {target} as applied"),
        );
    }
    JobObservation::with_message(
        job.state,
        format!("waiting for the automation to report configuration {target} as applied"),
    )
}

fn deprovision_state(ci: &ComputeInstance, job: &JobStatus) -> JobObservation {
    if ci.has_aap_finalizer() {
        JobObservation::with_message(
            job.state,
            format!("waiting for the automation to remove the {AAP_FINALIZER} finalizer"),
        )
    } else {
        JobObservation::with_message(
            JobState::Succeeded,
            format!("the automation removed the {AAP_FINALIZER} finalizer"),
        )
    }
}

#[async_trait]
impl Provider for EdaProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Eda
    }

    fn polls_remotely(&self) -> bool {
        false
    }

    async fn provision(
        &self,
        ci: &ComputeInstance,
        _launch: &Launch,
    ) -> Result<StartedJob, ProviderError> {
        self.client.trigger(Webhook::Provision, ci).await?;
        Ok(self.started(ci))
    }

    async fn deprovision(
        &self,
        ci: &ComputeInstance,
        _launch: &Launch,
    ) -> Result<DeprovisionOutcome, ProviderError> {
        if !ci.has_aap_finalizer() {
            return Ok(DeprovisionOutcome::Skipped {
                message: format!(
                    "no {AAP_FINALIZER} finalizer: nothing was provisioned, nothing to deprovision"
                ),
            });
        }
        self.client.trigger(Webhook::Deprovision, ci).await?;
        Ok(DeprovisionOutcome::Started(self.started(ci)))
    }

    async fn job_state(
        &self,
        ci: &ComputeInstance,
        job: &JobStatus,
    ) -> Result<JobObservation, ProviderError> {
        if job.is_terminal() {
            return Ok(JobObservation {
                state: job.state,
                message: job.message.clone(),
            });
        }
        let observed = match job.job_type {
            JobType::Provision => provision_state(ci, job),
            JobType::Deprovision => deprovision_state(ci, job),
        };
        // While the job waits, the message it has (the webhook's acceptance, say) stays:
        // replacing it with the waiting text would cost a status write per job and tell nothing
        // new.
        if observed.state == job.state && job.message.as_deref().is_some_and(|m| !m.is_empty()) {
            return Ok(JobObservation {
                state: job.state,
                message: job.message.clone(),
            });
        }
        Ok(observed)
    }

    async fn cancel(&self, _job: &JobStatus) -> Result<CancelOutcome, ProviderError> {
        Ok(CancelOutcome::Unsupported)
    }

    async fn find_launch(
        &self,
        _ci: &ComputeInstance,
        _job: &JobStatus,
    ) -> Result<LaunchLookup, ProviderError> {
        Ok(LaunchLookup::Unknowable)
    }
}
