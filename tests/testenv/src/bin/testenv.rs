//! A long-lived test environment for manual use.
//!
//! ```text
//! testenv            start it (once) in the background; prints `export KUBECONFIG=...`
//! testenv --down     stop it
//! testenv --status   say whether it runs
//! ```
//!
//! State lives in `<workspace>/.testenv/` (or `--dir DIR`): `kubeconfig` (administrator),
//! `limited.kubeconfig` (the RBAC-limited user), `pids` and `testenv.log`. The background process
//! owns the environment; its watchdog cleans up even if that process is killed. The environment
//! has the platform's CRDs (KubeVirt, CDI, OVN-Kubernetes) and a fake KubeVirt that runs the
//! VirtualMachines the sample playbooks create.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cloudkit_testenv::TestEnv;
use cloudkit_testenv::kubevirt::FakeKubeVirt;

const USAGE: &str = "usage: testenv [--dir DIR] [--down | --status]";
/// The background process marks itself with this argument so that `--down` can tell it from an
/// unrelated process that reuses its PID.
const SERVE_ARG: &str = "--serve";
const START_TIMEOUT: Duration = Duration::from_secs(120);

enum Action {
    Up,
    Down,
    Status,
    Serve,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testenv: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut action = Action::Up;
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.testenv");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--down" => action = Action::Down,
            "--status" => action = Action::Status,
            SERVE_ARG => action = Action::Serve,
            "--dir" => dir = PathBuf::from(args.next().context(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let state = State::new(dir);
    match action {
        Action::Up => up(&state),
        Action::Down => down(&state),
        Action::Status => status(&state),
        Action::Serve => serve(&state),
    }
}

struct State {
    dir: PathBuf,
}

impl State {
    fn new(dir: PathBuf) -> State {
        State { dir }
    }
    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }
    fn limited_kubeconfig(&self) -> PathBuf {
        self.dir.join("limited.kubeconfig")
    }
    fn pids(&self) -> PathBuf {
        self.dir.join("pids")
    }
    fn log(&self) -> PathBuf {
        self.dir.join("testenv.log")
    }

    /// `(serve, etcd, kube-apiserver, watchdog)` from the pid file, when the background process
    /// still runs.
    fn running(&self) -> Option<[u32; 4]> {
        let text = fs::read_to_string(self.pids()).ok()?;
        let pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|w| w.split_once('=').and_then(|(_, v)| v.parse().ok()))
            .collect();
        let pids: [u32; 4] = pids.try_into().ok()?;
        is_serve_process(pids[0]).then_some(pids)
    }

    fn print_exports(&self) {
        println!("export KUBECONFIG={}", self.kubeconfig().display());
    }

    fn clear(&self) {
        for path in [self.pids(), self.kubeconfig(), self.limited_kubeconfig()] {
            let _ = fs::remove_file(path);
        }
    }
}

fn is_serve_process(pid: u32) -> bool {
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == SERVE_ARG.as_bytes())
    })
}

fn process_alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

fn up(state: &State) -> Result<()> {
    if let Some(pids) = state.running() {
        eprintln!("testenv: already running (pid {})", pids[0]);
        state.print_exports();
        return Ok(());
    }
    state.clear();
    let log = fs::File::create(state.log())
        .with_context(|| format!("creating {}", state.log().display()))?;
    let mut child = Command::new(std::env::current_exe()?)
        .arg("--dir")
        .arg(&state.dir)
        .arg(SERVE_ARG)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: a Ctrl-C in this terminal must not stop it.
        .process_group(0)
        .spawn()
        .context("starting the background process")?;
    eprintln!(
        "testenv: starting etcd and kube-apiserver (log: {})",
        state.log().display()
    );
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if state.running().is_some() {
            break;
        }
        if let Some(status) = child.try_wait()? {
            let log = fs::read_to_string(state.log()).unwrap_or_default();
            bail!("the background process exited with {status}:\n{log}");
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            bail!(
                "not ready after {START_TIMEOUT:?}; see {}",
                state.log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "testenv: running; stop it with `just testenv-down`. Limited user: {}",
        state.limited_kubeconfig().display()
    );
    state.print_exports();
    Ok(())
}

fn serve(state: &State) -> Result<()> {
    let env = TestEnv::start()?;
    // The platform the sample automation works with: KubeVirt, CDI and OVN-Kubernetes CRDs, and
    // a fake KubeVirt that runs the VirtualMachines the playbooks create while this process lives.
    env.install_platform()?;
    let kubevirt = FakeKubeVirt::start_on_thread(env.kubeconfig_yaml(), "");
    fs::copy(env.kubeconfig_path(), state.kubeconfig())?;
    fs::copy(env.limited_kubeconfig_path(), state.limited_kubeconfig())?;
    let [etcd, apiserver, watchdog] = env.pids();
    // Written last, via a rename: its presence means "ready".
    let tmp = state.dir.join("pids.tmp");
    fs::write(
        &tmp,
        format!(
            "serve={} etcd={etcd} kube-apiserver={apiserver} watchdog={watchdog}\n",
            std::process::id()
        ),
    )?;
    fs::rename(&tmp, state.pids())?;
    eprintln!(
        "testenv: {} ready; environment directory {}",
        env.server_url(),
        env.dir().display()
    );

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        anyhow::Ok(())
    })?;
    eprintln!("testenv: stopping");
    drop(kubevirt);
    drop(env);
    state.clear();
    Ok(())
}

fn down(state: &State) -> Result<()> {
    let Some([serve, etcd, apiserver, _]) = state.running() else {
        eprintln!("testenv: not running");
        state.clear();
        return Ok(());
    };
    signal(serve, "TERM")?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while process_alive(serve) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if process_alive(serve) {
        eprintln!("testenv: pid {serve} did not stop; killing it");
        signal(serve, "KILL")?;
    }
    // The background process (or, if it was killed, its watchdog) stops the servers.
    let deadline = Instant::now() + Duration::from_secs(10);
    while [etcd, apiserver].iter().any(|p| process_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    state.clear();
    let left: Vec<u32> = [etcd, apiserver]
        .into_iter()
        .filter(|p| process_alive(*p))
        .collect();
    if !left.is_empty() {
        bail!("processes still running: {left:?}");
    }
    eprintln!("testenv: stopped");
    Ok(())
}

fn status(state: &State) -> Result<()> {
    match state.running() {
        Some([serve, etcd, apiserver, watchdog]) => {
            eprintln!(
                "testenv: running (testenv {serve}, etcd {etcd}, kube-apiserver {apiserver}, watchdog {watchdog})"
            );
            state.print_exports();
            Ok(())
        }
        None => bail!("not running"),
    }
}

fn signal(pid: u32, name: &str) -> Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    if !status.success() && process_alive(pid) {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}
