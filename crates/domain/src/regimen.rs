//! Regimens: dose times of day with a window around each, in the patient's time zone.
//!
//! A regimen says "take medication M at 08:00 and 20:00 local time, each dose acceptable from
//! 60 minutes before to 120 minutes after". [`Regimen::scheduled_doses`] expands it into concrete
//! UTC instants, handling daylight-saving gaps (a dose time that does not exist that day moves
//! forward by the gap) and overlaps (the earlier of the two instants).

use crate::ids::{MedicationId, PatientId, RegimenId};
use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Why a regimen is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegimenError {
    #[error("a regimen needs at least one dose time")]
    NoDoseTimes,
    #[error("dose times must be distinct and in increasing order")]
    DoseTimesNotIncreasing,
    #[error(
        "the dose window must not be negative (before {before_minutes} min, after {after_minutes} min)"
    )]
    NegativeWindow {
        before_minutes: i64,
        after_minutes: i64,
    },
    #[error("dose windows of consecutive dose times overlap; shorten the window")]
    OverlappingWindows,
    #[error("the end date {end} is before the start date {start}")]
    EndBeforeStart { start: NaiveDate, end: NaiveDate },
}

/// How early and how late a dose may be taken and still count as on time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DoseWindow {
    pub before_minutes: i64,
    pub after_minutes: i64,
}

impl DoseWindow {
    /// The window's extent before the scheduled time.
    pub fn before(&self) -> Duration {
        Duration::minutes(self.before_minutes)
    }

    /// The window's extent after the scheduled time.
    pub fn after(&self) -> Duration {
        Duration::minutes(self.after_minutes)
    }
}

/// A patient's dosing schedule for one medication.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Regimen {
    pub id: RegimenId,
    pub patient_id: PatientId,
    pub medication_id: MedicationId,
    /// Number of units (e.g. tablets) per dose.
    pub units_per_dose: u32,
    /// IANA time zone of the patient, e.g. `Europe/Berlin`.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "Europe/Berlin"))]
    pub time_zone: Tz,
    /// Local times of day, strictly increasing.
    pub dose_times: Vec<NaiveTime>,
    pub window: DoseWindow,
    /// First local date with scheduled doses.
    pub start_date: NaiveDate,
    /// Last local date with scheduled doses (inclusive), if the regimen ends.
    pub end_date: Option<NaiveDate>,
}

/// One concrete scheduled dose with its acceptance window, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduledDose {
    pub regimen_id: RegimenId,
    pub scheduled_at: DateTime<Utc>,
    pub window_opens: DateTime<Utc>,
    pub window_closes: DateTime<Utc>,
    /// The patient's local calendar date of this dose.
    pub local_date: NaiveDate,
}

impl ScheduledDose {
    /// True when `instant` lies inside the window (both ends inclusive).
    pub fn window_contains(&self, instant: DateTime<Utc>) -> bool {
        self.window_opens <= instant && instant <= self.window_closes
    }
}

impl Regimen {
    /// Checks the regimen's invariants. Constructors in other crates call this before storing.
    pub fn validate(&self) -> Result<(), RegimenError> {
        if self.dose_times.is_empty() {
            return Err(RegimenError::NoDoseTimes);
        }
        if self.dose_times.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(RegimenError::DoseTimesNotIncreasing);
        }
        if self.window.before_minutes < 0 || self.window.after_minutes < 0 {
            return Err(RegimenError::NegativeWindow {
                before_minutes: self.window.before_minutes,
                after_minutes: self.window.after_minutes,
            });
        }
        let span = self.window.before() + self.window.after();
        let mut gaps: Vec<Duration> = self
            .dose_times
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .collect();
        if let (Some(first), Some(last)) = (self.dose_times.first(), self.dose_times.last()) {
            gaps.push(Duration::days(1) - (*last - *first));
        }
        if gaps.iter().any(|gap| *gap <= span) {
            return Err(RegimenError::OverlappingWindows);
        }
        if let Some(end) = self.end_date
            && end < self.start_date
        {
            return Err(RegimenError::EndBeforeStart {
                start: self.start_date,
                end,
            });
        }
        Ok(())
    }

    /// Every scheduled dose whose scheduled instant lies in `[from, to)`, in time order.
    pub fn scheduled_doses(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<ScheduledDose> {
        if to <= from {
            return Vec::new();
        }
        // Local dates that can hold an instant in [from, to): widen by a day on each side to
        // cover any UTC offset, then filter precisely on the instant.
        let first_date = (from.with_timezone(&self.time_zone).date_naive() - Duration::days(1))
            .max(self.start_date);
        let mut last_date = to.with_timezone(&self.time_zone).date_naive() + Duration::days(1);
        if let Some(end) = self.end_date {
            last_date = last_date.min(end);
        }
        let mut doses = Vec::new();
        let mut date = first_date;
        while date <= last_date {
            for time in &self.dose_times {
                let Some(scheduled_at) = self.local_instant(date, *time) else {
                    continue;
                };
                if from <= scheduled_at && scheduled_at < to {
                    doses.push(ScheduledDose {
                        regimen_id: self.id,
                        scheduled_at,
                        window_opens: scheduled_at - self.window.before(),
                        window_closes: scheduled_at + self.window.after(),
                        local_date: date,
                    });
                }
            }
            let Some(next) = date.succ_opt() else { break };
            date = next;
        }
        doses
    }

    /// The scheduled dose whose window contains `instant`, if any.
    pub fn dose_window_at(&self, instant: DateTime<Utc>) -> Option<ScheduledDose> {
        let reach = self.window.before() + self.window.after() + Duration::days(1);
        self.scheduled_doses(instant - reach, instant + reach)
            .into_iter()
            .find(|dose| dose.window_contains(instant))
    }

    /// The UTC instant of a local date and time in the patient's zone. A time skipped by a
    /// daylight-saving jump moves forward by one hour; an ambiguous time takes the earlier instant.
    fn local_instant(&self, date: NaiveDate, time: NaiveTime) -> Option<DateTime<Utc>> {
        let local = date.and_time(time);
        match self.time_zone.from_local_datetime(&local) {
            LocalResult::Single(instant) => Some(instant.with_timezone(&Utc)),
            LocalResult::Ambiguous(earlier, _) => Some(earlier.with_timezone(&Utc)),
            LocalResult::None => self
                .time_zone
                .from_local_datetime(&(local + Duration::hours(1)))
                .earliest()
                .map(|instant| instant.with_timezone(&Utc)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn regimen(zone: Tz, times: &[(u32, u32)], before: i64, after: i64) -> Regimen {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        Regimen {
            id: RegimenId::generate(now),
            patient_id: PatientId::generate(now),
            medication_id: MedicationId::generate(now),
            units_per_dose: 1,
            time_zone: zone,
            dose_times: times
                .iter()
                .map(|(hour, minute)| NaiveTime::from_hms_opt(*hour, *minute, 0).unwrap())
                .collect(),
            window: DoseWindow {
                before_minutes: before,
                after_minutes: after,
            },
            start_date: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            end_date: None,
        }
    }

    #[test]
    fn twice_daily_in_berlin_lands_at_the_right_utc_instants() {
        let regimen = regimen(chrono_tz::Europe::Berlin, &[(8, 0), (20, 0)], 60, 120);
        regimen.validate().unwrap();
        let from = Utc.with_ymd_and_hms(2026, 1, 10, 0, 0, 0).unwrap();
        let doses = regimen.scheduled_doses(from, from + Duration::days(1));
        let instants: Vec<_> = doses.iter().map(|dose| dose.scheduled_at).collect();
        // Berlin is UTC+1 in January.
        assert_eq!(
            instants,
            vec![
                Utc.with_ymd_and_hms(2026, 1, 10, 7, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 1, 10, 19, 0, 0).unwrap(),
            ]
        );
        assert_eq!(
            doses[0].window_opens,
            Utc.with_ymd_and_hms(2026, 1, 10, 6, 0, 0).unwrap()
        );
        assert_eq!(
            doses[0].window_closes,
            Utc.with_ymd_and_hms(2026, 1, 10, 9, 0, 0).unwrap()
        );
    }

    #[test]
    fn a_dose_time_skipped_by_daylight_saving_moves_forward() {
        // 2026-03-29 02:30 does not exist in Berlin (clocks jump 02:00 -> 03:00 local).
        let regimen = regimen(chrono_tz::Europe::Berlin, &[(2, 30)], 30, 30);
        let from = Utc.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap();
        let doses = regimen.scheduled_doses(from, from + Duration::days(1));
        assert_eq!(doses.len(), 1);
        // 03:30 CEST = 01:30 UTC.
        assert_eq!(
            doses[0].scheduled_at,
            Utc.with_ymd_and_hms(2026, 3, 29, 1, 30, 0).unwrap()
        );
    }

    #[test]
    fn invalid_regimens_are_rejected_with_the_reason() {
        assert_eq!(
            regimen(Tz::UTC, &[], 0, 0).validate(),
            Err(RegimenError::NoDoseTimes)
        );
        assert_eq!(
            regimen(Tz::UTC, &[(9, 0), (8, 0)], 0, 0).validate(),
            Err(RegimenError::DoseTimesNotIncreasing)
        );
        assert_eq!(
            regimen(Tz::UTC, &[(8, 0), (9, 0)], 30, 30).validate(),
            Err(RegimenError::OverlappingWindows)
        );
        assert!(matches!(
            regimen(Tz::UTC, &[(8, 0)], -5, 30).validate(),
            Err(RegimenError::NegativeWindow { .. })
        ));
    }

    #[test]
    fn the_open_window_is_found_and_closed_windows_are_not() {
        let regimen = regimen(Tz::UTC, &[(8, 0), (20, 0)], 60, 120);
        let inside = Utc.with_ymd_and_hms(2026, 2, 1, 9, 59, 0).unwrap();
        let open = regimen.dose_window_at(inside).unwrap();
        assert_eq!(
            open.scheduled_at,
            Utc.with_ymd_and_hms(2026, 2, 1, 8, 0, 0).unwrap()
        );
        let between = Utc.with_ymd_and_hms(2026, 2, 1, 14, 0, 0).unwrap();
        assert_eq!(regimen.dose_window_at(between), None);
    }

    proptest! {
        #[test]
        fn a_utc_regimen_schedules_one_dose_per_time_per_day(
            days in 1i64..60,
            hours in proptest::collection::btree_set(0u32..24, 1..5),
        ) {
            let times: Vec<(u32, u32)> = hours.iter().map(|hour| (*hour, 0)).collect();
            let regimen = regimen(Tz::UTC, &times, 0, 0);
            let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
            let doses = regimen.scheduled_doses(from, from + Duration::days(days));
            prop_assert_eq!(doses.len() as i64, days * times.len() as i64);
            prop_assert!(doses.windows(2).all(|pair| pair[0].scheduled_at < pair[1].scheduled_at));
        }

        #[test]
        fn every_scheduled_dose_lies_in_the_requested_range(
            offset_hours in 0i64..2000,
            span_hours in 0i64..200,
        ) {
            let regimen = regimen(chrono_tz::America::New_York, &[(7, 30), (19, 30)], 60, 60);
            let from = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + Duration::hours(offset_hours);
            let to = from + Duration::hours(span_hours);
            for dose in regimen.scheduled_doses(from, to) {
                prop_assert!(from <= dose.scheduled_at && dose.scheduled_at < to);
                prop_assert!(dose.window_contains(dose.scheduled_at));
            }
        }
    }
}
