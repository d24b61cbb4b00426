//! Fuzz-style properties: arbitrary bytes and arbitrary or structurally perturbed JSON as
//! controller answers (job detail, launch answer, template list, error bodies) never panic, give a
//! value or a typed error of the kind the status calls for, and never show the token.
//!
//! The answers are served by one local wiremock per property, reset between cases; the parsing
//! is only reachable through the HTTP client, so those properties run fewer cases than the pure
//! ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use cloudkit_aap::{AapJob, DEFAULT_RETRY_AFTER, TemplateKind, TemplateRef, map_status, observe};
use cloudkit_api::{AapJobKind, JobType};
use cloudkit_provider::{Provider, ProviderError, ProviderErrorKind};
use common::*;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{Map, Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Cases of the properties that go through HTTP.
const HTTP_CASES: u32 = 128;
/// Cases of the properties that only parse.
const PURE_CASES: u32 = 1024;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Nothing is written into the source tree; a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Text that sometimes holds the token, as a server echoing the request would.
fn text_with_token() -> impl Strategy<Value = String> {
    ("\\PC{0,24}", any::<bool>(), "\\PC{0,24}", any::<bool>()).prop_map(|(a, with, b, newline)| {
        let sep = if newline { "\n" } else { " " };
        if with {
            format!("{a}{sep}Authorization: Bearer {TOKEN}{sep}{b}")
        } else {
            format!("{a}{sep}{b}")
        }
    })
}

/// Any JSON value, a few levels deep, with AWX field names and the token among the leaves.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[0-9]{1,21}".prop_map(Value::from),
        text_with_token().prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            prop::collection::btree_map(any_key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const AWX_KEYS: &[&str] = &[
    "id",
    "status",
    "started",
    "finished",
    "result_traceback",
    "job_explanation",
    "extra_vars",
    "job",
    "workflow_job",
    "ignored_fields",
    "count",
    "results",
    "name",
    "detail",
];

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(AWX_KEYS).prop_map(String::from),
        "\\PC{0,8}",
    ]
}

/// `base` with up to three fields replaced by any value or removed.
fn perturb(base: Value) -> impl Strategy<Value = Value> {
    prop::collection::vec(
        (prop::sample::select(AWX_KEYS), prop::option::of(any_json())),
        0..4,
    )
    .prop_map(move |changes| {
        let mut value = base.clone();
        if let Some(object) = value.as_object_mut() {
            for (key, new) in changes {
                match new {
                    Some(v) => {
                        object.insert(key.to_string(), v);
                    }
                    None => {
                        object.remove(key);
                    }
                }
            }
        }
        value
    })
}

fn job_detail() -> Value {
    json!({
        "id": 7, "type": "job", "status": "failed",
        "started": "2026-01-02T03:04:05Z", "finished": null,
        "result_traceback": "Traceback (most recent call last):\n  x\nValueError: bad",
        "job_explanation": "", "extra_vars": "{\"cloudkit_launch_key\": \"k\"}",
    })
}

fn launch_answer_body() -> Value {
    json!({"id": 31, "job": 31, "type": "job", "status": "pending", "ignored_fields": {}})
}

fn template_list() -> Value {
    json!({"count": 1, "next": null, "previous": null, "results": [{"id": 5, "name": PROVISION}]})
}

/// A 2xx body: raw bytes, any JSON, or a perturbed `base`.
fn body_like(base: Value) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..128),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        perturb(base).prop_map(|v| v.to_string().into_bytes()),
    ]
}

/// The id a lenient reader finds in `value`: a number, or a decimal string of a positive number.
fn id_in(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64().filter(|n| *n > 0),
        Value::String(s)
            if !s.is_empty() && s.len() <= 19 && s.bytes().all(|b| b.is_ascii_digit()) =>
        {
            s.parse().ok().filter(|n| *n > 0)
        }
        _ => None,
    }
}

/// The common promises of every error, as a proptest failure rather than a panic.
fn check_clean(err: &ProviderError) -> Result<(), TestCaseError> {
    let all = shown(err);
    prop_assert!(!all.contains(TOKEN), "token shown: {}", all);
    let line = err.to_string();
    prop_assert!(!line.contains('\n') && !line.contains('\r'), "{:?}", line);
    prop_assert!(line.len() <= 1024, "{} bytes: {}", line.len(), line);
    Ok(())
}

async fn serve(server: &MockServer, http_method: &str, at: &str, answer: ResponseTemplate) {
    server.reset().await;
    Mock::given(method(http_method))
        .and(path(at))
        .respond_with(answer)
        .mount(server)
        .await;
}

fn content_type() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "application/json",
            "text/html; charset=utf-8",
            "text/plain",
            "application/octet-stream",
        ][..],
    )
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// Any JSON, or a perturbed job detail, read as a job: a value whose id is the answer's,
    /// or an error; then its observation is one bounded line in the mapped state.
    #[test]
    fn job_json_parses_or_fails_and_observes_cleanly(value in prop_oneof![any_json(), perturb(job_detail())]) {
        // An error is a fine answer to a malformed job; not panicking is the property.
        if let Ok(job) = serde_json::from_value::<AapJob>(value.clone()) {
            // serde also reads a struct from an array; the client refuses those (see
            // `job_detail_answers`), so only objects are compared here.
            if value.is_object() {
                prop_assert_eq!(Some(job.id), id_in(value.get("id")), "{}", value);
                let want_status = value.get("status").and_then(Value::as_str).unwrap_or("");
                prop_assert_eq!(job.status.as_str(), want_status);
            }
            prop_assert!(job.id > 0);
            let _ = job.extra_var("cloudkit_launch_key");
            for kind in [AapJobKind::Job, AapJobKind::WorkflowJob] {
                let seen = observe(kind, &job);
                prop_assert_eq!(seen.state, map_status(&job.status));
                if let Some(m) = &seen.message {
                    prop_assert!(m.len() <= 512 && !m.contains('\n'), "{:?}", m);
                }
            }
        }
    }

    /// Arbitrary bytes as a job never panic.
    #[test]
    fn arbitrary_bytes_as_a_job_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = serde_json::from_slice::<AapJob>(&bytes);
    }
}

/// A 2xx job detail of any shape: a job with the answer's id, or a transport error; through the
/// provider, an observation or an error, neither showing the token.
#[test]
fn job_detail_answers() {
    let rt = runtime();
    let server = rt.block_on(MockServer::start());
    let (client, provider) = rt.block_on(async { (client(&server), provider(&server)) });
    let recorded_job = recorded("7", JobType::Provision, Some(AapJobKind::Job));
    let ci = ci();
    proptest!(config(HTTP_CASES), |(body in body_like(job_detail()), status in prop::sample::select(&[200u16, 201, 203][..]), ct in content_type())| {
        rt.block_on(async {
            serve(&server, "GET", "/api/v2/jobs/7/", ResponseTemplate::new(status).set_body_raw(body.clone(), ct)).await;
            let parsed: Option<Value> = serde_json::from_slice(&body).ok();
            match client.job(AapJobKind::Job, 7).await {
                Ok(job) => {
                    prop_assert_eq!(Some(job.id), id_in(parsed.as_ref().and_then(|v| v.get("id"))));
                }
                Err(e) => {
                    prop_assert_eq!(e.kind(), ProviderErrorKind::Transport, "{}", e);
                    prop_assert!(e.to_string().contains("GET /api/v2/jobs/7/"), "{}", e);
                    check_clean(&e)?;
                }
            }
            match provider.job_state(&ci, &recorded_job).await {
                Ok(seen) => {
                    if let Some(m) = &seen.message {
                        prop_assert!(!m.contains(TOKEN), "token in the job message: {}", m);
                        prop_assert!(m.len() <= 512 && !m.contains('\n'), "{:?}", m);
                    }
                }
                Err(e) => check_clean(&e)?,
            }
            Ok(())
        })?;
    });
}

/// A failed, errored, canceled or unknown job whose texts carry the token: the job message the
/// provider records never shows it.
#[test]
fn job_messages_never_show_the_token() {
    let rt = runtime();
    let server = rt.block_on(MockServer::start());
    let provider = rt.block_on(async { provider(&server) });
    let recorded_job = recorded("7", JobType::Deprovision, Some(AapJobKind::Job));
    let ci = ci();
    let status = prop_oneof![
        prop::sample::select(&["failed", "error", "canceled", "successful", "running"][..])
            .prop_map(String::from),
        text_with_token(),
    ];
    proptest!(config(HTTP_CASES), |(status in status, traceback in prop::option::of(text_with_token()), explanation in prop::option::of(text_with_token()))| {
        rt.block_on(async {
            let body = json!({"id": 7, "status": status, "result_traceback": traceback, "job_explanation": explanation});
            serve(&server, "GET", "/api/v2/jobs/7/", ResponseTemplate::new(200).set_body_json(body)).await;
            let seen = provider.job_state(&ci, &recorded_job).await.map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(seen.state, map_status(&status));
            if let Some(m) = &seen.message {
                prop_assert!(!m.contains(TOKEN), "token in the job message: {}", m);
                prop_assert!(m.len() <= 512 && !m.contains('\n'), "{:?}", m);
            }
            Ok(())
        })?;
    });
}

/// Any non-2xx answer, with any body, content type, `Retry-After` and `Location`: the error kind
/// the status calls for, a bounded wait for 429, and never the token.
#[test]
fn error_answers_map_to_their_kind() {
    let rt = runtime();
    let server = rt.block_on(MockServer::start());
    let client = rt.block_on(async { client(&server) });
    let header_value = prop_oneof![
        "[0-9]{1,6}",
        "[ -~]{0,24}",
        Just(format!("https://evil.example/?t={TOKEN}"))
    ];
    proptest!(config(HTTP_CASES), |(status in 300u16..600, body in prop_oneof![prop::collection::vec(any::<u8>(), 0..96), text_with_token().prop_map(String::into_bytes), any_json().prop_map(|v| v.to_string().into_bytes())], ct in content_type(), retry in prop::option::of(header_value.clone()), location in prop::option::of(header_value))| {
        rt.block_on(async {
            let mut answer = ResponseTemplate::new(status).set_body_raw(body, ct);
            if let Some(r) = &retry {
                answer = answer.insert_header("retry-after", r.as_str());
            }
            if let Some(l) = &location {
                answer = answer.insert_header("location", l.as_str());
            }
            serve(&server, "GET", "/api/v2/jobs/7/", answer).await;
            let err = match client.job(AapJobKind::Job, 7).await {
                Ok(job) => return Err(TestCaseError::fail(format!("HTTP {status} gave a job: {job:?}"))),
                Err(e) => e,
            };
            check_clean(&err)?;
            let want = match status {
                401 | 403 => ProviderErrorKind::Auth,
                404 => ProviderErrorKind::NotFound,
                405 | 409 => ProviderErrorKind::NotAllowed,
                429 => ProviderErrorKind::RateLimited,
                400 | 422 | 300..=399 => ProviderErrorKind::Configuration,
                _ => ProviderErrorKind::Transport,
            };
            prop_assert_eq!(err.kind(), want, "HTTP {}: {}", status, err);
            if let Some(wait) = err.retry_after() {
                prop_assert!((Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&wait), "{:?}", wait);
                match retry.as_deref().map(str::parse::<u64>) {
                    Some(Ok(secs)) => prop_assert_eq!(wait, Duration::from_secs(secs.clamp(1, 3600))),
                    _ => prop_assert_eq!(wait, DEFAULT_RETRY_AFTER),
                }
            }
            Ok(())
        })?;
    });
}

/// A launch answered with anything 2xx: the job of the answer's id, a transport error (no id,
/// not JSON, a wrong type) or the configuration error of ignored variables; never the token.
#[test]
fn launch_answers() {
    let rt = runtime();
    let server = rt.block_on(MockServer::start());
    let client = rt.block_on(async { client(&server) });
    let template = TemplateRef {
        kind: TemplateKind::JobTemplate,
        id: 5,
    };
    let mut vars = Map::new();
    vars.insert("ansible_eda".into(), json!({"event": {"payload": {}}}));
    proptest!(config(HTTP_CASES), |(body in body_like(launch_answer_body()), status in prop::sample::select(&[200u16, 201, 202][..]))| {
        rt.block_on(async {
            serve(&server, "POST", "/api/v2/job_templates/5/launch/", ResponseTemplate::new(status).set_body_raw(body.clone(), "application/json")).await;
            Mock::given(method("POST")).respond_with(ResponseTemplate::new(202)).mount(&server).await;
            let parsed: Option<Value> = serde_json::from_slice(&body).ok();
            match client.launch(template, &vars).await {
                Ok(job) => {
                    let v = parsed.as_ref();
                    let want = id_in(v.and_then(|v| v.get("id"))).or_else(|| id_in(v.and_then(|v| v.get("job"))));
                    prop_assert_eq!(Some(job.id), want);
                    prop_assert_eq!(job.kind, AapJobKind::Job);
                }
                Err(e) => {
                    check_clean(&e)?;
                    prop_assert!(matches!(e.kind(), ProviderErrorKind::Transport | ProviderErrorKind::Configuration), "{}", e);
                }
            }
            Ok(())
        })?;
    });
}

/// A template list of any shape: a template the list names, "no such template", or a transport
/// error; never the token.
#[test]
fn template_lookup_answers() {
    let rt = runtime();
    let server = rt.block_on(MockServer::start());
    let client = rt.block_on(async { client(&server) });
    proptest!(config(HTTP_CASES), |(body in body_like(template_list()))| {
        rt.block_on(async {
            serve(&server, "GET", "/api/v2/job_templates/", ResponseTemplate::new(200).set_body_raw(body.clone(), "application/json")).await;
            Mock::given(method("GET")).and(path("/api/v2/workflow_job_templates/"))
                .respond_with(ResponseTemplate::new(200).set_body_json(json!({"count": 0, "results": []})))
                .mount(&server).await;
            let parsed: Option<Value> = serde_json::from_slice(&body).ok();
            match client.lookup_template(PROVISION).await {
                Ok(found) => {
                    prop_assert_eq!(found.kind, TemplateKind::JobTemplate);
                    let results = parsed.as_ref().and_then(|v| v.get("results")).and_then(Value::as_array);
                    prop_assert!(results.is_some_and(|r| r.iter().any(|t| id_in(t.get("id")) == Some(found.id))), "{:?} not in {:?}", found, parsed);
                }
                Err(e) => {
                    check_clean(&e)?;
                    prop_assert!(matches!(e.kind(), ProviderErrorKind::Transport | ProviderErrorKind::Configuration), "{}", e);
                }
            }
            Ok(())
        })?;
    });
}
