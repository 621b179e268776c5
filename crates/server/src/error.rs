//! Server errors and their HTTP form. 4xx bodies say what to fix; 5xx bodies are generic and the
//! detail goes to the log (which never carries PHI: ids and codes only).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dosewitness_protocol::ApiError;

/// Errors starting or running the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("could not listen on {address} (is the port in use? use port 0 to pick a free one)")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error("{action} failed")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("the server database {location} could not be opened: {reason}")]
    DatabaseOpen { location: String, reason: String },
    #[error("database error")]
    Database(#[source] sqlx::Error),
    /// A concurrent request wrote the same rows first (a unique key taken, a serialization
    /// failure or deadlock, SQLite busy): nothing of this request was kept and it may be retried.
    #[error("a concurrent write conflicted with this one")]
    WriteConflict(#[source] sqlx::Error),
    #[error("stored record could not be decoded: {0}")]
    Decode(String),
    #[error("the evidence store {location} could not be opened: {reason}")]
    EvidenceStoreOpen { location: String, reason: String },
    /// Reading or writing an evidence blob failed (the message names the key: ids only).
    #[error("evidence store: {action} failed")]
    EvidenceStore {
        action: &'static str,
        source: object_store::Error,
    },
}

impl From<sqlx::Error> for ServerError {
    fn from(error: sqlx::Error) -> Self {
        if is_write_conflict(&error) {
            Self::WriteConflict(error)
        } else {
            Self::Database(error)
        }
    }
}

/// Whether `error` means another transaction got to the same rows first, so that retrying the
/// whole request is the right answer.
fn is_write_conflict(error: &sqlx::Error) -> bool {
    let Some(database_error) = error.as_database_error() else {
        return false;
    };
    database_error.kind() == sqlx::error::ErrorKind::UniqueViolation
        || matches!(
            database_error.code().as_deref(),
            // PostgreSQL serialization_failure and deadlock_detected; SQLite BUSY and
            // BUSY_SNAPSHOT (a read snapshot went stale before the write).
            Some("40001" | "40P01" | "5" | "517")
        )
}

/// An HTTP error response: status, stable code and a message for people.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header of `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "log in, or send a valid bearer token",
        )
    }
}

impl From<ServerError> for ApiFailure {
    fn from(error: ServerError) -> Self {
        if let ServerError::WriteConflict(source) = &error {
            tracing::warn!(error = %source, "request lost a write conflict; the client may retry");
            return Self::new(
                StatusCode::CONFLICT,
                "write_conflict",
                "a concurrent request changed the same records; nothing was stored, retry",
            );
        }
        tracing::error!(error = %error_chain(&error), "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

/// `error` and its sources, joined by ": ", for the log (a `Display` names its own level only).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

impl From<sqlx::Error> for ApiFailure {
    fn from(error: sqlx::Error) -> Self {
        ServerError::from(error).into()
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        let body = ApiError {
            code: self.code.to_string(),
            message: self.message,
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}
