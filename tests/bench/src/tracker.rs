//! Follows the CIs of a namespace through a watch and says when a condition over all of them
//! first held.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use cloudkit_api::{ComputeInstance, Phase};
use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::watch;

/// Counts over the CIs of the namespace.
#[derive(Clone, Copy, Debug)]
pub struct Counts {
    /// CIs that exist.
    pub present: usize,
    /// CIs in phase Running (and not being deleted).
    pub running: usize,
    /// CIs whose latest provision job has an id.
    pub launched: usize,
    /// Whether the first listing is complete.
    pub synced: bool,
    /// When these counts were observed.
    pub at: Instant,
}

#[derive(Clone, Copy, Default)]
struct State {
    running: bool,
    launched: bool,
}

fn state(ci: &ComputeInstance) -> State {
    let status = ci.status.as_ref();
    State {
        running: ci.metadata.deletion_timestamp.is_none()
            && status.and_then(|s| s.phase) == Some(Phase::Running),
        launched: status.is_some_and(|s| {
            s.jobs
                .iter()
                .any(|j| j.job_type == cloudkit_api::JobType::Provision && !j.job_id.is_empty())
        }),
    }
}

/// When the watch first showed each step of a CI's provisioning.
#[derive(Clone, Copy, Debug, Default)]
pub struct Milestones {
    /// The operator's finalizer.
    pub finalizer: Option<Instant>,
    /// A provision job in the status, or the first intent in its annotation.
    pub intent: Option<Instant>,
    /// A provision job with an id.
    pub launched: Option<Instant>,
    /// Phase Running.
    pub running: Option<Instant>,
}

type TraceLog = std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>;
type MilestoneMap = std::sync::Arc<std::sync::Mutex<HashMap<String, Milestones>>>;

fn milestones(map: &MilestoneMap, ci: &ComputeInstance, at: Instant) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    let m = map
        .entry(ci.metadata.name.clone().unwrap_or_default())
        .or_default();
    let has_finalizer = ci
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == cloudkit_api::metadata::FINALIZER);
    // The first intent of a new CI is recorded with the finalizer, in an annotation.
    let view = cloudkit_api::intent::with_recorded_intent(ci);
    let status = view.status.as_ref();
    let provision = status.and_then(|s| {
        s.jobs
            .iter()
            .find(|j| j.job_type == cloudkit_api::JobType::Provision)
    });
    if has_finalizer && m.finalizer.is_none() {
        m.finalizer = Some(at);
    }
    if provision.is_some() && m.intent.is_none() {
        m.intent = Some(at);
    }
    if provision.is_some_and(|j| !j.job_id.is_empty()) && m.launched.is_none() {
        m.launched = Some(at);
    }
    if status.and_then(|s| s.phase) == Some(Phase::Running) && m.running.is_none() {
        m.running = Some(at);
    }
}

pub struct Tracker {
    milestones: MilestoneMap,
    rx: watch::Receiver<Counts>,
    task: tokio::task::JoinHandle<()>,
    trace: Option<TraceLog>,
}

/// One line per watch event: what a reader of the CI sees change.
fn summary(ci: &ComputeInstance) -> String {
    let status = ci.status.as_ref();
    let jobs: Vec<String> = status
        .map(|s| {
            s.jobs
                .iter()
                .map(|j| {
                    format!(
                        "{}:{}:{}",
                        j.job_type,
                        if j.job_id.is_empty() { "-" } else { &j.job_id },
                        j.state
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let finalizers: Vec<&str> = ci
        .metadata
        .finalizers
        .iter()
        .flatten()
        .map(|f| if f.ends_with("-aap") { "aap" } else { "op" })
        .collect();
    let conditions: Vec<String> = status
        .map(|s| {
            s.conditions
                .iter()
                .map(|c| format!("{}={}/{}/{:?}", c.type_, c.status, c.reason, c.message))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "rv={} phase={:?} reconciled={} jobs=[{}] finalizers=[{}] annotation={} deleting={} conditions=[{}]",
        ci.metadata.resource_version.as_deref().unwrap_or(""),
        status.and_then(|s| s.phase),
        status
            .and_then(|s| s.reconciled_config_version.as_deref())
            .is_some(),
        jobs.join(","),
        finalizers.join(","),
        ci.metadata.annotations.as_ref().is_some_and(
            |a| a.contains_key(cloudkit_api::metadata::RECONCILED_CONFIG_VERSION_ANNOTATION)
        ),
        ci.metadata.deletion_timestamp.is_some(),
        conditions.join(",")
    )
}

impl Tracker {
    pub async fn start(api: Api<ComputeInstance>) -> anyhow::Result<Tracker> {
        Self::start_traced(api, None).await
    }

    /// Follows only the CIs `label_selector` matches (one shard's).
    pub async fn start_selected(
        api: Api<ComputeInstance>,
        label_selector: &str,
    ) -> anyhow::Result<Tracker> {
        Self::start_with(api, watcher::Config::default().labels(label_selector), None).await
    }

    /// With `trace`, every watch event of the CI of that name is kept (see [`Tracker::trace`]).
    pub async fn start_traced(
        api: Api<ComputeInstance>,
        trace: Option<String>,
    ) -> anyhow::Result<Tracker> {
        Self::start_with(api, watcher::Config::default(), trace).await
    }

    async fn start_with(
        api: Api<ComputeInstance>,
        config: watcher::Config,
        trace: Option<String>,
    ) -> anyhow::Result<Tracker> {
        let log = trace
            .as_ref()
            .map(|_| std::sync::Arc::new(std::sync::Mutex::new(Vec::new())));
        let sink = log.clone();
        let marks: MilestoneMap = Default::default();
        let marks_sink = std::sync::Arc::clone(&marks);
        let (tx, rx) = watch::channel(Counts {
            present: 0,
            running: 0,
            launched: 0,
            synced: false,
            at: Instant::now(),
        });
        let task = tokio::spawn(async move {
            let mut objects: HashMap<String, State> = HashMap::new();
            let mut init: HashMap<String, State> = HashMap::new();
            let mut synced = false;
            let mut stream = watcher(api, config).boxed();
            while let Some(event) = stream.next().await {
                let Ok(event) = event else {
                    continue;
                };
                match event {
                    watcher::Event::Init => init.clear(),
                    watcher::Event::InitApply(ci) => {
                        init.insert(ci.metadata.name.clone().unwrap_or_default(), state(&ci));
                    }
                    watcher::Event::InitDone => {
                        objects = std::mem::take(&mut init);
                        synced = true;
                    }
                    watcher::Event::Apply(ci) => {
                        milestones(&marks_sink, &ci, Instant::now());
                        if let (Some(sink), Some(name)) = (&sink, &trace)
                            && ci.metadata.name.as_ref() == Some(name)
                        {
                            sink.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((Instant::now(), summary(&ci)));
                        }
                        objects.insert(ci.metadata.name.clone().unwrap_or_default(), state(&ci));
                    }
                    watcher::Event::Delete(ci) => {
                        if let (Some(sink), Some(name)) = (&sink, &trace)
                            && ci.metadata.name.as_ref() == Some(name)
                        {
                            sink.lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push((Instant::now(), "deleted".to_string()));
                        }
                        objects.remove(&ci.metadata.name.clone().unwrap_or_default());
                    }
                }
                let counts = Counts {
                    present: objects.len(),
                    running: objects.values().filter(|s| s.running).count(),
                    launched: objects.values().filter(|s| s.launched).count(),
                    synced,
                    at: Instant::now(),
                };
                if tx.send(counts).is_err() {
                    return;
                }
            }
        });
        let tracker = Tracker {
            milestones: marks,
            rx,
            task,
            trace: log,
        };
        tracker
            .wait("the first listing", Duration::from_secs(30), |c| c.synced)
            .await?;
        Ok(tracker)
    }

    /// The traced CI's watch events, with milliseconds since `since`.
    pub fn trace(&self, since: Instant) -> Vec<String> {
        self.trace
            .as_ref()
            .map(|t| {
                t.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .map(|(at, line)| {
                        format!(
                            "{:>8.1} ms  {line}",
                            at.saturating_duration_since(since).as_secs_f64() * 1000.0
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn milestones(&self, name: &str) -> Milestones {
        self.milestones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied()
            .unwrap_or_default()
    }

    pub fn counts(&self) -> Counts {
        *self.rx.borrow()
    }

    /// Waits until `done` holds; returns the counts (with the time) when it first held.
    pub async fn wait(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&Counts) -> bool,
    ) -> anyhow::Result<Counts> {
        let mut rx = self.rx.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|c| done(c))).await {
            Ok(Ok(c)) => Ok(*c),
            Ok(Err(_)) => bail!("the watch of CIs ended while waiting for {what}"),
            Err(_) => bail!(
                "timed out after {timeout:?} waiting for {what}; counts now {:?}",
                self.counts()
            ),
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
