//! The reconciler library in this process against a real API server (cloudkit-testenv) and the
//! AWX simulator: SPEC 7 scenarios, no duplicate or lost jobs, provider switches and provider
//! errors. One test binary, so that the API server starts once for all of them.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod consistency;
mod harness;
mod platform;
mod scenarios;
mod switch;
