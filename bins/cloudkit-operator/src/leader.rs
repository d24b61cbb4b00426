//! Leader election: with several replicas, only the holder of a coordination.k8s.io Lease runs
//! the controller, so that one process at a time launches jobs and writes status.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info};

/// The Lease a replica must hold to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseSettings {
    /// Namespace of the Lease; the client's default namespace when absent.
    pub namespace: Option<String>,
    /// Name of the Lease.
    pub name: String,
    /// How long a holder that stops renewing keeps the Lease.
    pub duration_secs: u64,
    /// How long before the end the holder renews.
    pub grace_secs: u64,
}

/// A replica taking part in the election: it renews or watches the Lease in the background.
pub struct Candidate {
    is_leader: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
    lease: String,
}

impl Candidate {
    /// Starts taking part in the election for the Lease of `settings`.
    pub async fn join(client: Client, settings: &LeaseSettings) -> anyhow::Result<Self> {
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| client.default_namespace().to_string());
        let identity = identity();
        let manager = LeaseManagerBuilder::new(client, &settings.name)
            .with_namespace(namespace)
            .with_identity(identity.clone())
            .with_duration(settings.duration_secs)
            .with_grace(settings.grace_secs)
            .build()
            .await?;
        let (is_leader, task) = manager.watch().await;
        info!(lease = %settings.name, %identity, "waiting for leadership");
        Ok(Candidate {
            is_leader,
            task,
            lease: settings.name.clone(),
        })
    }

    /// Waits until this replica holds the Lease, or until `stop` turns true; then it leaves the
    /// election and gives `None`.
    pub async fn lead(
        mut self,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Option<Leadership>> {
        let leader = tokio::select! {
            r = self.is_leader.wait_for(|l| *l) => { r?; true }
            _ = stop.wait_for(|s| *s) => false,
        };
        if !leader {
            self.leave().await;
            return Ok(None);
        }
        info!(lease = %self.lease, "acquired leadership");
        Ok(Some(Leadership(self)))
    }

    async fn leave(self) {
        // Dropping the receiver tells the manager to release the Lease and end its task.
        drop(self.is_leader);
        let _ = self.task.await;
    }
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("lease", &self.lease)
            .field("is_leader", &*self.is_leader.borrow())
            .finish()
    }
}

/// The Lease is held: run until [`Leadership::lost`] completes, then [`Leadership::release`].
#[derive(Debug)]
pub struct Leadership(Candidate);

impl Leadership {
    /// Completes when another replica took the Lease over (this one could not renew in time).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut is_leader = self.0.is_leader.clone();
        async move {
            let _ = is_leader.wait_for(|l| !*l).await;
            error!("lost leadership; stopping");
        }
    }

    /// Gives the Lease up, so that a standby takes over without waiting for it to expire.
    pub async fn release(self) {
        self.0.leave().await;
    }
}

/// The Lease holder identity: the pod name (`HOSTNAME` in a pod) and the process id, so that
/// `kubectl get lease` tells which replica leads.
fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
        .unwrap_or_else(|| "cloudkit-operator".to_string());
    format!("{}-{}", host.trim(), std::process::id())
}
