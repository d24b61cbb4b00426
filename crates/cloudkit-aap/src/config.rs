//! Typed, validated configuration of the AAP client. Reading the environment or flags is the
//! binary's job; this module only checks values and names the setting that is wrong.

use std::path::Path;
use std::time::Duration;

use cloudkit_provider::Secret;
/// The error of every AAP setting; it names the setting by its environment variable.
pub use cloudkit_provider::settings::ConfigError;
use url::Url;

/// Env var of the API base URL.
pub const ENV_URL: &str = "CLOUDKIT_AAP_URL";
/// Env var of the API token.
pub const ENV_TOKEN: &str = "CLOUDKIT_AAP_TOKEN";
/// Env var of a file holding the API token (an alternative to [`ENV_TOKEN`]).
pub const ENV_TOKEN_FILE: &str = "CLOUDKIT_AAP_TOKEN_FILE";
/// Env var of the provision template name.
pub const ENV_PROVISION_TEMPLATE: &str = "CLOUDKIT_AAP_PROVISION_TEMPLATE";
/// Env var of the deprovision template name.
pub const ENV_DEPROVISION_TEMPLATE: &str = "CLOUDKIT_AAP_DEPROVISION_TEMPLATE";
/// Env var of the job status poll interval.
pub const ENV_STATUS_POLL_INTERVAL: &str = "CLOUDKIT_AAP_STATUS_POLL_INTERVAL";
/// Env var that turns TLS certificate verification off.
pub const ENV_INSECURE_SKIP_VERIFY: &str = "CLOUDKIT_AAP_INSECURE_SKIP_VERIFY";
/// Env var of a PEM file with extra CA certificates.
pub const ENV_CA_FILE: &str = "CLOUDKIT_AAP_CA_FILE";
/// Env var of the limit on one HTTP request.
pub const ENV_REQUEST_TIMEOUT: &str = "CLOUDKIT_AAP_REQUEST_TIMEOUT";

/// Default interval between two polls of a running job.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(30);
/// Default limit on the duration of one HTTP request, body included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Configuration of the AAP controller client and provider.
///
/// Build it with [`AapConfig::new`], which checks the required settings, then adjust the optional
/// ones with the `with_*` methods. Its `Debug` output never shows the token.
#[derive(Clone, Debug)]
pub struct AapConfig {
    base_url: Url,
    token: Secret,
    provision_template: String,
    deprovision_template: String,
    poll_interval: Duration,
    insecure_skip_verify: bool,
    ca_bundle_pem: Option<Vec<u8>>,
    request_timeout: Duration,
}

impl AapConfig {
    /// Checks and stores the required settings.
    ///
    /// `base_url` is the API base including its prefix: `https://host/api` for AWX or
    /// `https://gateway/api/controller` for AAP 2.5 and later. The client appends `/v2/...`; a
    /// trailing slash is tolerated. Only `http` and `https` are accepted, without query or
    /// fragment. Template names are matched exactly (they are not trimmed).
    pub fn new(
        base_url: &str,
        token: Secret,
        provision_template: impl Into<String>,
        deprovision_template: impl Into<String>,
    ) -> Result<Self, ConfigError> {
        let base_url = parse_base_url(base_url)?;
        if token.expose().trim().is_empty() {
            return Err(ConfigError::new(
                ENV_TOKEN,
                format!("is required and must not be empty (or set {ENV_TOKEN_FILE})"),
            ));
        }
        let provision_template = provision_template.into();
        if provision_template.trim().is_empty() {
            return Err(ConfigError::new(
                ENV_PROVISION_TEMPLATE,
                "is required and must not be empty",
            ));
        }
        let deprovision_template = deprovision_template.into();
        if deprovision_template.trim().is_empty() {
            return Err(ConfigError::new(
                ENV_DEPROVISION_TEMPLATE,
                "is required and must not be empty",
            ));
        }
        Ok(AapConfig {
            base_url,
            token,
            provision_template,
            deprovision_template,
            poll_interval: DEFAULT_POLL_INTERVAL,
            insecure_skip_verify: false,
            ca_bundle_pem: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Sets the interval between two polls of a running job; it must be greater than zero.
    pub fn with_poll_interval(mut self, interval: Duration) -> Result<Self, ConfigError> {
        if interval.is_zero() {
            return Err(ConfigError::new(
                ENV_STATUS_POLL_INTERVAL,
                "must be greater than zero",
            ));
        }
        self.poll_interval = interval;
        Ok(self)
    }

    /// Turns TLS certificate and host name verification off (for test installations only).
    pub fn with_insecure_skip_verify(mut self, insecure: bool) -> Self {
        self.insecure_skip_verify = insecure;
        self
    }

    /// Adds the CA certificates of a PEM bundle to the trusted roots (the system roots stay
    /// trusted). The bundle must hold at least one certificate.
    pub fn with_ca_bundle_pem(mut self, pem: impl Into<Vec<u8>>) -> Result<Self, ConfigError> {
        let pem = pem.into();
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => {
                // The PEM armour can hold anything; only a TLS setup parses the certificates.
                reqwest::Client::builder()
                    .tls_certs_only(certs)
                    .build()
                    .map_err(|e| {
                        ConfigError::new(
                            ENV_CA_FILE,
                            format!("holds an invalid certificate: {}", root_cause(&e)),
                        )
                    })?;
            }
            Ok(_) => {
                return Err(ConfigError::new(
                    ENV_CA_FILE,
                    "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)",
                ));
            }
            Err(e) => {
                return Err(ConfigError::new(
                    ENV_CA_FILE,
                    format!("is not a valid PEM certificate bundle: {e}"),
                ));
            }
        }
        self.ca_bundle_pem = Some(pem);
        Ok(self)
    }

    /// Sets the limit on the duration of one HTTP request (connection, answer and body); it must
    /// be greater than zero.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
        if timeout.is_zero() {
            return Err(ConfigError::new(
                ENV_REQUEST_TIMEOUT,
                "must be greater than zero",
            ));
        }
        self.request_timeout = timeout;
        Ok(self)
    }

    /// The API base URL, without a trailing slash (for example `https://host/api`).
    pub fn base_url(&self) -> &str {
        self.base_url.as_str().trim_end_matches('/')
    }

    /// The API token.
    pub fn token(&self) -> &Secret {
        &self.token
    }

    /// Name of the job template or workflow job template that provisions.
    pub fn provision_template(&self) -> &str {
        &self.provision_template
    }

    /// Name of the job template or workflow job template that deprovisions.
    pub fn deprovision_template(&self) -> &str {
        &self.deprovision_template
    }

    /// Interval between two polls of a running job.
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// Whether TLS verification is off.
    pub fn insecure_skip_verify(&self) -> bool {
        self.insecure_skip_verify
    }

    /// The extra CA certificates, PEM encoded.
    pub fn ca_bundle_pem(&self) -> Option<&[u8]> {
        self.ca_bundle_pem.as_deref()
    }

    /// Limit on the duration of one HTTP request.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut current = err;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

fn parse_base_url(raw: &str) -> Result<Url, ConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConfigError::new(
            ENV_URL,
            "is required (for example https://aap.example.com/api/controller)",
        ));
    }
    // The value is not echoed: it may carry credentials in its user-info part.
    let mut url = Url::parse(raw)
        .map_err(|e| ConfigError::new(ENV_URL, format!("is not a valid URL: {e}")))?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(ConfigError::new(
            ENV_URL,
            format!("must use http or https, not {}", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(ENV_URL, "has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::new(
            ENV_URL,
            format!("must not carry a user name or password: set {ENV_TOKEN} instead"),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ConfigError::new(
            ENV_URL,
            "must not have a query or fragment: give the API base such as https://host/api",
        ));
    }
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Ok(url)
}

/// Reads the API token from the file named by `CLOUDKIT_AAP_TOKEN_FILE` (a mounted Secret, say).
/// Surrounding white space (the usual trailing newline) is removed; an unreadable or empty file
/// is an error naming the variable and the path.
pub fn read_token_file(path: impl AsRef<Path>) -> Result<Secret, ConfigError> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError::new(
            ENV_TOKEN_FILE,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(ConfigError::new(
            ENV_TOKEN_FILE,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(token))
}

/// Reads the PEM bundle named by `CLOUDKIT_AAP_CA_FILE`, for [`AapConfig::with_ca_bundle_pem`].
pub fn read_ca_file(path: impl AsRef<Path>) -> Result<Vec<u8>, ConfigError> {
    let path = path.as_ref();
    std::fs::read(path)
        .map_err(|e| ConfigError::new(ENV_CA_FILE, format!("cannot read {}: {e}", path.display())))
}
