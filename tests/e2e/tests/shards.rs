//! Shards: two operator processes split one namespace by the `cloudkit.openshift.io/shard`
//! label, each with its own Lease, as the RBAC-limited user of `deploy/rbac.yaml`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloudkit_aap_sim::Outcome;
use cloudkit_api::metadata::TENANT_ANNOTATION;
use cloudkit_api::shard::{SHARD_LABEL, SHARD_SELECTOR_ANNOTATION};
use cloudkit_api::{ComputeInstance, JobState, JobType, Tenant, TenantPhase};
use cloudkit_test_support::*;
use k8s_openapi::api::coordination::v1::Lease;
use kube::{Api, ResourceExt};

/// The Lease name the shards' Leases start with.
const LEASE: &str = "cloudkit-shards";

/// Shard `shard` (selector `cloudkit.openshift.io/shard=<shard>`, so named after the value)
/// with leader election, on the scene's simulator.
fn shard_operator(scene: &Scene, shard: &str) -> OperatorSettings {
    Scene::aap_operator(
        &format!("{}-{shard}", scene.namespace),
        &scene.namespace,
        scene.sim.as_ref().unwrap(),
    )
    .env("CLOUDKIT_LEADER_ELECTION_LEASE", LEASE)
    .env("CLOUDKIT_SHARD_SELECTOR", &format!("{SHARD_LABEL}={shard}"))
}

fn in_shard(name: &str, shard: &str, tenant: &str) -> CiFixture {
    CiFixture::new(name)
        .annotated(TENANT_ANNOTATION, tenant)
        .labelled(SHARD_LABEL, shard)
}

async fn unowned(scene: &Scene, op: usize) -> f64 {
    scene
        .metrics(op)
        .await
        .get("cloudkit_unowned_compute_instances")
        .copied()
        .unwrap_or(-1.0)
}

async fn jobs_started(scene: &Scene, op: usize) -> f64 {
    metric_sum(&scene.metrics(op).await, "cloudkit_jobs_started_total")
}

async fn jobs_finished(scene: &Scene, op: usize) -> f64 {
    metric_sum(&scene.metrics(op).await, "cloudkit_jobs_finished_total")
}

/// Each CI is handled by the shard that selects it, its Tenant by the same shard; a CI that no
/// shard selects gets no job and is counted on both shards; each shard holds its own Lease,
/// which carries its selector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_split_one_namespace_and_report_the_cis_no_shard_owns() {
    let mut scene = Scene::new("shards").await;
    scene.sim = Some(simulator(phases(20, 0, 100), phases(20, 0, 50), Outcome::Successful).await);
    let ns = scene.namespace.clone();
    // Shard c is registered (its Lease names its selector) but not running: it owns its CIs.
    let leases: Api<Lease> = Api::namespaced(scene.client.clone(), &ns);
    let down = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{LEASE}-c")),
            annotations: Some(
                [(
                    SHARD_SELECTOR_ANNOTATION.to_string(),
                    format!("{SHARD_LABEL}=c"),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: None,
    };
    leases.create(&Default::default(), &down).await.unwrap();
    let a = scene.start_operator(shard_operator(&scene, "a")).await;
    let b = scene.start_operator(shard_operator(&scene, "b")).await;
    let api = scene.api_in(&ns);

    let ci_a = in_shard("vm-a", "a", "team-a").create(&api).await;
    let ci_b = in_shard("vm-b", "b", "team-b").create(&api).await;
    let ci_c = in_shard("vm-c", "c", "team-c").create(&api).await;
    let bare = CiFixture::new("vm-bare").create(&api).await;
    for name in ["vm-a", "vm-b"] {
        scene
            .wait_for(&ns, name, "Running", running_and_provisioned)
            .await;
    }

    // The unowned CI (no label at all) shows on both shards; shard c's does not.
    for op in [a, b] {
        scene
            .eventually("1 unowned CI on each shard", || async {
                unowned(&scene, op).await == 1.0
            })
            .await;
    }
    // Retiring shard c (deleting its Lease) leaves its CI unowned. The shards' watch of the
    // unowned CIs is filtered by the API server (`shard notin (a,b,c)` at their start), so it
    // has to start again with the new filter to see that CI.
    leases
        .delete(&format!("{LEASE}-c"), &Default::default())
        .await
        .unwrap();
    for op in [a, b] {
        scene
            .eventually(
                "2 unowned CIs on each shard with shard c retired",
                || async { unowned(&scene, op).await == 2.0 },
            )
            .await;
    }
    assert!(
        scene.operators[a]
            .log_text()
            .contains("no shard's selector matches"),
        "{}",
        scene.operators[a].log_tail(40)
    );

    let sim = scene.sim.as_ref().unwrap();
    for ci in [&ci_a, &ci_b] {
        assert_eq!(
            launches_of(sim, &ci.uid().unwrap(), "provision"),
            1,
            "{}: one provision",
            ci.name_any()
        );
    }
    for ci in [&ci_c, &bare] {
        let uid = ci.uid().unwrap();
        assert_eq!(launches_of(sim, &uid, "provision"), 0, "{}", ci.name_any());
        let now = api.get(&ci.name_any()).await.unwrap();
        assert!(
            now.status.is_none() && finalizers(&now).is_empty(),
            "no shard touched {}: {now:?}",
            ci.name_any()
        );
    }
    assert_eq!(sim.simulator().stats().launches, 2);
    // Each shard started one job, its own CI's: neither reconciled the other's.
    assert_eq!(jobs_started(&scene, a).await, 1.0);
    assert_eq!(jobs_started(&scene, b).await, 1.0);

    // Tenants follow their CIs: labelled for the shard, made Ready by its Tenant controller.
    let tenants: Api<Tenant> = Api::namespaced(scene.client.clone(), &ns);
    for (ci, shard) in [(&ci_a, "a"), (&ci_b, "b")] {
        let tenant = tenants
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|t| {
                t.owner_references()
                    .iter()
                    .any(|o| Some(&o.uid) == ci.uid().as_ref())
            })
            .unwrap_or_else(|| panic!("no Tenant owned by {}", ci.name_any()));
        assert_eq!(
            tenant.labels().get(SHARD_LABEL).map(String::as_str),
            Some(shard)
        );
        assert_eq!(
            tenant.status.as_ref().and_then(|s| s.phase),
            Some(TenantPhase::Ready)
        );
    }
    assert_eq!(
        tenants.list(&Default::default()).await.unwrap().items.len(),
        2,
        "no Tenant for the unowned CIs"
    );

    // Two Leases, held by the two processes, each naming its shard's selector.
    for (op, shard) in [(a, "a"), (b, "b")] {
        let lease = leases.get(&format!("{LEASE}-{shard}")).await.unwrap();
        assert_eq!(
            lease.spec.as_ref().and_then(|s| s.holder_identity.clone()),
            Some(scene.operators[op].lease_identity())
        );
        assert_eq!(
            lease
                .annotations()
                .get(SHARD_SELECTOR_ANNOTATION)
                .map(String::as_str),
            Some(format!("{SHARD_LABEL}={shard}").as_str())
        );
    }
    assert!(
        leases.get_opt(LEASE).await.unwrap().is_none(),
        "no unsharded Lease"
    );

    // Labelling an unowned CI for a running shard hands it over: the count drops on both.
    scene
        .merge_patch(
            &ns,
            "vm-c",
            serde_json::json!({"metadata": {"labels": {SHARD_LABEL: "a"}}}),
        )
        .await;
    scene
        .wait_for(&ns, "vm-c", "Running in shard a", running_and_provisioned)
        .await;
    for op in [a, b] {
        scene
            .eventually("1 unowned CI on each shard", || async {
                unowned(&scene, op).await == 1.0
            })
            .await;
    }
    scene.assert_no_forbidden();
}

/// A CI relabelled from shard a to shard b while its provision job runs: b takes the job over
/// from the CI's status (the job and its launch key are recorded at launch), polls it to its end
/// and starts nothing; a, which no longer sees the CI, never learns the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_moved_between_shards_mid_job_is_provisioned_once() {
    let mut scene = Scene::new("shardmove").await;
    // A provision that runs long enough to move the CI while it does.
    scene.sim = Some(simulator(phases(20, 0, 6000), phases(20, 0, 50), Outcome::Successful).await);
    let a = scene.start_operator(shard_operator(&scene, "a")).await;
    let b = scene.start_operator(shard_operator(&scene, "b")).await;
    let ns = scene.namespace.clone();
    let api = scene.api_in(&ns);

    let ci = in_shard("vm-move", "a", "team-move").create(&api).await;
    let uid = ci.uid().unwrap();
    let running = |ci: &ComputeInstance| {
        latest(ci, JobType::Provision)
            .is_some_and(|j| !j.job_id.is_empty() && j.state == JobState::Running)
    };
    let before = scene
        .wait_for(&ns, "vm-move", "the provision job running", running)
        .await;
    let job = latest(&before, JobType::Provision).unwrap();
    assert!(job.launch_key.is_some(), "recorded with its launch key");

    scene
        .merge_patch(
            &ns,
            "vm-move",
            serde_json::json!({"metadata": {"labels": {SHARD_LABEL: "b"}}}),
        )
        .await;
    let after = scene
        .wait_for(
            &ns,
            "vm-move",
            "Running after the move",
            running_and_provisioned,
        )
        .await;
    assert_eq!(
        latest(&after, JobType::Provision).map(|j| j.job_id),
        Some(job.job_id.clone()),
        "the same job, taken over"
    );
    let sim = scene.sim.as_ref().unwrap();
    assert_eq!(launches_of(sim, &uid, "provision"), 1, "exactly one launch");
    assert_eq!(sim.simulator().stats().launches, 1);
    // a launched it; b saw it end.
    assert_eq!(jobs_started(&scene, a).await, 1.0);
    assert_eq!(jobs_started(&scene, b).await, 0.0);
    assert_eq!(jobs_finished(&scene, b).await, 1.0);
    assert_eq!(jobs_finished(&scene, a).await, 0.0);
    for op in [a, b] {
        assert_eq!(unowned(&scene, op).await, 0.0);
    }

    // The new shard also deletes it: one deprovision, and the CI is gone.
    scene.delete_and_wait_gone(&ns, "vm-move").await;
    let sim = scene.sim.as_ref().unwrap();
    assert_eq!(launches_of(sim, &uid, "deprovision"), 1);
    assert_eq!(jobs_started(&scene, a).await, 1.0, "a started nothing more");
    scene.assert_no_forbidden();
}
