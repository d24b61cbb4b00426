//! The manifests of `deploy/` and the configuration reference agree with the code; no server
//! needed (the e2e tests apply the manifests to one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use cloudkit_test_support::{deploy_document, operator_binary, workspace_root, yaml_documents};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, RoleBinding};

fn read(path: &str) -> String {
    std::fs::read_to_string(workspace_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn deploy_crd_is_the_generated_one() {
    assert!(
        read("deploy/crd.yaml") == read("crds/computeinstance.yaml"),
        "deploy/crd.yaml differs from crds/computeinstance.yaml: run `just crds` (it copies it)"
    );
    assert!(
        read("deploy/crd-tenant.yaml") == read("crds/tenant.yaml"),
        "deploy/crd-tenant.yaml differs from crds/tenant.yaml: run `just crds` (it copies it)"
    );
}

fn deployment() -> Deployment {
    serde_json::from_value(deploy_document("deployment.yaml", "Deployment")).expect("Deployment")
}

#[test]
fn deployment_probes_security_and_configuration() {
    let d = deployment();
    let pod = d.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    let port = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let get = p.as_ref().unwrap().http_get.clone().unwrap();
        (get.path.unwrap(), get.port)
    };
    let health = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("health".into());
    assert_eq!(
        port(&c.liveness_probe),
        ("/healthz".to_string(), health.clone())
    );
    assert_eq!(port(&c.readiness_probe), ("/readyz".to_string(), health));
    let ports = c.ports.clone().unwrap();
    let named = |name: &str| {
        ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
    };
    assert_eq!(named("health"), Some(8081), "the Go operator's probe port");
    assert_eq!(named("https"), Some(8443));
    let args = c.args.clone().unwrap();
    for arg in [
        "--leader-elect",
        "--health-probe-bind-address=:8081",
        "--metrics-bind-address=:8443",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} in {args:?}");
    }
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    let psc = pod.security_context.unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let resources = c.resources.clone().unwrap();
    assert!(resources.requests.is_some() && resources.limits.is_some());
    let env_from = c.env_from.clone().unwrap();
    assert_eq!(
        env_from[0].secret_ref.as_ref().unwrap().name,
        "cloudkit-config",
        "the Go operator's Secret"
    );
    assert_eq!(
        deploy_document("secret.example.yaml", "Secret")["metadata"]["name"],
        "cloudkit-config"
    );

    // The pod runs as the service account the roles are bound to.
    let sa = pod.service_account_name.unwrap();
    let ns = d.metadata.namespace.unwrap();
    let crb: ClusterRoleBinding =
        serde_json::from_value(deploy_document("rbac.yaml", "ClusterRoleBinding")).unwrap();
    let rb: RoleBinding =
        serde_json::from_value(deploy_document("rbac.yaml", "RoleBinding")).unwrap();
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(
            (subjects[0].kind.as_str(), subjects[0].name.as_str()),
            ("ServiceAccount", sa.as_str())
        );
        assert_eq!(subjects[0].namespace.as_deref(), Some(ns.as_str()));
    }
    assert_eq!(rb.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert_eq!(
        deploy_document("namespace.yaml", "Namespace")["metadata"]["name"],
        ns.as_str()
    );
}

/// Every `CLOUDKIT_*` variable of the operator, from the `[env: ...]` notes of its `--help`.
fn operator_variables() -> BTreeSet<String> {
    let out = std::process::Command::new(operator_binary())
        .arg("--help")
        .env_clear()
        .output()
        .expect("cloudkit-operator --help");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split("[env: ")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|v| v.starts_with("CLOUDKIT_") || *v == "KUBECONFIG")
        .collect()
}

fn mentioned(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("CLOUDKIT_") && w.len() > "CLOUDKIT_".len())
        .map(str::to_string)
        .collect()
}

#[test]
fn configuration_reference_lists_every_variable() {
    let vars = operator_variables();
    assert!(vars.len() > 20, "parsed {vars:?}");
    let doc = read("docs/configuration.md");
    let missing: Vec<_> = vars.iter().filter(|v| !doc.contains(v.as_str())).collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
    let unknown: Vec<_> = mentioned(&doc)
        .into_iter()
        .filter(|v| !vars.contains(v))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md names variables the operator does not read: {unknown:?}"
    );
}

#[test]
fn sample_secret_uses_only_known_variables() {
    let vars = operator_variables();
    let unknown: Vec<_> = mentioned(&read("deploy/secret.example.yaml"))
        .into_iter()
        .filter(|v| !vars.contains(v))
        .collect();
    assert!(unknown.is_empty(), "unknown variables {unknown:?}");
    // And it parses.
    assert_eq!(
        yaml_documents(&workspace_root().join("deploy/secret.example.yaml")).len(),
        1
    );
}
