//! Waits with a deadline that fail with everything that can explain the failure.

use std::future::Future;
use std::time::{Duration, Instant};

use cloudkit_aap_sim::SimHandle;
use cloudkit_api::ComputeInstance;
use kube::Api;

/// Upper bound of every wait. Typical waits take a few seconds; the bound is generous because the
/// machine (2 cores) may also run ansible-playbook, a JVM and the API server.
pub const DEADLINE: Duration = Duration::from_secs(120);

const POLL: Duration = Duration::from_millis(100);

/// What a failed wait prints, and whether to give up before the deadline.
pub trait Diagnostics {
    /// Every log and state that can explain a failure; `ci` is the CI's last state, if any.
    fn describe(&mut self, ci: Option<&ComputeInstance>) -> String;

    /// A reason to fail now rather than at the deadline (a process that died).
    fn gone(&mut self, _ci: Option<&ComputeInstance>) -> Option<String> {
        None
    }
}

/// The CI, the simulator's recent requests and jobs (when there is one), and the test API
/// server's log tail.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimDiagnostics<'a>(pub Option<&'a SimHandle>);

impl Diagnostics for SimDiagnostics<'_> {
    fn describe(&mut self, ci: Option<&ComputeInstance>) -> String {
        let mut out = describe_ci(ci);
        if let Some(sim) = self.0 {
            out.push_str(&sim.simulator().diagnostics(30));
        }
        out.push_str(&format!(
            "apiserver log tail:\n{}",
            cloudkit_testenv::shared().log_tails()
        ));
        out
    }
}

/// Finalizers, annotations and status of a CI, for failure messages.
pub fn describe_ci(ci: Option<&ComputeInstance>) -> String {
    let Some(ci) = ci else {
        return String::new();
    };
    format!(
        "CI {}/{}: finalizers={:?} annotations={:?}\nstatus={}\n",
        ci.metadata.namespace.as_deref().unwrap_or_default(),
        ci.metadata.name.as_deref().unwrap_or_default(),
        ci.metadata.finalizers,
        ci.metadata.annotations,
        serde_json::to_string_pretty(&ci.status).unwrap_or_default()
    )
}

/// Polls `check` until it holds; fails the test at [`DEADLINE`] with the test API server's log.
pub async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually_with(what, check, || {
        format!(
            "apiserver log tail:\n{}",
            cloudkit_testenv::shared().log_tails()
        )
    })
    .await;
}

/// Polls `check` until it holds; fails the test at [`DEADLINE`] with `diagnostics()`.
///
/// # Panics
///
/// At the deadline.
#[allow(clippy::panic)]
pub async fn eventually_with<F, Fut>(what: &str, mut check: F, diagnostics: impl Fn() -> String)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what}\n{}",
                diagnostics()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the CI until `done` holds; fails the test with `diagnostics` at the deadline or as soon
/// as [`Diagnostics::gone`] says so.
///
/// # Panics
///
/// At the deadline, or when `diagnostics` reports a dead process.
#[allow(clippy::panic)]
pub async fn wait_for_ci(
    api: &Api<ComputeInstance>,
    name: &str,
    what: &str,
    diagnostics: &mut impl Diagnostics,
    done: impl Fn(&ComputeInstance) -> bool,
) -> ComputeInstance {
    let start = Instant::now();
    let mut last = None;
    loop {
        if let Ok(ci) = api.get(name).await {
            if done(&ci) {
                return ci;
            }
            last = Some(ci);
        }
        if let Some(reason) = diagnostics.gone(last.as_ref()) {
            panic!("{reason}\n{}", diagnostics.describe(last.as_ref()));
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {what} on {name}\n{}",
                diagnostics.describe(last.as_ref())
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_for_ci`] with the simulator's diagnostics.
pub async fn wait_for(
    api: &Api<ComputeInstance>,
    name: &str,
    sim: Option<&SimHandle>,
    what: &str,
    done: impl Fn(&ComputeInstance) -> bool,
) -> ComputeInstance {
    wait_for_ci(api, name, what, &mut SimDiagnostics(sim), done).await
}

/// Polls until the CI is gone; returns the last version seen.
///
/// # Panics
///
/// At the deadline.
#[allow(clippy::panic)]
pub async fn wait_gone(
    api: &Api<ComputeInstance>,
    name: &str,
    sim: Option<&SimHandle>,
) -> Option<ComputeInstance> {
    let start = Instant::now();
    let mut last = None;
    loop {
        match api.get_opt(name).await {
            Ok(None) => return last,
            Ok(Some(ci)) => last = Some(ci),
            Err(_) => {}
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "timed out after {DEADLINE:?} waiting for {name} to be deleted\n{}",
                SimDiagnostics(sim).describe(last.as_ref())
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the operator has completed a pass over the CI's current spec: its
/// `status.observedGeneration` equals `metadata.generation`. Evidence that a change was seen,
/// before asserting that it caused nothing.
pub async fn wait_observed(
    api: &Api<ComputeInstance>,
    name: &str,
    sim: Option<&SimHandle>,
) -> ComputeInstance {
    wait_for(api, name, sim, "observedGeneration to catch up", |ci| {
        ci.metadata.generation.is_some()
            && ci.status.as_ref().and_then(|s| s.observed_generation) == ci.metadata.generation
    })
    .await
}
