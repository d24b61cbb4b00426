//! The operator binary as a user runs it: start-up errors, the HTTP endpoints, and what kubectl
//! shows about a CI it manages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudkit_aap_sim::Outcome;
use cloudkit_api::{ComputeInstanceSpec, JobState, JobType, Phase};
use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_cloudkit-operator");

fn bare() -> Command {
    let mut cmd = Command::new(BIN);
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
fn crd_subcommand_prints_the_committed_crd() {
    let out = bare().arg("crd").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../crds/computeinstance.yaml"
    ))
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

/// The operator process, with its log collected for diagnostics and its HTTP address.
struct Running {
    child: Child,
    log: Arc<Mutex<String>>,
    address: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_operator(namespace: &str, sim_url: &str) -> Running {
    spawn_operator_with(namespace, sim_url, &[])
}

fn spawn_operator_with(namespace: &str, sim_url: &str, extra: &[(&str, &str)]) -> Running {
    let mut cmd = bare();
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd
        .env("KUBECONFIG", env().kubeconfig_path())
        .env("CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE", namespace)
        .env("CLOUDKIT_AAP_URL", sim_url)
        .env("CLOUDKIT_AAP_TOKEN", SIM_TOKEN)
        .env("CLOUDKIT_AAP_PROVISION_TEMPLATE", PROVISION_TEMPLATE)
        .env("CLOUDKIT_AAP_DEPROVISION_TEMPLATE", DEPROVISION_TEMPLATE)
        .env("CLOUDKIT_AAP_STATUS_POLL_INTERVAL", "300ms")
        .env("CLOUDKIT_HTTP_ADDRESS", "127.0.0.1:0")
        .env("CLOUDKIT_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("serving /healthz") {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                let _ = tx.send(
                    v["fields"]["address"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
            }
            sink.lock().unwrap().push_str(&line);
            sink.lock().unwrap().push('\n');
        }
    });
    let address = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("operator did not start; log:\n{}", log.lock().unwrap()));
    Running {
        child,
        log,
        address,
    }
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
    let op = spawn_operator(&ns, &sim.api_url());
    let http = reqwest::Client::new();
    let base = format!("http://{}", op.address);
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
                op.log.lock().unwrap()
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
    let log = op.log.lock().unwrap().clone();
    assert!(!log.contains(SIM_TOKEN), "the token never appears in logs");
    stops_on_sigterm(op);
}

/// SIGTERM: the operator finishes in-flight work, stops its endpoints and exits 0.
fn stops_on_sigterm(mut op: Running) {
    let pid = op.child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let start = Instant::now();
    loop {
        if let Some(code) = op.child.try_wait().unwrap() {
            assert!(
                code.success(),
                "exit {code:?}; log:\n{}",
                op.log.lock().unwrap()
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "still running 15 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        op.log.lock().unwrap().contains("stopped"),
        "{}",
        op.log.lock().unwrap()
    );
}

async fn reconciles(http: &reqwest::Client, address: &str) -> u64 {
    let text = match http.get(format!("http://{address}/metrics")).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    text.lines()
        .find_map(|l| l.strip_prefix("cloudkit_reconciles_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_leader_election_one_replica_works_and_the_other_takes_over() {
    let ns = env().namespace("lease").await;
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let lease = [
        ("CLOUDKIT_LEADER_ELECT", "true"),
        ("CLOUDKIT_LEADER_ELECTION_NAMESPACE", ns.as_str()),
    ];
    let mut first = spawn_operator_with(&ns, &sim.api_url(), &lease);
    // The first replica holds the lease before the second starts.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(env().admin_client().await, &ns);
    eventually("the lease to be held", || async {
        leases
            .get_opt("cloudkit-operator")
            .await
            .ok()
            .flatten()
            .and_then(|l| l.spec.and_then(|s| s.holder_identity))
            .is_some()
    })
    .await;
    let second = spawn_operator_with(&ns, &sim.api_url(), &lease);
    let http = reqwest::Client::new();

    let api = api(&ns).await;
    create(&api, "vm-a", ComputeInstanceSpec::for_template("t")).await;
    wait_for(&api, "vm-a", Some(&sim), "Running", |ci| {
        ci.status.as_ref().and_then(|s| s.phase) == Some(Phase::Running)
    })
    .await;
    assert!(
        reconciles(&http, &first.address).await > 0,
        "the leader works"
    );
    assert_eq!(
        reconciles(&http, &second.address).await,
        0,
        "the standby does nothing"
    );
    // The standby is ready (it serves probes) while it waits.
    let ready = http
        .get(format!("http://{}/readyz", second.address))
        .send()
        .await
        .unwrap();
    assert!(ready.status().is_success());

    // The leader dies without releasing the lease: the standby takes over within the lease
    // duration (15 s) plus its retry period.
    first.child.kill().unwrap();
    let _ = first.child.wait();
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
    assert!(reconciles(&http, &second.address).await > 0);
    assert_eq!(
        sim.simulator().stats().launches,
        2,
        "one provision per CI, no duplicates"
    );
    drop(second);
}
