//! Login rate limiting: failed attempts are counted per username and per source address in a
//! sliding window; past the limit, logins are refused (429 with `Retry-After`) until the oldest
//! failure leaves the window. In memory, per server process.

use chrono::{DateTime, Duration, Utc};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Most keys kept; beyond it the oldest-looking entries are pruned first.
const MAX_KEYS: usize = 100_000;

#[derive(Debug)]
pub(crate) struct LoginThrottle {
    window: Duration,
    per_username: usize,
    per_source: usize,
    failures: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
}

impl Default for LoginThrottle {
    /// 5 failures per username and 20 per source address in 15 minutes.
    fn default() -> Self {
        Self::new(Duration::minutes(15), 5, 20)
    }
}

impl LoginThrottle {
    pub(crate) fn new(window: Duration, per_username: usize, per_source: usize) -> Self {
        Self {
            window,
            per_username,
            per_source,
            failures: Mutex::default(),
        }
    }

    fn keys(username: &str, source: &str) -> [String; 2] {
        [
            format!("user:{}", username.to_lowercase()),
            format!("from:{source}"),
        ]
    }

    /// `Err(seconds)` when a login for `username` from `source` must wait that long.
    pub(crate) fn check(
        &self,
        username: &str,
        source: &str,
        now: DateTime<Utc>,
    ) -> Result<(), u64> {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let limits = [self.per_username, self.per_source];
        let mut wait = Duration::zero();
        for (key, limit) in Self::keys(username, source).iter().zip(limits) {
            if let Some(times) = failures.get_mut(key) {
                while times.front().is_some_and(|at| *at <= now - self.window) {
                    times.pop_front();
                }
                if times.len() >= limit
                    && let Some(oldest) = times.front()
                {
                    wait = wait.max(*oldest + self.window - now);
                }
            }
        }
        if wait > Duration::zero() {
            Err(u64::try_from(wait.num_seconds()).unwrap_or(0).max(1))
        } else {
            Ok(())
        }
    }

    pub(crate) fn failed(&self, username: &str, source: &str, now: DateTime<Utc>) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failures.len() >= MAX_KEYS {
            let cutoff = now - self.window;
            failures.retain(|_, times| times.back().is_some_and(|at| *at > cutoff));
        }
        for key in Self::keys(username, source) {
            failures.entry(key).or_default().push_back(now);
        }
    }

    /// A successful login clears the username's failures (not the source's).
    pub(crate) fn succeeded(&self, username: &str) {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        failures.remove(&format!("user:{}", username.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_limit_applies_per_username_and_per_source_and_expires() {
        let throttle = LoginThrottle::new(Duration::minutes(15), 3, 5);
        let start = Utc
            .with_ymd_and_hms(2026, 1, 1, 8, 0, 0)
            .single()
            .unwrap_or_default();
        for minute in 0..3 {
            assert_eq!(throttle.check("Alice", "10.0.0.1", start), Ok(()));
            throttle.failed("Alice", "10.0.0.1", start + Duration::minutes(minute));
        }
        let now = start + Duration::minutes(3);
        // Username limit reached (case does not matter), from any address.
        assert_eq!(throttle.check("alice", "10.0.0.9", now), Err(12 * 60));
        // Another user from the same address is still fine (3 < 5).
        assert_eq!(throttle.check("bob", "10.0.0.1", now), Ok(()));
        throttle.failed("bob", "10.0.0.1", now);
        throttle.failed("carol", "10.0.0.1", now);
        // The address has 5 failures now.
        assert!(throttle.check("dave", "10.0.0.1", now).is_err());
        assert_eq!(throttle.check("dave", "10.0.0.2", now), Ok(()));
        // The first failure leaves the window after 15 minutes.
        assert_eq!(
            throttle.check("alice", "10.0.0.9", start + Duration::minutes(15)),
            Ok(())
        );
        throttle.succeeded("ALICE");
        assert_eq!(throttle.check("alice", "10.0.0.9", now), Ok(()));
    }
}
