//! Timestamp arithmetic that never fails: the rules compare times, they do not report clock
//! errors.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// `now - then`, zero when `then` is in the future.
pub(crate) fn elapsed(now: Timestamp, then: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(then)).unwrap_or(Duration::ZERO)
}

/// `t + d`, `None` past the end of representable time.
pub(crate) fn add(t: Timestamp, d: Duration) -> Option<Timestamp> {
    let d = SignedDuration::try_from(d).ok()?;
    t.checked_add(d).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_is_never_negative_and_add_never_panics() {
        let t0 = Timestamp::UNIX_EPOCH;
        let t1 = add(t0, Duration::from_secs(5));
        assert_eq!(t1.map(|t| elapsed(t, t0)), Some(Duration::from_secs(5)));
        assert_eq!(t1.map(|t| elapsed(t0, t)), Some(Duration::ZERO));
        assert_eq!(add(Timestamp::MAX, Duration::from_secs(1)), None);
        assert_eq!(add(t0, Duration::MAX), None);
    }
}
