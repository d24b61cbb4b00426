//! `cloudkit-chaos`: soak runs under faults for docs/reliability.md. The operator runs as its
//! release binary against real kube-apiservers (a fresh one per scenario) with the AWX simulator
//! in fast playbook mode, or with EDA webhooks; each scenario ends in pass/fail checks.
//!
//! ```text
//! cargo build --release -p cloudkit-operator -p cloudkit-chaos
//! target/release/cloudkit-chaos [--seed N] [--quick] [--scenarios crash,faults] [--write-docs]
//! ```
//!
//! The seed fixes every random choice of the run (kill instants, fault draws, webhook errors);
//! the machine's timing is not reproducible, so two runs with one seed hit the operator at the
//! same offsets, not necessarily in the same states.

mod eda;
mod report;
mod scenarios;
mod workload;
mod world;

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;

use crate::scenarios::{Ctx, Outcome};

/// Every scenario, in run order.
const ALL: [&str; 6] = ["crash", "faults", "outage", "leader", "eda", "feedback"];

/// Soak runs of the operator binary under faults.
#[derive(Debug, Parser)]
#[command(name = "cloudkit-chaos")]
struct Args {
    /// Seed of every random choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Smaller runs (40 crash-loop lifecycles, smaller waves).
    #[arg(long)]
    quick: bool,
    /// Scenarios to run (crash, faults, outage, leader, eda, feedback); all when absent.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Lifecycles of the crash loop (default 200; --quick: 40).
    #[arg(long)]
    crash_lifecycles: Option<usize>,
    /// The operator binary.
    #[arg(long)]
    operator: Option<PathBuf>,
    /// Where logs, results.json and report.md go.
    #[arg(long, default_value = "target/chaos")]
    out: PathBuf,
    /// Also update the generated block of docs/reliability.md.
    #[arg(long)]
    write_docs: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for s in &args.scenarios {
        anyhow::ensure!(
            ALL.contains(&s.as_str()),
            "--scenarios: unknown scenario {s:?}; known: {}",
            ALL.join(", ")
        );
    }
    let bin = args.operator.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/release/cloudkit-operator")
    });
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: run `cargo build --release -p cloudkit-operator` first",
        bin.display()
    );
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let ctx = Ctx {
        bin,
        out: args.out.clone(),
        seed: args.seed,
        quick: args.quick,
        crash_lifecycles: args
            .crash_lifecycles
            .unwrap_or(if args.quick { 40 } else { 200 }),
    };
    let want = |s: &str| args.scenarios.is_empty() || args.scenarios.iter().any(|a| a == s);
    let mut outcomes: Vec<Outcome> = Vec::new();
    for name in ALL.into_iter().filter(|s| want(s)) {
        eprintln!("chaos: scenario {name} (seed {})", args.seed);
        let outcome = match name {
            "crash" => scenarios::run(name, "crash loop", || scenarios::crash(&ctx)).await,
            "faults" => scenarios::run(name, "provider faults", || scenarios::faults(&ctx)).await,
            "outage" => scenarios::run(name, "outages", || scenarios::outage(&ctx)).await,
            "leader" => scenarios::run(name, "leader election", || scenarios::leader(&ctx)).await,
            "eda" => scenarios::run(name, "EDA", || scenarios::eda(&ctx)).await,
            _ => scenarios::run(name, "feedback", || scenarios::feedback(&ctx)).await,
        };
        eprintln!(
            "chaos: scenario {name}: {} in {:.0} s",
            if outcome.passed() { "PASS" } else { "FAIL" },
            outcome.seconds
        );
        outcomes.push(outcome);
    }
    let run = report::Run {
        seed: args.seed,
        quick: args.quick,
        command: report::command(&args.scenarios, args.seed, args.quick),
        outcomes,
    };
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&run)?,
    )?;
    let markdown = report::markdown(&run);
    std::fs::write(args.out.join("report.md"), &markdown)?;
    println!("{markdown}");
    if args.write_docs {
        let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/reliability.md");
        report::update_docs(&docs, &markdown)?;
        eprintln!("updated {}", docs.display());
    }
    let failed: Vec<&str> = run
        .outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.name.as_str())
        .collect();
    if failed.is_empty() {
        println!(
            "chaos: PASS ({} scenarios, seed {})",
            run.outcomes.len(),
            run.seed
        );
        Ok(())
    } else {
        println!("chaos: FAIL: {} (seed {})", failed.join(", "), run.seed);
        std::process::exit(1);
    }
}
