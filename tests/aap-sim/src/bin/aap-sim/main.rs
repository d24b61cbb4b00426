//! `aap-sim`: serves the AWX-compatible controller API simulator, or measures its throughput.
//!
//! The first line on stdout is `listening on http://ADDR` (port 0 picks a free port), so that a
//! script can start it and read the URL. Logs go to stderr (`RUST_LOG` filters them).

mod bench;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use cloudkit_aap_sim::{
    Faults, RunnerSpec, SimConfig, Simulator, TemplateKind, TemplateSpec, parse_duration,
};

#[derive(Debug, Parser)]
#[command(
    name = "aap-sim",
    version,
    about = "AWX-compatible automation controller API simulator",
    long_about = "Serves the AWX controller REST API (under /api/v2/ and /api/controller/v2/) with \
                  simulated jobs, fault injection and an admin API under /_sim/. Every flag has an \
                  environment variable as fallback."
)]
struct Args {
    /// Address to listen on; port 0 picks a free port. The bound URL is printed on stdout.
    #[arg(long, env = "AAP_SIM_LISTEN", default_value = "127.0.0.1:0")]
    listen: SocketAddr,

    /// Accepted Bearer token (repeat, or comma-separated in the env var). None = no auth.
    #[arg(long = "token", env = "AAP_SIM_TOKENS", value_delimiter = ',')]
    tokens: Vec<String>,

    /// File holding one more accepted token.
    #[arg(long, env = "AAP_SIM_TOKEN_FILE")]
    token_file: Option<PathBuf>,

    /// YAML or JSON simulator configuration (templates, timing, tokens, faults).
    #[arg(long, env = "AAP_SIM_CONFIG")]
    config: Option<PathBuf>,

    /// A template as NAME[:job|workflow[:ID]] (repeat, or comma-separated in the env var).
    #[arg(long = "template", env = "AAP_SIM_TEMPLATES", value_delimiter = ',')]
    templates: Vec<String>,

    /// Fast mode: configured seconds pass as milliseconds.
    #[arg(long, env = "AAP_SIM_FAST")]
    fast: bool,

    /// Real seconds per simulated second (overrides --fast).
    #[arg(long, env = "AAP_SIM_TIME_SCALE")]
    time_scale: Option<f64>,

    /// Default time jobs spend pending (templates may set their own), e.g. 500ms.
    #[arg(long, env = "AAP_SIM_PENDING", value_parser = parse_duration)]
    pending: Option<std::time::Duration>,

    /// Default time jobs spend waiting.
    #[arg(long, env = "AAP_SIM_WAITING", value_parser = parse_duration)]
    waiting: Option<std::time::Duration>,

    /// Default time jobs spend running.
    #[arg(long, env = "AAP_SIM_RUNNING", value_parser = parse_duration)]
    running: Option<std::time::Duration>,

    /// Fraction (0..1) of API requests answered with a 5xx error.
    #[arg(long, env = "AAP_SIM_ERROR_RATE")]
    error_rate: Option<f64>,

    /// Status of injected errors (500..599).
    #[arg(long, env = "AAP_SIM_ERROR_STATUS")]
    error_status: Option<u16>,

    /// Latency added to every API request (e.g. 50ms).
    #[arg(long, env = "AAP_SIM_LATENCY", value_parser = parse_duration)]
    latency: Option<std::time::Duration>,

    /// Up to this much more latency, uniformly distributed.
    #[arg(long, env = "AAP_SIM_LATENCY_JITTER", value_parser = parse_duration)]
    latency_jitter: Option<std::time::Duration>,

    /// Fraction (0..1) of API requests whose connection is reset.
    #[arg(long, env = "AAP_SIM_DROP_RATE")]
    drop_rate: Option<f64>,

    /// Fraction (0..1) of API requests carried out whose answer is lost (silence, then reset).
    #[arg(long, env = "AAP_SIM_STALL_RATE")]
    stall_rate: Option<f64>,

    /// How long a lost answer keeps its connection silent.
    #[arg(long, env = "AAP_SIM_STALL", value_parser = parse_duration)]
    stall: Option<std::time::Duration>,

    /// Purge jobs this long after they finish (then 404).
    #[arg(long, env = "AAP_SIM_PURGE_AFTER", value_parser = parse_duration)]
    purge_after: Option<std::time::Duration>,

    /// Start in a 401 period (turn off with PUT /_sim/faults {"unauthorized": false}).
    #[arg(long, env = "AAP_SIM_UNAUTHORIZED")]
    unauthorized: bool,

    /// Apply error, latency and reset faults only to paths containing this text.
    #[arg(long, env = "AAP_SIM_FAULT_PATH")]
    fault_path: Option<String>,

    /// Seed of the fault generator.
    #[arg(long, env = "AAP_SIM_SEED")]
    seed: Option<u64>,

    /// Runner mode: jobs of template NAME run PLAYBOOK with a real ansible-playbook, as
    /// NAME=PLAYBOOK (repeat, or comma-separated in the env var). NAME must be a template.
    #[arg(long = "runner", env = "AAP_SIM_RUNNERS", value_delimiter = ',')]
    runners: Vec<String>,

    /// The ansible-playbook of runners that name none (default: the one in $CLOUDKIT_PYTHON_VENV
    /// or ~/.cache/cloudkit/venv, the venv of hack/python-venv.sh).
    #[arg(long, env = "AAP_SIM_ANSIBLE_PLAYBOOK")]
    ansible_playbook: Option<PathBuf>,

    /// At most this many ansible-playbook processes at once (default 4); other jobs stay pending.
    #[arg(long, env = "AAP_SIM_RUNNER_CONCURRENCY")]
    runner_concurrency: Option<usize>,

    /// How long a canceled runner job's process has after SIGINT before SIGKILL (default 2s).
    #[arg(long, env = "AAP_SIM_RUNNER_CANCEL_GRACE", value_parser = parse_duration)]
    runner_cancel_grace: Option<std::time::Duration>,

    /// Playbook mode: act on ComputeInstances in the cluster of this kubeconfig. Runner jobs get
    /// it as K8S_AUTH_KUBECONFIG.
    #[arg(long, env = "AAP_SIM_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Log as JSON lines.
    #[arg(long, env = "AAP_SIM_LOG_JSON")]
    log_json: bool,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Measure launch + poll throughput of an in-process simulator over loopback.
    Bench(bench::BenchArgs),
}

fn template_from_flag(text: &str) -> Result<TemplateSpec> {
    let mut parts = text.split(':');
    let name = parts.next().unwrap_or_default().trim();
    if name.is_empty() {
        bail!("--template {text:?}: empty name");
    }
    let kind = match parts.next().map(str::trim) {
        None | Some("" | "job" | "job_template") => TemplateKind::Job,
        Some("workflow" | "workflow_job_template") => TemplateKind::Workflow,
        Some(other) => bail!("--template {text:?}: kind {other:?} is not job or workflow"),
    };
    let mut spec = match kind {
        TemplateKind::Job => TemplateSpec::job(name),
        TemplateKind::Workflow => TemplateSpec::workflow(name),
    };
    if let Some(id) = parts.next() {
        spec.id = Some(
            id.trim()
                .parse()
                .with_context(|| format!("--template {text:?}: id {id:?}"))?,
        );
    }
    if parts.next().is_some() {
        bail!("--template {text:?}: expected NAME[:job|workflow[:ID]]");
    }
    Ok(spec)
}

/// Applies `--runner NAME=PLAYBOOK` to the template named NAME.
fn apply_runner_flag(config: &mut SimConfig, text: &str) -> Result<()> {
    let Some((name, playbook)) = text.split_once('=') else {
        bail!("--runner {text:?}: expected NAME=PLAYBOOK");
    };
    let (name, playbook) = (name.trim(), playbook.trim());
    if name.is_empty() || playbook.is_empty() {
        bail!("--runner {text:?}: expected NAME=PLAYBOOK");
    }
    let playbook = std::path::absolute(playbook)
        .with_context(|| format!("--runner {text:?}: resolving {playbook}"))?;
    let mut matching = config.templates.iter_mut().filter(|t| t.name == name);
    let Some(template) = matching.next() else {
        bail!("--runner {text:?}: no template is named {name:?} (add it with --template)");
    };
    if matching.next().is_some() {
        bail!("--runner {text:?}: a job and a workflow template are both named {name:?}");
    }
    match &mut template.runner {
        // Keep the file's other runner settings.
        Some(runner) => runner.playbook = playbook,
        None => template.runner = Some(RunnerSpec::new(playbook)),
    }
    Ok(())
}

fn config_from_args(args: &Args) -> Result<SimConfig> {
    let mut config = match &args.config {
        Some(path) => SimConfig::from_file(path)?,
        None => SimConfig::default(),
    };
    config
        .tokens
        .extend(args.tokens.iter().filter(|t| !t.is_empty()).cloned());
    if let Some(path) = &args.token_file {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading --token-file {}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            bail!("--token-file {} is empty", path.display());
        }
        config.tokens.push(token.to_owned());
    }
    for t in &args.templates {
        config.templates.push(template_from_flag(t)?);
    }
    for r in &args.runners {
        apply_runner_flag(&mut config, r)?;
    }
    if let Some(program) = &args.ansible_playbook {
        let program = std::path::absolute(program)
            .with_context(|| format!("--ansible-playbook {}", program.display()))?;
        for runner in config
            .templates
            .iter_mut()
            .filter_map(|t| t.runner.as_mut())
        {
            runner
                .ansible_playbook
                .get_or_insert_with(|| program.clone());
        }
    }
    if let Some(n) = args.runner_concurrency {
        config.runner_concurrency = n;
    }
    if let Some(grace) = args.runner_cancel_grace {
        config.runner_cancel_grace = grace;
    }
    if args.fast {
        config.time_scale = cloudkit_aap_sim::FAST_TIME_SCALE;
    }
    if let Some(scale) = args.time_scale {
        config.time_scale = scale;
    }
    if let Some(v) = args.pending {
        config.phases.pending = v;
    }
    if let Some(v) = args.waiting {
        config.phases.waiting = v;
    }
    if let Some(v) = args.running {
        config.phases.running = v;
    }
    let f: &mut Faults = &mut config.faults;
    if let Some(v) = args.error_rate {
        f.error_rate = v;
    }
    if let Some(v) = args.error_status {
        f.error_status = v;
    }
    if let Some(v) = args.latency {
        f.latency = v;
    }
    if let Some(v) = args.latency_jitter {
        f.latency_jitter = v;
    }
    if let Some(v) = args.drop_rate {
        f.drop_rate = v;
    }
    if let Some(v) = args.stall_rate {
        f.stall_rate = v;
    }
    if let Some(v) = args.stall {
        f.stall = v;
    }
    if let Some(v) = args.purge_after {
        f.purge_after = Some(v);
    }
    if args.unauthorized {
        f.unauthorized = true;
    }
    if let Some(p) = &args.fault_path {
        f.path_contains = Some(p.clone());
    }
    if let Some(seed) = args.seed {
        config.seed = Some(seed);
    }
    config.validate()?;
    Ok(config)
}

/// Says at start-up what would make runner jobs end in `error`; returns how many runners there
/// are.
fn warn_about_runners(config: &SimConfig) -> usize {
    let mut n = 0;
    for t in &config.templates {
        let Some(runner) = &t.runner else { continue };
        n += 1;
        if !runner.playbook.is_file() {
            tracing::warn!(template = %t.name, playbook = %runner.playbook.display(),
                "the runner's playbook does not exist: its jobs will end in error");
        }
        if let Err(e) = cloudkit_aap_sim::runner::ansible_playbook(runner) {
            tracing::warn!(template = %t.name, "{e}: its jobs will end in error");
        }
    }
    n
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received, shutting down"),
        _ = term => tracing::info!("SIGTERM received, shutting down"),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    init_logging(args.log_json);
    if let Some(Command::Bench(bench)) = &args.command {
        return bench::run(bench).await;
    }
    let config = config_from_args(&args)?;
    let templates = config.templates.len();
    let runners = warn_about_runners(&config);
    let auth = !config.tokens.is_empty();
    let mut builder = Simulator::builder().config(config);
    if let Some(path) = &args.kubeconfig {
        builder = builder.kubeconfig(path);
    }
    let simulator = builder.build().await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on http://{addr}")?;
        out.flush()?;
    }
    tracing::info!(
        %addr,
        templates,
        auth,
        runners,
        playbook_mode = args.kubeconfig.is_some(),
        "AAP simulator serving /api/v2/, /api/controller/v2/ and /_sim/"
    );
    if !auth {
        tracing::warn!("no token configured: requests are not authenticated");
    }
    simulator.serve(listener, shutdown_signal()).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_flags() {
        let t = template_from_flag("provision_vm").unwrap();
        assert_eq!(
            (t.name.as_str(), t.kind, t.id),
            ("provision_vm", TemplateKind::Job, None)
        );
        let t = template_from_flag("wf:workflow:12").unwrap();
        assert_eq!((t.kind, t.id), (TemplateKind::Workflow, Some(12)));
        for bad in ["", ":job", "a:b", "a:job:x", "a:job:1:2"] {
            assert!(template_from_flag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sim.yaml");
        std::fs::write(&file, "templates: [{name: a, id: 3}]\ntokens: [one]\n").unwrap();
        let args = Args::parse_from([
            "aap-sim",
            "--config",
            file.to_str().unwrap(),
            "--token",
            "two",
            "--template",
            "b:workflow",
            "--fast",
            "--error-rate",
            "0.25",
            "--latency",
            "10ms",
            "--purge-after",
            "2s",
            "--seed",
            "9",
            "--running",
            "7s",
        ]);
        let c = config_from_args(&args).unwrap();
        assert_eq!(c.tokens, ["one", "two"]);
        assert_eq!(c.templates.len(), 2);
        assert_eq!(c.time_scale, cloudkit_aap_sim::FAST_TIME_SCALE);
        assert_eq!(c.faults.error_rate, 0.25);
        assert_eq!(c.faults.latency, std::time::Duration::from_millis(10));
        assert_eq!(
            c.faults.purge_after,
            Some(std::time::Duration::from_secs(2))
        );
        assert_eq!(c.seed, Some(9));
        assert_eq!(c.phases.running, std::time::Duration::from_secs(7));
        let bad = Args::parse_from(["aap-sim", "--error-rate", "3"]);
        assert!(config_from_args(&bad).is_err());
    }

    #[test]
    fn runner_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sim.yaml");
        std::fs::write(
            &file,
            "templates: [{name: a, runner: {playbook: a.yml, extra_args: [-v]}}, {name: b}]\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "aap-sim",
            "--config",
            file.to_str().unwrap(),
            "--template",
            "c:workflow:9",
            "--runner",
            "a=/p/other.yml",
            "--runner",
            "c=rel/c.yml",
            "--ansible-playbook",
            "/venv/bin/ansible-playbook",
            "--runner-concurrency",
            "2",
            "--runner-cancel-grace",
            "500ms",
        ]);
        let c = config_from_args(&args).unwrap();
        let runner = |name: &str| {
            c.templates
                .iter()
                .find(|t| t.name == name)
                .unwrap()
                .runner
                .clone()
        };
        let a = runner("a").unwrap();
        assert_eq!(a.playbook, PathBuf::from("/p/other.yml"));
        assert_eq!(a.extra_args, ["-v"], "the file's settings stay");
        assert_eq!(
            a.ansible_playbook,
            Some(PathBuf::from("/venv/bin/ansible-playbook"))
        );
        assert_eq!(runner("b"), None);
        let c9 = runner("c").unwrap();
        assert_eq!(
            c9.playbook,
            std::env::current_dir().unwrap().join("rel/c.yml")
        );
        assert_eq!(c.runner_concurrency, 2);
        assert_eq!(c.runner_cancel_grace, std::time::Duration::from_millis(500));
        for bad in ["x=/p.yml", "a", "=p.yml", "a="] {
            let args = Args::parse_from([
                "aap-sim",
                "--config",
                file.to_str().unwrap(),
                "--runner",
                bad,
            ]);
            assert!(config_from_args(&args).is_err(), "{bad}");
        }
        let zero = Args::parse_from(["aap-sim", "--runner-concurrency", "0"]);
        assert!(config_from_args(&zero).is_err());
    }
}
