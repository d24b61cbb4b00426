//! The kubectl plugin (`kubectl-cloudkit`) as a user runs it: the built binary as a child process
//! with a kubeconfig, against the real API server. The histories and conditions it shows are
//! written into the status subresource by the tests; no operator runs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use cloudkit_api::ComputeInstance;
use cloudkit_api::metadata::{
    AAP_FINALIZER, FINALIZER, MANAGEMENT_STATE_ANNOTATION, RETRY_ANNOTATION,
};
use cloudkit_test_support::{
    CiFixture, delete, env, finalizers, free_port, merge_patch, plugin_binary,
};
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use serde_json::json;

/// What one run of the plugin did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the plugin with `args` and `KUBECONFIG` set to the administrator's kubeconfig.
async fn kubectl_cloudkit(args: &[&str]) -> Run {
    kubectl_cloudkit_with(env().kubeconfig_path(), args).await
}

/// Runs the plugin with `args` and `KUBECONFIG` set to `kubeconfig`.
async fn kubectl_cloudkit_with(kubeconfig: &Path, args: &[&str]) -> Run {
    let mut cmd = tokio::process::Command::new(plugin_binary());
    cmd.args(args).env("KUBECONFIG", kubeconfig);
    run(cmd).await
}

/// Runs `cmd` and waits at most a minute for it.
async fn run(mut cmd: tokio::process::Command) -> Run {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{cmd:?} did not finish within 60 s"))
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs the plugin and expects success.
async fn ok(args: &[&str]) -> String {
    succeeded(args, kubectl_cloudkit(args).await)
}

fn succeeded(args: &[&str], run: Run) -> String {
    assert_eq!(run.code, Some(0), "kubectl-cloudkit {args:?}: {run:?}");
    run.stdout
}

/// Runs the plugin and expects a failure: exit status 1 and exactly one line on stderr, which is
/// returned.
async fn fails(args: &[&str]) -> String {
    let run = kubectl_cloudkit(args).await;
    assert_eq!(run.code, Some(1), "kubectl-cloudkit {args:?}: {run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "one line: {run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    run.stderr.trim_end().to_string()
}

async fn cis(namespace: &str) -> Api<ComputeInstance> {
    Api::namespaced(env().admin_client().await, namespace)
}

async fn write_status(api: &Api<ComputeInstance>, name: &str, status: serde_json::Value) {
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .unwrap_or_else(|e| panic!("writing the status of {name}: {e}"));
}

fn annotation(ci: &ComputeInstance, key: &str) -> Option<String> {
    ci.metadata.annotations.as_ref()?.get(key).cloned()
}

/// A table row split into its cells' words.
fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_jobs_shows_the_history_as_a_table() {
    let ns = env().namespace("plugin-jobs").await;
    let api = cis(&ns).await;
    CiFixture::new("vm").create(&api).await;
    let long = format!("deprovision failed:\n{}", "x".repeat(100));
    write_status(
        &api,
        "vm",
        json!({"jobs": [
            {"jobID": "eda-webhook-1", "type": "provision", "timestamp": "2026-03-01T12:00:00Z",
             "state": "Succeeded", "provider": "eda", "completionTimestamp": "2026-03-01T12:02:05Z"},
            // Written by the Go operator: no provider (an AAP id), no completion time.
            {"jobID": "41", "type": "provision", "timestamp": "2026-03-01T13:00:00Z",
             "state": "Failed", "message": "template not found"},
            {"jobID": "42", "type": "deprovision", "timestamp": "2026-03-01T14:00:00Z",
             "state": "Failed", "provider": "aap", "message": long,
             "completionTimestamp": "2026-03-01T15:30:00Z"},
            {"jobID": "43", "type": "deprovision", "timestamp": "2026-03-01T16:00:00Z",
             "state": "Running", "provider": "aap"},
        ]}),
    )
    .await;

    let out = ok(&["jobs", "vm", "-n", &ns]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(
        words(lines[0]),
        [
            "ID", "TYPE", "PROVIDER", "STATE", "STARTED", "DURATION", "MESSAGE"
        ]
    );
    assert_eq!(
        words(lines[1]),
        [
            "eda-webhook-1",
            "provision",
            "eda",
            "Succeeded",
            "2026-03-01T12:00:00Z",
            "2m5s"
        ]
    );
    assert_eq!(
        words(lines[2]),
        [
            "41",
            "provision",
            "aap",
            "Failed",
            "2026-03-01T13:00:00Z",
            "-",
            "template",
            "not",
            "found"
        ]
    );
    let cut = format!("{}...", "x".repeat(60 - 3 - "deprovision failed: ".len()));
    assert_eq!(
        words(lines[3]),
        [
            "42",
            "deprovision",
            "aap",
            "Failed",
            "2026-03-01T14:00:00Z",
            "1h30m",
            "deprovision",
            "failed:",
            &cut
        ]
    );
    let running = words(lines[4]);
    assert_eq!(
        running[..5],
        [
            "43",
            "deprovision",
            "aap",
            "Running",
            "2026-03-01T16:00:00Z"
        ]
    );
    assert_eq!(running[6..], ["so", "far"], "{out}");
    // The columns line up: every cell of a column starts where its header starts.
    let started = lines[0].find("STARTED").unwrap();
    for line in &lines[1..] {
        assert_eq!(line[started..].get(..4), Some("2026"), "{out}");
    }

    let wide = ok(&["jobs", "vm", "-n", &ns, "--wide"]).await;
    assert!(
        wide.contains(&format!("deprovision failed: {}", "x".repeat(100))),
        "--wide shows the whole message on one line: {wide}"
    );

    CiFixture::new("fresh").create(&api).await;
    assert_eq!(
        ok(&["jobs", "fresh", "-n", &ns]).await,
        format!("{ns}/fresh: no jobs recorded\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_status_shows_phase_references_and_conditions() {
    let ns = env().namespace("plugin-status").await;
    let name = "vm";
    let api = cis(&ns).await;
    CiFixture::new(name).create(&api).await;
    let an_hour_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3700);
    write_status(
        &api,
        name,
        json!({
            "phase": "Running",
            "tenantReference": {"name": "tenant-abc", "namespace": "default"},
            "virtualMachineReference": {"namespace": "default-abc", "kubeVirtVirtualMachineName": "vm-1"},
            "conditions": [
                {"type": "ConfigurationApplied", "status": "True", "reason": "Applied",
                 "message": "configuration c15fb6a31521d9c3 applied",
                 "lastTransitionTime": an_hour_ago.to_string()},
                {"type": "Available", "status": "False", "reason": "VirtualMachineNotReady",
                 "message": "VirtualMachine default-abc/vm-1 is not Ready",
                 "lastTransitionTime": an_hour_ago.to_string()},
            ],
        }),
    )
    .await;

    // No -n: the namespace of the kubeconfig's context, as with kubectl.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        env()
            .kubeconfig_yaml()
            .replace("namespace: default", &format!("namespace: {ns}")),
    )
    .unwrap();
    let args = ["status", name];
    let out = succeeded(&args, kubectl_cloudkit_with(&kubeconfig, &args).await);
    assert!(
        out.starts_with(&format!(
            "Name:      {ns}/{name}\nPhase:     Running\nTenant:    default/tenant-abc\n\
             VM:        default-abc/vm-1\n\n"
        )),
        "{out}"
    );
    let table: Vec<&str> = out.lines().skip(5).collect();
    assert_eq!(
        words(table[0]),
        ["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"]
    );
    let applied = words(table[1]);
    assert_eq!(
        applied[..5],
        [
            "ConfigurationApplied",
            "True",
            "Applied",
            "configuration",
            "c15fb6a31521d9c3"
        ]
    );
    assert!(applied.last().unwrap().starts_with("1h"), "{out}");
    assert_eq!(
        words(table[2])[..4],
        [
            "Available",
            "False",
            "VirtualMachineNotReady",
            "VirtualMachine"
        ]
    );
    assert_eq!(table.len(), 3, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_retry_sets_a_new_retry_token() {
    let ns = env().namespace("plugin-retry").await;
    let api = cis(&ns).await;
    CiFixture::new("vm").create(&api).await;

    let out = ok(&["retry", "vm", "-n", &ns]).await;
    let first = annotation(&api.get("vm").await.unwrap(), RETRY_ANNOTATION)
        .expect("the retry annotation is set");
    let seconds: i64 = first
        .parse()
        .unwrap_or_else(|_| panic!("Unix seconds: {first}"));
    assert!(
        out.contains(&format!("{RETRY_ANNOTATION}={seconds}")),
        "{out}"
    );

    ok(&["retry", "vm", "-n", &ns]).await;
    let second = annotation(&api.get("vm").await.unwrap(), RETRY_ANNOTATION).unwrap();
    assert!(
        second.parse::<i64>().unwrap() > seconds,
        "every retry is a new value, also within the same second: {first} then {second}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_restart_requests_a_restart_at_whole_seconds() {
    let ns = env().namespace("plugin-restart").await;
    let api = cis(&ns).await;
    CiFixture::new("vm")
        .parameters(json!({"size": "large"}))
        .create(&api)
        .await;

    let out = ok(&["restart", "vm", "-n", &ns]).await;
    let raw: Api<DynamicObject> = Api::namespaced_with(
        env().admin_client().await,
        &ns,
        &ApiResource::erase::<ComputeInstance>(&()),
    );
    let spec = raw.get("vm").await.unwrap().data["spec"].clone();
    let at = spec["restartRequestedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("restartRequestedAt is set: {spec}"));
    let parsed: jiff::Timestamp = at.parse().unwrap();
    assert_eq!(
        at,
        jiff::Timestamp::from_second(parsed.as_second())
            .unwrap()
            .to_string(),
        "RFC 3339 in UTC at whole seconds"
    );
    assert!(at.ends_with('Z') && !at.contains('.'), "{at}");
    assert_eq!(out, format!("{ns}/vm: restart requested at {at}\n"));
    assert_eq!(
        (
            spec["templateID"].as_str(),
            spec["templateParameters"].as_str()
        ),
        (Some("test_template"), Some(r#"{"size":"large"}"#)),
        "a merge patch leaves the rest of the spec alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_release_needs_confirmation_and_a_deleting_ci() {
    let ns = env().namespace("plugin-release").await;
    let api = cis(&ns).await;
    let mut ci = CiFixture::new("vm").finalized().build();
    ci.metadata
        .finalizers
        .get_or_insert_with(Vec::new)
        .push(AAP_FINALIZER.to_string());
    api.create(&Default::default(), &ci).await.unwrap();

    let refused = fails(&["release", "vm", "-n", &ns]).await;
    assert!(
        refused.starts_with(&format!(
            "kubectl-cloudkit: computeinstance {ns}/vm: release would set \
             {MANAGEMENT_STATE_ANNOTATION}=manual: "
        )) && refused.ends_with("add --yes-i-know to do it"),
        "{refused}"
    );
    let not_deleting = fails(&["release", "vm", "-n", &ns, "--yes-i-know"]).await;
    assert!(
        not_deleting.starts_with(&format!(
            "kubectl-cloudkit: computeinstance {ns}/vm: not being deleted"
        )),
        "{not_deleting}"
    );
    assert_eq!(
        annotation(&api.get("vm").await.unwrap(), MANAGEMENT_STATE_ANNOTATION),
        None,
        "nothing changes without the confirmation and a deletion"
    );

    delete(&api, "vm").await;
    let out = ok(&["release", "vm", "-n", &ns, "--yes-i-know"]).await;
    let ci = api.get("vm").await.unwrap();
    assert_eq!(
        annotation(&ci, MANAGEMENT_STATE_ANNOTATION).as_deref(),
        Some("manual")
    );
    assert_eq!(
        finalizers(&ci),
        [FINALIZER, AAP_FINALIZER],
        "the automation's finalizer stays until asked for"
    );
    assert!(out.contains("--remove-aap-finalizer"), "{out}");

    ok(&[
        "release",
        "vm",
        "-n",
        &ns,
        "--yes-i-know",
        "--remove-aap-finalizer",
    ])
    .await;
    assert_eq!(finalizers(&api.get("vm").await.unwrap()), [FINALIZER]);

    merge_patch(&api, "vm", json!({"metadata": {"finalizers": null}})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_name_the_ci_and_the_cause() {
    let ns = env().namespace("plugin-errors").await;
    for command in ["jobs", "status", "retry", "restart"] {
        assert_eq!(
            fails(&[command, "missing", "-n", &ns]).await,
            format!("kubectl-cloudkit: computeinstance {ns}/missing: not found"),
            "{command}"
        );
    }

    // A user without any role.
    let limited = env().limited_kubeconfig_path().to_str().unwrap();
    let forbidden = fails(&["jobs", "vm", "-n", &ns, "--kubeconfig", limited]).await;
    assert!(
        forbidden.starts_with(&format!(
            "kubectl-cloudkit: computeinstance {ns}/vm: forbidden: "
        )),
        "{forbidden}"
    );

    // An API server that is not there.
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("kubeconfig");
    let url = format!("https://127.0.0.1:{}", free_port());
    std::fs::write(
        &gone,
        env().kubeconfig_yaml().replace(env().server_url(), &url),
    )
    .unwrap();
    let unreachable = fails(&["status", "vm", "-n", &ns, "--kubeconfig", path(&gone)]).await;
    assert!(
        unreachable.starts_with(&format!(
            "kubectl-cloudkit: computeinstance {ns}/vm: API server unreachable: "
        )),
        "{unreachable}"
    );

    let no_context = fails(&["status", "vm", "--context", "nowhere"]).await;
    assert!(
        no_context.starts_with("kubectl-cloudkit: computeinstance vm: kubeconfig: ")
            && no_context.contains("nowhere"),
        "{no_context}"
    );
}

/// `kubectl cloudkit ...` runs the plugin when `kubectl-cloudkit` is on the `PATH`, which is what
/// `cargo install --path bins/kubectl-cloudkit` makes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_runs_the_plugin_from_the_path() {
    let ns = env().namespace("plugin-kubectl").await;
    CiFixture::new("vm").create(&cis(&ns).await).await;
    let bin_dir = plugin_binary().parent().unwrap();
    let search = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(bin_dir.to_path_buf()).chain(std::env::split_paths(&search)),
    )
    .unwrap();
    let mut cmd = tokio::process::Command::new(cloudkit_testenv::kubectl_path().unwrap());
    cmd.args(["cloudkit", "jobs", "vm", "-n", &ns])
        .env("PATH", path)
        .env("KUBECONFIG", env().kubeconfig_path());
    let out = run(cmd).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout, format!("{ns}/vm: no jobs recorded\n"));
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}
