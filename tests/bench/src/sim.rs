//! The AWX simulator in this process, in playbook mode against the section's API server, served
//! behind a tap that timestamps every request the operator makes (arrival and completion, and for
//! launches the CI named in the payload).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cloudkit_aap_sim::{Phases, SimConfig, SimHandle, Simulator, TemplateSpec};
use tokio::net::TcpListener;

use crate::cluster::{Cluster, WriteCounter};

pub const TOKEN: &str = "bench-token";
pub const PROVISION: &str = "provision_vm";
pub const DEPROVISION: &str = "deprovision_vm";

/// One request as the tap saw it: when it arrived.
#[derive(Clone, Debug)]
pub struct Seen {
    pub start: Instant,
    /// For launches: `metadata.name` of the CI in the payload.
    pub ci: Option<String>,
}

#[derive(Debug, Default)]
pub struct Tap {
    in_flight: AtomicI64,
    max_in_flight: AtomicI64,
    seen: Mutex<Vec<Seen>>,
}

impl Tap {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn max_in_flight(&self) -> i64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    pub fn reset_max_in_flight(&self) {
        self.max_in_flight
            .store(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
    }
}

async fn tap_layer(State(tap): State<Arc<Tap>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let now = tap.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    tap.max_in_flight.fetch_max(now, Ordering::Relaxed);
    let mut ci = None;
    let launch = req.method() == http::Method::POST && req.uri().path().ends_with("/launch/");
    let req = if launch {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 64 << 20)
            .await
            .unwrap_or_default();
        ci = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v.pointer("/extra_vars/ansible_eda/event/payload/metadata/name")
                    .and_then(|n| n.as_str().map(str::to_string))
            });
        Request::from_parts(parts, Body::from(bytes))
    } else {
        req
    };
    let response = next.run(req).await;
    tap.in_flight.fetch_sub(1, Ordering::Relaxed);
    let seen = Seen { start, ci };
    tap.seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(seen);
    response
}

/// How long simulated jobs take.
#[derive(Clone, Copy, Debug)]
pub enum Speed {
    /// Fast mode: the default phases (0.5 s, 0.5 s, 3 s) pass in milliseconds.
    Fast,
    /// Real time, provision jobs pending for a second and then running for an hour.
    LongRunning,
}

pub struct Sim {
    pub handle: SimHandle,
    pub tap: Arc<Tap>,
    /// Writes of the simulated playbooks to the API server.
    pub writes: Arc<WriteCounter>,
    api_url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Sim {
    pub async fn start(cluster: &Cluster, speed: Speed) -> anyhow::Result<Sim> {
        let writes = WriteCounter::shared();
        let client = cluster.counting_client(Arc::clone(&writes)).await?;
        let config = SimConfig {
            request_log_capacity: 1_000_000,
            ..SimConfig::default()
        };
        let mut builder = Simulator::builder().config(config).token(TOKEN).seed(1);
        builder = match speed {
            Speed::Fast => builder
                .fast()
                .template(TemplateSpec::job(PROVISION))
                .template(TemplateSpec::job(DEPROVISION)),
            Speed::LongRunning => builder
                .template(TemplateSpec::job(PROVISION).with_phases(Phases::new(
                    Duration::from_secs(1),
                    Duration::ZERO,
                    Duration::from_secs(3600),
                )))
                .template(TemplateSpec::job(DEPROVISION).with_phases(Phases::new(
                    Duration::from_millis(100),
                    Duration::ZERO,
                    Duration::from_millis(100),
                ))),
        };
        let handle = builder
            .kube_client(client)
            .spawn("127.0.0.1:0".parse()?)
            .await?;
        let tap = Arc::new(Tap::default());
        let router = handle
            .simulator()
            .router()
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&tap),
                tap_layer,
            ));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Ok(Sim {
            handle,
            tap,
            writes,
            api_url: format!("http://{addr}/api"),
            server,
        })
    }

    /// The `CLOUDKIT_AAP_URL` for the operator: the tap in front of the simulator.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    pub fn launches(&self) -> u64 {
        self.handle.simulator().stats().launches
    }

    /// The largest number of launches any launch key got (1 = no duplicate launch).
    pub fn max_launches_per_key(&self) -> u64 {
        self.handle
            .simulator()
            .stats()
            .launches_by_key
            .values()
            .copied()
            .max()
            .unwrap_or(0)
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.server.abort();
    }
}
