//! The connection to the fulfillment service: settings, TLS policy, the bearer token, and a
//! client with the three calls feedback makes (SPEC 13).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http::Uri;
use http::uri::Authority;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::metadata::MetadataValue;

use crate::proto::private::v1 as pb;
use crate::proto::private::v1::compute_instances_client::ComputeInstancesClient;

/// Command-line flag of the service address (`host:port`).
pub const ADDRESS_FLAG: &str = "--fulfillment-server-address";
/// Command-line flag of the token file.
pub const TOKEN_FILE_FLAG: &str = "--fulfillment-server-token-file";
/// Command-line flag: TLS without verification of the server's certificate.
pub const INSECURE_FLAG: &str = "--grpc-insecure";
/// Command-line flag: HTTP/2 without TLS (h2c).
pub const PLAINTEXT_FLAG: &str = "--grpc-plaintext";

/// Default time limit of one call, connection included.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the fulfillment service, as configured (SPEC 13).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// `host:port` of the service.
    pub address: String,
    /// File holding the bearer token; read again for every call, so it can be rotated.
    pub token_file: Option<PathBuf>,
    /// TLS without verification of the server's certificate.
    pub insecure: bool,
    /// HTTP/2 without TLS (h2c). Refused together with a token file; takes precedence over
    /// `insecure`.
    pub plaintext: bool,
    /// Time limit of one call, connection included.
    pub call_timeout: Duration,
}

impl Settings {
    /// Settings for `address` (`host:port`): verified TLS, no token, the default call timeout.
    pub fn new(address: impl Into<String>) -> Self {
        Settings {
            address: address.into(),
            token_file: None,
            insecure: false,
            plaintext: false,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Checks the settings and gives the service's URI and transport.
    pub fn validate(&self) -> Result<Endpoint, SettingsError> {
        if self.plaintext && self.token_file.is_some() {
            // A token never travels in clear.
            return Err(SettingsError::PlaintextWithToken);
        }
        let authority = parse_address(&self.address)?;
        let (scheme, transport) = if self.plaintext {
            ("http", Transport::Plaintext)
        } else if self.insecure {
            ("https", Transport::TlsUnverified)
        } else {
            ("https", Transport::Tls)
        };
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| SettingsError::Address {
                address: self.address.clone(),
                reason: e.to_string(),
            })?;
        Ok(Endpoint { uri, transport })
    }
}

fn parse_address(address: &str) -> Result<Authority, SettingsError> {
    let invalid = |reason: &str| SettingsError::Address {
        address: address.to_owned(),
        reason: reason.to_owned(),
    };
    if address.contains("://") {
        return Err(invalid("expected host:port, not a URL"));
    }
    let authority = Authority::from_str(address).map_err(|e| invalid(&e.to_string()))?;
    if authority.host().is_empty() {
        return Err(invalid("the host is missing"));
    }
    if authority.port_u16().is_none() {
        return Err(invalid("the port is missing"));
    }
    if address.contains('@') {
        return Err(invalid("credentials do not belong in the address"));
    }
    Ok(authority)
}

/// Validated settings: where and how to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port/` or, for plaintext, `http://host:port/`.
    pub uri: Uri,
    /// The transport.
    pub transport: Transport,
}

/// The transport to the service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TLS, the server's certificate verified (system roots unless told otherwise).
    Tls,
    /// TLS without verification of the server's certificate (`--grpc-insecure`).
    TlsUnverified,
    /// HTTP/2 without TLS (`--grpc-plaintext`).
    Plaintext,
}

/// Settings that cannot work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// Plaintext and a token: the token would travel in clear.
    #[error(
        "{PLAINTEXT_FLAG} cannot be used together with {TOKEN_FILE_FLAG}: the token would be sent in clear"
    )]
    PlaintextWithToken,
    /// The address is not `host:port`.
    #[error("{ADDRESS_FLAG} {address:?} is not host:port: {reason}")]
    Address {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The settings are invalid.
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// No usable certificate in the system's trust store.
    #[error("no trusted root certificate could be loaded from the system: {0}")]
    SystemRoots(String),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The token file could not be read.
    #[error("reading the token file {}: {source}", path.display())]
    TokenFile {
        /// The token file.
        path: PathBuf,
        /// The read error.
        source: std::io::Error,
    },
    /// The token file holds nothing but white space.
    #[error("the token file {} is empty", path.display())]
    EmptyToken {
        /// The token file.
        path: PathBuf,
    },
    /// The token cannot be sent in an HTTP header.
    #[error("the token in {} is not a valid header value", path.display())]
    InvalidToken {
        /// The token file.
        path: PathBuf,
    },
    /// No answer within the call timeout.
    #[error("{method} got no answer within {timeout:?}")]
    Timeout {
        /// The method called.
        method: &'static str,
        /// The time limit.
        timeout: Duration,
    },
    /// The service could not be reached, or the connection broke (TLS refused, connection
    /// refused, reset...).
    #[error("{method}: the fulfillment service could not be reached: {reason}")]
    Unreachable {
        /// The method called.
        method: &'static str,
        /// The chain of causes.
        reason: String,
    },
    /// The service answered with a gRPC error status.
    #[error("{method} failed: {:?}: {}", status.code(), status.message())]
    Status {
        /// The method called.
        method: &'static str,
        /// The status.
        status: Box<tonic::Status>,
    },
    /// The answer lacks the object it must carry.
    #[error("{method} answered without an object")]
    MissingObject {
        /// The method called.
        method: &'static str,
    },
}

impl CallError {
    /// The gRPC status code, when the call got as far as a status.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            CallError::Status { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// Whether the service could not be reached or did not answer in time: worth retrying.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            CallError::Unreachable { .. } | CallError::Timeout { .. }
        ) || self.code() == Some(tonic::Code::Unavailable)
    }

    /// Whether the service said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }
}

/// The bearer token: never printed (its `Debug` and `Display` are redacted).
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Reads and trims the token file.
    pub async fn read(path: &Path) -> Result<BearerToken, CallError> {
        let content =
            tokio::fs::read_to_string(path)
                .await
                .map_err(|source| CallError::TokenFile {
                    path: path.to_owned(),
                    source,
                })?;
        let token = content.trim();
        if token.is_empty() {
            return Err(CallError::EmptyToken {
                path: path.to_owned(),
            });
        }
        Ok(BearerToken(token.to_owned()))
    }

    /// The token itself, for the `authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

impl fmt::Display for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

type HttpClient = Client<HttpsConnector<HttpConnector>, tonic::body::Body>;

/// Client of the fulfillment service's `private.v1.ComputeInstances` (Get, Update, Signal).
///
/// Cheap to clone; clones share connections. Connections are made on the first call and again
/// after they break.
#[derive(Clone, Debug)]
pub struct FulfillmentClient {
    grpc: ComputeInstancesClient<HttpClient>,
    token_file: Option<PathBuf>,
    call_timeout: Duration,
}

impl FulfillmentClient {
    /// A client whose TLS trusts the system's root certificates.
    pub fn new(settings: &Settings) -> Result<Self, ClientError> {
        let endpoint = settings.validate()?;
        let roots = match endpoint.transport {
            Transport::Tls => system_roots()?,
            Transport::TlsUnverified | Transport::Plaintext => RootCertStore::empty(),
        };
        Self::build(settings, endpoint, roots)
    }

    /// A client whose TLS trusts only `roots` (a private CA, tests).
    pub fn with_root_certificates(
        settings: &Settings,
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, ClientError> {
        let endpoint = settings.validate()?;
        let mut store = RootCertStore::empty();
        for root in roots {
            store.add(root)?;
        }
        Self::build(settings, endpoint, store)
    }

    fn build(
        settings: &Settings,
        endpoint: Endpoint,
        roots: RootCertStore,
    ) -> Result<Self, ClientError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let tls = match endpoint.transport {
            Transport::TlsUnverified => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth(),
            Transport::Tls | Transport::Plaintext => {
                builder.with_root_certificates(roots).with_no_client_auth()
            }
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let schemes = HttpsConnectorBuilder::new().with_tls_config(tls);
        let schemes = match endpoint.transport {
            Transport::Plaintext => schemes.https_or_http(),
            Transport::Tls | Transport::TlsUnverified => schemes.https_only(),
        };
        // ALPN offers h2 only. The HTTP client speaks HTTP/2 whatever the server negotiated (or
        // did not), so a server without ALPN works too.
        let connector = schemes.enable_http2().wrap_connector(http);
        let http_client: HttpClient = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build(connector);
        Ok(FulfillmentClient {
            grpc: ComputeInstancesClient::with_origin(http_client, endpoint.uri),
            token_file: settings.token_file.clone(),
            call_timeout: settings.call_timeout,
        })
    }

    /// `Get{id}`: the object as the service stores it.
    pub async fn get(&self, id: &str) -> Result<pb::ComputeInstance, CallError> {
        const METHOD: &str = "Get";
        let request = self
            .request(METHOD, pb::ComputeInstancesGetRequest { id: id.to_owned() })
            .await?;
        let mut grpc = self.grpc.clone();
        let response = self.within_timeout(METHOD, grpc.get(request)).await?;
        response
            .object
            .ok_or(CallError::MissingObject { method: METHOD })
    }

    /// `Update{object}` without a field mask: the service replaces the stored object with
    /// `object`. Returns the object as stored.
    pub async fn update(
        &self,
        object: pb::ComputeInstance,
    ) -> Result<pb::ComputeInstance, CallError> {
        const METHOD: &str = "Update";
        let request = self
            .request(
                METHOD,
                pb::ComputeInstancesUpdateRequest {
                    object: Some(object),
                    update_mask: None,
                },
            )
            .await?;
        let mut grpc = self.grpc.clone();
        let response = self.within_timeout(METHOD, grpc.update(request)).await?;
        response
            .object
            .ok_or(CallError::MissingObject { method: METHOD })
    }

    /// `Signal{id}`: tells the service that the object changed in the cluster (its deletion
    /// finished).
    pub async fn signal(&self, id: &str) -> Result<(), CallError> {
        const METHOD: &str = "Signal";
        let request = self
            .request(
                METHOD,
                pb::ComputeInstancesSignalRequest { id: id.to_owned() },
            )
            .await?;
        let mut grpc = self.grpc.clone();
        self.within_timeout(METHOD, grpc.signal(request)).await?;
        Ok(())
    }

    /// A request carrying the token read from the file now (so a rotated token is used at once).
    async fn request<T>(
        &self,
        method: &'static str,
        message: T,
    ) -> Result<tonic::Request<T>, CallError> {
        tracing::debug!(method, "fulfillment service call");
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.call_timeout);
        if let Some(path) = &self.token_file {
            let token = BearerToken::read(path).await?;
            let mut value = MetadataValue::try_from(format!("Bearer {}", token.expose()))
                .map_err(|_| CallError::InvalidToken { path: path.clone() })?;
            // Kept out of HPACK's dynamic table.
            value.set_sensitive(true);
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    async fn within_timeout<T>(
        &self,
        method: &'static str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.call_timeout, call).await {
            Err(_) => Err(CallError::Timeout {
                method,
                timeout: self.call_timeout,
            }),
            // tonic turns transport errors into a status with the error as its source; a status
            // the server sent has none.
            Ok(Err(status)) => match std::error::Error::source(&status) {
                Some(source) => Err(CallError::Unreachable {
                    method,
                    reason: error_chain(source),
                }),
                None => Err(CallError::Status {
                    method,
                    status: Box::new(status),
                }),
            },
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}

/// `error: cause: cause...`, each distinct message once.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(error) = next {
        let text = error.to_string();
        if !parts.iter().any(|p| p == &text) {
            parts.push(text);
        }
        next = error.source();
    }
    parts.join(": ")
}

fn system_roots() -> Result<RootCertStore, ClientError> {
    let loaded = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (_added, _ignored) = store.add_parsable_certificates(loaded.certs);
    if store.is_empty() {
        let errors: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        return Err(ClientError::SystemRoots(if errors.is_empty() {
            "the trust store is empty".to_owned()
        } else {
            errors.join("; ")
        }));
    }
    Ok(store)
}

/// `--grpc-insecure`: any server certificate is accepted. Handshake signatures are still
/// checked, so the session is encrypted to whoever holds the presented certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
