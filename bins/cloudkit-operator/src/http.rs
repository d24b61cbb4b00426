//! `/healthz`, `/readyz` and `/metrics`: the probes on their own address, `/metrics` on its own
//! (plain, or HTTPS for callers the API server authenticates and authorizes, as
//! controller-runtime serves it), or all three together in plain HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cloudkit_reconciler::Metrics;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest as _, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

/// The server tasks end when `stop` turns true.
pub type Stop = watch::Receiver<bool>;

/// `/healthz` and `/readyz`: ready once `ready` is true.
pub fn probes(ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = Arc::clone(&ready);
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        )
}

/// `/metrics` to anyone.
pub fn open_metrics(metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move { metrics_text(&metrics) }
        }),
    )
}

fn metrics_text(metrics: &Metrics) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// Binds `address` (`setting` names the variable in the error) and serves `app` in plain HTTP
/// until `stop`. Returns the bound address at once.
pub async fn serve(
    setting: &str,
    address: SocketAddr,
    app: Router,
    stop: Stop,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = bind(setting, address).await?;
    let bound = listener.local_addr()?;
    let handle = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped(stop))
            .await
        {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok((bound, handle))
}

async fn bind(setting: &str, address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("{setting}: cannot listen on {address}: {e}"))
}

async fn stopped(mut stop: Stop) {
    let _ = stop.wait_for(|s| *s).await;
}

/// `/metrics` over HTTPS (HTTP/1.1), served only to callers whose bearer token passes a
/// TokenReview and whose user may `get` the non-resource URL `/metrics` (SubjectAccessReview):
/// 401 without a valid token, 403 without the permission. The certificate is read from `cert`
/// (certificate, key) or made up, self-signed, at start-up.
pub async fn serve_secure_metrics(
    setting: &str,
    address: SocketAddr,
    metrics: Arc<Metrics>,
    client: kube::Client,
    cert: Option<&(PathBuf, PathBuf)>,
    stop: Stop,
) -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let tls = Arc::new(tls_config(cert)?);
    let listener = bind(setting, address).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(authorized_metrics))
        .with_state(Arc::new(Guarded {
            metrics,
            client,
            reviews: Reviews::default(),
        }));
    let acceptor = TlsAcceptor::from(tls);
    let handle = tokio::spawn(async move {
        let mut stop_accepting = stop.clone();
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        warn!(error = %e, "metrics server: accept failed");
                        continue;
                    }
                },
                _ = stop_accepting.wait_for(|s| *s) => break,
            };
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(app.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        debug!(%peer, error = %e, "metrics server: TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        debug!(%peer, "metrics server: TLS handshake timed out");
                        return;
                    }
                };
                let connection = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service);
                tokio::select! {
                    r = connection => if let Err(e) = r {
                        debug!(%peer, error = %e, "metrics server: connection ended");
                    },
                    _ = stopped(stop) => {}
                }
            });
        }
    });
    Ok((bound, handle))
}

/// How long a client may take over its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the reviews of one request may take.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an answer is reused for the same token and verb: Prometheus scrapes every 15 to 60 s,
/// and two API calls per scrape per replica add up in large clusters (controller-runtime's
/// delegating authenticator and authorizer cache their answers too). A refusal is kept shorter,
/// so a role just granted takes effect soon.
const REVIEW_TTL: Duration = Duration::from_secs(60);
/// How long a refusal (401 or 403) is reused.
const REFUSAL_TTL: Duration = Duration::from_secs(5);
/// Answers kept at most; expired ones are dropped first, then all.
const REVIEW_CACHE_MAX: usize = 256;

struct Guarded {
    metrics: Arc<Metrics>,
    client: kube::Client,
    reviews: Reviews,
}

/// Recent review answers, keyed by a SHA-256 of the verb and the token (the token itself is not
/// kept).
#[derive(Default)]
struct Reviews {
    answers: Mutex<HashMap<[u8; 32], (Instant, Access)>>,
}

impl Reviews {
    fn key(token: &str, method: &str) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update(method.as_bytes());
        hash.update([0]);
        hash.update(token.as_bytes());
        hash.finalize().into()
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<Access> {
        let answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        answers
            .get(key)
            .filter(|(at, access)| now.duration_since(*at) < access.ttl())
            .map(|(_, access)| access.clone())
    }

    fn put(&self, key: [u8; 32], access: Access, now: Instant) {
        let mut answers = self.answers.lock().unwrap_or_else(|e| e.into_inner());
        if answers.len() >= REVIEW_CACHE_MAX {
            answers.retain(|_, (at, access)| now.duration_since(*at) < access.ttl());
            if answers.len() >= REVIEW_CACHE_MAX {
                answers.clear();
            }
        }
        answers.insert(key, (now, access));
    }
}

async fn authorized_metrics(State(guarded): State<Arc<Guarded>>, request: Request) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return (StatusCode::UNAUTHORIZED, "Unauthorized").into_response();
    };
    let method = request.method().as_str();
    let key = Reviews::key(token, method);
    let answer = match guarded.reviews.get(&key, Instant::now()) {
        Some(access) => Ok(access),
        None => {
            match tokio::time::timeout(REVIEW_TIMEOUT, authorize(&guarded.client, token, method))
                .await
            {
                Ok(Ok(access)) => {
                    guarded.reviews.put(key, access.clone(), Instant::now());
                    Ok(access)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "no answer from the API server within {}s",
                    REVIEW_TIMEOUT.as_secs()
                )),
            }
        }
    };
    match answer {
        Ok(Access::Allowed) => metrics_text(&guarded.metrics),
        Ok(Access::Unauthenticated) => (StatusCode::UNAUTHORIZED, "Unauthorized").into_response(),
        Ok(Access::Forbidden(user)) => {
            debug!(%user, "metrics: forbidden");
            (
                StatusCode::FORBIDDEN,
                format!("Forbidden (user={user}, verb=get, resource=, subresource=)"),
            )
                .into_response()
        }
        Err(e) => {
            warn!(error = %e, "metrics: cannot check the caller's token");
            (StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error").into_response()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Access {
    Allowed,
    Unauthenticated,
    Forbidden(String),
}

impl Access {
    fn ttl(&self) -> Duration {
        match self {
            Access::Allowed => REVIEW_TTL,
            Access::Unauthenticated | Access::Forbidden(_) => REFUSAL_TTL,
        }
    }
}

/// A TokenReview of `token`, then a SubjectAccessReview of its user for `method` (lowercase, the
/// verb) on the non-resource URL `/metrics`.
async fn authorize(client: &kube::Client, token: &str, method: &str) -> kube::Result<Access> {
    let review = Api::<TokenReview>::all(client.clone())
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.to_string()),
                    audiences: None,
                },
                ..TokenReview::default()
            },
        )
        .await?;
    let status = review.status.unwrap_or_default();
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(user)) => user,
        _ => return Ok(Access::Unauthenticated),
    };
    let name = user.username.clone().unwrap_or_default();
    let access = Api::<SubjectAccessReview>::all(client.clone())
        .create(
            &PostParams::default(),
            &SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: user.username,
                    groups: user.groups,
                    uid: user.uid,
                    extra: user.extra,
                    non_resource_attributes: Some(NonResourceAttributes {
                        path: Some("/metrics".to_string()),
                        verb: Some(method.to_ascii_lowercase()),
                    }),
                    ..SubjectAccessReviewSpec::default()
                },
                ..SubjectAccessReview::default()
            },
        )
        .await?;
    Ok(match access.status {
        Some(s) if s.allowed => Access::Allowed,
        _ => Access::Forbidden(name),
    })
}

fn tls_config(cert: Option<&(PathBuf, PathBuf)>) -> anyhow::Result<rustls::ServerConfig> {
    use crate::config::ENV_METRICS_CERT_PATH;
    let (chain, key) = match cert {
        Some((cert, key)) => {
            let read = |path: &Path, e: &dyn std::fmt::Display| {
                anyhow::anyhow!("{ENV_METRICS_CERT_PATH}: {}: {e}", path.display())
            };
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| read(cert, &e))?;
            if chain.is_empty() {
                return Err(read(cert, &"no certificate"));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| read(key, &e))?;
            (chain, key)
        }
        None => {
            let names = vec!["localhost".to_string(), "cloudkit-operator".to_string()];
            let generated = rcgen::generate_simple_self_signed(names)
                .map_err(|e| anyhow::anyhow!("cannot make a self-signed certificate: {e}"))?;
            let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
            (vec![generated.cert.der().clone()], key.into())
        }
    };
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("{ENV_METRICS_CERT_PATH}: unusable certificate: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn review_answers_are_reused_per_token_and_verb_for_a_while() {
        let reviews = Reviews::default();
        let t0 = Instant::now();
        let key = Reviews::key("token-a", "GET");
        assert_ne!(key, Reviews::key("token-b", "GET"));
        assert_ne!(key, Reviews::key("token-a", "HEAD"));
        assert_eq!(reviews.get(&key, t0), None);
        reviews.put(key, Access::Allowed, t0);
        assert_eq!(
            reviews.get(&key, t0 + Duration::from_secs(59)),
            Some(Access::Allowed)
        );
        assert_eq!(reviews.get(&key, t0 + REVIEW_TTL), None, "expired");
        // A refusal is kept for seconds only: a role just granted takes effect soon.
        let refused = Reviews::key("token-c", "GET");
        reviews.put(refused, Access::Forbidden("alice".into()), t0);
        assert_eq!(
            reviews.get(&refused, t0 + Duration::from_secs(4)),
            Some(Access::Forbidden("alice".into()))
        );
        assert_eq!(reviews.get(&refused, t0 + REFUSAL_TTL), None);
        // Bounded: a flood of tokens never holds more than the cap.
        for i in 0..(REVIEW_CACHE_MAX * 3) {
            reviews.put(Reviews::key(&format!("t{i}"), "GET"), Access::Allowed, t0);
        }
        let held = reviews
            .answers
            .lock()
            .map(|a| a.len())
            .unwrap_or(usize::MAX);
        assert!(held <= REVIEW_CACHE_MAX, "{held}");
    }

    #[test]
    fn the_metrics_certificate_is_read_or_made_up() {
        assert!(tls_config(None).is_ok(), "self-signed");
        let dir = std::env::temp_dir().join(format!("cloudkit-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let generated =
            rcgen::generate_simple_self_signed(vec!["metrics.example".to_string()]).expect("cert");
        let files = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&files.0, generated.cert.pem()).expect("write");
        std::fs::write(&files.1, generated.signing_key.serialize_pem()).expect("write");
        assert!(tls_config(Some(&files)).is_ok());
        std::fs::write(&files.1, "not a key").expect("write");
        let e = tls_config(Some(&files)).expect_err("no key");
        let line = e.to_string();
        assert!(line.starts_with("CLOUDKIT_METRICS_CERT_PATH: "), "{line}");
        assert!(line.contains("tls.key"), "{line}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
