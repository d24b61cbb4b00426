//! Command line and environment: every setting is a flag with its `CLOUDKIT_*` variable as the
//! fallback. Each flag's value parser turns the text into a typed value or a [`ConfigError`]
//! naming the variable (whether the value came from it or from the flag); [`RunArgs::validate`]
//! then checks what depends on several settings and builds the providers' configurations.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::builder::OsStringValueParser;
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use cloudkit_aap::{self as aap, AapConfig};
use cloudkit_api::ProviderKind;
use cloudkit_api::history::{
    DEFAULT_HISTORY_LIMIT, ENV_MAX_JOB_HISTORY, MAX_HISTORY_LIMIT, parse_history_limit,
};
use cloudkit_api::shard::{ShardSelector, valid_shard_name};
use cloudkit_eda::{self as eda, EdaConfig};
use cloudkit_feedback::{Settings as FeedbackSettings, SettingsError};
use cloudkit_provider::Secret;
use cloudkit_provider::settings::{ConfigError, parse_go_duration};
use cloudkit_reconciler::tenant::TenantNetwork;

use crate::leader::LeaseSettings;

// The variables of the settings only the binary reads; the providers' variables are their
// crates' constants.
/// Namespace to watch.
pub const ENV_NAMESPACE: &str = "CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE";
/// The watched namespace when the setting is absent (the Go operator's default).
pub const DEFAULT_NAMESPACE: &str = "cloudkit-computeinstance";
/// The value of the namespace setting that watches every namespace.
pub const ALL_NAMESPACES: &str = "*";
/// Provider that starts new jobs.
pub const ENV_PROVISIONING_PROVIDER: &str = "CLOUDKIT_PROVISIONING_PROVIDER";
/// How long a deletion waits for an EDA provision that has not reported.
pub const ENV_EDA_PROVISION_GRACE: &str = "CLOUDKIT_EDA_PROVISION_GRACE";
/// How long a restart waits for a new VirtualMachineInstance.
pub const ENV_RESTART_TIMEOUT: &str = "CLOUDKIT_RESTART_TIMEOUT";
/// Automatic retries of a failed provision.
pub const ENV_PROVISION_RETRY_LIMIT: &str = "CLOUDKIT_PROVISION_RETRY_LIMIT";
/// CIs reconciled at once.
pub const ENV_MAX_CONCURRENT_RECONCILES: &str = "CLOUDKIT_MAX_CONCURRENT_RECONCILES";
/// Address of all three HTTP endpoints in plain HTTP (development and tests).
pub const ENV_HTTP_ADDRESS: &str = "CLOUDKIT_HTTP_ADDRESS";
/// Address of `/healthz` and `/readyz` (the Go `--health-probe-bind-address`).
pub const ENV_HEALTH_PROBE_BIND_ADDRESS: &str = "CLOUDKIT_HEALTH_PROBE_BIND_ADDRESS";
/// The probes' address when no setting says otherwise (the Go default).
pub const DEFAULT_HEALTH_PROBE_BIND_ADDRESS: &str = ":8081";
/// Address of `/metrics` (the Go `--metrics-bind-address`); `0` turns it off.
pub const ENV_METRICS_BIND_ADDRESS: &str = "CLOUDKIT_METRICS_BIND_ADDRESS";
/// `/metrics` over HTTPS for authenticated and authorized callers only.
pub const ENV_METRICS_SECURE: &str = "CLOUDKIT_METRICS_SECURE";
/// Directory of the metrics server's certificate and key.
pub const ENV_METRICS_CERT_PATH: &str = "CLOUDKIT_METRICS_CERT_PATH";
/// File name of the metrics server's certificate in that directory.
pub const ENV_METRICS_CERT_NAME: &str = "CLOUDKIT_METRICS_CERT_NAME";
/// File name of the metrics server's key in that directory.
pub const ENV_METRICS_CERT_KEY: &str = "CLOUDKIT_METRICS_CERT_KEY";
/// Run only while holding the Lease.
pub const ENV_LEADER_ELECT: &str = "CLOUDKIT_LEADER_ELECT";
/// Namespace of the Lease.
pub const ENV_LEADER_ELECTION_NAMESPACE: &str = "CLOUDKIT_LEADER_ELECTION_NAMESPACE";
/// Name of the Lease.
pub const ENV_LEADER_ELECTION_LEASE: &str = "CLOUDKIT_LEADER_ELECTION_LEASE";
/// The Lease of the Go operator (its controller-runtime leader election id): a Go and a Rust
/// replica of one installation compete for the same Lease.
pub const DEFAULT_LEADER_ELECTION_LEASE: &str = "95f7e044.openshift.io";
/// The pod's namespace file, which tells an in-cluster operator its own namespace.
pub const SERVICE_ACCOUNT_NAMESPACE_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// The pod's namespace, when the downward API sets it.
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";
/// Duration of the Lease.
pub const ENV_LEADER_ELECTION_LEASE_DURATION: &str = "CLOUDKIT_LEADER_ELECTION_LEASE_DURATION";
/// Log format.
pub const ENV_LOG_FORMAT: &str = "CLOUDKIT_LOG_FORMAT";
/// `host:port` of the fulfillment service; feedback runs when it is set.
pub const ENV_FULFILLMENT_SERVER_ADDRESS: &str = "CLOUDKIT_FULFILLMENT_SERVER_ADDRESS";
/// File holding the fulfillment service's bearer token.
pub const ENV_FULFILLMENT_TOKEN_FILE: &str = "CLOUDKIT_FULFILLMENT_TOKEN_FILE";
/// TLS to the fulfillment service without verifying its certificate.
pub const ENV_GRPC_INSECURE: &str = "CLOUDKIT_GRPC_INSECURE";
/// HTTP/2 without TLS to the fulfillment service.
pub const ENV_GRPC_PLAINTEXT: &str = "CLOUDKIT_GRPC_PLAINTEXT";
/// Label selector of the CIs of this shard.
pub const ENV_SHARD_SELECTOR: &str = "CLOUDKIT_SHARD_SELECTOR";
/// Name of this shard.
pub const ENV_SHARD_NAME: &str = "CLOUDKIT_SHARD_NAME";

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
    /// Print the ComputeInstance and Tenant CustomResourceDefinitions as YAML.
    Crd,
}

/// Where ComputeInstances and Tenants are watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchScope {
    /// One namespace.
    Namespace(String),
    /// Every namespace (`*`).
    All,
}

impl std::fmt::Display for WatchScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchScope::Namespace(ns) => f.write_str(ns),
            WatchScope::All => f.write_str("(all namespaces)"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A listening address as the Go operator's flags take it: `0` turns the server off, `:8081`
/// listens on every interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bind {
    Off,
    At(SocketAddr),
}

impl Bind {
    pub fn address(self) -> Option<SocketAddr> {
        match self {
            Bind::Off => None,
            Bind::At(a) => Some(a),
        }
    }
}

/// The value of `--provider`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderChoice {
    /// Empty: the provider whose settings are present.
    BySettings,
    /// `aap` or `eda`.
    Named(ProviderKind),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Kubeconfig file; in-cluster configuration or $KUBECONFIG when absent.
    #[arg(long, env = "KUBECONFIG", global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// Namespace whose ComputeInstances and Tenants are watched; `*` watches all namespaces.
    #[arg(
        long,
        env = ENV_NAMESPACE,
        value_parser = setting(ENV_NAMESPACE, watch_scope),
        default_value = DEFAULT_NAMESPACE,
        global = true
    )]
    pub namespace: WatchScope,

    /// Network of tenant namespaces: udn (an OVN-Kubernetes primary UserDefinedNetwork) or none.
    #[arg(
        long,
        env = TenantNetwork::ENV,
        value_parser = setting(TenantNetwork::ENV, tenant_network),
        default_value = "udn",
        global = true
    )]
    pub tenant_network: TenantNetwork,

    /// Provider that starts new jobs: aap or eda. When absent, the one whose settings are present.
    #[arg(
        long,
        env = ENV_PROVISIONING_PROVIDER,
        value_parser = setting(ENV_PROVISIONING_PROVIDER, provider),
        global = true
    )]
    pub provider: Option<ProviderChoice>,

    /// AAP controller API base, e.g. https://host/api (AWX) or https://gateway/api/controller.
    #[arg(long, env = aap::ENV_URL, global = true)]
    pub aap_url: Option<String>,
    /// AAP token.
    #[arg(long, env = aap::ENV_TOKEN, hide_env_values = true, global = true)]
    pub aap_token: Option<String>,
    /// File holding the AAP token (instead of --aap-token).
    #[arg(long, env = aap::ENV_TOKEN_FILE, global = true)]
    pub aap_token_file: Option<PathBuf>,
    /// Name of the job or workflow job template that provisions.
    #[arg(long, env = aap::ENV_PROVISION_TEMPLATE, global = true)]
    pub aap_provision_template: Option<String>,
    /// Name of the job or workflow job template that deprovisions.
    #[arg(long, env = aap::ENV_DEPROVISION_TEMPLATE, global = true)]
    pub aap_deprovision_template: Option<String>,
    /// Interval between polls of a running AAP job (e.g. 30s, 2m30s).
    #[arg(
        long,
        env = aap::ENV_STATUS_POLL_INTERVAL,
        value_parser = setting(aap::ENV_STATUS_POLL_INTERVAL, positive_duration),
        default_value = "30s",
        global = true
    )]
    pub aap_status_poll_interval: Duration,
    /// Skip TLS verification of the AAP controller (testing only).
    #[arg(
        long,
        env = aap::ENV_INSECURE_SKIP_VERIFY,
        action = ArgAction::Set,
        value_parser = setting(aap::ENV_INSECURE_SKIP_VERIFY, boolean),
        default_value = "false",
        global = true
    )]
    pub aap_insecure_skip_verify: bool,
    /// PEM bundle of CAs trusted for the AAP controller.
    #[arg(long, env = aap::ENV_CA_FILE, global = true)]
    pub aap_ca_file: Option<PathBuf>,
    /// How long one request to the AAP controller may take (e.g. 30s).
    #[arg(
        long,
        env = aap::ENV_REQUEST_TIMEOUT,
        value_parser = setting(aap::ENV_REQUEST_TIMEOUT, duration),
        default_value = "30s",
        global = true
    )]
    pub aap_request_timeout: Duration,

    /// EDA webhook that provisions.
    #[arg(long, env = eda::ENV_PROVISION_WEBHOOK, global = true)]
    pub provision_webhook: Option<String>,
    /// EDA webhook that deprovisions.
    #[arg(long, env = eda::ENV_DEPROVISION_WEBHOOK, global = true)]
    pub deprovision_webhook: Option<String>,
    /// Bearer token sent to the EDA webhooks.
    #[arg(long, env = eda::ENV_TOKEN, hide_env_values = true, global = true)]
    pub eda_token: Option<String>,
    /// Secret for the x-hub-signature-256 HMAC of EDA webhook requests.
    #[arg(long, env = eda::ENV_HMAC_SECRET, hide_env_values = true, global = true)]
    pub eda_hmac_secret: Option<String>,
    /// Minimum interval between two webhook calls for one CI and URL (0 = off).
    #[arg(
        long,
        env = eda::ENV_MINIMUM_REQUEST_INTERVAL,
        value_parser = setting(eda::ENV_MINIMUM_REQUEST_INTERVAL, duration),
        default_value = "0",
        global = true
    )]
    pub minimum_request_interval: Duration,
    /// How long a deletion waits for an EDA provision that has not reported yet.
    #[arg(
        long,
        env = ENV_EDA_PROVISION_GRACE,
        value_parser = setting(ENV_EDA_PROVISION_GRACE, duration),
        default_value = "5m",
        global = true
    )]
    pub eda_provision_grace: Duration,

    /// How long a VM restart waits for KubeVirt to create a new VirtualMachineInstance before it
    /// is reported as RestartFailed (RestartTimedOut).
    #[arg(
        long,
        env = ENV_RESTART_TIMEOUT,
        value_parser = setting(ENV_RESTART_TIMEOUT, duration),
        default_value = "10m",
        global = true
    )]
    pub restart_timeout: Duration,

    /// Jobs kept in status.jobs (1 to 1000).
    #[arg(
        long,
        env = ENV_MAX_JOB_HISTORY,
        value_parser = setting(ENV_MAX_JOB_HISTORY, history_limit),
        global = true
    )]
    pub max_job_history: Option<usize>,
    /// Automatic retries of a failed provision for the same configuration.
    #[arg(
        long,
        env = ENV_PROVISION_RETRY_LIMIT,
        value_parser = setting(ENV_PROVISION_RETRY_LIMIT, retry_limit),
        default_value = "3",
        global = true
    )]
    pub provision_retry_limit: u32,
    /// CIs reconciled at once.
    #[arg(
        long,
        env = ENV_MAX_CONCURRENT_RECONCILES,
        value_parser = setting(ENV_MAX_CONCURRENT_RECONCILES, concurrency),
        default_value = "16",
        global = true
    )]
    pub max_concurrent_reconciles: u16,

    /// Address of /healthz, /readyz and /metrics together, in plain HTTP (development and
    /// tests); when set, the probes are served there only, unless
    /// --health-probe-bind-address is set too.
    #[arg(
        long,
        env = ENV_HTTP_ADDRESS,
        value_parser = setting(ENV_HTTP_ADDRESS, socket_address),
        global = true
    )]
    pub http_address: Option<SocketAddr>,
    /// Address of /healthz and /readyz (`:8081` = every interface, port 8081; `0` = off).
    /// Default `:8081`.
    #[arg(
        long,
        env = ENV_HEALTH_PROBE_BIND_ADDRESS,
        value_parser = setting(ENV_HEALTH_PROBE_BIND_ADDRESS, bind_address),
        global = true
    )]
    pub health_probe_bind_address: Option<Bind>,
    /// Address of /metrics (`:8443`, `127.0.0.1:8080`; `0` = off, the default).
    #[arg(
        long,
        env = ENV_METRICS_BIND_ADDRESS,
        value_parser = setting(ENV_METRICS_BIND_ADDRESS, bind_address),
        default_value = "0",
        global = true
    )]
    pub metrics_bind_address: Bind,
    /// Serve /metrics over HTTPS, only to callers whose bearer token passes a TokenReview and a
    /// SubjectAccessReview for `get` on /metrics; `false` = plain HTTP to anyone.
    #[arg(
        long,
        env = ENV_METRICS_SECURE,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = setting(ENV_METRICS_SECURE, boolean),
        default_value = "true",
        global = true
    )]
    pub metrics_secure: bool,
    /// Directory holding the metrics server's certificate and key; a self-signed certificate
    /// is made at start-up when absent.
    #[arg(long, env = ENV_METRICS_CERT_PATH, global = true)]
    pub metrics_cert_path: Option<PathBuf>,
    /// File name of the metrics server's certificate (PEM) in --metrics-cert-path.
    #[arg(long, env = ENV_METRICS_CERT_NAME, default_value = "tls.crt", global = true)]
    pub metrics_cert_name: String,
    /// File name of the metrics server's private key (PEM) in --metrics-cert-path.
    #[arg(long, env = ENV_METRICS_CERT_KEY, default_value = "tls.key", global = true)]
    pub metrics_cert_key: String,
    /// Run only while holding a coordination.k8s.io Lease (for several replicas).
    #[arg(
        long,
        env = ENV_LEADER_ELECT,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = setting(ENV_LEADER_ELECT, boolean),
        default_value = "false",
        global = true
    )]
    pub leader_elect: bool,
    /// Namespace of the leader election Lease; the operator's own namespace (the service
    /// account's namespace file, else $POD_NAMESPACE, else the kubeconfig's) when absent.
    #[arg(long, env = ENV_LEADER_ELECTION_NAMESPACE, global = true)]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader election Lease.
    #[arg(
        long,
        env = ENV_LEADER_ELECTION_LEASE,
        default_value = DEFAULT_LEADER_ELECTION_LEASE,
        global = true
    )]
    pub leader_election_lease: String,
    /// How long a Lease holder that stops renewing keeps it (whole seconds, at least 3s).
    #[arg(
        long,
        env = ENV_LEADER_ELECTION_LEASE_DURATION,
        value_parser = setting(ENV_LEADER_ELECTION_LEASE_DURATION, lease_duration),
        default_value = "15s",
        global = true
    )]
    pub leader_election_lease_duration: u64,
    /// host:port of the fulfillment service's gRPC API; when set, CI state is reported to it.
    #[arg(long, env = ENV_FULFILLMENT_SERVER_ADDRESS, global = true)]
    pub fulfillment_server_address: Option<String>,
    /// File holding the bearer token for the fulfillment service (read again for every call).
    #[arg(long, env = ENV_FULFILLMENT_TOKEN_FILE, global = true)]
    pub fulfillment_server_token_file: Option<PathBuf>,
    /// TLS to the fulfillment service without verifying its certificate (testing only).
    #[arg(
        long,
        env = ENV_GRPC_INSECURE,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = setting(ENV_GRPC_INSECURE, boolean),
        default_value = "false",
        global = true
    )]
    pub grpc_insecure: bool,
    /// HTTP/2 without TLS to the fulfillment service; refused together with a token file.
    #[arg(
        long,
        env = ENV_GRPC_PLAINTEXT,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = setting(ENV_GRPC_PLAINTEXT, boolean),
        default_value = "false",
        global = true
    )]
    pub grpc_plaintext: bool,
    /// Log format.
    #[arg(
        long,
        env = ENV_LOG_FORMAT,
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,

    // Sharding: several operators split the scope's CIs by label.
    /// Label selector of the CIs this operator reconciles (e.g. cloudkit.openshift.io/shard=a),
    /// when several operators split the scope into shards; every CI when absent.
    #[arg(long, env = ENV_SHARD_SELECTOR, global = true)]
    pub shard_label_selector: Option<String>,
    /// Name of this shard, the suffix of its Lease; by default the value of a key=value selector.
    #[arg(long, env = ENV_SHARD_NAME, global = true)]
    pub shard_name: Option<String>,
}

/// The setting a command line error is about, when a value parser refused a value: the caller
/// prints it as the one line that names the variable.
pub fn setting_error(error: &clap::Error) -> Option<&ConfigError> {
    std::error::Error::source(error)?.downcast_ref::<ConfigError>()
}

/// Whether `argv` asks for the `crd` command, whatever the settings hold: printing the CRD reads
/// no setting, so a value that is wrong must not stop it.
pub fn asks_for_crd<I, T>(argv: I) -> bool
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    Cli::command()
        .mut_args(|arg| {
            if arg.get_action().takes_values() {
                arg.value_parser(OsStringValueParser::new())
            } else {
                arg
            }
        })
        .try_get_matches_from(argv)
        .is_ok_and(|m| m.subcommand_name() == Some("crd"))
}

/// A clap value parser for the setting whose variable is `env`: `parse` says what is wrong with
/// a value without naming the setting, and the error names it.
fn setting<T>(
    env: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> impl Fn(&str) -> Result<T, ConfigError> + Clone + Send + Sync + 'static
where
    T: Clone + Send + Sync + 'static,
{
    move |value| parse(value).map_err(|message| ConfigError::new(env, message))
}

fn duration(value: &str) -> Result<Duration, String> {
    parse_go_duration(value).map_err(|e| e.to_string())
}

fn positive_duration(value: &str) -> Result<Duration, String> {
    match duration(value)? {
        d if d.is_zero() => Err("must be greater than 0".to_string()),
        d => Ok(d),
    }
}

/// Whole seconds, at least 3: a Lease records its duration in seconds, and the holder renews it
/// a grace period (a third of it, at least 1 s) before the end.
fn lease_duration(value: &str) -> Result<u64, String> {
    let lease = duration(value)?;
    if lease.subsec_nanos() != 0 || lease < Duration::from_secs(3) {
        return Err(format!(
            "{value:?} is invalid: expected whole seconds, at least 3s"
        ));
    }
    Ok(lease.as_secs())
}

/// A namespace name, or `*` for all namespaces; empty is the default, as the Go operator read it.
fn watch_scope(value: &str) -> Result<WatchScope, String> {
    match value.trim() {
        "" => Ok(WatchScope::Namespace(DEFAULT_NAMESPACE.to_string())),
        ALL_NAMESPACES => Ok(WatchScope::All),
        ns if is_dns_label(ns) => Ok(WatchScope::Namespace(ns.to_string())),
        ns => Err(format!(
            "{ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63) nor {ALL_NAMESPACES:?} for all namespaces"
        )),
    }
}

fn is_dns_label(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn tenant_network(value: &str) -> Result<TenantNetwork, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is invalid: expected udn or none"))
}

fn provider(value: &str) -> Result<ProviderChoice, String> {
    match value.trim() {
        "" => Ok(ProviderChoice::BySettings),
        "aap" => Ok(ProviderChoice::Named(ProviderKind::Aap)),
        "eda" => Ok(ProviderChoice::Named(ProviderKind::Eda)),
        other => Err(format!("{other:?} is not a provider; use aap or eda")),
    }
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" | "" => Ok(false),
        _ => Err(format!("{value:?} is invalid: expected true or false")),
    }
}

fn history_limit(value: &str) -> Result<usize, String> {
    parse_history_limit(Some(value)).map_err(|e| {
        format!(
            "{:?} is invalid: expected a whole number from 1 to {MAX_HISTORY_LIMIT}",
            e.value
        )
    })
}

fn retry_limit(value: &str) -> Result<u32, String> {
    value
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| format!("{value:?} is invalid: expected a whole number from 0 to 100"))
}

fn concurrency(value: &str) -> Result<u16, String> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{value:?} is invalid: expected a whole number from 1 to 65535"))
}

fn socket_address(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|e| format!("{value:?}: {e}"))
}

/// `0` (off), `:port` (every interface), `localhost:port`, or an IP address and port.
fn bind_address(value: &str) -> Result<Bind, String> {
    let text = value.trim();
    if text == "0" {
        return Ok(Bind::Off);
    }
    let expected = || format!("{value:?} is invalid: expected :PORT, HOST:PORT or 0 (off)");
    let (host, port) = text.rsplit_once(':').ok_or_else(expected)?;
    let port: u16 = port.parse().map_err(|_| expected())?;
    let ip: std::net::IpAddr = match host.trim_start_matches('[').trim_end_matches(']') {
        "" => std::net::Ipv4Addr::UNSPECIFIED.into(),
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        other => other.parse().map_err(|_| expected())?,
    };
    Ok(Bind::At(SocketAddr::new(ip, port)))
}

/// How `/metrics` is served on its own address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricsServing {
    pub address: SocketAddr,
    /// HTTPS with authentication and authorization; plain HTTP to anyone otherwise.
    pub secure: bool,
    /// The certificate and key files; a self-signed certificate when absent.
    pub cert: Option<(PathBuf, PathBuf)>,
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
    pub restart_timeout: Duration,
    pub launch_window: Duration,
    pub concurrency: u16,
    /// /healthz, /readyz and /metrics together in plain HTTP, when set.
    pub http_address: Option<SocketAddr>,
    /// /healthz and /readyz, when served on their own address.
    pub probe_address: Option<SocketAddr>,
    /// /metrics on its own address, when served.
    pub metrics: Option<MetricsServing>,
    /// The Lease to hold while running, with `--leader-elect`.
    pub leader_election: Option<LeaseSettings>,
    /// Where ComputeInstances and Tenants are watched.
    pub scope: WatchScope,
    /// Whether tenant namespaces get a UserDefinedNetwork.
    pub tenant_network: TenantNetwork,
    /// How to reach the fulfillment service, when feedback is enabled.
    pub feedback: Option<FeedbackSettings>,
    /// This operator's shard, when it is one of several.
    pub shard: Option<Shard>,
}

/// One shard of the CIs: its selector, its name and its Lease (`<lease name>-<name>`, in the
/// leader election's namespace).
#[derive(Clone, Debug)]
pub struct Shard {
    pub selector: ShardSelector,
    pub name: String,
    /// Namespace of the shards' Leases; the client's default namespace when absent.
    pub lease_namespace: Option<String>,
    /// The Lease name the shard's name is appended to.
    pub lease_base: String,
}

impl RunArgs {
    /// The shard settings: a selector that parses, and a name (given, or the value of a
    /// single `key=value`) that can end a Lease name.
    fn shard(&self) -> Result<Option<Shard>, ConfigError> {
        let Some(text) = self
            .shard_label_selector
            .as_deref()
            .filter(|t| !t.trim().is_empty())
        else {
            if self
                .shard_name
                .as_deref()
                .is_some_and(|n| !n.trim().is_empty())
            {
                return Err(ConfigError::new(
                    ENV_SHARD_NAME,
                    format!(
                        "names a shard, but {ENV_SHARD_SELECTOR} (--shard-label-selector) does not select one"
                    ),
                ));
            }
            return Ok(None);
        };
        let selector = ShardSelector::parse(text)
            .map_err(|e| ConfigError::new(ENV_SHARD_SELECTOR, format!("{text:?}: {e}")))?;
        let name = match self.shard_name.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
            Some(name) => name.to_string(),
            None => selector.default_name().ok_or_else(|| {
                ConfigError::new(
                    ENV_SHARD_NAME,
                    format!("is required: the shard selector {text:?} is not one key=value whose value could name the shard"),
                )
            })?,
        };
        valid_shard_name(&name).map_err(|e| ConfigError::new(ENV_SHARD_NAME, e))?;
        Ok(Some(Shard {
            selector,
            name,
            lease_namespace: self.lease_namespace(),
            lease_base: self.leader_election_lease.clone(),
        }))
    }

    /// The namespace of the Lease: the one set, or the operator's own.
    fn lease_namespace(&self) -> Option<String> {
        self.leader_election_namespace
            .clone()
            .filter(|ns| !ns.trim().is_empty())
            .or_else(|| {
                own_namespace(
                    Path::new(SERVICE_ACCOUNT_NAMESPACE_FILE),
                    std::env::var(ENV_POD_NAMESPACE).ok(),
                )
            })
    }
}

impl RunArgs {
    /// Checks what depends on several settings and builds the providers' configurations; the
    /// first problem is the error.
    pub fn validate(&self) -> Result<RunConfig, ConfigError> {
        let aap_present = present(&self.aap_url)
            || present(&self.aap_provision_template)
            || present(&self.aap_deprovision_template);
        let eda_present = present(&self.provision_webhook) || present(&self.deprovision_webhook);
        let active = match self.provider.unwrap_or(ProviderChoice::BySettings) {
            ProviderChoice::Named(kind) => kind,
            ProviderChoice::BySettings => match (aap_present, eda_present) {
                (true, false) => ProviderKind::Aap,
                (false, true) => ProviderKind::Eda,
                (true, true) => {
                    return Err(ConfigError::new(
                        ENV_PROVISIONING_PROVIDER,
                        "both AAP (CLOUDKIT_AAP_*) and EDA (CLOUDKIT_COMPUTE_INSTANCE_*_WEBHOOK) settings are present; set it to aap or eda",
                    ));
                }
                (false, false) => {
                    return Err(ConfigError::new(
                        ENV_PROVISIONING_PROVIDER,
                        format!(
                            "no provider is configured: set {}, {} (or {}), {} and {} for aap, or {} and {} for eda",
                            aap::ENV_URL,
                            aap::ENV_TOKEN,
                            aap::ENV_TOKEN_FILE,
                            aap::ENV_PROVISION_TEMPLATE,
                            aap::ENV_DEPROVISION_TEMPLATE,
                            eda::ENV_PROVISION_WEBHOOK,
                            eda::ENV_DEPROVISION_WEBHOOK,
                        ),
                    ));
                }
            },
        };
        let aap = if active == ProviderKind::Aap || aap_present {
            Some(self.aap_config()?)
        } else {
            None
        };
        let eda = if active == ProviderKind::Eda || eda_present {
            Some(self.eda_config()?)
        } else {
            None
        };
        let request_timeout = aap
            .as_ref()
            .map(AapConfig::request_timeout)
            .unwrap_or(aap::DEFAULT_REQUEST_TIMEOUT);
        let shard = self.shard()?;
        let leader_election = self.leader_elect.then(|| LeaseSettings {
            namespace: self.lease_namespace(),
            name: match &shard {
                Some(shard) => format!("{}-{}", self.leader_election_lease, shard.name),
                None => self.leader_election_lease.clone(),
            },
            duration_secs: self.leader_election_lease_duration,
            grace_secs: (self.leader_election_lease_duration / 3).clamp(1, 5),
        });
        Ok(RunConfig {
            active,
            aap,
            eda,
            history_limit: self.max_job_history.unwrap_or(DEFAULT_HISTORY_LIMIT),
            retry_limit: self.provision_retry_limit,
            poll_interval: self.aap_status_poll_interval,
            eda_grace: self.eda_provision_grace,
            restart_timeout: self.restart_timeout,
            launch_window: request_timeout + Duration::from_secs(5),
            concurrency: self.max_concurrent_reconciles,
            http_address: self.http_address,
            probe_address: match self.health_probe_bind_address {
                Some(bind) => bind.address(),
                // The development address serves the probes unless they are asked for apart.
                None if self.http_address.is_some() => None,
                None => bind_address(DEFAULT_HEALTH_PROBE_BIND_ADDRESS)
                    .ok()
                    .and_then(Bind::address),
            },
            metrics: self.metrics_serving()?,
            leader_election,
            scope: self.namespace.clone(),
            tenant_network: self.tenant_network,
            feedback: self.feedback_settings()?,
            shard,
        })
    }

    /// `/metrics` on its own address (SPEC 12); the certificate files must be readable.
    fn metrics_serving(&self) -> Result<Option<MetricsServing>, ConfigError> {
        let Some(address) = self.metrics_bind_address.address() else {
            return Ok(None);
        };
        let cert = match &self.metrics_cert_path {
            Some(dir) if !dir.as_os_str().is_empty() => {
                let files = (
                    dir.join(&self.metrics_cert_name),
                    dir.join(&self.metrics_cert_key),
                );
                for file in [&files.0, &files.1] {
                    std::fs::metadata(file).map_err(|e| {
                        ConfigError::new(
                            ENV_METRICS_CERT_PATH,
                            format!("cannot read {}: {e}", file.display()),
                        )
                    })?;
                }
                Some(files)
            }
            _ => None,
        };
        Ok(Some(MetricsServing {
            address,
            secure: self.metrics_secure,
            cert,
        }))
    }

    /// The fulfillment service's settings, when its address is set (SPEC 13).
    fn feedback_settings(&self) -> Result<Option<FeedbackSettings>, ConfigError> {
        let Some(address) = self
            .fulfillment_server_address
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
        else {
            return Ok(None);
        };
        let mut settings = FeedbackSettings::new(address);
        settings.token_file = self
            .fulfillment_server_token_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty());
        settings.insecure = self.grpc_insecure;
        settings.plaintext = self.grpc_plaintext;
        match settings.validate() {
            Ok(_) => Ok(Some(settings)),
            Err(SettingsError::PlaintextWithToken) => Err(ConfigError::new(
                ENV_GRPC_PLAINTEXT,
                format!(
                    "cannot be used together with {ENV_FULFILLMENT_TOKEN_FILE} (--grpc-plaintext with --fulfillment-server-token-file): the token would be sent in clear"
                ),
            )),
            Err(SettingsError::Address { address, reason }) => Err(ConfigError::new(
                ENV_FULFILLMENT_SERVER_ADDRESS,
                format!("{address:?} is not host:port: {reason}"),
            )),
        }
    }

    fn aap_config(&self) -> Result<AapConfig, ConfigError> {
        let token = match (&self.aap_token, &self.aap_token_file) {
            (Some(t), _) if !t.is_empty() => Secret::new(t.clone()),
            (_, Some(path)) => aap::read_token_file(path)?,
            _ => {
                return Err(ConfigError::new(
                    aap::ENV_TOKEN,
                    format!(
                        "is required for provider aap (or set {})",
                        aap::ENV_TOKEN_FILE
                    ),
                ));
            }
        };
        let url = self
            .aap_url
            .as_deref()
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| ConfigError::new(aap::ENV_URL, "is required for provider aap"))?;
        let mut config = AapConfig::new(
            url,
            token,
            self.aap_provision_template.clone().unwrap_or_default(),
            self.aap_deprovision_template.clone().unwrap_or_default(),
        )?
        .with_poll_interval(self.aap_status_poll_interval)?
        .with_insecure_skip_verify(self.aap_insecure_skip_verify)
        .with_request_timeout(self.aap_request_timeout)?;
        if let Some(path) = &self.aap_ca_file {
            config = config.with_ca_bundle_pem(aap::read_ca_file(path)?)?;
        }
        Ok(config)
    }

    fn eda_config(&self) -> Result<EdaConfig, ConfigError> {
        let mut config = EdaConfig::new(
            self.provision_webhook.as_deref().unwrap_or_default(),
            self.deprovision_webhook.as_deref().unwrap_or_default(),
        )?;
        if let Some(t) = self.eda_token.as_deref().filter(|t| !t.is_empty()) {
            config = config.with_token(Secret::new(t));
        }
        if let Some(s) = self.eda_hmac_secret.as_deref().filter(|s| !s.is_empty()) {
            config = config.with_hmac_secret(Secret::new(s));
        }
        config = config.with_minimum_request_interval(self.minimum_request_interval);
        config.validate()?;
        Ok(config)
    }
}

/// The operator's own namespace: the service account's namespace file in a pod, else
/// `pod_namespace` (`POD_NAMESPACE`); `None` out of a cluster (the kubeconfig's namespace).
fn own_namespace(file: &Path, pod_namespace: Option<String>) -> Option<String> {
    let clean = |ns: String| Some(ns.trim().to_string()).filter(|ns| !ns.is_empty());
    std::fs::read_to_string(file)
        .ok()
        .and_then(clean)
        .or_else(|| pod_namespace.and_then(clean))
}

fn present(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `--name=value` flags (a bare `--name` for an empty value) and validates them.
    fn run_config(pairs: &[(&str, &str)]) -> Result<RunConfig, ConfigError> {
        let mut argv = vec!["cloudkit-operator".to_string()];
        for (k, v) in pairs {
            argv.push(if v.is_empty() {
                format!("--{k}")
            } else {
                format!("--{k}={v}")
            });
        }
        let cli = Cli::try_parse_from(argv).map_err(|e| match setting_error(&e) {
            Some(setting) => setting.clone(),
            None => panic!("not a setting error: {e}"),
        })?;
        cli.run.validate()
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
    ) -> Vec<(&'static str, &'static str)> {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    }

    fn ok(pairs: &[(&str, &str)]) -> RunConfig {
        run_config(pairs).unwrap_or_else(|e| panic!("{pairs:?}: {e}"))
    }

    fn error(pairs: &[(&str, &str)]) -> ConfigError {
        match run_config(pairs) {
            Ok(c) => panic!("{pairs:?} should fail: {c:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn value_parsers() {
        // (flag, value, what the run configuration holds)
        type Check = fn(&RunConfig) -> bool;
        let rows: [(&str, &str, Check); 20] = [
            ("namespace", "team-a", |c| {
                c.scope == WatchScope::Namespace("team-a".into())
            }),
            ("namespace", "*", |c| c.scope == WatchScope::All),
            ("namespace", " * ", |c| c.scope == WatchScope::All),
            ("namespace", " ", |c| {
                c.scope == WatchScope::Namespace(DEFAULT_NAMESPACE.into())
            }),
            ("tenant-network", "none", |c| {
                c.tenant_network == TenantNetwork::None
            }),
            ("tenant-network", "udn", |c| {
                c.tenant_network == TenantNetwork::Udn
            }),
            ("restart-timeout", "90s", |c| {
                c.restart_timeout == Duration::from_secs(90)
            }),
            ("aap-status-poll-interval", "2m30s", |c| {
                c.poll_interval == Duration::from_secs(150)
            }),
            ("aap-status-poll-interval", "500ms", |c| {
                c.poll_interval == Duration::from_millis(500)
            }),
            ("aap-insecure-skip-verify", "YES", |c| {
                c.aap.as_ref().is_some_and(AapConfig::insecure_skip_verify)
            }),
            ("aap-insecure-skip-verify", "0", |c| {
                c.aap.as_ref().is_some_and(|a| !a.insecure_skip_verify())
            }),
            ("eda-provision-grace", "0", |c| c.eda_grace.is_zero()),
            ("eda-provision-grace", "1h", |c| {
                c.eda_grace == Duration::from_secs(3600)
            }),
            ("max-job-history", "1000", |c| c.history_limit == 1000),
            ("provision-retry-limit", "0", |c| c.retry_limit == 0),
            ("provision-retry-limit", " 100 ", |c| c.retry_limit == 100),
            ("max-concurrent-reconciles", "65535", |c| {
                c.concurrency == u16::MAX
            }),
            ("http-address", "127.0.0.1:0", |c| {
                c.http_address == Some(SocketAddr::from(([127, 0, 0, 1], 0)))
                    && c.probe_address.is_none()
            }),
            ("http-address", "[::1]:9090", |c| {
                c.http_address.map(|a| a.port()) == Some(9090)
            }),
            ("provider", " aap ", |c| c.active == ProviderKind::Aap),
        ];
        for (flag, value, check) in rows {
            let c = ok(&with(AAP, &[(flag, value)]));
            assert!(check(&c), "--{flag}={value}: {c:?}");
        }
        let c = ok(&with(EDA, &[("minimum-request-interval", "1.5s")]));
        assert_eq!(
            c.eda.map(|e| e.minimum_request_interval),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn aap_request_timeout_bounds_requests_and_the_launch_window() {
        let c = ok(AAP);
        assert_eq!(
            c.aap.as_ref().map(AapConfig::request_timeout),
            Some(Duration::from_secs(30))
        );
        assert_eq!(c.launch_window, Duration::from_secs(35));
        let c = ok(&with(AAP, &[("aap-request-timeout", "4s")]));
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
            let c = ok(&with(
                AAP,
                &[
                    ("leader-elect", ""),
                    ("leader-election-lease-duration", text),
                ],
            ));
            let lease = c.leader_election.expect(text);
            assert_eq!((lease.duration_secs, lease.grace_secs), (duration, grace));
            assert!(lease.grace_secs < lease.duration_secs);
        }
        let lease = ok(&with(AAP, &[("leader-elect", "")]))
            .leader_election
            .expect("default");
        assert_eq!((lease.duration_secs, lease.grace_secs), (15, 5));
        assert_eq!(lease.name, DEFAULT_LEADER_ELECTION_LEASE);
        assert!(ok(AAP).leader_election.is_none(), "off by default");
    }

    #[test]
    fn the_lease_is_in_the_operators_own_namespace() {
        let lease = |extra: &[(&'static str, &'static str)]| {
            ok(&with(&with(AAP, &[("leader-elect", "")]), extra))
                .leader_election
                .and_then(|l| l.namespace)
        };
        assert_eq!(
            lease(&[("namespace", "ci"), ("leader-election-namespace", "ops")]).as_deref(),
            Some("ops")
        );
        let dir = std::env::temp_dir().join(format!("cloudkit-ns-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let file = dir.join("namespace");
        std::fs::write(&file, "operators\n").expect("namespace file");
        let pod = Some("from-env".to_string());
        assert_eq!(
            own_namespace(&file, pod.clone()).as_deref(),
            Some("operators"),
            "the service account's namespace first"
        );
        std::fs::write(&file, "").expect("namespace file");
        assert_eq!(
            own_namespace(&file, pod.clone()).as_deref(),
            Some("from-env")
        );
        let missing = dir.join("missing");
        assert_eq!(own_namespace(&missing, pod).as_deref(), Some("from-env"));
        assert_eq!(own_namespace(&missing, Some(" ".into())), None);
        assert_eq!(own_namespace(&missing, None), None, "the kubeconfig's");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn go_deployment_arguments() {
        let argv = [
            "cloudkit-operator",
            "--leader-elect",
            "--health-probe-bind-address=:8081",
            "--grpc-insecure",
        ];
        let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.run.leader_elect && cli.run.grpc_insecure);
        let c = ok(&with(
            AAP,
            &[("leader-elect", ""), ("health-probe-bind-address", ":8081")],
        ));
        assert_eq!(
            c.leader_election.map(|l| l.name).as_deref(),
            Some(DEFAULT_LEADER_ELECTION_LEASE)
        );
        assert!(
            ok(&with(AAP, &[("leader-elect", "false")]))
                .leader_election
                .is_none()
        );
        // A bare boolean never takes the next word as its value, as with Go's flags.
        let cli = Cli::try_parse_from(["cloudkit-operator", "--leader-elect", "crd"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(cli.run.leader_elect && matches!(cli.command, Some(Command::Crd)));
    }

    #[test]
    fn probe_and_metrics_addresses() {
        let at = |ip: [u8; 4], port| Some(SocketAddr::from((ip, port)));
        let c = ok(&with(AAP, &[("health-probe-bind-address", "127.0.0.1:9")]));
        assert_eq!(c.probe_address, at([127, 0, 0, 1], 9));
        let c = ok(&with(AAP, &[("health-probe-bind-address", "0")]));
        assert_eq!(c.probe_address, None, "0 = off");
        let c = ok(&with(
            AAP,
            &[
                ("http-address", "127.0.0.1:7"),
                ("health-probe-bind-address", "localhost:8"),
            ],
        ));
        assert_eq!(
            (c.http_address, c.probe_address),
            (at([127, 0, 0, 1], 7), at([127, 0, 0, 1], 8))
        );
        let c = ok(&with(AAP, &[("metrics-bind-address", ":8443")]));
        let m = c.metrics.expect("served");
        assert_eq!(m.address, SocketAddr::from(([0, 0, 0, 0], 8443)));
        assert!(
            m.secure && m.cert.is_none(),
            "secure by default, self-signed"
        );
        let c = ok(&with(
            AAP,
            &[
                ("metrics-bind-address", "[::1]:8080"),
                ("metrics-secure", "false"),
            ],
        ));
        let m = c.metrics.expect("served");
        assert!(!m.secure && m.address.is_ipv6());
        for value in ["8080", "host:80", ":http", "1.2.3.4:70000"] {
            let e = error(&with(AAP, &[("metrics-bind-address", value)]));
            assert_eq!(e.setting(), ENV_METRICS_BIND_ADDRESS, "{value}: {e}");
        }
        let e = error(&with(AAP, &[("health-probe-bind-address", "x")]));
        assert_eq!(e.setting(), ENV_HEALTH_PROBE_BIND_ADDRESS);
        let e = error(&with(
            AAP,
            &[
                ("metrics-bind-address", ":8443"),
                ("metrics-cert-path", "/nonexistent/certs"),
            ],
        ));
        assert_eq!(e.setting(), ENV_METRICS_CERT_PATH);
        assert!(e.message().contains("/nonexistent/certs/tls.crt"), "{e}");
    }

    #[test]
    fn provider_selection() {
        assert_eq!(ok(AAP).active, ProviderKind::Aap);
        assert_eq!(ok(EDA).active, ProviderKind::Eda);
        let e = error(&with(AAP, EDA));
        assert_eq!(e.setting(), ENV_PROVISIONING_PROVIDER);
        assert!(e.message().starts_with("both AAP"), "{e}");
        let c = ok(&with(&with(AAP, EDA), &[("provider", "aap")]));
        assert_eq!(c.active, ProviderKind::Aap);
        assert!(c.eda.is_some(), "the other provider reads its own jobs");
        let c = ok(&with(&with(AAP, EDA), &[("provider", "eda")]));
        assert_eq!(c.active, ProviderKind::Eda);
        assert!(c.aap.is_some(), "the other provider reads its own jobs");
        let e = error(&[]);
        assert_eq!(e.setting(), ENV_PROVISIONING_PROVIDER);
        assert!(e.message().starts_with("no provider"), "{e}");
        for var in [
            "CLOUDKIT_AAP_URL",
            "CLOUDKIT_AAP_TOKEN_FILE",
            "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK",
        ] {
            assert!(e.message().contains(var), "{e}");
        }
        let e = error(&with(AAP, &[("provider", "tower")]));
        assert_eq!(
            e.to_string(),
            "CLOUDKIT_PROVISIONING_PROVIDER: \"tower\" is not a provider; use aap or eda"
        );
    }

    #[test]
    fn bad_settings_name_the_variable() {
        let rows: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (AAP[1..].to_vec(), "CLOUDKIT_AAP_URL"),
            (vec![("provider", "aap")], "CLOUDKIT_AAP_TOKEN"),
            (
                vec![AAP[0], AAP[1], AAP[3]],
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
                with(AAP, &[("max-job-history", "1001")]),
                "CLOUDKIT_MAX_JOB_HISTORY",
            ),
            (
                with(AAP, &[("provision-retry-limit", "-1")]),
                "CLOUDKIT_PROVISION_RETRY_LIMIT",
            ),
            (
                with(AAP, &[("provision-retry-limit", "101")]),
                "CLOUDKIT_PROVISION_RETRY_LIMIT",
            ),
            (
                with(AAP, &[("max-concurrent-reconciles", "0")]),
                "CLOUDKIT_MAX_CONCURRENT_RECONCILES",
            ),
            (
                with(AAP, &[("max-concurrent-reconciles", "65536")]),
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
                EDA[..1].to_vec(),
                "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK",
            ),
            (
                with(&EDA[..1], &[("deprovision-webhook", "ftp://eda/d")]),
                "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK",
            ),
            (
                with(EDA, &[("eda-token", "two words")]),
                "CLOUDKIT_EDA_TOKEN",
            ),
            (
                with(EDA, &[("minimum-request-interval", "5")]),
                "CLOUDKIT_MINIMUM_REQUEST_INTERVAL",
            ),
            (
                with(AAP, &[("tenant-network", "ovn")]),
                "CLOUDKIT_TENANT_NETWORK",
            ),
            (
                with(AAP, &[("namespace", "Team_A")]),
                "CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE",
            ),
            (
                with(AAP, &[("namespace", "a,b")]),
                "CLOUDKIT_COMPUTE_INSTANCE_NAMESPACE",
            ),
        ];
        for (pairs, var) in rows {
            let e = error(&pairs);
            assert_eq!(e.setting(), var, "{pairs:?}: {e}");
            let line = e.to_string();
            assert!(line.starts_with(&format!("{var}: ")), "{line}");
            assert!(!line.contains('\n'), "one line: {line}");
            assert!(
                !line.contains("t0ken") && !line.contains("two words"),
                "{line}"
            );
        }
    }

    #[test]
    fn only_refused_values_are_setting_errors() {
        for argv in [
            vec!["cloudkit-operator", "--help"],
            vec!["cloudkit-operator", "--no-such-flag"],
            vec!["cloudkit-operator", "--log-format=xml"],
        ] {
            let e = Cli::try_parse_from(&argv).expect_err("clap's own error");
            assert!(setting_error(&e).is_none(), "{argv:?}: {e}");
        }
    }

    #[test]
    fn crd_needs_no_valid_setting() {
        let crd = |argv: &[&str]| asks_for_crd(argv.iter().copied());
        assert!(crd(&["cloudkit-operator", "crd"]));
        assert!(crd(&["cloudkit-operator", "--max-job-history=lots", "crd"]));
        assert!(crd(&["cloudkit-operator", "crd", "--log-format=xml"]));
        assert!(!crd(&["cloudkit-operator", "--max-job-history=lots"]));
        assert!(!crd(&["cloudkit-operator", "--namespace", "crd"]));
        assert!(!crd(&["cloudkit-operator", "run", "--http-address=x"]));
    }

    #[test]
    fn unreadable_token_file_names_the_variable_and_path() {
        let e = error(&with(
            &[AAP[0], AAP[2], AAP[3]],
            &[("aap-token-file", "/nonexistent/token")],
        ));
        assert_eq!(e.setting(), "CLOUDKIT_AAP_TOKEN_FILE");
        assert!(e.message().contains("/nonexistent/token"), "{e}");
    }

    #[test]
    fn defaults() {
        let c = ok(AAP);
        assert_eq!(c.history_limit, 10);
        assert_eq!(c.retry_limit, 3);
        assert_eq!(c.poll_interval, Duration::from_secs(30));
        assert_eq!(c.eda_grace, Duration::from_secs(300));
        assert_eq!(c.concurrency, 16);
        assert_eq!(c.http_address, None);
        assert_eq!(
            c.probe_address,
            Some(SocketAddr::from(([0, 0, 0, 0], 8081))),
            "the Go default"
        );
        assert_eq!(c.metrics, None, "off, the Go default");
        assert_eq!(
            c.scope,
            WatchScope::Namespace("cloudkit-computeinstance".into()),
            "the Go operator's default"
        );
        assert_eq!(c.tenant_network, TenantNetwork::Udn);
        assert_eq!(c.restart_timeout, Duration::from_secs(600));
        assert!(c.aap.as_ref().is_some_and(|a| !a.insecure_skip_verify()));
        assert!(c.eda.is_none());
        let c = ok(EDA);
        assert_eq!(
            c.eda.map(|e| e.minimum_request_interval),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn feedback_settings() {
        assert!(ok(AAP).feedback.is_none(), "off without an address");
        let c = ok(&with(
            AAP,
            &[("fulfillment-server-address", "fulfillment:8000")],
        ));
        let f = c.feedback.expect("enabled by the address");
        assert_eq!(f.address, "fulfillment:8000");
        assert!(!f.insecure && !f.plaintext && f.token_file.is_none());

        // The Go Deployment passes the booleans without a value.
        let c = ok(&with(
            AAP,
            &[
                ("fulfillment-server-address", "fulfillment:8000"),
                ("grpc-insecure", ""),
                ("fulfillment-server-token-file", "/var/run/token"),
            ],
        ));
        let f = c.feedback.expect("enabled");
        assert!(f.insecure && !f.plaintext);
        assert_eq!(
            f.token_file.as_deref(),
            Some(std::path::Path::new("/var/run/token"))
        );
        let c = ok(&with(
            AAP,
            &[
                ("fulfillment-server-address", "fulfillment:8000"),
                ("grpc-plaintext", "true"),
                ("grpc-insecure", "false"),
            ],
        ));
        let f = c.feedback.expect("enabled");
        assert!(f.plaintext && !f.insecure);

        // A token never travels in clear: one line naming both settings.
        let e = error(&with(
            AAP,
            &[
                ("fulfillment-server-address", "fulfillment:8000"),
                ("grpc-plaintext", ""),
                ("fulfillment-server-token-file", "/var/run/token"),
            ],
        ));
        assert_eq!(e.setting(), ENV_GRPC_PLAINTEXT);
        let line = e.to_string();
        assert!(line.contains(ENV_FULFILLMENT_TOKEN_FILE), "{line}");
        assert!(line.contains(ENV_GRPC_PLAINTEXT), "{line}");
        assert!(!line.contains('\n'), "{line}");

        let e = error(&with(
            AAP,
            &[("fulfillment-server-address", "https://f:8000")],
        ));
        assert_eq!(e.setting(), ENV_FULFILLMENT_SERVER_ADDRESS);
        let e = error(&with(
            AAP,
            &[
                ("fulfillment-server-address", "fulfillment:8000"),
                ("grpc-insecure", "maybe"),
            ],
        ));
        assert_eq!(e.setting(), ENV_GRPC_INSECURE);
    }

    #[test]
    fn shard_name_and_lease() {
        // (selector, name given, the shard's name, or the variable of the one error line)
        let rows: [(&str, &str, Result<&str, &str>); 11] = [
            ("cloudkit.openshift.io/shard=a", "", Ok("a")),
            ("shard==blue", "", Ok("blue")),
            ("shard=a", "east", Ok("east")),
            ("shard in (a,b)", "ab", Ok("ab")),
            ("shard in (a,b)", "", Err(ENV_SHARD_NAME)),
            ("shard=a,zone=z1", "", Err(ENV_SHARD_NAME)),
            ("!shard", "", Err(ENV_SHARD_NAME)),
            ("shard=A", "", Err(ENV_SHARD_NAME)),
            ("shard=a", "Not_A_Name", Err(ENV_SHARD_NAME)),
            ("shard in (a", "", Err(ENV_SHARD_SELECTOR)),
            ("shard=a,", "x", Err(ENV_SHARD_SELECTOR)),
        ];
        for (selector, name, expected) in rows {
            let mut pairs = with(
                AAP,
                &[("leader-elect", ""), ("leader-election-lease", "op")],
            );
            pairs.push(("shard-label-selector", selector));
            if !name.is_empty() {
                pairs.push(("shard-name", name));
            }
            match (run_config(&pairs), expected) {
                (Ok(c), Ok(shard)) => {
                    let s = c.shard.as_ref().expect("sharded");
                    assert_eq!(s.name, shard, "{selector}");
                    assert_eq!(s.lease_base, "op");
                    assert_eq!(
                        c.leader_election.map(|l| l.name),
                        Some(format!("op-{shard}")),
                        "each shard has its own Lease"
                    );
                }
                (Err(e), Err(var)) => {
                    assert_eq!(e.setting(), var, "{selector} {name}: {e}");
                    assert!(!e.to_string().contains('\n'), "{e}");
                }
                (got, want) => panic!("{selector} {name}: {got:?}, expected {want:?}"),
            }
        }
        // Without a selector nothing changes: one Lease, no shard.
        let c = ok(&with(
            AAP,
            &[("leader-elect", ""), ("leader-election-lease", "op")],
        ));
        assert!(c.shard.is_none());
        assert_eq!(c.leader_election.map(|l| l.name).as_deref(), Some("op"));
        let e = error(&with(AAP, &[("shard-name", "a")]));
        assert_eq!(
            e.setting(),
            ENV_SHARD_NAME,
            "a name without a selector: {e}"
        );
        // The shards' Leases live where the leader election's would.
        let c = ok(&with(
            AAP,
            &[
                ("shard-label-selector", "shard=a"),
                ("leader-election-namespace", "ops"),
            ],
        ));
        assert_eq!(
            c.shard.and_then(|s| s.lease_namespace).as_deref(),
            Some("ops")
        );
    }
}
