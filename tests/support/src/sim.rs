//! The AWX simulator as the tests use it: in this process, acting as the playbooks on the test
//! API server (by itself, or by running the real playbooks with ansible-playbook), and read back
//! through its AWX API.

use std::time::Duration;

use cloudkit_aap_sim::{Outcome, Phases, RunnerSpec, SimHandle, Simulator, TemplateSpec};

use crate::process::workspace_root;

/// The token the simulator accepts (and operators under test send).
pub const SIM_TOKEN: &str = "sim-token-3f9a";
/// The provision job template.
pub const PROVISION_TEMPLATE: &str = "provision_vm";
/// The deprovision job template.
pub const DEPROVISION_TEMPLATE: &str = "deprovision_vm";

/// Simulator phases in real time.
pub fn phases(pending_ms: u64, waiting_ms: u64, running_ms: u64) -> Phases {
    Phases::new(
        Duration::from_millis(pending_ms),
        Duration::from_millis(waiting_ms),
        Duration::from_millis(running_ms),
    )
}

/// A simulator with the two templates that acts as the playbooks itself on the shared test API
/// server (finalizer and annotation writes), with these phases.
///
/// # Panics
///
/// When it cannot start.
#[allow(clippy::expect_used)]
pub async fn simulator(
    provision: Phases,
    deprovision: Phases,
    deprovision_outcome: Outcome,
) -> SimHandle {
    let client = cloudkit_testenv::shared().admin_client().await;
    Simulator::builder()
        .token(SIM_TOKEN)
        .seed(7)
        .template(TemplateSpec::job(PROVISION_TEMPLATE).with_phases(provision))
        .template(
            TemplateSpec::job(DEPROVISION_TEMPLATE)
                .with_phases(deprovision)
                .with_outcome(deprovision_outcome),
        )
        .kube_client(client)
        .spawn(([127, 0, 0, 1], 0).into())
        .await
        .expect("the simulator starts")
}

/// The simulator in runner mode: each AAP job runs the real `examples/automation` playbook with
/// `ansible-playbook` against the shared test API server, as an AWX job would.
///
/// # Panics
///
/// When it cannot start.
#[allow(clippy::expect_used)]
pub async fn runner_simulator() -> SimHandle {
    let examples = workspace_root().join("examples/automation");
    Simulator::builder()
        .token(SIM_TOKEN)
        .seed(11)
        .template(
            TemplateSpec::job(PROVISION_TEMPLATE)
                .with_runner(RunnerSpec::new(examples.join("provision.yml"))),
        )
        .template(
            TemplateSpec::job(DEPROVISION_TEMPLATE)
                .with_runner(RunnerSpec::new(examples.join("deprovision.yml"))),
        )
        .kubeconfig(cloudkit_testenv::shared().kubeconfig_path())
        .spawn(([127, 0, 0, 1], 0).into())
        .await
        .expect("the simulator starts")
}

/// `GET {api_url}/<path>` at the simulator, as the operator authenticates; a 2xx answer.
#[allow(clippy::panic)]
async fn sim_request(sim: &SimHandle, path: &str) -> (String, reqwest::Response) {
    let url = format!("{}/{path}", sim.api_url());
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(SIM_TOKEN)
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    (url, response)
}

/// `GET {api_url}/<path>` at the simulator; the JSON answer.
///
/// # Panics
///
/// On an error answer or one that is not JSON.
#[allow(clippy::panic)]
pub async fn sim_get(sim: &SimHandle, path: &str) -> serde_json::Value {
    let (url, response) = sim_request(sim, path).await;
    response
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A job as the simulator reports it (`GET v2/jobs/<id>/`).
pub async fn sim_job(sim: &SimHandle, id: &str) -> serde_json::Value {
    sim_get(sim, &format!("v2/jobs/{id}/")).await
}

/// Every job the simulator knows, oldest first.
pub async fn sim_jobs(sim: &SimHandle) -> Vec<serde_json::Value> {
    let page = sim_get(sim, "v2/jobs/?page_size=200").await;
    let mut jobs = page["results"].as_array().cloned().unwrap_or_default();
    jobs.sort_by_key(|j| j["id"].as_u64());
    jobs
}

/// The captured output of a job's ansible-playbook run.
pub async fn sim_stdout(sim: &SimHandle, id: &str) -> String {
    let (_, response) = sim_request(sim, &format!("v2/jobs/{id}/stdout/?format=txt")).await;
    response.text().await.unwrap_or_default()
}

/// The `status.desiredConfigVersion` of the CI a job was launched with (its extra vars carry the
/// CI as `ansible_eda.event.payload`).
pub fn launched_config_version(job: &serde_json::Value) -> Option<String> {
    let vars: serde_json::Value = match &job["extra_vars"] {
        serde_json::Value::String(text) => serde_json::from_str(text).ok()?,
        other => other.clone(),
    };
    vars["ansible_eda"]["event"]["payload"]["status"]["desiredConfigVersion"]
        .as_str()
        .map(str::to_string)
}

/// A simulator timestamp (`created`, `started`, `finished`).
///
/// # Panics
///
/// When the job has none.
#[allow(clippy::panic)]
pub fn sim_time(job: &serde_json::Value, field: &str) -> jiff::Timestamp {
    job[field]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("job {} has no {field} timestamp: {job}", job["id"]))
}

/// Launches of `job_type` (`provision` or `deprovision`) the simulator accepted for the CI of
/// `uid`, from its launch ledger (launch keys are `<uid>/<type>/...`).
pub fn launches_of(sim: &SimHandle, uid: &str, job_type: &str) -> u64 {
    let prefix = format!("{uid}/{job_type}/");
    sim.simulator()
        .stats()
        .launches_by_key
        .iter()
        .filter(|(key, _)| key.starts_with(&prefix))
        .map(|(_, n)| n)
        .sum()
}
