//! The simulator's HTTP surface, over loopback: every route on both prefixes, pagination,
//! authentication, the job life cycle, cancel, ignored fields, faults, the request log and stats.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use cloudkit_aap_sim::{AwxStatus, Faults, Outcome, Phases, SimConfig, Simulator, TemplateSpec};
use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const PREFIXES: [&str; 2] = ["/api/v2/", "/api/controller/v2/"];

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn phases(p: u64, w: u64, r: u64) -> Phases {
    Phases::new(secs(p), secs(w), secs(r))
}

/// Templates that take long enough (in fast mode) to observe every phase: 250 ms each.
fn slow_templates() -> Vec<TemplateSpec> {
    vec![
        TemplateSpec::job("provision_vm")
            .with_id(7)
            .with_phases(phases(250, 250, 250)),
        TemplateSpec::workflow("deprovision_vm")
            .with_id(8)
            .with_phases(phases(250, 250, 250)),
        TemplateSpec::job("quiet_template")
            .with_id(9)
            .with_ask_variables(false)
            .with_phases(phases(1, 1, 1)),
        TemplateSpec::job("long_template")
            .with_id(10)
            .with_phases(phases(1, 1, 600_000)),
    ]
}

async fn standard() -> (cloudkit_aap_sim::SimHandle, Client) {
    let mut b = Simulator::builder().fast();
    for t in slow_templates() {
        b = b.template(t);
    }
    let h = spawn(b).await;
    let c = Client::new(&h);
    (h, c)
}

/// Polls a job until terminal; returns (status, job JSON) at each change.
async fn follow(c: &Client, url: &str) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    let deadline = Instant::now() + secs(20);
    loop {
        let a = c.get(url).await;
        assert_eq!(a.status, 200, "{url}: {}", a.text);
        let status = a.json["status"].as_str().unwrap().to_owned();
        if seen.last().is_none_or(|l| l["status"] != status.as_str()) {
            seen.push(a.json.clone());
        }
        if AwxStatus::parse(&status).unwrap().is_terminal() {
            return seen;
        }
        assert!(Instant::now() < deadline, "{url} never finished: {seen:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn statuses(seen: &[Value]) -> Vec<&str> {
    seen.iter().map(|j| j["status"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn api_roots_ping_config_and_me_on_both_prefixes() {
    let (h, c) = standard().await;
    let anon = c.without_token();
    let a = anon.get("/api/").await;
    assert_eq!(
        (a.status, a.json["current_version"].as_str()),
        (200, Some("/api/v2/"))
    );
    let a = anon.get("/api/controller/").await;
    assert_eq!(a.json["current_version"], "/api/controller/v2/");
    for p in PREFIXES {
        let a = anon.get(p).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json["job_templates"], format!("{p}job_templates/"));
        let a = anon.get(&format!("{p}ping/")).await;
        assert_eq!(
            (a.status, a.json["version"].as_str()),
            (200, Some("24.6.1"))
        );
        let a = c.get(&format!("{p}config/")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json["version"], "24.6.1");
        assert_eq!(a.headers["x-api-product-name"], "AWX");
        assert_eq!(a.headers["x-api-product-version"], "24.6.1");
        let a = c.get(&format!("{p}me/")).await;
        assert_eq!(
            (
                a.json["count"].as_u64(),
                a.json["results"][0]["username"].as_str()
            ),
            (Some(1), Some("admin"))
        );
        let a = c.get(&format!("{p}organizations/?name=Default")).await;
        assert_eq!(a.json["results"][0]["id"], 1);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn authentication() {
    let (h, c) = standard().await;
    for p in PREFIXES {
        let path = format!("{p}config/");
        let a = c.without_token().get(&path).await;
        assert_eq!(a.status, 401);
        assert_eq!(
            a.json,
            json!({"detail": "Authentication credentials were not provided."})
        );
        assert!(a.headers.contains_key("www-authenticate"));
        let a = c.with_token("wrong").get(&path).await;
        assert_eq!(
            (a.status, a.json["detail"].as_str()),
            (401, Some("Invalid token."))
        );
        // Basic auth is not a Bearer token.
        let a = c
            .http
            .get(format!("{}{path}", c.base))
            .basic_auth("admin", Some("password"))
            .send()
            .await
            .unwrap();
        assert_eq!(a.status(), 401);
        assert_eq!(c.get(&path).await.status, 200);
    }
    h.shutdown().await;

    // Without configured tokens nothing is checked.
    let open = Simulator::builder()
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let a = Client::new(&open)
        .without_token()
        .get("/api/v2/config/")
        .await;
    assert_eq!(a.status, 200);
    open.shutdown().await;
}

#[tokio::test]
async fn template_lookup_pagination_and_unified_templates() {
    let mut b = Simulator::builder();
    for i in 0..30 {
        b = b.template(TemplateSpec::job(format!("jt_{i:02}")));
    }
    b = b.template(TemplateSpec::workflow("wf_a").with_organization("Other"));
    let h = spawn(b).await;
    let c = Client::new(&h);
    for p in PREFIXES {
        let a = c.get(&format!("{p}job_templates/")).await;
        assert_eq!(a.json["count"], 30);
        assert_eq!(a.json["results"].as_array().unwrap().len(), 25);
        assert_eq!(a.json["previous"], Value::Null);
        assert_eq!(a.json["next"], format!("{p}job_templates/?page=2"));
        let a = c.get(a.json["next"].as_str().unwrap()).await;
        assert_eq!(a.json["results"].as_array().unwrap().len(), 5);
        assert_eq!(a.json["next"], Value::Null);
        assert_eq!(a.json["previous"], format!("{p}job_templates/?page=1"));

        let a = c
            .get(&format!(
                "{p}job_templates/?page_size=10&page=2&order_by=-id"
            ))
            .await;
        assert_eq!(a.json["results"][0]["id"], 20);
        assert_eq!(
            a.json["next"],
            format!("{p}job_templates/?page_size=10&page=3&order_by=-id")
        );
        assert_eq!(
            a.json["previous"],
            format!("{p}job_templates/?page_size=10&page=1&order_by=-id")
        );
        let a = c.get(&format!("{p}job_templates/?page=9")).await;
        assert_eq!(
            (a.status, a.json["detail"].as_str()),
            (404, Some("Invalid page."))
        );

        let a = c.get(&format!("{p}job_templates/?name=jt_07")).await;
        assert_eq!(a.json["count"], 1);
        let t = &a.json["results"][0];
        assert_eq!(
            (t["id"].as_u64(), t["type"].as_str()),
            (Some(8), Some("job_template"))
        );
        assert_eq!(
            t["related"]["launch"],
            format!("{p}job_templates/8/launch/")
        );
        assert_eq!(t["url"], format!("{p}job_templates/8/"));
        assert_eq!(t["ask_variables_on_launch"], true);
        assert_eq!(t["survey_enabled"], false);
        assert_eq!(t["ask_inventory_on_launch"], false);
        assert_eq!(
            c.get(&format!("{p}job_templates/?name=nope")).await.json["count"],
            0
        );
        assert_eq!(
            c.get(&format!("{p}job_templates/?name=wf_a")).await.json["count"],
            0
        );
        // awx.awx looks names up with or__id / or__name.
        let a = c
            .get(&format!("{p}job_templates/?or__id=3&or__name=3"))
            .await;
        assert_eq!(a.json["results"][0]["name"], "jt_02");

        let a = c
            .get(&format!("{p}workflow_job_templates/?name=wf_a"))
            .await;
        let w = &a.json["results"][0];
        assert_eq!(
            (w["id"].as_u64(), w["type"].as_str()),
            (Some(31), Some("workflow_job_template"))
        );
        assert_eq!(
            w["related"]["launch"],
            format!("{p}workflow_job_templates/31/launch/")
        );

        let a = c.get(&format!("{p}unified_job_templates/?name=wf_a")).await;
        let u = &a.json["results"][0];
        assert_eq!(u["type"], "workflow_job_template");
        assert_eq!(u["summary_fields"]["organization"]["name"], "Other");
        for ask in [
            "ask_variables_on_launch",
            "ask_limit_on_launch",
            "ask_labels_on_launch",
            "ask_inventory_on_launch",
        ] {
            assert!(u[ask].is_boolean(), "{ask}");
        }
        let a = c
            .get(&format!("{p}unified_job_templates/?page_size=100"))
            .await;
        assert_eq!(a.json["count"], 31);

        let a = c.get(&format!("{p}job_templates/5/")).await;
        assert_eq!((a.status, a.json["name"].as_str()), (200, Some("jt_04")));
        let a = c.get(&format!("{p}workflow_job_templates/31/")).await;
        assert_eq!(a.status, 200);
        for missing in [
            "job_templates/31/",
            "job_templates/999/",
            "job_templates/abc/",
            "workflow_job_templates/1/",
        ] {
            let a = c.get(&format!("{p}{missing}")).await;
            assert_eq!(
                (a.status, &a.json),
                (404, &json!({"detail": "Not found."})),
                "{missing}"
            );
        }
    }
    h.shutdown().await;
}

#[tokio::test]
async fn launch_metadata() {
    let (h, c) = standard().await;
    for p in PREFIXES {
        let a = c.get(&format!("{p}job_templates/7/launch/")).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.json["can_start_without_user_input"], true);
        assert_eq!(a.json["job_template_data"]["name"], "provision_vm");
        let a = c.get(&format!("{p}workflow_job_templates/8/launch/")).await;
        assert_eq!(a.json["workflow_job_template_data"]["id"], 8);
        assert_eq!(
            c.get(&format!("{p}job_templates/8/launch/")).await.status,
            404
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn job_life_cycle_in_order_with_timestamps() {
    let (h, c) = standard().await;
    for p in PREFIXES {
        let before = jiff::Timestamp::now();
        let a = c
            .post(
                &format!("{p}job_templates/7/launch/"),
                &operator_launch("vm-1", "key-1", None),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let id = a.json["id"].as_u64().unwrap();
        assert_eq!(a.json["job"].as_u64(), Some(id));
        assert_eq!(a.json["status"], "pending");
        assert_eq!(a.json["type"], "job");
        assert_eq!(a.json["ignored_fields"], json!({}));
        assert_eq!(a.json["started"], Value::Null);
        assert_eq!(a.json["finished"], Value::Null);
        assert_eq!(a.json["job_template"], 7);
        assert_eq!(a.json["url"], format!("{p}jobs/{id}/"));
        let vars: Value = serde_json::from_str(a.json["extra_vars"].as_str().unwrap()).unwrap();
        assert_eq!(vars["cloudkit_launch_key"], "key-1");
        assert_eq!(
            vars["ansible_eda"]["event"]["payload"]["metadata"]["name"],
            "vm-1"
        );

        let seen = follow(&c, &format!("{p}jobs/{id}/")).await;
        assert_eq!(
            statuses(&seen),
            ["pending", "waiting", "running", "successful"]
        );
        for j in &seen {
            let status = j["status"].as_str().unwrap();
            assert_eq!(
                j["started"].is_null(),
                matches!(status, "pending" | "waiting"),
                "{j}"
            );
            assert_eq!(j["finished"].is_null(), status != "successful", "{j}");
            assert_eq!(j["failed"], false);
            for field in [
                "id",
                "type",
                "status",
                "elapsed",
                "result_traceback",
                "job_explanation",
                "extra_vars",
                "job_template",
                "name",
            ] {
                assert!(!j[field].is_null(), "{field} in {j}");
            }
        }
        let last = seen.last().unwrap();
        let ts = |v: &Value| v.as_str().unwrap().parse::<jiff::Timestamp>().unwrap();
        let (created, started, finished) = (
            ts(&last["created"]),
            ts(&last["started"]),
            ts(&last["finished"]),
        );
        assert!(
            before <= created && created <= started && started < finished,
            "{last}"
        );
        let elapsed = last["elapsed"].as_f64().unwrap();
        assert!((0.05..10.0).contains(&elapsed), "{elapsed}");
        assert_eq!(last["event_processing_finished"], true);
        assert_eq!(last["result_traceback"], "");
        assert_eq!(last["related"]["cancel"], format!("{p}jobs/{id}/cancel/"));
        assert_eq!(c.get(&format!("{p}workflow_jobs/{id}/")).await.status, 404);
    }
    h.shutdown().await;
}

#[tokio::test]
async fn workflow_launch_and_life_cycle() {
    let (h, c) = standard().await;
    for p in PREFIXES {
        let a = c
            .post(
                &format!("{p}workflow_job_templates/8/launch/"),
                &operator_launch("vm-2", "key-2", None),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.text);
        let id = a.json["id"].as_u64().unwrap();
        assert_eq!(a.json["workflow_job"].as_u64(), Some(id));
        assert_eq!(a.json["type"], "workflow_job");
        assert_eq!(a.json["status"], "pending");
        assert!(a.json.get("job").is_none());
        let seen = follow(&c, &format!("{p}workflow_jobs/{id}/")).await;
        assert_eq!(
            statuses(&seen),
            ["pending", "waiting", "running", "successful"]
        );
        assert_eq!(seen[0]["workflow_job_template"], 8);
        assert_eq!(c.get(&format!("{p}jobs/{id}/")).await.status, 404);
        // A job template id on the workflow path and the reverse are unknown.
        assert_eq!(
            c.post(&format!("{p}workflow_job_templates/7/launch/"), &json!({}))
                .await
                .status,
            404
        );
        assert_eq!(
            c.post(&format!("{p}job_templates/8/launch/"), &json!({}))
                .await
                .status,
            404
        );
        assert_eq!(
            c.post(&format!("{p}job_templates/999/launch/"), &json!({}))
                .await
                .json,
            json!({"detail": "Not found."})
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn ignored_fields_when_the_template_does_not_prompt() {
    let (h, c) = standard().await;
    let body = operator_launch("vm-3", "key-3", Some(r#"{"sim_outcome": "failed"}"#));
    let mut with_limit = body.clone();
    with_limit["limit"] = json!("host1");
    let a = c.post("/api/v2/job_templates/9/launch/", &with_limit).await;
    assert_eq!(a.status, 201);
    assert_eq!(a.json["ignored_fields"]["extra_vars"], body["extra_vars"]);
    assert_eq!(a.json["ignored_fields"]["limit"], "host1");
    assert_eq!(a.json["extra_vars"], "{}");
    // The overrides were not applied either: the job succeeds.
    let seen = follow(&c, &format!("/api/v2/jobs/{}/", a.json["id"])).await;
    assert_eq!(seen.last().unwrap()["status"], "successful");
    assert_eq!(h.simulator().stats().launches_by_key["key-3"], 1);

    // extra_vars as JSON or YAML text are accepted; other shapes are refused.
    let a = c
        .post(
            "/api/v2/job_templates/7/launch/",
            &json!({"extra_vars": "{\"a\": 1}"}),
        )
        .await;
    assert_eq!(
        (a.status, a.json["extra_vars"].as_str()),
        (201, Some("{\"a\":1}"))
    );
    let a = c
        .post(
            "/api/v2/job_templates/7/launch/",
            &json!({"extra_vars": "a: 2"}),
        )
        .await;
    assert_eq!(
        (a.status, a.json["extra_vars"].as_str()),
        (201, Some("{\"a\":2}"))
    );
    let a = c
        .post(
            "/api/v2/job_templates/7/launch/",
            &json!({"extra_vars": [1]}),
        )
        .await;
    assert_eq!(a.status, 400);
    let a = c
        .send(Method::POST, "/api/v2/job_templates/7/launch/", None)
        .await
        .unwrap();
    assert_eq!(a.status, 201, "an empty body launches with defaults");
    h.shutdown().await;
}

#[tokio::test]
async fn per_job_overrides() {
    let (h, c) = standard().await;
    // A top-level extra var.
    let mut body = operator_launch("vm-4", "k4", None);
    body["extra_vars"]["sim_outcome"] = json!("failed");
    body["extra_vars"]["sim_message"] = json!("disk quota exceeded");
    let a = c.post("/api/v2/job_templates/7/launch/", &body).await;
    let seen = follow(&c, &format!("/api/v2/jobs/{}/", a.json["id"])).await;
    let last = seen.last().unwrap();
    assert_eq!(
        (last["status"].as_str(), last["failed"].as_bool()),
        (Some("failed"), Some(true))
    );
    assert_eq!(last["result_traceback"], "disk quota exceeded");
    assert!(!last["finished"].is_null());

    // The payload's templateParameters, with shorter phases.
    let body = operator_launch(
        "vm-5",
        "k5",
        Some(
            r#"{"sim_outcome": "error", "sim_pending_seconds": 0, "sim_waiting_seconds": 0, "sim_running_seconds": 1}"#,
        ),
    );
    let a = c
        .post("/api/controller/v2/job_templates/7/launch/", &body)
        .await;
    let seen = follow(&c, &format!("/api/controller/v2/jobs/{}/", a.json["id"])).await;
    let last = seen.last().unwrap();
    // 1 simulated second runs 1 ms instead of the template's 250 ms; nothing waited.
    assert!(last["elapsed"].as_f64().unwrap() < 0.05, "{last}");
    assert_eq!(last["started"], last["created"], "{last}");
    assert_eq!(last["status"], "error");
    assert!(!last["job_explanation"].as_str().unwrap().is_empty());

    // A malformed override is refused at launch.
    let mut body = operator_launch("vm-6", "k6", None);
    body["extra_vars"]["sim_running_seconds"] = json!("soon");
    let a = c.post("/api/v2/job_templates/7/launch/", &body).await;
    assert_eq!(a.status, 400, "{}", a.text);
    assert!(a.text.contains("sim_running_seconds"));
    h.shutdown().await;
}

#[tokio::test]
async fn template_outcomes_from_configuration() {
    let h = spawn(
        Simulator::builder()
            .fast()
            .template(
                TemplateSpec::job("fails")
                    .with_outcome(Outcome::Failed)
                    .with_phases(phases(1, 1, 1)),
            )
            .template(
                TemplateSpec::workflow("errors")
                    .with_outcome(Outcome::Error)
                    .with_phases(phases(1, 1, 1)),
            ),
    )
    .await;
    let c = Client::new(&h);
    let a = c.post("/api/v2/job_templates/1/launch/", &json!({})).await;
    let seen = follow(&c, &format!("/api/v2/jobs/{}/", a.json["id"])).await;
    assert_eq!(seen.last().unwrap()["status"], "failed");
    assert!(
        !seen.last().unwrap()["result_traceback"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let a = c
        .post("/api/v2/workflow_job_templates/2/launch/", &json!({}))
        .await;
    let seen = follow(&c, &format!("/api/v2/workflow_jobs/{}/", a.json["id"])).await;
    assert_eq!(seen.last().unwrap()["status"], "error");
    h.shutdown().await;
}

#[tokio::test]
async fn job_listings_filters_and_ordering() {
    let (h, c) = standard().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let a = c
            .post(
                "/api/v2/job_templates/7/launch/",
                &operator_launch(&format!("vm-{i}"), &format!("key-{i}"), None),
            )
            .await;
        ids.push(a.json["id"].as_u64().unwrap());
    }
    let other = c
        .post("/api/v2/job_templates/10/launch/", &json!({}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    let wf = c
        .post(
            "/api/v2/workflow_job_templates/8/launch/",
            &json!({"extra_vars": {"cloudkit_launch_key": "wf-key"}}),
        )
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    for p in PREFIXES {
        let a = c.get(&format!("{p}jobs/")).await;
        assert_eq!(a.json["count"], 4, "workflow jobs are not jobs");
        let a = c
            .get(&format!(
                "{p}jobs/?id__in={},{},{}&page_size=3",
                ids[0], ids[2], wf
            ))
            .await;
        let got: Vec<u64> = a.json["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_u64().unwrap())
            .collect();
        assert_eq!(got, [ids[0], ids[2]]);
        let a = c.get(&format!("{p}jobs/?order_by=-id&page_size=2")).await;
        assert_eq!(a.json["results"][0]["id"].as_u64(), Some(other));
        assert_eq!(
            a.json["next"],
            format!("{p}jobs/?order_by=-id&page_size=2&page=2")
        );

        // The operator's lost-launch search.
        let a = c
            .get(&format!(
                "{p}job_templates/7/jobs/?order_by=-id&page_size=50"
            ))
            .await;
        assert_eq!(a.status, 200);
        let results = a.json["results"].as_array().unwrap();
        let got: Vec<u64> = results.iter().map(|j| j["id"].as_u64().unwrap()).collect();
        assert_eq!(got, [ids[2], ids[1], ids[0]]);
        let vars: Value = serde_json::from_str(results[0]["extra_vars"].as_str().unwrap()).unwrap();
        assert_eq!(vars["cloudkit_launch_key"], "key-2");
        // Like AWX's list serializer: no traceback in list items, only in the job itself.
        assert!(results[0].get("result_traceback").is_none());
        assert!(results[0].get("event_processing_finished").is_none());
        assert!(
            c.get(&format!("{p}jobs/{}/", ids[2]))
                .await
                .json
                .get("result_traceback")
                .is_some()
        );
        let a = c
            .get(&format!(
                "{p}workflow_job_templates/8/workflow_jobs/?order_by=-id&page_size=50"
            ))
            .await;
        assert_eq!(a.json["count"], 1);
        assert!(
            a.json["results"][0]["extra_vars"]
                .as_str()
                .unwrap()
                .contains("wf-key")
        );
        assert_eq!(
            c.get(&format!("{p}job_templates/8/jobs/")).await.status,
            404
        );
        let a = c
            .get(&format!("{p}workflow_jobs/?id__in={wf}&page_size=1"))
            .await;
        assert_eq!(a.json["results"][0]["id"].as_u64(), Some(wf));
        let a = c.get(&format!("{p}unified_jobs/?order_by=-id")).await;
        assert_eq!(a.json["count"], 5);
        let a = c
            .get(&format!("{p}jobs/?status=successful&job_template=10"))
            .await;
        assert_eq!(a.json["count"], 0);
        let a = c
            .get(&format!("{p}jobs/?labels__name=eda-event-uuid-x"))
            .await;
        assert_eq!(a.json["count"], 0);
    }
    // Let the long one run, then filter by status.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let a = c.get("/api/v2/jobs/?status=running&job_template=10").await;
    assert_eq!(a.json["count"], 1);
    let a = c
        .get(&format!(
            "/api/v2/jobs/?status__in=running,successful&id={other}"
        ))
        .await;
    assert_eq!(a.json["count"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn cancel_accepted_then_canceled_then_405() {
    let (h, c) = standard().await;
    for (p, launch, jobs) in [
        ("/api/v2/", "job_templates/10/launch/", "jobs"),
        ("/api/controller/v2/", "job_templates/10/launch/", "jobs"),
        (
            "/api/v2/",
            "workflow_job_templates/8/launch/",
            "workflow_jobs",
        ),
    ] {
        let id = c.post(&format!("{p}{launch}"), &json!({})).await.json["id"]
            .as_u64()
            .unwrap();
        let cancel = format!("{p}{jobs}/{id}/cancel/");
        assert_eq!(c.get(&cancel).await.json, json!({"can_cancel": true}));
        let a = c
            .send(Method::POST, &cancel, Some(&json!({})))
            .await
            .unwrap();
        assert_eq!(a.status, 202);
        assert_eq!(a.text, "", "202 has an empty body");
        let seen = follow(&c, &format!("{p}{jobs}/{id}/")).await;
        let last = seen.last().unwrap();
        assert_eq!(last["status"], "canceled");
        assert_eq!(last["failed"], true);
        assert!(!last["finished"].is_null() && !last["canceled_on"].is_null());
        assert_eq!(c.get(&cancel).await.json, json!({"can_cancel": false}));
        let a = c.send(Method::POST, &cancel, None).await.unwrap();
        assert_eq!(a.status, 405);
        assert!(
            a.json["error"].as_str().unwrap().contains("canceled"),
            "{}",
            a.text
        );
    }
    // A finished job cannot be canceled; an unknown one is 404.
    let id = c
        .post("/api/v2/job_templates/9/launch/", &json!({}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    follow(&c, &format!("/api/v2/jobs/{id}/")).await;
    assert_eq!(
        c.send(Method::POST, &format!("/api/v2/jobs/{id}/cancel/"), None)
            .await
            .unwrap()
            .status,
        405
    );
    assert_eq!(
        c.send(Method::POST, "/api/v2/jobs/9999/cancel/", None)
            .await
            .unwrap()
            .status,
        404
    );
    assert_eq!(c.get("/api/v2/jobs/9999/cancel/").await.status, 404);
    assert_eq!(h.simulator().stats().cancels, 3);
    h.shutdown().await;
}

#[tokio::test]
async fn stdout_redirects_and_method_errors() {
    let (h, c) = standard().await;
    let id = c
        .post("/api/v2/job_templates/9/launch/", &json!({}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    follow(&c, &format!("/api/v2/jobs/{id}/")).await;
    for p in PREFIXES {
        let a = c.get(&format!("{p}jobs/{id}/stdout/?format=txt")).await;
        assert_eq!(a.status, 200);
        assert!(
            a.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        assert!(a.text.contains("PLAY RECAP"), "{}", a.text);
        let a = c.get(&format!("{p}jobs/{id}/stdout/?format=json")).await;
        assert!(a.json["content"].as_str().unwrap().contains("PLAY"));
    }
    let a = c.get("/api/v2/config").await;
    assert_eq!(
        (a.status, a.headers["location"].to_str().unwrap()),
        (301, "/api/v2/config/")
    );
    let a = c.get("/api/v2/no_such_thing/").await;
    assert_eq!((a.status, &a.json), (404, &json!({"detail": "Not found."})));
    let a = c
        .send(Method::DELETE, &format!("/api/v2/jobs/{id}/"), None)
        .await
        .unwrap();
    assert_eq!(a.status, 405);
    assert_eq!(a.json["detail"], "Method \"DELETE\" not allowed.");
    h.shutdown().await;
}

#[tokio::test]
async fn fault_errors_with_path_filter_and_reproducible_seed() {
    let (h, c) = standard().await;
    h.simulator()
        .set_faults(Faults {
            error_rate: 1.0,
            error_status: 503,
            path_contains: Some("/launch/".into()),
            ..Faults::default()
        })
        .unwrap();
    let a = c.post("/api/v2/job_templates/7/launch/", &json!({})).await;
    assert_eq!(
        (a.status, a.headers["x-sim-fault"].to_str().unwrap()),
        (503, "error")
    );
    assert_eq!(a.json["detail"], "Simulated server error.");
    assert_eq!(
        c.get("/api/v2/config/").await.status,
        200,
        "other paths are not affected"
    );
    assert_eq!(h.simulator().stats().launches, 0);
    assert_eq!(h.simulator().stats().injected_errors, 1);
    h.shutdown().await;

    // The same seed gives the same answers.
    let mut runs = Vec::new();
    for _ in 0..2 {
        let h = spawn(Simulator::builder().faults(Faults {
            error_rate: 0.5,
            ..Faults::default()
        }))
        .await;
        let c = Client::new(&h);
        let mut codes = Vec::new();
        for _ in 0..40 {
            codes.push(c.get("/api/v2/config/").await.status);
        }
        assert!(codes.contains(&500) && codes.contains(&200), "{codes:?}");
        runs.push(codes);
        h.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
}

#[tokio::test]
async fn diagnostics_name_the_counters_and_the_newest_requests() {
    let (h, c) = standard().await;
    c.get("/api/v2/me/").await;
    c.get("/api/v2/config/").await;
    let text = h.simulator().diagnostics(1);
    assert!(text.contains("requests: 2"), "{text}");
    assert!(text.contains("/api/v2/config/"), "{text}");
    assert!(!text.contains("/api/v2/me/"), "only the newest one: {text}");
    h.shutdown().await;
}

#[tokio::test]
async fn fault_latency() {
    let (h, c) = standard().await;
    h.simulator()
        .set_faults(Faults {
            latency: Duration::from_millis(150),
            latency_jitter: Duration::from_millis(50),
            ..Faults::default()
        })
        .unwrap();
    let t = Instant::now();
    assert_eq!(c.get("/api/v2/config/").await.status, 200);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(150), "{took:?}");
    let log = h.simulator().requests();
    assert!(log.last().unwrap().duration_ms >= 150.0);
    h.shutdown().await;
}

#[tokio::test]
async fn fault_connection_reset() {
    let (h, c) = standard().await;
    h.simulator()
        .set_faults(Faults {
            drop_rate: 1.0,
            path_contains: Some("/config/".into()),
            ..Faults::default()
        })
        .unwrap();
    let err = c
        .send(Method::GET, "/api/v2/config/", None)
        .await
        .unwrap_err();
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    let last = h.simulator().requests().pop().unwrap();
    assert_eq!((last.status, last.fault.as_deref()), (0, Some("reset")));
    // Other requests, on new connections, still work.
    assert_eq!(c.get("/api/v2/me/").await.status, 200);
    assert_eq!(h.simulator().stats().injected_resets, 1);
    h.shutdown().await;
}

#[tokio::test]
async fn fault_lost_answer_after_the_launch() {
    let (h, c) = standard().await;
    h.simulator()
        .set_faults(Faults {
            stall_rate: 1.0,
            stall: Duration::from_millis(300),
            path_contains: Some("/launch/".into()),
            ..Faults::default()
        })
        .unwrap();
    // The answer never comes: the connection stays silent, then is reset.
    let err = c
        .send(
            Method::POST,
            "/api/v2/job_templates/9/launch/",
            Some(&json!({})),
        )
        .await
        .unwrap_err();
    assert!(!err.is_status(), "{err:?}");
    let last = h.simulator().requests().pop().unwrap();
    assert_eq!((last.status, last.fault.as_deref()), (201, Some("stall")));
    assert_eq!(h.simulator().stats().injected_stalls, 1);
    // ...but the job was launched.
    assert_eq!(h.simulator().stats().launches, 1);
    assert_eq!(c.get("/api/v2/jobs/").await.json["count"], 1);
    h.shutdown().await;
}

#[tokio::test]
async fn fault_purge_after_finish() {
    let (h, c) = standard().await;
    h.simulator()
        .set_faults(Faults {
            purge_after: Some(Duration::from_millis(500)),
            ..Faults::default()
        })
        .unwrap();
    let id = c
        .post("/api/v2/job_templates/9/launch/", &json!({}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    let long = c
        .post("/api/v2/job_templates/10/launch/", &json!({}))
        .await
        .json["id"]
        .as_u64()
        .unwrap();
    let seen = follow(&c, &format!("/api/v2/jobs/{id}/")).await;
    assert_eq!(seen.last().unwrap()["status"], "successful");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let a = c.get(&format!("/api/v2/jobs/{id}/")).await;
    assert_eq!((a.status, &a.json), (404, &json!({"detail": "Not found."})));
    assert_eq!(
        c.get("/api/v2/jobs/").await.json["count"],
        1,
        "the unfinished job stays"
    );
    assert_eq!(c.get(&format!("/api/v2/jobs/{long}/")).await.status, 200);
    assert_eq!(h.simulator().job_status(id), None);
    assert!(h.simulator().stats().purged >= 1);
    h.shutdown().await;
}

#[tokio::test]
async fn fault_unauthorized_period_via_admin_api() {
    let (h, c) = standard().await;
    let admin = c.without_token();
    let a = admin
        .send(
            Method::PUT,
            "/_sim/faults",
            Some(&json!({"unauthorized": true})),
        )
        .await
        .unwrap();
    assert_eq!(
        (a.status, a.json["unauthorized"].as_bool()),
        (200, Some(true))
    );
    for p in PREFIXES {
        let a = c.get(&format!("{p}config/")).await;
        assert_eq!(
            (a.status, a.headers["x-sim-fault"].to_str().unwrap()),
            (401, "unauthorized")
        );
        assert!(a.json["detail"].is_string());
    }
    assert_eq!(
        c.post("/api/v2/job_templates/7/launch/", &json!({}))
            .await
            .status,
        401
    );
    let a = admin
        .send(
            Method::PUT,
            "/_sim/faults",
            Some(&json!({"unauthorized": false})),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(c.get("/api/v2/config/").await.status, 200);
    assert_eq!(h.simulator().stats().injected_unauthorized, 3);

    // Merge semantics, validation and clearing with null.
    let a = admin
        .send(
            Method::POST,
            "/_sim/faults",
            Some(&json!({"purge_after": "2s", "latency": 0})),
        )
        .await
        .unwrap();
    assert_eq!(a.json["purge_after"], "2s");
    let a = admin
        .send(
            Method::PUT,
            "/_sim/faults",
            Some(&json!({"purge_after": null})),
        )
        .await
        .unwrap();
    assert_eq!(a.json["purge_after"], Value::Null);
    for bad in [
        json!({"error_rate": 7}),
        json!({"error_status": 404}),
        json!({"nope": 1}),
        json!([1]),
    ] {
        let a = admin
            .send(Method::PUT, "/_sim/faults", Some(&bad))
            .await
            .unwrap();
        assert_eq!(a.status, 400, "{bad}");
    }
    assert_eq!(
        admin.get("/_sim/faults").await.json,
        json!(h.simulator().faults())
    );
    h.shutdown().await;
}

#[tokio::test]
async fn request_log_stats_and_runtime_templates() {
    let (h, c) = standard().await;
    let admin = c.without_token();
    c.post(
        "/api/v2/job_templates/7/launch/",
        &operator_launch("a", "key-a", None),
    )
    .await;
    c.post(
        "/api/v2/job_templates/7/launch/",
        &operator_launch("a", "key-a", None),
    )
    .await;
    c.post(
        "/api/controller/v2/workflow_job_templates/8/launch/",
        &operator_launch("b", "key-b", None),
    )
    .await;
    c.without_token().get("/api/v2/jobs/").await;

    let log = h.simulator().requests();
    assert_eq!(log.len(), 4);
    assert_eq!(
        (log[0].method.as_str(), log[0].path.as_str(), log[0].status),
        ("POST", "/api/v2/job_templates/7/launch/", 201)
    );
    assert_eq!(log[3].status, 401);
    assert!(log[0].timestamp.parse::<jiff::Timestamp>().is_ok());
    let a = admin.get("/_sim/requests").await;
    assert_eq!(
        a.json.as_array().unwrap().len(),
        4,
        "admin requests are not logged"
    );
    assert_eq!(
        a.json[2]["path"],
        "/api/controller/v2/workflow_job_templates/8/launch/"
    );

    let a = admin.get("/_sim/stats").await;
    assert_eq!(a.json["launches"], 3);
    assert_eq!(
        a.json["launches_by_template"],
        json!({"provision_vm": 2, "deprovision_vm": 1})
    );
    assert_eq!(a.json["launches_by_key"], json!({"key-a": 2, "key-b": 1}));
    assert_eq!(a.json["requests"], 4);
    assert_eq!(
        a.json["jobs_by_status"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        3
    );
    assert_eq!(h.simulator().stats().launches_by_key["key-a"], 2);

    assert_eq!(
        admin
            .send(Method::DELETE, "/_sim/requests", None)
            .await
            .unwrap()
            .status,
        204
    );
    assert!(h.simulator().requests().is_empty());

    let a = admin
        .send(
            Method::POST,
            "/_sim/templates",
            Some(&json!({"name": "added_later", "kind": "workflow", "running": "1s"})),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 201, "{}", a.text);
    let id = a.json["id"].as_u64().unwrap();
    let a = c
        .get("/api/v2/workflow_job_templates/?name=added_later")
        .await;
    assert_eq!(a.json["results"][0]["id"].as_u64(), Some(id));
    let a = admin
        .send(
            Method::POST,
            "/_sim/templates",
            Some(&json!({"name": "added_later", "kind": "workflow"})),
        )
        .await
        .unwrap();
    assert_eq!(a.status, 400);
    assert_eq!(
        admin
            .get("/_sim/templates")
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(admin.get("/_sim/health").await.text, "ok");
    h.shutdown().await;
}

#[tokio::test]
async fn configuration_file_and_shutdown() {
    let config = SimConfig::from_yaml_str(
        r#"
templates:
  - {name: from_file, id: 40, pending: 1ms, waiting: 1ms, running: 1ms}
tokens: [file-token]
"#,
    )
    .unwrap();
    let h = Simulator::builder()
        .config(config)
        .spawn("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let c = Client::new(&h).with_token("file-token");
    let a = c.post("/api/v2/job_templates/40/launch/", &json!({})).await;
    assert_eq!(a.status, 201);
    let seen = follow(&c, &format!("/api/v2/jobs/{}/", a.json["id"])).await;
    assert_eq!(seen.last().unwrap()["status"], "successful");
    let addr = h.addr();
    h.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "closed after shutdown"
    );
}

#[tokio::test]
async fn thousands_of_jobs_stay_cheap() {
    let h = spawn(
        Simulator::builder()
            .fast()
            .template(TemplateSpec::job("many").with_phases(phases(1, 1, 1))),
    )
    .await;
    let c = Client::new(&h);
    let t = Instant::now();
    for _ in 0..2000 {
        assert_eq!(
            c.post("/api/v2/job_templates/1/launch/", &json!({}))
                .await
                .status,
            201
        );
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a = c.get("/api/v2/jobs/?status=successful&page_size=1").await;
    assert_eq!(a.json["count"], 2000);
    assert!(t.elapsed() < secs(30), "{:?}", t.elapsed());
    h.shutdown().await;
}
