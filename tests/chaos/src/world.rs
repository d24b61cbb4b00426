//! What a scenario runs in: its own API server and etcd, the AWX simulator in playbook mode, the
//! operator binary as child processes, and the secret scan that every text they produce goes
//! through.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use cloudkit_aap_sim::{Faults, Phases, SimConfig, SimHandle, Simulator, TemplateSpec};
use cloudkit_api::ComputeInstance;
use cloudkit_test_support::{OperatorProcess, OperatorSettings, free_port};
use cloudkit_testenv::TestEnv;
use kube::Api;
use rand::Rng as _;

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
    /// Whether the workload labels its CIs for the fulfillment service.
    pub uuid_labels: bool,
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
            uuid_labels: false,
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

    /// The reasons of the namespace's Warning events.
    pub async fn warning_reasons(&self) -> anyhow::Result<Vec<String>> {
        use k8s_openapi::api::events::v1::Event;
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = events.list(&kube::api::ListParams::default()).await?;
        Ok(list
            .items
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.reason)
            .collect())
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

impl World {
    /// The operator settings of this scenario: its API server and namespace, JSON logs, a
    /// 500 ms poll interval, and `settings` (a provider's) on top.
    pub fn operator(&self, bin: &Path, settings: Vec<(String, String)>) -> OperatorSettings {
        let mut config = OperatorSettings::new("operator", bin, &self.kubeconfig, &self.namespace)
            .poll_interval("500ms")
            .json_logs();
        for (k, v) in &settings {
            config = config.env(k, v);
        }
        config
    }
}

/// How long a stopped operator may take to shut down before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// One operator process of a scenario, its HTTP port chosen up front (the scenarios scrape
/// `/metrics` without waiting for it to start).
#[derive(Debug)]
pub struct Operator {
    process: OperatorProcess,
    pub pid: u32,
}

impl Operator {
    /// Starts it with its output in `log`; returns at once.
    pub fn spawn(config: &OperatorSettings, log: PathBuf) -> anyhow::Result<Operator> {
        let http = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let process = config.clone().http_address(http).log_file(&log).spawn()?;
        let pid = process.pid();
        Ok(Operator { process, pid })
    }

    /// SIGKILL (nothing runs after it: no cleanup, no Lease release) and reap.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.process.kill();
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 15 s.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.process.stop(STOP_GRACE).await;
        Ok(())
    }

    /// The exit status, once the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.exited()
    }

    /// `/metrics`, when the process answers.
    pub async fn metrics(&self) -> Option<String> {
        self.process.metrics_text().await.ok()
    }

    /// The Lease holder identity this process uses.
    pub fn identity(&self) -> String {
        self.process.lease_identity()
    }
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
