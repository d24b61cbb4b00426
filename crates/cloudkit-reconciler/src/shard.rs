//! What a shard knows of the others: each shard writes its selector into an annotation of its
//! Lease (`<lease name>-<shard>`), reads the other shards' Leases, and counts the CIs of the
//! scope that no shard selects ([`ShardMetrics`], `cloudkit_unowned_compute_instances`), so
//! that a CI no shard takes is reported rather than silently left alone. No coordinator: every
//! shard computes the same count from the same Leases.
//!
//! A shard counts as present as long as its Lease carries the annotation, whether a replica
//! holds it or not: a stopped shard still owns its CIs (they wait for it, and its Deployment
//! tells that it is down). Deleting a shard's Lease retires it; its CIs then count as unowned
//! until another shard selects them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use cloudkit_api::ComputeInstance;
use cloudkit_api::shard::{SHARD_SELECTOR_ANNOTATION, ShardSelector};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;
use tracing::{info, warn};

/// Field manager of the selector annotation on the shard's Lease.
pub const SHARD_FIELD_MANAGER: &str = "cloudkit-operator-shard";

/// How often the count is made again without a change (and the own Lease checked).
const RECOUNT_INTERVAL: Duration = Duration::from_secs(30);

/// Changes coming together are counted once, this long after the first.
const SETTLE: Duration = Duration::from_millis(200);

/// The gauge of the CIs no shard selects.
#[derive(Clone, Debug, Default)]
pub struct ShardMetrics {
    unowned: Gauge,
}

impl ShardMetrics {
    /// An unregistered gauge at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `cloudkit_unowned_compute_instances` in `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "unowned_compute_instances",
            "ComputeInstances of the watched scope that no shard's selector matches",
            self.unowned.clone(),
        );
    }

    /// The last count.
    pub fn unowned(&self) -> i64 {
        self.unowned.get()
    }
}

/// One shard: its selector and where its Lease is.
#[derive(Clone, Debug)]
pub struct Membership {
    /// Namespace of the shards' Leases; the client's default namespace when absent.
    pub lease_namespace: Option<String>,
    /// The Lease name before the shard's suffix: shards' Leases are `<lease_base>-<shard>`.
    pub lease_base: String,
    /// This shard's name.
    pub shard: String,
    /// This shard's selector.
    pub selector: ShardSelector,
}

impl Membership {
    /// This shard's Lease.
    pub fn lease_name(&self) -> String {
        format!("{}-{}", self.lease_base, self.shard)
    }

    fn is_shard_lease(&self, name: &str) -> bool {
        name.strip_prefix(&self.lease_base)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|shard| !shard.is_empty())
    }
}

/// The selectors of every shard, from the Leases seen and this shard's own.
pub fn shard_selectors(membership: &Membership, leases: &[Arc<Lease>]) -> Vec<ShardSelector> {
    let mut selectors = vec![membership.selector.clone()];
    let own = membership.lease_name();
    for lease in leases {
        let name = lease.name_any();
        if name == own || !membership.is_shard_lease(&name) {
            continue;
        }
        if let Some(text) = lease.annotations().get(SHARD_SELECTOR_ANNOTATION) {
            match ShardSelector::parse(text) {
                Ok(s) => selectors.push(s),
                Err(e) => {
                    warn!(lease = %name, error = %e, "a shard Lease with an unreadable selector")
                }
            }
        }
    }
    selectors
}

/// The names (`namespace/name`) of the objects whose labels no selector matches.
pub fn unowned<'a>(
    selectors: &[ShardSelector],
    objects: impl IntoIterator<Item = (String, &'a BTreeMap<String, String>)>,
) -> Vec<String> {
    objects
        .into_iter()
        .filter(|(_, labels)| !selectors.iter().any(|s| s.matches(labels)))
        .map(|(name, _)| name)
        .collect()
}

/// Writes this shard's selector on its Lease, watches the shards' Leases and the metadata of
/// the CIs of `cis` that no shard selects, and keeps the gauge of those CIs until `shutdown`
/// completes.
///
/// When every shard selects by values of one key (the recipe's `key=value`), the API server
/// filters the CI watch ([`ShardSelector::none_of`]): a shard then holds and hears of only the
/// unowned CIs, usually none, and the watch is started again whenever the set of shards
/// changes. With other selectors it watches the metadata of every CI of the scope and matches
/// their labels itself; the objects it keeps are trimmed to their names and labels.
pub async fn watch_shards(
    client: Client,
    cis: Api<PartialObjectMeta<ComputeInstance>>,
    membership: Membership,
    metrics: ShardMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let namespace = membership
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let leases: Api<Lease> = Api::namespaced(client, &namespace);
    let changed = Arc::new(Notify::new());

    let (lease_store, lease_writer) = reflector::store();
    let lease_watch = {
        let changed = Arc::clone(&changed);
        watcher(leases.clone(), watcher::Config::default().any_semantic())
            .default_backoff()
            .reflect(lease_writer)
            .touched_objects()
            .for_each(move |_| {
                changed.notify_one();
                futures::future::ready(())
            })
    };
    info!(
        lease = %membership.lease_name(),
        lease_namespace = %namespace,
        selector = %membership.selector,
        "counting the CIs no shard selects"
    );
    let counting = async {
        register(
            &leases,
            &membership.lease_name(),
            &membership.selector.to_string(),
        )
        .await;
        // Until the Leases are listed, the shards are not known.
        if lease_store.wait_until_ready().await.is_err() {
            return;
        }
        let mut last = None;
        loop {
            let filter =
                ShardSelector::none_of(&shard_selectors(&membership, &lease_store.state()));
            let mut config = watcher::Config::default().any_semantic();
            if let Some(filter) = &filter {
                config = config.labels_from(filter);
            }
            info!(
                filter = %filter.as_ref().map(ToString::to_string).unwrap_or_default(),
                "watching the CIs no shard selects (no filter: every CI, matched here)"
            );
            let (ci_store, ci_writer) = reflector::store();
            let ci_watch = {
                let changed = Arc::clone(&changed);
                watcher(cis.clone(), config)
                    .default_backoff()
                    .modify(trim)
                    .reflect(ci_writer)
                    .touched_objects()
                    .for_each(move |_| {
                        changed.notify_one();
                        futures::future::ready(())
                    })
            };
            let count = count_loop(
                &leases,
                &membership,
                &lease_store,
                &ci_store,
                &changed,
                &metrics,
                &filter,
                &mut last,
            );
            tokio::select! {
                _ = ci_watch => return,
                // The shards changed so that the filter did: watch again.
                _ = count => {}
            }
        }
    };
    tokio::select! {
        _ = shutdown => {}
        _ = lease_watch => {}
        _ = counting => {}
    }
}

/// What the count reads of a CI: its name, namespace and labels.
fn trim(ci: &mut PartialObjectMeta<ComputeInstance>) {
    let meta = &mut ci.metadata;
    meta.managed_fields = None;
    meta.annotations = None;
    meta.owner_references = None;
    meta.finalizers = None;
}

/// Counts the unowned CIs of `ci_store` whenever something changed (at least every
/// [`RECOUNT_INTERVAL`]); returns when the shards changed so that the CIs' `filter` no longer
/// is theirs.
#[allow(clippy::too_many_arguments)]
async fn count_loop(
    leases: &Api<Lease>,
    membership: &Membership,
    lease_store: &Store<Lease>,
    ci_store: &Store<PartialObjectMeta<ComputeInstance>>,
    changed: &Notify,
    metrics: &ShardMetrics,
    filter: &Option<kube::core::Selector>,
    last: &mut Option<usize>,
) {
    let own = membership.lease_name();
    let text = membership.selector.to_string();
    // Until the CIs are listed, a count would be wrong.
    if ci_store.wait_until_ready().await.is_err() {
        return;
    }
    loop {
        let state = lease_store.state();
        let registered = state
            .iter()
            .find(|l| l.name_any() == own)
            .and_then(|l| l.annotations().get(SHARD_SELECTOR_ANNOTATION).cloned());
        if registered.as_deref() != Some(text.as_str()) {
            // Gone (deleted by hand) or changed: this shard is running, so it says so again.
            register(leases, &own, &text).await;
        }
        let selectors = shard_selectors(membership, &state);
        if ShardSelector::none_of(&selectors) != *filter {
            return;
        }
        let cis = ci_store.state();
        let names = unowned(
            &selectors,
            cis.iter().map(|ci| {
                (
                    format!("{}/{}", ci.namespace().unwrap_or_default(), ci.name_any()),
                    ci.labels(),
                )
            }),
        );
        let n = names.len();
        metrics.unowned.set(i64::try_from(n).unwrap_or(i64::MAX));
        if *last != Some(n) {
            if n > 0 {
                let sample: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
                warn!(
                    unowned = n,
                    shards = selectors.len(),
                    examples = ?sample,
                    "ComputeInstances that no shard's selector matches: no operator reconciles them"
                );
            } else if last.is_some() {
                info!(
                    shards = selectors.len(),
                    "every ComputeInstance has a shard"
                );
            }
            *last = Some(n);
        }
        let _ = tokio::time::timeout(RECOUNT_INTERVAL, changed.notified()).await;
        tokio::time::sleep(SETTLE).await;
    }
}

/// Writes the selector annotation on the Lease `name` (creating it when absent).
async fn register(leases: &Api<Lease>, name: &str, selector: &str) {
    let body = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": name,
            "annotations": { SHARD_SELECTOR_ANNOTATION: selector },
        },
    });
    let params = PatchParams::apply(SHARD_FIELD_MANAGER).force();
    if let Err(e) = leases.patch(name, &params, &Patch::Apply(&body)).await {
        warn!(lease = %name, error = %e, "writing the shard's selector on its Lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::api::ObjectMeta;

    fn lease(name: &str, selector: Option<&str>) -> Arc<Lease> {
        Arc::new(Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: selector
                    .map(|s| [(SHARD_SELECTOR_ANNOTATION.to_string(), s.to_string())].into()),
                ..ObjectMeta::default()
            },
            spec: None,
        })
    }

    fn membership(shard: &str, selector: &str) -> Membership {
        Membership {
            lease_namespace: None,
            lease_base: "cloudkit".into(),
            shard: shard.into(),
            selector: ShardSelector::parse(selector).unwrap(),
        }
    }

    #[test]
    fn the_shards_are_the_annotated_leases_of_the_base_name() {
        let me = membership("a", "shard=a");
        let leases = [
            lease("cloudkit-a", Some("shard=stale")),
            lease("cloudkit-b", Some("shard=b")),
            lease("cloudkit-c", None),
            lease("cloudkit-d", Some("shard in (")),
            lease("cloudkit", Some("shard=base")),
            lease("other-e", Some("shard=e")),
            lease("cloudkit-", Some("shard=empty")),
        ];
        let texts: Vec<String> = shard_selectors(&me, &leases)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(texts, ["shard=a", "shard=b"], "own from memory, then b");
    }

    #[test]
    fn unowned_are_the_objects_no_selector_matches() {
        let selectors = [
            ShardSelector::parse("shard=a").unwrap(),
            ShardSelector::parse("shard in (b,c)").unwrap(),
        ];
        let l = |v: Option<&str>| -> BTreeMap<String, String> {
            v.map(|v| [("shard".to_string(), v.to_string())].into())
                .unwrap_or_default()
        };
        let objects = [
            ("ns/a", l(Some("a"))),
            ("ns/c", l(Some("c"))),
            ("ns/d", l(Some("d"))),
            ("ns/none", l(None)),
        ];
        let names = unowned(
            &selectors,
            objects.iter().map(|(n, labels)| (n.to_string(), labels)),
        );
        assert_eq!(names, ["ns/d", "ns/none"]);
    }
}
