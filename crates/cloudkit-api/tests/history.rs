//! Table and property tests for the job history helpers (SPEC section 2).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use cloudkit_api::history::{
    DEFAULT_HISTORY_LIMIT, append_job, eda_job_number, find_job, latest_job, next_eda_job_id,
    parse_history_limit, trim_history, update_job,
};
use cloudkit_api::{JobState, JobStatus, JobType};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(secs).unwrap())
}

fn job(id: &str, t: JobType, secs: i64, state: JobState) -> JobStatus {
    JobStatus::new(id, t, at(secs), state)
}

use JobState::*;
use JobType::*;

#[test]
fn latest_by_type() {
    struct Row {
        name: &'static str,
        jobs: Vec<JobStatus>,
        want_provision: Option<&'static str>,
        want_deprovision: Option<&'static str>,
    }
    let rows = vec![
        Row {
            name: "empty history",
            jobs: vec![],
            want_provision: None,
            want_deprovision: None,
        },
        Row {
            name: "greatest timestamp wins regardless of position",
            jobs: vec![
                job("3", Provision, 30, Succeeded),
                job("1", Provision, 10, Failed),
                job("2", Provision, 20, Failed),
            ],
            want_provision: Some("3"),
            want_deprovision: None,
        },
        Row {
            name: "equal timestamps: the later entry wins",
            jobs: vec![
                job("failed-trigger", Provision, 10, Failed),
                job("next", Provision, 10, Running),
            ],
            want_provision: Some("next"),
            want_deprovision: None,
        },
        Row {
            name: "three equal timestamps: the last entry wins",
            jobs: vec![
                job("a", Provision, 10, Failed),
                job("b", Provision, 10, Failed),
                job("c", Provision, 10, Failed),
            ],
            want_provision: Some("c"),
            want_deprovision: None,
        },
        Row {
            name: "types are independent",
            jobs: vec![
                job("p1", Provision, 10, Succeeded),
                job("d1", Deprovision, 20, Running),
                job("p2", Provision, 15, Succeeded),
            ],
            want_provision: Some("p2"),
            want_deprovision: Some("d1"),
        },
        Row {
            name: "a later earlier-timestamped entry does not win",
            jobs: vec![
                job("new", Deprovision, 50, Running),
                job("old", Deprovision, 40, Failed),
            ],
            want_provision: None,
            want_deprovision: Some("new"),
        },
    ];
    for row in rows {
        let got = |t| latest_job(&row.jobs, t).map(|j| j.job_id.as_str());
        assert_eq!(
            got(Provision),
            row.want_provision,
            "{}: provision",
            row.name
        );
        assert_eq!(
            got(Deprovision),
            row.want_deprovision,
            "{}: deprovision",
            row.name
        );
    }
}

#[test]
fn find_append_update() {
    let mut jobs = vec![job("1", Provision, 10, Running)];
    append_job(&mut jobs, job("eda-webhook-1", Deprovision, 20, Running));
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[1].job_id, "eda-webhook-1", "append puts the job last");

    assert_eq!(find_job(&jobs, "1").map(|j| j.job_type), Some(Provision));
    assert!(find_job(&jobs, "2").is_none());
    assert!(find_job(&jobs, "").is_none(), "an empty id never matches");

    let mut updated = job("1", Provision, 10, Succeeded);
    updated.message = Some("done".into());
    assert!(update_job(&mut jobs, updated.clone()));
    assert_eq!(jobs[0], updated, "update replaces the whole entry");

    let before = jobs.clone();
    assert!(!update_job(&mut jobs, job("404", Provision, 10, Failed)));
    assert_eq!(jobs, before, "an update of an unknown id changes nothing");

    let mut intents = vec![job("", Provision, 10, Pending)];
    assert!(!update_job(&mut intents, job("", Provision, 10, Running)));
    assert_eq!(
        intents[0].state, Pending,
        "an empty id is never updated by id"
    );
}

#[test]
fn trimming_rules() {
    struct Row {
        name: &'static str,
        jobs: Vec<JobStatus>,
        limit: usize,
        want: Vec<&'static str>,
    }
    let rows = vec![
        Row {
            name: "under the limit: untouched",
            jobs: vec![
                job("1", Provision, 1, Failed),
                job("2", Provision, 2, Failed),
            ],
            limit: 2,
            want: vec!["1", "2"],
        },
        Row {
            name: "drops the oldest terminal entries first",
            jobs: vec![
                job("1", Provision, 1, Failed),
                job("2", Provision, 2, Failed),
                job("3", Provision, 3, Failed),
                job("4", Provision, 4, Succeeded),
            ],
            limit: 2,
            want: vec!["3", "4"],
        },
        Row {
            name: "age is the timestamp, not the position",
            jobs: vec![
                job("new", Provision, 9, Failed),
                job("old", Provision, 1, Failed),
                job("mid", Provision, 5, Succeeded),
                job("latest", Provision, 10, Succeeded),
            ],
            limit: 2,
            want: vec!["new", "latest"],
        },
        Row {
            name: "equal timestamps: the earlier position is older",
            jobs: vec![
                job("a", Provision, 5, Failed),
                job("b", Provision, 5, Failed),
                job("c", Provision, 5, Failed),
            ],
            limit: 1,
            want: vec!["c"],
        },
        Row {
            name: "never a non-terminal job, even the oldest",
            jobs: vec![
                job("running", Provision, 1, Running),
                job("2", Provision, 2, Failed),
                job("3", Provision, 3, Failed),
            ],
            limit: 1,
            want: vec!["running", "3"],
        },
        Row {
            name: "every non-terminal state is protected",
            jobs: vec![
                job("p", Provision, 1, Pending),
                job("w", Provision, 2, Waiting),
                job("u", Provision, 3, Unknown),
                job("f", Provision, 4, Failed),
                job("s", Provision, 5, Succeeded),
            ],
            limit: 1,
            want: vec!["p", "w", "u", "s"],
        },
        Row {
            name: "never the latest of each type",
            jobs: vec![
                job("p1", Provision, 1, Succeeded),
                job("d1", Deprovision, 2, Failed),
                job("p2", Provision, 3, Succeeded),
                job("d2", Deprovision, 4, Failed),
                job("p3", Provision, 5, Succeeded),
            ],
            limit: 1,
            want: vec!["d2", "p3"],
        },
        Row {
            name: "kept entries keep their order",
            jobs: vec![
                job("4", Provision, 4, Failed),
                job("1", Provision, 1, Failed),
                job("3", Provision, 3, Failed),
                job("2", Provision, 2, Failed),
                job("5", Provision, 5, Failed),
            ],
            limit: 3,
            want: vec!["4", "3", "5"],
        },
        Row {
            name: "limit zero still keeps the protected entries",
            jobs: vec![
                job("1", Provision, 1, Failed),
                job("2", Provision, 2, Failed),
            ],
            limit: 0,
            want: vec!["2"],
        },
    ];
    for row in rows {
        let mut jobs = row.jobs.clone();
        let dropped = trim_history(&mut jobs, row.limit);
        let ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
        assert_eq!(ids, row.want, "{}", row.name);
        assert_eq!(dropped, row.jobs.len() - jobs.len(), "{}: count", row.name);
    }
}

#[test]
fn eda_ids() {
    let rows: Vec<(&str, Vec<&str>, &str)> = vec![
        ("empty history", vec![], "eda-webhook-1"),
        ("one provision", vec!["eda-webhook-1"], "eda-webhook-2"),
        (
            "gaps: max + 1",
            vec!["eda-webhook-1", "eda-webhook-7", "eda-webhook-3"],
            "eda-webhook-8",
        ),
        ("aap ids ignored", vec!["9076", "9079"], "eda-webhook-1"),
        (
            "mixed providers",
            vec!["eda-webhook-1", "9219"],
            "eda-webhook-2",
        ),
        (
            "malformed suffixes ignored",
            vec![
                "eda-webhook-",
                "eda-webhook-abc",
                "eda-webhook--3",
                "eda-webhook-+4",
                "eda-webhook-0",
                "eda-webhook-2x",
                "eda-webhook- 5",
                "eda-webhook-99999999999999999999999",
                "EDA-WEBHOOK-9",
                "xeda-webhook-9",
                "",
            ],
            "eda-webhook-1",
        ),
        (
            "leading zeros are decimal",
            vec!["eda-webhook-007"],
            "eda-webhook-8",
        ),
    ];
    for (name, ids, want) in rows {
        let jobs: Vec<JobStatus> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let t = if i % 2 == 0 { Provision } else { Deprovision };
                job(id, t, i as i64, Succeeded)
            })
            .collect();
        assert_eq!(next_eda_job_id(&jobs), want, "{name}");
    }
    assert_eq!(eda_job_number("eda-webhook-42"), Some(42));
    assert_eq!(eda_job_number(&format!("eda-webhook-{}", u64::MAX)), None);
}

#[test]
fn history_limit_parsing() {
    let ok: [(Option<&str>, usize); 5] = [
        (None, DEFAULT_HISTORY_LIMIT),
        (Some(""), DEFAULT_HISTORY_LIMIT),
        (Some("1"), 1),
        (Some("25"), 25),
        (Some("1000"), 1000),
    ];
    for (value, want) in ok {
        assert_eq!(parse_history_limit(value), Ok(want), "{value:?}");
    }
    for bad in [
        "0",
        "-1",
        "+5",
        " 5",
        "5 ",
        "ten",
        "1.5",
        "1001",
        "99999999999999999999999",
    ] {
        let err = parse_history_limit(Some(bad)).expect_err(bad).to_string();
        assert!(err.starts_with("CLOUDKIT_MAX_JOB_HISTORY="), "{err}");
        assert!(
            err.contains(&format!("{bad:?}")),
            "the message quotes the value: {err}"
        );
    }
}

fn any_state() -> impl Strategy<Value = JobState> {
    prop_oneof![
        Just(Pending),
        Just(Waiting),
        Just(Running),
        Just(Succeeded),
        Just(Failed),
        Just(Canceled),
        Just(Unknown),
    ]
}

fn any_history() -> impl Strategy<Value = Vec<JobStatus>> {
    // Few distinct timestamps so that ties are common.
    prop::collection::vec((any::<bool>(), 0i64..8, any_state()), 0..40).prop_map(|entries| {
        entries
            .into_iter()
            .enumerate()
            .map(|(i, (prov, secs, state))| {
                let t = if prov { Provision } else { Deprovision };
                job(&i.to_string(), t, secs, state)
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn trimming_invariants(jobs in any_history(), limit in 0usize..12) {
        let mut trimmed = jobs.clone();
        let dropped = trim_history(&mut trimmed, limit);
        prop_assert_eq!(dropped, jobs.len() - trimmed.len());

        // Never a non-terminal job.
        for j in jobs.iter().filter(|j| !j.is_terminal()) {
            prop_assert!(trimmed.iter().any(|k| k.job_id == j.job_id), "dropped non-terminal {}", j.job_id);
        }
        // Never the latest of a type, and the latest stays the latest.
        for t in JobType::ALL {
            prop_assert_eq!(latest_job(&jobs, t).map(|j| &j.job_id), latest_job(&trimmed, t).map(|j| &j.job_id));
        }
        // Kept entries are a subsequence in the original order.
        let mut it = jobs.iter();
        for k in &trimmed {
            prop_assert!(it.any(|j| j.job_id == k.job_id));
        }
        // Exactly enough is dropped: down to the limit, or only protected entries remain.
        let protected = jobs.iter().enumerate().filter(|(i, j)| {
            !j.is_terminal() || JobType::ALL.iter().any(|&t| {
                latest_job(&jobs, t).map(|l| &l.job_id) == Some(&jobs[*i].job_id)
            })
        }).count();
        prop_assert_eq!(trimmed.len(), jobs.len().min(limit.max(protected)));
        // Every dropped entry is no newer than every kept unprotected one.
        let kept: Vec<&str> = trimmed.iter().map(|j| j.job_id.as_str()).collect();
        let pos = |id: &str| jobs.iter().position(|j| j.job_id == id).unwrap();
        for d in jobs.iter().filter(|j| !kept.contains(&j.job_id.as_str())) {
            for k in trimmed.iter().filter(|k| k.is_terminal()) {
                let older = (d.timestamp.0, pos(&d.job_id)) < (k.timestamp.0, pos(&k.job_id));
                let k_protected = JobType::ALL.iter().any(|&t| latest_job(&jobs, t).map(|l| &l.job_id) == Some(&k.job_id));
                prop_assert!(older || k_protected, "dropped {} but kept older {}", d.job_id, k.job_id);
            }
        }
    }

    #[test]
    fn latest_is_a_maximum(jobs in any_history()) {
        for t in JobType::ALL {
            match latest_job(&jobs, t) {
                None => prop_assert!(jobs.iter().all(|j| j.job_type != t)),
                Some(l) => {
                    let li = jobs.iter().position(|j| j.job_id == l.job_id).unwrap();
                    for (i, j) in jobs.iter().enumerate().filter(|(_, j)| j.job_type == t) {
                        prop_assert!((j.timestamp.0, i) <= (l.timestamp.0, li));
                    }
                }
            }
        }
    }

    #[test]
    fn next_eda_id_is_fresh(nums in prop::collection::vec(1u64..1_000_000, 0..20), noise in prop::collection::vec("\\PC*", 0..5)) {
        let mut jobs: Vec<JobStatus> = nums.iter().map(|n| job(&format!("eda-webhook-{n}"), Provision, 0, Succeeded)).collect();
        jobs.extend(noise.iter().map(|s| job(s, Deprovision, 0, Failed)));
        let next = next_eda_job_id(&jobs);
        prop_assert!(jobs.iter().all(|j| j.job_id != next), "{} collides", next);
        let n = eda_job_number(&next).unwrap();
        prop_assert!(jobs.iter().filter_map(|j| eda_job_number(&j.job_id)).all(|m| m < n));
    }

    #[test]
    fn helpers_never_panic(jobs in any_history(), id in "\\PC*", limit in 0usize..2000) {
        let mut jobs = jobs;
        let _ = find_job(&jobs, &id);
        let _ = update_job(&mut jobs, job(&id, Provision, 0, Running));
        let _ = trim_history(&mut jobs, limit);
        let _ = next_eda_job_id(&jobs);
        let _ = parse_history_limit(Some(&id));
    }
}
