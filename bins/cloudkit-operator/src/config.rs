//! Command line and environment: every setting is a flag with its `CLOUDKIT_*` variable as the
//! fallback. Validation turns them into typed configuration or one line naming the setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cloudkit_aap::AapConfig;
use cloudkit_api::ProviderKind;
use cloudkit_api::history::parse_history_limit;
use cloudkit_eda::EdaConfig;
use cloudkit_provider::Secret;

/// Kubernetes operator that provisions ComputeInstance virtual machines by running Ansible
/// automation through the AAP controller API or an Event-Driven Ansible webhook.
#[derive(Debug, Parser)]
#[command(name = "cloudkit-operator", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller (the default).
    Run,
    /// Print the ComputeInstance CustomResourceDefinition as YAML.
    Crd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig file; in-cluster configuration or $KUBECONFIG when absent.
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace to watch; all namespaces when absent.
    #[arg(long, env = "CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE", global = true)]
    pub namespace: Option<String>,

    /// Provider that starts new jobs: aap or eda. When absent, the one whose settings are present.
    #[arg(long, env = "CLOUDKIT_PROVISIONING_PROVIDER", global = true)]
    pub provider: Option<String>,

    /// AAP controller API base, e.g. https://host/api (AWX) or https://gateway/api/controller.
    #[arg(long, env = "CLOUDKIT_AAP_URL", global = true)]
    pub aap_url: Option<String>,
    /// AAP token.
    #[arg(
        long,
        env = "CLOUDKIT_AAP_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub aap_token: Option<String>,
    /// File holding the AAP token (instead of --aap-token).
    #[arg(long, env = "CLOUDKIT_AAP_TOKEN_FILE", global = true)]
    pub aap_token_file: Option<PathBuf>,
    /// Name of the job or workflow job template that provisions.
    #[arg(long, env = "CLOUDKIT_AAP_PROVISION_TEMPLATE", global = true)]
    pub aap_provision_template: Option<String>,
    /// Name of the job or workflow job template that deprovisions.
    #[arg(long, env = "CLOUDKIT_AAP_DEPROVISION_TEMPLATE", global = true)]
    pub aap_deprovision_template: Option<String>,
    /// Interval between polls of a running AAP job (e.g. 30s, 2m30s).
    #[arg(
        long,
        env = "CLOUDKIT_AAP_STATUS_POLL_INTERVAL",
        default_value = "30s",
        global = true
    )]
    pub aap_status_poll_interval: String,
    /// Skip TLS verification of the AAP controller (testing only).
    #[arg(
        long,
        env = "CLOUDKIT_AAP_INSECURE_SKIP_VERIFY",
        default_value = "false",
        global = true
    )]
    pub aap_insecure_skip_verify: String,
    /// PEM bundle of CAs trusted for the AAP controller.
    #[arg(long, env = "CLOUDKIT_AAP_CA_FILE", global = true)]
    pub aap_ca_file: Option<PathBuf>,
    /// How long one request to the AAP controller may take (e.g. 30s).
    #[arg(
        long,
        env = "CLOUDKIT_AAP_REQUEST_TIMEOUT",
        default_value = "30s",
        global = true
    )]
    pub aap_request_timeout: String,

    /// EDA webhook that provisions.
    #[arg(
        long,
        env = "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK",
        global = true
    )]
    pub provision_webhook: Option<String>,
    /// EDA webhook that deprovisions.
    #[arg(
        long,
        env = "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK",
        global = true
    )]
    pub deprovision_webhook: Option<String>,
    /// Bearer token sent to the EDA webhooks.
    #[arg(
        long,
        env = "CLOUDKIT_EDA_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub eda_token: Option<String>,
    /// Secret for the x-hub-signature-256 HMAC of EDA webhook requests.
    #[arg(
        long,
        env = "CLOUDKIT_EDA_HMAC_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub eda_hmac_secret: Option<String>,
    /// Minimum interval between two webhook calls for one CI and URL (0 = off).
    #[arg(
        long,
        env = "CLOUDKIT_MINIMUM_REQUEST_INTERVAL",
        default_value = "0",
        global = true
    )]
    pub minimum_request_interval: String,
    /// How long a deletion waits for an EDA provision that has not reported yet.
    #[arg(
        long,
        env = "CLOUDKIT_EDA_PROVISION_GRACE",
        default_value = "5m",
        global = true
    )]
    pub eda_provision_grace: String,

    /// Jobs kept in status.jobs (1 to 1000).
    #[arg(long, env = "CLOUDKIT_MAX_JOB_HISTORY", global = true)]
    pub max_job_history: Option<String>,
    /// Automatic retries of a failed provision for the same configuration.
    #[arg(
        long,
        env = "CLOUDKIT_PROVISION_RETRY_LIMIT",
        default_value = "3",
        global = true
    )]
    pub provision_retry_limit: String,
    /// CIs reconciled at once.
    #[arg(
        long,
        env = "CLOUDKIT_MAX_CONCURRENT_RECONCILES",
        default_value = "16",
        global = true
    )]
    pub max_concurrent_reconciles: String,

    /// Address of the /healthz, /readyz and /metrics endpoints.
    #[arg(
        long,
        env = "CLOUDKIT_HTTP_ADDRESS",
        default_value = "0.0.0.0:8080",
        global = true
    )]
    pub http_address: String,
    /// Run only while holding a coordination.k8s.io Lease (for several replicas).
    #[arg(long, env = "CLOUDKIT_LEADER_ELECT", global = true)]
    pub leader_elect: bool,
    /// Namespace of the leader election Lease.
    #[arg(long, env = "CLOUDKIT_LEADER_ELECTION_NAMESPACE", global = true)]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = "CLOUDKIT_LEADER_ELECTION_LEASE",
        default_value = "cloudkit-operator",
        global = true
    )]
    pub leader_election_lease: String,
    /// How long a Lease holder that stops renewing keeps it (whole seconds, at least 3s).
    #[arg(
        long,
        env = "CLOUDKIT_LEADER_ELECTION_LEASE_DURATION",
        default_value = "15s",
        global = true
    )]
    pub leader_election_lease_duration: String,
    /// Log format.
    #[arg(
        long,
        env = "CLOUDKIT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// A start-up configuration error: one line that names the setting.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

fn err(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.to_string(),
        message: message.into(),
    }
}

/// Validated settings of a controller run.
#[derive(Debug)]
pub struct RunConfig {
    pub active: ProviderKind,
    pub aap: Option<AapConfig>,
    pub eda: Option<EdaConfig>,
    pub history_limit: usize,
    pub retry_limit: u32,
    pub poll_interval: Duration,
    pub eda_grace: Duration,
    pub launch_window: Duration,
    pub concurrency: u16,
    pub http_address: SocketAddr,
    /// Lease duration and grace period (the holder renews `grace` before the end), in seconds.
    pub lease_duration_secs: u64,
    pub lease_grace_secs: u64,
}

impl RunArgs {
    /// Checks every setting; the first problem is the error.
    pub fn validate(&self) -> Result<RunConfig, ConfigError> {
        let aap_present = present(&self.aap_url)
            || present(&self.aap_provision_template)
            || present(&self.aap_deprovision_template);
        let eda_present = present(&self.provision_webhook) || present(&self.deprovision_webhook);
        let active = match self.provider.as_deref().map(str::trim) {
            Some("aap") => ProviderKind::Aap,
            Some("eda") => ProviderKind::Eda,
            Some("") | None => match (aap_present, eda_present) {
                (true, false) => ProviderKind::Aap,
                (false, true) => ProviderKind::Eda,
                (true, true) => {
                    return Err(err(
                        "CLOUDKIT_PROVISIONING_PROVIDER",
                        "both AAP (CLOUDKIT_AAP_*) and EDA (CLOUDKIT_COMPUTE_INSTANCE_*_WEBHOOK) settings are present; set it to aap or eda",
                    ));
                }
                (false, false) => {
                    return Err(err(
                        "CLOUDKIT_PROVISIONING_PROVIDER",
                        "no provider is configured: set CLOUDKIT_AAP_URL, CLOUDKIT_AAP_TOKEN (or CLOUDKIT_AAP_TOKEN_FILE), CLOUDKIT_AAP_PROVISION_TEMPLATE and CLOUDKIT_AAP_DEPROVISION_TEMPLATE for aap, or CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK and CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK for eda",
                    ));
                }
            },
            Some(other) => {
                return Err(err(
                    "CLOUDKIT_PROVISIONING_PROVIDER",
                    format!("{other:?} is not a provider; use aap or eda"),
                ));
            }
        };

        let poll_interval = parse_duration(
            "CLOUDKIT_AAP_STATUS_POLL_INTERVAL",
            &self.aap_status_poll_interval,
        )?;
        if poll_interval.is_zero() {
            return Err(err(
                "CLOUDKIT_AAP_STATUS_POLL_INTERVAL",
                "must be greater than 0",
            ));
        }
        let aap = if active == ProviderKind::Aap || aap_present {
            Some(self.aap_config(poll_interval)?)
        } else {
            None
        };
        let eda = if active == ProviderKind::Eda || eda_present {
            Some(self.eda_config()?)
        } else {
            None
        };

        let history_limit = parse_history_limit(self.max_job_history.as_deref()).map_err(|e| {
            err(
                "CLOUDKIT_MAX_JOB_HISTORY",
                format!(
                    "{:?} is invalid: expected a whole number from 1 to {}",
                    e.value,
                    cloudkit_api::history::MAX_HISTORY_LIMIT
                ),
            )
        })?;
        let retry_limit = self
            .provision_retry_limit
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| {
                err(
                    "CLOUDKIT_PROVISION_RETRY_LIMIT",
                    format!(
                        "{:?} is invalid: expected a whole number from 0 to 100",
                        self.provision_retry_limit
                    ),
                )
            })?;
        let concurrency = self
            .max_concurrent_reconciles
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| {
                err(
                    "CLOUDKIT_MAX_CONCURRENT_RECONCILES",
                    format!(
                        "{:?} is invalid: expected a whole number from 1 to 65535",
                        self.max_concurrent_reconciles
                    ),
                )
            })?;
        let eda_grace = parse_duration("CLOUDKIT_EDA_PROVISION_GRACE", &self.eda_provision_grace)?;
        let http_address = self.http_address.parse::<SocketAddr>().map_err(|e| {
            err(
                "CLOUDKIT_HTTP_ADDRESS",
                format!("{:?}: {e}", self.http_address),
            )
        })?;
        let lease = parse_duration(
            "CLOUDKIT_LEADER_ELECTION_LEASE_DURATION",
            &self.leader_election_lease_duration,
        )?;
        if lease.subsec_nanos() != 0 || lease < Duration::from_secs(3) {
            return Err(err(
                "CLOUDKIT_LEADER_ELECTION_LEASE_DURATION",
                format!(
                    "{:?} is invalid: expected whole seconds, at least 3s",
                    self.leader_election_lease_duration
                ),
            ));
        }
        let lease_duration_secs = lease.as_secs();
        let request_timeout = aap
            .as_ref()
            .map(AapConfig::request_timeout)
            .unwrap_or(cloudkit_aap::DEFAULT_REQUEST_TIMEOUT);
        Ok(RunConfig {
            active,
            aap,
            eda,
            history_limit,
            retry_limit,
            poll_interval,
            eda_grace,
            launch_window: request_timeout + Duration::from_secs(5),
            concurrency,
            http_address,
            lease_duration_secs,
            lease_grace_secs: (lease_duration_secs / 3).clamp(1, 5),
        })
    }

    fn aap_config(&self, poll_interval: Duration) -> Result<AapConfig, ConfigError> {
        let token = match (&self.aap_token, &self.aap_token_file) {
            (Some(t), _) if !t.is_empty() => Secret::new(t.clone()),
            (_, Some(path)) => cloudkit_aap::read_token_file(path).map_err(aap_err)?,
            _ => {
                return Err(err(
                    "CLOUDKIT_AAP_TOKEN",
                    "is required for provider aap (or set CLOUDKIT_AAP_TOKEN_FILE)",
                ));
            }
        };
        let url = self
            .aap_url
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| err("CLOUDKIT_AAP_URL", "is required for provider aap"))?;
        let mut config = AapConfig::new(
            url,
            token,
            self.aap_provision_template.clone().unwrap_or_default(),
            self.aap_deprovision_template.clone().unwrap_or_default(),
        )
        .map_err(aap_err)?
        .with_poll_interval(poll_interval)
        .map_err(aap_err)?
        .with_insecure_skip_verify(parse_bool(
            "CLOUDKIT_AAP_INSECURE_SKIP_VERIFY",
            &self.aap_insecure_skip_verify,
        )?);
        let timeout = parse_duration("CLOUDKIT_AAP_REQUEST_TIMEOUT", &self.aap_request_timeout)?;
        config = config
            .with_request_timeout(timeout)
            .map_err(|e| err("CLOUDKIT_AAP_REQUEST_TIMEOUT", e.message()))?;
        if let Some(path) = &self.aap_ca_file {
            let pem = cloudkit_aap::read_ca_file(path).map_err(aap_err)?;
            config = config.with_ca_bundle_pem(pem).map_err(aap_err)?;
        }
        Ok(config)
    }

    fn eda_config(&self) -> Result<EdaConfig, ConfigError> {
        let mut config = EdaConfig::new(
            self.provision_webhook.as_deref().unwrap_or_default(),
            self.deprovision_webhook.as_deref().unwrap_or_default(),
        )
        .map_err(eda_err)?;
        if let Some(t) = self.eda_token.as_deref().filter(|t| !t.is_empty()) {
            config = config.with_token(Secret::new(t));
        }
        if let Some(s) = self.eda_hmac_secret.as_deref().filter(|s| !s.is_empty()) {
            config = config.with_hmac_secret(Secret::new(s));
        }
        let interval = parse_duration(
            "CLOUDKIT_MINIMUM_REQUEST_INTERVAL",
            &self.minimum_request_interval,
        )?;
        config = config.with_minimum_request_interval(interval);
        config.validate().map_err(eda_err)?;
        Ok(config)
    }
}

fn present(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.trim().is_empty())
}

fn aap_err(e: cloudkit_aap::ConfigError) -> ConfigError {
    err(e.setting(), e.message())
}

fn eda_err(e: cloudkit_eda::EdaConfigError) -> ConfigError {
    // The EDA errors already start with the variable's name.
    let text = e.to_string();
    let setting: String = text
        .chars()
        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    if setting.starts_with("CLOUDKIT_") {
        let rest = text[setting.len()..].trim_start_matches([':', ' ']);
        err(&setting, rest)
    } else {
        err("EDA configuration", text)
    }
}

fn parse_bool(setting: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(err(
            setting,
            format!("{value:?} is invalid: expected true or false"),
        )),
    }
}

/// Parses a Go-style duration (`30s`, `2m30s`, `1.5h`, `500ms`, `0`).
pub fn parse_duration(setting: &str, value: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        err(
            setting,
            format!("{value:?} is not a duration; use a number with a unit, like 30s, 2m30s or 1h"),
        )
    };
    let s = value.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * seconds;
    }
    if !total.is_finite() || total > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(pairs: &[(&str, &str)]) -> RunArgs {
        let mut argv = vec!["cloudkit-operator".to_string()];
        for (k, v) in pairs {
            argv.push(format!("--{k}={v}"));
        }
        Cli::try_parse_from(argv).expect("parse").run
    }

    const AAP: &[(&str, &str)] = &[
        ("aap-url", "https://aap.example/api"),
        ("aap-token", "t0ken"),
        ("aap-provision-template", "create_vm"),
        ("aap-deprovision-template", "delete_vm"),
    ];
    const EDA: &[(&str, &str)] = &[
        ("provision-webhook", "http://eda:5000/provision"),
        ("deprovision-webhook", "http://eda:5000/deprovision"),
    ];

    fn with(
        base: &[(&'static str, &'static str)],
        extra: &[(&'static str, &'static str)],
    ) -> RunArgs {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        args(&v)
    }

    fn error(a: RunArgs) -> String {
        a.validate().expect_err("should fail").to_string()
    }

    #[test]
    fn durations_like_go() {
        let rows = [
            ("30s", 30_000),
            ("2m30s", 150_000),
            ("1h", 3_600_000),
            ("1.5h", 5_400_000),
            ("500ms", 500),
            ("0", 0),
            ("0s", 0),
        ];
        for (text, ms) in rows {
            assert_eq!(
                parse_duration("X", text).expect(text),
                Duration::from_millis(ms),
                "{text}"
            );
        }
        for bad in ["", "30", "s", "3x", "-5s", "1e3s", "2m30", "abc"] {
            let e = parse_duration("CLOUDKIT_X", bad)
                .expect_err(bad)
                .to_string();
            assert!(e.starts_with("CLOUDKIT_X: "), "{e}");
        }
    }

    #[test]
    fn aap_request_timeout_bounds_requests_and_the_launch_window() {
        let c = args(AAP).validate().expect("default");
        assert_eq!(
            c.aap.as_ref().map(AapConfig::request_timeout),
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.launch_window, Duration::from_secs(35));
        let c = with(AAP, &[("aap-request-timeout", "4s")])
            .validate()
            .expect("4s");
        assert_eq!(
            c.aap.as_ref().map(AapConfig::request_timeout),
            Some(Duration::from_secs(4))
        );
        assert_eq!(c.launch_window, Duration::from_secs(9));
    }

    #[test]
    fn lease_duration_and_grace() {
        let rows = [("15s", 15, 5), ("1m", 60, 5), ("6s", 6, 2), ("3s", 3, 1)];
        for (text, duration, grace) in rows {
            let c = with(AAP, &[("leader-election-lease-duration", text)])
                .validate()
                .expect(text);
            assert_eq!(
                (c.lease_duration_secs, c.lease_grace_secs),
                (duration, grace),
                "{text}"
            );
            assert!(c.lease_grace_secs < c.lease_duration_secs);
        }
        let c = args(AAP).validate().expect("default");
        assert_eq!((c.lease_duration_secs, c.lease_grace_secs), (15, 5));
    }

    #[test]
    fn provider_selection() {
        assert_eq!(args(AAP).validate().expect("aap").active, ProviderKind::Aap);
        assert_eq!(args(EDA).validate().expect("eda").active, ProviderKind::Eda);
        let both = with(AAP, EDA);
        assert!(error(both).contains("both AAP"));
        let mut explicit = AAP.to_vec();
        explicit.extend_from_slice(EDA);
        explicit.push(("provider", "aap"));
        let c = args(&explicit).validate().expect("explicit");
        assert_eq!(c.active, ProviderKind::Aap);
        assert!(c.eda.is_some(), "the other provider reads its own jobs");
        let e = error(args(&[]));
        assert!(
            e.starts_with("CLOUDKIT_PROVISIONING_PROVIDER: no provider"),
            "{e}"
        );
        for var in [
            "CLOUDKIT_AAP_URL",
            "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK",
        ] {
            assert!(e.contains(var), "{e}");
        }
        let e = error(with(AAP, &[("provider", "tower")]));
        assert!(
            e.starts_with("CLOUDKIT_PROVISIONING_PROVIDER: \"tower\""),
            "{e}"
        );
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let rows: Vec<(RunArgs, &str)> = vec![
            (args(&AAP[1..]), "CLOUDKIT_AAP_URL"),
            (with(&[("provider", "aap")], &[]), "CLOUDKIT_AAP_TOKEN"),
            (
                args(&[AAP[0], AAP[1], AAP[3]]),
                "CLOUDKIT_AAP_PROVISION_TEMPLATE",
            ),
            (
                with(AAP, &[("aap-status-poll-interval", "0s")]),
                "CLOUDKIT_AAP_STATUS_POLL_INTERVAL",
            ),
            (
                with(AAP, &[("aap-status-poll-interval", "soon")]),
                "CLOUDKIT_AAP_STATUS_POLL_INTERVAL",
            ),
            (
                with(AAP, &[("max-job-history", "0")]),
                "CLOUDKIT_MAX_JOB_HISTORY",
            ),
            (
                with(AAP, &[("provision-retry-limit", "-1")]),
                "CLOUDKIT_PROVISION_RETRY_LIMIT",
            ),
            (
                with(AAP, &[("max-concurrent-reconciles", "0")]),
                "CLOUDKIT_MAX_CONCURRENT_RECONCILES",
            ),
            (
                with(AAP, &[("aap-insecure-skip-verify", "maybe")]),
                "CLOUDKIT_AAP_INSECURE_SKIP_VERIFY",
            ),
            (
                with(AAP, &[("aap-request-timeout", "0s")]),
                "CLOUDKIT_AAP_REQUEST_TIMEOUT",
            ),
            (
                with(AAP, &[("aap-request-timeout", "forever")]),
                "CLOUDKIT_AAP_REQUEST_TIMEOUT",
            ),
            (
                with(AAP, &[("leader-election-lease-duration", "2s")]),
                "CLOUDKIT_LEADER_ELECTION_LEASE_DURATION",
            ),
            (
                with(AAP, &[("leader-election-lease-duration", "7.5s")]),
                "CLOUDKIT_LEADER_ELECTION_LEASE_DURATION",
            ),
            (
                with(AAP, &[("http-address", "nowhere")]),
                "CLOUDKIT_HTTP_ADDRESS",
            ),
            (
                with(AAP, &[("eda-provision-grace", "1y")]),
                "CLOUDKIT_EDA_PROVISION_GRACE",
            ),
            (
                args(&EDA[..1]),
                "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK",
            ),
            (
                with(EDA, &[("minimum-request-interval", "5")]),
                "CLOUDKIT_MINIMUM_REQUEST_INTERVAL",
            ),
        ];
        for (a, var) in rows {
            let e = error(a);
            assert!(e.starts_with(&format!("{var}: ")), "want {var}: got {e}");
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(!e.contains("t0ken"), "no secret: {e}");
        }
    }

    #[test]
    fn unreadable_token_file_names_the_variable_and_path() {
        let e = error(with(
            &[AAP[0], AAP[2], AAP[3]],
            &[("aap-token-file", "/nonexistent/token")],
        ));
        assert!(e.starts_with("CLOUDKIT_AAP_TOKEN_FILE: "), "{e}");
        assert!(e.contains("/nonexistent/token"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = args(AAP).validate().expect("defaults");
        assert_eq!(c.history_limit, 10);
        assert_eq!(c.retry_limit, 3);
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.eda_grace, Duration::from_secs(300));
        assert_eq!(c.concurrency, 16);
    }
}
