//! Exact metadata strings shared with the automation (playbooks, rulebooks) and the Go operator.

/// API group of the `ComputeInstance` resource.
pub const GROUP: &str = "cloudkit.openshift.io";

/// Finalizer owned by the operator: present while the operator still has deprovisioning to do.
pub const FINALIZER: &str = "cloudkit.openshift.io/computeinstance";

/// Finalizer owned by the automation. The create playbook adds it early; the delete playbook
/// removes it as its last step. The operator only reads it.
pub const AAP_FINALIZER: &str = "cloudkit.openshift.io/computeinstance-aap";

/// Annotation written by the automation once a configuration has been applied; its value is the
/// `status.desiredConfigVersion` the automation was given.
pub const RECONCILED_CONFIG_VERSION_ANNOTATION: &str =
    "cloudkit.openshift.io/reconciled-config-version";

/// Annotation that takes a CI out of the operator's hands, see [`ManagementState`].
pub const MANAGEMENT_STATE_ANNOTATION: &str = "cloudkit.openshift.io/management-state";

/// Annotation a user changes to a new value to run a failed provision or deprovision again.
pub const RETRY_ANNOTATION: &str = "cloudkit.openshift.io/retry";

/// Annotation in which the operator records the first provision intent of a new CI, together
/// with its finalizer; it counts only until the operator first writes the status (see
/// [`crate::intent`]).
pub const PROVISION_INTENT_ANNOTATION: &str = "cloudkit.openshift.io/provision-intent";

/// Label set by the fulfillment service; carried through untouched.
pub const UUID_LABEL: &str = "cloudkit.openshift.io/computeinstance-uuid";

/// Annotation on a ComputeInstance naming its tenant (SPEC 9.4); read while
/// `status.tenantReference` is empty.
pub const TENANT_ANNOTATION: &str = "cloudkit.openshift.io/tenant";

/// Finalizer the operator puts on a Tenant until its namespace and network are gone.
pub const TENANT_FINALIZER: &str = "cloudkit.openshift.io/tenant";

/// Finalizer the feedback controller puts on a ComputeInstance with the [`UUID_LABEL`] until the
/// fulfillment service has been told of its deletion.
pub const FEEDBACK_FINALIZER: &str = "cloudkit.openshift.io/computeinstance-feedback";

/// Label on a KubeVirt VirtualMachine naming the ComputeInstance it belongs to.
pub const COMPUTE_INSTANCE_LABEL: &str = "cloudkit.openshift.io/computeinstance";

/// Label `app.kubernetes.io/name` and the value the Go operator set on the objects it created.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// Value of [`APP_NAME_LABEL`] on Tenants, tenant Namespaces and networks.
pub const APP_NAME: &str = "osac-operator";
/// Label on a tenant Namespace and network naming the Tenant.
pub const TENANT_REF_LABEL: &str = "cloudkit.openshift.io/tenant-ref";
/// Label on a tenant Namespace and network naming the tenant namespace.
pub const PROJECT_LABEL: &str = "cloudkit.openshift.io/project";
/// Label that makes OVN-Kubernetes use the namespace's UserDefinedNetwork as primary network.
pub const PRIMARY_UDN_LABEL: &str = "k8s.ovn.org/primary-user-defined-network";

/// Condition type: true when the desired configuration has been applied.
pub const CONDITION_CONFIGURATION_APPLIED: &str = "ConfigurationApplied";

/// Condition type: true when a failed deprovision keeps the CI from being deleted.
pub const CONDITION_DELETION_BLOCKED: &str = "DeletionBlocked";

/// Condition type (Go operator): the CI can be acted on (its tenant is Ready).
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// Condition type (Go operator): a configuration is being applied or a job runs.
pub const CONDITION_PROGRESSING: &str = "Progressing";
/// Condition type (Go operator): the VirtualMachine is Ready.
pub const CONDITION_AVAILABLE: &str = "Available";
/// Condition type (Go operator): deletion has started.
pub const CONDITION_DELETING: &str = "Deleting";
/// Condition type (Go operator): a requested restart is under way.
pub const CONDITION_RESTART_IN_PROGRESS: &str = "RestartInProgress";
/// Condition type (Go operator): a requested restart could not be carried out.
pub const CONDITION_RESTART_FAILED: &str = "RestartFailed";
/// Condition type of a Tenant: its namespace and network exist.
pub const CONDITION_READY: &str = "Ready";

impl crate::ComputeInstance {
    /// Whether the CI carries `finalizer`.
    pub fn has_finalizer(&self, finalizer: &str) -> bool {
        self.metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|x| x == finalizer))
    }

    /// Whether the CI carries [`AAP_FINALIZER`]: the automation has started on it and has not
    /// finished deprovisioning it.
    pub fn has_aap_finalizer(&self) -> bool {
        self.has_finalizer(AAP_FINALIZER)
    }
}

/// How much of a CI's life the operator manages, from [`MANAGEMENT_STATE_ANNOTATION`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ManagementState {
    /// No annotation (or any other value): the operator manages the CI fully.
    #[default]
    Managed,
    /// `manual`: the operator runs no jobs; on delete it releases its finalizer without
    /// deprovisioning. This is the escape hatch for a blocked deletion.
    Manual,
    /// `unmanaged`: the operator does nothing at all with this CI.
    Unmanaged,
}

impl ManagementState {
    /// Reads the annotation value. Unknown values mean [`ManagementState::Managed`], so a typo
    /// never silently stops management in an unexpected way; the values are matched exactly.
    pub fn from_annotation(value: Option<&str>) -> Self {
        match value {
            Some("manual") => Self::Manual,
            Some("unmanaged") => Self::Unmanaged,
            _ => Self::Managed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ComputeInstance, ComputeInstanceSpec};

    #[test]
    fn finalizers_are_matched_exactly() {
        let mut ci = ComputeInstance::new("vm", ComputeInstanceSpec::for_template("t"));
        assert!(!ci.has_aap_finalizer(), "no finalizers");
        ci.metadata.finalizers = Some(vec![FINALIZER.into()]);
        assert!(ci.has_finalizer(FINALIZER));
        assert!(
            !ci.has_aap_finalizer(),
            "the operator's own is not the automation's"
        );
        ci.metadata.finalizers = Some(vec![FINALIZER.into(), AAP_FINALIZER.into()]);
        assert!(ci.has_aap_finalizer());
    }

    #[test]
    fn management_state_values() {
        let rows = [
            (None, ManagementState::Managed),
            (Some(""), ManagementState::Managed),
            (Some("managed"), ManagementState::Managed),
            (Some("Manual"), ManagementState::Managed),
            (Some("manual"), ManagementState::Manual),
            (Some("unmanaged"), ManagementState::Unmanaged),
        ];
        for (value, want) in rows {
            assert_eq!(ManagementState::from_annotation(value), want, "{value:?}");
        }
    }
}
