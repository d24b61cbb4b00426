//! Messages and service stubs generated from `proto/` (the fulfillment service's private API,
//! version 0.0.38), compiled at build time.
//!
//! Well-known types (`Timestamp`, `Any`, `FieldMask`) are those of [`prost_types`]. Map fields are
//! `BTreeMap`s so that an object is encoded the same way every time.

/// Package `shared.v1`.
pub mod shared {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("shared.v1");
    }
}

/// Package `private.v1`.
pub mod private {
    /// Version 1.
    pub mod v1 {
        #![allow(missing_docs, clippy::all, clippy::pedantic)]
        tonic::include_proto!("private.v1");
    }
}
