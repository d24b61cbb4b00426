//! The client against the fake fulfillment service, over h2c and over TLS with a test CA.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use cloudkit_api::Phase;
use cloudkit_feedback::fake::{FakeFulfillment, Method, TestCa};
use cloudkit_feedback::mapping::{Observed, condition_types, map_observed};
use cloudkit_feedback::proto::private::v1::ComputeInstance as Object;
use cloudkit_feedback::{CallError, FulfillmentClient, Settings, SettingsError, Transport};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use prost::Message;

fn token_file(dir: &tempfile::TempDir, content: &str) -> PathBuf {
    let path = dir.path().join("token");
    std::fs::write(&path, content).unwrap();
    path
}

fn observed_running() -> Observed {
    Observed {
        phase: Some(Phase::Running),
        conditions: vec![Condition {
            last_transition_time: Time(jiff::Timestamp::UNIX_EPOCH),
            message: "vm ready".to_owned(),
            observed_generation: None,
            reason: "Ready".to_owned(),
            status: "True".to_owned(),
            type_: condition_types::AVAILABLE.to_owned(),
        }],
        floating_ip: Some("192.0.2.7".to_owned()),
        last_restarted_at: None,
    }
}

#[test]
fn plaintext_with_a_token_file_is_refused_naming_both_flags() {
    let mut settings = Settings::new("127.0.0.1:8000");
    settings.plaintext = true;
    settings.token_file = Some("/run/token".into());
    let err = settings.validate().unwrap_err();
    assert_eq!(err, SettingsError::PlaintextWithToken);
    let text = err.to_string();
    assert!(text.contains("--grpc-plaintext"), "{text}");
    assert!(text.contains("--fulfillment-server-token-file"), "{text}");
    assert!(FulfillmentClient::new(&settings).is_err());
}

#[test]
fn settings_choose_the_transport_and_check_the_address() {
    let tls = Settings::new("fulfillment.example.com:8000")
        .validate()
        .unwrap();
    assert_eq!(tls.transport, Transport::Tls);
    assert_eq!(tls.uri.to_string(), "https://fulfillment.example.com:8000/");

    let mut insecure = Settings::new("10.0.0.1:443");
    insecure.insecure = true;
    insecure.token_file = Some("/run/token".into());
    assert_eq!(
        insecure.validate().unwrap().transport,
        Transport::TlsUnverified
    );

    let mut plaintext = Settings::new("localhost:8000");
    plaintext.plaintext = true;
    let endpoint = plaintext.validate().unwrap();
    assert_eq!(endpoint.transport, Transport::Plaintext);
    assert_eq!(endpoint.uri.to_string(), "http://localhost:8000/");

    for bad in [
        "",
        "fulfillment.example.com",
        "https://fulfillment.example.com:8000",
        ":8000",
        "user:pw@host:8000",
        "host:port",
    ] {
        let err = Settings::new(bad).validate().unwrap_err();
        assert!(
            matches!(err, SettingsError::Address { .. }),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains("--fulfillment-server-address"));
    }
}

#[tokio::test]
async fn plaintext_round_trip_keeps_metadata_spec_and_any_values_byte_for_byte() {
    let fake = FakeFulfillment::new();
    let mut original = FakeFulfillment::object("ci-1", "small");
    original
        .metadata
        .as_mut()
        .unwrap()
        .finalizers
        .push("fulfillment".to_owned());
    original.spec.as_mut().unwrap().template_parameters.insert(
        "opaque".to_owned(),
        prost_types::Any {
            type_url: "type.example.com/unknown.Type".to_owned(),
            value: vec![0xff, 0x00, 0x13, 0x37],
        },
    );
    fake.insert(original.clone());
    let server = fake.serve_plaintext().await.unwrap();
    let mut settings = Settings::new(server.address());
    settings.plaintext = true;
    let client = FulfillmentClient::new(&settings).unwrap();

    let fetched = client.get("ci-1").await.unwrap();
    assert_eq!(fetched.encode_to_vec(), original.encode_to_vec());

    let mapped = map_observed(&observed_running(), &fetched, jiff::Timestamp::now());
    assert!(mapped.changed);
    let stored = client.update(mapped.object.clone()).await.unwrap();
    assert_eq!(stored, mapped.object);
    let on_server: Object = fake.stored("ci-1").unwrap();
    assert_eq!(on_server, mapped.object);
    assert_eq!(
        on_server.metadata.unwrap().encode_to_vec(),
        original.metadata.unwrap().encode_to_vec()
    );
    assert_eq!(
        on_server.spec.unwrap().encode_to_vec(),
        original.spec.unwrap().encode_to_vec()
    );

    // Without a token file nothing is sent as authorization, and no mask goes with Update.
    let calls = fake.calls();
    assert_eq!(
        calls.iter().map(|c| c.method).collect::<Vec<_>>(),
        [Method::Get, Method::Update]
    );
    assert!(calls.iter().all(|c| c.authorization.is_none()));
}

#[tokio::test]
async fn tls_with_a_test_ca_sends_the_token_and_rereads_it_after_a_change() {
    let ca = TestCa::generate().unwrap();
    let fake = FakeFulfillment::new();
    fake.insert(FakeFulfillment::object("ci-1", "small"));
    let server = fake.serve_tls(&ca, true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = token_file(&dir, "  first-token\n");

    for address in [server.address(), server.localhost_address()] {
        let mut settings = Settings::new(address);
        settings.token_file = Some(path.clone());
        let client =
            FulfillmentClient::with_root_certificates(&settings, [ca.ca_certificate()]).unwrap();
        client.get("ci-1").await.unwrap();
    }
    std::fs::write(&path, "second-token\n").unwrap();
    let mut settings = Settings::new(server.address());
    settings.token_file = Some(path.clone());
    let client =
        FulfillmentClient::with_root_certificates(&settings, [ca.ca_certificate()]).unwrap();
    client.signal("ci-1").await.unwrap();
    std::fs::write(&path, "third-token").unwrap();
    client.get("ci-1").await.unwrap();

    let seen: Vec<_> = fake
        .calls()
        .into_iter()
        .map(|c| c.authorization.unwrap())
        .collect();
    assert_eq!(
        seen,
        [
            "Bearer first-token",
            "Bearer first-token",
            "Bearer second-token",
            "Bearer third-token"
        ]
    );
    assert_eq!(fake.signals("ci-1"), 1);
}

#[tokio::test]
async fn tls_works_when_the_server_negotiates_no_alpn() {
    let ca = TestCa::generate().unwrap();
    let fake = FakeFulfillment::new();
    fake.insert(FakeFulfillment::object("ci-1", "small"));
    let server = fake.serve_tls(&ca, false).await.unwrap();
    let client = FulfillmentClient::with_root_certificates(
        &Settings::new(server.address()),
        [ca.ca_certificate()],
    )
    .unwrap();
    assert_eq!(client.get("ci-1").await.unwrap().id, "ci-1");
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_unless_insecure() {
    let ca = TestCa::generate().unwrap();
    let other = TestCa::generate().unwrap();
    let fake = FakeFulfillment::new();
    fake.insert(FakeFulfillment::object("ci-1", "small"));
    let server = fake.serve_tls(&ca, true).await.unwrap();

    let mut settings = Settings::new(server.address());
    settings.call_timeout = Duration::from_secs(10);
    let untrusted =
        FulfillmentClient::with_root_certificates(&settings, [other.ca_certificate()]).unwrap();
    let err = untrusted.get("ci-1").await.unwrap_err();
    assert!(err.is_unreachable(), "{err:?}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert!(fake.calls().is_empty(), "no request got through");

    settings.insecure = true;
    let insecure = FulfillmentClient::new(&settings).unwrap();
    assert_eq!(insecure.get("ci-1").await.unwrap().id, "ci-1");
}

#[tokio::test]
async fn token_problems_stop_the_call_before_it_is_sent() {
    let ca = TestCa::generate().unwrap();
    let fake = FakeFulfillment::new();
    fake.insert(FakeFulfillment::object("ci-1", "small"));
    let server = fake.serve_tls(&ca, true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();

    let mut settings = Settings::new(server.address());
    settings.token_file = Some(dir.path().join("missing"));
    let client =
        FulfillmentClient::with_root_certificates(&settings, [ca.ca_certificate()]).unwrap();
    let err = client.get("ci-1").await.unwrap_err();
    assert!(matches!(err, CallError::TokenFile { .. }), "{err:?}");

    settings.token_file = Some(token_file(&dir, " \n"));
    let client =
        FulfillmentClient::with_root_certificates(&settings, [ca.ca_certificate()]).unwrap();
    let err = client.get("ci-1").await.unwrap_err();
    assert!(matches!(err, CallError::EmptyToken { .. }), "{err:?}");

    settings.token_file = Some(token_file(&dir, "secret-one\nsecret-two"));
    let client =
        FulfillmentClient::with_root_certificates(&settings, [ca.ca_certificate()]).unwrap();
    let err = client.get("ci-1").await.unwrap_err();
    assert!(matches!(err, CallError::InvalidToken { .. }), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
    assert!(!format!("{err:?}").contains("secret"), "{err:?}");

    assert!(fake.calls().is_empty());
}

#[tokio::test]
async fn the_token_does_not_show_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = token_file(&dir, "hunter2-token");
    let token = cloudkit_feedback::BearerToken::read(&path).await.unwrap();
    assert_eq!(token.expose(), "hunter2-token");
    assert!(!format!("{token:?} {token}").contains("hunter2"));
    let mut settings = Settings::new("127.0.0.1:1");
    settings.token_file = Some(path);
    let client = FulfillmentClient::with_root_certificates(&settings, []).unwrap();
    assert!(!format!("{client:?} {settings:?}").contains("hunter2"));
}

#[tokio::test]
async fn server_answers_come_back_as_codes() {
    let fake = FakeFulfillment::new();
    fake.insert(FakeFulfillment::object("ci-1", "small"));
    let server = fake.serve_plaintext().await.unwrap();
    let mut settings = Settings::new(server.address());
    settings.plaintext = true;
    let client = FulfillmentClient::new(&settings).unwrap();

    let err = client.get("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    let err = client.get("").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    let err = client.signal("nope").await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");

    let mut unknown_template = FakeFulfillment::object("ci-1", "large");
    unknown_template.status = None;
    let err = client.update(unknown_template).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    let mut no_spec = FakeFulfillment::object("ci-1", "small");
    no_spec.spec = None;
    let err = client.update(no_spec).await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));

    fake.deny("ci-1");
    let err = client.get("ci-1").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied));
    assert!(fake.stored("ci-1").unwrap().spec.unwrap().template == "small");
}

#[tokio::test]
async fn a_wrong_token_is_permission_denied() {
    let ca = TestCa::generate().unwrap();
    let fake = FakeFulfillment::new();
    fake.insert(FakeFulfillment::object("ci-1", "small"));
    fake.require_token(Some("right"));
    let server = fake.serve_tls(&ca, true).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = token_file(&dir, "wrong");
    let mut settings = Settings::new(server.address());
    settings.token_file = Some(path.clone());
    let client =
        FulfillmentClient::with_root_certificates(&settings, [ca.ca_certificate()]).unwrap();
    let err = client.get("ci-1").await.unwrap_err();
    assert_eq!(err.code(), Some(tonic::Code::PermissionDenied));
    std::fs::write(&path, "right").unwrap();
    client.get("ci-1").await.unwrap();
    let codes: Vec<_> = fake.calls().iter().map(|c| c.code).collect();
    assert_eq!(codes, [tonic::Code::PermissionDenied, tonic::Code::Ok]);
}

#[tokio::test]
async fn releasing_the_last_finalizer_of_a_deleted_object_archives_it() {
    let fake = FakeFulfillment::new();
    let mut object = FakeFulfillment::object("ci-1", "small");
    let metadata = object.metadata.as_mut().unwrap();
    metadata.finalizers = vec!["fulfillment".to_owned()];
    metadata.deletion_timestamp = Some(prost_types::Timestamp {
        seconds: 1_767_300_000,
        nanos: 0,
    });
    fake.insert(object);
    let server = fake.serve_plaintext().await.unwrap();
    let mut settings = Settings::new(server.address());
    settings.plaintext = true;
    let client = FulfillmentClient::new(&settings).unwrap();

    let fetched = client.get("ci-1").await.unwrap();
    let deleting = Observed {
        phase: Some(Phase::Deleting),
        ..Observed::default()
    };
    let mapped = map_observed(&deleting, &fetched, jiff::Timestamp::now());
    client.update(mapped.object.clone()).await.unwrap();
    assert!(fake.stored("ci-1").is_some(), "a finalizer is left");

    client.signal("ci-1").await.unwrap();
    assert_eq!(fake.signals("ci-1"), 1);

    let mut released = mapped.object;
    released.metadata.as_mut().unwrap().finalizers.clear();
    client.update(released.clone()).await.unwrap();
    assert_eq!(fake.stored("ci-1"), None);
    assert_eq!(fake.archived("ci-1"), Some(released));
    assert!(client.get("ci-1").await.unwrap_err().is_not_found());
    assert!(client.signal("ci-1").await.unwrap_err().is_not_found());
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_not_a_hang() {
    // A port that was just free: nothing listens there.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut settings = Settings::new(format!("127.0.0.1:{port}"));
    settings.plaintext = true;
    settings.call_timeout = Duration::from_secs(5);
    let client = FulfillmentClient::new(&settings).unwrap();
    let err = client.get("ci-1").await.unwrap_err();
    assert!(matches!(err, CallError::Unreachable { .. }), "{err:?}");
    assert!(err.is_unreachable());
    assert!(err.to_string().contains("refused"), "{err}");
}
