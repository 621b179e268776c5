//! The device's orchestration, independent of any UI host: capture → vision → store → sync.
//! The CLI and the Tauri app both drive a device through this crate.
//!
//! - [`Perception`] loads the models once and turns a frame into a session observation.
//! - [`run_dose_session`] plays a [`FrameSource`] through the dose-session state machine.
//! - [`dose_event_for`] turns a session's result into a domain [`DoseEvent`].
//! - [`enrol`] and [`sync_now`] connect the device store to the clinic backend.
//!
//! Checks built so far: face presence (BlazeFace). A dose event carries a score only for the
//! checks that ran, so a reviewer sees exactly what was verified.

use chrono::{DateTime, Duration, Utc};
use dosewitness_capture::{CaptureError, FrameSource};
use dosewitness_domain::{
    CheckScores, DeviceId, DoseEvent, DoseEventId, DoseOutcome, EvidencePolicy, Reason,
    ScheduledDose,
};
use dosewitness_protocol::{DeviceEnrolment, EnrolDevice, RegimenPlan};
use dosewitness_store::{DeviceStore, StoreError};
use dosewitness_sync::{DeviceClient, RetryPolicy, SyncError, SyncPass, TlsPolicy, sync_pass};
use dosewitness_vision::dose_session::{
    FaceFailure, FacePresence, FrameObservation, SessionConfig, SessionEvent, SessionState,
    outcome, step,
};
use dosewitness_vision::{FaceDetector, ModelManifest, VisionError};
use std::path::Path;
use std::time::Instant;

/// Errors of device orchestration; each names the stage that failed.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    #[error("loading models")]
    Models(#[source] VisionError),
    #[error("reading frames")]
    Capture(#[from] CaptureError),
    #[error("perceiving frame {sequence}")]
    Perception { sequence: u64, source: VisionError },
    #[error("device store")]
    Store(#[from] StoreError),
    #[error("clinic server")]
    Sync(#[from] SyncError),
}

/// The loaded models. Load once per process; every session reuses them.
#[derive(Debug, Clone)]
pub struct Perception {
    face_detector: FaceDetector,
}

impl Perception {
    /// Loads every model the dose session needs from `models_dir` (manifest, sha256, shapes).
    pub fn load(models_dir: &Path) -> Result<Self, EdgeError> {
        let manifest = ModelManifest::open(models_dir).map_err(EdgeError::Models)?;
        Ok(Self {
            face_detector: FaceDetector::load(&manifest).map_err(EdgeError::Models)?,
        })
    }

    /// The face detector.
    pub fn face_detector(&self) -> &FaceDetector {
        &self.face_detector
    }
}

/// Progress after each frame, for progress bars (counts and times only).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameProgress {
    pub sequence: u64,
    pub captured_at_ms: u64,
    pub faces: usize,
    pub inference_ms: f64,
}

/// The outcome of one dose session.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SessionReport {
    pub face: FacePresence,
    pub frames_processed: u32,
    /// Capture time of the first frame, to align capture times with the wall clock.
    pub first_capture_ms: u64,
    /// Sum of per-frame perception time (pre-processing, inference, post-processing).
    pub perception_ms_total: f64,
}

/// Runs a dose session over `source` until the session concludes or the source ends.
pub fn run_dose_session(
    perception: &Perception,
    source: &mut dyn FrameSource,
    config: &SessionConfig,
    mut on_frame: impl FnMut(FrameProgress),
) -> Result<SessionReport, EdgeError> {
    let mut state = SessionState::NotStarted;
    let mut frames_processed = 0;
    let mut first_capture_ms = None;
    let mut last_capture_ms = 0;
    let mut perception_ms_total = 0.0;
    while let Some(frame) = source.next_frame()? {
        let started = Instant::now();
        let faces =
            perception
                .face_detector
                .detect(&frame)
                .map_err(|source| EdgeError::Perception {
                    sequence: frame.sequence(),
                    source,
                })?;
        let inference_ms = started.elapsed().as_secs_f64() * 1000.0;
        perception_ms_total += inference_ms;
        frames_processed += 1;
        first_capture_ms.get_or_insert(frame.captured_at_ms());
        last_capture_ms = frame.captured_at_ms();
        on_frame(FrameProgress {
            sequence: frame.sequence(),
            captured_at_ms: frame.captured_at_ms(),
            faces: faces.len(),
            inference_ms,
        });
        let observation = FrameObservation {
            face_count: faces.len(),
            best_face_score: faces.first().map(|face| face.score),
        };
        let (next, event) = step(state, observation, frame.captured_at_ms(), config);
        state = next;
        if let Some(SessionEvent::Concluded(face)) = event {
            return Ok(SessionReport {
                face,
                frames_processed,
                first_capture_ms: first_capture_ms.unwrap_or(0),
                perception_ms_total,
            });
        }
    }
    Ok(SessionReport {
        face: outcome(state, last_capture_ms),
        frames_processed,
        first_capture_ms: first_capture_ms.unwrap_or(0),
        perception_ms_total,
    })
}

/// The dose event for a session that started at wall time `session_started_at` and answered
/// `scheduled` of `plan`. `recorded_at` is the capture time at which the session concluded.
pub fn dose_event_for(
    plan: &RegimenPlan,
    scheduled: &ScheduledDose,
    device_id: DeviceId,
    report: &SessionReport,
    session_started_at: DateTime<Utc>,
) -> DoseEvent {
    let elapsed_ms = report
        .face
        .concluded_at_ms
        .saturating_sub(report.first_capture_ms);
    let recorded_at =
        session_started_at + Duration::milliseconds(i64::try_from(elapsed_ms).unwrap_or(i64::MAX));
    let mut reasons = Vec::new();
    let outcome = if report.face.passed == Some(true) {
        DoseOutcome::Verified
    } else {
        reasons.push(match report.face.failure {
            Some(FaceFailure::SeveralFaces) => Reason::SeveralFacesFound,
            _ => Reason::NoFaceFound,
        });
        DoseOutcome::NotVerified
    };
    if !scheduled.window_contains(recorded_at) {
        reasons.push(Reason::OutsideDoseWindow);
    }
    DoseEvent {
        id: DoseEventId::generate(recorded_at),
        device_id,
        patient_id: plan.regimen.patient_id,
        regimen_id: plan.regimen.id,
        medication_id: plan.medication.id,
        scheduled_at: scheduled.scheduled_at,
        recorded_at,
        outcome,
        reasons,
        scores: CheckScores {
            face_detection: Some(f64::from(report.face.best_score)),
            ..CheckScores::default()
        },
    }
}

/// Enrols the device in `store` with the server at `server_url` using a one-time `code`, and
/// saves the credential and regimens. Returns the enrolment.
pub async fn enrol(
    store: &mut DeviceStore,
    server_url: &str,
    code: &str,
    label: &str,
    timeout: std::time::Duration,
    now: DateTime<Utc>,
) -> Result<DeviceEnrolment, EdgeError> {
    let identity = store.identity()?;
    let client = DeviceClient::new(server_url, None, timeout)?;
    let enrolment = client
        .enrol(&EnrolDevice {
            code: code.to_string(),
            public_key: identity.public_key,
            label: label.to_string(),
        })
        .await?;
    store.save_enrolment(
        enrolment.device_id,
        server_url,
        &enrolment.device_token,
        &enrolment.regimens,
        now,
    )?;
    Ok(enrolment)
}

/// One sync pass: sends every pending dose event to the server the device is enrolled with
/// (retrying transient failures per `policy`), pulls new and changed regimens and the server's
/// clock, then uploads the evidence frames of delivered events that the study's `evidence`
/// policy sends. The outcome, success or the error in plain words, is recorded in the store
/// for the app's sync status.
pub async fn sync_now(
    store: &mut DeviceStore,
    timeout: std::time::Duration,
    policy: &RetryPolicy,
    evidence: EvidencePolicy,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<SyncPass, EdgeError> {
    sync_now_with_tls(store, timeout, &TlsPolicy::default(), policy, evidence, now).await
}

/// As [`sync_now`], trusting the server's certificate per `tls` (e.g. a pinned certificate
/// instead of the platform's roots).
pub async fn sync_now_with_tls(
    store: &mut DeviceStore,
    timeout: std::time::Duration,
    tls: &TlsPolicy,
    policy: &RetryPolicy,
    evidence: EvidencePolicy,
    now: impl Fn() -> DateTime<Utc>,
) -> Result<SyncPass, EdgeError> {
    let (server_url, token) = store.server_credential()?;
    let device_id = store.identity()?.device_id;
    let client = DeviceClient::with_tls(&server_url, Some(token), timeout, tls)?;
    Ok(sync_pass(store, &client, device_id, policy, evidence, now).await?)
}
