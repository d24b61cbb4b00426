//! The reconciler library in this process against the shared test API server: a controller
//! task that a test can stop or abort at a chosen instant, providers on the simulator or a
//! webhook, and a provider wrapper that stalls or interferes inside a pass. Everything else
//! (simulator, waits, fixtures) comes from `cloudkit-test-support`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloudkit_aap::{AapConfig, AapProvider};
use cloudkit_aap_sim::SimHandle;
use cloudkit_api::Tenant;
use cloudkit_api::{ComputeInstance, JobState, JobStatus, ProviderKind};
use cloudkit_provider::{
    CancelOutcome, DeprovisionOutcome, JobObservation, Launch, LaunchLookup, Provider,
    ProviderError, ProviderRegistry, Secret, StartedJob,
};
use cloudkit_reconciler::tenant::{TenantContext, TenantNetwork, run_tenants};
use cloudkit_reconciler::{Context, Metrics, Platform, Settings};
use cloudkit_test_support::{DEPROVISION_TEMPLATE, PROVISION_TEMPLATE, SIM_TOKEN, env};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;

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
        restart_timeout: cloudkit_reconciler::DEFAULT_RESTART_TIMEOUT,
        active: ProviderKind::Aap,
        providers: BTreeMap::new(),
    }
}

/// A controller running in this process on one namespace. Dropping or [`Operator::kill`]ing
/// it stops it at once, as a killed process would: whatever it had not written is lost.
pub struct Operator {
    task: JoinHandle<()>,
    tenants: Option<JoinHandle<()>>,
    stop: Option<oneshot::Sender<()>>,
    pub metrics: Arc<Metrics>,
}

impl Operator {
    pub async fn start(
        namespace: &str,
        registry: ProviderRegistry,
        settings: Settings,
    ) -> Operator {
        Operator::start_with(namespace, registry, settings, false).await
    }

    /// With the platform: the CIs' Tenants (and the Tenant controller, without networks) and
    /// their VirtualMachines.
    pub async fn start_on_platform(
        namespace: &str,
        registry: ProviderRegistry,
        settings: Settings,
    ) -> Operator {
        Operator::start_with(namespace, registry, settings, true).await
    }

    async fn start_with(
        namespace: &str,
        registry: ProviderRegistry,
        settings: Settings,
        platform: bool,
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
        let mut ctx = Context::new(client.clone(), registry, settings, Arc::clone(&metrics));
        if platform {
            ctx = ctx.with_platform(Platform::new(client.clone(), Some(namespace.to_string())));
        }
        let ctx = Arc::new(ctx);
        let tenants = platform.then(|| {
            let tenant_ctx = Arc::new(TenantContext::new(client.clone(), TenantNetwork::None));
            let tenant_api: Api<Tenant> = Api::namespaced(client.clone(), namespace);
            tokio::spawn(run_tenants(tenant_ctx, tenant_api, std::future::pending()))
        });
        let api: Api<ComputeInstance> = Api::namespaced(client, namespace);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            cloudkit_reconciler::run(ctx, api, 4, async move {
                let _ = rx.await;
            })
            .await;
        });
        Operator {
            task,
            tenants,
            stop: Some(tx),
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
        if let Some(tenants) = &self.tenants {
            tenants.abort();
        }
    }
}

/// The CIs of `namespace`, as an administrator.
pub async fn api(namespace: &str) -> Api<ComputeInstance> {
    Api::namespaced(env().admin_client().await, namespace)
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
    /// While the launch is in flight, someone else writes the CI's metadata, as the automation
    /// does when it adds its finalizer.
    Interfere(Client),
    /// While the launch is in flight, someone else writes the CI's status: the write of the
    /// launch's answer is then refused once.
    InterfereWithStatus(Client),
    /// The first poll that finds the job running: someone else writes the CI's metadata before
    /// the answer reaches the pass, as the automation does while its job runs.
    InterfereWithPoll(Client),
}

/// A provider that passes everything to `inner` except what its [`Hook`] changes, and tells
/// the test when a pass has reached the hook.
pub struct Hooked {
    inner: Arc<dyn Provider>,
    hook: Hook,
    reached: Arc<Notify>,
    interfered: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Hooked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooked")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl Hooked {
    /// Wraps `inner`; the [`Notify`] fires when a launch reaches the hook (for
    /// [`Hook::StallAfterLaunch`], once the inner launch has returned).
    pub fn wrap(inner: Arc<dyn Provider>, hook: Hook) -> (Arc<dyn Provider>, Arc<Notify>) {
        let reached = Arc::new(Notify::new());
        let hooked = Hooked {
            inner,
            hook,
            reached: Arc::clone(&reached),
            interfered: std::sync::atomic::AtomicBool::new(false),
        };
        (Arc::new(hooked), reached)
    }

    async fn around<T>(
        &self,
        ci: &ComputeInstance,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        match &self.hook {
            Hook::StallBeforeLaunch => {
                self.reached.notify_one();
                std::future::pending().await
            }
            Hook::StallAfterLaunch => {
                let _ = call.await;
                self.reached.notify_one();
                std::future::pending().await
            }
            Hook::Interfere(client) | Hook::InterfereWithStatus(client) => {
                touch(
                    client,
                    ci,
                    matches!(self.hook, Hook::InterfereWithStatus(_)),
                )
                .await;
                self.reached.notify_one();
                call.await
            }
            Hook::InterfereWithPoll(_) => call.await,
        }
    }
}

/// Writes CI `ci` as someone else: its status, or a label `touched-during-launch`.
async fn touch(client: &Client, ci: &ComputeInstance, status: bool) {
    let api: Api<ComputeInstance> = Api::namespaced(
        client.clone(),
        ci.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let name = ci.metadata.name.clone().unwrap_or_default();
    let params = PatchParams::default();
    let written = if status {
        let body = serde_json::json!({"status": {"lastRestartedAt": "2026-01-01T00:00:00Z"}});
        api.patch_status(&name, &params, &Patch::Merge(body)).await
    } else {
        let body = serde_json::json!({"metadata": {"labels": {"touched-during-launch": "yes"}}});
        api.patch(&name, &params, &Patch::Merge(body)).await
    };
    written.expect("concurrent write");
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
        let observed = self.inner.job_state(ci, job).await;
        if let Hook::InterfereWithPoll(client) = &self.hook
            && observed
                .as_ref()
                .is_ok_and(|o| o.state == JobState::Running)
            && !self
                .interfered
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            touch(client, ci, false).await;
            self.reached.notify_one();
        }
        observed
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

pub fn eda_provider(url: &str) -> Arc<dyn Provider> {
    let config =
        cloudkit_eda::EdaConfig::new(&format!("{url}/provision"), &format!("{url}/deprovision"))
            .unwrap();
    Arc::new(cloudkit_eda::EdaProvider::new(config).unwrap())
}

/// Waits until a pass reached the hook of a [`Hooked`] provider.
pub async fn reached(notify: &Notify, what: &str) {
    if tokio::time::timeout(cloudkit_test_support::DEADLINE, notify.notified())
        .await
        .is_err()
    {
        panic!(
            "no pass reached {what} within {:?}",
            cloudkit_test_support::DEADLINE
        );
    }
}
