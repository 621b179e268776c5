//! Studies, sites, patients and medications.

use crate::dose::DoseOutcome;
use crate::ids::{MedicationId, PatientId, SiteId, StudyId};
use crate::redacted::Redacted;
use serde::{Deserialize, Serialize};

/// A clinical study (one protocol). `code` is the sponsor's protocol code, e.g. `DW-001`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Study {
    pub id: StudyId,
    pub code: String,
    pub title: String,
}

/// A trial site running a study.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Site {
    pub id: SiteId,
    pub study_id: StudyId,
    pub name: String,
}

/// An enrolled patient. `subject_code` is the pseudonymous study subject id (e.g. `001-0042`)
/// used in exports and logs; `display_name` is PHI and never logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Patient {
    pub id: PatientId,
    pub site_id: SiteId,
    pub subject_code: String,
    pub display_name: Redacted<String>,
}

/// A medication as prescribed: name, strength and form, e.g. "Metformin", 500 mg, "tablet".
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Medication {
    pub id: MedicationId,
    pub name: String,
    pub strength_mg: f64,
    pub form: String,
}

/// Which doses' evidence keyframes a study has devices upload to the clinic backend. Frames
/// that are not uploaded stay only on the device (encrypted) until purged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EvidencePolicy {
    /// Only doses a coordinator must review ([`DoseOutcome::is_flagged`]): the default, which
    /// keeps the fewest images of patients off the device.
    #[default]
    FlaggedOnly,
    /// Every dose with evidence, when the study protocol asks for it.
    All,
}

impl EvidencePolicy {
    /// Stable lower-case code used in storage and on the command line.
    pub fn code(self) -> &'static str {
        match self {
            Self::FlaggedOnly => "flagged_only",
            Self::All => "all",
        }
    }

    /// The policy with this [`code`](Self::code).
    pub fn from_code(code: &str) -> Option<Self> {
        match code {
            "flagged_only" => Some(Self::FlaggedOnly),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Whether the evidence of a dose with `outcome` is uploaded under this policy.
    pub fn uploads(self, outcome: DoseOutcome) -> bool {
        match self {
            Self::FlaggedOnly => outcome.is_flagged(),
            Self::All => true,
        }
    }
}

#[cfg(test)]
mod evidence_policy_tests {
    use super::*;

    #[test]
    fn flagged_only_uploads_exactly_the_doses_to_review() {
        let all = [
            DoseOutcome::Verified,
            DoseOutcome::NeedsReview,
            DoseOutcome::NotVerified,
            DoseOutcome::Missed,
            DoseOutcome::Skipped,
        ];
        let flagged: Vec<_> = all
            .into_iter()
            .filter(|outcome| EvidencePolicy::FlaggedOnly.uploads(*outcome))
            .collect();
        assert_eq!(
            flagged,
            vec![DoseOutcome::NeedsReview, DoseOutcome::NotVerified]
        );
        assert!(
            all.into_iter()
                .all(|outcome| EvidencePolicy::All.uploads(outcome))
        );
        assert_eq!(EvidencePolicy::default(), EvidencePolicy::FlaggedOnly);
        for policy in [EvidencePolicy::FlaggedOnly, EvidencePolicy::All] {
            assert_eq!(EvidencePolicy::from_code(policy.code()), Some(policy));
            assert_eq!(
                serde_json::to_string(&policy).unwrap(),
                format!("\"{}\"", policy.code())
            );
        }
        assert_eq!(EvidencePolicy::from_code("some"), None);
    }
}
