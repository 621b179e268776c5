//! Studies, sites, patients and medications.

use crate::ids::{MedicationId, PatientId, SiteId, StudyId};
use crate::redacted::Redacted;
use serde::{Deserialize, Serialize};

/// A clinical study (one protocol). `code` is the sponsor's protocol code, e.g. `DW-001`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Study {
    pub id: StudyId,
    pub code: String,
    pub title: String,
}

/// A trial site running a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Site {
    pub id: SiteId,
    pub study_id: StudyId,
    pub name: String,
}

/// An enrolled patient. `subject_code` is the pseudonymous study subject id (e.g. `001-0042`)
/// used in exports and logs; `display_name` is PHI and never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Patient {
    pub id: PatientId,
    pub site_id: SiteId,
    pub subject_code: String,
    pub display_name: Redacted<String>,
}

/// A medication as prescribed: name, strength and form, e.g. "Metformin", 500 mg, "tablet".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Medication {
    pub id: MedicationId,
    pub name: String,
    pub strength_mg: f64,
    pub form: String,
}
