//! Evidence upload against the real backend on 127.0.0.1 (evidence in its local object store)
//! with a real SQLCipher device store: what leaves the device under each policy, byte for byte;
//! resets mid-upload through the fault proxy; a client restart between frames.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod support;

use chrono::Utc;
use dosewitness_domain::{DoseOutcome, EvidencePolicy};
use dosewitness_protocol::SignedDoseEvent;
use dosewitness_store::{DeviceStore, EvidenceFrame};
use dosewitness_sync::{RetryPolicy, sync_pass, upload_evidence, upload_evidence_with_retry};
use std::time::Duration;
use support::fault_proxy::{Fault, FaultProxy};
use support::{Fixture, client_via, coordinator, dose, drain, fixture, upstream};

/// Real JPEGs: frames of the demo replay.
fn jpeg(frame: u32) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../assets/replays/demo/frame_{frame:04}.jpg"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Records a dose with `outcome` and evidence frames `frames` of the replay, captured 100 ms
/// apart in that order.
fn record(
    fixture: &mut Fixture,
    day: i64,
    outcome: DoseOutcome,
    frames: &[u32],
) -> SignedDoseEvent {
    let event = dosewitness_domain::DoseEvent {
        outcome,
        ..dose(fixture, day)
    };
    let evidence: Vec<EvidenceFrame> = frames
        .iter()
        .enumerate()
        .map(|(position, frame)| EvidenceFrame {
            captured_at_ms: 100 * position as u64,
            jpeg: jpeg(*frame),
        })
        .collect();
    fixture
        .store
        .append_dose_event_with_evidence(event, &evidence, Utc::now())
        .unwrap()
}

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts,
    }
}

/// The frames the server holds for `event`, read back through the coordinator API.
async fn server_frames(fixture: &Fixture, event: &SignedDoseEvent) -> Vec<Vec<u8>> {
    let coordinator = coordinator(fixture);
    let event_id = event.record.event.id;
    let manifest = coordinator.evidence(event_id).await.unwrap();
    let mut frames = Vec::new();
    for (position, frame) in manifest.frames.iter().enumerate() {
        assert_eq!(frame.index as usize, position, "indexes run 0, 1, 2 …");
        frames.push(
            coordinator
                .evidence_frame(event_id, frame.index)
                .await
                .unwrap(),
        );
    }
    frames
}

/// The server's evidence counters: frames newly stored, and uploads of frames it already held.
async fn stored_and_duplicates(fixture: &Fixture) -> (u64, u64) {
    let text = reqwest::get(format!("{}/metrics", fixture.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |result: &str| -> u64 {
        let prefix = format!("dosewitness_evidence_frames_total{{result=\"{result}\"}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(prefix.as_str()))
            .unwrap()
            .parse()
            .unwrap()
    };
    (value("stored"), value("duplicate"))
}

#[tokio::test]
async fn flagged_frames_arrive_byte_identical_and_others_only_when_the_study_sends_all() {
    let mut fixture = fixture().await;
    let flagged = record(&mut fixture, 2, DoseOutcome::NeedsReview, &[0, 1, 2]);
    let failed = record(&mut fixture, 1, DoseOutcome::NotVerified, &[3]);
    let verified = record(&mut fixture, 0, DoseOutcome::Verified, &[4, 5]);
    assert_eq!(fixture.store.sync_status().unwrap().pending_evidence, 4);

    let pass = sync_pass(
        &mut fixture.store,
        &fixture.device,
        fixture.device_id,
        &quick_retries(3),
        EvidencePolicy::FlaggedOnly,
        Utc::now,
    )
    .await
    .unwrap();
    assert_eq!(pass.drained.accepted, 3);
    assert_eq!(
        (
            pass.evidence.uploaded,
            pass.evidence.already_on_server,
            pass.evidence.still_pending
        ),
        (4, 0, 0)
    );
    assert_eq!(
        server_frames(&fixture, &flagged).await,
        vec![jpeg(0), jpeg(1), jpeg(2)]
    );
    assert_eq!(server_frames(&fixture, &failed).await, vec![jpeg(3)]);
    assert!(
        server_frames(&fixture, &verified).await.is_empty(),
        "a verified dose's frames stay on the device"
    );
    let status = fixture.store.sync_status().unwrap();
    assert_eq!(status.pending_evidence, 0);
    assert!(status.last_error.is_none());
    assert_eq!(
        fixture
            .store
            .evidence_for(verified.sequence())
            .unwrap()
            .len(),
        2,
        "and are still there"
    );

    // The study says all: the verified dose's frames go too, the others are not sent again.
    let pass = sync_pass(
        &mut fixture.store,
        &fixture.device,
        fixture.device_id,
        &quick_retries(3),
        EvidencePolicy::All,
        Utc::now,
    )
    .await
    .unwrap();
    assert_eq!(
        (pass.evidence.uploaded, pass.evidence.still_pending),
        (2, 0)
    );
    assert_eq!(
        server_frames(&fixture, &verified).await,
        vec![jpeg(4), jpeg(5)]
    );
    assert_eq!(stored_and_duplicates(&fixture).await, (6, 0));
}

#[tokio::test]
async fn resets_mid_upload_are_retried_and_each_frame_is_stored_once_and_sent_at_most_twice() {
    let mut fixture = fixture().await;
    let event = record(&mut fixture, 0, DoseOutcome::NeedsReview, &[0, 1, 2, 3]);
    drain(&mut fixture, 10).await.unwrap();
    let proxy = FaultProxy::start(upstream(&fixture)).await;
    let client = client_via(&proxy, &fixture, Duration::from_millis(2_000));
    // Requests: manifest, frame 0, frame 1 (stored, then the answer is lost), manifest again
    // (frame 1 is there: not re-sent), frame 2 (the connection drops before the server).
    proxy.inject(&[
        Fault::Pass,
        Fault::Pass,
        Fault::ResetAfterServer,
        Fault::Pass,
        Fault::ResetBeforeServer,
    ]);
    let (report, retries) = upload_evidence_with_retry(
        &mut fixture.store,
        &client,
        fixture.device_id,
        &quick_retries(5),
        Utc::now,
    )
    .await
    .unwrap();
    assert_eq!(proxy.pending(), 0, "every fault was used");
    assert_eq!(retries, 2);
    assert_eq!(report.still_pending, 0);
    assert_eq!(
        server_frames(&fixture, &event).await,
        vec![jpeg(0), jpeg(1), jpeg(2), jpeg(3)]
    );
    assert_eq!(
        stored_and_duplicates(&fixture).await,
        (4, 0),
        "each frame stored once; the frame stored before the reset was not uploaded again"
    );
    assert_eq!(fixture.store.sync_status().unwrap().pending_evidence, 0);
}

#[tokio::test]
async fn a_client_restart_between_frames_resumes_from_the_store() {
    let mut fixture = fixture().await;
    let event = record(&mut fixture, 0, DoseOutcome::NotVerified, &[6, 7, 8]);
    drain(&mut fixture, 10).await.unwrap();
    let proxy = FaultProxy::start(upstream(&fixture)).await;
    // The first run dies at frame 1: its connection drops and nothing retries.
    proxy.inject(&[Fault::Pass, Fault::Pass, Fault::ResetBeforeServer]);
    let client = client_via(&proxy, &fixture, Duration::from_millis(2_000));
    let error = upload_evidence(&mut fixture.store, &client, fixture.device_id, Utc::now)
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(fixture.store.sync_status().unwrap().pending_evidence, 2);

    // A new process: the store reopened from disk, a new client.
    let path = fixture.store.path().to_path_buf();
    let reopened = DeviceStore::open(&path, &fixture.key).unwrap();
    fixture.store = reopened;
    let client = client_via(&proxy, &fixture, Duration::from_millis(2_000));
    let report = upload_evidence(&mut fixture.store, &client, fixture.device_id, Utc::now)
        .await
        .unwrap();
    assert_eq!(
        (
            report.uploaded,
            report.already_on_server,
            report.still_pending
        ),
        (2, 0, 0),
        "only frames 1 and 2 were sent"
    );
    assert_eq!(
        server_frames(&fixture, &event).await,
        vec![jpeg(6), jpeg(7), jpeg(8)]
    );
    assert_eq!(stored_and_duplicates(&fixture).await, (3, 0));
}
