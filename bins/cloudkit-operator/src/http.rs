//! `/healthz`, `/readyz` and `/metrics`: the probes on their own address, `/metrics` on its own
//! (plain, or HTTPS for callers the API server authenticates and authorizes, as
//! controller-runtime serves it), or all three together in plain HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
        .with_state(Arc::new(Guarded { metrics, client }));
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
                let tls = match acceptor.accept(tcp).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        debug!(%peer, error = %e, "metrics server: TLS handshake failed");
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

struct Guarded {
    metrics: Arc<Metrics>,
    client: kube::Client,
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
    match authorize(&guarded.client, token, request.method().as_str()).await {
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

#[derive(Debug, PartialEq, Eq)]
enum Access {
    Allowed,
    Unauthenticated,
    Forbidden(String),
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
