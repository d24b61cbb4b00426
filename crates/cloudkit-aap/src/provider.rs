//! [`AapProvider`]: the [`Provider`] that runs provisioning through the AAP controller API.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloudkit_api::{AapJobKind, ComputeInstance, JobState, JobStatus, JobType, ProviderKind};
use cloudkit_provider::{
    CancelOutcome, DeprovisionOutcome, JobObservation, Launch, LaunchLookup, Provider,
    ProviderError, StartedJob,
};
use serde_json::{Map, Value, json};

use crate::client::{AapClient, AapJob, LAUNCH_KEY_VAR, LaunchedJob};
use crate::config::{AapConfig, ConfigError};
use crate::model::parse_decimal_id;
use crate::text;

/// Longest job message, in bytes.
const MAX_JOB_MESSAGE_BYTES: usize = 512;

/// The AAP provider: launches the configured provision and deprovision templates with the CI as
/// `extra_vars.ansible_eda.event.payload` (the shape an EDA rulebook hands a playbook, so one
/// playbook serves both providers) and polls the jobs.
#[derive(Debug, Clone)]
pub struct AapProvider {
    client: Arc<AapClient>,
    provision_template: String,
    deprovision_template: String,
    poll_interval: Duration,
}

impl AapProvider {
    /// A provider with its own client built from `config`.
    pub fn new(config: &AapConfig) -> Result<Self, ConfigError> {
        Ok(Self::with_client(Arc::new(AapClient::new(config)?), config))
    }

    /// A provider sharing `client` (built from the same `config`).
    pub fn with_client(client: Arc<AapClient>, config: &AapConfig) -> Self {
        AapProvider {
            client,
            provision_template: config.provision_template().to_string(),
            deprovision_template: config.deprovision_template().to_string(),
            poll_interval: config.poll_interval(),
        }
    }

    /// The underlying client.
    pub fn client(&self) -> &Arc<AapClient> {
        &self.client
    }

    /// How often a non-terminal job should be polled.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The template name configured for `job_type`.
    pub fn template_for(&self, job_type: JobType) -> &str {
        match job_type {
            JobType::Provision => &self.provision_template,
            JobType::Deprovision => &self.deprovision_template,
        }
    }

    /// [`observe`] on a copy of `job` whose texts no longer hold the token: a playbook or
    /// controller that prints it must not put it into the CI's status.
    fn observe(&self, kind: AapJobKind, job: &AapJob) -> JobObservation {
        let mut job = job.clone();
        job.status = self.client.redact(&job.status);
        for text in [&mut job.result_traceback, &mut job.job_explanation]
            .into_iter()
            .flatten()
        {
            *text = self.client.redact(text);
        }
        observe(kind, &job)
    }

    async fn start(
        &self,
        ci: &ComputeInstance,
        launch: &Launch,
    ) -> Result<StartedJob, ProviderError> {
        let extra_vars = launch_extra_vars(ci, &launch.launch_key)?;
        let template = self.template_for(launch.job_type);
        let launched = self.client.launch_template(template, &extra_vars).await?;
        tracing::info!(
            template,
            job_id = launched.id,
            kind = ?launched.kind,
            job_type = %launch.job_type,
            "launched AAP job"
        );
        Ok(started_job(&launched, template, launch.job_type))
    }
}

/// The extra variables of a launch:
/// `{"ansible_eda": {"event": {"payload": <ci>}}, "cloudkit_launch_key": <key>}` (the key is
/// left out when empty). The key is sent and searched for as the opaque text the intent
/// recorded (a [`cloudkit_api::LaunchKey`]); AAP never needs its parts.
pub fn launch_extra_vars(
    ci: &ComputeInstance,
    launch_key: &str,
) -> Result<Map<String, Value>, ProviderError> {
    let payload = serde_json::to_value(ci).map_err(|e| {
        ProviderError::Configuration(format!("cannot serialise the ComputeInstance: {e}"))
    })?;
    let mut vars = Map::new();
    vars.insert(
        "ansible_eda".to_string(),
        json!({ "event": { "payload": payload } }),
    );
    if !launch_key.is_empty() {
        vars.insert(LAUNCH_KEY_VAR.to_string(), Value::String(launch_key.into()));
    }
    Ok(vars)
}

fn started_job(launched: &LaunchedJob, template: &str, job_type: JobType) -> StartedJob {
    let state = if launched.status.is_empty() {
        JobState::Pending
    } else {
        map_status(&launched.status)
    };
    StartedJob {
        job_id: launched.id.to_string(),
        state,
        message: Some(text::truncate(
            &format!(
                "AAP {} {} launched from {:?}",
                kind_name(launched.kind),
                launched.id,
                template
            ),
            MAX_JOB_MESSAGE_BYTES,
        )),
        block_deletion_on_failure: job_type == JobType::Deprovision,
        aap_job_kind: Some(launched.kind),
    }
}

/// The job state for an AWX status: `new`, `pending` -> Pending; `waiting` -> Waiting;
/// `running` -> Running; `successful` -> Succeeded; `failed`, `error` -> Failed; `canceled` ->
/// Canceled; anything else -> Unknown.
pub fn map_status(status: &str) -> JobState {
    match status {
        "new" | "pending" => JobState::Pending,
        "waiting" => JobState::Waiting,
        "running" => JobState::Running,
        "successful" => JobState::Succeeded,
        "failed" | "error" => JobState::Failed,
        "canceled" => JobState::Canceled,
        _ => JobState::Unknown,
    }
}

/// The observation of an AWX job: its mapped state, and for failures the first line of the
/// traceback (else the controller's explanation).
pub fn observe(kind: AapJobKind, job: &AapJob) -> JobObservation {
    let state = map_status(&job.status);
    let name = format!("AAP {} {}", kind_name(kind), job.id);
    let explanation = || {
        job.job_explanation
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(text::one_line)
    };
    let message = match state {
        JobState::Failed => {
            let why = job
                .result_traceback
                .as_deref()
                .and_then(text::traceback_summary)
                .or_else(explanation);
            Some(match why {
                Some(why) => format!("{name} {}: {why}", job.status),
                None => format!("{name} {}", job.status),
            })
        }
        JobState::Canceled => Some(match explanation() {
            Some(why) => format!("{name} was canceled: {why}"),
            None => format!("{name} was canceled"),
        }),
        JobState::Unknown => Some(format!(
            "{name} has status {:?}, which the operator does not know",
            text::truncate(&job.status, 64)
        )),
        _ => None,
    };
    JobObservation {
        state,
        message: message.map(|m| text::truncate(&m, MAX_JOB_MESSAGE_BYTES)),
    }
}

fn kind_name(kind: AapJobKind) -> &'static str {
    match kind {
        AapJobKind::Job => "job",
        AapJobKind::WorkflowJob => "workflow job",
    }
}

/// The numeric id and kind of a recorded job. Entries written by the Go operator have no kind:
/// they are jobs.
fn recorded_job(job: &JobStatus) -> Result<(AapJobKind, u64), ProviderError> {
    let kind = job.aap_job_kind.unwrap_or(AapJobKind::Job);
    if job.job_id.is_empty() {
        return Err(ProviderError::Configuration(
            "the job has no AAP job id (its launch was never answered)".to_string(),
        ));
    }
    let id = parse_decimal_id(&job.job_id).ok_or_else(|| {
        ProviderError::Configuration(format!(
            "job id {:?} is not an AAP job id (a positive decimal number)",
            text::truncate(&job.job_id, 64)
        ))
    })?;
    Ok((kind, id))
}

#[async_trait]
impl Provider for AapProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Aap
    }

    fn polls_remotely(&self) -> bool {
        true
    }

    /// AWX cancels pending, waiting and running jobs.
    fn can_cancel(&self) -> bool {
        true
    }

    /// A deprovision through AAP that cannot be started keeps the CI, like a failed one: the
    /// VM may still exist.
    fn blocks_deletion_on_failure(&self) -> bool {
        true
    }

    /// Launches carry a launch key that [`AapProvider::find_launch`] searches for.
    fn can_find_launches(&self) -> bool {
        true
    }

    async fn provision(
        &self,
        ci: &ComputeInstance,
        launch: &Launch,
    ) -> Result<StartedJob, ProviderError> {
        let launch = Launch {
            job_type: JobType::Provision,
            launch_key: launch.launch_key.clone(),
        };
        self.start(ci, &launch).await
    }

    async fn deprovision(
        &self,
        ci: &ComputeInstance,
        launch: &Launch,
    ) -> Result<DeprovisionOutcome, ProviderError> {
        let launch = Launch {
            job_type: JobType::Deprovision,
            launch_key: launch.launch_key.clone(),
        };
        self.start(ci, &launch)
            .await
            .map(DeprovisionOutcome::Started)
    }

    async fn job_state(
        &self,
        _ci: &ComputeInstance,
        job: &JobStatus,
    ) -> Result<JobObservation, ProviderError> {
        let (kind, id) = recorded_job(job)?;
        match self.client.job(kind, id).await {
            Ok(found) => Ok(self.observe(kind, &found)),
            Err(ProviderError::NotFound(_)) => Ok(JobObservation::with_message(
                JobState::Failed,
                format!(
                    "AAP no longer has {} {id}: it was purged or deleted, its outcome is unknown",
                    kind_name(kind)
                ),
            )),
            Err(e) => Err(e),
        }
    }

    async fn cancel(&self, job: &JobStatus) -> Result<CancelOutcome, ProviderError> {
        let (kind, id) = recorded_job(job)?;
        self.client.cancel(kind, id).await
    }

    async fn find_launch(
        &self,
        _ci: &ComputeInstance,
        job: &JobStatus,
    ) -> Result<LaunchLookup, ProviderError> {
        let Some(key) = job.launch_key.as_deref().filter(|k| !k.is_empty()) else {
            // Nothing to search for: the launch, if it happened, cannot be told apart.
            return Ok(LaunchLookup::Unknowable);
        };
        let name = self.template_for(job.job_type);
        let template = self.client.find_template(name).await?;
        let Some(found) = self.client.find_job_by_launch_key(template, key).await? else {
            return Ok(LaunchLookup::NotFound);
        };
        let kind = template.kind.job_kind();
        let observed = self.observe(kind, &found);
        Ok(LaunchLookup::Found(StartedJob {
            job_id: found.id.to_string(),
            state: observed.state,
            message: observed.message.or_else(|| {
                Some(format!(
                    "AAP {} {} launched from {:?} (found again by its launch key)",
                    kind_name(kind),
                    found.id,
                    name
                ))
            }),
            block_deletion_on_failure: job.job_type == JobType::Deprovision,
            aap_job_kind: Some(kind),
        }))
    }
}
