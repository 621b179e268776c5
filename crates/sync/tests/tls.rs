//! HTTPS end to end on 127.0.0.1: the backend serving TLS with a self-signed certificate made
//! here, and the sync client trusting it only when it is pinned.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use chrono::Utc;
use dosewitness_domain::SystemClock;
use dosewitness_protocol::AuditPage;
use dosewitness_server::{Database, LoopbackServer, ServerTls};
use dosewitness_sync::{DeviceClient, SyncError, TlsPolicy, drain_outbox};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod support;

use support::{Fixture, TIMEOUT, append, drain, fixture_on};

/// A self-signed certificate (PEM) for `names` and its key (PEM).
fn self_signed(names: &[&str]) -> (String, String) {
    let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

/// A backend serving HTTPS on 127.0.0.1 (SQLite in a temp dir) with a fresh self-signed
/// certificate for `names`; returns the temp dir, the server and the certificate's PEM.
async fn tls_backend(names: &[&str]) -> (tempfile::TempDir, LoopbackServer, String) {
    let (certificate, key) = self_signed(names);
    let directory = tempfile::tempdir().unwrap();
    let database = Database::open_sqlite(&directory.path().join("server.db"))
        .await
        .unwrap();
    let tls = ServerTls::from_pem(certificate.as_bytes(), key.as_bytes()).unwrap();
    let backend = LoopbackServer::start_tls(database, 0, Arc::new(SystemClock), tls)
        .await
        .unwrap();
    (directory, backend, certificate)
}

/// A TLS backend on 127.0.0.1 with a fresh self-signed certificate, and an enrolled device
/// whose clients pin that certificate. Returns the fixture and the certificate's PEM.
async fn tls_fixture() -> (Fixture, String) {
    let (directory, backend, certificate) = tls_backend(&["localhost", "127.0.0.1"]).await;
    assert!(
        backend.url.starts_with("https://127.0.0.1:"),
        "{}",
        backend.url
    );
    let pinned = TlsPolicy::pinned_pem(certificate.as_bytes(), "test certificate").unwrap();
    (fixture_on(directory, backend, &pinned).await, certificate)
}

fn pending(fixture: &Fixture) -> u64 {
    fixture.store.info().unwrap().pending_sync
}

/// Drains the outbox with `client` and returns the error it must fail with.
async fn drain_failure(fixture: &mut Fixture, client: &DeviceClient) -> String {
    let error = drain_outbox(&mut fixture.store, client, fixture.device_id, 200, Utc::now)
        .await
        .unwrap_err();
    match error {
        SyncError::Unreachable { reason, .. } => reason,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_device_syncs_over_https_with_the_pinned_certificate_and_the_audit_log_sees_its_ip() {
    let (mut fixture, certificate) = tls_fixture().await;
    append(&mut fixture, 7);
    let report = drain(&mut fixture, 3).await.unwrap();
    assert_eq!(
        (report.batches, report.accepted, report.still_pending),
        (3, 7, 0)
    );
    assert_eq!(pending(&fixture), 0);

    // The study was created over HTTPS by the coordinator client: the audit row names the
    // peer's address, as over plain HTTP (ConnectInfo survives the TLS listener).
    let http = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(certificate.as_bytes()).unwrap())
        .build()
        .unwrap();
    let page: AuditPage = http
        .get(format!("{}/api/v1/audit?action=create_study", fixture.url))
        .bearer_auth(&fixture.backend.admin_token)
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page.entries.len(), 1, "{page:?}");
    assert_eq!(page.entries[0].source, "127.0.0.1");
}

#[tokio::test]
async fn a_client_pinned_to_another_certificate_fails_and_nothing_is_marked_delivered() {
    let (mut fixture, _) = tls_fixture().await;
    append(&mut fixture, 4);
    let (other, _) = self_signed(&["localhost", "127.0.0.1"]);
    let client = DeviceClient::with_tls(
        &fixture.url,
        Some(fixture.device_token.clone()),
        TIMEOUT,
        &TlsPolicy::pinned_pem(other.as_bytes(), "other certificate").unwrap(),
    )
    .unwrap();
    let reason = drain_failure(&mut fixture, &client).await;
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(pending(&fixture), 4, "nothing may be marked delivered");

    // The right pin still works afterwards.
    let report = drain(&mut fixture, 200).await.unwrap();
    assert_eq!((report.accepted, report.still_pending), (4, 0));
}

#[tokio::test]
async fn a_pinned_certificate_must_still_name_the_server() {
    // A server whose certificate names only clinic.example, pinned, reached as 127.0.0.1.
    let (_directory, backend, certificate) = tls_backend(&["clinic.example"]).await;
    let pinned = TlsPolicy::pinned_pem(certificate.as_bytes(), "server certificate").unwrap();
    let client = DeviceClient::with_tls(&backend.url, None, TIMEOUT, &pinned).unwrap();
    let error = client
        .regimens(dosewitness_domain::DeviceId::generate(Utc::now()))
        .await
        .unwrap_err();
    let SyncError::Unreachable { reason, .. } = error else {
        panic!("expected a TLS failure, got {error:?}");
    };
    assert!(reason.contains("certificate"), "{reason}");
}

#[tokio::test]
async fn the_platform_roots_refuse_a_self_signed_server() {
    let (mut fixture, _) = tls_fixture().await;
    append(&mut fixture, 3);
    let client = DeviceClient::new(&fixture.url, Some(fixture.device_token.clone()), TIMEOUT)
        .expect("a client with the platform's roots");
    let reason = drain_failure(&mut fixture, &client).await;
    assert!(reason.contains("certificate"), "{reason}");
    assert_eq!(pending(&fixture), 3, "nothing may be marked delivered");
}

#[tokio::test]
async fn a_client_stuck_in_its_handshake_does_not_hold_up_others() {
    use tokio::io::AsyncWriteExt;
    let (mut fixture, _) = tls_fixture().await;
    let address = fixture.url.trim_start_matches("https://").to_string();
    // Connections that never finish a handshake: one silent, one that sent half a record.
    let _silent = tokio::net::TcpStream::connect(&address).await.unwrap();
    let mut partial = tokio::net::TcpStream::connect(&address).await.unwrap();
    partial
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    append(&mut fixture, 5);
    let started = Instant::now();
    let report = drain(&mut fixture, 200).await.unwrap();
    assert_eq!(report.accepted, 5);
    // Far below the 10 s handshake timeout the stuck clients would impose if accepts waited.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn stopping_the_tls_backend_closes_its_port() {
    let (fixture, _) = tls_fixture().await;
    let address = fixture.url.trim_start_matches("https://").to_string();
    assert!(tokio::net::TcpStream::connect(&address).await.is_ok());
    drop(fixture);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if tokio::net::TcpStream::connect(&address).await.is_err() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{address} still accepts after shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
