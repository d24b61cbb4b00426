//! A stand-in for an EDA rulebook's webhook source that checks the Bearer token and the HMAC
//! signature of every call, answers a share of calls with an error whose body echoes the
//! credentials it received (a careless proxy would), and otherwise does to the CI what the
//! production playbooks do: the `-aap` finalizer and the reconciled-version annotation on
//! provision, the finalizer's removal on deprovision.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use cloudkit_aap_sim::playbook::{self, Step, Target};
use hmac::{KeyInit as _, Mac as _};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::net::TcpListener;

use crate::world::{World, lock};

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub accepted: u64,
    pub failed: u64,
    pub bad_signature: u64,
    /// Accepted provision calls per CI name.
    pub provisions_by_ci: BTreeMap<String, u64>,
}

#[derive(Clone)]
struct Ctx {
    client: kube::Client,
    token: String,
    hmac: String,
    error_rate: f64,
    /// How long the "playbook" takes before it reports (annotation, finalizer removal).
    work: Duration,
    rng: Arc<Mutex<StdRng>>,
    stats: Arc<Mutex<Stats>>,
}

pub struct Webhook {
    base: String,
    stats: Arc<Mutex<Stats>>,
    server: tokio::task::JoinHandle<()>,
}

impl Webhook {
    pub async fn start(
        world: &World,
        token: &str,
        hmac: &str,
        error_rate: f64,
        work: Duration,
        seed: u64,
    ) -> anyhow::Result<Webhook> {
        let stats = Arc::new(Mutex::new(Stats::default()));
        let ctx = Ctx {
            client: world.client.clone(),
            token: token.to_string(),
            hmac: hmac.to_string(),
            error_rate,
            work,
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            stats: Arc::clone(&stats),
        };
        let app = Router::new().route("/{kind}", post(call)).with_state(ctx);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Webhook {
            base: format!("http://{addr}"),
            stats,
            server,
        })
    }

    pub fn url(&self, kind: &str) -> String {
        format!("{}/{kind}", self.base)
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn call(
    State(ctx): State<Ctx>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let authorization = header("authorization");
    let signature = header("x-hub-signature-256");
    let expected = match hmac::Hmac::<sha2::Sha256>::new_from_slice(ctx.hmac.as_bytes()) {
        Ok(mut mac) => {
            mac.update(&body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if authorization != format!("Bearer {}", ctx.token) || signature != expected {
        lock(&ctx.stats).bad_signature += 1;
        return (StatusCode::UNAUTHORIZED, "bad credentials".into());
    }
    let fail = lock(&ctx.rng).random::<f64>() < ctx.error_rate;
    if fail {
        lock(&ctx.stats).failed += 1;
        // What a careless gateway might say: the credentials it received, verbatim.
        let status = if lock(&ctx.rng).random::<bool>() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_GATEWAY
        };
        return (
            status,
            format!(
                "upstream failed for request with authorization: {authorization}; \
                 hmac key {}; signature {signature}",
                ctx.hmac
            ),
        );
    }
    let target = match serde_json::from_slice::<serde_json::Value>(&body)
        .map_err(|e| e.to_string())
        .and_then(|payload| Target::from_payload(&payload))
    {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, e),
    };
    {
        let mut stats = lock(&ctx.stats);
        stats.accepted += 1;
        if kind == "provision" {
            *stats
                .provisions_by_ci
                .entry(target.name.clone())
                .or_default() += 1;
        }
    }
    // What the rulebook's playbooks do, after `work`.
    let steps: &[Step] = if kind == "provision" {
        &[Step::AddFinalizer, Step::WriteReconciledVersion]
    } else {
        &[Step::RemoveFinalizer]
    };
    tokio::spawn(async move {
        for (i, step) in steps.iter().enumerate() {
            if i + 1 == steps.len() {
                tokio::time::sleep(ctx.work).await;
            }
            if playbook::run(ctx.client.clone(), &target, *step)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    (StatusCode::OK, String::new())
}
