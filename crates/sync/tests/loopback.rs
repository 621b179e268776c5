//! The sync client against the real backend on 127.0.0.1, with a real SQLCipher device store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use chrono::Utc;
use dosewitness_domain::DoseOutcome;
use dosewitness_protocol::{DoseEventBatch, PROTOCOL_VERSION};
use dosewitness_sync::{DeviceClient, SyncError, drain_outbox};
use std::sync::Arc;

mod support;

use support::{TIMEOUT, append, drain, fixture};

#[tokio::test]
async fn the_outbox_drains_in_batches_and_redelivery_is_harmless() {
    let mut fixture = fixture().await;
    append(&mut fixture, 450);
    let report = drain(&mut fixture, 200).await.unwrap();
    assert_eq!(
        (
            report.batches,
            report.accepted,
            report.duplicates,
            report.still_pending
        ),
        (3, 450, 0, 0)
    );

    // The same events delivered again (a lost acknowledgement) are acknowledged as duplicates.
    let first_ten: Vec<_> = fixture
        .store
        .all_events()
        .unwrap()
        .into_iter()
        .take(10)
        .collect();
    let batch = DoseEventBatch {
        protocol_version: PROTOCOL_VERSION,
        events: first_ten,
    };
    let ack = fixture
        .device
        .push_batch(fixture.device_id, &batch)
        .await
        .unwrap();
    assert_eq!(ack.acks.len(), 10);
    assert!(
        ack.acks
            .iter()
            .all(|ack| ack.status == dosewitness_protocol::AckStatus::Duplicate)
    );

    // Nothing left to send: a second pass sends nothing.
    let again = drain(&mut fixture, 200).await.unwrap();
    assert_eq!((again.batches, again.accepted), (0, 0));
}

#[tokio::test]
async fn tampered_and_gapped_batches_are_refused_whole_and_the_chain_recovers() {
    let mut fixture = fixture().await;
    append(&mut fixture, 3);
    let events = fixture.store.pending_events(10).unwrap();

    let mut tampered = events.clone();
    tampered[1].record.event.outcome = DoseOutcome::Missed;
    let error = fixture
        .device
        .push_batch(
            fixture.device_id,
            &DoseEventBatch {
                protocol_version: PROTOCOL_VERSION,
                events: tampered,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SyncError::Rejected { status: 422, code, .. } if code == "bad_signature"),
        "{error}"
    );

    let gapped = vec![events[0].clone(), events[2].clone()];
    let error = fixture
        .device
        .push_batch(
            fixture.device_id,
            &DoseEventBatch {
                protocol_version: PROTOCOL_VERSION,
                events: gapped,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, SyncError::Rejected { status: 409, code, .. } if code == "chain_gap"),
        "{error}"
    );

    // All-or-nothing: event 1 of the refused batches was not kept, so a clean drain accepts all 3.
    let report = drain(&mut fixture, 200).await.unwrap();
    assert_eq!(
        (report.accepted, report.duplicates, report.still_pending),
        (3, 0, 0)
    );
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_and_nothing_is_marked_sent() {
    let mut fixture = fixture().await;
    append(&mut fixture, 2);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let client = DeviceClient::new(&dead_url, None, TIMEOUT).unwrap();
    let error = drain_outbox(
        &mut fixture.store,
        &client,
        fixture.device_id,
        200,
        Utc::now,
    )
    .await
    .unwrap_err();
    assert!(matches!(error, SyncError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains(&dead_url), "{error}");
    assert_eq!(fixture.store.info().unwrap().pending_sync, 2);
    assert!(!fixture.url.is_empty());
}

/// A stand-in server that answers every request with `status_line` and counts requests.
async fn answering(
    status_line: &'static str,
    extra_headers: &'static str,
) -> (String, Arc<std::sync::atomic::AtomicU32>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let counter = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut buffer = vec![0u8; 65536];
            let _ = socket.read(&mut buffer).await;
            let response = format!(
                "HTTP/1.1 {status_line}\r\n{extra_headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = socket.write_all(response.as_bytes()).await;
        }
    });
    (url, requests)
}

#[tokio::test]
async fn transient_failures_are_retried_with_retry_after_and_client_errors_are_not() {
    use dosewitness_sync::{RetryPolicy, drain_outbox_with_retry};
    let mut fixture = fixture().await;
    append(&mut fixture, 2);
    let policy = RetryPolicy {
        base: std::time::Duration::from_millis(10),
        max_delay: std::time::Duration::from_millis(50),
        max_attempts: 3,
    };

    let (url, requests) = answering("503 Service Unavailable", "Retry-After: 1\r\n").await;
    let client = DeviceClient::new(&url, Some("token".into()), TIMEOUT).unwrap();
    let started = std::time::Instant::now();
    let error = drain_outbox_with_retry(
        &mut fixture.store,
        &client,
        fixture.device_id,
        200,
        &policy,
        Utc::now,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            error,
            SyncError::Rejected {
                status: 503,
                retry_after_s: Some(1),
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        3,
        "three attempts in all"
    );
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(2),
        "two waits of at least Retry-After"
    );

    let (url, requests) = answering("400 Bad Request", "").await;
    let client = DeviceClient::new(&url, Some("token".into()), TIMEOUT).unwrap();
    let error = drain_outbox_with_retry(
        &mut fixture.store,
        &client,
        fixture.device_id,
        200,
        &policy,
        Utc::now,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, SyncError::Rejected { status: 400, .. }),
        "{error}"
    );
    assert_eq!(
        requests.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "a client error is not retried"
    );
    assert_eq!(
        fixture.store.info().unwrap().pending_sync,
        2,
        "nothing was marked delivered"
    );

    // The real server: the same outbox drains in one attempt.
    let (report, retries) = drain_outbox_with_retry(
        &mut fixture.store,
        &fixture.device,
        fixture.device_id,
        200,
        &policy,
        Utc::now,
    )
    .await
    .unwrap();
    assert_eq!((report.accepted, retries), (2, 0));
}

#[tokio::test]
async fn a_schedule_pull_stores_new_regimens_and_measures_the_clock_skew() {
    let mut fixture = fixture().await;
    let coordinator = support::coordinator(&fixture);
    let added = coordinator
        .create_regimen(fixture.patient_id, &support::regimen_request("Second"))
        .await
        .unwrap();
    assert_eq!(fixture.store.regimens().unwrap().len(), 1);
    // The device's clock runs an hour ahead of the server's.
    let ahead = || Utc::now() + chrono::Duration::hours(1);
    let report = dosewitness_sync::pull_schedule(
        &mut fixture.store,
        &fixture.device,
        fixture.device_id,
        ahead,
    )
    .await
    .unwrap();
    assert_eq!(report.regimens, 2);
    let stored: Vec<_> = fixture
        .store
        .regimens()
        .unwrap()
        .into_iter()
        .map(|plan| plan.regimen.id)
        .collect();
    assert!(stored.contains(&added.regimen.id) && stored.len() == 2);
    let skew = report
        .clock_skew_ms
        .expect("the server sends a Date header");
    assert!(
        (skew + 3_600_000).abs() <= 1_500,
        "skew {skew} ms, expected about -3,600,000"
    );
    let status = fixture.store.sync_status().unwrap();
    assert_eq!(status.clock_skew_ms, Some(skew));
    assert!(status.skew_measured_at.is_some());
}

async fn wait_for_passes(passes: &mut tokio::sync::watch::Receiver<u64>, count: u64) {
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        passes.wait_for(|done| *done >= count),
    )
    .await
    .expect("the background pass finished in time")
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_sync_delivers_at_start_on_demand_and_on_its_timer_and_reports_failures() {
    let mut fixture = fixture().await;
    append(&mut fixture, 10);
    let path = fixture.directory.path().join("device.db");
    let opener = |path: std::path::PathBuf, key: dosewitness_store::StoreKey| {
        move || dosewitness_store::DeviceStore::open(&path, &key)
    };
    let settings = dosewitness_sync::BackgroundSyncSettings {
        interval: std::time::Duration::from_secs(3600),
        timeout: TIMEOUT,
        policy: dosewitness_sync::RetryPolicy {
            max_attempts: 1,
            ..dosewitness_sync::RetryPolicy::default()
        },
        evidence: dosewitness_domain::EvidencePolicy::FlaggedOnly,
        connectivity_poll: None,
    };
    let clock = Arc::new(dosewitness_domain::SystemClock);
    let on_demand = dosewitness_sync::BackgroundSync::spawn(
        opener(path.clone(), fixture.key.clone()),
        settings,
        clock.clone(),
    );
    let mut passes = on_demand.passes();
    wait_for_passes(&mut passes, 1).await;
    let status = fixture.store.sync_status().unwrap();
    assert_eq!(status.pending, 0, "the first pass runs at start");
    assert!(status.last_success_at.is_some() && status.last_error.is_none());

    // Doses recorded on the session's connection while the task holds its own.
    append(&mut fixture, 5);
    assert_eq!(fixture.store.sync_status().unwrap().pending, 5);
    on_demand.sync_now();
    wait_for_passes(&mut passes, 2).await;
    assert_eq!(fixture.store.sync_status().unwrap().pending, 0);
    on_demand.stop().await;

    let timed = dosewitness_sync::BackgroundSync::spawn(
        opener(path.clone(), fixture.key.clone()),
        dosewitness_sync::BackgroundSyncSettings {
            interval: std::time::Duration::from_millis(200),
            ..settings
        },
        clock.clone(),
    );
    let mut passes = timed.passes();
    wait_for_passes(&mut passes, 1).await;
    append(&mut fixture, 3);
    wait_for_passes(&mut passes, 3).await;
    assert_eq!(
        fixture.store.sync_status().unwrap().pending,
        0,
        "the timer delivered them"
    );

    // The server goes away: the next pass fails and says so in plain words.
    fixture.backend = dosewitness_server::LoopbackServer::start(
        &fixture.directory.path().join("other-server.db"),
        0,
        clock.clone(),
    )
    .await
    .unwrap();
    append(&mut fixture, 1);
    let failed_after = *passes.borrow() + 2;
    wait_for_passes(&mut passes, failed_after).await;
    let status = fixture.store.sync_status().unwrap();
    assert_eq!(status.pending, 1);
    let (message, _) = status.last_error.expect("the failure is recorded");
    assert!(message.contains("could not be reached"), "{message}");
    timed.stop().await;
}

#[tokio::test]
async fn a_revoked_device_is_told_so_and_keeps_its_events() {
    let mut fixture = fixture().await;
    append(&mut fixture, 3);
    let coordinator = support::coordinator(&fixture);
    coordinator.revoke_device(fixture.device_id).await.unwrap();
    let error = drain(&mut fixture, 10).await.unwrap_err();
    assert!(
        matches!(&error, SyncError::Rejected { status: 403, code, .. } if code == "device_revoked"),
        "{error}"
    );
    assert!(!error.is_transient(), "a revoked device does not retry");
    assert_eq!(
        fixture.store.info().unwrap().pending_sync,
        3,
        "nothing is lost"
    );
}
