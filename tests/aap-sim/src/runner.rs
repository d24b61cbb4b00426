//! Runner mode: the jobs of a template with a [`RunnerSpec`] run a real `ansible-playbook`.
//!
//! Each job gets a task of its own. It waits for a slot (a semaphore bounds the processes
//! running at once, and jobs get slots in launch order; the job stays `pending` meanwhile),
//! turns `waiting` while it writes the
//! applied extra vars to a JSON file in a temporary directory of its own, starts
//! `ansible-playbook` there in a new process group, turns `running`, captures the output, and
//! ends the job from the process: `successful` on exit 0, `failed` otherwise (the last lines of
//! output as `result_traceback`), `canceled` after a cancel request, `error` when the process
//! cannot be started.
//!
//! Processes do not outlive the simulator. A cancel sends SIGINT to the process group (Ansible
//! stops its workers and exits) and SIGKILL after a grace period. Ansible's workers start
//! sessions of their own, so the simulator also follows the process tree (`/proc`) and signals
//! the groups of the leader's descendants. When the server shuts down every process gets SIGTERM,
//! then SIGKILL; when the simulator is dropped, or a job's task is dropped with its runtime, the
//! processes get SIGKILL at once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{Notify, Semaphore, watch};

use crate::config::RunnerSpec;
use crate::jobs::{AwxStatus, Job};
use crate::state::{Shared, Stats, lock};

/// The environment variable naming the Python venv of `hack/python-venv.sh`.
pub const VENV_ENV: &str = "CLOUDKIT_PYTHON_VENV";

/// The venv whose `bin/ansible-playbook` runs playbooks unless a [`RunnerSpec`] names another
/// program: `$CLOUDKIT_PYTHON_VENV`, else `~/.cache/cloudkit/venv` (what `hack/python-venv.sh`
/// creates).
pub fn default_venv() -> Option<PathBuf> {
    match std::env::var_os(VENV_ENV) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(|h| PathBuf::from(h).join(".cache/cloudkit/venv")),
    }
}

/// The `ansible-playbook` program a runner uses, or why there is none.
pub fn ansible_playbook(spec: &RunnerSpec) -> Result<PathBuf, String> {
    let program = match &spec.ansible_playbook {
        Some(p) => p.clone(),
        None => default_venv()
            .ok_or_else(|| {
                format!("no ansible-playbook configured and neither {VENV_ENV} nor HOME is set")
            })?
            .join("bin/ansible-playbook"),
    };
    if program.is_file() {
        Ok(program)
    } else if spec.ansible_playbook.is_some() {
        Err(format!(
            "ansible-playbook {} does not exist",
            program.display()
        ))
    } else {
        Err(format!(
            "ansible-playbook {} does not exist: create the Python venv with hack/python-venv.sh, \
             point {VENV_ENV} at another one, or configure the runner's ansible_playbook",
            program.display()
        ))
    }
}

/// The interpreter passed as `ansible_python_interpreter`: the configured one, else the `python`
/// next to `ansible-playbook` when there is one.
fn python_interpreter(spec: &RunnerSpec, program: &Path) -> Option<PathBuf> {
    if let Some(p) = &spec.python {
        return Some(p.clone());
    }
    let dir = program.parent()?;
    ["python", "python3"]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
}

/// Output kept per job; older output is dropped beyond this.
const OUTPUT_LIMIT: usize = 4 << 20;

/// Lines of output in the `result_traceback` of a failed job.
const TRACEBACK_LINES: usize = 20;

/// The captured output of a job's process (stdout and stderr, interleaved by line).
#[derive(Debug, Default)]
pub(crate) struct Output {
    text: String,
    dropped: usize,
}

impl Output {
    fn push(&mut self, chunk: &str) {
        self.text.push_str(chunk);
        if self.text.len() > OUTPUT_LIMIT {
            let mut cut = self.text.len() - OUTPUT_LIMIT * 3 / 4;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
            self.dropped += cut;
        }
    }

    fn text(&self) -> String {
        if self.dropped == 0 {
            self.text.clone()
        } else {
            format!(
                "[{} bytes of earlier output dropped]\n{}",
                self.dropped, self.text
            )
        }
    }
}

/// The runner part of a job.
#[derive(Clone, Debug)]
pub(crate) struct RunState {
    /// The playbook's file name (the job's `playbook` field).
    pub playbook: String,
    pub output: Arc<Mutex<Output>>,
    pub cancel: Arc<Notify>,
    pub cancel_requested: bool,
    /// The process id of `ansible-playbook` once started.
    pub pid: Option<u32>,
    /// The command line (the job's `job_args`).
    pub args: Vec<String>,
    /// The working directory (the job's `job_cwd`).
    pub cwd: String,
}

/// The `playbook` a template or job shows: the runner's playbook file name, or a stand-in for
/// templates whose jobs the simulator plays itself.
pub(crate) fn playbook_name(spec: Option<&RunnerSpec>) -> String {
    match spec {
        Some(spec) => spec.playbook.file_name().map_or_else(
            || spec.playbook.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        None => "simulated.yml".to_owned(),
    }
}

impl RunState {
    pub(crate) fn new(spec: &RunnerSpec) -> Self {
        Self {
            playbook: playbook_name(Some(spec)),
            output: Arc::default(),
            cancel: Arc::default(),
            cancel_requested: false,
            pid: None,
            args: Vec::new(),
            cwd: String::new(),
        }
    }

    pub(crate) fn request_cancel(&mut self) {
        if !self.cancel_requested {
            self.cancel_requested = true;
            self.cancel.notify_one();
        }
    }

    pub(crate) fn output_text(&self) -> String {
        lock(&self.output).text()
    }
}

/// One line of `/proc/<pid>/stat`, the fields the simulator needs.
#[derive(Clone, Copy, Debug)]
struct ProcStat {
    pid: i32,
    state: char,
    ppid: i32,
    pgrp: i32,
    session: i32,
}

impl ProcStat {
    /// Neither a zombie nor dead.
    fn lives(&self) -> bool {
        !matches!(self.state, 'Z' | 'X' | 'x')
    }
}

fn parse_stat(pid: i32, stat: &str) -> Option<ProcStat> {
    // `pid (comm) state ppid pgrp session ...`; comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    Some(ProcStat {
        pid,
        state,
        ppid: fields.next()?.parse().ok()?,
        pgrp: fields.next()?.parse().ok()?,
        session: fields.next()?.parse().ok()?,
    })
}

fn processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        parse_stat(pid, &stat)
    })
    .collect()
}

/// The simulator's own process group and session, as `/proc/self/stat` gives them. Either is 0
/// when its leader lives outside this PID namespace (a container, `unshare --pid`), which the
/// `getpgrp`/`getsid` wrappers do not allow for, so they are read from `/proc` instead.
fn own_group_and_session() -> (i32, i32) {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| parse_stat(0, &stat))
        .map_or((0, 0), |me| (me.pgrp, me.session))
}

/// The process groups of one job: the leader's (it was started as a group leader), and those of
/// its descendants, learnt while they can still be found.
#[derive(Debug)]
pub(crate) struct ProcessTree {
    leader: i32,
    groups: Mutex<BTreeSet<i32>>,
}

impl ProcessTree {
    fn new(leader: i32) -> Self {
        Self {
            leader,
            groups: Mutex::new(BTreeSet::from([leader])),
        }
    }

    /// Adds the groups of the leader's descendants, and of processes in a group or session
    /// already known (descendants whose parent has gone).
    fn refresh(&self) {
        let procs = processes();
        let mut children: BTreeMap<i32, Vec<ProcStat>> = BTreeMap::new();
        for p in &procs {
            children.entry(p.ppid).or_default().push(*p);
        }
        let (own_group, own_session) = own_group_and_session();
        let mut groups = lock(&self.groups);
        let mut stack = vec![self.leader];
        let mut seen = BTreeSet::new();
        while let Some(pid) = stack.pop() {
            for child in children.get(&pid).into_iter().flatten() {
                if seen.insert(child.pid) {
                    groups.insert(child.pgrp);
                    stack.push(child.pid);
                }
            }
        }
        let known: BTreeSet<i32> = groups.clone();
        for p in &procs {
            if known.contains(&p.pgrp) || known.contains(&p.session) {
                groups.insert(p.pgrp);
            }
        }
        groups.retain(|g| *g > 1 && *g != own_group && *g != own_session);
    }

    /// Sends `signal` to the leader's group only.
    fn signal_leader(&self, signal: Signal) {
        self.refresh();
        if let Some(pid) = Pid::from_raw(self.leader) {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// Sends `signal` to every known group.
    fn signal_all(&self, signal: Signal) {
        self.refresh();
        for g in lock(&self.groups).iter() {
            if let Some(pid) = Pid::from_raw(*g) {
                let _ = rustix::process::kill_process_group(pid, signal);
            }
        }
    }

    /// Whether a process of a known group still lives.
    fn any_alive(&self) -> bool {
        let groups = lock(&self.groups).clone();
        processes()
            .iter()
            .any(|p| p.lives() && groups.contains(&p.pgrp))
    }

    /// SIGKILL to every known group, then waits (up to `limit`) until their processes are gone.
    async fn kill_and_wait(&self, limit: Duration) {
        self.signal_all(Signal::KILL);
        let deadline = Instant::now() + limit;
        while self.any_alive() {
            if Instant::now() >= deadline {
                tracing::warn!(leader = self.leader, "processes survive SIGKILL");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The runner processes of one simulator.
#[derive(Debug)]
pub(crate) struct Runners {
    semaphore: Arc<Semaphore>,
    /// Jobs waiting for a slot; the lowest id is served first.
    queue: watch::Sender<BTreeSet<u64>>,
    /// Job tasks not yet ended (launched ones included before they first run).
    tasks: watch::Sender<usize>,
    cancel_grace: Duration,
    kubeconfig: Option<PathBuf>,
    live: Mutex<BTreeMap<u64, Arc<ProcessTree>>>,
    shutdown: watch::Sender<bool>,
}

impl Runners {
    pub(crate) fn new(
        concurrency: usize,
        cancel_grace: Duration,
        kubeconfig: Option<PathBuf>,
    ) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(concurrency.max(1))),
            queue: watch::Sender::new(BTreeSet::new()),
            tasks: watch::Sender::new(0),
            cancel_grace,
            kubeconfig,
            live: Mutex::default(),
            shutdown: watch::Sender::new(false),
        }
    }

    /// Queues a job for a slot (at launch, so that slots go in launch order). The ticket goes
    /// into the job's task; the task counts as running until the ticket is dropped.
    pub(crate) fn enqueue(self: &Arc<Self>, job: u64) -> Ticket {
        self.queue.send_modify(|q| {
            q.insert(job);
        });
        self.tasks.send_modify(|n| *n += 1);
        Ticket {
            runners: Arc::clone(self),
            job,
        }
    }

    /// Waits for the job's turn, then for a slot.
    async fn slot(&self, job: u64) -> Result<tokio::sync::OwnedSemaphorePermit, String> {
        let mut queue = self.queue.subscribe();
        queue
            .wait_for(|q| q.first().is_none_or(|first| *first >= job))
            .await
            .map_err(|e| e.to_string())?;
        Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .map_err(|e| e.to_string())
    }

    /// SIGKILL to every process of every job, without waiting.
    pub(crate) fn kill_all(&self) {
        for tree in lock(&self.live).values() {
            tree.signal_all(Signal::KILL);
        }
    }

    /// Stops every job for good: running ones get SIGTERM, then SIGKILL after the grace period;
    /// jobs not yet started never start. Returns once every job has ended.
    pub(crate) async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let limit = self.cancel_grace + Duration::from_secs(3);
        let mut tasks = self.tasks.subscribe();
        if tokio::time::timeout(limit, tasks.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!("runner jobs still ending after {limit:?}; killing their processes");
        }
        self.kill_all();
    }
}

/// A job's place in the queue and in the count of tasks.
#[derive(Debug)]
pub(crate) struct Ticket {
    runners: Arc<Runners>,
    job: u64,
}

impl Ticket {
    /// Leaves the queue (the job has its slot, or waits no more).
    fn dequeue(&self) {
        self.runners.queue.send_modify(|q| {
            q.remove(&self.job);
        });
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.dequeue();
        self.runners.tasks.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Kills a job's processes when its task ends, however it ends (also when the runtime drops it).
struct LiveGuard {
    runners: Arc<Runners>,
    job: u64,
    tree: Arc<ProcessTree>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.tree.signal_all(Signal::KILL);
        lock(&self.runners.live).remove(&self.job);
    }
}

/// What a job's task needs from the launch.
#[derive(Debug)]
pub(crate) struct Launch {
    pub job: u64,
    pub template_id: u64,
    pub template_name: String,
    pub spec: RunnerSpec,
    /// The applied extra vars.
    pub vars: Map<String, Value>,
    pub cancel: Arc<Notify>,
    pub output: Arc<Mutex<Output>>,
    pub ticket: Ticket,
}

/// Runs `f` on the job and the counters; `None` when the simulator is gone.
fn update<R>(
    shared: &Weak<Shared>,
    id: u64,
    f: impl FnOnce(Option<&mut Job>, &mut Stats, Instant) -> R,
) -> Option<R> {
    let shared = shared.upgrade()?;
    let now = Instant::now();
    let mut inner = lock(&shared.inner);
    let inner = &mut *inner;
    Some(f(inner.jobs.get_mut(&id), &mut inner.stats, now))
}

fn finish(
    shared: &Weak<Shared>,
    id: u64,
    status: AwxStatus,
    traceback: String,
    explanation: String,
) {
    if status == AwxStatus::Error {
        tracing::warn!(job = id, error = %explanation, "runner job could not run");
    } else {
        tracing::debug!(job = id, status = status.as_str(), "runner job ended");
    }
    update(shared, id, |job, _, now| {
        if let Some(job) = job {
            job.runner_finished(status, now, traceback, explanation);
        }
    });
}

/// The files and command line of one run.
struct Prepared {
    dir: tempfile::TempDir,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The variables AWX adds to every job's extra vars (the launch's own vars win).
fn meta_vars(launch: &Launch) -> Map<String, Value> {
    let mut vars = Map::new();
    for prefix in ["awx", "tower"] {
        for (k, v) in [
            ("job_id", json!(launch.job)),
            ("job_launch_type", json!("manual")),
            ("job_template_id", json!(launch.template_id)),
            ("job_template_name", json!(launch.template_name)),
            ("user_id", json!(1)),
            ("user_name", json!("admin")),
        ] {
            vars.insert(format!("{prefix}_{k}"), v);
        }
    }
    vars
}

fn has_inventory_arg(args: &[String]) -> bool {
    args.iter().any(|a| {
        a == "-i" || a.starts_with("--inventory") || (a.starts_with("-i") && !a.starts_with("--"))
    })
}

fn prepare(launch: &Launch, runners: &Runners) -> Result<Prepared, String> {
    let spec = &launch.spec;
    if !spec.playbook.is_file() {
        return Err(format!(
            "the playbook {} does not exist or is not a file",
            spec.playbook.display()
        ));
    }
    let program = ansible_playbook(spec)?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("aap-sim-job-{}-", launch.job))
        .tempdir()
        .map_err(|e| format!("creating the job's temporary directory: {e}"))?;
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();

    let mut vars = meta_vars(launch);
    vars.extend(launch.vars.clone());
    let vars_file = path("extra_vars.json");
    std::fs::write(&vars_file, Value::Object(vars).to_string())
        .map_err(|e| format!("writing {vars_file}: {e}"))?;

    let mut args = Vec::new();
    if !has_inventory_arg(&spec.extra_args) {
        let inventory = path("inventory");
        std::fs::write(&inventory, "localhost ansible_connection=local\n")
            .map_err(|e| format!("writing {inventory}: {e}"))?;
        args.extend(["-i".to_owned(), inventory]);
    }
    if let Some(python) = python_interpreter(spec, &program) {
        args.push("-e".to_owned());
        args.push(json!({"ansible_python_interpreter": python}).to_string());
    }
    args.extend(["-e".to_owned(), format!("@{vars_file}")]);
    args.extend(spec.extra_args.iter().cloned());
    args.push(spec.playbook.to_string_lossy().into_owned());

    let mut env: Vec<(String, String)> = [
        ("ANSIBLE_STDOUT_CALLBACK", "default"),
        ("ANSIBLE_NOCOLOR", "1"),
        ("ANSIBLE_FORCE_COLOR", "0"),
        ("ANSIBLE_RETRY_FILES_ENABLED", "False"),
        ("ANSIBLE_HOST_KEY_CHECKING", "False"),
        ("PYTHONUNBUFFERED", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.push(("ANSIBLE_LOCAL_TEMP".to_owned(), path("tmp")));
    env.push(("JOB_ID".to_owned(), launch.job.to_string()));
    if let Some(kubeconfig) = &runners.kubeconfig {
        env.push((
            "K8S_AUTH_KUBECONFIG".to_owned(),
            kubeconfig.to_string_lossy().into_owned(),
        ));
    }
    env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(Prepared {
        dir,
        program,
        args,
        env,
    })
}

async fn capture(reader: impl AsyncRead + Unpin, output: Arc<Mutex<Output>>) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => lock(&output).push(&String::from_utf8_lossy(&line)),
        }
    }
}

/// The `result_traceback` of a failed run: from the last error line Ansible printed, else the
/// last lines of output.
pub(crate) fn traceback(output: &str) -> String {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let is_error = |l: &&str| {
        let t = l.trim_start();
        t.starts_with("fatal:")
            || t.starts_with("failed:")
            || t.starts_with("ERROR!")
            || t.starts_with("[ERROR]")
    };
    let start = match lines.iter().rposition(is_error) {
        // The error line and what follows, up to the limit.
        Some(i) if lines.len() - i <= TRACEBACK_LINES => i,
        _ => lines.len().saturating_sub(TRACEBACK_LINES),
    };
    lines[start..].join("\n")
}

/// Why the process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    Exited,
    Canceled,
    TimedOut,
    Shutdown,
}

/// Runs one job to its end.
pub(crate) async fn run(shared: Weak<Shared>, runners: Arc<Runners>, launch: Launch) {
    let id = launch.job;
    let mut shutdown = runners.shutdown.subscribe();
    let permit = tokio::select! {
        permit = runners.slot(id) => match permit {
            Ok(p) => p,
            Err(e) => {
                finish(&shared, id, AwxStatus::Error, e.clone(), e);
                return;
            }
        },
        () = launch.cancel.notified() => {
            finish(&shared, id, AwxStatus::Canceled, String::new(), String::new());
            return;
        }
        _ = shutdown.wait_for(|s| *s) => {
            let msg = "The simulator shut down before the job started.".to_owned();
            finish(&shared, id, AwxStatus::Error, msg.clone(), msg);
            return;
        }
    };
    launch.ticket.dequeue();
    let canceled = update(&shared, id, |job, _, now| {
        job.is_none_or(|job| {
            job.runner_preparing(now);
            job.runner.as_ref().is_some_and(|r| r.cancel_requested)
        })
    });
    match canceled {
        None => return,
        Some(true) => {
            finish(
                &shared,
                id,
                AwxStatus::Canceled,
                String::new(),
                String::new(),
            );
            return;
        }
        Some(false) => {}
    }
    let prepared = match prepare(&launch, &runners) {
        Ok(p) => p,
        Err(msg) => {
            finish(&shared, id, AwxStatus::Error, msg.clone(), msg);
            return;
        }
    };
    let mut cmd = tokio::process::Command::new(&prepared.program);
    cmd.args(&prepared.args)
        .envs(prepared.env.iter().map(|(k, v)| (k, v)))
        .current_dir(prepared.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("starting {}: {e}", prepared.program.display());
            finish(&shared, id, AwxStatus::Error, msg.clone(), msg);
            return;
        }
    };
    let pid = child.id();
    let Some(tree) = pid
        .and_then(|p| i32::try_from(p).ok())
        .map(|p| Arc::new(ProcessTree::new(p)))
    else {
        // Only when the process has been reaped already, which nothing did.
        let msg = "the started ansible-playbook has no process id".to_owned();
        finish(&shared, id, AwxStatus::Error, msg.clone(), msg);
        return;
    };
    lock(&runners.live).insert(id, Arc::clone(&tree));
    let guard = LiveGuard {
        runners: Arc::clone(&runners),
        job: id,
        tree: Arc::clone(&tree),
    };
    let mut argv = vec![prepared.program.to_string_lossy().into_owned()];
    argv.extend(prepared.args.iter().cloned());
    let cwd = prepared.dir.path().to_string_lossy().into_owned();
    tracing::debug!(job = id, pid, command = ?argv, "runner job started");
    update(&shared, id, |job, stats, now| {
        stats.runner_processes += 1;
        stats.runner_running += 1;
        stats.runner_peak_running = stats.runner_peak_running.max(stats.runner_running);
        if let Some(job) = job {
            job.runner_started(now, pid, argv, cwd);
        }
    });
    let readers = [
        child
            .stdout
            .take()
            .map(|r| tokio::spawn(capture(r, Arc::clone(&launch.output)))),
        child
            .stderr
            .take()
            .map(|r| tokio::spawn(capture(r, Arc::clone(&launch.output)))),
    ];

    let timeout = launch.spec.timeout;
    let (end, exited) = tokio::select! {
        status = child.wait() => (End::Exited, Some(status)),
        () = launch.cancel.notified() => (End::Canceled, None),
        () = async {
            match timeout {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        } => (End::TimedOut, None),
        _ = shutdown.wait_for(|s| *s) => (End::Shutdown, None),
    };
    let exit: std::io::Result<ExitStatus> = match exited {
        Some(status) => status,
        None => {
            if end == End::Shutdown {
                tree.signal_all(Signal::TERM);
            } else {
                // Like Ctrl-C: Ansible stops its workers and says so in the output.
                tree.signal_leader(Signal::INT);
            }
            match tokio::time::timeout(runners.cancel_grace, child.wait()).await {
                Ok(status) => status,
                Err(_) => {
                    tracing::debug!(job = id, "still running after the grace period: SIGKILL");
                    tree.signal_all(Signal::KILL);
                    child.wait().await
                }
            }
        }
    };
    // Stragglers (which may hold the output open): the job ends once they are gone.
    tree.kill_and_wait(Duration::from_secs(2)).await;
    for reader in readers.into_iter().flatten() {
        let abort = reader.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), reader)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let output = lock(&launch.output).text();
    let (status, traceback, explanation) = match (end, exit) {
        (End::Canceled, _) => (AwxStatus::Canceled, String::new(), String::new()),
        (End::TimedOut, _) => (
            AwxStatus::Failed,
            traceback(&output),
            "Job terminated due to timeout".to_owned(),
        ),
        (End::Shutdown, _) => (
            AwxStatus::Error,
            traceback(&output),
            "The simulator shut down while the job ran; its process was terminated.".to_owned(),
        ),
        (End::Exited, Ok(s)) if s.success() => {
            (AwxStatus::Successful, String::new(), String::new())
        }
        (End::Exited, Ok(s)) => {
            let tb = traceback(&output);
            let explanation = match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
                (None, Some(sig)) => format!("ansible-playbook was killed by signal {sig}"),
                _ => String::new(),
            };
            let tb = if tb.is_empty() {
                format!("ansible-playbook exited with {s}")
            } else {
                tb
            };
            (AwxStatus::Failed, tb, explanation)
        }
        (End::Exited, Err(e)) => {
            let msg = format!("waiting for ansible-playbook: {e}");
            (AwxStatus::Error, msg.clone(), msg)
        }
    };
    // The processes are gone; clean up the files before the job reports its end, and free the
    // slot after: no more processes run at once than jobs are `running`.
    drop(prepared);
    update(&shared, id, |_, stats, _| {
        stats.runner_running = stats.runner_running.saturating_sub(1);
    });
    finish(&shared, id, status, traceback, explanation);
    drop(guard);
    drop(permit);
    drop(launch);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines() {
        let s = parse_stat(42, "42 (a (b) c) S 1 42 40 0 -1 4194560 ...").unwrap();
        assert_eq!((s.pid, s.ppid, s.pgrp, s.session), (42, 1, 42, 40));
        assert!(s.lives());
        assert!(!parse_stat(7, "7 (x) Z 1 7 7").unwrap().lives());
        assert!(parse_stat(1, "garbage").is_none());
        let me = std::process::id() as i32;
        assert!(processes().iter().any(|p| p.pid == me));
    }

    #[test]
    fn traceback_starts_at_the_error() {
        let out = "PLAY [x] ***\n\nTASK [a] ***\nok: [localhost]\n\nTASK [b] ***\n\
                   fatal: [localhost]: FAILED! => {\"msg\": \"boom\"}\n\nPLAY RECAP ***\n\
                   localhost : ok=1 failed=1\n";
        let tb = traceback(out);
        assert!(tb.starts_with("fatal: [localhost]: FAILED!"), "{tb}");
        assert!(tb.ends_with("failed=1"), "{tb}");
        let many: String = (0..50).map(|i| format!("line {i}\n")).collect();
        let tb = traceback(&many);
        assert_eq!(tb.lines().count(), TRACEBACK_LINES);
        assert!(tb.ends_with("line 49"));
    }

    #[test]
    fn output_keeps_the_tail() {
        let mut o = Output::default();
        let chunk = "x".repeat(1 << 20);
        for _ in 0..6 {
            o.push(&chunk);
        }
        assert!(o.text.len() <= OUTPUT_LIMIT);
        assert!(o.text().starts_with('['));
    }

    #[test]
    fn inventory_arguments() {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(has_inventory_arg(&v(&["-i", "hosts"])));
        assert!(has_inventory_arg(&v(&["--inventory=hosts"])));
        assert!(has_inventory_arg(&v(&["-ihosts"])));
        assert!(!has_inventory_arg(&v(&["-v", "-e", "x=1"])));
    }
}
