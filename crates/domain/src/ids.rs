//! Typed ids. Every id is a UUIDv7 (time-ordered, so ids sort by creation time and index well)
//! wrapped in its own newtype so a patient id can never be passed where a study id is expected.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new UUIDv7 id whose time part is `created_at` (random bits from the OS RNG).
            pub fn generate(created_at: DateTime<Utc>) -> Self {
                let seconds = u64::try_from(created_at.timestamp()).unwrap_or(0);
                let timestamp = uuid::Timestamp::from_unix(
                    uuid::NoContext,
                    seconds,
                    created_at.timestamp_subsec_nanos(),
                );
                Self(Uuid::new_v7(timestamp))
            }

            /// Wraps an existing UUID (e.g. read back from storage).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(formatter, "{}({})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, formatter)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

id_type!(
    /// A clinical study (protocol).
    StudyId
);
id_type!(
    /// A trial site within a study.
    SiteId
);
id_type!(
    /// An enrolled patient (study subject).
    PatientId
);
id_type!(
    /// A medication (investigational product or concomitant medication).
    MedicationId
);
id_type!(
    /// A dosing regimen for one patient and one medication.
    RegimenId
);
id_type!(
    /// One dose event recorded on a device.
    DoseEventId
);
id_type!(
    /// An enrolled device (tablet or desktop).
    DeviceId
);

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ids_are_version_7_and_sort_by_creation_time() {
        let earlier = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 0).unwrap();
        let later = Utc.with_ymd_and_hms(2026, 1, 1, 8, 0, 1).unwrap();
        let first = DoseEventId::generate(earlier);
        let second = DoseEventId::generate(later);
        assert_eq!(first.as_uuid().get_version_num(), 7);
        assert!(first < second, "{first:?} should sort before {second:?}");
        assert_ne!(
            DoseEventId::generate(earlier),
            DoseEventId::generate(earlier)
        );
    }

    #[test]
    fn ids_round_trip_through_text_and_json() {
        let id = PatientId::generate(Utc::now());
        let parsed: PatientId = id.to_string().parse().unwrap();
        assert_eq!(parsed, id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
    }
}
