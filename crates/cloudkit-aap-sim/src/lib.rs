//! An AWX-compatible automation controller API simulator for tests and demos.
//!
//! AWX cannot run on the test machines, so this crate serves the part of the controller REST API
//! that the operator's AAP client, ansible-rulebook's `run_job_template` and the `awx.awx`
//! collection use, with jobs that move through `pending -> waiting -> running -> terminal` on a
//! clock, faults to inject, a request log and, optionally, the side effects of the production
//! playbooks on a real Kubernetes API server.
//!
//! ```no_run
//! use cloudkit_aap_sim::{Phases, Simulator, TemplateSpec};
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), cloudkit_aap_sim::Error> {
//! let handle = Simulator::builder()
//!     .token("secret")
//!     .fast() // configured seconds pass as milliseconds
//!     .template(TemplateSpec::job("provision_vm").with_id(7))
//!     .template(TemplateSpec::workflow("deprovision_vm").with_phases(Phases::new(
//!         Duration::from_secs(1), Duration::from_secs(1), Duration::from_secs(5))))
//!     .spawn("127.0.0.1:0".parse().unwrap())
//!     .await?;
//! // The operator's CLOUDKIT_AAP_URL:
//! let aap_url = handle.api_url(); // http://127.0.0.1:PORT/api
//! # let _ = aap_url;
//! let stats = handle.simulator().stats();
//! assert_eq!(stats.launches, 0);
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Routes
//! Under both `/api/v2/` and `/api/controller/v2/` (`GET` unless noted):
//! `config/`, `ping/`, `me/`, `organizations/`, `job_templates/`, `workflow_job_templates/`,
//! `unified_job_templates/` (filters `name`, `name__icontains`, `id`, `or__id`/`or__name`,
//! `organization`, `type`), `job_templates/<id>/`, `workflow_job_templates/<id>/`, `GET` and
//! `POST` `job_templates/<id>/launch/` and `workflow_job_templates/<id>/launch/`,
//! `job_templates/<id>/jobs/`, `workflow_job_templates/<id>/workflow_jobs/`, `jobs/`,
//! `workflow_jobs/`, `unified_jobs/` (filters `id`, `id__in`, `status`, `status__in`, `name`,
//! `job_template`, `workflow_job_template`, `labels__name`; `order_by=-id`), `jobs/<id>/`,
//! `workflow_jobs/<id>/`, `GET` and `POST` `jobs/<id>/cancel/` and `workflow_jobs/<id>/cancel/`,
//! `jobs/<id>/stdout/?format=txt|json`. Also `/api/` and `/api/controller/` (API roots).
//! Lists are pages `{count, next, previous, results}` with relative `next`/`previous`, `page` and
//! `page_size` (default 25, at most 200). Unknown ids answer 404 `{"detail": "Not found."}`.
//! With tokens configured, every request but the roots and `ping/` needs
//! `Authorization: Bearer <token>` (else 401 with a `detail`).
//!
//! Admin API (no authentication, no faults, not logged): `GET /_sim/health`,
//! `GET|DELETE /_sim/requests`, `GET /_sim/stats`, `GET|PUT|POST /_sim/faults` (the posted fields
//! are merged into the current [`Faults`]), `GET|POST /_sim/templates` (a [`TemplateSpec`]).
//!
//! # Per-job overrides
//! A launch may change how its job behaves with these variables (in simulated seconds, scaled like
//! the template durations):
//! `sim_outcome` (`successful`, `failed`, `error`), `sim_pending_seconds`, `sim_waiting_seconds`,
//! `sim_running_seconds`, `sim_message` (the `result_traceback` of a failed job). They are read
//! from the *applied* extra vars (so not when the template ignores variables): a top-level extra
//! var wins; otherwise the same key in the JSON object text of the payload's
//! `spec.templateParameters` (`extra_vars.ansible_eda.event.payload.spec.templateParameters`)
//! applies. The second form lets a test steer one `ComputeInstance`'s jobs through its spec
//! while the operator sends its usual launch body.
//!
//! # Playbook mode
//! With a Kubernetes client ([`SimulatorBuilder::kube_client`] or
//! [`SimulatorBuilder::kubeconfig`]), jobs of templates whose action is provision or deprovision
//! ([`PlaybookAction`], inferred from the name) act on the `ComputeInstance` named by the
//! payload's `metadata`: a provision job adds the `cloudkit.openshift.io/computeinstance-aap`
//! finalizer once running and, before it succeeds, writes annotation
//! `cloudkit.openshift.io/reconciled-config-version` with the payload's
//! `status.desiredConfigVersion`; a deprovision job removes the finalizer before it succeeds. A
//! job does not report its terminal status before its side effects are done; a failed side effect
//! fails the job with the error in `result_traceback`.
//!
//! # Runner mode
//! A template with a [`RunnerSpec`] ([`TemplateSpec::with_runner`], `runner:` in the
//! configuration file, `aap-sim --runner NAME=PLAYBOOK`) runs its playbook with a real
//! `ansible-playbook` for every job instead of following simulated phases:
//!
//! ```no_run
//! # use cloudkit_aap_sim::{RunnerSpec, Simulator, TemplateSpec};
//! # async fn example() -> Result<(), cloudkit_aap_sim::Error> {
//! let handle = Simulator::builder()
//!     .kubeconfig("/tmp/kubeconfig") // the playbook's K8S_AUTH_KUBECONFIG
//!     .runner_concurrency(2)
//!     .template(TemplateSpec::job("provision_vm").with_runner(
//!         RunnerSpec::new("examples/automation/provision.yml").with_arg("-v"),
//!     ))
//!     .spawn("127.0.0.1:0".parse().unwrap())
//!     .await?;
//! # handle.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! - **Command**: `ansible-playbook -i <dir>/inventory -e {"ansible_python_interpreter": ...}
//!   -e @<dir>/extra_vars.json <extra_args> <playbook>`, run in a temporary directory of the
//!   job's own (removed before the job reports its end). The vars file holds the *applied*
//!   extra vars, so `ansible_eda.event.payload` reaches the playbook exactly as AWX passes it,
//!   plus AWX's job variables (`awx_job_id`, `awx_job_template_id`, `awx_job_template_name`,
//!   `awx_user_name`, ..., and their `tower_` twins; the launch's variables win). The inventory
//!   holds `localhost ansible_connection=local` (none is written when `extra_args` has `-i`).
//!   The program defaults to `<venv>/bin/ansible-playbook` with the venv of
//!   `hack/python-venv.sh` ([`runner::default_venv`]: `$CLOUDKIT_PYTHON_VENV`, else
//!   `~/.cache/cloudkit/venv`), the interpreter to the `python` next to the program (interpreter
//!   discovery can pick a broken pyenv shim).
//! - **Environment**: the simulator's, plus `ANSIBLE_STDOUT_CALLBACK=default`,
//!   `ANSIBLE_NOCOLOR=1`, `ANSIBLE_FORCE_COLOR=0`, `PYTHONUNBUFFERED=1`, `ANSIBLE_LOCAL_TEMP`
//!   in the job's directory, `JOB_ID`, and `K8S_AUTH_KUBECONFIG` when the simulator has a
//!   kubeconfig ([`SimulatorBuilder::kubeconfig`]); [`RunnerSpec::env`] wins.
//! - **Status**: `pending` while the job waits for one of [`SimConfig::runner_concurrency`]
//!   slots (default 4; slots go in launch order), `waiting` while its files are written,
//!   `running` once the process is spawned (`started`), then `successful` on exit 0, `failed`
//!   on another exit (or a signal, or [`RunnerSpec::timeout`], with job explanation `Job
//!   terminated due to timeout`), `canceled` after a cancel, `error` when it cannot start (the
//!   playbook or `ansible-playbook` does not exist, spawning failed; the reason is in
//!   `job_explanation` and `result_traceback`). The `result_traceback` of a failed job runs from
//!   the last error line Ansible printed (`fatal:`, `[ERROR]`, ...) to the end, else it is the
//!   last 20 lines of output. `finished` is set once the process and its descendants are gone.
//! - **Output**: `GET jobs/<id>/stdout/` answers the captured stdout and stderr (the last
//!   4 MiB); the job shows its `playbook`, `job_args` and `job_cwd`.
//!   [`Simulator::runner_pid`] gives the process id; [`Stats`] counts processes started, running
//!   and the most that ran at once.
//! - **Cancel**: `ansible-playbook` starts as the leader of a process group of its own. A cancel
//!   sends SIGINT to that group (Ansible stops its workers and exits, like on Ctrl-C), then
//!   SIGKILL after [`SimConfig::runner_cancel_grace`] (default 2 s). Ansible's workers start
//!   sessions of their own, so the simulator follows the process tree (`/proc`) and signals
//!   their groups as well.
//! - **No orphans**: when the server stops ([`SimHandle::shutdown`], dropping the [`SimHandle`],
//!   the end of [`Simulator::serve`]) running processes get SIGTERM, then SIGKILL after the
//!   grace period, and their jobs end as `error`; queued jobs end as `error` without starting.
//!   When the last [`Simulator`] clone is dropped, or the runtime drops a job's task, the
//!   processes get SIGKILL at once. Only a simulator killed with SIGKILL leaves them running.
//! - Phases, the outcome, the playbook-mode action and the per-job `sim_*` overrides do not
//!   apply to runner templates (the overrides are plain variables to the playbook). Runner
//!   templates cannot be added through `POST /_sim/templates`, which has no authentication.
//!   Runner mode needs Linux (process groups and `/proc`).

mod config;
mod error;
mod http;
mod jobs;
pub mod playbook;
pub mod runner;
mod serve;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{
    DEFAULT_AWX_VERSION, DEFAULT_ORGANIZATION, DEFAULT_RUNNER_CONCURRENCY, FAST_TIME_SCALE, Faults,
    Outcome, Phases, PlaybookAction, RunnerSpec, SimConfig, TemplateKind, TemplateSpec,
    format_duration, parse_duration,
};
pub use error::{Error, Result};
pub use jobs::{
    JobStatus, OVERRIDE_MESSAGE, OVERRIDE_OUTCOME, OVERRIDE_PENDING, OVERRIDE_RUNNING,
    OVERRIDE_WAITING,
};
pub use state::{LAUNCH_KEY_VAR, RequestRecord, Stats};

use state::{Shared, lock};

/// Builds a [`Simulator`].
#[derive(Debug, Default)]
pub struct SimulatorBuilder {
    config: SimConfig,
    kube: Option<playbook::KubeClient>,
    kubeconfig: Option<PathBuf>,
}

impl SimulatorBuilder {
    /// Starts from a whole configuration (for example [`SimConfig::from_file`]).
    pub fn config(mut self, config: SimConfig) -> Self {
        self.config = config;
        self
    }

    /// Adds a template.
    pub fn template(mut self, template: TemplateSpec) -> Self {
        self.config.templates.push(template);
        self
    }

    /// Accepts this Bearer token (once any is set, requests need one).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.tokens.push(token.into());
        self
    }

    /// Fast mode: configured seconds pass as milliseconds ([`FAST_TIME_SCALE`]).
    pub fn fast(self) -> Self {
        self.time_scale(FAST_TIME_SCALE)
    }

    /// Real seconds per simulated second.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.config.time_scale = scale;
        self
    }

    /// Default phase durations of templates that set none.
    pub fn phases(mut self, phases: Phases) -> Self {
        self.config.phases = phases;
        self
    }

    /// Seed of the fault injector's random generator.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }

    /// Initial faults.
    pub fn faults(mut self, faults: Faults) -> Self {
        self.config.faults = faults;
        self
    }

    /// Playbook mode with this client.
    pub fn kube_client(mut self, client: kube::Client) -> Self {
        self.kube = Some(playbook::KubeClient(client));
        self
    }

    /// Playbook mode with a client from this kubeconfig file; runner jobs get it as
    /// `K8S_AUTH_KUBECONFIG`.
    pub fn kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Runner mode: at most this many `ansible-playbook` processes at once (default
    /// [`DEFAULT_RUNNER_CONCURRENCY`]).
    pub fn runner_concurrency(mut self, n: usize) -> Self {
        self.config.runner_concurrency = n;
        self
    }

    /// Runner mode: how long a canceled job's process has after SIGINT before SIGKILL.
    pub fn runner_cancel_grace(mut self, grace: std::time::Duration) -> Self {
        self.config.runner_cancel_grace = grace;
        self
    }

    /// Builds the simulator (loads the kubeconfig, if any).
    pub async fn build(self) -> Result<Simulator> {
        let kube = match (self.kube, &self.kubeconfig) {
            (Some(client), _) => Some(client),
            (None, Some(path)) => Some(playbook::KubeClient(
                playbook::client_from_kubeconfig(path)
                    .await
                    .map_err(Error::Kube)?,
            )),
            (None, None) => None,
        };
        let kubeconfig = match self.kubeconfig {
            Some(p) => Some(
                std::path::absolute(&p)
                    .map_err(|e| Error::io(format!("resolving {}", p.display()), e))?,
            ),
            None => None,
        };
        Ok(Simulator {
            shared: Arc::new(Shared::new(self.config, kube, kubeconfig)?),
        })
    }

    /// Builds the simulator and serves it on `addr` (port 0 picks a free port).
    pub async fn spawn(self, addr: SocketAddr) -> Result<SimHandle> {
        self.build().await?.spawn(addr).await
    }
}

/// The simulator: cheap to clone, all clones share one state.
#[derive(Clone, Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
}

impl Simulator {
    /// A builder with the default configuration.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder::default()
    }

    /// The HTTP routes, for embedding in another server. Without [`Simulator::serve`] no ticker
    /// runs: playbook side effects and purging then do not happen, and injected connection
    /// resets answer 502 instead.
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.shared))
    }

    /// Serves on `listener` until `shutdown` completes, then closes connections gracefully.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = tx.send(true);
        });
        self.serve_until(listener, rx).await;
    }

    async fn serve_until(self, listener: TcpListener, shutdown: watch::Receiver<bool>) {
        // Also stopped when this future is dropped, so that it does not keep the state alive.
        let ticker = AbortOnDrop(tokio::spawn(ticker(
            Arc::clone(&self.shared),
            shutdown.clone(),
        )));
        serve::serve(listener, self.router(), shutdown).await;
        drop(ticker);
        self.shared.runners.shutdown().await;
    }

    /// Binds `addr` and serves in a background task.
    pub async fn spawn(self, addr: SocketAddr) -> Result<SimHandle> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::io(format!("binding {addr}"), e))?;
        let local = listener
            .local_addr()
            .map_err(|e| Error::io("reading the bound address", e))?;
        let (tx, rx) = watch::channel(false);
        let sim = self.clone();
        let task = tokio::spawn(sim.serve_until(listener, rx));
        Ok(SimHandle {
            addr: local,
            base_url: format!("http://{local}"),
            simulator: self,
            shutdown: tx,
            task: Some(task),
        })
    }

    /// The request log, oldest first (only `/api/...` requests).
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.log).entries.iter().cloned().collect()
    }

    /// The counters and the last `last` requests, newest first, one per line: for the failure
    /// messages of tests.
    pub fn diagnostics(&self, last: usize) -> String {
        let log: Vec<String> = lock(&self.shared.log)
            .entries
            .iter()
            .rev()
            .take(last)
            .map(|r| format!("{r:?}"))
            .collect();
        format!(
            "simulator stats={:?}\nlast requests:\n{}\n",
            self.stats(),
            log.join("\n")
        )
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        lock(&self.shared.log).entries.clear();
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The current faults.
    pub fn faults(&self) -> Faults {
        lock(&self.shared.faults).faults.clone()
    }

    /// Replaces the faults.
    pub fn set_faults(&self, faults: Faults) -> Result<()> {
        faults.validate()?;
        lock(&self.shared.faults).faults = faults;
        Ok(())
    }

    /// Adds a template; returns its id.
    pub fn add_template(&self, template: TemplateSpec) -> Result<u64> {
        self.shared.add_template(template)
    }

    /// The templates, with their ids.
    pub fn templates(&self) -> Vec<TemplateSpec> {
        self.shared.template_specs()
    }

    /// Runner mode: the process id of a job's `ansible-playbook` once started (kept after it
    /// ended), or `None`.
    pub fn runner_pid(&self, id: u64) -> Option<u32> {
        [TemplateKind::Job, TemplateKind::Workflow]
            .into_iter()
            .find_map(|kind| {
                self.shared
                    .with_job(kind, id, |job, _, _| {
                        job.runner.as_ref().and_then(|r| r.pid)
                    })
                    .ok()
                    .flatten()
            })
    }

    /// The status of a job or workflow job now, or `None` when unknown or purged.
    pub fn job_status(&self, id: u64) -> Option<JobStatus> {
        [TemplateKind::Job, TemplateKind::Workflow]
            .into_iter()
            .find_map(|kind| self.shared.with_job(kind, id, |job, _, _| job.status).ok())
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn ticker(shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(shared.tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => shared.tick(),
            _ = shutdown.changed() => return,
        }
    }
}

/// A simulator serving in the background. Dropping it stops the server (without waiting).
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    base_url: String,
    simulator: Simulator,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl SimHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `http://127.0.0.1:PORT/api`: the AWX-style API base (clients append `/v2/...`).
    pub fn api_url(&self) -> String {
        format!("{}/api", self.base_url)
    }

    /// `http://127.0.0.1:PORT/api/controller`: the AAP 2.5+ gateway-style API base.
    pub fn controller_url(&self) -> String {
        format!("{}/api/controller", self.base_url)
    }

    /// The simulator, for its request log, stats and faults.
    pub fn simulator(&self) -> &Simulator {
        &self.simulator
    }

    /// Stops accepting, lets open requests finish, and waits for the server to end.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}
