//! Throttling and server errors: how long to wait, and when to give up.
//!
//! Graph's guidance: on 429 wait what `Retry-After` says (seconds, or an HTTP date) and retry;
//! without it (Identity Protection never sends one), back off exponentially. The same applies to
//! 5xx answers and broken connections. Every request has a budget (attempts and elapsed time);
//! past it the provider returns a transient error and the controller's error policy takes over.
//! A `Retry-After` also closes a shared [`Gate`], so that requests running beside the throttled
//! one wait too instead of spending the tenant's quota on more 429s.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use crate::backoff::Backoff;

/// How hard the provider tries before it hands a transient error to the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Sends of one request (or sub-request), the first one included.
    pub max_attempts: u32,
    /// No retry is started once this much time has passed since the first send, nor when the wait
    /// it needs would end later than that.
    pub max_elapsed: Duration,
    /// First backoff without `Retry-After`; doubles per attempt up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 16,
            max_elapsed: Duration::from_secs(120),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1` when the server said nothing: exponential with
    /// "equal jitter" (between half and all of the exponential value), so that many clients
    /// failing together do not come back together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        Backoff { base: self.base_backoff, cap: self.max_backoff }.delay(attempt, fastrand::f64())
    }

    /// The wait before the next attempt after a server-given `Retry-After`: at least that long
    /// (never less), plus a little jitter.
    pub fn after_retry_after(&self, retry_after: Duration) -> Duration {
        retry_after + jitter(Duration::from_millis(50))
    }

    /// Whether another attempt may start after `attempts` sends, `elapsed` since the first one,
    /// and a wait of `wait`.
    pub fn allows(&self, attempts: u32, elapsed: Duration, wait: Duration) -> bool {
        attempts < self.max_attempts && elapsed + wait <= self.max_elapsed
    }
}

fn jitter(max: Duration) -> Duration {
    let millis = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if millis == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(fastrand::u64(0..=millis))
}

/// Parses a `Retry-After` value: delay-seconds (`"10"`) or an HTTP date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, relative to `now`; a date in the past is no wait).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = value.parse::<f64>() {
        if seconds.is_finite() && seconds >= 0.0 {
            return Some(Duration::from_secs_f64(seconds.min(86_400.0)));
        }
        return None;
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

/// A point in time before which no request is sent, moved later by every `Retry-After`.
#[derive(Debug, Default)]
pub struct Gate {
    until: Mutex<Option<Instant>>,
}

impl Gate {
    /// Keeps requests back until `until` (or later, if another throttle said so).
    pub fn close_until(&self, until: Instant) {
        let mut guard = self.until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.is_none_or(|current| current < until) {
            *guard = Some(until);
        }
    }

    /// Waits while the gate is closed.
    pub async fn wait(&self) {
        loop {
            let until = *self.until.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match until {
                Some(until) if until > Instant::now() => tokio::time::sleep_until(until).await,
                _ => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn retry_after_in_both_forms() {
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 30).unwrap();
        assert_eq!(parse_retry_after("10", now), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-3", now), None);
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let policy = RetryPolicy::default();
        for _ in 0..100 {
            let first = policy.backoff(1);
            assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(500), "{first:?}");
            let third = policy.backoff(3);
            assert!(third >= Duration::from_secs(1) && third <= Duration::from_secs(2), "{third:?}");
            let late = policy.backoff(40);
            assert!(late >= Duration::from_secs(15) && late <= Duration::from_secs(30), "{late:?}");
            let honoured = policy.after_retry_after(Duration::from_secs(1));
            assert!(honoured >= Duration::from_secs(1) && honoured <= Duration::from_millis(1050));
        }
        assert!(policy.allows(1, Duration::ZERO, Duration::from_secs(1)));
        assert!(!policy.allows(16, Duration::ZERO, Duration::ZERO));
        assert!(!policy.allows(2, Duration::from_secs(119), Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn gate_holds_everyone_until_the_latest_retry_after() {
        let gate = Gate::default();
        let start = Instant::now();
        gate.wait().await;
        assert_eq!(Instant::now(), start, "an open gate does not wait");
        gate.close_until(start + Duration::from_secs(3));
        gate.close_until(start + Duration::from_secs(1));
        gate.wait().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3), "the later deadline wins");
    }
}
