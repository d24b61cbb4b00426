//! Sections 1 and 2: N CIs created at once until all are Running, then deleted at once until all
//! are gone; the API writes each half costs, attributed to the user, the automation and the
//! operator; and the "API floor": a client with no logic doing the same writes.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloudkit_api::metadata::{AAP_FINALIZER, FINALIZER, RECONCILED_CONFIG_VERSION_ANNOTATION};
use cloudkit_api::{ComputeInstance, JobState, JobStatus, JobType, Phase, ProviderKind};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use crate::cluster::{Cluster, Requests, Target, WriteCounter, Writes, bench_spec, ci_name};
use crate::operator::{Operator, Options, Provider};
use crate::probe::{self, Memory};
use crate::sim::{Sim, Speed};
use crate::tracker::Tracker;

/// Creates and deletes run this many requests at once (a user or a fulfillment service
/// creating many VMs at once).
pub const CLIENT_CONCURRENCY: usize = 32;

/// Writes of one half of a lifecycle, by writer.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Breakdown {
    /// Everything the API server counted.
    pub apiserver: Writes,
    /// The benchmark acting as the user: creates and deletes.
    pub user: Writes,
    /// The automation (simulated playbooks or the EDA responder).
    pub automation: Writes,
    /// The rest: the operator.
    pub operator: Writes,
}

impl Breakdown {
    fn new(apiserver: Writes, user: Writes, automation: Writes) -> Breakdown {
        let operator = apiserver.minus(&user).minus(&automation);
        Breakdown {
            apiserver,
            user,
            automation,
            operator,
        }
    }
}

/// CPU seconds used by each process during one half.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Cpu {
    pub operator: f64,
    pub apiserver: f64,
    pub etcd: f64,
    pub bench: f64,
    /// kube-controller-manager (its garbage collector removes the owner references of deleted
    /// CIs from their Tenant). Absent in results of older runs.
    #[serde(default)]
    pub controller_manager: f64,
}

impl Cpu {
    /// "operator / kube-apiserver / etcd / benchmark / kube-controller-manager" seconds.
    pub fn describe(&self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
            self.operator, self.apiserver, self.etcd, self.bench, self.controller_manager
        )
    }

    /// All processes together.
    pub fn total(&self) -> f64 {
        self.operator + self.apiserver + self.etcd + self.bench + self.controller_manager
    }
}

/// CPU times at one moment, to tell what each process used since.
pub struct CpuMark {
    operators: Vec<u32>,
    apiserver: u32,
    etcd: u32,
    controller_manager: u32,
    values: Cpu,
}

impl CpuMark {
    /// Marks the API server, etcd, this process and the operator processes `operators` (their
    /// CPU is summed).
    pub fn now(cluster: &Cluster, operators: &[u32]) -> CpuMark {
        let (etcd, apiserver, controller_manager) = cluster.server_pids();
        CpuMark {
            operators: operators.to_vec(),
            apiserver,
            etcd,
            controller_manager,
            values: Cpu {
                operator: operators.iter().copied().map(probe::cpu_seconds).sum(),
                apiserver: probe::cpu_seconds(apiserver),
                etcd: probe::cpu_seconds(etcd),
                bench: probe::own_cpu_seconds(),
                controller_manager: probe::cpu_seconds(controller_manager),
            },
        }
    }

    pub fn since(&self) -> Cpu {
        Cpu {
            operator: self
                .operators
                .iter()
                .copied()
                .map(probe::cpu_seconds)
                .sum::<f64>()
                - self.values.operator,
            apiserver: probe::cpu_seconds(self.apiserver) - self.values.apiserver,
            etcd: probe::cpu_seconds(self.etcd) - self.values.etcd,
            bench: probe::own_cpu_seconds() - self.values.bench,
            controller_manager: probe::cpu_seconds(self.controller_manager)
                - self.values.controller_manager,
        }
    }
}

/// One lifecycle run of the operator.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Lifecycle {
    pub n: usize,
    /// How many tenants the CIs are spread over (0 in results of older runs: 1).
    #[serde(default)]
    pub tenants: usize,
    pub provider: String,
    pub provision_secs: f64,
    pub delete_secs: f64,
    pub provision: Breakdown,
    pub delete: Breakdown,
    pub provision_cpu: Cpu,
    pub delete_cpu: Cpu,
    /// Writes the API server refused with 409 Conflict (included in the counts).
    pub conflicts: f64,
    /// GETs and LISTs of ComputeInstances (all clients) per half.
    pub provision_reads: f64,
    pub delete_reads: f64,
    /// Of those, the automation's. Absent in results of older runs.
    #[serde(default)]
    pub provision_automation_reads: f64,
    #[serde(default)]
    pub delete_automation_reads: f64,
    /// Every request the API server answered in each half. Absent in results of older runs.
    #[serde(default)]
    pub provision_requests: Requests,
    #[serde(default)]
    pub delete_requests: Requests,
    /// Launches at the AAP simulator (0 with EDA).
    pub launches: u64,
    pub max_launches_per_key: u64,
    /// The operator's own count of status writes.
    pub operator_status_writes: f64,
    /// The operator's own count of its writes refused with 409, by write (finalizer, status,
    /// answer). Absent in results of older runs.
    #[serde(default)]
    pub operator_conflicts: std::collections::BTreeMap<String, f64>,
    pub reconciles: f64,
    pub operator_memory: Memory,
    pub load_before: f64,
    pub load_after: f64,
}

impl Lifecycle {
    pub fn provision_rate(&self) -> f64 {
        self.n as f64 / self.provision_secs
    }
    pub fn delete_rate(&self) -> f64 {
        self.n as f64 / self.delete_secs
    }
}

/// One run of the API floor.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Floor {
    pub n: usize,
    pub concurrency: usize,
    pub provision_secs: f64,
    pub delete_secs: f64,
    pub provision_writes: Writes,
    pub delete_writes: Writes,
    pub provision_cpu: Cpu,
    pub delete_cpu: Cpu,
    /// Every request the API server answered in each half. Absent in results of older runs.
    #[serde(default)]
    pub provision_requests: Requests,
    #[serde(default)]
    pub delete_requests: Requests,
}

impl Floor {
    pub fn provision_rate(&self) -> f64 {
        self.n as f64 / self.provision_secs
    }
    pub fn delete_rate(&self) -> f64 {
        self.n as f64 / self.delete_secs
    }
}

pub fn new_ci(i: usize) -> ComputeInstance {
    cloudkit_test_support::in_test_tenant(ComputeInstance::new(&ci_name(i), bench_spec()))
}

/// CI `i` of CIs spread over `tenants` tenants (`tenant-<i mod tenants>`); all in the test
/// tenant when `tenants` is 1.
pub fn ci_of_tenants(i: usize, tenants: usize) -> ComputeInstance {
    let mut ci = new_ci(i);
    if tenants > 1 {
        ci.annotations_mut().insert(
            cloudkit_api::metadata::TENANT_ANNOTATION.to_string(),
            format!("tenant-{}", i % tenants),
        );
    }
    ci
}

/// A create call: the CI's name, when the call started and when it returned.
pub type Created = (String, Instant, Instant);

/// Creates `range` with `concurrency` requests at once.
pub async fn create_all(
    api: &Api<ComputeInstance>,
    range: std::ops::Range<usize>,
    concurrency: usize,
) -> anyhow::Result<Vec<Created>> {
    create_each(api, range, concurrency, new_ci).await
}

/// Creates `make(i)` for each `i` of `range` with `concurrency` requests at once.
pub async fn create_each(
    api: &Api<ComputeInstance>,
    range: std::ops::Range<usize>,
    concurrency: usize,
    make: impl Fn(usize) -> ComputeInstance,
) -> anyhow::Result<Vec<Created>> {
    let make = &make;
    futures::stream::iter(range)
        .map(|i| async move {
            let ci = make(i);
            let start = Instant::now();
            api.create(&PostParams::default(), &ci)
                .await
                .with_context(|| format!("creating {}", ci_name(i)))?;
            Ok::<_, anyhow::Error>((ci_name(i), start, Instant::now()))
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

pub async fn delete_all(
    api: &Api<ComputeInstance>,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    futures::stream::iter(range)
        .map(|i| async move {
            api.delete(&ci_name(i), &DeleteParams::default())
                .await
                .with_context(|| format!("deleting {}", ci_name(i)))
                .map(drop)
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// Generous: a stuck run fails instead of hanging the benchmark.
pub fn deadline(n: usize) -> Duration {
    Duration::from_secs(60 + n as u64 / 2)
}

pub enum Automation {
    Aap(Sim),
    Eda(crate::eda::Responder),
}

impl Automation {
    fn writes(&self) -> Writes {
        match self {
            Automation::Aap(sim) => sim.writes.snapshot(),
            Automation::Eda(r) => r.writes.snapshot(),
        }
    }

    fn reads(&self) -> f64 {
        match self {
            Automation::Aap(sim) => sim.writes.reads(),
            Automation::Eda(r) => r.writes.reads(),
        }
    }
}

/// Runs the operator through one lifecycle of `n` CIs in a fresh API server.
pub async fn run_operator(
    bin: &Path,
    n: usize,
    tenants: usize,
    provider: ProviderKind,
    poll_interval: &str,
) -> anyhow::Result<Lifecycle> {
    let cluster = Cluster::start(&format!("life-{provider}-{n}")).await?;
    let automation = match provider {
        ProviderKind::Aap => Automation::Aap(Sim::start(&cluster, Speed::Fast).await?),
        ProviderKind::Eda => Automation::Eda(crate::eda::Responder::start(&cluster).await?),
    };
    let options = Options {
        provider: match &automation {
            Automation::Aap(sim) => Provider::Aap {
                url: sim.api_url().to_string(),
            },
            Automation::Eda(r) => Provider::Eda {
                provision: r.provision_url(),
                deprovision: r.deprovision_url(),
            },
        },
        poll_interval: poll_interval.to_string(),
        env: Vec::new(),
        namespace: None,
    };
    let operator = Operator::spawn(bin, &cluster, &options).await?;
    let user = WriteCounter::shared();
    let user_client = cluster.counting_client(Arc::clone(&user)).await?;
    let api = cluster.cis(&user_client);
    let traced = std::env::var("CLOUDKIT_BENCH_TRACE").ok();
    let tracker = Tracker::start_traced(cluster.cis(&cluster.client), traced.clone()).await?;
    // Let the operator's watch settle.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let load_before = probe::loadavg();
    let c0 = cluster.counters().await?;
    let u0 = user.snapshot();
    let m0 = automation.writes();
    let automation_reads0 = automation.reads();
    let cpu = CpuMark::now(&cluster, &[operator.pid]);
    let t0 = Instant::now();
    create_each(&api, 0..n, CLIENT_CONCURRENCY, |i| {
        ci_of_tenants(i, tenants)
    })
    .await?;
    let done = tracker
        .wait("every CI Running", deadline(n), |c| c.running == n)
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_tail()))?;
    let provision_secs = (done.at - t0).as_secs_f64();
    let provision_cpu = cpu.since();
    // Writes still in flight at the moment the last CI turned Running (the automation's or the
    // operator's last status write) land within a moment; count them with this half.
    settle(&cluster).await?;
    let c1 = cluster.counters().await?;
    let u1 = user.snapshot();
    let m1 = automation.writes();
    let provision = Breakdown::new(c1.writes.since(&c0.writes), u1.since(&u0), m1.since(&m0));
    let automation_reads1 = automation.reads();

    let cpu = CpuMark::now(&cluster, &[operator.pid]);
    let t1 = Instant::now();
    delete_all(&api, 0..n).await?;
    let gone = tracker
        .wait("every CI gone", deadline(n), |c| c.present == 0)
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_tail()))?;
    let delete_secs = (gone.at - t1).as_secs_f64();
    let delete_cpu = cpu.since();
    settle(&cluster).await?;
    let c2 = cluster.counters().await?;
    let u2 = user.snapshot();
    let m2 = automation.writes();
    let delete = Breakdown::new(c2.writes.since(&c1.writes), u2.since(&u1), m2.since(&m1));
    let conflicts = c2.conflicts - c0.conflicts;
    let delete_automation_reads = automation.reads() - automation_reads1;

    if traced.is_some() {
        eprintln!("watch events of {}:", traced.as_deref().unwrap_or_default());
        for line in tracker.trace(t0) {
            eprintln!("  {line}");
        }
    }
    let (launches, max_launches_per_key) = match &automation {
        Automation::Aap(sim) => (sim.launches(), sim.max_launches_per_key()),
        Automation::Eda(_) => (0, 0),
    };
    let operator_status_writes = operator.counter("cloudkit_status_writes_total").await?;
    let mut operator_conflicts = std::collections::BTreeMap::new();
    for sample in operator.metrics().await? {
        if sample.name == "cloudkit_write_conflicts_total"
            && let Some(write) = sample.labels.get("write")
        {
            *operator_conflicts.entry(write.clone()).or_insert(0.0) += sample.value;
        }
    }
    let reconciles = operator.counter("cloudkit_reconciles_total").await?;
    let operator_memory = operator.memory()?;
    let load_after = probe::loadavg();
    operator.stop().await?;
    Ok(Lifecycle {
        n,
        tenants,
        provider: provider.to_string(),
        provision_secs,
        delete_secs,
        provision,
        delete,
        provision_cpu,
        delete_cpu,
        conflicts,
        // Each scrape of /metrics is no CI read; the counters only count the clients.
        provision_reads: c1.reads - c0.reads,
        delete_reads: c2.reads - c1.reads,
        provision_automation_reads: automation_reads1 - automation_reads0,
        delete_automation_reads,
        provision_requests: c1.requests.since(&c0.requests),
        delete_requests: c2.requests.since(&c1.requests),
        launches,
        max_launches_per_key,
        operator_status_writes,
        operator_conflicts,
        reconciles,
        operator_memory,
        load_before,
        load_after,
    })
}

/// Waits until the API server's write counters stop moving (at most 3 s).
pub async fn settle(cluster: &Cluster) -> anyhow::Result<()> {
    let mut last = cluster.apiserver_writes().await?;
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = cluster.apiserver_writes().await?;
        if now == last {
            return Ok(());
        }
        last = now;
    }
    Ok(())
}

/// The writes per CI the floor makes, from the operator's run: every write the API server saw
/// in each half (user, automation and operator alike).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub struct FloorPlan {
    /// Totals over all CIs (the floor spreads them evenly, the remainder on the first CIs).
    pub provision_object_patches: usize,
    pub provision_status_patches: usize,
    pub provision_events: usize,
    pub delete_object_patches: usize,
    pub delete_status_patches: usize,
    pub delete_events: usize,
    /// The automation's reads of its CI (GETs before its patches): part of the workload, not
    /// of the operator. Absent (0) in results of older runs.
    #[serde(default)]
    pub provision_reads: usize,
    #[serde(default)]
    pub delete_reads: usize,
}

impl FloorPlan {
    pub fn from_run(run: &Lifecycle) -> FloorPlan {
        FloorPlan::from_counts(
            &run.provision.apiserver,
            &run.delete.apiserver,
            run.provision_automation_reads,
            run.delete_automation_reads,
        )
    }

    /// From every write the API server counted in each half of a run, and the automation's
    /// reads in each.
    pub fn from_counts(p: &Writes, d: &Writes, p_reads: f64, d_reads: f64) -> FloorPlan {
        let count = |v: f64| v.round().max(0.0) as usize;
        FloorPlan {
            provision_reads: count(p_reads),
            delete_reads: count(d_reads),
            // The creates are the floor's own, one per CI.
            provision_object_patches: count(p.of(Target::Object) - p.verb("POST", Target::Object)),
            provision_status_patches: count(p.of(Target::Status)),
            provision_events: count(p.of(Target::Event)),
            delete_object_patches: count(d.of(Target::Object) - d.verb("DELETE", Target::Object)),
            delete_status_patches: count(d.of(Target::Status)),
            delete_events: count(d.of(Target::Event)),
        }
    }
}

fn share(total: usize, n: usize, i: usize) -> usize {
    total / n + usize::from(i < total % n)
}

/// The API floor: for each CI, the same number of writes as the operator's run made and the
/// automation's reads, in a plausible order (create, finalizer, status, automation's finalizer and annotation, status
/// Running, events; delete, status Deleting, events, finalizers removed) with no reads and no
/// decisions, `concurrency` CIs at a time.
pub async fn run_floor(n: usize, plan: FloorPlan, concurrency: usize) -> anyhow::Result<Floor> {
    let cluster = Cluster::start(&format!("floor-{n}")).await?;
    let api = cluster.cis(&cluster.client);
    let events: Api<Event> = Api::namespaced(cluster.client.clone(), &cluster.namespace);
    let status = StatusBodies::new();
    let namespace = cluster.namespace.as_str();
    // The same watch the operator's run has, so both pay the same harness cost.
    let _tracker = Tracker::start(api.clone()).await?;

    let c0 = cluster.counters().await?;
    let cpu = CpuMark::now(&cluster, &[]);
    let t0 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (api, events, status) = (&api, &events, &status);
            async move {
                let name = ci_name(i);
                let ci = api.create(&PostParams::default(), &new_ci(i)).await?;
                for _ in 0..share(plan.provision_reads, n, i) {
                    api.get(&name).await?;
                }
                let metas = share(plan.provision_object_patches, n, i);
                let statuses = share(plan.provision_status_patches, n, i);
                for k in 0..metas {
                    let patch = match k {
                        0 => json!({"metadata": {"finalizers": [FINALIZER]}}),
                        1 => json!({"metadata": {"finalizers": [FINALIZER, AAP_FINALIZER]}}),
                        _ => json!({"metadata": {"annotations": {
                            RECONCILED_CONFIG_VERSION_ANNOTATION: status.version.clone()}}}),
                    };
                    merge(api, &name, &patch).await?;
                    // The operator's first status write follows its finalizer.
                    if k == 0 && statuses > 0 {
                        merge_status(api, &name, &status.provision(false)).await?;
                    }
                }
                for k in usize::from(metas > 0)..statuses {
                    merge_status(api, &name, &status.provision(k + 1 == statuses)).await?;
                }
                for _ in 0..share(plan.provision_events, n, i) {
                    event(events, &ci).await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let provision_secs = t0.elapsed().as_secs_f64();
    let provision_cpu = cpu.since();
    let c1 = cluster.counters().await?;

    let cpu = CpuMark::now(&cluster, &[]);
    let t1 = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (api, events, status) = (&api, &events, &status);
            async move {
                let name = ci_name(i);
                api.delete(&name, &DeleteParams::default()).await?;
                for _ in 0..share(plan.delete_reads, n, i) {
                    api.get(&name).await?;
                }
                for _ in 0..share(plan.delete_status_patches, n, i) {
                    merge_status(api, &name, &status.deleting()).await?;
                }
                let reference = ci_ref(&name, namespace);
                let metas = share(plan.delete_object_patches, n, i);
                for k in 0..metas {
                    let last = k + 1 == metas;
                    let finalizers: Vec<&str> = if last { vec![] } else { vec![FINALIZER] };
                    merge(api, &name, &json!({"metadata": {"finalizers": finalizers}})).await?;
                    if k == 0 {
                        for _ in 0..share(plan.delete_events, n, i) {
                            event_for(events, reference.clone()).await?;
                        }
                    }
                }
                Ok::<_, anyhow::Error>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<()>>()
        .await?;
    let delete_secs = t1.elapsed().as_secs_f64();
    let delete_cpu = cpu.since();
    let c2 = cluster.counters().await?;
    if !api.list(&Default::default()).await?.items.is_empty() {
        bail!("the floor left CIs behind");
    }
    Ok(Floor {
        n,
        concurrency,
        provision_secs,
        delete_secs,
        provision_writes: c1.writes.since(&c0.writes),
        delete_writes: c2.writes.since(&c1.writes),
        provision_cpu,
        delete_cpu,
        provision_requests: c1.requests.since(&c0.requests),
        delete_requests: c2.requests.since(&c1.requests),
    })
}

async fn merge(
    api: &Api<ComputeInstance>,
    name: &str,
    patch: &serde_json::Value,
) -> anyhow::Result<()> {
    api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

async fn merge_status(
    api: &Api<ComputeInstance>,
    name: &str,
    patch: &serde_json::Value,
) -> anyhow::Result<()> {
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(patch))
        .await?;
    Ok(())
}

fn ci_ref(name: &str, namespace: &str) -> ObjectReference {
    ObjectReference {
        namespace: Some(namespace.to_string()),
        api_version: Some(ComputeInstance::api_version(&()).into_owned()),
        kind: Some(ComputeInstance::kind(&()).into_owned()),
        name: Some(name.to_string()),
        ..ObjectReference::default()
    }
}

async fn event(events: &Api<Event>, ci: &ComputeInstance) -> anyhow::Result<()> {
    event_for(events, ci.object_ref(&())).await
}

async fn event_for(events: &Api<Event>, regarding: ObjectReference) -> anyhow::Result<()> {
    let name = regarding.name.clone().unwrap_or_default();
    let e = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}-")),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(Timestamp::now())),
        action: Some("JobStarted".into()),
        reason: Some("JobStarted".into()),
        note: Some(format!("started provision job 1 for {name}")),
        type_: Some("Normal".into()),
        regarding: Some(regarding),
        reporting_controller: Some("cloudkit-operator".into()),
        reporting_instance: Some("cloudkit-operator".into()),
        ..Event::default()
    };
    events.create(&PostParams::default(), &e).await?;
    Ok(())
}

/// Status bodies shaped like the operator's.
struct StatusBodies {
    version: String,
}

impl StatusBodies {
    fn new() -> StatusBodies {
        StatusBodies {
            version: cloudkit_api::config_version(&bench_spec()),
        }
    }

    fn job(&self, job_type: JobType, state: JobState) -> JobStatus {
        let mut job = JobStatus::new("1", job_type, Time(Timestamp::now()), state);
        job.provider = Some(ProviderKind::Aap);
        job.config_version = Some(self.version.clone());
        job.launch_key = Some(format!(
            "00000000-0000-0000-0000-000000000000/{job_type}/{}/1",
            self.version
        ));
        job.attempt = Some(1);
        job
    }

    fn condition(&self, applied: bool) -> Condition {
        Condition {
            type_: "ConfigurationApplied".into(),
            status: if applied { "True" } else { "False" }.into(),
            reason: if applied { "Applied" } else { "Applying" }.into(),
            message: "configuration 1c15a84e66d482fb applied by provision job 1".into(),
            observed_generation: Some(1),
            last_transition_time: Time(Timestamp::now()),
        }
    }

    fn provision(&self, done: bool) -> serde_json::Value {
        let state = if done {
            JobState::Succeeded
        } else {
            JobState::Pending
        };
        json!({"status": {
            "phase": if done { Phase::Running } else { Phase::Starting },
            "conditions": [self.condition(done)],
            "observedGeneration": 1,
            "desiredConfigVersion": self.version,
            "reconciledConfigVersion": if done { Some(&self.version) } else { None },
            "jobs": [self.job(JobType::Provision, state)],
        }})
    }

    fn deleting(&self) -> serde_json::Value {
        json!({"status": {
            "phase": Phase::Deleting,
            "jobs": [self.job(JobType::Provision, JobState::Succeeded),
                     self.job(JobType::Deprovision, JobState::Running)],
        }})
    }
}
