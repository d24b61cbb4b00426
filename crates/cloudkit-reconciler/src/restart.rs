//! SPEC 11: restarting a CI's VM when `spec.restartRequestedAt` moves past
//! `status.lastRestartedAt`.
//!
//! A restart deletes the VirtualMachineInstance; KubeVirt creates a new one. Exactly one
//! deletion per request, also across operator restarts, comes from recording the intent first:
//! the `RestartInProgress=True` condition, whose `lastTransitionTime` (T0) is written before
//! the VMI is deleted. A VMI created at or after T0 is the new one; a VMI created before it is
//! the old one, still to be deleted (the operator stopped between the two writes). So that "at
//! or after T0" cannot match the old VMI, no intent is recorded in the same second in which the
//! current VMI was created. The request a restart serves is part of its messages, so a new
//! request that arrives during a restart runs after it.

use std::time::Duration;

use cloudkit_api::ComputeInstanceStatus;
use cloudkit_api::VirtualMachineReference;
use cloudkit_api::metadata::{CONDITION_RESTART_FAILED, CONDITION_RESTART_IN_PROGRESS};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::conditions::{find_condition, remove_condition, set_condition};

/// How soon a restart under way is looked at again.
pub const RESTART_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Reasons of the restart conditions.
pub mod reason {
    /// `RestartInProgress`: the VMI was (or is being) deleted.
    pub const IN_PROGRESS: &str = "RestartInProgress";
    /// `RestartFailed`: the CI has no VirtualMachine yet.
    pub const NO_VM_REFERENCE: &str = "NoVMReference";
    /// `RestartFailed`: deleting the VMI failed.
    pub const VMI_DELETION_FAILED: &str = "VMIDeletionFailed";
    /// `RestartFailed`: no new VMI appeared within the restart timeout.
    pub const TIMED_OUT: &str = "RestartTimedOut";
}

/// The VirtualMachineInstance named by the CI's VM reference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum VmiState {
    /// Not looked up (no restart pending, or no reference).
    #[default]
    Unknown,
    /// It does not exist.
    Missing,
    /// It exists, created at this time.
    Present {
        /// Its `metadata.creationTimestamp`.
        created: Timestamp,
        /// Its `metadata.uid`: the deletion is made with it as a precondition, so that a VMI
        /// KubeVirt has already recreated is never deleted in its place.
        uid: String,
    },
}

/// The one change a restart makes to the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteVmi {
    /// Namespace of the VMI.
    pub namespace: String,
    /// Name of the VMI (the VirtualMachine's name).
    pub name: String,
    /// The uid of the VMI to delete (a precondition of the deletion).
    pub uid: String,
    /// The VMI to delete was created before this time; a newer one is already the restart's.
    pub created_before: Timestamp,
}

/// What a pass does about restarts.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RestartPlan {
    /// Delete this VMI after the status (with the intent) is written.
    pub delete: Option<DeleteVmi>,
    /// Look again after this long.
    pub requeue_after: Option<Duration>,
}

/// Whether a restart is pending: the request is later than the last restart, compared at whole
/// seconds as both are stored.
pub fn restart_pending(requested: Option<&Time>, last: Option<&Time>) -> bool {
    match (requested, last) {
        (None, _) => false,
        (Some(_), None) => true,
        (Some(r), Some(l)) => r.0.as_second() > l.0.as_second(),
    }
}

fn rfc3339(t: Timestamp) -> String {
    // Whole seconds, as the API server stores times.
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// Whether a pass needs the VMI looked up: a restart is pending or under way.
pub fn needs_vmi(ci: &cloudkit_api::ComputeInstance) -> bool {
    let status = ci.status.as_ref();
    restart_pending(
        ci.spec.restart_requested_at.as_ref(),
        status.and_then(|s| s.last_restarted_at.as_ref()),
    ) || status.is_some_and(|s| {
        find_condition(&s.conditions, CONDITION_RESTART_IN_PROGRESS)
            .is_some_and(|c| c.status == "True")
    })
}

/// `RestartInProgress` message once the VMI is being deleted.
pub fn initiated_message(request: Timestamp) -> String {
    format!("Restart initiated at {}", rfc3339(request))
}

/// `RestartInProgress` message while there is no VMI to delete.
pub fn waiting_message(request: Timestamp) -> String {
    format!(
        "Waiting for VMI to be created (restart requested at {})",
        rfc3339(request)
    )
}

/// The request a restart condition's message serves, in whole seconds.
pub fn served_request(message: &str) -> Option<i64> {
    let text = message.strip_prefix("Restart initiated at ").or_else(|| {
        message
            .rsplit_once("restart requested at ")
            .map(|(_, rest)| rest.trim_end_matches(')'))
    })?;
    let end = text
        .find(|c: char| c == ')' || c.is_whitespace())
        .unwrap_or(text.len());
    text[..end].parse::<Timestamp>().ok().map(|t| t.as_second())
}

/// The restart rules of SPEC 11 for one pass. `requested` is `spec.restartRequestedAt`; the
/// status holds `lastRestartedAt`, the VM reference and the restart conditions, and is updated
/// in place.
pub fn plan_restart(
    requested: Option<&Time>,
    status: &mut ComputeInstanceStatus,
    vmi: VmiState,
    generation: Option<i64>,
    now: Timestamp,
    timeout: Duration,
) -> RestartPlan {
    let mut plan = RestartPlan::default();
    let in_progress = find_condition(&status.conditions, CONDITION_RESTART_IN_PROGRESS)
        .filter(|c| c.status == "True")
        .map(|c| (served_request(&c.message), c.last_transition_time.0));
    let set = |status: &mut ComputeInstanceStatus, type_: &str, reason: &str, message: &str| {
        set_condition(
            &mut status.conditions,
            type_,
            true,
            reason,
            message,
            generation,
            now,
        );
    };

    // A restart under way finishes (or times out) before the next request is looked at.
    if let Some((Some(served), started)) = in_progress {
        let served_at = Timestamp::from_second(served).unwrap_or(now);
        let reference = status.virtual_machine_reference.clone();
        match (vmi, reference) {
            (VmiState::Present { created, .. }, _)
                if created.as_second() >= started.as_second() =>
            {
                status.last_restarted_at = Some(Time(served_at));
                remove_condition(&mut status.conditions, CONDITION_RESTART_IN_PROGRESS);
                remove_condition(&mut status.conditions, CONDITION_RESTART_FAILED);
                if restart_pending(requested, status.last_restarted_at.as_ref()) {
                    plan.requeue_after = Some(Duration::ZERO);
                }
                return plan;
            }
            _ if timed_out(started, now, timeout) => {
                remove_condition(&mut status.conditions, CONDITION_RESTART_IN_PROGRESS);
                let message = format!(
                    "no new VirtualMachineInstance within {} (restart requested at {})",
                    humantime(timeout),
                    rfc3339(served_at)
                );
                set(
                    status,
                    CONDITION_RESTART_FAILED,
                    reason::TIMED_OUT,
                    &message,
                );
                return plan;
            }
            (VmiState::Present { uid, .. }, Some(r)) => {
                set(
                    status,
                    CONDITION_RESTART_IN_PROGRESS,
                    reason::IN_PROGRESS,
                    &initiated_message(served_at),
                );
                plan.delete = Some(delete_target(&r, uid, started));
            }
            _ => set(
                status,
                CONDITION_RESTART_IN_PROGRESS,
                reason::IN_PROGRESS,
                &waiting_message(served_at),
            ),
        }
        plan.requeue_after = Some(RESTART_CHECK_INTERVAL);
        return plan;
    }

    let Some(request) =
        requested.filter(|_| restart_pending(requested, status.last_restarted_at.as_ref()))
    else {
        remove_condition(&mut status.conditions, CONDITION_RESTART_IN_PROGRESS);
        remove_condition(&mut status.conditions, CONDITION_RESTART_FAILED);
        return plan;
    };
    let request = request.0;
    // A restart for this very request that timed out stays failed until the next request.
    if find_condition(&status.conditions, CONDITION_RESTART_FAILED).is_some_and(|c| {
        c.reason == reason::TIMED_OUT && served_request(&c.message) == Some(request.as_second())
    }) {
        return plan;
    }
    // A condition this code did not write (its message names no request) starts afresh, so
    // that its transition time is this pass's.
    remove_condition(&mut status.conditions, CONDITION_RESTART_IN_PROGRESS);
    let Some(reference) = status.virtual_machine_reference.clone() else {
        let message = format!(
            "no VirtualMachine to restart yet (restart requested at {}); retried when one appears",
            rfc3339(request)
        );
        set(
            status,
            CONDITION_RESTART_FAILED,
            reason::NO_VM_REFERENCE,
            &message,
        );
        return plan;
    };
    match vmi {
        VmiState::Present { created, .. } if created.as_second() >= now.as_second() => {
            // The VMI is from this very second: wait, so that T0 tells it from its successor.
            plan.requeue_after = Some(Duration::from_secs(1));
            return plan;
        }
        VmiState::Present { uid, .. } => {
            remove_condition(&mut status.conditions, CONDITION_RESTART_FAILED);
            set(
                status,
                CONDITION_RESTART_IN_PROGRESS,
                reason::IN_PROGRESS,
                &initiated_message(request),
            );
            plan.delete = Some(delete_target(&reference, uid, now));
        }
        VmiState::Missing | VmiState::Unknown => {
            remove_condition(&mut status.conditions, CONDITION_RESTART_FAILED);
            set(
                status,
                CONDITION_RESTART_IN_PROGRESS,
                reason::IN_PROGRESS,
                &waiting_message(request),
            );
        }
    }
    plan.requeue_after = Some(RESTART_CHECK_INTERVAL);
    plan
}

/// Records a failed VMI deletion on the status (the restart stays in progress and is retried).
pub fn record_delete_failure(
    status: &mut ComputeInstanceStatus,
    error: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    set_condition(
        &mut status.conditions,
        CONDITION_RESTART_FAILED,
        true,
        reason::VMI_DELETION_FAILED,
        &format!("deleting the VirtualMachineInstance failed: {error}"),
        generation,
        now,
    );
}

fn delete_target(r: &VirtualMachineReference, uid: String, created_before: Timestamp) -> DeleteVmi {
    DeleteVmi {
        namespace: r.namespace.clone(),
        name: r.kube_virt_virtual_machine_name.clone(),
        uid,
        created_before,
    }
}

fn timed_out(started: Timestamp, now: Timestamp, timeout: Duration) -> bool {
    let elapsed = now.as_second().saturating_sub(started.as_second());
    u64::try_from(elapsed).is_ok_and(|e| e > timeout.as_secs())
}

fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(600);

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn time(s: i64) -> Time {
        Time(t(s))
    }

    fn with_vm() -> ComputeInstanceStatus {
        ComputeInstanceStatus {
            virtual_machine_reference: Some(VirtualMachineReference {
                namespace: "tenant-ns".into(),
                kube_virt_virtual_machine_name: "vm-1".into(),
            }),
            ..Default::default()
        }
    }

    fn condition(status: &ComputeInstanceStatus, type_: &str) -> Option<(String, String)> {
        find_condition(&status.conditions, type_)
            .filter(|c| c.status == "True")
            .map(|c| (c.reason.clone(), c.message.clone()))
    }

    fn present(s: i64) -> VmiState {
        VmiState::Present {
            created: t(s),
            uid: format!("uid-{s}"),
        }
    }

    #[test]
    fn pending_compares_whole_seconds() {
        let frac = Time(t(10).checked_add(jiff_ms(500)).unwrap_or(t(10)));
        assert!(!restart_pending(None, None));
        assert!(restart_pending(Some(&time(10)), None));
        assert!(!restart_pending(Some(&time(10)), Some(&time(10))));
        assert!(
            !restart_pending(Some(&frac), Some(&time(10))),
            "stored without the fraction"
        );
        assert!(restart_pending(Some(&time(11)), Some(&time(10))));
        assert!(!restart_pending(Some(&time(9)), Some(&time(10))));
    }

    fn jiff_ms(ms: i64) -> k8s_openapi::jiff::SignedDuration {
        k8s_openapi::jiff::SignedDuration::from_millis(ms)
    }

    #[test]
    fn messages_name_the_request_they_serve() {
        let r = t(5);
        assert_eq!(served_request(&initiated_message(r)), Some(r.as_second()));
        assert_eq!(served_request(&waiting_message(r)), Some(r.as_second()));
        let frac = r.checked_add(jiff_ms(250)).unwrap_or(r);
        assert_eq!(initiated_message(frac), initiated_message(r));
        assert!(initiated_message(r).starts_with("Restart initiated at 2027-"));
        assert_eq!(served_request("something else"), None);
    }

    #[test]
    fn starting_a_restart() {
        let now = t(100);
        #[allow(clippy::type_complexity)]
        let rows: [(
            &str,
            ComputeInstanceStatus,
            VmiState,
            Option<&str>,
            Option<&str>,
            bool,
            Option<Duration>,
        ); 5] = [
            (
                "no VM yet",
                ComputeInstanceStatus::default(),
                VmiState::Unknown,
                None,
                Some(reason::NO_VM_REFERENCE),
                false,
                None,
            ),
            (
                "a VMI to delete",
                with_vm(),
                present(50),
                Some("Restart initiated at"),
                None,
                true,
                Some(RESTART_CHECK_INTERVAL),
            ),
            (
                "no VMI: wait for one",
                with_vm(),
                VmiState::Missing,
                Some("Waiting for VMI to be created"),
                None,
                false,
                Some(RESTART_CHECK_INTERVAL),
            ),
            (
                "a VMI from this very second: wait a second",
                with_vm(),
                present(100),
                None,
                None,
                false,
                Some(Duration::from_secs(1)),
            ),
            (
                "already done for this request",
                ComputeInstanceStatus {
                    last_restarted_at: Some(time(90)),
                    ..with_vm()
                },
                present(50),
                None,
                None,
                false,
                None,
            ),
        ];
        for (name, mut status, vmi, in_progress, failed, delete, requeue) in rows {
            let plan = plan_restart(Some(&time(90)), &mut status, vmi, Some(2), now, TIMEOUT);
            let ip = condition(&status, CONDITION_RESTART_IN_PROGRESS);
            assert_eq!(ip.is_some(), in_progress.is_some(), "{name}: {ip:?}");
            if let (Some((reason, message)), Some(prefix)) = (&ip, in_progress) {
                assert_eq!(reason, reason::IN_PROGRESS, "{name}");
                assert!(message.starts_with(prefix), "{name}: {message}");
                assert_eq!(served_request(message), Some(t(90).as_second()), "{name}");
            }
            assert_eq!(
                condition(&status, CONDITION_RESTART_FAILED).map(|c| c.0),
                failed.map(String::from),
                "{name}"
            );
            assert_eq!(plan.delete.is_some(), delete, "{name}");
            assert_eq!(plan.requeue_after, requeue, "{name}");
            assert_eq!(
                status.last_restarted_at.is_some(),
                name.starts_with("already"),
                "{name}"
            );
        }
    }

    /// The intent recorded by a pass at `started`.
    fn in_progress(started: i64, request: i64) -> ComputeInstanceStatus {
        let mut status = with_vm();
        set_condition(
            &mut status.conditions,
            CONDITION_RESTART_IN_PROGRESS,
            true,
            reason::IN_PROGRESS,
            &initiated_message(t(request)),
            None,
            t(started),
        );
        status
    }

    #[test]
    fn finishing_a_restart() {
        let request = Some(time(90));
        // A VMI created at or after the intent is the new one.
        for created in [100, 101] {
            let mut status = in_progress(100, 90);
            let plan = plan_restart(
                request.as_ref(),
                &mut status,
                present(created),
                None,
                t(102),
                TIMEOUT,
            );
            assert_eq!(status.last_restarted_at, Some(time(90)));
            assert_eq!(condition(&status, CONDITION_RESTART_IN_PROGRESS), None);
            assert_eq!(plan, RestartPlan::default());
        }
        // An older VMI: the operator stopped before deleting it; delete it now (the first time).
        let mut status = in_progress(100, 90);
        let plan = plan_restart(
            request.as_ref(),
            &mut status,
            present(50),
            None,
            t(102),
            TIMEOUT,
        );
        assert_eq!(plan.delete.map(|d| d.created_before), Some(t(100)));
        assert_eq!(status.last_restarted_at, None);
        // No VMI yet: wait.
        let mut status = in_progress(100, 90);
        let plan = plan_restart(
            request.as_ref(),
            &mut status,
            VmiState::Missing,
            None,
            t(102),
            TIMEOUT,
        );
        assert_eq!(plan.delete, None);
        assert!(
            condition(&status, CONDITION_RESTART_IN_PROGRESS)
                .is_some_and(|c| c.1.starts_with("Waiting"))
        );
    }

    #[test]
    fn a_restart_without_a_new_vmi_times_out_once() {
        let request = Some(time(90));
        let mut status = in_progress(100, 90);
        let plan = plan_restart(
            request.as_ref(),
            &mut status,
            VmiState::Missing,
            None,
            t(701),
            TIMEOUT,
        );
        assert_eq!(plan.delete, None);
        assert_eq!(condition(&status, CONDITION_RESTART_IN_PROGRESS), None);
        let failed = condition(&status, CONDITION_RESTART_FAILED);
        assert_eq!(
            failed.as_ref().map(|c| c.0.as_str()),
            Some(reason::TIMED_OUT)
        );
        assert!(failed.is_some_and(|c| c.1.contains("10m")));
        // The same request does not start again; a new one does.
        let again = plan_restart(
            request.as_ref(),
            &mut status,
            present(50),
            None,
            t(702),
            TIMEOUT,
        );
        assert_eq!(again, RestartPlan::default());
        let next = plan_restart(
            Some(&time(703)),
            &mut status,
            present(50),
            None,
            t(704),
            TIMEOUT,
        );
        assert!(next.delete.is_some());
        assert_eq!(condition(&status, CONDITION_RESTART_FAILED), None);
    }

    #[test]
    fn a_new_request_during_a_restart_restarts_again_afterwards() {
        let mut status = in_progress(100, 90);
        let newer = Some(time(101));
        let plan = plan_restart(
            newer.as_ref(),
            &mut status,
            present(102),
            None,
            t(103),
            TIMEOUT,
        );
        assert_eq!(
            status.last_restarted_at,
            Some(time(90)),
            "the finished restart served 90"
        );
        assert_eq!(plan.requeue_after, Some(Duration::ZERO));
        let plan = plan_restart(
            newer.as_ref(),
            &mut status,
            present(102),
            None,
            t(104),
            TIMEOUT,
        );
        assert!(plan.delete.is_some(), "the newer request restarts again");
    }

    /// A small world: one VMI that KubeVirt recreates after each deletion. Passes run one after
    /// another; the operator may stop after any write. Each request must delete exactly one VMI.
    #[test]
    fn exactly_one_deletion_per_request_whatever_the_kill_point() {
        // Kill points: 0 = none, 1 = after the status write (before the delete),
        // 2 = after the delete (before the next pass).
        for kill_at_pass in 0..4 {
            for kill_point in 0..3 {
                let mut stored = with_vm();
                let mut vmi_created = 10;
                let mut deletions = 0;
                let request = Some(time(90));
                for pass in 0..8 {
                    let now = t(100 + pass * 2);
                    let mut status = stored.clone();
                    let plan = plan_restart(
                        request.as_ref(),
                        &mut status,
                        present(vmi_created),
                        None,
                        now,
                        TIMEOUT,
                    );
                    stored = status;
                    if pass == kill_at_pass && kill_point == 1 {
                        continue;
                    }
                    // The deletion's uid precondition: only the VMI that was observed.
                    if let Some(d) = plan.delete
                        && d.uid == format!("uid-{vmi_created}")
                    {
                        deletions += 1;
                        vmi_created = 101 + pass * 2;
                    }
                }
                assert_eq!(
                    deletions, 1,
                    "kill at pass {kill_at_pass} point {kill_point}"
                );
                assert_eq!(stored.last_restarted_at, Some(time(90)));
            }
        }
    }
}
