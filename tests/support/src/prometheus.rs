//! Debian's Prometheus server and promtool, from the cache `hack/prometheus-install.sh` fills:
//! [`promtool`] for the alert rules' unit tests, [`PrometheusServer`] to scrape the operator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::process::{ChildProcess, free_port, run_dir};

/// The directory `hack/prometheus-install.sh` unpacked Debian's package into
/// (`<cache>/prometheus-<version>`, the newest when there are several).
///
/// # Panics
///
/// When there is none, with a message that says how to install it.
#[allow(clippy::panic)]
pub fn prometheus_dir() -> PathBuf {
    let cache = cloudkit_testenv::cache_dir();
    let mut found: Vec<PathBuf> = std::fs::read_dir(&cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("prometheus-"))
                && p.join("usr/bin/prometheus").is_file()
                && p.join("usr/bin/promtool").is_file()
        })
        .collect();
    found.sort();
    match found.pop() {
        Some(dir) => dir,
        None => panic!(
            "Prometheus and promtool are missing from {}: run hack/prometheus-install.sh \
             (`./x test` runs it)",
            cache.display()
        ),
    }
}

/// Debian's `promtool`.
pub fn promtool() -> PathBuf {
    prometheus_dir().join("usr/bin/promtool")
}

/// A Prometheus server on a free loopback port that scrapes the given targets every second,
/// with its configuration, data and log in a directory of [`run_dir`]. Dropping it kills it.
#[derive(Debug)]
pub struct PrometheusServer {
    proc: ChildProcess,
    address: SocketAddr,
    http: reqwest::Client,
}

impl PrometheusServer {
    /// Starts the server (job `cloudkit-operator`, `targets` as `host:port`, path `/metrics`)
    /// and waits until it answers `/-/ready`.
    pub async fn start(name: &str, targets: &[SocketAddr]) -> Result<PrometheusServer> {
        let dir = run_dir().join(name);
        let data = dir.join("data");
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("creating {}", data.display()), e))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, scrape_config(targets))
            .map_err(|e| Error::io(format!("writing {}", config.display()), e))?;
        let address = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let home = prometheus_dir();
        let mut cmd = Command::new(home.join("usr/bin/prometheus"));
        cmd.arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={address}"))
            .arg(format!(
                "--web.local-assets={}/",
                home.join("usr/share/prometheus/web").display()
            ));
        let proc = ChildProcess::spawn(name, cmd, &dir.join("prometheus.log"))?;
        let mut server = PrometheusServer {
            proc,
            address,
            http: reqwest::Client::new(),
        };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, within: Duration) -> Result<()> {
        let url = format!("http://{}/-/ready", self.address);
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.proc.exited() {
                return Err(Error::Start {
                    what: format!("prometheus exited ({status}) before it was ready"),
                    log: self.proc.log_tail(30),
                });
            }
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if start.elapsed() > within {
                return Err(Error::Start {
                    what: format!("prometheus did not answer {url} within {within:?}"),
                    log: self.proc.log_tail(30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The process and its log.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.proc
    }

    /// An instant query over the HTTP API (`/api/v1/query`): the `data.result` array.
    pub async fn query(&self, promql: &str) -> Result<Vec<serde_json::Value>> {
        let url = format!("http://{}/api/v1/query", self.address);
        let http = |source| Error::Http {
            context: format!("GET {url}?query={promql}"),
            source,
        };
        let body: serde_json::Value = self
            .http
            .get(&url)
            .query(&[("query", promql)])
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(http)?
            .json()
            .await
            .map_err(http)?;
        match body["data"]["result"].as_array() {
            Some(result) if body["status"] == "success" => Ok(result.clone()),
            _ => Err(Error::Start {
                what: format!("query {promql} answered {body}"),
                log: self.proc.log_tail(10),
            }),
        }
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) {
        self.proc.stop(grace).await;
    }
}

/// The configuration file: one job over `targets`, scraped every second.
pub fn scrape_config(targets: &[SocketAddr]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: cloudkit-operator\n    metrics_path: /metrics\n    \
         static_configs:\n      - targets: [{}]\n",
        list.join(", ")
    )
}
