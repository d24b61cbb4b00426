//! Typed configuration of the EDA provider. Reading the environment is the binary's job; the
//! names of the variables are here so that every error can name the one to fix.

use std::fmt;
use std::time::Duration;

use cloudkit_provider::Secret;
/// The error of every EDA setting; it names the setting to fix and never repeats a credential
/// or a full URL (which may carry one).
pub use cloudkit_provider::settings::ConfigError;
use url::Url;

/// Environment variable holding the provision webhook URL.
pub const ENV_PROVISION_WEBHOOK: &str = "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK";
/// Environment variable holding the deprovision webhook URL.
pub const ENV_DEPROVISION_WEBHOOK: &str = "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK";
/// Environment variable holding the optional Bearer token.
pub const ENV_TOKEN: &str = "CLOUDKIT_EDA_TOKEN";
/// Environment variable holding the optional HMAC secret.
pub const ENV_HMAC_SECRET: &str = "CLOUDKIT_EDA_HMAC_SECRET";
/// Environment variable holding the minimum interval between two triggers for the same CI and
/// webhook.
pub const ENV_MINIMUM_REQUEST_INTERVAL: &str = "CLOUDKIT_MINIMUM_REQUEST_INTERVAL";

/// Default for [`EdaConfig::request_timeout`].
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which of the two webhooks a trigger goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Webhook {
    /// `CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK`.
    Provision,
    /// `CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK`.
    Deprovision,
}

impl Webhook {
    /// `provision` or `deprovision`.
    pub fn as_str(self) -> &'static str {
        match self {
            Webhook::Provision => "provision",
            Webhook::Deprovision => "deprovision",
        }
    }

    /// The environment variable that configures this webhook's URL.
    pub fn env_var(self) -> &'static str {
        match self {
            Webhook::Provision => ENV_PROVISION_WEBHOOK,
            Webhook::Deprovision => ENV_DEPROVISION_WEBHOOK,
        }
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Name of the request timeout in errors: only an embedding program sets it, so it has no
/// environment variable.
const REQUEST_TIMEOUT_SETTING: &str = "EDA request timeout";

/// Settings of the EDA provider.
///
/// Build it with [`EdaConfig::new`] and the `with_*` methods; [`crate::EdaClient::new`] checks it
/// again with [`EdaConfig::validate`], so a value whose public fields were changed by hand cannot
/// slip through. `Debug` shows neither the credentials nor the user information or query of the
/// URLs.
#[derive(Clone, PartialEq, Eq)]
pub struct EdaConfig {
    /// Where provision events go (`CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK`).
    pub provision_webhook: Url,
    /// Where deprovision events go (`CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK`).
    pub deprovision_webhook: Url,
    /// Sent as `Authorization: Bearer <token>` (`CLOUDKIT_EDA_TOKEN`).
    pub token: Option<Secret>,
    /// Signs every body in `x-hub-signature-256` (`CLOUDKIT_EDA_HMAC_SECRET`).
    pub hmac_secret: Option<Secret>,
    /// A second trigger for the same CI and webhook inside this interval is not sent
    /// (`CLOUDKIT_MINIMUM_REQUEST_INTERVAL`); zero turns the limit off.
    pub minimum_request_interval: Duration,
    /// Upper bound on one request, from connecting to reading the answer.
    pub request_timeout: Duration,
}

impl EdaConfig {
    /// A configuration with both webhook URLs, no credentials, no rate limit and the default
    /// timeout. Fails, naming the variable, when a URL is empty, does not parse or is not an
    /// absolute http(s) URL with a host.
    pub fn new(provision_webhook: &str, deprovision_webhook: &str) -> Result<Self, ConfigError> {
        Ok(EdaConfig {
            provision_webhook: parse_webhook(provision_webhook, ENV_PROVISION_WEBHOOK)?,
            deprovision_webhook: parse_webhook(deprovision_webhook, ENV_DEPROVISION_WEBHOOK)?,
            token: None,
            hmac_secret: None,
            minimum_request_interval: Duration::ZERO,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        })
    }

    /// Sends `token` as `Authorization: Bearer <token>`.
    pub fn with_token(mut self, token: Secret) -> Self {
        self.token = Some(token);
        self
    }

    /// Signs every body with `secret` (HMAC-SHA256, header `x-hub-signature-256`).
    pub fn with_hmac_secret(mut self, secret: Secret) -> Self {
        self.hmac_secret = Some(secret);
        self
    }

    /// Sets the minimum interval between two triggers for the same CI and webhook.
    pub fn with_minimum_request_interval(mut self, interval: Duration) -> Self {
        self.minimum_request_interval = interval;
        self
    }

    /// Sets the timeout of one request.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The URL of `webhook`.
    pub fn url(&self, webhook: Webhook) -> &Url {
        match webhook {
            Webhook::Provision => &self.provision_webhook,
            Webhook::Deprovision => &self.deprovision_webhook,
        }
    }

    /// Checks every field; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_webhook(&self.provision_webhook, ENV_PROVISION_WEBHOOK)?;
        check_webhook(&self.deprovision_webhook, ENV_DEPROVISION_WEBHOOK)?;
        if let Some(token) = &self.token {
            if token.is_empty() {
                return Err(empty_secret(ENV_TOKEN));
            }
            if token
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(ConfigError::new(
                    ENV_TOKEN,
                    "must not contain whitespace or control characters (a trailing newline from a file?)",
                ));
            }
        }
        if self.hmac_secret.as_ref().is_some_and(Secret::is_empty) {
            return Err(empty_secret(ENV_HMAC_SECRET));
        }
        if self.request_timeout.is_zero() {
            return Err(ConfigError::new(
                REQUEST_TIMEOUT_SETTING,
                "must be greater than zero",
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for EdaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EdaConfig")
            .field("provision_webhook", &SafeUrl(&self.provision_webhook))
            .field("deprovision_webhook", &SafeUrl(&self.deprovision_webhook))
            .field("token", &self.token)
            .field("hmac_secret", &self.hmac_secret)
            .field("minimum_request_interval", &self.minimum_request_interval)
            .field("request_timeout", &self.request_timeout)
            .finish()
    }
}

/// Shows a URL without user information and with its query and fragment hidden: either may
/// carry a credential.
pub(crate) struct SafeUrl<'a>(pub(crate) &'a Url);

impl fmt::Display for SafeUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.0;
        write!(f, "{}://", url.scheme())?;
        if let Some(host) = url.host_str() {
            f.write_str(host)?;
        }
        if let Some(port) = url.port() {
            write!(f, ":{port}")?;
        }
        f.write_str(url.path())?;
        if url.query().is_some() {
            f.write_str("?<redacted>")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SafeUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

fn parse_webhook(raw: &str, var: &'static str) -> Result<Url, ConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(ConfigError::new(var, "is required with the eda provider"));
    }
    let url = Url::parse(raw).map_err(|e| invalid_webhook(var, e.to_string()))?;
    check_webhook(&url, var)?;
    Ok(url)
}

fn check_webhook(url: &Url, var: &'static str) -> Result<(), ConfigError> {
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(invalid_webhook(var, format!("the scheme is {other:?}"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid_webhook(var, "there is no host".into()));
    }
    Ok(())
}

fn invalid_webhook(var: &'static str, reason: String) -> ConfigError {
    ConfigError::new(
        var,
        format!("must be an absolute http or https URL: {reason}"),
    )
}

fn empty_secret(var: &'static str) -> ConfigError {
    ConfigError::new(var, "is set but empty; unset it or give it a value")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROV: &str = "https://eda.example.com/provision";
    const DEPROV: &str = "http://eda.example.com:5000/deprovision";

    #[test]
    fn webhook_urls() {
        // (provision, deprovision, Ok or the variable named by the error)
        let rows: [(&str, &str, Result<(), &str>); 9] = [
            (PROV, DEPROV, Ok(())),
            (" https://h/p ", "http://h:1/", Ok(())),
            ("", DEPROV, Err(ENV_PROVISION_WEBHOOK)),
            (PROV, "  ", Err(ENV_DEPROVISION_WEBHOOK)),
            (
                "eda.example.com/provision",
                DEPROV,
                Err(ENV_PROVISION_WEBHOOK),
            ),
            ("ftp://h/p", DEPROV, Err(ENV_PROVISION_WEBHOOK)),
            (PROV, "file:///etc/passwd", Err(ENV_DEPROVISION_WEBHOOK)),
            (PROV, "mailto:ops@example.com", Err(ENV_DEPROVISION_WEBHOOK)),
            (PROV, "https://[::1/", Err(ENV_DEPROVISION_WEBHOOK)),
        ];
        for (p, d, want) in rows {
            let got = EdaConfig::new(p, d);
            match want {
                Ok(()) => assert!(got.is_ok(), "{p:?} {d:?}: {got:?}"),
                Err(var) => {
                    let err = got.expect_err(p);
                    assert_eq!(err.setting(), var, "{p:?} {d:?}: {err}");
                    let msg = err.to_string();
                    assert!(msg.starts_with(&format!("{var}: ")), "{msg}");
                    assert!(!msg.contains('\n'), "{msg}");
                }
            }
        }
    }

    #[test]
    fn defaults() {
        let c = EdaConfig::new(PROV, DEPROV).unwrap();
        assert_eq!(c.token, None);
        assert_eq!(c.hmac_secret, None);
        assert_eq!(c.minimum_request_interval, Duration::ZERO);
        assert_eq!(c.request_timeout, Duration::from_secs(30));
        assert_eq!(c.url(Webhook::Provision).as_str(), PROV);
        assert_eq!(
            c.url(Webhook::Deprovision).as_str(),
            "http://eda.example.com:5000/deprovision"
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn validation_rows() {
        let base = || EdaConfig::new(PROV, DEPROV).unwrap();
        let mut bad_scheme = base();
        bad_scheme.deprovision_webhook = Url::parse("ftp://h/x").unwrap();
        let rows: [(EdaConfig, Option<&str>); 8] = [
            (base().with_token(Secret::new("abc.DEF-123")), None),
            (
                base().with_hmac_secret(Secret::new("a secret with spaces")),
                None,
            ),
            (base().with_token(Secret::new("")), Some(ENV_TOKEN)),
            (base().with_token(Secret::new("tok\n")), Some(ENV_TOKEN)),
            (base().with_token(Secret::new("to k")), Some(ENV_TOKEN)),
            (
                base().with_hmac_secret(Secret::new("")),
                Some(ENV_HMAC_SECRET),
            ),
            (
                base().with_request_timeout(Duration::ZERO),
                Some(REQUEST_TIMEOUT_SETTING),
            ),
            (bad_scheme, Some(ENV_DEPROVISION_WEBHOOK)),
        ];
        for (config, want) in rows {
            let got = config.validate();
            match want {
                None => assert!(got.is_ok(), "{config:?}: {got:?}"),
                Some(setting) => {
                    let err = got.expect_err(setting);
                    assert_eq!(err.setting(), setting, "{config:?}: {err}");
                    let msg = err.to_string();
                    assert!(!msg.contains("tok\n") && !msg.contains("to k"), "{msg}");
                }
            }
        }
    }

    #[test]
    fn debug_hides_credentials() {
        let c = EdaConfig::new(
            "https://user:url-password@eda.example.com/provision?key=query-secret",
            DEPROV,
        )
        .unwrap()
        .with_token(Secret::new("token-value-1"))
        .with_hmac_secret(Secret::new("hmac-value-2"));
        let shown = format!("{c:?} {c:#?}");
        for secret in [
            "url-password",
            "query-secret",
            "token-value-1",
            "hmac-value-2",
            "user",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(
            shown.contains("https://eda.example.com/provision?<redacted>"),
            "{shown}"
        );
        assert!(
            shown.contains("http://eda.example.com:5000/deprovision"),
            "{shown}"
        );
    }
}
