//! The one test harness of the workspace: every test crate (`cloudkit-reconciler-tests`,
//! `cloudkit-e2e`, `cloudkit-bench`, `cloudkit-chaos`) starts processes,
//! waits and builds fixtures through it instead of a copy of its own.
//!
//! It sits on top of [`cloudkit_testenv`], which stays the small crate that runs a real
//! kube-apiserver and etcd (and the watchdog that cleans up after the test process); this crate
//! adds what tests do with that server:
//!
//! - [`OperatorSettings`] -> [`OperatorProcess`]: the operator binary as a child process with
//!   its log in a file, its HTTP address, `/metrics`, SIGKILL or a graceful stop;
//! - the AWX simulator as tests use it ([`simulator`], [`runner_simulator`], `sim_*` readers),
//!   a counting EDA webhook ([`CountingWebhook`]) and real ansible-rulebook ([`rulebook`]);
//! - waits with a deadline that fail with every log that can explain the failure
//!   ([`eventually`], [`wait_for`], [`wait_observed`], [`Scene::wait_for`]);
//! - ComputeInstance fixtures ([`CiFixture`]) and status readers ([`latest`], [`condition`]);
//! - Debian's Prometheus ([`PrometheusServer`]) and [`promtool`], from `hack/prometheus-install.sh`;
//! - [`free_port`], [`run_dir`], and the operator's RBAC from `deploy/` ([`grant_operator_roles`]).
//!
//! ```no_run
//! use cloudkit_api::{JobState, JobType};
//! use cloudkit_test_support::*;
//!
//! # async fn example() {
//! let ns = cloudkit_testenv::shared().namespace("doc").await;
//! let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), cloudkit_aap_sim::Outcome::Successful).await;
//! let mut op = OperatorSettings::new("op", operator_binary(), cloudkit_testenv::shared().kubeconfig_path(), &ns)
//!     .aap(&sim.api_url(), SIM_TOKEN, PROVISION_TEMPLATE, DEPROVISION_TEMPLATE)
//!     .start()
//!     .await
//!     .unwrap();
//! let api = kube::Api::namespaced(cloudkit_testenv::shared().admin_client().await, &ns);
//! CiFixture::new("vm").create(&api).await;
//! wait_for(&api, "vm", Some(&sim), "a succeeded provision", |ci| {
//!     latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Succeeded)
//! })
//! .await;
//! op.stop(std::time::Duration::from_secs(15)).await;
//! # }
//! ```
// A harness fails the test that uses it, with a message, the way a test does: by panicking.
#![allow(clippy::panic, clippy::expect_used, clippy::unwrap_used)]

mod automation;
mod error;
mod fixtures;
mod operator;
mod process;
mod prometheus;
mod rbac;
mod scene;
mod sim;
mod wait;
mod webhook;

pub use automation::{
    Automation, Rulebook, WEBHOOK_HMAC_SECRET, WEBHOOK_TOKEN, automation, rulebook, start_rulebook,
};
pub use error::{Error, Result};
pub use fixtures::{
    CiFixture, TEST_TEMPLATE, TEST_TENANT, annotate, condition, create, delete, finalizers,
    in_test_tenant, jobs, latest, merge_patch, phase, running_and_provisioned,
    spec_with_parameters,
};
pub use operator::{
    OperatorProcess, OperatorSettings, START_DEADLINE, metric_sum, operator_binary, parse_metrics,
    plugin_binary,
};
pub use process::{ChildProcess, free_port, run_dir, strip_ansi, workspace_root};
pub use prometheus::{PrometheusServer, prometheus_dir, promtool, scrape_config};
pub use rbac::{deploy_document, grant_operator_roles, yaml_documents};
pub use scene::{Follower, Recorder, Scene, Seen};
pub use sim::{
    DEPROVISION_TEMPLATE, PROVISION_TEMPLATE, SIM_TOKEN, launched_config_version, launches_of,
    phases, runner_simulator, sim_get, sim_job, sim_jobs, sim_stdout, sim_time, simulator,
};
pub use wait::{
    DEADLINE, Diagnostics, SimDiagnostics, describe_ci, eventually, eventually_with, wait_for,
    wait_for_ci, wait_gone, wait_observed,
};
pub use webhook::CountingWebhook;

/// The test API server shared by the tests of one test binary (see [`cloudkit_testenv::shared`]).
pub fn env() -> &'static cloudkit_testenv::TestEnv {
    cloudkit_testenv::shared()
}
