//! `aap-sim bench`: launch + poll throughput of an in-process simulator over loopback HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cloudkit_aap_sim::{Phases, Simulator, TemplateSpec};
use serde_json::{Value, json};

/// Bench settings.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Launches in total (each followed by --polls-per-launch job reads).
    #[arg(long, default_value_t = 5000)]
    launches: usize,
    /// `GET jobs/<id>/` requests after each launch.
    #[arg(long, default_value_t = 4)]
    polls_per_launch: usize,
    /// Concurrent clients (keep-alive connections).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

const TOKEN: &str = "bench-token";

#[derive(Default)]
struct Samples {
    launch: Vec<Duration>,
    poll: Vec<Duration>,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A launch body shaped like the operator's.
fn launch_body(i: usize) -> Value {
    json!({
        "extra_vars": {
            "ansible_eda": {"event": {"payload": {
                "apiVersion": "cloudkit.openshift.io/v1alpha1",
                "kind": "ComputeInstance",
                "metadata": {"name": format!("vm-{i}"), "namespace": "bench"},
                "spec": {"templateID": "bench_template", "cores": 2, "memoryGiB": 4},
                "status": {"desiredConfigVersion": "0123456789abcdef"}
            }}},
            "cloudkit_launch_key": format!("bench-{i}"),
        }
    })
}

async fn worker(
    client: reqwest::Client,
    base: String,
    next: Arc<AtomicUsize>,
    total: usize,
    polls: usize,
) -> Result<Samples> {
    let mut s = Samples::default();
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return Ok(s);
        }
        let t = Instant::now();
        let resp = client
            .post(format!("{base}/api/v2/job_templates/1/launch/"))
            .bearer_auth(TOKEN)
            .json(&launch_body(i))
            .send()
            .await?;
        if resp.status().as_u16() != 201 {
            bail!("launch answered {}", resp.status());
        }
        let body: Value = resp.json().await?;
        s.launch.push(t.elapsed());
        let id = body["id"].as_u64().context("launch answer without id")?;
        for _ in 0..polls {
            let t = Instant::now();
            let resp = client
                .get(format!("{base}/api/v2/jobs/{id}/"))
                .bearer_auth(TOKEN)
                .send()
                .await?;
            if !resp.status().is_success() {
                bail!("poll answered {}", resp.status());
            }
            let _: Value = resp.json().await?;
            s.poll.push(t.elapsed());
        }
    }
}

/// Runs the benchmark and prints the numbers.
pub async fn run(args: &BenchArgs) -> Result<()> {
    if args.launches == 0 || args.concurrency == 0 {
        bail!("--launches and --concurrency must be positive");
    }
    let handle = Simulator::builder()
        .token(TOKEN)
        .fast()
        .seed(1)
        .template(
            TemplateSpec::job("bench_job")
                .with_id(1)
                .with_phases(Phases::new(
                    Duration::from_secs(1),
                    Duration::from_secs(1),
                    Duration::from_secs(2),
                )),
        )
        .spawn("127.0.0.1:0".parse()?)
        .await?;
    let base = handle.base_url().to_owned();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;

    // Warm-up: open the connections and fault in the code paths.
    let warm = Arc::new(AtomicUsize::new(0));
    worker(
        client.clone(),
        base.clone(),
        warm,
        args.concurrency.min(64),
        1,
    )
    .await?;
    handle.simulator().clear_requests();

    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        tasks.push(tokio::spawn(worker(
            client.clone(),
            base.clone(),
            Arc::clone(&next),
            args.launches,
            args.polls_per_launch,
        )));
    }
    let mut all = Samples::default();
    for t in tasks {
        let s = t.await??;
        all.launch.extend(s.launch);
        all.poll.extend(s.poll);
    }
    let elapsed = start.elapsed();
    all.launch.sort();
    all.poll.sort();
    let requests = all.launch.len() + all.poll.len();
    let secs = elapsed.as_secs_f64();
    let stats = handle.simulator().stats();
    println!(
        "AAP simulator throughput (loopback HTTP/1.1 keep-alive, Bearer auth, request log on)"
    );
    println!(
        "  launches: {}  polls per launch: {}  concurrency: {}",
        args.launches, args.polls_per_launch, args.concurrency
    );
    println!("  requests: {requests} in {secs:.3} s");
    println!(
        "  throughput: {:.0} requests/s ({:.0} launches/s)",
        requests as f64 / secs,
        all.launch.len() as f64 / secs
    );
    println!(
        "  launch latency ms: p50 {:.3}  p99 {:.3}  max {:.3}",
        ms(percentile(&all.launch, 50.0)),
        ms(percentile(&all.launch, 99.0)),
        ms(percentile(&all.launch, 100.0))
    );
    if !all.poll.is_empty() {
        println!(
            "  poll latency ms:   p50 {:.3}  p99 {:.3}  max {:.3}",
            ms(percentile(&all.poll, 50.0)),
            ms(percentile(&all.poll, 99.0)),
            ms(percentile(&all.poll, 100.0))
        );
    }
    println!(
        "  simulator: {} jobs, {} requests logged",
        stats.jobs_by_status.values().sum::<u64>(),
        handle.simulator().requests().len()
    );
    handle.shutdown().await;
    Ok(())
}
