//! Playbook mode against a real Kubernetes API server (`cloudkit-testenv`): provision and
//! deprovision jobs change the ComputeInstance like the production playbooks do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use cloudkit_aap_sim::{AwxStatus, Phases, SimHandle, Simulator, TemplateSpec};
use cloudkit_api::metadata::{AAP_FINALIZER, FINALIZER, RECONCILED_CONFIG_VERSION_ANNOTATION};
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec};
use common::*;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const DESIRED: &str = "0123456789abcdef";

async fn sim_for_cluster() -> SimHandle {
    let env = cloudkit_testenv::shared();
    let ms = Duration::from_millis;
    spawn(
        Simulator::builder()
            .kubeconfig(env.kubeconfig_path())
            .template(TemplateSpec::job("provision_vm").with_phases(Phases::new(
                ms(50),
                ms(50),
                ms(800),
            )))
            .template(
                TemplateSpec::workflow("deprovision_vm").with_phases(Phases::new(
                    ms(50),
                    ms(50),
                    ms(300),
                )),
            ),
    )
    .await
}

async fn create_ci(api: &Api<ComputeInstance>, name: &str) -> ComputeInstance {
    let mut ci = ComputeInstance::new(name, ComputeInstanceSpec::for_template("test_template"));
    ci.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    api.create(&PostParams::default(), &ci).await.unwrap()
}

/// The operator's launch body for `ci`, with `status.desiredConfigVersion` = [`DESIRED`].
fn launch_body(ci: &ComputeInstance, extra: Value) -> Value {
    let mut payload = serde_json::to_value(ci).unwrap();
    payload["status"] = json!({"desiredConfigVersion": DESIRED});
    let mut vars =
        json!({"ansible_eda": {"event": {"payload": payload}}, "cloudkit_launch_key": "k"});
    if let (Some(v), Some(e)) = (vars.as_object_mut(), extra.as_object()) {
        v.extend(e.clone());
    }
    json!({ "extra_vars": vars })
}

fn finalizers(ci: &ComputeInstance) -> Vec<String> {
    ci.metadata.finalizers.clone().unwrap_or_default()
}

fn reconciled(ci: &ComputeInstance) -> Option<String> {
    ci.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RECONCILED_CONFIG_VERSION_ANNOTATION).cloned())
}

/// Polls the job and the CI together until the job is terminal; returns the job's final JSON
/// and whether the `-aap` finalizer was seen while the job was still running.
async fn follow(c: &Client, url: &str, api: &Api<ComputeInstance>, name: &str) -> (Value, bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut finalizer_while_running = false;
    loop {
        let job = c.get(url).await.json;
        let status = AwxStatus::parse(job["status"].as_str().unwrap()).unwrap();
        if status.is_terminal() {
            return (job, finalizer_while_running);
        }
        if status == AwxStatus::Running
            && let Some(ci) = api.get_opt(name).await.unwrap()
            && finalizers(&ci).iter().any(|f| f == AAP_FINALIZER)
        {
            finalizer_while_running = true;
        }
        assert!(Instant::now() < deadline, "{url} never finished: {job}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_then_deprovision_patch_the_compute_instance() {
    let env = cloudkit_testenv::shared();
    let ns = env.namespace("aap-sim-playbook").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let ci = create_ci(&api, "vm-1").await;
    let h = sim_for_cluster().await;
    let c = Client::new(&h);

    let a = c
        .post(
            "/api/v2/job_templates/1/launch/",
            &launch_body(&ci, json!({})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let (job, seen_running) =
        follow(&c, &format!("/api/v2/jobs/{}/", a.json["id"]), &api, "vm-1").await;
    assert_eq!(job["status"], "successful", "{job}");
    assert!(seen_running, "the finalizer is added while the job runs");
    // Success is reported only after the annotation was written.
    let now = api.get("vm-1").await.unwrap();
    assert_eq!(finalizers(&now), [FINALIZER, AAP_FINALIZER]);
    assert_eq!(reconciled(&now).as_deref(), Some(DESIRED));

    let a = c
        .post(
            "/api/v2/workflow_job_templates/2/launch/",
            &launch_body(&now, json!({})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    let (job, _) = follow(
        &c,
        &format!("/api/v2/workflow_jobs/{}/", a.json["id"]),
        &api,
        "vm-1",
    )
    .await;
    assert_eq!(job["status"], "successful", "{job}");
    let after = api.get("vm-1").await.unwrap();
    assert_eq!(
        finalizers(&after),
        [FINALIZER],
        "only the -aap finalizer is removed"
    );
    assert_eq!(reconciled(&after).as_deref(), Some(DESIRED));
    assert_eq!(h.simulator().stats().playbook_failures, 0);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_and_missing_objects() {
    let env = cloudkit_testenv::shared();
    let ns = env.namespace("aap-sim-failures").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let h = sim_for_cluster().await;
    let c = Client::new(&h);

    // A failing provision still adds the finalizer (its first task) but writes no annotation.
    let ci = create_ci(&api, "vm-fail").await;
    let a = c
        .post(
            "/api/v2/job_templates/1/launch/",
            &launch_body(&ci, json!({"sim_outcome": "failed"})),
        )
        .await;
    let (job, _) = follow(
        &c,
        &format!("/api/v2/jobs/{}/", a.json["id"]),
        &api,
        "vm-fail",
    )
    .await;
    assert_eq!(job["status"], "failed");
    let now = api.get("vm-fail").await.unwrap();
    assert_eq!(finalizers(&now), [FINALIZER, AAP_FINALIZER]);
    assert_eq!(reconciled(&now), None);

    // Provisioning a CI that does not exist fails the job with the reason.
    let ghost = ComputeInstance {
        metadata: kube::api::ObjectMeta {
            name: Some("ghost".into()),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        ..ComputeInstance::new("ghost", ComputeInstanceSpec::for_template("test_template"))
    };
    let a = c
        .post(
            "/api/v2/job_templates/1/launch/",
            &launch_body(&ghost, json!({})),
        )
        .await;
    let (job, _) = follow(
        &c,
        &format!("/api/v2/jobs/{}/", a.json["id"]),
        &api,
        "ghost",
    )
    .await;
    assert_eq!(job["status"], "failed", "{job}");
    let tb = job["result_traceback"].as_str().unwrap();
    assert!(tb.contains("not found") && tb.contains("ghost"), "{tb}");
    assert_eq!(job["failed"], true);

    // Deprovisioning it has nothing to release: success.
    let a = c
        .post(
            "/api/v2/workflow_job_templates/2/launch/",
            &launch_body(&ghost, json!({})),
        )
        .await;
    let (job, _) = follow(
        &c,
        &format!("/api/v2/workflow_jobs/{}/", a.json["id"]),
        &api,
        "ghost",
    )
    .await;
    assert_eq!(job["status"], "successful", "{job}");

    // A payload without metadata fails at the first step.
    let a = c
        .post(
            "/api/v2/job_templates/1/launch/",
            &json!({"extra_vars": {"x": 1}}),
        )
        .await;
    let (job, _) = follow(&c, &format!("/api/v2/jobs/{}/", a.json["id"]), &api, "none").await;
    assert_eq!(job["status"], "failed");
    assert!(
        job["result_traceback"]
            .as_str()
            .unwrap()
            .contains("ansible_eda.event.payload"),
        "{job}"
    );
    assert!(h.simulator().stats().playbook_failures >= 2);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_jobs_on_one_object_keep_every_finalizer() {
    let env = cloudkit_testenv::shared();
    let ns = env.namespace("aap-sim-conflicts").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let ci = create_ci(&api, "vm-c").await;
    let h = sim_for_cluster().await;
    let c = Client::new(&h);
    // Another writer adds its own finalizer while the provision jobs run.
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            c.post(
                "/api/v2/job_templates/1/launch/",
                &launch_body(&ci, json!({})),
            )
            .await
            .json["id"]
                .clone(),
        );
    }
    // Like the simulator, it writes the whole list with the resourceVersion it read.
    for other in ["example.com/a", "example.com/b", "example.com/c"] {
        tokio::time::sleep(Duration::from_millis(45)).await;
        loop {
            let now = api.get("vm-c").await.unwrap();
            let mut list = finalizers(&now);
            list.push(other.to_owned());
            let patch = json!({"metadata": {"finalizers": list, "resourceVersion": now.metadata.resource_version}});
            match api
                .patch(
                    "vm-c",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await
            {
                Ok(_) => break,
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => panic!("{e}"),
            }
        }
    }
    for id in ids {
        let (job, _) = follow(&c, &format!("/api/v2/jobs/{id}/"), &api, "vm-c").await;
        assert_eq!(job["status"], "successful", "{job}");
    }
    let now = api.get("vm-c").await.unwrap();
    let f = finalizers(&now);
    for want in [
        FINALIZER,
        AAP_FINALIZER,
        "example.com/a",
        "example.com/b",
        "example.com/c",
    ] {
        assert!(f.iter().any(|x| x == want), "{want} lost: {f:?}");
    }
    assert_eq!(f.iter().filter(|x| *x == AAP_FINALIZER).count(), 1, "{f:?}");
    h.shutdown().await;
}
