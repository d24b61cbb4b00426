//! The Tenant controller (SPEC 9.3): each Tenant gets a Namespace and, on OVN-Kubernetes, the
//! primary UserDefinedNetwork `udn` in it; deleting the Tenant deletes both, network first.
//!
//! As for ComputeInstances, the rules are a pure function ([`plan_tenant`]) from the Tenant and
//! what exists in the cluster ([`TenantObserved`]) to a [`TenantPlan`]; the shell only reads,
//! executes the plan's one step and writes the status.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudkit_api::cache::drop_unread_metadata;
use cloudkit_api::metadata::{
    APP_NAME, APP_NAME_LABEL, CONDITION_READY, PRIMARY_UDN_LABEL, PROJECT_LABEL, TENANT_FINALIZER,
    TENANT_REF_LABEL,
};
use cloudkit_api::names::tenant_namespace;
use cloudkit_api::shard::ShardSelector;
use cloudkit_api::{Tenant, TenantPhase, TenantStatus};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{debug, warn};

use crate::conditions::set_condition;
use crate::writes::FIELD_MANAGER;

/// Name of the UserDefinedNetwork in every tenant namespace.
pub const UDN_NAME: &str = "udn";

/// How long a Tenant that is still being set up (or torn down) waits before the next look.
const SETTLE_INTERVAL: Duration = Duration::from_secs(2);
/// How often a Ready Tenant is checked for a Namespace or network deleted behind its back.
const RESYNC_INTERVAL: Duration = Duration::from_secs(300);
/// Longest wait between retries of a Tenant whose setup failed.
pub const MAX_FAILURE_BACKOFF: Duration = Duration::from_secs(300);

/// Whether tenant namespaces get a primary UserDefinedNetwork (`CLOUDKIT_TENANT_NETWORK`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TenantNetwork {
    /// `udn` (the default): OVN-Kubernetes' `k8s.ovn.org/v1` UserDefinedNetwork `udn`.
    #[default]
    Udn,
    /// `none`: clusters without OVN-Kubernetes; the namespace alone makes a Tenant Ready.
    None,
}

impl TenantNetwork {
    /// The setting's name.
    pub const ENV: &'static str = "CLOUDKIT_TENANT_NETWORK";
}

impl std::str::FromStr for TenantNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "udn" => Ok(Self::Udn),
            "none" => Ok(Self::None),
            other => Err(format!("{}: {other:?} is not one of udn, none", Self::ENV)),
        }
    }
}

/// What exists of one object the Tenant owns.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Presence {
    /// Not there.
    #[default]
    Missing,
    /// There, with these labels.
    Present(BTreeMap<String, String>),
    /// There, but being deleted.
    Terminating,
    /// Its API does not exist in the cluster.
    NoApi,
}

/// What the shell found in the cluster for one Tenant.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TenantObserved {
    /// The tenant Namespace.
    pub namespace: Presence,
    /// The UserDefinedNetwork `udn` in it.
    pub network: Presence,
    /// The error of the previous step, if it failed.
    pub step_error: Option<String>,
}

/// The one change a pass makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantStep {
    /// Create the Namespace with these labels.
    CreateNamespace {
        /// Namespace name.
        name: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
    },
    /// Merge these labels into the existing Namespace.
    LabelNamespace {
        /// Namespace name.
        name: String,
        /// Labels to merge in.
        labels: BTreeMap<String, String>,
    },
    /// Create the UserDefinedNetwork `udn` in the namespace.
    CreateNetwork {
        /// Namespace name.
        namespace: String,
        /// Its labels.
        labels: BTreeMap<String, String>,
    },
    /// Delete the UserDefinedNetwork.
    DeleteNetwork {
        /// Namespace name.
        namespace: String,
    },
    /// Delete the Namespace.
    DeleteNamespace {
        /// Namespace name.
        name: String,
    },
}

/// Whether the finalizer changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantFinalizer {
    /// Leave it as it is.
    Keep,
    /// Add it before anything is created.
    Add,
    /// Remove it: everything the Tenant owned is gone.
    Remove,
}

/// What one pass over a Tenant does.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantPlan {
    /// The finalizer change, made first.
    pub finalizer: TenantFinalizer,
    /// At most one change to the cluster.
    pub step: Option<TenantStep>,
    /// The status to write when it differs from the current one.
    pub status: TenantStatus,
    /// When to look again; `None` waits for a change of the Tenant.
    pub requeue_after: Option<Duration>,
}

/// The labels of a tenant Namespace and network (SPEC 9.3), without the OVN primary-network
/// label that only a new Namespace gets.
pub fn tenant_labels(tenant_name: &str, namespace: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME_LABEL.to_string(), APP_NAME.to_string()),
        (TENANT_REF_LABEL.to_string(), tenant_name.to_string()),
        (PROJECT_LABEL.to_string(), namespace.to_string()),
    ])
}

/// The Tenant a tenant Namespace belongs to, from its `tenant-ref` label and its name
/// (`<Tenant's namespace>-<13 characters of enc()>`), so that a change of the Namespace (its
/// deletion, say) wakes the Tenant at once.
pub fn tenant_of_namespace(namespace: &Namespace) -> Option<ObjectRef<Tenant>> {
    const SUFFIX: usize = 1 + 13;
    let tenant = namespace.labels().get(TENANT_REF_LABEL)?;
    let name = namespace.metadata.name.as_deref()?;
    let split = name.len().checked_sub(SUFFIX)?;
    let (tenant_ns, suffix) = (name.get(..split)?, name.get(split..)?);
    (!tenant_ns.is_empty() && suffix.starts_with('-'))
        .then(|| ObjectRef::new(tenant).within(tenant_ns))
}

/// The rules of SPEC 9.3 for one Tenant.
pub fn plan_tenant(
    tenant: &Tenant,
    observed: &TenantObserved,
    network: TenantNetwork,
    now: Timestamp,
) -> TenantPlan {
    let generation = tenant.metadata.generation;
    let mut status = tenant.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    let has_finalizer = tenant.finalizers().iter().any(|f| f == TENANT_FINALIZER);
    let tenant_ns = tenant.namespace().unwrap_or_default();
    let name = match tenant_namespace(&tenant_ns, &tenant.spec.name) {
        Ok(name) => name,
        Err(e) if tenant.metadata.deletion_timestamp.is_none() => {
            let message = e.to_string();
            status.phase = Some(TenantPhase::Failed);
            set_ready(&mut status, false, "InvalidName", &message, generation, now);
            return TenantPlan {
                finalizer: TenantFinalizer::Keep,
                step: None,
                status,
                requeue_after: None,
            };
        }
        // A Tenant whose namespace could never be created has nothing to clean up.
        Err(_) => String::new(),
    };

    if tenant.metadata.deletion_timestamp.is_some() {
        status.phase = Some(TenantPhase::Deleting);
        set_ready(
            &mut status,
            false,
            "Deleting",
            "the tenant is being deleted",
            generation,
            now,
        );
        let gone = |p: &Presence| matches!(p, Presence::Missing | Presence::NoApi);
        let (step, finalizer) = if name.is_empty() || !has_finalizer {
            (None, TenantFinalizer::Keep)
        } else if matches!(observed.network, Presence::Present(_)) {
            (
                Some(TenantStep::DeleteNetwork {
                    namespace: name.clone(),
                }),
                TenantFinalizer::Keep,
            )
        } else if !gone(&observed.network) {
            (None, TenantFinalizer::Keep)
        } else if matches!(observed.namespace, Presence::Present(_)) {
            (
                Some(TenantStep::DeleteNamespace { name: name.clone() }),
                TenantFinalizer::Keep,
            )
        } else if !gone(&observed.namespace) {
            (None, TenantFinalizer::Keep)
        } else {
            (None, TenantFinalizer::Remove)
        };
        let requeue_after =
            (finalizer == TenantFinalizer::Keep && has_finalizer).then_some(SETTLE_INTERVAL);
        let finalizer = if has_finalizer {
            finalizer
        } else {
            TenantFinalizer::Keep
        };
        return TenantPlan {
            finalizer,
            step,
            status,
            requeue_after,
        };
    }

    let finalizer = if has_finalizer {
        TenantFinalizer::Keep
    } else {
        TenantFinalizer::Add
    };
    status.namespace = Some(name.clone());
    let labels = tenant_labels(&tenant.name_any(), &name);
    let progressing = |status: &mut TenantStatus, message: &str| {
        status.phase = Some(TenantPhase::Progressing);
        set_ready(status, false, "Progressing", message, generation, now);
    };
    let step = match &observed.namespace {
        Presence::Missing => {
            let mut all = labels.clone();
            all.insert(PRIMARY_UDN_LABEL.to_string(), String::new());
            Some(TenantStep::CreateNamespace {
                name: name.clone(),
                labels: all,
            })
        }
        Presence::Present(current) if labels.iter().any(|(k, v)| current.get(k) != Some(v)) => {
            Some(TenantStep::LabelNamespace {
                name: name.clone(),
                labels: labels.clone(),
            })
        }
        Presence::Present(_) => match (&observed.network, network) {
            (_, TenantNetwork::None) | (Presence::Present(_), TenantNetwork::Udn) => None,
            (Presence::Missing, TenantNetwork::Udn) => Some(TenantStep::CreateNetwork {
                namespace: name.clone(),
                labels: labels.clone(),
            }),
            (Presence::Terminating, TenantNetwork::Udn) => {
                progressing(&mut status, "waiting for the old network to be deleted");
                return TenantPlan {
                    finalizer,
                    step: None,
                    status,
                    requeue_after: Some(SETTLE_INTERVAL),
                };
            }
            (Presence::NoApi, TenantNetwork::Udn) => {
                let message = format!(
                    "the cluster has no UserDefinedNetwork API (k8s.ovn.org/v1); install \
                     OVN-Kubernetes or set {}=none",
                    TenantNetwork::ENV
                );
                status.phase = Some(TenantPhase::Failed);
                set_ready(
                    &mut status,
                    false,
                    "NetworkUnavailable",
                    &message,
                    generation,
                    now,
                );
                return TenantPlan {
                    finalizer,
                    step: None,
                    status,
                    requeue_after: Some(SETTLE_INTERVAL),
                };
            }
        },
        Presence::Terminating | Presence::NoApi => {
            progressing(
                &mut status,
                &format!("waiting for the old namespace {name} to be deleted"),
            );
            return TenantPlan {
                finalizer,
                step: None,
                status,
                requeue_after: Some(SETTLE_INTERVAL),
            };
        }
    };

    if let Some(error) = &observed.step_error {
        status.phase = Some(TenantPhase::Failed);
        set_ready(&mut status, false, "SetupFailed", error, generation, now);
        return TenantPlan {
            finalizer,
            step,
            status,
            requeue_after: Some(SETTLE_INTERVAL),
        };
    }
    match step {
        Some(step) => {
            progressing(
                &mut status,
                &format!("creating namespace {name} and its network"),
            );
            TenantPlan {
                finalizer,
                step: Some(step),
                status,
                requeue_after: Some(SETTLE_INTERVAL),
            }
        }
        None => {
            status.phase = Some(TenantPhase::Ready);
            let message = match network {
                TenantNetwork::Udn => format!("namespace {name} and its network {UDN_NAME} exist"),
                TenantNetwork::None => format!("namespace {name} exists"),
            };
            set_ready(&mut status, true, "Ready", &message, generation, now);
            TenantPlan {
                finalizer,
                step: None,
                status,
                requeue_after: Some(RESYNC_INTERVAL),
            }
        }
    }
}

/// How long a Tenant waits after its `failures`-th failure in a row before it is tried again:
/// doubling from the settle interval (2 s) up to [`MAX_FAILURE_BACKOFF`].
pub fn failure_backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    SETTLE_INTERVAL
        .saturating_mul(1 << doublings)
        .min(MAX_FAILURE_BACKOFF)
}

fn set_ready(
    status: &mut TenantStatus,
    ready: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_condition(
        &mut status.conditions,
        CONDITION_READY,
        ready,
        reason,
        message,
        generation,
        now,
    );
}

fn patch_params() -> kube::api::PatchParams {
    kube::api::PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..kube::api::PatchParams::default()
    }
}

/// The `k8s.ovn.org/v1` UserDefinedNetwork resource.
pub fn udn_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("k8s.ovn.org", "v1", "UserDefinedNetwork"),
        "userdefinednetworks",
    )
}

/// The UserDefinedNetwork every tenant namespace gets (SPEC 9.3, exact).
pub fn udn_object(namespace: &str, labels: &BTreeMap<String, String>) -> DynamicObject {
    let mut udn = DynamicObject::new(UDN_NAME, &udn_resource()).within(namespace);
    udn.metadata.labels = Some(labels.clone());
    udn.data = serde_json::json!({
        "spec": {
            "topology": "Layer2",
            "layer2": {
                "role": "Primary",
                "subnets": ["10.200.0.0/16"],
                "ipam": {"lifecycle": "Persistent"},
            },
        },
    });
    udn
}

/// Errors of a Tenant pass.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// Shared state of the Tenant controller.
#[derive(Clone)]
pub struct TenantContext {
    client: Client,
    network: TenantNetwork,
    /// Failures in a row per Tenant (`namespace/name`), for the retry backoff.
    failures: Arc<Mutex<HashMap<String, u32>>>,
    /// Only the Tenants it selects, when the operator is one shard of several.
    shard: Option<ShardSelector>,
}

impl std::fmt::Debug for TenantContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantContext")
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl TenantContext {
    /// A context that creates networks per `network`.
    pub fn new(client: Client, network: TenantNetwork) -> Self {
        TenantContext {
            client,
            network,
            failures: Arc::default(),
            shard: None,
        }
    }

    /// Manages only the Tenants `shard` selects: those its CIs created or adopted first (they
    /// carry the CI's labels the selector reads).
    pub fn with_shard(mut self, shard: ShardSelector) -> Self {
        self.shard = Some(shard);
        self
    }

    /// Counts one more failure of `tenant` and gives the wait before the next try.
    fn failed(&self, tenant: &Tenant) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key(tenant)).or_default();
        *n = n.saturating_add(1);
        failure_backoff(*n)
    }

    /// `tenant` is fine (or gone): its next failure starts the backoff again.
    fn succeeded(&self, tenant: &Tenant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(&key(tenant));
    }
}

fn key(tenant: &Tenant) -> String {
    format!(
        "{}/{}",
        tenant.namespace().unwrap_or_default(),
        tenant.name_any()
    )
}

/// Runs the Tenant controller over `api` until `shutdown` completes. Besides the Tenants it
/// watches the tenant Namespaces (those with the `tenant-ref` label), so that a Namespace that
/// goes away, during a teardown or behind a Ready Tenant's back, is noticed at once.
pub async fn run_tenants(
    ctx: Arc<TenantContext>,
    api: Api<Tenant>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let mut config = watcher::Config::default().any_semantic();
    if let Some(shard) = &ctx.shard {
        config = config.labels_from(shard.selector());
    }
    let (reader, writer) = reflector::store();
    // As `Controller::new`, with the managed fields dropped from the cache (one entry per owner
    // reference, and a Tenant has an owner reference per CI).
    let tenants = watcher(api, config)
        .modify(drop_unread_metadata::<Tenant>)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(tenants, reader)
        .watches(
            namespaces,
            watcher::Config::default()
                .labels(TENANT_REF_LABEL)
                .any_semantic(),
            |ns| tenant_of_namespace(&ns),
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile_tenant, tenant_error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "tenant reconcile loop");
            }
        })
        .await;
}

fn tenant_error_policy(
    tenant: Arc<Tenant>,
    error: &TenantError,
    ctx: Arc<TenantContext>,
) -> Action {
    let retry = ctx.failed(&tenant);
    warn!(
        tenant = %key(&tenant),
        error = %error,
        retry_in = ?retry,
        "tenant reconcile failed"
    );
    Action::requeue(retry)
}

/// One pass over a Tenant.
pub async fn reconcile_tenant(
    tenant: Arc<Tenant>,
    ctx: Arc<TenantContext>,
) -> Result<Action, TenantError> {
    let ns_name = tenant_namespace(&tenant.namespace().unwrap_or_default(), &tenant.spec.name)
        .unwrap_or_default();
    let mut observed = observe_tenant(&ctx, &ns_name).await?;
    let mut plan = plan_tenant(&tenant, &observed, ctx.network, Timestamp::now());
    let api: Api<Tenant> =
        Api::namespaced(ctx.client.clone(), &tenant.namespace().unwrap_or_default());

    if plan.finalizer == TenantFinalizer::Add {
        let mut finalizers = tenant.finalizers().to_vec();
        finalizers.push(TENANT_FINALIZER.to_string());
        patch_finalizers(&api, &tenant, &finalizers).await?;
    }
    if let Some(step) = &plan.step
        && let Err(e) = execute(&ctx, step).await
    {
        match &e {
            kube::Error::Api(s)
                if s.code == 404 && matches!(step, TenantStep::CreateNetwork { .. }) =>
            {
                // Creating in an existing namespace answers 404 only when the resource
                // type itself is unknown.
                observed.network = Presence::NoApi;
            }
            _ => observed.step_error = Some(e.to_string()),
        }
        plan = plan_tenant(&tenant, &observed, ctx.network, Timestamp::now());
    }
    if tenant.status.as_ref() != Some(&plan.status) && plan.finalizer != TenantFinalizer::Remove {
        let body = serde_json::json!({ "status": plan.status });
        api.patch_status(&tenant.name_any(), &patch_params(), &Patch::Merge(&body))
            .await?;
    }
    if plan.finalizer == TenantFinalizer::Remove {
        let finalizers: Vec<String> = tenant
            .finalizers()
            .iter()
            .filter(|f| *f != TENANT_FINALIZER)
            .cloned()
            .collect();
        match patch_finalizers(&api, &tenant, &finalizers).await {
            Err(TenantError::Kube(kube::Error::Api(s))) if s.code == 404 => {}
            other => other?,
        }
    }
    let requeue_after = if plan.status.phase == Some(TenantPhase::Failed) {
        // Retried with backoff; a name that cannot work (no requeue) waits for a change.
        plan.requeue_after.map(|_| ctx.failed(&tenant))
    } else {
        ctx.succeeded(&tenant);
        plan.requeue_after
    };
    Ok(match requeue_after {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

async fn patch_finalizers(
    api: &Api<Tenant>,
    tenant: &Tenant,
    finalizers: &[String],
) -> Result<(), TenantError> {
    let body = serde_json::json!({
        "metadata": {
            "resourceVersion": tenant.resource_version(),
            "finalizers": finalizers,
        }
    });
    api.patch(&tenant.name_any(), &patch_params(), &Patch::Merge(&body))
        .await?;
    Ok(())
}

async fn observe_tenant(ctx: &TenantContext, ns_name: &str) -> Result<TenantObserved, TenantError> {
    let mut observed = TenantObserved::default();
    if ns_name.is_empty() {
        return Ok(observed);
    }
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    observed.namespace = match namespaces.get_opt(ns_name).await? {
        None => Presence::Missing,
        Some(ns) if ns.metadata.deletion_timestamp.is_some() => Presence::Terminating,
        Some(ns) => Presence::Present(ns.metadata.labels.unwrap_or_default()),
    };
    if ctx.network == TenantNetwork::Udn
        && matches!(
            observed.namespace,
            Presence::Present(_) | Presence::Terminating
        )
    {
        let udns: Api<DynamicObject> =
            Api::namespaced_with(ctx.client.clone(), ns_name, &udn_resource());
        observed.network = match udns.get_opt(UDN_NAME).await {
            Ok(None) => Presence::Missing,
            Ok(Some(u)) if u.metadata.deletion_timestamp.is_some() => Presence::Terminating,
            Ok(Some(u)) => Presence::Present(u.metadata.labels.unwrap_or_default()),
            // The resource type is unknown: a GET of an unknown type answers 404 without the
            // object's name in its details.
            Err(kube::Error::Api(s)) if s.code == 404 => Presence::NoApi,
            Err(e) => return Err(e.into()),
        };
    } else {
        observed.network = Presence::Missing;
    }
    Ok(observed)
}

async fn execute(ctx: &TenantContext, step: &TenantStep) -> Result<(), kube::Error> {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    let pp = PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    };
    let ignore = |r: Result<(), kube::Error>, code: u16| match r {
        Err(kube::Error::Api(s)) if s.code == code => Ok(()),
        other => other,
    };
    match step {
        TenantStep::CreateNamespace { name, labels } => {
            let mut ns = Namespace::default();
            ns.metadata.name = Some(name.clone());
            ns.metadata.labels = Some(labels.clone());
            ignore(namespaces.create(&pp, &ns).await.map(drop), 409)
        }
        TenantStep::LabelNamespace { name, labels } => {
            let body = serde_json::json!({"metadata": {"labels": labels}});
            namespaces
                .patch(name, &patch_params(), &Patch::Merge(&body))
                .await
                .map(drop)
        }
        TenantStep::CreateNetwork { namespace, labels } => {
            let udns: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), namespace, &udn_resource());
            ignore(
                udns.create(&pp, &udn_object(namespace, labels))
                    .await
                    .map(drop),
                409,
            )
        }
        TenantStep::DeleteNetwork { namespace } => {
            let udns: Api<DynamicObject> =
                Api::namespaced_with(ctx.client.clone(), namespace, &udn_resource());
            ignore(
                udns.delete(UDN_NAME, &DeleteParams::default())
                    .await
                    .map(drop),
                404,
            )
        }
        TenantStep::DeleteNamespace { name } => ignore(
            namespaces
                .delete(name, &DeleteParams::default())
                .await
                .map(drop),
            404,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudkit_api::TenantSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NS: &str = "cloudkit-computeinstance";
    const TENANT_NS: &str = "cloudkit-computeinstance-a4snha7u63pa6";

    fn tenant() -> Tenant {
        let mut t = Tenant::new(
            "tenant-a4snha7u63pa6",
            TenantSpec {
                name: "acme".into(),
            },
        );
        t.metadata.namespace = Some(NS.into());
        t.metadata.generation = Some(1);
        t
    }

    fn finalized() -> Tenant {
        let mut t = tenant();
        t.metadata.finalizers = Some(vec![TENANT_FINALIZER.into()]);
        t
    }

    fn deleting() -> Tenant {
        let mut t = finalized();
        t.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        t
    }

    fn labels() -> BTreeMap<String, String> {
        tenant_labels("tenant-a4snha7u63pa6", TENANT_NS)
    }

    fn observed(namespace: Presence, network: Presence) -> TenantObserved {
        TenantObserved {
            namespace,
            network,
            step_error: None,
        }
    }

    fn plan(t: &Tenant, o: &TenantObserved, n: TenantNetwork) -> TenantPlan {
        plan_tenant(t, o, n, Timestamp::UNIX_EPOCH)
    }

    fn ready(p: &TenantPlan) -> (bool, String, String) {
        let c = p
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY);
        c.map(|c| (c.status == "True", c.reason.clone(), c.message.clone()))
            .unwrap_or_default()
    }

    #[test]
    fn setup_rows() {
        use Presence::*;
        use TenantNetwork as N;
        let present = || Present(labels());
        let mut create_labels = labels();
        create_labels.insert(PRIMARY_UDN_LABEL.into(), String::new());
        #[allow(clippy::type_complexity)]
        let rows: Vec<(
            &str,
            Tenant,
            TenantObserved,
            N,
            TenantFinalizer,
            Option<TenantStep>,
            TenantPhase,
        )> = vec![
            (
                "a new Tenant gets its finalizer and its namespace with all four labels",
                tenant(),
                observed(Missing, Missing),
                N::Udn,
                TenantFinalizer::Add,
                Some(TenantStep::CreateNamespace {
                    name: TENANT_NS.into(),
                    labels: create_labels,
                }),
                TenantPhase::Progressing,
            ),
            (
                "an existing namespace gets the three labels merged in",
                finalized(),
                observed(
                    Present(BTreeMap::from([("team".into(), "x".into())])),
                    Missing,
                ),
                N::Udn,
                TenantFinalizer::Keep,
                Some(TenantStep::LabelNamespace {
                    name: TENANT_NS.into(),
                    labels: labels(),
                }),
                TenantPhase::Progressing,
            ),
            (
                "the network follows the namespace",
                finalized(),
                observed(present(), Missing),
                N::Udn,
                TenantFinalizer::Keep,
                Some(TenantStep::CreateNetwork {
                    namespace: TENANT_NS.into(),
                    labels: labels(),
                }),
                TenantPhase::Progressing,
            ),
            (
                "both exist: Ready",
                finalized(),
                observed(present(), present()),
                N::Udn,
                TenantFinalizer::Keep,
                None,
                TenantPhase::Ready,
            ),
            (
                "network none: the namespace alone is Ready",
                finalized(),
                observed(present(), Missing),
                N::None,
                TenantFinalizer::Keep,
                None,
                TenantPhase::Ready,
            ),
            (
                "no UserDefinedNetwork API with udn: Failed, not a crash loop",
                finalized(),
                observed(present(), NoApi),
                N::Udn,
                TenantFinalizer::Keep,
                None,
                TenantPhase::Failed,
            ),
            (
                "a namespace still terminating is waited for",
                finalized(),
                observed(Terminating, Missing),
                N::Udn,
                TenantFinalizer::Keep,
                None,
                TenantPhase::Progressing,
            ),
        ];
        for (name, t, o, n, finalizer, step, phase) in rows {
            let p = plan(&t, &o, n);
            assert_eq!(p.finalizer, finalizer, "{name}");
            assert_eq!(p.step, step, "{name}");
            assert_eq!(p.status.phase, Some(phase), "{name}");
            assert_eq!(p.status.namespace.as_deref(), Some(TENANT_NS), "{name}");
            let (is_ready, reason, message) = ready(&p);
            assert_eq!(is_ready, phase == TenantPhase::Ready, "{name}");
            assert!(
                !message.is_empty(),
                "{name}: a condition always explains itself"
            );
            assert!(
                cloudkit_api::conditions::is_valid_reason(&reason),
                "{name}: {reason}"
            );
            assert!(
                p.requeue_after.is_some(),
                "{name}: every state is looked at again"
            );
        }
    }

    #[test]
    fn missing_network_api_names_the_api_and_the_setting() {
        let p = plan(
            &finalized(),
            &observed(Presence::Present(labels()), Presence::NoApi),
            TenantNetwork::Udn,
        );
        let (_, reason, message) = ready(&p);
        assert_eq!(reason, "NetworkUnavailable");
        assert!(message.contains("k8s.ovn.org/v1"), "{message}");
        assert!(
            message.contains("CLOUDKIT_TENANT_NETWORK=none"),
            "{message}"
        );
    }

    #[test]
    fn a_failed_step_is_reported_and_retried() {
        let mut o = observed(Presence::Present(labels()), Presence::Missing);
        o.step_error = Some("forbidden: cannot create userdefinednetworks".into());
        let p = plan(&finalized(), &o, TenantNetwork::Udn);
        assert_eq!(p.status.phase, Some(TenantPhase::Failed));
        assert_eq!(ready(&p).2, "forbidden: cannot create userdefinednetworks");
        assert!(p.step.is_some(), "the step is tried again");
    }

    #[test]
    fn a_namespace_name_over_63_characters_fails_the_tenant() {
        let mut t = tenant();
        t.metadata.namespace = Some("n".repeat(50));
        let p = plan(
            &t,
            &observed(Presence::Missing, Presence::Missing),
            TenantNetwork::Udn,
        );
        assert_eq!(p.status.phase, Some(TenantPhase::Failed));
        assert_eq!(p.step, None);
        assert!(ready(&p).2.contains("at most 63"), "{}", ready(&p).2);
    }

    #[test]
    fn deletion_removes_the_network_then_the_namespace_then_the_finalizer() {
        use Presence::*;
        let rows = [
            (
                observed(Present(labels()), Present(labels())),
                Some(TenantStep::DeleteNetwork {
                    namespace: TENANT_NS.into(),
                }),
                TenantFinalizer::Keep,
            ),
            (
                observed(Present(labels()), Terminating),
                None,
                TenantFinalizer::Keep,
            ),
            (
                observed(Present(labels()), Missing),
                Some(TenantStep::DeleteNamespace {
                    name: TENANT_NS.into(),
                }),
                TenantFinalizer::Keep,
            ),
            (
                observed(Present(labels()), NoApi),
                Some(TenantStep::DeleteNamespace {
                    name: TENANT_NS.into(),
                }),
                TenantFinalizer::Keep,
            ),
            (observed(Terminating, Missing), None, TenantFinalizer::Keep),
            (observed(Missing, Missing), None, TenantFinalizer::Remove),
        ];
        for (o, step, finalizer) in rows {
            let p = plan(&deleting(), &o, TenantNetwork::Udn);
            assert_eq!(p.status.phase, Some(TenantPhase::Deleting), "{o:?}");
            assert_eq!(p.step, step, "{o:?}");
            assert_eq!(p.finalizer, finalizer, "{o:?}");
        }
        let mut without = deleting();
        without.metadata.finalizers = None;
        let p = plan(
            &without,
            &observed(Present(labels()), Present(labels())),
            TenantNetwork::Udn,
        );
        assert_eq!(
            (p.step, p.finalizer),
            (None, TenantFinalizer::Keep),
            "not ours to clean up"
        );
    }

    #[test]
    fn the_network_is_exactly_the_go_operators() {
        let udn = udn_object(TENANT_NS, &labels());
        let json = serde_json::to_value(&udn).unwrap_or_default();
        assert_eq!(json["apiVersion"], "k8s.ovn.org/v1");
        assert_eq!(json["kind"], "UserDefinedNetwork");
        assert_eq!(json["metadata"]["name"], "udn");
        assert_eq!(
            json["spec"],
            serde_json::json!({"topology": "Layer2", "layer2": {"role": "Primary",
                "subnets": ["10.200.0.0/16"], "ipam": {"lifecycle": "Persistent"}}})
        );
        assert_eq!(json["metadata"]["labels"][PROJECT_LABEL], TENANT_NS);
    }

    #[test]
    fn failures_back_off_up_to_five_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 4, 8, 9, 100, u32::MAX]
            .into_iter()
            .map(|n| failure_backoff(n).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 256, 300, 300, 300]);
        assert_eq!(failure_backoff(0), SETTLE_INTERVAL);
    }

    #[test]
    fn a_tenant_namespace_names_its_tenant() {
        let ns = |name: &str, labels: &[(&str, &str)]| {
            let mut n = Namespace::default();
            n.metadata.name = Some(name.into());
            n.metadata.labels = Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
            n
        };
        let tenant = tenant_of_namespace(&ns(TENANT_NS, &[(TENANT_REF_LABEL, "tenant-x")]));
        assert_eq!(tenant, Some(ObjectRef::new("tenant-x").within(NS)));
        for (name, labels) in [
            (TENANT_NS, &[][..]),
            ("a4snha7u63pa6", &[(TENANT_REF_LABEL, "t")][..]),
            ("-a4snha7u63pa6", &[(TENANT_REF_LABEL, "t")][..]),
            ("nsxa4snha7u63pa6", &[(TENANT_REF_LABEL, "t")][..]),
        ] {
            assert_eq!(tenant_of_namespace(&ns(name, labels)), None, "{name}");
        }
    }

    #[test]
    fn network_setting_values() {
        assert_eq!("udn".parse::<TenantNetwork>(), Ok(TenantNetwork::Udn));
        assert_eq!("none".parse::<TenantNetwork>(), Ok(TenantNetwork::None));
        let err = "ovn".parse::<TenantNetwork>().err().unwrap_or_default();
        assert!(err.contains("CLOUDKIT_TENANT_NETWORK"), "{err}");
    }
}
