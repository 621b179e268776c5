//! Pure domain types and rules for DoseWitness.
//!
//! This crate has no I/O, no async and reads no clock: time enters through [`Clock`] values that
//! callers pass in, so every rule here is deterministic and testable.
//!
//! - [`ids`]: UUIDv7 newtype ids.
//! - [`study`]: studies, sites, patients, medications and the study's evidence policy.
//! - [`regimen`]: dose times with a window, in the patient's time zone, and the schedule they imply.
//! - [`dose`]: dose events, outcomes, reasons and per-check scores.
//! - [`adherence`]: adherence over a period and proportion of days covered.

pub mod adherence;
pub mod clock;
pub mod dose;
pub mod ids;
pub mod redacted;
pub mod regimen;
pub mod study;

pub use adherence::{Adherence, AdherenceBand, dose_adherence, proportion_of_days_covered};
pub use clock::{Clock, FixedClock, ManualClock, SystemClock};
pub use dose::{CheckScores, DoseEvent, DoseOutcome, Reason};
pub use ids::{DeviceId, DoseEventId, MedicationId, PatientId, RegimenId, SiteId, StudyId};
pub use redacted::Redacted;
pub use regimen::{DoseWindow, Regimen, RegimenError, ScheduledDose};
pub use study::{EvidencePolicy, Medication, Patient, Site, Study};
