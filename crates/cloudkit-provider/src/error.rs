use std::error::Error as StdError;
use std::time::Duration;

/// The broad class of a [`ProviderError`], for decisions that do not care about details.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderErrorKind {
    /// Too many requests; retry later.
    RateLimited,
    /// The thing asked for does not exist (a template, a job).
    NotFound,
    /// The provider refuses the operation in the current state.
    NotAllowed,
    /// Authentication or authorisation failed (HTTP 401/403).
    Auth,
    /// The operator or the provider is set up wrongly; retrying will not help until a human acts.
    Configuration,
    /// The request did not get a usable answer (connection, timeout, 5xx, malformed body).
    Transport,
}

impl ProviderErrorKind {
    /// A short stable name, usable as a metric label or an event reason suffix.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::RateLimited => "RateLimited",
            ProviderErrorKind::NotFound => "NotFound",
            ProviderErrorKind::NotAllowed => "NotAllowed",
            ProviderErrorKind::Auth => "Auth",
            ProviderErrorKind::Configuration => "Configuration",
            ProviderErrorKind::Transport => "Transport",
        }
    }
}

/// An error from a provider. Messages are short, one line, and never contain a credential.
///
/// Code that wraps it in its own error type can still find it with
/// [`ProviderError::find_in`], which walks the `source()` chain.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Too many requests; nothing was sent or the provider refused. Retry after the duration.
    #[error("rate limited: retry after {}", format_duration(*retry_after))]
    RateLimited {
        /// How long until a retry can succeed.
        retry_after: Duration,
    },
    /// The thing asked for does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The provider refuses the operation in the current state.
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// Authentication or authorisation failed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Set up wrongly; a human must act.
    #[error("configuration error: {0}")]
    Configuration(String),
    /// No usable answer.
    #[error("transport error: {message}")]
    Transport {
        /// What went wrong, in one line.
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    },
}

impl ProviderError {
    /// A transport error without an underlying error value.
    pub fn transport(message: impl Into<String>) -> Self {
        ProviderError::Transport {
            message: message.into(),
            source: None,
        }
    }

    /// A transport error caused by `source`.
    pub fn transport_from(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        ProviderError::Transport {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The class of the error.
    pub fn kind(&self) -> ProviderErrorKind {
        match self {
            ProviderError::RateLimited { .. } => ProviderErrorKind::RateLimited,
            ProviderError::NotFound(_) => ProviderErrorKind::NotFound,
            ProviderError::NotAllowed(_) => ProviderErrorKind::NotAllowed,
            ProviderError::Auth(_) => ProviderErrorKind::Auth,
            ProviderError::Configuration(_) => ProviderErrorKind::Configuration,
            ProviderError::Transport { .. } => ProviderErrorKind::Transport,
        }
    }

    /// For a rate-limit error, how long to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the same request may succeed later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind(),
            ProviderErrorKind::RateLimited | ProviderErrorKind::Transport
        )
    }

    /// The first `ProviderError` in the `source()` chain of `err`, including `err` itself.
    pub fn find_in<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a ProviderError> {
        let mut current: Option<&(dyn StdError + 'static)> = Some(err);
        while let Some(e) = current {
            if let Some(found) = e.downcast_ref::<ProviderError>() {
                return Some(found);
            }
            current = e.source();
        }
        None
    }
}

/// A short human form of a duration for messages: `250ms`, `3s`, `1.5s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reconcile failed")]
    struct Wrapper(#[source] ProviderError);

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Wrapper);

    #[test]
    fn found_through_wrapping() {
        let rows = [
            (
                ProviderError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                },
                ProviderErrorKind::RateLimited,
            ),
            (
                ProviderError::NotFound("template x".into()),
                ProviderErrorKind::NotFound,
            ),
            (
                ProviderError::NotAllowed("x".into()),
                ProviderErrorKind::NotAllowed,
            ),
            (ProviderError::Auth("401".into()), ProviderErrorKind::Auth),
            (
                ProviderError::Configuration("x".into()),
                ProviderErrorKind::Configuration,
            ),
            (
                ProviderError::transport("reset"),
                ProviderErrorKind::Transport,
            ),
        ];
        for (err, kind) in rows {
            let outer = Outer(Wrapper(err));
            let found = ProviderError::find_in(&outer).map(ProviderError::kind);
            assert_eq!(found, Some(kind));
        }
        let plain = std::io::Error::other("no provider here");
        assert!(ProviderError::find_in(&plain).is_none());
    }

    #[test]
    fn transport_keeps_its_source() {
        let err = ProviderError::transport_from("connect", std::io::Error::other("refused"));
        let source = StdError::source(&err).map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("refused"));
    }

    #[test]
    fn messages_and_helpers() {
        let rl = ProviderError::RateLimited {
            retry_after: Duration::from_millis(1500),
        };
        assert_eq!(rl.to_string(), "rate limited: retry after 1.5s");
        assert_eq!(rl.retry_after(), Some(Duration::from_millis(1500)));
        assert!(rl.is_transient());
        assert_eq!(
            ProviderError::RateLimited {
                retry_after: Duration::from_secs(3)
            }
            .to_string(),
            "rate limited: retry after 3s"
        );
        assert_eq!(
            ProviderError::RateLimited {
                retry_after: Duration::from_millis(250)
            }
            .to_string(),
            "rate limited: retry after 250ms"
        );
        assert!(!ProviderError::Auth("x".into()).is_transient());
        assert!(!ProviderError::Configuration("x".into()).is_transient());
        assert_eq!(ProviderError::Auth("x".into()).retry_after(), None);
    }
}
