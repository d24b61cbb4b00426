//! A real Kubernetes API server for tests: etcd and kube-apiserver 1.20 on free loopback ports,
//! with TLS, static-token authentication, RBAC and the repository's CRDs installed, and a
//! kube-controller-manager running its garbage collector and namespace controllers, so that
//! objects whose owners are gone are collected and a deleted namespace disappears once empty.
//!
//! Run `hack/testenv-install.sh` once (or `./x test`, which runs it) to install etcd and build
//! the API server and the controller manager. Tests of one test binary share one environment:
//!
//! ```no_run
//! use cloudkit_testenv::shared;
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let env = shared(); // started on first use, cleaned up when the test binary exits
//! let ns = env.namespace("my-test").await; // a fresh namespace per test
//! let client = env.admin_client().await; // a new client per call: one per tokio runtime
//! let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
//! cms.create(&PostParams::default(), &ConfigMap::default()).await.ok();
//! // Child processes (kubectl, ansible, the operator binary) use the kubeconfig file.
//! let _ = env.kubeconfig_path();
//! # Ok(())
//! # }
//! ```
//!
//! The shared environment also has the platform's CRDs and runs one fake KubeVirt for the
//! whole process ([`kubevirt::shared_fake`]).
//!
//! Two users exist: an administrator (group `system:masters`) and [`LIMITED_USER`] in group
//! [`LIMITED_GROUP`], who has no permissions until a test binds it to a role.
//!
//! Nothing survives the test process: each environment has a watchdog that kills the servers
//! and removes the environment directory when the process exits, however it exits. Set
//! `CLOUDKIT_TESTENV_KEEP=1` to keep the directory (logs, certificates, etcd data) for debugging.

mod binaries;
mod crds;
mod error;
mod pki;
mod process;

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition as Crd;
use kube::api::{Api, ObjectMeta, PostParams};

pub mod kubevirt;

pub use binaries::{Binaries, KUBERNETES_VERSION, cache_dir, kubectl_path};
pub use crds::{crds_dir, load_crds};
pub use error::{Error, Result};

use pki::{Pki, random_hex};
use process::{Server, Watchdog};

/// User name of the second, RBAC-limited token.
pub const LIMITED_USER: &str = "cloudkit-operator";
/// Group of the second, RBAC-limited token.
pub const LIMITED_GROUP: &str = "cloudkit:operators";
/// User name of the administrator token (group `system:masters`).
pub const ADMIN_USER: &str = "cloudkit-admin";

/// How long the API server may take to answer `/readyz` (3 to 4 s on a 2-core machine).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long etcd may take to accept connections.
const ETCD_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the CRDs may take to become Established.
const CRD_TIMEOUT: Duration = Duration::from_secs(30);
/// Free ports are picked by binding port 0 and releasing it, which can race with other
/// processes; a start that loses the race is retried with new ports.
const START_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES: usize = 40;

/// A running etcd + kube-apiserver pair with the CRDs installed, and a kube-controller-manager.
///
/// Get the one shared by a test binary with [`shared()`], or an owned one with
/// [`TestEnv::start`]; dropping an owned one stops the servers and removes its directory.
#[derive(Debug)]
pub struct TestEnv {
    dir: tempfile::TempDir,
    server_url: String,
    admin_token: String,
    limited_token: String,
    ca_pem: String,
    admin_kubeconfig: String,
    limited_kubeconfig: String,
    admin_kubeconfig_path: PathBuf,
    limited_kubeconfig_path: PathBuf,
    etcd: Server,
    etcd_addr: SocketAddrV4,
    apiserver: Server,
    controller_manager: Server,
    watchdog: Watchdog,
    namespaces: AtomicU64,
}

static SHARED: OnceLock<std::result::Result<TestEnv, String>> = OnceLock::new();

/// The watchdog of the test process's own children (operators, ansible-rulebook): the same one
/// an environment uses, without a directory to remove.
static CHILDREN: OnceLock<std::sync::Mutex<Option<Watchdog>>> = OnceLock::new();

/// Kills the process group `pgid` when the test process exits, however it exits (a panic, a
/// SIGKILL of the test binary): start children with `process_group(0)` and pass their PID.
///
/// Best effort: when bash cannot be started, nothing guards the group.
pub fn guard_process_group(pgid: u32) {
    with_children_watchdog(|w| {
        let _ = w.guard_group(pgid);
    });
}

/// The process group `pgid` has been killed and reaped; a later group that reuses the number is
/// not killed.
pub fn forget_process_group(pgid: u32) {
    with_children_watchdog(|w| w.forget(pgid));
}

fn with_children_watchdog(f: impl FnOnce(&mut Watchdog)) {
    let cell =
        CHILDREN.get_or_init(|| std::sync::Mutex::new(Watchdog::spawn(Path::new(""), false).ok()));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(w) = guard.as_mut() {
        f(w);
    }
}

/// Polls `check` until it answers true, for at most `deadline`; the error names `what` and
/// carries the servers' log tails. For the environment's own tests (the shared harness crate has
/// the richer waits the other test crates use).
pub async fn eventually<F, Fut>(what: &str, deadline: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let start = Instant::now();
    while start.elapsed() < deadline {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("not within {deadline:?}: {what}\n{}", shared().log_tails())
}

/// The environment shared by all tests of this test binary, started on first use.
///
/// # Panics
///
/// When the environment cannot be started, for example because `kube-apiserver` has not been
/// built: the message says what to run. Every test that asks gets the same message; the start is
/// not retried. Use [`try_shared`] to handle the error instead.
#[allow(clippy::panic)]
pub fn shared() -> &'static TestEnv {
    match try_shared() {
        Ok(env) => env,
        Err(e) => panic!("{e}"),
    }
}

/// The environment shared by all tests of this test binary, started on first use.
///
/// It is never dropped; its watchdog stops the servers when the test process exits.
pub fn try_shared() -> Result<&'static TestEnv> {
    SHARED
        .get_or_init(|| {
            let env = TestEnv::start().map_err(|e| e.to_string())?;
            env.install_platform().map_err(|e| e.to_string())?;
            kubevirt::start_shared_fake(env.kubeconfig_yaml());
            Ok(env)
        })
        .as_ref()
        .map_err(|e| Error::Shared(e.clone()))
}

impl TestEnv {
    /// Starts a new environment in a fresh temporary directory and waits until the API server is
    /// ready and every CRD of [`crds_dir()`] is Established.
    ///
    /// Blocking (a few seconds); callable from synchronous code and from inside a tokio runtime
    /// alike, because the asynchronous steps run on a runtime of their own in a helper thread.
    pub fn start() -> Result<TestEnv> {
        let binaries = Binaries::locate()?;
        let crds = load_crds(&crds_dir())?;
        std::thread::scope(|s| {
            s.spawn(|| start_with(&binaries, &crds))
                .join()
                .unwrap_or_else(|_| {
                    Err(Error::io(
                        "starting the test environment",
                        std::io::Error::other("the start-up thread panicked"),
                    ))
                })
        })
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// Bearer token of the administrator (group `system:masters`).
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// Bearer token of [`LIMITED_USER`] (group [`LIMITED_GROUP`]); it may do nothing until a test
    /// binds it to a role.
    pub fn limited_token(&self) -> &str {
        &self.limited_token
    }

    /// PEM of the CA that signed the API server's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig file for the administrator, usable by kubectl and child processes. Its
    /// context's namespace is `default`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.admin_kubeconfig_path
    }

    /// A kubeconfig file for [`LIMITED_USER`].
    pub fn limited_kubeconfig_path(&self) -> &Path {
        &self.limited_kubeconfig_path
    }

    /// The administrator kubeconfig as YAML.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.admin_kubeconfig
    }

    /// The [`LIMITED_USER`] kubeconfig as YAML.
    pub fn limited_kubeconfig_yaml(&self) -> &str {
        &self.limited_kubeconfig
    }

    /// The environment directory: certificates, tokens, kubeconfigs, etcd data and the server
    /// logs (`etcd.log`, `kube-apiserver.log`, `kube-controller-manager.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PIDs of etcd, kube-apiserver and the watchdog, in that order.
    pub fn pids(&self) -> [u32; 3] {
        [self.etcd.pid(), self.apiserver.pid(), self.watchdog.pid()]
    }

    /// PID of kube-controller-manager.
    pub fn controller_manager_pid(&self) -> u32 {
        self.controller_manager.pid()
    }

    /// The tails of the etcd, kube-apiserver and kube-controller-manager logs, for failure
    /// messages.
    pub fn log_tails(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.etcd.log_tail(LOG_TAIL_LINES),
            self.apiserver.log_tail(LOG_TAIL_LINES),
            self.controller_manager.log_tail(LOG_TAIL_LINES)
        )
    }

    /// A new administrator client. Each call builds a new client because a `kube::Client` is
    /// bound to the tokio runtime it was created on, and `#[tokio::test]` makes a runtime per
    /// test.
    ///
    /// # Panics
    ///
    /// When the client cannot be built (see [`TestEnv::try_admin_client`]).
    #[allow(clippy::panic)]
    pub async fn admin_client(&self) -> kube::Client {
        match self.try_admin_client().await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// A new client for [`LIMITED_USER`] (see [`TestEnv::admin_client`]).
    ///
    /// # Panics
    ///
    /// When the client cannot be built (see [`TestEnv::try_limited_client`]).
    #[allow(clippy::panic)]
    pub async fn limited_client(&self) -> kube::Client {
        match self.try_limited_client().await {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        }
    }

    /// A new administrator client.
    pub async fn try_admin_client(&self) -> Result<kube::Client> {
        client_for(&self.admin_kubeconfig).await
    }

    /// The administrator's client configuration, for a client with layers of its own (a test
    /// that counts requests, say).
    pub async fn admin_config(&self) -> Result<kube::Config> {
        config_for(&self.admin_kubeconfig).await
    }

    /// A new client for [`LIMITED_USER`].
    pub async fn try_limited_client(&self) -> Result<kube::Client> {
        client_for(&self.limited_kubeconfig).await
    }

    /// Creates a namespace with a unique name starting with `prefix` and returns the name.
    ///
    /// # Panics
    ///
    /// When the namespace cannot be created (see [`TestEnv::try_namespace`]).
    #[allow(clippy::panic)]
    pub async fn namespace(&self, prefix: &str) -> String {
        match self.try_namespace(prefix).await {
            Ok(ns) => ns,
            Err(e) => panic!("{e}"),
        }
    }

    /// Creates a namespace with a unique name starting with `prefix` (lower-cased, reduced to
    /// the characters a namespace name allows) and returns the name.
    pub async fn try_namespace(&self, prefix: &str) -> Result<String> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let name = namespace_name(prefix, n, &random_hex(3)?);
        let api: Api<Namespace> = Api::all(self.try_admin_client().await?);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        api.create(&PostParams::default(), &ns)
            .await
            .map_err(|e| Error::kube(format!("creating namespace {name}"), e))?;
        Ok(name)
    }
}

impl TestEnv {
    /// Installs the platform's CRDs (VirtualMachine, VirtualMachineInstance, DataVolume,
    /// UserDefinedNetwork; see [`kubevirt`]). Blocking. The shared environment has them; an owned
    /// one stands for a cluster without KubeVirt and OVN-Kubernetes until this is called.
    pub fn install_platform(&self) -> Result<()> {
        let yaml = &self.admin_kubeconfig;
        on_helper_thread(|runtime| {
            runtime.block_on(async {
                let client = client_for(yaml).await?;
                kubevirt::install_platform_crds(&client).await
            })
        })?
    }
}

/// Stopping and starting the servers, for tests of how clients live through an outage.
impl TestEnv {
    /// Stops kube-apiserver with SIGKILL, as a crash would; etcd and its data stay.
    pub fn stop_apiserver(&mut self) {
        self.apiserver.kill(&mut self.watchdog);
    }

    /// Starts kube-apiserver again, on the same port with the same certificates and tokens, after
    /// [`TestEnv::stop_apiserver`], and waits until `/readyz` answers `ok`. Blocking.
    pub fn start_apiserver(&mut self) -> Result<()> {
        self.apiserver.respawn(&mut self.watchdog)?;
        let Self {
            apiserver,
            etcd,
            admin_kubeconfig,
            ..
        } = self;
        let ready = on_helper_thread(|runtime| {
            runtime.block_on(wait_ready(admin_kubeconfig, apiserver, etcd))
        })?;
        ready.map_err(|reason| Error::Startup {
            what: "kube-apiserver",
            reason,
            logs: self.log_tails(),
        })
    }

    /// Stops etcd with SIGKILL, as a crash would; its data directory stays.
    pub fn stop_etcd(&mut self) {
        self.etcd.kill(&mut self.watchdog);
    }

    /// Starts etcd again on the same ports and data directory after [`TestEnv::stop_etcd`] and
    /// waits until it accepts connections. Blocking.
    pub fn start_etcd(&mut self) -> Result<()> {
        self.etcd.respawn(&mut self.watchdog)?;
        let deadline = Instant::now() + ETCD_TIMEOUT;
        loop {
            if let Some(status) = self.etcd.exited() {
                return Err(Error::Startup {
                    what: "etcd",
                    reason: format!("exited with {status} after a restart"),
                    logs: self.log_tails(),
                });
            }
            if TcpStream::connect_timeout(&self.etcd_addr.into(), Duration::from_millis(200))
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Startup {
                    what: "etcd",
                    reason: format!("no connection on {} after {ETCD_TIMEOUT:?}", self.etcd_addr),
                    logs: self.log_tails(),
                });
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Whether kube-apiserver and etcd run (were not stopped, and have not exited).
    pub fn servers_running(&mut self) -> bool {
        let apiserver = !self.apiserver.is_stopped() && self.apiserver.exited().is_none();
        let etcd = !self.etcd.is_stopped() && self.etcd.exited().is_none();
        apiserver && etcd
    }
}

/// Runs `f` on a helper thread with a tokio runtime of its own, so that blocking callers inside
/// another runtime work too.
fn on_helper_thread<T: Send>(f: impl FnOnce(&tokio::runtime::Runtime) -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("building a tokio runtime", e))?;
            Ok(f(&runtime))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::io(
                "waiting for the test environment",
                std::io::Error::other("the helper thread panicked"),
            ))
        })
    })
}

impl Drop for TestEnv {
    // Runs before the fields are dropped: the servers stop before their directory goes.
    fn drop(&mut self) {
        self.controller_manager.kill(&mut self.watchdog);
        self.apiserver.kill(&mut self.watchdog);
        self.etcd.kill(&mut self.watchdog);
        self.watchdog.release();
    }
}

/// `<prefix>-<n>-<suffix>`, a valid namespace name (DNS label, at most 63 characters).
fn namespace_name(prefix: &str, n: u64, suffix: &str) -> String {
    let mut clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    format!("{clean}-{n}-{suffix}")
}

async fn client_for(kubeconfig_yaml: &str) -> Result<kube::Client> {
    let config = config_for(kubeconfig_yaml).await?;
    kube::Client::try_from(config).map_err(|e| Error::kube("building a client", e))
}

async fn config_for(kubeconfig_yaml: &str) -> Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(kubeconfig_yaml)?;
    let mut config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await?;
    // Loopback: anything slower than this is a hung server, and a test should say so.
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(60));
    Ok(config)
}

fn kubeconfig(server_url: &str, ca_pem: &str, user: &str, token: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: cloudkit-testenv
  cluster:
    server: {server_url}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: cloudkit-testenv
  context:
    cluster: cloudkit-testenv
    user: {user}
    namespace: default
current-context: cloudkit-testenv
"
    )
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// A loopback port that was free a moment ago (bound to port 0 and released: another process may
/// take it meanwhile, so a start that fails on it is worth one more attempt with a new port).
pub fn free_port() -> Result<u16> {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free loopback port", e))
}

/// Runs on a helper thread: everything here may block and may `block_on` its own runtime.
fn start_with(binaries: &Binaries, crds: &[(PathBuf, Crd)]) -> Result<TestEnv> {
    let keep = std::env::var_os("CLOUDKIT_TESTENV_KEEP").is_some_and(|v| v != "0" && !v.is_empty());
    let dir = tempfile::Builder::new()
        .prefix("cloudkit-testenv-")
        .disable_cleanup(keep)
        .tempdir()
        .map_err(|e| Error::io("creating the environment directory", e))?;
    let mut watchdog = Watchdog::spawn(dir.path(), keep)?;

    let pki = Pki::generate()?;
    let admin_token = random_hex(16)?;
    let limited_token = random_hex(16)?;
    let p = |name: &str| dir.path().join(name);
    write(&p("ca.crt"), &pki.ca_cert_pem)?;
    write(&p("apiserver.crt"), &pki.serving_cert_pem)?;
    write(&p("apiserver.key"), &pki.serving_key_pem)?;
    write(&p("sa.key"), &pki.service_account_key_pem)?;
    write(
        &p("tokens.csv"),
        &format!(
            "{admin_token},{ADMIN_USER},{ADMIN_USER},\"system:masters\"\n\
             {limited_token},{LIMITED_USER},{LIMITED_USER},\"{LIMITED_GROUP}\"\n"
        ),
    )?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("building a tokio runtime", e))?;

    let mut attempt = 0;
    let (etcd, etcd_addr, apiserver, server_url) = loop {
        attempt += 1;
        match start_servers(
            binaries,
            dir.path(),
            &mut watchdog,
            &runtime,
            &admin_token,
            &pki.ca_cert_pem,
            crds,
        ) {
            Ok(started) => break started,
            Err((_, true)) if attempt < START_ATTEMPTS => continue,
            // Dropping the watchdog lets it remove the directory.
            Err((e, _)) => return Err(e),
        }
    };

    let admin_kubeconfig = kubeconfig(&server_url, &pki.ca_cert_pem, ADMIN_USER, &admin_token);
    let limited_kubeconfig =
        kubeconfig(&server_url, &pki.ca_cert_pem, LIMITED_USER, &limited_token);
    let admin_kubeconfig_path = p("admin.kubeconfig");
    let limited_kubeconfig_path = p("limited.kubeconfig");
    // On an early return the watchdog, dropped, stops the servers and removes the directory.
    write(&admin_kubeconfig_path, &admin_kubeconfig)?;
    write(&limited_kubeconfig_path, &limited_kubeconfig)?;
    let controller_manager = start_controller_manager(
        &binaries.kube_controller_manager,
        &admin_kubeconfig_path,
        dir.path(),
        &mut watchdog,
    )?;
    let env = TestEnv {
        dir,
        server_url,
        admin_token,
        limited_token,
        ca_pem: pki.ca_cert_pem,
        admin_kubeconfig,
        limited_kubeconfig,
        admin_kubeconfig_path,
        limited_kubeconfig_path,
        etcd,
        etcd_addr,
        apiserver,
        controller_manager,
        watchdog,
        namespaces: AtomicU64::new(0),
    };
    Ok(env)
}

/// Starts kube-controller-manager with only the controllers tests need: the garbage collector
/// (objects whose owners are all gone are deleted) and the namespace controller (a deleted
/// namespace is emptied and then disappears; without it, it stays `Terminating`). It runs as the
/// administrator, serves nothing, and needs no leader election. Its caches sync about 2 s after
/// the start; the tests that rely on it wait for the result anyway, so the start does not.
fn start_controller_manager(
    program: &Path,
    kubeconfig: &Path,
    dir: &Path,
    watchdog: &mut Watchdog,
) -> Result<Server> {
    let args = vec![
        format!("--kubeconfig={}", kubeconfig.display()),
        "--controllers=garbagecollector,namespace".to_string(),
        "--leader-elect=false".to_string(),
        "--use-service-account-credentials=false".to_string(),
        "--secure-port=0".to_string(),
        "--port=0".to_string(),
    ];
    Server::spawn(
        "kube-controller-manager",
        program,
        &args,
        dir.join("kube-controller-manager.log"),
        watchdog,
    )
}

type StartError = (Error, bool);

/// Starts etcd and kube-apiserver on fresh ports and installs the CRDs. On failure the servers
/// are stopped and the flag says whether the failure looks like a lost race for a port.
fn start_servers(
    binaries: &Binaries,
    dir: &Path,
    watchdog: &mut Watchdog,
    runtime: &tokio::runtime::Runtime,
    admin_token: &str,
    ca_pem: &str,
    crds: &[(PathBuf, Crd)],
) -> std::result::Result<(Server, SocketAddrV4, Server, String), StartError> {
    let no_clash = |e: Error| (e, false);
    let etcd_port = free_port().map_err(no_clash)?;
    let peer_port = free_port().map_err(no_clash)?;
    let secure_port = free_port().map_err(no_clash)?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let d = |name: &str| dir.join(name).display().to_string();

    let etcd_args = vec![
        "--name=testenv".to_string(),
        format!("--data-dir={}", d(&format!("etcd-{etcd_port}"))),
        format!("--listen-client-urls={etcd_url}"),
        format!("--advertise-client-urls={etcd_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=testenv={peer_url}"),
        "--initial-cluster-state=new".to_string(),
        "--logger=zap".to_string(),
        "--log-outputs=stderr".to_string(),
        "--log-level=warn".to_string(),
    ];
    let mut etcd = Server::spawn(
        "etcd",
        &binaries.etcd,
        &etcd_args,
        dir.join("etcd.log"),
        watchdog,
    )
    .map_err(no_clash)?;

    let fail = |what: &'static str,
                reason: String,
                servers: &mut [&mut Server],
                watchdog: &mut Watchdog|
     -> StartError {
        let logs: Vec<String> = servers.iter().map(|s| s.log_tail(LOG_TAIL_LINES)).collect();
        let logs = logs.join("\n");
        let clash = logs.contains("address already in use");
        for s in servers.iter_mut() {
            s.kill(watchdog);
        }
        (Error::Startup { what, reason, logs }, clash)
    };

    // The API server gives up on an unreachable etcd only after a long while; wait for etcd
    // first so that its failures are reported as such, quickly.
    let deadline = Instant::now() + ETCD_TIMEOUT;
    loop {
        if let Some(status) = etcd.exited() {
            return Err(fail(
                "etcd",
                format!("exited with {status}"),
                &mut [&mut etcd],
                watchdog,
            ));
        }
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, etcd_port);
        if TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(fail(
                "etcd",
                format!("no connection on port {etcd_port} after {ETCD_TIMEOUT:?}"),
                &mut [&mut etcd],
                watchdog,
            ));
        }
        std::thread::sleep(Duration::from_millis(25));
    }

    let apiserver_args = vec![
        format!("--etcd-servers={etcd_url}"),
        "--bind-address=127.0.0.1".to_string(),
        "--advertise-address=127.0.0.1".to_string(),
        format!("--secure-port={secure_port}"),
        format!("--tls-cert-file={}", d("apiserver.crt")),
        format!("--tls-private-key-file={}", d("apiserver.key")),
        format!("--cert-dir={}", d("apiserver-certs")),
        format!("--token-auth-file={}", d("tokens.csv")),
        "--authorization-mode=RBAC".to_string(),
        format!("--service-account-key-file={}", d("sa.key")),
        format!("--service-account-signing-key-file={}", d("sa.key")),
        "--service-account-issuer=https://kubernetes.default.svc".to_string(),
        "--service-cluster-ip-range=10.0.0.0/24".to_string(),
        // The controller manager runs no service account controller, so nothing would create
        // the default service accounts the plugin insists on.
        "--disable-admission-plugins=ServiceAccount".to_string(),
        "--allow-privileged=true".to_string(),
        "--profiling=false".to_string(),
    ];
    let mut apiserver = match Server::spawn(
        "kube-apiserver",
        &binaries.kube_apiserver,
        &apiserver_args,
        dir.join("kube-apiserver.log"),
        watchdog,
    ) {
        Ok(s) => s,
        Err(e) => {
            etcd.kill(watchdog);
            return Err((e, false));
        }
    };

    let server_url = format!("https://127.0.0.1:{secure_port}");
    let kubeconfig = kubeconfig(&server_url, ca_pem, ADMIN_USER, admin_token);
    let ready = runtime.block_on(wait_ready(&kubeconfig, &mut apiserver, &mut etcd));
    if let Err(reason) = ready {
        return Err(fail(
            "kube-apiserver",
            reason,
            &mut [&mut apiserver, &mut etcd],
            watchdog,
        ));
    }
    let installed = runtime.block_on(async {
        let client = client_for(&kubeconfig).await?;
        crds::install(&client, crds, CRD_TIMEOUT).await
    });
    if let Err(e) = installed {
        return Err(fail(
            "kube-apiserver",
            format!("installing CRDs: {e}"),
            &mut [&mut apiserver, &mut etcd],
            watchdog,
        ));
    }
    Ok((
        etcd,
        SocketAddrV4::new(Ipv4Addr::LOCALHOST, etcd_port),
        apiserver,
        server_url,
    ))
}

/// Polls `/readyz` until it answers `ok`, a server exits or the deadline passes.
async fn wait_ready(
    kubeconfig: &str,
    apiserver: &mut Server,
    etcd: &mut Server,
) -> std::result::Result<(), String> {
    let client = client_for(kubeconfig).await.map_err(|e| e.to_string())?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(status) = apiserver.exited() {
            return Err(format!("kube-apiserver exited with {status}"));
        }
        if let Some(status) = etcd.exited() {
            return Err(format!("etcd exited with {status}"));
        }
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| e.to_string())?;
        let last = match tokio::time::timeout(Duration::from_secs(5), client.request_text(request))
            .await
        {
            Ok(Ok(body)) if body.trim() == "ok" => return Ok(()),
            Ok(Ok(body)) => format!("/readyz answered {body:?}"),
            Ok(Err(e)) => format!("/readyz: {e}"),
            Err(_) => "/readyz timed out".to_string(),
        };
        if Instant::now() >= deadline {
            return Err(format!("not ready after {READY_TIMEOUT:?}; last: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::namespace_name;

    #[test]
    fn namespace_names_are_dns_labels() {
        assert_eq!(namespace_name("My_Test", 3, "abc123"), "my-test-3-abc123");
        assert_eq!(namespace_name("--", 0, "ff"), "test-0-ff");
        let long = namespace_name(&"x".repeat(100), 12345, "abcdef");
        assert!(long.len() <= 63, "{long}");
    }
}
