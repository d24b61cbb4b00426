//! Feedback to the fulfillment service (SPEC 13): the gRPC client of its private
//! `ComputeInstances` API and the mapping of a `ComputeInstance`'s state onto the service's object.
//!
//! - [`proto`]: messages and stubs generated from `proto/` (the wire contract).
//! - [`mapping`]: the pure mapping of a CI onto the fetched object (fulfillment-wire.md
//!   section 3); it says whether anything changed, so that an unchanged object is not sent.
//! - [`client`]: settings, TLS policy, the bearer token re-read for every call, and
//!   [`FulfillmentClient`] with `get`, `update` and `signal`.
//! - [`plan`]: the feedback controller's decisions for one CI (finalizer, Update, deletion,
//!   Signal, backoff) as a pure function.
//! - [`controller`]: the Kubernetes shell that watches CIs and carries the plans out.
//! - `fake` (feature `fake`): a fake service for tests, plaintext or TLS on loopback.
//!
//! Embedding it in another controller: fetch the object, map the CI onto it, and send it back
//! only when something changed.
//!
//! ```no_run
//! # async fn example(ci: &cloudkit_api::ComputeInstance) -> Result<(), Box<dyn std::error::Error>> {
//! use cloudkit_feedback::{FulfillmentClient, Settings, map_status};
//!
//! let mut settings = Settings::new("fulfillment.example.com:8000");
//! settings.token_file = Some("/var/run/secrets/fulfillment/token".into());
//! let client = FulfillmentClient::new(&settings)?;
//!
//! let fetched = client.get("0b5f5d7e-3c5a-4d43-a1a4-8a0f0d1f6f1e").await?;
//! let mapped = map_status(ci, &fetched, jiff::Timestamp::now());
//! if mapped.changed {
//!     client.update(mapped.object).await?;
//! }
//! # Ok(()) }
//! ```

pub mod client;
pub mod controller;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mapping;
pub mod plan;
pub mod proto;

pub use client::{
    BearerToken, CallError, ClientError, Endpoint, FulfillmentClient, Settings, SettingsError,
    Transport,
};
pub use controller::{FeedbackContext, FeedbackMetrics};
pub use mapping::{FLOATING_IP_ANNOTATION, Mapped, Observed, map_observed, map_status};
