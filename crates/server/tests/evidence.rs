//! Evidence frames through the router (`oneshot`), each test on SQLite and on PostgreSQL
//! (`sqlite::NAME`, `postgres::NAME`): device uploads (hash, size, type, ownership,
//! idempotence, conflicts), the manifest a device resumes from, and reviewers' audited reads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod support;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use chrono::{TimeZone, Utc};
use dosewitness_domain::{DeviceId, DoseEventId, DoseOutcome};
use dosewitness_protocol::{
    DoseEventBatch, EVIDENCE_HASH_HEADER, MAX_EVIDENCE_FRAME_BYTES, PROTOCOL_VERSION, RegimenPlan,
    SignedDoseEvent,
};
use dosewitness_server::{AppState, EvidenceStore, router};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::app::{ADMIN, call, regimen_body, signed_event, state};
use support::{Backend, TestDatabase};
use tower::ServiceExt;

on_every_backend!(
    uploads_are_checked_idempotent_and_refuse_conflicting_bytes,
    devices_upload_only_for_their_own_events,
    reviewers_list_and_read_frames_and_every_read_is_audited,
    without_an_evidence_store_evidence_is_unavailable,
);

/// A real JPEG (a frame of the demo replay).
fn jpeg(frame: u32) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../assets/replays/demo/frame_{frame:04}.jpg"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The backend with an evidence store in a temp dir (kept alive by the returned `TempDir`).
async fn evidence_state(backend: Backend) -> (AppState, TestDatabase, tempfile::TempDir) {
    let (state, database, _clock) = state(backend).await;
    let directory = tempfile::tempdir().unwrap();
    let store = EvidenceStore::local(&directory.path().join("evidence")).unwrap();
    (state.with_evidence_store(store), database, directory)
}

/// An enrolled device (its own study, site and patient, told apart by `tag`) with one
/// delivered dose event.
struct Device {
    id: DeviceId,
    token: String,
    event: SignedDoseEvent,
}

async fn device_with_event(state: &AppState, tag: &str) -> Device {
    let (status, study) = call(
        state,
        "POST",
        "/api/v1/studies",
        Some(ADMIN),
        Some(&json!({"code": format!("S-{tag}"), "title": "Study"}).to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{study}");
    let (status, site) = call(
        state,
        "POST",
        &format!("/api/v1/studies/{}/sites", study["id"].as_str().unwrap()),
        Some(ADMIN),
        Some(r#"{"name":"Site A"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{site}");
    let (status, patient) = call(
        state,
        "POST",
        &format!("/api/v1/sites/{}/patients", site["id"].as_str().unwrap()),
        Some(ADMIN),
        Some(r#"{"subject_code":"001-0001","display_name":"Pat Example"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{patient}");
    let patient = patient["id"].as_str().unwrap();
    let regimen = regimen_body(&["08:00:00"], 60, 120);
    let (status, plan) = call(
        state,
        "POST",
        &format!("/api/v1/patients/{patient}/regimens"),
        Some(ADMIN),
        Some(&regimen),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let plan: RegimenPlan = serde_json::from_value(plan).unwrap();
    let (status, code) = call(
        state,
        "POST",
        &format!("/api/v1/patients/{patient}/enrolment-codes"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{code}");
    let key = ed25519_dalek::SigningKey::from_bytes(&Sha256::digest(tag.as_bytes()).into());
    let enrol = json!({
        "code": code["code"],
        "public_key": hex::encode(key.verifying_key().to_bytes()),
        "label": "phone"
    })
    .to_string();
    let (status, enrolment) =
        call(state, "POST", "/api/v1/devices/enrol", None, Some(&enrol)).await;
    assert_eq!(status, StatusCode::CREATED, "{enrolment}");
    let id: DeviceId = enrolment["device_id"].as_str().unwrap().parse().unwrap();
    let token = enrolment["device_token"].as_str().unwrap().to_string();
    let event = signed_event(
        &key,
        id,
        &plan,
        None,
        Utc.with_ymd_and_hms(2026, 3, 1, 7, 0, 0).unwrap(),
        DoseOutcome::NeedsReview,
    );
    let batch = serde_json::to_string(&DoseEventBatch {
        protocol_version: PROTOCOL_VERSION,
        events: vec![event.clone()],
    })
    .unwrap();
    let (status, ack) = call(
        state,
        "POST",
        &format!("/api/v1/devices/{id}/dose-events"),
        Some(&token),
        Some(&batch),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    Device { id, token, event }
}

/// A raw answer: status, content type and body bytes.
struct Raw {
    status: StatusCode,
    content_type: Option<String>,
    bytes: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }
}

async fn raw(state: &AppState, request: Request<Body>) -> Raw {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|value| value.to_str().unwrap().to_string());
    let bytes = to_bytes(response.into_body(), 4 << 20)
        .await
        .unwrap()
        .to_vec();
    Raw {
        status,
        content_type,
        bytes,
    }
}

/// `PUT`s `body` as frame `index` of `event_id` on `device_id`'s path, with `token` and the
/// given hash header.
async fn put_frame(
    state: &AppState,
    device_id: DeviceId,
    event_id: DoseEventId,
    index: &str,
    token: Option<&str>,
    hash: Option<&str>,
    body: Vec<u8>,
) -> Raw {
    let mut request = Request::builder()
        .method("PUT")
        .uri(format!(
            "/api/v1/devices/{device_id}/dose-events/{event_id}/evidence/{index}"
        ))
        .header("content-type", "image/jpeg");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(hash) = hash {
        request = request.header(EVIDENCE_HASH_HEADER, hash);
    }
    raw(state, request.body(Body::from(body)).unwrap()).await
}

/// Uploads `body` as frame `index` of the device's event, correctly signed and hashed.
async fn upload(state: &AppState, device: &Device, index: u32, body: &[u8]) -> Raw {
    put_frame(
        state,
        device.id,
        device.event.record.event.id,
        &index.to_string(),
        Some(&device.token),
        Some(&sha256_hex(body)),
        body.to_vec(),
    )
    .await
}

async fn get(state: &AppState, path: &str, token: Option<&str>) -> Raw {
    let mut request = Request::builder().method("GET").uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    raw(state, request.body(Body::empty()).unwrap()).await
}

fn metric(text: &str, result: &str) -> u64 {
    let prefix = format!("dosewitness_evidence_frames_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap()
        .parse()
        .unwrap()
}

async fn uploads_are_checked_idempotent_and_refuse_conflicting_bytes(backend: Backend) {
    let (state, _database, directory) = evidence_state(backend).await;
    let device = device_with_event(&state, "a").await;
    let event_id = device.event.record.event.id;
    let frame = jpeg(0);

    let first = upload(&state, &device, 0, &frame).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let ack = first.json();
    assert_eq!(
        (ack["status"].as_str(), ack["index"].as_u64()),
        (Some("accepted"), Some(0))
    );
    assert_eq!(ack["sha256"].as_str(), Some(sha256_hex(&frame).as_str()));
    // The blob's key is ids and the index only, and it holds exactly the bytes sent.
    let blob = directory
        .path()
        .join(format!("evidence/{}/{event_id}/0.jpg", device.id));
    assert_eq!(std::fs::read(&blob).unwrap(), frame);

    let again = upload(&state, &device, 0, &frame).await;
    assert_eq!(again.status, StatusCode::OK, "re-sending a stored frame");
    assert_eq!(again.json()["status"], "duplicate");
    let other = jpeg(1);
    let conflict = upload(&state, &device, 0, &other).await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);
    assert_eq!(conflict.json()["code"], "evidence_conflict");
    assert_eq!(
        std::fs::read(&blob).unwrap(),
        frame,
        "the stored frame is kept"
    );

    let mut damaged = frame.clone();
    damaged[100] ^= 0x01;
    // (index, hash header, body, expected status, expected code)
    type Case<'a> = (&'a str, Option<String>, Vec<u8>, StatusCode, &'a str);
    let cases: Vec<Case> = vec![
        (
            "1",
            Some(sha256_hex(&frame)),
            damaged,
            StatusCode::BAD_REQUEST,
            "hash_mismatch",
        ),
        (
            "1",
            None,
            other.clone(),
            StatusCode::BAD_REQUEST,
            "missing_content_hash",
        ),
        (
            "1",
            Some("not-a-hash".into()),
            other.clone(),
            StatusCode::BAD_REQUEST,
            "missing_content_hash",
        ),
        (
            "1",
            Some(sha256_hex(b"\x89PNG\r\n\x1a\n")),
            b"\x89PNG\r\n\x1a\n".to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_jpeg",
        ),
        (
            "64",
            Some(sha256_hex(&other)),
            other.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_index",
        ),
        (
            "x",
            Some(sha256_hex(&other)),
            other.clone(),
            StatusCode::BAD_REQUEST,
            "invalid_index",
        ),
    ];
    for (index, hash, body, status, code) in cases {
        let answer = put_frame(
            &state,
            device.id,
            event_id,
            index,
            Some(&device.token),
            hash.as_deref(),
            body,
        )
        .await;
        assert_eq!(
            (answer.status, answer.json()["code"].as_str()),
            (status, Some(code)),
            "index {index}"
        );
    }
    let mut too_big = vec![0u8; MAX_EVIDENCE_FRAME_BYTES + 1];
    too_big[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
    let answer = upload(&state, &device, 1, &too_big).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["code"], "frame_too_large");
    let mut largest = vec![0u8; MAX_EVIDENCE_FRAME_BYTES];
    largest[..3].copy_from_slice(&[0xFF, 0xD8, 0xFF]);
    assert_eq!(
        upload(&state, &device, 2, &largest).await.status,
        StatusCode::CREATED,
        "a frame of exactly the limit is accepted"
    );

    // The device resumes from the manifest: what the server holds, by index.
    let manifest = get(
        &state,
        &format!(
            "/api/v1/devices/{}/dose-events/{event_id}/evidence",
            device.id
        ),
        Some(&device.token),
    )
    .await;
    assert_eq!(manifest.status, StatusCode::OK);
    let manifest = manifest.json();
    assert_eq!(manifest["event_id"], event_id.to_string());
    let frames = manifest["frames"].as_array().unwrap();
    assert_eq!(frames.len(), 2, "{manifest}");
    assert_eq!(frames[0]["index"], 0);
    assert_eq!(frames[0]["sha256"], sha256_hex(&frame));
    assert_eq!(frames[0]["size_bytes"], frame.len());
    assert_eq!(frames[1]["index"], 2);

    let metrics = get(&state, "/metrics", None).await;
    let metrics = String::from_utf8(metrics.bytes).unwrap();
    assert_eq!(metric(&metrics, "stored"), 2);
    assert_eq!(metric(&metrics, "duplicate"), 1);
}

async fn devices_upload_only_for_their_own_events(backend: Backend) {
    let (state, _database, _directory) = evidence_state(backend).await;
    let mine = device_with_event(&state, "mine").await;
    let theirs = device_with_event(&state, "theirs").await;
    let frame = jpeg(2);
    let hash = sha256_hex(&frame);
    let my_event = mine.event.record.event.id;
    let put = |device_id, event_id, token: Option<String>| {
        let state = state.clone();
        let frame = frame.clone();
        let hash = hash.clone();
        async move {
            let answer = put_frame(
                &state,
                device_id,
                event_id,
                "0",
                token.as_deref(),
                Some(&hash),
                frame,
            )
            .await;
            (answer.status, answer.json()["code"].clone())
        }
    };
    // No token, or another device's token on my path.
    assert_eq!(
        put(mine.id, my_event, None).await,
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    assert_eq!(
        put(mine.id, my_event, Some(theirs.token.clone())).await,
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );
    // Another device, on its own path, for my event.
    assert_eq!(
        put(theirs.id, my_event, Some(theirs.token.clone())).await,
        (StatusCode::FORBIDDEN, json!("wrong_device"))
    );
    // An event the server does not hold (evidence follows its event).
    assert_eq!(
        put(
            mine.id,
            DoseEventId::generate(Utc::now()),
            Some(mine.token.clone())
        )
        .await,
        (StatusCode::NOT_FOUND, json!("unknown_event"))
    );
    let manifest = get(
        &state,
        &format!(
            "/api/v1/devices/{}/dose-events/{my_event}/evidence",
            theirs.id
        ),
        Some(&theirs.token),
    )
    .await;
    assert_eq!(manifest.status, StatusCode::FORBIDDEN);
    // Revoked devices upload nothing.
    let (status, _) = call(
        &state,
        "POST",
        &format!("/api/v1/devices/{}/revoke", mine.id),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        put(mine.id, my_event, Some(mine.token.clone())).await,
        (StatusCode::FORBIDDEN, json!("device_revoked"))
    );
    // None of the refused uploads stored anything.
    let list = get(
        &state,
        &format!("/api/v1/dose-events/{my_event}/evidence"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json()["frames"], json!([]));
}

async fn reviewers_list_and_read_frames_and_every_read_is_audited(backend: Backend) {
    let (state, _database, _directory) = evidence_state(backend).await;
    let device = device_with_event(&state, "review").await;
    let event_id = device.event.record.event.id;
    let frames = [jpeg(3), jpeg(4)];
    for (index, frame) in frames.iter().enumerate() {
        let answer = upload(&state, &device, u32::try_from(index).unwrap(), frame).await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }

    let list = get(
        &state,
        &format!("/api/v1/dose-events/{event_id}/evidence"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    let listed: Vec<(u64, String)> = list.json()["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|frame| {
            (
                frame["index"].as_u64().unwrap(),
                frame["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![(0, sha256_hex(&frames[0])), (1, sha256_hex(&frames[1]))]
    );
    for (index, frame) in frames.iter().enumerate() {
        let read = get(
            &state,
            &format!("/api/v1/dose-events/{event_id}/evidence/{index}"),
            Some(ADMIN),
        )
        .await;
        assert_eq!(read.status, StatusCode::OK);
        assert_eq!(read.content_type.as_deref(), Some("image/jpeg"));
        assert_eq!(&read.bytes, frame, "frame {index} comes back byte for byte");
    }

    // Refusals: no credentials, a device token, unknown event or frame.
    for token in [None, Some(device.token.as_str())] {
        let read = get(
            &state,
            &format!("/api/v1/dose-events/{event_id}/evidence/0"),
            token,
        )
        .await;
        assert_eq!(read.status, StatusCode::UNAUTHORIZED);
    }
    let unknown = DoseEventId::generate(Utc::now());
    for path in [
        format!("/api/v1/dose-events/{unknown}/evidence"),
        format!("/api/v1/dose-events/{unknown}/evidence/0"),
        format!("/api/v1/dose-events/{event_id}/evidence/5"),
    ] {
        assert_eq!(
            get(&state, &path, Some(ADMIN)).await.status,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }

    // Who read what, and when: one row per read, none for refused reads.
    let (status, audit) = call(&state, "GET", "/api/v1/audit?limit=500", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::OK, "{audit}");
    let rows: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| {
            ["list_evidence", "read_evidence", "upload_evidence"]
                .contains(&entry["action"].as_str().unwrap())
        })
        .map(|entry| {
            assert!(entry["at"].is_string(), "{entry}");
            (
                entry["actor"].as_str().unwrap().to_string(),
                entry["action"].as_str().unwrap().to_string(),
                entry["entity"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let device_actor = format!("device:{}", device.id);
    let reader = |row: &(String, String, String)| row.0.starts_with("user:admin");
    assert_eq!(
        rows.iter()
            .filter(|row| row.1 == "upload_evidence" && row.0 == device_actor)
            .map(|row| row.2.clone())
            .collect::<Vec<_>>(),
        vec![format!("{event_id}/0"), format!("{event_id}/1")]
    );
    assert_eq!(
        rows.iter()
            .filter(|row| row.1 == "list_evidence" && reader(row))
            .map(|row| row.2.clone())
            .collect::<Vec<_>>(),
        vec![event_id.to_string()]
    );
    assert_eq!(
        rows.iter()
            .filter(|row| row.1 == "read_evidence" && reader(row))
            .map(|row| row.2.clone())
            .collect::<Vec<_>>(),
        vec![format!("{event_id}/0"), format!("{event_id}/1")]
    );
}

async fn without_an_evidence_store_evidence_is_unavailable(backend: Backend) {
    let (state, _database, _clock) = state(backend).await;
    let device = device_with_event(&state, "none").await;
    let answer = upload(&state, &device, 0, &jpeg(0)).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.json()["code"], "evidence_unavailable");
}
