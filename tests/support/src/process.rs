//! Child processes with a log file, in their own process group, guarded by the test
//! environment's watchdog so that none outlives the test process.

use std::fs::File;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A port on 127.0.0.1 that was free a moment ago.
///
/// # Panics
///
/// When no port can be bound (the loopback interface is unusable).
#[allow(clippy::panic)]
pub fn free_port() -> u16 {
    match cloudkit_testenv::free_port() {
        Ok(port) => port,
        Err(e) => panic!("{e}"),
    }
}

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    here.canonicalize().unwrap_or(here)
}

/// A directory for this test process's logs and files, `target/test-runs/<pid>/`, kept after
/// the run for inspection until a later run finds its process gone.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = workspace_root().join("target/test-runs");
        for entry in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.parse::<u32>().is_ok() && !Path::new("/proc").join(&name).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let dir = base.join(std::process::id().to_string());
        // A directory that cannot be created shows up as a failure to create the first log.
        let _ = std::fs::create_dir_all(&dir);
        dir
    })
}

/// A child process in its own process group, with stdout and stderr in a log file. Dropping it
/// kills the group.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    child: Child,
    log: PathBuf,
    reaped: Option<ExitStatus>,
}

impl ChildProcess {
    /// Starts `cmd` with its output in `log` (created or truncated).
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<ChildProcess> {
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
        }
        let out =
            File::create(log).map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let err = out
            .try_clone()
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
        cmd.stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let child = cmd
            .spawn()
            .map_err(|e| Error::io(format!("starting {name} ({:?})", cmd.get_program()), e))?;
        cloudkit_testenv::guard_process_group(child.id());
        Ok(ChildProcess {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
            reaped: None,
        })
    }

    /// The name given at the start (used in diagnostics).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Process id (and process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status, once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.reaped.is_none() {
            self.reaped = self.child.try_wait().ok().flatten();
        }
        self.reaped
    }

    /// The whole log, without terminal colour codes.
    pub fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// The last `lines` lines of the log, headed by the process's name, PID and log path.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = self.log_text();
        let all: Vec<&str> = text.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "--- {} (pid {}, {}), last {} lines ---\n{}",
            self.name,
            self.pid(),
            self.log.display(),
            all.len() - start,
            all[start..].join("\n")
        )
    }

    fn signal_group(&self, signal: rustix::process::Signal) {
        if let Some(pid) = i32::try_from(self.pid())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pid, signal);
        }
    }

    /// SIGKILL to the whole group, as a crash or an OOM kill would, and reap.
    pub fn kill(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        self.signal_group(rustix::process::Signal::KILL);
        self.reaped = self.child.wait().ok();
        cloudkit_testenv::forget_process_group(self.pid());
    }

    /// SIGTERM, then SIGKILL after `grace`; the exit status when it exited by itself. Blocks
    /// the thread: see [`ChildProcess::stop`] for async code.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            self.signal_group(rustix::process::Signal::TERM);
            let start = Instant::now();
            while self.exited().is_none() && start.elapsed() < grace {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let status = self.exited();
        self.kill();
        status
    }

    /// [`ChildProcess::terminate`] without blocking the runtime's thread while it waits.
    pub async fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.exited().is_none() {
            self.signal_group(rustix::process::Signal::TERM);
            let start = Instant::now();
            while self.exited().is_none() && start.elapsed() < grace {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let status = self.exited();
        self.kill();
        status
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `s` without ANSI escape sequences (colours).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
