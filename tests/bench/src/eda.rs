//! A stand-in for an EDA rulebook: a webhook that accepts the operator's POST at once and then
//! patches the CI as the production playbooks do (the `-aap` finalizer, the reconciled version
//! annotation; on deprovision the finalizer's removal), with a client whose writes are counted.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use cloudkit_aap_sim::playbook::{annotation_patch, finalizer_patch};
use cloudkit_api::ComputeInstance;
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio::net::TcpListener;

use crate::cluster::{Cluster, WriteCounter};

pub struct Responder {
    pub writes: Arc<WriteCounter>,
    base: String,
    server: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Ctx {
    api: Api<ComputeInstance>,
}

impl Responder {
    pub async fn start(cluster: &Cluster) -> anyhow::Result<Responder> {
        let writes = WriteCounter::shared();
        let client = cluster.counting_client(Arc::clone(&writes)).await?;
        let ctx = Ctx {
            api: cluster.cis(&client),
        };
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
    let Ok(ci) = serde_json::from_slice::<ComputeInstance>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    tokio::spawn(async move {
        let name = ci.metadata.name.clone().unwrap_or_default();
        let version = ci
            .status
            .as_ref()
            .and_then(|s| s.desired_config_version.clone())
            .unwrap_or_else(|| cloudkit_api::config_version(&ci.spec));
        if set_aap_finalizer(&ctx.api, &name, true).await {
            let _ = ctx
                .api
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(annotation_patch(&version)),
                )
                .await;
        }
    });
    StatusCode::OK
}

async fn deprovision(State(ctx): State<Ctx>, body: axum::body::Bytes) -> StatusCode {
    let Ok(ci) = serde_json::from_slice::<ComputeInstance>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    tokio::spawn(async move {
        let name = ci.metadata.name.clone().unwrap_or_default();
        set_aap_finalizer(&ctx.api, &name, false).await;
    });
    StatusCode::OK
}

/// Read, then write the finalizer list with the resourceVersion read (as `kubernetes.core.k8s`
/// does with a merge patch); retried on conflicts.
async fn set_aap_finalizer(api: &Api<ComputeInstance>, name: &str, add: bool) -> bool {
    for attempt in 0..20u64 {
        let ci = match api.get_opt(name).await {
            Ok(Some(ci)) => ci,
            _ => return false,
        };
        let current = ci.metadata.finalizers.clone().unwrap_or_default();
        let Some(patch) = finalizer_patch(&current, add, ci.metadata.resource_version.as_deref())
        else {
            return true;
        };
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => return true,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tokio::time::sleep(Duration::from_millis(10 * (attempt + 1))).await;
            }
            Err(_) => return false,
        }
    }
    false
}
