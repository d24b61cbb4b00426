//! The operator binary as a child process: a settings builder, then a process with its log in a
//! file, its HTTP address, `/metrics`, and kill or graceful stop.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::process::{ChildProcess, run_dir, workspace_root};

/// How long an operator may take to serve its endpoints (and, when asked, to run its controller).
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// How to start one operator process: the environment it gets, as a user would set it.
///
/// ```no_run
/// # async fn example(sim_url: &str) -> cloudkit_test_support::Result<()> {
/// use cloudkit_test_support::{OperatorSettings, operator_binary};
/// let env = cloudkit_testenv::shared();
/// let mut op = OperatorSettings::new("operator", operator_binary(), env.kubeconfig_path(), "ns")
///     .aap(sim_url, "token", "provision_vm", "deprovision_vm")
///     .poll_interval("300ms")
///     .start()
///     .await?;
/// let metrics = op.metrics().await?;
/// assert!(metrics.contains_key("cloudkit_reconciles_total"));
/// op.stop(std::time::Duration::from_secs(15)).await;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct OperatorSettings {
    name: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
    args: Vec<String>,
    log: Option<PathBuf>,
    http: Option<SocketAddr>,
}

impl OperatorSettings {
    /// An operator `name` (its log is `<name>.log` in [`run_dir`] unless
    /// [`OperatorSettings::log_file`] says otherwise) running `bin` against the cluster of
    /// `kubeconfig`, watching `namespace`. Nothing of the test process's environment leaks in
    /// but `PATH`; logs are plain text at `info`, the HTTP endpoints on a port the OS picks.
    pub fn new(name: &str, bin: &Path, kubeconfig: &Path, namespace: &str) -> OperatorSettings {
        OperatorSettings {
            name: name.to_string(),
            bin: bin.to_path_buf(),
            env: Vec::new(),
            args: Vec::new(),
            log: None,
            http: None,
        }
        .env("PATH", &std::env::var("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env("KUBECONFIG", &kubeconfig.display().to_string())
        .env("CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE", namespace)
        .env("CLOUDKIT_HTTP_ADDRESS", "127.0.0.1:0")
        // The test API server has no OVN-Kubernetes; tests of the network set `udn`.
        .env("CLOUDKIT_TENANT_NETWORK", "none")
    }

    /// Sets an environment variable of the process, replacing an earlier value.
    pub fn env(mut self, name: &str, value: &str) -> OperatorSettings {
        self.env.retain(|(k, _)| k != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Adds command line arguments (`--leader-elect`, `--metrics-bind-address=:8443`), after
    /// those added earlier.
    pub fn args(mut self, args: &[&str]) -> OperatorSettings {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Removes an environment variable set earlier.
    pub fn without_env(mut self, name: &str) -> OperatorSettings {
        self.env.retain(|(k, _)| k != name);
        self
    }

    /// The AAP provider with this controller API base, token and templates.
    pub fn aap(self, url: &str, token: &str, provision: &str, deprovision: &str) -> Self {
        self.env("CLOUDKIT_PROVISIONING_PROVIDER", "aap")
            .env("CLOUDKIT_AAP_URL", url)
            .env("CLOUDKIT_AAP_TOKEN", token)
            .env("CLOUDKIT_AAP_PROVISION_TEMPLATE", provision)
            .env("CLOUDKIT_AAP_DEPROVISION_TEMPLATE", deprovision)
    }

    /// The EDA provider with these webhooks.
    pub fn eda(self, provision_webhook: &str, deprovision_webhook: &str) -> Self {
        self.env("CLOUDKIT_PROVISIONING_PROVIDER", "eda")
            .env(
                "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK",
                provision_webhook,
            )
            .env(
                "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK",
                deprovision_webhook,
            )
    }

    /// How often the AAP provider polls a job (a Go duration, `500ms`).
    pub fn poll_interval(self, interval: &str) -> Self {
        self.env("CLOUDKIT_AAP_STATUS_POLL_INTERVAL", interval)
    }

    /// Leader election with its Lease in `namespace`.
    pub fn leader_elect(self, namespace: &str) -> Self {
        self.env("CLOUDKIT_LEADER_ELECT", "true")
            .env("CLOUDKIT_LEADER_ELECTION_NAMESPACE", namespace)
    }

    /// JSON log lines (what the benchmark and chaos runs parse).
    pub fn json_logs(self) -> Self {
        self.env("CLOUDKIT_LOG_FORMAT", "json")
    }

    /// Serves the HTTP endpoints at `address` instead of a port the OS picks, so that the
    /// address is known before the process logs it.
    pub fn http_address(mut self, address: SocketAddr) -> Self {
        self.http = Some(address);
        self.env("CLOUDKIT_HTTP_ADDRESS", &address.to_string())
    }

    /// Writes the process's output to `path` (created or truncated).
    pub fn log_file(mut self, path: &Path) -> Self {
        self.log = Some(path.to_path_buf());
        self
    }

    /// The name given to [`OperatorSettings::new`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value of an environment variable as set so far.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Starts the process and returns at once; see [`OperatorProcess::wait_serving`].
    pub fn spawn(&self) -> Result<OperatorProcess> {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear().args(&self.args).stdout(Stdio::null());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let log = self
            .log
            .clone()
            .unwrap_or_else(|| run_dir().join(format!("{}.log", self.name)));
        let spawned = Instant::now();
        let proc = ChildProcess::spawn(&self.name, cmd, &log)?;
        Ok(OperatorProcess {
            proc,
            http: self.http,
            spawned,
            settings: self.clone(),
        })
    }

    /// Starts the process and waits until it serves `/readyz` with 200.
    pub async fn start(&self) -> Result<OperatorProcess> {
        let mut op = self.spawn()?;
        op.wait_serving(START_DEADLINE).await?;
        Ok(op)
    }
}

/// A running operator process (see [`OperatorSettings`]). Dropping it kills it.
#[derive(Debug)]
pub struct OperatorProcess {
    proc: ChildProcess,
    http: Option<SocketAddr>,
    /// When the process was started.
    pub spawned: Instant,
    settings: OperatorSettings,
}

impl OperatorProcess {
    /// The settings it was started with.
    pub fn settings(&self) -> &OperatorSettings {
        &self.settings
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// The Lease holder identity this process uses (the operator's `lease_identity`).
    pub fn lease_identity(&self) -> String {
        format!("cloudkit-operator-{}", self.pid())
    }

    /// The HTTP endpoints' address, once known (set, or logged by the process).
    pub fn http(&self) -> Option<SocketAddr> {
        self.http
    }

    /// The process and its log.
    pub fn process(&mut self) -> &mut ChildProcess {
        &mut self.proc
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.proc.exited()
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        self.proc.log_text()
    }

    /// The last `lines` lines of the log, headed by name, PID and path.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc.log_tail(lines)
    }

    /// Log lines that show a request refused by RBAC.
    pub fn forbidden_lines(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("forbidden") || l.contains("Forbidden"))
            .map(str::to_string)
            .collect()
    }

    /// Waits until the process has logged its HTTP address and `/readyz` answers 200; fails
    /// with the log when it exits first or `deadline` passes.
    pub async fn wait_serving(&mut self, deadline: Duration) -> Result<SocketAddr> {
        let start = Instant::now();
        let http = loop {
            if let Some(address) = self.http {
                break address;
            }
            self.http = self
                .log_text()
                .lines()
                .find(|l| l.contains("serving /healthz"))
                .and_then(logged_address);
            self.fail_if_gone(start, deadline, "serve its endpoints")?;
            // Short: the benchmark measures the time to ready.
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let client = reqwest::Client::new();
        loop {
            let ready = client
                .get(format!("http://{http}/readyz"))
                .timeout(Duration::from_secs(5))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return Ok(http);
            }
            self.fail_if_gone(start, deadline, "answer /readyz with 200")?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every one of `needles` appears in the log (`starting controller`,
    /// `acquired leadership`); fails with the log when the process exits first or `deadline`
    /// passes.
    pub async fn wait_logged(&mut self, needles: &[&str], deadline: Duration) -> Result<()> {
        let start = Instant::now();
        loop {
            let log = self.log_text();
            if needles.iter().all(|n| log.contains(n)) {
                return Ok(());
            }
            self.fail_if_gone(start, deadline, &format!("log {needles:?}"))?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn fail_if_gone(&mut self, start: Instant, deadline: Duration, what: &str) -> Result<()> {
        if let Some(status) = self.exited() {
            return Err(Error::Start {
                what: format!(
                    "{} exited with {status} before it could {what}",
                    self.settings.name
                ),
                log: self.log_tail(80),
            });
        }
        if start.elapsed() > deadline {
            return Err(Error::Start {
                what: format!("{} did not {what} within {deadline:?}", self.settings.name),
                log: self.log_tail(80),
            });
        }
        Ok(())
    }

    /// `/metrics` as the process serves it (OpenMetrics text).
    pub async fn metrics_text(&self) -> Result<String> {
        let address = self.http.ok_or_else(|| Error::Start {
            what: format!("{} has not logged its HTTP address", self.settings.name),
            log: self.log_tail(20),
        })?;
        let url = format!("http://{address}/metrics");
        let http = |source| Error::Http {
            context: format!("GET {url}"),
            source,
        };
        reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(http)?
            .text()
            .await
            .map_err(http)
    }

    /// `/metrics` as `name{labels} -> value`.
    pub async fn metrics(&self) -> Result<BTreeMap<String, f64>> {
        Ok(parse_metrics(&self.metrics_text().await?))
    }

    /// SIGKILL: no graceful shutdown, the Lease is not released.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// SIGTERM, then SIGKILL after `grace`; the exit status of a graceful shutdown. Blocks the
    /// thread (see [`OperatorProcess::stop`]).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.proc.terminate(grace)
    }

    /// SIGTERM, then SIGKILL after `grace`; the exit status of a graceful shutdown.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        self.proc.stop(grace).await
    }
}

/// The address of a `serving /healthz` log line, in the text or the JSON format.
fn logged_address(line: &str) -> Option<SocketAddr> {
    if let Ok(json) = serde_json::from_str::<serde_json::Value>(line) {
        return json["fields"]["address"].as_str()?.parse().ok();
    }
    line.split("address=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// OpenMetrics text as `name{labels} -> value` (comments skipped).
pub fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of every sample of metric `name` (any labels).
pub fn metric_sum(metrics: &BTreeMap<String, f64>, name: &str) -> f64 {
    metrics
        .iter()
        .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// The operator binary, built once per test process with `cargo build -p cloudkit-operator` so
/// that it matches the sources even when only the calling package is tested (a package cannot
/// name another package's binary through `CARGO_BIN_EXE_*`).
///
/// # Panics
///
/// When the build fails: the message says why.
#[allow(clippy::panic)]
pub fn operator_binary() -> &'static Path {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| build_binary("cloudkit-operator")) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// The kubectl plugin binary (`kubectl-cloudkit`), built once per test process the way
/// [`operator_binary`] is.
///
/// # Panics
///
/// When the build fails: the message says why.
#[allow(clippy::panic)]
pub fn plugin_binary() -> &'static Path {
    static BIN: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(|| build_binary("kubectl-cloudkit")) {
        Ok(p) => p,
        Err(e) => panic!("{e}"),
    }
}

/// Builds the binary `name` of the package of the same name and returns its path.
fn build_binary(name: &str) -> std::result::Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(workspace_root())
        .args([
            "build",
            "-q",
            "-p",
            name,
            "--bin",
            name,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running cargo build -p {name}: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo build -p {name} failed ({})", out.status));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| format!("cargo build reported no {name} executable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_is_read_from_text_and_json_lines() {
        let text = "2026-01-01T00:00:00Z  INFO cloudkit_operator: serving /healthz address=127.0.0.1:4321 x=1";
        assert_eq!(
            logged_address(text),
            Some(SocketAddr::from(([127, 0, 0, 1], 4321)))
        );
        let json = r#"{"message":"serving /healthz","fields":{"address":"127.0.0.1:99"}}"#;
        assert_eq!(
            logged_address(json),
            Some(SocketAddr::from(([127, 0, 0, 1], 99)))
        );
        assert_eq!(logged_address("serving /healthz"), None);
    }

    #[test]
    fn metrics_are_summed_over_labels_only_for_the_named_metric() {
        let m = parse_metrics(
            "# HELP x\nx_total{a=\"1\"} 2\nx_total{a=\"2\"} 3\nx_total_more 7\nx_total 1\n",
        );
        assert_eq!(metric_sum(&m, "x_total"), 6.0);
    }

    #[test]
    fn a_later_setting_replaces_an_earlier_one() {
        let s = OperatorSettings::new("op", Path::new("/bin/true"), Path::new("/k"), "ns")
            .poll_interval("1s")
            .poll_interval("2s");
        assert_eq!(s.get("CLOUDKIT_AAP_STATUS_POLL_INTERVAL"), Some("2s"));
        assert_eq!(s.get("CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE"), Some("ns"));
    }
}
