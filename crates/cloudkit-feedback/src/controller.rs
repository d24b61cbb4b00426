//! The feedback controller (SPEC 13): watches ComputeInstances, fetches each labelled CI's
//! object from the fulfillment service, asks [`decide`] for a plan and carries its steps out in
//! order, stopping at the first one that fails.
//!
//! - Finalizer writes are JSON merge patches carrying the `resourceVersion` the plan was based
//!   on, and keep every other finalizer; a 409 ends the pass (the fresh object is on its way
//!   through the watch).
//! - A failed `Update` or an unreachable service records a Warning event, counts a failed call
//!   and retries the CI with capped exponential backoff ([`backoff`], at most [`MAX_BACKOFF`]).
//! - A failed `Signal` is logged, not retried: the finalizer is already gone.
//! - The token never reaches a log, an event or a metric: errors carry no token.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudkit_api::ComputeInstance;
use cloudkit_api::cache::drop_unread_metadata;
use cloudkit_api::shard::ShardSelector;
use futures::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use crate::client::{CallError, FulfillmentClient};
use crate::plan::{
    FEEDBACK_FINALIZER, Fetch, MAX_BACKOFF, Step, WarningReason, backoff, decide, object_id,
};

/// Field manager and event reporter of the controller's writes.
pub const FIELD_MANAGER: &str = "cloudkit-operator";

/// When a pass that worked from a stale object runs again, unless the fresh object's watch event
/// comes first.
const STALE_RETRY: Duration = Duration::from_millis(500);

type Labels = Vec<(&'static str, String)>;

/// The controller's metrics, to be registered in the operator's registry.
#[derive(Clone, Debug, Default)]
pub struct FeedbackMetrics {
    failed_calls: Family<Labels, Counter>,
}

impl FeedbackMetrics {
    /// Unregistered metrics.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers every metric in `registry` (under its prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "fulfillment_call_errors",
            "Calls to the fulfillment service that failed, by method and kind \
             (unreachable, timeout, token, or the gRPC status code)",
            self.failed_calls.clone(),
        );
    }

    fn failed(&self, method: &'static str, error: &CallError) {
        self.failed_calls
            .get_or_create(&vec![
                ("method", method.to_string()),
                ("kind", error_kind(error)),
            ])
            .inc();
    }
}

/// A short label for `error` that never holds the token.
fn error_kind(error: &CallError) -> String {
    match error {
        CallError::TokenFile { .. }
        | CallError::EmptyToken { .. }
        | CallError::InvalidToken { .. } => "token".to_string(),
        CallError::Timeout { .. } => "timeout".to_string(),
        CallError::Unreachable { .. } => "unreachable".to_string(),
        CallError::Status { status, .. } => format!("{:?}", status.code()),
        CallError::MissingObject { .. } => "missing_object".to_string(),
    }
}

/// Errors of a pass that are not the fulfillment service's (those are retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The object has no namespace or name.
    #[error("object without namespace or name")]
    Incomplete,
}

/// Shared state of every pass.
pub struct FeedbackContext {
    client: Client,
    fulfillment: FulfillmentClient,
    recorder: Recorder,
    metrics: FeedbackMetrics,
    failures: Backoffs,
    shard: Option<ShardSelector>,
}

/// Consecutive failures per CI (by uid), for the backoff of each CI on its own.
#[derive(Debug, Default)]
pub struct Backoffs(Mutex<HashMap<String, u32>>);

impl Backoffs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts one more failure for `uid` and gives the wait before its next attempt: 1 s,
    /// doubling, at most [`MAX_BACKOFF`].
    pub fn failed(&self, uid: &str) -> Duration {
        let mut failures = self.lock();
        let n = failures.entry(uid.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        backoff(*n).min(MAX_BACKOFF)
    }

    /// A pass over `uid` went through: the next failure starts from the shortest wait again.
    pub fn succeeded(&self, uid: &str) {
        self.lock().remove(uid);
    }
}

impl std::fmt::Debug for FeedbackContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedbackContext")
            .field("fulfillment", &self.fulfillment)
            .finish_non_exhaustive()
    }
}

impl FeedbackContext {
    /// A context that writes through `client` and reports to `fulfillment`.
    pub fn new(client: Client, fulfillment: FulfillmentClient, metrics: FeedbackMetrics) -> Self {
        let recorder = Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER));
        FeedbackContext {
            client,
            fulfillment,
            recorder,
            metrics,
            failures: Backoffs::default(),
            shard: None,
        }
    }

    /// Reports only the CIs `shard` selects, as the CI controller of the same shard does.
    pub fn with_shard(mut self, shard: ShardSelector) -> Self {
        self.shard = Some(shard);
        self
    }
}

/// Runs the feedback controller over the CIs of `api` until `shutdown` completes.
pub async fn run(
    ctx: Arc<FeedbackContext>,
    api: Api<ComputeInstance>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    info!("starting the fulfillment feedback controller");
    let mut config = watcher::Config::default().any_semantic();
    if let Some(shard) = &ctx.shard {
        config = config.labels_from(shard.selector());
    }
    let (reader, writer) = reflector::store();
    // As `Controller::new`, without what the reports never read: the managed fields alone
    // double the size of the cache of every CI.
    let cis = watcher(api, config)
        .modify(drop_unread_metadata::<ComputeInstance>)
        .reflect(writer)
        .applied_objects();
    Controller::for_stream(cis, reader)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "feedback loop");
            }
        })
        .await;
}

fn error_policy(_ci: Arc<ComputeInstance>, error: &Error, _ctx: Arc<FeedbackContext>) -> Action {
    warn!(error = %error, "feedback pass failed");
    Action::requeue(Duration::from_secs(5))
}

/// One feedback pass over `ci`.
pub async fn reconcile(
    ci: Arc<ComputeInstance>,
    ctx: Arc<FeedbackContext>,
) -> Result<Action, Error> {
    let (Some(namespace), Some(name)) = (ci.namespace(), ci.metadata.name.clone()) else {
        return Err(Error::Incomplete);
    };
    let uid = ci.uid().unwrap_or_default();
    let api: Api<ComputeInstance> = Api::namespaced(ctx.client.clone(), &namespace);

    let fetch = match object_id(&ci) {
        None => Fetch::Unlabelled,
        Some(id) => {
            let result = ctx.fulfillment.get(id).await;
            if let Err(e) = &result {
                ctx.metrics.failed("get", e);
            }
            Fetch::from_result(result)
        }
    };
    let plan = decide(&ci, fetch, jiff::Timestamp::now());
    if !plan.steps.is_empty() {
        debug!(namespace, name, steps = plan.steps.len(), "feedback plan");
    }

    let mut current = (*ci).clone();
    for step in plan.steps {
        match step {
            Step::AddFinalizer => {
                if current.metadata.deletion_timestamp.is_some() {
                    // Never hold a CI that is already going away.
                    continue;
                }
                match set_finalizer(&api, &current, true).await {
                    Ok(updated) => current = updated,
                    Err(e) if is_conflict(&e) => return Ok(Action::requeue(STALE_RETRY)),
                    Err(e) => return Err(e.into()),
                }
            }
            Step::RemoveFinalizer => match set_finalizer(&api, &current, false).await {
                Ok(updated) => current = updated,
                Err(e) if is_conflict(&e) => return Ok(Action::requeue(STALE_RETRY)),
                Err(e) if is_gone(&e) => break,
                Err(e) => return Err(e.into()),
            },
            Step::Update(object) => {
                let id = object.id.clone();
                if let Err(e) = ctx.fulfillment.update(*object).await {
                    ctx.metrics.failed("update", &e);
                    warn!(namespace, name, id, error = %e, "fulfillment Update failed");
                    publish(
                        &ctx,
                        &current,
                        WarningReason::FulfillmentUnavailable,
                        &format!("fulfillment service: {e}"),
                    )
                    .await;
                    return Ok(Action::requeue(ctx.failures.failed(&uid)));
                }
                info!(
                    namespace,
                    name, id, "reported the state to the fulfillment service"
                );
            }
            Step::Signal(id) => match ctx.fulfillment.signal(&id).await {
                Ok(()) => info!(namespace, name, id, "signalled the fulfillment service"),
                Err(e) => {
                    ctx.metrics.failed("signal", &e);
                    warn!(namespace, name, id, error = %e, "fulfillment Signal failed (not retried)");
                }
            },
            Step::Warn { reason, message } => {
                warn!(namespace, name, reason = reason.as_str(), "{message}");
                publish(&ctx, &current, reason, &message).await;
            }
            Step::RetryWithBackoff => return Ok(Action::requeue(ctx.failures.failed(&uid))),
        }
    }
    ctx.failures.succeeded(&uid);
    Ok(Action::await_change())
}

/// Adds (`present`) or removes [`FEEDBACK_FINALIZER`], keeping every other finalizer, with the
/// object's resourceVersion as a precondition.
async fn set_finalizer(
    api: &Api<ComputeInstance>,
    current: &ComputeInstance,
    present: bool,
) -> Result<ComputeInstance, kube::Error> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    };
    api.patch(
        &current.name_any(),
        &params,
        &Patch::Merge(&finalizer_patch(current, present)),
    )
    .await
}

/// The body of [`set_finalizer`].
pub fn finalizer_patch(current: &ComputeInstance, present: bool) -> serde_json::Value {
    let mut finalizers: Vec<String> = current
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != FEEDBACK_FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FEEDBACK_FINALIZER.to_string());
    }
    serde_json::json!({
        "metadata": {
            "resourceVersion": current.resource_version(),
            "finalizers": finalizers,
        }
    })
}

/// Records a Warning event. Its action tells a live CI's feedback from its deletion's, so that
/// the event of a deletion is its own and not a repetition of an earlier one (events are merged
/// by regarding object, reason and action).
async fn publish(ctx: &FeedbackContext, ci: &ComputeInstance, reason: WarningReason, note: &str) {
    let action = if ci.metadata.deletion_timestamp.is_some() {
        "ReportDeletion"
    } else {
        "ReportState"
    };
    let event = Event {
        type_: EventType::Warning,
        reason: reason.as_str().to_string(),
        note: Some(truncate(note, 1000)),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &ci.object_ref(&())).await {
        debug!(error = %e, "publishing an event");
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_gone(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

fn truncate(s: &str, max: usize) -> String {
    cloudkit_api::text::prefix_at_char_boundary(s, max).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudkit_api::ComputeInstanceSpec;
    use prometheus_client::encoding::text::encode;
    use serde_json::json;

    #[test]
    fn the_finalizer_patch_keeps_other_finalizers_and_carries_the_resource_version() {
        let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("t"));
        ci.metadata.resource_version = Some("7".into());
        ci.metadata.finalizers = Some(vec!["example.com/other".into()]);
        assert_eq!(
            finalizer_patch(&ci, true),
            json!({"metadata": {"resourceVersion": "7", "finalizers": ["example.com/other", FEEDBACK_FINALIZER]}})
        );
        ci.metadata.finalizers = Some(vec![FEEDBACK_FINALIZER.into(), "example.com/other".into()]);
        assert_eq!(
            finalizer_patch(&ci, false),
            json!({"metadata": {"resourceVersion": "7", "finalizers": ["example.com/other"]}})
        );
        // Adding twice does not duplicate it.
        assert_eq!(
            finalizer_patch(&ci, true),
            json!({"metadata": {"resourceVersion": "7", "finalizers": ["example.com/other", FEEDBACK_FINALIZER]}})
        );
        // The last finalizer goes as an empty list, not as a missing field.
        ci.metadata.finalizers = Some(vec![FEEDBACK_FINALIZER.into()]);
        assert_eq!(
            finalizer_patch(&ci, false),
            json!({"metadata": {"resourceVersion": "7", "finalizers": []}})
        );
    }

    #[test]
    fn failed_calls_are_counted_by_method_and_kind_without_the_token() {
        let metrics = FeedbackMetrics::new();
        let mut registry = Registry::with_prefix("cloudkit");
        metrics.register(&mut registry);
        metrics.failed(
            "get",
            &CallError::Unreachable {
                method: "Get",
                reason: "connection refused".into(),
            },
        );
        metrics.failed(
            "update",
            &CallError::Status {
                method: "Update",
                status: Box::new(tonic::Status::permission_denied("secret-token-value")),
            },
        );
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for needle in [
            "cloudkit_fulfillment_call_errors_total{method=\"get\",kind=\"unreachable\"} 1",
            "cloudkit_fulfillment_call_errors_total{method=\"update\",kind=\"PermissionDenied\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
        assert!(!text.contains("secret-token-value"));
    }

    #[test]
    fn each_ci_backs_off_on_its_own_up_to_five_minutes() {
        let backoffs = Backoffs::default();
        let waits: Vec<u64> = (0..12).map(|_| backoffs.failed("a").as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(
            backoffs.failed("b"),
            Duration::from_secs(1),
            "another CI starts over"
        );
        backoffs.succeeded("a");
        assert_eq!(
            backoffs.failed("a"),
            Duration::from_secs(1),
            "reset by a pass that went through"
        );
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("hello", 10), "hello");
    }
}
