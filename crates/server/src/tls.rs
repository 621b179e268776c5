//! HTTPS for the backend: a PEM certificate chain and private key loaded into a rustls
//! [`ServerTls`], and a [`TlsListener`] that [`crate::serve_tls`] hands to `axum::serve`.
//!
//! The listener terminates TLS itself (see `docs/adr/0006-tls.md`): a background task accepts
//! TCP connections and runs each handshake in its own task, bounded by a timeout, so one slow
//! or silent client never holds up the next accept. Finished streams reach axum through a
//! channel together with the peer's address, so `ConnectInfo<SocketAddr>` (the audit log's
//! source) works as over plain HTTP. ALPN offers `http/1.1` only: the router is served by
//! axum's HTTP/1 connection code.
//!
//! The crypto provider is aws-lc-rs, the one reqwest's rustls already brings in, so the build
//! has a single crypto library.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take to finish its TLS handshake before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at once; further TCP connections wait in the kernel's backlog until
/// one finishes or times out.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// Why a certificate or key could not be loaded. Messages name the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("could not read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not valid PEM", path.display())]
    Pem {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error(
        "no private key found in {} (expected a PKCS#8, PKCS#1 or SEC1 key in PEM)",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error(
        "the key in {} does not match the certificate in {}",
        key.display(),
        certificate.display()
    )]
    KeyMismatch { certificate: PathBuf, key: PathBuf },
    #[error(
        "the certificate in {} with the key in {} cannot be used for TLS",
        certificate.display(),
        key.display()
    )]
    Unusable {
        certificate: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// A loaded certificate chain and key: the backend's TLS settings.
#[derive(Debug, Clone)]
pub struct ServerTls {
    config: Arc<rustls::ServerConfig>,
}

impl ServerTls {
    /// Loads a PEM certificate chain (the server's certificate first, then any intermediates)
    /// from `certificate` and its PEM private key (PKCS#8, PKCS#1 or SEC1) from `key`, and
    /// checks that the key belongs to the certificate.
    pub fn from_pem_files(certificate: &Path, key: &Path) -> Result<Self, TlsError> {
        let read = |path: &Path| {
            std::fs::read(path).map_err(|source| TlsError::Read {
                path: path.to_path_buf(),
                source,
            })
        };
        Self::from_pem_named(&read(certificate)?, certificate, &read(key)?, key)
    }

    /// As [`ServerTls::from_pem_files`], from PEM text in memory (tests, secrets managers).
    pub fn from_pem(certificate_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Self::from_pem_named(
            certificate_pem,
            Path::new("the certificate PEM"),
            key_pem,
            Path::new("the key PEM"),
        )
    }

    fn from_pem_named(
        certificate_pem: &[u8],
        certificate_path: &Path,
        key_pem: &[u8],
        key_path: &Path,
    ) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(certificate_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TlsError::Pem {
                path: certificate_path.to_path_buf(),
                source,
            })?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate {
                path: certificate_path.to_path_buf(),
            });
        }
        let key = match PrivateKeyDer::from_pem_slice(key_pem) {
            Ok(key) => key,
            Err(rustls::pki_types::pem::Error::NoItemsFound) => {
                return Err(TlsError::NoPrivateKey {
                    path: key_path.to_path_buf(),
                });
            }
            Err(source) => {
                return Err(TlsError::Pem {
                    path: key_path.to_path_buf(),
                    source,
                });
            }
        };
        let unusable = |source: rustls::Error| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    certificate: certificate_path.to_path_buf(),
                    key: key_path.to_path_buf(),
                }
            }
            source => TlsError::Unusable {
                certificate: certificate_path.to_path_buf(),
                key: key_path.to_path_buf(),
                source,
            },
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(unusable)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(unusable)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// A TCP listener that completes TLS handshakes in the background and yields finished
/// streams with the peer's address: an [`axum::serve::Listener`]. Dropping it stops accepting.
#[derive(Debug)]
pub struct TlsListener {
    local_addr: SocketAddr,
    established: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `tls` and the default [`HANDSHAKE_TIMEOUT`]. Must be
    /// called inside a tokio runtime (it spawns the accepting task).
    pub fn new(listener: TcpListener, tls: &ServerTls) -> std::io::Result<Self> {
        Self::with_handshake_timeout(listener, tls, HANDSHAKE_TIMEOUT)
    }

    /// As [`TlsListener::new`], dropping clients that have not finished their handshake
    /// within `handshake_timeout`.
    pub fn with_handshake_timeout(
        listener: TcpListener,
        tls: &ServerTls,
        handshake_timeout: Duration,
    ) -> std::io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, established) = mpsc::channel(64);
        let acceptor = tokio::spawn(accept_connections(
            listener,
            TlsAcceptor::from(Arc::clone(&tls.config)),
            handshake_timeout,
            sender,
        ));
        Ok(Self {
            local_addr,
            established,
            acceptor,
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.established.recv().await {
            Some(connection) => connection,
            // The accepting task only ends when this listener is dropped (or if it panicked):
            // nothing will ever arrive, so wait for the server's shutdown instead.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections until the [`TlsListener`] goes away, handing each to its own
/// handshake task.
async fn accept_connections(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    established: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&pending).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return, // never closed
            },
            () = established.closed() => return,
        };
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(connection) => connection,
                Err(error) => {
                    if !is_connection_error(&error) {
                        // Out of file descriptors and the like: wait for some to close.
                        tracing::error!(%error, "accepting a TCP connection failed");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = established.closed() => return,
        };
        let acceptor = acceptor.clone();
        let established = established.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    // Fails only when the server is shutting down: the stream is dropped.
                    let _ = established.send((stream, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!(
                    timeout_ms = handshake_timeout.as_millis() as u64,
                    "TLS handshake timed out"
                ),
            }
        });
    }
}

/// Errors of one connection that say nothing about the listener (as axum's own listener).
fn is_connection_error(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

    use super::*;

    /// A self-signed certificate for `localhost` and its key, both PEM.
    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    fn files(certificate: &str, key: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
        let directory = tempfile::tempdir().unwrap();
        let certificate_path = directory.path().join("server.crt");
        let key_path = directory.path().join("server.key");
        std::fs::write(&certificate_path, certificate).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (directory, certificate_path, key_path)
    }

    #[test]
    fn a_matching_certificate_and_key_load() {
        let (certificate, key) = self_signed();
        let (_directory, certificate_path, key_path) = files(&certificate, &key);
        let tls = ServerTls::from_pem_files(&certificate_path, &key_path).unwrap();
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn an_empty_certificate_file_names_the_file() {
        let (_, key) = self_signed();
        let (_directory, certificate_path, key_path) = files("", &key);
        let error = ServerTls::from_pem_files(&certificate_path, &key_path).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("no certificate found in {}", certificate_path.display())
        );
    }

    #[test]
    fn garbage_is_no_certificate_and_broken_pem_is_reported() {
        let (_, key) = self_signed();
        let (_directory, certificate_path, key_path) =
            files("this is not a certificate\n\u{1}\u{2}", &key);
        let error = ServerTls::from_pem_files(&certificate_path, &key_path).unwrap_err();
        assert!(matches!(error, TlsError::NoCertificate { .. }), "{error:?}");

        let broken =
            "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n";
        let (_directory, certificate_path, key_path) = files(broken, &key);
        let error = ServerTls::from_pem_files(&certificate_path, &key_path).unwrap_err();
        assert!(matches!(error, TlsError::Pem { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains(&certificate_path.display().to_string())
        );
    }

    #[test]
    fn a_certificate_where_the_key_should_be_is_no_private_key() {
        let (certificate, _) = self_signed();
        let (_directory, certificate_path, key_path) = files(&certificate, &certificate);
        let error = ServerTls::from_pem_files(&certificate_path, &key_path).unwrap_err();
        assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error:?}");
        assert!(error.to_string().contains(&key_path.display().to_string()));
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (certificate, _) = self_signed();
        let (_, other_key) = self_signed();
        let (_directory, certificate_path, key_path) = files(&certificate, &other_key);
        let error = ServerTls::from_pem_files(&certificate_path, &key_path).unwrap_err();
        assert!(matches!(error, TlsError::KeyMismatch { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!(
                "the key in {} does not match the certificate in {}",
                key_path.display(),
                certificate_path.display()
            )
        );
    }

    #[test]
    fn a_missing_file_names_the_file() {
        let directory = tempfile::tempdir().unwrap();
        let missing = directory.path().join("nowhere.pem");
        let error = ServerTls::from_pem_files(&missing, &missing).unwrap_err();
        assert!(matches!(error, TlsError::Read { .. }), "{error:?}");
        assert_eq!(
            error.to_string(),
            format!("could not read {}", missing.display())
        );
    }
}
