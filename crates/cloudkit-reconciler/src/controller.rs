//! The Kubernetes glue: observe, decide, execute.
//!
//! A pass reads the providers ([`Observed`]), calls [`decide`], and executes the plan: the
//! finalizer first, then the status (written with the object's resourceVersion as a
//! precondition, so a pass that worked from a stale cache fails with a conflict instead of
//! acting twice), then the one provider call, then the finalizer removal.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudkit_api::intent::{status_never_written, with_recorded_intent};
use cloudkit_api::metadata::{FINALIZER, PROVISION_INTENT_ANNOTATION};
use cloudkit_api::{ComputeInstance, ComputeInstanceStatus, JobStatus, JobType, ProviderKind};
use cloudkit_provider::{CancelOutcome, Launch, Provider, ProviderError, ProviderRegistry};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::decide::{Action, EventSpec, EventType, FinalizerChange, Observed, Plan, decide};
use crate::metrics::Metrics;
use crate::outcome::{LaunchAnswer, apply_launch_answer};
use crate::settings::{Capabilities, Settings};

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "cloudkit-operator";

/// Errors of a reconcile pass. Their names double as metric labels.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A job names a provider the registry does not have.
    #[error("provider {0} is not configured")]
    ProviderMissing(ProviderKind),
    /// The object has no namespace or name.
    #[error("object without namespace or name")]
    Incomplete,
}

impl Error {
    fn label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "Kube",
            Error::ProviderMissing(_) => "ProviderMissing",
            Error::Incomplete => "Incomplete",
        }
    }
}

/// What the controller remembers between passes. Losing it (a restart) costs at most a
/// repeated cancel request or an early retry that the provider refuses again.
#[derive(Debug, Default)]
struct Memory {
    /// Per CI uid: no launch before this time, and the refusal that asked for it, if any.
    not_before: HashMap<String, (Timestamp, Option<String>)>,
    /// (uid, job id) pairs already asked to cancel.
    cancels: HashSet<(String, String)>,
    /// When each (uid, job id) was last polled over the network.
    polled: HashMap<(String, String), Instant>,
    /// Per CI uid: the resourceVersions the last pass's own writes replaced. The cache can still
    /// hand out such a version for a moment; a pass over it would only be refused with 409.
    superseded: HashMap<String, Vec<String>>,
}

impl Memory {
    /// Whether `rv` is a version of `uid` that the last pass over it replaced with its own
    /// writes. A pass over any other version (a newer one, or one changed by someone else) ends
    /// the record.
    fn is_superseded(&mut self, uid: &str, rv: &str) -> bool {
        if self
            .superseded
            .get(uid)
            .is_some_and(|r| r.iter().any(|v| v == rv))
        {
            return true;
        }
        self.superseded.remove(uid);
        false
    }
}

/// Shared state of all reconcile passes.
pub struct Context {
    client: Client,
    registry: ProviderRegistry,
    settings: Settings,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    memory: Mutex<Memory>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("registry", &self.registry)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context for reconciling with `registry`. The settings' provider table is filled from
    /// the registry.
    pub fn new(
        client: Client,
        registry: ProviderRegistry,
        mut settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        settings.active = registry.active().kind();
        settings.providers = registry
            .kinds()
            .filter_map(|k| registry.get(k).map(|p| (k, capabilities(p.as_ref()))))
            .collect();
        let recorder = Recorder::new(client.clone(), Reporter::from(FIELD_MANAGER));
        Context {
            client,
            registry,
            settings,
            recorder,
            metrics,
            memory: Mutex::new(Memory::default()),
        }
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding this lock leaves plain data behind; keep going with it.
        self.memory
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The capabilities of `provider`, as the decision function sees them.
pub fn capabilities(provider: &dyn Provider) -> Capabilities {
    Capabilities {
        polls_remotely: provider.polls_remotely(),
        can_cancel: provider.can_cancel(),
        can_find_launches: provider.can_find_launches(),
        blocks_deletion_on_failure: provider.blocks_deletion_on_failure(),
    }
}

/// Runs the controller over `api` until `shutdown` completes. `concurrency` bounds how many
/// CIs are reconciled at once.
pub async fn run(
    ctx: Arc<Context>,
    api: Api<ComputeInstance>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .touched_objects();
    Controller::for_stream(stream, reader)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}

fn error_policy(_ci: Arc<ComputeInstance>, error: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(error = %error, "reconcile failed");
    ctx.metrics.reconcile_error(error.label());
    Requeue::requeue(jitter(Duration::from_secs(5)))
}

/// One reconcile pass over `ci`.
pub async fn reconcile(ci: Arc<ComputeInstance>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&ci, &ctx).await;
    ctx.metrics.reconciled(started.elapsed());
    result
}

async fn reconcile_inner(raw: &ComputeInstance, ctx: &Context) -> Result<Requeue, Error> {
    let (Some(namespace), Some(_)) = (raw.namespace(), raw.metadata.name.as_ref()) else {
        return Err(Error::Incomplete);
    };
    // A first provision intent recorded with the finalizer counts as part of the status.
    let view = with_recorded_intent(raw);
    let ci: &ComputeInstance = &view;
    let api: Api<ComputeInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = ci.uid().unwrap_or_default();
    if is_superseded(ctx, &uid, raw) {
        // The version this pass would write is on its way through the watch; the wake-up it
        // brings runs the pass on it. The requeue is only a bound in case it never comes.
        debug!("skipping a pass over a version this operator has already replaced");
        return Ok(Requeue::requeue(Duration::from_secs(1)));
    }
    let mut replaced = Vec::new();

    let observed = observe(ci, ctx, &uid).await;
    let now = Timestamp::now();
    let plan = decide(ci, &observed, now, &ctx.settings);
    let mut requeue = plan.requeue_after;
    let mut events = plan.events.clone();
    for f in &plan.finished {
        ctx.metrics
            .job_finished(f.job_type, f.provider, f.state, f.duration);
    }

    let mut current = ci.clone();
    let first_intent = first_intent(raw, &plan);
    if plan.finalizer == FinalizerChange::Add {
        let result = set_finalizer(&api, &current, true, first_intent.as_ref()).await;
        if !advance(result, &mut current, &mut replaced, ctx, "finalizer")? {
            return Ok(Requeue::requeue(STALE_RETRY));
        }
        if first_intent.is_some() {
            // The intent is recorded; the rest of the status goes with the launch's answer.
            current.status.clone_from(&plan.status);
        }
    }
    // The object is about to go; its last status would be written for nobody.
    let skip_status = (plan.finalizer == FinalizerChange::Remove && plan.action.is_none())
        || first_intent.is_some();
    if let (Some(status), false) = (&plan.status, skip_status) {
        let result = write_status(&api, &current, status, &ctx.metrics).await;
        if !advance(result, &mut current, &mut replaced, ctx, "status")? {
            return Ok(Requeue::requeue(STALE_RETRY));
        }
    }

    let mut remove_finalizer = plan.finalizer == FinalizerChange::Remove;
    match &plan.action {
        Some(Action::Launch {
            provider,
            job_type,
            launch_key,
        }) => {
            let outcome =
                launch(ctx, &api, current, *provider, *job_type, launch_key, &uid).await?;
            current = outcome.current;
            replaced.extend(outcome.replaced);
            events.extend(outcome.events);
            remove_finalizer |= outcome.remove_finalizer;
            requeue = min_opt(requeue, outcome.requeue_after);
        }
        Some(Action::Cancel { provider, job_id }) => {
            cancel(ctx, &current, *provider, job_id, &uid, &mut events).await?;
        }
        None => {}
    }

    if remove_finalizer {
        match set_finalizer(&api, &current, false, None).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) if is_conflict(&e) => {
                ctx.metrics.write_conflict("finalizer");
                return Ok(Requeue::requeue(STALE_RETRY));
            }
            Err(e) => return Err(e.into()),
        }
        forget(ctx, &uid);
    } else if !replaced.is_empty() {
        ctx.memory().superseded.insert(uid.clone(), replaced);
    }

    publish(ctx, &current, events).await;
    Ok(match requeue {
        Some(after) => Requeue::requeue(jitter(after)),
        None => Requeue::await_change(),
    })
}

/// Reads the state of non-terminal jobs and looks up lost launches.
async fn observe(ci: &ComputeInstance, ctx: &Context, uid: &str) -> Observed {
    let mut observed = Observed::default();
    {
        let memory = ctx.memory();
        if let Some((at, refusal)) = memory.not_before.get(uid) {
            observed.launch_not_before = Some(*at);
            observed.launch_refusal = refusal.clone();
        }
        observed.cancel_requested = memory
            .cancels
            .iter()
            .filter(|(u, _)| u == uid)
            .map(|(_, j)| j.clone())
            .collect();
    }
    let Some(status) = &ci.status else {
        return observed;
    };
    let now = Timestamp::now();
    let fresh_result = reports_new_result(ci, status);
    for job in status.jobs.iter().filter(|j| !j.is_terminal()) {
        let Some(provider) = ctx.registry.for_job(job) else {
            continue;
        };
        let kind = provider.kind();
        if job.job_id.is_empty() {
            let age = Duration::try_from(now.duration_since(job.timestamp.0)).unwrap_or_default();
            if age < ctx.settings.launch_window {
                continue;
            }
            let t = Instant::now();
            let result = provider.find_launch(ci, job).await;
            ctx.metrics
                .provider_call(kind, "find_launch", t.elapsed(), err_label(&result));
            match result {
                Ok(lookup) => {
                    observed
                        .lookups
                        .insert(job.launch_key.clone().unwrap_or_default(), lookup);
                }
                Err(e) => warn!(error = %e, "looking up a lost launch"),
            }
            continue;
        }
        let key = (uid.to_string(), job.job_id.clone());
        if provider.polls_remotely() && !(job.job_type == JobType::Provision && fresh_result) {
            // Our own status writes wake the reconciler too; they are no reason to ask again.
            let recently = ctx
                .memory()
                .polled
                .get(&key)
                .is_some_and(|t| t.elapsed() < ctx.settings.poll_interval.mul_f64(0.8));
            if recently {
                continue;
            }
        }
        let t = Instant::now();
        let result = provider.job_state(ci, job).await;
        if provider.polls_remotely() {
            ctx.metrics
                .provider_call(kind, "job_state", t.elapsed(), err_label(&result));
            ctx.memory().polled.insert(key, Instant::now());
        }
        match result {
            Ok(o) => {
                observed.jobs.insert(job.job_id.clone(), o);
            }
            Err(e) => {
                observed.job_errors.insert(job.job_id.clone(), (&e).into());
            }
        }
    }
    observed
}

struct LaunchOutcome {
    current: ComputeInstance,
    /// The resourceVersion the answer's write replaced, if it was written.
    replaced: Option<String>,
    events: Vec<EventSpec>,
    remove_finalizer: bool,
    requeue_after: Option<Duration>,
}

/// Calls the provider for a recorded intent and records its answer, re-reading and re-applying
/// on conflicts so a returned job id is never lost.
async fn launch(
    ctx: &Context,
    api: &Api<ComputeInstance>,
    mut current: ComputeInstance,
    kind: ProviderKind,
    job_type: JobType,
    launch_key: &str,
    uid: &str,
) -> Result<LaunchOutcome, Error> {
    let provider = ctx.registry.get(kind).ok_or(Error::ProviderMissing(kind))?;
    let request = Launch::new(job_type, launch_key);
    let t = Instant::now();
    let answer = match job_type {
        JobType::Provision => provider
            .provision(&current, &request)
            .await
            .map(LaunchAnswer::Started),
        JobType::Deprovision => provider
            .deprovision(&current, &request)
            .await
            .map(LaunchAnswer::from),
    };
    ctx.metrics
        .provider_call(kind, "launch", t.elapsed(), err_label(&answer));
    let answer = answer.unwrap_or_else(|e| {
        info!(error = %e, %job_type, "launch failed");
        LaunchAnswer::Failed((&e).into())
    });
    let caps = capabilities(provider.as_ref());
    let name = current.name_any();

    for _ in 0..5 {
        let mut status: ComputeInstanceStatus = current.status.clone().unwrap_or_default();
        let Some(effect) = apply_launch_answer(
            &mut status,
            launch_key,
            answer.clone(),
            caps,
            ctx.settings.launch_window,
            ctx.settings.poll_interval,
            Timestamp::now(),
        ) else {
            // Someone already recorded the outcome (or the intent is gone).
            break;
        };
        match write_status(api, &current, &status, &ctx.metrics).await {
            Ok(updated) => {
                if let Some((t, p)) = effect.started {
                    ctx.metrics.job_started(t, p);
                }
                if let Some(f) = &effect.finished {
                    ctx.metrics
                        .job_finished(f.job_type, f.provider, f.state, f.duration);
                }
                if let Some(nb) = effect.not_before {
                    ctx.memory()
                        .not_before
                        .insert(uid.to_string(), (nb, effect.refusal.clone()));
                }
                // The launch answer is as fresh as a poll: the wake-up our own write causes is no
                // reason to ask the provider again (and write again) right away.
                if let LaunchAnswer::Started(job) = &answer {
                    ctx.memory()
                        .polled
                        .insert((uid.to_string(), job.job_id.clone()), Instant::now());
                }
                return Ok(LaunchOutcome {
                    replaced: replaced_version(&current, &updated),
                    current: updated,
                    events: effect.events,
                    remove_finalizer: effect.remove_finalizer,
                    requeue_after: effect.requeue_after,
                });
            }
            Err(e) if is_conflict(&e) => {
                ctx.metrics.write_conflict("answer");
                let mut fresh = api.get_status(&name).await?;
                slim(&mut fresh);
                if status_never_written(fresh.status.as_ref()) {
                    // Only the intent annotation holds the intent: keep the status being written.
                    fresh.status = current.status.take();
                }
                current = fresh;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(LaunchOutcome {
        current,
        replaced: None,
        events: Vec::new(),
        remove_finalizer: false,
        requeue_after: Some(Duration::from_secs(1)),
    })
}

async fn cancel(
    ctx: &Context,
    ci: &ComputeInstance,
    kind: ProviderKind,
    job_id: &str,
    uid: &str,
    events: &mut Vec<EventSpec>,
) -> Result<(), Error> {
    let provider = ctx.registry.get(kind).ok_or(Error::ProviderMissing(kind))?;
    let Some(job) = ci
        .status
        .as_ref()
        .and_then(|s| cloudkit_api::history::find_job(&s.jobs, job_id))
    else {
        return Ok(());
    };
    let t = Instant::now();
    let result = provider.cancel(job).await;
    ctx.metrics
        .provider_call(kind, "cancel", t.elapsed(), err_label(&result));
    match result {
        Ok(CancelOutcome::Requested) => {
            ctx.memory()
                .cancels
                .insert((uid.to_string(), job_id.to_string()));
            events.push(EventSpec {
                type_: EventType::Normal,
                reason: "CancelRequested".into(),
                message: format!(
                    "deletion requested: asked {kind} to cancel provision job {job_id}"
                ),
            });
        }
        Ok(CancelOutcome::AlreadyFinished | CancelOutcome::Unsupported) => {
            ctx.memory()
                .cancels
                .insert((uid.to_string(), job_id.to_string()));
        }
        Err(e) => warn!(error = %e, job_id, "cancel failed"),
    }
    Ok(())
}

/// Writes the operator's status with a JSON merge patch whose resourceVersion is a precondition:
/// a write based on a stale read fails with 409 instead of overwriting newer state. Fields that
/// became empty are sent as `null` so they are removed. The status starts from the one read, so
/// conditions of other writers are carried over.
///
/// Server-side apply would be the natural fit, but API servers of the 1.20 line turn an empty
/// string inside a list item (the job id of a recorded intent) into `null` and reject it.
async fn write_status(
    api: &Api<ComputeInstance>,
    current: &ComputeInstance,
    status: &ComputeInstanceStatus,
    metrics: &Metrics,
) -> Result<ComputeInstance, kube::Error> {
    let mut fields = match serde_json::to_value(status) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for key in STATUS_FIELDS {
        fields
            .entry(key.to_string())
            .or_insert(serde_json::Value::Null);
    }
    let body = serde_json::json!({
        "metadata": { "resourceVersion": current.resource_version() },
        "status": fields,
    });
    metrics.status_written();
    let mut updated = api
        .patch_status(&current.name_any(), &patch_params(), &Patch::Merge(&body))
        .await?;
    slim(&mut updated);
    Ok(updated)
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Every status field the operator writes (see `ComputeInstanceStatus`).
const STATUS_FIELDS: [&str; 6] = [
    "phase",
    "conditions",
    "observedGeneration",
    "desiredConfigVersion",
    "reconciledConfigVersion",
    "jobs",
];

/// A new CI's first provision intent, when this pass adds the finalizer and launches it: it is
/// then written in the finalizer's patch instead of a status write of its own
/// (`cloudkit_api::intent`).
fn first_intent(raw: &ComputeInstance, plan: &Plan) -> Option<JobStatus> {
    let Some(Action::Launch {
        job_type: JobType::Provision,
        launch_key,
        ..
    }) = &plan.action
    else {
        return None;
    };
    if plan.finalizer != FinalizerChange::Add || !status_never_written(raw.status.as_ref()) {
        return None;
    }
    let jobs = &plan.status.as_ref()?.jobs;
    jobs.iter()
        .find(|j| j.launch_key.as_ref() == Some(launch_key))
        .cloned()
}

/// Adds or removes the operator's finalizer, keeping every other finalizer, with the object's
/// resourceVersion as a precondition; with `intent`, records it in the provision-intent
/// annotation in the same patch.
async fn set_finalizer(
    api: &Api<ComputeInstance>,
    current: &ComputeInstance,
    present: bool,
    intent: Option<&JobStatus>,
) -> Result<ComputeInstance, kube::Error> {
    let mut finalizers: Vec<String> = current
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let mut body = serde_json::json!({
        "metadata": {
            "resourceVersion": current.resource_version(),
            "finalizers": finalizers,
        }
    });
    if let Some(job) = intent {
        body["metadata"]["annotations"] =
            serde_json::json!({ PROVISION_INTENT_ANNOTATION: cloudkit_api::intent::encode(job) });
    }
    let mut updated = api
        .patch(
            &current.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await?;
    slim(&mut updated);
    Ok(updated)
}

async fn publish(ctx: &Context, ci: &ComputeInstance, events: Vec<EventSpec>) {
    if events.is_empty() {
        return;
    }
    let reference = ci.object_ref(&());
    for e in events {
        let event = Event {
            type_: match e.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            action: e.reason.clone(),
            reason: e.reason,
            note: Some(truncate(&e.message, 1000)),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &reference).await {
            debug!(error = %err, "publishing an event");
        }
    }
}

/// kubectl's copy of the whole object, on CIs created or updated with `kubectl apply`.
const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops what the operator never reads, from every object it keeps (the cache holds thousands)
/// and sends to the automation: managed fields, a large share of every object; kubectl's
/// last-applied copy, which would double the size of an applied CI; and the first provision
/// intent's annotation once the status is written and it is inert.
fn slim(ci: &mut ComputeInstance) {
    ci.managed_fields_mut().clear();
    let inert_intent = !status_never_written(ci.status.as_ref());
    if let Some(annotations) = ci.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
        if inert_intent {
            annotations.remove(PROVISION_INTENT_ANNOTATION);
        }
    }
}

/// When a pass that worked from a stale object runs again, unless the fresh object's watch event
/// comes first.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// Takes the result of one of a pass's writes: the written object becomes `current` (and the
/// version it replaced is noted in `replaced`); `Ok(false)` when the API server refused it with
/// 409, that is, the pass worked from a stale object and ends (the fresh object is on its way
/// through the watch).
fn advance(
    result: Result<ComputeInstance, kube::Error>,
    current: &mut ComputeInstance,
    replaced: &mut Vec<String>,
    ctx: &Context,
    write: &'static str,
) -> Result<bool, Error> {
    match result {
        Ok(updated) => {
            replaced.extend(replaced_version(current, &updated));
            *current = updated;
            Ok(true)
        }
        Err(e) if is_conflict(&e) => {
            ctx.metrics.write_conflict(write);
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The resourceVersion a write replaced: `before`'s, unless the write changed nothing (the API
/// server then keeps the version, and that version is current, not superseded).
fn replaced_version(before: &ComputeInstance, after: &ComputeInstance) -> Option<String> {
    let old = before.resource_version()?;
    (after.resource_version().as_ref() != Some(&old)).then_some(old)
}

fn is_superseded(ctx: &Context, uid: &str, ci: &ComputeInstance) -> bool {
    let rv = ci.resource_version().unwrap_or_default();
    ctx.memory().is_superseded(uid, &rv)
}

fn forget(ctx: &Context, uid: &str) {
    let mut memory = ctx.memory();
    memory.superseded.remove(uid);
    memory.not_before.remove(uid);
    memory.cancels.retain(|(u, _)| u != uid);
    memory.polled.retain(|(u, _), _| u != uid);
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn err_label<T>(r: &Result<T, ProviderError>) -> Option<&'static str> {
    r.as_ref().err().map(|e| e.kind().as_str())
}

fn min_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Spreads requeues by +-10% so that many CIs created together do not poll together.
fn jitter(d: Duration) -> Duration {
    let factor = 0.9 + rand::random::<f64>() * 0.2;
    d.mul_f64(factor)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The automation has just reported the desired configuration (the reconciled-version
/// annotation is new to the status): its job is likely over, so it is polled in this pass even
/// if it was polled a moment ago, and its end is written together with the annotation's copy.
fn reports_new_result(ci: &ComputeInstance, status: &ComputeInstanceStatus) -> bool {
    let annotation = ci
        .annotations()
        .get(cloudkit_api::metadata::RECONCILED_CONFIG_VERSION_ANNOTATION);
    annotation.is_some_and(|a| {
        !a.is_empty()
            && status.desired_config_version.as_deref() == Some(a.as_str())
            && status.reconciled_config_version.as_deref() != Some(a.as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_reconciled_annotation_is_a_reason_to_poll_at_once() {
        let mut ci =
            ComputeInstance::new("vm", cloudkit_api::ComputeInstanceSpec::for_template("t"));
        let mut st = ComputeInstanceStatus {
            desired_config_version: Some("v2".into()),
            reconciled_config_version: Some("v1".into()),
            ..ComputeInstanceStatus::default()
        };
        assert!(!reports_new_result(&ci, &st), "no annotation");
        let annotate = |ci: &mut ComputeInstance, v: &str| {
            ci.annotations_mut().insert(
                cloudkit_api::metadata::RECONCILED_CONFIG_VERSION_ANNOTATION.into(),
                v.into(),
            );
        };
        annotate(&mut ci, "v1");
        assert!(!reports_new_result(&ci, &st), "the old version");
        annotate(&mut ci, "v2");
        assert!(
            reports_new_result(&ci, &st),
            "the desired version, not copied yet"
        );
        st.reconciled_config_version = Some("v2".into());
        assert!(!reports_new_result(&ci, &st), "already copied");
    }
    use cloudkit_api::{JobState, JobStatus, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn status_fields_cover_the_status_type() {
        let t = Time(Timestamp::UNIX_EPOCH);
        let full = ComputeInstanceStatus {
            phase: Some(Phase::Running),
            conditions: vec![Condition {
                type_: "A".into(),
                status: "True".into(),
                reason: "R".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: t.clone(),
            }],
            observed_generation: Some(1),
            desired_config_version: Some("a".into()),
            reconciled_config_version: Some("a".into()),
            jobs: vec![JobStatus::new(
                "1",
                JobType::Provision,
                t,
                JobState::Running,
            )],
        };
        let value = serde_json::to_value(&full).unwrap_or_default();
        let mut keys: Vec<&str> = value
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        let mut want = STATUS_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn slim_drops_what_is_never_read_and_keeps_the_rest() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        let retry = pair(cloudkit_api::metadata::RETRY_ANNOTATION, "1");
        let intent = pair(PROVISION_INTENT_ANNOTATION, "{}");
        let mut ci =
            ComputeInstance::new("vm", cloudkit_api::ComputeInstanceSpec::for_template("t"));
        ci.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        ci.metadata.annotations = Some(
            [
                pair(LAST_APPLIED_ANNOTATION, "{\"kind\":\"ComputeInstance\"}"),
                retry.clone(),
                intent.clone(),
            ]
            .into(),
        );
        slim(&mut ci);
        assert_eq!(ci.metadata.managed_fields, Some(vec![]));
        assert_eq!(
            ci.metadata.annotations,
            Some([retry.clone(), intent].into()),
            "the intent counts while the status was never written"
        );
        ci.status = Some(ComputeInstanceStatus {
            desired_config_version: Some("v1".into()),
            ..ComputeInstanceStatus::default()
        });
        slim(&mut ci);
        assert_eq!(
            ci.metadata.annotations,
            Some([retry].into()),
            "then it is inert"
        );
        let mut bare =
            ComputeInstance::new("vm", cloudkit_api::ComputeInstanceSpec::for_template("t"));
        slim(&mut bare);
        assert_eq!(bare.metadata.annotations, None, "no empty map is made up");
    }

    #[test]
    fn versions_replaced_by_own_writes_are_skipped_until_a_newer_one_is_seen() {
        let mut memory = Memory::default();
        assert!(!memory.is_superseded("u", "5"), "nothing recorded");
        memory
            .superseded
            .insert("u".into(), vec!["5".into(), "6".into()]);
        assert!(memory.is_superseded("u", "5"));
        assert!(memory.is_superseded("u", "6"));
        assert!(!memory.is_superseded("v", "5"), "another CI");
        assert!(!memory.is_superseded("u", "7"), "the version written last");
        assert!(
            !memory.is_superseded("u", "5"),
            "the record ends with the first pass over a current version"
        );
    }

    #[test]
    fn a_write_that_changed_nothing_replaced_no_version() {
        let at = |rv: &str| {
            let mut ci =
                ComputeInstance::new("vm", cloudkit_api::ComputeInstanceSpec::for_template("t"));
            ci.metadata.resource_version = Some(rv.into());
            ci
        };
        assert_eq!(replaced_version(&at("5"), &at("6")), Some("5".into()));
        assert_eq!(replaced_version(&at("5"), &at("5")), None);
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(100));
            assert!(
                d >= Duration::from_secs(90) && d <= Duration::from_secs(110),
                "{d:?}"
            );
        }
    }
}
