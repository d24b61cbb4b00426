//! CIs in waves, waits that live through API outages, and the checks every scenario ends with.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use cloudkit_api::history::latest_job;
use cloudkit_api::{ComputeInstance, ComputeInstanceSpec, JobState, JobType, Phase};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use crate::world::World;

/// Requests the workload keeps in flight.
const CONCURRENCY: usize = 16;

pub fn names(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}-{i:04}")).collect()
}

fn spec() -> ComputeInstanceSpec {
    let mut spec = ComputeInstanceSpec::for_template("chaos_template");
    spec.cores = Some(2);
    spec.memory_gib = Some(4);
    spec
}

/// The fulfillment service's id of CI `name` (the `computeinstance-uuid` label): a UUID made
/// from the name, so the service's objects can be created before the CIs.
pub fn uuid_of(name: &str) -> String {
    let digits: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    let tail = format!("{digits:0>12}");
    format!("00000000-0000-4000-8000-{}", &tail[tail.len() - 12..])
}

/// Creates the CIs (labelled with [`uuid_of`] when `uuid_labels`); returns name -> uid.
pub async fn create(
    api: &Api<ComputeInstance>,
    names: &[String],
    uuid_labels: bool,
) -> anyhow::Result<BTreeMap<String, String>> {
    futures::stream::iter(names.iter().cloned())
        .map(|name| async move {
            let mut ci = cloudkit_test_support::in_test_tenant(ComputeInstance::new(&name, spec()));
            if uuid_labels {
                ci.metadata.labels = Some(BTreeMap::from([(
                    cloudkit_api::metadata::UUID_LABEL.to_string(),
                    uuid_of(&name),
                )]));
            }
            let created = api
                .create(&PostParams::default(), &ci)
                .await
                .with_context(|| format!("creating {name}"))?;
            let uid = created.metadata.uid.unwrap_or_default();
            Ok::<_, anyhow::Error>((name, uid))
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await
}

pub async fn delete(api: &Api<ComputeInstance>, names: &[String]) -> anyhow::Result<()> {
    futures::stream::iter(names.iter().cloned())
        .map(|name| async move {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(anyhow::Error::new(e).context(format!("deleting {name}"))),
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(drop)
}

/// Provisioned: phase Running and the latest provision job Succeeded.
pub fn is_running(ci: &ComputeInstance) -> bool {
    ci.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Running)
            && latest_job(&s.jobs, JobType::Provision)
                .is_some_and(|j| j.state == JobState::Succeeded)
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Running,
    Gone,
}

/// Polls until every CI of `names` is as wanted, or `limit` passes. List errors (an API server
/// being down) are retried. On time-out the error names the stragglers and what they show.
pub async fn wait(
    api: &Api<ComputeInstance>,
    names: &[String],
    want: Want,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let wanted: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                let present: BTreeMap<&str, &ComputeInstance> = list
                    .items
                    .iter()
                    .filter_map(|ci| Some((ci.metadata.name.as_deref()?, ci)))
                    .filter(|(n, _)| wanted.contains(n))
                    .collect();
                let stragglers: Vec<String> = match want {
                    Want::Running => wanted
                        .iter()
                        .filter(|n| !present.get(*n).is_some_and(|ci| is_running(ci)))
                        .map(|n| describe(n, present.get(n).copied()))
                        .collect(),
                    Want::Gone => present
                        .iter()
                        .map(|(n, ci)| describe(n, Some(ci)))
                        .collect(),
                };
                if stragglers.is_empty() {
                    return Ok(start.elapsed());
                }
                if start.elapsed() > limit {
                    anyhow::bail!(
                        "{} of {} CIs not {want:?} after {limit:?}; first ones:\n{}",
                        stragglers.len(),
                        names.len(),
                        stragglers
                            .iter()
                            .take(5)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("\n")
                    );
                }
            }
            Err(e) => {
                if start.elapsed() > limit {
                    anyhow::bail!("listing CIs still fails after {limit:?}: {e}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One line saying where a CI stands.
pub fn describe(name: &str, ci: Option<&ComputeInstance>) -> String {
    let Some(ci) = ci else {
        return format!("{name}: absent");
    };
    let status = ci.status.clone().unwrap_or_default();
    let jobs: Vec<String> = status
        .jobs
        .iter()
        .map(|j| format!("{}:{}:{}", j.job_type, j.job_id, j.state))
        .collect();
    let conditions: Vec<String> = status
        .conditions
        .iter()
        .filter(|c| c.status == "True" || c.type_ != "Ready")
        .map(|c| format!("{}={} {}: {}", c.type_, c.status, c.reason, c.message))
        .collect();
    format!(
        "{name}: phase {:?}, finalizers {:?}, deleting {}, jobs [{}], conditions [{}]",
        status.phase,
        ci.metadata.finalizers.clone().unwrap_or_default(),
        ci.metadata.deletion_timestamp.is_some(),
        jobs.join(", "),
        conditions.join("; ")
    )
}

/// What the simulator launched, per CI (by uid, from the launch keys
/// `<uid>/<type>/<config version or "delete">/<attempt>`).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Launch keys launched more than once.
    pub duplicate_keys: Vec<(String, u64)>,
    /// Per uid: launches of each type.
    pub provisions: BTreeMap<String, u64>,
    pub deprovisions: BTreeMap<String, u64>,
    pub launches: u64,
}

impl Ledger {
    pub fn read(world: &World) -> anyhow::Result<Ledger> {
        Ok(Ledger::from_stats(&world.sim()?.stats()))
    }

    fn from_stats(stats: &cloudkit_aap_sim::Stats) -> Ledger {
        let mut ledger = Ledger {
            launches: stats.launches,
            ..Ledger::default()
        };
        for (key, n) in &stats.launches_by_key {
            if *n > 1 {
                ledger.duplicate_keys.push((key.clone(), *n));
            }
            let mut parts = key.split('/');
            let (Some(uid), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let map = match kind {
                "provision" => &mut ledger.provisions,
                "deprovision" => &mut ledger.deprovisions,
                _ => continue,
            };
            *map.entry(uid.to_string()).or_default() += n;
        }
        ledger
    }

    /// For each CI of `uids`: how many provision and deprovision launches it got.
    pub fn per_ci(&self, uids: &BTreeMap<String, String>) -> Vec<(String, u64, u64)> {
        uids.iter()
            .map(|(name, uid)| {
                (
                    name.clone(),
                    self.provisions.get(uid).copied().unwrap_or(0),
                    self.deprovisions.get(uid).copied().unwrap_or(0),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_groups_launch_keys_by_ci_and_finds_duplicates() {
        let stats = cloudkit_aap_sim::Stats {
            launches: 5,
            launches_by_key: BTreeMap::from([
                ("u1/provision/abc/1".to_string(), 1),
                ("u1/provision/abc/2".to_string(), 1),
                ("u1/deprovision/delete/1".to_string(), 2),
                ("u2/provision/abc/1".to_string(), 1),
            ]),
            ..Default::default()
        };
        let ledger = Ledger::from_stats(&stats);
        assert_eq!(
            ledger.duplicate_keys,
            vec![("u1/deprovision/delete/1".to_string(), 2)]
        );
        let uids = BTreeMap::from([
            ("a".to_string(), "u1".to_string()),
            ("b".to_string(), "u2".to_string()),
            ("c".to_string(), "u3".to_string()),
        ]);
        assert_eq!(
            ledger.per_ci(&uids),
            vec![
                ("a".to_string(), 2, 2),
                ("b".to_string(), 1, 0),
                ("c".to_string(), 0, 0)
            ]
        );
    }
}
