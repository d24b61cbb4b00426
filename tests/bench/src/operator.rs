//! The operator as users run it: the release binary as a child process.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::cluster::Cluster;
use crate::probe::{self, Memory, Sample};
use crate::sim;

/// Which provider starts jobs.
#[derive(Clone, Debug)]
pub enum Provider {
    Aap {
        url: String,
    },
    Eda {
        provision: String,
        deprovision: String,
    },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub provider: Provider,
    pub poll_interval: String,
    /// Extra environment (for example allocator settings).
    pub env: Vec<(String, String)>,
    /// The namespace to watch; the cluster's own when absent.
    pub namespace: Option<String>,
}

impl Options {
    pub fn aap(url: &str, poll_interval: &str) -> Options {
        Options {
            provider: Provider::Aap { url: url.into() },
            poll_interval: poll_interval.into(),
            env: Vec::new(),
            namespace: None,
        }
    }
}

const LOG_LINES: usize = 200;

pub struct Operator {
    child: Child,
    pub pid: u32,
    pub address: SocketAddr,
    /// When the process was spawned.
    pub spawned: Instant,
    log: Arc<Mutex<VecDeque<String>>>,
    http: reqwest::Client,
}

impl Operator {
    pub async fn spawn(
        bin: &Path,
        cluster: &Cluster,
        options: &Options,
    ) -> anyhow::Result<Operator> {
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("KUBECONFIG", cluster.env.kubeconfig_path())
            .env(
                "CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE",
                options.namespace.as_deref().unwrap_or(&cluster.namespace),
            )
            .env("CLOUDKIT_AAP_STATUS_POLL_INTERVAL", &options.poll_interval)
            .env("CLOUDKIT_HTTP_ADDRESS", "127.0.0.1:0")
            .env("CLOUDKIT_LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match &options.provider {
            Provider::Aap { url } => {
                cmd.env("CLOUDKIT_PROVISIONING_PROVIDER", "aap")
                    .env("CLOUDKIT_AAP_URL", url)
                    .env("CLOUDKIT_AAP_TOKEN", sim::TOKEN)
                    .env("CLOUDKIT_AAP_PROVISION_TEMPLATE", sim::PROVISION)
                    .env("CLOUDKIT_AAP_DEPROVISION_TEMPLATE", sim::DEPROVISION);
            }
            Provider::Eda {
                provision,
                deprovision,
            } => {
                cmd.env("CLOUDKIT_PROVISIONING_PROVIDER", "eda")
                    .env("CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK", provision)
                    .env("CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK", deprovision);
            }
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        let spawned = Instant::now();
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the operator exited at once")?;
        let stderr = child.stderr.take().context("no stderr pipe")?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = Arc::clone(&log);
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("serving /healthz") {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if let (Some(tx), Some(a)) = (tx.take(), v["fields"]["address"].as_str()) {
                        let _ = tx.send(a.to_string());
                    }
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                if log.len() == LOG_LINES {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        let address = match tokio::time::timeout(Duration::from_secs(30), rx).await {
            Ok(Ok(a)) => a.parse()?,
            _ => bail!(
                "the operator did not start; log:\n{}",
                tail(&log.lock().unwrap_or_else(|e| e.into_inner()))
            ),
        };
        let op = Operator {
            child,
            pid,
            address,
            spawned,
            log,
            http: reqwest::Client::new(),
        };
        op.wait_ready().await?;
        Ok(op)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .http
                .get(format!("http://{}/readyz", self.address))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the operator never became ready; log:\n{}", self.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub async fn metrics(&self) -> anyhow::Result<Vec<Sample>> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.address))
            .send()
            .await?
            .text()
            .await?;
        Ok(probe::parse_prometheus(&text))
    }

    /// A counter from `/metrics` (OpenMetrics names counters `<name>_total`).
    pub async fn counter(&self, name: &str) -> anyhow::Result<f64> {
        Ok(probe::sum_metric(&self.metrics().await?, name))
    }

    pub fn memory(&self) -> anyhow::Result<Memory> {
        probe::memory(self.pid)
    }

    pub fn cpu_seconds(&self) -> f64 {
        probe::cpu_seconds(self.pid)
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 15 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(r) => {
                r?;
            }
            Err(_) => {
                self.child.kill().await?;
            }
        }
        Ok(())
    }
}

fn tail(log: &VecDeque<String>) -> String {
    log.iter()
        .skip(log.len().saturating_sub(40))
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// `target/release/cloudkit-operator` of this workspace.
pub fn default_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/cloudkit-operator")
}
