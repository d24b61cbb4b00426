//! SPEC 9.4, 10 and 11 against the real API server: a CI waits for its Tenant, the Tenant
//! controller gives it a namespace, the VirtualMachine the automation creates there is tracked,
//! and a restart request recreates the VMI exactly once, also when the operator stopped halfway.

use std::time::Duration;

use cloudkit_aap_sim::Outcome;
use cloudkit_api::metadata::*;
use cloudkit_api::names::{tenant_namespace, tenant_object_name};
use cloudkit_api::{ComputeInstance, JobState, JobType, Tenant, TenantPhase};
use cloudkit_provider::ProviderRegistry;
use cloudkit_reconciler::restart::{initiated_message, reason as restart_reason};
use cloudkit_reconciler::{set_condition, vm_resource, vmi_resource};
use cloudkit_test_support::*;
use cloudkit_testenv::kubevirt::shared_fake;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};

use crate::harness::*;

const TENANT: &str = "acme";

fn accepted(ci: &ComputeInstance) -> Option<(String, String)> {
    condition(ci, CONDITION_ACCEPTED).map(|c| (c.status, c.reason))
}

/// The VirtualMachine the create playbook makes for `ci_name` in `namespace`.
async fn create_vm(client: &Client, namespace: &str, ci_name: &str) {
    let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &vm_resource());
    let vm: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
        "metadata": {"name": ci_name, "labels": {COMPUTE_INSTANCE_LABEL: ci_name}},
        "spec": {"running": true},
    }))
    .unwrap();
    vms.create(&PostParams::default(), &vm).await.unwrap();
}

async fn vmi_uid(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let vmis: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &vmi_resource());
    vmis.get_opt(name)
        .await
        .unwrap()
        .filter(|v| v.metadata.deletion_timestamp.is_none())
        .and_then(|v| v.uid())
}

/// Now, in whole seconds, as a restart request is written.
fn whole_seconds_now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_waits_for_its_tenant_then_tracks_its_vm_and_restarts_it_once() {
    let client = env().admin_client().await;
    let ns = env().namespace("platform").await;
    let sim = simulator(
        phases(100, 0, 200),
        phases(100, 0, 200),
        Outcome::Successful,
    )
    .await;
    let kubevirt = shared_fake();
    let op =
        Operator::start_on_platform(&ns, ProviderRegistry::new(aap_provider(&sim)), settings())
            .await;
    let api = api(&ns).await;

    // Without the tenant annotation: no job, Accepted=False TenantMissing, one Warning.
    CiFixture::new("vm-1").without_tenant().create(&api).await;
    wait_for(&api, "vm-1", Some(&sim), "TenantMissing", |ci| {
        accepted(ci) == Some(("False".into(), "TenantMissing".into()))
    })
    .await;
    assert!(sim_jobs(&sim).await.is_empty(), "no job without a tenant");
    let warnings = event_reasons(&ns, "vm-1").await;
    assert_eq!(
        warnings.iter().filter(|r| *r == "TenantMissing").count(),
        1,
        "{warnings:?}"
    );

    // The annotation lets it proceed: a Ready Tenant owned by the CI, the reference, one job.
    annotate(&api, "vm-1", TENANT_ANNOTATION, TENANT).await;
    let ci = wait_for(
        &api,
        "vm-1",
        Some(&sim),
        "provisioned",
        running_and_provisioned,
    )
    .await;
    let tenant_name = tenant_object_name(TENANT);
    let reference = ci
        .status
        .as_ref()
        .unwrap()
        .tenant_reference
        .clone()
        .unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.namespace.as_str()),
        (tenant_name.as_str(), ns.as_str())
    );
    assert_eq!(accepted(&ci), Some(("True".into(), "TenantReady".into())));
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let tenant = tenants.get(&tenant_name).await.unwrap();
    assert_eq!(tenant.phase(), Some(TenantPhase::Ready));
    assert_eq!(tenant.spec.name, TENANT);
    assert!(
        tenant
            .owner_references()
            .iter()
            .any(|o| Some(&o.uid) == ci.uid().as_ref() && o.controller.is_none()),
        "owned by the CI, not as controller: {:?}",
        tenant.owner_references()
    );
    let work_ns = tenant_namespace(&ns, TENANT).unwrap();
    assert_eq!(
        tenant.status.as_ref().unwrap().namespace.as_deref(),
        Some(work_ns.as_str())
    );
    let launches = sim_jobs(&sim).await.len();
    assert_eq!(launches, 1);

    // The automation's VirtualMachine in the tenant namespace: referenced and Available.
    create_vm(&client, &work_ns, "vm-1").await;
    let ci = wait_for(&api, "vm-1", Some(&sim), "Available=True", |ci| {
        condition(ci, CONDITION_AVAILABLE).is_some_and(|c| c.status == "True")
    })
    .await;
    let vm_ref = ci
        .status
        .as_ref()
        .unwrap()
        .virtual_machine_reference
        .clone()
        .unwrap();
    assert_eq!(
        (
            vm_ref.namespace.as_str(),
            vm_ref.kube_virt_virtual_machine_name.as_str()
        ),
        (work_ns.as_str(), "vm-1")
    );
    let first_vmi = vmi_uid(&client, &work_ns, "vm-1").await.expect("a VMI");

    // A restart: a new VMI, lastRestartedAt = the request, no job.
    let request = whole_seconds_now();
    merge_patch(
        &api,
        "vm-1",
        serde_json::json!({"spec": {"restartRequestedAt": request}}),
    )
    .await;
    let ci = wait_for(&api, "vm-1", Some(&sim), "the restart done", |ci| {
        ci.status.as_ref().and_then(|s| s.last_restarted_at.clone()) == Some(request.clone())
    })
    .await;
    assert!(condition(&ci, CONDITION_RESTART_IN_PROGRESS).is_none());
    let second_vmi = vmi_uid(&client, &work_ns, "vm-1").await;
    assert!(
        second_vmi.is_some() && second_vmi != Some(first_vmi),
        "the VMI was recreated"
    );
    assert_eq!(
        sim_jobs(&sim).await.len(),
        launches,
        "a restart starts no job"
    );
    assert_eq!(jobs(&ci).len(), 1);
    assert_eq!(kubevirt.vmis_created_in(&work_ns), 2, "exactly one restart");
    op.stop().await;
}

/// The two states a stopped operator can leave a restart in, written as it would have left
/// them; a new operator finishes the restart without a second VMI deletion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_interrupted_at_either_write_deletes_one_vmi() {
    let client = env().admin_client().await;
    let sim = simulator(
        phases(100, 0, 200),
        phases(100, 0, 200),
        Outcome::Successful,
    )
    .await;
    let kubevirt = shared_fake();
    for (case, delete_before_start) in [
        ("intent written, VMI not deleted", false),
        ("VMI deleted, restart not finished", true),
    ] {
        let ns = env().namespace("restart-kill").await;
        let api = api(&ns).await;
        let op =
            Operator::start_on_platform(&ns, ProviderRegistry::new(aap_provider(&sim)), settings())
                .await;
        CiFixture::new("vm-1")
            .annotated(TENANT_ANNOTATION, TENANT)
            .create(&api)
            .await;
        wait_for(
            &api,
            "vm-1",
            Some(&sim),
            "provisioned",
            running_and_provisioned,
        )
        .await;
        let work_ns = tenant_namespace(&ns, TENANT).unwrap();
        create_vm(&client, &work_ns, "vm-1").await;
        wait_for(&api, "vm-1", Some(&sim), "Available", |ci| {
            condition(ci, CONDITION_AVAILABLE).is_some_and(|c| c.status == "True")
        })
        .await;
        op.kill();
        let before = kubevirt.vmis_created_in(&work_ns);

        // What the killed operator wrote: the request, and the intent, recorded in a second
        // after the VMI's creation (the operator waits for that too).
        let request = whole_seconds_now();
        let vmis: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &work_ns, &vmi_resource());
        let vmi_created = vmis
            .get("vm-1")
            .await
            .unwrap()
            .metadata
            .creation_timestamp
            .unwrap()
            .0;
        let intent_at = Timestamp::now().max(vmi_created + Duration::from_secs(1));
        let mut ci = api.get("vm-1").await.unwrap();
        ci.spec.restart_requested_at = Some(request.clone());
        ci = api
            .replace("vm-1", &PostParams::default(), &ci)
            .await
            .unwrap();
        let mut status = ci.status.clone().unwrap();
        set_condition(
            &mut status.conditions,
            CONDITION_RESTART_IN_PROGRESS,
            true,
            restart_reason::IN_PROGRESS,
            &initiated_message(request.0),
            ci.metadata.generation,
            intent_at,
        );
        api.patch_status(
            "vm-1",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"conditions": status.conditions}})),
        )
        .await
        .unwrap();
        if delete_before_start {
            vmis.delete("vm-1", &DeleteParams::default()).await.unwrap();
        }

        let op =
            Operator::start_on_platform(&ns, ProviderRegistry::new(aap_provider(&sim)), settings())
                .await;
        let done = wait_for(&api, "vm-1", Some(&sim), "the restart finished", |ci| {
            ci.status.as_ref().and_then(|s| s.last_restarted_at.clone()) == Some(request.clone())
        })
        .await;
        assert!(
            condition(&done, CONDITION_RESTART_IN_PROGRESS).is_none(),
            "{case}"
        );
        // The VM is Ready again: a VMI deletion made on the way has been followed by its
        // recreation, so the count below includes it.
        wait_for(&api, "vm-1", Some(&sim), "Available again", |ci| {
            condition(ci, CONDITION_AVAILABLE).is_some_and(|c| c.status == "True")
        })
        .await;
        assert_eq!(
            kubevirt.vmis_created_in(&work_ns) - before,
            1,
            "{case}: one new VMI"
        );
        assert!(latest(&done, JobType::Provision).is_some_and(|j| j.state == JobState::Succeeded));
        op.stop().await;
    }
}

/// A CI as the Go operator left it, every status field set: the CRD keeps all of it, and a pass
/// of this operator keeps what it does not own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_written_by_the_go_operator_loses_nothing() {
    let ns = env().namespace("go-written").await;
    let api = api(&ns).await;
    // The automation wrote the reconciled version, as the platform's playbooks do.
    let spec = CiFixture::new("vm-go").spec();
    let desired = cloudkit_api::config_version(&spec);
    CiFixture::new("vm-go")
        .finalized()
        .annotated(RECONCILED_CONFIG_VERSION_ANNOTATION, &desired)
        .create(&api)
        .await;
    let status = serde_json::json!({
        "phase": "Running",
        "observedGeneration": 1,
        "desiredConfigVersion": desired,
        "reconciledConfigVersion": desired,
        "lastRestartedAt": "2026-02-01T10:00:00Z",
        "tenantReference": {"name": "tenant-a4snha7u63pa6", "namespace": ns},
        "virtualMachineReference": {"namespace": format!("{ns}-a4snha7u63pa6"), "kubeVirtVirtualMachineName": "vm-go"},
        "jobs": [{"jobID": "42", "type": "provision", "timestamp": "2026-02-01T09:00:00Z",
                  "state": "Succeeded", "message": "done", "blockDeletionOnFailure": false}],
        "conditions": [
            {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "ok",
             "lastTransitionTime": "2026-02-01T09:00:00Z", "observedGeneration": 1},
            {"type": "Available", "status": "True", "reason": "AsExpected", "message": "VM is ready",
             "lastTransitionTime": "2026-02-01T09:05:00Z", "observedGeneration": 1},
            {"type": "RestartFailed", "status": "False", "reason": "NoFailure", "message": "none",
             "lastTransitionTime": "2026-02-01T09:05:00Z"},
        ],
    });
    api.patch_status(
        "vm-go",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({ "status": status })),
    )
    .await
    .unwrap();
    let stored = api.get("vm-go").await.unwrap();
    let stored_status = serde_json::to_value(stored.status.as_ref().unwrap()).unwrap();
    for field in [
        "phase",
        "observedGeneration",
        "desiredConfigVersion",
        "reconciledConfigVersion",
        "lastRestartedAt",
        "tenantReference",
        "virtualMachineReference",
        "jobs",
        "conditions",
    ] {
        assert_eq!(stored_status[field], status[field], "the CRD kept {field}");
    }

    // A pass of this operator (without the platform, so nothing re-derives the references).
    let sim = simulator(
        phases(100, 0, 200),
        phases(100, 0, 200),
        Outcome::Successful,
    )
    .await;
    let op = Operator::start(&ns, ProviderRegistry::new(aap_provider(&sim)), settings()).await;
    let after = wait_for(&api, "vm-go", Some(&sim), "a pass", |ci| {
        condition(ci, CONDITION_PROGRESSING).is_some()
    })
    .await;
    let s = after.status.as_ref().unwrap();
    assert_eq!(
        serde_json::to_value(&s.tenant_reference).unwrap(),
        status["tenantReference"]
    );
    assert_eq!(
        serde_json::to_value(&s.virtual_machine_reference).unwrap(),
        status["virtualMachineReference"]
    );
    assert_eq!(
        serde_json::to_value(&s.last_restarted_at).unwrap(),
        status["lastRestartedAt"]
    );
    assert_eq!(
        jobs(&after).len(),
        1,
        "no job: the configuration is applied"
    );
    assert_eq!(jobs(&after)[0].job_id, "42");
    for type_ in ["Accepted", "Available", "RestartFailed"] {
        assert!(condition(&after, type_).is_some(), "{type_} kept");
    }
    assert_eq!(
        condition(&after, "Available").unwrap().message,
        "VM is ready"
    );
    assert!(sim_jobs(&sim).await.is_empty());
    op.stop().await;
}

/// A burst of CIs for one new tenant: every CI ends up an owner of the Tenant exactly once (the
/// adoptions are batched into appends, which must neither drop nor repeat an owner), and every
/// CI is provisioned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_cis_all_own_their_shared_tenant_once() {
    let client = env().admin_client().await;
    let ns = env().namespace("adopt").await;
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let op =
        Operator::start_on_platform(&ns, ProviderRegistry::new(aap_provider(&sim)), settings())
            .await;
    let api = api(&ns).await;
    let names: Vec<String> = (0..24).map(|i| format!("vm-{i:02}")).collect();
    let created = futures::future::join_all(names.iter().map(|name| {
        CiFixture::new(name)
            .annotated(TENANT_ANNOTATION, TENANT)
            .create(&api)
    }))
    .await;
    let mut uids: Vec<String> = created.iter().map(|ci| ci.uid().unwrap()).collect();
    uids.sort();
    for name in &names {
        wait_for(
            &api,
            name,
            Some(&sim),
            "provisioned",
            running_and_provisioned,
        )
        .await;
    }
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let tenant_name = tenant_object_name(TENANT);
    eventually("every CI an owner of the Tenant", || async {
        tenants.get(&tenant_name).await.is_ok_and(|t| {
            t.owner_references()
                .iter()
                .filter(|o| uids.binary_search(&o.uid).is_ok())
                .count()
                == uids.len()
        })
    })
    .await;
    let owners: Vec<String> = tenants
        .get(&tenant_name)
        .await
        .unwrap()
        .owner_references()
        .iter()
        .map(|o| o.uid.clone())
        .collect();
    let mut sorted = owners.clone();
    sorted.sort();
    assert_eq!(sorted, uids, "each CI exactly once: {owners:?}");
    assert_eq!(sim.simulator().stats().launches, names.len() as u64);
    op.stop().await;
}
