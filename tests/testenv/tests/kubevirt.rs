//! The fake KubeVirt behaves as SPEC 8.1 describes, on the real API server.

use std::time::Duration;

use anyhow::Result;
use cloudkit_testenv::kubevirt::{VM_LABEL, shared_fake, vm_resource, vmi_resource};
use cloudkit_testenv::{eventually, shared};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

const DEADLINE: Duration = Duration::from_secs(30);

async fn ready(vms: &Api<DynamicObject>, name: &str) -> Result<Option<String>> {
    let vm = vms.get(name).await?;
    Ok(vm.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .map(str::to_string))
}

async fn vmi_uid(vmis: &Api<DynamicObject>, name: &str) -> Result<Option<String>> {
    Ok(vmis
        .get_opt(name)
        .await?
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .and_then(|v| v.uid()))
}

#[tokio::test]
async fn vms_get_instances_ready_conditions_and_restarts() -> Result<()> {
    let env = shared();
    let client: Client = env.admin_client().await;
    let ns = env.namespace("kubevirt").await;
    // The shared environment has the CRDs and runs the fake over every namespace.
    let fake = shared_fake();
    let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &vm_resource());
    let vmis: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &vmi_resource());

    let vm: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "vm-1", "labels": {VM_LABEL: "vm-1"}},
        "spec": {"running": true},
    }))?;
    vms.create(&PostParams::default(), &vm).await?;
    eventually("Ready=True", DEADLINE, || async {
        Ok(ready(&vms, "vm-1").await?.as_deref() == Some("True"))
    })
    .await?;
    let first = vmi_uid(&vmis, "vm-1").await?;
    assert!(first.is_some(), "a running, Ready VM has its VMI");

    // A restart: the deleted VMI comes back as a new object.
    vmis.delete("vm-1", &DeleteParams::default()).await?;
    eventually("a new VMI", DEADLINE, || async {
        let uid = vmi_uid(&vmis, "vm-1").await?;
        Ok(uid.is_some() && uid != first)
    })
    .await?;
    assert_eq!(fake.vmis_created_in(&ns), 2);

    // Stopped: no VMI, Ready=False.
    let stop = serde_json::json!({"spec": {"running": false}});
    vms.patch("vm-1", &PatchParams::default(), &Patch::Merge(&stop))
        .await?;
    eventually("Ready=False without a VMI", DEADLINE, || async {
        Ok(ready(&vms, "vm-1").await?.as_deref() == Some("False")
            && vmi_uid(&vmis, "vm-1").await?.is_none())
    })
    .await?;

    // Unlabelled VMs are not the platform's: left alone.
    let other: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": "other"}, "spec": {"running": true},
    }))?;
    vms.create(&PostParams::default(), &other).await?;
    // Evidence that the fake has looked since: a labelled VM created after it gets its VMI.
    let mut later = vm.clone();
    later.metadata.name = Some("vm-2".into());
    later.labels_mut().insert(VM_LABEL.into(), "vm-2".into());
    vms.create(&PostParams::default(), &later).await?;
    eventually("vm-2 Ready", DEADLINE, || async {
        Ok(ready(&vms, "vm-2").await?.as_deref() == Some("True"))
    })
    .await?;
    assert_eq!(ready(&vms, "other").await?, None);
    assert_eq!(vmi_uid(&vmis, "other").await?, None);
    Ok(())
}
