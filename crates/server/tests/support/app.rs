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

/// A regimen body: Metformin 500 mg tablets at `dose_times` (Berlin), from 1 March 2026, taken
/// `before` minutes early to `after` minutes late.
pub fn regimen_body(dose_times: &[&str], before: i64, after: i64) -> String {
    serde_json::json!({
        "medication": {"name": "Metformin", "strength_mg": 500.0, "form": "tablet"},
        "units_per_dose": 1,
        "time_zone": "Europe/Berlin",
        "dose_times": dose_times,
        "window": {"before_minutes": before, "after_minutes": after},
        "start_date": "2026-03-01",
        "end_date": null
    })
    .to_string()
}

/// The next dose event of a device's chain after `previous` (the first if `None`) for `plan`,
/// scheduled at `scheduled_at` and recorded 3 minutes later, signed with `key`. A fresh event
/// id each call, so two calls after the same event make a fork.
pub fn signed_event(
    key: &ed25519_dalek::SigningKey,
    device_id: dosewitness_domain::DeviceId,
    plan: &dosewitness_protocol::RegimenPlan,
    previous: Option<&dosewitness_protocol::SignedDoseEvent>,
    scheduled_at: chrono::DateTime<Utc>,
    outcome: dosewitness_domain::DoseOutcome,
) -> dosewitness_protocol::SignedDoseEvent {
    use dosewitness_protocol::chain::{ChainRecord, GENESIS_HASH};
    dosewitness_protocol::chain::ChainRecord {
        format: ChainRecord::FORMAT,
        sequence: previous.map_or(0, dosewitness_protocol::SignedDoseEvent::sequence) + 1,
        previous_hash: previous
            .map_or_else(|| GENESIS_HASH.to_string(), |event| event.hash.clone()),
        event: dosewitness_domain::DoseEvent {
            id: dosewitness_domain::DoseEventId::generate(scheduled_at),
            device_id,
            patient_id: plan.regimen.patient_id,
            regimen_id: plan.regimen.id,
            medication_id: plan.medication.id,
            scheduled_at,
            recorded_at: scheduled_at + chrono::Duration::minutes(3),
            outcome,
            reasons: vec![],
            scores: dosewitness_domain::CheckScores::default(),
        },
    }
    .sign(key)
}
