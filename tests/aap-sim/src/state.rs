//! The simulator's state: templates, jobs, counters, the request log and the faults.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::config::{
    Faults, Outcome, Phases, PlaybookAction, SimConfig, TemplateKind, TemplateSpec,
};
use crate::error::{Error, Result};
use crate::jobs::{AwxStatus, Clock, Effects, Job, Overrides};
use crate::playbook::{self, Step, Target};
use crate::runner::{self, RunState, Runners};

/// Extra var the operator puts in every launch to find a lost launch again; counted per value.
pub const LAUNCH_KEY_VAR: &str = "cloudkit_launch_key";

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An HTTP error answer: status and JSON body.
pub(crate) type ApiError = (u16, Value);

pub(crate) fn not_found() -> ApiError {
    (404, json!({"detail": "Not found."}))
}

/// A configured template with its resolved id.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    pub id: u64,
    pub spec: TemplateSpec,
    pub created: Instant,
}

/// One entry of the request log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Query string, if any.
    pub query: Option<String>,
    /// Answer status; 0 when the connection was reset instead.
    pub status: u16,
    /// When the request arrived (RFC 3339 UTC).
    pub timestamp: String,
    /// Time to answer, including injected latency.
    pub duration_ms: f64,
    /// The injected fault, if any: `error`, `reset` or `unauthorized`.
    pub fault: Option<String>,
}

/// Counters, as served at `GET /_sim/stats`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Accepted launches.
    pub launches: u64,
    /// Accepted launches per template name.
    pub launches_by_template: BTreeMap<String, u64>,
    /// Accepted launches per value of the `cloudkit_launch_key` extra var.
    pub launches_by_key: BTreeMap<String, u64>,
    /// Accepted cancel requests.
    pub cancels: u64,
    /// Jobs currently known (purged ones excluded), by status.
    pub jobs_by_status: BTreeMap<String, u64>,
    /// Jobs purged so far.
    pub purged: u64,
    /// `/api/...` requests received.
    pub requests: u64,
    /// Injected 5xx answers.
    pub injected_errors: u64,
    /// Reset connections.
    pub injected_resets: u64,
    /// Requests served whose answer was withheld (`stall_rate`).
    pub injected_stalls: u64,
    /// Requests refused during an unauthorized period.
    pub injected_unauthorized: u64,
    /// Playbook side effects that failed.
    pub playbook_failures: u64,
    /// Runner mode: `ansible-playbook` processes started so far.
    pub runner_processes: u64,
    /// Runner mode: processes running now.
    pub runner_running: u64,
    /// Runner mode: the most processes that ran at once.
    pub runner_peak_running: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub templates: BTreeMap<u64, Template>,
    pub jobs: BTreeMap<u64, Job>,
    pub next_job_id: u64,
    pub effects_active: BTreeSet<u64>,
    pub stats: Stats,
}

#[derive(Debug)]
pub(crate) struct FaultState {
    pub faults: Faults,
    pub rng: StdRng,
}

/// What the fault injector decided for one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct FaultDecision {
    pub unauthorized: bool,
    pub reset: bool,
    /// Serve the request, then withhold the answer for this long and reset the connection.
    pub stall: Option<Duration>,
    pub error: Option<u16>,
    pub latency: Duration,
}

#[derive(Debug)]
pub(crate) struct RequestLog {
    pub entries: VecDeque<RequestRecord>,
    pub capacity: usize,
}

/// Everything the HTTP handlers and the ticker share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub clock: Clock,
    pub tokens: Vec<String>,
    pub time_scale: f64,
    pub default_phases: Phases,
    pub cancel_delay: Duration,
    pub tick: Duration,
    pub awx_version: String,
    pub inner: Mutex<Inner>,
    pub faults: Mutex<FaultState>,
    pub log: Mutex<RequestLog>,
    pub kube: Option<playbook::KubeClient>,
    pub runners: Arc<Runners>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The last handle is gone: no runner process may outlive it.
        self.runners.kill_all();
    }
}

impl Shared {
    pub(crate) fn new(
        config: SimConfig,
        kube: Option<playbook::KubeClient>,
        kubeconfig: Option<PathBuf>,
    ) -> Result<Self> {
        config.validate()?;
        let seed = config.seed.unwrap_or_else(|| rand::rng().random());
        let shared = Self {
            clock: Clock::new(),
            tokens: config.tokens,
            time_scale: config.time_scale,
            default_phases: config.phases,
            cancel_delay: config.cancel_delay.mul_f64(config.time_scale),
            tick: config.tick,
            awx_version: config.awx_version,
            inner: Mutex::new(Inner {
                next_job_id: 1,
                ..Inner::default()
            }),
            faults: Mutex::new(FaultState {
                faults: config.faults,
                rng: StdRng::seed_from_u64(seed),
            }),
            log: Mutex::new(RequestLog {
                entries: VecDeque::new(),
                capacity: config.request_log_capacity,
            }),
            kube,
            runners: Arc::new(Runners::new(
                config.runner_concurrency,
                config.runner_cancel_grace,
                kubeconfig,
            )),
        };
        for t in config.templates {
            shared.add_template(t)?;
        }
        Ok(shared)
    }

    pub(crate) fn add_template(&self, mut spec: TemplateSpec) -> Result<u64> {
        if spec.name.is_empty() {
            return Err(Error::Config("a template has an empty name".to_owned()));
        }
        spec.validate_runner()?;
        if let Some(r) = &mut spec.runner {
            let cwd = std::env::current_dir()
                .map_err(|e| Error::io("reading the working directory", e))?;
            r.resolve_paths(&cwd);
        }
        let mut inner = lock(&self.inner);
        if inner
            .templates
            .values()
            .any(|t| t.spec.kind == spec.kind && t.spec.name == spec.name)
        {
            return Err(Error::Config(format!(
                "a {} named {:?} exists already",
                spec.kind.template_type(),
                spec.name
            )));
        }
        let id = match spec.id {
            Some(0) => return Err(Error::Config("template id 0 is invalid".to_owned())),
            Some(id) if inner.templates.contains_key(&id) => {
                return Err(Error::Config(format!("template id {id} is in use")));
            }
            Some(id) => id,
            None => inner.templates.keys().next_back().map_or(1, |k| k + 1),
        };
        inner.templates.insert(
            id,
            Template {
                id,
                spec: TemplateSpec {
                    id: Some(id),
                    ..spec
                },
                created: Instant::now(),
            },
        );
        Ok(id)
    }

    pub(crate) fn template_specs(&self) -> Vec<TemplateSpec> {
        lock(&self.inner)
            .templates
            .values()
            .map(|t| t.spec.clone())
            .collect()
    }

    fn scale(&self, d: Duration) -> Duration {
        d.mul_f64(self.time_scale)
    }

    pub(crate) fn purge_after(&self) -> Option<Duration> {
        lock(&self.faults).faults.purge_after
    }

    /// Decides the faults of one `/api/...` request.
    pub(crate) fn decide_faults(&self, path: &str) -> FaultDecision {
        let mut st = lock(&self.faults);
        let FaultState { faults, rng } = &mut *st;
        let mut d = FaultDecision {
            unauthorized: faults.unauthorized,
            ..FaultDecision::default()
        };
        let applies = faults
            .path_contains
            .as_deref()
            .is_none_or(|p| path.contains(p));
        if !applies {
            return d;
        }
        d.latency = faults.latency;
        if !faults.latency_jitter.is_zero() {
            d.latency += faults.latency_jitter.mul_f64(rng.random::<f64>());
        }
        if faults.drop_rate > 0.0 && rng.random::<f64>() < faults.drop_rate {
            d.reset = true;
        }
        if faults.stall_rate > 0.0 && rng.random::<f64>() < faults.stall_rate {
            d.stall = Some(faults.stall);
        }
        if faults.error_rate > 0.0 && rng.random::<f64>() < faults.error_rate {
            d.error = Some(faults.error_status);
        }
        d
    }

    pub(crate) fn record(&self, record: RequestRecord) {
        {
            let mut inner = lock(&self.inner);
            let s = &mut inner.stats;
            s.requests += 1;
            match record.fault.as_deref() {
                Some("error") => s.injected_errors += 1,
                Some("reset") => s.injected_resets += 1,
                Some("stall") => s.injected_stalls += 1,
                Some("unauthorized") => s.injected_unauthorized += 1,
                _ => {}
            }
        }
        let mut log = lock(&self.log);
        if log.capacity == 0 {
            return;
        }
        while log.entries.len() >= log.capacity {
            log.entries.pop_front();
        }
        log.entries.push_back(record);
    }

    pub(crate) fn stats(&self) -> Stats {
        let now = Instant::now();
        let purge_after = self.purge_after();
        let mut inner = lock(&self.inner);
        let mut by_status = BTreeMap::new();
        for job in inner.jobs.values_mut() {
            job.advance(now);
            if !job.purged(now, purge_after) {
                *by_status.entry(job.status.as_str().to_owned()).or_insert(0) += 1;
            }
        }
        let mut stats = inner.stats.clone();
        stats.jobs_by_status = by_status;
        stats
    }

    /// Launches a template. `body` is the POSTed JSON object.
    pub(crate) fn launch(
        self: &Arc<Self>,
        kind: TemplateKind,
        template_id: u64,
        body: &Map<String, Value>,
        prefix: &str,
    ) -> std::result::Result<Value, ApiError> {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        let template = inner
            .templates
            .get(&template_id)
            .filter(|t| t.spec.kind == kind)
            .cloned()
            .ok_or_else(not_found)?;
        let spec = &template.spec;

        let requested_vars = match body.get("extra_vars") {
            None | Some(Value::Null) => Map::new(),
            Some(v) => parse_extra_vars(v).map_err(|msg| (400, json!({"extra_vars": [msg]})))?,
        };
        let mut ignored = Map::new();
        let applied = if spec.ask_variables_on_launch || requested_vars.is_empty() {
            requested_vars.clone()
        } else {
            ignored.insert("extra_vars".into(), Value::Object(requested_vars.clone()));
            Map::new()
        };
        // No other field prompts on launch.
        for (k, v) in body {
            if PROMPT_FIELDS.contains(&k.as_str()) {
                ignored.insert(k.clone(), v.clone());
            }
        }
        // Runner jobs follow their process; the overrides are only variables to them.
        let overrides = if spec.runner.is_some() {
            Overrides::default()
        } else {
            Overrides::from_extra_vars(&applied)
                .map_err(|msg| (400, json!({"extra_vars": [msg]})))?
        };
        let runtime = match &spec.runner {
            Some(_) => Some(tokio::runtime::Handle::try_current().map_err(|_| {
                (
                    500,
                    json!({"detail": "runner mode needs a tokio runtime to start processes"}),
                )
            })?),
            None => None,
        };

        let base = Phases {
            pending: spec.pending.unwrap_or(self.default_phases.pending),
            waiting: spec.waiting.unwrap_or(self.default_phases.waiting),
            running: spec.running.unwrap_or(self.default_phases.running),
        };
        let phases = Phases {
            pending: self.scale(overrides.pending.unwrap_or(base.pending)),
            waiting: self.scale(overrides.waiting.unwrap_or(base.waiting)),
            running: self.scale(overrides.running.unwrap_or(base.running)),
        };
        let outcome = overrides.outcome.unwrap_or(spec.outcome);
        let action = spec.effective_action();
        let effects = match (&self.kube, action) {
            _ if spec.runner.is_some() => None,
            (Some(_), PlaybookAction::Provision | PlaybookAction::Deprovision) => {
                Some(Effects::new(
                    Target::from_extra_vars(&applied),
                    action == PlaybookAction::Provision,
                ))
            }
            _ => None,
        };

        let id = inner.next_job_id;
        inner.next_job_id += 1;
        let job = Job {
            id,
            kind,
            template_id,
            template_name: spec.name.clone(),
            organization: spec.organization.clone(),
            extra_vars: applied,
            created: now,
            status: AwxStatus::Pending,
            phase_since: now,
            started: None,
            finished: None,
            phases,
            outcome,
            cancel_at: None,
            traceback: String::new(),
            explanation: String::new(),
            failure_message: overrides.message.filter(|_| outcome != Outcome::Successful),
            effects,
            runner: spec.runner.as_ref().map(RunState::new),
        };
        if job.effects.is_some() {
            inner.effects_active.insert(id);
        }
        // Queued under the lock: jobs get slots in the order of their ids.
        let run = match (&spec.runner, &job.runner) {
            (Some(r), Some(state)) => Some(runner::Launch {
                job: id,
                template_id,
                template_name: spec.name.clone(),
                spec: r.clone(),
                vars: job.extra_vars.clone(),
                cancel: Arc::clone(&state.cancel),
                output: Arc::clone(&state.output),
                ticket: self.runners.enqueue(id),
            }),
            _ => None,
        };
        let mut answer = job.render(prefix, &self.clock);
        inner.jobs.insert(id, job);

        let stats = &mut inner.stats;
        stats.launches += 1;
        *stats
            .launches_by_template
            .entry(spec.name.clone())
            .or_insert(0) += 1;
        if let Some(key) = requested_vars.get(LAUNCH_KEY_VAR).and_then(Value::as_str) {
            *stats.launches_by_key.entry(key.to_owned()).or_insert(0) += 1;
        }
        drop(inner);
        tracing::debug!(job = id, template = %template.spec.name, "launched");
        if let (Some(run), Some(runtime)) = (run, runtime) {
            runtime.spawn(runner::run(
                Arc::downgrade(self),
                Arc::clone(&self.runners),
                run,
            ));
        }

        if let Some(obj) = answer.as_object_mut() {
            obj.insert(kind.job_type().into(), json!(id));
            obj.insert("ignored_fields".into(), Value::Object(ignored));
        }
        Ok(answer)
    }

    /// Runs `f` on job `id` of `kind`, advanced to now; 404 when unknown or purged.
    pub(crate) fn with_job<R>(
        &self,
        kind: TemplateKind,
        id: u64,
        f: impl FnOnce(&mut Job, &Shared, Instant) -> R,
    ) -> std::result::Result<R, ApiError> {
        let now = Instant::now();
        let purge_after = self.purge_after();
        let mut inner = lock(&self.inner);
        let job = inner
            .jobs
            .get_mut(&id)
            .filter(|j| j.kind == kind)
            .ok_or_else(not_found)?;
        job.advance(now);
        if job.purged(now, purge_after) {
            inner.jobs.remove(&id);
            inner.effects_active.remove(&id);
            inner.stats.purged += 1;
            return Err(not_found());
        }
        Ok(f(job, self, now))
    }

    /// Accepts a cancel request: `Ok(true)` = 202, `Ok(false)` = 405.
    pub(crate) fn cancel(
        &self,
        kind: TemplateKind,
        id: u64,
    ) -> std::result::Result<(bool, AwxStatus), ApiError> {
        let res = self.with_job(kind, id, |job, sim, now| {
            if job.can_cancel() {
                job.request_cancel(now, sim.cancel_delay);
                job.advance(now);
                (true, job.status)
            } else {
                (false, job.status)
            }
        })?;
        if res.0 {
            lock(&self.inner).stats.cancels += 1;
        }
        Ok(res)
    }

    /// One pass of the background ticker: start due side effects and purge old jobs.
    pub(crate) fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let purge_after = self.purge_after();
        let mut due = Vec::new();
        {
            let mut inner = lock(&self.inner);
            let active: Vec<u64> = inner.effects_active.iter().copied().collect();
            for id in active {
                let Some(job) = inner.jobs.get_mut(&id) else {
                    inner.effects_active.remove(&id);
                    continue;
                };
                job.advance(now);
                if job.status.is_terminal() {
                    inner.effects_active.remove(&id);
                    continue;
                }
                if let Some((step, target)) = job.due_effect(now) {
                    due.push((id, step, target));
                }
            }
            if purge_after.is_some() {
                let before = inner.jobs.len();
                inner.jobs.retain(|_, j| {
                    j.advance(now);
                    !j.purged(now, purge_after)
                });
                let purged = (before - inner.jobs.len()) as u64;
                inner.stats.purged += purged;
            }
        }
        for (id, step, target) in due {
            let sim = Arc::clone(self);
            tokio::spawn(async move {
                let result = match (&sim.kube, target) {
                    (Some(client), Ok(target)) => {
                        playbook::run(client.0.clone(), &target, step).await
                    }
                    (None, _) => Err("no Kubernetes client".to_owned()),
                    (_, Err(e)) => Err(e),
                };
                sim.effect_done(id, step, result);
            });
        }
    }

    fn effect_done(&self, id: u64, step: Step, result: std::result::Result<(), String>) {
        if let Err(e) = &result {
            tracing::warn!(job = id, step = step.describe(), error = %e, "playbook side effect failed");
        } else {
            tracing::debug!(
                job = id,
                step = step.describe(),
                "playbook side effect done"
            );
        }
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        if result.is_err() {
            inner.stats.playbook_failures += 1;
        }
        if let Some(job) = inner.jobs.get_mut(&id) {
            job.effect_done(step, result, now);
        }
    }
}

/// Launch fields AWX accepts only when the template prompts for them; none of ours does.
const PROMPT_FIELDS: &[&str] = &[
    "inventory",
    "credentials",
    "credential",
    "limit",
    "job_type",
    "job_tags",
    "skip_tags",
    "verbosity",
    "diff_mode",
    "scm_branch",
    "labels",
    "forks",
    "timeout",
    "job_slice_count",
    "execution_environment",
    "instance_groups",
];

/// `extra_vars` may be an object or a JSON/YAML text of one, as in AWX.
fn parse_extra_vars(v: &Value) -> std::result::Result<Map<String, Value>, String> {
    const MSG: &str = "Must be a valid JSON or YAML dictionary.";
    match v {
        Value::Object(m) => Ok(m.clone()),
        Value::String(s) if s.trim().is_empty() || s.trim() == "---" => Ok(Map::new()),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(MSG.to_owned()),
            Err(_) => match serde_saphyr::from_str::<Value>(s) {
                Ok(Value::Object(m)) => Ok(m),
                _ => Err(MSG.to_owned()),
            },
        },
        _ => Err(MSG.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_vars_forms() {
        assert_eq!(parse_extra_vars(&json!({"a": 1})).unwrap()["a"], 1);
        assert_eq!(parse_extra_vars(&json!("{\"a\": 2}")).unwrap()["a"], 2);
        assert_eq!(parse_extra_vars(&json!("a: 3\n")).unwrap()["a"], 3);
        assert!(parse_extra_vars(&json!("---")).unwrap().is_empty());
        assert!(parse_extra_vars(&json!([1])).is_err());
        assert!(parse_extra_vars(&json!("[1]")).is_err());
    }

    #[test]
    fn seeded_faults_are_reproducible() {
        let config = |seed| SimConfig {
            seed: Some(seed),
            faults: Faults {
                error_rate: 0.5,
                drop_rate: 0.2,
                ..Faults::default()
            },
            ..SimConfig::default()
        };
        let decisions = |seed| {
            let sim = Shared::new(config(seed), None, None).unwrap();
            (0..64)
                .map(|_| sim.decide_faults("/api/v2/jobs/"))
                .collect::<Vec<_>>()
        };
        assert_eq!(decisions(7), decisions(7));
        assert_ne!(decisions(7), decisions(8));
        let errors = decisions(7).iter().filter(|d| d.error.is_some()).count();
        assert!((16..=48).contains(&errors), "{errors}");
    }

    #[test]
    fn template_ids_are_assigned_and_unique() {
        let sim = Shared::new(SimConfig::default(), None, None).unwrap();
        assert_eq!(
            sim.add_template(TemplateSpec::job("a").with_id(5)).unwrap(),
            5
        );
        assert_eq!(sim.add_template(TemplateSpec::workflow("a")).unwrap(), 6);
        assert!(sim.add_template(TemplateSpec::job("a")).is_err());
        assert!(sim.add_template(TemplateSpec::job("b").with_id(6)).is_err());
    }
}
