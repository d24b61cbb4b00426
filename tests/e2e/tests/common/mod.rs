//! Harness of the end-to-end tests: child processes (the operator binary, ansible-rulebook) with
//! log files and a watchdog, RBAC from `deploy/`, and waits that fail with every log attached.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cloudkit_aap_sim::{RunnerSpec, SimHandle, Simulator, TemplateSpec};
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, JobStatus, JobType};
use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use kube::api::{ApiResource, DeleteParams, DynamicObject, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client};

/// Upper bound of every wait. Typical waits are a few seconds; the bound is generous because the
/// machine (2 cores) also runs ansible-playbook, a JVM and the API server.
pub const DEADLINE: Duration = Duration::from_secs(120);
/// How long a child process may take to come up.
pub const START_DEADLINE: Duration = Duration::from_secs(60);

pub const SIM_TOKEN: &str = "e2e-aap-token-5d1c";
pub const PROVISION_TEMPLATE: &str = "provision_vm";
pub const DEPROVISION_TEMPLATE: &str = "deprovision_vm";
pub const WEBHOOK_TOKEN: &str = "e2e-webhook-token-91b7";
pub const WEBHOOK_HMAC_SECRET: &str = "e2e-webhook-hmac-4e02";

pub fn env() -> &'static cloudkit_testenv::TestEnv {
    cloudkit_testenv::shared()
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A directory for this test binary's logs and files, `target/e2e/<pid>/`, kept after the run
/// for inspection until a later run finds its process gone.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = workspace_root().join("target/e2e");
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(std::process::id().to_string());
        std::fs::create_dir_all(&dir).expect("creating the run directory");
        dir
    })
}

// ---------------------------------------------------------------------------------------------
// Prerequisites

/// The Python venv with ansible-rulebook, ansible-playbook and the kubernetes package, and Java 17.
#[derive(Debug)]
pub struct Automation {
    pub venv: PathBuf,
    pub java_home: PathBuf,
}

impl Automation {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    pub fn python(&self) -> PathBuf {
        self.bin("python")
    }

    /// PATH with the venv first (ansible-runner looks up ansible-playbook on PATH).
    pub fn path_var(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        format!(
            "{}:{}/bin:{rest}",
            self.venv.join("bin").display(),
            self.java_home.display()
        )
    }
}

/// The automation prerequisites; fails the test (never skips it) when they are missing.
pub fn automation() -> &'static Automation {
    static AUTOMATION: OnceLock<Result<Automation, String>> = OnceLock::new();
    match AUTOMATION.get_or_init(find_automation) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

fn find_automation() -> Result<Automation, String> {
    let venv = std::env::var_os("CLOUDKIT_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cloudkit/venv")
        });
    let java_home = std::env::var_os("CLOUDKIT_JAVA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/jvm/java-17-openjdk-amd64"));
    let a = Automation { venv, java_home };
    let mut missing = Vec::new();
    for tool in ["ansible-rulebook", "ansible-playbook", "python"] {
        if !a.bin(tool).exists() {
            missing.push(format!("{}", a.bin(tool).display()));
        }
    }
    if missing.is_empty() {
        let ok = Command::new(a.python())
            .args(["-c", "import kubernetes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(format!(
                "the kubernetes Python package in {}",
                a.venv.display()
            ));
        }
    }
    if !a.java_home.join("bin/java").exists() {
        missing.push(format!(
            "Java 17 at {} (package openjdk-17-jdk-headless; ansible-rulebook needs it)",
            a.java_home.display()
        ));
    }
    if missing.is_empty() {
        Ok(a)
    } else {
        Err(format!(
            "the end-to-end tests need the Python venv with ansible-rulebook and Java 17; missing: {}.\n\
             Run `hack/python-venv.sh` (as root it also installs Java; `./x test` runs it first). \
             CLOUDKIT_PYTHON_VENV and CLOUDKIT_JAVA_HOME select other locations.",
            missing.join(", ")
        ))
    }
}

/// The operator binary, built once per test binary with `cargo build -p cloudkit-operator` so
/// that it matches the sources even when only this package is tested.
pub fn operator_binary() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build_operator) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

fn build_operator() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "-q",
            "-p",
            "cloudkit-operator",
            "--bin",
            "cloudkit-operator",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo build -p cloudkit-operator: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build -p cloudkit-operator failed ({})",
            out.status
        ));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "cloudkit-operator")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo build reported no cloudkit-operator executable".to_string())
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// Kills the process groups of this test binary's children when the binary exits, however it
/// exits: a bash process reads `pg N` / `forget N` lines on a pipe only this process holds open,
/// and at end of file kills what is left.
struct Watchdog {
    _child: Child,
    stdin: ChildStdin,
}

const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
groups=()
while read -r word arg; do
  case $word in
    pg) groups+=("$arg") ;;
    forget)
      rest=()
      for g in "${groups[@]}"; do [ "$g" = "$arg" ] || rest+=("$g"); done
      groups=("${rest[@]}") ;;
  esac
done
for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
exit 0
"#;

fn watchdog(line: String) {
    static WATCHDOG: OnceLock<Mutex<Option<Watchdog>>> = OnceLock::new();
    let cell = WATCHDOG.get_or_init(|| {
        let child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("cloudkit-e2e-watchdog")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        Mutex::new(child.ok().and_then(|mut c| {
            let stdin = c.stdin.take()?;
            Some(Watchdog { _child: c, stdin })
        }))
    });
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = guard.as_mut() {
        let _ = writeln!(w.stdin, "{line}").and_then(|()| w.stdin.flush());
    }
}

/// A child process in its own process group, with stdout and stderr in a log file. Dropping it
/// kills the group.
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    child: Child,
    pub log: PathBuf,
    reaped: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command) -> Proc {
        let log = run_dir().join(format!("{name}.log"));
        let out = File::create(&log).expect("creating a log file");
        let err = out.try_clone().expect("cloning a log file");
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name} ({:?}): {e}", cmd.get_program()));
        watchdog(format!("pg {}", child.id()));
        Proc {
            name: name.to_string(),
            child,
            log,
            reaped: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// The whole log, without terminal colour codes.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- {} (pid {}, {}), last {} lines ---\n{}",
            self.name,
            self.pid(),
            self.log.display(),
            all.len() - start,
            all[start..].join("\n")
        )
    }

    fn signal_group(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([
                format!("-{signal}"),
                "--".into(),
                format!("-{}", self.pid()),
            ])
            .stderr(Stdio::null())
            .status();
    }

    /// SIGKILL to the whole group, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        self.signal_group("KILL");
        self.reaped = self.child.wait().ok();
        watchdog(format!("forget {}", self.pid()));
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            self.signal_group("TERM");
            let start = Instant::now();
            while self.exited().is_none() && start.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let status = self.exited();
        self.kill();
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ---------------------------------------------------------------------------------------------
// ansible-rulebook

/// ansible-rulebook running `examples/automation/rulebook.yml` on a loopback port, with the
/// webhook's token and HMAC checks on.
#[derive(Debug)]
pub struct Rulebook {
    pub proc: Mutex<Proc>,
    pub port: u16,
}

impl Rulebook {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_tail(lines)
    }

    pub fn log_text(&self) -> String {
        self.proc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_text()
    }
}

/// The rulebook shared by the tests of this binary (the playbooks act on whichever CI an event
/// names). Started on first use; a start that fails fails the test with the rulebook's log.
pub fn rulebook() -> &'static Rulebook {
    static RULEBOOK: OnceLock<Result<Rulebook, String>> = OnceLock::new();
    match RULEBOOK.get_or_init(|| start_rulebook("ansible-rulebook")) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

/// Starts ansible-rulebook; retried with another port when the port was taken meanwhile.
pub fn start_rulebook(name: &str) -> Result<Rulebook, String> {
    let automation = automation();
    let env = env();
    let examples = workspace_root().join("examples/automation");
    let mut last_error = String::new();
    for attempt in 1..=3 {
        let port = free_port();
        let vars = run_dir().join(format!("{name}-vars.yml"));
        std::fs::write(
            &vars,
            format!(
                "webhook_host: 127.0.0.1\nwebhook_port: {port}\nwebhook_token: {WEBHOOK_TOKEN}\n\
                 webhook_hmac_secret: {WEBHOOK_HMAC_SECRET}\nautomation_dir: {}\npython_interpreter: {}\n",
                examples.display(),
                automation.python().display()
            ),
        )
        .map_err(|e| format!("writing {}: {e}", vars.display()))?;
        let tmp = run_dir().join(format!("{name}-tmp"));
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(automation.bin("ansible-rulebook"));
        cmd.arg("--rulebook")
            .arg(examples.join("rulebook.yml"))
            .arg("--inventory")
            .arg(examples.join("inventory.yml"))
            .arg("--vars")
            .arg(&vars)
            .current_dir(run_dir())
            .env("PATH", automation.path_var())
            .env("JAVA_HOME", &automation.java_home)
            .env("K8S_AUTH_KUBECONFIG", env.kubeconfig_path())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCAL_TEMP", &tmp)
            .env("ANSIBLE_HOME", &tmp)
            .env("TMPDIR", &tmp)
            .env_remove("KUBECONFIG");
        let mut proc = Proc::spawn(&format!("{name}-{attempt}"), cmd);
        let start = Instant::now();
        loop {
            if webhook_answers(port) {
                return Ok(Rulebook {
                    proc: Mutex::new(proc),
                    port,
                });
            }
            if let Some(status) = proc.exited() {
                last_error = format!(
                    "ansible-rulebook exited with {status} before its webhook answered\n{}",
                    proc.log_tail(60)
                );
                // Only a port taken meanwhile is worth another attempt.
                if proc
                    .log_text()
                    .to_lowercase()
                    .contains("address already in use")
                {
                    break;
                }
                return Err(last_error);
            }
            if start.elapsed() > START_DEADLINE {
                let tail = proc.log_tail(60);
                proc.kill();
                return Err(format!(
                    "ansible-rulebook's webhook did not answer on port {port} within {START_DEADLINE:?}\n{tail}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(last_error)
}

/// The webhook is up when an unauthenticated POST gets its 401.
fn webhook_answers(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "POST /ready HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401")
}

// ---------------------------------------------------------------------------------------------
// RBAC from deploy/rbac.yaml

/// The documents of a multi-document YAML file, as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let value: serde_json::Value = serde_saphyr::from_str(&current)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !value.is_null() {
                docs.push(value);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

pub fn deploy_document(file: &str, kind: &str) -> serde_json::Value {
    yaml_documents(&workspace_root().join("deploy").join(file))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("deploy/{file} has no {kind}"))
}

fn limited_subject() -> Subject {
    Subject {
        kind: "Group".into(),
        name: cloudkit_testenv::LIMITED_GROUP.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    }
}

async fn create_or_keep<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating {object:?}: {e}"),
    }
}

/// Binds the limited user's group to the ClusterRole of `deploy/rbac.yaml` (cluster-wide, as
/// the deployment does) and to its leader election Role in `namespace`. Nothing else is granted.
pub async fn grant_operator_roles(namespace: &str) {
    let client = env().admin_client().await;
    let mut cluster_role: ClusterRole =
        serde_json::from_value(deploy_document("rbac.yaml", "ClusterRole")).expect("ClusterRole");
    let role_name = "e2e-cloudkit-operator".to_string();
    cluster_role.metadata = ObjectMeta {
        name: Some(role_name.clone()),
        ..ObjectMeta::default()
    };
    create_or_keep(&Api::<ClusterRole>::all(client.clone()), &cluster_role).await;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role_name,
        },
        subjects: Some(vec![limited_subject()]),
    };
    create_or_keep(&Api::<ClusterRoleBinding>::all(client.clone()), &binding).await;

    let mut role: Role =
        serde_json::from_value(deploy_document("rbac.yaml", "Role")).expect("Role");
    let name = role.metadata.name.clone().expect("the Role's name");
    role.metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    };
    create_or_keep(&Api::<Role>::namespaced(client.clone(), namespace), &role).await;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name,
        },
        subjects: Some(vec![limited_subject()]),
    };
    create_or_keep(&Api::<RoleBinding>::namespaced(client, namespace), &binding).await;
}

// ---------------------------------------------------------------------------------------------
// The operator binary

/// How an operator process is configured.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub name: String,
    pub namespace: String,
    /// `aap` or `eda`.
    pub provider: &'static str,
    /// AAP API base (the simulator's `api_url()`).
    pub aap_url: Option<String>,
    /// Configure the EDA webhooks of the shared rulebook.
    pub eda: bool,
    pub leader_elect: bool,
    /// More environment variables (they win over the harness's defaults).
    pub env: Vec<(String, String)>,
}

impl OperatorConfig {
    pub fn eda(name: &str, namespace: &str) -> Self {
        OperatorConfig {
            name: name.into(),
            namespace: namespace.into(),
            provider: "eda",
            aap_url: None,
            eda: true,
            leader_elect: true,
            env: Vec::new(),
        }
    }

    pub fn aap(name: &str, namespace: &str, sim: &SimHandle) -> Self {
        OperatorConfig {
            name: name.into(),
            namespace: namespace.into(),
            provider: "aap",
            aap_url: Some(sim.api_url()),
            eda: false,
            leader_elect: true,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable of the process (for example `CLOUDKIT_MAX_JOB_HISTORY`).
    pub fn with_env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.into(), value.into()));
        self
    }
}

/// The operator binary running as the RBAC-limited user.
#[derive(Debug)]
pub struct OperatorProc {
    pub proc: Proc,
    pub http: SocketAddr,
    pub config: OperatorConfig,
}

impl OperatorProc {
    /// Starts it and waits until it serves and runs its controller (holding the Lease when it
    /// elects a leader). A process that exits or stalls fails the test with its log.
    pub async fn start(config: OperatorConfig) -> OperatorProc {
        let bin = operator_binary();
        let env = env();
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("NO_COLOR", "1")
            // Debug for the reconciler: watch, event and status errors (a 403 among them) are
            // logged at debug level.
            .env("RUST_LOG", "info,cloudkit_reconciler=debug")
            .env("KUBECONFIG", env.limited_kubeconfig_path())
            .env("CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE", &config.namespace)
            .env("CLOUDKIT_PROVISIONING_PROVIDER", config.provider)
            .env("CLOUDKIT_AAP_STATUS_POLL_INTERVAL", "500ms")
            .env("CLOUDKIT_PROVISION_RETRY_LIMIT", "0")
            .env("CLOUDKIT_EDA_PROVISION_GRACE", "30s")
            .args(["--http-address", "127.0.0.1:0"]);
        if let Some(url) = &config.aap_url {
            cmd.env("CLOUDKIT_AAP_URL", url)
                .env("CLOUDKIT_AAP_TOKEN", SIM_TOKEN)
                .env("CLOUDKIT_AAP_PROVISION_TEMPLATE", PROVISION_TEMPLATE)
                .env("CLOUDKIT_AAP_DEPROVISION_TEMPLATE", DEPROVISION_TEMPLATE);
        }
        if config.eda {
            let rb = rulebook();
            cmd.env(
                "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK",
                rb.url("provision"),
            )
            .env(
                "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK",
                rb.url("deprovision"),
            )
            .env("CLOUDKIT_EDA_TOKEN", WEBHOOK_TOKEN)
            .env("CLOUDKIT_EDA_HMAC_SECRET", WEBHOOK_HMAC_SECRET);
        }
        for (name, value) in &config.env {
            cmd.env(name, value);
        }
        if config.leader_elect {
            cmd.arg("--leader-elect")
                .args(["--leader-election-namespace", &config.namespace]);
        }
        let mut proc = Proc::spawn(&config.name, cmd);
        let start = Instant::now();
        let mut http = None;
        loop {
            let log = proc.log_text();
            if http.is_none() {
                http = log
                    .lines()
                    .find(|l| l.contains("serving /healthz"))
                    .and_then(|l| l.split("address=").nth(1))
                    .and_then(|a| a.split_whitespace().next())
                    .and_then(|a| a.parse::<SocketAddr>().ok());
            }
            let running = log.contains("starting controller")
                && (!config.leader_elect || log.contains("acquired leadership"));
            if let (Some(http), true) = (http, running) {
                let op = OperatorProc { proc, http, config };
                op.wait_ready().await;
                return op;
            }
            if let Some(status) = proc.exited() {
                panic!(
                    "the operator exited with {status} during start-up\n{}",
                    proc.log_tail(80)
                );
            }
            if start.elapsed() > START_DEADLINE {
                panic!(
                    "the operator did not start within {START_DEADLINE:?}\n{}\n{}",
                    proc.log_tail(80),
                    env.log_tails()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.http);
        let start = Instant::now();
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "{url} never answered 200\n{}",
                self.proc.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `/metrics` as `name{labels} -> value`.
    pub async fn metrics(&self) -> BTreeMap<String, f64> {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .and_then(|r| r.error_for_status())
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n{}", self.proc.log_tail(40)))
            .text()
            .await
            .expect("metrics body");
        parse_metrics(&text)
    }

    /// No request of the operator was refused by RBAC.
    pub fn assert_no_forbidden(&self) {
        let log = self.proc.log_text();
        let refused: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
            .collect();
        assert!(
            refused.is_empty(),
            "{} was refused by RBAC (deploy/rbac.yaml lacks a permission):\n{}",
            self.config.name,
            refused.join("\n")
        );
    }

    /// SIGKILL: no graceful shutdown, the Lease is not released.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM, and the exit status after a graceful shutdown.
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        self.proc.terminate(Duration::from_secs(15))
    }
}

pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The AWX simulator (for AAP)

/// The simulator in this process in runner mode: each AAP job runs the real
/// `examples/automation` playbook with `ansible-playbook` against the test API server, as an AWX
/// job would.
pub async fn simulator() -> SimHandle {
    let examples = workspace_root().join("examples/automation");
    Simulator::builder()
        .token(SIM_TOKEN)
        .seed(11)
        .template(
            TemplateSpec::job(PROVISION_TEMPLATE)
                .with_runner(RunnerSpec::new(examples.join("provision.yml"))),
        )
        .template(
            TemplateSpec::job(DEPROVISION_TEMPLATE)
                .with_runner(RunnerSpec::new(examples.join("deprovision.yml"))),
        )
        .kubeconfig(env().kubeconfig_path())
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .expect("the simulator starts")
}

/// `GET {api_url}/<path>` at the simulator, as the operator authenticates; a 2xx answer.
async fn sim_request(sim: &SimHandle, path: &str) -> (String, reqwest::Response) {
    let url = format!("{}/{path}", sim.api_url());
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(SIM_TOKEN)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (url, response)
}

/// `GET {api_url}/<path>` at the simulator; the JSON answer.
pub async fn sim_get(sim: &SimHandle, path: &str) -> serde_json::Value {
    let (url, response) = sim_request(sim, path).await;
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A job as the simulator reports it (`GET v2/jobs/<id>/`).
pub async fn sim_job(sim: &SimHandle, id: &str) -> serde_json::Value {
    sim_get(sim, &format!("v2/jobs/{id}/")).await
}

/// Every job the simulator knows, oldest first.
pub async fn sim_jobs(sim: &SimHandle) -> Vec<serde_json::Value> {
    let page = sim_get(sim, "v2/jobs/?page_size=200").await;
    let mut jobs = page["results"].as_array().cloned().unwrap_or_default();
    jobs.sort_by_key(|j| j["id"].as_u64());
    jobs
}

/// The captured output of a job's ansible-playbook run.
pub async fn sim_stdout(sim: &SimHandle, id: &str) -> String {
    let (_, response) = sim_request(sim, &format!("v2/jobs/{id}/stdout/?format=txt")).await;
    response.text().await.unwrap_or_default()
}

/// The `status.desiredConfigVersion` of the CI a job was launched with (its extra vars carry the
/// CI as `ansible_eda.event.payload`).
pub fn launched_config_version(job: &serde_json::Value) -> Option<String> {
    let vars: serde_json::Value = match &job["extra_vars"] {
        serde_json::Value::String(text) => serde_json::from_str(text).ok()?,
        other => other.clone(),
    };
    vars["ansible_eda"]["event"]["payload"]["status"]["desiredConfigVersion"]
        .as_str()
        .map(str::to_string)
}

/// A simulator timestamp (`created`, `started`, `finished`).
pub fn sim_time(job: &serde_json::Value, field: &str) -> jiff::Timestamp {
    job[field]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("job {} has no {field} timestamp: {job}", job["id"]))
}

// ---------------------------------------------------------------------------------------------
// A test's world: namespace, processes, diagnostics

/// What a test runs; its diagnostics name every log.
pub struct Scene {
    pub namespace: String,
    pub client: Client,
    pub operators: Vec<OperatorProc>,
    pub sim: Option<SimHandle>,
    pub uses_rulebook: bool,
}

impl Scene {
    /// A fresh namespace in which the operator's roles are granted.
    pub async fn new(prefix: &str) -> Scene {
        let env = env();
        let namespace = env.namespace(prefix).await;
        grant_operator_roles(&namespace).await;
        let client = env.admin_client().await;
        Scene {
            client,
            namespace,
            operators: Vec::new(),
            sim: None,
            uses_rulebook: false,
        }
    }

    pub async fn start_operator(&mut self, config: OperatorConfig) -> usize {
        if config.eda {
            self.uses_rulebook = true;
        }
        self.operators.push(OperatorProc::start(config).await);
        self.operators.len() - 1
    }

    pub async fn create(
        &self,
        namespace: &str,
        name: &str,
        spec: ComputeInstanceSpec,
    ) -> ComputeInstance {
        self.api_in(namespace)
            .create(&PostParams::default(), &ComputeInstance::new(name, spec))
            .await
            .unwrap_or_else(|e| panic!("creating {namespace}/{name}: {e}"))
    }

    pub async fn delete(&self, namespace: &str, name: &str) {
        self.api_in(namespace)
            .delete(name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {namespace}/{name}: {e}"));
    }

    /// Every log that can explain a failure, and the CI's last state.
    pub fn diagnostics(&self, ci: Option<&ComputeInstance>) -> String {
        let mut out = String::new();
        if let Some(ci) = ci {
            out.push_str(&format!(
                "CI {}/{}: finalizers={:?} annotations={:?}\nstatus={}\n",
                ci.metadata.namespace.as_deref().unwrap_or_default(),
                ci.metadata.name.as_deref().unwrap_or_default(),
                ci.metadata.finalizers,
                ci.metadata.annotations,
                serde_json::to_string_pretty(&ci.status).unwrap_or_default()
            ));
        }
        for op in &self.operators {
            out.push_str(&op.proc.log_tail(60));
            out.push('\n');
        }
        if self.uses_rulebook {
            out.push_str(&rulebook().log_tail(80));
            out.push('\n');
        }
        if let Some(sim) = &self.sim {
            out.push_str("--- simulator ---\n");
            out.push_str(&sim.simulator().diagnostics(20));
        }
        out.push_str(&env().log_tails());
        out
    }

    pub fn api_in(&self, namespace: &str) -> Api<ComputeInstance> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// Polls the CI until `done` holds; fails with the diagnostics at the deadline or when an
    /// operator process died.
    pub async fn wait_for(
        &mut self,
        namespace: &str,
        name: &str,
        what: &str,
        done: impl Fn(&ComputeInstance) -> bool,
    ) -> ComputeInstance {
        let api = self.api_in(namespace);
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Ok(ci) = api.get(name).await {
                if done(&ci) {
                    return ci;
                }
                last = Some(ci);
            }
            self.check_alive(last.as_ref());
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out after {DEADLINE:?} waiting for {what} on {namespace}/{name}\n{}",
                    self.diagnostics(last.as_ref())
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The CI as the API server sends it (JSON), without a round trip through the Rust types.
    pub async fn raw(&self, namespace: &str, name: &str) -> serde_json::Value {
        let resource = ApiResource::erase::<ComputeInstance>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let object = api
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("reading {namespace}/{name}: {e}"));
        serde_json::to_value(&object).expect("a JSON object")
    }

    /// Starts following a CI (a watch on its name), so that its last state is known when it
    /// goes: the watch's DELETED event carries the object as it was when it was removed.
    pub async fn follow(&self, namespace: &str, name: &str) -> Follower {
        let resource = ApiResource::erase::<ComputeInstance>(&());
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, config).boxed();
        let start = Instant::now();
        let mut last = None;
        // The watch is established once the initial list is through.
        loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.try_next()).await {
                Ok(Ok(Some(watcher::Event::InitDone))) => break,
                Ok(Ok(Some(watcher::Event::InitApply(o) | watcher::Event::Apply(o)))) => {
                    last = Some(o);
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => {}
            }
            assert!(
                start.elapsed() < START_DEADLINE,
                "the watch on {namespace}/{name} did not start"
            );
        }
        Follower {
            namespace: namespace.into(),
            name: name.into(),
            stream,
            last,
        }
    }

    /// Waits until the followed CI is gone; returns its last state. Fails with the diagnostics
    /// at the deadline or when a process died.
    pub async fn wait_gone(&mut self, mut follower: Follower) -> Seen {
        let start = Instant::now();
        loop {
            match tokio::time::timeout(Duration::from_millis(500), follower.stream.try_next()).await
            {
                Ok(Ok(Some(watcher::Event::Delete(o)))) => return Seen::from(o),
                Ok(Ok(Some(watcher::Event::InitApply(o) | watcher::Event::Apply(o)))) => {
                    follower.last = Some(o);
                }
                Ok(Ok(Some(_))) | Err(_) => {}
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Ok(Ok(None)) => panic!("the watch on {} ended", follower.name),
            }
            let last = follower.last.clone().map(|o| Seen::from(o).ci);
            self.check_alive(last.as_ref());
            if start.elapsed() > DEADLINE {
                panic!(
                    "timed out after {DEADLINE:?} waiting for {}/{} to be deleted\n{}",
                    follower.namespace,
                    follower.name,
                    self.diagnostics(last.as_ref())
                );
            }
        }
    }

    /// Deletes the CI and waits until it is gone; returns its last state.
    pub async fn delete_and_wait_gone(&mut self, namespace: &str, name: &str) -> Seen {
        let follower = self.follow(namespace, name).await;
        self.delete(namespace, name).await;
        self.wait_gone(follower).await
    }

    fn check_alive(&mut self, ci: Option<&ComputeInstance>) {
        let dead: Vec<String> = self
            .operators
            .iter_mut()
            .filter_map(|op| {
                op.proc
                    .exited()
                    .map(|s| format!("{} exited with {s}", op.config.name))
            })
            .collect();
        if !dead.is_empty() {
            panic!("{}\n{}", dead.join("; "), self.diagnostics(ci));
        }
        if self.uses_rulebook {
            let rb = rulebook();
            let exited = rb.proc.lock().unwrap_or_else(|e| e.into_inner()).exited();
            if let Some(status) = exited {
                panic!(
                    "ansible-rulebook exited with {status}\n{}",
                    self.diagnostics(ci)
                );
            }
        }
    }

    /// Events recorded for `name` (events.k8s.io/v1): (type, reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), &self.namespace);
        let mut list: Vec<_> = api
            .list(&Default::default())
            .await
            .expect("listing events")
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .collect();
        list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        list.into_iter()
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }

    /// A JSON merge patch on the CI, as a user would apply it (metadata or spec).
    pub async fn merge_patch(&self, namespace: &str, name: &str, patch: serde_json::Value) {
        self.api_in(namespace)
            .patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            )
            .await
            .unwrap_or_else(|e| panic!("patching {namespace}/{name} with {patch}: {e}"));
    }

    /// Records every version of the CI the API server sends on a watch, from now on, so that a
    /// test can check something of each persisted state rather than of a sample.
    pub async fn record(&self, namespace: &str, name: &str) -> Recorder {
        let api = self.api_in(namespace);
        let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
        let mut stream = watcher(api, config).boxed();
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let sink = std::sync::Arc::clone(&seen);
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match stream.try_next().await {
                    Ok(Some(watcher::Event::InitApply(ci) | watcher::Event::Apply(ci))) => {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(ci);
                    }
                    Ok(Some(watcher::Event::InitDone)) => {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => return,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(START_DEADLINE, ready_rx)
            .await
            .unwrap_or_else(|_| panic!("the watch on {namespace}/{name} did not start"))
            .ok();
        Recorder { seen, task }
    }

    pub fn assert_no_forbidden(&self) {
        for op in &self.operators {
            op.assert_no_forbidden();
        }
    }
}

/// A CI as last seen: typed, and as the API server sent it.
#[derive(Debug)]
pub struct Seen {
    pub ci: ComputeInstance,
    pub raw: serde_json::Value,
}

impl From<DynamicObject> for Seen {
    fn from(object: DynamicObject) -> Seen {
        let raw = serde_json::to_value(&object).expect("a JSON object");
        let ci = serde_json::from_value(raw.clone()).expect("a ComputeInstance");
        Seen { ci, raw }
    }
}

/// A watch on one CI (see [`Scene::follow`]).
pub struct Follower {
    namespace: String,
    name: String,
    stream:
        futures::stream::BoxStream<'static, Result<watcher::Event<DynamicObject>, watcher::Error>>,
    last: Option<DynamicObject>,
}

pub fn jobs(ci: &ComputeInstance) -> Vec<JobStatus> {
    ci.status
        .as_ref()
        .map(|s| s.jobs.clone())
        .unwrap_or_default()
}

pub fn latest(ci: &ComputeInstance, t: JobType) -> Option<JobStatus> {
    cloudkit_api::history::latest_job(&jobs(ci), t).cloned()
}

pub fn spec_with_parameters(parameters: serde_json::Value) -> ComputeInstanceSpec {
    let mut spec = ComputeInstanceSpec::for_template("e2e_template");
    spec.template_parameters = Some(parameters.to_string());
    spec
}

/// Every version of one CI seen on a watch (see [`Scene::record`]); stops watching when dropped.
pub struct Recorder {
    seen: std::sync::Arc<Mutex<Vec<ComputeInstance>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// The versions seen so far, oldest first.
    pub fn seen(&self) -> Vec<ComputeInstance> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The CI's condition of this type.
pub fn condition(
    ci: &ComputeInstance,
    type_: &str,
) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    ci.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

pub fn finalizers(ci: &ComputeInstance) -> Vec<String> {
    ci.metadata.finalizers.clone().unwrap_or_default()
}
