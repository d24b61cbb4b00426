//! Event-Driven Ansible webhook client and the EDA provider.
//!
//! [`EdaProvider`] implements [`cloudkit_provider::Provider`] by POSTing the whole
//! `ComputeInstance` as JSON to an ansible-rulebook webhook source: one URL for provision, one for
//! deprovision. The webhook answers as soon as the event is queued and returns no job id, so the
//! provider makes up `eda-webhook-N` ids and reads the state of its jobs from the CI itself
//! (the `cloudkit.openshift.io/reconciled-config-version` annotation and the
//! `cloudkit.openshift.io/computeinstance-aap` finalizer the automation maintains); it never
//! polls over the network.
//!
//! Requests carry `Authorization: Bearer <token>` when a token is configured and
//! `x-hub-signature-256: sha256=<hex HMAC-SHA256 of the body>` when an HMAC secret is, which is
//! what the webhook source checks with `token` and `hmac_secret` (defaults `hmac_algo: sha256`,
//! `hmac_header: x-hub-signature-256`, `hmac_format: hex`). An optional minimum interval keeps a
//! CI from triggering the same webhook twice in quick succession.
//!
//! Embedding the provider in a controller:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use cloudkit_api::ProviderKind;
//! use cloudkit_eda::{EdaConfig, EdaProvider};
//! use cloudkit_provider::{Provider, ProviderRegistry, Secret};
//!
//! // The binary reads these from CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK,
//! // CLOUDKIT_COMPUTE_INSTANCE_DEPROVISION_WEBHOOK, CLOUDKIT_EDA_TOKEN,
//! // CLOUDKIT_EDA_HMAC_SECRET and CLOUDKIT_MINIMUM_REQUEST_INTERVAL.
//! let config = EdaConfig::new(
//!     "https://eda.example.com/endpoint/provision",
//!     "https://eda.example.com/endpoint/deprovision",
//! )?
//! .with_token(Secret::new("webhook-token"))
//! .with_hmac_secret(Secret::new("hmac-secret"))
//! .with_minimum_request_interval(Duration::from_secs(10));
//!
//! let provider = EdaProvider::new(config)?;
//! assert!(!provider.polls_remotely());
//!
//! let registry = ProviderRegistry::new(Arc::new(provider));
//! assert_eq!(registry.active().kind(), ProviderKind::Eda);
//!
//! // Configuration errors name the variable to fix.
//! let err = EdaConfig::new("", "https://eda.example.com/d").unwrap_err();
//! assert_eq!(err.setting(), cloudkit_eda::ENV_PROVISION_WEBHOOK);
//! assert_eq!(
//!     err.to_string(),
//!     "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK: is required with the eda provider"
//! );
//! # Ok::<(), cloudkit_eda::ConfigError>(())
//! ```
//!
//! Tests inject a [`ManualClock`] with [`EdaClient::with_clock`] to check the rate limit
//! without sleeping.

mod client;
mod clock;
mod config;
mod provider;
mod rate_limit;

pub use client::{
    Accepted, EdaClient, MAX_ERROR_BODY_BYTES, SIGNATURE_HEADER, signature_header_value,
};
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    ConfigError, DEFAULT_REQUEST_TIMEOUT, ENV_DEPROVISION_WEBHOOK, ENV_HMAC_SECRET,
    ENV_MINIMUM_REQUEST_INTERVAL, ENV_PROVISION_WEBHOOK, ENV_TOKEN, EdaConfig, Webhook,
};
pub use provider::{ACCEPTED_MESSAGE, EdaProvider, reported_config_versions};
