//! End-to-end scenarios (SPEC 7): the operator binary as a child process, authenticated as a user
//! that holds only the roles of `deploy/rbac.yaml`; real ansible-rulebook and playbooks for EDA;
//! the AWX simulator for AAP. Every assertion reads what the API server persisted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

use cloudkit_api::metadata::{
    AAP_FINALIZER, COMPUTE_INSTANCE_LABEL, CONDITION_AVAILABLE, CONDITION_RESTART_FAILED,
    CONDITION_RESTART_IN_PROGRESS, FINALIZER, RECONCILED_CONFIG_VERSION_ANNOTATION,
};
use cloudkit_api::names::{tenant_namespace, tenant_object_name};
use cloudkit_api::{
    ComputeInstance, ComputeInstanceSpec, JobState, JobType, Phase, ProviderKind, Tenant,
    TenantPhase, TenantSpec,
};
use cloudkit_reconciler::vm_resource;
use cloudkit_test_support::*;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

fn is_utc(timestamp: &str) -> bool {
    timestamp.ends_with('Z') && timestamp.parse::<jiff::Timestamp>().is_ok()
}

/// SPEC 7.2: provision job `eda-webhook-1`, deprovision `eda-webhook-2`, UTC timestamps; the
/// playbooks run by ansible-rulebook add and remove the `-aap` finalizer and report the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eda_provision_then_deprovision_through_ansible_rulebook() {
    let mut scene = Scene::new("e2e-eda").await;
    let ns = scene.namespace.clone();
    // A rulebook of its own: its log then counts this CI's playbook runs and no other test's.
    let rulebook = tokio::task::spawn_blocking(|| start_rulebook("ansible-rulebook-eda"))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    scene
        .start_operator(Scene::eda_operator_on("operator-eda", &ns, &rulebook))
        .await;
    scene
        .create(
            &ns,
            "vm-eda",
            ComputeInstanceSpec::for_template("e2e_template"),
        )
        .await;

    let ci = scene
        .wait_for(&ns, "vm-eda", "phase Running", running_and_provisioned)
        .await;
    let raw = scene.raw(&ns, "vm-eda").await;
    let stamp = raw["status"]["jobs"][0]["timestamp"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(is_utc(&stamp), "provision timestamp {stamp:?}");
    let status = ci.status.clone().unwrap();
    let job = latest(&ci, JobType::Provision).unwrap();
    assert_eq!(job.job_id, "eda-webhook-1", "{:?}", status.jobs);
    assert_eq!(job.provider, Some(ProviderKind::Eda));
    let desired = status.desired_config_version.clone().unwrap();
    assert_eq!(job.config_version.as_deref(), Some(desired.as_str()));
    assert_eq!(
        status.reconciled_config_version.as_deref(),
        Some(desired.as_str())
    );
    let annotations = ci.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(RECONCILED_CONFIG_VERSION_ANNOTATION),
        Some(&desired),
        "provision.yml wrote the annotation"
    );
    let finalizers = ci.metadata.finalizers.clone().unwrap_or_default();
    assert!(
        finalizers.contains(&FINALIZER.to_string())
            && finalizers.contains(&AAP_FINALIZER.to_string()),
        "{finalizers:?}"
    );

    let last = scene.delete_and_wait_gone(&ns, "vm-eda").await;
    let jobs = jobs(&last.ci);
    let ids: Vec<(&str, JobType)> = jobs
        .iter()
        .map(|j| (j.job_id.as_str(), j.job_type))
        .collect();
    assert_eq!(
        ids,
        [
            ("eda-webhook-1", JobType::Provision),
            ("eda-webhook-2", JobType::Deprovision)
        ],
        "{jobs:?}"
    );
    let deprovision = &jobs[1];
    assert_eq!(deprovision.provider, Some(ProviderKind::Eda));
    let stamp = last.raw["status"]["jobs"][1]["timestamp"]
        .as_str()
        .unwrap_or_default();
    assert!(is_utc(stamp), "deprovision timestamp {stamp:?}");
    // SPEC 5.2: the operator finalizer goes only once the deprovision succeeded. The operator
    // does not write a status to an object that is about to vanish (the finalizer's removal is
    // its last write), so the persisted job may still read Running: the operator's own count of
    // finished jobs is the evidence that it saw the deprovision succeed.
    assert!(
        matches!(deprovision.state, JobState::Succeeded | JobState::Running),
        "the last status seen before the CI went: {deprovision:?}"
    );
    let succeeded =
        r#"cloudkit_jobs_finished_total{type="deprovision",provider="eda",state="Succeeded"}"#;
    scene
        .eventually(
            "the operator to count the deprovision as succeeded",
            || async { scene.metrics(0).await.get(succeeded).copied() == Some(1.0) },
        )
        .await;
    let finished = scene.metrics(0).await;
    let other_outcomes: Vec<_> = finished
        .iter()
        .filter(|(k, v)| {
            k.starts_with(r#"cloudkit_jobs_finished_total{type="deprovision""#)
                && k.as_str() != succeeded
                && **v > 0.0
        })
        .collect();
    assert!(other_outcomes.is_empty(), "{other_outcomes:?}");
    // The rulebook ran each playbook exactly once.
    let log = rulebook.log_text();
    for play in [
        "PLAY [Provision a ComputeInstance]",
        "PLAY [Deprovision a ComputeInstance]",
    ] {
        assert_eq!(
            log.matches(play).count(),
            1,
            "{play} once\n{}",
            rulebook.log_tail(80)
        );
    }
    scene.assert_no_forbidden();
}

/// SPEC 7.3: six CIs at once, three per provider, each provider in its own operator process
/// watching its own namespace; all reach Running and are deleted cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_in_parallel_three_per_provider() {
    let mut scene = Scene::new("e2e-six-aap").await;
    let aap_ns = scene.namespace.clone();
    let eda_ns = env().namespace("e2e-six-eda").await;
    grant_operator_roles(&eda_ns).await;
    let sim = runner_simulator().await;
    scene
        .start_operator(Scene::aap_operator("operator-six-aap", &aap_ns, &sim))
        .await;
    scene.sim = Some(sim);
    scene
        .start_operator(Scene::eda_operator("operator-six-eda", &eda_ns))
        .await;
    let aap_api = scene.api_in(&aap_ns);

    let names = ["vm-a", "vm-b", "vm-c"];
    for name in names {
        let spec = ComputeInstanceSpec::for_template("e2e_template");
        scene.create(&aap_ns, name, spec.clone()).await;
        scene.create(&eda_ns, name, spec).await;
    }
    for name in names {
        for (ns, provider) in [(&aap_ns, ProviderKind::Aap), (&eda_ns, ProviderKind::Eda)] {
            let ci = scene
                .wait_for(ns, name, "phase Running", running_and_provisioned)
                .await;
            let job = latest(&ci, JobType::Provision).unwrap();
            assert_eq!(job.provider, Some(provider), "{name}: {job:?}");
            match provider {
                ProviderKind::Aap => assert!(job.job_id.parse::<u64>().is_ok(), "{job:?}"),
                ProviderKind::Eda => assert_eq!(job.job_id, "eda-webhook-1"),
            }
        }
    }
    let aap_ids: BTreeSet<String> = {
        let mut ids = BTreeSet::new();
        for name in names {
            let ci = aap_api.get(name).await.unwrap();
            ids.insert(latest(&ci, JobType::Provision).unwrap().job_id);
        }
        ids
    };
    assert_eq!(aap_ids.len(), 3, "one AAP job per CI: {aap_ids:?}");

    let mut followers = Vec::new();
    for name in names {
        for (ns, provider) in [(&aap_ns, ProviderKind::Aap), (&eda_ns, ProviderKind::Eda)] {
            followers.push((name, provider, scene.follow(ns, name).await));
        }
    }
    for name in names {
        scene.delete(&aap_ns, name).await;
        scene.delete(&eda_ns, name).await;
    }
    for (name, provider, follower) in followers {
        let last = scene.wait_gone(follower).await;
        let jobs = jobs(&last.ci);
        let provisions = jobs
            .iter()
            .filter(|j| j.job_type == JobType::Provision)
            .count();
        let deprovisions: Vec<_> = jobs
            .iter()
            .filter(|j| j.job_type == JobType::Deprovision)
            .collect();
        assert_eq!(provisions, 1, "{name} ({provider}): {jobs:?}");
        assert_eq!(deprovisions.len(), 1, "{name} ({provider}): {jobs:?}");
        assert_eq!(deprovisions[0].provider, Some(provider));
    }
    let stats = scene.sim.as_ref().unwrap().simulator().stats();
    assert_eq!(
        stats.launches, 6,
        "3 provision + 3 deprovision launches: {stats:?}"
    );
    scene.assert_no_forbidden();
}

/// SPEC 7.5: provisioned through EDA (`eda-webhook-1`); the operator process is killed and
/// started again with AAP as the active provider; the deletion runs an AAP job; the history
/// holds both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_switch_from_eda_to_aap() {
    let mut scene = Scene::new("e2e-switch").await;
    let ns = scene.namespace.clone();
    scene
        .start_operator(Scene::eda_operator("operator-switch-eda", &ns))
        .await;
    let api = scene.api_in(&ns);
    scene
        .create(
            &ns,
            "vm-switch",
            ComputeInstanceSpec::for_template("e2e_template"),
        )
        .await;
    let ci = scene
        .wait_for(&ns, "vm-switch", "phase Running", running_and_provisioned)
        .await;
    assert_eq!(
        latest(&ci, JobType::Provision).unwrap().job_id,
        "eda-webhook-1"
    );

    // A crash: SIGKILL, no graceful shutdown, the Lease stays held until it expires.
    scene.assert_no_forbidden();
    scene.operators[0].kill();
    scene.operators.remove(0);

    let sim = runner_simulator().await;
    // Still able to read the EDA jobs it finds (EDA configured); AAP starts the new ones.
    let settings = Scene::eda_operator("operator-switch-aap", &ns)
        .aap(
            &sim.api_url(),
            SIM_TOKEN,
            PROVISION_TEMPLATE,
            DEPROVISION_TEMPLATE,
        )
        // The killed process's Lease would hold the new one back for its whole duration.
        .without_env("CLOUDKIT_LEADER_ELECT");
    scene.sim = Some(sim);
    let restarted = scene.start_operator(settings).await;

    // The restarted operator takes the CI over without starting anything: once it has completed
    // a pass (the only CI of its namespace), any launch that pass made would have been counted.
    let passes = || async {
        metric_sum(&scene.metrics(restarted).await, "cloudkit_reconciles_total") >= 1.0
    };
    scene
        .eventually("a completed pass of the restarted operator", passes)
        .await;
    let ci = api.get("vm-switch").await.unwrap();
    assert_eq!(jobs(&ci).len(), 1, "{:?}", jobs(&ci));
    assert_eq!(scene.sim.as_ref().unwrap().simulator().stats().launches, 0);

    let last = scene.delete_and_wait_gone(&ns, "vm-switch").await.ci;
    let jobs = jobs(&last);
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    let provision = latest(&last, JobType::Provision).unwrap();
    let deprovision = latest(&last, JobType::Deprovision).unwrap();
    assert_eq!(
        (
            provision.job_id.as_str(),
            provision.provider,
            provision.state
        ),
        (
            "eda-webhook-1",
            Some(ProviderKind::Eda),
            JobState::Succeeded
        )
    );
    assert!(
        deprovision.job_id.parse::<u64>().is_ok(),
        "an AAP id: {deprovision:?}"
    );
    assert_eq!(deprovision.provider, Some(ProviderKind::Aap));
    let stats = scene.sim.as_ref().unwrap().simulator().stats();
    assert_eq!(stats.launches, 1, "only the deprovision job: {stats:?}");
    scene.assert_no_forbidden();
}

/// The child operator's /metrics count the jobs it started and finished, by type, provider and
/// state, and the CI's Events tell the same story.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_events_of_the_operator_process() {
    let mut scene = Scene::new("e2e-metrics").await;
    let ns = scene.namespace.clone();
    let sim = runner_simulator().await;
    let op = scene
        .start_operator(Scene::aap_operator("operator-metrics", &ns, &sim))
        .await;
    scene.sim = Some(sim);
    scene
        .create(
            &ns,
            "vm-ok",
            ComputeInstanceSpec::for_template("e2e_template"),
        )
        .await;
    // templateParameters steer the automation: this one's provision fails.
    scene
        .create(
            &ns,
            "vm-fails",
            spec_with_parameters(
                "e2e_template",
                serde_json::json!({"sim_outcome": "failed", "sim_message": "no capacity"}),
            ),
        )
        .await;
    scene
        .wait_for(&ns, "vm-ok", "phase Running", running_and_provisioned)
        .await;
    let failed = scene
        .wait_for(&ns, "vm-fails", "phase Failed", |ci| {
            phase(ci) == Some(Phase::Failed)
        })
        .await;
    let job = latest(&failed, JobType::Provision).unwrap();
    assert_eq!(job.state, JobState::Failed, "{job:?}");

    let start = Instant::now();
    let metrics = loop {
        let m = scene.metrics(op).await;
        let finished = |state: &str| {
            m.get(&format!(
                "cloudkit_jobs_finished_total{{type=\"provision\",provider=\"aap\",state=\"{state}\"}}"
            ))
            .copied()
        };
        if finished("Succeeded") == Some(1.0) && finished("Failed") == Some(1.0) {
            break m;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "job counters never reached 1 succeeded + 1 failed: {m:#?}\n{}",
            scene.diagnostics(None)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        metrics.get("cloudkit_jobs_started_total{type=\"provision\",provider=\"aap\"}"),
        Some(&2.0),
        "{metrics:#?}"
    );
    assert!(
        metrics
            .get("cloudkit_job_duration_seconds_count{type=\"provision\",provider=\"aap\"}")
            .is_some_and(|n| *n >= 2.0),
        "{metrics:#?}"
    );
    assert!(
        metrics
            .get("cloudkit_reconciles_total")
            .is_some_and(|n| *n >= 2.0),
        "{metrics:#?}"
    );

    let events = scene.events("vm-ok").await;
    let reasons: Vec<&str> = events.iter().map(|(_, r, _)| r.as_str()).collect();
    assert!(
        reasons.contains(&"JobStarted") && reasons.contains(&"JobSucceeded"),
        "{events:?}"
    );
    let events = scene.events("vm-fails").await;
    assert!(
        events
            .iter()
            .any(|(t, r, note)| t == "Warning" && r == "JobFailed" && note.contains("no capacity")),
        "a Warning naming the failure: {events:?}"
    );
    scene.assert_no_forbidden();
}

/// The platform end to end (SPEC 8 to 11): the operator binary as the RBAC-limited user with the
/// tenant network on, AAP jobs running the real playbooks. A CI that names its tenant gets a
/// Ready Tenant with a namespace and a network, one provision job that creates the VirtualMachine
/// there, the reference to it and Available=True; a restart request recreates the VMI once without
/// a job; the deletion runs one deprovision job that removes the VM, and the Tenant and its
/// namespace go with their last CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ci_gets_a_tenant_and_a_vm_restarts_it_and_takes_the_tenant_with_it() {
    let mut scene = Scene::new("e2e-platform").await;
    let ns = scene.namespace.clone();
    let client = scene.client.clone();
    let sim = runner_simulator().await;
    scene
        .start_operator(
            Scene::aap_operator("operator-platform", &ns, &sim)
                .env("CLOUDKIT_TENANT_NETWORK", "udn"),
        )
        .await;
    scene.sim = Some(sim);
    let launches = |scene: &Scene| scene.sim.as_ref().unwrap().simulator().stats().launches;
    let kubevirt = cloudkit_testenv::kubevirt::shared_fake();
    let tenant_name = tenant_object_name(TEST_TENANT);
    let work_ns = tenant_namespace(&ns, TEST_TENANT).unwrap();
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), &ns);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &work_ns, &vm_resource());

    scene
        .create(
            &ns,
            "vm-p",
            ComputeInstanceSpec::for_template("e2e_template"),
        )
        .await;
    let available = |ci: &ComputeInstance| {
        condition(ci, CONDITION_AVAILABLE).is_some_and(|c| c.status == "True")
    };
    let ci = scene
        .wait_for(&ns, "vm-p", "Running with its VM Available", |ci| {
            running_and_provisioned(ci) && available(ci)
        })
        .await;
    let status = ci.status.clone().unwrap();
    let reference = status.tenant_reference.clone().unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.namespace.as_str()),
        (tenant_name.as_str(), ns.as_str())
    );
    let tenant = tenants.get(&tenant_name).await.unwrap();
    assert_eq!(tenant.phase(), Some(TenantPhase::Ready));
    assert_eq!(
        tenant.status.as_ref().unwrap().namespace.as_deref(),
        Some(work_ns.as_str())
    );
    assert!(namespaces.get_opt(&work_ns).await.unwrap().is_some());
    let udns: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &work_ns,
        &cloudkit_reconciler::tenant::udn_resource(),
    );
    assert!(
        udns.get_opt("udn").await.unwrap().is_some(),
        "the tenant's network"
    );
    let vm_ref = status.virtual_machine_reference.clone().unwrap();
    assert_eq!(
        (
            vm_ref.namespace.as_str(),
            vm_ref.kube_virt_virtual_machine_name.as_str()
        ),
        (work_ns.as_str(), "vm-p")
    );
    let vm = vms.get("vm-p").await.unwrap();
    assert_eq!(
        vm.labels().get(COMPUTE_INSTANCE_LABEL).map(String::as_str),
        Some("vm-p")
    );
    assert_eq!(jobs(&ci).len(), 1, "{:?}", jobs(&ci));
    assert_eq!(launches(&scene), 1);
    assert_eq!(kubevirt.vmis_created_in(&work_ns), 1);

    // A restart request, in whole seconds as a client writes it.
    let request = Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap());
    scene
        .merge_patch(
            &ns,
            "vm-p",
            serde_json::json!({"spec": {"restartRequestedAt": request}}),
        )
        .await;
    let ci = scene
        .wait_for(&ns, "vm-p", "the restart done and the VM Available", |ci| {
            ci.status.as_ref().and_then(|s| s.last_restarted_at.clone()) == Some(request.clone())
                && available(ci)
        })
        .await;
    assert!(condition(&ci, CONDITION_RESTART_IN_PROGRESS).is_none());
    assert!(condition(&ci, CONDITION_RESTART_FAILED).is_none());
    assert_eq!(kubevirt.vmis_created_in(&work_ns), 2, "one new VMI");
    assert_eq!(jobs(&ci).len(), 1, "a restart runs no job");
    assert_eq!(launches(&scene), 1);

    let last = scene.delete_and_wait_gone(&ns, "vm-p").await;
    let history = jobs(&last.ci);
    let types: Vec<JobType> = history.iter().map(|j| j.job_type).collect();
    assert_eq!(
        types,
        [JobType::Provision, JobType::Deprovision],
        "{history:?}"
    );
    assert_eq!(launches(&scene), 2, "one deprovision job");
    assert!(
        vms.get_opt("vm-p").await.unwrap().is_none(),
        "the deprovision job removed the VirtualMachine"
    );
    scene
        .eventually("the Tenant and its namespace to be gone", || async {
            matches!(tenants.get_opt(&tenant_name).await, Ok(None))
                && matches!(namespaces.get_opt(&work_ns).await, Ok(None))
        })
        .await;
    assert_eq!(kubevirt.vmis_created_in(&work_ns), 2);
    scene.assert_no_forbidden();
}

/// Feedback end to end (SPEC 13) with the real playbooks and the fake KubeVirt: the operator
/// binary, as the RBAC-limited user, talks TLS to a fulfillment service whose certificate a
/// private CA signed (trusted through `SSL_CERT_FILE`) and sends the token file's content. The
/// service sees STARTING while the job runs, then RUNNING with PROGRESSING FALSE and AVAILABLE
/// TRUE once the VM is Ready; a CI change that maps to nothing new costs a Get and no Update;
/// every Update carries metadata and spec exactly as fetched (the `Any` bytes included); the
/// deletion sends DELETING, then one Signal after the CI is gone; the token is nowhere else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fulfillment_service_sees_the_vm_become_ready_and_go() {
    use cloudkit_feedback::fake::{FakeFulfillment, Method, TestCa};
    use cloudkit_feedback::proto::private::v1 as pb;
    use cloudkit_feedback::proto::shared::v1::ConditionStatus;
    use prost::Message as _;

    let uuid = "5d0c9f5e-0000-4000-8000-00000000e2e5";
    let token = "fulfillment-e2e-token-7c1d";
    let fake = FakeFulfillment::new();
    let mut original = FakeFulfillment::object(uuid, "e2e_template");
    let parameters = &mut original.spec.as_mut().unwrap().template_parameters;
    parameters.insert(
        "name".into(),
        prost_types::Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: [&[0x0a, 0x06][..], "vm-é1".as_bytes()].concat(),
        },
    );
    parameters.insert(
        "opaque".into(),
        prost_types::Any {
            type_url: "type.example.com/vendor.Unknown".into(),
            value: vec![0xff, 0x00, 0x80, 0x7f],
        },
    );
    fake.insert(original.clone());
    fake.require_token(Some(token));
    let ca = TestCa::generate().unwrap();
    let server = fake.serve_tls(&ca, true).await.unwrap();

    let mut scene = Scene::new("e2e-feedback").await;
    let ns = scene.namespace.clone();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    let token_file = dir.path().join("token");
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let sim = runner_simulator().await;
    let op = scene
        .start_operator(
            Scene::aap_operator("operator-feedback", &ns, &sim)
                .env(
                    "CLOUDKIT_FULFILLMENT_SERVER_ADDRESS",
                    &server.localhost_address(),
                )
                .env(
                    "CLOUDKIT_FULFILLMENT_TOKEN_FILE",
                    &token_file.display().to_string(),
                )
                .env("SSL_CERT_FILE", &ca_file.display().to_string())
                .env("RUST_LOG", "debug"),
        )
        .await;
    scene.sim = Some(sim);
    let updates = || -> Vec<pb::ComputeInstance> {
        fake.calls_of(Method::Update)
            .into_iter()
            .filter_map(|c| c.object)
            .collect()
    };
    let wire = |object: &pb::ComputeInstance, kind: pb::ComputeInstanceConditionType| {
        let status = object.status.as_ref().unwrap();
        let found = status.conditions.iter().find(|c| c.r#type == kind as i32);
        found.map(|c| c.status).unwrap_or_default()
    };
    let state = |object: &pb::ComputeInstance| object.status.as_ref().unwrap().state;
    let ready = |object: &pb::ComputeInstance| {
        state(object) == pb::ComputeInstanceState::Running as i32
            && wire(object, pb::ComputeInstanceConditionType::Progressing)
                == ConditionStatus::False as i32
            && wire(object, pb::ComputeInstanceConditionType::Available)
                == ConditionStatus::True as i32
    };

    let api = scene.api_in(&ns);
    CiFixture::new("vm-fb")
        .template("e2e_template")
        .labelled(cloudkit_api::metadata::UUID_LABEL, uuid)
        .create(&api)
        .await;
    scene
        .wait_for(&ns, "vm-fb", "Running with its VM Available", |ci| {
            running_and_provisioned(ci)
                && condition(ci, CONDITION_AVAILABLE).is_some_and(|c| c.status == "True")
        })
        .await;
    scene
        .eventually(
            "an Update with RUNNING, PROGRESSING FALSE, AVAILABLE TRUE",
            || async { updates().last().is_some_and(ready) },
        )
        .await;
    let sent = updates();
    assert!(
        sent.iter().any(|o| {
            state(o) == pb::ComputeInstanceState::Starting as i32
                && wire(o, pb::ComputeInstanceConditionType::Progressing)
                    == ConditionStatus::True as i32
        }),
        "an Update with STARTING and PROGRESSING TRUE while the provision job runs: {sent:?}"
    );
    let states: Vec<i32> = sent.iter().map(state).collect();
    let running_from = states
        .iter()
        .position(|s| *s == pb::ComputeInstanceState::Running as i32)
        .unwrap();
    assert!(
        states[..running_from]
            .iter()
            .all(|s| *s == pb::ComputeInstanceState::Starting as i32)
            && states[running_from..]
                .iter()
                .all(|s| *s == pb::ComputeInstanceState::Running as i32),
        "STARTING, then RUNNING: {states:?}"
    );
    let spec_bytes = original.spec.as_ref().unwrap().encode_to_vec();
    let metadata_bytes = original.metadata.as_ref().unwrap().encode_to_vec();
    for object in &sent {
        assert_eq!(object.spec.as_ref().unwrap().encode_to_vec(), spec_bytes);
        assert_eq!(
            object.metadata.as_ref().unwrap().encode_to_vec(),
            metadata_bytes
        );
    }
    assert_eq!(fake.stored(uuid).unwrap().spec, original.spec);
    scene
        .eventually("the feedback finalizer", || async {
            api.get("vm-fb").await.is_ok_and(|ci| {
                finalizers(&ci)
                    .iter()
                    .any(|f| f == cloudkit_feedback::plan::FEEDBACK_FINALIZER)
            })
        })
        .await;

    // A change that maps to nothing new: one more Get, no Update.
    let (gets, count) = (fake.calls_of(Method::Get).len(), sent.len());
    annotate(&api, "vm-fb", "example.com/note", "nothing for the service").await;
    scene
        .eventually("a Get for the annotated CI", || async {
            fake.calls_of(Method::Get).len() > gets
        })
        .await;
    assert_eq!(updates().len(), count, "no Update when nothing changed");

    let status_text = scene.raw(&ns, "vm-fb").await.to_string();
    scene.delete_and_wait_gone(&ns, "vm-fb").await;
    scene
        .eventually("a Signal", || async { fake.signals(uuid) >= 1 })
        .await;
    let calls = fake.calls();
    let deleting = calls.iter().position(|c| {
        c.object
            .as_ref()
            .is_some_and(|o| state(o) == pb::ComputeInstanceState::Deleting as i32)
    });
    let signal = calls.iter().position(|c| c.method == Method::Signal);
    assert!(
        deleting.is_some() && deleting < signal,
        "DELETING before the Signal: {deleting:?} {signal:?}"
    );
    assert_eq!(fake.signals(uuid), 1);
    assert!(
        calls
            .iter()
            .all(|c| c.authorization.as_deref() == Some(&format!("Bearer {token}")[..])),
        "every call carried the token"
    );

    let mut seen = scene.operators[op].log_text();
    seen.push_str(&scene.operators[op].metrics_text().await.unwrap());
    seen.push_str(&status_text);
    for (kind, reason, note) in scene.events("vm-fb").await {
        seen.push_str(&format!("{kind} {reason} {note}\n"));
    }
    assert!(!seen.contains(token), "the token leaked");
    scene.assert_no_forbidden();
}

/// The playbooks as an AAP job runs them (`ansible_eda.event.payload` in extra vars), steered by
/// templateParameters: a failed provision keeps the finalizer and writes no annotation; a slow
/// one takes its time; a failed deprovision keeps the finalizer, a good one removes only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbooks_follow_template_parameters() {
    let automation = automation();
    let env = env();
    let ns = env.namespace("e2e-playbooks").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let mut ci = ComputeInstance::new(
        "vm-pb",
        spec_with_parameters(
            "e2e_template",
            serde_json::json!({
                "sim_provision_outcome": "failed",
                "sim_deprovision_running_seconds": 2,
            }),
        ),
    );
    ci.metadata.finalizers = Some(vec![FINALIZER.to_string()]);
    api.create(&Default::default(), &ci).await.unwrap();
    // The playbooks work in the tenant's namespace, found through status.tenantReference: a
    // Ready Tenant with its namespace, as the operator's Tenant controller leaves it.
    let client = env.admin_client().await;
    let tenant_name = tenant_object_name(TEST_TENANT);
    let work_ns = tenant_namespace(&ns, TEST_TENANT).unwrap();
    create_ready_tenant(&client, &ns, &tenant_name, &work_ns).await;
    let vms: Api<DynamicObject> = Api::namespaced_with(client.clone(), &work_ns, &vm_resource());

    let run = |playbook: &str, ci: &ComputeInstance, desired: &str| {
        let mut payload = serde_json::to_value(ci).unwrap();
        payload["status"] = serde_json::json!({
            "desiredConfigVersion": desired,
            "tenantReference": {"name": tenant_name, "namespace": ns},
        });
        let vars = serde_json::json!({"ansible_eda": {"event": {"payload": payload}}});
        let file = run_dir().join(format!("{}-{playbook}-vars.json", ns));
        std::fs::write(&file, vars.to_string()).unwrap();
        let start = Instant::now();
        let out = Command::new(automation.bin("ansible-playbook"))
            .arg(workspace_root().join("examples/automation").join(playbook))
            .arg("-e")
            .arg(format!("@{}", file.display()))
            .arg("-e")
            .arg(format!(
                "ansible_python_interpreter={}",
                automation.python().display()
            ))
            .env("PATH", automation.path_var())
            .env("K8S_AUTH_KUBECONFIG", env.kubeconfig_path())
            .env("ANSIBLE_NOCOLOR", "1")
            .output()
            .expect("running ansible-playbook");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text, start.elapsed())
    };
    let get = || async { api.get("vm-pb").await.unwrap() };
    let finalizers = |ci: &ComputeInstance| ci.metadata.finalizers.clone().unwrap_or_default();
    let annotation = |ci: &ComputeInstance| {
        ci.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RECONCILED_CONFIG_VERSION_ANNOTATION).cloned())
    };

    let (ok, log, _) = run("provision.yml", &get().await, "v1");
    assert!(!ok, "sim_provision_outcome=failed fails the run:\n{log}");
    let now = get().await;
    assert_eq!(finalizers(&now), [FINALIZER, AAP_FINALIZER], "{log}");
    assert_eq!(annotation(&now), None, "{log}");

    // A provision that succeeds reports the version it was given.
    api.patch(
        "vm-pb",
        &Default::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"templateParameters":
            "{\"sim_deprovision_outcome\": \"failed\"}"}})),
    )
    .await
    .unwrap();
    let (ok, log, _) = run("provision.yml", &get().await, "v2");
    assert!(ok, "{log}");
    assert_eq!(annotation(&get().await).as_deref(), Some("v2"), "{log}");
    // It created the labelled VirtualMachine in the tenant's namespace and waited for Ready.
    let vm = vms.get("vm-pb").await.unwrap();
    assert_eq!(
        vm.labels().get(COMPUTE_INSTANCE_LABEL).map(String::as_str),
        Some("vm-pb")
    );
    assert_eq!(vm.data["spec"]["running"], true);
    assert_eq!(
        vm.data["status"]["conditions"][0]["status"], "True",
        "{log}"
    );

    let (ok, log, _) = run("deprovision.yml", &get().await, "v2");
    assert!(!ok, "sim_deprovision_outcome=failed fails the run:\n{log}");
    assert_eq!(
        finalizers(&get().await),
        [FINALIZER, AAP_FINALIZER],
        "{log}"
    );

    api.patch(
        "vm-pb",
        &Default::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"templateParameters":
            "{\"sim_running_seconds\": 2}"}})),
    )
    .await
    .unwrap();
    let (ok, log, took) = run("deprovision.yml", &get().await, "v2");
    assert!(ok, "{log}");
    assert!(
        took >= Duration::from_secs(2),
        "sim_running_seconds=2 took {took:?}"
    );
    assert_eq!(
        finalizers(&get().await),
        [FINALIZER],
        "only its own finalizer goes:\n{log}"
    );
    assert!(
        vms.get_opt("vm-pb").await.unwrap().is_none(),
        "the VirtualMachine is gone:\n{log}"
    );
}

/// Tenant `name` in `namespace`, Ready, with `tenant_ns` (created here) as its namespace.
async fn create_ready_tenant(client: &Client, namespace: &str, name: &str, tenant_ns: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut object = Namespace::default();
    object.metadata.name = Some(tenant_ns.to_string());
    namespaces
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
    let tenants: Api<Tenant> = Api::namespaced(client.clone(), namespace);
    tenants
        .create(
            &PostParams::default(),
            &Tenant::new(
                name,
                TenantSpec {
                    name: TEST_TENANT.into(),
                },
            ),
        )
        .await
        .unwrap();
    let status = serde_json::json!({"status": {"phase": "Ready", "namespace": tenant_ns}});
    tenants
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// The manifests of `deploy/` (but the CRD, which the other tests install) are accepted by a real
/// API server with kubectl's schema validation on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_manifests_apply_to_an_api_server() {
    let env = env();
    let kubectl = cloudkit_testenv::kubectl_path().expect("kubectl (hack/testenv-install.sh)");
    let deploy = workspace_root().join("deploy");
    for file in [
        "namespace.yaml",
        "rbac.yaml",
        "secret.example.yaml",
        "deployment.yaml",
    ] {
        let out = Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(env.kubeconfig_path())
            .args(["apply", "--validate=true", "-f"])
            .arg(deploy.join(file))
            .output()
            .expect("running kubectl");
        assert!(
            out.status.success(),
            "kubectl apply -f deploy/{file}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The operator's service account may do what the binary needs, and no more.
    let can = |verb: &str, resource: &str, ns: Option<&str>| {
        let mut cmd = Command::new(&kubectl);
        cmd.arg("--kubeconfig")
            .arg(env.kubeconfig_path())
            .args(["auth", "can-i", verb, resource])
            .args([
                "--as",
                "system:serviceaccount:cloudkit-operator-system:cloudkit-operator",
            ]);
        match ns {
            Some(ns) => cmd.args(["-n", ns]),
            None => cmd.arg("--all-namespaces"),
        };
        let out = cmd.output().expect("kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(can("watch", "computeinstances.cloudkit.openshift.io", None));
    assert!(can(
        "patch",
        "computeinstances.cloudkit.openshift.io/status",
        None
    ));
    assert!(can("create", "events.events.k8s.io", None));
    assert!(can(
        "patch",
        "leases.coordination.k8s.io",
        Some("cloudkit-operator-system")
    ));
    assert!(!can(
        "delete",
        "computeinstances.cloudkit.openshift.io",
        None
    ));
    assert!(!can(
        "update",
        "computeinstances.cloudkit.openshift.io",
        None
    ));
    assert!(!can(
        "create",
        "leases.coordination.k8s.io",
        Some("default")
    ));
    assert!(!can("get", "secrets", Some("cloudkit-operator-system")));
}
