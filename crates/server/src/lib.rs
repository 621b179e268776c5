//! The clinic backend: enrolment, idempotent ingest of signed dose events, adherence.
//! axum + sqlx; SQLite is the embedded default (a file under the data dir).
//!
//! Entry points: [`Database::open_sqlite`] then [`router`] for in-process use and tests
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

pub use db::Database;
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

/// A random 256-bit secret as 64 hex digits (device tokens, admin tokens, enrolment codes).
pub fn random_token() -> Result<String, ServerError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| ServerError::Io {
        action: "drawing random bytes",
        source: std::io::Error::other(error.to_string()),
    })?;
    Ok(hex::encode(bytes))
}
