//! Shared helpers of the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use cloudkit_api::metadata::{AAP_FINALIZER, RECONCILED_CONFIG_VERSION_ANNOTATION};
use cloudkit_api::{
    ComputeInstance, ComputeInstanceSpec, ComputeInstanceStatus, JobState, JobStatus, JobType,
};
use cloudkit_eda::{EdaClient, EdaConfig, EdaProvider, ManualClock};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use wiremock::MockServer;

pub const PROVISION_PATH: &str = "/endpoint/provision";
pub const DEPROVISION_PATH: &str = "/endpoint/deprovision";
pub const TOKEN: &str = "tok-SECRET-1234";
pub const HMAC_SECRET: &str = "hmac-SECRET-5678";

/// A CI in `namespace` with a template, a label and an annotation, so the body is not trivial.
pub fn ci(namespace: &str, name: &str) -> ComputeInstance {
    let mut spec = ComputeInstanceSpec::for_template("osac.templates.ocp_virt_vm");
    spec.cores = Some(2);
    spec.template_parameters = Some(r#"{"key": "<value> & more"}"#.into());
    let mut ci = ComputeInstance::new(name, spec);
    ci.metadata.namespace = Some(namespace.into());
    ci.metadata.labels = Some(
        [(
            "cloudkit.openshift.io/computeinstance-uuid".to_string(),
            "0d1e2f".to_string(),
        )]
        .into(),
    );
    ci
}

pub fn with_finalizer(mut ci: ComputeInstance) -> ComputeInstance {
    ci.metadata.finalizers = Some(vec![
        "cloudkit.openshift.io/computeinstance".into(),
        AAP_FINALIZER.into(),
    ]);
    ci
}

pub fn with_annotation(mut ci: ComputeInstance, version: &str) -> ComputeInstance {
    ci.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(RECONCILED_CONFIG_VERSION_ANNOTATION.into(), version.into());
    ci
}

pub fn status(ci: &mut ComputeInstance) -> &mut ComputeInstanceStatus {
    ci.status.get_or_insert_with(Default::default)
}

pub fn job(id: &str, job_type: JobType, state: JobState) -> JobStatus {
    JobStatus::new(id, job_type, Time(Timestamp::UNIX_EPOCH), state)
}

pub fn config_for(server: &MockServer) -> EdaConfig {
    EdaConfig::new(
        &format!("{}{PROVISION_PATH}", server.uri()),
        &format!("{}{DEPROVISION_PATH}", server.uri()),
    )
    .unwrap()
}

pub fn client(config: EdaConfig) -> (EdaClient, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let client = EdaClient::with_clock(config, clock.clone()).unwrap();
    (client, clock)
}

pub fn provider(config: EdaConfig) -> (EdaProvider, Arc<ManualClock>) {
    let (client, clock) = client(config);
    (EdaProvider::with_client(client), clock)
}

pub const TEN_SECONDS: Duration = Duration::from_secs(10);
