//! kube-controller-manager runs next to the test API server: owner references are garbage
//! collected and a deleted namespace is emptied and disappears (both are needed by Tenants).

use std::time::Duration;

use anyhow::{Result, bail};
use cloudkit_testenv::{eventually, shared};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, ObjectMeta, PostParams};

/// The controller manager collects within seconds; the bound allows for a busy 2-core machine.
const DEADLINE: Duration = Duration::from_secs(60);

fn config_map(name: &str, owner: Option<&ConfigMap>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: owner.map(|o| {
                vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "ConfigMap".into(),
                    name: o.metadata.name.clone().unwrap_or_default(),
                    uid: o.metadata.uid.clone().unwrap_or_default(),
                    ..OwnerReference::default()
                }]
            }),
            ..ObjectMeta::default()
        },
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn an_object_whose_only_owner_is_deleted_is_collected() -> Result<()> {
    let env = shared();
    let ns = env.namespace("gc").await;
    let api: Api<ConfigMap> = Api::namespaced(env.admin_client().await, &ns);
    let pp = PostParams::default();
    let owner = api.create(&pp, &config_map("owner", None)).await?;
    api.create(&pp, &config_map("owned", Some(&owner))).await?;
    api.create(&pp, &config_map("bystander", None)).await?;

    api.delete("owner", &DeleteParams::default()).await?;
    eventually("the owned ConfigMap to be collected", DEADLINE, || async {
        Ok(api.get_opt("owned").await?.is_none())
    })
    .await?;
    if api.get_opt("bystander").await?.is_none() {
        bail!("an object without owners was collected");
    }
    Ok(())
}

#[tokio::test]
async fn a_deleted_namespace_disappears() -> Result<()> {
    let env = shared();
    let ns = env.namespace("ns-deletion").await;
    let client = env.admin_client().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    cms.create(&PostParams::default(), &config_map("content", None))
        .await?;

    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.delete(&ns, &DeleteParams::default()).await?;
    eventually("the namespace to be gone", DEADLINE, || async {
        Ok(namespaces.get_opt(&ns).await?.is_none())
    })
    .await
}
