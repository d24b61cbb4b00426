//! Types of the `ComputeInstance` custom resource (`cloudkit.openshift.io/v1alpha1`), its job
//! history helpers and its configuration hash.
//!
//! This crate has no runtime: no client, no HTTP, no async. It is what a controller that embeds
//! cloudkit needs to read and write `ComputeInstance` objects compatibly with the operator.
//!
//! ```
//! use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, JobState, JobStatus, JobType, history};
//! use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
//! use k8s_openapi::jiff::Timestamp;
//!
//! let ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("test_template"));
//! assert_eq!(cloudkit_api::config_version(&ci.spec), "c15fb6a31521d9c3");
//!
//! let mut jobs = Vec::new();
//! let id = history::next_eda_job_id(&jobs);
//! history::append_job(&mut jobs, JobStatus::new(id, JobType::Provision,
//!     Time(Timestamp::UNIX_EPOCH), JobState::Running));
//! assert_eq!(history::latest_job(&jobs, JobType::Provision).map(|j| j.job_id.as_str()),
//!            Some("eda-webhook-1"));
//! ```

pub mod cache;
mod compute_instance;
pub mod conditions;
mod config_version;
pub mod history;
pub mod intent;
mod job;
mod launch_key;
pub mod metadata;
pub mod names;
pub mod platform;
pub mod shard;
mod tenant;
pub mod text;

pub use compute_instance::{
    ComputeInstance, ComputeInstanceSpec, ComputeInstanceStatus, DiskSpec, ImageSourceType,
    ImageSpec, Phase, RunStrategy, SecretRef, SpecError, TenantReference, VirtualMachineReference,
};
pub use config_version::{canonical_spec_json, config_version, fnv1a64};
pub use job::{AapJobKind, EDA_JOB_ID_PREFIX, JobState, JobStatus, JobType, ProviderKind};
pub use launch_key::{LaunchKey, LaunchKeyError};
pub use tenant::{Tenant, TenantPhase, TenantSpec, TenantStatus};

use kube::CustomResourceExt;

/// The CustomResourceDefinition generated from the Rust types.
pub fn crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    ComputeInstance::crd()
}

/// The CRD as YAML, exactly as committed under `crds/computeinstance.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&crd())
}

/// The Tenant CustomResourceDefinition generated from the Rust types.
pub fn tenant_crd()
-> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    Tenant::crd()
}

/// The Tenant CRD as YAML, exactly as committed under `crds/tenant.yaml`.
pub fn tenant_crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    serde_saphyr::to_string(&tenant_crd())
}
