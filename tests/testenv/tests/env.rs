//! The test environment itself: the CRD as the real API server enforces it, RBAC for the limited
//! user, Debian's kubectl, and that no server outlives its environment.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, JobState, JobStatus, JobType};
use cloudkit_testenv::{LIMITED_USER, TestEnv, kubectl_path, shared};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams,
};
use serde_json::{Value, json};

const CRD_NAME: &str = "computeinstances.cloudkit.openshift.io";

fn ci_resource() -> ApiResource {
    ApiResource::erase::<ComputeInstance>(&())
}

fn raw_ci(name: &str, spec: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "cloudkit.openshift.io/v1alpha1",
        "kind": "ComputeInstance",
        "metadata": { "name": name },
        "spec": spec,
    }))?)
}

/// The API server's message for a request that must be refused as invalid (422).
fn invalid_message<T: std::fmt::Debug>(result: kube::Result<T>) -> Result<String> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 422 => Ok(status.message),
        other => bail!("expected 422 Invalid, got {other:?}"),
    }
}

fn is_forbidden<T>(result: &kube::Result<T>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

#[tokio::test]
async fn crd_is_established_with_status_subresource() -> Result<()> {
    let env = shared();
    let crds: Api<CustomResourceDefinition> = Api::all(env.admin_client().await);
    let crd = crds.get(CRD_NAME).await?;
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        });
    ensure!(established, "not Established: {:?}", crd.status);
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.name == "v1alpha1")
        .context("no v1alpha1")?;
    ensure!(version.served && version.storage);
    ensure!(
        version
            .subresources
            .as_ref()
            .is_some_and(|s| s.status.is_some()),
        "no status subresource"
    );
    Ok(())
}

#[tokio::test]
async fn valid_compute_instance_is_created() -> Result<()> {
    let env = shared();
    let ns = env.namespace("valid-ci").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let mut spec = ComputeInstanceSpec::for_template("test_template");
    spec.cores = Some(2);
    spec.memory_gib = Some(4);
    let created = api
        .create(
            &PostParams::default(),
            &ComputeInstance::new("vm-1", spec.clone()),
        )
        .await?;
    ensure!(created.spec == spec, "{:?}", created.spec);
    let read = api.get("vm-1").await?;
    ensure!(read.spec == spec, "{:?}", read.spec);
    ensure!(read.metadata.uid.is_some());
    Ok(())
}

#[tokio::test]
async fn template_id_with_hyphen_is_rejected() -> Result<()> {
    let env = shared();
    let ns = env.namespace("bad-template").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.admin_client().await, &ns, &ci_resource());
    let ci = raw_ci("vm-1", json!({ "templateID": "test-template" }))?;
    let message = invalid_message(api.create(&PostParams::default(), &ci).await)?;
    ensure!(
        message.contains("spec.templateID") && message.contains("should match"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn zero_cores_are_rejected() -> Result<()> {
    let env = shared();
    let ns = env.namespace("zero-cores").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.admin_client().await, &ns, &ci_resource());
    let ci = raw_ci("vm-1", json!({ "templateID": "test_template", "cores": 0 }))?;
    let message = invalid_message(api.create(&PostParams::default(), &ci).await)?;
    ensure!(
        message.contains("spec.cores") && message.contains("greater than or equal to 1"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_job_state_is_rejected_on_status() -> Result<()> {
    let env = shared();
    let ns = env.namespace("bad-state").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(env.admin_client().await, &ns, &ci_resource());
    let ci = raw_ci("vm-1", json!({ "templateID": "test_template" }))?;
    api.create(&PostParams::default(), &ci).await?;
    let patch = json!({
        "status": { "jobs": [{
            "jobID": "17",
            "type": "provision",
            "state": "Exploded",
            "timestamp": "2026-01-02T03:04:05Z",
        }]}
    });
    let message = invalid_message(
        api.patch_status("vm-1", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    )?;
    ensure!(
        message.contains("status.jobs")
            && message.contains("Unsupported value")
            && message.contains("Exploded"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn server_side_apply_of_status_round_trips_jobs() -> Result<()> {
    let env = shared();
    let ns = env.namespace("ssa-status").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("test_template"));
    api.create(&PostParams::default(), &ci).await?;

    let at: Timestamp = "2026-01-02T03:04:05Z".parse()?;
    let mut first = JobStatus::new("41", JobType::Provision, Time(at), JobState::Succeeded);
    first.config_version = Some("c15fb6a31521d9c3".into());
    first.attempt = Some(1);
    first.completion_timestamp = Some(Time("2026-01-02T03:05:00Z".parse()?));
    let second = JobStatus::new(
        "eda-webhook-2",
        JobType::Deprovision,
        Time(at),
        JobState::Running,
    );
    let jobs = vec![first, second];
    let patch = json!({
        "apiVersion": "cloudkit.openshift.io/v1alpha1",
        "kind": "ComputeInstance",
        "status": { "jobs": &jobs },
    });
    let params = PatchParams::apply("cloudkit-testenv-test").force();
    api.patch_status("vm-1", &params, &Patch::Apply(&patch))
        .await?;

    let read = api.get_status("vm-1").await?;
    let status = read.status.context("no status after the patch")?;
    ensure!(status.jobs == jobs, "{:#?}", status.jobs);
    let managers: Vec<_> = read
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    ensure!(
        managers.iter().any(|m| m == "cloudkit-testenv-test"),
        "{managers:?}"
    );
    Ok(())
}

#[tokio::test]
async fn limited_user_gets_only_what_its_role_allows() -> Result<()> {
    let env = shared();
    let ns = env.namespace("rbac").await;
    let other_ns = env.namespace("rbac-other").await;
    let admin = env.admin_client().await;

    let role: Role = serde_json::from_value(json!({
        "metadata": { "name": "ci-reader" },
        "rules": [{
            "apiGroups": ["cloudkit.openshift.io"],
            "resources": ["computeinstances"],
            "verbs": ["get", "list"],
        }],
    }))?;
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await?;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("ci-reader".into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "ci-reader".into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: LIMITED_USER.into(),
            ..Subject::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await?;

    let ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("test_template"));
    Api::<ComputeInstance>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &ci)
        .await?;

    let limited: Api<ComputeInstance> = Api::namespaced(env.limited_client().await, &ns);
    // The RBAC authorizer reads bindings from an informer: allow it a moment to see the new one.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match limited.get("vm-1").await {
            Ok(read) => {
                ensure!(read.spec.template_id == "test_template");
                break;
            }
            Err(kube::Error::Api(status)) if status.code == 403 && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("get as {LIMITED_USER}: {e}"),
        }
    }
    ensure!(limited.list(&ListParams::default()).await?.items.len() == 1);

    let another = ComputeInstance::new("vm-2", ComputeInstanceSpec::for_template("test_template"));
    let created = limited.create(&PostParams::default(), &another).await;
    ensure!(is_forbidden(&created), "create: {created:?}");
    let deleted = limited.delete("vm-1", &DeleteParams::default()).await;
    ensure!(is_forbidden(&deleted), "delete: {deleted:?}");
    let patched = limited
        .patch_status(
            "vm-1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Running" } })),
        )
        .await;
    ensure!(is_forbidden(&patched), "status patch: {patched:?}");

    let elsewhere: Api<ComputeInstance> = Api::namespaced(env.limited_client().await, &other_ns);
    let listed = elsewhere.list(&ListParams::default()).await;
    ensure!(
        is_forbidden(&listed),
        "list in another namespace: {listed:?}"
    );
    Ok(())
}

#[tokio::test]
async fn debian_kubectl_lists_compute_instances() -> Result<()> {
    let env = shared();
    let ns = env.namespace("kubectl").await;
    let api: Api<ComputeInstance> = Api::namespaced(env.admin_client().await, &ns);
    let ci = ComputeInstance::new("vm-kubectl", ComputeInstanceSpec::for_template("tpl_1"));
    api.create(&PostParams::default(), &ci).await?;

    let kubectl = kubectl_path()?;
    let output = tokio::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(env.kubeconfig_path())
        // Keep the discovery cache inside the environment, not in ~/.kube.
        .arg("--cache-dir")
        .arg(env.dir().join("kubectl-cache"))
        .args(["get", "ci", "-A"])
        .output()
        .await
        .with_context(|| format!("running {}", kubectl.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(output.status.success(), "kubectl failed: {stderr}");
    let line = stdout
        .lines()
        .find(|l| l.contains("vm-kubectl"))
        .with_context(|| format!("vm-kubectl not listed:\n{stdout}"))?;
    ensure!(
        line.starts_with(&ns) && line.contains("tpl_1"),
        "{line}\n{stdout}"
    );
    Ok(())
}

fn process_alive(pid: u32) -> bool {
    // A zombie has exited; only its parent has not reaped it yet.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn wait_gone(pids: &[u32], dir: &std::path::Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let alive: Vec<u32> = pids.iter().copied().filter(|p| process_alive(*p)).collect();
        if alive.is_empty() && !dir.exists() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "after {timeout:?}: still alive {alive:?}, directory exists: {}",
                dir.exists()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn dropping_an_owned_environment_stops_it() -> Result<()> {
    let env = TestEnv::start()?;
    let mut pids = env.pids().to_vec();
    pids.push(env.controller_manager_pid());
    let dir = env.dir().to_path_buf();
    ensure!(pids.iter().all(|p| process_alive(*p)), "{pids:?}");
    ensure!(env.kubeconfig_path().exists());
    drop(env);
    wait_gone(&pids, &dir, Duration::from_secs(5))
}

#[tokio::test]
async fn servers_restart_with_their_data() -> Result<()> {
    let mut env = TestEnv::start()?;
    let ns = env.try_namespace("restart").await?;
    let api: Api<ComputeInstance> = Api::namespaced(env.try_admin_client().await?, &ns);
    let ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("test_template"));
    let uid = api.create(&PostParams::default(), &ci).await?.metadata.uid;
    ensure!(uid.is_some());
    let [etcd_pid, apiserver_pid, _] = env.pids();

    env.stop_apiserver();
    ensure!(!env.servers_running());
    ensure!(!process_alive(apiserver_pid), "kube-apiserver still runs");
    ensure!(api.get("vm-1").await.is_err(), "answered while stopped");
    env.start_apiserver()?;
    ensure!(env.servers_running());
    ensure!(env.pids()[1] != apiserver_pid, "not a new process");
    // A client made before the restart works again: same address, CA and token.
    ensure!(api.get("vm-1").await?.metadata.name.as_deref() == Some("vm-1"));

    env.stop_etcd();
    ensure!(!process_alive(etcd_pid), "etcd still runs");
    // Without etcd a read fails or hangs (the API server waits for its storage).
    let read = tokio::time::timeout(Duration::from_secs(2), api.get("vm-1")).await;
    ensure!(!matches!(read, Ok(Ok(_))), "read without etcd");
    let restarted = Instant::now();
    env.start_etcd()?;
    // The API server reconnects on its own; the object written before both restarts is there.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match api.get("vm-1").await {
            Ok(read) => {
                ensure!(
                    read.metadata.uid == uid,
                    "{:?} != {uid:?}",
                    read.metadata.uid
                );
                break;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => bail!(
                "no answer 60 s after etcd restarted: {e}\n{}",
                env.log_tails()
            ),
        }
    }
    eprintln!(
        "answering again {:?} after etcd restarted",
        restarted.elapsed()
    );
    Ok(())
}

/// Set by [`killed_test_process_leaves_nothing_behind`] for the child it kills.
const HELPER_VAR: &str = "CLOUDKIT_TESTENV_KILL_HELPER";

#[test]
fn killed_test_process_leaves_nothing_behind() -> Result<()> {
    use std::io::{BufRead, BufReader};

    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "kill_helper_starts_shared_env_and_waits",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_VAR, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut line = String::new();
    for l in BufReader::new(stdout).lines() {
        let l = l?;
        if l.starts_with("testenv ") {
            line = l;
            break;
        }
    }
    // "testenv <etcd> <apiserver> <watchdog> <controller-manager> <dir>"
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() != 6 {
        let _ = child.kill();
        let _ = child.wait();
        bail!("the helper did not report its environment: {line:?}");
    }
    let pids: Vec<u32> = fields[1..5]
        .iter()
        .map(|p| p.parse())
        .collect::<Result<_, _>>()?;
    let dir = std::path::PathBuf::from(fields[5]);
    ensure!(pids.iter().all(|p| process_alive(*p)), "{pids:?}");

    child.kill()?; // SIGKILL: no destructor, no atexit, nothing but the watchdog
    child.wait()?;
    wait_gone(&pids, &dir, Duration::from_secs(10))
}

/// Not a test on its own: the process that [`killed_test_process_leaves_nothing_behind`] starts
/// and kills.
#[test]
#[ignore = "helper process for killed_test_process_leaves_nothing_behind"]
fn kill_helper_starts_shared_env_and_waits() {
    if std::env::var_os(HELPER_VAR).is_none() {
        return;
    }
    let env = shared();
    let [etcd, apiserver, watchdog] = env.pids();
    println!(
        "testenv {etcd} {apiserver} {watchdog} {} {}",
        env.controller_manager_pid(),
        env.dir().display()
    );
    std::thread::sleep(Duration::from_secs(120));
}
