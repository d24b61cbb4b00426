//! Fidelity with real AWX clients: `ansible-playbook` with the `awx.awx` collection
//! (`job_launch`, `job_wait`, `job_cancel`, `workflow_launch`) and ansible-rulebook's
//! `run_job_template`, against a simulator started in this process.
//!
//! They need the Python venv of `hack/python-venv.sh` (path: `CLOUDKIT_PYTHON_VENV`, default
//! `~/.cache/cloudkit/venv`); without it they fail and say how to create it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use cloudkit_aap_sim::{Phases, SimHandle, Simulator, TemplateSpec};
use common::*;

const JAVA_HOME_17: &str = "/usr/lib/jvm/java-17-openjdk-amd64";

fn venv() -> PathBuf {
    let venv = std::env::var_os("CLOUDKIT_PYTHON_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/cloudkit/venv")
        });
    for tool in ["ansible-playbook", "ansible-rulebook", "python"] {
        assert!(
            venv.join("bin").join(tool).exists(),
            "{} is missing: create the Python venv with the real Ansible clients by running \
             `hack/python-venv.sh` from the repository root (set CLOUDKIT_PYTHON_VENV to use \
             another location)",
            venv.join("bin").join(tool).display()
        );
    }
    venv
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn simulator() -> SimHandle {
    spawn(
        Simulator::builder()
            .template(TemplateSpec::job("provision_vm").with_phases(Phases::new(
                ms(300),
                ms(300),
                ms(600),
            )))
            .template(TemplateSpec::job("long_running").with_phases(Phases::new(
                ms(10),
                ms(10),
                Duration::from_secs(600),
            )))
            .template(TemplateSpec::job("quiet_template").with_ask_variables(false))
            .template(
                TemplateSpec::workflow("deprovision_vm").with_phases(Phases::new(
                    ms(100),
                    ms(100),
                    ms(300),
                )),
            ),
    )
    .await
}

async fn run(mut cmd: tokio::process::Command, what: &str) -> Output {
    cmd.kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(300), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within 300 s"))
        .unwrap_or_else(|e| panic!("starting {what}: {e}"))
}

fn show(out: &Output) -> String {
    format!(
        "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn log_lines(h: &SimHandle) -> Vec<String> {
    h.simulator()
        .requests()
        .iter()
        .map(|r| match &r.query {
            Some(q) => format!("{} {}?{} {}", r.method, r.path, q, r.status),
            None => format!("{} {} {}", r.method, r.path, r.status),
        })
        .collect()
}

const PLAYBOOK: &str = r#"
- hosts: localhost
  gather_facts: false
  module_defaults:
    group/awx.awx.controller:
      controller_host: "{{ sim_url }}"
      controller_oauthtoken: "{{ sim_token }}"
  tasks:
    - name: launch a job template by name
      awx.awx.job_launch:
        name: provision_vm
        extra_vars:
          cloudkit_launch_key: playbook-key
          ansible_eda: {event: {payload: {metadata: {name: vm-1, namespace: ns1}}}}
      register: launched

    - assert:
        that:
          - launched is changed
          - launched.id | int > 0
          - launched.status == 'pending'

    - name: wait for it
      awx.awx.job_wait:
        job_id: "{{ launched.id }}"
        interval: 0.2
        timeout: 60
      register: waited

    - assert:
        that:
          - waited.status == 'successful'
          - waited.started is truthy
          - waited.finished is truthy
          - waited.elapsed | float > 0

    - name: launch one that runs long
      awx.awx.job_launch:
        name: long_running
      register: long

    - name: cancel it
      awx.awx.job_cancel:
        job_id: "{{ long.id }}"
      register: canceled

    - assert:
        that: [canceled is changed]

    - name: wait for the canceled job (fails, as a canceled job counts as failed)
      awx.awx.job_wait:
        job_id: "{{ long.id }}"
        interval: 0.2
        timeout: 60
      register: waited_canceled
      ignore_errors: true

    - assert:
        that:
          - waited_canceled is failed
          - waited_canceled.status == 'canceled'

    - name: cancel it again (nothing to do)
      awx.awx.job_cancel:
        job_id: "{{ long.id }}"
      register: canceled_again

    - assert:
        that: [canceled_again is not changed]

    - name: cancel it again, insisting
      awx.awx.job_cancel:
        job_id: "{{ long.id }}"
        fail_if_not_running: true
      register: cancel_refused
      ignore_errors: true

    - assert:
        that: [cancel_refused is failed]

    - name: a failing job makes job_launch with wait fail
      awx.awx.job_launch:
        name: provision_vm
        extra_vars: {sim_outcome: failed, sim_running_seconds: 0.1}
        wait: true
        interval: 0.2
      register: failing
      ignore_errors: true

    - assert:
        that: [failing is failed]

    - name: extra vars are refused for a template that does not prompt for them
      awx.awx.job_launch:
        name: quiet_template
        extra_vars: {a: 1}
      register: refused
      ignore_errors: true

    - assert:
        that:
          - refused is failed
          - "'extra_vars' in (refused.errors | join(' '))"

    - name: a workflow, launched and waited for
      awx.awx.workflow_launch:
        name: deprovision_vm
        extra_vars: {cloudkit_launch_key: workflow-key}
        wait: true
        interval: 0.2
        timeout: 60
      register: workflow

    - assert:
        that:
          - workflow is changed
          - workflow.status == 'successful'

    - name: an unknown template
      awx.awx.job_launch:
        name: no_such_template
      register: unknown
      ignore_errors: true

    - assert:
        that:
          - unknown is failed
          - "'Unable to find job template' in unknown.msg"
"#;

async fn run_playbook(h: &SimHandle, base_url: &str) {
    let venv = venv();
    let dir = tempfile::tempdir().unwrap();
    let playbook = dir.path().join("fidelity.yml");
    std::fs::write(&playbook, PLAYBOOK).unwrap();
    let mut cmd = tokio::process::Command::new(venv.join("bin/ansible-playbook"));
    cmd.arg("-i")
        .arg("localhost,")
        .arg("-c")
        .arg("local")
        .arg(&playbook)
        .arg("-e")
        .arg(format!(
            "ansible_python_interpreter={}",
            venv.join("bin/python").display()
        ))
        .arg("-e")
        .arg(format!("sim_url={base_url}"))
        .arg("-e")
        .arg(format!("sim_token={TOKEN}"))
        .env("ANSIBLE_HOME", dir.path().join("ansible-home"))
        .env("ANSIBLE_LOCAL_TEMP", dir.path().join("tmp"))
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_FORCE_COLOR", "0")
        .env("ANSIBLE_DEPRECATION_WARNINGS", "0")
        .current_dir(dir.path());
    let out = run(cmd, "ansible-playbook").await;
    assert!(
        out.status.success(),
        "ansible-playbook failed against {base_url}\n{}\n--- simulator requests ---\n{}",
        show(&out),
        log_lines(h).join("\n")
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("You are running collection version"),
        "version warning:\n{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awx_collection_launch_wait_cancel() {
    let h = simulator().await;
    // controller_host is the server; the collection adds /api/v2/ itself.
    run_playbook(&h, h.base_url()).await;
    let stats = h.simulator().stats();
    assert_eq!(stats.launches_by_key.get("playbook-key"), Some(&1));
    assert_eq!(stats.launches_by_key.get("workflow-key"), Some(&1));
    assert_eq!(stats.launches_by_template.get("provision_vm"), Some(&2));
    assert_eq!(
        stats.launches_by_template.get("quiet_template"),
        None,
        "refused before launching"
    );
    assert_eq!(stats.cancels, 1);
    let log = log_lines(&h);
    let seen = |needle: &str| log.iter().any(|l| l.contains(needle));
    assert!(
        seen("GET /api/v2/job_templates/?name=provision_vm 200"),
        "{log:#?}"
    );
    assert!(seen("POST /api/v2/job_templates/1/launch/ 201"), "{log:#?}");
    assert!(seen("GET /api/v2/jobs/?id=1 200"), "{log:#?}");
    assert!(seen("POST /api/v2/jobs/2/cancel/ 202"), "{log:#?}");
    assert!(seen("GET /api/v2/jobs/2/cancel/ 200"), "{log:#?}");
    assert!(
        seen("POST /api/v2/workflow_job_templates/4/launch/ 201"),
        "{log:#?}"
    );
    assert!(
        log.iter()
            .all(|l| !l.ends_with(" 404") || l.contains("no_such_template")),
        "unexpected 404s: {log:#?}"
    );
    h.shutdown().await;
}

fn rulebook(template: &str, key: &str) -> String {
    format!(
        r#"
- name: simulator fidelity
  hosts: all
  sources:
    - eda.builtin.range:
        limit: 1
  rules:
    - name: launch through the controller API
      condition: event.i == 0
      actions:
        - run_job_template:
            name: {template}
            organization: Default
            job_args:
              extra_vars:
                cloudkit_launch_key: {key}
        - shutdown:
            message: done
"#
    )
}

async fn run_rulebook(h: &SimHandle, controller_url: &str, key: &str) -> String {
    let venv = venv();
    assert!(
        Path::new(JAVA_HOME_17).join("bin/java").exists(),
        "ansible-rulebook needs Java 17 at {JAVA_HOME_17}: run `hack/python-venv.sh` as root \
         (it installs openjdk-17-jdk-headless)"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rulebook.yml");
    std::fs::write(&file, rulebook("provision_vm", key)).unwrap();
    let mut cmd = tokio::process::Command::new(venv.join("bin/ansible-rulebook"));
    cmd.arg("--rulebook")
        .arg(&file)
        .arg("-i")
        .arg("localhost,")
        .arg("--controller-url")
        .arg(controller_url)
        .arg("--controller-token")
        .arg(TOKEN)
        .arg("-v")
        .env("JAVA_HOME", JAVA_HOME_17)
        .env(
            "PATH",
            format!(
                "{}:{}",
                venv.join("bin").display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("ANSIBLE_HOME", dir.path().join("ansible-home"))
        .current_dir(dir.path());
    let out = run(cmd, "ansible-rulebook").await;
    let all = show(&out);
    assert!(
        out.status.success(),
        "ansible-rulebook failed against {controller_url}\n{all}\n--- simulator requests ---\n{}",
        log_lines(h).join("\n")
    );
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rulebook_run_job_template_on_both_prefixes() {
    let h = simulator().await;
    for (url, prefix, key) in [
        (format!("{}/", h.base_url()), "/api/v2/", "rulebook-legacy"),
        (
            format!("{}/", h.controller_url()),
            "/api/controller/v2/",
            "rulebook-gateway",
        ),
    ] {
        h.simulator().clear_requests();
        let output = run_rulebook(&h, &url, key).await;
        let log = log_lines(&h);
        let seen = |needle: &str| log.iter().any(|l| l.contains(needle));
        assert!(seen(&format!("GET {prefix}config/ 200")), "{log:#?}");
        assert!(
            seen(&format!(
                "GET {prefix}unified_job_templates/?name=provision_vm 200"
            )),
            "{log:#?}"
        );
        assert!(
            seen(&format!("POST {prefix}job_templates/1/launch/ 201")),
            "{log:#?}"
        );
        assert!(
            seen(&format!("GET {prefix}jobs/?id__in=")),
            "batch polling: {log:#?}"
        );
        assert_eq!(
            h.simulator().stats().launches_by_key.get(key),
            Some(&1),
            "{output}"
        );
        // The rulebook only shuts down after the monitor saw the job finish.
        let job = h.simulator().stats().launches;
        assert_eq!(
            h.simulator().job_status(job),
            Some(cloudkit_aap_sim::AwxStatus::Successful)
        );
        assert!(
            output.contains(&format!("controller job id: {job}")),
            "{output}"
        );
    }
    h.shutdown().await;
}
