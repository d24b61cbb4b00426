//! The operator's RBAC from `deploy/rbac.yaml`, granted to the test API server's limited user.

use std::path::Path;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

use crate::process::workspace_root;

/// The documents of a multi-document YAML file, as JSON values.
pub fn yaml_documents(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let value: serde_json::Value = serde_saphyr::from_str(&current)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !value.is_null() {
                docs.push(value);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

pub fn deploy_document(file: &str, kind: &str) -> serde_json::Value {
    yaml_documents(&workspace_root().join("deploy").join(file))
        .into_iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("deploy/{file} has no {kind}"))
}

fn limited_subject() -> Subject {
    Subject {
        kind: "Group".into(),
        name: cloudkit_testenv::LIMITED_GROUP.into(),
        api_group: Some("rbac.authorization.k8s.io".into()),
        namespace: None,
    }
}

async fn create_or_keep<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + serde::Serialize,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("creating {object:?}: {e}"),
    }
}

/// Binds the limited user's group to the ClusterRole of `deploy/rbac.yaml` (cluster-wide, as
/// the deployment does) and to its leader election Role in `namespace`. Nothing else is granted.
pub async fn grant_operator_roles(namespace: &str) {
    let client = cloudkit_testenv::shared().admin_client().await;
    let mut cluster_role: ClusterRole =
        serde_json::from_value(deploy_document("rbac.yaml", "ClusterRole")).expect("ClusterRole");
    let role_name = "e2e-cloudkit-operator".to_string();
    cluster_role.metadata = ObjectMeta {
        name: Some(role_name.clone()),
        ..ObjectMeta::default()
    };
    create_or_keep(&Api::<ClusterRole>::all(client.clone()), &cluster_role).await;
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role_name,
        },
        subjects: Some(vec![limited_subject()]),
    };
    create_or_keep(&Api::<ClusterRoleBinding>::all(client.clone()), &binding).await;

    let mut role: Role =
        serde_json::from_value(deploy_document("rbac.yaml", "Role")).expect("Role");
    let name = role.metadata.name.clone().expect("the Role's name");
    role.metadata = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(namespace.into()),
        ..ObjectMeta::default()
    };
    create_or_keep(&Api::<Role>::namespaced(client.clone(), namespace), &role).await;
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.into()),
            ..ObjectMeta::default()
        },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name,
        },
        subjects: Some(vec![limited_subject()]),
    };
    create_or_keep(&Api::<RoleBinding>::namespaced(client, namespace), &binding).await;
}
