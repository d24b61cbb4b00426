//! Section 7: shards. The same N CIs (three tenants, labelled for three shards) go through a
//! lifecycle twice on one API server and one simulator: handled by one operator process, then by
//! three shard processes (`CLOUDKIT_SHARD_SELECTOR`), each in a namespace of its own. Then a
//! smaller round on the shards: one is killed (SIGKILL) before its CIs are deleted; the other
//! shards finish theirs while its CIs wait untouched, and a new process of the killed shard
//! finishes them. The launch ledger of the simulator shows no CI launched twice.
//!
//! The API floor at the same N (the writes of the single process's run and the automation's
//! reads, with no logic) says how much the API server leaves to gain.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use anyhow::{Context as _, bail};
use cloudkit_api::metadata::TENANT_ANNOTATION;
use cloudkit_api::shard::SHARD_LABEL;
use cloudkit_api::{ComputeInstance, JobType, LaunchKey};
use futures::{StreamExt, TryStreamExt};
use kube::api::{DeleteParams, ListParams};
use kube::{Api, ResourceExt};

use crate::cluster::{Cluster, Writes, bench_spec, ci_name};
use crate::lifecycle::{
    self, CLIENT_CONCURRENCY, Cpu, CpuMark, Floor, FloorPlan, deadline, settle,
};
use crate::operator::{Operator, Options};
use crate::probe::Memory;
use crate::sections::{Config, rates};
use crate::sim::{Sim, Speed};
use crate::tracker::Tracker;

/// The shards, one value of [`SHARD_LABEL`] each.
pub const SHARDS: [&str; 3] = ["a", "b", "c"];

/// The Lease the processes elect their leader on; a shard's is `<LEASE>-<shard>`.
const LEASE: &str = "cloudkit-bench";

/// The shard of CI `i`.
pub fn shard_of(i: usize) -> &'static str {
    SHARDS[i % SHARDS.len()]
}

/// CI `i`, labelled for its shard and in that shard's tenant (the CIs of one tenant belong in
/// one shard, docs/operations.md).
pub fn sharded_ci(i: usize) -> ComputeInstance {
    let shard = shard_of(i);
    let mut ci = ComputeInstance::new(&ci_name(i), bench_spec());
    ci.labels_mut()
        .insert(SHARD_LABEL.to_string(), shard.to_string());
    ci.annotations_mut()
        .insert(TENANT_ANNOTATION.to_string(), format!("tenant-{shard}"));
    ci
}

fn selector(shard: &str) -> String {
    format!("{SHARD_LABEL}={shard}")
}

/// One operator process at the end of a lifecycle.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Process {
    /// Its shard, `-` for the process that handles every CI.
    pub shard: String,
    pub memory: Memory,
    /// CPU seconds since it started.
    pub cpu_secs: f64,
    /// Its `cloudkit_jobs_started_total`.
    pub jobs_started: f64,
}

/// One lifecycle of N CIs, by one process or by the shards.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Run {
    pub n: usize,
    pub provision_secs: f64,
    pub delete_secs: f64,
    /// CPU of all processes in each half (the operators' summed).
    pub provision_cpu: Cpu,
    pub delete_cpu: Cpu,
    /// Every write the API server counted in each half.
    pub provision_writes: Writes,
    pub delete_writes: Writes,
    /// Every request the API server answered in each half.
    #[serde(default)]
    pub provision_requests: crate::cluster::Requests,
    #[serde(default)]
    pub delete_requests: crate::cluster::Requests,
    /// The automation's reads of CIs in each half.
    #[serde(default)]
    pub provision_automation_reads: f64,
    #[serde(default)]
    pub delete_automation_reads: f64,
    pub processes: Vec<Process>,
}

impl Run {
    pub fn provision_rate(&self) -> f64 {
        self.n as f64 / self.provision_secs
    }

    pub fn delete_rate(&self) -> f64 {
        self.n as f64 / self.delete_secs
    }

    /// The largest peak RSS of its processes.
    pub fn max_hwm_mib(&self) -> f64 {
        self.processes
            .iter()
            .map(|p| p.memory.hwm_mib())
            .fold(0.0, f64::max)
    }
}

/// Share of the machine's CPU time that all processes used together during `secs`.
pub fn utilisation(cpu: &Cpu, secs: f64, cpus: usize) -> f64 {
    cpu.total() / (secs * cpus.max(1) as f64)
}

/// The simulator's launches for a set of CIs, by CI.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    pub cis: usize,
    /// CIs with exactly one provision and one deprovision launch.
    pub once_each: usize,
    /// The most launches of one type for one CI.
    pub most_per_ci: u64,
    /// All launches for these CIs.
    pub launches: u64,
}

/// The ledger of the CIs `uids` from the simulator's launches by launch key (whose scope is the
/// CI's uid); launches for other CIs are not counted.
pub fn ledger(launches_by_key: &BTreeMap<String, u64>, uids: &HashSet<String>) -> Ledger {
    let mut per_ci: HashMap<(&str, JobType), u64> = HashMap::new();
    let mut launches = 0;
    for (key, count) in launches_by_key {
        let Ok(parsed) = key.parse::<LaunchKey>() else {
            continue;
        };
        if let Some(uid) = uids.get(&parsed.scope) {
            *per_ci.entry((uid.as_str(), parsed.job_type)).or_default() += count;
            launches += count;
        }
    }
    let count = |uid: &str, t: JobType| per_ci.get(&(uid, t)).copied().unwrap_or(0);
    Ledger {
        cis: uids.len(),
        once_each: uids
            .iter()
            .filter(|u| count(u, JobType::Provision) == 1 && count(u, JobType::Deprovision) == 1)
            .count(),
        most_per_ci: per_ci.values().copied().max().unwrap_or(0),
        launches,
    }
}

/// The kill of one shard before its CIs are deleted.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Kill {
    pub n: usize,
    pub killed: String,
    pub killed_cis: usize,
    /// From the first delete call until the other shards' CIs were gone.
    pub others_gone_secs: f64,
    /// The killed shard's CIs whose resourceVersion stayed what their delete call returned
    /// until the other shards' CIs were gone.
    pub untouched: usize,
    /// Deprovision launches for the killed shard's CIs by then.
    pub launched_while_down: u64,
    /// `cloudkit_unowned_compute_instances` on the other shards by then (the largest).
    pub unowned_while_down: f64,
    /// From the new process's spawn until it held the shard's Lease (the killed process's
    /// Lease has to expire first), and until the shard's CIs were gone.
    pub lease_secs: f64,
    pub recovered_secs: f64,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Shards {
    pub single: Run,
    pub sharded: Run,
    /// The launches of the shards' CIs: the lifecycle and the kill round.
    pub ledger: Ledger,
    pub single_ledger: Ledger,
    pub kill: Kill,
    pub floor: Floor,
}

async fn spawn(
    config: &Config,
    cluster: &Cluster,
    sim: &Sim,
    namespace: &str,
    shard: Option<&str>,
) -> anyhow::Result<Operator> {
    let mut options = Options::aap(sim.api_url(), &config.poll_interval);
    options.namespace = Some(namespace.to_string());
    options.env = vec![
        ("CLOUDKIT_LEADER_ELECT".into(), "true".into()),
        (
            "CLOUDKIT_LEADER_ELECTION_NAMESPACE".into(),
            namespace.into(),
        ),
        ("CLOUDKIT_LEADER_ELECTION_LEASE".into(), LEASE.into()),
    ];
    if let Some(shard) = shard {
        options
            .env
            .push(("CLOUDKIT_SHARD_SELECTOR".into(), selector(shard)));
    }
    let mut operator = Operator::spawn(&config.bin, cluster, &options).await?;
    operator.wait_leading().await?;
    Ok(operator)
}

fn logs(operators: &[Operator]) -> String {
    operators
        .iter()
        .map(|o| o.log_tail())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The uids of the CIs of `api` (those `selector` matches, when given).
async fn uids(
    api: &Api<ComputeInstance>,
    selector: Option<&str>,
) -> anyhow::Result<HashSet<String>> {
    let params = match selector {
        Some(s) => ListParams::default().labels(s),
        None => ListParams::default(),
    };
    Ok(api
        .list_metadata(&params)
        .await?
        .items
        .into_iter()
        .filter_map(|m| m.metadata.uid)
        .collect())
}

fn launches_by_key(sim: &Sim) -> BTreeMap<String, u64> {
    sim.handle.simulator().stats().launches_by_key
}

/// One lifecycle of `n` CIs in `namespace` by one process per entry of `shards` (`None`: a
/// process without a selector); returns the processes, still running, and the CIs' uids.
async fn lifecycle(
    config: &Config,
    cluster: &Cluster,
    sim: &Sim,
    namespace: &str,
    shards: &[Option<&str>],
    n: usize,
) -> anyhow::Result<(Run, Vec<Operator>, HashSet<String>)> {
    let mut operators = Vec::new();
    for shard in shards {
        operators.push(spawn(config, cluster, sim, namespace, *shard).await?);
    }
    let pids: Vec<u32> = operators.iter().map(|o| o.pid).collect();
    let api = cluster.cis_in(namespace);
    let tracker = Tracker::start(api.clone()).await?;

    let c0 = cluster.counters().await?;
    let reads0 = sim.writes.reads();
    let cpu = CpuMark::now(cluster, &pids);
    let t0 = Instant::now();
    lifecycle::create_each(&api, 0..n, CLIENT_CONCURRENCY, sharded_ci).await?;
    let done = tracker
        .wait("every CI Running", deadline(n), |c| c.running == n)
        .await
        .with_context(|| format!("operator logs:\n{}", logs(&operators)))?;
    let provision_secs = (done.at - t0).as_secs_f64();
    let provision_cpu = cpu.since();
    settle(cluster).await?;
    let c1 = cluster.counters().await?;
    let reads1 = sim.writes.reads();
    let uids = uids(&api, None).await?;

    let cpu = CpuMark::now(cluster, &pids);
    let t1 = Instant::now();
    lifecycle::delete_all(&api, 0..n).await?;
    let gone = tracker
        .wait("every CI gone", deadline(n), |c| c.present == 0)
        .await
        .with_context(|| format!("operator logs:\n{}", logs(&operators)))?;
    let delete_secs = (gone.at - t1).as_secs_f64();
    let delete_cpu = cpu.since();
    settle(cluster).await?;
    let c2 = cluster.counters().await?;

    let mut processes = Vec::new();
    for (operator, shard) in operators.iter().zip(shards) {
        processes.push(Process {
            shard: shard.unwrap_or("-").to_string(),
            memory: operator.memory()?,
            cpu_secs: operator.cpu_seconds(),
            jobs_started: operator.counter("cloudkit_jobs_started_total").await?,
        });
    }
    let run = Run {
        n,
        provision_secs,
        delete_secs,
        provision_cpu,
        delete_cpu,
        provision_writes: c1.writes.since(&c0.writes),
        delete_writes: c2.writes.since(&c1.writes),
        provision_requests: c1.requests.since(&c0.requests),
        delete_requests: c2.requests.since(&c1.requests),
        provision_automation_reads: reads1 - reads0,
        delete_automation_reads: sim.writes.reads() - reads1,
        processes,
    };
    Ok((run, operators, uids))
}

/// The kill round: `range` CIs created and Running, the first shard killed, all deleted; the
/// others finish, then a new process of the killed shard. `operators` are the shards' processes
/// in the order of [`SHARDS`]; the killed one is replaced.
async fn kill_round(
    config: &Config,
    cluster: &Cluster,
    sim: &Sim,
    namespace: &str,
    operators: &mut [Operator],
    range: std::ops::Range<usize>,
) -> anyhow::Result<(Kill, HashSet<String>)> {
    let api = cluster.cis_in(namespace);
    let mut trackers = Vec::new();
    for shard in SHARDS {
        trackers.push(Tracker::start_selected(api.clone(), &selector(shard)).await?);
    }
    let n = range.len();
    lifecycle::create_each(&api, range.clone(), CLIENT_CONCURRENCY, sharded_ci).await?;
    for (k, shard) in SHARDS.iter().enumerate() {
        let count = range.clone().filter(|i| shard_of(*i) == *shard).count();
        trackers[k]
            .wait(&format!("shard {shard}'s CIs Running"), deadline(n), |c| {
                c.running == count
            })
            .await
            .with_context(|| format!("operator logs:\n{}", logs(operators)))?;
    }
    let killed = SHARDS[0];
    let killed_uids = uids(&api, Some(&selector(killed))).await?;
    let all_uids = uids(&api, None).await?;
    operators[0].kill();

    // Delete them all; note what each delete call returned for the killed shard's CIs.
    let t0 = Instant::now();
    let returned: Vec<(String, String)> = futures::stream::iter(range.clone())
        .map(|i| {
            let api = &api;
            async move {
                let deleted = api
                    .delete(&ci_name(i), &DeleteParams::default())
                    .await
                    .with_context(|| format!("deleting {}", ci_name(i)))?;
                let version = deleted
                    .left()
                    .filter(|_| shard_of(i) == killed)
                    .and_then(|ci| ci.resource_version());
                Ok::<_, anyhow::Error>(version.map(|v| (ci_name(i), v)))
            }
        })
        .buffer_unordered(CLIENT_CONCURRENCY)
        .try_filter_map(|v| async move { Ok(v) })
        .try_collect()
        .await?;
    let returned: HashMap<String, String> = returned.into_iter().collect();
    for tracker in &trackers[1..] {
        tracker
            .wait("the other shards' CIs gone", deadline(n), |c| {
                c.present == 0
            })
            .await
            .with_context(|| format!("operator logs:\n{}", logs(&operators[1..])))?;
    }
    let others_gone_secs = t0.elapsed().as_secs_f64();
    let now = api
        .list(&ListParams::default().labels(&selector(killed)))
        .await?
        .items;
    let untouched = now
        .iter()
        .filter(|ci| returned.get(&ci.name_any()) == ci.resource_version().as_ref())
        .count();
    let down = launches_by_key(sim);
    let launched_while_down = down
        .iter()
        .filter_map(|(k, v)| Some((k.parse::<LaunchKey>().ok()?, v)))
        .filter(|(k, _)| k.job_type == JobType::Deprovision && killed_uids.contains(&k.scope))
        .map(|(_, v)| *v)
        .sum();
    let mut unowned_while_down: f64 = 0.0;
    for operator in &operators[1..] {
        unowned_while_down = unowned_while_down.max(
            operator
                .counter("cloudkit_unowned_compute_instances")
                .await?,
        );
    }

    let t1 = Instant::now();
    operators[0] = spawn(config, cluster, sim, namespace, Some(killed)).await?;
    let lease_secs = t1.elapsed().as_secs_f64();
    trackers[0]
        .wait("the killed shard's CIs gone", deadline(n), |c| {
            c.present == 0
        })
        .await
        .with_context(|| format!("operator logs:\n{}", logs(operators)))?;
    let recovered_secs = t1.elapsed().as_secs_f64();
    let kill = Kill {
        n,
        killed: killed.to_string(),
        killed_cis: killed_uids.len(),
        others_gone_secs,
        untouched,
        launched_while_down,
        unowned_while_down,
        lease_secs,
        recovered_secs,
    };
    Ok((kill, all_uids))
}

/// Section 7; `n` CIs per lifecycle, a tenth of them (at least 30) in the kill round.
pub async fn run(config: &Config, n: usize) -> anyhow::Result<Shards> {
    let kill_n = (n / 10).max(30);
    let (single, sharded, ledger, single_ledger, kill) = {
        let cluster = Cluster::start("shards").await?;
        let sim = Sim::start(&cluster, Speed::Fast).await?;

        eprintln!("[7] lifecycle of {n} CIs, one process");
        let namespace = cluster.extra_namespace("single").await?;
        let (single, operators, single_uids) =
            lifecycle(config, &cluster, &sim, &namespace, &[None], n).await?;
        for operator in operators {
            operator.stop().await?;
        }
        rates(single.provision_rate(), single.delete_rate());

        eprintln!("[7] lifecycle of {n} CIs, {} shards", SHARDS.len());
        let namespace = cluster.extra_namespace("sharded").await?;
        let shards: Vec<Option<&str>> = SHARDS.iter().map(|s| Some(*s)).collect();
        let (sharded, mut operators, mut uids) =
            lifecycle(config, &cluster, &sim, &namespace, &shards, n).await?;
        rates(sharded.provision_rate(), sharded.delete_rate());

        eprintln!(
            "[7] {kill_n} CIs, shard {} killed before they are deleted",
            SHARDS[0]
        );
        let (kill, kill_uids) = kill_round(
            config,
            &cluster,
            &sim,
            &namespace,
            &mut operators,
            n..n + kill_n,
        )
        .await?;
        eprintln!(
            "    the others done in {:.1} s, {} of {} untouched; recovered in {:.1} s",
            kill.others_gone_secs, kill.untouched, kill.killed_cis, kill.recovered_secs
        );
        for operator in operators {
            operator.stop().await?;
        }
        uids.extend(kill_uids);
        let launches = launches_by_key(&sim);
        (
            single,
            sharded,
            ledger(&launches, &uids),
            ledger(&launches, &single_uids),
            kill,
        )
    };
    if ledger.once_each != ledger.cis || single_ledger.once_each != single_ledger.cis {
        bail!(
            "a CI was not launched exactly once per job type: shards {ledger:?}, one process {single_ledger:?}"
        );
    }

    eprintln!("[7] lifecycle of {n} CIs, API floor");
    let plan = FloorPlan::from_counts(
        &single.provision_writes,
        &single.delete_writes,
        single.provision_automation_reads,
        single.delete_automation_reads,
    );
    let floor = lifecycle::run_floor(n, plan, config.floor_concurrency).await?;
    rates(floor.provision_rate(), floor.delete_rate());
    Ok(Shards {
        single,
        sharded,
        ledger,
        single_ledger,
        kill,
        floor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(uid: &str, job: &str, attempt: u32) -> String {
        match job {
            "p" => format!("{uid}/provision/c15fb6a31521d9c3/{attempt}"),
            _ => format!("{uid}/deprovision/delete/{attempt}"),
        }
    }

    #[test]
    fn the_ledger_counts_launches_per_ci_and_type() {
        let uids: HashSet<String> = ["u1", "u2", "u3"].map(String::from).into();
        let mut launches = BTreeMap::new();
        // u1: once each. u2: provisioned twice (a second attempt), deprovisioned once.
        // u3: never deprovisioned. u9: not one of ours.
        for (k, v) in [
            (key("u1", "p", 1), 1),
            (key("u1", "d", 1), 1),
            (key("u2", "p", 1), 1),
            (key("u2", "p", 2), 1),
            (key("u2", "d", 1), 1),
            (key("u3", "p", 1), 1),
            (key("u9", "p", 1), 5),
            ("not a key".to_string(), 1),
        ] {
            launches.insert(k, v);
        }
        assert_eq!(
            ledger(&launches, &uids),
            Ledger {
                cis: 3,
                once_each: 1,
                most_per_ci: 2,
                launches: 6,
            }
        );
    }

    #[test]
    fn a_key_launched_twice_is_not_once() {
        let uids: HashSet<String> = ["u1"].map(String::from).into();
        let launches: BTreeMap<String, u64> =
            [(key("u1", "p", 1), 2), (key("u1", "d", 1), 1)].into();
        let l = ledger(&launches, &uids);
        assert_eq!((l.once_each, l.most_per_ci), (0, 2));
    }

    #[test]
    fn cis_go_round_the_shards_with_a_tenant_each() {
        let shards: Vec<String> = (0..6)
            .map(|i| sharded_ci(i).labels()[SHARD_LABEL].clone())
            .collect();
        assert_eq!(shards, ["a", "b", "c", "a", "b", "c"]);
        let ci = sharded_ci(4);
        assert_eq!(ci.annotations()[TENANT_ANNOTATION], "tenant-b");
        assert_eq!(ci.name_any(), ci_name(4));
    }

    #[test]
    fn utilisation_is_cpu_over_wall_and_cores() {
        let cpu = Cpu {
            operator: 1.0,
            apiserver: 5.0,
            etcd: 1.0,
            bench: 0.5,
            controller_manager: 0.5,
        };
        assert!((utilisation(&cpu, 5.0, 2) - 0.8).abs() < 1e-9);
    }
}
