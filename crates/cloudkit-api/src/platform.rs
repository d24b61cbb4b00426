//! The platform's resources the operator reads or deletes but does not define: KubeVirt's
//! VirtualMachine and VirtualMachineInstance (SPEC 10, 11).

use kube::core::{ApiResource, GroupVersionKind};

/// The `kubevirt.io/v1` VirtualMachine resource.
pub fn vm_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachine"),
        "virtualmachines",
    )
}

/// The `kubevirt.io/v1` VirtualMachineInstance resource.
pub fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
        "virtualmachineinstances",
    )
}
