//! The binary: prints the bound URL first, serves the configured templates with flags and
//! environment variables, and exits cleanly on SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Kills the child when a test fails half-way.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serves_until_sigterm() {
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_aap-sim"))
            .args(["--listen", "127.0.0.1:0", "--token", "flag-token", "--fast"])
            .env(
                "AAP_SIM_TEMPLATES",
                "provision_vm:job:7,deprovision_vm:workflow:8",
            )
            .env("AAP_SIM_ERROR_STATUS", "503")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let url = listening_url(child);
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    let http = reqwest::Client::new();
    let get = |path: &str| {
        http.get(format!("{url}{path}"))
            .bearer_auth("flag-token")
            .send()
    };
    let names: serde_json::Value = get("/api/v2/unified_job_templates/")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(names["count"], 2, "{names}");
    let launched = http
        .post(format!(
            "{url}/api/controller/v2/workflow_job_templates/8/launch/"
        ))
        .bearer_auth("flag-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(launched.status(), 201);
    let faults: serde_json::Value = http
        .get(format!("{url}/_sim/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["error_status"], 503);
    assert_eq!(get("/api/v2/config/").await.unwrap().status(), 200);

    terminate(child).await;
}

#[test]
fn bad_flags_are_refused() {
    let out = Command::new(env!("CARGO_BIN_EXE_aap-sim"))
        .args(["--drop-rate", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("drop_rate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The URL the simulator prints on its first line (`listening on <url>`).
fn listening_url(child: &mut std::process::Child) -> String {
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_owned()
}

/// SIGTERM, then waits (up to 10 s) for a successful exit.
async fn terminate(child: &mut std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `pid` of every process whose command line contains `marker`.
fn pids_with(marker: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let state = stat[stat.rfind(')')? + 2..].chars().next()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (state != 'Z' && cmdline.contains(marker)).then_some(pid)
        })
        .collect()
}

#[tokio::test]
async fn runner_jobs_and_their_processes_end_with_the_server() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("play.yml");
    std::fs::write(&playbook, "- hosts: localhost\n  tasks: []\n").unwrap();
    // Stands in for ansible-playbook: prints its arguments, and sleeps when asked to (with a
    // child in a session of its own, as Ansible's workers are).
    let program = dir.path().join("ansible-playbook");
    std::fs::write(
        &program,
        "#!/bin/sh\necho \"args: $*\"\n\
         for a in \"$@\"; do case $a in @*) vars=${a#@};; esac; done\n\
         if grep -q sleep_please \"$vars\"; then setsid sleep 389 & sleep 389; fi\n",
    )
    .unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("simulator.log");
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_aap-sim"))
            .args(["--template", "play:job:5"])
            .arg("--runner")
            .arg(format!("play={}", playbook.display()))
            .arg("--ansible-playbook")
            .arg(&program)
            .args(["--runner-concurrency", "1"])
            .env("RUST_LOG", "cloudkit_aap_sim=debug,aap_sim=debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let child = &mut child.0;
    let url = listening_url(child);
    let http = reqwest::Client::new();
    let launch = |vars: serde_json::Value| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let a: serde_json::Value = http
                .post(format!("{url}/api/v2/job_templates/5/launch/"))
                .json(&serde_json::json!({ "extra_vars": vars }))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            a["id"].as_u64().unwrap()
        }
    };
    let job = |id: u64| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let j: serde_json::Value = http
                .get(format!("{url}/api/v2/jobs/{id}/"))
                .send()
                .await?
                .json()
                .await?;
            Ok::<_, reqwest::Error>(j)
        }
    };
    // A poll that meets a transport error (a pooled connection reused at the instant it closes)
    // polls again; the deadline still fails the test when the server stops answering.
    let wait = |id: u64, want: &'static str| {
        let log = log.clone();
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let j = job(id).await;
                if let Ok(j) = &j
                    && j["status"] == want
                {
                    return j.clone();
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "job {id} never became {want}: {j:?}\nsimulator log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    let quick = launch(serde_json::json!({"x": 1})).await;
    let j = wait(quick, "successful").await;
    assert_eq!(j["playbook"], "play.yml");
    let out = http
        .get(format!("{url}/api/v2/jobs/{quick}/stdout/?format=txt"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        out.contains("args: -i") && out.contains(&playbook.display().to_string()),
        "{out}"
    );

    let slow = launch(serde_json::json!({"sleep_please": true})).await;
    wait(slow, "running").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids_with("sleep 389").len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the stand-in never slept"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    terminate(child).await;
    assert_eq!(
        pids_with("sleep 389"),
        Vec::<u32>::new(),
        "orphans left behind"
    );
}
