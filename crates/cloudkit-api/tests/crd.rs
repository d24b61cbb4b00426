//! The committed CRDs must be exactly what the Rust types generate.
//! `just crds` (CLOUDKIT_UPDATE_CRDS=1) rewrites them.

use std::path::PathBuf;

// A test helper: failing loudly is its job.
#[allow(clippy::expect_used)]
fn check(file: &str, generated: String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../crds")
        .join(file);
    if std::env::var_os("CLOUDKIT_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("write the CRD file");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/{file} is out of date with the Rust types; run `just crds` and commit it"
    );
}

#[test]
fn committed_crd_matches_generated() {
    check(
        "computeinstance.yaml",
        cloudkit_api::crd_yaml().expect("CRD serialises to YAML"),
    );
}

#[test]
fn committed_tenant_crd_matches_generated() {
    check(
        "tenant.yaml",
        cloudkit_api::tenant_crd_yaml().expect("CRD serialises to YAML"),
    );
}

/// The CRD keeps the Go operator's condition schema, so a condition either operator writes is
/// accepted by the other's CRD.
#[test]
fn conditions_use_the_go_schema() {
    for crd in [cloudkit_api::crd(), cloudkit_api::tenant_crd()] {
        let json = serde_json::to_value(&crd).expect("CRD is JSON");
        let reason = &json["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
            ["properties"]["conditions"]["items"]["properties"]["reason"];
        assert_eq!(
            reason["pattern"],
            "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            "{}",
            crd.metadata.name.unwrap_or_default()
        );
    }
}
