//! Jobs and their life cycle, evaluated lazily from timestamps.
//!
//! A job stores when its current phase began and how long each phase lasts; reading it advances
//! the phase to "now". No timer exists per job: only playbook side effects (which must happen
//! before a job may report success) and purging need the simulator's single background ticker.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::config::{Outcome, Phases, TemplateKind, secs_to_duration};
use crate::playbook::{Step, Target};
use crate::runner::RunState;

/// A job's status as AWX reports it (`status` of a job or workflow job); not to be confused
/// with the operator's history entry, `cloudkit_api::JobStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AwxStatus {
    /// Created, not yet queued (the simulator never reports it; clients must accept it).
    New,
    /// Queued.
    Pending,
    /// Waiting for an execution node.
    Waiting,
    /// Running.
    Running,
    /// Finished successfully.
    Successful,
    /// The playbook failed.
    Failed,
    /// The controller failed to run it.
    Error,
    /// Canceled.
    Canceled,
}

impl AwxStatus {
    /// The AWX spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::Running => "running",
            Self::Successful => "successful",
            Self::Failed => "failed",
            Self::Error => "error",
            Self::Canceled => "canceled",
        }
    }

    /// Parses the AWX spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "new" => Self::New,
            "pending" => Self::Pending,
            "waiting" => Self::Waiting,
            "running" => Self::Running,
            "successful" => Self::Successful,
            "failed" => Self::Failed,
            "error" => Self::Error,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    /// `successful`, `failed`, `error` or `canceled`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Successful | Self::Failed | Self::Error | Self::Canceled
        )
    }

    /// Whether AWX reports `failed: true` for a job in this status.
    pub fn is_failed(self) -> bool {
        matches!(self, Self::Failed | Self::Error | Self::Canceled)
    }
}

impl From<Outcome> for AwxStatus {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Successful => Self::Successful,
            Outcome::Failed => Self::Failed,
            Outcome::Error => Self::Error,
        }
    }
}

/// Maps the monotonic clock to wall-clock timestamps.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    base: Instant,
    base_ts: jiff::Timestamp,
}

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            base_ts: jiff::Timestamp::now(),
        }
    }

    pub(crate) fn timestamp(&self, at: Instant) -> jiff::Timestamp {
        let since = at.saturating_duration_since(self.base);
        let since = jiff::SignedDuration::try_from(since).unwrap_or(jiff::SignedDuration::MAX);
        self.base_ts
            .checked_add(since)
            .unwrap_or(jiff::Timestamp::MAX)
    }

    /// AWX's format: RFC 3339 UTC with microseconds.
    pub(crate) fn format(&self, at: Instant) -> String {
        format!("{:.6}", self.timestamp(at))
    }
}

/// Per-job overrides, read from the applied extra vars (see the crate documentation).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Overrides {
    pub outcome: Option<Outcome>,
    pub pending: Option<Duration>,
    pub waiting: Option<Duration>,
    pub running: Option<Duration>,
    pub message: Option<String>,
}

/// Extra-var keys of the per-job overrides.
pub const OVERRIDE_OUTCOME: &str = "sim_outcome";
/// Simulated seconds pending.
pub const OVERRIDE_PENDING: &str = "sim_pending_seconds";
/// Simulated seconds waiting.
pub const OVERRIDE_WAITING: &str = "sim_waiting_seconds";
/// Simulated seconds running.
pub const OVERRIDE_RUNNING: &str = "sim_running_seconds";
/// Text of `result_traceback` when the job fails.
pub const OVERRIDE_MESSAGE: &str = "sim_message";

impl Overrides {
    /// Top-level extra vars win over keys of the payload's `spec.templateParameters` JSON text.
    pub(crate) fn from_extra_vars(vars: &Map<String, Value>) -> Result<Self, String> {
        let params = template_parameters(vars);
        let lookup = |key: &str| -> Option<&Value> {
            vars.get(key)
                .or_else(|| params.as_ref().and_then(|p| p.get(key)))
        };
        let seconds = |key: &str| -> Result<Option<Duration>, String> {
            match lookup(key) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => {
                    let secs = match v {
                        Value::Number(n) => n.as_f64(),
                        Value::String(s) => s.trim().parse::<f64>().ok(),
                        _ => None,
                    };
                    secs.and_then(secs_to_duration).map(Some).ok_or_else(|| {
                        format!("{key} must be a non-negative number of seconds, got {v}")
                    })
                }
            }
        };
        let outcome = match lookup(OVERRIDE_OUTCOME) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(Outcome::parse(s).ok_or_else(|| {
                format!("{OVERRIDE_OUTCOME} must be successful, failed or error, got {s:?}")
            })?),
            Some(v) => return Err(format!("{OVERRIDE_OUTCOME} must be a string, got {v}")),
        };
        Ok(Self {
            outcome,
            pending: seconds(OVERRIDE_PENDING)?,
            waiting: seconds(OVERRIDE_WAITING)?,
            running: seconds(OVERRIDE_RUNNING)?,
            message: lookup(OVERRIDE_MESSAGE).and_then(|v| v.as_str().map(str::to_owned)),
        })
    }
}

/// The payload the operator sends: `extra_vars.ansible_eda.event.payload`.
pub(crate) fn payload(vars: &Map<String, Value>) -> Option<&Value> {
    vars.get("ansible_eda")?.get("event")?.get("payload")
}

fn template_parameters(vars: &Map<String, Value>) -> Option<Map<String, Value>> {
    let text = payload(vars)?
        .get("spec")?
        .get("templateParameters")?
        .as_str()?;
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => Some(m),
        _ => None,
    }
}

/// Playbook side effects of one job and how far they got.
#[derive(Clone, Debug)]
pub(crate) struct Effects {
    pub target: Result<Target, String>,
    pub provision: bool,
    pub start_done: bool,
    pub finish_done: bool,
    pub in_flight: bool,
    /// When the last effect needed before the terminal status completed.
    pub released_at: Option<Instant>,
}

impl Effects {
    pub(crate) fn new(target: Result<Target, String>, provision: bool) -> Self {
        Self {
            target,
            provision,
            start_done: false,
            finish_done: false,
            in_flight: false,
            released_at: None,
        }
    }

    /// Whether the job may not yet take its terminal status `outcome`.
    fn gates(&self, outcome: Outcome) -> bool {
        !self.start_done || (outcome == Outcome::Successful && !self.finish_done)
    }
}

/// One job or workflow job.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub id: u64,
    pub kind: TemplateKind,
    pub template_id: u64,
    pub template_name: String,
    pub organization: String,
    pub extra_vars: Map<String, Value>,
    pub created: Instant,
    pub status: AwxStatus,
    pub phase_since: Instant,
    pub started: Option<Instant>,
    pub finished: Option<Instant>,
    pub phases: Phases,
    pub outcome: Outcome,
    pub cancel_at: Option<Instant>,
    pub traceback: String,
    pub explanation: String,
    pub failure_message: Option<String>,
    pub effects: Option<Effects>,
    /// Runner mode: the process decides the status, not the clock.
    pub runner: Option<RunState>,
}

impl Job {
    /// Advances the life cycle to `now`.
    pub(crate) fn advance(&mut self, now: Instant) {
        if self.runner.is_some() {
            return;
        }
        loop {
            let next = match self.status {
                AwxStatus::New | AwxStatus::Pending => self.phase_since + self.phases.pending,
                AwxStatus::Waiting => self.phase_since + self.phases.waiting,
                AwxStatus::Running => self.phase_since + self.phases.running,
                _ => return,
            };
            if let Some(c) = self.cancel_at
                && c <= now
                && c <= next
            {
                self.finish(AwxStatus::Canceled, c);
                return;
            }
            if next > now {
                return;
            }
            match self.status {
                AwxStatus::New | AwxStatus::Pending => {
                    self.status = AwxStatus::Waiting;
                    self.phase_since = next;
                }
                AwxStatus::Waiting => {
                    self.status = AwxStatus::Running;
                    self.phase_since = next;
                    self.started = Some(next);
                }
                _ => {
                    if let Some(e) = &self.effects {
                        if e.gates(self.outcome) {
                            // The ticker runs the remaining side effects; a cancel still wins.
                            if let Some(c) = self.cancel_at
                                && c <= now
                            {
                                self.finish(AwxStatus::Canceled, c);
                            }
                            return;
                        }
                        let at = e.released_at.map_or(next, |r| r.max(next));
                        if at > now {
                            return;
                        }
                        self.finish(self.outcome.into(), at);
                    } else {
                        self.finish(self.outcome.into(), next);
                    }
                    return;
                }
            }
        }
    }

    fn finish(&mut self, status: AwxStatus, at: Instant) {
        self.status = status;
        self.phase_since = at;
        self.finished = Some(at);
        match status {
            AwxStatus::Failed | AwxStatus::Error => {
                let msg = self.failure_message.clone().unwrap_or_else(|| {
                    format!(
                        "Simulated {} of job {} ({})",
                        if status == AwxStatus::Error {
                            "error"
                        } else {
                            "failure"
                        },
                        self.id,
                        self.template_name
                    )
                });
                if self.traceback.is_empty() {
                    self.traceback = msg.clone();
                }
                if status == AwxStatus::Error && self.explanation.is_empty() {
                    self.explanation = msg;
                }
            }
            AwxStatus::Canceled if self.explanation.is_empty() => {
                self.explanation = "Job was canceled by request.".to_owned();
            }
            _ => {}
        }
    }

    /// Fails the job now (a side effect failed), unless it already ended.
    pub(crate) fn fail_now(&mut self, message: String, now: Instant) {
        self.advance(now);
        if self.status.is_terminal() {
            return;
        }
        self.traceback = message.clone();
        self.failure_message = Some(message);
        self.finish(AwxStatus::Failed, now);
    }

    /// Whether a cancel request is accepted now.
    pub(crate) fn can_cancel(&self) -> bool {
        !self.status.is_terminal()
    }

    /// Requests a cancel; the job becomes `canceled` after `delay`, or, in runner mode, once its
    /// process has ended.
    pub(crate) fn request_cancel(&mut self, now: Instant, delay: Duration) {
        if let Some(run) = &mut self.runner {
            run.request_cancel();
            return;
        }
        if self.cancel_at.is_none() {
            self.cancel_at = Some(now + delay);
        }
    }

    /// Runner mode: a slot is free and the process is being prepared.
    pub(crate) fn runner_preparing(&mut self, now: Instant) {
        if matches!(self.status, AwxStatus::New | AwxStatus::Pending) {
            self.status = AwxStatus::Waiting;
            self.phase_since = now;
        }
    }

    /// Runner mode: the process was started.
    pub(crate) fn runner_started(
        &mut self,
        now: Instant,
        pid: Option<u32>,
        args: Vec<String>,
        cwd: String,
    ) {
        if self.status.is_terminal() {
            return;
        }
        self.status = AwxStatus::Running;
        self.phase_since = now;
        self.started = Some(now);
        if let Some(run) = &mut self.runner {
            run.pid = pid;
            run.args = args;
            run.cwd = cwd;
        }
    }

    /// Runner mode: the process ended (or never started) with this result.
    pub(crate) fn runner_finished(
        &mut self,
        status: AwxStatus,
        now: Instant,
        traceback: String,
        explanation: String,
    ) {
        if self.status.is_terminal() {
            return;
        }
        self.traceback = traceback;
        self.explanation = explanation;
        if self.traceback.is_empty() && status.is_failed() && status != AwxStatus::Canceled {
            self.traceback = format!("ansible-playbook of job {} failed", self.id);
        }
        self.finish(status, now);
    }

    /// The side effect the ticker should run now, if any (marks it in flight).
    pub(crate) fn due_effect(&mut self, now: Instant) -> Option<(Step, Result<Target, String>)> {
        if self.status != AwxStatus::Running || self.cancel_at.is_some() {
            return None;
        }
        let running_ends = self.phase_since + self.phases.running;
        let outcome = self.outcome;
        let e = self.effects.as_mut()?;
        if e.in_flight {
            return None;
        }
        let step = if !e.start_done {
            if e.provision {
                Step::AddFinalizer
            } else {
                Step::Check
            }
        } else if outcome == Outcome::Successful && !e.finish_done && now >= running_ends {
            if e.provision {
                Step::WriteReconciledVersion
            } else {
                Step::RemoveFinalizer
            }
        } else {
            return None;
        };
        e.in_flight = true;
        Some((step, e.target.clone()))
    }

    /// Records the result of a side effect.
    pub(crate) fn effect_done(&mut self, step: Step, result: Result<(), String>, now: Instant) {
        let Some(e) = self.effects.as_mut() else {
            return;
        };
        e.in_flight = false;
        match result {
            Ok(()) => {
                match step {
                    Step::AddFinalizer | Step::Check => e.start_done = true,
                    Step::WriteReconciledVersion | Step::RemoveFinalizer => e.finish_done = true,
                }
                e.released_at = Some(now);
                self.advance(now);
            }
            Err(msg) => self.fail_now(
                format!("playbook step '{}' failed: {msg}", step.describe()),
                now,
            ),
        }
    }

    /// Whether the job is gone for clients (`purge_after` elapsed since it finished).
    pub(crate) fn purged(&self, now: Instant, purge_after: Option<Duration>) -> bool {
        match (purge_after, self.finished) {
            (Some(after), Some(f)) => now.saturating_duration_since(f) >= after,
            _ => false,
        }
    }

    /// The AWX representation (`GET jobs/<id>/` or `workflow_jobs/<id>/`). `prefix` is the API
    /// prefix the request came in on (`/api/v2/` or `/api/controller/v2/`).
    pub(crate) fn render(&self, prefix: &str, clock: &Clock) -> Value {
        let ts = |i: Option<Instant>| i.map_or(Value::Null, |i| Value::String(clock.format(i)));
        let elapsed = match (self.started, self.finished) {
            (Some(s), Some(f)) => f.saturating_duration_since(s).as_secs_f64(),
            (None, Some(f)) => f.saturating_duration_since(self.created).as_secs_f64(),
            // AWX reports the time so far while a job runs.
            (Some(s), None) => Instant::now().saturating_duration_since(s).as_secs_f64(),
            (None, None) => 0.0,
        };
        let elapsed = (elapsed * 1000.0).round() / 1000.0;
        let jobs = self.kind.jobs_path();
        let url = format!("{prefix}{jobs}/{}/", self.id);
        let tpl_url = format!(
            "{prefix}{}/{}/",
            self.kind.templates_path(),
            self.template_id
        );
        let extra_vars = Value::Object(self.extra_vars.clone()).to_string();
        let modified = self.finished.or(self.started).unwrap_or(self.created);
        let mut related = json!({
            "created_by": format!("{prefix}users/1/"),
            "unified_job_template": tpl_url,
            "cancel": format!("{url}cancel/"),
            "relaunch": format!("{url}relaunch/"),
            "labels": format!("{url}labels/"),
            "notifications": format!("{url}notifications/"),
            "activity_stream": format!("{url}activity_stream/"),
        });
        let mut summary = json!({
            "organization": {"id": 1, "name": self.organization, "description": ""},
            "unified_job_template": {
                "id": self.template_id,
                "name": self.template_name,
                "description": "",
                "unified_job_type": self.kind.job_type(),
            },
            "created_by": {"id": 1, "username": "admin", "first_name": "", "last_name": ""},
            "user_capabilities": {"delete": true, "start": true},
            "labels": {"count": 0, "results": []},
        });
        let mut job = json!({
            "id": self.id,
            "type": self.kind.job_type(),
            "url": url,
            "created": clock.format(self.created),
            "modified": clock.format(modified),
            "name": self.template_name,
            "description": "",
            "unified_job_template": self.template_id,
            "launch_type": "manual",
            "status": self.status.as_str(),
            "execution_environment": null,
            "failed": self.status.is_failed(),
            "started": ts(self.started),
            "finished": ts(self.finished),
            "canceled_on": if self.status == AwxStatus::Canceled { ts(self.finished) } else { Value::Null },
            "elapsed": elapsed,
            "job_explanation": self.explanation,
            "launched_by": {"id": 1, "name": "admin", "type": "user", "url": format!("{prefix}users/1/")},
            "work_unit_id": null,
            "extra_vars": extra_vars,
            "result_traceback": self.traceback,
            "event_processing_finished": self.status.is_terminal(),
            "organization": 1,
        });
        let (Some(obj), Some(rel), Some(sum)) = (
            job.as_object_mut(),
            related.as_object_mut(),
            summary.as_object_mut(),
        ) else {
            return job;
        };
        match self.kind {
            TemplateKind::Job => {
                rel.insert("job_template".into(), tpl_url.clone().into());
                rel.insert("stdout".into(), format!("{url}stdout/").into());
                rel.insert("job_events".into(), format!("{url}job_events/").into());
                rel.insert("inventory".into(), format!("{prefix}inventories/1/").into());
                rel.insert("project".into(), format!("{prefix}projects/1/").into());
                sum.insert(
                    "job_template".into(),
                    json!({"id": self.template_id, "name": self.template_name, "description": ""}),
                );
                for (k, v) in [
                    ("job_template", json!(self.template_id)),
                    ("job_type", json!("run")),
                    ("inventory", json!(1)),
                    ("project", json!(1)),
                    ("playbook", json!(self.playbook_name())),
                    ("scm_branch", json!("")),
                    ("forks", json!(0)),
                    ("limit", json!("")),
                    ("verbosity", json!(0)),
                    ("job_tags", json!("")),
                    ("skip_tags", json!("")),
                    ("force_handlers", json!(false)),
                    ("start_at_task", json!("")),
                    ("timeout", json!(0)),
                    ("use_fact_cache", json!(false)),
                    ("execution_node", json!("")),
                    ("controller_node", json!("")),
                    ("passwords_needed_to_start", json!([])),
                    ("allow_simultaneous", json!(true)),
                    ("artifacts", json!({})),
                    ("scm_revision", json!("")),
                    ("instance_group", json!(null)),
                    ("diff_mode", json!(false)),
                    ("job_slice_number", json!(0)),
                    ("job_slice_count", json!(1)),
                    ("webhook_service", json!("")),
                    ("webhook_credential", json!(null)),
                    ("webhook_guid", json!("")),
                ] {
                    obj.insert(k.into(), v);
                }
            }
            TemplateKind::Workflow => {
                rel.insert("workflow_job_template".into(), tpl_url.clone().into());
                rel.insert(
                    "workflow_nodes".into(),
                    format!("{url}workflow_nodes/").into(),
                );
                sum.insert(
                    "workflow_job_template".into(),
                    json!({"id": self.template_id, "name": self.template_name, "description": ""}),
                );
                for (k, v) in [
                    ("workflow_job_template", json!(self.template_id)),
                    ("allow_simultaneous", json!(true)),
                    ("job_template", json!(null)),
                    ("is_sliced_job", json!(false)),
                    ("inventory", json!(null)),
                    ("limit", json!(null)),
                    ("scm_branch", json!(null)),
                    ("webhook_service", json!("")),
                    ("webhook_credential", json!(null)),
                    ("webhook_guid", json!("")),
                    ("skip_tags", json!(null)),
                    ("job_tags", json!(null)),
                ] {
                    obj.insert(k.into(), v);
                }
            }
        }
        if let Some(run) = &self.runner {
            obj.insert(
                "job_args".into(),
                Value::String(Value::from(run.args.clone()).to_string()),
            );
            obj.insert("job_cwd".into(), json!(run.cwd));
        }
        obj.insert("related".into(), related);
        obj.insert("summary_fields".into(), summary);
        job
    }

    /// The playbook shown in the job's `playbook` field.
    fn playbook_name(&self) -> String {
        match &self.runner {
            Some(run) => run.playbook.clone(),
            None => crate::runner::playbook_name(None),
        }
    }

    /// The job's output: the captured output in runner mode, else a plain-text stand-in.
    pub(crate) fn stdout(&self) -> String {
        if let Some(run) = &self.runner {
            return run.output_text();
        }
        let mut out = format!(
            "Identity added: simulated\n\nPLAY [{}] *********************************************\n",
            self.template_name
        );
        if self.started.is_some() {
            out.push_str("\nTASK [Gathering Facts] *******************************************\nok: [localhost]\n");
        }
        match self.status {
            AwxStatus::Successful => out.push_str(
                "\nPLAY RECAP *******************************************************\nlocalhost : ok=1 changed=0 unreachable=0 failed=0\n",
            ),
            AwxStatus::Failed | AwxStatus::Error => {
                out.push_str(&format!("\nfatal: [localhost]: FAILED! => {{\"msg\": {:?}}}\n", self.traceback));
                out.push_str(
                    "\nPLAY RECAP *******************************************************\nlocalhost : ok=0 changed=0 unreachable=0 failed=1\n",
                );
            }
            AwxStatus::Canceled => out.push_str("\n[canceled]\n"),
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(phases: Phases) -> (Job, Instant) {
        let now = Instant::now();
        let j = Job {
            id: 1,
            kind: TemplateKind::Job,
            template_id: 7,
            template_name: "t".into(),
            organization: "Default".into(),
            extra_vars: Map::new(),
            created: now,
            status: AwxStatus::Pending,
            phase_since: now,
            started: None,
            finished: None,
            phases,
            outcome: Outcome::Successful,
            cancel_at: None,
            traceback: String::new(),
            explanation: String::new(),
            failure_message: None,
            effects: None,
            runner: None,
        };
        (j, now)
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn life_cycle_from_timestamps() {
        let (mut j, t0) = job(Phases::new(S, S, S));
        let rows = [
            (0, AwxStatus::Pending),
            (1, AwxStatus::Waiting),
            (2, AwxStatus::Running),
            (3, AwxStatus::Successful),
        ];
        for (secs, want) in rows {
            j.advance(t0 + S * secs);
            assert_eq!(j.status, want, "at {secs}s");
        }
        assert_eq!(j.started, Some(t0 + S * 2));
        assert_eq!(j.finished, Some(t0 + S * 3));
        // Jumping straight to the end gives the same timestamps.
        let (mut k, t0) = job(Phases::new(S, S, S));
        k.advance(t0 + S * 100);
        assert_eq!(
            (k.status, k.started, k.finished),
            (AwxStatus::Successful, Some(t0 + S * 2), Some(t0 + S * 3))
        );
    }

    #[test]
    fn cancel_wins_over_later_transitions() {
        let (mut j, t0) = job(Phases::new(S, S, S));
        j.advance(t0 + S / 2);
        assert!(j.can_cancel());
        j.request_cancel(t0 + S / 2, S / 4);
        j.advance(t0 + S * 10);
        assert_eq!(j.status, AwxStatus::Canceled);
        assert_eq!(j.started, None);
        assert_eq!(j.finished, Some(t0 + S * 3 / 4));
        assert!(!j.can_cancel());
    }

    #[test]
    fn effects_gate_the_terminal_status() {
        let (mut j, t0) = job(Phases::new(S, S, S));
        j.effects = Some(Effects::new(Err("no target".into()), true));
        j.advance(t0 + S * 10);
        assert_eq!(j.status, AwxStatus::Running);
        let (step, _) = j.due_effect(t0 + S * 10).unwrap();
        assert_eq!(step, Step::AddFinalizer);
        assert!(j.due_effect(t0 + S * 10).is_none(), "in flight");
        j.effect_done(step, Ok(()), t0 + S * 10);
        assert_eq!(j.status, AwxStatus::Running);
        let (step, _) = j.due_effect(t0 + S * 10).unwrap();
        assert_eq!(step, Step::WriteReconciledVersion);
        j.effect_done(step, Ok(()), t0 + S * 11);
        assert_eq!(j.status, AwxStatus::Successful);
        assert_eq!(j.finished, Some(t0 + S * 11));
    }

    #[test]
    fn failed_effect_fails_the_job() {
        let (mut j, t0) = job(Phases::new(S, S, S));
        j.effects = Some(Effects::new(Err("x".into()), false));
        j.advance(t0 + S * 2);
        let (step, _) = j.due_effect(t0 + S * 2).unwrap();
        assert_eq!(step, Step::Check);
        j.effect_done(step, Err("boom".into()), t0 + S * 2);
        assert_eq!(j.status, AwxStatus::Failed);
        assert!(j.traceback.contains("boom"), "{}", j.traceback);
    }

    #[test]
    fn overrides_from_vars_and_template_parameters() {
        let vars: Map<String, Value> = serde_json::from_value(json!({
            "sim_running_seconds": 5,
            "ansible_eda": {"event": {"payload": {"spec": {
                "templateParameters": "{\"sim_outcome\": \"failed\", \"sim_running_seconds\": 9, \"sim_pending_seconds\": \"0.5\"}"
            }}}}
        }))
        .unwrap();
        let o = Overrides::from_extra_vars(&vars).unwrap();
        assert_eq!(o.outcome, Some(Outcome::Failed));
        assert_eq!(o.running, Some(Duration::from_secs(5)));
        assert_eq!(o.pending, Some(Duration::from_millis(500)));
        let bad: Map<String, Value> =
            serde_json::from_value(json!({"sim_outcome": "maybe"})).unwrap();
        assert!(Overrides::from_extra_vars(&bad).is_err());
    }

    #[test]
    fn timestamps_have_microseconds() {
        let clock = Clock::new();
        let s = clock.format(Instant::now());
        assert!(
            s.ends_with('Z') && s.len() == "2026-01-01T00:00:00.000000Z".len(),
            "{s}"
        );
    }
}
