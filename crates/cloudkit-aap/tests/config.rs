//! Configuration validation: every wrong setting is named by its environment variable.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use cloudkit_aap::*;
use cloudkit_provider::Secret;
use common::TOKEN;

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBjDCCATOgAwIBAgIUSs9bG4vQstseHWXPWi+z7L99QcEwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQY2xvdWRraXQtdGVzdC1jYTAgFw0yNjExMjIwMjI3MThaGA8y
MTI2MTAyOTAyMjcxOFowGzEZMBcGA1UEAwwQY2xvdWRraXQtdGVzdC1jYTBZMBMG
ByqGSM49AgEGCCqGSM49AwEHA0IABH4qQale/D7sVEI0T2NCEJMf+zEn/Ny0Hv5L
gD13tcJDsBP2ka4micpLTTdxKK0osrusHcGpcpSyPxYkd4j5unGjUzBRMB0GA1Ud
DgQWBBQ+76Avcz92kNbV2Eb8iOzm+iX/vzAfBgNVHSMEGDAWgBQ+76Avcz92kNbV
2Eb8iOzm+iX/vzAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0cAMEQCICm+
wBtX3fv2qeegrFgnbyn3L2gLUDsTk18DYrVW3GZcAiBJEjgAPvoPph3s3QwAugkk
qOi7IJgapOKCHbNz5ZeExA==
-----END CERTIFICATE-----
";

#[test]
fn required_settings_are_checked_and_named() {
    // (url, token, provision, deprovision, the setting the error names or None when valid)
    let rows: &[(&str, &str, &str, &str, Option<&str>)] = &[
        ("https://aap.example.com/api", TOKEN, "p", "d", None),
        (
            "https://gw.example.com/api/controller/",
            TOKEN,
            "p",
            "d",
            None,
        ),
        ("http://127.0.0.1:8080/api", TOKEN, "p", "d", None),
        ("", TOKEN, "p", "d", Some(ENV_URL)),
        ("   ", TOKEN, "p", "d", Some(ENV_URL)),
        ("not a url", TOKEN, "p", "d", Some(ENV_URL)),
        ("/api", TOKEN, "p", "d", Some(ENV_URL)),
        ("ftp://aap.example.com/api", TOKEN, "p", "d", Some(ENV_URL)),
        ("file:///etc/passwd", TOKEN, "p", "d", Some(ENV_URL)),
        (
            "https://aap.example.com/api?x=1",
            TOKEN,
            "p",
            "d",
            Some(ENV_URL),
        ),
        (
            "https://aap.example.com/api#top",
            TOKEN,
            "p",
            "d",
            Some(ENV_URL),
        ),
        (
            "https://user:pw@aap.example.com/api",
            TOKEN,
            "p",
            "d",
            Some(ENV_URL),
        ),
        ("https://aap.example.com/api", "", "p", "d", Some(ENV_TOKEN)),
        (
            "https://aap.example.com/api",
            " \n",
            "p",
            "d",
            Some(ENV_TOKEN),
        ),
        (
            "https://aap.example.com/api",
            TOKEN,
            "",
            "d",
            Some(ENV_PROVISION_TEMPLATE),
        ),
        (
            "https://aap.example.com/api",
            TOKEN,
            "  ",
            "d",
            Some(ENV_PROVISION_TEMPLATE),
        ),
        (
            "https://aap.example.com/api",
            TOKEN,
            "p",
            "",
            Some(ENV_DEPROVISION_TEMPLATE),
        ),
    ];
    for (url, token, prov, deprov, want) in rows {
        let got = AapConfig::new(url, Secret::new(*token), *prov, *deprov);
        match (got, want) {
            (Ok(_), None) => {}
            (Err(e), Some(setting)) => {
                assert_eq!(e.setting(), *setting, "{url:?}: {e}");
                assert!(e.to_string().starts_with(setting), "{e}");
                assert!(!e.to_string().contains("pw@"), "credentials echoed: {e}");
            }
            (got, want) => {
                panic!("{url:?} {token:?} {prov:?} {deprov:?}: got {got:?}, want {want:?}")
            }
        }
    }
}

#[test]
fn base_url_forms_and_defaults() {
    let rows = [
        ("https://aap.example.com/api", "https://aap.example.com/api"),
        (
            "https://aap.example.com/api/",
            "https://aap.example.com/api",
        ),
        (
            "https://gw.example.com/api/controller",
            "https://gw.example.com/api/controller",
        ),
        (
            "https://gw.example.com/api/controller//",
            "https://gw.example.com/api/controller",
        ),
        ("https://aap.example.com", "https://aap.example.com"),
    ];
    for (given, want) in rows {
        let c = AapConfig::new(given, Secret::new(TOKEN), "p", "d").unwrap();
        assert_eq!(c.base_url(), want, "{given}");
    }
    let c = AapConfig::new("https://h/api", Secret::new(TOKEN), "p", "d").unwrap();
    assert_eq!(c.poll_interval(), Duration::from_secs(30));
    assert_eq!(c.request_timeout(), Duration::from_secs(30));
    assert!(!c.insecure_skip_verify());
    assert!(c.ca_bundle_pem().is_none());
    assert_eq!(c.provision_template(), "p");
    assert_eq!(c.deprovision_template(), "d");
}

#[test]
fn optional_settings() {
    let base = || AapConfig::new("https://h/api", Secret::new(TOKEN), "p", "d").unwrap();
    let err = base().with_poll_interval(Duration::ZERO).unwrap_err();
    assert_eq!(err.setting(), ENV_STATUS_POLL_INTERVAL);
    assert!(err.to_string().contains("greater than zero"), "{err}");
    let c = base()
        .with_poll_interval(Duration::from_millis(2500))
        .unwrap();
    assert_eq!(c.poll_interval(), Duration::from_millis(2500));

    let err = base().with_request_timeout(Duration::ZERO).unwrap_err();
    assert_eq!(err.setting(), ENV_REQUEST_TIMEOUT);
    assert_eq!(
        err.to_string(),
        "CLOUDKIT_AAP_REQUEST_TIMEOUT: must be greater than zero"
    );
    let c = base().with_request_timeout(Duration::from_secs(3)).unwrap();
    assert_eq!(c.request_timeout(), Duration::from_secs(3));

    assert!(
        base()
            .with_insecure_skip_verify(true)
            .insecure_skip_verify()
    );

    for bad in [
        "",
        "not pem at all",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    ] {
        let err = base().with_ca_bundle_pem(bad).unwrap_err();
        assert_eq!(err.setting(), ENV_CA_FILE, "{bad:?}: {err}");
    }
    let c = base().with_ca_bundle_pem(CA_PEM).unwrap();
    assert_eq!(c.ca_bundle_pem(), Some(CA_PEM.as_bytes()));
    // The client accepts the bundle (and the insecure switch) when building its TLS setup.
    AapClient::new(&c.clone().with_insecure_skip_verify(true)).unwrap();
    AapClient::new(&c).unwrap();
}

#[test]
fn token_never_shown_by_config_or_client() {
    let c = AapConfig::new("https://h/api", Secret::new(TOKEN), "p", "d").unwrap();
    let shown = format!("{c:?} {:?}", AapClient::new(&c).unwrap());
    assert!(!shown.contains(TOKEN), "{shown}");
    let shown = format!("{:?}", AapProvider::new(&c).unwrap());
    assert!(!shown.contains(TOKEN), "{shown}");
}

#[test]
fn token_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("token");
    std::fs::write(&good, format!("  {TOKEN}\n")).unwrap();
    assert_eq!(read_token_file(&good).unwrap().expose(), TOKEN);

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n \n").unwrap();
    let missing = dir.path().join("missing");
    for path in [&empty, &missing] {
        let err = read_token_file(path).unwrap_err();
        assert_eq!(err.setting(), ENV_TOKEN_FILE);
        let text = err.to_string();
        assert!(text.starts_with("CLOUDKIT_AAP_TOKEN_FILE"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
    }
}

#[test]
fn ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, CA_PEM).unwrap();
    assert_eq!(read_ca_file(&ca).unwrap(), CA_PEM.as_bytes());
    let missing = dir.path().join("missing.pem");
    let err = read_ca_file(&missing).unwrap_err();
    assert_eq!(err.setting(), ENV_CA_FILE);
    assert!(err.to_string().contains("missing.pem"), "{err}");
}
