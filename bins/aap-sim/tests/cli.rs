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
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let url = first
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {first:?}"))
        .to_owned();
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

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{exit:?}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
