//! A fake fulfillment service for tests (feature `fake`): the `ComputeInstances` Get, Update and
//! Signal of fulfillment-wire.md section 4, served on a loopback port in plaintext (h2c) or TLS,
//! recording every call with its `authorization` header.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Runtime::new()?.block_on(async {
//! use cloudkit_feedback::fake::{FakeFulfillment, Method, TestCa};
//! use cloudkit_feedback::{FulfillmentClient, Settings};
//!
//! let fake = FakeFulfillment::new();
//! fake.insert(FakeFulfillment::object("ci-1", "small"));
//! let ca = TestCa::generate()?;
//! let server = fake.serve_tls(&ca, true).await?;
//! let client = FulfillmentClient::with_root_certificates(
//!     &Settings::new(server.address()),
//!     [ca.ca_certificate()],
//! )?;
//! let object = client.get("ci-1").await?;
//! assert_eq!(object.id, "ci-1");
//! assert_eq!(fake.calls()[0].method, Method::Get);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

use crate::proto::private::v1 as pb;
use crate::proto::private::v1::compute_instances_server::{
    ComputeInstances, ComputeInstancesServer,
};

/// A method of the fake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `Get`.
    Get,
    /// `Update`.
    Update,
    /// `Signal`.
    Signal,
}

/// One call the fake received.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedCall {
    /// The method.
    pub method: Method,
    /// The object id (for Update, the id of the object sent; empty without an object).
    pub id: String,
    /// The `authorization` header as received, if any.
    pub authorization: Option<String>,
    /// For Update, the object sent.
    pub object: Option<pb::ComputeInstance>,
    /// The gRPC code the fake answered.
    pub code: tonic::Code,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, pb::ComputeInstance>,
    archived: BTreeMap<String, pb::ComputeInstance>,
    templates: BTreeSet<String>,
    /// When set, only this bearer token is accepted.
    token: Option<String>,
    /// Ids whose calls are refused.
    denied: BTreeSet<String>,
    signals: BTreeMap<String, usize>,
    calls: Vec<RecordedCall>,
}

/// The fake service's state, shared by its clones and the servers they run.
#[derive(Clone, Debug, Default)]
pub struct FakeFulfillment {
    state: Arc<Mutex<State>>,
}

impl FakeFulfillment {
    /// An empty service that accepts any caller.
    pub fn new() -> Self {
        Self::default()
    }

    /// An object as the service creates it: state STARTING, all six conditions FALSE, and a
    /// template parameter holding an `Any`.
    pub fn object(id: &str, template: &str) -> pb::ComputeInstance {
        use pb::ComputeInstanceConditionType as Type;
        let conditions = [
            Type::Progressing,
            Type::Available,
            Type::Failed,
            Type::Degraded,
            Type::RestartInProgress,
            Type::RestartFailed,
        ]
        .into_iter()
        .map(|kind| pb::ComputeInstanceCondition {
            r#type: kind as i32,
            status: crate::proto::shared::v1::ConditionStatus::False as i32,
            last_transition_time: Some(prost_types::Timestamp {
                seconds: 1_767_225_600,
                nanos: 0,
            }),
            reason: None,
            message: None,
        })
        .collect();
        pb::ComputeInstance {
            id: id.to_owned(),
            metadata: Some(pb::Metadata {
                creation_timestamp: Some(prost_types::Timestamp {
                    seconds: 1_767_225_600,
                    nanos: 0,
                }),
                name: id.to_owned(),
                creators: vec!["alice".to_owned()],
                tenants: vec!["tenant-a".to_owned()],
                ..Default::default()
            }),
            spec: Some(pb::ComputeInstanceSpec {
                template: template.to_owned(),
                template_parameters: BTreeMap::from([(
                    "cpu".to_owned(),
                    prost_types::Any {
                        type_url: "type.googleapis.com/google.protobuf.Int32Value".to_owned(),
                        value: vec![0x08, 0x04],
                    },
                )]),
                restart_requested_at: None,
            }),
            status: Some(pb::ComputeInstanceStatus {
                state: pb::ComputeInstanceState::Starting as i32,
                conditions,
                ..Default::default()
            }),
        }
    }

    /// Stores `object` (replacing one with the same id) and makes its template known.
    pub fn insert(&self, object: pb::ComputeInstance) {
        let mut state = self.lock();
        if let Some(spec) = &object.spec {
            state.templates.insert(spec.template.clone());
        }
        state.archived.remove(&object.id);
        state.objects.insert(object.id.clone(), object);
    }

    /// Makes `template` known, so Update accepts objects using it.
    pub fn add_template(&self, template: &str) {
        self.lock().templates.insert(template.to_owned());
    }

    /// Accept only callers presenting `authorization: Bearer <token>`; others get
    /// PERMISSION_DENIED. `None` accepts anyone.
    pub fn require_token(&self, token: Option<&str>) {
        self.lock().token = token.map(str::to_owned);
    }

    /// Refuse every call about `id` with PERMISSION_DENIED.
    pub fn deny(&self, id: &str) {
        self.lock().denied.insert(id.to_owned());
    }

    /// The stored object `id` (not archived).
    pub fn stored(&self, id: &str) -> Option<pb::ComputeInstance> {
        self.lock().objects.get(id).cloned()
    }

    /// The archived object `id`.
    pub fn archived(&self, id: &str) -> Option<pb::ComputeInstance> {
        self.lock().archived.get(id).cloned()
    }

    /// How many Signals `id` received.
    pub fn signals(&self, id: &str) -> usize {
        self.lock().signals.get(id).copied().unwrap_or(0)
    }

    /// Every call received so far, oldest first.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.lock().calls.clone()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: Method) -> Vec<RecordedCall> {
        self.lock()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Serves the fake on a loopback port without TLS (h2c).
    pub async fn serve_plaintext(&self) -> std::io::Result<FakeServer> {
        self.serve(None).await
    }

    /// Serves the fake on a loopback port with TLS, using the server certificate of `ca` (valid
    /// for `localhost` and `127.0.0.1`). With `alpn` false the server negotiates no ALPN
    /// protocol, as some gRPC servers behind proxies do.
    pub async fn serve_tls(&self, ca: &TestCa, alpn: bool) -> std::io::Result<FakeServer> {
        self.serve(Some(tls_acceptor(ca, alpn)?)).await
    }

    /// Serves the fake without TLS on `addr`: to bring a stopped server back where its clients
    /// expect it (the port may take a moment to be free again; binding is retried for a second).
    pub async fn serve_plaintext_at(&self, addr: SocketAddr) -> std::io::Result<FakeServer> {
        self.serve_on(bind_retrying(addr).await?, None)
    }

    /// [`FakeFulfillment::serve_tls`] on `addr`, like [`FakeFulfillment::serve_plaintext_at`].
    pub async fn serve_tls_at(
        &self,
        ca: &TestCa,
        alpn: bool,
        addr: SocketAddr,
    ) -> std::io::Result<FakeServer> {
        self.serve_on(bind_retrying(addr).await?, Some(tls_acceptor(ca, alpn)?))
    }

    async fn serve(&self, tls: Option<tokio_rustls::TlsAcceptor>) -> std::io::Result<FakeServer> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        self.serve_on(listener, tls)
    }

    fn serve_on(
        &self,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<FakeServer> {
        let addr = listener.local_addr()?;
        let service = ComputeInstancesServer::new(self.clone());
        let task = tokio::spawn(async move {
            // Owned by this task: stopping the server also closes its open connections.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let tcp = match listener.accept().await {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let service = service.clone();
                let tls = tls.clone();
                connections.spawn(async move {
                    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    let service = TowerToHyperService::new(service);
                    // Connection errors (a client going away) end only that connection.
                    match tls {
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Ok(FakeServer { addr, task })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; its state is still
        // worth reading.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the call and decides on access; returns the state lock for the method to go on.
    fn admit<T>(
        &self,
        method: Method,
        request: &Request<T>,
        id: &str,
        object: Option<&pb::ComputeInstance>,
    ) -> Result<MutexGuard<'_, State>, Status> {
        let authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut state = self.lock();
        state.calls.push(RecordedCall {
            method,
            id: id.to_owned(),
            authorization: authorization.clone(),
            object: object.cloned(),
            code: tonic::Code::Ok,
        });
        let token_ok = match &state.token {
            None => true,
            Some(token) => authorization.as_deref() == Some(format!("Bearer {token}").as_str()),
        };
        if !token_ok {
            return Err(record(&mut state, Status::permission_denied("not allowed")));
        }
        if state.denied.contains(id) {
            return Err(record(
                &mut state,
                Status::permission_denied(format!("not allowed to access {id}")),
            ));
        }
        Ok(state)
    }
}

/// Sets the code of the last recorded call and passes the status on.
fn record(state: &mut State, status: Status) -> Status {
    if let Some(call) = state.calls.last_mut() {
        call.code = status.code();
    }
    status
}

#[tonic::async_trait]
impl ComputeInstances for FakeFulfillment {
    async fn get(
        &self,
        request: Request<pb::ComputeInstancesGetRequest>,
    ) -> Result<Response<pb::ComputeInstancesGetResponse>, Status> {
        let id = request.get_ref().id.clone();
        let mut state = self.admit(Method::Get, &request, &id, None)?;
        if id.is_empty() {
            return Err(record(
                &mut state,
                Status::invalid_argument("id is required"),
            ));
        }
        match state.objects.get(&id).cloned() {
            Some(object) => Ok(Response::new(pb::ComputeInstancesGetResponse {
                object: Some(object),
            })),
            None => Err(record(
                &mut state,
                Status::not_found(format!("compute instance {id} not found")),
            )),
        }
    }

    async fn update(
        &self,
        request: Request<pb::ComputeInstancesUpdateRequest>,
    ) -> Result<Response<pb::ComputeInstancesUpdateResponse>, Status> {
        let object = request.get_ref().object.clone();
        let id = object.as_ref().map(|o| o.id.clone()).unwrap_or_default();
        let mut state = self.admit(Method::Update, &request, &id, object.as_ref())?;
        let Some(object) = object else {
            return Err(record(
                &mut state,
                Status::invalid_argument("object is required"),
            ));
        };
        let template = object.spec.as_ref().map(|s| s.template.as_str());
        match template {
            None => {
                return Err(record(
                    &mut state,
                    Status::invalid_argument("spec is required"),
                ));
            }
            Some("") => {
                return Err(record(
                    &mut state,
                    Status::invalid_argument("spec.template is required"),
                ));
            }
            Some(t) if !state.templates.contains(t) => {
                let status = Status::invalid_argument(format!("template {t} does not exist"));
                return Err(record(&mut state, status));
            }
            Some(_) => {}
        }
        let Some(stored) = state.objects.get(&id) else {
            let status = Status::not_found(format!("compute instance {id} not found"));
            return Err(record(&mut state, status));
        };
        let being_deleted = stored
            .metadata
            .as_ref()
            .is_some_and(|m| m.deletion_timestamp.is_some());
        let no_finalizers = object
            .metadata
            .as_ref()
            .is_none_or(|m| m.finalizers.is_empty());
        if being_deleted && no_finalizers {
            state.objects.remove(&id);
            state.archived.insert(id, object.clone());
        } else {
            // No mask: the object sent replaces the stored one (the same object is a no-op).
            state.objects.insert(id, object.clone());
        }
        Ok(Response::new(pb::ComputeInstancesUpdateResponse {
            object: Some(object),
        }))
    }

    async fn signal(
        &self,
        request: Request<pb::ComputeInstancesSignalRequest>,
    ) -> Result<Response<pb::ComputeInstancesSignalResponse>, Status> {
        let id = request.get_ref().id.clone();
        let mut state = self.admit(Method::Signal, &request, &id, None)?;
        if !state.objects.contains_key(&id) {
            let status = Status::not_found(format!("compute instance {id} not found"));
            return Err(record(&mut state, status));
        }
        *state.signals.entry(id).or_default() += 1;
        Ok(Response::new(pb::ComputeInstancesSignalResponse {}))
    }
}

/// A TLS acceptor presenting the server certificate of `ca`; `alpn` offers `h2`.
fn tls_acceptor(ca: &TestCa, alpn: bool) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|b| {
        b.with_no_client_auth().with_single_cert(
            vec![ca.server_certificate()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ca.server_key_der.clone())),
        )
    })
    .map_err(std::io::Error::other)?;
    if alpn {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Binds `addr`, retrying for a second while the port is still taken.
async fn bind_retrying(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(_) if attempts < 20 => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// A running fake server; stopped when dropped, its open connections closed.
#[derive(Debug)]
pub struct FakeServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// `127.0.0.1:port`, the value for [`crate::Settings::address`].
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// `localhost:port`, for TLS verified against the host name.
    pub fn localhost_address(&self) -> String {
        format!("localhost:{}", self.addr.port())
    }

    /// The socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A throw-away CA and a server certificate it signed for `localhost` and `127.0.0.1`.
#[derive(Clone)]
pub struct TestCa {
    ca_der: CertificateDer<'static>,
    ca_pem: String,
    server_der: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// Generates the CA and the server certificate.
    pub fn generate() -> Result<TestCa, rcgen::Error> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "fake-fulfillment-ca");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate()?;
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "fake-fulfillment");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        // webpki (rustls) insists on serverAuth for a server certificate.
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = params.signed_by(&server_key, &issuer)?;
        Ok(TestCa {
            ca_der: ca_cert.der().clone(),
            ca_pem: ca_cert.pem(),
            server_der: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
        })
    }

    /// The CA certificate, to trust.
    pub fn ca_certificate(&self) -> CertificateDer<'static> {
        self.ca_der.clone()
    }

    /// The CA certificate in PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate.
    pub fn server_certificate(&self) -> CertificateDer<'static> {
        self.server_der.clone()
    }
}
