//! Real automation for the end-to-end tests: the Python venv with ansible-rulebook and
//! ansible-playbook, Java 17, and ansible-rulebook running `examples/automation/rulebook.yml`.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::process::{ChildProcess, free_port, run_dir, workspace_root};

/// How long ansible-rulebook may take to answer on its webhook.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// The token the rulebook's webhook requires.
pub const WEBHOOK_TOKEN: &str = "e2e-webhook-token-91b7";
/// The HMAC secret the rulebook's webhook checks signatures with.
pub const WEBHOOK_HMAC_SECRET: &str = "e2e-webhook-hmac-4e02";

/// The Python venv with ansible-rulebook, ansible-playbook and the kubernetes package, and Java 17.
#[derive(Debug)]
pub struct Automation {
    /// The venv directory.
    pub venv: PathBuf,
    /// JAVA_HOME for ansible-rulebook.
    pub java_home: PathBuf,
}

impl Automation {
    pub fn bin(&self, name: &str) -> PathBuf {
        self.venv.join("bin").join(name)
    }

    pub fn python(&self) -> PathBuf {
        self.bin("python")
    }

    /// PATH with the venv first (ansible-runner looks up ansible-playbook on PATH).
    pub fn path_var(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        format!(
            "{}:{}/bin:{rest}",
            self.venv.join("bin").display(),
            self.java_home.display()
        )
    }
}

/// The automation prerequisites; fails the test (never skips it) when they are missing.
///
/// # Panics
///
/// When they are missing: the message says how to install them.
#[allow(clippy::panic)]
pub fn automation() -> &'static Automation {
    static AUTOMATION: OnceLock<Result<Automation, String>> = OnceLock::new();
    match AUTOMATION.get_or_init(find_automation) {
        Ok(a) => a,
        Err(e) => panic!("{e}"),
    }
}

fn find_automation() -> Result<Automation, String> {
    let venv = std::env::var_os("CLOUDKIT_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/cloudkit/venv")
        });
    let java_home = std::env::var_os("CLOUDKIT_JAVA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/jvm/java-17-openjdk-amd64"));
    let a = Automation { venv, java_home };
    let mut missing = Vec::new();
    for tool in ["ansible-rulebook", "ansible-playbook", "python"] {
        if !a.bin(tool).exists() {
            missing.push(format!("{}", a.bin(tool).display()));
        }
    }
    if missing.is_empty() {
        let ok = Command::new(a.python())
            .args(["-c", "import kubernetes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(format!(
                "the kubernetes Python package in {}",
                a.venv.display()
            ));
        }
    }
    if !a.java_home.join("bin/java").exists() {
        missing.push(format!(
            "Java 17 at {} (package openjdk-17-jdk-headless; ansible-rulebook needs it)",
            a.java_home.display()
        ));
    }
    if missing.is_empty() {
        Ok(a)
    } else {
        Err(format!(
            "the end-to-end tests need the Python venv with ansible-rulebook and Java 17; missing: {}.\n\
             Run `hack/python-venv.sh` (as root it also installs Java; `./x test` runs it first). \
             CLOUDKIT_PYTHON_VENV and CLOUDKIT_JAVA_HOME select other locations.",
            missing.join(", ")
        ))
    }
}

/// ansible-rulebook running `examples/automation/rulebook.yml` on a loopback port, with the
/// webhook's token and HMAC checks on.
#[derive(Debug)]
pub struct Rulebook {
    proc: Mutex<ChildProcess>,
    port: u16,
}

impl Rulebook {
    /// The webhook URL of `path` (`provision`, `deprovision`).
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.proc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_tail(lines)
    }

    /// Its whole log.
    pub fn log_text(&self) -> String {
        self.proc
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log_text()
    }

    /// The exit status, once it has exited.
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.proc.lock().unwrap_or_else(|e| e.into_inner()).exited()
    }
}

/// The rulebook shared by the tests of this binary (the playbooks act on whichever CI an event
/// names). Started on first use; a start that fails fails the test with the rulebook's log.
///
/// # Panics
///
/// When it cannot be started.
#[allow(clippy::panic)]
pub fn rulebook() -> &'static Rulebook {
    match RULEBOOK.get_or_init(|| start_rulebook("ansible-rulebook")) {
        Ok(r) => r,
        Err(e) => panic!("{e}"),
    }
}

static RULEBOOK: OnceLock<Result<Rulebook, String>> = OnceLock::new();

/// The shared rulebook, if it has been started.
pub(crate) fn shared_rulebook() -> Option<&'static Rulebook> {
    RULEBOOK.get().and_then(|r| r.as_ref().ok())
}

/// Starts ansible-rulebook; retried with another port when the port was taken meanwhile.
pub fn start_rulebook(name: &str) -> Result<Rulebook, String> {
    let automation = automation();
    let env = cloudkit_testenv::try_shared().map_err(|e| e.to_string())?;
    let examples = workspace_root().join("examples/automation");
    let mut last_error = String::new();
    for attempt in 1..=3 {
        let port = free_port();
        let vars = run_dir().join(format!("{name}-vars.yml"));
        std::fs::write(
            &vars,
            format!(
                "webhook_host: 127.0.0.1\nwebhook_port: {port}\nwebhook_token: {WEBHOOK_TOKEN}\n\
                 webhook_hmac_secret: {WEBHOOK_HMAC_SECRET}\nautomation_dir: {}\npython_interpreter: {}\n",
                examples.display(),
                automation.python().display()
            ),
        )
        .map_err(|e| format!("writing {}: {e}", vars.display()))?;
        let tmp = run_dir().join(format!("{name}-tmp"));
        std::fs::create_dir_all(&tmp).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(automation.bin("ansible-rulebook"));
        cmd.arg("--rulebook")
            .arg(examples.join("rulebook.yml"))
            .arg("--inventory")
            .arg(examples.join("inventory.yml"))
            .arg("--vars")
            .arg(&vars)
            .current_dir(run_dir())
            .env("PATH", automation.path_var())
            .env("JAVA_HOME", &automation.java_home)
            .env("K8S_AUTH_KUBECONFIG", env.kubeconfig_path())
            .env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_LOCAL_TEMP", &tmp)
            .env("ANSIBLE_HOME", &tmp)
            .env("TMPDIR", &tmp)
            .env_remove("KUBECONFIG");
        let attempt_name = format!("{name}-{attempt}");
        let log = run_dir().join(format!("{attempt_name}.log"));
        let mut proc = ChildProcess::spawn(&attempt_name, cmd, &log).map_err(|e| e.to_string())?;
        let start = Instant::now();
        loop {
            if webhook_answers(port) {
                return Ok(Rulebook {
                    proc: Mutex::new(proc),
                    port,
                });
            }
            if let Some(status) = proc.exited() {
                last_error = format!(
                    "ansible-rulebook exited with {status} before its webhook answered\n{}",
                    proc.log_tail(60)
                );
                // Only a port taken meanwhile is worth another attempt.
                if proc
                    .log_text()
                    .to_lowercase()
                    .contains("address already in use")
                {
                    break;
                }
                return Err(last_error);
            }
            if start.elapsed() > START_DEADLINE {
                let tail = proc.log_tail(60);
                proc.kill();
                return Err(format!(
                    "ansible-rulebook's webhook did not answer on port {port} within {START_DEADLINE:?}\n{tail}"
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Err(last_error)
}

/// The webhook is up when an unauthenticated POST gets its 401.
fn webhook_answers(port: u16) -> bool {
    use std::io::Read as _;
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!(
        "POST /ready HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 401")
}
