//! Prometheus metrics of the reconciler and of the provider calls it makes.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use cloudkit_api::metadata::CONDITION_DELETION_BLOCKED;
use cloudkit_api::{ComputeInstance, JobState, JobType, ProviderKind};
use kube::runtime::reflector::Store;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// All metrics, registered in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    reconcile_errors: Family<Labels, Counter>,
    reconcile_duration: Histogram,
    jobs_started: Family<Labels, Counter>,
    jobs_finished: Family<Labels, Counter>,
    job_duration: Family<Labels, Histogram>,
    provider_requests: Family<Labels, Histogram>,
    provider_errors: Family<Labels, Counter>,
    status_writes: Counter,
    write_conflicts: Family<Labels, Counter>,
    deletions_blocked: Gauge,
    oldest_unfinished_job: Family<Labels, Gauge<f64, AtomicU64>>,
    /// The controller's cache of CIs, from which the two gauges above are computed when the
    /// metrics are rendered (unset on a replica that does not lead).
    cis: OnceLock<Store<ComputeInstance>>,
    /// One render at a time: the gauges are cleared and filled again for each.
    rendering: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `cloudkit` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("cloudkit");
        let reconciles = Counter::default();
        let reconcile_errors = Family::<Labels, Counter>::default();
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let jobs_started = Family::<Labels, Counter>::default();
        let jobs_finished = Family::<Labels, Counter>::default();
        // Provisioning takes minutes: 5 s up to about 3 hours.
        let job_duration = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(5.0, 2.0, 12))
        });
        let provider_requests = Family::<Labels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let provider_errors = Family::<Labels, Counter>::default();
        let status_writes = Counter::default();
        let write_conflicts = Family::<Labels, Counter>::default();
        let deletions_blocked = Gauge::default();
        let oldest_unfinished_job = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconcile passes that ended in an error, by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of a reconcile pass",
            reconcile_duration.clone(),
        );
        registry.register(
            "jobs_started",
            "Jobs started, by type and provider",
            jobs_started.clone(),
        );
        registry.register(
            "jobs_finished",
            "Jobs seen reaching a terminal state, by type, provider and state",
            jobs_finished.clone(),
        );
        registry.register(
            "job_duration_seconds",
            "Time from a job's start to its terminal state, by type and provider",
            job_duration.clone(),
        );
        registry.register(
            "provider_request_duration_seconds",
            "Latency of provider calls, by provider and operation",
            provider_requests.clone(),
        );
        registry.register(
            "provider_request_errors",
            "Failed provider calls, by provider, operation and error kind",
            provider_errors.clone(),
        );
        registry.register(
            "status_writes",
            "Status writes sent to the API server",
            status_writes.clone(),
        );
        registry.register(
            "write_conflicts",
            "Writes the API server refused with 409 Conflict (decided from an object that had \
             changed since), by write: finalizer, status, or answer (a launch's outcome)",
            write_conflicts.clone(),
        );
        registry.register(
            "deletions_blocked",
            "ComputeInstances whose deletion is blocked by a failed deprovision \
             (condition DeletionBlocked=True)",
            deletions_blocked.clone(),
        );
        registry.register(
            "oldest_unfinished_job_start_time_seconds",
            "Start time (Unix seconds) of the oldest job not in a terminal state, by type and \
             provider; absent when every job has ended",
            oldest_unfinished_job.clone(),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            jobs_started,
            jobs_finished,
            job_duration,
            provider_requests,
            provider_errors,
            status_writes,
            write_conflicts,
            deletions_blocked,
            oldest_unfinished_job,
            cis: OnceLock::new(),
            rendering: Mutex::new(()),
        }
    }

    /// The controller's cache of CIs, read when the metrics are rendered. Only the first call
    /// counts.
    pub(crate) fn watch(&self, cis: Store<ComputeInstance>) {
        let _ = self.cis.set(cis);
    }

    /// The registry, for other controllers of the process to register their metrics in before
    /// the handle is shared (they are then rendered with these).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// A shareable handle.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self::new())
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let _rendering = self
            .rendering
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(store) = self.cis.get() {
            self.count(&store.state());
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Sets the gauges computed from the CIs.
    fn count(&self, cis: &[Arc<ComputeInstance>]) {
        let mut blocked = 0;
        let mut oldest: HashMap<(JobType, ProviderKind), i64> = HashMap::new();
        for ci in cis {
            let Some(status) = &ci.status else { continue };
            if status
                .conditions
                .iter()
                .any(|c| c.type_ == CONDITION_DELETION_BLOCKED && c.status == "True")
            {
                blocked += 1;
            }
            for job in status.jobs.iter().filter(|j| !j.is_terminal()) {
                let started = job.timestamp.0.as_millisecond();
                oldest
                    .entry((job.job_type, job.owner()))
                    .and_modify(|t| *t = (*t).min(started))
                    .or_insert(started);
            }
        }
        self.deletions_blocked.set(blocked);
        self.oldest_unfinished_job.clear();
        for ((job_type, provider), started) in oldest {
            self.oldest_unfinished_job
                .get_or_create(&vec![
                    ("type", job_type.to_string()),
                    ("provider", provider.to_string()),
                ])
                .set(started as f64 / 1000.0);
        }
    }

    pub(crate) fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(took.as_secs_f64());
    }

    pub(crate) fn reconcile_error(&self, kind: &'static str) {
        self.reconcile_errors
            .get_or_create(&vec![("kind", kind.to_string())])
            .inc();
    }

    pub(crate) fn job_started(&self, job_type: JobType, provider: ProviderKind) {
        self.jobs_started
            .get_or_create(&vec![
                ("type", job_type.to_string()),
                ("provider", provider.to_string()),
            ])
            .inc();
    }

    pub(crate) fn job_finished(
        &self,
        job_type: JobType,
        provider: ProviderKind,
        state: JobState,
        took: Duration,
    ) {
        self.jobs_finished
            .get_or_create(&vec![
                ("type", job_type.to_string()),
                ("provider", provider.to_string()),
                ("state", state.to_string()),
            ])
            .inc();
        self.job_duration
            .get_or_create(&vec![
                ("type", job_type.to_string()),
                ("provider", provider.to_string()),
            ])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn provider_call(
        &self,
        provider: ProviderKind,
        operation: &'static str,
        took: Duration,
        error: Option<&'static str>,
    ) {
        let labels = vec![
            ("provider", provider.to_string()),
            ("operation", operation.to_string()),
        ];
        self.provider_requests
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
        if let Some(kind) = error {
            let mut labels = labels;
            labels.push(("kind", kind.to_string()));
            self.provider_errors.get_or_create(&labels).inc();
        }
    }

    pub(crate) fn status_written(&self) {
        self.status_writes.inc();
    }

    pub(crate) fn write_conflict(&self, write: &'static str) {
        self.write_conflicts
            .get_or_create(&vec![("write", write.to_string())])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudkit_api::JobStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    #[test]
    fn renders_every_family() {
        let m = Metrics::new();
        m.reconciled(Duration::from_millis(3));
        m.reconcile_error("Kube");
        m.job_started(JobType::Provision, ProviderKind::Aap);
        m.job_finished(
            JobType::Provision,
            ProviderKind::Aap,
            JobState::Succeeded,
            Duration::from_secs(140),
        );
        m.provider_call(
            ProviderKind::Eda,
            "launch",
            Duration::from_millis(5),
            Some("Transport"),
        );
        m.status_written();
        m.write_conflict("answer");
        let text = m.render();
        for needle in [
            "cloudkit_reconciles_total 1",
            "cloudkit_reconcile_errors_total{kind=\"Kube\"} 1",
            "cloudkit_jobs_started_total{type=\"provision\",provider=\"aap\"} 1",
            "cloudkit_jobs_finished_total{type=\"provision\",provider=\"aap\",state=\"Succeeded\"} 1",
            "cloudkit_job_duration_seconds_sum{type=\"provision\",provider=\"aap\"} 140",
            "cloudkit_provider_request_errors_total{provider=\"eda\",operation=\"launch\",kind=\"Transport\"} 1",
            "cloudkit_status_writes_total 1",
            "cloudkit_write_conflicts_total{write=\"answer\"} 1",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }
    }

    fn ci(conditions: Vec<Condition>, jobs: Vec<JobStatus>) -> Arc<ComputeInstance> {
        let mut ci =
            ComputeInstance::new("vm", cloudkit_api::ComputeInstanceSpec::for_template("t"));
        ci.status = Some(cloudkit_api::ComputeInstanceStatus {
            conditions,
            jobs,
            ..Default::default()
        });
        Arc::new(ci)
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).unwrap_or_default())
    }

    fn blocked(status: &str) -> Condition {
        Condition {
            type_: CONDITION_DELETION_BLOCKED.to_string(),
            status: status.to_string(),
            reason: "DeprovisionFailed".to_string(),
            message: "m".to_string(),
            last_transition_time: at(0),
            observed_generation: None,
        }
    }

    #[test]
    fn counts_blocked_deletions_and_the_oldest_unfinished_job_from_the_cis() {
        let m = Metrics::new();
        let job = |start, t, state| JobStatus::new("1", t, at(start), state);
        let cis = [
            ci(
                vec![blocked("True")],
                vec![job(100, JobType::Deprovision, JobState::Failed)],
            ),
            ci(vec![blocked("False")], vec![]),
            ci(
                vec![],
                vec![
                    job(50, JobType::Provision, JobState::Succeeded),
                    job(300, JobType::Provision, JobState::Running),
                ],
            ),
            ci(
                vec![],
                vec![job(200, JobType::Provision, JobState::Pending)],
            ),
            ci(
                vec![],
                vec![job(400, JobType::Deprovision, JobState::Unknown)],
            ),
        ];
        m.count(&cis);
        let text = m.render();
        for needle in [
            "cloudkit_deletions_blocked 1\n",
            "cloudkit_oldest_unfinished_job_start_time_seconds{type=\"provision\",provider=\"aap\"} 200.0",
            "cloudkit_oldest_unfinished_job_start_time_seconds{type=\"deprovision\",provider=\"aap\"} 400.0",
        ] {
            assert!(text.contains(needle), "missing {needle} in\n{text}");
        }

        // Once every job has ended, the series go away.
        m.count(&[ci(
            vec![],
            vec![job(300, JobType::Provision, JobState::Failed)],
        )]);
        let text = m.render();
        assert!(text.contains("cloudkit_deletions_blocked 0\n"), "{text}");
        assert!(
            !text.contains("cloudkit_oldest_unfinished_job_start_time_seconds{"),
            "{text}"
        );
    }
}
