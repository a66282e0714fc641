//! A real HTTPS server for tests: a CA generated in the test signs a certificate for a test
//! host name, and an axum router is served over TLS on 127.0.0.1:0. Moat is pointed at it with
//! `MOAT_CIMD_EXTRA_ROOT_CA` (the CA's PEM) and `MOAT_CIMD_RESOLVE` (host → 127.0.0.1). Also
//! what the document servers of several test modules share: a per-path request counter and a
//! body slower than any fetch timeout.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// A running HTTPS server.
pub struct TlsServer {
    pub addr: SocketAddr,
    /// PEM of the CA that signed the server certificate.
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsServer {
    /// Serves `router` over TLS with a certificate for `host` (and `127.0.0.1`).
    pub async fn start(host: &str, router: axum::Router) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "Moat test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();

        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf_params = CertificateParams::new(vec![host.to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf_params.distinguished_name.push(rcgen::DnType::CommonName, host);
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();

        let certs: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca.der().clone()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let router = router.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = TowerToHyperService::new(router);
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, ca_pem: ca.pem(), task }
    }

    /// `https://{host}:{port}`.
    pub fn origin(&self, host: &str) -> String {
        format!("https://{host}:{}", self.addr.port())
    }
}

/// Requests per path.
#[derive(Clone, Default)]
pub struct Hits(pub Arc<Mutex<HashMap<String, usize>>>);

impl Hits {
    pub fn of(&self, path: &str) -> usize {
        self.0.lock().unwrap().get(path).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.0.lock().unwrap().values().sum()
    }
}

/// A JSON body that trickles out over six seconds, longer than any fetch timeout used here.
pub fn slow_body() -> Response {
    let stream = futures::stream::unfold(0u8, |i| async move {
        if i == 0 {
            Some((Ok::<_, std::convert::Infallible>(bytes::Bytes::from_static(b"{")), 1))
        } else if i < 30 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((Ok(bytes::Bytes::from_static(b" ")), i + 1))
        } else {
            None
        }
    });
    ([(header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response()
}
