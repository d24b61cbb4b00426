//! The scenarios. Each starts its own API server, runs CI lifecycles while something goes wrong,
//! and ends with checks: no launch key launched twice, the expected number of launches per CI,
//! every CI provisioned and then gone (no stuck finalizer), and no secret in anything users see.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloudkit_aap_sim::Faults;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use tokio::sync::Mutex as AsyncMutex;

use crate::eda::Webhook;
use crate::workload::{self, Ledger, Want};
use cloudkit_test_support::OperatorSettings;

use crate::world::{Operator, World, lock, scan_metrics};

/// What every scenario gets.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub bin: PathBuf,
    pub out: PathBuf,
    pub seed: u64,
    pub quick: bool,
    /// Lifecycles of the crash loop.
    pub crash_lifecycles: usize,
}

/// One pass/fail line of a scenario.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub what: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub name: String,
    pub title: String,
    pub seconds: f64,
    pub checks: Vec<Check>,
    /// Figures worth reporting, in order.
    pub numbers: Vec<(String, String)>,
}

impl Outcome {
    fn new(name: &str, title: &str) -> Outcome {
        Outcome {
            name: name.into(),
            title: title.into(),
            ..Outcome::default()
        }
    }

    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }

    fn check(&mut self, what: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        eprintln!(
            "chaos: {} {}: {what}{}",
            self.name,
            if ok { "ok" } else { "FAILED" },
            if detail.is_empty() || ok {
                String::new()
            } else {
                format!("\n{detail}")
            }
        );
        self.checks.push(Check {
            what: what.into(),
            ok,
            detail,
        });
    }

    fn number(&mut self, what: &str, value: impl ToString) {
        self.numbers.push((what.into(), value.to_string()));
    }

    /// A step that must work for the rest to mean anything: records it and returns whether
    /// it did.
    fn step<T>(&mut self, what: &str, result: anyhow::Result<T>) -> Option<T> {
        match result {
            Ok(v) => {
                self.check(what, true, "");
                Some(v)
            }
            Err(e) => {
                self.check(what, false, format!("{e:#}"));
                None
            }
        }
    }
}

/// Runs lifecycles in waves: create, wait until Running, delete, wait until gone. Stops at the
/// first wave that does not converge (recorded as a failed check). Returns name -> uid of every
/// CI created.
async fn waves(
    out: &mut Outcome,
    world: &World,
    prefix: &str,
    total: usize,
    wave: usize,
    limit: Duration,
    mut during: impl FnMut(usize) -> Option<tokio::task::JoinHandle<()>>,
) -> BTreeMap<String, String> {
    let mut uids = BTreeMap::new();
    let mut provision_secs = Vec::new();
    let mut delete_secs = Vec::new();
    let mut ok = true;
    for (w, start) in (0..total).step_by(wave.max(1)).enumerate() {
        let names = workload::names(prefix, start..(start + wave).min(total));
        let side = during(w);
        match workload::create(&world.api, &names, world.uuid_labels).await {
            Ok(created) => uids.extend(created),
            Err(e) => {
                out.check(&format!("wave {w}: CIs created"), false, format!("{e:#}"));
                ok = false;
                break;
            }
        }
        let running = workload::wait(&world.api, &names, Want::Running, limit).await;
        if let Some(task) = side {
            let _ = task.await;
        }
        match running {
            Ok(t) => {
                provision_secs.push(t.as_secs_f64());
                world.scan_cis().await;
            }
            Err(e) => {
                out.check(
                    &format!("wave {w}: every CI provisioned"),
                    false,
                    format!("{e:#}\n{}", world.log_tails(15)),
                );
                ok = false;
                break;
            }
        }
        if let Err(e) = workload::delete(&world.api, &names).await {
            out.check(&format!("wave {w}: CIs deleted"), false, format!("{e:#}"));
            ok = false;
            break;
        }
        match workload::wait(&world.api, &names, Want::Gone, limit).await {
            Ok(t) => delete_secs.push(t.as_secs_f64()),
            Err(e) => {
                out.check(
                    &format!("wave {w}: every CI gone (no stuck finalizer)"),
                    false,
                    format!("{e:#}\n{}", world.log_tails(15)),
                );
                ok = false;
                break;
            }
        }
    }
    if ok {
        out.check(
            &format!("{total} lifecycles: every CI provisioned, then deleted and gone"),
            true,
            "",
        );
    }
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    out.number("seconds to provision each wave", fmt(&provision_secs));
    out.number("seconds to delete each wave", fmt(&delete_secs));
    uids
}

/// The launch checks: no key twice; per CI `provisions` (exact, or at least one when `None`)
/// and exactly one deprovision.
fn launch_checks(
    out: &mut Outcome,
    world: &World,
    uids: &BTreeMap<String, String>,
    provisions: Option<u64>,
) {
    let ledger = match Ledger::read(world) {
        Ok(l) => l,
        Err(e) => {
            out.check("launch ledger read", false, format!("{e:#}"));
            return;
        }
    };
    out.number("launches at the simulator", ledger.launches);
    out.check(
        "no launch key launched twice",
        ledger.duplicate_keys.is_empty(),
        format!("{:?}", ledger.duplicate_keys),
    );
    let per_ci = ledger.per_ci(uids);
    let wrong: Vec<String> = per_ci
        .iter()
        .filter(|(_, p, d)| *d != 1 || provisions.map_or(*p == 0, |want| *p != want))
        .map(|(n, p, d)| format!("{n}: {p} provision, {d} deprovision launches"))
        .collect();
    let want = match provisions {
        Some(n) => format!("exactly {n} provision"),
        None => "at least one provision".to_string(),
    };
    out.check(
        &format!("every CI: {want} and exactly one deprovision launch"),
        wrong.is_empty(),
        wrong
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let retries: u64 = per_ci.iter().map(|(_, p, _)| p.saturating_sub(1)).sum();
    out.number(
        "provision retries (new attempts after a failed job)",
        retries,
    );
}

/// Scans the cluster and the logs for secrets and records the result.
async fn secret_checks(out: &mut Outcome, world: &World) {
    if let Err(e) = world.scan_cluster().await {
        out.check(
            "events and CIs scanned for secrets",
            false,
            format!("{e:#}"),
        );
    }
    if let Err(e) = world.scan_logs() {
        out.check("operator logs scanned for secrets", false, format!("{e:#}"));
    }
    let scan = lock(&world.scan);
    let scanned: Vec<String> = scan
        .bytes
        .iter()
        .map(|(s, b)| format!("{s} {b} B"))
        .collect();
    out.number("scanned for secrets", scanned.join(", "));
    let all_sources = ["operator logs", "metrics", "events", "CI objects"]
        .iter()
        .all(|s| scan.bytes.get(*s).is_some_and(|b| *b > 0));
    out.check(
        "logs, metrics, events and CI objects were scanned",
        all_sources,
        scanned.join(", "),
    );
    out.check(
        "no secret in logs, metrics, events or CI objects",
        scan.hits.is_empty(),
        scan.hits.join("\n"),
    );
}

/// One operator process that is SIGKILLed at random instants (`life_ms` of life, seeded) and
/// started again, until [`KillLoop::finish`].
struct KillLoop {
    slot: Arc<AsyncMutex<Operator>>,
    stop: Arc<AtomicBool>,
    kills: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl KillLoop {
    fn start(
        world: &Arc<World>,
        config: OperatorSettings,
        seed: u64,
        life_ms: (u64, u64),
    ) -> anyhow::Result<KillLoop> {
        let first = Operator::spawn(&config, world.dir.join("operator-000.log"))?;
        let slot = Arc::new(AsyncMutex::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let kills = Arc::new(AtomicU64::new(0));
        let task = {
            let (world, slot, stop, kills) = (
                Arc::clone(world),
                Arc::clone(&slot),
                Arc::clone(&stop),
                Arc::clone(&kills),
            );
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed);
                while !stop.load(Ordering::Relaxed) {
                    let life = rng.random_range(life_ms.0..life_ms.1);
                    let pause = rng.random_range(0..300);
                    tokio::time::sleep(Duration::from_millis(life)).await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let mut op = slot.lock().await;
                    scan_metrics(&world.scan, &op).await;
                    op.kill().await?;
                    let n = kills.fetch_add(1, Ordering::Relaxed) + 1;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    *op = Operator::spawn(&config, world.dir.join(format!("operator-{n:03}.log")))?;
                }
                Ok(())
            })
        };
        Ok(KillLoop {
            slot,
            stop,
            kills,
            task,
        })
    }

    /// Stops killing, records the loop's checks, and stops the last process (SIGTERM) after
    /// scraping its metrics.
    async fn finish(self, out: &mut Outcome, world: &World) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        out.step(
            "the kill loop ran without errors",
            self.task.await.map_err(Into::into).and_then(|r| r),
        );
        let kills = self.kills.load(Ordering::Relaxed);
        out.number("SIGKILLs", kills);
        out.check("the operator was killed during the run", kills > 0, "");
        let mut op = self.slot.lock().await;
        scan_metrics(&world.scan, &op).await;
        op.stop().await
    }
}

/// Crash loop: lifecycles while the operator is SIGKILLed at random instants and restarted.
pub async fn crash(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new(
        "crash",
        "Crash loop: the operator is SIGKILLed at random instants and restarted",
    );
    let world =
        Arc::new(World::start("crash", &ctx.out, ctx.seed, Duration::from_millis(1500)).await?);
    let config = world.operator(&ctx.bin, world.aap_settings()?);
    let kill_loop = KillLoop::start(&world, config, ctx.seed, (100, 1500))?;
    let total = ctx.crash_lifecycles;
    let wave = if ctx.quick { 20 } else { 50 };
    let uids = waves(
        &mut out,
        &world,
        "crash",
        total,
        wave,
        Duration::from_secs(300),
        |_| None,
    )
    .await;
    kill_loop.finish(&mut out, &world).await?;
    launch_checks(&mut out, &world, &uids, Some(1));
    secret_checks(&mut out, &world).await;
    Ok(out)
}

/// Provider faults: 5xx answers, lost answers (timeouts), connection resets, purged jobs and a
/// period of 401s.
pub async fn faults(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new(
        "faults",
        "Provider faults: 20% 5xx, 5% lost answers (time-outs), 3% resets, purged jobs, a 401 period",
    );
    let world = Arc::new(World::start("faults", &ctx.out, ctx.seed, Duration::ZERO).await?);
    let config = world
        .operator(&ctx.bin, world.aap_settings()?)
        .env("CLOUDKIT_AAP_REQUEST_TIMEOUT", "2s");
    let mut op = Operator::spawn(&config, world.dir.join("operator.log"))?;
    let base = Faults {
        error_rate: 0.20,
        error_status: 503,
        stall_rate: 0.05,
        stall: Duration::from_secs(5),
        drop_rate: 0.03,
        purge_after: Some(Duration::from_secs(10)),
        ..Faults::default()
    };
    world.set_faults(base.clone())?;
    let (total, wave) = if ctx.quick { (30, 30) } else { (100, 50) };
    let seen_auth = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let uids = {
        let world2 = Arc::clone(&world);
        let seen = Arc::clone(&seen_auth);
        let base = base.clone();
        waves(
            &mut out,
            &world,
            "faults",
            total,
            wave,
            Duration::from_secs(300),
            move |w| {
                if w != 0 {
                    return None;
                }
                // A 401 period as the first wave is created; what do CIs say meanwhile?
                let world = Arc::clone(&world2);
                let seen = Arc::clone(&seen);
                let base = base.clone();
                Some(tokio::spawn(async move {
                    let _ = world.set_faults(Faults {
                        unauthorized: true,
                        ..base.clone()
                    });
                    let end = Instant::now() + Duration::from_secs(6);
                    while Instant::now() < end {
                        if let Ok(list) = world.api.list(&ListParams::default()).await {
                            let mut seen = lock(&seen);
                            let statuses = list.items.iter().filter_map(|ci| ci.status.as_ref());
                            for s in statuses {
                                let texts = s
                                    .conditions
                                    .iter()
                                    .filter(|c| c.reason == "ProviderError")
                                    .map(|c| c.message.clone());
                                for text in texts {
                                    if !seen.contains(&text) {
                                        seen.push(text);
                                    }
                                }
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    let _ = world.set_faults(base);
                }))
            },
        )
        .await
    };
    let auth_messages: Vec<String> = lock(&seen_auth)
        .iter()
        .filter(|m| {
            let m = m.to_lowercase();
            m.contains("401") || m.contains("auth")
        })
        .cloned()
        .collect();
    out.check(
        "during the 401 period CIs said so (condition ProviderError naming the refusal)",
        !auth_messages.is_empty(),
        format!("ProviderError messages seen: {:?}", lock(&seen_auth)),
    );
    if let Some(m) = auth_messages.first() {
        out.number(
            "a condition message during the 401 period",
            format!("`{m}`"),
        );
    }
    let stats = world.sim()?.stats();
    out.number(
        "faults injected",
        format!(
            "{} 5xx, {} lost answers, {} resets, {} 401s, {} jobs purged",
            stats.injected_errors,
            stats.injected_stalls,
            stats.injected_resets,
            stats.injected_unauthorized,
            stats.purged
        ),
    );
    out.check(
        "every kind of fault was injected",
        stats.injected_errors > 0
            && stats.injected_stalls > 0
            && stats.injected_resets > 0
            && stats.injected_unauthorized > 0
            && stats.purged > 0,
        format!("{stats:?}"),
    );
    launch_checks(&mut out, &world, &uids, None);
    scan_metrics(&world.scan, &op).await;
    out.check(
        "the operator ran throughout (no crash)",
        op.exited().is_none(),
        world.log_tails(20),
    );
    op.stop().await?;
    secret_checks(&mut out, &world).await;
    Ok(out)
}

/// API server and etcd outages in the middle of provisioning.
pub async fn outage(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new(
        "outage",
        "kube-apiserver killed and restarted, then etcd killed and restarted, while CIs provision",
    );
    let world = Arc::new(World::start("outage", &ctx.out, ctx.seed, Duration::from_secs(3)).await?);
    let config = world.operator(&ctx.bin, world.aap_settings()?);
    let mut op = Operator::spawn(&config, world.dir.join("operator.log"))?;
    let pid = op.pid;
    let per_wave = if ctx.quick { 15 } else { 30 };
    let down = Duration::from_secs(5);
    let recovered = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let uids = {
        let world2 = Arc::clone(&world);
        let recovered = Arc::clone(&recovered);
        waves(
            &mut out,
            &world,
            "outage",
            2 * per_wave,
            per_wave,
            Duration::from_secs(300),
            move |w| {
                let world = Arc::clone(&world2);
                let recovered = Arc::clone(&recovered);
                Some(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    let what = if w == 0 { "kube-apiserver" } else { "etcd" };
                    let stopped = world
                        .with_env(move |env| {
                            if w == 0 {
                                env.stop_apiserver();
                            } else {
                                env.stop_etcd();
                            }
                        })
                        .await;
                    tokio::time::sleep(down).await;
                    let started = world
                        .with_env(move |env| {
                            if w == 0 {
                                env.start_apiserver()
                            } else {
                                env.start_etcd()
                            }
                        })
                        .await;
                    let line = match (stopped, started) {
                        (Ok(()), Ok(Ok(()))) => format!("{what}: down {down:?}, back"),
                        (a, b) => format!("{what}: restart failed: {a:?} {b:?}"),
                    };
                    lock(&recovered).push(line);
                }))
            },
        )
        .await
    };
    let restarts = lock(&recovered).clone();
    out.check(
        "kube-apiserver and etcd were each stopped and started again",
        restarts.len() == 2 && restarts.iter().all(|l| l.ends_with("back")),
        restarts.join("\n"),
    );
    out.check(
        "the operator recovered on its own (same process throughout)",
        op.exited().is_none() && op.pid == pid,
        world.log_tails(20),
    );
    launch_checks(&mut out, &world, &uids, None);
    scan_metrics(&world.scan, &op).await;
    op.stop().await?;
    secret_checks(&mut out, &world).await;
    Ok(out)
}

/// Two replicas with leader election; the leader is SIGKILLed again and again.
pub async fn leader(ctx: &Ctx) -> anyhow::Result<Outcome> {
    const LEASE: &str = "cloudkit-operator";
    let lease_secs: u64 = 6;
    let mut out = Outcome::new(
        "leader",
        "Two replicas with leader election (6 s Lease); the leader is SIGKILLed at random instants",
    );
    let world = Arc::new(World::start("leader", &ctx.out, ctx.seed, Duration::from_secs(3)).await?);
    let config = world
        .operator(&ctx.bin, world.aap_settings()?)
        .env("CLOUDKIT_LEADER_ELECT", "true")
        .env("CLOUDKIT_LEADER_ELECTION_NAMESPACE", &world.namespace)
        .env("CLOUDKIT_LEADER_ELECTION_LEASE", LEASE)
        .env(
            "CLOUDKIT_LEADER_ELECTION_LEASE_DURATION",
            &format!("{lease_secs}s"),
        );
    let replicas = Arc::new(AsyncMutex::new(vec![
        Operator::spawn(&config, world.dir.join("operator-a-000.log"))?,
        Operator::spawn(&config, world.dir.join("operator-b-000.log"))?,
    ]));
    let leases: Api<Lease> = Api::namespaced(world.client.clone(), &world.namespace);
    let stop = Arc::new(AtomicBool::new(false));
    // (pid killed, when, seconds until another replica held the Lease)
    let takeovers = Arc::new(std::sync::Mutex::new(
        Vec::<(u32, jiff::Timestamp, f64)>::new(),
    ));
    let task = {
        let world = Arc::clone(&world);
        let replicas = Arc::clone(&replicas);
        let stop = Arc::clone(&stop);
        let takeovers = Arc::clone(&takeovers);
        let leases = leases.clone();
        let seed = ctx.seed;
        tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(rng.random_range(2000..6000))).await;
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let Some(leader) = holder(&leases, LEASE).await else {
                    continue;
                };
                let mut ops = replicas.lock().await;
                let Some(i) = ops.iter().position(|o| o.identity() == leader) else {
                    continue;
                };
                scan_metrics(&world.scan, &ops[i]).await;
                let killed_pid = ops[i].pid;
                ops[i].kill().await?;
                let killed_at = jiff::Timestamp::now();
                let killed = Instant::now();
                n += 1;
                let slot = if i == 0 { "a" } else { "b" };
                ops[i] = Operator::spawn(
                    &config,
                    world.dir.join(format!("operator-{slot}-{n:03}.log")),
                )?;
                drop(ops);
                let limit = Duration::from_secs(3 * lease_secs);
                let took = loop {
                    if holder(&leases, LEASE).await.is_some_and(|h| h != leader) {
                        break killed.elapsed().as_secs_f64();
                    }
                    if killed.elapsed() > limit {
                        break f64::INFINITY;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                lock(&takeovers).push((killed_pid, killed_at, took));
            }
            Ok::<_, anyhow::Error>(())
        })
    };
    // Small waves of slow jobs: the run spans many leader changes.
    let (total, wave) = if ctx.quick { (30, 10) } else { (100, 10) };
    let uids = waves(
        &mut out,
        &world,
        "leader",
        total,
        wave,
        Duration::from_secs(300),
        |_| None,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    out.step(
        "the kill loop ran without errors",
        task.await.map_err(Into::into).and_then(|r| r),
    );
    let takeovers = lock(&takeovers).clone();
    let times: Vec<f64> = takeovers.iter().map(|t| t.2).collect();
    let worst = times.iter().copied().fold(0.0, f64::max);
    out.number("leaders killed", takeovers.len());
    out.number(
        "seconds from killing the leader to the other replica holding the Lease",
        times
            .iter()
            .map(|t| format!("{t:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    out.check(
        "the leader was killed during the run",
        !takeovers.is_empty(),
        "",
    );
    // A kill right after a renewal leaves the Lease valid for its whole duration, and no replica
    // may take it before it expires; then the lease library force-releases the expired Lease and
    // pauses 0.1 to 1 s (against collisions) before it locks it. The takeover is observed by
    // polling the Lease every 50 ms, and the new holder's write takes a round trip (0.5 s).
    out.check(
        &format!(
            "every takeover within the Lease duration ({lease_secs} s) plus the lease library's \
             pause after expiry (at most 1 s) and observation (0.5 s)"
        ),
        worst <= lease_secs as f64 + 1.5,
        format!("{times:?}"),
    );
    out.number(
        "takeovers later than the Lease duration itself",
        times.iter().filter(|t| **t > lease_secs as f64).count(),
    );
    let mut ops = replicas.lock().await;
    for op in ops.iter() {
        scan_metrics(&world.scan, op).await;
    }
    for op in ops.iter_mut() {
        op.stop().await?;
    }
    drop(ops);
    let overlap = one_leader_at_a_time(&world, &takeovers);
    if let Some(n) = out.step("one leader at a time (from the replicas' logs)", overlap) {
        out.number("leaderships acquired (from the logs)", n);
    }
    launch_checks(&mut out, &world, &uids, Some(1));
    secret_checks(&mut out, &world).await;
    Ok(out)
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

/// From the logs: when each process acquired leadership. Every acquisition must come after the
/// death of every process that acquired before it.
fn one_leader_at_a_time(
    world: &World,
    takeovers: &[(u32, jiff::Timestamp, f64)],
) -> anyhow::Result<usize> {
    let mut acquired: Vec<(jiff::Timestamp, u32)> = Vec::new();
    for entry in std::fs::read_dir(&world.dir)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "log") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let mut pid = None;
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if let Some(id) = v["fields"]["identity"].as_str() {
                pid = id.rsplit('-').next().and_then(|p| p.parse::<u32>().ok());
            }
            if v["fields"]["message"] == "acquired leadership" {
                let at: jiff::Timestamp = v["timestamp"]
                    .as_str()
                    .context("a log line without timestamp")?
                    .parse()?;
                acquired.push((at, pid.context("acquired before saying who it is")?));
            }
        }
    }
    acquired.sort();
    let died: BTreeMap<u32, jiff::Timestamp> =
        takeovers.iter().map(|(pid, at, _)| (*pid, *at)).collect();
    for (i, (at, pid)) in acquired.iter().enumerate() {
        for (before, other) in &acquired[..i] {
            if other == pid {
                continue;
            }
            let dead = died.get(other).is_some_and(|d| d <= at);
            anyhow::ensure!(
                dead,
                "{pid} acquired leadership at {at} while {other} (leader since {before}) lived"
            );
        }
    }
    anyhow::ensure!(!acquired.is_empty(), "no replica ever led");
    Ok(acquired.len())
}

/// EDA: webhooks that check the HMAC signature and sometimes answer with errors whose bodies
/// echo the credentials they received, while the operator is killed now and then.
pub async fn eda(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let mut out = Outcome::new(
        "eda",
        "EDA webhooks with token and HMAC; 15% error answers echoing the request's credentials; operator SIGKILLed now and then",
    );
    let world = Arc::new(World::start("eda", &ctx.out, ctx.seed, Duration::ZERO).await?);
    let token = crate::world::secret("chaos-eda-token");
    let hmac = crate::world::secret("chaos-eda-hmac");
    {
        let mut scan = lock(&world.scan);
        scan.watch("EDA token", &token);
        scan.watch("EDA HMAC secret", &hmac);
    }
    let hook = Webhook::start(
        &world,
        &token,
        &hmac,
        0.15,
        Duration::from_millis(1500),
        ctx.seed,
    )
    .await?;
    let config = world.operator(
        &ctx.bin,
        vec![
            ("CLOUDKIT_PROVISIONING_PROVIDER".into(), "eda".into()),
            (
                "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK".into(),
                hook.url("provision"),
            ),
            (
                "CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK".into(),
                hook.url("deprovision"),
            ),
            ("CLOUDKIT_EDA_TOKEN".into(), token.clone()),
            ("CLOUDKIT_EDA_HMAC_SECRET".into(), hmac.clone()),
            ("CLOUDKIT_MINIMUM_REQUEST_INTERVAL".into(), "1s".into()),
            ("CLOUDKIT_EDA_PROVISION_GRACE".into(), "10s".into()),
        ],
    );
    let kill_loop = KillLoop::start(&world, config, ctx.seed, (300, 2000))?;
    let total = if ctx.quick { 10 } else { 30 };
    let uids = waves(
        &mut out,
        &world,
        "eda",
        total,
        10,
        Duration::from_secs(300),
        |_| None,
    )
    .await;
    kill_loop.finish(&mut out, &world).await?;
    let stats = hook.stats();
    out.number(
        "webhook calls",
        format!(
            "{} accepted, {} answered with an error echoing the credentials, {} with a bad signature",
            stats.accepted, stats.failed, stats.bad_signature
        ),
    );
    out.check(
        "every webhook call carried the token and a valid HMAC signature",
        stats.bad_signature == 0 && stats.accepted > 0,
        format!("{stats:?}"),
    );
    out.check(
        "the webhooks answered with errors echoing the credentials",
        stats.failed > 0,
        format!("{stats:?}"),
    );
    let provisions = stats.provisions_by_ci.len();
    out.check(
        "every CI got its webhook calls",
        provisions == uids.len(),
        format!("{provisions} CIs called for, {} created", uids.len()),
    );
    secret_checks(&mut out, &world).await;
    Ok(out)
}

/// Runs `f` and turns an error before the checks into a failed check.
pub async fn run<F, Fut>(name: &str, title: &str, f: F) -> Outcome
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Outcome>>,
{
    let start = Instant::now();
    let mut outcome = match f().await {
        Ok(o) => o,
        Err(e) => {
            let mut o = Outcome::new(name, title);
            o.check("the scenario ran", false, format!("{e:#}"));
            o
        }
    };
    outcome.seconds = start.elapsed().as_secs_f64();
    outcome
}

/// Feedback to the fulfillment service under faults: TLS with a private CA, a token file that is
/// rotated mid-run, the service down for a while, and the operator SIGKILLed now and then. Every
/// CI must still be provisioned and gone, the service must have seen each one RUNNING and
/// DELETING, no CI signalled twice, and the tokens appear nowhere users look.
pub async fn feedback(ctx: &Ctx) -> anyhow::Result<Outcome> {
    use cloudkit_feedback::fake::{FakeFulfillment, FakeServer, Method, TestCa};
    use cloudkit_feedback::proto::private::v1::ComputeInstanceState as State;

    let mut out = Outcome::new(
        "feedback",
        "Fulfillment service over TLS with a rotated token file, down for a while; operator SIGKILLed now and then",
    );
    let mut world =
        World::start("feedback", &ctx.out, ctx.seed, Duration::from_millis(1500)).await?;
    world.uuid_labels = true;
    let world = Arc::new(world);
    let total = if ctx.quick { 20 } else { 60 };
    let wave = if ctx.quick { 10 } else { 20 };
    let fake = FakeFulfillment::new();
    for name in workload::names("feedback", 0..total) {
        fake.insert(FakeFulfillment::object(
            &workload::uuid_of(&name),
            "chaos_template",
        ));
    }
    let tokens = [
        crate::world::secret("chaos-fulfillment-token"),
        crate::world::secret("chaos-fulfillment-token"),
    ];
    {
        let mut scan = lock(&world.scan);
        scan.watch("fulfillment token", &tokens[0]);
        scan.watch("rotated fulfillment token", &tokens[1]);
    }
    let ca = TestCa::generate()?;
    let ca_file = world.dir.join("ca.pem");
    let token_file = world.dir.join("fulfillment-token");
    std::fs::write(&ca_file, ca.ca_pem())?;
    std::fs::write(&token_file, format!("{}\n", tokens[0]))?;
    fake.require_token(Some(&tokens[0]));
    let server = fake.serve_tls(&ca, true).await?;
    let address = server.socket_addr();
    let server: Arc<AsyncMutex<Option<FakeServer>>> = Arc::new(AsyncMutex::new(Some(server)));

    let mut settings = world.aap_settings()?;
    settings.extend([
        (
            "CLOUDKIT_FULFILLMENT_SERVER_ADDRESS".to_string(),
            format!("localhost:{}", address.port()),
        ),
        (
            "CLOUDKIT_FULFILLMENT_TOKEN_FILE".to_string(),
            token_file.display().to_string(),
        ),
        ("SSL_CERT_FILE".to_string(), ca_file.display().to_string()),
    ]);
    let config = world.operator(&ctx.bin, settings);
    let kill_loop = KillLoop::start(&world, config, ctx.seed, (300, 2000))?;
    let outage_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>> =
        std::sync::Mutex::new(None);
    let rotated = Arc::new(AtomicBool::new(false));
    let outage = Arc::new(AtomicBool::new(false));
    // Wave 0 rotates the token; wave 1 takes the service down for 8 s once its deletion has
    // begun.
    let uids = waves(
        &mut out,
        &world,
        "feedback",
        total,
        wave,
        Duration::from_secs(300),
        |w| match w {
            0 => {
                let (fake, file, token, rotated) = (
                    fake.clone(),
                    token_file.clone(),
                    tokens[1].clone(),
                    Arc::clone(&rotated),
                );
                Some(tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    if std::fs::write(&file, format!("{token}\n")).is_ok() {
                        fake.require_token(Some(&token));
                        rotated.store(true, Ordering::Relaxed);
                    }
                }))
            }
            1 => {
                let (fake, ca, server, outage) = (
                    fake.clone(),
                    ca.clone(),
                    Arc::clone(&server),
                    Arc::clone(&outage),
                );
                let api = world.api.clone();
                // Not handed to `waves`, which awaits its side task before deleting.
                *lock(&outage_task) = Some(tokio::spawn(async move {
                    // Down once the wave's deletion has begun, so deletions have to wait.
                    let start = Instant::now();
                    while start.elapsed() < Duration::from_secs(300) {
                        let list = api.list(&ListParams::default()).await;
                        if list.is_ok_and(|l| {
                            l.items
                                .iter()
                                .any(|ci| ci.metadata.deletion_timestamp.is_some())
                        }) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    let mut slot = server.lock().await;
                    drop(slot.take());
                    tokio::time::sleep(Duration::from_secs(8)).await;
                    if let Ok(back) = fake.serve_tls_at(&ca, true, address).await {
                        *slot = Some(back);
                        outage.store(true, Ordering::Relaxed);
                    }
                }));
                None
            }
            _ => None,
        },
    )
    .await;
    let task = lock(&outage_task).take();
    if let Some(task) = task {
        let _ = task.await;
    }
    kill_loop.finish(&mut out, &world).await?;
    out.check(
        "the token file was rotated",
        rotated.load(Ordering::Relaxed),
        "",
    );
    out.check(
        "the service was down for 8 s during a deletion wave and came back",
        outage.load(Ordering::Relaxed),
        "",
    );

    let calls = fake.calls();
    out.number("calls at the fulfillment service", calls.len());
    let stale: Vec<&Option<String>> = calls
        .iter()
        .map(|c| &c.authorization)
        .filter(|a| {
            !tokens
                .iter()
                .any(|t| a.as_deref() == Some(&format!("Bearer {t}")[..]))
        })
        .collect();
    out.check(
        "every call carried one of the tokens as a Bearer token",
        stale.is_empty(),
        format!("{} calls without a known token", stale.len()),
    );
    let after_rotation = calls
        .iter()
        .rev()
        .take_while(|c| c.authorization.as_deref() == Some(&format!("Bearer {}", tokens[1])[..]))
        .count();
    out.check(
        "the calls after the rotation carried the new token",
        after_rotation > 0,
        format!("{after_rotation} trailing calls with the new token"),
    );
    let sent = |uuid: &str, state: State| {
        calls.iter().any(|c| {
            c.method == Method::Update
                && c.id == uuid
                && c.code == tonic::Code::Ok
                && c.object
                    .as_ref()
                    .and_then(|o| o.status.as_ref())
                    .is_some_and(|s| s.state == state as i32)
        })
    };
    let mut not_deleting = Vec::new();
    let mut running = 0;
    let mut signals = BTreeMap::new();
    for name in uids.keys() {
        let uuid = workload::uuid_of(name);
        if sent(&uuid, State::Running) {
            running += 1;
        }
        if !sent(&uuid, State::Deleting) {
            not_deleting.push(name.clone());
        }
        *signals.entry(fake.signals(&uuid)).or_insert(0usize) += 1;
    }
    // A CI deleted right after it turned Running may reach a restarted operator only as a
    // deleting CI, so RUNNING is counted; DELETING comes before the finalizer goes, so every CI
    // must have sent it.
    out.number(
        "CIs the service saw RUNNING",
        format!("{running} of {}", uids.len()),
    );
    out.check(
        "the service saw every CI DELETING before it went",
        not_deleting.is_empty() && running > 0,
        format!("{not_deleting:?}"),
    );
    let twice: usize = signals
        .iter()
        .filter(|(n, _)| **n > 1)
        .map(|(_, c)| c)
        .sum();
    out.check("no CI signalled twice", twice == 0, format!("{signals:?}"));
    out.number(
        "CIs signalled once (a Signal is not retried: a kill or the outage between the finalizer's removal and the call loses it)",
        format!(
            "{} of {}",
            signals.get(&1).copied().unwrap_or(0),
            uids.len()
        ),
    );
    let unavailable = world.warning_reasons().await?;
    out.check(
        "the outage was reported (FulfillmentUnavailable Warning events)",
        unavailable.iter().any(|r| r == "FulfillmentUnavailable"),
        format!("{unavailable:?}"),
    );
    launch_checks(&mut out, &world, &uids, Some(1));
    secret_checks(&mut out, &world).await;
    Ok(out)
}
