//! Prometheus counters served at `/metrics` (text exposition format). Counts only: no ids, no
//! PHI.

use std::sync::atomic::{AtomicU64, Ordering};

/// The backend's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    pub requests_2xx: AtomicU64,
    pub requests_4xx: AtomicU64,
    pub requests_5xx: AtomicU64,
    pub dose_events_accepted: AtomicU64,
    pub dose_events_duplicate: AtomicU64,
    pub batches_rejected: AtomicU64,
    pub evidence_frames_stored: AtomicU64,
    pub evidence_frames_duplicate: AtomicU64,
}

impl Metrics {
    /// Counts one finished request by its status class.
    pub fn count_response(&self, status: u16) {
        let counter = match status {
            500.. => &self.requests_5xx,
            400..=499 => &self.requests_4xx,
            _ => &self.requests_2xx,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let value = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        format!(
            "# HELP dosewitness_http_requests_total HTTP requests answered, by status class.\n\
             # TYPE dosewitness_http_requests_total counter\n\
             dosewitness_http_requests_total{{class=\"2xx\"}} {}\n\
             dosewitness_http_requests_total{{class=\"4xx\"}} {}\n\
             dosewitness_http_requests_total{{class=\"5xx\"}} {}\n\
             # HELP dosewitness_dose_events_total Dose events received from devices, by result.\n\
             # TYPE dosewitness_dose_events_total counter\n\
             dosewitness_dose_events_total{{result=\"accepted\"}} {}\n\
             dosewitness_dose_events_total{{result=\"duplicate\"}} {}\n\
             # HELP dosewitness_batches_rejected_total Dose-event batches refused (bad signature, gap, fork).\n\
             # TYPE dosewitness_batches_rejected_total counter\n\
             dosewitness_batches_rejected_total {}\n\
             # HELP dosewitness_evidence_frames_total Evidence frames uploaded by devices, by result.\n\
             # TYPE dosewitness_evidence_frames_total counter\n\
             dosewitness_evidence_frames_total{{result=\"stored\"}} {}\n\
             dosewitness_evidence_frames_total{{result=\"duplicate\"}} {}\n",
            value(&self.requests_2xx),
            value(&self.requests_4xx),
            value(&self.requests_5xx),
            value(&self.dose_events_accepted),
            value(&self.dose_events_duplicate),
            value(&self.batches_rejected),
            value(&self.evidence_frames_stored),
            value(&self.evidence_frames_duplicate),
        )
    }
}
