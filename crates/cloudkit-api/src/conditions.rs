//! The OpenAPI schema of `status.conditions`, exactly as kubebuilder generates it for
//! `[]metav1.Condition` in the Go operator's CRDs, so that the API server accepts and keeps the
//! same conditions from either operator.

use schemars::{Schema, SchemaGenerator, json_schema};

/// Pattern of a condition's `reason` (kubebuilder's, for `metav1.Condition`).
pub const REASON_PATTERN: &str = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$";

/// Pattern of a condition's `type` (kubebuilder's, for `metav1.Condition`).
pub const TYPE_PATTERN: &str = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$";

/// Schema of a list of conditions keyed by `type`; use with `#[schemars(schema_with = ...)]`.
pub fn conditions_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Standard Kubernetes conditions, one per type.",
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "description": "Condition contains details for one aspect of the current state of this API Resource.",
            "type": "object",
            "required": ["lastTransitionTime", "message", "reason", "status", "type"],
            "properties": {
                "lastTransitionTime": {
                    "description": "lastTransitionTime is the last time the condition transitioned from one status to another.",
                    "type": "string",
                    "format": "date-time"
                },
                "message": {
                    "description": "message is a human readable message indicating details about the transition.",
                    "type": "string",
                    "maxLength": 32768
                },
                "observedGeneration": {
                    "description": "observedGeneration is the .metadata.generation that the condition was set based upon.",
                    "type": "integer",
                    "format": "int64",
                    "minimum": 0
                },
                "reason": {
                    "description": "reason is a CamelCase identifier of the condition's last transition.",
                    "type": "string",
                    "maxLength": 1024,
                    "minLength": 1,
                    "pattern": REASON_PATTERN
                },
                "status": {
                    "description": "status of the condition, one of True, False, Unknown.",
                    "type": "string",
                    "enum": ["True", "False", "Unknown"]
                },
                "type": {
                    "description": "type of condition in CamelCase or in foo.example.com/CamelCase.",
                    "type": "string",
                    "maxLength": 316,
                    "pattern": TYPE_PATTERN
                }
            }
        }
    })
}

/// Whether `reason` is one the Go CRD schema accepts.
pub fn is_valid_reason(reason: &str) -> bool {
    let bytes = reason.as_bytes();
    let Some((&first, rest)) = bytes.split_first() else {
        return false;
    };
    if !first.is_ascii_alphabetic() || bytes.len() > 1024 {
        return false;
    }
    let inner_ok = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b',' | b':');
    match rest.split_last() {
        None => true,
        Some((&last, middle)) => {
            middle.iter().all(inner_ok) && (last.is_ascii_alphanumeric() || last == b'_')
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons() {
        let rows = [
            ("Applying", true),
            ("A", true),
            ("Tenant_Not:Ready,2", true),
            ("", false),
            ("1Bad", false),
            ("Ends,", false),
            ("Ends:", false),
            ("Has space", false),
            ("Has-hyphen", false),
        ];
        for (reason, ok) in rows {
            assert_eq!(is_valid_reason(reason), ok, "{reason:?}");
        }
    }
}
