//! Router tests with `oneshot` against a real SQLite database in a temp dir.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use dosewitness_domain::FixedClock;
use dosewitness_server::{AppState, Database, router};
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

const ADMIN: &str = "test-admin-token-0123456789abcdef0123456789";

async fn state() -> (AppState, tempfile::TempDir) {
    let directory = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&directory.path().join("server.db"))
        .await
        .unwrap();
    let clock = Arc::new(FixedClock(
        Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).unwrap(),
    ));
    (AppState::new(database, clock, ADMIN.to_string()), directory)
}

async fn call(
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
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

async fn create_patient(state: &AppState) -> String {
    let (status, study) = call(
        state,
        "POST",
        "/api/v1/studies",
        Some(ADMIN),
        Some(r#"{"code":"S-1","title":"Study"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{study}");
    let path = format!("/api/v1/studies/{}/sites", study["id"].as_str().unwrap());
    let (status, site) = call(
        state,
        "POST",
        &path,
        Some(ADMIN),
        Some(r#"{"name":"Site A"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{site}");
    let path = format!("/api/v1/sites/{}/patients", site["id"].as_str().unwrap());
    let (status, patient) = call(
        state,
        "POST",
        &path,
        Some(ADMIN),
        Some(r#"{"subject_code":"001-0001","display_name":"Pat Example"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{patient}");
    patient["id"].as_str().unwrap().to_string()
}

fn regimen_body(dose_times: &[&str], before: i64, after: i64) -> String {
    json!({
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

#[tokio::test]
async fn coordinator_endpoints_need_the_admin_token() {
    let (state, _directory) = state().await;
    for token in [None, Some("wrong-token")] {
        let (status, body) = call(
            &state,
            "POST",
            "/api/v1/studies",
            token,
            Some(r#"{"code":"S","title":"T"}"#),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "unauthorized");
    }
    let (status, _) = call(&state, "GET", "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn malformed_and_unknown_input_gets_a_4xx_with_a_code() {
    let (state, _directory) = state().await;
    let cases = [
        (r#"{"code":"S","title":"#, StatusCode::BAD_REQUEST),
        (
            r#"{"code":"S","title":"T","sponsor":"x"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (r#"{"code":"S"}"#, StatusCode::UNPROCESSABLE_ENTITY),
        (
            r#"{"code":"","title":"T"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ];
    for (body, expected) in cases {
        let (status, response) =
            call(&state, "POST", "/api/v1/studies", Some(ADMIN), Some(body)).await;
        assert_eq!(status, expected, "{body} -> {response}");
        assert!(response["code"].is_string(), "{response}");
    }
    let (status, response) = call(
        &state,
        "POST",
        "/api/v1/studies/not-a-uuid/sites",
        Some(ADMIN),
        Some(r#"{"name":"x"}"#),
    )
    .await;
    assert_eq!(
        (status, response["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_id"))
    );
}

#[tokio::test]
async fn injection_payloads_are_stored_as_text_and_harm_nothing() {
    let (state, _directory) = state().await;
    let nasty = r#"{"code":"x'); DROP TABLE studies;--","title":"<script>alert(1)</script>"}"#;
    let (status, _) = call(&state, "POST", "/api/v1/studies", Some(ADMIN), Some(nasty)).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _) = call(
        &state,
        "POST",
        "/api/v1/studies",
        Some(ADMIN),
        Some(r#"{"code":"S-2","title":"ok"}"#),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the studies table must still exist"
    );
    let (status, body) = call(&state, "POST", "/api/v1/studies", Some(ADMIN), Some(nasty)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate"))
    );
}

#[tokio::test]
async fn regimens_are_validated_and_enrolment_codes_work_once() {
    let (state, _directory) = state().await;
    let patient = create_patient(&state).await;
    let path = format!("/api/v1/patients/{patient}/regimens");
    let (status, body) = call(
        &state,
        "POST",
        &path,
        Some(ADMIN),
        Some(&regimen_body(&["08:00:00", "09:00:00"], 60, 60)),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_regimen")),
        "{body}"
    );
    let (status, plan) = call(
        &state,
        "POST",
        &path,
        Some(ADMIN),
        Some(&regimen_body(&["08:00:00", "20:00:00"], 60, 120)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["regimen"]["time_zone"], "Europe/Berlin");

    let (status, code) = call(
        &state,
        "POST",
        &format!("/api/v1/patients/{patient}/enrolment-codes"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let enrol = json!({"code": code["code"], "public_key": hex::encode(key.verifying_key().to_bytes()), "label": "tablet"}).to_string();
    let (status, enrolment) =
        call(&state, "POST", "/api/v1/devices/enrol", None, Some(&enrol)).await;
    assert_eq!(status, StatusCode::CREATED, "{enrolment}");
    assert_eq!(enrolment["patient"]["id"], patient.as_str());
    assert_eq!(enrolment["regimens"].as_array().unwrap().len(), 1);
    let (status, again) = call(&state, "POST", "/api/v1/devices/enrol", None, Some(&enrol)).await;
    assert_eq!(
        (status, again["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("invalid_enrolment_code"))
    );

    // The device token opens the device's own endpoints only.
    let device = enrolment["device_id"].as_str().unwrap();
    let token = enrolment["device_token"].as_str().unwrap();
    let (status, regimens) = call(
        &state,
        "GET",
        &format!("/api/v1/devices/{device}/regimens"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{regimens}");
    let other_device = dosewitness_domain::DeviceId::generate(Utc::now());
    let (status, _) = call(
        &state,
        "GET",
        &format!("/api/v1/devices/{other_device}/regimens"),
        Some(token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = call(
        &state,
        "POST",
        "/api/v1/studies",
        Some(token),
        Some(r#"{"code":"Z","title":"Z"}"#),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a device token is not an admin token"
    );
}

#[tokio::test]
async fn adherence_needs_a_valid_period() {
    let (state, _directory) = state().await;
    let patient = create_patient(&state).await;
    let base = format!("/api/v1/patients/{patient}/adherence");
    let (status, body) = call(&state, "GET", &base, Some(ADMIN), None).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (status, body) = call(
        &state,
        "GET",
        &format!("{base}?from=2026-03-02T00:00:00Z&to=2026-03-01T00:00:00Z"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (status, body) = call(
        &state,
        "GET",
        &format!("{base}?from=2026-03-01T00:00:00Z&to=2026-03-02T00:00:00Z"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scheduled"], 0);
    assert!(body["ratio"].is_null());
}

#[tokio::test]
async fn oversized_bodies_are_refused_and_metrics_count_responses() {
    let (state, _directory) = state().await;
    let huge = format!(
        r#"{{"code":"S","title":"{}"}}"#,
        "x".repeat(3 * 1024 * 1024)
    );
    let (status, _) = call(&state, "POST", "/api/v1/studies", Some(ADMIN), Some(&huge)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = call(
        &state,
        "POST",
        "/api/v1/studies",
        Some(ADMIN),
        Some(r#"{"code":"M","title":"T"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(&state, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(
        text.contains(r#"dosewitness_http_requests_total{class="4xx"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"dosewitness_http_requests_total{class="2xx"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("dosewitness_dose_events_total{result=\"accepted\"} 0"),
        "{text}"
    );
}
