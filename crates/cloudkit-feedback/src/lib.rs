//! Feedback to the fulfillment service (SPEC 13).
//!
//! - [`proto`]: messages and stubs generated from `proto/` (the wire contract).

pub mod proto;
