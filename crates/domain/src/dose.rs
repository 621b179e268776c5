//! Dose events: what a device recorded for one scheduled dose, and why.

use crate::ids::{DeviceId, DoseEventId, MedicationId, PatientId, RegimenId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The verdict on one scheduled dose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DoseOutcome {
    /// Every check passed: the enrolled patient was seen taking the prescribed pill.
    Verified,
    /// Recorded, but at least one check was inconclusive: a coordinator must review it.
    NeedsReview,
    /// A session ran and the checks failed (wrong person, no pill, no ingestion seen).
    NotVerified,
    /// The window closed with no dose session.
    Missed,
    /// The patient declared the dose skipped (e.g. on clinician advice).
    Skipped,
}

impl DoseOutcome {
    /// Stable lower-case code used in storage, wire types and exports.
    pub fn code(self) -> &'static str {
        match self {
            Self::Verified => "verified",
            Self::NeedsReview => "needs_review",
            Self::NotVerified => "not_verified",
            Self::Missed => "missed",
            Self::Skipped => "skipped",
        }
    }

    /// Whether a coordinator must look at this dose: the checks were inconclusive or failed.
    /// Flagged doses are the ones whose evidence keyframes leave the device by default
    /// ([`crate::EvidencePolicy::FlaggedOnly`]).
    pub fn is_flagged(self) -> bool {
        matches!(self, Self::NeedsReview | Self::NotVerified)
    }
}

/// Why a dose did not verify cleanly. Codes are stable: the UI and exports branch on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoFaceFound,
    SeveralFacesFound,
    FaceNotMatched,
    LivenessNotShown,
    PillNotRecognised,
    IngestionNotSeen,
    EmptyMouthNotShown,
    OutsideDoseWindow,
    SessionAbandoned,
    DeclaredSkipped,
    NoSessionInWindow,
}

/// Scores of each check in `[0, 1]`, when the check ran. Kept with the event so a reviewer can
/// see how close a call was.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckScores {
    pub face_detection: Option<f64>,
    pub identity: Option<f64>,
    pub liveness: Option<f64>,
    pub pill: Option<f64>,
    pub ingestion: Option<f64>,
}

/// One dose event as recorded on a device. Times are the device's capture times (UTC).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoseEvent {
    pub id: DoseEventId,
    pub device_id: DeviceId,
    pub patient_id: PatientId,
    pub regimen_id: RegimenId,
    pub medication_id: MedicationId,
    /// The scheduled instant this event answers.
    pub scheduled_at: DateTime<Utc>,
    /// When the dose session concluded (capture time of its last frame), or when the window
    /// closed for a missed dose.
    pub recorded_at: DateTime<Utc>,
    pub outcome: DoseOutcome,
    pub reasons: Vec<Reason>,
    pub scores: CheckScores,
}
