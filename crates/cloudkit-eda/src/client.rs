//! The webhook client: one POST per trigger, signed and rate limited.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use cloudkit_api::ComputeInstance;
use cloudkit_provider::{ProviderError, Secret};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use sha2::Sha256;
use url::Url;

use crate::clock::{Clock, SystemClock};
use crate::config::{ConfigError, ENV_HMAC_SECRET, ENV_TOKEN, EdaConfig, Webhook};
use crate::rate_limit::{Key, RateLimiter};

/// Header carrying the body signature, as the ansible-rulebook webhook source expects by default
/// (`hmac_header: x-hub-signature-256`).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// At most this many bytes of an error answer's body are read.
pub const MAX_ERROR_BODY_BYTES: usize = 1024;

/// At most this many characters of an error answer's body appear in an error message.
const MAX_SNIPPET_CHARS: usize = 200;

/// Replaces a credential found in an answer body (a server that echoes the request).
const REDACTED: &str = "[redacted]";

/// Wait suggested by a 429 answer that carries no usable `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(30);

/// Longest wait taken from a `Retry-After` header.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The value of the [`SIGNATURE_HEADER`] for `body`: `sha256=` followed by the lowercase hex
/// HMAC-SHA256 of the exact bytes, keyed with the secret's UTF-8 bytes. This is what the
/// ansible-rulebook webhook source verifies with `hmac_secret`, `hmac_algo: sha256` and
/// `hmac_format: hex`.
pub fn signature_header_value(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails; the fallback keeps the code total.
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(_) => String::from("sha256="),
    }
}

/// A trigger the webhook accepted (it queued the event; that says nothing about the run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The 2xx status of the answer.
    pub status: u16,
}

/// Sends `ComputeInstance` events to the EDA webhooks.
///
/// Cheap to clone; clones share the HTTP connection pool and the rate-limit state, so one client
/// can serve every reconcile.
#[derive(Clone, Debug)]
pub struct EdaClient {
    config: Arc<EdaConfig>,
    http: reqwest::Client,
    limiter: Arc<RateLimiter>,
}

impl EdaClient {
    /// A client using the real clock for the rate limit.
    pub fn new(config: EdaConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// A client whose rate limit reads time from `clock`.
    pub fn with_clock(config: EdaConfig, clock: Arc<dyn Clock>) -> Result<Self, ConfigError> {
        config.validate()?;
        // Redirects are not followed: a redirected POST turns into a GET and loses the event,
        // so a 3xx answer is reported as the misconfiguration it is.
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| {
                ConfigError::new(
                    "EDA HTTP client",
                    format!("cannot be built: {}", e.without_url()),
                )
            })?;
        let limiter = Arc::new(RateLimiter::new(config.minimum_request_interval, clock));
        Ok(EdaClient {
            config: Arc::new(config),
            http,
            limiter,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &EdaConfig {
        &self.config
    }

    /// POSTs `ci`, serialised as JSON, to `webhook`.
    ///
    /// Any 2xx answer is success. Otherwise the error is one short line that names the webhook
    /// and the URL's path (never the host's credentials, the query, the token or the HMAC secret)
    /// and quotes at most [`MAX_ERROR_BODY_BYTES`] of the answer:
    /// 401/403 give [`ProviderError::Auth`], 404 [`ProviderError::Configuration`] (the URL is
    /// wrong), 429 [`ProviderError::RateLimited`] (after `Retry-After` seconds when given, else
    /// 30 s), anything else (including a 3xx: redirects are not followed) and every connection
    /// problem [`ProviderError::Transport`].
    ///
    /// With a minimum request interval, a second trigger for the same CI and webhook URL inside
    /// the interval is not sent: the answer is [`ProviderError::RateLimited`] with the time that
    /// remains. Every trigger that was sent counts, whether it succeeded or not.
    pub async fn trigger(
        &self,
        webhook: Webhook,
        ci: &ComputeInstance,
    ) -> Result<Accepted, ProviderError> {
        let url = self.config.url(webhook);
        let target = Target { webhook, url };
        let body = serde_json::to_vec(ci).map_err(|e| {
            ProviderError::Configuration(format!(
                "cannot serialise the ComputeInstance for the EDA {webhook} webhook: {e}"
            ))
        })?;
        let namespace = ci.metadata.namespace.clone().unwrap_or_default();
        let name = ci.metadata.name.clone().unwrap_or_default();
        let key = Key {
            namespace: namespace.clone(),
            name: name.clone(),
            url: url.as_str().to_owned(),
        };
        if let Err(retry_after) = self.limiter.acquire(key) {
            tracing::debug!(
                %namespace, %name, %webhook, ?retry_after,
                "EDA trigger not sent: minimum request interval not over"
            );
            return Err(ProviderError::RateLimited { retry_after });
        }

        let mut request = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.config.token {
            request = request.bearer_auth(token.expose());
        }
        if let Some(secret) = &self.config.hmac_secret {
            request = request.header(SIGNATURE_HEADER, signature_header_value(secret, &body));
        }
        let mut response = match request.body(body).send().await {
            Ok(r) => r,
            Err(e) => return Err(target.transport(e, self.config.request_timeout)),
        };
        let status = response.status();
        if status.is_success() {
            tracing::debug!(%namespace, %name, %webhook, status = status.as_u16(), "EDA webhook accepted the event");
            return Ok(Accepted {
                status: status.as_u16(),
            });
        }

        let html = is_html(response.headers());
        let retry_after = retry_after(response.headers());
        let raw = read_capped(&mut response, MAX_ERROR_BODY_BYTES).await;
        let snippet = snippet(&raw, html, &self.secrets());
        let err = target.status_error(status, retry_after, &snippet);
        tracing::debug!(%namespace, %name, %webhook, status = status.as_u16(), error = %err, "EDA trigger failed");
        Err(err)
    }

    fn secrets(&self) -> Vec<&str> {
        [&self.config.token, &self.config.hmac_secret]
            .into_iter()
            .flatten()
            .map(Secret::expose)
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// What a message names: the webhook and the path of its URL.
struct Target<'a> {
    webhook: Webhook,
    url: &'a Url,
}

impl Target<'_> {
    fn describe(&self) -> String {
        format!("EDA {} webhook POST {}", self.webhook, self.url.path())
    }

    fn transport(&self, err: reqwest::Error, timeout: Duration) -> ProviderError {
        let what = if err.is_timeout() {
            format!(
                "no answer within {}",
                cloudkit_provider::format_duration(timeout)
            )
        } else if let Some(kind) = io_kind(&err) {
            match kind {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
                std::io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
                std::io::ErrorKind::UnexpectedEof => "connection closed early".to_owned(),
                other => format!("connection failed ({other})"),
            }
        } else if err.is_connect() {
            "cannot connect".to_owned()
        } else {
            "request failed".to_owned()
        };
        ProviderError::transport_from(format!("{}: {what}", self.describe()), err.without_url())
    }

    fn status_error(
        &self,
        status: StatusCode,
        retry_after: Option<Duration>,
        snippet: &str,
    ) -> ProviderError {
        let answered = format!("{} answered HTTP {}", self.describe(), status_text(status));
        let with_body = |prefix: String| {
            if snippet.is_empty() {
                prefix
            } else {
                format!("{prefix}: {snippet}")
            }
        };
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ProviderError::Auth(with_body(
                format!("{answered} (check {ENV_TOKEN} and {ENV_HMAC_SECRET})"),
            )),
            StatusCode::NOT_FOUND => ProviderError::Configuration(with_body(format!(
                "{answered} (check {})",
                self.webhook.env_var()
            ))),
            StatusCode::TOO_MANY_REQUESTS => ProviderError::RateLimited {
                retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            },
            _ => ProviderError::transport(with_body(answered)),
        }
    }
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn io_kind(err: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut current: Option<&(dyn StdError + 'static)> = err.source();
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

fn is_html(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("html"))
}

/// `Retry-After` in seconds (the HTTP-date form is ignored), capped.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let secs: u64 = headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// Reads at most `cap` bytes of the body; a body that fails to arrive reads as what came so far.
async fn read_capped(response: &mut reqwest::Response, cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while out.len() < cap {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    out
}

/// One clean line out of an error body: credentials replaced, HTML tags dropped, whitespace and
/// control characters collapsed, at most [`MAX_SNIPPET_CHARS`] characters.
pub(crate) fn snippet(raw: &[u8], html: bool, secrets: &[&str]) -> String {
    let mut text = String::from_utf8_lossy(raw).into_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret, REDACTED);
    }
    let looks_html = html || text.trim_start().starts_with('<');
    let mut out = String::new();
    let mut in_tag = false;
    let mut pending_space = false;
    for c in text.chars() {
        if looks_html {
            match c {
                '<' => {
                    in_tag = true;
                    pending_space = true;
                    continue;
                }
                '>' if in_tag => {
                    in_tag = false;
                    continue;
                }
                _ if in_tag => continue,
                _ => {}
            }
        }
        if c.is_whitespace() || c.is_control() || c == char::REPLACEMENT_CHARACTER {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        out.push(c);
    }
    if out.chars().count() > MAX_SNIPPET_CHARS {
        let cut: String = out.chars().take(MAX_SNIPPET_CHARS).collect();
        out = format!("{}...", cut.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_known_vector() {
        let got = signature_header_value(
            &Secret::new("key"),
            b"The quick brown fox jumps over the lazy dog",
        );
        assert_eq!(
            got,
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn snippets() {
        let long = "x".repeat(5000);
        // (body, html content type, expected)
        let rows: [(&[u8], bool, &str); 8] = [
            (b"", false, ""),
            (b"Invalid authorization token", false, "Invalid authorization token"),
            (b"line one\nline two\r\n\tthree", false, "line one line two three"),
            (
                b"<html><head><title>502 Bad Gateway</title></head>\n<body><h1>502 Bad Gateway</h1></body></html>",
                true,
                "502 Bad Gateway 502 Bad Gateway",
            ),
            (b"<p>oops</p>", false, "oops"),
            (b"a < b", true, "a"),
            (b"echo: tok-123 and hm-456", false, "echo: [redacted] and [redacted]"),
            (b"<b>tok-123</b>", true, "[redacted]"),
        ];
        for (raw, html, want) in rows {
            assert_eq!(snippet(raw, html, &["tok-123", "hm-456"]), want, "{raw:?}");
        }
        let s = snippet(long.as_bytes(), false, &[]);
        assert_eq!(s.chars().count(), MAX_SNIPPET_CHARS + 3);
        assert!(s.ends_with("..."));
        // A multi-byte character cut by the read cap does not leave garbage behind.
        let cut = "é".repeat(10);
        assert_eq!(snippet(&cut.as_bytes()[..5], false, &[]), "éé");
    }

    #[test]
    fn retry_after_header() {
        let rows = [
            (Some("5"), Some(Duration::from_secs(5))),
            (Some(" 12 "), Some(Duration::from_secs(12))),
            (Some("999999"), Some(MAX_RETRY_AFTER)),
            (Some("Wed, 21 Oct 2015 07:28:00 GMT"), None),
            (Some("-1"), None),
            (None, None),
        ];
        for (value, want) in rows {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(RETRY_AFTER, v.parse().unwrap());
            }
            assert_eq!(retry_after(&headers), want, "{value:?}");
        }
    }
}
