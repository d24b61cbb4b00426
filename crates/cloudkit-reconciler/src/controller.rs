//! The Kubernetes glue: watch, observe, decide, execute.
//!
//! The watch keeps a slim cache of CIs; a pass reads the providers ([`Observed`]), calls
//! [`decide`], and executes the plan: the finalizer first, then the status (see
//! [`crate::writes`] for how each write guards against a stale decision), then the one provider
//! call, then the finalizer removal. What the controller remembers between passes is
//! [`Memory`]; losing it costs nothing but a repeated request.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cloudkit_api::cache::drop_unread_metadata;
use cloudkit_api::intent::{self, with_recorded_intent};
use cloudkit_api::shard::ShardSelector;
use cloudkit_api::{ComputeInstance, ComputeInstanceStatus, JobType, ProviderKind};
use cloudkit_provider::{CancelOutcome, Launch, Provider, ProviderError, ProviderRegistry};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::runtime::reflector;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, info, warn};

use crate::decide::decide;
use crate::metrics::Metrics;
use crate::outcome::LaunchAnswer;
use crate::plan::{EventSpec, EventType, FinalizerChange, Observed, ProviderCall};
use crate::platform::Platform;
use crate::settings::{Capabilities, Settings};
use crate::writes::{
    self, FIELD_MANAGER, LaunchOutcome, STALE_RETRY, advance, record_answer, set_finalizer,
    write_status,
};

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
pub(crate) struct Memory {
    /// Per CI uid: no launch before this time, and the refusal that asked for it, if any.
    pub(crate) not_before: HashMap<String, (Timestamp, Option<String>)>,
    /// (uid, job id) pairs already asked to cancel.
    cancels: HashSet<(String, String)>,
    /// When each (uid, job id) was last polled over the network.
    pub(crate) polled: HashMap<(String, String), Instant>,
    /// Per CI uid: the resourceVersions the last pass's own writes replaced. The cache can still
    /// hand out such a version for a moment; a pass over it would only be refused with 409.
    superseded: HashMap<String, Vec<String>>,
    /// Per CI uid: why the last deletion of a VMI for a restart failed.
    restart_errors: HashMap<String, String>,
    /// CIs whose finalizer a pass removed, oldest first: their entry in `superseded` stays for
    /// [`RELEASED_MEMORY`] (the cache can still hand out the version before the removal, and a
    /// pass over it would try the removal again), then goes.
    released: std::collections::VecDeque<(Instant, String)>,
}

/// How long the versions a finalizer removal replaced are remembered: longer than the watch
/// takes to bring the object's deletion.
const RELEASED_MEMORY: Duration = Duration::from_secs(60);

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

    /// Forgets CI `uid` whose finalizer a pass removed, all but the versions that pass replaced
    /// (`replaced`, the version it read last included), which are remembered for a while.
    fn released(&mut self, uid: &str, replaced: Vec<String>, now: Instant) {
        self.forget(uid);
        while let Some((at, _)) = self.released.front() {
            if now.saturating_duration_since(*at) < RELEASED_MEMORY {
                break;
            }
            if let Some((_, old)) = self.released.pop_front() {
                self.superseded.remove(&old);
            }
        }
        self.superseded.insert(uid.to_string(), replaced);
        self.released.push_back((now, uid.to_string()));
    }

    /// Everything about CI `uid`.
    fn forget(&mut self, uid: &str) {
        self.superseded.remove(uid);
        self.not_before.remove(uid);
        self.cancels.retain(|(u, _)| u != uid);
        self.polled.retain(|(u, _), _| u != uid);
        self.restart_errors.remove(uid);
    }
}

/// Shared state of all reconcile passes.
pub struct Context {
    client: Client,
    registry: ProviderRegistry,
    pub(crate) settings: Settings,
    recorder: Recorder,
    pub(crate) metrics: Arc<Metrics>,
    memory: Mutex<Memory>,
    platform: Option<Platform>,
    shard: Option<ShardSelector>,
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
            platform: None,
            shard: None,
        }
    }

    /// Also manages the CIs' Tenants and tracks their VirtualMachines (SPEC 9.4, 10, 11).
    /// Without it, no job waits for a Tenant and VMs are not looked at.
    pub fn with_platform(mut self, platform: Platform) -> Self {
        self.platform = Some(platform);
        self
    }

    /// Reconciles only the CIs `shard` selects; the Tenants it creates or adopts get the CI's
    /// labels the selector reads, so that the Tenant controller of the same shard selects them.
    pub fn with_shard(mut self, shard: ShardSelector) -> Self {
        self.shard = Some(shard);
        self
    }

    /// The effective settings.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub(crate) fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
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
    ctx.metrics.watch(reader.clone());
    let stream = watcher(api, watch_config(ctx.shard.as_ref()))
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .touched_objects();
    let mut controller = Controller::for_stream(stream, reader)
        .with_config(ControllerConfig::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown);
    // The platform's watches end with this function, also when it is dropped mid-way.
    let mut _watches = None;
    if let Some(platform) = &ctx.platform {
        let (wake, task) = platform.start();
        controller = controller.reconcile_on(wake);
        _watches = Some(AbortOnDrop(task));
    }
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                debug!(error = %e, "reconcile loop");
            }
        })
        .await;
}

/// CIs per page of the initial list (and of every relist); kube's default is 500. A page is
/// parsed whole, managed fields included (about 16 KiB per CI), before the cache slims its
/// objects, so the page size sets the transient peak of a (re)start: about 1.6 MiB for 100
/// CIs instead of 8 MiB for 500, at the cost of 50 list requests for 5,000 CIs instead of 10.
pub const LIST_PAGE_SIZE: u32 = 100;

/// The watch of the CIs: any version the API server has cached will do (as client-go's
/// reflectors), in pages of [`LIST_PAGE_SIZE`], only the shard's CIs when sharded.
fn watch_config(shard: Option<&ShardSelector>) -> watcher::Config {
    let config = watcher::Config::default()
        .any_semantic()
        .page_size(LIST_PAGE_SIZE);
    match shard {
        Some(shard) => config.labels_from(shard.selector()),
        None => config,
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn error_policy(_ci: Arc<ComputeInstance>, error: &Error, ctx: Arc<Context>) -> Action {
    warn!(error = %error, "reconcile failed");
    ctx.metrics.reconcile_error(error.label());
    Action::requeue(jitter(Duration::from_secs(5)))
}

/// One reconcile pass over `ci`.
pub async fn reconcile(ci: Arc<ComputeInstance>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&ci, &ctx).await;
    ctx.metrics.reconciled(started.elapsed());
    result
}

async fn reconcile_inner(raw: &ComputeInstance, ctx: &Context) -> Result<Action, Error> {
    let (Some(namespace), Some(_)) = (raw.namespace(), raw.metadata.name.as_ref()) else {
        return Err(Error::Incomplete);
    };
    // A first provision intent recorded with the finalizer counts as part of the status, for
    // the providers as for `decide`.
    let view = with_recorded_intent(raw);
    let ci: &ComputeInstance = &view;
    let api: Api<ComputeInstance> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = ci.uid().unwrap_or_default();
    if is_superseded(ctx, &uid, raw) {
        // The version this pass would write is on its way through the watch; the wake-up it
        // brings runs the pass on it. The requeue is only a bound in case it never comes.
        debug!("skipping a pass over a version this operator has already replaced");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let mut replaced = Vec::new();

    let observed = observe(ci, ctx, &uid).await?;
    let now = Timestamp::now();
    let plan = decide(raw, &observed, now, &ctx.settings);
    let mut requeue = plan.requeue_after;
    let mut events = plan.events.clone();
    for f in &plan.finished {
        ctx.metrics
            .job_finished(f.job_type, f.provider, f.state, f.duration);
    }

    if let (Some(change), Some(platform)) = (&plan.tenant, &ctx.platform) {
        platform
            .change_tenant(raw, change, ctx.shard.as_ref())
            .await?;
    }
    let mut current = ci.clone();
    // The status as the API server holds it (without an intent recorded in the annotation):
    // the write of a launch's answer tests it.
    let mut stored = raw.status.clone();
    if plan.finalizer == FinalizerChange::Add {
        let result = set_finalizer(&api, &current, true, plan.first_intent.as_ref()).await;
        if !advance(result, &mut current, &mut replaced, ctx, "finalizer")? {
            return Ok(Action::requeue(STALE_RETRY));
        }
        stored.clone_from(&current.status);
        if plan.first_intent.is_some() {
            // The intent is recorded; the rest of the status goes with the launch's answer.
            current.status.clone_from(&plan.status);
        }
    }
    if let Some(status) = plan.status_write() {
        let result = match writes::progress_patch(stored.as_ref(), status) {
            Some(patch) => writes::write_status_tested(&api, &current, patch, &ctx.metrics).await,
            None => write_status(&api, &current, status, &ctx.metrics).await,
        };
        if !advance(result, &mut current, &mut replaced, ctx, "status")? {
            return Ok(Action::requeue(STALE_RETRY));
        }
        stored.clone_from(&current.status);
    }

    // After the status: it records the restart's intent before the VMI goes.
    if let (Some(target), Some(platform)) = (&plan.restart, &ctx.platform) {
        match platform.delete_vmi(target).await {
            Ok(()) => {
                ctx.memory().restart_errors.remove(&uid);
            }
            Err(e) => {
                warn!(error = %e, vmi = %target.name, "deleting the VirtualMachineInstance for a restart");
                ctx.memory()
                    .restart_errors
                    .insert(uid.clone(), e.to_string());
            }
        }
    }

    let mut remove_finalizer = plan.finalizer == FinalizerChange::Remove;
    match &plan.call {
        Some(ProviderCall::Launch {
            provider,
            job_type,
            launch_key,
        }) => {
            let outcome = launch(
                ctx,
                &api,
                current,
                stored.as_ref(),
                *provider,
                *job_type,
                launch_key,
                &uid,
            )
            .await?;
            current = outcome.current;
            replaced.extend(outcome.replaced);
            events.extend(outcome.events);
            remove_finalizer |= outcome.remove_finalizer;
            requeue = min_opt(requeue, outcome.requeue_after);
        }
        Some(ProviderCall::Cancel { provider, job_id }) => {
            cancel(ctx, &current, *provider, job_id, &uid, &mut events).await?;
        }
        None => {}
    }

    if remove_finalizer {
        if !writes::remove_finalizer(&api, &current, ctx).await? {
            return Ok(Action::requeue(STALE_RETRY));
        }
        // The object goes (or waits for the automation's finalizer); until its deletion comes
        // through the watch, the cache can still hand out the version with our finalizer.
        replaced.extend(current.resource_version());
        ctx.memory().released(&uid, replaced, Instant::now());
    } else if !replaced.is_empty() {
        ctx.memory().superseded.insert(uid.clone(), replaced);
    }

    publish(ctx, &current, events).await;
    Ok(match requeue {
        Some(after) => Action::requeue(jitter(after)),
        None => Action::await_change(),
    })
}

/// Reads the state of non-terminal jobs and looks up lost launches.
async fn observe(ci: &ComputeInstance, ctx: &Context, uid: &str) -> Result<Observed, Error> {
    let mut observed = Observed::default();
    if let Some(platform) = &ctx.platform {
        observed.tenant = Some(platform.tenant_view(ci));
        observed.vms = Some(platform.vm_view(ci));
        if crate::restart::needs_vmi(ci) {
            observed.vmi = platform.vmi_state(ci).await?;
        }
        observed.restart_error = ctx.memory().restart_errors.get(uid).cloned();
    }
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
        return Ok(observed);
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
    Ok(observed)
}

/// Calls the provider for a recorded intent and records its answer
/// ([`record_answer`]).
#[allow(clippy::too_many_arguments)]
async fn launch(
    ctx: &Context,
    api: &Api<ComputeInstance>,
    current: ComputeInstance,
    stored: Option<&ComputeInstanceStatus>,
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
    record_answer(ctx, api, current, stored, launch_key, &answer, caps, uid).await
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
            events.push(EventSpec::normal(
                "CancelRequested",
                format!("deletion requested: asked {kind} to cancel provision job {job_id}"),
            ));
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

/// Drops what the operator never reads, from every object it keeps (the cache holds thousands)
/// and sends to the automation: managed fields, a large share of every object; kubectl's
/// last-applied copy, which would double the size of an applied CI; and the first provision
/// intent's annotation once the status is written and it is inert.
pub(crate) fn slim(ci: &mut ComputeInstance) {
    drop_unread_metadata(ci);
    intent::remove_if_inert(ci);
}

fn is_superseded(ctx: &Context, uid: &str, ci: &ComputeInstance) -> bool {
    let rv = ci.resource_version().unwrap_or_default();
    ctx.memory().is_superseded(uid, &rv)
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
    format!("{}...", cloudkit_api::text::prefix_at_char_boundary(s, max))
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
    use cloudkit_api::metadata::PROVISION_INTENT_ANNOTATION;

    #[test]
    fn the_versions_a_finalizer_removal_replaced_are_skipped_for_a_while() {
        let mut memory = Memory::default();
        let t0 = Instant::now();
        memory
            .not_before
            .insert("u1".into(), (Timestamp::now(), None));
        memory.released("u1", vec!["5".into(), "7".into()], t0);
        assert!(memory.not_before.is_empty(), "the rest is forgotten");
        assert!(memory.is_superseded("u1", "7"), "the version it read last");
        assert!(memory.is_superseded("u1", "5"), "one it replaced earlier");
        // Later removals clear the records that are old enough, not the recent ones.
        memory.released("u2", vec!["9".into()], t0 + Duration::from_secs(30));
        assert!(memory.superseded.contains_key("u1"));
        memory.released("u3", vec!["11".into()], t0 + RELEASED_MEMORY);
        assert!(!memory.superseded.contains_key("u1"), "u1's record expired");
        assert!(memory.is_superseded("u2", "9") && memory.is_superseded("u3", "11"));
        assert_eq!(memory.released.len(), 2);
    }

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
                pair(
                    cloudkit_api::cache::LAST_APPLIED_ANNOTATION,
                    "{\"kind\":\"ComputeInstance\"}",
                ),
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
    fn the_ci_watch_lists_in_small_pages_from_any_cached_version() {
        let config = watch_config(None);
        assert_eq!(config.page_size, Some(LIST_PAGE_SIZE));
        assert!(
            config.page_size < watcher::Config::default().page_size,
            "smaller than kube's default page"
        );
        assert_eq!(config.list_semantic, watcher::ListSemantic::Any);
        assert_eq!(config.label_selector, None);
        let shard = ShardSelector::parse("shard=a");
        assert!(shard.is_ok(), "{shard:?}");
        if let Ok(shard) = shard {
            let config = watch_config(Some(&shard));
            assert_eq!(config.label_selector.as_deref(), Some("shard=a"));
            assert_eq!(config.page_size, Some(LIST_PAGE_SIZE));
        }
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
