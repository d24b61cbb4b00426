//! The Tenant controller (SPEC 9.3) in this process against a real API server, with
//! kube-controller-manager finishing namespace deletions: the namespace and its labels, the
//! UserDefinedNetwork, Ready and Failed, and the order of the teardown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudkit_api::metadata::{
    APP_NAME, APP_NAME_LABEL, CONDITION_READY, PRIMARY_UDN_LABEL, PROJECT_LABEL, TENANT_FINALIZER,
    TENANT_REF_LABEL,
};
use cloudkit_api::names::{enc, tenant_object_name};
use cloudkit_api::{Tenant, TenantPhase, TenantSpec};
use cloudkit_reconciler::find_condition;
use cloudkit_reconciler::tenant::{TenantContext, TenantNetwork, run_tenants, udn_resource};
use cloudkit_testenv::TestEnv;
use cloudkit_testenv::kubevirt::install_platform_crds;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Namespace deletion by kube-controller-manager takes a few seconds; the bound allows for a
/// busy machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// A finalizer of the test's own, to hold an object in `Terminating`.
const HOLD: &str = "test.cloudkit.openshift.io/hold";

/// The Tenant controller on one namespace, in this process.
struct Controller {
    task: JoinHandle<()>,
    stop: Option<oneshot::Sender<()>>,
}

impl Controller {
    fn start(client: Client, namespace: &str, network: TenantNetwork) -> Controller {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
            )
            .with_test_writer()
            .try_init();
        let ctx = Arc::new(TenantContext::new(client.clone(), network));
        let api: Api<Tenant> = Api::namespaced(client, namespace);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_tenants(ctx, api, async move {
            let _ = rx.await;
        }));
        Controller {
            task,
            stop: Some(tx),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let finished = tokio::time::timeout(Duration::from_secs(10), &mut self.task).await;
        assert!(finished.is_ok(), "the controller stops when asked");
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Polls `check` until it gives a value; fails with `describe()` at the deadline.
async fn wait<T, F, Fut, D, DFut>(what: &str, mut check: F, describe: D) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    D: FnOnce() -> DFut,
    DFut: Future<Output = String>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}\n{}",
                describe().await
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The Tenant a CI with annotation `cloudkit.openshift.io/tenant: <name>` needs.
fn tenant(name: &str) -> Tenant {
    let mut t = Tenant::new(&tenant_object_name(name), TenantSpec { name: name.into() });
    t.metadata.labels = Some(BTreeMap::from([(
        APP_NAME_LABEL.to_string(),
        APP_NAME.to_string(),
    )]));
    t
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Cluster<'a> {
    client: Client,
    env: &'a TestEnv,
}

impl Cluster<'_> {
    fn tenants(&self, ns: &str) -> Api<Tenant> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn namespaces(&self) -> Api<Namespace> {
        Api::all(self.client.clone())
    }

    fn udns(&self, ns: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &udn_resource())
    }

    async fn describe(&self, ns: &str, name: &str, tenant_ns: &str) -> String {
        let tenant = self.tenants(ns).get_opt(name).await;
        let namespace = self.namespaces().get_opt(tenant_ns).await;
        let udn = self.udns(tenant_ns).get_opt("udn").await;
        format!(
            "tenant: {tenant:#?}\nnamespace: {namespace:#?}\nudn: {udn:#?}\n{}",
            self.env.log_tails()
        )
    }

    /// Waits until the Tenant's phase is `phase`, and returns it.
    async fn wait_phase(
        &self,
        ns: &str,
        name: &str,
        tenant_ns: &str,
        phase: TenantPhase,
    ) -> Tenant {
        let api = self.tenants(ns);
        wait(
            &format!("tenant {ns}/{name} to be {phase:?}"),
            || async {
                api.get(name)
                    .await
                    .ok()
                    .filter(|t| t.phase() == Some(phase))
            },
            || self.describe(ns, name, tenant_ns),
        )
        .await
    }
}

async fn shared_cluster() -> Cluster<'static> {
    let env = cloudkit_testenv::shared();
    let client = env.admin_client().await;
    install_platform_crds(&client).await.unwrap();
    Cluster { client, env }
}

fn ready_condition(t: &Tenant) -> (String, String, String) {
    let status = t.status.clone().unwrap_or_default();
    let c = find_condition(&status.conditions, CONDITION_READY)
        .unwrap_or_else(|| panic!("no Ready condition: {status:?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_its_namespace_and_network_and_loses_them_in_order() {
    let cluster = shared_cluster().await;
    let ns = cloudkit_testenv::shared().namespace("tn-udn").await;
    let controller = Controller::start(cluster.client.clone(), &ns, TenantNetwork::Udn);
    let name = tenant_object_name("acme");
    let tenant_ns = format!("{ns}-{}", enc("acme"));
    let tenants = cluster.tenants(&ns);
    tenants
        .create(&PostParams::default(), &tenant("acme"))
        .await
        .unwrap();

    let ready = cluster
        .wait_phase(&ns, &name, &tenant_ns, TenantPhase::Ready)
        .await;
    assert!(
        ready.finalizers().iter().any(|f| f == TENANT_FINALIZER),
        "{:?}",
        ready.finalizers()
    );
    let status = ready.status.clone().unwrap_or_default();
    assert_eq!(status.namespace.as_deref(), Some(tenant_ns.as_str()));
    assert_eq!(status.observed_generation, ready.metadata.generation);
    let (is_ready, reason, message) = ready_condition(&ready);
    assert_eq!((is_ready.as_str(), reason.as_str()), ("True", "Ready"));
    assert!(message.contains(&tenant_ns), "{message}");

    let namespace = cluster.namespaces().get(&tenant_ns).await.unwrap();
    assert_eq!(
        namespace.labels(),
        &labels(&[
            (APP_NAME_LABEL, APP_NAME),
            (TENANT_REF_LABEL, &name),
            (PROJECT_LABEL, &tenant_ns),
            (PRIMARY_UDN_LABEL, ""),
        ]),
        "exactly the four labels of SPEC 9.3"
    );
    let udns = cluster.udns(&tenant_ns);
    let udn = udns.get("udn").await.unwrap();
    assert_eq!(
        udn.labels(),
        &labels(&[
            (APP_NAME_LABEL, APP_NAME),
            (TENANT_REF_LABEL, &name),
            (PROJECT_LABEL, &tenant_ns),
        ])
    );
    assert_eq!(
        udn.data["spec"],
        serde_json::json!({
            "topology": "Layer2",
            "layer2": {
                "role": "Primary",
                "subnets": ["10.200.0.0/16"],
                "ipam": {"lifecycle": "Persistent"},
            },
        })
    );

    // Teardown order: the network first. A finalizer of the test's own keeps the network
    // Terminating; meanwhile the namespace must stay untouched.
    let hold = serde_json::json!({"metadata": {"finalizers": [HOLD]}});
    udns.patch("udn", &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let udn_api = cluster.udns(&tenant_ns);
    wait(
        "the network to be deleted",
        || async {
            udn_api
                .get_opt("udn")
                .await
                .ok()
                .flatten()
                .filter(|u| u.metadata.deletion_timestamp.is_some())
        },
        || cluster.describe(&ns, &name, &tenant_ns),
    )
    .await;
    cluster
        .wait_phase(&ns, &name, &tenant_ns, TenantPhase::Deleting)
        .await;
    // Several passes (2 s apart while it waits) see the network Terminating.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let namespace = cluster.namespaces().get(&tenant_ns).await.unwrap();
    assert!(
        namespace.metadata.deletion_timestamp.is_none(),
        "the namespace is deleted only after the network is gone"
    );
    assert!(
        tenants.get_opt(&name).await.unwrap().is_some(),
        "the finalizer stays while the network exists"
    );

    let release = serde_json::json!({"metadata": {"finalizers": null}});
    udns.patch("udn", &PatchParams::default(), &Patch::Merge(&release))
        .await
        .unwrap();
    // The namespace is deleted next (kube-controller-manager empties it and removes it); the
    // finalizer goes only once it has disappeared.
    let namespaces = cluster.namespaces();
    wait(
        "the tenant to be gone",
        || async {
            let tenant = tenants.get_opt(&name).await.ok()?;
            let namespace = namespaces.get_opt(&tenant_ns).await.ok()?;
            if tenant.is_none() {
                assert!(
                    namespace.is_none(),
                    "the finalizer went while the namespace exists"
                );
                return Some(());
            }
            None
        },
        || cluster.describe(&ns, &name, &tenant_ns),
    )
    .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_namespace_gets_the_three_labels_merged_in() {
    let cluster = shared_cluster().await;
    let ns = cloudkit_testenv::shared().namespace("tn-merge").await;
    let tenant_ns = format!("{ns}-{}", enc("beta"));
    let name = tenant_object_name("beta");
    let existing = Namespace {
        metadata: ObjectMeta {
            name: Some(tenant_ns.clone()),
            labels: Some(labels(&[("team", "blue"), (PROJECT_LABEL, "stale")])),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    cluster
        .namespaces()
        .create(&PostParams::default(), &existing)
        .await
        .unwrap();
    let controller = Controller::start(cluster.client.clone(), &ns, TenantNetwork::Udn);
    cluster
        .tenants(&ns)
        .create(&PostParams::default(), &tenant("beta"))
        .await
        .unwrap();
    cluster
        .wait_phase(&ns, &name, &tenant_ns, TenantPhase::Ready)
        .await;
    let namespace = cluster.namespaces().get(&tenant_ns).await.unwrap();
    assert_eq!(
        namespace.labels(),
        &labels(&[
            ("team", "blue"),
            (APP_NAME_LABEL, APP_NAME),
            (TENANT_REF_LABEL, &name),
            (PROJECT_LABEL, &tenant_ns),
        ]),
        "the three labels merged in, the user's kept"
    );
    assert!(
        cluster
            .udns(&tenant_ns)
            .get_opt("udn")
            .await
            .unwrap()
            .is_some()
    );
    // A Ready Tenant is left alone: no write per pass (each write would wake another pass).
    let before = cluster.tenants(&ns).get(&name).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = cluster.tenants(&ns).get(&name).await.unwrap();
    assert_eq!(before.resource_version(), after.resource_version());
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_network_none_the_namespace_alone_makes_a_tenant_ready() {
    let cluster = shared_cluster().await;
    let ns = cloudkit_testenv::shared().namespace("tn-none").await;
    let controller = Controller::start(cluster.client.clone(), &ns, TenantNetwork::None);
    let name = tenant_object_name("gamma");
    let tenant_ns = format!("{ns}-{}", enc("gamma"));
    let tenants = cluster.tenants(&ns);
    tenants
        .create(&PostParams::default(), &tenant("gamma"))
        .await
        .unwrap();
    let ready = cluster
        .wait_phase(&ns, &name, &tenant_ns, TenantPhase::Ready)
        .await;
    assert_eq!(ready_condition(&ready).0, "True");
    let udns = cluster
        .udns(&tenant_ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(udns.items.is_empty(), "no network: {:?}", udns.items);

    // A namespace deleted behind a Ready Tenant's back is noticed (the controller watches tenant
    // namespaces; its periodic check is minutes away) and created again once it is gone.
    let namespaces = cluster.namespaces();
    let old_uid = namespaces.get(&tenant_ns).await.unwrap().metadata.uid;
    namespaces
        .delete(&tenant_ns, &DeleteParams::default())
        .await
        .unwrap();
    wait(
        "the namespace to be created again and the tenant Ready",
        || async {
            let namespace = namespaces.get_opt(&tenant_ns).await.ok()??;
            let tenant = tenants.get(&name).await.ok()?;
            (namespace.metadata.uid != old_uid
                && namespace.metadata.deletion_timestamp.is_none()
                && tenant.phase() == Some(TenantPhase::Ready))
            .then_some(())
        },
        || cluster.describe(&ns, &name, &tenant_ns),
    )
    .await;

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    wait(
        "the tenant and its namespace to be gone",
        || async {
            let tenant = tenants.get_opt(&name).await.ok()?;
            let namespace = namespaces.get_opt(&tenant_ns).await.ok()?;
            (tenant.is_none() && namespace.is_none()).then_some(())
        },
        || cluster.describe(&ns, &name, &tenant_ns),
    )
    .await;
    controller.stop().await;
}

/// A cluster without OVN-Kubernetes: an environment of its own, without the platform CRDs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_network_api_a_tenant_fails_naming_the_api_and_the_setting() {
    let env = TestEnv::start().unwrap();
    let cluster = Cluster {
        client: env.admin_client().await,
        env: &env,
    };
    let ns = env.namespace("tn-noapi").await;
    let controller = Controller::start(cluster.client.clone(), &ns, TenantNetwork::Udn);
    let name = tenant_object_name("delta");
    let tenant_ns = format!("{ns}-{}", enc("delta"));
    let tenants = cluster.tenants(&ns);
    tenants
        .create(&PostParams::default(), &tenant("delta"))
        .await
        .unwrap();
    let failed = cluster
        .wait_phase(&ns, &name, &tenant_ns, TenantPhase::Failed)
        .await;
    let (is_ready, reason, message) = ready_condition(&failed);
    assert_eq!(
        (is_ready.as_str(), reason.as_str()),
        ("False", "NetworkUnavailable")
    );
    for needle in [
        "UserDefinedNetwork",
        "k8s.ovn.org/v1",
        "CLOUDKIT_TENANT_NETWORK",
    ] {
        assert!(message.contains(needle), "{needle}: {message}");
    }

    // A failed Tenant is not stuck: deleting it removes its namespace and then the finalizer.
    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let namespaces = cluster.namespaces();
    wait(
        "the failed tenant and its namespace to be gone",
        || async {
            let tenant = tenants.get_opt(&name).await.ok()?;
            let namespace = namespaces.get_opt(&tenant_ns).await.ok()?;
            (tenant.is_none() && namespace.is_none()).then_some(())
        },
        || cluster.describe(&ns, &name, &tenant_ns),
    )
    .await;
    controller.stop().await;
}
