//! Fuzz-style properties: arbitrary JSON as a status or a job history, and the history helpers
//! on histories that `tests/history.rs` does not generate (duplicate and empty ids, arbitrary
//! strings, timestamps across the whole representable range, adversarial EDA ids).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloudkit_api::history::{
    ENV_MAX_JOB_HISTORY, MAX_HISTORY_LIMIT, append_job, eda_job_number, find_job, latest_index,
    latest_job, next_eda_job_id, parse_history_limit, trim_history, update_job,
};
use cloudkit_api::{ComputeInstance, ComputeInstanceStatus, JobState, JobStatus, JobType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

const STATES: [&str; 7] = [
    "Pending",
    "Waiting",
    "Running",
    "Succeeded",
    "Failed",
    "Canceled",
    "Unknown",
];

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Nothing is written into the source tree; a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
        prop::sample::select(&STATES[..]).prop_map(Value::from),
        Just(json!("2026-01-02T03:04:05Z")),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(any_key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Object keys: mostly the names the types know, so that deep structure gets exercised.
fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "jobs",
                "phase",
                "conditions",
                "observedGeneration",
                "desiredConfigVersion",
                "reconciledConfigVersion",
                "jobID",
                "type",
                "state",
                "timestamp",
                "message",
                "provider",
                "attempt",
                "completionTimestamp",
                "aapJobKind",
                "spec",
                "status",
                "metadata",
                "templateID",
                "cores",
            ][..]
        )
        .prop_map(String::from),
        "\\PC{0,8}",
    ]
}

/// A valid job entry on the wire.
fn wire_job() -> Value {
    json!({
        "jobID": "17",
        "type": "provision",
        "state": "Running",
        "timestamp": "2026-01-02T03:04:05Z",
    })
}

/// A valid status, with one field of one job (or of the status) replaced by any value or removed.
fn perturbed_status() -> impl Strategy<Value = Value> {
    let job_keys = prop::sample::select(
        &[
            "jobID",
            "type",
            "state",
            "timestamp",
            "message",
            "blockDeletionOnFailure",
            "provider",
            "configVersion",
            "aapJobKind",
            "launchKey",
            "attempt",
            "retryToken",
            "completionTimestamp",
        ][..],
    );
    (
        job_keys,
        prop::option::of(any_json()),
        0usize..3,
        any::<bool>(),
    )
        .prop_map(|(key, value, index, status_level)| {
            let mut status = json!({
                "phase": "Running",
                "observedGeneration": 2,
                "jobs": [wire_job(), wire_job(), wire_job()],
            });
            let target = if status_level {
                &mut status
            } else {
                &mut status["jobs"][index]
            };
            let Some(object) = target.as_object_mut() else {
                unreachable!()
            };
            match value {
                Some(v) => {
                    object.insert(key.to_string(), v);
                }
                None => {
                    object.remove(key);
                }
            }
            status
        })
}

/// Timestamp texts: valid ones in several spellings, almost-valid ones and garbage.
fn any_timestamp_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..253_402_300_799).prop_map(|s| Timestamp::from_second(s).unwrap().to_string()),
        (
            0u32..10_000,
            0u32..14,
            0u32..33,
            0u32..25,
            0u32..61,
            0u32..62
        )
            .prop_map(|(y, mo, d, h, mi, s)| format!(
                "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"
            )),
        prop::sample::select(
            &[
                "2026-01-02T03:04:05Z",
                "2026-01-02T03:04:05.123456789Z",
                "2026-01-02T03:04:05+02:00",
                "2026-01-02t03:04:05z",
                "2026-01-02 03:04:05Z",
                "2026-01-02T03:04:05",
                "2026-01-02",
                "2026-02-30T00:00:00Z",
                "2026-01-02T24:00:00Z",
                "2026-01-02T03:04:60Z",
                "1970-01-01T00:00:00Z",
                "0000-01-01T00:00:00Z",
                "9999-12-31T23:59:59Z",
                "-000001-01-01T00:00:00Z",
                "+010000-01-01T00:00:00Z",
                "",
                " 2026-01-02T03:04:05Z",
                "now",
                "1767322800",
            ][..]
        )
        .prop_map(String::from),
        "\\PC{0,30}",
    ]
}

fn any_state_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&STATES[..]).prop_map(String::from),
        prop::sample::select(&STATES[..]).prop_map(|s| s.to_lowercase()),
        prop::sample::select(&["provision", "deprovision", "Provision", ""][..])
            .prop_map(String::from),
        "\\PC{0,12}",
    ]
}

fn any_type_text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["provision", "deprovision"][..]).prop_map(String::from),
        prop::sample::select(&["Provision", "DEPROVISION", "reprovision", "Running", ""][..])
            .prop_map(String::from),
        "\\PC{0,12}",
    ]
}

fn any_state() -> impl Strategy<Value = JobState> {
    prop::sample::select(&JobState::ALL[..])
}

fn any_job_type() -> impl Strategy<Value = JobType> {
    prop::sample::select(&JobType::ALL[..])
}

/// Any instant jiff can represent, with a bias towards a few shared seconds (ties) and the
/// extremes.
fn any_time() -> impl Strategy<Value = Time> {
    prop_oneof![
        (0i64..4).prop_map(|s| Time(Timestamp::from_second(s).unwrap())),
        Just(Time(Timestamp::MIN)),
        Just(Time(Timestamp::MAX)),
        (
            Timestamp::MIN.as_second()..=Timestamp::MAX.as_second(),
            0i32..1_000_000_000
        )
            .prop_map(|(s, n)| {
                Time(Timestamp::new(s, n).unwrap_or(Timestamp::from_second(s).unwrap()))
            }),
    ]
}

/// Ids from a small alphabet, so duplicates (and empty ids) are common.
fn any_id() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(&["", "1", "2", "17", "eda-webhook-1", "eda-webhook-2"][..])
            .prop_map(String::from),
        "\\PC{0,6}",
    ]
}

fn any_job() -> impl Strategy<Value = JobStatus> {
    (
        any_id(),
        any_job_type(),
        any_time(),
        any_state(),
        prop::option::of("\\PC{0,10}"),
    )
        .prop_map(|(id, t, at, state, message)| {
            let mut job = JobStatus::new(id, t, at, state);
            job.message = message;
            job
        })
}

fn any_history() -> impl Strategy<Value = Vec<JobStatus>> {
    prop::collection::vec(any_job(), 0..30)
}

/// Whether `sub` is `full` with some entries left out (order kept), comparing whole entries.
fn is_subsequence(sub: &[JobStatus], full: &[JobStatus]) -> bool {
    let mut it = full.iter();
    sub.iter().all(|s| it.any(|f| f == s))
}

fn count(jobs: &[JobStatus], job: &JobStatus) -> usize {
    jobs.iter().filter(|j| *j == job).count()
}

proptest! {
    #![proptest_config(config(384))]

    /// Arbitrary JSON as any of the types never panics; what deserialises serialises, and a
    /// second round trip changes nothing.
    #[test]
    fn arbitrary_json_never_panics(value in any_json()) {
        fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &Value) -> Result<(), TestCaseError> {
            if let Ok(parsed) = serde_json::from_value::<T>(value.clone()) {
                let once = serde_json::to_value(&parsed).map_err(|e| TestCaseError::fail(format!("serialising: {e}")))?;
                let reparsed: T = serde_json::from_value(once.clone()).map_err(|e| TestCaseError::fail(format!("re-reading {once}: {e}")))?;
                let twice = serde_json::to_value(&reparsed).map_err(|e| TestCaseError::fail(format!("serialising again: {e}")))?;
                prop_assert_eq!(once, twice);
            }
            Ok(())
        }
        round_trip::<ComputeInstanceStatus>(&value)?;
        round_trip::<JobStatus>(&value)?;
        round_trip::<Vec<JobStatus>>(&value)?;
        round_trip::<ComputeInstance>(&value)?;
        let _ = serde_json::from_slice::<ComputeInstanceStatus>(value.to_string().as_bytes());
    }

    /// Arbitrary bytes never panic the status reader.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<ComputeInstanceStatus>(&bytes);
        let _ = serde_json::from_slice::<Vec<JobStatus>>(&bytes);
        let _ = serde_json::from_slice::<ComputeInstance>(&bytes);
    }

    /// A valid status with one field replaced or removed reads exactly when the field's new value
    /// still fits its type; the other entries are unaffected.
    #[test]
    fn perturbed_status_reads_or_fails_whole(status in perturbed_status()) {
        if let Ok(parsed) = serde_json::from_value::<ComputeInstanceStatus>(status.clone()) {
            prop_assert_eq!(parsed.jobs.len(), 3);
            for (job, wire) in parsed.jobs.iter().zip(status["jobs"].as_array().unwrap()) {
                // A required field was not dropped silently.
                prop_assert!(wire.get("type").is_some_and(|v| v.as_str() == Some(job.job_type.as_str())));
                prop_assert!(wire.get("state").is_some_and(|v| v.as_str() == Some(job.state.as_str())));
                prop_assert!(wire.get("timestamp").is_some_and(Value::is_string));
            }
        }
    }

    /// A job entry with arbitrary strings for state, type and timestamp reads exactly when each is
    /// one of the wire names and the timestamp is a valid instant; then it holds those values.
    #[test]
    fn job_fields_from_arbitrary_strings(state in any_state_text(), job_type in any_type_text(), timestamp in any_timestamp_text()) {
        let mut wire = wire_job();
        wire["state"] = json!(state);
        wire["type"] = json!(job_type);
        wire["timestamp"] = json!(timestamp);
        let parsed = serde_json::from_value::<JobStatus>(wire.clone());
        let instant = timestamp.parse::<Timestamp>();
        let valid = STATES.contains(&state.as_str())
            && ["provision", "deprovision"].contains(&job_type.as_str())
            && instant.is_ok();
        prop_assert_eq!(parsed.is_ok(), valid, "{} -> {:?}", wire, parsed);
        if let (Ok(job), Ok(instant)) = (parsed, instant) {
            prop_assert_eq!(job.state.as_str(), state.as_str());
            prop_assert_eq!(job.job_type.as_str(), job_type.as_str());
            prop_assert_eq!(job.timestamp.0, instant);
        }
    }

    /// Trimming, with duplicate and empty ids and any timestamps: the same guarantees, compared
    /// on whole entries; trimming again changes nothing; a larger limit keeps a superset.
    #[test]
    fn trimming_with_duplicate_ids(jobs in any_history(), limit in 0usize..12, more in 0usize..5) {
        let mut trimmed = jobs.clone();
        let dropped = trim_history(&mut trimmed, limit);
        prop_assert_eq!(dropped + trimmed.len(), jobs.len());
        prop_assert!(is_subsequence(&trimmed, &jobs));
        for j in jobs.iter().filter(|j| !j.is_terminal()) {
            prop_assert_eq!(count(&trimmed, j), count(&jobs, j), "a non-terminal entry was dropped: {:?}", j);
        }
        for t in JobType::ALL {
            prop_assert_eq!(latest_job(&trimmed, t), latest_job(&jobs, t));
        }
        if trimmed.len() > limit {
            // Only protected entries may remain beyond the limit.
            let latest: Vec<_> = JobType::ALL.iter().filter_map(|&t| latest_index(&trimmed, t)).collect();
            for (i, j) in trimmed.iter().enumerate() {
                prop_assert!(!j.is_terminal() || latest.contains(&i), "kept {:?} beyond the limit", j);
            }
        }

        let mut again = trimmed.clone();
        prop_assert_eq!(trim_history(&mut again, limit), 0);
        prop_assert_eq!(&again, &trimmed);

        let mut looser = jobs.clone();
        trim_history(&mut looser, limit + more);
        prop_assert!(looser.len() >= trimmed.len());
        prop_assert!(is_subsequence(&trimmed, &looser), "a larger limit dropped something a smaller one kept");
    }

    /// Updating by an arbitrary id replaces exactly the first entry with that id, and reports
    /// whether there was one; an empty id never matches.
    #[test]
    fn update_replaces_only_the_first_match(jobs in any_history(), new in any_job()) {
        let before = jobs.clone();
        let mut after = jobs;
        let first = if new.job_id.is_empty() { None } else { before.iter().position(|j| j.job_id == new.job_id) };
        prop_assert_eq!(find_job(&before, &new.job_id).is_some(), first.is_some());
        let found = update_job(&mut after, new.clone());
        prop_assert_eq!(found, first.is_some());
        prop_assert_eq!(after.len(), before.len());
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            if Some(i) == first {
                prop_assert_eq!(a, &new);
            } else {
                prop_assert_eq!(a, b);
            }
        }
    }

    /// An appended job no older than every job of its type becomes the latest of its type, and
    /// the latest of the other type does not change.
    #[test]
    fn appended_newest_job_is_the_latest(jobs in any_history(), new in any_job()) {
        let mut new = new;
        if let Some(newest) = jobs.iter().filter(|j| j.job_type == new.job_type).map(|j| j.timestamp.clone()).max() {
            new.timestamp = newest.max(new.timestamp);
        }
        let other = match new.job_type { JobType::Provision => JobType::Deprovision, JobType::Deprovision => JobType::Provision };
        let mut after = jobs.clone();
        append_job(&mut after, new.clone());
        prop_assert_eq!(after.len(), jobs.len() + 1);
        prop_assert_eq!(latest_index(&after, new.job_type), Some(jobs.len()));
        prop_assert_eq!(latest_job(&after, other), latest_job(&jobs, other));
    }

    /// The next EDA id is fresh whatever ids the history holds, including ones that look
    /// almost like EDA ids (leading zeros, signs, zero, the largest numbers).
    #[test]
    fn next_eda_id_with_adversarial_ids(suffixes in prop::collection::vec(prop_oneof![
        "[0-9]{1,22}",
        "[+-]?0*[0-9]{0,3}",
        (0u64..4).prop_map(|k| (u64::MAX - k).to_string()),
        "\\PC{0,6}",
    ], 0..8), plain in prop::collection::vec(any_id(), 0..4)) {
        let mut jobs: Vec<JobStatus> = suffixes.iter().map(|s| {
            JobStatus::new(format!("eda-webhook-{s}"), JobType::Provision, Time(Timestamp::UNIX_EPOCH), JobState::Succeeded)
        }).collect();
        jobs.extend(plain.into_iter().map(|id| JobStatus::new(id, JobType::Deprovision, Time(Timestamp::UNIX_EPOCH), JobState::Failed)));
        let next = next_eda_job_id(&jobs);
        prop_assert!(next.starts_with("eda-webhook-"), "{}", next);
        let digits = &next["eda-webhook-".len()..];
        prop_assert!(!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0'), "{}", next);
        prop_assert!(jobs.iter().all(|j| j.job_id != next), "{} collides with an existing id", next);
        if let Some(n) = eda_job_number(&next) {
            prop_assert!(jobs.iter().filter_map(|j| eda_job_number(&j.job_id)).all(|m| m < n));
        }
    }

    /// The history limit parser accepts exactly whole numbers from 1 to the maximum (or nothing)
    /// and names the variable and the value when it refuses.
    #[test]
    fn history_limit_accepts_exactly_small_whole_numbers(raw in prop_oneof!["[0-9]{0,5}", "\\PC{0,8}", "[ +-]?[0-9]{1,3}[ ]?"]) {
        let parsed = parse_history_limit(Some(&raw));
        let want = if raw.is_empty() {
            Some(10)
        } else if raw.bytes().all(|b| b.is_ascii_digit()) {
            raw.parse::<usize>().ok().filter(|n| (1..=MAX_HISTORY_LIMIT).contains(n))
        } else {
            None
        };
        match (parsed, want) {
            (Ok(n), Some(w)) => prop_assert_eq!(n, w),
            (Err(e), None) => {
                let text = e.to_string();
                prop_assert!(text.contains(ENV_MAX_JOB_HISTORY) && text.contains(&format!("{raw:?}")), "{}", text);
            }
            (got, want) => prop_assert!(false, "{:?}: got {:?}, want {:?}", raw, got, want),
        }
    }
}

/// The case the property above found: the counter ignores `eda-webhook-<u64::MAX>` (it leaves no
/// room for a successor), yet that id is exactly what one more than the largest counted N spells.
#[test]
fn next_eda_id_steps_past_an_ignored_id_that_spells_it() {
    let job = |id: String| {
        JobStatus::new(
            id,
            JobType::Provision,
            Time(Timestamp::UNIX_EPOCH),
            JobState::Succeeded,
        )
    };
    let jobs = vec![
        job(format!("eda-webhook-{}", u64::MAX - 1)),
        job(format!("eda-webhook-{}", u64::MAX)),
        job(format!("eda-webhook-{}", u128::from(u64::MAX) + 1)),
    ];
    assert_eq!(
        next_eda_job_id(&jobs),
        format!("eda-webhook-{}", u128::from(u64::MAX) + 2)
    );
}
