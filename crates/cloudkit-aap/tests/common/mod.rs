//! Helpers shared by the integration tests: a wiremock AWX, clients and objects.
#![allow(dead_code)]

use std::time::Duration;

use cloudkit_aap::{AapClient, AapConfig, AapProvider};
use cloudkit_api::{
    AapJobKind, ComputeInstance, ComputeInstanceSpec, JobState, JobStatus, JobType,
};
use cloudkit_provider::{ProviderError, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The token every test client sends; no error may ever show it.
pub const TOKEN: &str = "tok-3f9c2a7e-never-shown";
/// The API prefix of AWX.
pub const AWX: &str = "/api";
/// The API prefix of AAP 2.5+ behind the gateway.
pub const GATEWAY: &str = "/api/controller";
pub const PROVISION: &str = "provision_vm";
pub const DEPROVISION: &str = "deprovision_vm";

pub fn config_for(base: &str) -> AapConfig {
    AapConfig::new(base, Secret::new(TOKEN), PROVISION, DEPROVISION)
        .and_then(|c| c.with_request_timeout(Duration::from_secs(5)))
        .unwrap_or_else(|e| panic!("test config: {e}"))
}

pub fn config(server: &MockServer, prefix: &str) -> AapConfig {
    config_for(&format!("{}{prefix}", server.uri()))
}

pub fn client(server: &MockServer) -> AapClient {
    AapClient::new(&config(server, AWX)).unwrap_or_else(|e| panic!("test client: {e}"))
}

pub fn provider(server: &MockServer) -> AapProvider {
    AapProvider::new(&config(server, AWX)).unwrap_or_else(|e| panic!("test provider: {e}"))
}

pub fn ci() -> ComputeInstance {
    let mut spec = ComputeInstanceSpec::for_template("osac.templates.ocp_virt_vm");
    spec.cores = Some(2);
    let mut ci = ComputeInstance::new("vm-1", spec);
    ci.metadata.namespace = Some("tenant-a".into());
    ci.metadata.uid = Some("0b6f8e6c-1111-2222-3333-444455556666".into());
    ci
}

pub fn recorded(id: &str, job_type: JobType, kind: Option<AapJobKind>) -> JobStatus {
    let mut job = JobStatus::new(id, job_type, Time(Timestamp::UNIX_EPOCH), JobState::Pending);
    job.aap_job_kind = kind;
    job
}

/// `GET {prefix}/v2/<collection>/?name=<name>` answers a page with the given ids.
pub async fn template_page(
    server: &MockServer,
    prefix: &str,
    collection: &str,
    name: &str,
    ids: &[u64],
) {
    let results: Vec<Value> = ids
        .iter()
        .map(|id| json!({"id": id, "name": name}))
        .collect();
    Mock::given(method("GET"))
        .and(path(format!("{prefix}/v2/{collection}/")))
        .and(query_param("name", name))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": ids.len(), "next": null, "previous": null, "results": results
        })))
        .mount(server)
        .await;
}

/// A job template `name` with `id` under `/api`.
pub async fn job_template(server: &MockServer, name: &str, id: u64) {
    template_page(server, AWX, "job_templates", name, &[id]).await;
}

/// A launch answer as AWX gives it.
pub fn launch_answer(id: u64, kind: AapJobKind) -> Value {
    let mut answer = json!({
        "id": id, "type": "job", "status": "pending", "ignored_fields": {},
        "url": format!("/api/v2/jobs/{id}/"),
    });
    match kind {
        AapJobKind::Job => answer["job"] = json!(id),
        AapJobKind::WorkflowJob => {
            answer["workflow_job"] = json!(id);
            answer["type"] = json!("workflow_job");
        }
    }
    answer
}

/// Everything an error shows: Display, Debug and its sources.
pub fn shown(err: &ProviderError) -> String {
    let mut out = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(&format!(" | {s} | {s:?}"));
        source = s.source();
    }
    out
}

/// Asserts the common promises of every error message: one line, short, no token.
pub fn assert_clean(err: &ProviderError) {
    let text = err.to_string();
    assert!(!text.contains('\n'), "multi-line message: {text}");
    assert!(
        text.len() <= 1024,
        "message longer than 1 KiB: {} bytes",
        text.len()
    );
    let all = shown(err);
    assert!(!all.contains(TOKEN), "token shown in error: {all}");
}
