//! What a scenario runs in: its own API server and etcd, the AWX simulator in playbook mode, the
//! operator binary as child processes, and the secret scan that every text they produce goes
//! through.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use cloudkit_aap_sim::{Faults, Phases, SimConfig, SimHandle, Simulator, TemplateSpec};
use cloudkit_api::ComputeInstance;
use cloudkit_testenv::TestEnv;
use kube::Api;
use rand::Rng as _;
use tokio::process::{Child, Command};

pub const PROVISION: &str = "provision_vm";
pub const DEPROVISION: &str = "deprovision_vm";

/// Locks, ignoring poisoning (a panicked holder left consistent data behind in every use here).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random secret with a recognisable prefix.
pub fn secret(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    format!("{prefix}-{}", hex::encode(bytes))
}

/// Every text a scenario's components produced for users (operator logs, events, CI objects,
/// metrics) is fed here and searched for the secrets.
#[derive(Debug, Default)]
pub struct Scan {
    secrets: Vec<(String, String)>,
    /// Bytes scanned per source.
    pub bytes: BTreeMap<String, u64>,
    /// `source: secret name` for every finding.
    pub hits: Vec<String>,
}

impl Scan {
    /// Adds a secret (`name` is what the report calls it; the value never appears there).
    pub fn watch(&mut self, name: &str, value: &str) {
        self.secrets.push((name.to_string(), value.to_string()));
    }

    pub fn feed(&mut self, source: &str, text: &str) {
        *self.bytes.entry(source.to_string()).or_default() += text.len() as u64;
        for (name, value) in &self.secrets {
            if text.contains(value.as_str()) {
                let hit = format!("{source}: {name}");
                if !self.hits.contains(&hit) {
                    self.hits.push(hit);
                }
            }
        }
    }
}

pub struct World {
    env: Arc<Mutex<TestEnv>>,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub client: kube::Client,
    pub api: Api<ComputeInstance>,
    pub sim: Option<SimHandle>,
    pub aap_token: String,
    /// Where this scenario's logs go.
    pub dir: PathBuf,
    pub scan: Arc<Mutex<Scan>>,
}

impl World {
    /// A fresh API server, a namespace, and the simulator in playbook mode, its jobs taking
    /// `job_time` (pending a fifth of it, running the rest; zero: milliseconds).
    pub async fn start(
        name: &str,
        out: &Path,
        seed: u64,
        job_time: Duration,
    ) -> anyhow::Result<World> {
        let env = tokio::task::spawn_blocking(TestEnv::start)
            .await?
            .context("starting the API server")?;
        let namespace = env.try_namespace("chaos").await?;
        let client = env.try_admin_client().await?;
        let kubeconfig = env.kubeconfig_path().to_path_buf();
        let api: Api<ComputeInstance> = Api::namespaced(client.clone(), &namespace);
        let dir = out.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let aap_token = secret("chaos-aap-token");
        let mut scan = Scan::default();
        scan.watch("AAP token", &aap_token);
        let mut sim = Simulator::builder()
            .config(SimConfig {
                request_log_capacity: 0,
                ..SimConfig::default()
            })
            .token(aap_token.clone())
            .seed(seed);
        sim = if job_time.is_zero() {
            sim.fast()
                .template(TemplateSpec::job(PROVISION))
                .template(TemplateSpec::job(DEPROVISION))
        } else {
            let phases = Phases::new(job_time / 5, Duration::ZERO, job_time * 4 / 5);
            sim.template(TemplateSpec::job(PROVISION).with_phases(phases))
                .template(TemplateSpec::job(DEPROVISION).with_phases(phases))
        };
        let sim = sim
            .kube_client(env.try_admin_client().await?)
            .spawn("127.0.0.1:0".parse()?)
            .await?;
        Ok(World {
            env: Arc::new(Mutex::new(env)),
            kubeconfig,
            namespace,
            client,
            api,
            sim: Some(sim),
            aap_token,
            dir,
            scan: Arc::new(Mutex::new(scan)),
        })
    }

    pub fn sim(&self) -> anyhow::Result<&Simulator> {
        Ok(self.sim.as_ref().context("no simulator")?.simulator())
    }

    pub fn set_faults(&self, faults: Faults) -> anyhow::Result<()> {
        self.sim()?.set_faults(faults)?;
        Ok(())
    }

    /// The operator settings for the simulator as the AAP controller.
    pub fn aap_settings(&self) -> anyhow::Result<Vec<(String, String)>> {
        let sim = self.sim.as_ref().context("no simulator")?;
        Ok(vec![
            ("CLOUDKIT_PROVISIONING_PROVIDER".into(), "aap".into()),
            ("CLOUDKIT_AAP_URL".into(), format!("{}/api", sim.base_url())),
            ("CLOUDKIT_AAP_TOKEN".into(), self.aap_token.clone()),
            ("CLOUDKIT_AAP_PROVISION_TEMPLATE".into(), PROVISION.into()),
            (
                "CLOUDKIT_AAP_DEPROVISION_TEMPLATE".into(),
                DEPROVISION.into(),
            ),
        ])
    }

    /// Runs `f` on the environment on a blocking thread (stopping and starting servers blocks).
    pub async fn with_env<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut TestEnv) -> T + Send + 'static,
    ) -> anyhow::Result<T> {
        let env = Arc::clone(&self.env);
        Ok(tokio::task::spawn_blocking(move || f(&mut lock(&env))).await?)
    }

    /// Feeds the namespace's events and CIs to the secret scan.
    pub async fn scan_cluster(&self) -> anyhow::Result<()> {
        use k8s_openapi::api::core::v1::Event as CoreEvent;
        use k8s_openapi::api::events::v1::Event;
        let lp = kube::api::ListParams::default();
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let core: Api<CoreEvent> = Api::namespaced(self.client.clone(), &self.namespace);
        let cis = self.api.list(&lp).await?;
        let texts = [
            (
                "events",
                serde_json::to_string(&events.list(&lp).await?.items)?,
            ),
            (
                "events",
                serde_json::to_string(&core.list(&lp).await?.items)?,
            ),
            ("CI objects", serde_json::to_string(&cis.items)?),
        ];
        let mut scan = lock(&self.scan);
        for (source, text) in texts {
            scan.feed(source, &text);
        }
        Ok(())
    }

    /// Feeds the namespace's CIs to the secret scan.
    pub async fn scan_cis(&self) {
        if let Ok(list) = self.api.list(&kube::api::ListParams::default()).await
            && let Ok(text) = serde_json::to_string(&list.items)
        {
            lock(&self.scan).feed("CI objects", &text);
        }
    }

    /// Feeds every operator log of this scenario to the secret scan.
    pub fn scan_logs(&self) -> anyhow::Result<()> {
        let mut scan = lock(&self.scan);
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                scan.feed("operator logs", &text);
            }
        }
        Ok(())
    }

    /// The last `lines` lines of every operator log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        paths.sort();
        for path in paths
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
        {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ---\n", path.display()));
            out.push_str(&all[all.len().saturating_sub(lines)..].join("\n"));
            out.push('\n');
        }
        out
    }
}

/// How to start an operator process.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub namespace: String,
    pub env: Vec<(String, String)>,
}

impl OperatorConfig {
    pub fn new(bin: &Path, world: &World, settings: Vec<(String, String)>) -> OperatorConfig {
        let mut env: Vec<(String, String)> = vec![
            ("CLOUDKIT_AAP_STATUS_POLL_INTERVAL".into(), "500ms".into()),
            ("CLOUDKIT_LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
        ];
        env.extend(settings);
        OperatorConfig {
            bin: bin.to_path_buf(),
            kubeconfig: world.kubeconfig.clone(),
            namespace: world.namespace.clone(),
            env,
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> OperatorConfig {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// One operator process; its stderr (JSON logs) goes to a file.
pub struct Operator {
    child: Child,
    pub pid: u32,
    pub http: SocketAddr,
    exit: Option<ExitStatus>,
}

impl Operator {
    pub fn spawn(config: &OperatorConfig, log: PathBuf) -> anyhow::Result<Operator> {
        let http = free_port()?;
        let file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut cmd = Command::new(&config.bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", &config.kubeconfig)
            .env("CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE", &config.namespace)
            .env("CLOUDKIT_HTTP_ADDRESS", http.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true);
        for (k, v) in &config.env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", config.bin.display()))?;
        let pid = child.id().context("the operator exited at once")?;
        Ok(Operator {
            child,
            pid,
            http,
            exit: None,
        })
    }

    /// SIGKILL (nothing runs after it: no cleanup, no Lease release) and reap.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if self.exited().is_none() {
            self.child.start_kill()?;
            self.exit = Some(self.child.wait().await?);
        }
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if self.exited().is_some() {
            return Ok(());
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(status) => self.exit = Some(status?),
            Err(_) => self.kill().await?,
        }
        Ok(())
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// `/metrics`, when the process answers.
    pub async fn metrics(&self) -> Option<String> {
        let url = format!("http://{}/metrics", self.http);
        let answer = reqwest::Client::new()
            .get(url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        answer.text().await.ok()
    }

    /// The Lease holder identity this process uses (see the operator's `lease_identity`).
    pub fn identity(&self) -> String {
        format!("cloudkit-operator-{}", self.pid)
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?)
}

/// Scrapes `/metrics` of `op` into the scan (before a kill, say).
pub async fn scan_metrics(scan: &Mutex<Scan>, op: &Operator) {
    if let Some(text) = op.metrics().await {
        lock(scan).feed("metrics", &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_finds_a_secret_anywhere_in_a_text_and_counts_what_it_read() {
        let mut scan = Scan::default();
        let token = secret("t");
        assert!(token.len() > 30, "{token}");
        scan.watch("token", &token);
        scan.feed("logs", "nothing here");
        assert!(scan.hits.is_empty());
        scan.feed("events", &format!("{{\"message\":\"Bearer {token}\"}}"));
        scan.feed("events", &format!("again {token}"));
        assert_eq!(scan.hits, vec!["events: token".to_string()]);
        assert_eq!(scan.bytes["logs"], 12);
        // A redacted or partial secret is no finding.
        scan.feed("metrics", &token[..token.len() - 1]);
        assert_eq!(scan.hits.len(), 1);
    }
}
