//! `cloudkit-bench`: end-to-end numbers for docs/performance.md. The operator runs as its
//! release binary against a real kube-apiserver (a fresh one per section) and the AWX simulator
//! in fast mode; everything is on loopback and on this machine, and every comparison is between
//! figures measured in the same run.
//!
//! ```text
//! cargo build --release -p cloudkit-operator -p cloudkit-bench
//! target/release/cloudkit-bench [--quick] [--sections 1,2,3] [--write-docs]
//! ```

mod cluster;
mod eda;
mod lifecycle;
mod minimal;
mod operator;
mod probe;
mod report;
mod sections;
mod shards;
mod sim;
mod svg;
mod tracker;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

/// End-to-end benchmarks of the operator binary.
#[derive(Debug, Parser)]
#[command(name = "cloudkit-bench")]
struct Args {
    /// Smoke run: N = 100 only, smaller memory and load runs.
    #[arg(long)]
    quick: bool,
    /// Sections to run (1 throughput, 2 writes per lifecycle, 3 memory, 4 restart, 5 provider
    /// load, 6 create-to-launch latency, 7 shards); all when absent.
    #[arg(long, value_delimiter = ',')]
    sections: Vec<u8>,
    /// Lifecycle sizes for section 1 (default 100,500,1000; --quick: 100).
    #[arg(long, value_delimiter = ',')]
    sizes: Vec<usize>,
    /// The operator binary.
    #[arg(long)]
    operator: Option<PathBuf>,
    /// CIs per lifecycle of section 7 (default 3000; --quick: 300).
    #[arg(long)]
    shard_cis: Option<usize>,
    /// Operator poll interval for sections 1, 2, 4 and 6.
    #[arg(long, default_value = "500ms")]
    poll_interval: String,
    /// CIs the API floor works on at once.
    #[arg(long, default_value_t = 32)]
    floor_concurrency: usize,
    /// Another build of the operator whose memory section 3 also measures (idle and with the
    /// most CIs), e.g. one built with other release-profile settings.
    #[arg(long)]
    alt_operator: Option<PathBuf>,
    /// How the report names --alt-operator.
    #[arg(long, default_value = "alternative build")]
    alt_label: String,
    /// Write report.md and bench.svg (and with --write-docs the docs) from an earlier run's
    /// results.json instead of running.
    #[arg(long)]
    render: Option<PathBuf>,
    /// Internal (section 3): list the CIs of this namespace into a reflector store as the
    /// operator does, print the memory it took as JSON and exit.
    #[arg(long, hide = true)]
    cache_probe: Option<String>,
    /// Internal: with --cache-probe, keep managedFields (the operator drops them).
    #[arg(long, hide = true)]
    keep_managed_fields: bool,
    /// Where results.json, report.md and bench.svg go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Also update docs/performance.md (the generated block) and docs/bench.svg.
    #[arg(long)]
    write_docs: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(namespace) = &args.cache_probe {
        return sections::cache_probe(namespace, args.keep_managed_fields).await;
    }
    let bin = args
        .operator
        .clone()
        .unwrap_or_else(operator::default_binary);
    if !bin.exists() {
        anyhow::bail!(
            "{} is missing: run `cargo build --release -p cloudkit-operator` first",
            bin.display()
        );
    }
    if let Some(path) = &args.render {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let results: sections::Results = serde_json::from_str(&text)?;
        return publish(&args, &results);
    }
    let all = args.sections.is_empty();
    let want = |s: u8| all || args.sections.contains(&s);
    let sizes = if !args.sizes.is_empty() {
        args.sizes.clone()
    } else if args.quick {
        vec![100]
    } else {
        vec![100, 500, 1000]
    };
    let config = sections::Config {
        bin,
        quick: args.quick,
        sizes,
        poll_interval: args.poll_interval.clone(),
        floor_concurrency: args.floor_concurrency,
        alt_operator: args.alt_operator.clone(),
        alt_label: args.alt_label.clone(),
        shard_cis: args
            .shard_cis
            .unwrap_or(if args.quick { 300 } else { 3000 }),
    };
    let results = sections::run(&config, want).await?;
    publish(&args, &results)
}

/// Writes the results, the report and the picture; with --write-docs also into docs/.
fn publish(args: &Args, results: &sections::Results) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(args.out.join("results.json"), json)?;
    let markdown = report::markdown(results);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    let picture = svg::render(results);
    std::fs::write(args.out.join("bench.svg"), &picture)?;
    println!("{markdown}");
    if args.write_docs {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs");
        report::update_performance_md(&docs.join("performance.md"), &markdown)?;
        std::fs::write(docs.join("bench.svg"), &picture)?;
        eprintln!("updated docs/performance.md and docs/bench.svg");
    }
    Ok(())
}
