//! The operator binary as a user runs it: start-up errors, the HTTP endpoints, and what kubectl
//! shows about a CI it manages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudkit_aap_sim::Outcome;
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, JobState, JobType, Phase};
use cloudkit_test_support::*;

fn bare() -> Command {
    let mut cmd = Command::new(operator_binary());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_naming_the_setting() {
    let aap = [
        ("CLOUDKIT_AAP_URL", "https://aap.example/api"),
        ("CLOUDKIT_AAP_TOKEN", "secret-token-value"),
        ("CLOUDKIT_AAP_PROVISION_TEMPLATE", "p"),
        ("CLOUDKIT_AAP_DEPROVISION_TEMPLATE", "d"),
    ];
    let rows: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("CLOUDKIT_PROVISIONING_PROVIDER", "tower")],
            "CLOUDKIT_PROVISIONING_PROVIDER",
        ),
        (
            vec![("CLOUDKIT_PROVISIONING_PROVIDER", "aap")],
            "CLOUDKIT_AAP_TOKEN",
        ),
        (
            [aap.to_vec(), vec![("CLOUDKIT_AAP_URL", "")]].concat(),
            "CLOUDKIT_AAP_URL",
        ),
        (
            [
                aap.to_vec(),
                vec![("CLOUDKIT_AAP_STATUS_POLL_INTERVAL", "0s")],
            ]
            .concat(),
            "CLOUDKIT_AAP_STATUS_POLL_INTERVAL",
        ),
        (
            [
                aap[..1].to_vec(),
                aap[2..].to_vec(),
                vec![("CLOUDKIT_AAP_TOKEN_FILE", "/nonexistent/token")],
            ]
            .concat(),
            "CLOUDKIT_AAP_TOKEN_FILE",
        ),
        (
            [aap.to_vec(), vec![("CLOUDKIT_MAX_JOB_HISTORY", "lots")]].concat(),
            "CLOUDKIT_MAX_JOB_HISTORY",
        ),
        (
            [aap.to_vec(), vec![("CLOUDKIT_TENANT_NETWORK", "ovn")]].concat(),
            "CLOUDKIT_TENANT_NETWORK",
        ),
        (
            [
                aap.to_vec(),
                vec![("CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE", "Not/A/Namespace")],
            ]
            .concat(),
            "CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE",
        ),
    ];
    for (vars, setting) in rows {
        let mut cmd = bare();
        for (k, v) in &vars {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{setting}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].starts_with(&format!("error: {setting}: ")),
            "{stderr}"
        );
        assert!(!stderr.contains("secret-token-value"), "{stderr}");
    }
}

#[test]
fn a_token_never_travels_in_clear_to_the_fulfillment_service() {
    let aap = [
        ("CLOUDKIT_AAP_URL", "https://aap.example/api"),
        ("CLOUDKIT_AAP_TOKEN", "secret-token-value"),
        ("CLOUDKIT_AAP_PROVISION_TEMPLATE", "p"),
        ("CLOUDKIT_AAP_DEPROVISION_TEMPLATE", "d"),
    ];
    // As the Go Deployment passes it: the boolean flag without a value.
    let mut by_flags = bare();
    by_flags.envs(aap).args([
        "--fulfillment-server-address=fulfillment:8000",
        "--grpc-plaintext",
        "--fulfillment-server-token-file=/var/run/secrets/token",
    ]);
    let mut by_env = bare();
    by_env.envs(aap).envs([
        ("CLOUDKIT_FULFILLMENT_SERVER_ADDRESS", "fulfillment:8000"),
        ("CLOUDKIT_GRPC_PLAINTEXT", "true"),
        ("CLOUDKIT_FULFILLMENT_TOKEN_FILE", "/var/run/secrets/token"),
    ]);
    for mut cmd in [by_flags, by_env] {
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert!(
            lines[0].starts_with("error: CLOUDKIT_GRPC_PLAINTEXT: ")
                && lines[0].contains("CLOUDKIT_FULFILLMENT_TOKEN_FILE"),
            "{stderr}"
        );
    }
}

#[test]
fn crd_subcommand_prints_the_committed_crds() {
    let out = bare().arg("crd").output().unwrap();
    assert!(out.status.success());
    let committed = |file: &str| std::fs::read_to_string(workspace_root().join(file)).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "{}---\n{}",
            committed("crds/computeinstance.yaml"),
            committed("crds/tenant.yaml")
        ),
        "ComputeInstance, then Tenant, as one multi-document YAML"
    );
}

/// The operator binary against the shared API server and the simulator at
/// `sim_url`, logging JSON as in production.
async fn start_operator(
    name: &str,
    namespace: &str,
    sim_url: &str,
    extra: &[(&str, &str)],
) -> OperatorProcess {
    let mut settings =
        OperatorSettings::new(name, operator_binary(), env().kubeconfig_path(), namespace)
            .aap(sim_url, SIM_TOKEN, PROVISION_TEMPLATE, DEPROVISION_TEMPLATE)
            .poll_interval("300ms")
            .json_logs();
    for (k, v) in extra {
        settings = settings.env(k, v);
    }
    settings.start().await.unwrap_or_else(|e| panic!("{e}"))
}

async fn api(namespace: &str) -> kube::Api<ComputeInstance> {
    kube::Api::namespaced(env().admin_client().await, namespace)
}

fn kubectl(args: &[&str]) -> String {
    let out = Command::new(cloudkit_testenv::kubectl_path().unwrap())
        .env("KUBECONFIG", env().kubeconfig_path())
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_metrics_and_what_kubectl_shows() {
    let ns = env().namespace("bin").await;
    let sim = simulator(phases(50, 0, 200), phases(50, 0, 100), Outcome::Successful).await;
    let op = start_operator("bin-endpoints", &ns, &sim.api_url(), &[]).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", op.http().unwrap());
    for path in ["/healthz", "/readyz"] {
        let start = Instant::now();
        loop {
            let r = http.get(format!("{base}{path}")).send().await.unwrap();
            if r.status().is_success() {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{path} never ready: {}",
                op.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    let api = api(&ns).await;
    create(
        &api,
        "vm-kubectl",
        ComputeInstanceSpec::for_template("osac.templates.ocp_virt_vm"),
    )
    .await;
    let mut bad = ComputeInstanceSpec::for_template("test_template");
    bad.template_parameters = Some("not json".into());
    create(&api, "vm-bad", bad).await;
    wait_for(
        &api,
        "vm-kubectl",
        Some(&sim),
        "Running and succeeded",
        |ci| {
            ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
                && latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Succeeded)
        },
    )
    .await;
    let bad = wait_for(&api, "vm-bad", None, "InvalidSpec", |ci| {
        ci.status
            .as_ref()
            .and_then(|s| {
                cloudkit_reconciler::find_condition(&s.conditions, "ConfigurationApplied")
            })
            .is_some_and(|c| c.reason == "InvalidSpec")
    })
    .await;
    assert!(
        latest(&bad, JobType::Provision).is_none(),
        "no job for an invalid spec"
    );

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(
        metrics
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let text = metrics.text().await.unwrap();
    for needle in [
        r#"cloudkit_jobs_started_total{type="provision",provider="aap"} 1"#,
        r#"cloudkit_jobs_finished_total{type="provision",provider="aap",state="Succeeded"} 1"#,
        r#"cloudkit_job_duration_seconds_count{type="provision",provider="aap"} 1"#,
        "cloudkit_reconciles_total",
        r#"cloudkit_provider_request_duration_seconds_count{provider="aap",operation="launch"} 1"#,
    ] {
        assert!(text.contains(needle), "missing {needle}:\n{text}");
    }
    assert!(!text.contains(SIM_TOKEN));

    // kubectl get: the printer columns a user sees.
    let table = kubectl(&["get", "ci", "-n", &ns]);
    let header = table.lines().next().unwrap_or_default().to_string();
    for column in ["NAME", "TEMPLATE", "PHASE", "JOB", "JOB STATE", "AGE"] {
        assert!(header.contains(column), "{table}");
    }
    let row = table
        .lines()
        .find(|l| l.starts_with("vm-kubectl"))
        .unwrap_or_default();
    for cell in [
        "osac.templates.ocp_virt_vm",
        "Running",
        "provision",
        "Succeeded",
    ] {
        assert!(row.contains(cell), "{table}");
    }

    // kubectl describe: conditions and events a user can act on.
    let start = Instant::now();
    loop {
        let describe = kubectl(&["describe", "ci", "-n", &ns, "vm-bad"]);
        let ok = describe.contains("InvalidSpec") && describe.contains("spec.templateParameters");
        let events_ok = describe.contains("Warning") && describe.contains("Events:");
        if ok && events_ok {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "describe lacks condition or event:\n{describe}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let describe = kubectl(&["describe", "ci", "-n", &ns, "vm-kubectl"]);
    if std::env::var_os("CLOUDKIT_SHOW_KUBECTL").is_some() {
        eprintln!(
            "{table}\n{describe}\n{}",
            kubectl(&["describe", "ci", "-n", &ns, "vm-bad"])
        );
    }
    for needle in [
        "ConfigurationApplied",
        "Applied",
        "JobStarted",
        "JobSucceeded",
    ] {
        assert!(describe.contains(needle), "missing {needle}:\n{describe}");
    }
    assert!(
        !op.log_text().contains(SIM_TOKEN),
        "the token never appears in logs"
    );
    stops_on_sigterm(op).await;
}

/// SIGTERM: the operator finishes in-flight work, stops its endpoints and exits 0.
async fn stops_on_sigterm(mut op: OperatorProcess) {
    let status = op.stop(Duration::from_secs(15)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit {status:?} within 15 s of SIGTERM; log:\n{}",
        op.log_tail(60)
    );
    assert!(op.log_text().contains("stopped"), "{}", op.log_tail(60));
}

/// `cloudkit_reconciles_total`; 0 when the process does not answer.
async fn reconciles(op: &OperatorProcess) -> f64 {
    op.metrics()
        .await
        .map(|m| metric_sum(&m, "cloudkit_reconciles_total"))
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_one_replica_works_and_the_other_takes_over() {
    let ns = env().namespace("lease").await;
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let lease = [
        ("CLOUDKIT_LEADER_ELECT", "true"),
        ("CLOUDKIT_LEADER_ELECTION_NAMESPACE", ns.as_str()),
    ];
    let mut first = start_operator("lease-first", &ns, &sim.api_url(), &lease).await;
    // The first replica holds the lease before the second starts.
    eventually("the lease to be held", || async {
        lease_holder(&ns).await.is_some()
    })
    .await;
    let second = start_operator("lease-second", &ns, &sim.api_url(), &lease).await;
    let http = reqwest::Client::new();

    let api = api(&ns).await;
    create(&api, "vm-a", ComputeInstanceSpec::for_template("t")).await;
    wait_for(&api, "vm-a", Some(&sim), "Running", |ci| {
        ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    assert!(reconciles(&first).await > 0.0, "the leader works");
    assert_eq!(reconciles(&second).await, 0.0, "the standby does nothing");
    // The standby is ready (it serves probes) while it waits.
    let ready = http
        .get(format!("http://{}/readyz", second.http().unwrap()))
        .send()
        .await
        .unwrap();
    assert!(ready.status().is_success());

    // The leader dies without releasing the lease: the standby takes over within the lease
    // duration (15 s) plus its retry period.
    first.kill();
    create(&api, "vm-b", ComputeInstanceSpec::for_template("t")).await;
    let started = Instant::now();
    wait_for(
        &api,
        "vm-b",
        Some(&sim),
        "Running after the takeover",
        |ci| ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "took over after {:?}",
        started.elapsed()
    );
    assert!(reconciles(&second).await > 0.0);
    assert_eq!(
        sim.simulator().stats().launches,
        2,
        "one provision per CI, no duplicates"
    );
    drop(second);
}

/// The binary runs the Tenant controller next to the ComputeInstance controller, under the same
/// leader election, as the RBAC-limited user with the roles of `deploy/rbac.yaml`: a Tenant gets
/// its namespace and network, and loses them when it is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_set_up_and_torn_down_under_the_deployed_roles() {
    use cloudkit_api::names::{enc, tenant_object_name};
    use cloudkit_api::{Tenant, TenantPhase, TenantSpec};
    use kube::api::{DeleteParams, DynamicObject, PostParams};

    let mut scene = Scene::new("bin-tenant").await;
    cloudkit_testenv::kubevirt::install_platform_crds(&scene.client)
        .await
        .unwrap();
    let ns = scene.namespace.clone();
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    scene
        .start_operator(
            Scene::aap_operator("bin-tenant", &ns, &sim).env("CLOUDKIT_TENANT_NETWORK", "udn"),
        )
        .await;

    let tenants: kube::Api<Tenant> = kube::Api::namespaced(scene.client.clone(), &ns);
    let name = tenant_object_name("acme");
    let tenant_ns = format!("{ns}-{}", enc("acme"));
    tenants
        .create(
            &PostParams::default(),
            &Tenant::new(
                &name,
                TenantSpec {
                    name: "acme".into(),
                },
            ),
        )
        .await
        .unwrap();
    scene
        .eventually("the tenant to be Ready", || async {
            tenants
                .get(&name)
                .await
                .is_ok_and(|t| t.phase() == Some(TenantPhase::Ready))
        })
        .await;
    let udns: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        scene.client.clone(),
        &tenant_ns,
        &cloudkit_reconciler::tenant::udn_resource(),
    );
    assert!(udns.get_opt("udn").await.unwrap().is_some());

    tenants
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(scene.client.clone());
    scene
        .eventually("the tenant and its namespace to be gone", || async {
            matches!(tenants.get_opt(&name).await, Ok(None))
                && matches!(namespaces.get_opt(&tenant_ns).await, Ok(None))
        })
        .await;
    scene.assert_no_forbidden();
}

/// The binary runs the feedback controller next to the others, under the same leader election
/// and as the RBAC-limited user with the roles of `deploy/rbac.yaml`: a labelled CI's state
/// reaches the fulfillment service, and its deletion ends with one Signal once the CI controller
/// has let it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fulfillment_service_learns_the_state_and_the_deletion() {
    use cloudkit_feedback::fake::{FakeFulfillment, Method};
    use cloudkit_feedback::proto::private::v1 as pb;

    let fake = FakeFulfillment::new();
    let uuid = "3e8a1c2d-0000-4000-8000-0000000000e2";
    let original = FakeFulfillment::object(uuid, "t");
    fake.insert(original.clone());
    let server = fake.serve_plaintext().await.unwrap();
    let mut scene = Scene::new("feedback-bin").await;
    let ns = scene.namespace.clone();
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let address = server.address();
    scene
        .start_operator(
            Scene::aap_operator("feedback", &ns, &sim)
                .env("CLOUDKIT_TENANT_NETWORK", "none")
                .env(
                    "RUST_LOG",
                    "info,cloudkit_reconciler=debug,cloudkit_feedback=debug",
                )
                .env("CLOUDKIT_FULFILLMENT_SERVER_ADDRESS", &address)
                .env("CLOUDKIT_GRPC_PLAINTEXT", "true"),
        )
        .await;
    let state_sent = |state: pb::ComputeInstanceState| {
        fake.calls_of(Method::Update)
            .iter()
            .filter_map(|c| c.object.as_ref())
            .any(|o| o.status.as_ref().is_some_and(|s| s.state == state as i32))
    };

    let api = api(&ns).await;
    let mut ci = ComputeInstance::new("vm-f", ComputeInstanceSpec::for_template("t"));
    ci.metadata.labels = Some(
        [(
            cloudkit_api::metadata::UUID_LABEL.to_string(),
            uuid.to_string(),
        )]
        .into(),
    );
    api.create(&Default::default(), &in_test_tenant(ci))
        .await
        .unwrap();
    let running = wait_for(&api, "vm-f", Some(&sim), "Running", |ci| {
        ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    eventually("an Update with RUNNING", || async {
        state_sent(pb::ComputeInstanceState::Running)
    })
    .await;
    let finalizers = api
        .get("vm-f")
        .await
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default();
    assert!(
        finalizers
            .iter()
            .any(|f| f == cloudkit_feedback::plan::FEEDBACK_FINALIZER),
        "{finalizers:?} of {running:?}"
    );
    let sent = fake
        .calls_of(Method::Update)
        .last()
        .cloned()
        .unwrap()
        .object
        .unwrap();
    assert_eq!(sent.metadata, original.metadata);
    assert_eq!(sent.spec, original.spec);

    api.delete("vm-f", &Default::default()).await.unwrap();
    wait_gone(&api, "vm-f", Some(&sim)).await;
    assert!(state_sent(pb::ComputeInstanceState::Deleting));
    eventually("a Signal", || async { fake.signals(uuid) >= 1 }).await;
    assert_eq!(fake.signals(uuid), 1);
    let op = scene.operators.remove(0);
    assert!(
        op.forbidden_lines().is_empty(),
        "{:?}",
        op.forbidden_lines()
    );
    stops_on_sigterm(op).await;
}

/// The Lease of the Go operator (its controller-runtime leader election id), the default.
const GO_LEASE: &str = "95f7e044.openshift.io";

async fn lease_holder(ns: &str) -> Option<String> {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env().admin_client().await, ns);
    leases
        .get_opt(GO_LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
}

/// The Go operator's Deployment, image swapped: its container arguments unchanged, the watched
/// namespace from the pod's, the provider settings from the `cloudkit-config` Secret (envFrom),
/// the roles of `deploy/rbac.yaml`. Probes answer on :8081, /metrics is off (Go's default), the
/// Lease is the Go one in the operator's namespace, and CIs are reconciled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_go_deployment_runs_unchanged() {
    use k8s_openapi::api::core::v1::Secret;

    let mut scene = Scene::new("go-deploy").await;
    let ns = scene.namespace.clone();
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let secrets: kube::Api<Secret> = kube::Api::namespaced(scene.client.clone(), &ns);
    let config = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("cloudkit-config".into()),
            ..Default::default()
        },
        string_data: Some(
            [
                ("CLOUDKIT_PROVISIONING_PROVIDER", "aap".to_string()),
                ("CLOUDKIT_AAP_URL", sim.api_url()),
                ("CLOUDKIT_AAP_TOKEN", SIM_TOKEN.to_string()),
                ("CLOUDKIT_AAP_PROVISION_TEMPLATE", PROVISION_TEMPLATE.into()),
                (
                    "CLOUDKIT_AAP_DEPROVISION_TEMPLATE",
                    DEPROVISION_TEMPLATE.into(),
                ),
                ("CLOUDKIT_AAP_STATUS_POLL_INTERVAL", "300ms".into()),
                // The test API server has no OVN-Kubernetes.
                ("CLOUDKIT_TENANT_NETWORK", "none".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        ),
        ..Default::default()
    };
    secrets.create(&Default::default(), &config).await.unwrap();

    // What the kubelet gives the container: the Secret's keys (envFrom) and the pod namespace
    // (fieldRef), nothing else of ours.
    let mut settings = OperatorSettings::new(
        "go-deploy",
        operator_binary(),
        env().limited_kubeconfig_path(),
        &ns,
    )
    .without_env("CLOUDKIT_HTTP_ADDRESS")
    .without_env("CLOUDKIT_TENANT_NETWORK")
    .env("POD_NAMESPACE", &ns)
    .args(&[
        "--leader-elect",
        "--health-probe-bind-address=:8081",
        "--grpc-insecure",
    ]);
    let stored = secrets.get("cloudkit-config").await.unwrap();
    for (key, value) in stored.data.unwrap() {
        settings = settings.env(&key, std::str::from_utf8(&value.0).unwrap());
    }
    let index = scene.start_operator(settings).await;
    let op = &mut scene.operators[index];
    op.wait_logged(&["acquired leadership"], DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        op.http().map(|a| a.port()),
        Some(8081),
        "{}",
        op.log_tail(20)
    );
    let http = reqwest::Client::new();
    for path in ["/healthz", "/readyz"] {
        let r = http
            .get(format!("http://127.0.0.1:8081{path}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let metrics = http
        .get("http://127.0.0.1:8081/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 404, "/metrics is not on the probes' port");
    assert!(
        !op.log_text().contains("serving /metrics"),
        "/metrics is off by default: {}",
        op.log_tail(20)
    );
    assert_eq!(
        lease_holder(&ns).await,
        Some(op.lease_identity()),
        "the Go operator's Lease, in the pod's namespace"
    );

    let api = api(&ns).await;
    create(&api, "vm-go", ComputeInstanceSpec::for_template("t")).await;
    wait_for(&api, "vm-go", Some(&sim), "Running", |ci| {
        ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    scene.assert_no_forbidden();
    let op = scene.operators.remove(0);
    stops_on_sigterm(op).await;
}

/// A service account's token from the TokenRequest API.
async fn service_account_token(ns: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;

    let accounts: kube::Api<ServiceAccount> = kube::Api::namespaced(env().admin_client().await, ns);
    let account = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    accounts
        .create(&Default::default(), &account)
        .await
        .unwrap();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            bound_object_ref: None,
        },
        ..Default::default()
    };
    accounts
        .create_token_request(name, &Default::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// `/metrics` with `--metrics-bind-address` and the secure default: HTTPS with a self-signed
/// certificate; 401 without a token or with one the API server does not know, 403 for a user
/// without the `cloudkit-operator-metrics-reader` ClusterRole of `deploy/rbac.yaml`, 200 for one
/// bound to it. The operator checks the tokens with the roles of `deploy/rbac.yaml` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secure_metrics_only_for_callers_allowed_to_get_them() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, RoleRef, Subject};

    let mut scene = Scene::new("metrics-auth").await;
    let ns = scene.namespace.clone();
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let port = free_port();
    let settings = Scene::aap_operator("metrics-auth", &ns, &sim)
        .without_env("CLOUDKIT_HTTP_ADDRESS")
        .args(&[
            "--health-probe-bind-address=127.0.0.1:0",
            &format!("--metrics-bind-address=127.0.0.1:{port}"),
        ]);
    let index = scene.start_operator(settings).await;
    scene.operators[index]
        .wait_logged(&["serving /metrics over HTTPS"], DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let reader: ClusterRole = serde_json::from_value(
        yaml_documents(&workspace_root().join("deploy/rbac.yaml"))
            .into_iter()
            .find(|d| d["metadata"]["name"] == "cloudkit-operator-metrics-reader")
            .expect("deploy/rbac.yaml has the metrics-reader ClusterRole"),
    )
    .unwrap();
    let role = format!("{ns}-metrics-reader");
    let mut role_object = reader.clone();
    role_object.metadata = kube::api::ObjectMeta {
        name: Some(role.clone()),
        ..Default::default()
    };
    kube::Api::<ClusterRole>::all(scene.client.clone())
        .create(&Default::default(), &role_object)
        .await
        .unwrap();
    let allowed = service_account_token(&ns, "scraper").await;
    let refused = service_account_token(&ns, "nobody").await;
    let binding = ClusterRoleBinding {
        metadata: kube::api::ObjectMeta {
            name: Some(role.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role,
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "scraper".into(),
            namespace: Some(ns.clone()),
            api_group: None,
        }]),
    };
    kube::Api::<ClusterRoleBinding>::all(scene.client.clone())
        .create(&Default::default(), &binding)
        .await
        .unwrap();

    let https = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/metrics");
    let status = |token: Option<String>| {
        let mut request = https.get(&url).timeout(Duration::from_secs(10));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        async move { request.send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(status(None).await.unwrap(), 401, "no token");
    assert_eq!(
        status(Some("not-a-token".into())).await.unwrap(),
        401,
        "a token the API server does not know"
    );
    assert_eq!(status(Some(refused)).await.unwrap(), 403, "no permission");
    // The binding reaches the API server's authorizer within moments.
    eventually("200 for the bound service account", || {
        let ok = status(Some(allowed.clone()));
        async move { ok.await.is_ok_and(|s| s == 200) }
    })
    .await;
    let body = https
        .get(&url)
        .bearer_auth(&allowed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("cloudkit_reconciles_total"), "{body}");
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    assert!(
        plain.is_err_and(|e| !e.is_timeout()),
        "no plain HTTP on the secure port"
    );
    scene.assert_no_forbidden();
}

/// A Lease held the way controller-runtime holds it (holder `<host>_<uuid>`, 15 s, renewed every
/// 2 s) keeps a Rust replica waiting, however long it renews; once the holder stops renewing,
/// the Rust replica takes the Lease over and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_controller_runtime_holder_keeps_the_lease_until_it_stops_renewing() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use kube::api::{Patch, PatchParams};

    let ns = env().namespace("go-lease").await;
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let leases: kube::Api<Lease> = kube::Api::namespaced(env().admin_client().await, &ns);
    let go_holder =
        "cloudkit-operator-controller-manager-6d4f8b7c9-x2kqz_1b0c7a8e-3d52-4f0a-9e61-2f5d8c4b7a90";
    let now = || MicroTime(jiff::Timestamp::now());
    leases
        .create(
            &Default::default(),
            &Lease {
                metadata: kube::api::ObjectMeta {
                    name: Some(GO_LEASE.into()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(go_holder.into()),
                    lease_duration_seconds: Some(15),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            },
        )
        .await
        .unwrap();
    // The Go replica renews every 2 s (client-go's retry period) until told to stop.
    let renewing = Arc::new(AtomicBool::new(true));
    let renewals = Arc::new(AtomicUsize::new(0));
    let renewer = {
        let (leases, renewing, renewals) = (leases.clone(), renewing.clone(), renewals.clone());
        tokio::spawn(async move {
            while renewing.load(Ordering::SeqCst) {
                let patch = serde_json::json!({"spec": {"renewTime": now()}});
                leases
                    .patch(GO_LEASE, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .unwrap();
                renewals.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };

    let mut op = start_operator(
        "go-lease",
        &ns,
        &sim.api_url(),
        &[
            ("CLOUDKIT_LEADER_ELECT", "true"),
            ("CLOUDKIT_LEADER_ELECTION_NAMESPACE", ns.as_str()),
        ],
    )
    .await;
    op.wait_logged(&["waiting for leadership"], DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Ten renewals (20 s) outlast the 15 s the Lease lasts without them.
    let seen = renewals.load(Ordering::SeqCst);
    eventually("ten more renewals by the Go holder", || async {
        renewals.load(Ordering::SeqCst) >= seen + 10
    })
    .await;
    assert!(
        !op.log_text().contains("acquired leadership"),
        "took a Lease that was renewed: {}",
        op.log_tail(20)
    );
    assert_eq!(lease_holder(&ns).await.as_deref(), Some(go_holder));
    assert_eq!(reconciles(&op).await, 0.0, "the standby does nothing");

    renewing.store(false, Ordering::SeqCst);
    renewer.await.unwrap();
    op.wait_logged(&["acquired leadership"], DEADLINE)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(lease_holder(&ns).await, Some(op.lease_identity()));
    let api = api(&ns).await;
    create(&api, "vm-after", ComputeInstanceSpec::for_template("t")).await;
    wait_for(&api, "vm-after", Some(&sim), "Running", |ci| {
        ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    stops_on_sigterm(op).await;
}
