//! ComputeInstance fixtures and readers of their status, so that tests read like the spec.

use cloudkit_api::metadata::TENANT_ANNOTATION;
use kube::ResourceExt as _;
use std::collections::BTreeMap;

use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, JobStatus, JobType, Phase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

/// The template every fixture uses unless told otherwise.
pub const TEST_TEMPLATE: &str = "test_template";

/// A ComputeInstance under construction, in the style of controller-rs's `Document::test()`:
/// `CiFixture::new("vm").parameters(json!({"size": "large"})).finalized().build()`.
#[derive(Clone, Debug)]
pub struct CiFixture {
    name: String,
    spec: ComputeInstanceSpec,
    finalizers: Vec<String>,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
}

impl CiFixture {
    /// A CI `name` of [`TEST_TEMPLATE`], no parameters, finalizers or annotations.
    pub fn new(name: &str) -> CiFixture {
        CiFixture {
            name: name.to_string(),
            spec: ComputeInstanceSpec::for_template(TEST_TEMPLATE),
            finalizers: Vec::new(),
            annotations: BTreeMap::from([(TENANT_ANNOTATION.to_string(), TEST_TENANT.to_string())]),
            labels: BTreeMap::new(),
        }
    }

    /// Without the tenant annotation: the operator starts no job for it (SPEC 9.4).
    pub fn without_tenant(mut self) -> CiFixture {
        self.annotations.remove(TENANT_ANNOTATION);
        self
    }

    /// Another template.
    pub fn template(mut self, template: &str) -> CiFixture {
        self.spec.template_id = template.to_string();
        self
    }

    /// `spec.templateParameters` (JSON text).
    pub fn parameters(mut self, parameters: serde_json::Value) -> CiFixture {
        self.spec.template_parameters = Some(parameters.to_string());
        self
    }

    /// `spec.templateParameters` that are not JSON at all.
    pub fn raw_parameters(mut self, text: &str) -> CiFixture {
        self.spec.template_parameters = Some(text.to_string());
        self
    }

    /// With the operator's finalizer, as after its first pass.
    pub fn finalized(mut self) -> CiFixture {
        self.finalizers
            .push(cloudkit_api::metadata::FINALIZER.to_string());
        self
    }

    /// With an annotation.
    pub fn annotated(mut self, key: &str, value: &str) -> CiFixture {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }

    /// With a label.
    pub fn labelled(mut self, key: &str, value: &str) -> CiFixture {
        self.labels.insert(key.to_string(), value.to_string());
        self
    }

    /// The spec alone.
    pub fn spec(&self) -> ComputeInstanceSpec {
        self.spec.clone()
    }

    /// The object.
    pub fn build(self) -> ComputeInstance {
        let mut ci = ComputeInstance::new(&self.name, self.spec);
        if !self.finalizers.is_empty() {
            ci.metadata.finalizers = Some(self.finalizers);
        }
        if !self.annotations.is_empty() {
            ci.metadata.annotations = Some(self.annotations);
        }
        if !self.labels.is_empty() {
            ci.metadata.labels = Some(self.labels);
        }
        ci
    }

    /// Creates it through `api`.
    ///
    /// # Panics
    ///
    /// When the API server refuses it.
    #[allow(clippy::panic)]
    pub async fn create(self, api: &Api<ComputeInstance>) -> ComputeInstance {
        let name = self.name.clone();
        api.create(&PostParams::default(), &self.build())
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"))
    }
}

/// The tenant of every test CI unless a test says otherwise. The operator starts no job for a
/// CI without a tenant (SPEC 9.4).
pub const TEST_TENANT: &str = "tests";

/// `ci` in [`TEST_TENANT`].
pub fn in_test_tenant(mut ci: ComputeInstance) -> ComputeInstance {
    ci.annotations_mut()
        .insert(TENANT_ANNOTATION.to_string(), TEST_TENANT.to_string());
    ci
}

/// A spec of `template` with `parameters` as its `templateParameters`.
pub fn spec_with_parameters(template: &str, parameters: serde_json::Value) -> ComputeInstanceSpec {
    CiFixture::new("unused")
        .template(template)
        .parameters(parameters)
        .spec()
}

/// Creates CI `name` with `spec`.
///
/// # Panics
///
/// When the API server refuses it.
#[allow(clippy::panic)]
pub async fn create(
    api: &Api<ComputeInstance>,
    name: &str,
    spec: ComputeInstanceSpec,
) -> ComputeInstance {
    api.create(
        &PostParams::default(),
        &in_test_tenant(ComputeInstance::new(name, spec)),
    )
    .await
    .unwrap_or_else(|e| panic!("creating {name}: {e}"))
}

/// Deletes CI `name` (the operator's finalizers then run).
///
/// # Panics
///
/// When the API server refuses.
#[allow(clippy::panic)]
pub async fn delete(api: &Api<ComputeInstance>, name: &str) {
    api.delete(name, &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
}

/// A JSON merge patch on CI `name`, as a user would apply it (metadata or spec).
///
/// # Panics
///
/// When the API server refuses it.
#[allow(clippy::panic)]
pub async fn merge_patch(
    api: &Api<ComputeInstance>,
    name: &str,
    patch: serde_json::Value,
) -> ComputeInstance {
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("patching {name} with {patch}: {e}"))
}

/// Sets annotation `key` of CI `name`.
pub async fn annotate(api: &Api<ComputeInstance>, name: &str, key: &str, value: &str) {
    merge_patch(
        api,
        name,
        serde_json::json!({"metadata": {"annotations": {key: value}}}),
    )
    .await;
}

/// The job history.
pub fn jobs(ci: &ComputeInstance) -> Vec<JobStatus> {
    ci.status
        .as_ref()
        .map(|s| s.jobs.clone())
        .unwrap_or_default()
}

/// The latest job of type `t`.
pub fn latest(ci: &ComputeInstance, t: JobType) -> Option<JobStatus> {
    cloudkit_api::history::latest_job(&jobs(ci), t).cloned()
}

/// `status.phase`.
pub fn phase(ci: &ComputeInstance) -> Option<Phase> {
    ci.status.as_ref().and_then(|s| s.phase)
}

/// Phase Running with a succeeded latest provision job.
pub fn running_and_provisioned(ci: &ComputeInstance) -> bool {
    phase(ci) == Some(Phase::Running)
        && latest(ci, JobType::Provision)
            .is_some_and(|j| j.state == cloudkit_api::JobState::Succeeded)
}

/// The CI's condition of this type.
pub fn condition(ci: &ComputeInstance, type_: &str) -> Option<Condition> {
    ci.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// `metadata.finalizers`.
pub fn finalizers(ci: &ComputeInstance) -> Vec<String> {
    ci.metadata.finalizers.clone().unwrap_or_default()
}
