//! Runner mode: jobs run a real `ansible-playbook` on the fixture playbooks of
//! `tests/fixtures/`, and their status, output, cancel and processes follow it.
//!
//! The tests that run Ansible need the Python venv of `hack/python-venv.sh` (path:
//! `CLOUDKIT_PYTHON_VENV`, default `~/.cache/cloudkit/venv`); without it they fail and say how to
//! create it. Scheduling, errors and process clean-up use a shell script in place of
//! `ansible-playbook`, which keeps them fast.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cloudkit_aap_sim::{AwxStatus, RunnerSpec, SimHandle, Simulator, TemplateSpec};
use cloudkit_api::metadata::{AAP_FINALIZER, FINALIZER, RECONCILED_CONFIG_VERSION_ANNOTATION};
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec};
use common::*;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

/// The venv with the real Ansible; fails the test with instructions when it is missing.
fn venv() -> PathBuf {
    let venv = cloudkit_aap_sim::runner::default_venv().expect("HOME is set");
    for tool in ["ansible-playbook", "python"] {
        assert!(
            venv.join("bin").join(tool).exists(),
            "{} is missing: create the Python venv with the real Ansible by running \
             `hack/python-venv.sh` from the repository root (set CLOUDKIT_PYTHON_VENV to use \
             another location)",
            venv.join("bin").join(tool).display()
        );
    }
    venv
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A runner of a fixture playbook with the venv's `ansible-playbook`.
fn ansible(name: &str) -> RunnerSpec {
    RunnerSpec::new(fixture(name)).with_ansible_playbook(venv().join("bin/ansible-playbook"))
}

/// A shell script standing in for `ansible-playbook`.
fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// A runner whose "ansible-playbook" is `program` (the playbook must exist but is not read).
fn scripted(program: &Path) -> RunnerSpec {
    RunnerSpec::new(fixture("succeed.yml")).with_ansible_playbook(program)
}

async fn launch(c: &Client, template: u64, vars: Value) -> u64 {
    let a = c
        .post(
            &format!("/api/v2/job_templates/{template}/launch/"),
            &json!({ "extra_vars": vars }),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.text);
    assert_eq!(a.json["status"], "pending", "{}", a.json);
    a.json["id"].as_u64().unwrap()
}

/// Polls a job until it is terminal; returns the statuses seen (in order, without repeats) and
/// the final job.
async fn follow(c: &Client, id: u64, limit: Duration) -> (Vec<String>, Value) {
    let deadline = Instant::now() + limit;
    let mut seen: Vec<String> = Vec::new();
    loop {
        let job = c.get(&format!("/api/v2/jobs/{id}/")).await.json;
        let status = job["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&status) {
            seen.push(status.clone());
        }
        if AwxStatus::parse(&status).unwrap().is_terminal() {
            return (seen, job);
        }
        assert!(
            Instant::now() < deadline,
            "job {id} not finished after {limit:?} (seen {seen:?}):\n{}",
            stdout(c, id).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn stdout(c: &Client, id: u64) -> String {
    c.get(&format!("/api/v2/jobs/{id}/stdout/?format=txt"))
        .await
        .text
}

async fn wait_status(c: &Client, id: u64, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = c.get(&format!("/api/v2/jobs/{id}/")).await.json;
        if job["status"] == want {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} never {want}: {job}\n{}",
            stdout(c, id).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn ts(v: &Value) -> jiff::Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a timestamp: {v}"))
        .parse()
        .unwrap()
}

/// `(pid, ppid, pgrp, state)` of every process, from `/proc`.
fn processes() -> Vec<(u32, u32, u32, char)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let rest = &stat[stat.rfind(')')? + 2..];
            let mut f = rest.split_whitespace();
            let state = f.next()?.chars().next()?;
            Some((pid, f.next()?.parse().ok()?, f.next()?.parse().ok()?, state))
        })
        .collect()
}

/// `pid` and its descendants.
fn tree(pid: u32) -> BTreeSet<u32> {
    let procs = processes();
    let mut found = BTreeSet::from([pid]);
    loop {
        let before = found.len();
        for (p, ppid, _, _) in &procs {
            if found.contains(ppid) {
                found.insert(*p);
            }
        }
        if found.len() == before {
            return found;
        }
    }
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Processes of `pids` that still live (zombies count as gone).
fn alive(pids: &BTreeSet<u32>) -> Vec<String> {
    processes()
        .into_iter()
        .filter(|(p, _, _, state)| pids.contains(p) && !matches!(state, 'Z' | 'X'))
        .map(|(p, _, _, state)| format!("{p} {state} {}", cmdline(p)))
        .collect()
}

/// Waits until the tree of `pid` holds `n` processes whose command line contains `marker`;
/// returns the tree.
async fn tree_with(pid: u32, marker: &str, n: usize) -> BTreeSet<u32> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = tree(pid);
        if t.iter().filter(|p| cmdline(**p).contains(marker)).count() >= n {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "not {n} {marker:?} below process {pid}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn assert_gone(pids: &BTreeSet<u32>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = alive(pids);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running after {within:?}: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successful_job_follows_the_process() {
    let venv = venv();
    // No ansible_playbook: the venv's is the default.
    let h = spawn(
        Simulator::builder().template(
            TemplateSpec::job("succeed")
                .with_id(3)
                .with_runner(RunnerSpec::new(fixture("succeed.yml"))),
        ),
    )
    .await;
    let c = Client::new(&h);
    let id = launch(
        &c,
        3,
        operator_launch("vm-1", "key-1", None)["extra_vars"].clone(),
    )
    .await;
    let (mut seen, job) = follow(&c, id, Duration::from_secs(60)).await;
    let out = stdout(&c, id).await;
    assert_eq!(job["status"], "successful", "{job}\n{out}");
    // The launch answered `pending`.
    if seen[0] != "pending" {
        seen.insert(0, "pending".to_owned());
    }
    assert!(seen.contains(&"running".to_owned()), "{seen:?}");
    let order = ["pending", "waiting", "running", "successful"];
    let ranks: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{seen:?}");

    // Real timestamps: the process took the time Ansible takes to start.
    let (created, started, finished) = (
        ts(&job["created"]),
        ts(&job["started"]),
        ts(&job["finished"]),
    );
    assert!(created <= started && started < finished, "{job}");
    let ran = finished.duration_since(started);
    assert!(ran >= jiff::SignedDuration::from_millis(300), "{ran:?}");
    assert!(job["elapsed"].as_f64().unwrap() >= 0.3, "{job}");
    assert_eq!(job["failed"], false);
    assert_eq!(job["result_traceback"], "");
    assert_eq!(job["playbook"], "succeed.yml");

    // The playbook got the payload through the vars file, AWX's job variables and the venv's
    // interpreter.
    assert!(out.contains("payload ns1/vm-1"), "{out}");
    assert!(out.contains(&format!("job {id} template succeed")), "{out}");
    let python = venv.join("bin/python");
    assert!(
        out.contains(&format!("python {}", python.display())),
        "{out}"
    );
    assert!(out.contains("PLAY RECAP"), "{out}");
    let args: Vec<String> = serde_json::from_str(job["job_args"].as_str().unwrap()).unwrap();
    assert!(args[0].ends_with("/bin/ansible-playbook"), "{args:?}");
    assert!(
        args.iter()
            .any(|a| a.starts_with('@') && a.ends_with("extra_vars.json")),
        "{args:?}"
    );
    assert_eq!(
        args.last().map(PathBuf::from),
        Some(fixture("succeed.yml")),
        "{args:?}"
    );
    // The job's directory is cleaned up before the job reports its end.
    let cwd = job["job_cwd"].as_str().unwrap();
    assert!(!cwd.is_empty() && !Path::new(cwd).exists(), "{cwd}");
    let pid = h.simulator().runner_pid(id).unwrap();
    assert!(alive(&tree(pid)).is_empty());
    let stats = h.simulator().stats();
    assert_eq!(
        (
            stats.runner_processes,
            stats.runner_running,
            stats.runner_peak_running
        ),
        (1, 0, 1)
    );
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_job_has_the_error_as_traceback() {
    let h = spawn(
        Simulator::builder().template(TemplateSpec::job("fail").with_runner(ansible("fail.yml"))),
    )
    .await;
    let c = Client::new(&h);
    let id = launch(&c, 1, json!({"reason": "the failing test"})).await;
    let (seen, job) = follow(&c, id, Duration::from_secs(60)).await;
    let out = stdout(&c, id).await;
    assert_eq!(job["status"], "failed", "{job}\n{out}");
    assert!(seen.contains(&"running".to_owned()), "{seen:?}");
    assert_eq!(job["failed"], true);
    let tb = job["result_traceback"].as_str().unwrap();
    let first = tb.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("fatal: [localhost]: FAILED!")
            && first.contains("fixture failure for the failing test"),
        "the first line of the traceback names the failure:\n{tb}"
    );
    assert!(tb.contains("PLAY RECAP"), "{tb}");
    assert_eq!(job["job_explanation"], "");
    assert!(job["started"].is_string() && job["finished"].is_string());
    assert!(out.contains("about to fail"), "{out}");
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_interrupts_the_whole_process_tree() {
    let h = spawn(
        Simulator::builder()
            .runner_cancel_grace(Duration::from_secs(12))
            .template(TemplateSpec::job("sleep").with_runner(ansible("sleep.yml"))),
    )
    .await;
    let c = Client::new(&h);
    let id = launch(&c, 1, json!({"sleep_seconds": 271})).await;
    wait_status(&c, id, "running").await;
    let pid = h.simulator().runner_pid(id).unwrap();
    // Ansible's worker runs `sleep` in a session of its own: the group of ansible-playbook
    // alone does not hold it.
    let procs = tree_with(pid, "sleep 271", 1).await;
    assert!(procs.len() >= 3, "{procs:?}");

    let started = Instant::now();
    let a = c
        .post(&format!("/api/v2/jobs/{id}/cancel/"), &json!({}))
        .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let (_, job) = follow(&c, id, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(job["status"], "canceled", "{job}");
    assert!(took < Duration::from_secs(15), "canceled after {took:?}");
    assert!(job["canceled_on"].is_string() && job["finished"].is_string());
    assert_eq!(job["job_explanation"], "Job was canceled by request.");
    // Everything is gone once the job says so.
    assert_gone(&procs, Duration::ZERO).await;
    let out = stdout(&c, id).await;
    assert!(
        out.contains("TASK [Sleep]") && out.contains("interrupted"),
        "Ansible stopped on SIGINT:\n{out}"
    );
    let again = c
        .post(&format!("/api/v2/jobs/{id}/cancel/"), &json!({}))
        .await;
    assert_eq!(again.status, 405);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_that_cannot_start_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let h = spawn(
        Simulator::builder()
            .template(TemplateSpec::job("no_playbook").with_runner(
                RunnerSpec::new(dir.path().join("missing.yml")).with_ansible_playbook("/bin/true"),
            ))
            .template(
                TemplateSpec::job("no_ansible").with_runner(
                    RunnerSpec::new(fixture("succeed.yml"))
                        .with_ansible_playbook(dir.path().join("bin/ansible-playbook")),
                ),
            ),
    )
    .await;
    let c = Client::new(&h);
    for (template, missing) in [(1, "missing.yml"), (2, "bin/ansible-playbook")] {
        let id = launch(&c, template, json!({})).await;
        let (seen, job) = follow(&c, id, Duration::from_secs(5)).await;
        assert_eq!(job["status"], "error", "{job}");
        assert_eq!(seen.last().map(String::as_str), Some("error"), "{seen:?}");
        let explanation = job["job_explanation"].as_str().unwrap();
        assert!(
            explanation.contains(&dir.path().join(missing).display().to_string()),
            "{explanation}"
        );
        assert_eq!(job["result_traceback"], explanation);
        assert!(
            job["started"].is_null() && job["finished"].is_string(),
            "{job}"
        );
        assert_eq!(h.simulator().runner_pid(id), None);
    }
    assert_eq!(h.simulator().stats().runner_processes, 0);

    // The admin API, which has no authentication, cannot add programs to run.
    let a = c
        .post(
            "/_sim/templates",
            &json!({"name": "x", "runner": {"playbook": "/tmp/x.yml"}}),
        )
        .await;
    assert_eq!(a.status, 400, "{}", a.text);
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(
        dir.path(),
        "ansible-playbook",
        "echo \"run $JOB_ID\"\nsleep 0.4",
    );
    let h = spawn(
        Simulator::builder()
            .runner_concurrency(2)
            .template(TemplateSpec::job("t").with_runner(scripted(&program))),
    )
    .await;
    let c = Client::new(&h);
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(launch(&c, 1, json!({})).await);
    }
    // While two run, the others wait as pending, and they start in launch order.
    let deadline = Instant::now() + Duration::from_secs(20);
    let list = format!(
        "/api/v2/jobs/?id__in={}",
        ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
    );
    let mut saw_queue = false;
    loop {
        // One answer is one consistent snapshot.
        let page = c.get(&list).await.json;
        let statuses: Vec<&str> = page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["status"].as_str().unwrap())
            .collect();
        let count = |s: &str| statuses.iter().filter(|x| **x == s).count();
        let (running, pending, done) = (count("running"), count("pending"), count("successful"));
        assert!(running <= 2, "{running} running at once: {statuses:?}");
        saw_queue |= running == 2 && pending > 0;
        let first_pending = statuses.iter().position(|s| *s == "pending");
        let last_started = statuses.iter().rposition(|s| *s != "pending");
        if let (Some(p), Some(s)) = (first_pending, last_started) {
            assert!(p > s, "a later job started first: {statuses:?}");
        }
        if done == ids.len() {
            break;
        }
        assert!(Instant::now() < deadline, "jobs did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_queue, "never saw two running and others pending");
    // The real intervals never overlap more than twice.
    let mut events = Vec::new();
    for id in &ids {
        let job = c.get(&format!("/api/v2/jobs/{id}/")).await.json;
        events.push((ts(&job["started"]), 1));
        events.push((ts(&job["finished"]), -1));
        assert!(stdout(&c, *id).await.contains(&format!("run {id}")));
    }
    events.sort();
    let mut now = 0;
    for (_, delta) in events {
        now += delta;
        assert!(now <= 2, "more than two jobs ran at once");
    }
    let stats = h.simulator().stats();
    assert_eq!((stats.runner_processes, stats.runner_peak_running), (5, 2));
    h.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_jobs_cancel_without_starting_and_timeouts_fail() {
    let dir = tempfile::tempdir().unwrap();
    let program = script(dir.path(), "ansible-playbook", "echo working\nsleep 307");
    let h = spawn(
        Simulator::builder()
            .runner_concurrency(1)
            .runner_cancel_grace(Duration::from_millis(500))
            .template(TemplateSpec::job("slow").with_runner(scripted(&program)))
            .template(
                TemplateSpec::job("bounded")
                    .with_runner(scripted(&program).with_timeout(Duration::from_millis(300))),
            ),
    )
    .await;
    let c = Client::new(&h);
    let running = launch(&c, 1, json!({})).await;
    let queued = launch(&c, 1, json!({})).await;
    wait_status(&c, running, "running").await;
    let a = c
        .post(&format!("/api/v2/jobs/{queued}/cancel/"), &json!({}))
        .await;
    assert_eq!(a.status, 202);
    let (seen, job) = follow(&c, queued, Duration::from_secs(5)).await;
    assert_eq!(
        seen.last().map(String::as_str),
        Some("canceled"),
        "{seen:?}"
    );
    assert!(job["started"].is_null(), "{job}");
    assert_eq!(h.simulator().runner_pid(queued), None);
    assert_eq!(
        h.simulator().job_status(running),
        Some(AwxStatus::Running),
        "the running job is not disturbed"
    );
    let a = c
        .post(&format!("/api/v2/jobs/{running}/cancel/"), &json!({}))
        .await;
    assert_eq!(a.status, 202);
    let (_, job) = follow(&c, running, Duration::from_secs(5)).await;
    assert_eq!(job["status"], "canceled", "{job}");

    // The slot is free again; this job runs into its timeout.
    let bounded = launch(&c, 2, json!({})).await;
    let (_, job) = follow(&c, bounded, Duration::from_secs(5)).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["job_explanation"], "Job terminated due to timeout");
    assert!(
        job["result_traceback"]
            .as_str()
            .unwrap()
            .contains("working"),
        "{job}"
    );
    let ran = ts(&job["finished"]).duration_since(ts(&job["started"]));
    assert!(ran >= jiff::SignedDuration::from_millis(300), "{ran:?}");
    assert_eq!(h.simulator().stats().runner_processes, 2);
    h.shutdown().await;
}

/// A stand-in that leaves a process in a session of its own, as Ansible's workers do.
fn stubborn(dir: &Path, marker: &str) -> PathBuf {
    script(
        dir,
        "ansible-playbook",
        &format!("setsid sleep {marker} &\necho started\nsleep {marker}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_running_and_queued_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let program = stubborn(dir.path(), "293");
    let h = spawn(
        Simulator::builder()
            .runner_concurrency(1)
            .runner_cancel_grace(Duration::from_millis(500))
            .template(TemplateSpec::job("t").with_runner(scripted(&program))),
    )
    .await;
    let c = Client::new(&h);
    let running = launch(&c, 1, json!({})).await;
    let queued = launch(&c, 1, json!({})).await;
    wait_status(&c, running, "running").await;
    let sim = h.simulator().clone();
    let pid = sim.runner_pid(running).unwrap();
    let procs = tree_with(pid, "sleep 293", 2).await;
    assert!(procs.len() >= 3, "{procs:?}");
    let started = Instant::now();
    h.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_gone(&procs, Duration::ZERO).await;
    assert_eq!(sim.job_status(running), Some(AwxStatus::Error));
    assert_eq!(sim.job_status(queued), Some(AwxStatus::Error));
    assert_eq!(sim.runner_pid(queued), None);
    assert_eq!(sim.stats().runner_processes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_simulator_kills_its_processes() {
    let dir = tempfile::tempdir().unwrap();
    let program = stubborn(dir.path(), "297");
    let sim = Simulator::builder()
        .token(TOKEN)
        .template(TemplateSpec::job("t").with_runner(scripted(&program)))
        .build()
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    // A server that never shuts down gracefully: it is aborted.
    let server = tokio::spawn(sim.clone().serve(listener, std::future::pending()));
    let c = Client {
        http: reqwest::Client::new(),
        base,
        token: Some(TOKEN.to_owned()),
    };
    let id = launch(&c, 1, json!({})).await;
    wait_status(&c, id, "running").await;
    let pid = sim.runner_pid(id).unwrap();
    let procs: BTreeSet<u32> = tree_with(pid, "sleep 297", 2).await;
    assert!(procs.len() >= 3, "{procs:?}");
    server.abort();
    let _ = server.await;
    drop(c);
    drop(sim);
    assert_gone(&procs, Duration::from_secs(10)).await;
}

const DESIRED: &str = "0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playbook_patches_the_compute_instance_of_the_payload() {
    let _ = venv();
    let env = cloudkit_testenv::shared();
    let ns = env.namespace("aap-sim-runner").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("test_template"));
    ci.metadata.finalizers = Some(vec![FINALIZER.to_owned()]);
    let ci = api.create(&PostParams::default(), &ci).await.unwrap();

    // The name says provision: the runner, not the built-in playbook mode, does the work.
    let h: SimHandle = spawn(
        Simulator::builder()
            .kubeconfig(env.kubeconfig_path())
            .template(TemplateSpec::job("provision_vm").with_runner(ansible("provision_ci.yml"))),
    )
    .await;
    let c = Client::new(&h);
    // The operator's launch body: the whole CI as ansible_eda.event.payload.
    let mut payload = serde_json::to_value(&ci).unwrap();
    payload["status"] = json!({"desiredConfigVersion": DESIRED});
    let id = launch(
        &c,
        1,
        json!({"ansible_eda": {"event": {"payload": payload}}, "cloudkit_launch_key": "k"}),
    )
    .await;
    let (_, job) = follow(&c, id, Duration::from_secs(90)).await;
    assert_eq!(
        job["status"],
        "successful",
        "{job}\n{}\n{}",
        stdout(&c, id).await,
        env.log_tails()
    );
    let now = api.get("vm-1").await.unwrap();
    assert_eq!(
        now.metadata.finalizers.clone().unwrap_or_default(),
        [FINALIZER, AAP_FINALIZER]
    );
    assert_eq!(
        now.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RECONCILED_CONFIG_VERSION_ANNOTATION))
            .map(String::as_str),
        Some(DESIRED)
    );
    assert_eq!(h.simulator().stats().playbook_failures, 0);
    h.shutdown().await;
}
