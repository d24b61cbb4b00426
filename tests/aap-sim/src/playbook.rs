//! Playbook mode: the side effects the production playbooks have on the `ComputeInstance` in a
//! job's payload, written with JSON merge patches like `kubernetes.core.k8s` with
//! `state: patched` and `merge_type: merge`.

use std::time::Duration;

use cloudkit_api::ComputeInstance;
use cloudkit_api::metadata::{AAP_FINALIZER, RECONCILED_CONFIG_VERSION_ANNOTATION};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::{Map, Value, json};

use crate::jobs::payload;

/// A Kubernetes client (which has no `Debug` of its own).
#[derive(Clone)]
pub(crate) struct KubeClient(pub kube::Client);

impl std::fmt::Debug for KubeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeClient")
    }
}

/// The `ComputeInstance` a job acts on, from its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `payload.metadata.namespace`.
    pub namespace: String,
    /// `payload.metadata.name`.
    pub name: String,
    /// `payload.status.desiredConfigVersion`, or the hash of `payload.spec` when absent.
    pub desired_version: Option<String>,
}

impl Target {
    /// Reads the target from a job's applied extra vars.
    pub fn from_extra_vars(vars: &Map<String, Value>) -> Result<Self, String> {
        let payload = payload(vars)
            .ok_or("extra_vars has no ansible_eda.event.payload (the ComputeInstance)")?;
        Self::from_payload(payload)
    }

    /// Reads the target from the ComputeInstance an event carries (the body of an EDA webhook
    /// call, or `ansible_eda.event.payload`).
    pub fn from_payload(payload: &Value) -> Result<Self, String> {
        let meta = payload
            .get("metadata")
            .ok_or("the payload has no metadata")?;
        fn text(v: Option<&Value>) -> Option<&str> {
            v.and_then(Value::as_str).filter(|s| !s.is_empty())
        }
        let name = text(meta.get("name")).ok_or("the payload has no metadata.name")?;
        let namespace =
            text(meta.get("namespace")).ok_or("the payload has no metadata.namespace")?;
        let desired_version = text(payload.pointer("/status/desiredConfigVersion"))
            .map(str::to_owned)
            .or_else(|| {
                let spec = payload.get("spec")?.clone();
                let spec: cloudkit_api::ComputeInstanceSpec = serde_json::from_value(spec).ok()?;
                Some(cloudkit_api::config_version(&spec))
            });
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            desired_version,
        })
    }
}

/// One side effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Provision, when running starts: add the `-aap` finalizer.
    AddFinalizer,
    /// Provision, before success: write the reconciled-config-version annotation.
    WriteReconciledVersion,
    /// Deprovision, when running starts: check that the payload names a CI (no write).
    Check,
    /// Deprovision, before success: remove the `-aap` finalizer.
    RemoveFinalizer,
}

impl Step {
    /// A task name as a playbook would show it.
    pub fn describe(self) -> &'static str {
        match self {
            Self::AddFinalizer => "add the computeinstance-aap finalizer",
            Self::WriteReconciledVersion => "write the reconciled-config-version annotation",
            Self::Check => "read the ComputeInstance from the event payload",
            Self::RemoveFinalizer => "remove the computeinstance-aap finalizer",
        }
    }
}

/// The merge patch that sets the finalizer list to `current` plus or minus [`AAP_FINALIZER`],
/// carrying `resource_version` for optimistic concurrency; `None` when nothing changes. A merge
/// patch replaces lists whole, so the list is read first and written back entire.
pub fn finalizer_patch(
    current: &[String],
    add: bool,
    resource_version: Option<&str>,
) -> Option<Value> {
    let present = current.iter().any(|f| f == AAP_FINALIZER);
    let list: Vec<&str> = match (add, present) {
        (true, false) => current
            .iter()
            .map(String::as_str)
            .chain([AAP_FINALIZER])
            .collect(),
        (false, true) => current
            .iter()
            .map(String::as_str)
            .filter(|f| *f != AAP_FINALIZER)
            .collect(),
        _ => return None,
    };
    let mut metadata = json!({ "finalizers": list });
    if let (Some(rv), Some(m)) = (resource_version, metadata.as_object_mut()) {
        m.insert("resourceVersion".into(), rv.into());
    }
    Some(json!({ "metadata": metadata }))
}

/// The merge patch that writes the reconciled-config-version annotation.
pub fn annotation_patch(version: &str) -> Value {
    json!({ "metadata": { "annotations": { RECONCILED_CONFIG_VERSION_ANNOTATION: version } } })
}

const CONFLICT_RETRIES: usize = 10;

/// Runs one side effect against the cluster, as the example playbooks do: merge patches, the
/// finalizer list read first and written with its resourceVersion, retried on conflicts.
pub async fn run(client: kube::Client, target: &Target, step: Step) -> Result<(), String> {
    let resource = ApiResource::erase::<ComputeInstance>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client, &target.namespace, &resource);
    let ci = format!("computeinstance {}/{}", target.namespace, target.name);
    let params = PatchParams::default();
    match step {
        Step::Check => match api.get_opt(&target.name).await {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("reading {ci}: {e}")),
        },
        Step::WriteReconciledVersion => {
            let version = target
                .desired_version
                .as_deref()
                .ok_or("the payload has no status.desiredConfigVersion and no valid spec")?;
            api.patch(
                &target.name,
                &params,
                &Patch::Merge(annotation_patch(version)),
            )
            .await
            .map(drop)
            .map_err(|e| format!("patching {ci}: {e}"))
        }
        Step::AddFinalizer | Step::RemoveFinalizer => {
            let add = step == Step::AddFinalizer;
            for attempt in 0..CONFLICT_RETRIES {
                let obj = match api.get_opt(&target.name).await {
                    Ok(Some(obj)) => obj,
                    // The CI is gone: nothing is left to release (like `state: patched`, which
                    // skips missing objects), but there is nothing to provision either.
                    Ok(None) if !add => return Ok(()),
                    Ok(None) => return Err(format!("{ci} not found")),
                    Err(e) => return Err(format!("reading {ci}: {e}")),
                };
                let current = obj.metadata.finalizers.clone().unwrap_or_default();
                let Some(patch) =
                    finalizer_patch(&current, add, obj.metadata.resource_version.as_deref())
                else {
                    return Ok(());
                };
                match api.patch(&target.name, &params, &Patch::Merge(patch)).await {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => {
                        tracing::debug!(%ci, attempt, "finalizer patch conflict, retrying");
                        tokio::time::sleep(Duration::from_millis(20 * (attempt as u64 + 1))).await;
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 && !add => return Ok(()),
                    Err(e) => return Err(format!("patching {ci}: {e}")),
                }
            }
            Err(format!(
                "patching {ci}: still conflicting after {CONFLICT_RETRIES} attempts"
            ))
        }
    }
}

/// Loads a kubeconfig file into a client.
pub(crate) async fn client_from_kubeconfig(path: &std::path::Path) -> Result<kube::Client, String> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| format!("reading kubeconfig {}: {e}", path.display()))?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", path.display()))?;
    kube::Client::try_from(config).map_err(|e| format!("kubeconfig {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn finalizer_patches() {
        let op = "cloudkit.openshift.io/computeinstance";
        assert_eq!(
            finalizer_patch(&strings(&[op]), true, Some("42")),
            Some(json!({"metadata": {"finalizers": [op, AAP_FINALIZER], "resourceVersion": "42"}}))
        );
        assert_eq!(
            finalizer_patch(&strings(&[op, AAP_FINALIZER]), true, Some("1")),
            None
        );
        assert_eq!(
            finalizer_patch(&strings(&[AAP_FINALIZER, op]), false, Some("7")),
            Some(json!({"metadata": {"finalizers": [op], "resourceVersion": "7"}}))
        );
        assert_eq!(
            finalizer_patch(&strings(&[AAP_FINALIZER]), false, None),
            Some(json!({"metadata": {"finalizers": []}}))
        );
        assert_eq!(finalizer_patch(&strings(&[op]), false, Some("1")), None);
    }

    #[test]
    fn annotation_patch_shape() {
        assert_eq!(
            annotation_patch("abc"),
            json!({"metadata": {"annotations": {"cloudkit.openshift.io/reconciled-config-version": "abc"}}})
        );
    }

    #[test]
    fn target_from_payload() {
        let vars = |payload: Value| -> Map<String, Value> {
            serde_json::from_value(json!({"ansible_eda": {"event": {"payload": payload}}})).unwrap()
        };
        let t = Target::from_extra_vars(&vars(json!({
            "metadata": {"name": "vm-1", "namespace": "ns"},
            "status": {"desiredConfigVersion": "0123456789abcdef"}
        })))
        .unwrap();
        assert_eq!(t.desired_version.as_deref(), Some("0123456789abcdef"));
        // Without a status the version is the hash of the spec.
        let t = Target::from_extra_vars(&vars(json!({
            "metadata": {"name": "vm-1", "namespace": "ns"},
            "spec": {"templateID": "test_template"}
        })))
        .unwrap();
        assert_eq!(t.desired_version.as_deref(), Some("c15fb6a31521d9c3"));
        assert!(Target::from_extra_vars(&vars(json!({"metadata": {"name": "x"}}))).is_err());
        assert!(Target::from_extra_vars(&Map::new()).is_err());
    }
}
