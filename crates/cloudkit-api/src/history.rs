//! Helpers over the job history (`status.jobs[]`).
//!
//! They work on plain slices and vectors so a caller can use them on a status it is building as
//! well as on one it read. None of them panics, whatever the history holds.

use std::cmp::Ordering;

use crate::job::{EDA_JOB_ID_PREFIX, JobStatus, JobType};

/// Default for [`parse_history_limit`] when `CLOUDKIT_MAX_JOB_HISTORY` is not set.
pub const DEFAULT_HISTORY_LIMIT: usize = 10;

/// Largest accepted history limit: far below what would push a CI towards the object size limit
/// of the API server, far above any useful audit trail.
pub const MAX_HISTORY_LIMIT: usize = 1000;

/// Name of the environment variable that sets the history limit.
pub const ENV_MAX_JOB_HISTORY: &str = "CLOUDKIT_MAX_JOB_HISTORY";

/// The latest job of `job_type`: the greatest `timestamp`; on equal timestamps the entry later in
/// the slice wins, because entries are appended in the order they were started.
pub fn latest_job(jobs: &[JobStatus], job_type: JobType) -> Option<&JobStatus> {
    latest_index(jobs, job_type).map(|i| &jobs[i])
}

/// Index form of [`latest_job`].
pub fn latest_index(jobs: &[JobStatus], job_type: JobType) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, job) in jobs.iter().enumerate() {
        if job.job_type != job_type {
            continue;
        }
        match best {
            Some(b) if job.timestamp.0 < jobs[b].timestamp.0 => {}
            _ => best = Some(i),
        }
    }
    best
}

/// The first entry whose id is `job_id`. An empty id never matches: it marks a launch whose id is
/// not known yet, and two of those are different jobs.
pub fn find_job<'a>(jobs: &'a [JobStatus], job_id: &str) -> Option<&'a JobStatus> {
    if job_id.is_empty() {
        return None;
    }
    jobs.iter().find(|j| j.job_id == job_id)
}

/// Appends `job` at the end of the history (the newest position).
pub fn append_job(jobs: &mut Vec<JobStatus>, job: JobStatus) {
    jobs.push(job);
}

/// Replaces the entry with the same id as `job` by `job`. Returns whether an entry was found;
/// when none was, the history is unchanged. An empty id never matches (see [`find_job`]).
pub fn update_job(jobs: &mut [JobStatus], job: JobStatus) -> bool {
    if job.job_id.is_empty() {
        return false;
    }
    match jobs.iter_mut().find(|j| j.job_id == job.job_id) {
        Some(slot) => {
            *slot = job;
            true
        }
        None => false,
    }
}

/// Drops the oldest entries until at most `limit` remain, but never a non-terminal job and never
/// the latest job of each type, so the history can stay longer than `limit` when those alone
/// exceed it. The order of the kept entries is unchanged. Returns how many entries were dropped.
///
/// Age is the `timestamp`; on equal timestamps the earlier position is older, matching
/// [`latest_job`].
pub fn trim_history(jobs: &mut Vec<JobStatus>, limit: usize) -> usize {
    if jobs.len() <= limit {
        return 0;
    }
    let mut protected = vec![false; jobs.len()];
    for (i, job) in jobs.iter().enumerate() {
        if !job.is_terminal() {
            protected[i] = true;
        }
    }
    for t in JobType::ALL {
        if let Some(i) = latest_index(jobs, t) {
            protected[i] = true;
        }
    }

    let mut droppable: Vec<usize> = (0..jobs.len()).filter(|&i| !protected[i]).collect();
    droppable.sort_by(
        |&a, &b| match jobs[a].timestamp.0.cmp(&jobs[b].timestamp.0) {
            Ordering::Equal => a.cmp(&b),
            other => other,
        },
    );
    let excess = jobs.len() - limit;
    let mut drop = vec![false; jobs.len()];
    for &i in droppable.iter().take(excess) {
        drop[i] = true;
    }
    let mut index = 0;
    let before = jobs.len();
    jobs.retain(|_| {
        let keep = !drop[index];
        index += 1;
        keep
    });
    before - jobs.len()
}

/// The id for the next EDA job: `eda-webhook-N` with N one more than the largest N among the
/// entries whose id is the prefix followed by a positive decimal number. Provision and
/// deprovision share the counter; other ids and malformed suffixes are ignored. The id is always
/// fresh: should an ignored id spell it (only `eda-webhook-18446744073709551615` and longer
/// numbers can), N steps past it.
pub fn next_eda_job_id(jobs: &[JobStatus]) -> String {
    let max = jobs
        .iter()
        .filter_map(|j| eda_job_number(&j.job_id))
        .max()
        .unwrap_or(0);
    // At most one step per entry: no overflow.
    let mut next = u128::from(max) + 1;
    while jobs
        .iter()
        .any(|j| j.job_id.strip_prefix(EDA_JOB_ID_PREFIX) == Some(next.to_string().as_str()))
    {
        next += 1;
    }
    format!("{EDA_JOB_ID_PREFIX}{next}")
}

/// The N of `eda-webhook-N`, when N is a positive decimal number (digits only) that leaves room
/// for a successor.
pub fn eda_job_number(job_id: &str) -> Option<u64> {
    let suffix = job_id.strip_prefix(EDA_JOB_ID_PREFIX)?;
    if suffix.is_empty() || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    match suffix.parse::<u64>() {
        Ok(n) if n > 0 && n < u64::MAX => Some(n),
        _ => None,
    }
}

/// A bad value for `CLOUDKIT_MAX_JOB_HISTORY`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{ENV_MAX_JOB_HISTORY}={value:?} is invalid: expected a whole number from 1 to {MAX_HISTORY_LIMIT}"
)]
pub struct HistoryLimitError {
    /// The rejected value.
    pub value: String,
}

/// Parses the history limit: unset (or empty) gives [`DEFAULT_HISTORY_LIMIT`]; anything else
/// must be a whole number from 1 to [`MAX_HISTORY_LIMIT`].
pub fn parse_history_limit(value: Option<&str>) -> Result<usize, HistoryLimitError> {
    let Some(raw) = value else {
        return Ok(DEFAULT_HISTORY_LIMIT);
    };
    if raw.is_empty() {
        return Ok(DEFAULT_HISTORY_LIMIT);
    }
    let err = || HistoryLimitError {
        value: raw.to_string(),
    };
    if !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err());
    }
    match raw.parse::<usize>() {
        Ok(n) if (1..=MAX_HISTORY_LIMIT).contains(&n) => Ok(n),
        _ => Err(err()),
    }
}
