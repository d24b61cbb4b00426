//! The changes the plugin makes, as patches built from the CI and the current time.

use cloudkit_api::ComputeInstance;
use cloudkit_api::metadata::{AAP_FINALIZER, MANAGEMENT_STATE_ANNOTATION, RETRY_ANNOTATION};
use jiff::Timestamp;
use serde_json::{Value, json};

/// The value the management-state annotation gets on `release`.
pub const MANUAL: &str = "manual";

/// The next value of the retry annotation: the current Unix time in seconds, as
/// `date +%s` gives it. The operator acts on any value that differs from the one it last acted
/// on; should the current value be a number not below now (two retries within a second, or a
/// clock behind), it is that number plus one, so the new value always differs.
pub fn retry_token(now: Timestamp, current: Option<&str>) -> String {
    let now = now.as_second();
    match current.and_then(|c| c.trim().parse::<i64>().ok()) {
        Some(c) if c >= now => c.saturating_add(1).to_string(),
        _ => now.to_string(),
    }
}

/// A merge patch that sets one annotation.
pub fn annotation_patch(key: &str, value: &str) -> Value {
    json!({"metadata": {"annotations": {key: value}}})
}

/// The merge patch of `retry`.
pub fn retry_patch(token: &str) -> Value {
    annotation_patch(RETRY_ANNOTATION, token)
}

/// `now` at whole seconds in RFC 3339 with `Z`: the operator compares restart requests in whole
/// seconds.
pub fn restart_time(now: Timestamp) -> String {
    Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

/// The merge patch of `restart`.
pub fn restart_patch(at: &str) -> Value {
    json!({"spec": {"restartRequestedAt": at}})
}

/// The merge patch of `release`.
pub fn release_patch() -> Value {
    annotation_patch(MANAGEMENT_STATE_ANNOTATION, MANUAL)
}

/// What `release` does, in one line, for the refusal without the confirmation flag.
pub fn release_refusal(remove_aap_finalizer: bool) -> String {
    let finalizer = if remove_aap_finalizer {
        format!(" and remove the automation's finalizer {AAP_FINALIZER}")
    } else {
        String::new()
    };
    format!(
        "release would set {MANAGEMENT_STATE_ANNOTATION}={MANUAL}{finalizer}: the operator \
         then drops its finalizer without deprovisioning, so the VM may be left behind; \
         add --yes-i-know to do it"
    )
}

/// Why `release` refuses to touch this CI, if it does: it is the escape hatch for a deletion that
/// does not finish, so the CI must be being deleted.
pub fn release_precondition(ci: &ComputeInstance) -> Result<(), String> {
    if ci.metadata.deletion_timestamp.is_none() {
        return Err(
            "not being deleted; release only frees a deletion that does not finish \
             (delete the CI first)"
                .to_string(),
        );
    }
    Ok(())
}

/// A merge patch that removes the automation's finalizer from `finalizers` (the CI's list at
/// `resource_version`) and keeps the others. It carries the resource version, so that a
/// concurrent change of the CI makes the API server refuse it (409) instead of dropping a
/// finalizer added meanwhile. `None` when the finalizer is not there.
pub fn remove_aap_finalizer_patch(finalizers: &[String], resource_version: &str) -> Option<Value> {
    if !finalizers.iter().any(|f| f == AAP_FINALIZER) {
        return None;
    }
    let kept: Vec<&String> = finalizers.iter().filter(|f| *f != AAP_FINALIZER).collect();
    Some(json!({"metadata": {"resourceVersion": resource_version, "finalizers": kept}}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudkit_api::ComputeInstanceSpec;
    use cloudkit_api::metadata::FINALIZER;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_retry_token_always_changes() {
        let now = at(1_772_366_400);
        assert_eq!(retry_token(now, None), "1772366400");
        assert_eq!(retry_token(now, Some("1772366399")), "1772366400");
        assert_eq!(
            retry_token(now, Some("1772366400")),
            "1772366401",
            "same second"
        );
        assert_eq!(
            retry_token(now, Some("1772366500")),
            "1772366501",
            "clock behind"
        );
        assert_eq!(
            retry_token(now, Some("try-again")),
            "1772366400",
            "not a number"
        );
        assert_eq!(
            retry_patch("5"),
            json!({"metadata": {"annotations": {"cloudkit.openshift.io/retry": "5"}}})
        );
    }

    #[test]
    fn restarts_are_requested_at_whole_seconds() {
        let now = at(1_772_366_400)
            .checked_add(jiff::SignedDuration::from_millis(999))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let t = restart_time(now);
        assert_eq!(t, "2026-03-01T12:00:00Z");
        assert_eq!(
            restart_patch(&t),
            json!({"spec": {"restartRequestedAt": "2026-03-01T12:00:00Z"}})
        );
    }

    #[test]
    fn release_sets_management_state_manual_on_a_deleting_ci_only() {
        assert_eq!(
            release_patch(),
            json!({"metadata": {"annotations": {"cloudkit.openshift.io/management-state": "manual"}}})
        );
        let mut ci = ComputeInstance::new("vm", ComputeInstanceSpec::for_template("t"));
        let refused = release_precondition(&ci).err().unwrap_or_default();
        assert!(refused.contains("not being deleted"), "{refused}");
        ci.metadata.deletion_timestamp = Some(Time(at(0)));
        assert_eq!(release_precondition(&ci), Ok(()));
    }

    #[test]
    fn the_refusal_says_what_release_would_do() {
        let line = release_refusal(false);
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("release would set cloudkit.openshift.io/management-state=manual: "),
            "{line}"
        );
        assert!(line.contains("--yes-i-know"), "{line}");
        assert!(!line.contains(AAP_FINALIZER), "{line}");
        assert!(release_refusal(true).contains(AAP_FINALIZER));
    }

    #[test]
    fn only_the_automation_finalizer_is_removed() {
        assert_eq!(
            remove_aap_finalizer_patch(&[FINALIZER.to_string()], "7"),
            None
        );
        let patch = remove_aap_finalizer_patch(
            &[
                FINALIZER.to_string(),
                AAP_FINALIZER.to_string(),
                "other".to_string(),
            ],
            "7",
        );
        assert_eq!(
            patch,
            Some(json!({"metadata": {"resourceVersion": "7", "finalizers": [FINALIZER, "other"]}}))
        );
    }
}
