//! SPEC 10: on a cluster without the VirtualMachine API the operator runs, reports
//! `Available=False` (KubeVirtUnavailable), and starts tracking VMs when the API appears, without
//! a restart. Its own API server: the shared one of the other tests has the API installed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudkit_api::metadata::{COMPUTE_INSTANCE_LABEL, CONDITION_AVAILABLE, TENANT_ANNOTATION};
use cloudkit_api::names::tenant_namespace;
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, ProviderKind, Tenant};
use cloudkit_provider::{MockProvider, ProviderRegistry};
use cloudkit_reconciler::tenant::{TenantContext, TenantNetwork, run_tenants};
use cloudkit_reconciler::{
    Context, DEFAULT_RESTART_TIMEOUT, Metrics, Platform, Settings, find_condition, vm_resource,
};
use cloudkit_testenv::TestEnv;
use cloudkit_testenv::kubevirt::install_kubevirt_crds;
use kube::ResourceExt;
use kube::api::{Api, DynamicObject, PostParams};

const DEADLINE: Duration = Duration::from_secs(60);

async fn available(api: &Api<ComputeInstance>) -> Option<(String, String)> {
    let ci = api.get("vm-1").await.ok()?;
    let c = find_condition(&ci.status?.conditions, CONDITION_AVAILABLE)?.clone();
    Some((c.status, c.reason))
}

async fn wait_available(api: &Api<ComputeInstance>, want: (&str, &str)) {
    let start = Instant::now();
    loop {
        let got = available(api).await;
        if got.as_ref().map(|(s, r)| (s.as_str(), r.as_str())) == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "Available is {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracking_starts_when_the_virtual_machine_api_appears() {
    let env = TestEnv::start().expect("a test API server");
    let client = env.admin_client().await;
    let ns = env.namespace("no-kubevirt").await;

    // The rules need a provider; this CI never gets as far as a job that matters here.
    let mut provider = MockProvider::new();
    provider.expect_kind().return_const(ProviderKind::Eda);
    provider.expect_polls_remotely().return_const(false);
    provider.expect_can_cancel().return_const(false);
    provider.expect_can_find_launches().return_const(false);
    provider
        .expect_blocks_deletion_on_failure()
        .return_const(false);
    provider.expect_provision().returning(|_, _| {
        Err(cloudkit_provider::ProviderError::transport(
            "not in this test",
        ))
    });
    let settings = Settings {
        history_limit: 10,
        retry_limit: 0,
        poll_interval: Duration::from_secs(30),
        eda_grace: Duration::from_secs(300),
        launch_window: Duration::from_secs(5),
        restart_timeout: DEFAULT_RESTART_TIMEOUT,
        active: ProviderKind::Eda,
        providers: Default::default(),
    };
    let platform = Platform::new(client.clone(), Some(ns.clone()))
        .with_discovery_interval(Duration::from_millis(500));
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            ProviderRegistry::new(Arc::new(provider)),
            settings,
            Metrics::shared(),
        )
        .with_platform(platform),
    );
    let api: Api<ComputeInstance> = Api::namespaced(client.clone(), &ns);
    let tenants = tokio::spawn(run_tenants(
        Arc::new(TenantContext::new(client.clone(), TenantNetwork::None)),
        Api::<Tenant>::namespaced(client.clone(), &ns),
        std::future::pending(),
    ));
    let controller = tokio::spawn(cloudkit_reconciler::run(
        ctx,
        api.clone(),
        2,
        std::future::pending(),
    ));

    let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("t"));
    ci.annotations_mut()
        .insert(TENANT_ANNOTATION.into(), "acme".into());
    api.create(&PostParams::default(), &ci).await.unwrap();
    wait_available(&api, ("False", "KubeVirtUnavailable")).await;

    // The API appears, and a labelled VM in the tenant's namespace.
    install_kubevirt_crds(&client).await.unwrap();
    let work_ns = tenant_namespace(&ns, "acme").unwrap();
    let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &work_ns, &vm_resource());
    let vm: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm-1", "labels": {COMPUTE_INSTANCE_LABEL: "vm-1"}},
        "spec": {"running": true},
    }))
    .unwrap();
    // The tenant's namespace is made by the Tenant controller; wait for it with the create.
    let start = Instant::now();
    while let Err(e) = vms.create(&PostParams::default(), &vm).await {
        assert!(start.elapsed() < DEADLINE, "creating the VM: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_available(&api, ("False", "VirtualMachineNotReady")).await;
    let ci = api.get("vm-1").await.unwrap();
    let reference = ci.status.unwrap().virtual_machine_reference.unwrap();
    assert_eq!(reference.namespace, work_ns);
    controller.abort();
    tenants.abort();
}
