//! Exactly-once delivery through network faults: the real backend on 127.0.0.1, a real
//! SQLCipher device store, and a TCP proxy between them that injects one fault per request
//! (resets before and after the server commits, stalls past the client's timeout, 500/503 with
//! `Retry-After`, duplicated requests, refused connections, a server restart). After the faults
//! clear, the server must hold exactly the device's events, each once, with no anomaly; the
//! device must have nothing left to send and its chain must verify.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod support;

use chrono::{Duration as Days, Utc};
use dosewitness_domain::SystemClock;
use dosewitness_protocol::{DoseEventBatch, PROTOCOL_VERSION};
use dosewitness_server::{Database, LoopbackServer};
use dosewitness_sync::{DeviceClient, RetryPolicy, drain_outbox, drain_outbox_with_retry};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use support::fault_proxy::{Fault, FaultProxy};
use support::{Fixture, append, client_via, fixture, upstream};

/// The client gives up on an answer after this long; `Stall` holds answers for longer.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(700);
const STALL: Fault = Fault::Stall(Duration::from_millis(1_000));

fn quick_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy {
        base: Duration::from_millis(20),
        max_delay: Duration::from_millis(200),
        max_attempts,
    }
}

/// Drains until the outbox is empty, as the background sync would keep doing; returns the
/// number of passes that failed.
async fn drain_until_delivered(fixture: &mut Fixture, client: &DeviceClient, batch: usize) -> u32 {
    let mut failed_passes = 0;
    for _ in 0..20 {
        let result = drain_outbox_with_retry(
            &mut fixture.store,
            client,
            fixture.device_id,
            batch,
            &quick_retries(4),
            Utc::now,
        )
        .await;
        match result {
            Ok((report, _)) if report.still_pending == 0 => return failed_passes,
            Ok(_) => {}
            Err(error) => {
                assert!(
                    error.is_transient(),
                    "a fault surfaced as a non-transient error: {error}"
                );
                failed_passes += 1;
            }
        }
    }
    panic!("the outbox never drained");
}

/// The server holds exactly the device's events, once each, with no anomaly; the device has
/// nothing pending and its chain verifies.
async fn assert_delivered_exactly_once(fixture: &Fixture) {
    let device_events: Vec<_> = fixture
        .store
        .all_events()
        .unwrap()
        .into_iter()
        .map(|event| event.record.event.id)
        .collect();
    let database = Database::open_sqlite(&fixture.directory.path().join("server.db"))
        .await
        .unwrap();
    let server_events: Vec<_> = database
        .dose_events_of(
            fixture.patient_id,
            Utc::now() - Days::days(3650),
            Utc::now() + Days::days(1),
        )
        .await
        .unwrap()
        .into_iter()
        .map(|event| event.id)
        .collect();
    assert_eq!(
        server_events.len(),
        device_events.len(),
        "the server holds each event once"
    );
    assert_eq!(
        server_events.iter().collect::<BTreeSet<_>>(),
        device_events.iter().collect::<BTreeSet<_>>(),
        "the server holds exactly the device's events"
    );
    assert_eq!(database.anomaly_count(fixture.device_id).await.unwrap(), 0);
    assert_eq!(fixture.store.info().unwrap().pending_sync, 0);
    assert_eq!(fixture.store.verify().unwrap(), device_events.len());
}

#[tokio::test]
async fn each_fault_alone_is_survived_without_loss_or_duplicates() {
    let faults = [
        Fault::ResetBeforeServer,
        Fault::ResetAfterServer,
        STALL,
        Fault::Status(500),
        Fault::Status(503),
        Fault::Duplicate,
    ];
    for fault in faults {
        let mut fixture = fixture().await;
        append(&mut fixture, 45);
        let proxy = FaultProxy::start(upstream(&fixture)).await;
        let client = client_via(&proxy, &fixture, CLIENT_TIMEOUT);
        // The fault hits the second of three batches: one batch is already acknowledged.
        proxy.inject(&[Fault::Pass, fault]);
        drain_until_delivered(&mut fixture, &client, 20).await;
        assert_eq!(proxy.pending(), 0, "{fault:?} was applied");
        assert_delivered_exactly_once(&fixture).await;
    }
}

#[tokio::test]
async fn refused_connections_leave_everything_pending_until_the_server_is_back() {
    let mut fixture = fixture().await;
    append(&mut fixture, 30);
    let proxy = FaultProxy::start(upstream(&fixture)).await;
    let client = client_via(&proxy, &fixture, CLIENT_TIMEOUT);
    proxy.refuse_connections();
    let error = drain_outbox(&mut fixture.store, &client, fixture.device_id, 20, Utc::now)
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(fixture.store.info().unwrap().pending_sync, 30);
    proxy.accept_connections().await;
    drain_until_delivered(&mut fixture, &client, 20).await;
    assert_delivered_exactly_once(&fixture).await;
}

#[tokio::test]
async fn a_server_restart_mid_drain_is_survived() {
    let mut fixture = fixture().await;
    append(&mut fixture, 100);
    let proxy = FaultProxy::start(upstream(&fixture)).await;
    let client = client_via(&proxy, &fixture, CLIENT_TIMEOUT);
    // Deliver two of five batches, then restart the server on the same database.
    let first = drain_outbox(&mut fixture.store, &client, fixture.device_id, 20, Utc::now);
    proxy.inject(&[Fault::Pass, Fault::Pass, Fault::ResetBeforeServer]);
    assert!(first.await.is_err());
    assert_eq!(fixture.store.info().unwrap().pending_sync, 60);
    let database = fixture.directory.path().join("server.db");
    fixture.backend = LoopbackServer::start(&database, 0, Arc::new(SystemClock))
        .await
        .unwrap();
    proxy.set_upstream(upstream(&fixture));
    drain_until_delivered(&mut fixture, &client, 20).await;
    assert_delivered_exactly_once(&fixture).await;
}

#[tokio::test]
async fn a_delivered_batch_replayed_later_stores_nothing_new() {
    let mut fixture = fixture().await;
    append(&mut fixture, 25);
    let events = fixture.store.pending_events(100).unwrap();
    let device = fixture.device.clone();
    drain_until_delivered(&mut fixture, &device, 100).await;
    append(&mut fixture, 5);
    drain_until_delivered(&mut fixture, &device, 100).await;
    // The first batch again, after later events: every event is a duplicate, nothing changes.
    let ack = fixture
        .device
        .push_batch(
            fixture.device_id,
            &DoseEventBatch {
                protocol_version: PROTOCOL_VERSION,
                events,
            },
        )
        .await
        .unwrap();
    assert_eq!(ack.acks.len(), 25);
    assert!(
        ack.acks
            .iter()
            .all(|ack| ack.status == dosewitness_protocol::AckStatus::Duplicate)
    );
    assert_delivered_exactly_once(&fixture).await;
}

/// xorshift64*; the seed is printed so a failing mix can be replayed with `FAULT_SEED`.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[tokio::test]
async fn random_fault_mixes_deliver_every_event_exactly_once() {
    const TRIALS: u64 = 12;
    let seed = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("FAULT_SEED={seed}");
    let mut state = seed;
    let menu = [
        Fault::Pass,
        Fault::ResetBeforeServer,
        Fault::ResetAfterServer,
        STALL,
        Fault::Status(500),
        Fault::Status(503),
        Fault::Duplicate,
    ];
    let mut faults_applied = 0;
    for _ in 0..TRIALS {
        let mut fixture = fixture().await;
        append(&mut fixture, 10 + (next(&mut state) % 50) as i64);
        let proxy = FaultProxy::start(upstream(&fixture)).await;
        let client = client_via(&proxy, &fixture, CLIENT_TIMEOUT);
        let mix: Vec<Fault> = (0..1 + next(&mut state) % 6)
            .map(|_| menu[(next(&mut state) % menu.len() as u64) as usize])
            .collect();
        faults_applied += mix.iter().filter(|fault| **fault != Fault::Pass).count();
        proxy.inject(&mix);
        let batch = 5 + (next(&mut state) % 20) as usize;
        drain_until_delivered(&mut fixture, &client, batch).await;
        assert_delivered_exactly_once(&fixture).await;
    }
    assert!(faults_applied > 0, "seed {seed} drew no faults at all");
}
