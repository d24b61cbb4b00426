//! The platform around the operator, for tests: schema-less CRDs for KubeVirt, CDI and
//! OVN-Kubernetes, and a fake KubeVirt that behaves, as far as the operator and the automation
//! can see, like the real one (SPEC 8.1).
//!
//! The environment of [`crate::shared()`] has the CRDs installed and runs one fake for the whole
//! test process ([`shared_fake()`]), so that two fakes never manage the same VirtualMachine.
//!
//! The fake is a loop over the labelled VirtualMachines of the whole cluster. A VM with
//! `spec.running: true` gets one VirtualMachineInstance of its name (created about a second after
//! the VM, or after the VMI was deleted, as KubeVirt does on a restart) and the status condition
//! `Ready=True` once its VMI exists; a VM with `spec.running: false` loses its VMI and turns
//! `Ready=False`. VMIs whose VM is gone are deleted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::crds::{install, load_crds};
use crate::error::Result;

/// Label the automation puts on a VirtualMachine: the name of its ComputeInstance.
pub const VM_LABEL: &str = "cloudkit.openshift.io/computeinstance";

/// How long the fake takes to (re)create a VMI.
pub const VMI_DELAY: Duration = Duration::from_secs(1);

const TICK: Duration = Duration::from_millis(200);

/// The directory of the platform CRDs (`tests/testenv/platform-crds`).
pub fn platform_crds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("platform-crds")
}

/// Installs the CRDs of VirtualMachine, VirtualMachineInstance, DataVolume and
/// UserDefinedNetwork and waits until they are Established. Installing them twice is harmless.
pub async fn install_platform_crds(client: &Client) -> Result<()> {
    let crds = load_crds(&platform_crds_dir())?;
    install(client, &crds, Duration::from_secs(30)).await
}

/// Installs only the KubeVirt CRDs (VirtualMachine, VirtualMachineInstance).
pub async fn install_kubevirt_crds(client: &Client) -> Result<()> {
    let crds: Vec<_> = load_crds(&platform_crds_dir())?
        .into_iter()
        .filter(|(path, _)| path.ends_with("kubevirt.yaml"))
        .collect();
    install(client, &crds, Duration::from_secs(30)).await
}

pub use cloudkit_api::platform::{vm_resource, vmi_resource};

/// A running fake KubeVirt; it stops when dropped.
#[derive(Debug)]
pub struct FakeKubeVirt {
    stop: Arc<AtomicBool>,
    vmis_created: Arc<Mutex<HashMap<String, usize>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

static SHARED_FAKE: OnceLock<FakeKubeVirt> = OnceLock::new();

/// The fake KubeVirt of the shared environment ([`crate::shared()`]), over every namespace;
/// starts the environment when it is not running yet.
///
/// # Panics
///
/// As [`crate::shared()`] does.
pub fn shared_fake() -> &'static FakeKubeVirt {
    let env = crate::shared();
    SHARED_FAKE.get_or_init(|| FakeKubeVirt::start_on_thread(env.kubeconfig_yaml(), ""))
}

/// Starts the fake of the shared environment (called once, when it has started).
pub(crate) fn start_shared_fake(kubeconfig_yaml: &str) {
    SHARED_FAKE.get_or_init(|| FakeKubeVirt::start_on_thread(kubeconfig_yaml, ""));
}

impl FakeKubeVirt {
    /// Starts the loop on the current tokio runtime, for the VMs of every namespace whose name
    /// starts with `namespace_prefix` (tests that run at the same time each run their own fake
    /// over their own namespaces).
    pub fn start(client: Client, namespace_prefix: &str) -> FakeKubeVirt {
        let stop = Arc::new(AtomicBool::new(false));
        let vmis_created = Arc::new(Mutex::new(HashMap::new()));
        let task = tokio::spawn(run(
            client,
            namespace_prefix.to_string(),
            stop.clone(),
            vmis_created.clone(),
        ));
        FakeKubeVirt {
            stop,
            vmis_created,
            task: Some(task),
        }
    }

    /// Starts the loop on a thread of its own with its own tokio runtime and its own
    /// administrator client (from `kubeconfig_yaml`), so that it outlives the runtime of any
    /// test. It ends at the next tick after the fake is dropped.
    pub fn start_on_thread(kubeconfig_yaml: &str, namespace_prefix: &str) -> FakeKubeVirt {
        let stop = Arc::new(AtomicBool::new(false));
        let vmis_created = Arc::new(Mutex::new(HashMap::new()));
        let (yaml, prefix) = (kubeconfig_yaml.to_string(), namespace_prefix.to_string());
        let (thread_stop, thread_created) = (stop.clone(), vmis_created.clone());
        let spawned = std::thread::Builder::new()
            .name("fake-kubevirt".into())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(r) => r,
                    Err(e) => return eprintln!("fake kubevirt: no tokio runtime: {e}"),
                };
                runtime.block_on(async move {
                    match crate::client_for(&yaml).await {
                        Ok(client) => run(client, prefix, thread_stop, thread_created).await,
                        Err(e) => eprintln!("fake kubevirt: no client: {e}"),
                    }
                });
            });
        if let Err(e) = spawned {
            eprintln!("fake kubevirt: no thread: {e}");
        }
        FakeKubeVirt {
            stop,
            vmis_created,
            task: None,
        }
    }

    /// How many VMIs the fake has created so far in `namespace` (a restart creates one more).
    pub fn vmis_created_in(&self, namespace: &str) -> usize {
        self.vmis_created
            .lock()
            .map(|m| m.get(namespace).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

impl Drop for FakeKubeVirt {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run(
    client: Client,
    prefix: String,
    stop: Arc<AtomicBool>,
    created: Arc<Mutex<HashMap<String, usize>>>,
) {
    // Per VM (namespace, name): since when it has wanted a VMI that does not exist.
    let mut missing_since: HashMap<(String, String), Instant> = HashMap::new();
    while !stop.load(Ordering::SeqCst) {
        if let Err(e) = tick(&client, &prefix, &mut missing_since, &created).await {
            // The API server may be restarting in a test; the next tick tries again.
            eprintln!("fake kubevirt: {e}");
        }
        tokio::time::sleep(TICK).await;
    }
}

async fn tick(
    client: &Client,
    prefix: &str,
    missing_since: &mut HashMap<(String, String), Instant>,
    created: &Mutex<HashMap<String, usize>>,
) -> std::result::Result<(), kube::Error> {
    let vms: Api<DynamicObject> = Api::all_with(client.clone(), &vm_resource());
    let vmis: Api<DynamicObject> = Api::all_with(client.clone(), &vmi_resource());
    let labelled = ListParams::default().labels(VM_LABEL);
    let vm_list = vms.list(&labelled).await?;
    let vmi_list = vmis.list(&ListParams::default()).await?;
    let key = |o: &DynamicObject| (o.namespace().unwrap_or_default(), o.name_any());
    let mine = |o: &&DynamicObject| o.namespace().is_some_and(|ns| ns.starts_with(prefix));
    let vm_items: Vec<&DynamicObject> = vm_list.items.iter().filter(mine).collect();
    let live_vmis: HashMap<(String, String), &DynamicObject> = vmi_list
        .items
        .iter()
        .filter(mine)
        .filter(|o| o.metadata.deletion_timestamp.is_none())
        .map(|o| (key(o), o))
        .collect();

    let mut wanted = Vec::new();
    for vm in vm_items.iter().copied() {
        let k = key(vm);
        let running = vm.data["spec"]["running"].as_bool().unwrap_or(false)
            && vm.metadata.deletion_timestamp.is_none();
        let has_vmi = live_vmis.contains_key(&k);
        let ns_vmis: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &k.0, &vmi_resource());
        let mut ready = false;
        if running {
            wanted.push(k.clone());
            if has_vmi {
                missing_since.remove(&k);
                ready = true;
            } else {
                let since = *missing_since.entry(k.clone()).or_insert_with(Instant::now);
                if since.elapsed() >= VMI_DELAY {
                    let mut vmi = DynamicObject::new(&k.1, &vmi_resource()).within(&k.0);
                    vmi.metadata.labels = vm.metadata.labels.clone();
                    vmi.data = serde_json::json!({"spec": {}, "status": {"phase": "Running"}});
                    match ns_vmis.create(&PostParams::default(), &vmi).await {
                        Ok(_) => {
                            if let Ok(mut counts) = created.lock() {
                                *counts.entry(k.0.clone()).or_insert(0) += 1;
                            }
                            missing_since.remove(&k);
                            ready = true;
                        }
                        // The old one is still terminating: try again on the next tick.
                        Err(kube::Error::Api(s)) if s.code == 409 => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        } else {
            missing_since.remove(&k);
            if has_vmi {
                delete_ignoring_missing(&ns_vmis, &k.1).await?;
            }
        }
        set_ready(client, vm, ready).await?;
    }
    // VMIs whose VirtualMachine is gone or stopped.
    for (k, _) in live_vmis {
        let labelled_vmi = vmi_list
            .items
            .iter()
            .any(|o| key(o) == k && o.labels().contains_key(VM_LABEL));
        if labelled_vmi && !wanted.contains(&k) && !vm_items.iter().any(|vm| key(vm) == k) {
            let ns_vmis: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &k.0, &vmi_resource());
            delete_ignoring_missing(&ns_vmis, &k.1).await?;
        }
    }
    Ok(())
}

async fn delete_ignoring_missing(
    api: &Api<DynamicObject>,
    name: &str,
) -> std::result::Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn set_ready(
    client: &Client,
    vm: &DynamicObject,
    ready: bool,
) -> std::result::Result<(), kube::Error> {
    let status = if ready { "True" } else { "False" };
    let current = vm.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str());
    if current == Some(status) {
        return Ok(());
    }
    let api: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &vm.namespace().unwrap_or_default(),
        &vm_resource(),
    );
    let reason = if ready { "VMIRunning" } else { "VMINotRunning" };
    let body = serde_json::json!({"status": {
        "ready": ready,
        "printableStatus": if ready { "Running" } else { "Stopped" },
        "conditions": [{
            "type": "Ready",
            "status": status,
            "reason": reason,
            "lastTransitionTime": k8s_openapi::jiff::Timestamp::now().to_string(),
        }],
    }});
    match api
        .patch_status(
            &vm.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await
    {
        Ok(_) => Ok(()),
        // Deleted meanwhile.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
