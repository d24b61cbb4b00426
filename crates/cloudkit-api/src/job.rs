//! One provision or deprovision run, as recorded in `status.jobs[]`.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prefix of job ids made up by the EDA provider, which gets no id from the webhook.
pub const EDA_JOB_ID_PREFIX: &str = "eda-webhook-";

/// Why a job was run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobType {
    /// Create or reconfigure the virtual machine.
    Provision,
    /// Tear the virtual machine down before the CI is deleted.
    Deprovision,
}

impl JobType {
    /// Both types, in a fixed order.
    pub const ALL: [JobType; 2] = [JobType::Provision, JobType::Deprovision];

    /// The wire name (`provision` / `deprovision`).
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Provision => "provision",
            JobType::Deprovision => "deprovision",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of a job as last observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum JobState {
    /// Accepted, not yet started.
    Pending,
    /// Waiting on a dependency (AAP `waiting`).
    Waiting,
    /// Running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Cancelled before it finished.
    Canceled,
    /// The provider reported something the operator does not understand.
    Unknown,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 7] = [
        JobState::Pending,
        JobState::Waiting,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Canceled,
        JobState::Unknown,
    ];

    /// `Succeeded`, `Failed` and `Canceled` are terminal: the job will not change again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Canceled
        )
    }

    /// Only `Succeeded` is successful.
    pub fn is_successful(self) -> bool {
        self == JobState::Succeeded
    }

    /// The wire name (`Pending`, `Running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "Pending",
            JobState::Waiting => "Waiting",
            JobState::Running => "Running",
            JobState::Succeeded => "Succeeded",
            JobState::Failed => "Failed",
            JobState::Canceled => "Canceled",
            JobState::Unknown => "Unknown",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which provider started (and therefore owns) a job.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Ansible Automation Platform controller API.
    Aap,
    /// Event-Driven Ansible webhook.
    Eda,
}

impl ProviderKind {
    /// The wire name (`aap` / `eda`).
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Aap => "aap",
            ProviderKind::Eda => "eda",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kind of AAP unified job behind a job id: they live under different API paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AapJobKind {
    /// Launched from a job template, polled at `/v2/jobs/<id>/`.
    Job,
    /// Launched from a workflow job template, polled at `/v2/workflow_jobs/<id>/`.
    WorkflowJob,
}

/// One provision or deprovision run.
// The first six fields are the Go operator's wire format; the others are optional additions that
// old readers ignore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStatus {
    /// AAP numeric id as a decimal string, or eda-webhook-N for EDA. Absent while a launch is
    /// recorded as an intent but the provider has not answered yet.
    // Absent rather than empty on the wire: some API servers turn an empty string in a list item
    // into null and then reject it.
    #[serde(rename = "jobID", default, skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    /// Provision or deprovision.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// When the operator started the job (UTC).
    pub timestamp: Time,
    /// Last observed state.
    pub state: JobState,
    /// Human-readable detail; never a token, never a long raw response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When a deprovision job fails, keep the CI (and the VM) until a human decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_deletion_on_failure: Option<bool>,
    /// The provider that owns the job. Absent on entries written by the Go operator: there an id
    /// starting with eda-webhook- means eda, any other id aap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// The desiredConfigVersion a provision job was launched for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<String>,
    /// AAP only: whether the id is a job or a workflow job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aap_job_kind: Option<AapJobKind>,
    /// A key unique to this launch, sent with it, so that a launch whose answer was lost can be
    /// found again instead of being repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch_key: Option<String>,
    /// Which attempt for the same intent (configuration version or deletion) this is, from 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub attempt: Option<i32>,
    /// The value of the cloudkit.openshift.io/retry annotation when the job was started, so a
    /// new value can be told from one already acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_token: Option<String>,
    /// When the operator first saw the job in a terminal state (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_timestamp: Option<Time>,
}

impl JobStatus {
    /// A new entry with only the wire-format essentials set.
    pub fn new(
        job_id: impl Into<String>,
        job_type: JobType,
        timestamp: Time,
        state: JobState,
    ) -> Self {
        JobStatus {
            job_id: job_id.into(),
            job_type,
            timestamp,
            state,
            message: None,
            block_deletion_on_failure: None,
            provider: None,
            config_version: None,
            aap_job_kind: None,
            launch_key: None,
            attempt: None,
            retry_token: None,
            completion_timestamp: None,
        }
    }

    /// The provider that owns this job: the recorded one, or for entries written by the Go
    /// operator (no `provider` field) `eda` when the id starts with `eda-webhook-`, else `aap`.
    pub fn owner(&self) -> ProviderKind {
        match self.provider {
            Some(p) => p,
            None if self.job_id.starts_with(EDA_JOB_ID_PREFIX) => ProviderKind::Eda,
            None => ProviderKind::Aap,
        }
    }

    /// Whether the state is terminal.
    pub fn is_terminal(&self) -> bool {
        self.state.is_terminal()
    }

    /// Whether a failure of this job must keep the CI from being deleted.
    pub fn blocks_deletion_on_failure(&self) -> bool {
        self.block_deletion_on_failure.unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_predicates() {
        let rows = [
            (JobState::Pending, false, false),
            (JobState::Waiting, false, false),
            (JobState::Running, false, false),
            (JobState::Unknown, false, false),
            (JobState::Succeeded, true, true),
            (JobState::Failed, true, false),
            (JobState::Canceled, true, false),
        ];
        for (state, terminal, successful) in rows {
            assert_eq!(state.is_terminal(), terminal, "{state} terminal");
            assert_eq!(state.is_successful(), successful, "{state} successful");
        }
    }

    #[test]
    fn owner_of_legacy_and_new_entries() {
        let t = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let mut job = JobStatus::new(
            "eda-webhook-3",
            JobType::Provision,
            t.clone(),
            JobState::Running,
        );
        assert_eq!(job.owner(), ProviderKind::Eda);
        job.job_id = "9076".into();
        assert_eq!(job.owner(), ProviderKind::Aap);
        job.job_id = "eda-webhook-3".into();
        job.provider = Some(ProviderKind::Aap);
        assert_eq!(
            job.owner(),
            ProviderKind::Aap,
            "the recorded provider wins over the id"
        );
        job.job_id = String::new();
        job.provider = None;
        assert_eq!(job.owner(), ProviderKind::Aap);
    }

    #[test]
    fn display_matches_wire_names() {
        for t in JobType::ALL {
            assert_eq!(serde_json::to_value(t).ok(), Some(t.as_str().into()));
        }
        for s in JobState::ALL {
            assert_eq!(serde_json::to_value(s).ok(), Some(s.to_string().into()));
        }
        for p in [ProviderKind::Aap, ProviderKind::Eda] {
            assert_eq!(serde_json::to_value(p).ok(), Some(p.to_string().into()));
        }
    }
}
