//! What the plugin prints: tables, durations, truncated messages. Pure functions of the objects
//! and the current time.

use cloudkit_api::{ComputeInstance, JobStatus};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Longest message shown in a table cell unless `--wide` is given; longer ones end in `...`.
pub const MESSAGE_WIDTH: usize = 60;

/// Columns of a table are separated by this many spaces, as in kubectl.
const GAP: usize = 3;

/// A table with a header row, columns padded to their widest cell, no trailing spaces.
pub fn render_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(&" ".repeat(GAP));
            }
            line.push_str(cell);
            let width = widths.get(i).copied().unwrap_or(0);
            line.push_str(&" ".repeat(width.saturating_sub(cell.chars().count())));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// A length of time the way kubectl shows ages: `42s`, `5m3s`, `2h5m`, `3d4h`. Negative lengths
/// (clock skew) show as `0s`.
pub fn format_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{}s", s / 60, s % 60),
        3600..86400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86400, s % 86400 / 3600),
    }
}

/// How long a job took: from `timestamp` to `completionTimestamp` when it is terminal; `-` for a
/// terminal job without a completion time (entries written by the Go operator); for a job that
/// has not finished, the time since it started followed by `so far`.
pub fn job_duration(job: &JobStatus, now: Timestamp) -> String {
    let started = job.timestamp.0;
    if job.is_terminal() {
        match &job.completion_timestamp {
            Some(done) => format_duration(done.0.duration_since(started).as_secs()),
            None => "-".to_string(),
        }
    } else {
        format!(
            "{} so far",
            format_duration(now.duration_since(started).as_secs())
        )
    }
}

/// A point in time at whole seconds, RFC 3339 in UTC (`2026-03-01T12:00:00Z`).
pub fn format_time(t: Timestamp) -> String {
    Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

/// `message` on one line (runs of whitespace, newlines included, become one space), cut to
/// `width` characters with `...` at the end when it is longer; `None` shows as empty.
pub fn one_line(message: Option<&str>, width: Option<usize>) -> String {
    let flat = message
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    match width {
        Some(w) if flat.chars().count() > w => {
            let cut: String = flat.chars().take(w.saturating_sub(3)).collect();
            format!("{}...", cut.trim_end())
        }
        _ => flat,
    }
}

/// The job history as a table, oldest first (the order of `status.jobs[]`). A job the operator
/// has recorded but the provider has not given an id yet shows `(launching)` as its id.
pub fn jobs_table(jobs: &[JobStatus], now: Timestamp, width: Option<usize>) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                if j.job_id.is_empty() {
                    "(launching)".to_string()
                } else {
                    j.job_id.clone()
                },
                j.job_type.to_string(),
                j.owner().to_string(),
                j.state.to_string(),
                format_time(j.timestamp.0),
                job_duration(j, now),
                one_line(j.message.as_deref(), width),
            ]
        })
        .collect();
    render_table(
        &[
            "ID", "TYPE", "PROVIDER", "STATE", "STARTED", "DURATION", "MESSAGE",
        ],
        &rows,
    )
}

/// The conditions as a table, in the order of `status.conditions`; AGE is the time since the
/// last transition.
pub fn conditions_table(conditions: &[Condition], now: Timestamp, width: Option<usize>) -> String {
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                one_line(Some(&c.message), width),
                format_duration(now.duration_since(c.last_transition_time.0).as_secs()),
            ]
        })
        .collect();
    render_table(&["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"], &rows)
}

/// The `status` command's output: name, phase, tenant and VM references, deletion, then the
/// conditions table.
pub fn status_report(ci: &ComputeInstance, now: Timestamp, width: Option<usize>) -> String {
    let status = ci.status.clone().unwrap_or_default();
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "-".to_string());
    let tenant = status
        .tenant_reference
        .as_ref()
        .map(|t| format!("{}/{}", t.namespace, t.name))
        .unwrap_or_else(|| "-".to_string());
    let vm = status
        .virtual_machine_reference
        .as_ref()
        .map(|v| format!("{}/{}", v.namespace, v.kube_virt_virtual_machine_name))
        .unwrap_or_else(|| "-".to_string());
    let mut out = format!(
        "Name:      {}/{}\nPhase:     {phase}\nTenant:    {tenant}\nVM:        {vm}\n",
        ci.metadata.namespace.as_deref().unwrap_or_default(),
        ci.metadata.name.as_deref().unwrap_or_default(),
    );
    if let Some(t) = &ci.metadata.deletion_timestamp {
        out.push_str(&format!("Deleting:  since {}\n", format_time(t.0)));
    }
    out.push('\n');
    if status.conditions.is_empty() {
        out.push_str("No conditions yet.\n");
    } else {
        out.push_str(&conditions_table(&status.conditions, now, width));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudkit_api::{
        ComputeInstanceSpec, ComputeInstanceStatus, JobState, JobType, Phase, ProviderKind,
        TenantReference, VirtualMachineReference,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_772_366_400 + second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn durations_read_like_kubectl_ages() {
        let rows = [
            (-5, "0s"),
            (0, "0s"),
            (59, "59s"),
            (60, "1m0s"),
            (303, "5m3s"),
            (3599, "59m59s"),
            (3600, "1h0m"),
            (7500, "2h5m"),
            (86399, "23h59m"),
            (86400, "1d0h"),
            (3 * 86400 + 4 * 3600 + 59, "3d4h"),
        ];
        for (secs, want) in rows {
            assert_eq!(format_duration(secs), want, "{secs}");
        }
    }

    #[test]
    fn a_job_lasts_until_its_completion_or_so_far() {
        let now = at(1000);
        let mut job = JobStatus::new("7", JobType::Provision, Time(at(0)), JobState::Succeeded);
        job.completion_timestamp = Some(Time(at(125)));
        assert_eq!(job_duration(&job, now), "2m5s");

        job.completion_timestamp = None;
        assert_eq!(job_duration(&job, now), "-", "terminal, no completion time");

        job.state = JobState::Running;
        assert_eq!(job_duration(&job, now), "16m40s so far");
        job.state = JobState::Pending;
        job.completion_timestamp = Some(Time(at(125)));
        assert_eq!(
            job_duration(&job, now),
            "16m40s so far",
            "a completion time of a non-terminal job is ignored"
        );
    }

    #[test]
    fn times_are_whole_seconds_in_utc() {
        let t = at(0)
            .checked_add(jiff::SignedDuration::from_millis(1750))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        assert_eq!(format_time(t), "2026-03-01T12:00:01Z");
    }

    #[test]
    fn messages_are_flattened_and_cut() {
        assert_eq!(one_line(None, Some(10)), "");
        assert_eq!(one_line(Some("a\n  b\tc "), None), "a b c");
        assert_eq!(one_line(Some("0123456789"), Some(10)), "0123456789");
        assert_eq!(one_line(Some("0123456789ab"), Some(10)), "0123456...");
        assert_eq!(one_line(Some("0123456789ab"), None), "0123456789ab");
        assert_eq!(
            one_line(Some("ééééééééééé"), Some(5)),
            "éé...",
            "characters, not bytes"
        );
    }

    #[test]
    fn tables_pad_columns_to_the_widest_cell() {
        let t = render_table(
            &["A", "LONG HEADER", "C"],
            &[
                vec!["wide cell".into(), "x".into(), "".into()],
                vec!["y".into(), "z".into(), "last".into()],
            ],
        );
        assert_eq!(
            t,
            "A           LONG HEADER   C\n\
             wide cell   x\n\
             y           z             last\n"
        );
    }

    #[test]
    fn the_jobs_table_has_every_column() {
        let mut done = JobStatus::new(
            "eda-webhook-1",
            JobType::Provision,
            Time(at(0)),
            JobState::Failed,
        );
        done.completion_timestamp = Some(Time(at(42)));
        done.message = Some("playbook failed:\nunreachable host".into());
        let mut running = JobStatus::new("", JobType::Deprovision, Time(at(60)), JobState::Pending);
        running.provider = Some(ProviderKind::Aap);
        let t = jobs_table(&[done, running], at(120), Some(MESSAGE_WIDTH));
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "ID", "TYPE", "PROVIDER", "STATE", "STARTED", "DURATION", "MESSAGE"
            ]
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "eda-webhook-1",
                "provision",
                "eda",
                "Failed",
                "2026-03-01T12:00:00Z",
                "42s",
                "playbook",
                "failed:",
                "unreachable",
                "host"
            ]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "(launching)",
                "deprovision",
                "aap",
                "Pending",
                "2026-03-01T12:01:00Z",
                "1m0s",
                "so",
                "far"
            ]
        );
        assert_eq!(lines.len(), 3);
    }

    #[test]
    fn the_status_report_names_the_references_and_the_conditions() {
        let mut ci = ComputeInstance::new("vm", ComputeInstanceSpec::for_template("t"));
        ci.metadata.namespace = Some("ns".into());
        let bare = status_report(&ci, at(0), None);
        assert!(bare.contains("Phase:     -\n"), "{bare}");
        assert!(bare.contains("Tenant:    -\n"), "{bare}");
        assert!(bare.contains("No conditions yet."), "{bare}");
        assert!(!bare.contains("Deleting:"), "{bare}");

        ci.metadata.deletion_timestamp = Some(Time(at(5)));
        ci.status = Some(ComputeInstanceStatus {
            phase: Some(Phase::Deleting),
            tenant_reference: Some(TenantReference {
                name: "tenant-abc".into(),
                namespace: "ns".into(),
            }),
            virtual_machine_reference: Some(VirtualMachineReference {
                namespace: "ns-abc".into(),
                kube_virt_virtual_machine_name: "vm-1".into(),
            }),
            conditions: vec![Condition {
                type_: "DeletionBlocked".into(),
                status: "True".into(),
                reason: "DeprovisionFailed".into(),
                message: "deprovision job 9 failed".into(),
                last_transition_time: Time(at(0)),
                observed_generation: None,
            }],
            ..ComputeInstanceStatus::default()
        });
        let r = status_report(&ci, at(3700), None);
        assert!(
            r.starts_with("Name:      ns/vm\nPhase:     Deleting\n"),
            "{r}"
        );
        assert!(r.contains("Tenant:    ns/tenant-abc\n"), "{r}");
        assert!(r.contains("VM:        ns-abc/vm-1\n"), "{r}");
        assert!(r.contains("Deleting:  since 2026-03-01T12:00:05Z\n"), "{r}");
        let last = r.lines().last().unwrap_or_default();
        assert_eq!(
            last.split_whitespace().collect::<Vec<_>>(),
            [
                "DeletionBlocked",
                "True",
                "DeprovisionFailed",
                "deprovision",
                "job",
                "9",
                "failed",
                "1h1m"
            ]
        );
    }
}
