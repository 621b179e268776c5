//! Adherence over a period.
//!
//! *Dose adherence* is the share of scheduled doses that have a `Verified` event recorded inside
//! their window. *Proportion of days covered* (PDC) is the share of days on which every scheduled
//! dose was verified on time. Events that answer no scheduled dose, late events and duplicate
//! events never raise either figure.

use crate::dose::{DoseEvent, DoseOutcome};
use crate::ids::RegimenId;
use crate::regimen::ScheduledDose;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};

/// Counts behind an adherence figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Adherence {
    /// Scheduled doses in the period.
    pub scheduled: u32,
    /// Scheduled doses with a `Verified` event inside their window.
    pub verified_on_time: u32,
    /// Scheduled doses not verified but with a `NeedsReview` event inside their window.
    pub awaiting_review: u32,
}

/// Sponsor dashboard bands (AiCure's published convention): ≥ 80 % good, 50–80 % monitor,
/// < 50 % outreach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AdherenceBand {
    Good,
    Monitor,
    Outreach,
}

impl Adherence {
    /// `verified_on_time / scheduled`, or `None` when nothing was scheduled.
    pub fn ratio(&self) -> Option<f64> {
        (self.scheduled > 0).then(|| f64::from(self.verified_on_time) / f64::from(self.scheduled))
    }

    /// The dashboard band of [`Self::ratio`].
    pub fn band(&self) -> Option<AdherenceBand> {
        self.ratio().map(|ratio| {
            if ratio >= 0.8 {
                AdherenceBand::Good
            } else if ratio >= 0.5 {
                AdherenceBand::Monitor
            } else {
                AdherenceBand::Outreach
            }
        })
    }
}

fn on_time_keys(
    events: &[DoseEvent],
    outcome: DoseOutcome,
    schedule: &[ScheduledDose],
) -> HashSet<(RegimenId, DateTime<Utc>)> {
    let windows: BTreeMap<(RegimenId, DateTime<Utc>), &ScheduledDose> = schedule
        .iter()
        .map(|dose| ((dose.regimen_id, dose.scheduled_at), dose))
        .collect();
    events
        .iter()
        .filter(|event| event.outcome == outcome)
        .filter(|event| {
            windows
                .get(&(event.regimen_id, event.scheduled_at))
                .is_some_and(|dose| dose.window_contains(event.recorded_at))
        })
        .map(|event| (event.regimen_id, event.scheduled_at))
        .collect()
}

/// Dose adherence of `events` against `schedule` (see the module docs).
pub fn dose_adherence(schedule: &[ScheduledDose], events: &[DoseEvent]) -> Adherence {
    let verified = on_time_keys(events, DoseOutcome::Verified, schedule);
    let review = on_time_keys(events, DoseOutcome::NeedsReview, schedule);
    let mut adherence = Adherence::default();
    let mut seen = HashSet::new();
    for dose in schedule {
        let key = (dose.regimen_id, dose.scheduled_at);
        if !seen.insert(key) {
            continue;
        }
        adherence.scheduled += 1;
        if verified.contains(&key) {
            adherence.verified_on_time += 1;
        } else if review.contains(&key) {
            adherence.awaiting_review += 1;
        }
    }
    adherence
}

/// Share of days (patient-local dates with at least one scheduled dose) on which every scheduled
/// dose was verified on time; `None` when nothing was scheduled.
pub fn proportion_of_days_covered(schedule: &[ScheduledDose], events: &[DoseEvent]) -> Option<f64> {
    let verified = on_time_keys(events, DoseOutcome::Verified, schedule);
    let mut days: BTreeMap<NaiveDate, bool> = BTreeMap::new();
    for dose in schedule {
        let covered = verified.contains(&(dose.regimen_id, dose.scheduled_at));
        days.entry(dose.local_date)
            .and_modify(|all| *all &= covered)
            .or_insert(covered);
    }
    let covered_days = days.values().filter(|covered| **covered).count();
    (!days.is_empty()).then(|| covered_days as f64 / days.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dose::CheckScores;
    use crate::ids::{DeviceId, DoseEventId, MedicationId, PatientId};
    use crate::regimen::{DoseWindow, Regimen};
    use chrono::{Duration, NaiveTime, TimeZone};
    use proptest::prelude::*;

    fn twice_daily() -> Regimen {
        let created = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        Regimen {
            id: RegimenId::generate(created),
            patient_id: PatientId::generate(created),
            medication_id: MedicationId::generate(created),
            units_per_dose: 1,
            time_zone: chrono_tz::Tz::UTC,
            dose_times: vec![
                NaiveTime::from_hms_opt(8, 0, 0).unwrap(),
                NaiveTime::from_hms_opt(20, 0, 0).unwrap(),
            ],
            window: DoseWindow {
                before_minutes: 60,
                after_minutes: 60,
            },
            start_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            end_date: None,
        }
    }

    fn event(
        regimen: &Regimen,
        dose: &ScheduledDose,
        delay_minutes: i64,
        outcome: DoseOutcome,
    ) -> DoseEvent {
        let recorded_at = dose.scheduled_at + Duration::minutes(delay_minutes);
        DoseEvent {
            id: DoseEventId::generate(recorded_at),
            device_id: DeviceId::generate(recorded_at),
            patient_id: regimen.patient_id,
            regimen_id: regimen.id,
            medication_id: regimen.medication_id,
            scheduled_at: dose.scheduled_at,
            recorded_at,
            outcome,
            reasons: Vec::new(),
            scores: CheckScores::default(),
        }
    }

    fn ten_days(regimen: &Regimen) -> Vec<ScheduledDose> {
        let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        regimen.scheduled_doses(from, from + Duration::days(10))
    }

    #[test]
    fn late_duplicate_and_unverified_events_do_not_count() {
        let regimen = twice_daily();
        let schedule = ten_days(&regimen);
        assert_eq!(schedule.len(), 20);
        let events = vec![
            event(&regimen, &schedule[0], 5, DoseOutcome::Verified),
            event(&regimen, &schedule[0], 10, DoseOutcome::Verified), // duplicate
            event(&regimen, &schedule[1], 61, DoseOutcome::Verified), // one minute late
            event(&regimen, &schedule[2], -60, DoseOutcome::Verified), // window opening, counts
            event(&regimen, &schedule[3], 0, DoseOutcome::NotVerified),
            event(&regimen, &schedule[4], 0, DoseOutcome::NeedsReview),
        ];
        let adherence = dose_adherence(&schedule, &events);
        assert_eq!(
            adherence,
            Adherence {
                scheduled: 20,
                verified_on_time: 2,
                awaiting_review: 1
            }
        );
        assert_eq!(adherence.ratio(), Some(0.1));
        assert_eq!(adherence.band(), Some(AdherenceBand::Outreach));
        // Day 1 has doses 0 and 1; only dose 0 was on time, so no day is fully covered.
        assert_eq!(proportion_of_days_covered(&schedule, &events), Some(0.0));
    }

    #[test]
    fn bands_follow_the_published_cut_offs() {
        let band = |verified| {
            Adherence {
                scheduled: 10,
                verified_on_time: verified,
                awaiting_review: 0,
            }
            .band()
        };
        assert_eq!(band(8), Some(AdherenceBand::Good));
        assert_eq!(band(7), Some(AdherenceBand::Monitor));
        assert_eq!(band(5), Some(AdherenceBand::Monitor));
        assert_eq!(band(4), Some(AdherenceBand::Outreach));
        assert_eq!(Adherence::default().band(), None);
    }

    proptest! {
        #[test]
        fn adherence_is_a_share_and_full_adherence_covers_every_day(
            taken in proptest::collection::vec(any::<bool>(), 20),
            delays in proptest::collection::vec(-60i64..=60, 20),
        ) {
            let regimen = twice_daily();
            let schedule = ten_days(&regimen);
            let events: Vec<DoseEvent> = schedule.iter().zip(&taken).zip(&delays)
                .filter(|((_, taken), _)| **taken)
                .map(|((dose, _), delay)| event(&regimen, dose, *delay, DoseOutcome::Verified))
                .collect();
            let adherence = dose_adherence(&schedule, &events);
            let expected = taken.iter().filter(|taken| **taken).count() as u32;
            prop_assert_eq!(adherence.verified_on_time, expected);
            let ratio = adherence.ratio().unwrap();
            prop_assert!((0.0..=1.0).contains(&ratio));
            let pdc = proportion_of_days_covered(&schedule, &events).unwrap();
            prop_assert!((0.0..=1.0).contains(&pdc));
            prop_assert!(pdc <= ratio + 1e-12, "a covered day needs all its doses: pdc {} ratio {}", pdc, ratio);
            if expected == 20 {
                prop_assert_eq!(pdc, 1.0);
            }
        }

        #[test]
        fn adding_events_never_lowers_adherence(
            first in proptest::collection::vec((0usize..20, -120i64..120), 0..30),
            more in proptest::collection::vec((0usize..20, -120i64..120), 0..10),
        ) {
            let regimen = twice_daily();
            let schedule = ten_days(&regimen);
            let make = |items: &[(usize, i64)]| -> Vec<DoseEvent> {
                items.iter().map(|(index, delay)| event(&regimen, &schedule[*index], *delay, DoseOutcome::Verified)).collect()
            };
            let base = make(&first);
            let mut extended = base.clone();
            extended.extend(make(&more));
            let before = dose_adherence(&schedule, &base);
            let after = dose_adherence(&schedule, &extended);
            prop_assert!(after.verified_on_time >= before.verified_on_time);
            prop_assert!(after.verified_on_time <= after.scheduled);
        }
    }
}
