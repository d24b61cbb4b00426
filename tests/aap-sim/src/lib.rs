//! An AWX-compatible automation controller API simulator for tests and demos.
//!
//! AWX cannot run on the test machines, so this crate serves the part of the controller REST API
//! that the operator's AAP client, ansible-rulebook's `run_job_template` and the `awx.awx`
//! collection use, with jobs that move through `pending -> waiting -> running -> terminal` on a
//! clock, faults to inject, a request log and, optionally, the side effects of the production
//! playbooks on a real Kubernetes API server (playbook mode) or real `ansible-playbook` runs
//! ([`RunnerSpec`], runner mode). The crate's README lists the routes, the per-job `sim_*`
//! overrides and the details of both modes; the `aap-sim` binary serves it from the command line.
//!
//! ```
//! use cloudkit_aap_sim::{AwxStatus, Phases, Simulator, TemplateSpec};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let handle = Simulator::builder()
//!     .token("secret")
//!     .fast() // configured seconds pass as milliseconds
//!     .template(TemplateSpec::job("provision_vm").with_id(7))
//!     .template(TemplateSpec::workflow("deprovision_vm").with_phases(Phases::new(
//!         Duration::from_secs(1), Duration::from_secs(1), Duration::from_secs(5))))
//!     .spawn("127.0.0.1:0".parse()?)
//!     .await?;
//! // The operator's CLOUDKIT_AAP_URL:
//! let aap_url = handle.api_url(); // http://127.0.0.1:PORT/api
//!
//! // A launch as any AWX client sends it; the request log and the counters see it.
//! let launched: serde_json::Value = reqwest::Client::new()
//!     .post(format!("{aap_url}/v2/job_templates/7/launch/"))
//!     .bearer_auth("secret")
//!     .json(&serde_json::json!({"extra_vars": {"cloudkit_launch_key": "ns/vm/p/1"}}))
//!     .send()
//!     .await?
//!     .error_for_status()?
//!     .json()
//!     .await?;
//! let id = launched["id"].as_u64().ok_or("no job id")?;
//! assert_eq!(launched["status"], "pending");
//! assert_eq!(handle.simulator().stats().launches, 1);
//! let status: Option<AwxStatus> = handle.simulator().job_status(id);
//! assert!(status.is_some());
//! handle.shutdown().await;
//! # Ok(())
//! # }
//! ```

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
    AwxStatus, OVERRIDE_MESSAGE, OVERRIDE_OUTCOME, OVERRIDE_PENDING, OVERRIDE_RUNNING,
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
        TemplateKind::ALL.into_iter().find_map(|kind| {
            self.shared
                .with_job(kind, id, |job, _, _| {
                    job.runner.as_ref().and_then(|r| r.pid)
                })
                .ok()
                .flatten()
        })
    }

    /// The status of a job or workflow job now, or `None` when unknown or purged.
    pub fn job_status(&self, id: u64) -> Option<AwxStatus> {
        TemplateKind::ALL
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
