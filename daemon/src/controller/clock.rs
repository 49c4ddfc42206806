//! The controller's clock: wall time for plans, records and cron, and sleeping until a wall time.
//!
//! In production it is the system clock. In tests it follows Tokio's clock from a fixed anchor,
//! so that a test with a paused runtime (`start_paused`) moves remedy's notion of "now" by
//! advancing Tokio's time: debounce, backoff, expiry and cron are then tested without sleeping.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// The longest single sleep of [`Clock::sleep_until`].
const LONGEST_SLEEP: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub enum Clock {
    System,
    /// `anchor` at the Tokio instant `start`, moving with Tokio's clock.
    Tokio {
        anchor: DateTime<Utc>,
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `anchor` now and then advances with Tokio's (possibly paused) clock.
    pub fn following_tokio(anchor: DateTime<Utc>) -> Clock {
        Clock::Tokio { anchor, start: tokio::time::Instant::now() }
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { anchor, start } => {
                let elapsed = chrono::Duration::from_std(start.elapsed()).unwrap_or(chrono::Duration::MAX);
                *anchor + elapsed
            }
        }
    }

    /// How long from now until `when` (zero when it has passed).
    pub fn until(&self, when: DateTime<Utc>) -> Duration {
        (when - self.now()).to_std().unwrap_or(Duration::ZERO)
    }

    /// Sleeps until the clock reads `when`. The wall clock is looked at again at least every
    /// [`LONGEST_SLEEP`], so a clock stepped forward (NTP, a resumed VM) delays a wake-up by at
    /// most that much.
    pub async fn sleep_until(&self, when: DateTime<Utc>) {
        loop {
            let left = self.until(when);
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(LONGEST_SLEEP)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time() {
        let anchor = DateTime::parse_from_rfc3339("2026-03-29T00:30:00Z").unwrap().with_timezone(&Utc);
        let clock = Clock::following_tokio(anchor);
        assert_eq!(clock.now(), anchor);
        let target = anchor + chrono::Duration::minutes(90);
        clock.sleep_until(target).await;
        assert_eq!(clock.now(), target);
        assert_eq!(clock.until(anchor), Duration::ZERO, "a time in the past is due at once");
    }
}
