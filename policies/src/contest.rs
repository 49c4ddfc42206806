//! Fights over an account (issue 3 of 6, re-containment): someone, or a sync or HR system, keeps
//! undoing what remedy holds. remedy keeps the safer state, but a fight must not become a tight
//! loop: the corrections of one account are rate-limited, and after `corrections` of them within
//! `window` the account is *contested* — its manifest's status, a history record and a metric say
//! so.
//!
//! The rate limit: the first corrections go at once; once the account is contested, each further
//! correction waits twice as long as the one before (starting at `first_wait`, never longer than
//! `max_wait`). A quiet `window` ends the fight.

use chrono::{DateTime, Duration, Utc};

/// When an account counts as contested, and how corrections are spaced then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContestLimits {
    /// Corrections within `window` that make an account contested.
    pub corrections: usize,
    pub window: Duration,
    /// The wait before the first correction beyond `corrections`.
    pub first_wait: Duration,
    /// No wait is longer.
    pub max_wait: Duration,
}

impl Default for ContestLimits {
    fn default() -> Self {
        ContestLimits {
            corrections: 3,
            window: Duration::minutes(10),
            first_wait: Duration::seconds(5),
            max_wait: Duration::minutes(5),
        }
    }
}

/// One account's drift corrections, newest last.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Corrections {
    times: Vec<DateTime<Utc>>,
}

/// Where a fight over one account stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Corrections within the window.
    pub recent: usize,
    /// Contested: at least `corrections` within the window; since the first of them.
    pub contested_since: Option<DateTime<Utc>>,
    /// The next correction may not be sent before this (`None`: at once).
    pub next_allowed: Option<DateTime<Utc>>,
}

impl Corrections {
    /// Remembers a correction sent at `at`, forgetting those a whole window older.
    pub fn record(&mut self, at: DateTime<Utc>, limits: &ContestLimits) {
        self.times.push(at);
        self.times.sort();
        let horizon = at - limits.window;
        self.times.retain(|t| *t > horizon);
    }

    /// Where the fight stands at `now`.
    pub fn standing(&self, now: DateTime<Utc>, limits: &ContestLimits) -> Standing {
        let horizon = now - limits.window;
        let recent: Vec<&DateTime<Utc>> = self.times.iter().filter(|t| **t > horizon).collect();
        let threshold = limits.corrections.max(1);
        if recent.len() < threshold {
            return Standing { recent: recent.len(), contested_since: None, next_allowed: None };
        }
        let beyond = u32::try_from(recent.len() - threshold).unwrap_or(u32::MAX).min(30);
        let wait = limits.first_wait.checked_mul(1 << beyond).unwrap_or(limits.max_wait).min(limits.max_wait);
        Standing {
            recent: recent.len(),
            contested_since: recent.first().map(|t| **t),
            next_allowed: recent.last().map(|last| **last + wait).filter(|at| *at > now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z").expect("time").with_timezone(&Utc)
            + Duration::seconds(seconds)
    }

    fn after(seconds: &[i64]) -> Corrections {
        let mut corrections = Corrections::default();
        for s in seconds {
            corrections.record(t(*s), &ContestLimits::default());
        }
        corrections
    }

    /// (what, corrections at, now, recent, contested since, next allowed), in seconds.
    type Case = (&'static str, Vec<i64>, i64, usize, Option<i64>, Option<i64>);

    #[test]
    fn standings() {
        let limits = ContestLimits::default();
        let cases: Vec<Case> = vec![
            ("never corrected", vec![], 0, 0, None, None),
            ("one correction", vec![0], 1, 1, None, None),
            ("two: not yet a fight", vec![0, 60], 61, 2, None, None),
            ("three within ten minutes: contested, the next waits 5 s", vec![0, 60, 120], 121, 3, Some(0), Some(125)),
            ("the wait has passed", vec![0, 60, 120], 130, 3, Some(0), None),
            ("a fourth: the next waits 10 s", vec![0, 60, 120, 126], 127, 4, Some(0), Some(136)),
            ("a fifth: 20 s", vec![0, 60, 120, 126, 137], 138, 5, Some(0), Some(157)),
            ("spread over more than ten minutes: no fight", vec![0, 400, 800], 801, 2, None, None),
            ("a quiet window ends it", vec![0, 60, 120], 721, 0, None, None),
        ];
        for (what, at, now, recent, since, next) in cases {
            let standing = after(&at).standing(t(now), &limits);
            assert_eq!(standing.recent, recent, "{what}: recent");
            assert_eq!(standing.contested_since, since.map(t), "{what}: contested since");
            assert_eq!(standing.next_allowed, next.map(t), "{what}: next allowed");
        }
    }

    #[test]
    fn the_wait_stops_at_the_cap() {
        let limits = ContestLimits::default();
        let times: Vec<i64> = (0..40).map(|n| n * 2).collect();
        let standing = after(&times).standing(t(79), &limits);
        assert_eq!(standing.next_allowed, Some(t(78) + limits.max_wait), "five minutes at most");
    }

    #[test]
    fn old_corrections_are_forgotten() {
        let limits = ContestLimits::default();
        let mut corrections = after(&[0, 1, 2]);
        corrections.record(t(3_600), &limits);
        assert_eq!(corrections.times.len(), 1, "an hour later only the new one is kept");
    }
}
