//! What a provider's answer to a launch does to the recorded intent. Pure, like `decide`, and
//! applied again onto a freshly read status when the first write of the answer meets a conflict,
//! so a job id the provider returned is never lost.

use std::time::Duration;

use cloudkit_api::{ComputeInstanceStatus, JobState, JobStatus, JobType, ProviderKind};
use cloudkit_provider::{DeprovisionOutcome, ProviderErrorKind, StartedJob};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::conditions::{find_condition, set_condition};
use crate::messages::{self, reason};
use crate::plan::{ErrorInfo, EventSpec, FinishedJob};
use crate::settings::Capabilities;
use crate::time::add;
use cloudkit_api::metadata::CONDITION_CONFIGURATION_APPLIED;

/// A provider's answer to a launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LaunchAnswer {
    /// The job started.
    Started(StartedJob),
    /// Deprovision: not yet.
    Waiting {
        /// Why.
        message: String,
        /// When to ask again.
        retry_after: Duration,
    },
    /// Deprovision: nothing to do.
    Skipped {
        /// Why.
        message: String,
    },
    /// The launch failed.
    Failed(ErrorInfo),
}

impl From<DeprovisionOutcome> for LaunchAnswer {
    fn from(o: DeprovisionOutcome) -> Self {
        match o {
            DeprovisionOutcome::Started(s) => LaunchAnswer::Started(s),
            DeprovisionOutcome::Waiting {
                message,
                retry_after,
            } => LaunchAnswer::Waiting {
                message,
                retry_after,
            },
            DeprovisionOutcome::Skipped { message } => LaunchAnswer::Skipped { message },
        }
    }
}

/// What the shell must do after applying an answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Effect {
    /// Events to record.
    pub events: Vec<EventSpec>,
    /// A job that started and finished at once (for metrics).
    pub finished: Option<FinishedJob>,
    /// The job that started, for metrics: (type, provider).
    pub started: Option<(JobType, ProviderKind)>,
    /// Nothing is left to deprovision: the finalizer can go.
    pub remove_finalizer: bool,
    /// Do not launch again for this CI before this time.
    pub not_before: Option<Timestamp>,
    /// Why the provider refused the launch (authentication or authorisation), shown until the
    /// next attempt.
    pub refusal: Option<String>,
    /// Look again after this long.
    pub requeue_after: Option<Duration>,
}

/// Applies `answer` to the intent recorded under `launch_key` in `status`. Returns `None` when
/// there is no such pending intent (someone else already recorded the outcome).
pub fn apply_launch_answer(
    status: &mut ComputeInstanceStatus,
    launch_key: &str,
    answer: LaunchAnswer,
    caps: Capabilities,
    launch_window: Duration,
    poll_interval: Duration,
    now: Timestamp,
) -> Option<Effect> {
    let index = status.jobs.iter().position(|j| {
        j.launch_key.as_deref() == Some(launch_key) && j.job_id.is_empty() && !j.is_terminal()
    })?;
    let mut effect = Effect::default();
    let job = &mut status.jobs[index];
    let owner = job.owner();
    match answer {
        LaunchAnswer::Started(started) => {
            job.job_id = started.job_id;
            job.state = started.state;
            job.message = started.message;
            job.aap_job_kind = started.aap_job_kind;
            job.block_deletion_on_failure = Some(started.block_deletion_on_failure);
            effect.started = Some((job.job_type, owner));
            effect.events.push(EventSpec::normal(
                "JobStarted",
                format!(
                    "started {} job {} ({}) attempt {}",
                    job.job_type,
                    job.job_id,
                    owner,
                    job.attempt.unwrap_or(1)
                ),
            ));
            // The Applying condition named the job as not yet assigned: say what it is now, in
            // this same write, instead of spending the next pass's write on it.
            let refresh = (job.job_type == JobType::Provision)
                .then(|| job.config_version.clone())
                .flatten();
            if job.state.is_terminal() {
                job.completion_timestamp = Some(Time(now));
                effect.finished = Some(FinishedJob {
                    job_type: job.job_type,
                    provider: owner,
                    state: job.state,
                    duration: Duration::ZERO,
                });
            } else if caps.polls_remotely {
                effect.requeue_after = Some(poll_interval);
            }
            let applying = find_condition(&status.conditions, CONDITION_CONFIGURATION_APPLIED)
                .filter(|c| c.reason == reason::APPLYING)
                .map(|c| c.observed_generation);
            if let (Some(version), Some(generation)) = (refresh, applying) {
                let message = messages::applying(&status.jobs, &version);
                set_condition(
                    &mut status.conditions,
                    CONDITION_CONFIGURATION_APPLIED,
                    false,
                    reason::APPLYING,
                    &message,
                    generation,
                    now,
                );
            }
        }
        LaunchAnswer::Waiting {
            message,
            retry_after,
        } => {
            status.jobs.remove(index);
            effect
                .events
                .push(EventSpec::normal("DeprovisionWaiting", message));
            effect.requeue_after = Some(retry_after);
            effect.not_before = add(now, retry_after);
        }
        LaunchAnswer::Skipped { message } => {
            status.jobs.remove(index);
            effect
                .events
                .push(EventSpec::normal("DeprovisionSkipped", message));
            effect.remove_finalizer = true;
        }
        LaunchAnswer::Failed(err) if err.kind == ProviderErrorKind::RateLimited => {
            status.jobs.remove(index);
            let wait = err.retry_after.unwrap_or(poll_interval);
            effect.requeue_after = Some(wait);
            effect.not_before = add(now, wait);
        }
        LaunchAnswer::Failed(err) if err.kind == ProviderErrorKind::Auth => {
            // Refused before any job started: not an attempt. Ask again after a poll interval
            // (a rotated token may be in place by then) and say why meanwhile.
            let job_type = job.job_type;
            status.jobs.remove(index);
            let refusal = format!("{job_type} launch refused ({owner}): {}", err.message);
            effect
                .events
                .push(EventSpec::warning("ProviderAuthFailed", refusal.clone()));
            effect.requeue_after = Some(poll_interval);
            effect.not_before = add(now, poll_interval);
            // The condition says why no job runs until the next attempt, unless the
            // configuration is applied anyway.
            let unapplied = find_condition(&status.conditions, CONDITION_CONFIGURATION_APPLIED)
                .filter(|c| c.reason != reason::APPLIED)
                .map(|c| c.observed_generation);
            if let (JobType::Provision, Some(not_before), Some(generation)) =
                (job_type, effect.not_before, unapplied)
            {
                let message = messages::wait(job_type, Some(&refusal), not_before);
                set_condition(
                    &mut status.conditions,
                    CONDITION_CONFIGURATION_APPLIED,
                    false,
                    reason::PROVIDER_ERROR,
                    &message,
                    generation,
                    now,
                );
            }
            effect.refusal = Some(refusal);
        }
        LaunchAnswer::Failed(err)
            if err.kind == ProviderErrorKind::Transport && caps.can_find_launches =>
        {
            // The request may have reached the provider: look it up once the launch window has
            // passed instead of counting a failure or launching twice.
            job.message = Some(format!(
                "launch outcome unknown, will look it up: {}",
                err.message
            ));
            effect.requeue_after = Some(launch_window);
            effect.events.push(EventSpec::warning(
                "TriggerFailed",
                format!("{} launch outcome unknown: {}", job.job_type, err.message),
            ));
        }
        LaunchAnswer::Failed(err) => {
            job.state = JobState::Failed;
            job.message = Some(format!("trigger failed: {}", err.message));
            job.completion_timestamp = Some(Time(now));
            if job.job_type == JobType::Deprovision {
                job.block_deletion_on_failure = Some(caps.blocks_deletion_on_failure);
            }
            effect.events.push(EventSpec::warning(
                "TriggerFailed",
                format!("{} trigger failed ({owner}): {}", job.job_type, err.message),
            ));
            effect.finished = Some(FinishedJob {
                job_type: job.job_type,
                provider: owner,
                state: JobState::Failed,
                duration: Duration::ZERO,
            });
            effect.requeue_after = Some(poll_interval);
        }
    }
    Some(effect)
}

/// The pending intent recorded under `launch_key`, if any.
pub fn pending_intent<'a>(
    status: &'a ComputeInstanceStatus,
    launch_key: &str,
) -> Option<&'a JobStatus> {
    status.jobs.iter().find(|j| {
        j.launch_key.as_deref() == Some(launch_key) && j.job_id.is_empty() && !j.is_terminal()
    })
}
