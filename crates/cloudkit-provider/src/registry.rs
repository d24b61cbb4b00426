use std::collections::BTreeMap;
use std::sync::Arc;

use cloudkit_api::{JobStatus, ProviderKind};

use crate::Provider;

/// The active provider, which starts new jobs, plus every configured provider by kind, which
/// read the jobs they started.
#[derive(Clone, Debug)]
pub struct ProviderRegistry {
    active: Arc<dyn Provider>,
    by_kind: BTreeMap<ProviderKind, Arc<dyn Provider>>,
}

impl ProviderRegistry {
    /// A registry whose active provider is `active` (also its reader).
    pub fn new(active: Arc<dyn Provider>) -> Self {
        let mut by_kind = BTreeMap::new();
        by_kind.insert(active.kind(), Arc::clone(&active));
        ProviderRegistry { active, by_kind }
    }

    /// Adds a provider that only reads (and cancels) the jobs it started. It never replaces the
    /// active provider of its kind.
    pub fn with_reader(mut self, reader: Arc<dyn Provider>) -> Self {
        self.by_kind.entry(reader.kind()).or_insert(reader);
        self
    }

    /// The provider that starts new jobs.
    pub fn active(&self) -> &Arc<dyn Provider> {
        &self.active
    }

    /// The configured provider of `kind`, if any.
    pub fn get(&self, kind: ProviderKind) -> Option<&Arc<dyn Provider>> {
        self.by_kind.get(&kind)
    }

    /// The provider that owns `job` (its recorded provider, or the one inferred from a legacy
    /// id), when that provider is configured.
    pub fn for_job(&self, job: &JobStatus) -> Option<&Arc<dyn Provider>> {
        self.get(job.owner())
    }

    /// The kinds of every configured provider.
    pub fn kinds(&self) -> impl Iterator<Item = ProviderKind> + '_ {
        self.by_kind.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MockProvider;
    use cloudkit_api::{JobState, JobType};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn mock(kind: ProviderKind) -> Arc<dyn Provider> {
        let mut m = MockProvider::new();
        m.expect_kind().return_const(kind);
        Arc::new(m)
    }

    fn job(id: &str, provider: Option<ProviderKind>) -> JobStatus {
        let mut j = JobStatus::new(
            id,
            JobType::Provision,
            Time(Timestamp::UNIX_EPOCH),
            JobState::Running,
        );
        j.provider = provider;
        j
    }

    #[test]
    fn jobs_are_read_by_their_owner() {
        let registry =
            ProviderRegistry::new(mock(ProviderKind::Aap)).with_reader(mock(ProviderKind::Eda));
        assert_eq!(registry.active().kind(), ProviderKind::Aap);
        let owner = |j: &JobStatus| registry.for_job(j).map(|p| p.kind());
        assert_eq!(owner(&job("eda-webhook-1", None)), Some(ProviderKind::Eda));
        assert_eq!(owner(&job("9219", None)), Some(ProviderKind::Aap));
        assert_eq!(
            owner(&job("eda-webhook-1", Some(ProviderKind::Aap))),
            Some(ProviderKind::Aap)
        );
        assert_eq!(
            registry.kinds().collect::<Vec<_>>(),
            vec![ProviderKind::Aap, ProviderKind::Eda]
        );
    }

    #[test]
    fn unconfigured_owner_is_none() {
        let registry = ProviderRegistry::new(mock(ProviderKind::Aap));
        assert!(registry.for_job(&job("eda-webhook-1", None)).is_none());
        assert!(registry.get(ProviderKind::Eda).is_none());
    }

    #[test]
    fn a_reader_never_replaces_the_active_provider() {
        let active = mock(ProviderKind::Aap);
        let registry =
            ProviderRegistry::new(Arc::clone(&active)).with_reader(mock(ProviderKind::Aap));
        let got = registry.get(ProviderKind::Aap).map(Arc::as_ptr);
        assert_eq!(got, Some(Arc::as_ptr(&active)));
    }
}
