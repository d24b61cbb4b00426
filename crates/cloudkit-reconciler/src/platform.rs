//! What the ComputeInstance controller watches besides CIs: the Tenants of the watched scope
//! and the KubeVirt VirtualMachines labelled for CIs (SPEC 9.4, 10, 11).
//!
//! Both are kept in caches that a pass reads without a request; a change to a Tenant or a VM
//! wakes the CIs it concerns. A cluster without the VirtualMachine API is looked at again
//! every [`KUBEVIRT_DISCOVERY_INTERVAL`], and tracking starts when the API appears.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cloudkit_api::cache::drop_unread_metadata;
use cloudkit_api::metadata::{APP_NAME, APP_NAME_LABEL, COMPUTE_INSTANCE_LABEL, TENANT_ANNOTATION};
use cloudkit_api::names::tenant_object_name;
use cloudkit_api::shard::ShardSelector;
use cloudkit_api::{ComputeInstance, Tenant, TenantPhase, TenantSpec};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, Preconditions,
};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::availability::{VmObservation, VmView};
use crate::conditions::find_condition;
use crate::plan::{TenantChange, TenantState, TenantView};
use crate::restart::{DeleteVmi, VmiState};
use crate::writes::FIELD_MANAGER;

/// How often a cluster without the VirtualMachine API is asked again.
pub const KUBEVIRT_DISCOVERY_INTERVAL: Duration = Duration::from_secs(30);

pub use cloudkit_api::platform::{vm_resource, vmi_resource};

/// VMs by the CI name of their label; `None` while the cluster has no VirtualMachine API.
type VmIndex = Option<HashMap<String, BTreeMap<(String, String), bool>>>;

/// The Tenants and VirtualMachines of the platform, as the CI controller sees them.
#[derive(Clone)]
pub struct Platform {
    client: Client,
    namespace: Option<String>,
    tenants: Store<Tenant>,
    tenant_writer: Arc<std::sync::Mutex<Option<reflector::store::Writer<Tenant>>>>,
    vms: Arc<RwLock<VmIndex>>,
    discovery_interval: Duration,
    wake: Arc<std::sync::Mutex<Option<mpsc::UnboundedSender<ObjectRef<ComputeInstance>>>>>,
    adoptions: Arc<std::sync::Mutex<HashMap<(String, String), Adoptions>>>,
}

/// The CIs waiting to be added to one Tenant's owners, and whether a pass is writing them.
#[derive(Debug, Default)]
struct Adoptions {
    pending: Vec<OwnerReference>,
    writing: bool,
    /// Owners this process appended that the cache may not show yet.
    written: HashSet<String>,
}

impl std::fmt::Debug for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Platform")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Platform {
    /// Tenants of `namespace` (all namespaces when `None`) and the cluster's labelled VMs.
    pub fn new(client: Client, namespace: Option<String>) -> Self {
        let (tenants, writer) = reflector::store();
        Platform {
            client,
            namespace,
            tenants,
            tenant_writer: Arc::new(std::sync::Mutex::new(Some(writer))),
            vms: Arc::new(RwLock::new(None)),
            discovery_interval: KUBEVIRT_DISCOVERY_INTERVAL,
            wake: Arc::new(std::sync::Mutex::new(None)),
            adoptions: Arc::new(std::sync::Mutex::new(HashMap::new())),
        }
    }

    /// Looks for the VirtualMachine API this often while the cluster has none (default
    /// [`KUBEVIRT_DISCOVERY_INTERVAL`]).
    pub fn with_discovery_interval(mut self, interval: Duration) -> Self {
        self.discovery_interval = interval;
        self
    }

    /// A stream of CIs to reconcile because their Tenant or VM changed, and the task of the
    /// watches that feed it (and the caches); abort the task to stop them. Call once.
    pub(crate) fn start(
        &self,
    ) -> (
        impl Stream<Item = ObjectRef<ComputeInstance>> + Send + 'static,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut wake) = self.wake.lock() {
            *wake = Some(tx);
        }
        let this = self.clone();
        let task = tokio::spawn(async move {
            tokio::join!(this.watch_tenants(), this.watch_vms());
        });
        let wake =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) });
        (wake, task)
    }

    fn wake(&self, ci: ObjectRef<ComputeInstance>) {
        if let Ok(wake) = self.wake.lock()
            && let Some(tx) = wake.as_ref()
        {
            let _ = tx.send(ci);
        }
    }

    async fn watch_tenants(&self) {
        let Some(writer) = self.tenant_writer.lock().ok().and_then(|mut w| w.take()) else {
            return;
        };
        let api: Api<Tenant> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        let this = self.clone();
        // What the CIs' rules read of each Tenant, as last seen: only a change of it wakes the
        // owners. Every CI that adopts a Tenant changes its owner list, and waking all owners for
        // that would cost a pass per owner per adoption.
        let mut seen: HashMap<(String, String), (Option<TenantPhase>, Option<String>)> =
            HashMap::new();
        watcher(api, watcher::Config::default().any_semantic())
            .default_backoff()
            // A Tenant has an owner reference per CI, and its managed fields one entry per
            // reference: thousands of entries that nothing here reads.
            .modify(drop_unread_metadata::<Tenant>)
            .reflect(writer)
            .touched_objects()
            .for_each(|event| {
                if let Ok(tenant) = event {
                    let ns = tenant.namespace().unwrap_or_default();
                    let status = tenant.status.as_ref();
                    let now = (
                        status.and_then(|s| s.phase),
                        status.and_then(|s| s.namespace.clone()),
                    );
                    let key = (ns.clone(), tenant.name_any());
                    if seen.get(&key) != Some(&now) {
                        seen.insert(key, now);
                        // The CIs that own it: a Tenant turning Ready lets them start.
                        for owner in tenant.owner_references() {
                            if owner.kind == "ComputeInstance" {
                                this.wake(ObjectRef::new(&owner.name).within(&ns));
                            }
                        }
                    }
                }
                futures::future::ready(())
            })
            .await;
    }

    async fn watch_vms(&self) {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &vm_resource());
        let mut said_missing = false;
        loop {
            match api.list(&ListParams::default().limit(1)).await {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 404 => {
                    if !said_missing {
                        info!(
                            "the cluster has no kubevirt.io/v1 VirtualMachine API: CIs report Available=False (KubeVirtUnavailable) until it appears"
                        );
                        said_missing = true;
                    }
                }
                Err(e) => warn!(error = %e, "looking for the VirtualMachine API"),
            }
            tokio::time::sleep(self.discovery_interval).await;
        }
        if said_missing {
            info!("the VirtualMachine API appeared: tracking VirtualMachines");
        }
        if let Ok(mut vms) = self.vms.write() {
            *vms = Some(HashMap::new());
        }
        let config = watcher::Config::default()
            .labels(COMPUTE_INSTANCE_LABEL)
            .any_semantic();
        let stream = watcher(api, config).default_backoff();
        futures::pin_mut!(stream);
        let mut fresh: HashMap<String, BTreeMap<(String, String), bool>> = HashMap::new();
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { continue };
            let mut woken = Vec::new();
            {
                let Ok(mut guard) = self.vms.write() else {
                    continue;
                };
                let index = guard.get_or_insert_with(HashMap::new);
                match event {
                    watcher::Event::Apply(vm) => {
                        woken.extend(upsert(index, &vm, true));
                    }
                    watcher::Event::Delete(vm) => {
                        woken.extend(upsert(index, &vm, false));
                    }
                    watcher::Event::Init => fresh.clear(),
                    watcher::Event::InitApply(vm) => {
                        upsert(&mut fresh, &vm, true);
                    }
                    watcher::Event::InitDone => {
                        woken.extend(index.keys().chain(fresh.keys()).cloned());
                        *index = std::mem::take(&mut fresh);
                    }
                }
            }
            for ci_name in woken {
                for ci in self.cis_named(&ci_name) {
                    self.wake(ci);
                }
            }
        }
    }

    /// The CIs a VM label value may stand for: in the watched namespace, or in every
    /// namespace that has a Tenant when all namespaces are watched.
    fn cis_named(&self, name: &str) -> Vec<ObjectRef<ComputeInstance>> {
        match &self.namespace {
            Some(ns) => vec![ObjectRef::new(name).within(ns)],
            None => {
                let mut namespaces: Vec<String> = self
                    .tenants
                    .state()
                    .iter()
                    .filter_map(|t| t.namespace())
                    .collect();
                namespaces.sort();
                namespaces.dedup();
                namespaces
                    .iter()
                    .map(|ns| ObjectRef::new(name).within(ns))
                    .collect()
            }
        }
    }

    /// The Tenant `ci` needs, as the cache has it.
    pub(crate) fn tenant_view(&self, ci: &ComputeInstance) -> TenantView {
        let ns = ci.namespace().unwrap_or_default();
        let reference = ci.status.as_ref().and_then(|s| s.tenant_reference.clone());
        let annotation = ci
            .annotations()
            .get(TENANT_ANNOTATION)
            .filter(|v| !v.is_empty())
            .cloned();
        let (name, tenant_ns, tenant_name) = match (reference, annotation) {
            (Some(r), annotation) => (r.name, r.namespace, annotation),
            (None, Some(value)) => (tenant_object_name(&value), ns, Some(value)),
            (None, None) => return TenantView::Unnamed,
        };
        match self.tenants.get(&ObjectRef::new(&name).within(&tenant_ns)) {
            Some(t) => {
                let uid = ci.uid();
                let status = t.status.as_ref();
                TenantView::Present(TenantState {
                    name,
                    namespace: tenant_ns,
                    phase: status.and_then(|s| s.phase),
                    message: status
                        .and_then(|s| find_condition(&s.conditions, "Ready"))
                        .map(|c| c.message.clone()),
                    tenant_namespace: status.and_then(|s| s.namespace.clone()),
                    owned_by_ci: t
                        .owner_references()
                        .iter()
                        .any(|o| Some(&o.uid) == uid.as_ref()),
                })
            }
            // A reference to a Tenant that is gone, and no annotation to create it again from.
            None => match tenant_name {
                Some(tenant_name) => TenantView::Missing { name, tenant_name },
                None => TenantView::Unnamed,
            },
        }
    }

    /// The VirtualMachines labelled for `ci`.
    pub(crate) fn vm_view(&self, ci: &ComputeInstance) -> VmView {
        let Ok(guard) = self.vms.read() else {
            return VmView::Unavailable;
        };
        let Some(index) = guard.as_ref() else {
            return VmView::Unavailable;
        };
        let listed = index
            .get(&ci.name_any())
            .map(|vms| {
                vms.iter()
                    .map(|((namespace, name), ready)| VmObservation {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        ready: *ready,
                    })
                    .collect()
            })
            .unwrap_or_default();
        VmView::Listed(listed)
    }

    /// The VMI named by `ci`'s VM reference, read from the API server.
    pub(crate) async fn vmi_state(&self, ci: &ComputeInstance) -> Result<VmiState, kube::Error> {
        let Some(r) = ci
            .status
            .as_ref()
            .and_then(|s| s.virtual_machine_reference.as_ref())
        else {
            return Ok(VmiState::Unknown);
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &r.namespace, &vmi_resource());
        Ok(
            match api.get_opt(&r.kube_virt_virtual_machine_name).await? {
                Some(vmi) if vmi.metadata.deletion_timestamp.is_none() => VmiState::Present {
                    created: vmi
                        .metadata
                        .creation_timestamp
                        .as_ref()
                        .map(|t| t.0)
                        .unwrap_or_default(),
                    uid: vmi.uid().unwrap_or_default(),
                },
                _ => VmiState::Missing,
            },
        )
    }

    /// Creates or adopts the CI's Tenant. With a `shard`, the Tenant gets the CI's labels that
    /// the selector reads (an adopted Tenant only those keys it lacks: the first CI's shard
    /// keeps it), so that the Tenant controller of the same shard manages it.
    pub(crate) async fn change_tenant(
        &self,
        ci: &ComputeInstance,
        change: &TenantChange,
        shard: Option<&ShardSelector>,
    ) -> Result<(), kube::Error> {
        let ns = ci.namespace().unwrap_or_default();
        let api: Api<Tenant> = Api::namespaced(self.client.clone(), &ns);
        let owner = owner_reference(ci);
        let shard_labels = shard
            .map(|s| s.relevant_labels(ci.labels()))
            .unwrap_or_default();
        match change {
            TenantChange::Create { name, tenant_name } => {
                let mut tenant = Tenant::new(
                    name,
                    TenantSpec {
                        name: tenant_name.clone(),
                    },
                );
                tenant.metadata.namespace = Some(ns);
                let mut labels = shard_labels;
                labels.insert(APP_NAME_LABEL.to_string(), APP_NAME.to_string());
                tenant.metadata.labels = Some(labels);
                tenant.metadata.owner_references = Some(vec![owner]);
                let pp = PostParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PostParams::default()
                };
                match api.create(&pp, &tenant).await {
                    // Another CI created it first: the next pass adopts it.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    other => other.map(drop),
                }
            }
            TenantChange::Own { name } => {
                let cached = self.tenants.get(&ObjectRef::new(name).within(&ns));
                let labelled = cached
                    .as_ref()
                    .is_some_and(|t| shard_labels.keys().all(|k| t.labels().contains_key(k)));
                if labelled {
                    return self.adopt(&api, &ns, name, owner).await;
                }
                let Some(current) = api.get_opt(name).await? else {
                    return Ok(());
                };
                let mut owners = current.owner_references().to_vec();
                if owners.iter().any(|o| o.uid == owner.uid) {
                    return Ok(());
                }
                owners.push(owner);
                let missing: BTreeMap<String, String> = shard_labels
                    .into_iter()
                    .filter(|(k, _)| !current.labels().contains_key(k))
                    .collect();
                // The whole list goes back with the version it was read at, so that two CIs
                // adopting the same Tenant at once cannot drop each other.
                let mut body = serde_json::json!({"metadata": {
                    "resourceVersion": current.resource_version(),
                    "ownerReferences": owners,
                }});
                if !missing.is_empty() {
                    body["metadata"]["labels"] = serde_json::json!(missing);
                }
                let params = PatchParams {
                    field_manager: Some(FIELD_MANAGER.to_string()),
                    ..PatchParams::default()
                };
                match api.patch(name, &params, &Patch::Merge(&body)).await {
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                    other => other.map(drop),
                }
            }
        }
    }

    /// Adds `owner` to the owners of Tenant `ns/name`. CIs created in a burst for one tenant
    /// adopt it all at once: one pass at a time writes, appending every owner that arrived
    /// meanwhile in one JSON patch, so the Tenant is written a handful of times instead of once
    /// per CI (each write of a Tenant with N owners costs the API server O(N)), and appends do
    /// not conflict with each other. A pass that finds a write under way leaves its owner to it;
    /// a failed write leaves the owners to the next pass that adopts (every pass of a CI not yet
    /// an owner plans the adoption again).
    async fn adopt(
        &self,
        api: &Api<Tenant>,
        ns: &str,
        name: &str,
        owner: OwnerReference,
    ) -> Result<(), kube::Error> {
        let key = (ns.to_string(), name.to_string());
        {
            let mut adoptions = self.adoptions.lock().unwrap_or_else(|e| e.into_inner());
            let entry = adoptions.entry(key.clone()).or_default();
            if entry.written.contains(&owner.uid) {
                return Ok(());
            }
            if !entry.pending.iter().any(|o| o.uid == owner.uid) {
                entry.pending.push(owner);
            }
            if entry.writing {
                return Ok(());
            }
            entry.writing = true;
        }
        loop {
            let cached = self.tenants.get(&ObjectRef::new(name).within(ns));
            let batch = {
                let mut adoptions = self.adoptions.lock().unwrap_or_else(|e| e.into_inner());
                let entry = adoptions.entry(key.clone()).or_default();
                if let Some(tenant) = &cached {
                    // What the cache shows no longer needs remembering.
                    let shown: HashSet<&str> = tenant
                        .owner_references()
                        .iter()
                        .map(|o| o.uid.as_str())
                        .collect();
                    entry.written.retain(|uid| !shown.contains(uid.as_str()));
                }
                let batch = std::mem::take(&mut entry.pending);
                if batch.is_empty() {
                    entry.writing = false;
                    if entry.written.is_empty() {
                        adoptions.remove(&key);
                    }
                    return Ok(());
                }
                batch
            };
            let result = self.append_owners(api, name, cached, &batch).await;
            let mut adoptions = self.adoptions.lock().unwrap_or_else(|e| e.into_inner());
            let entry = adoptions.entry(key.clone()).or_default();
            match result {
                Ok(()) => entry.written.extend(batch.into_iter().map(|o| o.uid)),
                Err(e) => {
                    entry.writing = false;
                    return Err(e);
                }
            }
        }
    }

    /// Appends the owners of `batch` that `tenant` (the cached copy, else read) lacks.
    async fn append_owners(
        &self,
        api: &Api<Tenant>,
        name: &str,
        cached: Option<Arc<Tenant>>,
        batch: &[OwnerReference],
    ) -> Result<(), kube::Error> {
        let mut tenant = cached;
        for _ in 0..3 {
            let current = match tenant.take() {
                Some(t) => t,
                None => match api.get_opt(name).await? {
                    Some(t) => Arc::new(t),
                    None => return Ok(()),
                },
            };
            let Some(patch) = owner_append_patch(current.owner_references(), batch) else {
                return Ok(());
            };
            let params = PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            };
            match api.patch(name, &params, &Patch::Json::<()>(patch)).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                // The owner list was not what the copy showed (a stale cache): read it.
                Err(kube::Error::Api(s)) if s.code == 422 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Deletes the VMI of a restart, only if it is still the one observed.
    pub(crate) async fn delete_vmi(&self, target: &DeleteVmi) -> Result<(), kube::Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &target.namespace, &vmi_resource());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(target.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&target.name, &params).await {
            // Gone already, or already replaced by a newer VMI (the precondition): either way
            // the restart has happened.
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
            other => other.map(drop),
        }
    }
}

/// The JSON patch that appends the owners of `batch` missing from `current`: an atomic append
/// to the list (nobody's owner is dropped, whatever others write meanwhile), or, when the list
/// is empty, the list itself after a test that it still is. `None` when nothing is missing.
pub(crate) fn owner_append_patch(
    current: &[OwnerReference],
    batch: &[OwnerReference],
) -> Option<json_patch::Patch> {
    let mut new: Vec<&OwnerReference> = Vec::new();
    for owner in batch {
        let known = current
            .iter()
            .chain(new.iter().copied())
            .any(|o| o.uid == owner.uid);
        if !known {
            new.push(owner);
        }
    }
    if new.is_empty() {
        return None;
    }
    let ops = if current.is_empty() {
        serde_json::json!([
            { "op": "test", "path": "/metadata/ownerReferences", "value": null },
            { "op": "add", "path": "/metadata/ownerReferences", "value": new },
        ])
    } else {
        serde_json::Value::Array(
            new.iter()
                .map(|o| serde_json::json!({ "op": "add", "path": "/metadata/ownerReferences/-", "value": o }))
                .collect(),
        )
    };
    serde_json::from_value(ops).ok()
}

/// `ci` as an owner (not a controller: several CIs share a Tenant).
fn owner_reference(ci: &ComputeInstance) -> OwnerReference {
    OwnerReference {
        api_version: ComputeInstance::api_version(&()).to_string(),
        kind: ComputeInstance::kind(&()).to_string(),
        name: ci.name_any(),
        uid: ci.uid().unwrap_or_default(),
        controller: None,
        block_owner_deletion: None,
    }
}

/// Records `vm` (or its removal) in `index`; answers the CI names whose VMs changed.
fn upsert(
    index: &mut HashMap<String, BTreeMap<(String, String), bool>>,
    vm: &DynamicObject,
    present: bool,
) -> Option<String> {
    let ci = vm.labels().get(COMPUTE_INSTANCE_LABEL)?.clone();
    let key = (vm.namespace().unwrap_or_default(), vm.name_any());
    let ready = vm.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True");
    let entry = index.entry(ci.clone()).or_default();
    let changed = if present {
        entry.insert(key, ready) != Some(ready)
    } else {
        entry.remove(&key).is_some()
    };
    if entry.is_empty() {
        index.remove(&ci);
    }
    changed.then_some(ci)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "cloudkit.openshift.io/v1alpha1".into(),
            kind: "ComputeInstance".into(),
            name: format!("vm-{uid}"),
            uid: uid.into(),
            controller: None,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn owners_are_appended_once_each() {
        let current = vec![owner("a")];
        let batch = vec![owner("b"), owner("a"), owner("c"), owner("b")];
        let patch = serde_json::to_value(owner_append_patch(&current, &batch).unwrap()).unwrap();
        let added: Vec<&str> = patch
            .as_array()
            .unwrap()
            .iter()
            .map(|op| {
                assert_eq!(op["op"], "add");
                assert_eq!(op["path"], "/metadata/ownerReferences/-");
                op["value"]["uid"].as_str().unwrap()
            })
            .collect();
        assert_eq!(added, ["b", "c"]);
        assert!(owner_append_patch(&current, &[owner("a")]).is_none());
        // An empty list is written whole, after a test that it still is empty.
        let patch = serde_json::to_value(owner_append_patch(&[], &[owner("a")]).unwrap()).unwrap();
        assert_eq!(
            patch,
            serde_json::json!([
                {"op": "test", "path": "/metadata/ownerReferences", "value": null},
                {"op": "add", "path": "/metadata/ownerReferences", "value": [owner("a")]},
            ])
        );
    }
}
