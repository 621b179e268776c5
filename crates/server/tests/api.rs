//! Router tests with `oneshot`, each run on SQLite (a file in a temp dir) and on PostgreSQL (a
//! throwaway cluster of its own; see `support`): `sqlite::NAME` and `postgres::NAME`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod support;

use support::app::{ADMIN, call, regimen_body, signed_event, state};

use axum::http::StatusCode;
use chrono::{DateTime, Duration, TimeZone, Utc};
use dosewitness_domain::DoseOutcome;
use dosewitness_protocol::{DoseEventBatch, PROTOCOL_VERSION, SignedDoseEvent};
use dosewitness_server::AppState;
use serde_json::json;
use support::Backend;

on_every_backend!(
    coordinator_endpoints_need_the_admin_token,
    malformed_and_unknown_input_gets_a_4xx_with_a_code,
    injection_payloads_are_stored_as_text_and_harm_nothing,
    regimens_are_validated_and_enrolment_codes_work_once,
    adherence_needs_a_valid_period,
    oversized_bodies_are_refused_and_metrics_count_responses,
    ingest_is_idempotent_and_all_or_nothing,
    concurrent_batches_from_one_device_never_both_pass,
    a_revoked_device_is_refused_and_keeps_what_it_delivered,
);

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

async fn coordinator_endpoints_need_the_admin_token(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    for token in [
        None,
        Some("wrong-token"),
        Some("dwt_0123456789abcdef0123456789abcdef01"),
    ] {
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

async fn malformed_and_unknown_input_gets_a_4xx_with_a_code(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
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

async fn injection_payloads_are_stored_as_text_and_harm_nothing(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
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

async fn regimens_are_validated_and_enrolment_codes_work_once(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
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

async fn adherence_needs_a_valid_period(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
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

async fn oversized_bodies_are_refused_and_metrics_count_responses(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
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

/// An enrolled device of a patient with one daily 08:00 (Europe/Berlin) regimen.
struct Device {
    id: dosewitness_domain::DeviceId,
    patient: String,
    token: String,
    key: ed25519_dalek::SigningKey,
    plan: dosewitness_protocol::RegimenPlan,
}

async fn enrolled_device(state: &AppState) -> Device {
    let patient = create_patient(state).await;
    let (status, plan) = call(
        state,
        "POST",
        &format!("/api/v1/patients/{patient}/regimens"),
        Some(ADMIN),
        Some(&regimen_body(&["08:00:00"], 60, 120)),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let (status, code) = call(
        state,
        "POST",
        &format!("/api/v1/patients/{patient}/enrolment-codes"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{code}");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let enrol = json!({"code": code["code"], "public_key": hex::encode(key.verifying_key().to_bytes()), "label": "phone"}).to_string();
    let (status, enrolment) =
        call(state, "POST", "/api/v1/devices/enrol", None, Some(&enrol)).await;
    assert_eq!(status, StatusCode::CREATED, "{enrolment}");
    Device {
        id: enrolment["device_id"].as_str().unwrap().parse().unwrap(),
        patient,
        token: enrolment["device_token"].as_str().unwrap().to_string(),
        key,
        plan: serde_json::from_value(plan).unwrap(),
    }
}

/// `count` signed events continuing the chain after `previous`, one a day from 1 March 2026
/// (event n is the 08:00 Berlin dose of day n, taken 3 minutes late). Fresh event ids each
/// call, so two calls after the same event make a fork.
fn dose_events(
    device: &Device,
    previous: Option<&SignedDoseEvent>,
    count: u64,
) -> Vec<SignedDoseEvent> {
    let mut previous = previous.cloned();
    let mut events = Vec::new();
    for _ in 0..count {
        let sequence = previous.as_ref().map_or(0, SignedDoseEvent::sequence) + 1;
        let scheduled_at: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 3, 1, 7, 0, 0).unwrap()
            + Duration::days(i64::try_from(sequence).unwrap() - 1);
        let signed = signed_event(
            &device.key,
            device.id,
            &device.plan,
            previous.as_ref(),
            scheduled_at,
            DoseOutcome::Verified,
        );
        events.push(signed.clone());
        previous = Some(signed);
    }
    events
}

/// Posts `events` as one batch; the status, the error code (if any) and the ack statuses.
async fn ingest(
    state: &AppState,
    device: &Device,
    events: &[SignedDoseEvent],
) -> (StatusCode, Option<String>, Vec<String>) {
    let batch = serde_json::to_string(&DoseEventBatch {
        protocol_version: PROTOCOL_VERSION,
        events: events.to_vec(),
    })
    .unwrap();
    let (status, body) = call(
        state,
        "POST",
        &format!("/api/v1/devices/{}/dose-events", device.id),
        Some(&device.token),
        Some(&batch),
    )
    .await;
    assert!(!status.is_server_error(), "{status}: {body}");
    let acks = body["acks"]
        .as_array()
        .map(|acks| {
            acks.iter()
                .map(|ack| ack["status"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    (status, body["code"].as_str().map(str::to_string), acks)
}

fn statuses(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_string()).collect()
}

async fn ingest_is_idempotent_and_all_or_nothing(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    let device = enrolled_device(&state).await;
    let first = dose_events(&device, None, 2);
    assert_eq!(
        ingest(&state, &device, &first).await,
        (StatusCode::OK, None, statuses(&["accepted", "accepted"]))
    );
    let third = dose_events(&device, first.last(), 1);
    let resent = [first.clone(), third.clone()].concat();
    assert_eq!(
        ingest(&state, &device, &resent).await,
        (
            StatusCode::OK,
            None,
            statuses(&["duplicate", "duplicate", "accepted"])
        )
    );

    let next = dose_events(&device, third.last(), 2);
    let (status, code, _) = ingest(&state, &device, &next[1..]).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::CONFLICT, Some("chain_gap"))
    );
    let mut forged = next.clone();
    forged[1].signature = hex::encode([0u8; 64]);
    let (status, code, _) = ingest(&state, &device, &forged).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("bad_signature"))
    );
    let fork = dose_events(&device, first.last(), 1);
    let (status, code, _) = ingest(&state, &device, &fork).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::CONFLICT, Some("chain_fork"))
    );
    // Nothing of the rejected batches was kept: event 4 is new, and the chain continues.
    assert_eq!(
        ingest(&state, &device, &next).await,
        (StatusCode::OK, None, statuses(&["accepted", "accepted"]))
    );

    let (status, report) = call(
        &state,
        "GET",
        &format!(
            "/api/v1/patients/{}/adherence?from=2026-03-01T00:00:00Z&to=2026-03-06T00:00:00Z",
            device.patient
        ),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        (
            report["scheduled"].as_u64(),
            report["verified_on_time"].as_u64()
        ),
        (Some(5), Some(5)),
        "{report}"
    );
    let (status, body) = call(&state, "GET", "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let text = body.as_str().unwrap();
    assert!(
        text.contains("dosewitness_dose_events_total{result=\"accepted\"} 5"),
        "{text}"
    );
}

async fn concurrent_batches_from_one_device_never_both_pass(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    let device = enrolled_device(&state).await;
    let mut head = dose_events(&device, None, 1);
    assert_eq!(ingest(&state, &device, &head).await.0, StatusCode::OK);
    for round in 0..4 {
        // Two forks of the same chain at once: exactly one is stored, the other is refused
        // with a 409 the device can act on, and nothing of it is kept.
        let left = dose_events(&device, head.last(), 3);
        let right = dose_events(&device, head.last(), 3);
        let (left_result, right_result) = tokio::join!(
            ingest(&state, &device, &left),
            ingest(&state, &device, &right)
        );
        let accepted = statuses(&["accepted", "accepted", "accepted"]);
        let (winner, loser, refusal) = match (&left_result, &right_result) {
            ((StatusCode::OK, None, acks), refusal) if *acks == accepted => {
                (&left, &right, refusal)
            }
            (refusal, (StatusCode::OK, None, acks)) if *acks == accepted => {
                (&right, &left, refusal)
            }
            _ => panic!(
                "round {round}: not exactly one batch stored: {left_result:?} {right_result:?}"
            ),
        };
        assert_eq!(
            refusal.0,
            StatusCode::CONFLICT,
            "round {round}: {refusal:?}"
        );
        assert!(
            matches!(refusal.1.as_deref(), Some("chain_fork" | "write_conflict")),
            "round {round}: {refusal:?}"
        );
        assert_eq!(
            ingest(&state, &device, winner).await,
            (
                StatusCode::OK,
                None,
                statuses(&["duplicate", "duplicate", "duplicate"])
            ),
            "round {round}: the winner is stored whole"
        );
        let (status, code, _) = ingest(&state, &device, loser).await;
        assert_eq!(
            (status, code.as_deref()),
            (StatusCode::CONFLICT, Some("chain_fork")),
            "round {round}: the loser is not stored"
        );

        // The same batch sent twice at once (a retry racing the original): the device's
        // batches are serialised, so both succeed and the events are stored once.
        let next = dose_events(&device, winner.last(), 2);
        let (first, second) = tokio::join!(
            ingest(&state, &device, &next),
            ingest(&state, &device, &next)
        );
        let mut acks = [first.2.clone(), second.2.clone()];
        acks.sort();
        assert_eq!(
            (first.0, second.0, acks.to_vec()),
            (
                StatusCode::OK,
                StatusCode::OK,
                vec![
                    statuses(&["accepted", "accepted"]),
                    statuses(&["duplicate", "duplicate"])
                ]
            ),
            "round {round}: {first:?} {second:?}"
        );
        head = next;
    }
}

async fn a_revoked_device_is_refused_and_keeps_what_it_delivered(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    let device = enrolled_device(&state).await;
    let delivered = dose_events(&device, None, 2);
    assert_eq!(ingest(&state, &device, &delivered).await.0, StatusCode::OK);
    let revoke = format!("/api/v1/devices/{}/revoke", device.id);
    assert_eq!(
        call(&state, "POST", &revoke, Some(&device.token), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "a device cannot revoke anything"
    );
    assert_eq!(
        call(&state, "POST", &revoke, Some(ADMIN), None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&state, "POST", &revoke, Some(ADMIN), None).await.0,
        StatusCode::NO_CONTENT,
        "revoking again changes nothing"
    );
    let unknown = format!(
        "/api/v1/devices/{}/revoke",
        dosewitness_domain::DeviceId::generate(Utc::now())
    );
    assert_eq!(
        call(&state, "POST", &unknown, Some(ADMIN), None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, code, _) =
        ingest(&state, &device, &dose_events(&device, delivered.last(), 1)).await;
    assert_eq!(
        (status, code.as_deref()),
        (StatusCode::FORBIDDEN, Some("device_revoked"))
    );
    let (status, body) = call(
        &state,
        "GET",
        &format!("/api/v1/devices/{}/regimens", device.id),
        Some(&device.token),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, adherence) = call(
        &state,
        "GET",
        &format!(
            "/api/v1/patients/{}/adherence?from=2026-03-01T00:00:00Z&to=2026-03-03T00:00:00Z",
            device.patient
        ),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{adherence}");
    assert_eq!(
        adherence["verified_on_time"].as_u64(),
        Some(2),
        "what it delivered stays: {adherence}"
    );
}
