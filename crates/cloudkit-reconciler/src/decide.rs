//! The rules: a CI, what the providers reported, and the time in; a [`Plan`] out.
//!
//! Every rule of the reconciler lives here, so it can be tested row by row without a cluster,
//! a provider or a clock. The async shell only gathers [`Observed`] and executes the [`Plan`].
//! The types are in [`crate::plan`], the texts in [`crate::messages`].

use std::collections::BTreeSet;

use cloudkit_api::history::{latest_job, next_eda_job_id, trim_history};
use cloudkit_api::intent::{status_never_written, with_recorded_intent};
use cloudkit_api::metadata::{
    CONDITION_ACCEPTED, CONDITION_CONFIGURATION_APPLIED, CONDITION_DELETING,
    CONDITION_DELETION_BLOCKED, CONDITION_PROGRESSING, FINALIZER, MANAGEMENT_STATE_ANNOTATION,
    ManagementState, RECONCILED_CONFIG_VERSION_ANNOTATION, RETRY_ANNOTATION,
};
use cloudkit_api::{
    ComputeInstance, ComputeInstanceStatus, JobState, JobStatus, JobType, LaunchKey, Phase,
    TenantPhase, TenantReference, config_version,
};
use cloudkit_provider::{LaunchLookup, ProviderErrorKind};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::availability::apply_availability;
use crate::conditions::{find_condition, is_true, set_condition};
use crate::messages::{self, reason};
use crate::plan::{
    EventSpec, FinalizerChange, FinishedJob, Observed, Plan, ProviderCall, TenantChange, TenantView,
};
use crate::restart::{RESTART_CHECK_INTERVAL, plan_restart, record_delete_failure};
use crate::settings::Settings;
use crate::time::{add, elapsed};

/// Decides what to do with `ci`, as stored (its first provision intent may still be only in
/// the annotation; it is read as the status's only job).
pub fn decide(
    ci: &ComputeInstance,
    observed: &Observed,
    now: Timestamp,
    settings: &Settings,
) -> Plan {
    let mut plan = Plan::default();
    let never_written = status_never_written(ci.status.as_ref());
    let recorded = with_recorded_intent(ci);
    let ci: &ComputeInstance = &recorded;
    let annotations = ci.metadata.annotations.as_ref();
    let annotation = |key: &str| {
        annotations
            .and_then(|a| a.get(key))
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let management = ManagementState::from_annotation(annotation(MANAGEMENT_STATE_ANNOTATION));
    if management == ManagementState::Unmanaged {
        return plan;
    }
    let has_finalizer = ci.has_finalizer(FINALIZER);
    let has_aap_finalizer = ci.has_aap_finalizer();
    let deleting = ci.metadata.deletion_timestamp.is_some();

    if deleting && !has_finalizer {
        return plan;
    }
    if deleting && management == ManagementState::Manual {
        plan.finalizer = FinalizerChange::Remove;
        plan.events
            .push(EventSpec::normal("Released", messages::RELEASED.into()));
        return plan;
    }
    if !deleting && !has_finalizer {
        plan.finalizer = FinalizerChange::Add;
    }

    let old = ci.status.clone().unwrap_or_default();
    let mut st = old.clone();
    let generation = ci.metadata.generation;
    let desired = config_version(&ci.spec);
    st.desired_config_version = Some(desired.clone());
    st.observed_generation = generation;
    let retry_token = annotation(RETRY_ANNOTATION).map(str::to_string);

    let mut decision = Decision {
        settings,
        now,
        plan: &mut plan,
        scope: LaunchKey::scope_of(ci),
        provider_error: None,
        launch_not_before: observed.launch_not_before,
        launch_refusal: observed.launch_refusal.clone(),
        cancel_requested: &observed.cancel_requested,
    };

    decision.fold_observations(&mut st.jobs, observed);
    decision.resolve_lost_launches(&mut st.jobs, observed, deleting);
    if !deleting {
        decision.expire_silent_provisions(&mut st.jobs, has_aap_finalizer);
    }

    // A non-terminal job whose provider is not configured can be neither read nor cancelled.
    let orphan = st
        .jobs
        .iter()
        .find(|j| !j.is_terminal() && settings.capabilities(j.owner()).is_none())
        .map(messages::orphan);

    let reconciled = reconciled_version(
        annotation(RECONCILED_CONFIG_VERSION_ANNOTATION),
        &st.jobs,
        &desired,
    );
    st.reconciled_config_version = reconciled.clone();
    let reconciled = reconciled.unwrap_or_default();

    let invalid = ci.spec.validate().err().map(|e| e.to_string());
    // SPEC 9.4: no job before the CI's Tenant is Ready. Deletion does not wait for a tenant.
    let waiting_for_tenant = match (&observed.tenant, deleting) {
        (Some(view), false) => decision.tenant(&mut st, &old, view, generation),
        _ => None,
    };
    if let Some(remaining) =
        tenant_quiet_period(ci, never_written, waiting_for_tenant.as_ref(), now)
    {
        // Nothing is written yet: the Tenant's readiness wakes the CI, and that pass records
        // everything at once (the finalizer with the first intent, then the launch's answer).
        plan.finalizer = FinalizerChange::Keep;
        plan.events.clear();
        plan.requeue(remaining);
        return plan;
    }

    if deleting {
        st.phase = Some(Phase::Deleting);
        decision.decide_delete(&mut st, has_aap_finalizer, retry_token, generation);
    } else {
        let outlook = if invalid.is_some()
            || management == ManagementState::Manual
            || waiting_for_tenant.is_some()
        {
            decision.waiting_outlook(&st.jobs, &desired)
        } else {
            decision.decide_provision(&mut st, &desired, &reconciled, retry_token)
        };
        st.phase = Some(if outlook == Outlook::FailedFinal {
            Phase::Failed
        } else if !reconciled.is_empty() {
            Phase::Running
        } else {
            Phase::Starting
        });
        let (applied, reason, message) = if let Some(msg) = &invalid {
            (false, reason::INVALID_SPEC, msg.clone())
        } else if let Some(msg) = &orphan {
            (false, reason::PROVIDER_ERROR, msg.clone())
        } else if desired == reconciled {
            (true, reason::APPLIED, messages::applied(&desired))
        } else if management == ManagementState::Manual {
            (false, reason::MANUAL, messages::MANUAL.to_string())
        } else if let Some((reason, msg)) = &waiting_for_tenant {
            (false, *reason, msg.clone())
        } else if let Some(msg) = decision.provider_error.clone() {
            (false, reason::PROVIDER_ERROR, msg)
        } else {
            match &outlook {
                Outlook::FailedFinal => {
                    (false, reason::PROVISION_FAILED, messages::failed(&st.jobs))
                }
                Outlook::RetryAt(at) => (
                    false,
                    reason::RETRY_SCHEDULED,
                    messages::retry_scheduled(&st.jobs, *at),
                ),
                Outlook::InProgress | Outlook::Nothing => (
                    false,
                    reason::APPLYING,
                    messages::applying(&st.jobs, &desired),
                ),
            }
        };
        set_condition(
            &mut st.conditions,
            CONDITION_CONFIGURATION_APPLIED,
            applied,
            reason,
            &message,
            generation,
            now,
        );
        decision.event_on_new_reason(&old, reason, &message);
    }

    decision.platform_conditions(ci, &mut st, observed, deleting, &desired, generation);

    trim_history(&mut st.jobs, settings.history_limit);
    if st != old {
        plan.status = Some(st);
    }
    plan.first_intent = first_intent(&plan, never_written);
    plan
}

/// The intent to record with the finalizer: a new CI's first provision intent, when this pass
/// adds the finalizer and launches it and the status was never written (the annotation counts
/// only then, see [`cloudkit_api::intent`]).
fn first_intent(plan: &Plan, status_never_written: bool) -> Option<JobStatus> {
    let Some(ProviderCall::Launch {
        job_type: JobType::Provision,
        launch_key,
        ..
    }) = &plan.call
    else {
        return None;
    };
    if plan.finalizer != FinalizerChange::Add || !status_never_written {
        return None;
    }
    let jobs = &plan.status.as_ref()?.jobs;
    jobs.iter()
        .find(|j| j.launch_key.as_ref() == Some(launch_key))
        .cloned()
}

/// How long a new CI whose Tenant is being set up may stay unwritten (no status, no finalizer).
/// CIs created in a burst for a new tenant all find it not Ready; showing `TenantNotReady` on
/// each one for the second the Tenant takes would cost two writes per CI (the waiting status, and
/// the first intent written on its own instead of with the finalizer).
pub const TENANT_QUIET_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// The rest of the [`TENANT_QUIET_PERIOD`] of `ci`, when this pass is to write nothing: the
/// operator never wrote the CI's status, its Tenant is being set up (not missing, not failed),
/// and the CI is younger than the period.
fn tenant_quiet_period(
    ci: &ComputeInstance,
    never_written: bool,
    waiting: Option<&(&'static str, String)>,
    now: Timestamp,
) -> Option<std::time::Duration> {
    if !never_written || !matches!(waiting, Some((reason::TENANT_NOT_READY, _))) {
        return None;
    }
    let created = ci.metadata.creation_timestamp.as_ref()?.0;
    TENANT_QUIET_PERIOD
        .checked_sub(elapsed(now, created))
        .filter(|d| !d.is_zero())
}

/// How soon a CI whose Tenant is on its way is looked at again.
const TENANT_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// What is ahead for the current configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outlook {
    /// Nothing to do.
    Nothing,
    /// A provision is running or starting.
    InProgress,
    /// A failed provision will be retried at this time.
    RetryAt(Timestamp),
    /// The latest provision for the desired configuration failed; no retry.
    FailedFinal,
}

/// A decision in progress: what every rule reads, and the plan the rules write into.
struct Decision<'a> {
    settings: &'a Settings,
    now: Timestamp,
    plan: &'a mut Plan,
    /// Identifies the CI in launch keys ([`LaunchKey::scope_of`]).
    scope: String,
    /// A provider problem to show in the condition.
    provider_error: Option<String>,
    /// From [`Observed::launch_not_before`].
    launch_not_before: Option<Timestamp>,
    /// From [`Observed::launch_refusal`].
    launch_refusal: Option<String>,
    /// From [`Observed::cancel_requested`].
    cancel_requested: &'a BTreeSet<String>,
}

impl Decision<'_> {
    /// Brings non-terminal jobs up to date with what their providers report.
    fn fold_observations(&mut self, jobs: &mut [JobStatus], observed: &Observed) {
        let mut remote = false;
        for job in jobs.iter_mut().filter(|j| !j.is_terminal()) {
            if job.job_id.is_empty() {
                continue;
            }
            let caps = self.settings.capabilities(job.owner());
            if caps.is_some_and(|c| c.polls_remotely) {
                remote = true;
            }
            if let Some(err) = observed.job_errors.get(&job.job_id) {
                self.provider_error = Some(messages::unreadable(job, &err.message));
                if err.kind == ProviderErrorKind::Auth {
                    self.plan.events.push(EventSpec::warning(
                        "ProviderAuthFailed",
                        format!("{}: {}", job.owner(), err.message),
                    ));
                }
                continue;
            }
            let Some(obs) = observed.jobs.get(&job.job_id) else {
                continue;
            };
            if obs.state == job.state {
                if let Some(message) = &obs.message {
                    job.message = Some(message.clone());
                }
                continue;
            }
            // A new state makes the previous message (say, "launched") stale.
            job.state = obs.state;
            job.message = obs.message.clone();
            if obs.state.is_terminal() {
                self.finish(job);
            }
        }
        if remote {
            self.plan.requeue(self.settings.poll_interval);
        }
    }

    /// Records the end of `job` (already in a terminal state).
    fn finish(&mut self, job: &mut JobStatus) {
        job.completion_timestamp = Some(Time(self.now));
        let duration = elapsed(self.now, job.timestamp.0);
        self.plan.finished.push(FinishedJob {
            job_type: job.job_type,
            provider: job.owner(),
            state: job.state,
            duration,
        });
        let text = messages::finished(job);
        self.plan.events.push(match job.state {
            JobState::Succeeded => EventSpec::normal("JobSucceeded", text),
            JobState::Canceled => EventSpec::warning("JobCanceled", text),
            _ => EventSpec::warning("JobFailed", text),
        });
    }

    /// Intents without a job id that are older than the launch window: their launch was lost
    /// (the operator stopped, or the answer timed out). The lookup says whether it happened.
    fn resolve_lost_launches(
        &mut self,
        jobs: &mut [JobStatus],
        observed: &Observed,
        deleting: bool,
    ) {
        for i in 0..jobs.len() {
            let job = &jobs[i];
            if !job.job_id.is_empty() || job.is_terminal() {
                continue;
            }
            let age = elapsed(self.now, job.timestamp.0);
            if age < self.settings.launch_window {
                self.plan.requeue(self.settings.launch_window - age);
                continue;
            }
            let key = job.launch_key.clone().unwrap_or_default();
            match observed.lookups.get(&key) {
                Some(LaunchLookup::Found(started)) => {
                    let job = &mut jobs[i];
                    job.job_id = started.job_id.clone();
                    job.state = started.state;
                    job.message = started.message.clone();
                    job.aap_job_kind = started.aap_job_kind;
                    job.block_deletion_on_failure = Some(started.block_deletion_on_failure);
                    if job.state.is_terminal() {
                        self.finish(job);
                    }
                    self.plan.requeue(self.settings.poll_interval);
                }
                Some(LaunchLookup::NotFound) => {
                    if deleting && job.job_type == JobType::Provision {
                        let job = &mut jobs[i];
                        job.state = JobState::Canceled;
                        job.message = Some(messages::NEVER_LAUNCHED.into());
                        job.completion_timestamp = Some(Time(self.now));
                    } else if self.plan.call.is_none() {
                        self.plan.call = Some(ProviderCall::Launch {
                            provider: job.owner(),
                            job_type: job.job_type,
                            launch_key: key,
                        });
                    }
                }
                Some(LaunchLookup::Unknowable) if job.job_type == JobType::Deprovision => {
                    // Whether the trigger arrived cannot be known, and waiting for evidence that
                    // may never come would leave the CI behind: send it again. A deprovision run
                    // twice finds the VM already gone.
                    if self.plan.call.is_none() {
                        self.plan.call = Some(ProviderCall::Launch {
                            provider: job.owner(),
                            job_type: job.job_type,
                            launch_key: key,
                        });
                    }
                }
                Some(LaunchLookup::Unknowable) => {
                    // The trigger may or may not have been delivered; sending it again could
                    // duplicate the work. Treat it as delivered and wait for the evidence the
                    // automation leaves on the CI, as for any job of such a provider (bounded by
                    // `expire_silent_provisions`).
                    let id = next_eda_job_id(jobs);
                    let job = &mut jobs[i];
                    job.job_id = id;
                    job.state = JobState::Running;
                    job.message = Some(messages::UNCONFIRMED_TRIGGER.into());
                }
                None => self.plan.requeue(self.settings.poll_interval),
            }
        }
    }

    /// A provision job of a provider that reports through the CI (EDA) that has shown no sign
    /// of the automation (no `-aap` finalizer) within the grace period most likely never
    /// reached it (a lost trigger, a rule that did not fire): it fails, and the retry rules
    /// take over. Once the finalizer is there the job waits for its result as long as it takes.
    fn expire_silent_provisions(&mut self, jobs: &mut [JobStatus], has_aap_finalizer: bool) {
        if has_aap_finalizer {
            return;
        }
        let grace = self.settings.eda_grace;
        for job in jobs.iter_mut() {
            if job.job_type != JobType::Provision || job.is_terminal() || job.job_id.is_empty() {
                continue;
            }
            let reports_through_ci = self
                .settings
                .capabilities(job.owner())
                .is_some_and(|c| !c.polls_remotely);
            if !reports_through_ci {
                continue;
            }
            let age = elapsed(self.now, job.timestamp.0);
            if age < grace {
                self.plan.requeue(grace - age);
                continue;
            }
            job.state = JobState::Failed;
            job.message = Some(messages::silent_provision(grace));
            self.finish(job);
        }
    }

    /// Appends an intent for a new job and plans its launch. Returns false when another call
    /// already took this pass.
    fn launch(
        &mut self,
        jobs: &mut Vec<JobStatus>,
        job_type: JobType,
        config: Option<&str>,
        attempt: i32,
        retry_token: Option<String>,
    ) -> bool {
        if self.plan.call.is_some() {
            return false;
        }
        if let Some(not_before) = self.launch_not_before
            && self.now < not_before
        {
            self.plan.requeue(elapsed(not_before, self.now));
            self.provider_error = Some(messages::wait(
                job_type,
                self.launch_refusal.as_deref(),
                not_before,
            ));
            return false;
        }
        let provider = self.settings.active;
        let launch_key = match config {
            Some(version) => LaunchKey::provision(&self.scope, version, attempt),
            None => LaunchKey::deprovision(&self.scope, attempt),
        }
        .to_string();
        let mut intent = JobStatus::new(String::new(), job_type, Time(self.now), JobState::Pending);
        intent.provider = Some(provider);
        intent.config_version = config.map(str::to_string);
        intent.launch_key = Some(launch_key.clone());
        intent.attempt = Some(attempt);
        intent.retry_token = retry_token;
        intent.message = Some(messages::LAUNCHING.into());
        jobs.push(intent);
        self.plan.call = Some(ProviderCall::Launch {
            provider,
            job_type,
            launch_key,
        });
        true
    }

    fn decide_provision(
        &mut self,
        st: &mut ComputeInstanceStatus,
        desired: &str,
        reconciled: &str,
        retry_token: Option<String>,
    ) -> Outlook {
        if st
            .jobs
            .iter()
            .any(|j| j.job_type == JobType::Provision && !j.is_terminal())
        {
            return Outlook::InProgress;
        }
        let Some(latest) = latest_job(&st.jobs, JobType::Provision).cloned() else {
            self.launch(
                &mut st.jobs,
                JobType::Provision,
                Some(desired),
                1,
                retry_token,
            );
            return Outlook::InProgress;
        };
        let same_config = match latest.config_version.as_deref() {
            Some(v) => v == desired,
            // Recorded by the Go operator: only the reconciled version tells.
            None => desired == reconciled,
        };
        if !same_config {
            if desired != reconciled {
                self.launch(
                    &mut st.jobs,
                    JobType::Provision,
                    Some(desired),
                    1,
                    retry_token,
                );
                return Outlook::InProgress;
            }
            return Outlook::Nothing;
        }
        if latest.state.is_successful() {
            return Outlook::Nothing;
        }
        // The latest provision for the desired configuration failed or was cancelled.
        let attempt = latest.attempt.unwrap_or(1).max(1);
        let user_retry = retry_token.is_some() && retry_token != latest.retry_token;
        if user_retry {
            self.launch(
                &mut st.jobs,
                JobType::Provision,
                Some(desired),
                attempt + 1,
                retry_token,
            );
            return Outlook::InProgress;
        }
        if attempt.unsigned_abs() > self.settings.retry_limit {
            return Outlook::FailedFinal;
        }
        match self.retry_after_backoff(&mut st.jobs, &latest, Some(desired), attempt, retry_token) {
            None => Outlook::InProgress,
            Some(at) => Outlook::RetryAt(at),
        }
    }

    /// Launches the next attempt after `latest` (failed) once the backoff since its end has
    /// passed (`None`); otherwise asks to come back then and returns when.
    fn retry_after_backoff(
        &mut self,
        jobs: &mut Vec<JobStatus>,
        latest: &JobStatus,
        config: Option<&str>,
        attempt: i32,
        retry_token: Option<String>,
    ) -> Option<Timestamp> {
        let since = latest
            .completion_timestamp
            .as_ref()
            .map_or(latest.timestamp.0, |t| t.0);
        let delay = self.settings.retry_backoff(attempt.unsigned_abs());
        let waited = elapsed(self.now, since);
        if waited >= delay {
            self.launch(jobs, latest.job_type, config, attempt + 1, retry_token);
            return None;
        }
        self.plan.requeue(delay - waited);
        Some(add(since, delay).unwrap_or(since))
    }

    /// The outlook when no job may be started (invalid spec, manual mode).
    fn waiting_outlook(&self, jobs: &[JobStatus], desired: &str) -> Outlook {
        match latest_job(jobs, JobType::Provision) {
            Some(j) if !j.is_terminal() => Outlook::InProgress,
            Some(j)
                if j.config_version.as_deref() == Some(desired)
                    && matches!(j.state, JobState::Failed | JobState::Canceled) =>
            {
                Outlook::FailedFinal
            }
            _ => Outlook::Nothing,
        }
    }

    fn decide_delete(
        &mut self,
        st: &mut ComputeInstanceStatus,
        has_aap_finalizer: bool,
        retry_token: Option<String>,
        generation: Option<i64>,
    ) {
        // Never a provision and a deprovision job at once: stop or outwait provisions first.
        let mut waiting_for_provision = false;
        for i in 0..st.jobs.len() {
            let job = &st.jobs[i];
            if job.job_type != JobType::Provision || job.is_terminal() {
                continue;
            }
            waiting_for_provision = true;
            if job.job_id.is_empty() {
                continue; // a lost launch, resolved by its lookup
            }
            let Some(caps) = self.settings.capabilities(job.owner()) else {
                continue; // reported through the orphan message
            };
            if caps.can_cancel {
                if self.plan.call.is_none() && !self.cancel_requested.contains(&job.job_id) {
                    self.plan.call = Some(ProviderCall::Cancel {
                        provider: job.owner(),
                        job_id: job.job_id.clone(),
                    });
                }
                self.plan.requeue(self.settings.poll_interval);
                continue;
            }
            // It cannot be cancelled: wait for it, bounded by the grace period.
            let age = elapsed(self.now, job.timestamp.0);
            if age < self.settings.eda_grace {
                self.plan.requeue(self.settings.eda_grace - age);
                continue;
            }
            let job = &mut st.jobs[i];
            job.state = JobState::Failed;
            job.message = Some(messages::abandoned(has_aap_finalizer).into());
            self.finish(job);
            waiting_for_provision = st
                .jobs
                .iter()
                .any(|j| j.job_type == JobType::Provision && !j.is_terminal());
        }
        if waiting_for_provision {
            return;
        }

        let latest = latest_job(&st.jobs, JobType::Deprovision).cloned();
        let Some(latest) = latest else {
            self.launch(&mut st.jobs, JobType::Deprovision, None, 1, retry_token);
            return;
        };
        if !latest.is_terminal() {
            return; // polled above, or waiting for its lookup
        }
        if latest.state.is_successful() {
            self.plan.finalizer = FinalizerChange::Remove;
            return;
        }
        let attempt = latest.attempt.unwrap_or(1).max(1);
        if retry_token.is_some() && retry_token != latest.retry_token {
            self.launch(
                &mut st.jobs,
                JobType::Deprovision,
                None,
                attempt + 1,
                retry_token,
            );
            set_condition(
                &mut st.conditions,
                CONDITION_DELETION_BLOCKED,
                false,
                reason::NOT_BLOCKED,
                messages::DEPROVISION_RETRIED,
                generation,
                self.now,
            );
            return;
        }
        // A deprovision that never started (its trigger failed: no job id) ran nothing: try it
        // again with the provision backoff, up to the retry limit, before giving up on it.
        // Otherwise an EDA deletion would end with the automation's finalizer left behind.
        if latest.job_id.is_empty() && attempt.unsigned_abs() <= self.settings.retry_limit {
            self.retry_after_backoff(&mut st.jobs, &latest, None, attempt, retry_token);
            return;
        }
        if !latest.blocks_deletion_on_failure() {
            self.plan.finalizer = FinalizerChange::Remove;
            return;
        }
        let message = messages::deletion_blocked(&latest);
        let was_blocked = is_true(&st.conditions, CONDITION_DELETION_BLOCKED);
        set_condition(
            &mut st.conditions,
            CONDITION_DELETION_BLOCKED,
            true,
            reason::DEPROVISION_FAILED,
            &message,
            generation,
            self.now,
        );
        if !was_blocked {
            self.plan
                .events
                .push(EventSpec::warning("DeletionBlocked", message));
        }
        self.plan.requeue(self.settings.poll_interval);
    }

    /// Warning events for conditions that newly turn into a problem.
    /// SPEC 9.4: the CI's Tenant. Sets `Accepted` and `tenantReference`, plans the Tenant's
    /// creation or adoption, and answers why jobs must wait, if they must.
    fn tenant(
        &mut self,
        st: &mut ComputeInstanceStatus,
        old: &ComputeInstanceStatus,
        view: &TenantView,
        generation: Option<i64>,
    ) -> Option<(&'static str, String)> {
        let waiting = match view {
            TenantView::Unnamed => Some((reason::TENANT_MISSING, messages::tenant_missing())),
            TenantView::Missing { name, tenant_name } => {
                self.plan.tenant = Some(TenantChange::Create {
                    name: name.clone(),
                    tenant_name: tenant_name.clone(),
                });
                Some((
                    reason::TENANT_NOT_READY,
                    messages::tenant_not_ready(name, None),
                ))
            }
            TenantView::Present(t) => {
                if !t.owned_by_ci {
                    self.plan.tenant = Some(TenantChange::Own {
                        name: t.name.clone(),
                    });
                }
                if st.tenant_reference.is_none() {
                    st.tenant_reference = Some(TenantReference {
                        name: t.name.clone(),
                        namespace: t.namespace.clone(),
                    });
                }
                match t.phase {
                    Some(TenantPhase::Ready) => None,
                    Some(TenantPhase::Failed) => Some((
                        reason::TENANT_FAILED,
                        messages::tenant_failed(&t.name, t.message.as_deref()),
                    )),
                    _ => Some((
                        reason::TENANT_NOT_READY,
                        messages::tenant_not_ready(&t.name, t.message.as_deref()),
                    )),
                }
            }
        };
        let (accepted, reason, message) = match &waiting {
            Some((reason, message)) => (false, *reason, message.clone()),
            None => {
                let (name, namespace) = match view {
                    TenantView::Present(t) => (t.name.as_str(), t.tenant_namespace.as_deref()),
                    _ => ("", None),
                };
                (
                    true,
                    reason::TENANT_READY,
                    messages::tenant_ready(name, namespace),
                )
            }
        };
        set_condition(
            &mut st.conditions,
            CONDITION_ACCEPTED,
            accepted,
            reason,
            &message,
            generation,
            self.now,
        );
        let before = find_condition(&old.conditions, CONDITION_ACCEPTED).map(|c| c.reason.as_str());
        if before != Some(reason)
            && matches!(reason, reason::TENANT_MISSING | reason::TENANT_FAILED)
        {
            self.plan
                .events
                .push(EventSpec::warning(reason, message.clone()));
        }
        // A CI without a tenant waits for a change of itself (the annotation); one whose Tenant
        // is on its way is looked at again shortly.
        if waiting.is_some() && !matches!(view, TenantView::Unnamed) {
            self.plan.requeue(TENANT_CHECK_INTERVAL);
        }
        waiting
    }

    /// SPEC 10-12: `Progressing`, `Deleting`, `Available` and restarts.
    fn platform_conditions(
        &mut self,
        ci: &ComputeInstance,
        st: &mut ComputeInstanceStatus,
        observed: &Observed,
        deleting: bool,
        desired: &str,
        generation: Option<i64>,
    ) {
        let busy = st.jobs.iter().any(|j| !j.is_terminal())
            || (!deleting && st.reconciled_config_version.as_deref() != Some(desired));
        let (reason, message) = if busy {
            (reason::PROGRESSING, messages::APPLYING_CONFIGURATION)
        } else {
            (reason::IDLE, messages::NOTHING_IN_PROGRESS)
        };
        set_condition(
            &mut st.conditions,
            CONDITION_PROGRESSING,
            busy,
            reason,
            message,
            generation,
            self.now,
        );
        if deleting {
            set_condition(
                &mut st.conditions,
                CONDITION_DELETING,
                true,
                reason::DELETING,
                messages::DELETION_STARTED,
                generation,
                self.now,
            );
        }
        let Some(vms) = &observed.vms else {
            return;
        };
        let tenant_namespace = match &observed.tenant {
            Some(TenantView::Present(t)) => t.tenant_namespace.clone(),
            _ => None,
        };
        apply_availability(
            &ci.metadata.name.clone().unwrap_or_default(),
            tenant_namespace.as_deref(),
            vms,
            st,
            generation,
            self.now,
        );
        if deleting {
            return;
        }
        let restart = plan_restart(
            ci.spec.restart_requested_at.as_ref(),
            st,
            observed.vmi.clone(),
            generation,
            self.now,
            self.settings.restart_timeout,
        );
        if let Some(error) = &observed.restart_error
            && restart.delete.is_some()
        {
            record_delete_failure(st, error, generation, self.now);
        }
        if let Some(after) = restart.requeue_after {
            self.plan.requeue(after.min(RESTART_CHECK_INTERVAL));
        }
        self.plan.restart = restart.delete;
    }

    fn event_on_new_reason(&mut self, old: &ComputeInstanceStatus, reason: &str, message: &str) {
        let before = find_condition(&old.conditions, CONDITION_CONFIGURATION_APPLIED)
            .map(|c| c.reason.as_str());
        if before == Some(reason) {
            return;
        }
        let event = match reason {
            reason::INVALID_SPEC => "InvalidSpec",
            reason::PROVIDER_ERROR => "ProviderError",
            reason::PROVISION_FAILED => "ProvisionFailed",
            _ => return,
        };
        self.plan
            .events
            .push(EventSpec::warning(event, message.to_string()));
    }
}

/// The reconciled configuration version: evidence naming the desired version wins (the
/// automation's annotation, or a provision job launched for it that succeeded); otherwise the
/// annotation; otherwise the version of the latest successful provision job.
pub fn reconciled_version(
    annotation: Option<&str>,
    jobs: &[JobStatus],
    desired: &str,
) -> Option<String> {
    let by_job = latest_successful_config(jobs);
    if annotation == Some(desired) || by_job == Some(desired) {
        return Some(desired.to_string());
    }
    annotation.or(by_job).map(str::to_string)
}

fn latest_successful_config(jobs: &[JobStatus]) -> Option<&str> {
    let mut best: Option<&JobStatus> = None;
    for job in jobs.iter().filter(|j| {
        j.job_type == JobType::Provision && j.state.is_successful() && j.config_version.is_some()
    }) {
        if best.is_none_or(|b| job.timestamp.0 >= b.timestamp.0) {
            best = Some(job);
        }
    }
    best.and_then(|j| j.config_version.as_deref())
}
