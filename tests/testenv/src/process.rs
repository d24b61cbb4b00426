//! Server processes and the watchdog that outlives the test process to clean up after it.
//!
//! A static environment is never dropped, a test may panic and a test binary may be killed, yet
//! no etcd or kube-apiserver may survive the run. Each environment therefore starts a small bash
//! watchdog whose stdin is a pipe held open by this process only. The kernel closes the pipe when
//! this process goes away, however it goes away (including SIGKILL), and the watchdog then kills
//! the servers by PID and removes the environment directory. `PR_SET_PDEATHSIG` would not do: it
//! fires when the *thread* that spawned the child exits, and the test harness runs tests on
//! short-lived threads.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Reads `pid N` / `pg N` / `forget N` lines until EOF, then kills what it still guards (a
/// process, or a whole process group) and removes the directory, when it was given one. It ignores the usual termination signals so that a Ctrl-C sent to the whole
/// process group does not stop it before it has cleaned up.
const WATCHDOG_SCRIPT: &str = r#"
trap '' INT HUP TERM QUIT PIPE
dir=$1 keep=$2
pids=()
groups=()
while read -r word arg; do
  case $word in
    pid) pids+=("$arg") ;;
    pg) groups+=("$arg") ;;
    forget)
      rest=()
      for p in "${pids[@]}"; do [ "$p" = "$arg" ] || rest+=("$p"); done
      pids=("${rest[@]}")
      rest=()
      for g in "${groups[@]}"; do [ "$g" = "$arg" ] || rest+=("$g"); done
      groups=("${rest[@]}") ;;
  esac
done
for g in "${groups[@]}"; do kill -KILL -- "-$g" 2>/dev/null; done
alive() {
  local st
  [ -r "/proc/$1/stat" ] || return 1
  read -r _ _ st _ < "/proc/$1/stat" 2>/dev/null || return 1
  [ "$st" != Z ]
}
if [ "${#pids[@]}" -gt 0 ]; then
  kill -KILL "${pids[@]}" 2>/dev/null
  for ((i = 0; i < 100; i++)); do
    any=0
    for p in "${pids[@]}"; do if alive "$p"; then any=1; fi; done
    [ "$any" = 0 ] && break
    sleep 0.05
  done
fi
if [ -z "$dir" ]; then
  :
elif [ "$keep" = 1 ]; then
  echo "cloudkit-testenv: kept $dir" >&2
else
  rm -rf -- "$dir"
fi
"#;

/// The watchdog process of one environment.
#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog for `dir`; with `keep` it leaves the directory in place (for
    /// debugging a failed run).
    pub(crate) fn spawn(dir: &Path, keep: bool) -> Result<Watchdog> {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("cloudkit-testenv-watchdog")
            .arg(dir)
            .arg(if keep { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            // Only the "kept" notice goes here; the servers' output goes to their log files.
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| Error::io("starting the watchdog (bash)", e))?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// From now on the watchdog kills the process group `pgid` when this process is gone.
    pub(crate) fn guard_group(&mut self, pgid: u32) -> Result<()> {
        self.send(&format!("pg {pgid}"))
    }

    /// From now on the watchdog kills `pid` when this process is gone.
    pub(crate) fn guard(&mut self, pid: u32) -> Result<()> {
        self.send(&format!("pid {pid}"))
    }

    /// `pid` (a process or a process group) has been killed and reaped here; the watchdog must not kill a later process that
    /// reuses the number.
    pub(crate) fn forget(&mut self, pid: u32) {
        let _ = self.send(&format!("forget {pid}"));
    }

    fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().ok_or_else(|| {
            Error::io(
                "talking to the watchdog",
                std::io::Error::other("already released"),
            )
        })?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| Error::io("talking to the watchdog", e))
    }

    /// PID of the watchdog.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Lets the watchdog clean up now and waits (bounded) for it to finish.
    pub(crate) fn release(&mut self) {
        drop(self.stdin.take());
        if wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Watchdog {
    // Also on early-return paths of the start-up; a second call does nothing.
    fn drop(&mut self) {
        self.release();
    }
}

/// A server process whose output goes to a log file.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) name: &'static str,
    child: Child,
    pub(crate) log: PathBuf,
    reaped: bool,
    program: PathBuf,
    args: Vec<String>,
}

impl Server {
    /// Starts `program args...` with stdout and stderr in `log`, and puts it under the
    /// watchdog's guard before anything else can fail.
    pub(crate) fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        log: PathBuf,
        watchdog: &mut Watchdog,
    ) -> Result<Server> {
        let out =
            File::create(&log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let child = start(program, args, &log, out)?;
        let mut server = Server {
            name,
            child,
            log,
            reaped: false,
            program: program.to_path_buf(),
            args: args.to_vec(),
        };
        if let Err(e) = watchdog.guard(server.pid()) {
            server.kill(watchdog);
            return Err(e);
        }
        Ok(server)
    }

    /// Starts the process again with the same arguments after [`Server::kill`] (the log is
    /// appended to). Does nothing while it runs.
    pub(crate) fn respawn(&mut self, watchdog: &mut Watchdog) -> Result<()> {
        if !self.reaped {
            return Ok(());
        }
        let out = File::options()
            .append(true)
            .create(true)
            .open(&self.log)
            .map_err(|e| Error::io(format!("opening {}", self.log.display()), e))?;
        self.child = start(&self.program, &self.args, &self.log, out)?;
        self.reaped = false;
        if let Err(e) = watchdog.guard(self.pid()) {
            self.kill(watchdog);
            return Err(e);
        }
        Ok(())
    }

    /// Whether the process has been killed (and not started again).
    pub(crate) fn is_stopped(&self) -> bool {
        self.reaped
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, when the process has exited.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills (SIGKILL: the data is throw-away) and reaps the process.
    pub(crate) fn kill(&mut self, watchdog: &mut Watchdog) {
        if self.reaped {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
        watchdog.forget(self.pid());
    }

    /// The last `lines` lines of the log, headed by the server name.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- last {} lines of {} ({}) ---\n{}",
            all.len() - start,
            self.name,
            self.log.display(),
            all[start..].join("\n")
        )
    }
}

/// Starts `program args...` with stdout and stderr in `out` (the file at `log`).
fn start(program: &Path, args: &[String], log: &Path, out: File) -> Result<Child> {
    let err = out
        .try_clone()
        .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", program.display()), e))
}

/// Waits for `child` up to `timeout`; `None` when it is still running.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => return None,
        }
    }
}
