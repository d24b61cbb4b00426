//! Fuzz-style properties: any webhook answer (status, `Retry-After`, content type, body) gives
//! `Accepted` or the error kind its status calls for, in one clean line without credentials; the
//! signature header is always `sha256=<64 lowercase hex>` and verifies.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use cloudkit_api::ComputeInstance;
use cloudkit_eda::{Accepted, SIGNATURE_HEADER, Webhook, signature_header_value};
use cloudkit_provider::{ProviderError, ProviderErrorKind, Secret};
use hmac::{Hmac, KeyInit, Mac};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use sha2::Sha256;
use support::*;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

/// Cases of the property that goes through HTTP.
const HTTP_CASES: u32 = 128;
/// Cases of the pure signature property.
const PURE_CASES: u32 = 1024;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Nothing is written into the source tree; a failure prints its minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Whether `value` is `sha256=` and 64 lowercase hex digits.
fn well_formed(value: &str) -> bool {
    value.strip_prefix("sha256=").is_some_and(|hex| {
        hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Bodies a webhook (or whatever answers in its place) might send, sometimes echoing the
/// credentials.
fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2048),
        ("\\PC{0,40}", any::<bool>(), "\\PC{0,40}").prop_map(|(a, echo, b)| {
            let middle = if echo {
                format!("\nAuthorization: Bearer {TOKEN}\nsecret={HMAC_SECRET}\n")
            } else {
                " ".to_string()
            };
            format!("{a}{middle}{b}").into_bytes()
        }),
        ("\\PC{0,20}", any::<bool>()).prop_map(|(title, echo)| {
            let secret = if echo { TOKEN } else { "" };
            format!(
                "<html><head><title>{title}</title></head><body><p>{secret}</p>{}</body></html>",
                "x".repeat(3000)
            )
            .into_bytes()
        }),
    ]
}

fn shown(err: &ProviderError) -> String {
    format!("{err} | {err:?}")
}

proptest! {
    #![proptest_config(config(PURE_CASES))]

    /// Any secret and body: the header is `sha256=<64 lowercase hex>`, the HMAC-SHA256 of the
    /// exact bytes keyed with the secret's UTF-8 bytes.
    #[test]
    fn signature_is_well_formed_and_verifies(secret in "\\PC{0,80}", body in prop::collection::vec(any::<u8>(), 0..512)) {
        let value = signature_header_value(&Secret::new(secret.clone()), &body);
        prop_assert!(well_formed(&value), "{:?}", value);
        prop_assert_eq!(&value["sha256=".len()..], hmac_hex(secret.as_bytes(), &body));
    }
}

/// Any answer of the webhook: 2xx is `Accepted` with that status; 401/403 auth, 404
/// configuration, 429 rate limited after `Retry-After` seconds (capped at an hour, 30 s when
/// absent or unusable), anything else transport. Errors are one line of bounded length without
/// the token or the HMAC secret, and every request carried a well-formed, valid signature.
#[test]
fn webhook_answers_map_to_typed_results() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = rt.block_on(MockServer::start());
    let (client, _) = client(
        config_for(&server)
            .with_token(Secret::new(TOKEN))
            .with_hmac_secret(Secret::new(HMAC_SECRET)),
    );
    let ci: ComputeInstance = ci("tenant-a", "vm-1");
    let status = prop_oneof![
        200u16..300,
        300u16..600,
        prop::sample::select(&[401u16, 403, 404, 429][..])
    ];
    let retry_after = prop::option::of(prop_oneof![
        "[0-9]{1,7}",
        "[ -~]{0,20}",
        Just("Wed, 21 Oct 2015 07:28:00 GMT".to_string())
    ]);
    let content_type = prop::sample::select(
        &[
            "application/json",
            "text/html",
            "text/plain; charset=utf-8",
            "application/octet-stream",
        ][..],
    );
    proptest!(config(HTTP_CASES), |(status in status, retry in retry_after, body in any_body(), ct in content_type, webhook in prop::sample::select(&[Webhook::Provision, Webhook::Deprovision][..]))| {
        rt.block_on(async {
            server.reset().await;
            let mut answer = ResponseTemplate::new(status).set_body_raw(body.clone(), ct);
            if let Some(r) = &retry {
                answer = answer.insert_header("retry-after", r.as_str());
            }
            Mock::given(method("POST")).respond_with(answer).mount(&server).await;

            let result = client.trigger(webhook, &ci).await;

            let requests = server.received_requests().await.unwrap_or_default();
            prop_assert_eq!(requests.len(), 1);
            let signature = requests[0].headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("");
            prop_assert!(well_formed(signature), "{:?}", signature);
            prop_assert_eq!(&signature["sha256=".len()..], hmac_hex(HMAC_SECRET.as_bytes(), &requests[0].body));

            match result {
                Ok(accepted) => prop_assert_eq!(accepted, Accepted { status }),
                Err(err) => {
                    let text = shown(&err);
                    prop_assert!(!text.contains(TOKEN) && !text.contains(HMAC_SECRET), "credential shown: {}", text);
                    let line = err.to_string();
                    prop_assert!(!line.contains('\n') && !line.contains('\r'), "{:?}", line);
                    prop_assert!(line.len() <= 400, "{} bytes: {}", line.len(), line);
                    let want = match status {
                        200..=299 => return Err(TestCaseError::fail(format!("HTTP {status} refused: {err}"))),
                        401 | 403 => ProviderErrorKind::Auth,
                        404 => ProviderErrorKind::Configuration,
                        429 => ProviderErrorKind::RateLimited,
                        _ => ProviderErrorKind::Transport,
                    };
                    prop_assert_eq!(err.kind(), want, "HTTP {}: {}", status, err);
                    if status == 429 {
                        let wait = err.retry_after().unwrap_or_default();
                        let want_wait = match retry.as_deref().map(|r| r.trim().parse::<u64>()) {
                            Some(Ok(secs)) => Duration::from_secs(secs.min(3600)),
                            _ => Duration::from_secs(30),
                        };
                        prop_assert_eq!(wait, want_wait, "Retry-After {:?}", retry);
                    } else {
                        prop_assert!(line.contains(&format!("HTTP {status}")), "{}", line);
                    }
                }
            }
            Ok(())
        })?;
    });
}
