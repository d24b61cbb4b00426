//! The operator as users run it: the release binary as a child process.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cloudkit_test_support::{OperatorProcess, OperatorSettings};

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

/// The operator process under measurement: the harness's launcher plus what the benchmark reads
/// of it (memory, CPU time, counters).
pub struct Operator {
    process: OperatorProcess,
    pub pid: u32,
    /// When the process was spawned.
    pub spawned: Instant,
}

impl Operator {
    /// Starts it and waits until `/readyz` answers (30 s at most).
    pub async fn spawn(
        bin: &Path,
        cluster: &Cluster,
        options: &Options,
    ) -> anyhow::Result<Operator> {
        static STARTS: AtomicUsize = AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, Ordering::Relaxed);
        let namespace = options.namespace.as_deref().unwrap_or(&cluster.namespace);
        let mut settings =
            OperatorSettings::new("operator", bin, cluster.env.kubeconfig_path(), namespace)
                .poll_interval(&options.poll_interval)
                .json_logs()
                .log_file(&cluster.env.dir().join(format!("operator-{n}.log")));
        settings = match &options.provider {
            Provider::Aap { url } => {
                settings.aap(url, sim::TOKEN, sim::PROVISION, sim::DEPROVISION)
            }
            Provider::Eda {
                provision,
                deprovision,
            } => settings.eda(provision, deprovision),
        };
        // A log filter for the operators of the run (`RUST_LOG` syntax), to see what they do.
        if let Ok(filter) = std::env::var("CLOUDKIT_BENCH_OPERATOR_LOG") {
            settings = settings.env("RUST_LOG", &filter);
        }
        for (k, v) in &options.env {
            settings = settings.env(k, v);
        }
        let mut process = settings.spawn()?;
        process.wait_serving(Duration::from_secs(30)).await?;
        Ok(Operator {
            pid: process.pid(),
            spawned: process.spawned,
            process,
        })
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail(40)
    }

    pub async fn metrics(&self) -> anyhow::Result<Vec<Sample>> {
        Ok(probe::parse_prometheus(&self.process.metrics_text().await?))
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

    /// Waits until it holds its Lease (with leader election).
    pub async fn wait_leading(&mut self) -> anyhow::Result<()> {
        self.process
            .wait_logged(&["acquired leadership"], Duration::from_secs(60))
            .await?;
        Ok(())
    }

    /// SIGKILL: no graceful shutdown, its Lease is not released.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 15 s).
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.process.stop(Duration::from_secs(15)).await;
        Ok(())
    }
}

/// `target/release/cloudkit-operator` of this workspace.
pub fn default_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/cloudkit-operator")
}
