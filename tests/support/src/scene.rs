//! A test's world for the end-to-end tests: a namespace with the operator's roles, operator
//! processes, the simulator and the rulebook, and waits that fail with every log attached.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use cloudkit_aap_sim::SimHandle;
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use crate::automation::{Rulebook, WEBHOOK_HMAC_SECRET, WEBHOOK_TOKEN, rulebook};
use crate::operator::{OperatorProcess, OperatorSettings, START_DEADLINE, operator_binary};
use crate::rbac::grant_operator_roles;
use crate::sim::{DEPROVISION_TEMPLATE, PROVISION_TEMPLATE, SIM_TOKEN};
use crate::wait::{DEADLINE, Diagnostics, describe_ci, wait_for_ci};
/// What a test runs; its diagnostics name every log.
#[allow(missing_debug_implementations)] // kube::Client and SimHandle say nothing useful
pub struct Scene {
    /// The test's namespace, with the operator's roles granted.
    pub namespace: String,
    /// An administrator client.
    pub client: Client,
    /// The operator processes started so far.
    pub operators: Vec<OperatorProcess>,
    /// The simulator, when the test uses AAP.
    pub sim: Option<SimHandle>,
    /// Whether an operator uses the shared ansible-rulebook (its log then joins the diagnostics).
    pub uses_rulebook: bool,
}

impl Scene {
    /// A fresh namespace in which the operator's roles are granted.
    pub async fn new(prefix: &str) -> Scene {
        let env = cloudkit_testenv::shared();
        let namespace = env.namespace(prefix).await;
        grant_operator_roles(&namespace).await;
        let client = env.admin_client().await;
        Scene {
            client,
            namespace,
            operators: Vec::new(),
            sim: None,
            uses_rulebook: false,
        }
    }

    /// The operator binary as the RBAC-limited user, watching `namespace`, electing a leader
    /// there, logging the reconciler at debug level (watch, event and status errors, a 403 among
    /// them, are logged at debug level), without retries.
    pub fn operator(name: &str, namespace: &str) -> OperatorSettings {
        let env = cloudkit_testenv::shared();
        OperatorSettings::new(
            name,
            operator_binary(),
            env.limited_kubeconfig_path(),
            namespace,
        )
        .env("RUST_LOG", "info,cloudkit_reconciler=debug")
        .poll_interval("500ms")
        .env("CLOUDKIT_PROVISION_RETRY_LIMIT", "0")
        .env("CLOUDKIT_EDA_PROVISION_GRACE", "30s")
        .leader_elect(namespace)
    }

    /// [`Scene::operator`] with the AAP provider on `sim`.
    pub fn aap_operator(name: &str, namespace: &str, sim: &SimHandle) -> OperatorSettings {
        Scene::operator(name, namespace).aap(
            &sim.api_url(),
            SIM_TOKEN,
            PROVISION_TEMPLATE,
            DEPROVISION_TEMPLATE,
        )
    }

    /// [`Scene::operator`] with the EDA provider on the shared rulebook's webhooks.
    pub fn eda_operator(name: &str, namespace: &str) -> OperatorSettings {
        Scene::eda_operator_on(name, namespace, rulebook())
    }

    /// [`Scene::operator`] with the EDA provider on the webhooks of `rb`.
    pub fn eda_operator_on(name: &str, namespace: &str, rb: &Rulebook) -> OperatorSettings {
        Scene::operator(name, namespace)
            .eda(&rb.url("provision"), &rb.url("deprovision"))
            .env("CLOUDKIT_EDA_TOKEN", WEBHOOK_TOKEN)
            .env("CLOUDKIT_EDA_HMAC_SECRET", WEBHOOK_HMAC_SECRET)
    }

    /// Starts an operator and waits until it serves and runs its controller (holding the Lease
    /// when it elects a leader); returns its index in [`Scene::operators`]. A process that exits
    /// or stalls fails the test with its log.
    pub async fn start_operator(&mut self, settings: OperatorSettings) -> usize {
        if settings
            .get("CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK")
            .is_some_and(|url| url == rulebook_url("provision"))
        {
            self.uses_rulebook = true;
        }
        let mut needles = vec!["starting controller"];
        if settings.get("CLOUDKIT_LEADER_ELECT") == Some("true") {
            needles.push("acquired leadership");
        }
        let mut op = settings.spawn().unwrap_or_else(|e| panic!("{e}"));
        let started = match op.wait_logged(&needles, START_DEADLINE).await {
            Ok(()) => op.wait_serving(START_DEADLINE).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            panic!("{e}\n{}", cloudkit_testenv::shared().log_tails());
        }
        self.operators.push(op);
        self.operators.len() - 1
    }

    /// `/metrics` of operator `index` as `name{labels} -> value`.
    pub async fn metrics(&self, index: usize) -> std::collections::BTreeMap<String, f64> {
        self.operators[index]
            .metrics()
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.operators[index].log_tail(40)))
    }

    /// Creates CI `namespace/name`.
    pub async fn create(
        &self,
        namespace: &str,
        name: &str,
        spec: ComputeInstanceSpec,
    ) -> ComputeInstance {
        self.api_in(namespace)
            .create(
                &PostParams::default(),
                &crate::in_test_tenant(ComputeInstance::new(name, spec)),
            )
            .await
            .unwrap_or_else(|e| panic!("creating {namespace}/{name}: {e}"))
    }

    /// Deletes CI `namespace/name`.
    pub async fn delete(&self, namespace: &str, name: &str) {
        self.api_in(namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {namespace}/{name}: {e}"));
    }

    /// Every log that can explain a failure, and the CI's last state.
    pub fn diagnostics(&self, ci: Option<&ComputeInstance>) -> String {
        let mut out = describe_ci(ci);
        for op in &self.operators {
            out.push_str(&op.log_tail(60));
            out.push('\n');
        }
        if self.uses_rulebook {
            out.push_str(&rulebook().log_tail(80));
            out.push('\n');
        }
        if let Some(sim) = &self.sim {
            out.push_str("--- simulator ---\n");
            out.push_str(&sim.simulator().diagnostics(20));
        }
        out.push_str(&cloudkit_testenv::shared().log_tails());
        out
    }

    /// Polls `check` until it holds; fails with the diagnostics at the deadline.
    pub async fn eventually<F, Fut>(&self, what: &str, check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::wait::eventually_with(what, check, || self.diagnostics(None)).await;
    }

    pub fn api_in(&self, namespace: &str) -> Api<ComputeInstance> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Polls the CI until `done` holds; fails with the diagnostics at the deadline or when an
    /// operator process or the rulebook died.
    pub async fn wait_for(
        &mut self,
        namespace: &str,
        name: &str,
        what: &str,
        done: impl Fn(&ComputeInstance) -> bool,
    ) -> ComputeInstance {
        let api = self.api_in(namespace);
        wait_for_ci(&api, name, what, self, done).await
    }

    /// The CI as the API server sends it (JSON), without a round trip through the Rust types.
    pub async fn raw(&self, namespace: &str, name: &str) -> serde_json::Value {
        let resource = ApiResource::erase::<ComputeInstance>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let object = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading {namespace}/{name}: {e}"));
        serde_json::to_value(&object).expect("a JSON object")
    }

    /// Starts following a CI (a watch on its name), so that its last state is known when it
    /// goes: the watch's DELETED event carries the object as it was when it was removed.
    pub async fn follow(&self, namespace: &str, name: &str) -> Follower {
        let resource = ApiResource::erase::<ComputeInstance>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, config).boxed();
        let start = Instant::now();
        let mut last = None;
        // The watch is established once the initial list is through.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
                Ok(Ok(Some(watcher::Event::InitDone))) => break,
                Ok(Ok(Some(watcher::Event::InitApply(o) | watcher::Event::Apply(o)))) => {
                    last = Some(o);
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => {}
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "the watch on {namespace}/{name} did not start"
            );
        }
        Follower {
            namespace: namespace.into(),
            name: name.into(),
            stream,
            last,
        }
    }

    /// Waits until the followed CI is gone; returns its last state. Fails with the diagnostics
    /// at the deadline or when a process died.
    pub async fn wait_gone(&mut self, mut follower: Follower) -> Seen {
        let start = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_millis(500), follower.stream.try_next()).await
            {
                Ok(Ok(Some(watcher::Event::Delete(o)))) => return Seen::from(o),
                Ok(Ok(Some(watcher::Event::InitApply(o) | watcher::Event::Apply(o)))) => {
                    follower.last = Some(o);
                }
                Ok(Ok(Some(_))) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(Ok(None)) => panic!("the watch on {} ended", follower.name),
            }
            let last = follower.last.clone().map(|o| Seen::from(o).ci);
            self.check_alive(last.as_ref());
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out after {DEADLINE:?} waiting for {}/{} to be deleted\n{}",
                    follower.namespace,
                    follower.name,
                    self.diagnostics(last.as_ref())
                );
            }
        }
    }

    /// Deletes the CI and waits until it is gone; returns its last state.
    pub async fn delete_and_wait_gone(&mut self, namespace: &str, name: &str) -> Seen {
        let follower = self.follow(namespace, name).await;
        self.delete(namespace, name).await;
        self.wait_gone(follower).await
    }

    fn check_alive(&mut self, ci: Option<&ComputeInstance>) {
        if let Some(reason) = self.gone(ci) {
            panic!("{reason}\n{}", self.diagnostics(ci));
        }
    }

    /// Events recorded for `name` (events.k8s.io/v1): (type, reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let mut list: Vec<_> = api
            .list(&Default::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list.into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// A JSON merge patch on the CI, as a user would apply it (metadata or spec).
    pub async fn merge_patch(&self, namespace: &str, name: &str, patch: serde_json::Value) {
        self.api_in(namespace)
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap_or_else(|e| panic!("patching {namespace}/{name} with {patch}: {e}"));
    }

    /// Records every version of the CI the API server sends on a watch, from now on, so that a
    /// test can check something of each persisted state rather than of a sample.
    pub async fn record(&self, namespace: &str, name: &str) -> Recorder {
        let api = self.api_in(namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, config).boxed();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = std::sync::Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match stream.try_next().await {
                    Ok(Some(watcher::Event::InitApply(ci) | watcher::Event::Apply(ci))) => {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(ci);
                    }
                    Ok(Some(watcher::Event::InitDone)) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(START_DEADLINE, ready_rx)
            .await
            .unwrap_or_else(|_| panic!("the watch on {namespace}/{name} did not start"))
            .ok();
        Recorder { seen, task }
    }

    /// No request of any operator was refused by RBAC.
    pub fn assert_no_forbidden(&self) {
        for op in &self.operators {
            let refused = op.forbidden_lines();
            assert!(
                refused.is_empty(),
                "{} was refused by RBAC (deploy/rbac.yaml lacks a permission):\n{}",
                op.settings().name(),
                refused.join("\n")
            );
        }
    }
}

impl Diagnostics for Scene {
    fn describe(&mut self, ci: Option<&ComputeInstance>) -> String {
        self.diagnostics(ci)
    }

    fn gone(&mut self, _ci: Option<&ComputeInstance>) -> Option<String> {
        let mut dead: Vec<String> = self
            .operators
            .iter_mut()
            .filter_map(|op| {
                let name = op.settings().name().to_string();
                op.exited().map(|s| format!("{name} exited with {s}"))
            })
            .collect();
        if self.uses_rulebook
            && let Some(status) = rulebook().exited()
        {
            dead.push(format!("ansible-rulebook exited with {status}"));
        }
        (!dead.is_empty()).then(|| dead.join("; "))
    }
}

/// A CI as last seen: typed, and as the API server sent it.
#[derive(Debug)]
pub struct Seen {
    /// Typed.
    pub ci: ComputeInstance,
    /// As the API server sent it.
    pub raw: serde_json::Value,
}

impl From<DynamicObject> for Seen {
    fn from(object: DynamicObject) -> Seen {
        let raw = serde_json::to_value(&object).expect("a JSON object");
        let ci = serde_json::from_value(raw.clone()).expect("a ComputeInstance");
        Seen { ci, raw }
    }
}

/// A watch on one CI (see [`Scene::follow`]).
#[allow(missing_debug_implementations)] // a stream
pub struct Follower {
    namespace: String,
    name: String,
    stream:
        futures::stream::BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>>,
    last: Option<DynamicObject>,
}

/// Every version of one CI seen on a watch (see [`Scene::record`]); stops watching when dropped.
#[derive(Debug)]
pub struct Recorder {
    seen: std::sync::Arc<Mutex<Vec<ComputeInstance>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// The versions seen so far, oldest first.
    pub fn seen(&self) -> Vec<ComputeInstance> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shared rulebook's URL of `path`, when it has been started (it is not started for this).
fn rulebook_url(path: &str) -> String {
    crate::automation::shared_rulebook().map_or_else(String::new, |rb| rb.url(path))
}
