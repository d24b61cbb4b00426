//! The `ComputeInstance` reconciler.
//!
//! The rules live in [`decide`], a pure function from a CI, what the providers reported and the
//! current time to a [`Plan`]; [`apply_launch_answer`] is its pure counterpart for a provider's
//! answer to a launch. The Kubernetes glue ([`run`], [`reconcile`]) observes, decides and
//! executes plans.
//!
//! # Embedding
//!
//! Another controller plugs its own [`Provider`](cloudkit_provider::Provider) in through a
//! [`ProviderRegistry`](cloudkit_provider::ProviderRegistry). What the rules will do with a CI
//! can be asked without a cluster; the shell needs a client:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use async_trait::async_trait;
//! use cloudkit_api::{
//!     ComputeInstance, ComputeInstanceSpec, JobState, JobStatus, JobType, ProviderKind,
//! };
//! use cloudkit_provider::{
//!     DeprovisionOutcome, JobObservation, Launch, Provider, ProviderError, ProviderRegistry,
//!     StartedJob,
//! };
//! use cloudkit_reconciler::{
//!     Context, Metrics, Observed, ProviderCall, Settings, capabilities, decide,
//! };
//! use k8s_openapi::jiff::Timestamp;
//!
//! /// Starts jobs through some other automation, which reports back on the CI itself.
//! #[derive(Debug)]
//! struct MyAutomation;
//!
//! #[async_trait]
//! impl Provider for MyAutomation {
//!     fn kind(&self) -> ProviderKind {
//!         ProviderKind::Eda
//!     }
//!     fn polls_remotely(&self) -> bool {
//!         false
//!     }
//!     async fn provision(&self, _: &ComputeInstance, launch: &Launch) -> Result<StartedJob, ProviderError> {
//!         Ok(StartedJob::new(format!("mine-{}", launch.launch_key), JobState::Running))
//!     }
//!     async fn deprovision(&self, _: &ComputeInstance, _: &Launch) -> Result<DeprovisionOutcome, ProviderError> {
//!         Ok(DeprovisionOutcome::Skipped { message: "nothing to tear down".into() })
//!     }
//!     async fn job_state(&self, _: &ComputeInstance, job: &JobStatus) -> Result<JobObservation, ProviderError> {
//!         Ok(JobObservation::new(job.state))
//!     }
//! }
//!
//! let settings = Settings {
//!     history_limit: 10,
//!     retry_limit: 3,
//!     poll_interval: Duration::from_secs(30),
//!     eda_grace: Duration::from_secs(300),
//!     launch_window: Duration::from_secs(35),
//!     restart_timeout: Duration::from_secs(600),
//!     active: MyAutomation.kind(),
//!     providers: [(MyAutomation.kind(), capabilities(&MyAutomation))].into(),
//! };
//!
//! // A new CI: the rules add the finalizer and launch its first provision through the provider.
//! let mut ci = ComputeInstance::new("vm-1", ComputeInstanceSpec::for_template("my_template"));
//! ci.metadata.uid = Some("u-1".into());
//! let plan = decide(&ci, &Observed::default(), Timestamp::now(), &settings);
//! let Some(ProviderCall::Launch { provider, job_type, launch_key }) = &plan.call else {
//!     panic!("no launch: {plan:?}");
//! };
//! assert_eq!((*provider, *job_type), (ProviderKind::Eda, JobType::Provision));
//! assert!(launch_key.starts_with("u-1/provision/"));
//! assert!(plan.first_intent.is_some(), "recorded with the finalizer, before the call");
//!
//! // The controller executes such plans against the cluster `client` talks to.
//! async fn serve(client: kube::Client, settings: Settings) {
//!     let registry = ProviderRegistry::new(Arc::new(MyAutomation));
//!     let metrics = Arc::new(Metrics::new());
//!     let ctx = Arc::new(Context::new(client.clone(), registry, settings, metrics));
//!     cloudkit_reconciler::run(ctx, kube::Api::all(client), 4, std::future::pending()).await;
//! }
//! let _needs_a_cluster = serve;
//! ```

pub mod availability;
mod conditions;
mod controller;
mod decide;
mod messages;
mod metrics;
mod outcome;
mod plan;
mod platform;
pub mod restart;
mod settings;
pub mod shard;
pub mod tenant;
mod time;
mod writes;

pub use availability::{VmObservation, VmView, apply_availability};
pub use conditions::{find_condition, is_true, remove_condition, set_condition};
pub use controller::{Context, Error, LIST_PAGE_SIZE, capabilities, reconcile, run};
pub use decide::{TENANT_QUIET_PERIOD, decide, reconciled_version};
pub use messages::reason;
pub use metrics::Metrics;
pub use outcome::{Effect, LaunchAnswer, apply_launch_answer, pending_intent};
pub use plan::{
    ErrorInfo, EventSpec, EventType, FinalizerChange, FinishedJob, Observed, Plan, ProviderCall,
    TenantChange, TenantState, TenantView,
};
pub use platform::{KUBEVIRT_DISCOVERY_INTERVAL, Platform, vm_resource, vmi_resource};
pub use settings::{Capabilities, DEFAULT_RESTART_TIMEOUT, MAX_RETRY_BACKOFF, Settings};
pub use writes::FIELD_MANAGER;
