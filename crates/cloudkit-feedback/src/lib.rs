//! Feedback to the fulfillment service (SPEC 13).
//!
//! - [`proto`]: messages and stubs generated from `proto/` (the wire contract).
//! - [`mapping`]: the pure mapping of a CI onto the fetched object (fulfillment-wire.md
//!   section 3); it says whether anything changed, so that an unchanged object is not sent.

pub mod mapping;
pub mod proto;

pub use mapping::{FLOATING_IP_ANNOTATION, Mapped, Observed, map_observed, map_status};
