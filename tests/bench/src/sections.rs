//! The sections of the benchmark (section 7 is in `shards.rs`). Each starts a fresh API server so one cannot disturb
//! another.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use cloudkit_api::{ComputeInstance, ProviderKind};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};

use crate::cluster::{Cluster, ci_name};
use crate::lifecycle::{self, CLIENT_CONCURRENCY, Floor, FloorPlan, Lifecycle, deadline};
use crate::operator::{Operator, Options};
use crate::probe::{self, Memory};
use crate::sim::{Sim, Speed};
use crate::tracker::Tracker;

#[derive(Debug)]
pub struct Config {
    pub bin: PathBuf,
    pub quick: bool,
    pub sizes: Vec<usize>,
    pub poll_interval: String,
    pub floor_concurrency: usize,
    /// Another build of the operator to compare in the memory section.
    pub alt_operator: Option<PathBuf>,
    pub alt_label: String,
    /// CIs per lifecycle of section 7.
    pub shard_cis: usize,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_gib: f64,
    pub load_start: f64,
    pub load_end: f64,
    pub started: String,
    pub duration_secs: f64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Results {
    pub machine: Machine,
    pub quick: bool,
    pub poll_interval: String,
    pub floor_concurrency: usize,
    pub lifecycles: Vec<Lifecycle>,
    pub floors: Vec<(FloorPlan, Floor)>,
    pub eda: Option<Lifecycle>,
    /// The largest N of section 1 again, its CIs spread over N / 10 tenants.
    #[serde(default)]
    pub spread: Option<Lifecycle>,
    pub memory: Option<MemoryResult>,
    pub restart: Option<Restart>,
    pub load: Option<Load>,
    pub latency: Option<Latency>,
    #[serde(default)]
    pub shards: Option<crate::shards::Shards>,
}

/// The best rates of each side at one N.
#[derive(Clone, Copy, Debug, Default)]
pub struct Best {
    pub n: usize,
    pub runs: usize,
    pub operator_provision: f64,
    pub operator_delete: f64,
    pub floor_provision: f64,
    pub floor_delete: f64,
    pub operator_hwm_mib: f64,
}

impl Results {
    pub fn best(&self) -> Vec<Best> {
        let mut sizes: Vec<usize> = self.floors.iter().map(|(_, f)| f.n).collect();
        sizes.dedup();
        let max = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
        sizes
            .into_iter()
            .map(|n| {
                let ops: Vec<&Lifecycle> = self.lifecycles.iter().filter(|l| l.n == n).collect();
                let fls: Vec<&Floor> = self
                    .floors
                    .iter()
                    .map(|(_, f)| f)
                    .filter(|f| f.n == n)
                    .collect();
                Best {
                    n,
                    runs: ops.len(),
                    operator_provision: max(ops.iter().map(|l| l.provision_rate()).collect()),
                    operator_delete: max(ops.iter().map(|l| l.delete_rate()).collect()),
                    floor_provision: max(fls.iter().map(|f| f.provision_rate()).collect()),
                    floor_delete: max(fls.iter().map(|f| f.delete_rate()).collect()),
                    operator_hwm_mib: max(ops
                        .iter()
                        .map(|l| l.operator_memory.hwm_mib())
                        .collect()),
                }
            })
            .collect()
    }
}

pub async fn run(config: &Config, want: impl Fn(u8) -> bool) -> anyhow::Result<Results> {
    let started = Instant::now();
    let mut results = Results {
        machine: Machine {
            cpus: probe::cpus(),
            memory_gib: total_memory_gib(),
            load_start: probe::loadavg(),
            started: Timestamp::now().strftime("%Y-%m-%d %H:%M UTC").to_string(),
            ..Machine::default()
        },
        quick: config.quick,
        poll_interval: config.poll_interval.clone(),
        floor_concurrency: config.floor_concurrency,
        ..Results::default()
    };
    if want(1) || want(2) {
        let sizes = if want(1) {
            config.sizes.clone()
        } else {
            vec![config.sizes.iter().copied().min().unwrap_or(100)]
        };
        let reps = if config.quick || !want(1) { 1 } else { 2 };
        for &n in &sizes {
            // Operator and floor alternate, so a burst of outside load hits one pair, not one
            // side; the report keeps the best of each side.
            for rep in 1..=reps {
                eprintln!("[1] lifecycle of {n} CIs, operator (aap), run {rep}");
                let run = lifecycle::run_operator(
                    &config.bin,
                    n,
                    1,
                    ProviderKind::Aap,
                    &config.poll_interval,
                )
                .await?;
                rates(run.provision_rate(), run.delete_rate());
                if want(1) {
                    let plan = FloorPlan::from_run(&run);
                    eprintln!("[1] lifecycle of {n} CIs, API floor, run {rep}");
                    let floor = lifecycle::run_floor(n, plan, config.floor_concurrency).await?;
                    rates(floor.provision_rate(), floor.delete_rate());
                    results.floors.push((plan, floor));
                }
                results.lifecycles.push(run);
            }
        }
        if want(1) {
            // Real installations have many tenants with a few VMs each; the runs above put every
            // CI into one tenant, whose owner list then grows to N.
            let n = sizes.iter().copied().max().unwrap_or(100);
            let tenants = (n / 10).max(1);
            eprintln!("[1] lifecycle of {n} CIs in {tenants} tenants, operator (aap)");
            let run = lifecycle::run_operator(
                &config.bin,
                n,
                tenants,
                ProviderKind::Aap,
                &config.poll_interval,
            )
            .await?;
            rates(run.provision_rate(), run.delete_rate());
            results.spread = Some(run);
        }
    }
    if want(2) {
        let n = if config.quick {
            100
        } else {
            config
                .sizes
                .iter()
                .copied()
                .filter(|n| *n <= 500)
                .max()
                .unwrap_or(100)
        };
        eprintln!("[2] lifecycle of {n} CIs, operator (eda)");
        let run =
            lifecycle::run_operator(&config.bin, n, 1, ProviderKind::Eda, &config.poll_interval)
                .await?;
        rates(run.provision_rate(), run.delete_rate());
        results.eda = Some(run);
    }
    if want(3) {
        eprintln!("[3] memory");
        results.memory = Some(memory(config).await?);
    }
    if want(4) {
        eprintln!("[4] restart");
        results.restart = Some(restart(config).await?);
    }
    if want(5) {
        eprintln!("[5] provider load");
        results.load = Some(load(config).await?);
    }
    if want(6) {
        eprintln!("[6] create-to-launch latency");
        results.latency = Some(latency(config).await?);
    }
    if want(7) {
        eprintln!("[7] shards");
        results.shards = Some(crate::shards::run(config, config.shard_cis).await?);
    }
    results.machine.load_end = probe::loadavg();
    results.machine.duration_secs = started.elapsed().as_secs_f64();
    Ok(results)
}

/// The progress line of one lifecycle.
pub fn rates(provision: f64, delete: f64) {
    eprintln!("    provision {provision:.1} CI/s, delete {delete:.1} CI/s");
}

fn total_memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0 / 1024.0)
        .unwrap_or(0.0)
}

/// Creates `range` through the operator and waits until they are Running.
async fn provision_through_operator(
    api: &Api<ComputeInstance>,
    tracker: &Tracker,
    operator: &Operator,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    let want = range.end;
    lifecycle::create_all(api, range, CLIENT_CONCURRENCY).await?;
    tracker
        .wait("every CI Running", deadline(want), |c| c.running >= want)
        .await
        .with_context(|| format!("operator log:\n{}", operator.log_tail()))?;
    Ok(())
}

/// Waits until the operator has made at least `n` reconcile passes; returns when it saw that.
async fn wait_reconciles(
    operator: &Operator,
    n: usize,
    timeout: Duration,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    loop {
        let count = operator.counter("cloudkit_reconciles_total").await?;
        if count >= n as f64 {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!(
                "the operator made {count} of {n} reconcile passes in {timeout:?}; log:\n{}",
                operator.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the CI's provision job is terminal and nothing has changed for a second: the
/// operator is done with it.
async fn wait_settled(api: &Api<ComputeInstance>, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = String::new();
    loop {
        let ci = api.get(name).await?;
        let done = ci
            .status
            .as_ref()
            .is_some_and(|s| !s.jobs.is_empty() && s.jobs.iter().all(|j| j.is_terminal()));
        let rv = ci.resource_version().unwrap_or_default();
        if done && rv == last {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{name} did not settle: {:?}", ci.status);
        }
        last = rv;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Copies of a Running CI the operator produced, with their own names and uids: what the API
/// server holds after the operator provisioned them. Two writes each (create with finalizers and
/// annotation, then status).
/// Creates Running copies of `template` (one the operator provisioned) with the names of
/// `range`, each also an owner of the template's Tenant, as the operator leaves its CIs: a fresh
/// operator then has nothing to do with them.
async fn seed(
    api: &Api<ComputeInstance>,
    template: &ComputeInstance,
    range: std::ops::Range<usize>,
) -> anyhow::Result<()> {
    let template_uid = template.uid().unwrap_or_default();
    let owners: Vec<serde_json::Value> = futures::stream::iter(range)
        .map(|i| {
            let template_uid = template_uid.clone();
            async move {
                let mut ci = ComputeInstance::new(&ci_name(i), template.spec.clone());
                ci.metadata.finalizers = template.metadata.finalizers.clone();
                ci.metadata.annotations = template.metadata.annotations.clone();
                ci.metadata.labels = template.metadata.labels.clone();
                let created = api.create(&PostParams::default(), &ci).await?;
                let uid = created.uid().unwrap_or_default();
                let mut status = template.status.clone().unwrap_or_default();
                for job in &mut status.jobs {
                    if let Some(key) = &mut job.launch_key {
                        *key = key.replace(&template_uid, &uid);
                    }
                }
                api.patch_status(
                    &ci_name(i),
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "status": status })),
                )
                .await?;
                Ok::<_, anyhow::Error>(serde_json::json!({
                    "apiVersion": "cloudkit.openshift.io/v1alpha1",
                    "kind": "ComputeInstance",
                    "name": ci_name(i),
                    "uid": uid,
                }))
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_collect()
        .await?;
    let Some(reference) = template
        .status
        .as_ref()
        .and_then(|s| s.tenant_reference.clone())
    else {
        return Ok(());
    };
    let tenants: Api<cloudkit_api::Tenant> =
        Api::namespaced(api.clone().into_client(), &reference.namespace);
    let tenant = tenants.get(&reference.name).await?;
    let mut all: Vec<serde_json::Value> = tenant
        .owner_references()
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    all.extend(owners);
    tenants
        .patch(
            &reference.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {
                "resourceVersion": tenant.resource_version(),
                "ownerReferences": all,
            }})),
        )
        .await
        .context("making the copies owners of the Tenant")?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// 3. Memory

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MemoryPoint {
    pub cis: usize,
    pub label: String,
    pub memory: Memory,
    pub threads: u64,
    /// Seconds from the process start until every CI was reconciled once.
    pub caught_up_secs: f64,
    /// Status writes the operator made (0 expected: the CIs are Running).
    pub status_writes: f64,
}

/// What a reflector store of the CIs costs on its own, in a process that does nothing else.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct CacheProbe {
    pub objects: usize,
    pub managed_fields_kept: bool,
    pub anon_before_kib: u64,
    pub anon_after_kib: u64,
    pub hwm_kib: u64,
}

impl CacheProbe {
    pub fn anon_mib(&self) -> f64 {
        (self.anon_after_kib.saturating_sub(self.anon_before_kib)) as f64 / 1024.0
    }
    pub fn per_ci_kib(&self) -> f64 {
        self.anon_after_kib.saturating_sub(self.anon_before_kib) as f64 / self.objects.max(1) as f64
    }
}

/// The `--cache-probe` mode: the operator's watcher and reflector (same configuration, same
/// managedFields trimming) over `namespace`, and nothing else.
pub async fn cache_probe(namespace: &str, keep_managed_fields: bool) -> anyhow::Result<()> {
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let pid = std::process::id();
    let client = kube::Client::try_default().await?;
    let api: Api<ComputeInstance> = Api::namespaced(client, namespace);
    // The connection, TLS session and client buffers exist before the measurement starts.
    api.list(&kube::api::ListParams::default().limit(1)).await?;
    let before = probe::memory(pid)?;
    let (reader, writer) = reflector::store();
    // The operator's watch: any cached version, its page size.
    let config = watcher::Config::default()
        .any_semantic()
        .page_size(cloudkit_reconciler::LIST_PAGE_SIZE);
    let stream = watcher(api, config)
        .modify(move |ci: &mut ComputeInstance| {
            if !keep_managed_fields {
                cloudkit_api::cache::drop_unread_metadata(ci);
            }
        })
        .reflect(writer)
        .touched_objects();
    let task = tokio::spawn(stream.for_each(|_| futures::future::ready(())));
    reader.wait_until_ready().await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = probe::memory(pid)?;
    let result = CacheProbe {
        objects: reader.len(),
        managed_fields_kept: keep_managed_fields,
        anon_before_kib: before.anon_kib,
        anon_after_kib: after.anon_kib,
        hwm_kib: after.hwm_kib,
    };
    task.abort();
    println!("{}", serde_json::to_string(&result)?);
    Ok(())
}

async fn run_cache_probe(
    cluster: &Cluster,
    keep_managed_fields: bool,
) -> anyhow::Result<CacheProbe> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.env("KUBECONFIG", cluster.env.kubeconfig_path())
        .arg("--cache-probe")
        .arg(&cluster.namespace);
    if keep_managed_fields {
        cmd.arg("--keep-managed-fields");
    }
    let out = cmd.output().await?;
    if !out.status.success() {
        bail!(
            "cache probe failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct MemoryResult {
    pub points: Vec<MemoryPoint>,
    /// The reflector store alone with the most CIs: as the operator keeps it, and with
    /// managedFields.
    pub cache: Vec<CacheProbe>,
    /// Size of one Running CI as the operator caches it (JSON, without managedFields).
    pub ci_json_bytes: usize,
    /// Same CI with its managedFields, as the API server sends it.
    pub ci_json_bytes_with_managed_fields: usize,
}

/// An operator process to measure: which binary, with which environment.
struct Variant {
    label: String,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

impl Variant {
    fn new(label: &str, bin: &std::path::Path) -> Variant {
        Variant {
            label: label.to_string(),
            bin: bin.to_path_buf(),
            env: Vec::new(),
        }
    }
}

const JEMALLOC: &str = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2";

/// The same binary with other allocator settings, to tell allocator overhead from live data; and
/// the alternative build, when given.
fn allocator_variants(config: &Config) -> Vec<Variant> {
    let mut out = vec![Variant {
        env: vec![("MALLOC_ARENA_MAX".into(), "2".into())],
        ..Variant::new("MALLOC_ARENA_MAX=2", &config.bin)
    }];
    if std::path::Path::new(JEMALLOC).exists() {
        out.push(Variant {
            env: vec![("LD_PRELOAD".into(), JEMALLOC.into())],
            ..Variant::new("jemalloc 5.3 (LD_PRELOAD)", &config.bin)
        });
    }
    if let Some(alt) = &config.alt_operator {
        out.push(Variant::new(&config.alt_label, alt));
    }
    out
}

async fn memory(config: &Config) -> anyhow::Result<MemoryResult> {
    let cluster = Cluster::start("memory").await?;
    let sim = Sim::start(&cluster, Speed::Fast).await?;
    let api = cluster.cis(&cluster.client);
    let tracker = Tracker::start(api.clone()).await?;
    let options = Options::aap(sim.api_url(), &config.poll_interval);
    let mut result = MemoryResult::default();

    if let Some(alt) = &config.alt_operator {
        let op = Operator::spawn(alt, &cluster, &options).await?;
        tokio::time::sleep(Duration::from_secs(5)).await;
        result.points.push(MemoryPoint {
            cis: 0,
            label: format!("idle, {}", config.alt_label),
            memory: op.memory()?,
            threads: probe::threads(op.pid),
            ..MemoryPoint::default()
        });
        op.stop().await?;
    }
    let op = Operator::spawn(&config.bin, &cluster, &options).await?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    result.points.push(MemoryPoint {
        cis: 0,
        label: "idle".into(),
        memory: op.memory()?,
        threads: probe::threads(op.pid),
        ..MemoryPoint::default()
    });
    // One CI through the real operator: the model for the others.
    provision_through_operator(&api, &tracker, &op, 0..1).await?;
    wait_settled(&api, &ci_name(0)).await?;
    op.stop().await?;
    let template = api.get(&ci_name(0)).await?;
    result.ci_json_bytes_with_managed_fields = serde_json::to_vec(&template)?.len();
    let mut bare = template.clone();
    bare.managed_fields_mut().clear();
    result.ci_json_bytes = serde_json::to_vec(&bare)?.len();

    let sizes: &[usize] = if config.quick { &[200] } else { &[1000, 5000] };
    let mut have = 1;
    for &n in sizes {
        eprintln!("    seeding {} Running CIs", n - have);
        seed(&api, &template, have..n).await?;
        have = n;
        let mut variants = vec![Variant::new("default", &config.bin)];
        if n == *sizes.last().unwrap_or(&n) {
            variants.extend(allocator_variants(config));
        }
        for variant in variants {
            let options = Options {
                env: variant.env,
                ..options.clone()
            };
            let label = variant.label;
            let op = Operator::spawn(&variant.bin, &cluster, &options).await?;
            let caught = wait_reconciles(&op, n, Duration::from_secs(120)).await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            let point = MemoryPoint {
                cis: n,
                label,
                memory: op.memory()?,
                threads: probe::threads(op.pid),
                caught_up_secs: (caught - op.spawned).as_secs_f64(),
                status_writes: op.counter("cloudkit_status_writes_total").await?,
            };
            eprintln!(
                "    {n} CIs ({}): VmHWM {:.1} MiB, VmRSS {:.1} MiB",
                point.label,
                point.memory.hwm_mib(),
                point.memory.rss_mib()
            );
            result.points.push(point);
            op.stop().await?;
        }
    }
    for keep in [false, true] {
        result.cache.push(run_cache_probe(&cluster, keep).await?);
    }
    Ok(result)
}

// ---------------------------------------------------------------------------------------------
// 4. Restart

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Restart {
    pub cis: usize,
    /// From spawning the process until its reconcile counter reached the number of CIs.
    pub caught_up_secs: f64,
    /// From spawning the process until /readyz answered.
    pub ready_secs: f64,
    pub launches: u64,
    pub provider_requests: usize,
    pub status_writes: f64,
    /// Writes on ComputeInstances and events the API server saw while the new process ran.
    pub apiserver_writes: f64,
    pub reconciles: f64,
    pub memory: Memory,
}

async fn restart(config: &Config) -> anyhow::Result<Restart> {
    let n = if config.quick { 100 } else { 1000 };
    let cluster = Cluster::start("restart").await?;
    let sim = Sim::start(&cluster, Speed::Fast).await?;
    let api = cluster.cis(&cluster.client);
    let tracker = Tracker::start(api.clone()).await?;
    let options = Options::aap(sim.api_url(), &config.poll_interval);
    let first = Operator::spawn(&config.bin, &cluster, &options).await?;
    provision_through_operator(&api, &tracker, &first, 0..n).await?;
    // Let the last writes of the automation and the operator land.
    tokio::time::sleep(Duration::from_secs(2)).await;
    first.stop().await?;

    let launches = sim.launches();
    let requests = sim.tap.seen().len();
    let writes = cluster.apiserver_writes().await?;
    let op = Operator::spawn(&config.bin, &cluster, &options).await?;
    let ready = op.spawned.elapsed();
    let caught = wait_reconciles(&op, n, Duration::from_secs(60)).await?;
    // Longer than a poll interval: any poll or write would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restart = Restart {
        cis: n,
        caught_up_secs: (caught - op.spawned).as_secs_f64(),
        ready_secs: ready.as_secs_f64(),
        launches: sim.launches() - launches,
        provider_requests: sim.tap.seen().len() - requests,
        status_writes: op.counter("cloudkit_status_writes_total").await?,
        apiserver_writes: cluster.apiserver_writes().await?.since(&writes).total(),
        reconciles: op.counter("cloudkit_reconciles_total").await?,
        memory: op.memory()?,
    };
    op.stop().await?;
    Ok(restart)
}

// ---------------------------------------------------------------------------------------------
// 5. Provider load

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Load {
    pub jobs: usize,
    pub poll_interval_secs: f64,
    pub concurrency: usize,
    /// Seconds from the first create until every CI had a job id.
    pub launch_secs: f64,
    /// Job polls per second during the observation window (from the simulator's request log).
    pub per_second: Vec<u64>,
    pub expected_per_second: f64,
    /// Most requests in flight at the simulator at once: during the launches and in the window.
    pub max_in_flight_launching: i64,
    pub max_in_flight_polling: i64,
    /// Most polls in any 100 ms slice of the window.
    pub max_per_100ms: u64,
    /// Status writes during the window (the job states do not change: 0 expected).
    pub status_writes_in_window: f64,
    pub operator_cpu_in_window: f64,
    pub memory: Memory,
}

async fn load(config: &Config) -> anyhow::Result<Load> {
    let (n, poll, intervals) = if config.quick {
        (200, 2.0, 3)
    } else {
        (1000, 5.0, 6)
    };
    let cluster = Cluster::start("load").await?;
    let sim = Sim::start(&cluster, Speed::LongRunning).await?;
    let api = cluster.cis(&cluster.client);
    let tracker = Tracker::start(api.clone()).await?;
    let options = Options::aap(sim.api_url(), &format!("{poll}s"));
    let op = Operator::spawn(&config.bin, &cluster, &options).await?;
    let t0 = Instant::now();
    lifecycle::create_all(&api, 0..n, CLIENT_CONCURRENCY).await?;
    let launched = tracker
        .wait("every CI launched", deadline(n), |c| c.launched >= n)
        .await
        .with_context(|| format!("operator log:\n{}", op.log_tail()))?;
    let launch_secs = (launched.at - t0).as_secs_f64();
    let max_in_flight_launching = sim.tap.max_in_flight();
    // Two intervals for every job's first poll (which sees it leave `pending`), then the window.
    tokio::time::sleep(Duration::from_secs_f64(2.0 * poll)).await;
    sim.tap.reset_max_in_flight();
    let writes0 = op.counter("cloudkit_status_writes_total").await?;
    let cpu0 = op.cpu_seconds();
    let start = Timestamp::now();
    tokio::time::sleep(Duration::from_secs_f64(poll * f64::from(intervals))).await;
    let end = Timestamp::now();
    let status_writes_in_window = op.counter("cloudkit_status_writes_total").await? - writes0;
    let operator_cpu_in_window = op.cpu_seconds() - cpu0;
    let max_in_flight_polling = sim.tap.max_in_flight();
    let memory = op.memory()?;
    op.stop().await?;

    let polls: Vec<Timestamp> = sim
        .handle
        .simulator()
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.contains("/jobs/"))
        .filter_map(|r| r.timestamp.parse::<Timestamp>().ok())
        .filter(|t| *t >= start && *t < end)
        .collect();
    let seconds = (end.as_second() - start.as_second()).max(1) as usize;
    let mut per_second = vec![0u64; seconds];
    let mut per_100ms = vec![0u64; seconds * 10 + 10];
    for t in &polls {
        let since = t.duration_since(start).as_secs_f64();
        if let Some(slot) = per_second.get_mut(since as usize) {
            *slot += 1;
        }
        if let Some(slot) = per_100ms.get_mut((since * 10.0) as usize) {
            *slot += 1;
        }
    }
    Ok(Load {
        jobs: n,
        poll_interval_secs: poll,
        concurrency: 16,
        launch_secs,
        per_second,
        expected_per_second: n as f64 / poll,
        max_in_flight_launching,
        max_in_flight_polling,
        max_per_100ms: per_100ms.into_iter().max().unwrap_or(0),
        status_writes_in_window,
        operator_cpu_in_window,
        memory,
    })
}

// ---------------------------------------------------------------------------------------------
// 6. Create-to-launch latency

/// One CI's way from its create call to its launch, in milliseconds after the create returned
/// (the create itself: from its start). The finalizer and intent times are when the watch showed
/// them.
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LatencySample {
    pub create_call: f64,
    /// NaN when the watch did not show it (JSON null).
    #[serde(deserialize_with = "nan_if_null")]
    pub finalizer: f64,
    #[serde(deserialize_with = "nan_if_null")]
    pub intent: f64,
    pub launch: f64,
}

fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    use serde::Deserialize as _;
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LatencyRun {
    pub label: String,
    pub rounds: Vec<Vec<LatencySample>>,
}

impl LatencyRun {
    pub fn all(&self) -> Vec<LatencySample> {
        self.rounds.iter().flatten().copied().collect()
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Latency {
    pub per_round: usize,
    pub runs: Vec<LatencyRun>,
}

async fn latency_round(
    api: &Api<ComputeInstance>,
    tracker: &Tracker,
    sim: &Sim,
    range: std::ops::Range<usize>,
    already: usize,
    running: bool,
) -> anyhow::Result<Vec<LatencySample>> {
    let created = lifecycle::create_all(api, range.clone(), range.len()).await?;
    // The namespace's counts: CIs of earlier rounds plus this one.
    let end = already + range.len();
    if running {
        tracker
            .wait("every CI Running", deadline(range.len()), |c| {
                c.running >= end
            })
            .await?;
    } else {
        tracker
            .wait("every CI launched", deadline(range.len()), |c| {
                c.launched >= end
            })
            .await?;
    }
    let seen = sim.tap.seen();
    let mut samples = Vec::new();
    for (name, start, returned) in created {
        let launch = seen
            .iter()
            .filter(|s| s.ci.as_deref() == Some(name.as_str()))
            .map(|s| s.start)
            .min()
            .with_context(|| format!("no launch seen for {name}"))?;
        let m = tracker.milestones(&name);
        let after = |t: Option<Instant>| t.map(|t| signed_ms(t, returned)).unwrap_or(f64::NAN);
        samples.push(LatencySample {
            create_call: signed_ms(returned, start),
            finalizer: after(m.finalizer),
            intent: after(m.intent),
            launch: signed_ms(launch, returned),
        });
    }
    let launches: Vec<f64> = samples.iter().map(|s| s.launch).collect();
    eprintln!(
        "    p50 {:.1} ms, p99 {:.1} ms",
        probe::quantile(&launches, 0.5),
        probe::quantile(&launches, 0.99)
    );
    Ok(samples)
}

/// One contender of section 6, in a namespace of its own.
struct Arm {
    run: LatencyRun,
    api: Api<ComputeInstance>,
    tracker: Tracker,
    operator: Option<Operator>,
    _launcher: Option<crate::minimal::Launcher>,
}

async fn latency(config: &Config) -> anyhow::Result<Latency> {
    let (per_round, rounds) = (100, if config.quick { 1 } else { 3 });
    let cluster = Cluster::start("latency").await?;
    let sim = Sim::start(&cluster, Speed::Fast).await?;
    let mut variants = vec![("operator".to_string(), Vec::new())];
    if !config.quick {
        variants.push((
            "operator, CLOUDKIT_MAX_CONCURRENT_RECONCILES=64".to_string(),
            vec![(
                "CLOUDKIT_MAX_CONCURRENT_RECONCILES".to_string(),
                "64".to_string(),
            )],
        ));
    }
    let mut arms = Vec::new();
    for (label, env) in variants {
        let namespace = cluster.extra_namespace("latency-op").await?;
        let api = cluster.cis_in(&namespace);
        let options = Options {
            env,
            namespace: Some(namespace),
            ..Options::aap(sim.api_url(), &config.poll_interval)
        };
        let operator = Operator::spawn(&config.bin, &cluster, &options).await?;
        arms.push(Arm {
            run: LatencyRun {
                label,
                rounds: Vec::new(),
            },
            tracker: Tracker::start(api.clone()).await?,
            api,
            operator: Some(operator),
            _launcher: None,
        });
    }
    // The floor: a minimal launcher on the same API server and simulator.
    let namespace = cluster.extra_namespace("latency-floor").await?;
    let api = cluster.cis_in(&namespace);
    arms.push(Arm {
        run: LatencyRun {
            label: "minimal launcher (floor), 16 at a time".to_string(),
            rounds: Vec::new(),
        },
        tracker: Tracker::start(api.clone()).await?,
        _launcher: Some(crate::minimal::Launcher::start(api.clone(), sim.api_url(), 16).await?),
        api,
        operator: None,
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Rounds alternate between the contenders, so load from outside hits them alike. Names are
    // unique across namespaces: the simulator's tap matches launches by name.
    let mut next = 0;
    for _ in 0..rounds {
        for arm in &mut arms {
            let range = next..next + per_round;
            next += per_round;
            eprintln!("    {}: {} concurrent creates", arm.run.label, per_round);
            let already = arm.run.rounds.iter().map(Vec::len).sum();
            let samples = latency_round(
                &arm.api,
                &arm.tracker,
                &sim,
                range,
                already,
                arm.operator.is_some(),
            )
            .await
            .with_context(|| {
                arm.operator
                    .as_ref()
                    .map(|o| format!("operator log:\n{}", o.log_tail()))
                    .unwrap_or_default()
            })?;
            arm.run.rounds.push(samples);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let mut result = Latency {
        per_round,
        runs: Vec::new(),
    };
    for arm in arms {
        if let Some(op) = arm.operator {
            op.stop().await?;
        }
        result.runs.push(arm.run);
    }
    Ok(result)
}

/// `a - b` in milliseconds, negative when `a` is earlier.
fn signed_ms(a: Instant, b: Instant) -> f64 {
    if a >= b {
        (a - b).as_secs_f64() * 1000.0
    } else {
        -((b - a).as_secs_f64() * 1000.0)
    }
}
