//! The device's HTTP client to the clinic backend. The only crate that depends on reqwest.
//!
//! - [`DeviceClient`]: enrolment, schedule pull and dose-event batches for a device.
//! - [`drain_outbox`]: sends the store's outbox in batches and marks what the server
//!   acknowledged; it resumes from the store alone, so a crash or a dropped connection only
//!   means the next pass re-sends, and the server's idempotent ingest answers `duplicate`.
//! - [`CoordinatorClient`]: the coordinator API (studies, sites, patients, regimens, enrolment
//!   codes, adherence), used by the CLI's demo and by tests.
//!
//! [`drain_outbox_with_retry`] retries transient failures (network, 408, 429, 5xx) with
//! exponential backoff and full jitter, honouring `Retry-After`. [`pull_schedule`] stores new
//! and changed regimens and records the server's clock skew. [`upload_evidence`] sends the
//! evidence keyframes of delivered events that the study's [`EvidencePolicy`] sends (flagged
//! doses by default), one acknowledged frame at a time, resuming from the store and the
//! server's manifest. [`sync_pass`] does all three and records the outcome. [`BackgroundSync`]
//! runs passes on a timer and on demand (a connectivity change is a demand), on its own
//! connection to the store.
//!
//! Transport: HTTPS checked against the platform's roots, or only against a pinned certificate
//! ([`TlsPolicy`], `with_tls` constructors); plain `http://` is refused except to loopback.

mod background;
mod client;
pub mod connectivity;
pub mod retry;
pub mod tls;

pub use background::{BackgroundSync, BackgroundSyncSettings};

pub use client::{CoordinatorClient, DeviceClient, SyncError};
pub use connectivity::{ConnectivityWatch, NetworkFingerprint};
pub use retry::RetryPolicy;
pub use tls::TlsPolicy;

use chrono::{DateTime, Utc};
use dosewitness_domain::{DeviceId, EvidencePolicy};
use dosewitness_protocol::{DoseEventBatch, MAX_EVIDENCE_FRAME_BYTES, PROTOCOL_VERSION};
use dosewitness_store::DeviceStore;
use sha2::{Digest, Sha256};

/// Evaluates `$attempt` (an expression giving `Result<T, SyncError>`) until it succeeds, fails
/// for good, or `$policy.max_attempts` are used, waiting between attempts with exponential
/// backoff and full jitter (never shorter than the server's `Retry-After`). Gives
/// `Result<(T, failed attempts before it), SyncError>`. A macro rather than a function taking
/// an async closure, whose borrowed captures would make the background task's future not
/// `Send`.
macro_rules! retrying {
    ($policy:expr, $attempt:expr) => {{
        let policy: &RetryPolicy = $policy;
        let mut retries: u32 = 0;
        loop {
            match $attempt {
                Ok(value) => break Ok((value, retries)),
                Err(error) if error.is_transient() && retries + 1 < policy.max_attempts.max(1) => {
                    let wait = policy.delay(retries, retry::random_unit(), error.retry_after());
                    tracing::warn!(retry = retries + 1, wait_ms = wait.as_millis() as u64, error = %error, "sync failed; retrying");
                    tokio::time::sleep(wait).await;
                    retries += 1;
                }
                Err(error) => break Err(error),
            }
        }
    }};
}

/// Events per batch by default.
pub const DEFAULT_BATCH_SIZE: usize = 200;

/// What one drain pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DrainReport {
    pub batches: u32,
    pub accepted: u32,
    pub duplicates: u32,
    pub still_pending: u64,
}

/// Sends every pending event of `store` to the server in batches of `batch_size`, marking each
/// acknowledged event delivered. `now` stamps acknowledgements.
pub async fn drain_outbox(
    store: &mut DeviceStore,
    client: &DeviceClient,
    device_id: DeviceId,
    batch_size: usize,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<DrainReport, SyncError> {
    let mut report = DrainReport::default();
    loop {
        let events = store.pending_events(batch_size.max(1))?;
        if events.is_empty() {
            break;
        }
        let batch = DoseEventBatch {
            protocol_version: PROTOCOL_VERSION,
            events,
        };
        let ack = client.push_batch(device_id, &batch).await?;
        let sequences: Vec<u64> = ack.acks.iter().map(|ack| ack.sequence).collect();
        if sequences.is_empty() {
            return Err(SyncError::Protocol(
                "the server acknowledged none of a non-empty batch".into(),
            ));
        }
        store.acknowledge(&sequences, now())?;
        report.batches += 1;
        for ack in &ack.acks {
            match ack.status {
                dosewitness_protocol::AckStatus::Accepted => report.accepted += 1,
                dosewitness_protocol::AckStatus::Duplicate => report.duplicates += 1,
            }
        }
    }
    report.still_pending = store.info()?.pending_sync;
    Ok(report)
}

/// What a schedule pull did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullReport {
    /// Regimens the server holds for this device (all stored, new or changed).
    pub regimens: usize,
    /// The server's clock minus the device's, in ms (± about 0.5 s: the HTTP `Date` header has
    /// whole seconds); `None` if the server sent no `Date`.
    pub clock_skew_ms: Option<i64>,
}

/// Pulls the device's regimens (new and changed ones are stored) and measures the server's
/// clock against `now`, recording the skew in the store. Dose times stay the device's capture
/// times; the skew is kept for review.
pub async fn pull_schedule(
    store: &mut DeviceStore,
    client: &DeviceClient,
    device_id: DeviceId,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<PullReport, SyncError> {
    let sent = now();
    let (regimens, server_date) = client.regimens_and_clock(device_id).await?;
    let received = now();
    store.save_regimens(&regimens, received)?;
    let clock_skew_ms = server_date.map(|date| {
        // `Date` is the server's time truncated to the second: its middle is the best estimate.
        let server = date + chrono::Duration::milliseconds(500);
        let device = sent + (received - sent) / 2;
        (server - device).num_milliseconds()
    });
    if let Some(skew) = clock_skew_ms {
        store.record_clock_skew(skew, received)?;
    }
    Ok(PullReport {
        regimens: regimens.len(),
        clock_skew_ms,
    })
}

/// What one evidence upload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EvidenceReport {
    /// Frames sent and newly stored by the server.
    pub uploaded: u32,
    /// Frames the server already held (an earlier attempt stored them before the connection
    /// dropped), now marked uploaded without being sent again.
    pub already_on_server: u32,
    /// Frames the evidence policy sends that are still on the device only (including those of
    /// events not delivered yet).
    pub still_pending: u64,
}

/// Uploads the evidence frames of delivered events that the store's evidence policy sends,
/// one frame per request, marking each in the store as soon as the server acknowledges it: a
/// dropped connection costs only the frame in flight, and a restart resumes from the store.
/// Before an event's frames, the server's manifest is read so that frames it already holds are
/// not sent again.
pub async fn upload_evidence(
    store: &mut DeviceStore,
    client: &DeviceClient,
    device_id: DeviceId,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<EvidenceReport, SyncError> {
    let mut report = EvidenceReport::default();
    for (sequence, event_id) in store.events_with_pending_evidence()? {
        let manifest = client.evidence_manifest(device_id, event_id).await?;
        for pending in store.pending_evidence_of(sequence)? {
            let sha256 = sha256_hex(&pending.frame.jpeg);
            let held = manifest
                .frames
                .iter()
                .any(|frame| frame.index == pending.index && frame.sha256 == sha256);
            if held {
                store.mark_evidence_uploaded(sequence, pending.index, now())?;
                report.already_on_server += 1;
                continue;
            }
            if pending.frame.jpeg.len() > MAX_EVIDENCE_FRAME_BYTES {
                return Err(SyncError::Protocol(format!(
                    "evidence frame {} of event {sequence} is {} bytes, over the server's limit of \
                     {MAX_EVIDENCE_FRAME_BYTES}; it stays on the device",
                    pending.index,
                    pending.frame.jpeg.len()
                )));
            }
            let ack = client
                .put_evidence(device_id, event_id, pending.index, &pending.frame.jpeg)
                .await?;
            if ack.event_id != event_id || ack.index != pending.index || ack.sha256 != sha256 {
                return Err(SyncError::Protocol(format!(
                    "the server acknowledged another frame than frame {} of event {sequence}",
                    pending.index
                )));
            }
            store.mark_evidence_uploaded(sequence, pending.index, now())?;
            match ack.status {
                dosewitness_protocol::AckStatus::Accepted => report.uploaded += 1,
                dosewitness_protocol::AckStatus::Duplicate => report.already_on_server += 1,
            }
        }
    }
    report.still_pending = store.pending_evidence_count()?;
    Ok(report)
}

/// [`upload_evidence`], retrying transient failures per `policy` (as
/// [`drain_outbox_with_retry`]). Each retry resumes from the store.
pub async fn upload_evidence_with_retry(
    store: &mut DeviceStore,
    client: &DeviceClient,
    device_id: DeviceId,
    policy: &RetryPolicy,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<(EvidenceReport, u32), SyncError> {
    retrying!(
        policy,
        upload_evidence(store, client, device_id, &now).await
    )
}

/// Lower-case hex sha256 of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What one sync pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPass {
    pub drained: DrainReport,
    /// Failed attempts retried before the drain and the evidence upload succeeded.
    pub retries: u32,
    pub pulled: PullReport,
    pub evidence: EvidenceReport,
}

/// One sync pass: sends every pending dose event (retrying transient failures per `policy`),
/// pulls new and changed regimens and the server's clock, then uploads the evidence frames of
/// delivered events that `evidence_policy` sends (retried the same way). The outcome, success
/// or the error in plain words, is recorded in the store for the app's sync status.
pub async fn sync_pass(
    store: &mut DeviceStore,
    client: &DeviceClient,
    device_id: DeviceId,
    policy: &RetryPolicy,
    evidence_policy: EvidencePolicy,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<SyncPass, SyncError> {
    let result = async {
        store.set_evidence_policy(evidence_policy, now())?;
        let (drained, drain_retries) =
            drain_outbox_with_retry(store, client, device_id, DEFAULT_BATCH_SIZE, policy, &now)
                .await?;
        let pulled = pull_schedule(store, client, device_id, &now).await?;
        let (evidence, evidence_retries) =
            upload_evidence_with_retry(store, client, device_id, policy, &now).await?;
        Ok(SyncPass {
            drained,
            retries: drain_retries + evidence_retries,
            pulled,
            evidence,
        })
    }
    .await;
    let message = result.as_ref().err().map(ToString::to_string);
    store.record_sync_outcome(message.as_deref(), now())?;
    result
}

/// [`drain_outbox`], retrying transient failures per `policy`. Each retry resumes from the
/// store, so events acknowledged before a failure are not sent again. Returns the report of the
/// pass that succeeded, with `retries` counting the failed attempts before it.
pub async fn drain_outbox_with_retry(
    store: &mut DeviceStore,
    client: &DeviceClient,
    device_id: DeviceId,
    batch_size: usize,
    policy: &RetryPolicy,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<(DrainReport, u32), SyncError> {
    retrying!(
        policy,
        drain_outbox(store, client, device_id, batch_size, &now).await
    )
}
