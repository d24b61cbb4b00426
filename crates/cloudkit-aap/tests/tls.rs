//! TLS: a controller with a certificate from a private CA is refused by default, trusted with
//! the CA bundle (`CLOUDKIT_AAP_CA_FILE`), and accepted without verification when
//! `CLOUDKIT_AAP_INSECURE_SKIP_VERIFY` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use cloudkit_aap::*;
use cloudkit_provider::ProviderErrorKind;
use common::*;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A private CA and a server certificate it signed for `localhost` and `127.0.0.1`.
struct Pki {
    ca_pem: String,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
}

fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        server_chain: vec![server_cert.der().clone()],
        server_key: server_key.serialize_der(),
    }
}

/// Serves `GET .../job_templates/?name=...` over TLS with one template, until dropped.
async fn tls_server(pki: &Pki) -> (String, tokio::task::JoinHandle<()>) {
    let config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            pki.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key.clone())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake is the expected outcome of some tests.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let body = r#"{"count": 1, "next": null, "previous": null, "results": [{"id": 4, "name": "provision_vm"}]}"#;
                let answer = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(answer.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (format!("https://localhost:{port}/api"), task)
}

#[tokio::test]
async fn a_private_ca_is_refused_by_default() {
    let pki = pki("server");
    let (url, server) = tls_server(&pki).await;
    let client = AapClient::new(&config_for(&url)).unwrap();
    let err = client.find_template(PROVISION).await.unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Transport, "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    assert_clean(&err);
    server.abort();
}

#[tokio::test]
async fn the_ca_bundle_makes_the_server_trusted() {
    let pki = pki("server");
    let (url, server) = tls_server(&pki).await;
    let config = config_for(&url)
        .with_ca_bundle_pem(pki.ca_pem.clone())
        .unwrap();
    let found = AapClient::new(&config)
        .unwrap()
        .find_template(PROVISION)
        .await
        .unwrap();
    assert_eq!(found.id, 4);
    server.abort();
}

#[tokio::test]
async fn another_ca_is_not_trusted_for_the_server() {
    let pki = pki("server");
    let other = pki_ca_only("other");
    let (url, server) = tls_server(&pki).await;
    let config = config_for(&url).with_ca_bundle_pem(other).unwrap();
    let err = AapClient::new(&config)
        .unwrap()
        .find_template(PROVISION)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ProviderErrorKind::Transport, "{err}");
    server.abort();
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate() {
    let pki = pki("server");
    let (url, server) = tls_server(&pki).await;
    let config = config_for(&url).with_insecure_skip_verify(true);
    let found = AapClient::new(&config)
        .unwrap()
        .find_template(PROVISION)
        .await
        .unwrap();
    assert_eq!(found.id, 4);
    server.abort();
}

fn pki_ca_only(name: &str) -> String {
    pki(name).ca_pem
}
