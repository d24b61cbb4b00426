//! Harness for tests against a real kube-apiserver (cloudkit-testenv) and the AWX simulator.
//! Every wait has a deadline and fails with the CI's status, the simulator's request log and
//! the API server's log tail attached.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cloudkit_aap::{AapConfig, AapProvider};
use cloudkit_aap_sim::{Outcome, Phases, SimHandle, Simulator, TemplateSpec};
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, JobStatus, JobType, ProviderKind};
use cloudkit_provider::{
    CancelOutcome, DeprovisionOutcome, JobObservation, Launch, LaunchLookup, Provider,
    ProviderError, ProviderRegistry, Secret, StartedJob,
};
use cloudkit_reconciler::{Context, Metrics, Settings};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const SIM_TOKEN: &str = "sim-token-3f9a";
pub const PROVISION_TEMPLATE: &str = "provision_vm";
pub const DEPROVISION_TEMPLATE: &str = "deprovision_vm";
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn env() -> &'static cloudkit_testenv::TestEnv {
    cloudkit_testenv::shared()
}

/// Simulator phases in real time.
pub fn phases(pending_ms: u64, waiting_ms: u64, running_ms: u64) -> Phases {
    Phases::new(
        Duration::from_millis(pending_ms),
        Duration::from_millis(waiting_ms),
        Duration::from_millis(running_ms),
    )
}

/// A simulator with the two templates, acting as the playbooks on the test API server.
pub async fn simulator(
    provision: Phases,
    deprovision: Phases,
    deprovision_outcome: Outcome,
) -> SimHandle {
    let client = env().admin_client().await;
    Simulator::builder()
        .token(SIM_TOKEN)
        .seed(7)
        .template(TemplateSpec::job(PROVISION_TEMPLATE).with_phases(provision))
        .template(
            TemplateSpec::job(DEPROVISION_TEMPLATE)
                .with_phases(deprovision)
                .with_outcome(deprovision_outcome),
        )
        .kube_client(client)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

pub fn aap_provider(sim: &SimHandle) -> Arc<dyn Provider> {
    let config = AapConfig::new(
        &sim.api_url(),
        Secret::new(SIM_TOKEN),
        PROVISION_TEMPLATE,
        DEPROVISION_TEMPLATE,
    )
    .unwrap()
    .with_poll_interval(Duration::from_millis(200))
    .unwrap()
    .with_request_timeout(Duration::from_secs(5))
    .unwrap();
    Arc::new(AapProvider::new(&config).unwrap())
}

pub fn settings() -> Settings {
    Settings {
        history_limit: 10,
        retry_limit: 0,
        poll_interval: Duration::from_millis(200),
        eda_grace: Duration::from_secs(3),
        launch_window: Duration::from_secs(2),
        active: ProviderKind::Aap,
        providers: BTreeMap::new(),
    }
}

/// A controller running in this process on one namespace. Dropping or [`Operator::kill`]ing
/// it stops it at once, as a killed process would: whatever it had not written is lost.
pub struct Operator {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
    pub ctx: Arc<Context>,
    pub metrics: Arc<Metrics>,
}

impl Operator {
    pub async fn start(
        namespace: &str,
        registry: ProviderRegistry,
        settings: Settings,
    ) -> Operator {
        // Controller logs go to the test output (shown for failing tests); RUST_LOG selects them.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let client = env().admin_client().await;
        let metrics = Metrics::shared();
        let ctx = Arc::new(Context::new(
            client.clone(),
            registry,
            settings,
            Arc::clone(&metrics),
        ));
        let api: Api<ComputeInstance> = Api::namespaced(client, namespace);
        let (tx, rx) = oneshot::channel::<()>();
        let run_ctx = Arc::clone(&ctx);
        let task = tokio::spawn(async move {
            cloudkit_reconciler::run(run_ctx, api, 4, async move {
                let _ = rx.await;
            })
            .await;
        });
        Operator {
            task,
            stop: Some(tx),
            ctx,
            metrics,
        }
    }

    /// Stops it without any grace: in-flight calls are abandoned mid-way.
    pub fn kill(self) {
        self.task.abort();
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        self.task.abort();
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn api(namespace: &str) -> Api<ComputeInstance> {
    Api::namespaced(env().admin_client().await, namespace)
}

pub async fn create(
    api: &Api<ComputeInstance>,
    name: &str,
    spec: ComputeInstanceSpec,
) -> ComputeInstance {
    api.create(&PostParams::default(), &ComputeInstance::new(name, spec))
        .await
        .expect("create CI")
}

pub async fn delete(api: &Api<ComputeInstance>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete CI");
}

pub async fn merge_patch(
    api: &Api<ComputeInstance>,
    name: &str,
    patch: serde_json::Value,
) -> ComputeInstance {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch CI")
}

pub async fn annotate(api: &Api<ComputeInstance>, name: &str, key: &str, value: &str) {
    merge_patch(
        api,
        name,
        serde_json::json!({"metadata": {"annotations": {key: value}}}),
    )
    .await;
}

fn describe(ci: Option<&ComputeInstance>, sim: Option<&SimHandle>) -> String {
    let mut out = String::new();
    if let Some(ci) = ci {
        out.push_str(&format!(
            "metadata.finalizers={:?} annotations={:?}\nstatus={}\n",
            ci.metadata.finalizers,
            ci.metadata.annotations,
            serde_json::to_string_pretty(&ci.status).unwrap_or_default()
        ));
    }
    if let Some(sim) = sim {
        out.push_str(&sim.simulator().diagnostics(30));
    }
    out.push_str(&format!("apiserver log tail:\n{}", env().log_tails()));
    out
}

/// Polls the CI until `done` holds; panics with diagnostics at the deadline.
pub async fn wait_for(
    api: &Api<ComputeInstance>,
    name: &str,
    sim: Option<&SimHandle>,
    what: &str,
    done: impl Fn(&ComputeInstance) -> bool,
) -> ComputeInstance {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(ci) = api.get(name).await {
            if done(&ci) {
                return ci;
            }
            last = Some(ci);
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what} on {name}\n{}",
                describe(last.as_ref(), sim)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls until the CI is gone; returns the last version seen.
pub async fn wait_gone(
    api: &Api<ComputeInstance>,
    name: &str,
    sim: Option<&SimHandle>,
) -> Option<ComputeInstance> {
    let start = Instant::now();
    let mut last = None;
    loop {
        match api.get_opt(name).await {
            Ok(None) => return last,
            Ok(Some(ci)) => last = Some(ci),
            Err(_) => {}
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {name} to be deleted\n{}",
                describe(last.as_ref(), sim)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls an async condition with a deadline.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}\napiserver log tail:\n{}",
                env().log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn jobs(ci: &ComputeInstance) -> Vec<JobStatus> {
    ci.status
        .as_ref()
        .map(|s| s.jobs.clone())
        .unwrap_or_default()
}

pub fn latest(ci: &ComputeInstance, t: JobType) -> Option<JobStatus> {
    cloudkit_api::history::latest_job(&jobs(ci), t).cloned()
}

/// Event reasons recorded for `name` in `namespace` (events.k8s.io/v1).
pub async fn event_reasons(namespace: &str, name: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(env().admin_client().await, namespace);
    let list = api.list(&Default::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reason)
        .collect()
}

/// What a wrapped provider does around a launch, to stop a pass at a chosen instant or to
/// provoke a conflict.
pub enum Hook {
    /// Never call the provider: the pass hangs right after the intent was written.
    StallBeforeLaunch,
    /// Call the provider, then hang before the answer can be recorded.
    StallAfterLaunch,
    /// While the launch is in flight, someone else writes to the CI: the write of the launch's
    /// answer then meets a 409 conflict.
    Interfere(Client),
}

/// A provider that passes everything to `inner` except what its [`Hook`] changes.
pub struct Hooked {
    pub inner: Arc<dyn Provider>,
    pub hook: Hook,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Hooked {
    async fn around<T>(
        &self,
        ci: &ComputeInstance,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match &self.hook {
            Hook::StallBeforeLaunch => std::future::pending().await,
            Hook::StallAfterLaunch => {
                let _ = call.await;
                std::future::pending().await
            }
            Hook::Interfere(client) => {
                let api: Api<ComputeInstance> = Api::namespaced(
                    client.clone(),
                    ci.metadata.namespace.as_deref().unwrap_or_default(),
                );
                let name = ci.metadata.name.clone().unwrap_or_default();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({"metadata": {"labels": {"touched-during-launch": "yes"}}})),
                )
                .await
                .expect("concurrent write");
                call.await
            }
        }
    }
}

#[async_trait]
impl Provider for Hooked {
    fn kind(&self) -> ProviderKind {
        self.inner.kind()
    }
    fn polls_remotely(&self) -> bool {
        self.inner.polls_remotely()
    }
    fn can_cancel(&self) -> bool {
        self.inner.can_cancel()
    }
    fn can_find_launches(&self) -> bool {
        self.inner.can_find_launches()
    }
    fn blocks_deletion_on_failure(&self) -> bool {
        self.inner.blocks_deletion_on_failure()
    }
    async fn provision(
        &self,
        ci: &ComputeInstance,
        launch: &Launch,
    ) -> Result<StartedJob, ProviderError> {
        self.around(ci, self.inner.provision(ci, launch)).await
    }
    async fn deprovision(
        &self,
        ci: &ComputeInstance,
        launch: &Launch,
    ) -> Result<DeprovisionOutcome, ProviderError> {
        self.around(ci, self.inner.deprovision(ci, launch)).await
    }
    async fn job_state(
        &self,
        ci: &ComputeInstance,
        job: &JobStatus,
    ) -> Result<JobObservation, ProviderError> {
        self.inner.job_state(ci, job).await
    }
    async fn cancel(&self, job: &JobStatus) -> Result<CancelOutcome, ProviderError> {
        self.inner.cancel(job).await
    }
    async fn find_launch(
        &self,
        ci: &ComputeInstance,
        job: &JobStatus,
    ) -> Result<LaunchLookup, ProviderError> {
        self.inner.find_launch(ci, job).await
    }
}

/// A webhook that accepts events and counts them; the test plays the automation.
pub async fn webhook() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let app = axum::Router::new().route(
        "/{path}",
        axum::routing::post(move || {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                axum::http::StatusCode::ACCEPTED
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, hits)
}

pub fn eda_provider(url: &str) -> Arc<dyn Provider> {
    let config =
        cloudkit_eda::EdaConfig::new(&format!("{url}/provision"), &format!("{url}/deprovision"))
            .unwrap();
    Arc::new(cloudkit_eda::EdaProvider::new(config).unwrap())
}
