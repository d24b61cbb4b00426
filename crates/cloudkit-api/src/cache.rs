//! What the operator's caches keep of the objects they watch.

use kube::{Resource, ResourceExt};

/// kubectl's copy of the whole object, on objects created or updated with `kubectl apply`.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drops the metadata no controller of the operator reads from an object it caches: the managed
/// fields (a large share of every object, and one entry per owner reference of a Tenant) and
/// kubectl's last-applied copy (as large as the object). The operator writes with patches only,
/// never a whole cached object, so the API server keeps both.
pub fn drop_unread_metadata<K: Resource>(object: &mut K) {
    object.managed_fields_mut().clear();
    if let Some(annotations) = object.meta_mut().annotations.as_mut() {
        annotations.remove(LAST_APPLIED_ANNOTATION);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Tenant, TenantSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, OwnerReference};

    #[test]
    fn only_managed_fields_and_the_applied_copy_go() {
        let owner = OwnerReference {
            api_version: "cloudkit.openshift.io/v1alpha1".into(),
            kind: "ComputeInstance".into(),
            name: "vm".into(),
            uid: "u1".into(),
            ..OwnerReference::default()
        };
        let other = (
            crate::metadata::TENANT_ANNOTATION.to_string(),
            "t".to_string(),
        );
        let mut tenant = Tenant::new(
            "t",
            TenantSpec {
                name: "acme".into(),
            },
        );
        tenant.metadata.owner_references = Some(vec![owner]);
        tenant.metadata.finalizers = Some(vec!["f".into()]);
        tenant.metadata.managed_fields = Some(vec![ManagedFieldsEntry::default()]);
        tenant.metadata.annotations = Some(
            [
                (LAST_APPLIED_ANNOTATION.to_string(), "{}".to_string()),
                other.clone(),
            ]
            .into(),
        );
        let mut expected = tenant.clone();
        expected.metadata.managed_fields = Some(vec![]);
        expected.metadata.annotations = Some([other].into());
        drop_unread_metadata(&mut tenant);
        assert_eq!(tenant, expected);

        let mut bare = Tenant::new(
            "t",
            TenantSpec {
                name: "acme".into(),
            },
        );
        drop_unread_metadata(&mut bare);
        assert_eq!(bare.metadata.annotations, None, "no empty map is made up");
    }
}
