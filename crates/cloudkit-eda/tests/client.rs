//! The webhook client against a local HTTP server.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use cloudkit_eda::{
    Accepted, EdaClient, EdaConfig, SIGNATURE_HEADER, Webhook, signature_header_value,
};
use cloudkit_provider::{ProviderError, ProviderErrorKind, Secret};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use support::*;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

async fn received(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.unwrap_or_default()
}

fn header<'a>(request: &'a wiremock::Request, name: &str) -> Option<&'a str> {
    request.headers.get(name).and_then(|v| v.to_str().ok())
}

/// Everything an error shows, for assertions about what it must not show.
fn shown(err: &ProviderError) -> String {
    format!("{err} | {err:?}")
}

fn assert_clean(err: &ProviderError) {
    let text = shown(err);
    for secret in [TOKEN, HMAC_SECRET] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    let line = err.to_string();
    assert!(!line.contains('\n') && !line.contains('\r'), "{line:?}");
    assert!(line.len() <= 400, "too long ({}): {line}", line.len());
}

#[tokio::test]
async fn posts_the_whole_ci_as_json_without_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PROVISION_PATH))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let (client, _) = client(config_for(&server));
    let ci = ci("tenant-a", "vm-1");

    let got = client.trigger(Webhook::Provision, &ci).await.unwrap();
    assert_eq!(got, Accepted { status: 202 });

    let requests = received(&server).await;
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.body, serde_json::to_vec(&ci).unwrap());
    let parsed: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(parsed["kind"], "ComputeInstance");
    assert_eq!(parsed["apiVersion"], "cloudkit.openshift.io/v1alpha1");
    assert_eq!(parsed["metadata"]["namespace"], "tenant-a");
    assert_eq!(parsed["spec"]["templateID"], "osac.templates.ocp_virt_vm");
    assert_eq!(header(request, "content-type"), Some("application/json"));
    assert_eq!(header(request, "authorization"), None);
    assert_eq!(header(request, SIGNATURE_HEADER), None);
}

#[tokio::test]
async fn bearer_token_and_body_signature_when_configured() {
    // (token, hmac secret)
    let rows = [
        (Some(TOKEN), None),
        (None, Some(HMAC_SECRET)),
        (Some(TOKEN), Some(HMAC_SECRET)),
    ];
    for (token, secret) in rows {
        let server = answering(ResponseTemplate::new(200)).await;
        let mut config = config_for(&server);
        if let Some(t) = token {
            config = config.with_token(Secret::new(t));
        }
        if let Some(s) = secret {
            config = config.with_hmac_secret(Secret::new(s));
        }
        let (client, _) = client(config);
        let ci = ci("ns", "vm-1");
        client.trigger(Webhook::Provision, &ci).await.unwrap();

        let requests = received(&server).await;
        assert_eq!(requests.len(), 1);
        let request = &requests[0];
        let want_auth = token.map(|t| format!("Bearer {t}"));
        assert_eq!(header(request, "authorization"), want_auth.as_deref());
        match secret {
            None => assert_eq!(header(request, SIGNATURE_HEADER), None),
            Some(s) => {
                // Recompute over the bytes the server received, independently of the client.
                let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(s.as_bytes()).unwrap();
                mac.update(&request.body);
                let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
                assert_eq!(header(request, SIGNATURE_HEADER), Some(want.as_str()));
                let hex_part = want.strip_prefix("sha256=").unwrap();
                assert_eq!(hex_part.len(), 64);
                assert!(
                    hex_part
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                );
            }
        }
    }
}

#[test]
fn signature_known_vector() {
    assert_eq!(
        signature_header_value(
            &Secret::new("key"),
            b"The quick brown fox jumps over the lazy dog"
        ),
        "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
}

#[tokio::test]
async fn every_2xx_is_accepted() {
    for status in [200u16, 201, 202, 204] {
        let server = answering(ResponseTemplate::new(status).set_body_string("endpoint")).await;
        let (client, _) = client(config_for(&server));
        let got = client.trigger(Webhook::Deprovision, &ci("ns", "vm")).await;
        assert_eq!(got.ok(), Some(Accepted { status }), "{status}");
    }
}

#[tokio::test]
async fn non_2xx_answers_fail_with_clean_messages() {
    let huge = "y".repeat(100 * 1024);
    let echo = format!("bad request: Authorization: Bearer {TOKEN}; secret {HMAC_SECRET}");
    let gateway = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
    // (status, body, content type, kind, fragments the message must contain)
    let rows: Vec<(u16, String, &str, ProviderErrorKind, Vec<&str>)> = vec![
        (
            400,
            "Invalid JSON payload".into(),
            "text/plain",
            ProviderErrorKind::Transport,
            vec![
                "EDA provision webhook POST /endpoint/provision answered HTTP 400 Bad Request: Invalid JSON payload",
            ],
        ),
        (
            401,
            "Invalid authorization token".into(),
            "text/plain",
            ProviderErrorKind::Auth,
            vec![
                "HTTP 401 Unauthorized",
                "CLOUDKIT_EDA_TOKEN",
                "Invalid authorization token",
            ],
        ),
        (
            403,
            String::new(),
            "text/plain",
            ProviderErrorKind::Auth,
            vec!["HTTP 403 Forbidden (check CLOUDKIT_EDA_TOKEN and CLOUDKIT_EDA_HMAC_SECRET)"],
        ),
        (
            404,
            "404: Not Found".into(),
            "text/plain",
            ProviderErrorKind::Configuration,
            vec![
                "POST /endpoint/provision",
                "HTTP 404 Not Found",
                "CLOUDKIT_COMPUTE_INSTANCE_PROVISION_WEBHOOK",
            ],
        ),
        (
            500,
            "Internal Server Error".into(),
            "text/plain",
            ProviderErrorKind::Transport,
            vec!["HTTP 500 Internal Server Error: Internal Server Error"],
        ),
        (
            502,
            gateway.into(),
            "text/html",
            ProviderErrorKind::Transport,
            vec!["HTTP 502 Bad Gateway: 502 Bad Gateway 502 Bad Gateway nginx"],
        ),
        (
            500,
            huge,
            "text/plain",
            ProviderErrorKind::Transport,
            vec!["HTTP 500", "yyy..."],
        ),
        (
            400,
            echo,
            "text/plain",
            ProviderErrorKind::Transport,
            vec!["Bearer [redacted]; secret [redacted]"],
        ),
        (
            599,
            "odd".into(),
            "text/plain",
            ProviderErrorKind::Transport,
            vec!["answered HTTP 599: odd"],
        ),
    ];
    for (status, body, content_type, kind, fragments) in rows {
        let server = answering(
            ResponseTemplate::new(status)
                .insert_header("content-type", content_type)
                .set_body_string(body),
        )
        .await;
        let config = config_for(&server)
            .with_token(Secret::new(TOKEN))
            .with_hmac_secret(Secret::new(HMAC_SECRET));
        let (client, _) = client(config);
        let err = client
            .trigger(Webhook::Provision, &ci("ns", "vm"))
            .await
            .expect_err("non-2xx must fail");
        assert_eq!(err.kind(), kind, "{status}: {err}");
        let line = err.to_string();
        for fragment in fragments {
            assert!(
                line.contains(fragment),
                "{status}: {line:?} lacks {fragment:?}"
            );
        }
        assert!(!line.contains('<'), "{status}: {line}");
        assert!(
            !line.contains("127.0.0.1"),
            "{status}: only the path is named: {line}"
        );
        assert_clean(&err);
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    for status in [301u16, 302, 307, 308] {
        let server = MockServer::start().await;
        Mock::given(path(PROVISION_PATH))
            .respond_with(ResponseTemplate::new(status).insert_header("location", "/elsewhere"))
            .mount(&server)
            .await;
        Mock::given(path("/elsewhere"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        let (client, _) = client(config_for(&server).with_token(Secret::new(TOKEN)));
        let err = client
            .trigger(Webhook::Provision, &ci("ns", "vm"))
            .await
            .expect_err("a redirect is not an acceptance");
        assert_eq!(err.kind(), ProviderErrorKind::Transport, "{status}: {err}");
        assert!(
            err.to_string()
                .contains(&format!("answered HTTP {status} ")),
            "{err}"
        );
        assert_eq!(received(&server).await.len(), 1, "{status}");
        assert_clean(&err);
    }
}

#[tokio::test]
async fn too_many_requests_carries_the_servers_wait() {
    // (Retry-After header, expected wait)
    let rows = [
        (Some("7"), Duration::from_secs(7)),
        (None, Duration::from_secs(30)),
        (
            Some("Wed, 21 Oct 2015 07:28:00 GMT"),
            Duration::from_secs(30),
        ),
    ];
    for (retry_after, want) in rows {
        let mut template = ResponseTemplate::new(429).set_body_string("slow down");
        if let Some(v) = retry_after {
            template = template.insert_header("retry-after", v);
        }
        let server = answering(template).await;
        let (client, _) = client(config_for(&server));
        let err = client
            .trigger(Webhook::Provision, &ci("ns", "vm"))
            .await
            .expect_err("429 must fail");
        assert_eq!(err.kind(), ProviderErrorKind::RateLimited, "{err}");
        assert_eq!(err.retry_after(), Some(want), "{retry_after:?}");
    }
}

#[tokio::test]
async fn timeout_is_a_short_transport_error() {
    let server = answering(ResponseTemplate::new(200).set_delay(Duration::from_secs(10))).await;
    let config = config_for(&server)
        .with_token(Secret::new(TOKEN))
        .with_request_timeout(Duration::from_millis(200));
    let (client, _) = client(config);
    let started = std::time::Instant::now();
    let err = client
        .trigger(Webhook::Provision, &ci("ns", "vm"))
        .await
        .expect_err("must time out");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    assert_eq!(
        err.to_string(),
        "transport error: EDA provision webhook POST /endpoint/provision: no answer within 200ms"
    );
    assert_clean(&err);
}

#[tokio::test]
async fn connection_refused_is_a_short_transport_error() {
    // A port that was just free: nothing listens there any more.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let config = EdaConfig::new(
        &format!("http://user:url-pass@127.0.0.1:{port}/hook?token=query-secret"),
        &format!("http://127.0.0.1:{port}/d"),
    )
    .unwrap()
    .with_token(Secret::new(TOKEN))
    .with_hmac_secret(Secret::new(HMAC_SECRET));
    let (client, _) = client(config);
    let err = client
        .trigger(Webhook::Provision, &ci("ns", "vm"))
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), ProviderErrorKind::Transport);
    assert_eq!(
        err.to_string(),
        "transport error: EDA provision webhook POST /hook: connection refused"
    );
    assert_clean(&err);
    let text = shown(&err);
    for secret in ["url-pass", "query-secret"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
    // The underlying error is kept for logs, without the URL.
    let mut chain = String::new();
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!("{e} / "));
        source = e.source();
    }
    assert!(!chain.is_empty());
    assert!(
        !chain.contains("query-secret") && !chain.contains("url-pass"),
        "{chain}"
    );
}

#[tokio::test]
async fn secrets_never_appear_in_debug_output() {
    let server = answering(ResponseTemplate::new(200)).await;
    let config = EdaConfig::new(
        &format!("{}/p?token=query-secret", server.uri()),
        &format!("{}/d", server.uri()),
    )
    .unwrap()
    .with_token(Secret::new(TOKEN))
    .with_hmac_secret(Secret::new(HMAC_SECRET));
    let (client, _) = client(config.clone());
    // A tracked rate-limit entry must not show its URL either.
    let limited = EdaClient::with_clock(
        config.clone().with_minimum_request_interval(TEN_SECONDS),
        std::sync::Arc::new(cloudkit_eda::ManualClock::new()),
    )
    .unwrap();
    limited
        .trigger(Webhook::Provision, &ci("ns", "vm"))
        .await
        .unwrap();
    let provider = cloudkit_eda::EdaProvider::with_client(limited.clone());
    let text = format!("{config:?} {config:#?} {client:?} {limited:#?} {provider:?}");
    for secret in [TOKEN, HMAC_SECRET, "query-secret"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
}

#[tokio::test]
async fn rate_limit_per_ci_and_url_with_the_remaining_time() {
    let server = answering(ResponseTemplate::new(202)).await;
    let (client, clock) = client(config_for(&server).with_minimum_request_interval(TEN_SECONDS));
    let vm1 = ci("ns", "vm-1");
    let count = |n: usize| {
        let server = &server;
        async move { assert_eq!(received(server).await.len(), n) }
    };

    client.trigger(Webhook::Provision, &vm1).await.unwrap();
    count(1).await;

    clock.advance(Duration::from_secs(3));
    let err = client
        .trigger(Webhook::Provision, &vm1)
        .await
        .expect_err("inside the interval");
    assert_eq!(
        err.retry_after(),
        Some(Duration::from_secs(7)),
        "remaining, not elapsed"
    );
    assert_eq!(err.to_string(), "rate limited: retry after 7s");
    count(1).await;

    // Another CI (same name elsewhere, or another name) and another URL are not limited.
    client
        .trigger(Webhook::Provision, &ci("other-ns", "vm-1"))
        .await
        .unwrap();
    client
        .trigger(Webhook::Provision, &ci("ns", "vm-2"))
        .await
        .unwrap();
    client.trigger(Webhook::Deprovision, &vm1).await.unwrap();
    count(4).await;

    clock.advance(Duration::from_millis(6999));
    let err = client
        .trigger(Webhook::Provision, &vm1)
        .await
        .expect_err("1 ms left");
    assert_eq!(err.retry_after(), Some(Duration::from_millis(1)));
    count(4).await;

    clock.advance(Duration::from_millis(1));
    client.trigger(Webhook::Provision, &vm1).await.unwrap();
    count(5).await;

    let paths: Vec<String> = received(&server)
        .await
        .iter()
        .map(|r| r.url.path().to_string())
        .collect();
    assert_eq!(
        paths,
        [
            PROVISION_PATH,
            PROVISION_PATH,
            PROVISION_PATH,
            DEPROVISION_PATH,
            PROVISION_PATH
        ]
    );
}

#[tokio::test]
async fn a_failed_trigger_counts_against_the_interval() {
    let server = answering(ResponseTemplate::new(500)).await;
    let (client, clock) = client(config_for(&server).with_minimum_request_interval(TEN_SECONDS));
    let vm = ci("ns", "vm");
    let first = client
        .trigger(Webhook::Provision, &vm)
        .await
        .expect_err("500");
    assert_eq!(first.kind(), ProviderErrorKind::Transport);
    clock.advance(Duration::from_secs(4));
    let second = client
        .trigger(Webhook::Provision, &vm)
        .await
        .expect_err("limited");
    assert_eq!(second.retry_after(), Some(Duration::from_secs(6)));
    assert_eq!(received(&server).await.len(), 1);
}

#[tokio::test]
async fn zero_interval_never_limits() {
    let server = answering(ResponseTemplate::new(200)).await;
    let (client, _) = client(config_for(&server));
    let vm = ci("ns", "vm");
    for _ in 0..3 {
        client.trigger(Webhook::Provision, &vm).await.unwrap();
    }
    assert_eq!(received(&server).await.len(), 3);
}

#[tokio::test]
async fn concurrent_triggers_for_one_ci_send_once() {
    let server = answering(ResponseTemplate::new(200)).await;
    let (client, _) = client(config_for(&server).with_minimum_request_interval(TEN_SECONDS));
    let vm = ci("ns", "vm");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let vm = vm.clone();
        tasks.push(tokio::spawn(async move {
            client.trigger(Webhook::Provision, &vm).await
        }));
    }
    let mut accepted = 0;
    let mut limited = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => accepted += 1,
            Err(e) if e.kind() == ProviderErrorKind::RateLimited => limited += 1,
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((accepted, limited), (1, 7));
    assert_eq!(received(&server).await.len(), 1);
}
