//! Request and response bodies of the `/api/v1` HTTP API. Requests reject unknown fields so a
//! typo or a newer client is told, not silently ignored.

use crate::chain::SignedDoseEvent;
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use dosewitness_domain::{
    AdherenceBand, DeviceId, DoseEventId, DoseWindow, Medication, Patient, PatientId, Regimen,
    Site, SiteId, Study, StudyId,
};
use serde::{Deserialize, Serialize};

/// `POST /api/v1/studies`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateStudy {
    pub code: String,
    pub title: String,
}

/// `POST /api/v1/studies/{study_id}/sites`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateSite {
    pub name: String,
}

/// `POST /api/v1/sites/{site_id}/patients`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePatient {
    pub subject_code: String,
    pub display_name: String,
}

/// The medication part of [`CreateRegimen`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewMedication {
    pub name: String,
    pub strength_mg: f64,
    pub form: String,
}

/// `POST /api/v1/patients/{patient_id}/regimens`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRegimen {
    pub medication: NewMedication,
    pub units_per_dose: u32,
    /// IANA zone name, e.g. `Europe/Berlin`.
    pub time_zone: String,
    pub dose_times: Vec<NaiveTime>,
    pub window: DoseWindow,
    pub start_date: NaiveDate,
    pub end_date: Option<NaiveDate>,
}

/// A regimen with its medication, as devices and dashboards receive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegimenPlan {
    pub regimen: Regimen,
    pub medication: Medication,
}

/// `POST /api/v1/patients/{patient_id}/enrolment-codes` response: a one-time code the device
/// uses to enrol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EnrolmentCode {
    pub code: String,
    pub patient_id: PatientId,
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/v1/devices/enrol`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EnrolDevice {
    pub code: String,
    /// Hex Ed25519 public key of the device's signing key.
    pub public_key: String,
    /// Free-text device label (model name), no PHI.
    pub label: String,
}

/// Response to [`EnrolDevice`]: the device's identity, its bearer credential and the regimens
/// it must follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceEnrolment {
    pub device_id: DeviceId,
    pub patient: Patient,
    pub site: Site,
    pub study: Study,
    /// Bearer token for device endpoints. Secret: stored encrypted on the device.
    pub device_token: String,
    pub regimens: Vec<RegimenPlan>,
    pub server_time: DateTime<Utc>,
}

/// `POST /api/v1/devices/{device_id}/dose-events`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DoseEventBatch {
    pub protocol_version: u32,
    pub events: Vec<SignedDoseEvent>,
}

/// What the server did with one event of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Newly stored.
    Accepted,
    /// Already stored earlier with identical content; nothing changed.
    Duplicate,
}

/// Acknowledgement of one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventAck {
    pub event_id: DoseEventId,
    pub sequence: u64,
    pub status: AckStatus,
}

/// Response to [`DoseEventBatch`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BatchAck {
    pub acks: Vec<EventAck>,
    pub server_time: DateTime<Utc>,
}

/// `GET /api/v1/patients/{patient_id}/adherence?from=…&to=…`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdherenceReport {
    pub patient_id: PatientId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub scheduled: u32,
    pub verified_on_time: u32,
    pub awaiting_review: u32,
    /// `verified_on_time / scheduled`; absent when nothing was scheduled.
    pub ratio: Option<f64>,
    pub band: Option<AdherenceBand>,
    pub proportion_of_days_covered: Option<f64>,
}

/// Body of every 4xx/5xx response. Clients branch on `code`; `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

/// Response ids of created resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Created<Id> {
    pub id: Id,
}

/// Convenience aliases for created resources.
pub type CreatedStudy = Created<StudyId>;
pub type CreatedSite = Created<SiteId>;
pub type CreatedPatient = Created<PatientId>;

/// Header carrying the lower-case hex sha256 of an uploaded evidence frame's body; the server
/// refuses the frame (400 `hash_mismatch`) if the body it received hashes differently.
pub const EVIDENCE_HASH_HEADER: &str = "x-content-sha256";

/// Largest evidence frame (one JPEG) the server accepts, in bytes (413 `frame_too_large`).
pub const MAX_EVIDENCE_FRAME_BYTES: usize = 2 * 1024 * 1024;

/// Frames of one dose event the server accepts: indexes run from 0 to this minus one.
pub const MAX_EVIDENCE_FRAMES_PER_EVENT: u32 = 64;

/// One evidence keyframe the server holds for a dose event. Frames are numbered by `index`, the
/// frame's position in capture order on the device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvidenceFrameInfo {
    pub index: u32,
    /// Lower-case hex sha256 of the JPEG bytes.
    pub sha256: String,
    pub size_bytes: u64,
    pub received_at: DateTime<Utc>,
}

/// `GET /api/v1/devices/{device_id}/dose-events/{event_id}/evidence` (the device resuming an
/// upload) and `GET /api/v1/dose-events/{event_id}/evidence` (a coordinator): the frames the
/// server holds for the event, by index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvidenceManifest {
    pub event_id: DoseEventId,
    pub frames: Vec<EvidenceFrameInfo>,
}

/// Response to `PUT /api/v1/devices/{device_id}/dose-events/{event_id}/evidence/{index}` (body:
/// the JPEG; header [`EVIDENCE_HASH_HEADER`]): 201 with `accepted` when newly stored, 200 with
/// `duplicate` when the same bytes were already stored. A different body for a stored index is
/// refused (409 `evidence_conflict`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EvidenceAck {
    pub event_id: DoseEventId,
    pub index: u32,
    pub sha256: String,
    pub status: AckStatus,
}
