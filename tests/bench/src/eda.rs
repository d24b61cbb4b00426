//! A stand-in for an EDA rulebook: a webhook that accepts the operator's POST at once and then
//! patches the CI as the production playbooks do (the `-aap` finalizer, the reconciled version
//! annotation; on deprovision the finalizer's removal), with a client whose writes are counted.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use cloudkit_aap_sim::playbook::{self, Step, Target};
use tokio::net::TcpListener;

use crate::cluster::{Cluster, WriteCounter};

pub struct Responder {
    pub writes: Arc<WriteCounter>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Ctx {
    client: kube::Client,
}

impl Responder {
    pub async fn start(cluster: &Cluster) -> anyhow::Result<Responder> {
        let writes = WriteCounter::shared();
        let client = cluster.counting_client(Arc::clone(&writes)).await?;
        let ctx = Ctx { client };
        let app = Router::new()
            .route("/provision", post(provision))
            .route("/deprovision", post(deprovision))
            .with_state(ctx);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Responder {
            writes,
            base: format!("http://{addr}"),
            server,
        })
    }

    pub fn provision_url(&self) -> String {
        format!("{}/provision", self.base)
    }

    pub fn deprovision_url(&self) -> String {
        format!("{}/deprovision", self.base)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn provision(State(ctx): State<Ctx>, body: axum::body::Bytes) -> StatusCode {
    accept(
        ctx,
        &body,
        &[Step::AddFinalizer, Step::WriteReconciledVersion],
    )
}

async fn deprovision(State(ctx): State<Ctx>, body: axum::body::Bytes) -> StatusCode {
    accept(ctx, &body, &[Step::RemoveFinalizer])
}

/// Accepts the event at once and runs the playbook's steps afterwards.
fn accept(ctx: Ctx, body: &[u8], steps: &'static [Step]) -> StatusCode {
    let target = serde_json::from_slice::<serde_json::Value>(body)
        .map_err(|e| e.to_string())
        .and_then(|payload| Target::from_payload(&payload));
    let Ok(target) = target else {
        return StatusCode::BAD_REQUEST;
    };
    tokio::spawn(async move {
        for step in steps {
            if playbook::run(ctx.client.clone(), &target, *step)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    StatusCode::OK
}
