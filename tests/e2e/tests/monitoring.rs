//! deploy/monitoring/: the alert rules pass `promtool check rules` and their unit tests
//! (tests/e2e/monitoring/alerts-test.yaml), name only metrics the operator has, and Debian's
//! Prometheus server scrapes the operator binary and answers for its job durations.
//!
//! promtool and Prometheus come from `hack/prometheus-install.sh` (`./x test` runs it); without
//! them these tests fail and say so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cloudkit_aap_sim::Outcome;
use cloudkit_api::{ComputeInstanceSpec, JobState, JobType};
use cloudkit_test_support::*;

/// The `spec` of deploy/monitoring/prometheusrule.yaml: a Prometheus rules file.
fn rule_groups() -> serde_json::Value {
    let doc = deploy_document("monitoring/prometheusrule.yaml", "PrometheusRule");
    assert_eq!(doc["apiVersion"], "monitoring.coreos.com/v1");
    doc["spec"].clone()
}

fn alert_names(groups: &serde_json::Value) -> BTreeSet<String> {
    groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// Runs promtool in `dir`; its output on failure.
fn promtool_in(dir: &Path, args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", promtool().display()));
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let dir = tempfile::tempdir().unwrap();
    // JSON is YAML: promtool reads the extracted spec as it is.
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_json::to_string_pretty(&rule_groups()).unwrap(),
    )
    .unwrap();
    let tests = workspace_root().join("tests/e2e/monitoring/alerts-test.yaml");
    std::fs::copy(&tests, dir.path().join("alerts-test.yaml")).unwrap();
    promtool_in(dir.path(), &["check", "rules", "rules.yaml"]);
    promtool_in(dir.path(), &["test", "rules", "alerts-test.yaml"]);
}

#[test]
fn every_alert_has_a_firing_and_a_silent_unit_test() {
    let alerts = alert_names(&rule_groups());
    assert!(alerts.len() >= 5, "{alerts:?}");
    let tests = yaml_documents(&workspace_root().join("tests/e2e/monitoring/alerts-test.yaml"));
    let cases: Vec<&serde_json::Value> = tests[0]["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .collect();
    for alert in &alerts {
        let of_alert = || cases.iter().filter(|c| c["alertname"] == alert.as_str());
        let fires =
            |c: &&&serde_json::Value| c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
        assert!(of_alert().any(|c| fires(&c)), "{alert}: no firing case");
        assert!(of_alert().any(|c| !fires(&c)), "{alert}: no silent case");
    }
}

/// The metric names in the rules, without the `_total`, `_bucket`, `_count` or `_sum` suffix.
fn metric_families(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(at) = rest.find("cloudkit_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[at + name.len()..];
        let base = ["_total", "_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        names.insert(base.to_string());
    }
    names
}

/// Families with labels are only rendered once they have a sample, so the registrations in the
/// source are the reference: `registry.register("<name without the prefix>", ...)`.
#[test]
fn alerts_use_only_metrics_the_operator_exports() {
    let sources: String = [
        "crates/cloudkit-reconciler/src/metrics.rs",
        "crates/cloudkit-feedback/src/controller.rs",
    ]
    .iter()
    .map(|f| std::fs::read_to_string(workspace_root().join(f)).unwrap())
    .collect();
    let registered = |short: &str| {
        sources
            .split("register(")
            .skip(1)
            .any(|call| call.trim_start().starts_with(&format!("\"{short}\"")))
    };
    assert!(
        registered("job_duration_seconds"),
        "the source layout changed"
    );
    let groups = rule_groups();
    let exprs: Vec<&str> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap())
        .collect();
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_families(e)).collect();
    assert!(used.len() >= 5, "{used:?}");
    let docs = std::fs::read_to_string(workspace_root().join("docs/configuration.md")).unwrap();
    for family in used {
        let short = family.trim_start_matches("cloudkit_");
        assert!(
            registered(short),
            "{family} is not a metric of the operator"
        );
        assert!(
            docs.contains(short),
            "docs/configuration.md does not describe {family}"
        );
    }
}

#[test]
fn the_service_monitor_selects_the_metrics_service() {
    let sm = deploy_document("monitoring/servicemonitor.yaml", "ServiceMonitor");
    let service = yaml_documents(&workspace_root().join("deploy/deployment.yaml"))
        .into_iter()
        .find(|d| d["kind"] == "Service")
        .unwrap();
    assert_eq!(
        sm["metadata"]["namespace"],
        service["metadata"]["namespace"]
    );
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][k], v, "label {k}");
    }
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    // The endpoint names a port of the Service, and that port leads to the container's secure
    // metrics port.
    let port = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == endpoint["port"])
        .unwrap_or_else(|| panic!("no Service port named {}", endpoint["port"]));
    let deployment = deploy_document("deployment.yaml", "Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let target = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .unwrap_or_else(|| panic!("no container port named {}", port["targetPort"]));
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(
        args.contains(&&*format!(
            "--metrics-bind-address=:{}",
            target["containerPort"].as_u64().unwrap()
        )),
        "{args:?}"
    );
}

/// Debian's Prometheus scrapes the operator binary every second; after a provision, PromQL over
/// the HTTP API answers for the job-duration histogram.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_operator_and_answers_for_job_durations() {
    let mut scene = Scene::new("e2e-prometheus").await;
    let ns = scene.namespace.clone();
    let sim = simulator(phases(20, 0, 50), phases(20, 0, 50), Outcome::Successful).await;
    let op = scene
        .start_operator(Scene::aap_operator("operator-prometheus", &ns, &sim))
        .await;
    scene.sim = Some(sim);
    let target = scene.operators[op].http().unwrap();
    let mut prometheus = PrometheusServer::start("prometheus", &[target])
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    scene
        .create(
            &ns,
            "vm-graph",
            ComputeInstanceSpec::for_template("osac.templates.ocp_virt_vm"),
        )
        .await;
    scene
        .wait_for(&ns, "vm-graph", "a succeeded provision", |ci| {
            latest(ci, JobType::Provision).is_some_and(|j| j.state == JobState::Succeeded)
        })
        .await;

    let count = "sum by (type, provider) (cloudkit_job_duration_seconds_count)";
    let prom = &prometheus;
    eventually_with(
        "Prometheus to answer for the provision's duration",
        || async move {
            prom.query(count).await.is_ok_and(|r| {
                r.iter().any(|s| {
                    s["metric"]["type"] == "provision"
                        && s["metric"]["provider"] == "aap"
                        && s["value"][1] == "1"
                })
            })
        },
        || format!("{}\n{}", scene.diagnostics(None), prom.log_tail(30)),
    )
    .await;
    // The buckets arrive too: a quantile over them has a value.
    let quantile = prometheus
        .query("histogram_quantile(0.5, sum by (le) (cloudkit_job_duration_seconds_bucket{type=\"provision\"}))")
        .await
        .unwrap();
    let value: f64 = quantile[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(value > 0.0, "{quantile:?}");
    prometheus.stop(Duration::from_secs(10)).await;
}
