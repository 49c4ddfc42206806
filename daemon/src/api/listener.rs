//! The API's listener: plain HTTP (loopback by default), or HTTPS with the configured certificate
//! and key (rustls, ring).

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use remedy_policies::config::ApiConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// How long a client may take over the TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS handshakes in progress at most; past it, new connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("api.listen {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("cannot listen on {address}: {source}")]
    Bind { address: SocketAddr, source: io::Error },
    #[error("api.tls {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
}

/// What a request came over, for handlers that need it (the web page's `Secure` cookie and
/// origin check): an extension on every request the listener serves.
#[derive(Debug, Clone, Copy)]
pub struct Transport {
    pub tls: bool,
}

/// A bound listener, not serving yet.
pub struct Bound {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    address: SocketAddr,
}

impl std::fmt::Debug for Bound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bound").field("address", &self.address).field("tls", &self.tls.is_some()).finish()
    }
}

/// Binds `api.listen`, loading the certificate and key first when TLS is configured (paths
/// relative to `config_dir`).
pub async fn serve(config: &ApiConfig, config_dir: &Path) -> Result<Bound, ListenError> {
    let address: SocketAddr = config.listen.parse().map_err(|e: std::net::AddrParseError| ListenError::Address {
        address: config.listen.clone(),
        reason: e.to_string(),
    })?;
    let tls = match &config.tls {
        Some(files) => Some(acceptor(&config_dir.join(&files.cert_file), &config_dir.join(&files.key_file))?),
        None => None,
    };
    let tcp = TcpListener::bind(address).await.map_err(|source| ListenError::Bind { address, source })?;
    let address = tcp.local_addr().map_err(|source| ListenError::Bind { address, source })?;
    Ok(Bound { tcp, tls, address })
}

fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, ListenError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ListenError::Tls { path: cert_file.to_path_buf(), reason: e.to_string() })?;
    if certs.is_empty() {
        return Err(ListenError::Tls { path: cert_file.to_path_buf(), reason: "holds no PEM certificate".into() });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| ListenError::Tls {
        path: key_file.to_path_buf(),
        reason: format!("no usable PEM private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ListenError::Tls { path: cert_file.to_path_buf(), reason: e.to_string() })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Bound {
    /// Where it listens (with the port the OS chose for port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `app` until `shutdown` turns true; requests in flight are finished.
    pub async fn run(self, app: Router, mut shutdown: watch::Receiver<bool>) -> io::Result<()> {
        let stop = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let app = app.layer(axum::Extension(Transport { tls: self.tls.is_some() }));
        match self.tls {
            None => axum::serve(self.tcp, app).with_graceful_shutdown(stop).await,
            Some(acceptor) => {
                let listener = TlsListener { tcp: self.tcp, acceptor, handshakes: JoinSet::new() };
                axum::serve(listener, app).with_graceful_shutdown(stop).await
            }
        }
    }
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    /// Handshakes in progress, each in a task of its own: a client that connects and then stalls
    /// its handshake must not hold up the clients behind it.
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept(), if self.handshakes.len() < MAX_HANDSHAKES => match accepted {
                    Ok((stream, peer)) => {
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(error)) => {
                                    tracing::debug!(%peer, %error, "TLS handshake with an API client failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake with an API client timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(error) => {
                        // Out of file descriptors and the like: wait a little rather than spin.
                        tracing::warn!(%error, "the API listener could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                Some(finished) = self.handshakes.join_next() => {
                    if let Ok(Some(accepted)) = finished {
                        return accepted;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
