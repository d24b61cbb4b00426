//! Installing the repository's CRDs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};

use crate::error::{Error, Result};

/// The repository's `crds/` directory (`$CLOUDKIT_CRDS_DIR` overrides it).
pub fn crds_dir() -> PathBuf {
    match std::env::var_os("CLOUDKIT_CRDS_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds"),
    }
}

/// Every `*.yaml` in `dir`, parsed, in file-name order. A file may hold several documents.
pub fn load_crds(dir: &Path) -> Result<Vec<(PathBuf, CustomResourceDefinition)>> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("reading CRD directory {}", dir.display()), e))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let docs: Vec<CustomResourceDefinition> =
            serde_saphyr::from_multiple(&text).map_err(|e| Error::Crd {
                path: path.clone(),
                message: e.to_string(),
            })?;
        crds.extend(docs.into_iter().map(|crd| (path.clone(), crd)));
    }
    Ok(crds)
}

/// Creates the CRDs through the API (kubectl 1.20 would refuse the CEL rules in them; the 1.20
/// server drops those) and waits until each is Established.
pub(crate) async fn install(
    client: &kube::Client,
    crds: &[(PathBuf, CustomResourceDefinition)],
    timeout: Duration,
) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (path, crd) in crds {
        match api.create(&PostParams::default(), crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(e) => {
                return Err(Error::Crd {
                    path: path.clone(),
                    message: format!("creating it: {e}"),
                });
            }
        }
    }
    let deadline = Instant::now() + timeout;
    for (path, crd) in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        loop {
            let current = api
                .get(&name)
                .await
                .map_err(|e| Error::kube(format!("reading CRD {name}"), e))?;
            if is_established(&current) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Crd {
                    path: path.clone(),
                    message: format!(
                        "{name} not Established after {timeout:?}; status: {:?}",
                        current.status
                    ),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn is_established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}
