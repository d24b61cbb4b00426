//! The committed CRD must be exactly what the Rust types generate.
//! `just crds` (CLOUDKIT_UPDATE_CRDS=1) rewrites it.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../crds/computeinstance.yaml")
}

#[test]
fn committed_crd_matches_generated() {
    let generated = cloudkit_api::crd_yaml().expect("CRD serialises to YAML");
    let path = committed_path();
    if std::env::var_os("CLOUDKIT_UPDATE_CRDS").is_some() {
        std::fs::write(&path, &generated).expect("write crds/computeinstance.yaml");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "crds/computeinstance.yaml is out of date with the Rust types; run `just crds` and commit it"
    );
}
