//! The floor for create-to-launch latency: a launcher with no logic that does what must happen
//! before a launch in the operator's design (its finalizer and the intent, in one metadata patch),
//! then the launch and the write of the job id, for each new CI, with the operator's default
//! concurrency.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::Context as _;
use cloudkit_api::metadata::{FINALIZER, PROVISION_INTENT_ANNOTATION};
use cloudkit_api::{
    ComputeInstance, ComputeInstanceStatus, JobState, JobStatus, JobType, ProviderKind,
};
use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::sim;

pub struct Launcher {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Launcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Launcher {
    pub async fn start(
        api: Api<ComputeInstance>,
        aap_url: &str,
        concurrency: usize,
    ) -> anyhow::Result<Launcher> {
        let http = reqwest::Client::new();
        let list: serde_json::Value = http
            .get(format!("{aap_url}/v2/job_templates/"))
            .query(&[("name", sim::PROVISION)])
            .bearer_auth(sim::TOKEN)
            .send()
            .await?
            .json()
            .await?;
        let template = list
            .pointer("/results/0/id")
            .and_then(serde_json::Value::as_u64)
            .context("the simulator has no provision template")?;
        let launch_url = format!("{aap_url}/v2/job_templates/{template}/launch/");
        let permits = Arc::new(Semaphore::new(concurrency));
        let task = tokio::spawn(async move {
            let mut seen = HashSet::new();
            let mut stream = watcher(api.clone(), watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Some(Ok(ci)) = stream.next().await {
                if ci.finalizers().iter().any(|f| f == FINALIZER) || !seen.insert(ci.name_any()) {
                    continue;
                }
                let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                    return;
                };
                let (api, http, url) = (api.clone(), http.clone(), launch_url.clone());
                tokio::spawn(async move {
                    if let Err(e) = launch(&api, &http, &url, ci).await {
                        eprintln!("    minimal launcher: {e:#}");
                    }
                    drop(permit);
                });
            }
        });
        Ok(Launcher { task })
    }
}

async fn launch(
    api: &Api<ComputeInstance>,
    http: &reqwest::Client,
    url: &str,
    ci: ComputeInstance,
) -> anyhow::Result<()> {
    let name = ci.name_any();
    let params = PatchParams::default();
    let version = cloudkit_api::config_version(&ci.spec);
    let key = format!("{}/provision/{version}/1", ci.uid().unwrap_or_default());
    let mut job = JobStatus::new(
        "",
        JobType::Provision,
        Time(Timestamp::now()),
        JobState::Pending,
    );
    job.provider = Some(ProviderKind::Aap);
    job.config_version = Some(version.clone());
    job.launch_key = Some(key.clone());
    job.attempt = Some(1);
    let mut ci = api
        .patch(
            &name,
            &params,
            &Patch::Merge(json!({"metadata": {
                "resourceVersion": ci.resource_version(),
                "finalizers": [FINALIZER],
                "annotations": {PROVISION_INTENT_ANNOTATION: cloudkit_api::intent::encode(&job)},
            }})),
        )
        .await?;
    ci.status = Some(ComputeInstanceStatus {
        desired_config_version: Some(version.clone()),
        ..ComputeInstanceStatus::default()
    });
    let answer: serde_json::Value = http
        .post(url)
        .bearer_auth(sim::TOKEN)
        .json(&json!({"extra_vars": {
            "ansible_eda": {"event": {"payload": ci}},
            "cloudkit_launch_key": key,
        }}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    job.job_id = answer
        .get("id")
        .and_then(serde_json::Value::as_u64)
        .map(|id| id.to_string())
        .unwrap_or_default();
    api.patch_status(
        &name,
        &params,
        &Patch::Merge(json!({"status": {"phase": "Starting", "desiredConfigVersion": version, "jobs": [job]}})),
    )
    .await?;
    Ok(())
}
