use std::collections::BTreeMap;
use std::time::Duration;

use cloudkit_api::ProviderKind;

/// Default of [`Settings::restart_timeout`].
pub const DEFAULT_RESTART_TIMEOUT: Duration = Duration::from_secs(600);

/// Longest wait between automatic provision retries.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(600);

/// What a configured provider can do, as far as decisions are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// Job state comes from the network; poll it at the poll interval.
    pub polls_remotely: bool,
    /// Running jobs can be cancelled.
    pub can_cancel: bool,
    /// A launch whose answer was lost can be looked up by its launch key.
    pub can_find_launches: bool,
    /// A deprovision that failed (or could not be started) blocks deletion by default.
    pub blocks_deletion_on_failure: bool,
}

/// Everything the decision function needs besides the CI and the observations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// History limit (`CLOUDKIT_MAX_JOB_HISTORY`).
    pub history_limit: usize,
    /// Automatic retries of a failed provision for the same configuration
    /// (`CLOUDKIT_PROVISION_RETRY_LIMIT`).
    pub retry_limit: u32,
    /// Poll interval for remote jobs, and the base of the retry backoff.
    pub poll_interval: Duration,
    /// How long a deletion waits for an in-flight provision that cannot be cancelled
    /// (`CLOUDKIT_EDA_PROVISION_GRACE`).
    pub eda_grace: Duration,
    /// How long a launch may be in flight in some process (the request timeout plus margin).
    /// An intent younger than this without a job id may still be answered, so it is not looked
    /// up or relaunched yet.
    pub launch_window: Duration,
    /// How long a restart waits for a new VirtualMachineInstance (`CLOUDKIT_RESTART_TIMEOUT`).
    pub restart_timeout: Duration,
    /// The provider that starts new jobs.
    pub active: ProviderKind,
    /// Every configured provider and what it can do.
    pub providers: BTreeMap<ProviderKind, Capabilities>,
}

impl Settings {
    /// Capabilities of `kind`, when it is configured.
    pub fn capabilities(&self, kind: ProviderKind) -> Option<Capabilities> {
        self.providers.get(&kind).copied()
    }

    /// The delay before automatic retry number `attempt` (the attempt that failed was
    /// `attempt`): the poll interval doubled per failed attempt, capped at ten minutes.
    pub fn retry_backoff(&self, failed_attempt: u32) -> Duration {
        let exp = failed_attempt.saturating_sub(1).min(20);
        self.poll_interval
            .saturating_mul(1u32 << exp)
            .min(MAX_RETRY_BACKOFF)
    }
}
