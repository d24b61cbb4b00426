//! The first provision intent of a new CI, recorded in an annotation.
//!
//! Before it starts any job the operator records an *intent* (a job entry without an id, with a
//! launch key) so that a launch whose answer is lost can be found again instead of repeated.
//! Intents live in `status.jobs[]`, except the very first one of a CI: that one is written in
//! the same metadata patch as the operator's finalizer, in
//! [`crate::metadata::PROVISION_INTENT_ANNOTATION`], which saves a
//! write (and a round trip before the launch) on every new CI. The annotation counts only while
//! the operator has never written the CI's status; the first status write carries the intent
//! (or its outcome) into `status.jobs[]`, and from then on the annotation is ignored.
//!
//! ```
//! use cloudkit_api::{
//!     ComputeInstance, ComputeInstanceSpec, JobState, JobStatus, JobType, LaunchKey, intent,
//! };
//! use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
//! use k8s_openapi::jiff::Timestamp;
//!
//! let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("t"));
//! ci.metadata.uid = Some("u-1".into());
//! let mut job = JobStatus::new("", JobType::Provision, Time(Timestamp::UNIX_EPOCH), JobState::Pending);
//! job.launch_key = Some(LaunchKey::provision("u-1", "c15fb6a31521d9c3", 1).to_string());
//! ci.metadata.annotations = Some([(
//!     cloudkit_api::metadata::PROVISION_INTENT_ANNOTATION.to_string(),
//!     intent::encode(&job),
//! )].into());
//! let view = intent::with_recorded_intent(&ci);
//! assert_eq!(view.status.as_ref().map(|s| s.jobs.clone()), Some(vec![job]));
//! ```

use std::borrow::Cow;

use crate::metadata::PROVISION_INTENT_ANNOTATION;
use crate::{ComputeInstance, ComputeInstanceStatus, JobState, JobStatus, JobType, LaunchKey};

/// Whether the operator has never written `status`: no job and no desired configuration version
/// (every status the operator writes has one).
pub fn status_never_written(status: Option<&ComputeInstanceStatus>) -> bool {
    status.is_none_or(|s| s.jobs.is_empty() && s.desired_config_version.is_none())
}

/// The annotation value that records `intent`.
pub fn encode(intent: &JobStatus) -> String {
    // A JobStatus is plain data: strings, enums and a timestamp; serialising it cannot fail.
    serde_json::to_string(intent).unwrap_or_default()
}

/// The intent recorded in `ci`'s annotation, if there is one that counts: the status was never
/// written, and the annotation holds a provision intent of this very object (a launch key under
/// its own uid, so a copy of another CI's metadata does not count).
pub fn recorded_intent(ci: &ComputeInstance) -> Option<JobStatus> {
    if !status_never_written(ci.status.as_ref()) {
        return None;
    }
    let value = ci
        .metadata
        .annotations
        .as_ref()?
        .get(PROVISION_INTENT_ANNOTATION)?;
    let job: JobStatus = serde_json::from_str(value).ok()?;
    let own = job
        .launch_key
        .as_deref()
        .and_then(|k| k.parse::<LaunchKey>().ok())
        .is_some_and(|k| k.is_provision_of(ci));
    let intent = job.job_id.is_empty()
        && job.job_type == JobType::Provision
        && job.state == JobState::Pending;
    (own && intent).then_some(job)
}

/// `ci` as the operator recorded it: when its first provision intent is only in the annotation,
/// a copy whose `status.jobs` holds it; otherwise `ci` itself.
pub fn with_recorded_intent(ci: &ComputeInstance) -> Cow<'_, ComputeInstance> {
    match recorded_intent(ci) {
        Some(job) => {
            let mut view = ci.clone();
            view.status.get_or_insert_with(Default::default).jobs = vec![job];
            Cow::Owned(view)
        }
        None => Cow::Borrowed(ci),
    }
}

/// Removes the annotation from `ci` once it no longer counts (the status was written), so that
/// neither the operator's cache nor the automation's copy of the CI carries it.
pub fn remove_if_inert(ci: &mut ComputeInstance) {
    if status_never_written(ci.status.as_ref()) {
        return;
    }
    if let Some(annotations) = ci.metadata.annotations.as_mut() {
        annotations.remove(PROVISION_INTENT_ANNOTATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ComputeInstanceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn intent(key: &str) -> JobStatus {
        let mut job = JobStatus::new(
            "",
            JobType::Provision,
            Time(Timestamp::UNIX_EPOCH),
            JobState::Pending,
        );
        job.launch_key = Some(key.into());
        job.attempt = Some(1);
        job
    }

    fn ci_with(
        annotation: Option<String>,
        status: Option<ComputeInstanceStatus>,
    ) -> ComputeInstance {
        let mut ci = ComputeInstance::new("vm", ComputeInstanceSpec::for_template("t"));
        ci.metadata.uid = Some("uid-1".into());
        ci.metadata.annotations =
            annotation.map(|v| [(PROVISION_INTENT_ANNOTATION.to_string(), v)].into());
        ci.status = status;
        ci
    }

    #[test]
    fn the_annotation_counts_only_until_the_status_is_written() {
        let job = intent("uid-1/provision/abc/1");
        let cases: Vec<(&str, Option<ComputeInstanceStatus>, bool)> = vec![
            ("no status", None, true),
            (
                "an empty status",
                Some(ComputeInstanceStatus::default()),
                true,
            ),
            (
                "a written status without jobs (a refused launch)",
                Some(ComputeInstanceStatus {
                    desired_config_version: Some("abc".into()),
                    ..Default::default()
                }),
                false,
            ),
            (
                "a status with the job",
                Some(ComputeInstanceStatus {
                    jobs: vec![job.clone()],
                    ..Default::default()
                }),
                false,
            ),
        ];
        for (name, status, counts) in cases {
            let ci = ci_with(Some(encode(&job)), status);
            assert_eq!(recorded_intent(&ci).is_some(), counts, "{name}");
            let view = with_recorded_intent(&ci);
            assert_eq!(matches!(view, Cow::Owned(_)), counts, "{name}");
        }
    }

    #[test]
    fn only_a_pending_provision_intent_of_this_object_counts() {
        let own = intent("uid-1/provision/abc/1");
        let mut with_id = own.clone();
        with_id.job_id = "7".into();
        let mut running = own.clone();
        running.state = JobState::Running;
        let mut deprovision = intent("uid-1/deprovision/delete/1");
        deprovision.job_type = JobType::Deprovision;
        let cases: Vec<(&str, String, bool)> = vec![
            ("own intent", encode(&own), true),
            (
                "another object's key",
                encode(&intent("uid-2/provision/abc/1")),
                false,
            ),
            (
                "a key without the type",
                encode(&intent("uid-1/abc/1")),
                false,
            ),
            (
                "a key without the attempt",
                encode(&intent("uid-1/provision/abc")),
                false,
            ),
            ("a job id", encode(&with_id), false),
            ("not pending", encode(&running), false),
            ("a deprovision", encode(&deprovision), false),
            ("not JSON", "launching".into(), false),
            ("empty", String::new(), false),
        ];
        for (name, value, counts) in cases {
            let ci = ci_with(Some(value), None);
            assert_eq!(recorded_intent(&ci).is_some(), counts, "{name}");
        }
        assert_eq!(recorded_intent(&ci_with(None, None)), None);
    }

    #[test]
    fn the_view_holds_exactly_the_recorded_intent() {
        let job = intent("uid-1/provision/abc/1");
        let ci = ci_with(Some(encode(&job)), None);
        let view = with_recorded_intent(&ci);
        assert_eq!(
            view.status.as_ref().map(|s| s.jobs.clone()),
            Some(vec![job])
        );
        assert_eq!(view.metadata, ci.metadata);
    }

    #[test]
    fn the_annotation_is_removed_once_inert_and_only_then() {
        let job = intent("uid-1/provision/abc/1");
        let mut ci = ci_with(Some(encode(&job)), None);
        remove_if_inert(&mut ci);
        assert_eq!(recorded_intent(&ci), Some(job.clone()), "it still counts");
        ci.status = Some(ComputeInstanceStatus {
            jobs: vec![job],
            ..Default::default()
        });
        remove_if_inert(&mut ci);
        assert_eq!(ci.metadata.annotations, Some(Default::default()));
        let mut bare = ci_with(None, ci.status.clone());
        remove_if_inert(&mut bare);
        assert_eq!(bare.metadata.annotations, None, "no empty map is made up");
    }
}
