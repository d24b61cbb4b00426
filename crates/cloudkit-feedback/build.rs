//! Compiles the fulfillment service's `.proto` files with protox (pure Rust: no `protoc` needed)
//! and generates the prost messages and the tonic client and server.

use std::error::Error;

const PROTOS: &[&str] = &[
    "proto/shared/v1/condition_status.proto",
    "proto/private/v1/metadata.proto",
    "proto/private/v1/compute_instance_type.proto",
    "proto/private/v1/compute_instances_service.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        // The server side is only used by the test fake (feature `fake`); generating it always
        // keeps the build script independent of features.
        .build_server(true)
        // Connections are made by this crate (TLS policy of SPEC 13), not by tonic's transport.
        .build_transport(false)
        // Deterministic encoding of the map fields (labels, annotations, template parameters).
        .btree_map(".")
        .compile_fds(descriptors)?;
    Ok(())
}
