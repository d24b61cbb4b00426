//! Per CI and URL minimum interval between two triggers.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::Clock;

/// Identifies what is limited: one CI (namespace, name) on one URL.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) url: String,
}

/// Remembers when each (CI, URL) was last triggered. Only entries younger than the interval are
/// kept, so its size is bounded by the number of triggers sent within one interval.
///
/// `Debug` shows the interval and the number of entries only: a URL may carry a credential.
pub(crate) struct RateLimiter {
    interval: Duration,
    clock: Arc<dyn Clock>,
    last: Mutex<HashMap<Key, Instant>>,
}

impl RateLimiter {
    pub(crate) fn new(interval: Duration, clock: Arc<dyn Clock>) -> Self {
        RateLimiter {
            interval,
            clock,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Claims the right to send for `key` now. `Err(remaining)` when the previous trigger for the
    /// same key is younger than the interval: `remaining` is how long until the next one may go.
    /// Checking and recording happen under one lock, so of two concurrent callers only one wins.
    pub(crate) fn acquire(&self, key: Key) -> Result<(), Duration> {
        if self.interval.is_zero() {
            return Ok(());
        }
        let now = self.clock.now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        last.retain(|_, at| now.saturating_duration_since(*at) < self.interval);
        if let Some(at) = last.get(&key) {
            let elapsed = now.saturating_duration_since(*at);
            return Err(self.interval.saturating_sub(elapsed));
        }
        last.insert(key, now);
        Ok(())
    }

    fn tracked(&self) -> usize {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("interval", &self.interval)
            .field("clock", &self.clock)
            .field("tracked", &self.tracked())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn key(ns: &str, name: &str, url: &str) -> Key {
        Key {
            namespace: ns.into(),
            name: name.into(),
            url: url.into(),
        }
    }

    #[test]
    fn remaining_time_and_independent_keys() {
        let clock = Arc::new(ManualClock::new());
        let limiter = RateLimiter::new(Duration::from_secs(10), clock.clone());
        assert_eq!(limiter.acquire(key("ns", "a", "u1")), Ok(()));
        clock.advance(Duration::from_secs(3));
        assert_eq!(
            limiter.acquire(key("ns", "a", "u1")),
            Err(Duration::from_secs(7))
        );
        // A refused attempt does not restart the interval.
        clock.advance(Duration::from_millis(6500));
        assert_eq!(
            limiter.acquire(key("ns", "a", "u1")),
            Err(Duration::from_millis(500))
        );
        for other in [
            key("ns", "b", "u1"),
            key("ns2", "a", "u1"),
            key("ns", "a", "u2"),
        ] {
            assert_eq!(limiter.acquire(other.clone()), Ok(()), "{other:?}");
        }
        clock.advance(Duration::from_millis(500));
        assert_eq!(limiter.acquire(key("ns", "a", "u1")), Ok(()));
    }

    #[test]
    fn state_stays_bounded() {
        let clock = Arc::new(ManualClock::new());
        let limiter = RateLimiter::new(Duration::from_secs(1), clock.clone());
        for i in 0..100 {
            assert_eq!(limiter.acquire(key("ns", &format!("ci-{i}"), "u")), Ok(()));
        }
        assert_eq!(limiter.tracked(), 100);
        clock.advance(Duration::from_secs(1));
        assert_eq!(limiter.acquire(key("ns", "last", "u")), Ok(()));
        assert_eq!(limiter.tracked(), 1, "expired entries are dropped");
    }

    #[test]
    fn zero_interval_never_limits_nor_remembers() {
        let clock = Arc::new(ManualClock::new());
        let limiter = RateLimiter::new(Duration::ZERO, clock);
        for _ in 0..5 {
            assert_eq!(limiter.acquire(key("ns", "a", "u")), Ok(()));
        }
        assert_eq!(limiter.tracked(), 0);
    }

    #[test]
    fn one_winner_among_threads() {
        let clock = Arc::new(ManualClock::new());
        let limiter = Arc::new(RateLimiter::new(Duration::from_secs(5), clock));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let limiter = Arc::clone(&limiter);
                std::thread::spawn(move || limiter.acquire(key("ns", "a", "u")).is_ok())
            })
            .collect();
        let winners = handles
            .into_iter()
            .map(|h| h.join().unwrap_or(false))
            .filter(|won| *won)
            .count();
        assert_eq!(winners, 1);
    }
}
