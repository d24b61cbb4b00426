//! Children started through the harness do not outlive the test process, however it ends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudkit_test_support::{ChildProcess, run_dir};

/// Set by [`a_killed_test_process_leaves_no_child_behind`] for the helper it kills.
const HELPER_VAR: &str = "CLOUDKIT_SUPPORT_KILL_HELPER";

/// PIDs of the live (not zombie) members of process group `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // After the command name: state, ppid, pgrp, ...
        let rest: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        if rest.len() > 2 && rest[0] != "Z" && rest[2] == pgid.to_string() {
            members.push(pid);
        }
    }
    members
}

#[test]
fn a_killed_test_process_leaves_no_child_behind() {
    let mut helper = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "kill_helper_starts_a_child_group_and_waits",
            "--ignored",
            "--nocapture",
        ])
        .env(HELPER_VAR, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = helper.stdout.take().unwrap();
    let line = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find(|l| l.starts_with("group "))
        .unwrap_or_default();
    let pgid: u32 = line
        .strip_prefix("group ")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("the helper did not report its child: {line:?}"));
    // The child and the grandchild it started in the background.
    let start = Instant::now();
    while group_members(pgid).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "no grandchild");
        std::thread::sleep(Duration::from_millis(20));
    }

    helper.kill().unwrap(); // SIGKILL: no destructor runs, only the watchdog can clean up
    helper.wait().unwrap();
    let start = Instant::now();
    loop {
        let left = group_members(pgid);
        if left.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still alive: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Not a test on its own: the process that [`a_killed_test_process_leaves_no_child_behind`]
/// starts and kills.
#[test]
#[ignore = "helper process for a_killed_test_process_leaves_no_child_behind"]
fn kill_helper_starts_a_child_group_and_waits() {
    if std::env::var_os(HELPER_VAR).is_none() {
        return;
    }
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "sleep 300 & sleep 300"]);
    let child = ChildProcess::spawn("sleeper", cmd, &run_dir().join("sleeper.log")).unwrap();
    println!("group {}", child.pid());
    std::thread::sleep(Duration::from_secs(120));
    drop(child);
}

#[test]
fn dropping_a_child_kills_its_whole_group() {
    let mut cmd = Command::new("bash");
    cmd.args(["-c", "sleep 300 & sleep 300"]);
    let child = ChildProcess::spawn("dropped", cmd, &run_dir().join("dropped.log")).unwrap();
    let pgid = child.pid();
    let start = Instant::now();
    while group_members(pgid).len() < 2 {
        assert!(start.elapsed() < Duration::from_secs(10), "no grandchild");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(child);
    let start = Instant::now();
    while !group_members(pgid).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still alive: {:?}",
            group_members(pgid)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
