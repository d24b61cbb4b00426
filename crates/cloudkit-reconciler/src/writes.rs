//! The writes of a pass: the status, the finalizer patch (with a new CI's first intent), and
//! what a 409 Conflict means for each.
//!
//! Every write is a JSON merge patch that carries the `resourceVersion` the decision was based
//! on, so a decision made from a stale object (a lagging cache, a second replica) is refused
//! instead of acting twice, with two exceptions that test exactly what they depend on instead:
//! the write of a launch's answer (the intent it answers is still there and unanswered; the
//! automation adds its finalizer as its job starts, and that metadata write must not refuse
//! it) and the removal of the operator's finalizer (it is still at the place read). Only the
//! answer's write is retried when refused: the job id the provider returned must not be lost.

use std::time::{Duration, Instant};

use cloudkit_api::intent::status_never_written;
use cloudkit_api::metadata::{FINALIZER, PROVISION_INTENT_ANNOTATION};
use cloudkit_api::{ComputeInstance, ComputeInstanceStatus, JobStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};

use crate::controller::{Context, Error, slim};
use crate::metrics::Metrics;
use crate::outcome::{LaunchAnswer, apply_launch_answer};
use crate::plan::EventSpec;
use crate::settings::Capabilities;

/// Field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "cloudkit-operator";

/// What recording a launch's answer left to the rest of the pass.
pub(crate) struct LaunchOutcome {
    pub(crate) current: ComputeInstance,
    /// The resourceVersion the answer's write replaced, if it was written.
    pub(crate) replaced: Option<String>,
    pub(crate) events: Vec<EventSpec>,
    pub(crate) remove_finalizer: bool,
    pub(crate) requeue_after: Option<Duration>,
}

/// Records a provider's `answer` to the launch of the intent under `launch_key`, re-reading
/// and re-applying on conflicts so a returned job id is never lost.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn record_answer(
    ctx: &Context,
    api: &Api<ComputeInstance>,
    mut current: ComputeInstance,
    stored: Option<&ComputeInstanceStatus>,
    launch_key: &str,
    answer: &LaunchAnswer,
    caps: Capabilities,
    uid: &str,
) -> Result<LaunchOutcome, Error> {
    let name = current.name_any();
    // The first attempt tests the intent; after a refusal, the fresh object's resourceVersion.
    let mut tested = Some(stored.cloned());
    for _ in 0..5 {
        let mut status: ComputeInstanceStatus = current.status.clone().unwrap_or_default();
        let Some(effect) = apply_launch_answer(
            &mut status,
            launch_key,
            answer.clone(),
            caps,
            ctx.settings.launch_window,
            ctx.settings.poll_interval,
            Timestamp::now(),
        ) else {
            // Someone already recorded the outcome (or the intent is gone).
            break;
        };
        let result = match tested
            .take()
            .and_then(|stored| answer_patch(stored.as_ref(), launch_key, &status))
        {
            Some(patch) => write_status_tested(api, &current, patch, &ctx.metrics).await,
            None => write_status(api, &current, &status, &ctx.metrics).await,
        };
        match result {
            Ok(updated) => {
                if let Some((t, p)) = effect.started {
                    ctx.metrics.job_started(t, p);
                }
                if let Some(f) = &effect.finished {
                    ctx.metrics
                        .job_finished(f.job_type, f.provider, f.state, f.duration);
                }
                if let Some(nb) = effect.not_before {
                    ctx.memory()
                        .not_before
                        .insert(uid.to_string(), (nb, effect.refusal.clone()));
                }
                // The launch answer is as fresh as a poll: the wake-up our own write causes is no
                // reason to ask the provider again (and write again) right away.
                if let LaunchAnswer::Started(job) = answer {
                    ctx.memory()
                        .polled
                        .insert((uid.to_string(), job.job_id.clone()), Instant::now());
                }
                return Ok(LaunchOutcome {
                    replaced: replaced_version(&current, &updated),
                    current: updated,
                    events: effect.events,
                    remove_finalizer: effect.remove_finalizer,
                    requeue_after: effect.requeue_after,
                });
            }
            Err(e) if is_conflict(&e) || is_failed_test(&e) => {
                ctx.metrics.write_conflict("answer");
                let mut fresh = api.get_status(&name).await?;
                slim(&mut fresh);
                if status_never_written(fresh.status.as_ref()) {
                    // A first intent recorded with the finalizer is in no status yet: the answer
                    // goes onto the status this pass was writing, not onto an empty one.
                    fresh.status = current.status.take();
                }
                current = fresh;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(LaunchOutcome {
        current,
        replaced: None,
        events: Vec::new(),
        remove_finalizer: false,
        requeue_after: Some(Duration::from_secs(1)),
    })
}

/// When a pass that worked from a stale object runs again, unless the fresh object's watch event
/// comes first.
pub(crate) const STALE_RETRY: Duration = Duration::from_millis(200);

/// Takes the result of one of a pass's writes: the written object becomes `current` (and the
/// version it replaced is noted in `replaced`); `Ok(false)` when the API server refused it with
/// 409, that is, the pass worked from a stale object and ends (the fresh object is on its way
/// through the watch).
pub(crate) fn advance(
    result: Result<ComputeInstance, kube::Error>,
    current: &mut ComputeInstance,
    replaced: &mut Vec<String>,
    ctx: &Context,
    write: &'static str,
) -> Result<bool, Error> {
    match result {
        Ok(updated) => {
            replaced.extend(replaced_version(current, &updated));
            *current = updated;
            Ok(true)
        }
        Err(e) if is_conflict(&e) || is_failed_test(&e) => {
            ctx.metrics.write_conflict(write);
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// The resourceVersion a write replaced: `before`'s, unless the write changed nothing (the API
/// server then keeps the version, and that version is current, not superseded).
pub(crate) fn replaced_version(
    before: &ComputeInstance,
    after: &ComputeInstance,
) -> Option<String> {
    let old = before.resource_version()?;
    (after.resource_version().as_ref() != Some(&old)).then_some(old)
}

/// Writes the operator's status with a JSON merge patch whose resourceVersion is a precondition:
/// a write based on a stale read fails with 409 instead of overwriting newer state. Fields that
/// became empty are sent as `null` so they are removed. The status starts from the one read, so
/// conditions of other writers are carried over.
///
/// Server-side apply would be the natural fit, but API servers of the 1.20 line turn an empty
/// string inside a list item (the job id of a recorded intent) into `null` and reject it.
pub(crate) async fn write_status(
    api: &Api<ComputeInstance>,
    current: &ComputeInstance,
    status: &ComputeInstanceStatus,
    metrics: &Metrics,
) -> Result<ComputeInstance, kube::Error> {
    let body = status_patch(current, status);
    tracing::debug!(
        ci = %current.name_any(),
        changed = ?changed_fields(current.status.as_ref(), &body["status"]),
        "writing status"
    );
    metrics.status_written();
    let mut updated = api
        .patch_status(&current.name_any(), &patch_params(), &Patch::Merge(&body))
        .await?;
    slim(&mut updated);
    Ok(updated)
}

/// The status fields a write changes, for the debug log; for conditions, the types whose
/// status or reason changes.
fn changed_fields(old: Option<&ComputeInstanceStatus>, new: &serde_json::Value) -> Vec<String> {
    let old = old
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or_default();
    let mut changed = Vec::new();
    for key in STATUS_FIELDS {
        let (before, after) = (&old[key], &new[key]);
        if before == after || (before.is_null() && after.is_null()) {
            continue;
        }
        if key == "conditions" {
            let summary = |v: &serde_json::Value| -> Vec<(String, String, String)> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .map(|c| {
                                (
                                    c["type"].as_str().unwrap_or_default().to_string(),
                                    c["status"].as_str().unwrap_or_default().to_string(),
                                    c["reason"].as_str().unwrap_or_default().to_string(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default()
            };
            let before = summary(before);
            for (type_, status, reason) in summary(after) {
                if !before.contains(&(type_.clone(), status.clone(), reason.clone())) {
                    changed.push(format!("{type_}={status}/{reason}"));
                }
            }
        } else {
            changed.push(key.to_string());
        }
    }
    changed
}

/// The answer's write as a JSON patch: tests that the intent under `launch_key` is still in the
/// stored status without a job id (or, for a first intent recorded in the annotation, that the
/// object has no status at all), then sets the whole status. `None` when the stored status
/// does not hold the intent (the write then falls back to the resourceVersion precondition).
pub(crate) fn answer_patch(
    stored: Option<&ComputeInstanceStatus>,
    launch_key: &str,
    status: &ComputeInstanceStatus,
) -> Option<json_patch::Patch> {
    let value = serde_json::to_value(status).ok()?;
    let ops = match stored {
        None => serde_json::json!([
            // A missing member tests equal to null (RFC 6902 as Kubernetes applies it).
            { "op": "test", "path": "/status", "value": null },
            { "op": "add", "path": "/status", "value": value },
        ]),
        Some(stored) => {
            let i = stored
                .jobs
                .iter()
                .position(|j| j.launch_key.as_deref() == Some(launch_key))?;
            serde_json::json!([
                { "op": "test", "path": format!("/status/jobs/{i}/launchKey"), "value": launch_key },
                { "op": "test", "path": format!("/status/jobs/{i}/jobID"), "value": null },
                { "op": "replace", "path": "/status", "value": value },
            ])
        }
    };
    serde_json::from_value(ops).ok()
}

/// A write that only records what polls found out about jobs the stored status already holds
/// under a job id (their state, message, times), and the condition messages that tell it, as a
/// JSON patch: tests that each such job is still at its place with the id and state read (and
/// each such message is what was read), and replaces only those. The
/// automation's metadata writes in between (its finalizer, its annotation) then do not refuse
/// it, as a resourceVersion precondition would; what the poll found is true whatever they
/// changed. `None` for any other change (the write keeps the precondition).
pub(crate) fn progress_patch(
    stored: Option<&ComputeInstanceStatus>,
    status: &ComputeInstanceStatus,
) -> Option<json_patch::Patch> {
    let stored = stored?;
    let (Ok(serde_json::Value::Object(mut old)), Ok(serde_json::Value::Object(mut new))) =
        (serde_json::to_value(stored), serde_json::to_value(status))
    else {
        return None;
    };
    let (old_jobs, new_jobs) = (old.remove("jobs"), new.remove("jobs"));
    let (old_conditions, new_conditions) = (old.remove("conditions"), new.remove("conditions"));
    if old != new || stored.jobs.len() != status.jobs.len() {
        return None;
    }
    let (old_jobs, new_jobs) = (old_jobs?, new_jobs?);
    let mut ops = Vec::new();
    // Conditions that tell the job's state in their message (`ConfigurationApplied`: "... job 1
    // is Running"): only messages may change, each tested.
    if old_conditions != new_conditions {
        let (old_c, new_c) = (old_conditions?, new_conditions?);
        let (old_c, new_c) = (old_c.as_array()?, new_c.as_array()?);
        if old_c.len() != new_c.len() {
            return None;
        }
        for (k, (was, is)) in old_c.iter().zip(new_c).enumerate() {
            let (mut was_rest, mut is_rest) = (was.clone(), is.clone());
            was_rest.as_object_mut()?.remove("message");
            is_rest.as_object_mut()?.remove("message");
            if was_rest != is_rest {
                return None;
            }
            if was["message"] != is["message"] {
                ops.push(serde_json::json!({
                    "op": "test", "path": format!("/status/conditions/{k}/message"),
                    "value": was["message"] }));
                ops.push(serde_json::json!({
                    "op": "replace", "path": format!("/status/conditions/{k}/message"),
                    "value": is["message"] }));
            }
        }
    }
    for (i, (was, is)) in stored.jobs.iter().zip(&status.jobs).enumerate() {
        if old_jobs[i] == new_jobs[i] {
            continue;
        }
        if was.job_id.is_empty()
            || was.job_id != is.job_id
            || was.launch_key != is.launch_key
            || was.job_type != is.job_type
        {
            return None;
        }
        ops.push(serde_json::json!({
            "op": "test", "path": format!("/status/jobs/{i}/jobID"), "value": was.job_id }));
        ops.push(serde_json::json!({
            "op": "test", "path": format!("/status/jobs/{i}/state"), "value": old_jobs[i]["state"] }));
        ops.push(serde_json::json!({
            "op": "replace", "path": format!("/status/jobs/{i}"), "value": new_jobs[i] }));
    }
    // Only a job's change warrants a write without the resourceVersion.
    if !ops.iter().any(|op| {
        op["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/status/jobs/"))
    }) {
        return None;
    }
    serde_json::from_value(serde_json::Value::Array(ops)).ok()
}

/// Writes the status with `patch` (from [`answer_patch`] or [`progress_patch`]).
pub(crate) async fn write_status_tested(
    api: &Api<ComputeInstance>,
    current: &ComputeInstance,
    patch: json_patch::Patch,
    metrics: &Metrics,
) -> Result<ComputeInstance, kube::Error> {
    tracing::debug!(ci = %current.name_any(), "writing a tested status patch");
    metrics.status_written();
    let mut updated = api
        .patch_status(
            &current.name_any(),
            &patch_params(),
            &Patch::Json::<()>(patch),
        )
        .await?;
    slim(&mut updated);
    Ok(updated)
}

/// The body of [`write_status`].
fn status_patch(current: &ComputeInstance, status: &ComputeInstanceStatus) -> serde_json::Value {
    let mut fields = match serde_json::to_value(status) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    for key in STATUS_FIELDS {
        fields
            .entry(key.to_string())
            .or_insert(serde_json::Value::Null);
    }
    serde_json::json!({
        "metadata": { "resourceVersion": current.resource_version() },
        "status": fields,
    })
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Every status field the operator writes (see `ComputeInstanceStatus`).
const STATUS_FIELDS: [&str; 9] = [
    "phase",
    "conditions",
    "observedGeneration",
    "desiredConfigVersion",
    "reconciledConfigVersion",
    "jobs",
    "lastRestartedAt",
    "tenantReference",
    "virtualMachineReference",
];

/// Adds or removes the operator's finalizer, keeping every other finalizer, with the object's
/// resourceVersion as a precondition; with `intent`, records it in the provision-intent
/// annotation in the same patch.
pub(crate) async fn set_finalizer(
    api: &Api<ComputeInstance>,
    current: &ComputeInstance,
    present: bool,
    intent: Option<&JobStatus>,
) -> Result<ComputeInstance, kube::Error> {
    let body = finalizer_patch(current, present, intent);
    let mut updated = api
        .patch(
            &current.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&body),
        )
        .await?;
    slim(&mut updated);
    Ok(updated)
}

/// The JSON patch of [`remove_finalizer`]; `None` when `current` does not carry the finalizer.
pub(crate) fn finalizer_removal(current: &ComputeInstance) -> Option<json_patch::Patch> {
    let i = current.finalizers().iter().position(|f| f == FINALIZER)?;
    let path = format!("/metadata/finalizers/{i}");
    serde_json::from_value(serde_json::json!([
        { "op": "test", "path": path, "value": FINALIZER },
        { "op": "remove", "path": path },
    ]))
    .ok()
}

/// The body of [`set_finalizer`].
fn finalizer_patch(
    current: &ComputeInstance,
    present: bool,
    intent: Option<&JobStatus>,
) -> serde_json::Value {
    let mut finalizers: Vec<String> = current
        .finalizers()
        .iter()
        .filter(|f| f.as_str() != FINALIZER)
        .cloned()
        .collect();
    if present {
        finalizers.push(FINALIZER.to_string());
    }
    let mut body = serde_json::json!({
        "metadata": {
            "resourceVersion": current.resource_version(),
            "finalizers": finalizers,
        }
    });
    if let Some(job) = intent {
        body["metadata"]["annotations"] =
            serde_json::json!({ PROVISION_INTENT_ANNOTATION: cloudkit_api::intent::encode(job) });
    }
    body
}

/// Removes the operator's finalizer, the last write of a pass, with a JSON patch that tests it
/// is still where it was read: other finalizers coming and going at later places (the
/// automation removing its own as its deprovision ends) do not refuse it. `Ok(false)` when the
/// API server refused it (the list changed before it; the fresh object is on its way); an
/// object already gone, or without the finalizer, needs no removal.
pub(crate) async fn remove_finalizer(
    api: &Api<ComputeInstance>,
    current: &ComputeInstance,
    ctx: &Context,
) -> Result<bool, Error> {
    let Some(patch) = finalizer_removal(current) else {
        return Ok(true);
    };
    match api
        .patch(
            &current.name_any(),
            &PatchParams::default(),
            &Patch::Json::<()>(patch),
        )
        .await
    {
        Ok(_) => {
            tracing::debug!(ci = %current.name_any(), "removed the finalizer");
            Ok(true)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => {
            tracing::debug!(ci = %current.name_any(), "the CI went before its finalizer was removed");
            Ok(true)
        }
        Err(e) if is_conflict(&e) || is_failed_test(&e) => {
            tracing::debug!(ci = %current.name_any(), error = %e, "finalizer removal refused");
            ctx.metrics.write_conflict("finalizer");
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// A JSON patch whose `test` failed: 422 Unprocessable Entity.
fn is_failed_test(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 422)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::set_condition;
    use cloudkit_api::metadata::AAP_FINALIZER;
    use serde_json::json;

    fn at_version(rv: &str) -> ComputeInstance {
        let mut ci =
            ComputeInstance::new("vm", cloudkit_api::ComputeInstanceSpec::for_template("t"));
        ci.metadata.resource_version = Some(rv.into());
        ci
    }

    #[test]
    fn the_finalizer_patch_keeps_other_finalizers_and_carries_the_first_intent() {
        let mut ci = at_version("5");
        ci.metadata.finalizers = Some(vec![AAP_FINALIZER.into()]);
        assert_eq!(
            finalizer_patch(&ci, true, None),
            json!({"metadata": {"resourceVersion": "5", "finalizers": [AAP_FINALIZER, FINALIZER]}})
        );
        let mut intent = JobStatus::new(
            "",
            JobType::Provision,
            Time(Timestamp::UNIX_EPOCH),
            JobState::Pending,
        );
        intent.launch_key = Some("uid-1/provision/abc/1".into());
        assert_eq!(
            finalizer_patch(&ci, true, Some(&intent)),
            json!({"metadata": {
                "resourceVersion": "5",
                "finalizers": [AAP_FINALIZER, FINALIZER],
                "annotations": {PROVISION_INTENT_ANNOTATION: cloudkit_api::intent::encode(&intent)},
            }})
        );
        ci.metadata.finalizers = Some(vec![FINALIZER.into(), AAP_FINALIZER.into()]);
        assert_eq!(
            finalizer_patch(&ci, false, None),
            json!({"metadata": {"resourceVersion": "5", "finalizers": [AAP_FINALIZER]}})
        );
    }

    #[test]
    fn the_finalizer_removal_tests_the_place_it_read() {
        let mut ci = at_version("5");
        assert!(finalizer_removal(&ci).is_none(), "nothing to remove");
        ci.metadata.finalizers = Some(vec![AAP_FINALIZER.into(), FINALIZER.into()]);
        let patch = serde_json::to_value(finalizer_removal(&ci).unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/finalizers/1", "value": FINALIZER},
                {"op": "remove", "path": "/metadata/finalizers/1"},
            ])
        );
    }

    #[test]
    fn the_answer_patch_tests_the_intent_it_answers() {
        let key = "uid-1/provision/abc/1";
        let mut intent = JobStatus::new(
            "",
            JobType::Provision,
            Time(Timestamp::UNIX_EPOCH),
            JobState::Pending,
        );
        intent.launch_key = Some(key.into());
        let mut answered = intent.clone();
        answered.job_id = "42".into();
        answered.state = JobState::Running;
        let status = ComputeInstanceStatus {
            jobs: vec![answered],
            ..ComputeInstanceStatus::default()
        };
        let body = serde_json::to_value(&status).unwrap();

        // A first intent recorded with the finalizer: the object has no status yet.
        let patch = serde_json::to_value(answer_patch(None, key, &status).unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/status", "value": null},
                {"op": "add", "path": "/status", "value": body},
            ])
        );

        // An intent in the stored status: its place, its key, no job id yet.
        let mut older = intent.clone();
        older.launch_key = Some("uid-1/provision/old/1".into());
        older.job_id = "7".into();
        let stored = ComputeInstanceStatus {
            jobs: vec![older, intent],
            ..ComputeInstanceStatus::default()
        };
        let patch =
            serde_json::to_value(answer_patch(Some(&stored), key, &status).unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/status/jobs/1/launchKey", "value": key},
                {"op": "test", "path": "/status/jobs/1/jobID", "value": null},
                {"op": "replace", "path": "/status", "value": body},
            ])
        );

        // A stored status without the intent: no tested patch (the precondition write instead).
        assert!(answer_patch(Some(&ComputeInstanceStatus::default()), key, &status).is_none());
    }

    #[test]
    fn a_polled_job_state_is_a_tested_patch_of_its_entry_alone() {
        let job = |id: &str, state: JobState| {
            let mut j = JobStatus::new(id, JobType::Provision, Time(Timestamp::UNIX_EPOCH), state);
            j.launch_key = Some(format!("uid-1/provision/abc/{id}"));
            j
        };
        let status = |jobs: Vec<JobStatus>| {
            let message = format!("provision job 42 is {}", jobs[jobs.len() - 1].state);
            let mut conditions = Vec::new();
            set_condition(
                &mut conditions,
                "ConfigurationApplied",
                false,
                "Applying",
                &message,
                Some(1),
                Timestamp::UNIX_EPOCH,
            );
            ComputeInstanceStatus {
                desired_config_version: Some("abc".into()),
                jobs,
                conditions,
                ..ComputeInstanceStatus::default()
            }
        };
        let stored = status(vec![
            job("7", JobState::Succeeded),
            job("42", JobState::Pending),
        ]);
        let mut running = job("42", JobState::Running);
        running.message = Some("running".into());
        let polled = status(vec![job("7", JobState::Succeeded), running.clone()]);
        let patch = serde_json::to_value(progress_patch(Some(&stored), &polled).unwrap()).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/status/conditions/0/message",
                 "value": "provision job 42 is Pending"},
                {"op": "replace", "path": "/status/conditions/0/message",
                 "value": "provision job 42 is Running"},
                {"op": "test", "path": "/status/jobs/1/jobID", "value": "42"},
                {"op": "test", "path": "/status/jobs/1/state", "value": "Pending"},
                {"op": "replace", "path": "/status/jobs/1", "value": serde_json::to_value(&running).unwrap()},
            ])
        );

        // Anything else keeps the resourceVersion precondition.
        let mut phase = polled.clone();
        phase.phase = Some(cloudkit_api::Phase::Running);
        let added = status(vec![
            job("7", JobState::Succeeded),
            job("42", JobState::Pending),
            job("43", JobState::Pending),
        ]);
        let answered = status(vec![
            job("7", JobState::Succeeded),
            job("", JobState::Pending),
        ]);
        let other_id = status(vec![
            job("7", JobState::Succeeded),
            job("44", JobState::Running),
        ]);
        let mut reason = polled.clone();
        reason.conditions[0].reason = "Applied".into();
        for (what, stored, new) in [
            ("another field too", Some(&stored), &phase),
            ("a job added", Some(&stored), &added),
            ("an intent without id", Some(&answered), &polled),
            ("another job id", Some(&stored), &other_id),
            ("a condition's reason", Some(&stored), &reason),
            ("nothing changed", Some(&stored), &stored),
            ("no stored status", None, &polled),
        ] {
            assert!(progress_patch(stored, new).is_none(), "{what}");
        }
    }

    #[test]
    fn the_status_patch_is_conditional_and_clears_emptied_fields() {
        let status = ComputeInstanceStatus {
            desired_config_version: Some("abc".into()),
            ..ComputeInstanceStatus::default()
        };
        assert_eq!(
            status_patch(&at_version("7"), &status),
            json!({
                "metadata": {"resourceVersion": "7"},
                "status": {
                    "desiredConfigVersion": "abc",
                    "phase": null,
                    "conditions": null,
                    "observedGeneration": null,
                    "reconciledConfigVersion": null,
                    "jobs": null,
                    "lastRestartedAt": null,
                    "tenantReference": null,
                    "virtualMachineReference": null,
                },
            })
        );
    }
    use cloudkit_api::{JobState, JobType, Phase};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn status_fields_cover_the_status_type() {
        let t = Time(Timestamp::UNIX_EPOCH);
        let full = ComputeInstanceStatus {
            phase: Some(Phase::Running),
            conditions: vec![Condition {
                type_: "A".into(),
                status: "True".into(),
                reason: "R".into(),
                message: String::new(),
                observed_generation: None,
                last_transition_time: t.clone(),
            }],
            observed_generation: Some(1),
            desired_config_version: Some("a".into()),
            reconciled_config_version: Some("a".into()),
            jobs: vec![JobStatus::new(
                "1",
                JobType::Provision,
                t,
                JobState::Running,
            )],
            last_restarted_at: Some(Time(Timestamp::UNIX_EPOCH)),
            tenant_reference: Some(cloudkit_api::TenantReference {
                name: "t".into(),
                namespace: "ns".into(),
            }),
            virtual_machine_reference: Some(cloudkit_api::VirtualMachineReference {
                namespace: "t-ns".into(),
                kube_virt_virtual_machine_name: "vm".into(),
            }),
        };
        let value = serde_json::to_value(&full).unwrap_or_default();
        let mut keys: Vec<&str> = value
            .as_object()
            .map(|m| m.keys().map(String::as_str).collect())
            .unwrap_or_default();
        keys.sort_unstable();
        let mut want = STATUS_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
    }

    #[test]
    fn a_write_that_changed_nothing_replaced_no_version() {
        let at = |rv: &str| {
            let mut ci =
                ComputeInstance::new("vm", cloudkit_api::ComputeInstanceSpec::for_template("t"));
            ci.metadata.resource_version = Some(rv.into());
            ci
        };
        assert_eq!(replaced_version(&at("5"), &at("6")), Some("5".into()));
        assert_eq!(replaced_version(&at("5"), &at("5")), None);
    }
}
