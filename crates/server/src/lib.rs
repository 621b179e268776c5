//! The clinic backend: enrolment, idempotent ingest of signed dose events, adherence.
//! axum + sqlx; SQLite is the embedded default (a file under the data dir), PostgreSQL the
//! multi-site option, both behind [`Database`].
//!
//! Entry points: [`Database::open_sqlite`] or [`Database::connect`] (a `postgres://` or
//! `sqlite://` URL), then [`router`] for in-process use and tests
//! (`router(state).oneshot(request)`), or [`serve`] on a bound listener with graceful shutdown
//! ([`serve_tls`] for HTTPS with a [`ServerTls`] certificate and key).
//!
//! Security model: people have accounts with a role scoped to studies, sites or patients, and
//! use a session cookie (with CSRF token and idle logoff) or an API token (see [`auth`]);
//! devices use their own bearer token, issued once at enrolment. Secrets are stored only as
//! sha256 hashes, passwords as Argon2id hashes. Every event is verified against the device's
//! Ed25519 key and its hash chain before it is stored. Reads and writes of patient data are
//! recorded in an append-only audit log (who, what, when, from where).

pub mod auth;
mod db;
mod error;
mod evidence;
mod metrics;
mod openapi;
mod routes;
pub mod tls;

pub use auth::AuthConfig;
pub use auth::accounts::{AccountError, NewAccount};
pub use db::{Backend, Database};
pub use error::{ApiFailure, ServerError};
pub use evidence::EvidenceStore;
pub use routes::router;
pub use tls::{ServerTls, TlsError, TlsListener};

use dosewitness_domain::Clock;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Shared state of every request handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub database: Database,
    pub clock: Arc<dyn Clock>,
    pub auth: AuthConfig,
    /// Where evidence frames are kept; without one the evidence endpoints answer 503.
    pub evidence: Option<EvidenceStore>,
    login_throttle: Arc<auth::LoginThrottle>,
    metrics: Arc<metrics::Metrics>,
}

impl AppState {
    /// State for a backend over `database` with the default [`AuthConfig`] (`Secure` cookies,
    /// 15 minutes idle logoff), fresh metrics and login throttle.
    pub fn new(database: Database, clock: Arc<dyn Clock>) -> Self {
        Self {
            database,
            clock,
            auth: AuthConfig::default(),
            evidence: None,
            login_throttle: Arc::default(),
            metrics: Arc::default(),
        }
    }

    /// The same state with other session settings.
    #[must_use]
    pub fn with_auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// The same state, keeping evidence frames in `store`.
    pub fn with_evidence_store(mut self, store: EvidenceStore) -> Self {
        self.evidence = Some(store);
        self
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|error| ServerError::Io {
            action: "serving HTTP",
            source: error,
        })
}

/// As [`serve`], over HTTPS: TLS handshakes run in the background of a [`TlsListener`]
/// (see [`tls`]), and handlers still see the peer's `ConnectInfo<SocketAddr>`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: &ServerTls,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    use axum::serve::ListenerExt;
    let listener = TlsListener::new(listener, tls).map_err(|source| ServerError::Io {
        action: "starting the TLS listener",
        source,
    })?;
    // axum implements `Connected` (the source of `ConnectInfo`) for the peer address of any
    // listener wrapped by `tap_io`; a no-op tap makes `ConnectInfo<SocketAddr>` work over TLS.
    let listener = listener.tap_io(|_| {});
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|error| ServerError::Io {
            action: "serving HTTPS",
            source: error,
        })
}

/// Username of the account that a [`LoopbackServer`] creates for its own use.
pub const LOOPBACK_ADMIN: &str = "loopback-admin";

/// A backend serving on a loopback port inside this process (the demo, `seed`, benchmarks and
/// tests). It has an admin account [`LOOPBACK_ADMIN`] (no password; API tokens only) and
/// issues it a fresh API token at each start. Stops when dropped.
#[derive(Debug)]
pub struct LoopbackServer {
    pub url: String,
    /// API token of the [`LOOPBACK_ADMIN`] account.
    pub admin_token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LoopbackServer {
    /// Opens (or creates) the SQLite database at `database_path`, binds `127.0.0.1:port` (0 picks
    /// a free port) and serves in the background on the current tokio runtime. Evidence frames
    /// go to `evidence/` beside the database.
    pub async fn start(
        database_path: &std::path::Path,
        port: u16,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let database = Database::open_sqlite(database_path).await?;
        let directory = database_path.parent().unwrap_or(std::path::Path::new("."));
        let evidence = EvidenceStore::local(&directory.join("evidence"))?;
        Self::start_with_evidence(database, Some(evidence), port, clock).await
    }

    /// As [`LoopbackServer::start`], over an already opened `database` (SQLite or PostgreSQL),
    /// without an evidence store.
    pub async fn start_with(
        database: Database,
        port: u16,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        Self::start_with_evidence(database, None, port, clock).await
    }

    /// As [`LoopbackServer::start_with`], keeping evidence frames in `evidence`.
    pub async fn start_with_evidence(
        database: Database,
        evidence: Option<EvidenceStore>,
        port: u16,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        Self::launch(database, evidence, port, clock, None).await
    }

    /// As [`LoopbackServer::start_with`], over HTTPS with `tls` (its certificate must name
    /// `127.0.0.1`); the [`LoopbackServer::url`] is `https://127.0.0.1:PORT`.
    pub async fn start_tls(
        database: Database,
        port: u16,
        clock: Arc<dyn Clock>,
        tls: ServerTls,
    ) -> Result<Self, ServerError> {
        Self::launch(database, None, port, clock, Some(tls)).await
    }

    async fn launch(
        database: Database,
        evidence: Option<EvidenceStore>,
        port: u16,
        clock: Arc<dyn Clock>,
        tls: Option<ServerTls>,
    ) -> Result<Self, ServerError> {
        let address = format!("127.0.0.1:{port}");
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ServerError::Bind {
                address: address.clone(),
                source,
            })?;
        let url = format!(
            "{}://{}",
            if tls.is_some() { "https" } else { "http" },
            listener
                .local_addr()
                .map_err(|source| ServerError::Bind { address, source })?
        );
        let admin_token = bootstrap_admin_token(&database, clock.now()).await?;
        let auth = AuthConfig {
            secure_cookies: false,
            ..AuthConfig::default()
        };
        let mut state = AppState::new(database, clock).with_auth(auth);
        state.evidence = evidence;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let served = match tls {
                Some(tls) => serve_tls(listener, &tls, state, shutdown).await,
                None => serve(listener, state, shutdown).await,
            };
            if let Err(error) = served {
                tracing::error!(%error, "clinic backend stopped");
            }
        });
        Ok(Self {
            url,
            admin_token,
            stop: Some(stop),
        })
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Creates the [`LOOPBACK_ADMIN`] account if missing, revokes its earlier API tokens and issues
/// it a new one.
async fn bootstrap_admin_token(
    database: &Database,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<String, ServerError> {
    if let Some(account) = database
        .user(auth::UserKey::Username(LOOPBACK_ADMIN))
        .await?
    {
        // One live loopback token at a time: the previous process's token dies with this start.
        database.revoke_tokens_of(&account.id, now).await?;
    } else {
        let account = NewAccount {
            username: LOOPBACK_ADMIN.to_string(),
            password: None,
            role: dosewitness_protocol::Role::Admin,
            scopes: Vec::new(),
        };
        database
            .create_account(&account, now)
            .await
            .map_err(account_error)?;
    }
    Ok(database
        .issue_api_token(LOOPBACK_ADMIN, "loopback server", now)
        .await
        .map_err(account_error)?
        .token)
}

fn account_error(error: AccountError) -> ServerError {
    match error {
        AccountError::Server(error) => error,
        other => ServerError::Decode(other.to_string()),
    }
}

/// A random 256-bit secret as 64 hex digits (device tokens, admin tokens, enrolment codes).
pub fn random_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| ServerError::Io {
        action: "drawing random bytes",
        source: std::io::Error::other(error.to_string()),
    })?;
    Ok(hex::encode(bytes))
}
