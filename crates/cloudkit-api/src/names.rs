//! Names the operator derives for tenants, exactly as the Go operator derived them, so that an
//! installation switched from the Go operator finds its existing Tenants and namespaces.

use crate::config_version::fnv1a64;

/// Longest name of a Kubernetes Namespace (an RFC 1123 label).
pub const MAX_NAMESPACE_NAME_LEN: usize = 63;

/// Prefix of the name of the Tenant a ComputeInstance needs: `tenant-<enc(value)>`.
pub const TENANT_NAME_PREFIX: &str = "tenant-";

const BASE32_ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// The short, DNS-safe encoding of a user-chosen name: lowercase base32 (standard alphabet, no
/// padding) of the 8-byte big-endian FNV-1a 64-bit hash of its UTF-8 bytes. Always 13 characters.
///
/// ```
/// assert_eq!(cloudkit_api::names::enc("acme"), "a4snha7u63pa6");
/// ```
pub fn enc(s: &str) -> String {
    let bytes = fnv1a64(s.as_bytes()).to_be_bytes();
    // 64 bits in 5-bit groups: 12 full groups and a last one of 4 bits padded with a zero bit.
    let mut out = String::with_capacity(13);
    let mut acc: u16 = 0;
    let mut bits = 0u32;
    for b in bytes {
        acc = (acc << 8) | u16::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(
                BASE32_ALPHABET[usize::from((acc >> bits) & 0x1f)],
            ));
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(char::from(
            BASE32_ALPHABET[usize::from((acc << (5 - bits)) & 0x1f)],
        ));
    }
    out
}

/// Name of the Tenant that serves the tenant named `value` (the ComputeInstance's
/// `cloudkit.openshift.io/tenant` annotation), in the ComputeInstance's namespace.
pub fn tenant_object_name(value: &str) -> String {
    format!("{TENANT_NAME_PREFIX}{}", enc(value))
}

/// The namespace derived for a Tenant would not be a valid Namespace name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "tenant namespace {name:?} is {len} characters long; a Namespace name has at most {MAX_NAMESPACE_NAME_LEN} (shorten the Tenant's namespace)"
)]
pub struct NamespaceNameTooLong {
    /// The derived name.
    pub name: String,
    /// Its length in bytes.
    pub len: usize,
}

/// The namespace a Tenant owns: `<Tenant's metadata.namespace>-<enc(spec.name)>`.
pub fn tenant_namespace(
    tenant_namespace: &str,
    tenant_name: &str,
) -> Result<String, NamespaceNameTooLong> {
    let name = format!("{tenant_namespace}-{}", enc(tenant_name));
    if name.len() > MAX_NAMESPACE_NAME_LEN {
        let len = name.len();
        return Err(NamespaceNameTooLong { name, len });
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enc_matches_the_go_operator() {
        let rows = [
            ("acme", "a4snha7u63pa6"),
            ("test-tenant", "z37jejtpzxsca"),
            ("my-tenant", "ntfv23cm4rd2e"),
        ];
        for (input, want) in rows {
            assert_eq!(enc(input), want, "{input}");
        }
    }

    #[test]
    fn enc_is_always_thirteen_lowercase_dns_characters() {
        for input in ["", "a", "ünïcode", &"x".repeat(500)] {
            let e = enc(input);
            assert_eq!(e.len(), 13, "{input:?} -> {e}");
            assert!(
                e.bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)),
                "{e}"
            );
        }
    }

    #[test]
    fn tenant_names() {
        assert_eq!(tenant_object_name("acme"), "tenant-a4snha7u63pa6");
        assert_eq!(
            tenant_namespace("cloudkit-computeinstance", "acme"),
            Ok("cloudkit-computeinstance-a4snha7u63pa6".to_string())
        );
        // 49 + 1 + 13 = 63: the longest allowed.
        let ns49 = "n".repeat(49);
        assert_eq!(tenant_namespace(&ns49, "acme").map(|n| n.len()), Ok(63));
        let err = tenant_namespace(&"n".repeat(50), "acme").err();
        assert_eq!(err.as_ref().map(|e| e.len), Some(64));
        let text = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(text.contains("at most 63"), "{text}");
    }
}
