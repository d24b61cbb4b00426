//! The wiring of a shard: the controllers select its CIs and Tenants, and it counts the CIs no
//! shard selects (see [`cloudkit_reconciler::shard`]).

use std::future::Future;

use cloudkit_api::ComputeInstance;
use cloudkit_feedback::FeedbackContext;
use cloudkit_reconciler::shard::{Membership, ShardMetrics, watch_shards};
use cloudkit_reconciler::tenant::TenantContext;
use cloudkit_reconciler::{Context, Metrics};
use kube::core::PartialObjectMeta;
use kube::{Api, Client};

use crate::config::{RunConfig, Shard, WatchScope};

/// The unowned CIs' gauge, registered when the operator is a shard.
pub fn metrics(shard: Option<&Shard>, registry: &mut Metrics) -> ShardMetrics {
    let metrics = ShardMetrics::new();
    if shard.is_some() {
        metrics.register(registry.registry_mut());
    }
    metrics
}

/// The CI controller of the shard.
pub fn select_cis(ctx: Context, shard: Option<&Shard>) -> Context {
    match shard {
        Some(s) => ctx.with_shard(s.selector.clone()),
        None => ctx,
    }
}

/// The Tenant controller of the shard.
pub fn select_tenants(ctx: TenantContext, shard: Option<&Shard>) -> TenantContext {
    match shard {
        Some(s) => ctx.with_shard(s.selector.clone()),
        None => ctx,
    }
}

/// The feedback controller of the shard.
pub fn select_feedback(ctx: FeedbackContext, shard: Option<&Shard>) -> FeedbackContext {
    match shard {
        Some(s) => ctx.with_shard(s.selector.clone()),
        None => ctx,
    }
}

/// Writes the shard's selector on its Lease and counts the CIs of the scope no shard selects,
/// until `stop`; nothing without a shard.
pub async fn watch(
    client: &Client,
    config: &RunConfig,
    metrics: ShardMetrics,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let Some(shard) = &config.shard else {
        return;
    };
    let cis: Api<PartialObjectMeta<ComputeInstance>> = match &config.scope {
        WatchScope::Namespace(ns) => Api::namespaced(client.clone(), ns),
        WatchScope::All => Api::all(client.clone()),
    };
    let membership = Membership {
        lease_namespace: shard.lease_namespace.clone(),
        lease_base: shard.lease_base.clone(),
        shard: shard.name.clone(),
        selector: shard.selector.clone(),
    };
    watch_shards(client.clone(), cis, membership, metrics, stop).await;
}
