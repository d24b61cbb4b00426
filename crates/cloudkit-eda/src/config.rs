//! Typed configuration of the EDA provider. Reading the environment is the binary's job; the
//! names of the variables are here so that every error can name the one to fix.

use std::fmt;
use std::time::Duration;

use cloudkit_provider::Secret;
use url::Url;

/// Environment variable holding the provision webhook URL.
pub const PROVISION_WEBHOOK_ENV: &str = "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK";
/// Environment variable holding the deprovision webhook URL.
pub const DEPROVISION_WEBHOOK_ENV: &str = "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK";
/// Environment variable holding the optional Bearer token.
pub const TOKEN_ENV: &str = "CLOUDKIT_EDA_TOKEN";
/// Environment variable holding the optional HMAC secret.
pub const HMAC_SECRET_ENV: &str = "CLOUDKIT_EDA_HMAC_SECRET";
/// Environment variable holding the minimum interval between two triggers for the same CI and
/// webhook.
pub const MINIMUM_REQUEST_INTERVAL_ENV: &str = "CLOUDKIT_MINIMUM_REQUEST_INTERVAL";

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
            Webhook::Provision => PROVISION_WEBHOOK_ENV,
            Webhook::Deprovision => DEPROVISION_WEBHOOK_ENV,
        }
    }
}

impl fmt::Display for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configuration the EDA provider cannot work with. Every message names the setting to fix and
/// never repeats a credential or a full URL (which may carry one).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EdaConfigError {
    /// A webhook URL is empty.
    #[error("{var} is required with the eda provider")]
    MissingWebhook {
        /// The variable to set.
        var: &'static str,
    },
    /// A webhook URL does not parse or is not an absolute http(s) URL with a host.
    #[error("{var} must be an absolute http or https URL: {reason}")]
    InvalidWebhook {
        /// The variable to fix.
        var: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A credential is set but empty.
    #[error("{var} is set but empty; unset it or give it a value")]
    EmptySecret {
        /// The variable to fix.
        var: &'static str,
    },
    /// The token cannot be sent as `Authorization: Bearer <token>`.
    #[error(
        "{TOKEN_ENV} must not contain whitespace or control characters (a trailing newline from a file?)"
    )]
    InvalidToken,
    /// The request timeout is zero.
    #[error("the EDA request timeout must be greater than zero")]
    ZeroTimeout,
    /// The HTTP client could not be built (for example, no TLS backend).
    #[error("cannot build the EDA HTTP client: {0}")]
    Client(String),
}

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
    pub fn new(provision_webhook: &str, deprovision_webhook: &str) -> Result<Self, EdaConfigError> {
        Ok(EdaConfig {
            provision_webhook: parse_webhook(provision_webhook, PROVISION_WEBHOOK_ENV)?,
            deprovision_webhook: parse_webhook(deprovision_webhook, DEPROVISION_WEBHOOK_ENV)?,
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
    pub fn validate(&self) -> Result<(), EdaConfigError> {
        check_webhook(&self.provision_webhook, PROVISION_WEBHOOK_ENV)?;
        check_webhook(&self.deprovision_webhook, DEPROVISION_WEBHOOK_ENV)?;
        if let Some(token) = &self.token {
            if token.is_empty() {
                return Err(EdaConfigError::EmptySecret { var: TOKEN_ENV });
            }
            if token
                .expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(EdaConfigError::InvalidToken);
            }
        }
        if self.hmac_secret.as_ref().is_some_and(Secret::is_empty) {
            return Err(EdaConfigError::EmptySecret {
                var: HMAC_SECRET_ENV,
            });
        }
        if self.request_timeout.is_zero() {
            return Err(EdaConfigError::ZeroTimeout);
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

fn parse_webhook(raw: &str, var: &'static str) -> Result<Url, EdaConfigError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(EdaConfigError::MissingWebhook { var });
    }
    let url = Url::parse(raw).map_err(|e| EdaConfigError::InvalidWebhook {
        var,
        reason: e.to_string(),
    })?;
    check_webhook(&url, var)?;
    Ok(url)
}

fn check_webhook(url: &Url, var: &'static str) -> Result<(), EdaConfigError> {
    let invalid = |reason: String| EdaConfigError::InvalidWebhook { var, reason };
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(invalid(format!("the scheme is {other:?}"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("there is no host".into()));
    }
    Ok(())
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
            ("", DEPROV, Err(PROVISION_WEBHOOK_ENV)),
            (PROV, "  ", Err(DEPROVISION_WEBHOOK_ENV)),
            (
                "eda.example.com/provision",
                DEPROV,
                Err(PROVISION_WEBHOOK_ENV),
            ),
            ("ftp://h/p", DEPROV, Err(PROVISION_WEBHOOK_ENV)),
            (PROV, "file:///etc/passwd", Err(DEPROVISION_WEBHOOK_ENV)),
            (PROV, "mailto:ops@example.com", Err(DEPROVISION_WEBHOOK_ENV)),
            (PROV, "https://[::1/", Err(DEPROVISION_WEBHOOK_ENV)),
        ];
        for (p, d, want) in rows {
            let got = EdaConfig::new(p, d);
            match want {
                Ok(()) => assert!(got.is_ok(), "{p:?} {d:?}: {got:?}"),
                Err(var) => {
                    let msg = got.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(msg.starts_with(var), "{p:?} {d:?}: {msg}");
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
            (base().with_token(Secret::new("")), Some(TOKEN_ENV)),
            (base().with_token(Secret::new("tok\n")), Some(TOKEN_ENV)),
            (base().with_token(Secret::new("to k")), Some(TOKEN_ENV)),
            (
                base().with_hmac_secret(Secret::new("")),
                Some(HMAC_SECRET_ENV),
            ),
            (base().with_request_timeout(Duration::ZERO), Some("timeout")),
            (bad_scheme, Some(DEPROVISION_WEBHOOK_ENV)),
        ];
        for (config, want) in rows {
            let got = config.validate();
            match want {
                None => assert!(got.is_ok(), "{config:?}: {got:?}"),
                Some(needle) => {
                    let msg = got.err().map(|e| e.to_string()).unwrap_or_default();
                    assert!(msg.contains(needle), "{config:?}: {msg}");
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
