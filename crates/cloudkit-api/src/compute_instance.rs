//! The `ComputeInstance` custom resource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::job::JobStatus;

/// Desired state of a virtual machine.
// The field order is the Go operator's: the configuration hash (`crate::config_version`) depends
// on it.
// Each `printcolumn(...)` repeats `type_ = ...`, which clippy mistakes for a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "cloudkit.openshift.io",
    version = "v1alpha1",
    kind = "ComputeInstance",
    plural = "computeinstances",
    singular = "computeinstance",
    shortname = "ci",
    namespaced,
    status = "ComputeInstanceStatus",
    derive = "PartialEq",
    doc = "A virtual machine provisioned by Ansible automation.",
    printcolumn(name = "Template", type_ = "string", json_path = ".spec.templateID"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Job",
        type_ = "string",
        description = "Type of the most recently recorded job",
        json_path = ".status.jobs[-1:].type"
    ),
    printcolumn(
        name = "Job State",
        type_ = "string",
        description = "State of the most recently recorded job",
        json_path = ".status.jobs[-1:].state"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ComputeInstanceSpec {
    /// Name of the automation template that builds the VM (no hyphens: it is also an Ansible
    /// identifier).
    #[serde(rename = "templateID")]
    #[schemars(pattern(r"^[a-zA-Z_][a-zA-Z0-9._]*$"))]
    pub template_id: String,

    /// JSON text of an object handed to the template; opaque to the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_parameters: Option<String>,

    /// Boot image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("image is immutable"))]
    pub image: Option<ImageSpec>,

    /// Virtual CPU cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("cores is immutable"))]
    pub cores: Option<i32>,

    /// Memory in GiB.
    #[serde(default, rename = "memoryGiB", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("memoryGiB is immutable"))]
    pub memory_gib: Option<i32>,

    /// Boot disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("bootDisk is immutable"))]
    pub boot_disk: Option<DiskSpec>,

    /// Further disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("additionalDisks is immutable"))]
    pub additional_disks: Vec<DiskSpec>,

    /// Whether the VM should run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_strategy: Option<RunStrategy>,

    /// Secret holding cloud-init user data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("userDataSecretRef is immutable"))]
    pub user_data_secret_ref: Option<SecretRef>,

    /// Public SSH key installed in the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("sshKey is immutable"))]
    pub ssh_key: Option<String>,

    /// A restart signal, not configuration: changing it does not change the configuration version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_requested_at: Option<Time>,
}

/// Where the boot image comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImageSpec {
    /// Kind of source.
    pub source_type: ImageSourceType,
    /// Reference within the source, e.g. a container image.
    #[schemars(length(min = 1))]
    pub source_ref: String,
}

/// Kind of image source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageSourceType {
    /// A container registry (containerDisk).
    Registry,
}

/// A disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DiskSpec {
    /// Size in GiB.
    #[serde(rename = "sizeGiB")]
    #[schemars(range(min = 1))]
    pub size_gib: i32,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// Whether the VM should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RunStrategy {
    /// Keep it running.
    Always,
    /// Keep it stopped.
    Halted,
}

/// Reference to a Secret in the CI's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
}

/// Coarse lifecycle phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// No configuration applied yet.
    Starting,
    /// A configuration has been applied.
    Running,
    /// The latest provision for the current configuration failed and no retry is pending.
    Failed,
    /// Deletion has started.
    Deleting,
}

/// Observed state, written by the operator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputeInstanceStatus {
    /// Coarse lifecycle phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Standard conditions: ConfigurationApplied, DeletionBlocked, and the Go operator's
    /// Accepted, Progressing, Available, Deleting, RestartInProgress, RestartFailed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "crate::conditions::conditions_schema")]
    pub conditions: Vec<Condition>,
    /// Generation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Hash of the spec; compare with reconciledConfigVersion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_config_version: Option<String>,
    /// The configuration version the automation last applied (from the
    /// cloudkit.openshift.io/reconciled-config-version annotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconciled_config_version: Option<String>,
    /// Job history, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobStatus>,
    /// The `spec.restartRequestedAt` of the last restart that completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restarted_at: Option<Time>,
    /// The Tenant this CI runs in; once set, it is not derived again from the annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_reference: Option<TenantReference>,
    /// The KubeVirt VirtualMachine the automation created for this CI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_machine_reference: Option<VirtualMachineReference>,
}

/// Reference to a `Tenant`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TenantReference {
    /// Name of the Tenant.
    pub name: String,
    /// Namespace of the Tenant (the CI's namespace).
    pub namespace: String,
}

/// Reference to a KubeVirt `VirtualMachine`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachineReference {
    /// Namespace of the VirtualMachine (the tenant's namespace).
    pub namespace: String,
    /// Name of the VirtualMachine.
    pub kube_virt_virtual_machine_name: String,
}

/// Why a spec cannot be acted on although the API server accepted it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// `templateParameters` is not the JSON text of an object.
    #[error("spec.templateParameters must be the JSON text of an object: {0}")]
    TemplateParameters(String),
}

impl ComputeInstanceSpec {
    /// A spec with only the template set.
    pub fn for_template(template_id: impl Into<String>) -> Self {
        ComputeInstanceSpec {
            template_id: template_id.into(),
            template_parameters: None,
            image: None,
            cores: None,
            memory_gib: None,
            boot_disk: None,
            additional_disks: Vec::new(),
            run_strategy: None,
            user_data_secret_ref: None,
            ssh_key: None,
            restart_requested_at: None,
        }
    }

    /// The parsed `templateParameters`, when present. An error when it is not a JSON object.
    pub fn template_parameters_object(
        &self,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, SpecError> {
        let Some(text) = &self.template_parameters else {
            return Ok(None);
        };
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => Ok(Some(map)),
            Ok(other) => Err(SpecError::TemplateParameters(format!(
                "got {}",
                json_kind(&other)
            ))),
            Err(e) => Err(SpecError::TemplateParameters(e.to_string())),
        }
    }

    /// Checks what the CRD schema cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        self.template_parameters_object().map(|_| ())
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_parameters_rules() {
        let rows: [(Option<&str>, bool); 9] = [
            (None, true),
            (Some("{}"), true),
            (Some(r#"{"key": "value", "n": [1, 2]}"#), true),
            (Some(""), false),
            (Some("[]"), false),
            (Some("\"text\""), false),
            (Some("null"), false),
            (Some("{"), false),
            (Some(r#"{"a": 1} trailing"#), false),
        ];
        for (text, ok) in rows {
            let mut spec = ComputeInstanceSpec::for_template("t");
            spec.template_parameters = text.map(str::to_string);
            assert_eq!(spec.validate().is_ok(), ok, "{text:?}");
        }
        let mut spec = ComputeInstanceSpec::for_template("t");
        spec.template_parameters = Some("[1]".into());
        let err = spec
            .validate()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("spec.templateParameters"), "{err}");
        assert!(err.contains("an array"), "{err}");
    }
}
