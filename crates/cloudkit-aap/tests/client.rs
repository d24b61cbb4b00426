//! The controller client against a wiremock AWX: paths, headers, the template cache, launches,
//! status mapping of HTTP errors and every malformed or missing answer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use cloudkit_aap::*;
use cloudkit_api::AapJobKind;
use cloudkit_provider::{CancelOutcome, ProviderError, ProviderErrorKind};
use common::*;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{any, bearer_token, body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn vars() -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(
        "ansible_eda".into(),
        json!({"event": {"payload": {"x": 1}}}),
    );
    m.insert(LAUNCH_KEY_VAR.into(), json!("key-1"));
    m
}

#[tokio::test]
async fn both_base_url_forms_reach_v2_with_auth_headers() {
    for prefix in [AWX, GATEWAY] {
        for trailing in ["", "/"] {
            let server = MockServer::start().await;
            Mock::given(method("GET"))
                .and(path(format!("{prefix}/v2/job_templates/")))
                .and(query_param("name", PROVISION))
                .and(bearer_token(TOKEN))
                .and(header("accept", "application/json"))
                .respond_with(
                    ResponseTemplate::new(200).set_body_json(
                        json!({"count": 1, "results": [{"id": 11, "name": PROVISION}]}),
                    ),
                )
                .expect(1)
                .mount(&server)
                .await;
            let base = format!("{}{prefix}{trailing}", server.uri());
            let client = AapClient::new(&config_for(&base)).unwrap();
            let found = client.find_template(PROVISION).await.unwrap();
            assert_eq!(
                found,
                TemplateRef {
                    kind: TemplateKind::JobTemplate,
                    id: 11
                },
                "{base}"
            );
        }
    }
}

#[tokio::test]
async fn lookup_falls_back_to_workflow_job_templates() {
    let server = MockServer::start().await;
    template_page(&server, AWX, "job_templates", "wf", &[]).await;
    template_page(&server, AWX, "workflow_job_templates", "wf", &[9]).await;
    let found = client(&server).find_template("wf").await.unwrap();
    assert_eq!(found.kind, TemplateKind::WorkflowJobTemplate);
    assert_eq!(found.id, 9);
    assert_eq!(found.kind.job_kind(), AapJobKind::WorkflowJob);
}

#[tokio::test]
async fn missing_template_is_a_configuration_error() {
    let server = MockServer::start().await;
    template_page(&server, AWX, "job_templates", "nope", &[]).await;
    template_page(&server, AWX, "workflow_job_templates", "nope", &[]).await;
    let err = client(&server).find_template("nope").await.unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Configuration, "{err}");
    assert!(
        err.to_string()
            .contains("no job template or workflow job template named \"nope\""),
        "{err}"
    );
    assert_clean(&err);
}

#[tokio::test]
async fn lookup_ignores_items_with_another_name() {
    // A controller that treats ?name= loosely must not make us launch another template.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(
                json!({"count": 1, "results": [{"id": 3, "name": "provision_vm_old"}]}),
            ),
        )
        .mount(&server)
        .await;
    template_page(&server, AWX, "workflow_job_templates", PROVISION, &[4]).await;
    let found = client(&server).find_template(PROVISION).await.unwrap();
    assert_eq!(found.id, 4);
}

#[tokio::test]
async fn template_names_are_url_encoded() {
    let name = "Provision VM & more/+=?#";
    let server = MockServer::start().await;
    template_page(&server, AWX, "job_templates", name, &[5]).await;
    let found = client(&server).find_template(name).await.unwrap();
    assert_eq!(found.id, 5);
    let requests = server.received_requests().await.unwrap();
    let query = requests[0].url.query().unwrap_or_default().to_string();
    assert!(!query.contains(' ') && !query.contains("& "), "{query}");
    assert!(query.contains("%26"), "{query}");
    assert_eq!(requests.len(), 1, "the & must not split the parameter");
}

#[tokio::test]
async fn cached_template_needs_no_second_lookup() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"count": 1, "results": [{"id": 7}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    for _ in 0..3 {
        assert_eq!(client.find_template(PROVISION).await.unwrap().id, 7);
    }
    assert_eq!(client.cached_template(PROVISION).map(|t| t.id), Some(7));
    client.forget_template(PROVISION);
    assert_eq!(client.cached_template(PROVISION), None);
}

#[tokio::test]
async fn cache_is_shared_by_concurrent_tasks() {
    let server = MockServer::start().await;
    job_template(&server, PROVISION, 7).await;
    let client = std::sync::Arc::new(client(&server));
    client.find_template(PROVISION).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let c = std::sync::Arc::clone(&client);
            tokio::spawn(async move { c.find_template(PROVISION).await.map(|t| t.id) })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 7);
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn launch_404_drops_the_cache_and_looks_up_again_once() {
    let server = MockServer::start().await;
    // The template was recreated: the first lookup still sees the old id.
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"count": 1, "results": [{"id": 7}]})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"count": 1, "results": [{"id": 8}]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/job_templates/7/launch/"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Not found."})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/job_templates/8/launch/"))
        .respond_with(ResponseTemplate::new(201).set_body_json(launch_answer(31, AapJobKind::Job)))
        .expect(1)
        .mount(&server)
        .await;
    let client = client(&server);
    let job = client.launch_template(PROVISION, &vars()).await.unwrap();
    assert_eq!((job.id, job.kind), (31, AapJobKind::Job));
    assert_eq!(job.template.id, 8);
    assert_eq!(client.cached_template(PROVISION).map(|t| t.id), Some(8));
}

#[tokio::test]
async fn launch_404_after_the_retry_is_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"count": 1, "results": [{"id": 7}]})),
        )
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/job_templates/7/launch/"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Not found."})))
        .expect(2)
        .mount(&server)
        .await;
    let err = client(&server)
        .launch_template(PROVISION, &vars())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("Not found."), "{err}");
    assert_clean(&err);
}

#[tokio::test]
async fn launch_posts_extra_vars_to_the_numeric_id() {
    let server = MockServer::start().await;
    template_page(&server, AWX, "job_templates", "wf", &[]).await;
    template_page(&server, AWX, "workflow_job_templates", "wf", &[9]).await;
    Mock::given(method("POST"))
        .and(path("/api/v2/workflow_job_templates/9/launch/"))
        .and(bearer_token(TOKEN))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({"extra_vars": vars()})))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(launch_answer(55, AapJobKind::WorkflowJob)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let job = client(&server)
        .launch_template("wf", &vars())
        .await
        .unwrap();
    assert_eq!(job.id, 55);
    assert_eq!(job.kind, AapJobKind::WorkflowJob);
    assert_eq!(job.status, "pending");
}

#[tokio::test]
async fn launch_answer_id_fallbacks() {
    // (answer, expected id or None for an error)
    let rows = [
        (json!({"id": 12, "job": 12}), Some(12)),
        (json!({"job": 13}), Some(13)),
        (json!({"id": "14"}), Some(14)),
        (json!({"status": "pending"}), None),
        (json!({"id": "abc"}), None),
        (json!({"id": -3}), None),
        (json!({"id": true}), None),
    ];
    for (answer, want) in rows {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v2/job_templates/1/launch/"))
            .respond_with(ResponseTemplate::new(201).set_body_json(answer.clone()))
            .mount(&server)
            .await;
        let template = TemplateRef {
            kind: TemplateKind::JobTemplate,
            id: 1,
        };
        let got = client(&server).launch(template, &vars()).await;
        match (got, want) {
            (Ok(job), Some(id)) => assert_eq!(job.id, id, "{answer}"),
            (Err(e), None) => {
                assert_eq!(e.kind(), ProviderErrorKind::Transport, "{answer}: {e}");
                assert_clean(&e);
            }
            (got, want) => panic!("{answer}: got {got:?}, want {want:?}"),
        }
    }
}

#[tokio::test]
async fn ignored_extra_vars_cancel_the_job_and_ask_for_prompt_on_launch() {
    // (ignored_fields, whether the template ignored our variables)
    let rows = [
        (
            json!({"extra_vars": {"ansible_eda": {}, "cloudkit_launch_key": "key-1"}}),
            true,
        ),
        (json!({"ansible_eda": {}}), true),
        (json!({"cloudkit_launch_key": "key-1"}), true),
        (json!(["extra_vars"]), true),
        (json!({}), false),
        (json!({"inventory": 3}), false),
        (json!(null), false),
    ];
    for (ignored, rejected) in rows {
        for kind in [AapJobKind::Job, AapJobKind::WorkflowJob] {
            let server = MockServer::start().await;
            let (templates, jobs) = match kind {
                AapJobKind::Job => ("job_templates", "jobs"),
                AapJobKind::WorkflowJob => ("workflow_job_templates", "workflow_jobs"),
            };
            let mut answer = launch_answer(40, kind);
            answer["ignored_fields"] = ignored.clone();
            Mock::given(method("POST"))
                .and(path(format!("/api/v2/{templates}/2/launch/")))
                .respond_with(ResponseTemplate::new(201).set_body_json(answer))
                .mount(&server)
                .await;
            Mock::given(method("POST"))
                .and(path(format!("/api/v2/{jobs}/40/cancel/")))
                .and(bearer_token(TOKEN))
                .respond_with(ResponseTemplate::new(202))
                .expect(u64::from(rejected))
                .mount(&server)
                .await;
            let template = TemplateRef {
                kind: match kind {
                    AapJobKind::Job => TemplateKind::JobTemplate,
                    AapJobKind::WorkflowJob => TemplateKind::WorkflowJobTemplate,
                },
                id: 2,
            };
            let got = client(&server).launch(template, &vars()).await;
            if rejected {
                let err = got.unwrap_err();
                assert_eq!(err.kind(), ProviderErrorKind::Configuration, "{ignored}");
                let text = err.to_string();
                assert!(text.contains("Prompt on launch"), "{text}");
                assert!(text.contains("40"), "{text}");
                assert_clean(&err);
            } else {
                assert_eq!(got.unwrap().id, 40, "{ignored}");
            }
        }
    }
}

#[tokio::test]
async fn ignored_extra_vars_still_configuration_error_when_cancel_fails() {
    let server = MockServer::start().await;
    let mut answer = launch_answer(41, AapJobKind::Job);
    answer["ignored_fields"] = json!({"extra_vars": {}});
    Mock::given(method("POST"))
        .and(path("/api/v2/job_templates/2/launch/"))
        .respond_with(ResponseTemplate::new(201).set_body_json(answer))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v2/jobs/41/cancel/"))
        .respond_with(ResponseTemplate::new(500))
        .expect(1)
        .mount(&server)
        .await;
    let template = TemplateRef {
        kind: TemplateKind::JobTemplate,
        id: 2,
    };
    let err = client(&server).launch(template, &vars()).await.unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Configuration);
    assert!(err.to_string().contains("cancelling it failed"), "{err}");
}

#[tokio::test]
async fn jobs_and_workflow_jobs_live_under_their_own_paths() {
    let server = MockServer::start().await;
    for (collection, id, status) in [("jobs", 5, "running"), ("workflow_jobs", 6, "successful")] {
        Mock::given(method("GET"))
            .and(path(format!("/api/v2/{collection}/{id}/")))
            .and(bearer_token(TOKEN))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "id": id, "status": status, "started": "2026-01-01T00:00:00Z", "finished": null,
                "result_traceback": "", "job_explanation": ""
            })))
            .expect(1)
            .mount(&server)
            .await;
    }
    let client = client(&server);
    let job = client.job(AapJobKind::Job, 5).await.unwrap();
    assert_eq!((job.id, job.status.as_str()), (5, "running"));
    assert_eq!(job.started.as_deref(), Some("2026-01-01T00:00:00Z"));
    assert_eq!(job.finished, None);
    let wf = client.job(AapJobKind::WorkflowJob, 6).await.unwrap();
    assert_eq!((wf.id, wf.status.as_str()), (6, "successful"));
}

#[tokio::test]
async fn cancel_outcomes() {
    // (status, expected outcome or error kind)
    let rows: [(u16, Result<CancelOutcome, ProviderErrorKind>); 6] = [
        (202, Ok(CancelOutcome::Requested)),
        (200, Ok(CancelOutcome::Requested)),
        (405, Ok(CancelOutcome::AlreadyFinished)),
        (404, Ok(CancelOutcome::AlreadyFinished)),
        (401, Err(ProviderErrorKind::Auth)),
        (503, Err(ProviderErrorKind::Transport)),
    ];
    for (status, want) in rows {
        for kind in [AapJobKind::Job, AapJobKind::WorkflowJob] {
            let server = MockServer::start().await;
            Mock::given(method("POST"))
                .and(path(format!("/api/v2/{}/77/cancel/", job_collection(kind))))
                .and(bearer_token(TOKEN))
                .respond_with(ResponseTemplate::new(status))
                .expect(1)
                .mount(&server)
                .await;
            let got = client(&server).cancel(kind, 77).await.map_err(|e| e.kind());
            assert_eq!(got, want, "HTTP {status} {kind:?}");
        }
    }
}

/// One row of the HTTP status table.
struct StatusRow {
    status: u16,
    body: &'static str,
    content_type: &'static str,
    retry_after: Option<&'static str>,
    kind: ProviderErrorKind,
    mentions: &'static str,
}

#[tokio::test]
async fn http_errors_map_to_typed_errors() {
    let html = "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>\n<body>nginx</body></html>";
    let rows = [
        StatusRow {
            status: 401,
            body: r#"{"detail": "Authentication credentials were not provided."}"#,
            content_type: "application/json",
            retry_after: None,
            kind: ProviderErrorKind::Auth,
            mentions: "credentials were not provided",
        },
        StatusRow {
            status: 403,
            body: r#"{"detail": "You do not have permission to perform this action."}"#,
            content_type: "application/json",
            retry_after: None,
            kind: ProviderErrorKind::Auth,
            mentions: "HTTP 403",
        },
        StatusRow {
            status: 404,
            body: r#"{"detail": "Not found."}"#,
            content_type: "application/json",
            retry_after: None,
            kind: ProviderErrorKind::NotFound,
            mentions: "Not found.",
        },
        StatusRow {
            status: 405,
            body: r#"{"detail": "Method not allowed."}"#,
            content_type: "application/json",
            retry_after: None,
            kind: ProviderErrorKind::NotAllowed,
            mentions: "HTTP 405",
        },
        StatusRow {
            status: 409,
            body: "",
            content_type: "text/plain",
            retry_after: None,
            kind: ProviderErrorKind::NotAllowed,
            mentions: "HTTP 409",
        },
        StatusRow {
            status: 400,
            body: r#"{"detail": "bad"}"#,
            content_type: "application/json",
            retry_after: None,
            kind: ProviderErrorKind::Configuration,
            mentions: "bad",
        },
        StatusRow {
            status: 500,
            body: "Internal Server Error",
            content_type: "text/plain",
            retry_after: None,
            kind: ProviderErrorKind::Transport,
            mentions: "HTTP 500",
        },
        StatusRow {
            status: 502,
            body: html,
            content_type: "text/html",
            retry_after: None,
            kind: ProviderErrorKind::Transport,
            mentions: "502 Bad Gateway",
        },
        StatusRow {
            status: 503,
            body: "",
            content_type: "text/plain",
            retry_after: None,
            kind: ProviderErrorKind::Transport,
            mentions: "HTTP 503",
        },
        StatusRow {
            status: 418,
            body: "",
            content_type: "text/plain",
            retry_after: None,
            kind: ProviderErrorKind::Transport,
            mentions: "HTTP 418",
        },
    ];
    for row in rows {
        let server = MockServer::start().await;
        let mut response = ResponseTemplate::new(row.status)
            .set_body_raw(row.body.as_bytes().to_vec(), row.content_type);
        if let Some(v) = row.retry_after {
            response = response.insert_header("retry-after", v);
        }
        Mock::given(any())
            .respond_with(response)
            .mount(&server)
            .await;
        let err = client(&server).job(AapJobKind::Job, 1).await.unwrap_err();
        assert_eq!(err.kind(), row.kind, "HTTP {}: {err}", row.status);
        assert!(
            err.to_string().contains(row.mentions),
            "HTTP {}: {err}",
            row.status
        );
        assert!(err.to_string().contains("GET /api/v2/jobs/1/"), "{err}");
        assert_clean(&err);
    }
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let rows = [
        (Some("7"), Duration::from_secs(7)),
        (Some(" 120 "), Duration::from_secs(120)),
        (Some("0"), Duration::from_secs(1)),
        (Some("999999"), Duration::from_secs(3600)),
        (Some("Wed, 21 Oct 2015 07:28:00 GMT"), DEFAULT_RETRY_AFTER),
        (Some("soon"), DEFAULT_RETRY_AFTER),
        (None, DEFAULT_RETRY_AFTER),
    ];
    for (header_value, want) in rows {
        let server = MockServer::start().await;
        let mut response = ResponseTemplate::new(429);
        if let Some(v) = header_value {
            response = response.insert_header("retry-after", v);
        }
        Mock::given(any())
            .respond_with(response)
            .mount(&server)
            .await;
        let err = client(&server).job(AapJobKind::Job, 3).await.unwrap_err();
        assert_eq!(err.retry_after(), Some(want), "{header_value:?}");
        assert!(err.is_transient());
    }
}

#[tokio::test]
async fn malformed_answers_are_transport_errors() {
    // (body, content type, a word the message must contain)
    let rows = [
        (
            "<html><head><title>Login</title></head><body>please log in</body></html>",
            "text/html",
            "HTML page titled \"Login\"",
        ),
        (
            "<html>\n<body>maintenance</body>",
            "text/html; charset=utf-8",
            "HTML page",
        ),
        (
            r#"{"count": 1, "results": [{"id": 1"#,
            "application/json",
            "not JSON",
        ),
        ("", "application/json", "empty body"),
        (
            r#"{"count": "one", "results": []}"#,
            "application/json",
            "unexpected answer",
        ),
        (
            r#"{"count": 1, "results": [{"id": "abc"}]}"#,
            "application/json",
            "unexpected answer",
        ),
        (
            r#"{"count": 1, "results": [{"id": null}]}"#,
            "application/json",
            "unexpected answer",
        ),
        (
            r#"{"count": 1, "results": "x"}"#,
            "application/json",
            "unexpected answer",
        ),
        (r#"{"count": 1}"#, "application/json", "unexpected answer"),
        ("[1, 2]", "application/json", "unexpected answer"),
        ("null", "application/json", "unexpected answer"),
    ];
    for (body, content_type, mentions) in rows {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(
                ResponseTemplate::new(200).set_body_raw(body.as_bytes().to_vec(), content_type),
            )
            .mount(&server)
            .await;
        let err = client(&server).find_template(PROVISION).await.unwrap_err();
        assert_eq!(err.kind(), ProviderErrorKind::Transport, "{body}: {err}");
        assert!(err.to_string().contains(mentions), "{body}: {err}");
        assert_clean(&err);
    }
}

#[tokio::test]
async fn job_detail_with_wrong_types_is_a_transport_error() {
    let rows = [
        json!({"id": 5, "status": 7}),
        json!({"id": 5, "status": "failed", "result_traceback": ["a"]}),
        json!({"id": 5, "status": "running", "started": 12}),
        json!({"status": "running"}),
        json!("running"),
    ];
    for body in rows {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(ResponseTemplate::new(200).set_body_json(body.clone()))
            .mount(&server)
            .await;
        let err = client(&server).job(AapJobKind::Job, 5).await.unwrap_err();
        assert_eq!(err.kind(), ProviderErrorKind::Transport, "{body}: {err}");
        assert_clean(&err);
    }
}

#[tokio::test]
async fn long_error_bodies_are_truncated() {
    let server = MockServer::start().await;
    let detail = "x".repeat(10_000);
    Mock::given(any())
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"detail": detail})))
        .mount(&server)
        .await;
    let err = client(&server).job(AapJobKind::Job, 5).await.unwrap_err();
    assert!(
        err.to_string().len() < 1024,
        "{} bytes",
        err.to_string().len()
    );
    assert_clean(&err);
}

#[tokio::test]
async fn body_over_the_cap_is_refused() {
    let server = MockServer::start().await;
    let mut big = br#"{"count": 0, "results": [], "pad": ""#.to_vec();
    big.extend(std::iter::repeat_n(b'a', MAX_BODY_BYTES));
    big.extend(br#""}"#);
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_raw(big, "application/json"))
        .mount(&server)
        .await;
    let err = client(&server).find_template(PROVISION).await.unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    assert!(err.to_string().contains("larger than 1024 KiB"), "{err}");
    assert_clean(&err);
}

/// A raw HTTP server answering one request with a chunked body that never ends by itself; it
/// reports how many bytes it managed to send before the client hung up.
async fn endless_chunked_server() -> (String, tokio::task::JoinHandle<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4096];
        let _ = socket.read(&mut buf).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return 0;
        }
        let chunk = vec![b' '; 64 * 1024];
        let mut sent = 0;
        // Stop at 64 MiB in any case, so a client that never gives up cannot hang the test.
        while sent < 64 * 1024 * 1024 {
            let frame = format!("{:x}\r\n", chunk.len());
            let ok = socket.write_all(frame.as_bytes()).await.is_ok()
                && socket.write_all(&chunk).await.is_ok()
                && socket.write_all(b"\r\n").await.is_ok();
            if !ok {
                break;
            }
            sent += chunk.len();
        }
        sent
    });
    (format!("http://{addr}/api"), handle)
}

#[tokio::test]
async fn endless_chunked_body_is_cut_at_the_cap() {
    let (base, server) = endless_chunked_server().await;
    let client = AapClient::new(&config_for(&base)).unwrap();
    let err = client.job(AapJobKind::Job, 1).await.unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    assert!(err.to_string().contains("larger than"), "{err}");
    drop(client);
    let sent = server.await.unwrap();
    assert!(
        sent < 32 * 1024 * 1024,
        "the client kept reading: {sent} bytes"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(30)))
        .mount(&server)
        .await;
    let config = config(&server, AWX)
        .with_request_timeout(Duration::from_millis(300))
        .unwrap();
    let client = AapClient::new(&config).unwrap();
    let started = Instant::now();
    let err = client.job(AapJobKind::Job, 1).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    assert!(err.to_string().contains("no answer within 300ms"), "{err}");
    assert_clean(&err);
}

#[tokio::test]
async fn a_silent_socket_times_out() {
    // Accepts the connection and never writes a byte.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(socket);
    });
    let config = config_for(&format!("http://{addr}/api"))
        .with_request_timeout(Duration::from_millis(300))
        .unwrap();
    let err = AapClient::new(&config)
        .unwrap()
        .job(AapJobKind::Job, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    assert!(err.to_string().contains("no answer"), "{err}");
    hold.abort();
}

#[tokio::test]
async fn connection_refused_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = AapClient::new(&config_for(&format!("http://{addr}/api")))
        .unwrap()
        .find_template(PROVISION)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert!(std::error::Error::source(&err).is_some());
    assert_clean(&err);
}

#[tokio::test]
async fn connection_reset_is_a_transport_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf).await;
            // Half an answer, then the connection is gone.
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 500\r\n\r\n{\"id\"")
                .await;
            drop(socket);
        }
    });
    let err = AapClient::new(&config_for(&format!("http://{addr}/api")))
        .unwrap()
        .job(AapJobKind::Job, 1)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Transport, "{err}");
    assert!(err.to_string().contains("connection failed"), "{err}");
    assert_clean(&err);
}

#[tokio::test]
async fn the_token_never_appears_in_errors() {
    // Servers that echo the Authorization header back in every possible place.
    let echo = format!("Bearer {TOKEN}");
    let bodies = [
        (
            401,
            format!(r#"{{"detail": "bad token {echo}"}}"#),
            "application/json",
        ),
        (
            500,
            format!("<html><title>{echo}</title></html>"),
            "text/html",
        ),
        (
            200,
            format!("<html><title>{echo}</title></html>"),
            "text/html",
        ),
        (
            200,
            format!(r#"{{"count": "{echo}", "results": []}}"#),
            "application/json",
        ),
        (
            200,
            format!(r#"{{"count": 1, "results": [{{"id": "{TOKEN}"}}]}}"#),
            "application/json",
        ),
        (502, echo.clone(), "text/plain"),
    ];
    let mut errors: Vec<ProviderError> = Vec::new();
    for (status, body, content_type) in bodies {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(
                ResponseTemplate::new(status).set_body_raw(body.into_bytes(), content_type),
            )
            .mount(&server)
            .await;
        errors.push(client(&server).find_template(PROVISION).await.unwrap_err());
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let refused = AapClient::new(&config_for(&format!("http://{addr}/api"))).unwrap();
    errors.push(refused.job(AapJobKind::Job, 1).await.unwrap_err());
    for err in &errors {
        assert_clean(err);
    }
    assert!(errors.iter().any(|e| e.to_string().contains("<redacted>")));
}

#[tokio::test]
async fn find_job_by_launch_key_searches_the_latest_launches() {
    let server = MockServer::start().await;
    let vars_of = |key: &str| {
        json!({"ansible_eda": {"event": {"payload": {}}}, "cloudkit_launch_key": key}).to_string()
    };
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/7/jobs/"))
        .and(query_param("order_by", "-id"))
        .and(query_param("page_size", "50"))
        .and(bearer_token(TOKEN))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 4, "next": null, "previous": null, "results": [
                {"id": 104, "status": "running", "extra_vars": vars_of("other")},
                {"id": 103, "status": "pending", "extra_vars": "not json: {"},
                {"id": 102, "status": "running", "extra_vars": vars_of("key-1")},
                {"id": 101, "status": "successful", "extra_vars": vars_of("key-1")},
            ]
        })))
        .mount(&server)
        .await;
    let template = TemplateRef {
        kind: TemplateKind::JobTemplate,
        id: 7,
    };
    let client = client(&server);
    let found = client
        .find_job_by_launch_key(template, "key-1")
        .await
        .unwrap();
    assert_eq!(
        found.map(|j| (j.id, j.status)),
        Some((102, "running".to_string()))
    );
    let none = client
        .find_job_by_launch_key(template, "key-2")
        .await
        .unwrap();
    assert_eq!(none, None);
    // A key that is only a prefix of a recorded one does not match.
    assert_eq!(
        client
            .find_job_by_launch_key(template, "key-")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn find_job_by_launch_key_fetches_details_when_the_list_lacks_extra_vars() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/workflow_job_templates/9/workflow_jobs/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 3, "results": [{"id": 63, "status": "pending"}, {"id": 62}, {"id": 61}]
        })))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/workflow_jobs/63/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": 63, "status": "pending", "extra_vars": "{\"cloudkit_launch_key\": \"other\"}"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/workflow_jobs/62/"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Not found."})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/workflow_jobs/61/"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": 61, "status": "running",
            "extra_vars": {"cloudkit_launch_key": "key-9"}
        })))
        .expect(1)
        .mount(&server)
        .await;
    let template = TemplateRef {
        kind: TemplateKind::WorkflowJobTemplate,
        id: 9,
    };
    let found = client(&server)
        .find_job_by_launch_key(template, "key-9")
        .await
        .unwrap();
    assert_eq!(found.map(|j| j.id), Some(61));
}

#[tokio::test]
async fn find_job_by_launch_key_propagates_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v2/job_templates/7/jobs/"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"count": 1, "results": [{"id": 5}]})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v2/jobs/5/"))
        .respond_with(ResponseTemplate::new(403))
        .mount(&server)
        .await;
    let template = TemplateRef {
        kind: TemplateKind::JobTemplate,
        id: 7,
    };
    let err = client(&server)
        .find_job_by_launch_key(template, "k")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Auth);
}

#[tokio::test]
async fn a_base_url_without_the_api_is_a_configuration_error() {
    // AWX at https://host/api, configured as the AAP 2.5 gateway path: every list is 404.
    let server = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(404).set_body_raw(
            b"<html><title>Not Found</title></html>".to_vec(),
            "text/html",
        ))
        .mount(&server)
        .await;
    let client = AapClient::new(&config(&server, GATEWAY)).unwrap();
    let err = client.find_template(PROVISION).await.unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Configuration, "{err}");
    assert!(err.to_string().contains("CLOUDKIT_AAP_URL"), "{err}");
    assert!(
        err.to_string()
            .contains("/api/controller/v2/job_templates/"),
        "{err}"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    for status in [301, 302, 307, 308] {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/v2/job_templates/3/launch/"))
            .respond_with(ResponseTemplate::new(status).insert_header(
                "location",
                "https://elsewhere.example.com/api/v2/job_templates/3/launch/",
            ))
            .expect(1)
            .mount(&server)
            .await;
        let template = TemplateRef {
            kind: TemplateKind::JobTemplate,
            id: 3,
        };
        let err = client(&server).launch(template, &vars()).await.unwrap_err();
        assert_eq!(err.kind(), ProviderErrorKind::Configuration, "{err}");
        assert!(err.to_string().contains("elsewhere.example.com"), "{err}");
        assert!(err.to_string().contains("CLOUDKIT_AAP_URL"), "{err}");
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }
}
