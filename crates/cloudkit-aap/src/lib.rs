//! Ansible Automation Platform controller client and the AAP provider.
//!
//! [`AapProvider`] implements [`cloudkit_provider::Provider`] on top of the controller REST API
//! (AWX `https://host/api/v2/...` or AAP 2.5+ `https://gateway/api/controller/v2/...`):
//!
//! - templates are found by exact name (job templates first, then workflow job templates) and
//!   cached by [`AapClient`];
//! - a launch posts `{"extra_vars": {"ansible_eda": {"event": {"payload": <CI>}},
//!   "cloudkit_launch_key": <key>}}` to the template's numeric id; the template must prompt for
//!   variables on launch, else the job is cancelled and the launch is a configuration error;
//! - jobs are polled at `/v2/jobs/<id>/` or `/v2/workflow_jobs/<id>/` according to the kind
//!   recorded with the job, and their AWX status is mapped to a [`cloudkit_api::JobState`];
//! - a launch whose answer was lost is found again by its launch key
//!   ([`AapClient::find_job_by_launch_key`]).
//!
//! The binary reads the environment; this crate only takes typed values ([`AapConfig`]) and
//! names the environment variable of a wrong setting in its [`ConfigError`].
//!
//! Embedding it in a controller (nothing here touches the network: the provider connects on its
//! first call):
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cloudkit_aap::{AapConfig, AapProvider};
//! use cloudkit_provider::{Provider, ProviderRegistry, Secret};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = AapConfig::new(
//!     "https://aap.example.com/api/controller",
//!     Secret::new("token from CLOUDKIT_AAP_TOKEN"),
//!     "provision_vm",
//!     "deprovision_vm",
//! )?
//! .with_poll_interval(Duration::from_secs(15))?;
//! let provider: Arc<dyn Provider> = Arc::new(AapProvider::new(&config)?);
//! let registry = ProviderRegistry::new(provider);
//! assert_eq!(registry.active().kind(), cloudkit_api::ProviderKind::Aap);
//! assert!(registry.active().polls_remotely());
//! # Ok(())
//! # }
//! ```
//!
//! Using the client on its own:
//!
//! ```no_run
//! # async fn demo(client: &cloudkit_aap::AapClient) -> Result<(), cloudkit_provider::ProviderError> {
//! use cloudkit_api::AapJobKind;
//! let template = client.find_template("provision_vm").await?;
//! let job = client.launch(template, &serde_json::Map::new()).await?;
//! let now = client.job(job.kind, job.id).await?;
//! println!("job {} is {}", now.id, now.status);
//! # let _ = AapJobKind::Job;
//! # Ok(())
//! # }
//! ```

mod client;
mod config;
mod model;
mod provider;
mod text;

pub use client::{
    AapClient, AapJob, DEFAULT_RETRY_AFTER, LAUNCH_KEY_VAR, LAUNCH_SEARCH_PAGE_SIZE, LaunchedJob,
    MAX_BODY_BYTES, TemplateKind, TemplateRef, job_collection,
};
pub use config::{
    AapConfig, ConfigError, DEFAULT_POLL_INTERVAL, DEFAULT_REQUEST_TIMEOUT, ENV_CA_FILE,
    ENV_DEPROVISION_TEMPLATE, ENV_INSECURE_SKIP_VERIFY, ENV_PROVISION_TEMPLATE,
    ENV_REQUEST_TIMEOUT, ENV_STATUS_POLL_INTERVAL, ENV_TOKEN, ENV_TOKEN_FILE, ENV_URL,
    read_ca_file, read_token_file,
};
pub use provider::{AapProvider, launch_extra_vars, map_status, observe};
