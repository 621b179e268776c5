//! The backend under test, called in-process with `oneshot`: shared by the router test suites.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)] // tests fail loudly by design

use super::{Backend, TestDatabase};
use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use chrono::{TimeZone, Utc};
use dosewitness_domain::{Clock, ManualClock};
use dosewitness_protocol::Role;
use dosewitness_server::{AppState, NewAccount, router};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

/// API token of the test admin account.
pub const ADMIN: &str = "dwt_test-admin-token-0123456789abcdef0123456789";

/// Generates `sqlite::NAME` and `postgres::NAME` for each `async fn NAME(backend: Backend)`.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// The backend's state over a fresh database with an `admin` account whose API token is
/// [`ADMIN`], and the clock it runs on (2026-03-02 09:00 UTC until moved); keep the
/// `TestDatabase` alive while testing.
pub async fn state(backend: Backend) -> (AppState, TestDatabase, Arc<ManualClock>) {
    let database = TestDatabase::open(backend).await;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    let account = NewAccount {
        username: "admin".into(),
        password: None,
        role: Role::Admin,
        scopes: Vec::new(),
    };
    database
        .database
        .create_account(&account, clock.now())
        .await
        .unwrap();
    database
        .database
        .register_api_token("admin", "tests", ADMIN, clock.now())
        .await
        .unwrap();
    let state = AppState::new(database.database.clone(), clock.clone());
    (state, database, clock)
}

/// A response: status, headers and the body as JSON (or as a JSON string if it is not JSON).
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Sends `request` through a fresh router over `state`.
pub async fn send(state: &AppState, request: Request<Body>) -> Answer {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    Answer {
        status,
        headers,
        body,
    }
}

/// Calls `method path` with an optional bearer token and JSON body.
pub async fn call(
    state: &AppState,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
        .unwrap();
    let answer = send(state, request).await;
    (answer.status, answer.body)
}
