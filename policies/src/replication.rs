//! Settling an unconfirmed write when the DC serving remedy is not the one it was sent to (issue 4
//! of 6, real estates: replicas that lag). Groundwork: the daemon does not use it yet.
//!
//! Facts (see `../shared/notes/directory-facts.md`):
//! - A write lands on one DC and reaches the others by replication. `pwdLastSet` and
//!   `userAccountControl` (disable, lockout) are replicated urgently within a site; between sites the
//!   minimum interval is 15 minutes unless change notification is enabled on the site link. A write
//!   to one DC and a read from another can disagree for that long.
//! - `uSNChanged` is per DC and not replicated, and `whenChanged` is the writing DC's clock: neither
//!   says whether another DC's write has arrived, so the rule looks only at whether the account
//!   shows the action's effect (`crate::action`'s `shows_on_ad`).
//!
//! The rule, for an intent that was sent (or may have been) and not confirmed:
//! 1. **The effect shows → applied**, whichever DC shows it (as for a single DC: settle by
//!    observing).
//! 2. **The DC serving now is the one it was sent to → its view decides at once**: not shown is
//!    not applied (read-your-writes: a DC shows its own writes). This is today's single-DC rule, and
//!    what happens when remedy is back on the DC it wrote to.
//! 3. **Another DC, within the replication allowance since the send → pending**: neither failed nor
//!    sent again; look again when the allowance ends (or earlier, on the DC it was sent to).
//! 4. **Another DC, the allowance used up → not applied**: the journal records `not-applied` and
//!    the action is planned again, as recovery does for a single DC.
//!
//! The allowance is the within-site one when both DCs' sites are known and equal, else the
//! between-sites one (an unknown site, or an intent that names no DC, may be anywhere). A clock that
//! went back (now before the send) never stretches the wait beyond one allowance from now.

use chrono::{DateTime, Duration, Utc};

/// A DC, as an intent or the serving connection names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcRef {
    pub url: String,
    /// Its AD site, when known.
    pub site: Option<String>,
}

/// How long a write may take to show on another DC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    pub within_site: Duration,
    pub between_sites: Duration,
}

impl Default for Allowance {
    fn default() -> Self {
        Allowance { within_site: Duration::minutes(1), between_sites: Duration::minutes(15) }
    }
}

/// Where an unconfirmed write was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The DC; `None` for an intent journaled before remedy named DCs.
    pub to: Option<DcRef>,
    pub at: DateTime<Utc>,
}

/// How an unconfirmed write settles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settlement {
    /// The effect shows: settle it as done.
    Applied,
    /// Not visible on this DC yet, and replication may still bring it: neither failed nor sent
    /// again. Look again at `check_again_at`.
    Pending { check_again_at: DateTime<Utc> },
    /// Not applied: record `not-applied`; the action is planned again.
    NotApplied { why: NotShown },
}

/// Why a write that does not show counts as not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotShown {
    /// The DC it was sent to does not show it.
    SameDc,
    /// Another DC does not show it after this allowance.
    AllowancePassed { allowance: Duration },
}

impl NotShown {
    /// A sentence for the history's note.
    pub fn sentence(&self) -> String {
        match self {
            NotShown::SameDc => "the DC it was sent to does not show it".to_owned(),
            NotShown::AllowancePassed { allowance } => {
                format!("the DC now serving does not show it {} s after it was sent", allowance.num_seconds())
            }
        }
    }
}

/// How `sent` settles at `now`, given whether the account on `serving` shows the action's effect.
pub fn settle(
    sent: &Sent,
    serving: &DcRef,
    shows_effect: bool,
    allowance: &Allowance,
    now: DateTime<Utc>,
) -> Settlement {
    if shows_effect {
        return Settlement::Applied;
    }
    let Some(to) = &sent.to else {
        return after_allowance(sent.at, allowance.between_sites, now);
    };
    if to.url.eq_ignore_ascii_case(&serving.url) {
        return Settlement::NotApplied { why: NotShown::SameDc };
    }
    let same_site = matches!((&to.site, &serving.site), (Some(a), Some(b)) if a.eq_ignore_ascii_case(b));
    after_allowance(sent.at, if same_site { allowance.within_site } else { allowance.between_sites }, now)
}

fn after_allowance(sent_at: DateTime<Utc>, allowance: Duration, now: DateTime<Utc>) -> Settlement {
    // A send "in the future" is a clock that went back: count from now instead.
    let deadline = sent_at.min(now) + allowance;
    if now < deadline {
        Settlement::Pending { check_again_at: deadline }
    } else {
        Settlement::NotApplied { why: NotShown::AllowancePassed { allowance } }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(millis: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z").expect("time").with_timezone(&Utc)
            + Duration::milliseconds(millis)
    }

    const S: i64 = 1_000;
    const MIN: i64 = 60 * S;

    fn dc(url: &str, site: Option<&str>) -> DcRef {
        DcRef { url: url.to_owned(), site: site.map(str::to_owned) }
    }

    fn pending(at: i64) -> Settlement {
        Settlement::Pending { check_again_at: t(at) }
    }

    fn passed(minutes: i64) -> Settlement {
        Settlement::NotApplied { why: NotShown::AllowancePassed { allowance: Duration::minutes(minutes) } }
    }

    const SAME_DC: Settlement = Settlement::NotApplied { why: NotShown::SameDc };

    /// (what, sent to, serving, shows the effect, now in ms; the send is at 0), expected.
    type Case = (&'static str, Option<DcRef>, DcRef, bool, i64, Settlement);

    #[test]
    fn settlements() {
        let paris1 = || Some(dc("ldaps://dc1", Some("Paris")));
        let paris2 = dc("ldaps://dc2", Some("Paris"));
        let lyon = dc("ldaps://dc3", Some("Lyon"));
        let nowhere = dc("ldaps://dc4", None);
        let cases: Vec<Case> = vec![
            (
                "shows on the DC it was sent to",
                paris1(),
                dc("ldaps://dc1", Some("Paris")),
                true,
                S,
                Settlement::Applied,
            ),
            ("shows on another DC at once", paris1(), lyon.clone(), true, 0, Settlement::Applied),
            ("shows, with the clock gone back", paris1(), lyon.clone(), true, -MIN, Settlement::Applied),
            ("same DC, not shown: not applied at once", paris1(), dc("ldaps://dc1", Some("Paris")), false, 0, SAME_DC),
            ("same DC written in another case", paris1(), dc("LDAPS://DC1", None), false, S, SAME_DC),
            ("same site, within the minute: pending", paris1(), paris2.clone(), false, 30 * S, pending(MIN)),
            ("same site, a millisecond before the minute", paris1(), paris2.clone(), false, MIN - 1, pending(MIN)),
            ("same site, exactly the minute: not applied", paris1(), paris2.clone(), false, MIN, passed(1)),
            ("same site written in another case", paris1(), dc("ldaps://dc2", Some("PARIS")), false, S, pending(MIN)),
            ("another site, 5 minutes: pending", paris1(), lyon.clone(), false, 5 * MIN, pending(15 * MIN)),
            (
                "another site, a millisecond before 15 minutes",
                paris1(),
                lyon.clone(),
                false,
                15 * MIN - 1,
                pending(15 * MIN),
            ),
            ("another site, exactly 15 minutes: not applied", paris1(), lyon.clone(), false, 15 * MIN, passed(15)),
            (
                "the serving DC's site unknown: between sites",
                paris1(),
                nowhere.clone(),
                false,
                2 * MIN,
                pending(15 * MIN),
            ),
            (
                "the sending DC's site unknown: between sites",
                Some(dc("ldaps://dc1", None)),
                paris2.clone(),
                false,
                2 * MIN,
                pending(15 * MIN),
            ),
            (
                "both sites unknown: between sites",
                Some(dc("ldaps://dc1", None)),
                nowhere.clone(),
                false,
                15 * MIN,
                passed(15),
            ),
            ("an intent naming no DC: between sites", None, paris2.clone(), false, 2 * MIN, pending(15 * MIN)),
            ("an intent naming no DC, allowance used up", None, paris2.clone(), false, 16 * MIN, passed(15)),
            (
                "clock went back 10 minutes: one allowance from now",
                paris1(),
                paris2.clone(),
                false,
                -10 * MIN,
                pending(-9 * MIN),
            ),
            ("clock went back, same DC: still at once", paris1(), dc("ldaps://dc1", None), false, -10 * MIN, SAME_DC),
        ];
        for (what, to, serving, shows, now, expected) in cases {
            let sent = Sent { to, at: t(0) };
            assert_eq!(settle(&sent, &serving, shows, &Allowance::default(), t(now)), expected, "{what}");
        }
    }

    #[test]
    fn the_allowance_is_configurable() {
        let sent = Sent { to: Some(dc("ldaps://dc1", Some("Paris"))), at: t(0) };
        let quick = Allowance { within_site: Duration::seconds(5), between_sites: Duration::minutes(2) };
        let paris2 = dc("ldaps://dc2", Some("Paris"));
        assert_eq!(settle(&sent, &paris2, false, &quick, t(4 * S)), pending(5 * S));
        assert_eq!(
            settle(&sent, &paris2, false, &quick, t(5 * S)),
            Settlement::NotApplied { why: NotShown::AllowancePassed { allowance: Duration::seconds(5) } }
        );
    }

    #[test]
    fn not_applied_says_why() {
        assert_eq!(NotShown::SameDc.sentence(), "the DC it was sent to does not show it");
        assert_eq!(
            NotShown::AllowancePassed { allowance: Duration::minutes(15) }.sentence(),
            "the DC now serving does not show it 900 s after it was sent"
        );
    }
}
