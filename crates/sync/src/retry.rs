//! Retries with exponential backoff and full jitter (AWS's "full jitter": wait a uniformly
//! random time between zero and the capped exponential), never shorter than the server's
//! `Retry-After`.

use std::time::Duration;

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Cap of the first wait; doubles per attempt.
    pub base: Duration,
    /// Largest cap.
    pub max_delay: Duration,
    /// Attempts in total, including the first.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            max_attempts: 6,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry), for a uniform random
    /// `unit` in `[0, 1)`, honouring `retry_after` as a minimum.
    pub fn delay(&self, retry: u32, unit: f64, retry_after: Option<Duration>) -> Duration {
        let cap = self
            .base
            .saturating_mul(2u32.saturating_pow(retry.min(30)))
            .min(self.max_delay);
        let jittered = cap.mul_f64(unit.clamp(0.0, 1.0));
        retry_after.map_or(jittered, |minimum| jittered.max(minimum))
    }
}

/// A uniform random number in `[0, 1)` from the OS RNG (0.5 if the RNG fails: still a valid,
/// bounded wait).
pub fn random_unit() -> f64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_jittered_under_a_doubling_cap_and_respect_retry_after() {
        let policy = RetryPolicy {
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            max_attempts: 5,
        };
        assert_eq!(policy.delay(0, 0.999_999, None).as_millis(), 99);
        assert_eq!(policy.delay(2, 0.5, None), Duration::from_millis(200));
        assert_eq!(
            policy.delay(10, 1.0, None),
            Duration::from_secs(1),
            "capped at max_delay"
        );
        assert_eq!(
            policy.delay(0, 0.0, None),
            Duration::ZERO,
            "full jitter reaches zero"
        );
        assert_eq!(
            policy.delay(0, 0.1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        for retry in 0..40 {
            let delay = policy.delay(retry, random_unit(), None);
            assert!(delay <= Duration::from_secs(1), "retry {retry}: {delay:?}");
        }
        let draws: Vec<f64> = (0..100).map(|_| random_unit()).collect();
        assert!(draws.iter().all(|unit| (0.0..1.0).contains(unit)));
        assert!(draws.iter().any(|unit| *unit > 0.5) && draws.iter().any(|unit| *unit < 0.5));
    }
}
