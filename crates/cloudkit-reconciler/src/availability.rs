//! SPEC 10: which KubeVirt VirtualMachine belongs to a CI, and whether it is available.
//!
//! VM observations only feed the status (the reference and the `Available` condition) and
//! restarts; they never launch or cancel jobs.

use cloudkit_api::metadata::{COMPUTE_INSTANCE_LABEL, CONDITION_AVAILABLE};
use cloudkit_api::{ComputeInstanceStatus, VirtualMachineReference};
use k8s_openapi::jiff::Timestamp;

use crate::conditions::set_condition;

/// A labelled VirtualMachine as the cache keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmObservation {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Whether its `Ready` condition is `True`.
    pub ready: bool,
}

/// What the operator knows of the VirtualMachines of one CI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VmView {
    /// The cluster has no `kubevirt.io/v1` VirtualMachine API (yet).
    Unavailable,
    /// The VirtualMachines labelled with the CI's name, in any namespace.
    Listed(Vec<VmObservation>),
}

/// Reasons of the `Available` condition.
pub mod reason {
    /// The VirtualMachine is Ready.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// The VirtualMachine exists but is not Ready.
    pub const NOT_READY: &str = "VirtualMachineNotReady";
    /// No VirtualMachine is labelled with the CI's name in its tenant's namespace.
    pub const MISSING: &str = "VirtualMachineMissing";
    /// More than one is.
    pub const TOO_MANY: &str = "TooManyVirtualMachines";
    /// The cluster has no VirtualMachine API.
    pub const KUBEVIRT_UNAVAILABLE: &str = "KubeVirtUnavailable";
}

/// Sets `status.virtualMachineReference` and the `Available` condition of the CI `ci_name`
/// whose tenant namespace is `tenant_namespace` (when known) from `vms`.
pub fn apply_availability(
    ci_name: &str,
    tenant_namespace: Option<&str>,
    vms: &VmView,
    status: &mut ComputeInstanceStatus,
    generation: Option<i64>,
    now: Timestamp,
) {
    let mut set = |available: bool, reason: &str, message: String| {
        set_condition(
            &mut status.conditions,
            CONDITION_AVAILABLE,
            available,
            reason,
            &message,
            generation,
            now,
        );
    };
    let listed = match vms {
        VmView::Unavailable => {
            set(
                false,
                reason::KUBEVIRT_UNAVAILABLE,
                "the cluster has no kubevirt.io/v1 VirtualMachine API".to_string(),
            );
            return;
        }
        VmView::Listed(listed) => listed,
    };
    let mine: Vec<&VmObservation> = listed
        .iter()
        .filter(|vm| Some(vm.namespace.as_str()) == tenant_namespace)
        .collect();
    match mine.as_slice() {
        [] => {
            let place = tenant_namespace.map_or_else(
                || "the tenant's namespace (no tenant yet)".to_string(),
                |ns| format!("namespace {ns}"),
            );
            set(
                false,
                reason::MISSING,
                format!("no VirtualMachine labelled {COMPUTE_INSTANCE_LABEL}={ci_name} in {place}"),
            );
            status.virtual_machine_reference = None;
        }
        [vm] => {
            status.virtual_machine_reference = Some(VirtualMachineReference {
                namespace: vm.namespace.clone(),
                kube_virt_virtual_machine_name: vm.name.clone(),
            });
            if vm.ready {
                set(
                    true,
                    reason::AS_EXPECTED,
                    format!("VirtualMachine {}/{} is ready", vm.namespace, vm.name),
                );
            } else {
                set(
                    false,
                    reason::NOT_READY,
                    format!("VirtualMachine {}/{} is not ready", vm.namespace, vm.name),
                );
            }
        }
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|vm| format!("{}/{}", vm.namespace, vm.name))
                .collect();
            set(
                false,
                reason::TOO_MANY,
                format!(
                    "{} VirtualMachines are labelled {COMPUTE_INSTANCE_LABEL}={ci_name}: {}",
                    names.len(),
                    names.join(", ")
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::find_condition;

    const NS: &str = "tenant-ns";

    fn vm(namespace: &str, name: &str, ready: bool) -> VmObservation {
        VmObservation {
            namespace: namespace.into(),
            name: name.into(),
            ready,
        }
    }

    fn reference(name: &str) -> Option<VirtualMachineReference> {
        Some(VirtualMachineReference {
            namespace: NS.into(),
            kube_virt_virtual_machine_name: name.into(),
        })
    }

    #[test]
    fn rows() {
        use VmView::*;
        let rows = [
            (
                "one ready VM",
                Listed(vec![vm(NS, "vm-1", true)]),
                None,
                true,
                reason::AS_EXPECTED,
                reference("vm-1"),
            ),
            (
                "one VM not ready",
                Listed(vec![vm(NS, "vm-1", false)]),
                None,
                false,
                reason::NOT_READY,
                reference("vm-1"),
            ),
            (
                "the VM went away: the reference goes with it",
                Listed(vec![]),
                reference("vm-1"),
                false,
                reason::MISSING,
                None,
            ),
            (
                "a VM in another namespace is not this CI's",
                Listed(vec![vm("elsewhere", "vm-1", true)]),
                None,
                false,
                reason::MISSING,
                None,
            ),
            (
                "two VMs: neither is chosen, the reference stays",
                Listed(vec![vm(NS, "vm-1", true), vm(NS, "vm-1b", true)]),
                reference("vm-1"),
                false,
                reason::TOO_MANY,
                reference("vm-1"),
            ),
            (
                "no KubeVirt: the reference stays",
                Unavailable,
                reference("vm-1"),
                false,
                reason::KUBEVIRT_UNAVAILABLE,
                reference("vm-1"),
            ),
        ];
        for (name, view, before, available, want_reason, want_ref) in rows {
            let mut status = ComputeInstanceStatus {
                virtual_machine_reference: before,
                ..Default::default()
            };
            apply_availability(
                "vm-1",
                Some(NS),
                &view,
                &mut status,
                Some(3),
                Timestamp::UNIX_EPOCH,
            );
            let c = find_condition(&status.conditions, CONDITION_AVAILABLE);
            assert_eq!(c.map(|c| c.status == "True"), Some(available), "{name}");
            assert_eq!(c.map(|c| c.reason.as_str()), Some(want_reason), "{name}");
            assert!(c.is_some_and(|c| !c.message.is_empty()), "{name}");
            assert_eq!(c.and_then(|c| c.observed_generation), Some(3), "{name}");
            assert_eq!(status.virtual_machine_reference, want_ref, "{name}");
        }
    }

    #[test]
    fn too_many_names_them() {
        let mut status = ComputeInstanceStatus::default();
        let view = VmView::Listed(vec![vm(NS, "a", true), vm(NS, "b", false)]);
        apply_availability(
            "vm-1",
            Some(NS),
            &view,
            &mut status,
            None,
            Timestamp::UNIX_EPOCH,
        );
        let message = find_condition(&status.conditions, CONDITION_AVAILABLE)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(
            message.contains("tenant-ns/a") && message.contains("tenant-ns/b"),
            "{message}"
        );
    }

    #[test]
    fn available_is_set_back_to_false() {
        let mut status = ComputeInstanceStatus::default();
        let t1 = Timestamp::UNIX_EPOCH;
        let t2 = Timestamp::from_second(60).unwrap_or(t1);
        let ready = VmView::Listed(vec![vm(NS, "vm-1", true)]);
        let not_ready = VmView::Listed(vec![vm(NS, "vm-1", false)]);
        apply_availability("vm-1", Some(NS), &ready, &mut status, None, t1);
        apply_availability("vm-1", Some(NS), &not_ready, &mut status, None, t2);
        let c = find_condition(&status.conditions, CONDITION_AVAILABLE);
        assert_eq!(c.map(|c| c.status.as_str()), Some("False"));
        assert_eq!(c.map(|c| c.last_transition_time.0), Some(t2));
    }
}
