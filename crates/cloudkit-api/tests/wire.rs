//! The status wire format is the Go operator's, field for field.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloudkit_api::{
    AapJobKind, ComputeInstance, ComputeInstanceStatus, JobState, JobStatus, JobType, Phase,
    ProviderKind,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

fn ts(s: &str) -> Time {
    Time(s.parse::<Timestamp>().unwrap())
}

#[test]
fn job_field_names_are_exact() {
    let mut job = JobStatus::new(
        "9076",
        JobType::Deprovision,
        ts("2026-02-12T10:11:12Z"),
        JobState::Running,
    );
    job.message = Some("running".into());
    job.block_deletion_on_failure = Some(true);
    assert_eq!(
        serde_json::to_value(&job).unwrap(),
        json!({
            "jobID": "9076",
            "type": "deprovision",
            "timestamp": "2026-02-12T10:11:12Z",
            "state": "Running",
            "message": "running",
            "blockDeletionOnFailure": true,
        })
    );
}

#[test]
fn optional_fields_are_omitted_and_round_trip() {
    let bare = JobStatus::new(
        "eda-webhook-1",
        JobType::Provision,
        ts("2026-02-12T10:11:12Z"),
        JobState::Succeeded,
    );
    assert_eq!(
        serde_json::to_value(&bare).unwrap(),
        json!({"jobID": "eda-webhook-1", "type": "provision", "timestamp": "2026-02-12T10:11:12Z", "state": "Succeeded"})
    );

    let mut full = bare.clone();
    full.provider = Some(ProviderKind::Eda);
    full.config_version = Some("c15fb6a31521d9c3".into());
    full.aap_job_kind = Some(AapJobKind::WorkflowJob);
    full.launch_key = Some("ns/vm/provision/c15f/1".into());
    full.attempt = Some(2);
    full.retry_token = Some("again".into());
    full.completion_timestamp = Some(ts("2026-02-12T10:20:00Z"));
    let v = serde_json::to_value(&full).unwrap();
    assert_eq!(v["provider"], "eda");
    assert_eq!(v["configVersion"], "c15fb6a31521d9c3");
    assert_eq!(v["aapJobKind"], "workflow_job");
    assert_eq!(v["launchKey"], "ns/vm/provision/c15f/1");
    assert_eq!(v["attempt"], 2);
    assert_eq!(v["retryToken"], "again");
    assert_eq!(v["completionTimestamp"], "2026-02-12T10:20:00Z");
    let back: JobStatus = serde_json::from_value(v).unwrap();
    assert_eq!(back, full);
}

#[test]
fn an_intent_without_job_id_omits_the_field() {
    let mut intent = JobStatus::new(
        "",
        JobType::Provision,
        ts("2026-02-12T10:11:12Z"),
        JobState::Pending,
    );
    intent.launch_key = Some("uid/provision/v/1".into());
    let v = serde_json::to_value(&intent).unwrap();
    assert!(v.get("jobID").is_none(), "{v}");
    let back: JobStatus = serde_json::from_value(v).unwrap();
    assert_eq!(back.job_id, "");
    assert_eq!(back, intent);
}

#[test]
fn timestamps_are_utc_seconds_like_go() {
    // Go's metav1.Time writes RFC 3339 in UTC at second precision.
    let job: JobStatus = serde_json::from_value(json!({
        "jobID": "1", "type": "provision", "state": "Pending",
        "timestamp": "2026-02-12T12:11:12.987+02:00"
    }))
    .unwrap();
    assert_eq!(
        serde_json::to_value(&job).unwrap()["timestamp"],
        "2026-02-12T10:11:12Z"
    );
}

#[test]
fn every_state_and_type_on_the_wire() {
    for (state, wire) in [
        (JobState::Pending, "Pending"),
        (JobState::Waiting, "Waiting"),
        (JobState::Running, "Running"),
        (JobState::Succeeded, "Succeeded"),
        (JobState::Failed, "Failed"),
        (JobState::Canceled, "Canceled"),
        (JobState::Unknown, "Unknown"),
    ] {
        assert_eq!(serde_json::to_value(state).unwrap(), wire);
        assert_eq!(
            serde_json::from_value::<JobState>(json!(wire)).unwrap(),
            state
        );
    }
    for (t, wire) in [
        (JobType::Provision, "provision"),
        (JobType::Deprovision, "deprovision"),
    ] {
        assert_eq!(serde_json::to_value(t).unwrap(), wire);
    }
    assert!(serde_json::from_value::<JobState>(json!("Done")).is_err());
    assert!(serde_json::from_value::<JobState>(json!("running")).is_err());
}

#[test]
fn go_operator_status_reads_without_loss() {
    // A CI as the Go operator leaves it: its six job fields, AAP and EDA entries, conditions.
    let go = json!({
        "apiVersion": "cloudkit.openshift.io/v1alpha1",
        "kind": "ComputeInstance",
        "metadata": {
            "name": "vm-jgkx2", "namespace": "vmaas", "generation": 3,
            "finalizers": ["cloudkit.openshift.io/computeinstance", "cloudkit.openshift.io/computeinstance-aap"],
            "labels": {"cloudkit.openshift.io/computeinstance-uuid": "5f0c"},
            "annotations": {"cloudkit.openshift.io/reconciled-config-version": "1c15a84e66d482fb"}
        },
        "spec": {
            "templateID": "osac.templates.ocp_virt_vm",
            "image": {"sourceType": "registry", "sourceRef": "quay.io/containerdisks/fedora:latest"},
            "cores": 2, "memoryGiB": 4, "bootDisk": {"sizeGiB": 20}, "runStrategy": "Always"
        },
        "status": {
            "phase": "Running",
            "conditions": [{
                "type": "ConfigurationApplied", "status": "True", "reason": "Applied",
                "message": "", "lastTransitionTime": "2026-02-12T10:15:00Z", "observedGeneration": 3
            }],
            "desiredConfigVersion": "1c15a84e66d482fb",
            "reconciledConfigVersion": "1c15a84e66d482fb",
            "jobs": [
                {"jobID": "eda-webhook-1", "type": "provision", "timestamp": "2026-02-12T10:11:12Z", "state": "Unknown"},
                {"jobID": "9219", "type": "deprovision", "timestamp": "2026-02-12T10:30:00Z", "state": "Failed",
                 "message": "Job failed", "blockDeletionOnFailure": true}
            ]
        }
    });
    let ci: ComputeInstance = serde_json::from_value(go.clone()).unwrap();
    let status = ci.status.as_ref().unwrap();
    assert_eq!(status.phase, Some(Phase::Running));
    assert_eq!(status.jobs.len(), 2);
    assert_eq!(status.jobs[0].owner(), ProviderKind::Eda);
    assert_eq!(status.jobs[1].owner(), ProviderKind::Aap);
    assert!(status.jobs[1].blocks_deletion_on_failure());
    assert_eq!(cloudkit_api::config_version(&ci.spec), "1c15a84e66d482fb");

    // Writing it back gives the same document: nothing lost, nothing added.
    assert_eq!(serde_json::to_value(&ci).unwrap(), go);
}

#[test]
fn empty_status_is_empty() {
    assert_eq!(
        serde_json::to_value(ComputeInstanceStatus::default()).unwrap(),
        json!({})
    );
    let s: ComputeInstanceStatus = serde_json::from_value(json!({})).unwrap();
    assert_eq!(s, ComputeInstanceStatus::default());
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let bad = [
        json!({"jobID": "1", "type": "provision", "state": "Running", "timestamp": "yesterday"}),
        json!({"jobID": "1", "type": "provision", "state": "Running", "timestamp": ""}),
        json!({"jobID": "1", "type": "provision", "state": "Running"}),
        json!({"jobID": 1, "type": "provision", "state": "Running", "timestamp": "2026-02-12T10:11:12Z"}),
        json!({"jobID": "1", "type": "reprovision", "state": "Running", "timestamp": "2026-02-12T10:11:12Z"}),
        json!({"jobID": "1", "type": "provision", "state": "Running", "timestamp": "2026-02-12T10:11:12Z", "attempt": -1.5}),
        json!([]),
        json!(null),
    ];
    for v in bad {
        assert!(
            serde_json::from_value::<JobStatus>(v.clone()).is_err(),
            "{v}"
        );
    }
}
