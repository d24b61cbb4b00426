//! The `Tenant` custom resource: a user's tenancy, with its own Namespace (and, on OVN-Kubernetes,
//! its primary UserDefinedNetwork) in which the automation creates the tenant's VMs.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a tenant.
// Each `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cloudkit.openshift.io",
    version = "v1alpha1",
    kind = "Tenant",
    plural = "tenants",
    singular = "tenant",
    namespaced,
    status = "TenantStatus",
    derive = "PartialEq",
    doc = "A tenant: the namespace (and network) in which its virtual machines run.",
    printcolumn(name = "Tenant Name", type_ = "string", json_path = ".spec.name"),
    printcolumn(
        name = "Tenant Namespace",
        type_ = "string",
        json_path = ".status.namespace"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase")
)]
pub struct TenantSpec {
    /// The tenant's name as users know it (the ComputeInstance annotation
    /// `cloudkit.openshift.io/tenant`).
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable once set"))]
    pub name: String,
}

/// Coarse lifecycle phase of a Tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TenantPhase {
    /// The namespace or network is being created.
    Progressing,
    /// The namespace and network exist.
    Ready,
    /// They could not be created; the `Ready` condition says why.
    Failed,
    /// Deletion has started.
    Deleting,
}

/// Observed state of a Tenant, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// Coarse lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<TenantPhase>,
    /// The tenant's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Standard conditions: Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

impl Tenant {
    /// The Tenant's phase, when it has one.
    pub fn phase(&self) -> Option<TenantPhase> {
        self.status.as_ref().and_then(|s| s.phase)
    }
}
