//! The configuration version: a hash of the spec that matches the Go operator's.

use crate::compute_instance::ComputeInstanceSpec;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64-bit hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// The spec as Go's `encoding/json` would write it: compact, fields in declaration order, absent
/// optional fields omitted, and `<`, `>`, `&`, U+2028, U+2029 escaped. `restartRequestedAt` is
/// left out: a restart request is not a configuration change.
pub fn canonical_spec_json(spec: &ComputeInstanceSpec) -> String {
    let mut spec = spec.clone();
    spec.restart_requested_at = None;
    // Serialising plain data structs with string keys cannot fail; an empty text still hashes to
    // a stable (if meaningless) version rather than aborting a reconcile.
    let json = serde_json::to_string(&spec).unwrap_or_default();
    go_html_escape(&json)
}

/// `desiredConfigVersion` for `spec`: [`fnv1a64`] of [`canonical_spec_json`] as 16 lowercase hex
/// digits.
pub fn config_version(spec: &ComputeInstanceSpec) -> String {
    format!("{:016x}", fnv1a64(canonical_spec_json(spec).as_bytes()))
}

// serde_json never emits these characters outside of string literals, so escaping the whole
// document is the same as escaping every string in it.
fn go_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compute_instance::{DiskSpec, ImageSourceType, ImageSpec, RunStrategy};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn fnv_reference_values() {
        // Reference values of the FNV-1a 64-bit function.
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn vector_template_only() {
        let spec = ComputeInstanceSpec::for_template("test_template");
        assert_eq!(
            canonical_spec_json(&spec),
            r#"{"templateID":"test_template"}"#
        );
        assert_eq!(config_version(&spec), "c15fb6a31521d9c3");
    }

    #[test]
    fn vector_template_parameters() {
        let mut spec = ComputeInstanceSpec::for_template("template-1");
        spec.template_parameters = Some(r#"{"key": "value"}"#.into());
        assert_eq!(config_version(&spec), "f523fef10bf5a810");
    }

    #[test]
    fn vector_full_vm() {
        let mut spec = ComputeInstanceSpec::for_template("osac.templates.ocp_virt_vm");
        spec.image = Some(ImageSpec {
            source_type: ImageSourceType::Registry,
            source_ref: "quay.io/containerdisks/fedora:latest".into(),
        });
        spec.cores = Some(2);
        spec.memory_gib = Some(4);
        spec.boot_disk = Some(DiskSpec {
            size_gib: 20,
            storage_class: None,
        });
        spec.run_strategy = Some(RunStrategy::Always);
        assert_eq!(config_version(&spec), "1c15a84e66d482fb");
    }

    #[test]
    fn restart_request_does_not_change_the_version() {
        let spec = ComputeInstanceSpec::for_template("test_template");
        let mut restarted = spec.clone();
        restarted.restart_requested_at = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(config_version(&spec), config_version(&restarted));
    }

    #[test]
    fn html_characters_escaped_like_go() {
        let mut spec = ComputeInstanceSpec::for_template("t");
        spec.template_parameters = Some("{\"a\":\"<b>&\u{2028}\u{2029}\"}".into());
        assert_eq!(
            canonical_spec_json(&spec),
            r#"{"templateID":"t","templateParameters":"{\"a\":\"\u003cb\u003e\u0026\u2028\u2029\"}"}"#
        );
    }

    #[test]
    fn field_order_is_the_go_struct_order() {
        let mut spec = ComputeInstanceSpec::for_template("t");
        spec.ssh_key = Some("k".into());
        spec.additional_disks = vec![DiskSpec {
            size_gib: 1,
            storage_class: Some("fast".into()),
        }];
        spec.cores = Some(1);
        assert_eq!(
            canonical_spec_json(&spec),
            r#"{"templateID":"t","cores":1,"additionalDisks":[{"sizeGiB":1,"storageClass":"fast"}],"sshKey":"k"}"#
        );
    }
}
