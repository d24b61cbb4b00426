//! Simulator configuration: templates, timing, tokens and faults, from code or a YAML/JSON file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Organization every template belongs to unless configured otherwise (AWX's default one).
pub const DEFAULT_ORGANIZATION: &str = "Default";

/// The AWX version the simulator claims in `GET config/` and the `X-API-Product-Version` header.
/// It matches the `awx.awx` collection shipped with the pinned `ansible` package, so that the
/// collection does not warn about a version mismatch.
pub const DEFAULT_AWX_VERSION: &str = "24.6.1";

/// Whether a template is a job template or a workflow job template.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateKind {
    /// A job template: launches `job`s (`/v2/job_templates/`, `/v2/jobs/`).
    #[default]
    #[serde(alias = "job_template")]
    Job,
    /// A workflow job template: launches `workflow_job`s (`/v2/workflow_job_templates/`,
    /// `/v2/workflow_jobs/`).
    #[serde(alias = "workflow_job_template", alias = "workflow_job")]
    Workflow,
}

impl TemplateKind {
    /// Both kinds, job templates first: the order in which lookups by a shared id try them.
    pub const ALL: [TemplateKind; 2] = [TemplateKind::Job, TemplateKind::Workflow];

    /// The `type` of the template in AWX answers.
    pub fn template_type(self) -> &'static str {
        match self {
            Self::Job => "job_template",
            Self::Workflow => "workflow_job_template",
        }
    }

    /// The collection of templates of this kind (path segment).
    pub fn templates_path(self) -> &'static str {
        match self {
            Self::Job => "job_templates",
            Self::Workflow => "workflow_job_templates",
        }
    }

    /// The `type` of the jobs this kind launches (also the launch answer's id key).
    pub fn job_type(self) -> &'static str {
        match self {
            Self::Job => "job",
            Self::Workflow => "workflow_job",
        }
    }

    /// The collection of the jobs this kind launches (path segment).
    pub fn jobs_path(self) -> &'static str {
        match self {
            Self::Job => "jobs",
            Self::Workflow => "workflow_jobs",
        }
    }
}

/// How a job ends when nothing cancels it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// `successful`.
    #[default]
    Successful,
    /// `failed` (the playbook failed).
    Failed,
    /// `error` (the controller could not run it).
    Error,
}

impl Outcome {
    /// Parses `successful`, `failed` or `error` (also `success`, `succeeded`, `fail`).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "successful" | "success" | "succeeded" => Some(Self::Successful),
            "failed" | "fail" | "failure" => Some(Self::Failed),
            "error" => Some(Self::Error),
            _ => None,
        }
    }
}

/// What a template's playbook does to the `ComputeInstance` in its payload in playbook mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PlaybookAction {
    /// Nothing.
    None,
    /// Adds the `-aap` finalizer when running starts; writes the reconciled-config-version
    /// annotation before succeeding.
    Provision,
    /// Removes the `-aap` finalizer before succeeding.
    Deprovision,
}

impl PlaybookAction {
    /// The action implied by a template name when none is configured: names containing
    /// `deprovision` or `delete` deprovision, names containing `provision` or `create` provision.
    pub fn infer(name: &str) -> Self {
        let n = name.to_ascii_lowercase();
        if n.contains("deprovision") || n.contains("delete") {
            Self::Deprovision
        } else if n.contains("provision") || n.contains("create") {
            Self::Provision
        } else {
            Self::None
        }
    }
}

/// Durations of the phases of a job, in simulated time (see [`SimConfig::time_scale`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phases {
    /// Time spent `pending`.
    #[serde(with = "duration_serde")]
    pub pending: Duration,
    /// Time spent `waiting`.
    #[serde(with = "duration_serde")]
    pub waiting: Duration,
    /// Time spent `running`.
    #[serde(with = "duration_serde")]
    pub running: Duration,
}

impl Default for Phases {
    fn default() -> Self {
        Self {
            pending: Duration::from_millis(500),
            waiting: Duration::from_millis(500),
            running: Duration::from_secs(3),
        }
    }
}

impl Phases {
    /// All three phases.
    pub fn new(pending: Duration, waiting: Duration, running: Duration) -> Self {
        Self {
            pending,
            waiting,
            running,
        }
    }
}

/// One job template or workflow job template.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSpec {
    /// Template name (what clients look up with `?name=`).
    pub name: String,
    /// `job` (default) or `workflow`.
    #[serde(default)]
    pub kind: TemplateKind,
    /// Numeric id; assigned automatically when absent. Job templates and workflow job templates
    /// share one id space, as in AWX.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// Whether the template prompts for variables on launch (default true). When false, launch
    /// `extra_vars` are reported under `ignored_fields` and not applied, like AWX.
    #[serde(default = "default_true", alias = "prompt_variables")]
    pub ask_variables_on_launch: bool,
    /// Organization name (default `Default`).
    #[serde(default = "default_organization")]
    pub organization: String,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Phase durations; the simulator's defaults ([`SimConfig::phases`]) for phases not set.
    #[serde(
        default,
        with = "opt_duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub pending: Option<Duration>,
    /// See `pending`.
    #[serde(
        default,
        with = "opt_duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub waiting: Option<Duration>,
    /// See `pending`.
    #[serde(
        default,
        with = "opt_duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub running: Option<Duration>,
    /// How jobs end unless overridden per job (default `successful`).
    #[serde(default)]
    pub outcome: Outcome,
    /// Playbook-mode action; inferred from the name when absent ([`PlaybookAction::infer`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<PlaybookAction>,
    /// Runner mode: jobs run this playbook with a real `ansible-playbook` instead of following
    /// the simulated phases (which, like the outcome, the action and the per-job overrides, then
    /// do not apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner: Option<RunnerSpec>,
}

/// Runner mode: how a template's jobs run a real `ansible-playbook` (see the crate
/// documentation). Relative paths are resolved against the working directory when the template
/// is added, or against the configuration file's directory when read by [`SimConfig::from_file`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerSpec {
    /// The playbook to run.
    pub playbook: PathBuf,
    /// The `ansible-playbook` program; default `<venv>/bin/ansible-playbook` with the venv of
    /// `hack/python-venv.sh` ([`crate::runner::default_venv`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ansible_playbook: Option<PathBuf>,
    /// The Python interpreter passed as `ansible_python_interpreter`; default the `python` next to
    /// `ansible-playbook` (interpreter discovery can pick a broken pyenv shim), when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
    /// More arguments, placed before the playbook (for example `-v`, or `-i` with an inventory
    /// of your own instead of the generated `localhost` one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// More environment variables (they win over the ones the simulator sets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// A job still running after this long is stopped and fails, like a template's `timeout` in
    /// AWX. Real time: the simulator's time scale does not apply.
    #[serde(
        default,
        with = "opt_duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl RunnerSpec {
    /// Runs `playbook` with the defaults.
    pub fn new(playbook: impl Into<PathBuf>) -> Self {
        Self {
            playbook: playbook.into(),
            ..Self::default()
        }
    }

    /// Sets the `ansible-playbook` program.
    pub fn with_ansible_playbook(mut self, path: impl Into<PathBuf>) -> Self {
        self.ansible_playbook = Some(path.into());
        self
    }

    /// Sets the Python interpreter passed as `ansible_python_interpreter`.
    pub fn with_python(mut self, path: impl Into<PathBuf>) -> Self {
        self.python = Some(path.into());
        self
    }

    /// Adds an argument before the playbook.
    pub fn with_arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Makes the relative paths absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [
            Some(&mut self.playbook),
            self.ansible_playbook.as_mut(),
            self.python.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }
}

impl TemplateSpec {
    /// A job template with default settings.
    pub fn job(name: impl Into<String>) -> Self {
        Self::new(name, TemplateKind::Job)
    }

    /// A workflow job template with default settings.
    pub fn workflow(name: impl Into<String>) -> Self {
        Self::new(name, TemplateKind::Workflow)
    }

    fn new(name: impl Into<String>, kind: TemplateKind) -> Self {
        Self {
            name: name.into(),
            kind,
            id: None,
            ask_variables_on_launch: true,
            organization: DEFAULT_ORGANIZATION.to_owned(),
            description: String::new(),
            pending: None,
            waiting: None,
            running: None,
            outcome: Outcome::Successful,
            action: None,
            runner: None,
        }
    }

    /// Sets the numeric id.
    pub fn with_id(mut self, id: u64) -> Self {
        self.id = Some(id);
        self
    }

    /// Sets whether the template prompts for variables on launch.
    pub fn with_ask_variables(mut self, ask: bool) -> Self {
        self.ask_variables_on_launch = ask;
        self
    }

    /// Sets all three phase durations.
    pub fn with_phases(mut self, phases: Phases) -> Self {
        self.pending = Some(phases.pending);
        self.waiting = Some(phases.waiting);
        self.running = Some(phases.running);
        self
    }

    /// Sets the outcome.
    pub fn with_outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = outcome;
        self
    }

    /// Sets the playbook-mode action.
    pub fn with_action(mut self, action: PlaybookAction) -> Self {
        self.action = Some(action);
        self
    }

    /// Runner mode: jobs run a real `ansible-playbook` (see [`RunnerSpec`]).
    pub fn with_runner(mut self, runner: RunnerSpec) -> Self {
        self.runner = Some(runner);
        self
    }

    /// Sets the organization.
    pub fn with_organization(mut self, organization: impl Into<String>) -> Self {
        self.organization = organization.into();
        self
    }

    /// Checks the runner settings that can be checked without running anything.
    pub(crate) fn validate_runner(&self) -> Result<()> {
        if let Some(r) = &self.runner
            && r.playbook.as_os_str().is_empty()
        {
            return Err(Error::Config(format!(
                "template {:?}: the runner has an empty playbook path",
                self.name
            )));
        }
        Ok(())
    }

    /// The configured action, or the one inferred from the name.
    pub fn effective_action(&self) -> PlaybookAction {
        self.action
            .unwrap_or_else(|| PlaybookAction::infer(&self.name))
    }
}

/// Faults the simulator injects into `/api/...` requests. The admin API (`/_sim/...`) is never
/// affected. Changeable at runtime ([`crate::Simulator::set_faults`], `PUT /_sim/faults`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction (0..=1) of requests answered with `error_status` instead of being served.
    pub error_rate: f64,
    /// The 5xx status of injected errors (default 500).
    pub error_status: u16,
    /// Latency added to every request.
    #[serde(with = "duration_serde")]
    pub latency: Duration,
    /// Up to this much more latency, uniformly distributed.
    #[serde(with = "duration_serde")]
    pub latency_jitter: Duration,
    /// Fraction (0..=1) of requests whose connection is reset (TCP RST, no answer).
    pub drop_rate: f64,
    /// Fraction (0..=1) of requests that are carried out but whose answer is lost: the
    /// connection stays silent for `stall` (the client's timeout ends the wait), then is reset.
    /// A launch with a lost answer has started its job.
    pub stall_rate: f64,
    /// How long a request with a lost answer keeps its connection silent.
    #[serde(with = "duration_serde")]
    pub stall: Duration,
    /// Jobs are purged (then 404) this long (real time) after they finish; `null` = never.
    #[serde(with = "opt_duration_serde")]
    pub purge_after: Option<Duration>,
    /// While true every `/api/...` request is refused with 401 (a revoked or expired token).
    pub unauthorized: bool,
    /// When set, error, latency, drop and stall faults apply only to paths containing this text
    /// (for example `/launch/`).
    pub path_contains: Option<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            error_rate: 0.0,
            error_status: 500,
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            drop_rate: 0.0,
            stall_rate: 0.0,
            stall: Duration::from_secs(60),
            purge_after: None,
            unauthorized: false,
            path_contains: None,
        }
    }
}

impl Faults {
    /// Checks rates and the error status.
    pub fn validate(&self) -> Result<()> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("drop_rate", self.drop_rate),
            ("stall_rate", self.stall_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(Error::Config(format!(
                    "{name} must be between 0 and 1, got {rate}"
                )));
            }
        }
        if !(500..=599).contains(&self.error_status) {
            return Err(Error::Config(format!(
                "error_status must be a 5xx status, got {}",
                self.error_status
            )));
        }
        Ok(())
    }
}

/// The whole simulator configuration. Every field has a default, so a file may hold only
/// `templates:`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// The templates.
    pub templates: Vec<TemplateSpec>,
    /// Accepted Bearer tokens. Empty = no authentication required.
    pub tokens: Vec<String>,
    /// Real seconds per simulated second for job phases and the cancel delay: 1.0 = real time,
    /// 0.001 = fast mode (a configured second passes in a millisecond).
    pub time_scale: f64,
    /// Phase durations of templates that do not set their own.
    pub phases: Phases,
    /// Simulated time from an accepted cancel to the job being `canceled`.
    #[serde(with = "duration_serde")]
    pub cancel_delay: Duration,
    /// Initial faults.
    pub faults: Faults,
    /// Seed of the random generator behind faults (random when absent).
    pub seed: Option<u64>,
    /// Entries kept in the request log (oldest dropped first).
    pub request_log_capacity: usize,
    /// Period of the background ticker that runs playbook side effects and purges jobs.
    #[serde(with = "duration_serde")]
    pub tick: Duration,
    /// AWX version reported by `GET config/` and response headers.
    pub awx_version: String,
    /// Runner mode: at most this many `ansible-playbook` processes at once; further jobs stay
    /// `pending` until one ends.
    pub runner_concurrency: usize,
    /// Runner mode: how long a canceled job's process has after SIGINT before it is killed.
    #[serde(with = "duration_serde")]
    pub runner_cancel_grace: Duration,
}

/// Default of [`SimConfig::runner_concurrency`].
pub const DEFAULT_RUNNER_CONCURRENCY: usize = 4;

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            templates: Vec::new(),
            tokens: Vec::new(),
            time_scale: 1.0,
            phases: Phases::default(),
            cancel_delay: Duration::from_millis(200),
            faults: Faults::default(),
            seed: None,
            request_log_capacity: 10_000,
            tick: Duration::from_millis(20),
            awx_version: DEFAULT_AWX_VERSION.to_owned(),
            runner_concurrency: DEFAULT_RUNNER_CONCURRENCY,
            runner_cancel_grace: Duration::from_secs(2),
        }
    }
}

/// The time scale of fast mode: configured seconds pass as milliseconds.
pub const FAST_TIME_SCALE: f64 = 0.001;

impl SimConfig {
    /// Parses YAML (or JSON, which is YAML too).
    pub fn from_yaml_str(text: &str) -> Result<Self> {
        let config: Self =
            serde_saphyr::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a YAML or JSON file. Relative runner paths are taken relative to the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))?;
        let mut config = Self::from_yaml_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_owned());
        for t in &mut config.templates {
            if let Some(r) = &mut t.runner {
                r.resolve_paths(&base);
            }
        }
        Ok(config)
    }

    /// Checks the configuration for contradictions.
    pub fn validate(&self) -> Result<()> {
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err(Error::Config(format!(
                "time_scale must be a positive number, got {}",
                self.time_scale
            )));
        }
        if self.tick.is_zero() {
            return Err(Error::Config("tick must be positive".to_owned()));
        }
        if self.runner_concurrency == 0 {
            return Err(Error::Config(
                "runner_concurrency must be at least 1".to_owned(),
            ));
        }
        self.faults.validate()?;
        let mut ids = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for t in &self.templates {
            if t.name.is_empty() {
                return Err(Error::Config("a template has an empty name".to_owned()));
            }
            if !names.insert((t.kind, t.name.as_str())) {
                return Err(Error::Config(format!(
                    "two {} templates are named {:?}",
                    t.kind.template_type(),
                    t.name
                )));
            }
            t.validate_runner()?;
            if let Some(id) = t.id
                && (id == 0 || !ids.insert(id))
            {
                return Err(Error::Config(format!(
                    "template id {id} is zero or used twice"
                )));
            }
        }
        Ok(())
    }
}

fn default_true() -> bool {
    true
}

fn default_organization() -> String {
    DEFAULT_ORGANIZATION.to_owned()
}

/// Parses durations such as `250ms`, `1.5s`, `2m`, `1m30s`, `1h`: the operator's Go syntax
/// ([`cloudkit_provider::settings::parse_go_duration`]), plus a bare number of seconds.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let s = text.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| format!("invalid duration {text:?}"));
    }
    cloudkit_provider::settings::parse_go_duration(s).map_err(|e| e.to_string())
}

pub(crate) fn secs_to_duration(secs: f64) -> Option<Duration> {
    if (0.0..1e12).contains(&secs) {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// Formats a duration the way [`parse_duration`] reads it back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms.fract() == 0.0 && ms >= 1000.0 && (ms / 1000.0).fract() == 0.0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{ms}ms")
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationRepr {
    Number(f64),
    Text(String),
}

impl DurationRepr {
    fn into_duration<E: serde::de::Error>(self) -> std::result::Result<Duration, E> {
        match self {
            Self::Number(n) => {
                secs_to_duration(n).ok_or_else(|| E::custom(format!("invalid duration {n}")))
            }
            Self::Text(t) => parse_duration(&t).map_err(E::custom),
        }
    }
}

mod duration_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        d: &Duration,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Duration, D::Error> {
        DurationRepr::deserialize(d)?.into_duration()
    }
}

mod opt_duration_serde {
    use super::*;

    pub fn serialize<S: serde::Serializer>(
        d: &Option<Duration>,
        s: S,
    ) -> std::result::Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<Option<Duration>, D::Error> {
        Option::<DurationRepr>::deserialize(d)?
            .map(DurationRepr::into_duration)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_format() {
        let rows = [
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("2", Duration::from_secs(2)),
            ("0.25", Duration::from_millis(250)),
            ("1m30s", Duration::from_secs(90)),
            ("1h", Duration::from_secs(3600)),
        ];
        for (text, want) in rows {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
            assert_eq!(parse_duration(&format_duration(want)), Ok(want), "{text}");
        }
        for bad in ["", "1x", "ms", "-1", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_file_with_defaults() {
        let config = SimConfig::from_yaml_str(
            r#"
templates:
  - name: provision_vm
    id: 7
    running: 2s
    outcome: failed
  - name: deprovision_vm
    kind: workflow
    ask_variables_on_launch: false
    pending: 100ms
tokens: [secret]
time_scale: 0.001
faults:
  error_rate: 0.5
  purge_after: 10s
"#,
        )
        .unwrap();
        assert_eq!(config.templates.len(), 2);
        let t = &config.templates[0];
        assert_eq!(
            (t.id, t.kind, t.outcome),
            (Some(7), TemplateKind::Job, Outcome::Failed)
        );
        assert_eq!(t.running, Some(Duration::from_secs(2)));
        assert_eq!(t.effective_action(), PlaybookAction::Provision);
        let w = &config.templates[1];
        assert_eq!(w.kind, TemplateKind::Workflow);
        assert!(!w.ask_variables_on_launch);
        assert_eq!(w.effective_action(), PlaybookAction::Deprovision);
        assert_eq!(config.faults.purge_after, Some(Duration::from_secs(10)));
        assert_eq!(config.faults.error_status, 500);
        assert_eq!(config.tokens, ["secret"]);
    }

    #[test]
    fn example_file_is_valid() {
        let config = SimConfig::from_yaml_str(include_str!("../examples/simulator.yaml")).unwrap();
        assert_eq!(config.templates.len(), 3);
        assert_eq!(config.templates[2].effective_action(), PlaybookAction::None);
        assert_eq!(config.faults.error_status, 503);
    }

    #[test]
    fn runner_templates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sim.yaml");
        std::fs::write(
            &file,
            r#"
runner_concurrency: 2
runner_cancel_grace: 500ms
templates:
  - name: provision_vm
    runner:
      playbook: playbooks/provision.yml
      ansible_playbook: /opt/venv/bin/ansible-playbook
      extra_args: [-v]
      env: {FOO: bar}
      timeout: 10m
"#,
        )
        .unwrap();
        let config = SimConfig::from_file(&file).unwrap();
        assert_eq!(config.runner_concurrency, 2);
        assert_eq!(config.runner_cancel_grace, Duration::from_millis(500));
        let r = config.templates[0].runner.as_ref().unwrap();
        // Relative to the file; absolute paths stay.
        assert_eq!(
            r.playbook,
            std::path::absolute(dir.path())
                .unwrap()
                .join("playbooks/provision.yml")
        );
        assert_eq!(
            r.ansible_playbook.as_deref(),
            Some(Path::new("/opt/venv/bin/ansible-playbook"))
        );
        assert_eq!(r.python, None);
        assert_eq!(r.extra_args, ["-v"]);
        assert_eq!(r.env["FOO"], "bar");
        assert_eq!(r.timeout, Some(Duration::from_secs(600)));
        assert_eq!(SimConfig::default().runner_concurrency, 4);
        for bad in [
            "runner_concurrency: 0",
            "templates: [{name: a, runner: {playbook: ''}}]",
            "templates: [{name: a, runner: {playbook: a.yml, colour: red}}]",
        ] {
            assert!(SimConfig::from_yaml_str(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_json_round_trip() {
        let config = SimConfig {
            templates: vec![
                TemplateSpec::job("a").with_id(3),
                TemplateSpec::job("b").with_runner(
                    RunnerSpec::new("/p.yml")
                        .with_arg("-v")
                        .with_env("A", "1")
                        .with_timeout(Duration::from_secs(5)),
                ),
            ],
            ..SimConfig::default()
        };
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(SimConfig::from_yaml_str(&json).unwrap(), config);
    }

    #[test]
    fn invalid_configs() {
        for bad in [
            "time_scale: 0",
            "faults: {error_rate: 2}",
            "faults: {error_status: 404}",
            "templates: [{name: a, id: 1}, {name: b, id: 1}]",
            "templates: [{name: a}, {name: a}]",
            "templates: [{name: a, colour: red}]",
        ] {
            assert!(SimConfig::from_yaml_str(bad).is_err(), "{bad}");
        }
    }
}
