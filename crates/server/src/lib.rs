//! The clinic backend: enrolment, idempotent ingest of signed dose events, adherence.
//! axum + sqlx; SQLite is the embedded default (a file under the data dir), PostgreSQL the
//! multi-site option, both behind [`Database`].
//!
//! Entry points: [`Database::open_sqlite`] or [`Database::connect`] (a `postgres://` or
//! `sqlite://` URL), then [`router`] for in-process use and tests
//! (`router(state).oneshot(request)`), or [`serve`] on a bound listener with graceful shutdown.
//!
//! Security model in this version: coordinator endpoints need the deployment's admin bearer
//! token; device endpoints need the device's own bearer token, issued once at enrolment and
//! stored only as a sha256 hash. Every event is verified against the device's Ed25519 key and
//! its hash chain before it is stored.

mod db;
mod error;
mod metrics;
mod routes;

pub use db::{Backend, Database};
pub use error::{ApiFailure, ServerError};
pub use routes::router;

use dosewitness_domain::{Clock, Redacted};
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Shared state of every request handler.
#[derive(Debug, Clone)]
pub struct AppState {
    pub database: Database,
    pub clock: Arc<dyn Clock>,
    /// Bearer token for coordinator (admin) endpoints.
    pub admin_token: Redacted<String>,
    metrics: Arc<metrics::Metrics>,
}

impl AppState {
    /// State for a backend over `database`, with fresh metrics.
    pub fn new(database: Database, clock: Arc<dyn Clock>, admin_token: String) -> Self {
        Self {
            database,
            clock,
            admin_token: Redacted::new(admin_token),
            metrics: Arc::default(),
        }
    }
}

/// Serves `state` on `listener` until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|error| ServerError::Io {
            action: "serving HTTP",
            source: error,
        })
}

/// A backend serving on a loopback port inside this process (the demo, `seed`, benchmarks and
/// tests), with a fresh admin token. Stops when dropped.
#[derive(Debug)]
pub struct LoopbackServer {
    pub url: String,
    pub admin_token: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LoopbackServer {
    /// Opens (or creates) the SQLite database at `database_path`, binds `127.0.0.1:port` (0 picks
    /// a free port) and serves in the background on the current tokio runtime.
    pub async fn start(
        database_path: &std::path::Path,
        port: u16,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let database = Database::open_sqlite(database_path).await?;
        Self::start_with(database, port, clock).await
    }

    /// As [`LoopbackServer::start`], over an already opened `database` (SQLite or PostgreSQL).
    pub async fn start_with(
        database: Database,
        port: u16,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ServerError> {
        let address = format!("127.0.0.1:{port}");
        let listener = TcpListener::bind(&address)
            .await
            .map_err(|source| ServerError::Bind {
                address: address.clone(),
                source,
            })?;
        let url = format!(
            "http://{}",
            listener
                .local_addr()
                .map_err(|source| ServerError::Bind { address, source })?
        );
        let admin_token = random_token()?;
        let state = AppState::new(database, clock, admin_token.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(error) = serve(listener, state, shutdown).await {
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

/// A random 256-bit secret as 64 hex digits (device tokens, admin tokens, enrolment codes).
pub fn random_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| ServerError::Io {
        action: "drawing random bytes",
        source: std::io::Error::other(error.to_string()),
    })?;
    Ok(hex::encode(bytes))
}
