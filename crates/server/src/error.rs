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
    Database(#[from] sqlx::Error),
    #[error("stored record could not be decoded: {0}")]
    Decode(String),
}

/// An HTTP error response: status, stable code and a message for people.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiFailure {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
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
            "missing or invalid bearer token",
        )
    }
}

impl From<ServerError> for ApiFailure {
    fn from(error: ServerError) -> Self {
        tracing::error!(error = %error, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
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
        (self.status, Json(body)).into_response()
    }
}
