//! Exponential backoff with jitter, capped: the one formula behind the controller's retries, the
//! AD pool's reconnects and Graph's retries when the server gives no Retry-After.

use std::time::Duration;

/// Exponential backoff with jitter, capped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The delay before the first retry (before jitter).
    pub base: Duration,
    /// No delay is longer than this.
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (1 for the first): `base · 2^(attempt-1)`, capped,
    /// then scaled by a factor in [0.5, 1.0] drawn from `jitter` (in [0, 1]) so that many
    /// accounts failing together do not retry in lockstep.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exponent).min(self.cap);
        raw.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let backoff = Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(60) };
        assert_eq!(backoff.delay(1, 1.0), Duration::from_secs(2));
        assert_eq!(backoff.delay(1, 0.0), Duration::from_secs(1), "jitter takes off at most half");
        assert_eq!(backoff.delay(4, 1.0), Duration::from_secs(16));
        assert_eq!(backoff.delay(10, 1.0), Duration::from_secs(60));
        assert_eq!(backoff.delay(u32::MAX, 1.0), Duration::from_secs(60), "no overflow");
        for attempt in 1..20 {
            let d = backoff.delay(attempt, 0.37);
            assert!(d <= backoff.cap && d >= Duration::from_millis(500), "attempt {attempt}: {d:?}");
        }
    }
}
