//! Which domain controller to use now (issue 4 of 6, real estates: several DCs). Groundwork: the
//! daemon does not use it yet.
//!
//! Facts (see `../shared/notes/directory-facts.md`):
//! - DCs register `_ldap._tcp.dc._msdcs.<domain>` SRV records, and per site
//!   `_ldap._tcp.<site>._sites.dc._msdcs.<domain>` (learn.microsoft.com, "How DNS support for
//!   Active Directory works"); a DC found by the site's name is in that site.
//! - RFC 2782 orders SRV records: the lowest priority first; within one priority, a weighted random
//!   choice (weight-0 records first in the running sum, a uniform draw in `0..=sum`, the first
//!   record whose running sum reaches the draw, then again without it); a target of `.` means the
//!   service is not offered.
//! - The SRV port is LDAP's (389). AD advertises no `_ldaps` record, so an `ldaps://` candidate from
//!   SRV uses port 636 (Assumption: the DCs listen for LDAPS on its standard port).
//!
//! The rule:
//! 1. **Preference order**: DCs of the local site (when one is configured) first, then the others
//!    (a DC whose site is unknown counts as another site); within each, the configured order (a
//!    list's order, or SRV's).
//! 2. **While the current DC is up it stays**, unless a more preferred DC has been seen up for the
//!    whole settle time (`return_after`): then remedy returns to it. A DC that comes back is not
//!    trusted at once, so a DC that flaps does not drag remedy back and forth.
//! 3. **When the current DC is down** (or there is none yet), remedy takes the most preferred DC that
//!    is up, at once (no settle time: the work must go on); if none is, the most preferred one
//!    never tried or whose backoff has ended; if every DC is backing off, it waits for the one whose
//!    backoff ends first.
//! 4. More preferred DCs never tried, or whose backoff has ended, are named to be probed (a probe
//!    is a read, never an action), so that remedy learns when the preferred DC is back.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};

/// A DC remedy may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` (StartTLS).
    pub url: String,
    /// Its AD site, when known.
    pub site: Option<String>,
    /// Its rank as configured: the position in the list, or in the SRV ordering (lower first).
    pub order: usize,
}

/// One SRV record of `_ldap._tcp[.<site>._sites].dc._msdcs.<domain>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The DC's host name (a trailing dot is dropped).
    pub target: String,
    /// The site, when the record was found under `<site>._sites`.
    pub site: Option<String>,
}

/// What remedy last saw of a DC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Answering since `since` (without a failure in between).
    Up { since: DateTime<Utc> },
    /// Failing since `since`, `failures` times in a row; not to be tried again before `retry_at`.
    Down { since: DateTime<Utc>, failures: u32, retry_at: DateTime<Utc> },
}

/// Why a DC is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The current DC is up and nothing more preferred has settled.
    Stay,
    /// A more preferred DC has been up for the settle time.
    Return,
    /// The current DC is down or there is none: the most preferred DC that is up.
    Up,
    /// No DC is up: the most preferred never tried, or whose backoff has ended.
    Try,
}

/// The DC to use now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Use {
        url: String,
        why: Why,
        /// When a more preferred DC that is up now will have settled (look again then).
        settles_at: Option<DateTime<Utc>>,
        /// More preferred DCs to probe: never tried, or their backoff has ended.
        probe: Vec<String>,
    },
    /// Every DC is backing off: this one's backoff ends first.
    Wait { url: String, until: DateTime<Utc> },
    /// No DC can be chosen, and why (a sentence).
    None { why: String },
}

/// The candidates in preference order (rule 1). Stable: equal ranks keep their given order.
pub fn preference<'a>(candidates: &'a [Candidate], local_site: Option<&str>) -> Vec<&'a Candidate> {
    let other_site = |c: &Candidate| match local_site {
        Some(local) => c.site.as_deref().is_none_or(|site| !site.eq_ignore_ascii_case(local)),
        None => false,
    };
    let mut ordered: Vec<&Candidate> = candidates.iter().collect();
    ordered.sort_by_key(|c| (other_site(c), c.order));
    ordered
}

/// The DC to use at `now` (see the module documentation). `current` is the DC in use, if any;
/// a DC missing from `health` has never been tried.
pub fn choose(
    candidates: &[Candidate],
    local_site: Option<&str>,
    health: &BTreeMap<String, Health>,
    current: Option<&str>,
    return_after: Duration,
    now: DateTime<Utc>,
) -> Choice {
    let ordered = preference(candidates, local_site);
    if ordered.is_empty() {
        return Choice::None { why: "no domain controller is configured or discovered".to_owned() };
    }
    let up_since = |url: &str| match health.get(url) {
        Some(Health::Up { since }) => Some(*since),
        _ => None,
    };
    let may_try = |url: &str| match health.get(url) {
        None => true,
        Some(Health::Up { .. }) => false,
        Some(Health::Down { retry_at, .. }) => *retry_at <= now,
    };
    let use_dc = |at: usize, why: Why| {
        let better = &ordered[..at];
        Choice::Use {
            url: ordered[at].url.clone(),
            why,
            settles_at: better.iter().filter_map(|c| up_since(&c.url)).map(|since| since + return_after).min(),
            probe: better.iter().filter(|c| may_try(&c.url)).map(|c| c.url.clone()).collect(),
        }
    };
    let current_up = current.and_then(|url| ordered.iter().position(|c| c.url == url && up_since(url).is_some()));
    if let Some(at) = current_up {
        let settled =
            ordered[..at].iter().position(|c| up_since(&c.url).is_some_and(|since| since + return_after <= now));
        return match settled {
            Some(better) => use_dc(better, Why::Return),
            None => use_dc(at, Why::Stay),
        };
    }
    if let Some(at) = ordered.iter().position(|c| up_since(&c.url).is_some()) {
        return use_dc(at, Why::Up);
    }
    if let Some(at) = ordered.iter().position(|c| may_try(&c.url)) {
        return use_dc(at, Why::Try);
    }
    let retry = |c: &&Candidate| match health.get(&c.url) {
        Some(Health::Down { retry_at, .. }) => Some(*retry_at),
        _ => None,
    };
    // Every candidate is down with its backoff running; the first of the earliest wins a tie.
    match ordered.iter().filter_map(|c| retry(c).map(|at| (at, c))).min_by_key(|(at, _)| *at) {
        Some((until, c)) => Choice::Wait { url: c.url.clone(), until },
        None => Choice::None { why: "no domain controller is up or may be tried".to_owned() },
    }
}

/// The SRV records in RFC 2782 order: by priority, weighted random within one. `draw(sum)` is the
/// random draw, uniform in `0..=sum` (a larger value counts as `sum`); the daemon passes a random
/// source, tests a fixed one. Records whose target is `.` are dropped.
pub fn order_srv(records: &[SrvRecord], mut draw: impl FnMut(u64) -> u64) -> Vec<SrvRecord> {
    let mut offered: Vec<&SrvRecord> = records.iter().filter(|r| !r.target.trim_end_matches('.').is_empty()).collect();
    // Weight 0 first within each priority, as RFC 2782 asks; otherwise as received.
    offered.sort_by_key(|r| (r.priority, r.weight != 0));
    let mut ordered = Vec::with_capacity(offered.len());
    let mut rest = offered.as_slice();
    while let Some(first) = rest.first() {
        let same = rest.iter().take_while(|r| r.priority == first.priority).count();
        let mut unordered: Vec<&SrvRecord> = rest[..same].to_vec();
        while !unordered.is_empty() {
            let sum: u64 = unordered.iter().map(|r| u64::from(r.weight)).sum();
            let pick = draw(sum).min(sum);
            let mut running = 0;
            let at = unordered
                .iter()
                .position(|r| {
                    running += u64::from(r.weight);
                    running >= pick
                })
                .unwrap_or(0);
            ordered.push(unordered.remove(at).clone());
        }
        rest = &rest[same..];
    }
    ordered
}

/// Candidates from SRV records already in RFC 2782 order; `ldaps` picks `ldaps://host:636`, else
/// `ldap://host:<SRV port>` (StartTLS). A DC listed twice (found by site and by domain) is kept
/// once, at its first rank, with the site it was found under.
pub fn srv_candidates(ordered: &[SrvRecord], ldaps: bool) -> Vec<Candidate> {
    let mut candidates: Vec<Candidate> = Vec::new();
    for record in ordered {
        let host = record.target.trim_end_matches('.');
        let url = if ldaps { format!("ldaps://{host}:636") } else { format!("ldap://{host}:{}", record.port) };
        match candidates.iter_mut().find(|c| c.url.eq_ignore_ascii_case(&url)) {
            Some(known) => {
                if known.site.is_none() {
                    known.site.clone_from(&record.site);
                }
            }
            None => candidates.push(Candidate { url, site: record.site.clone(), order: candidates.len() }),
        }
    }
    candidates
}

/// Candidates from a configured list, in its order, sites unknown.
pub fn list_candidates(urls: &[String]) -> Vec<Candidate> {
    urls.iter().enumerate().map(|(order, url)| Candidate { url: url.clone(), site: None, order }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T10:00:00Z").expect("time").with_timezone(&Utc)
            + Duration::seconds(seconds)
    }

    fn dc(name: &str, site: Option<&str>, order: usize) -> Candidate {
        Candidate { url: format!("ldaps://{name}"), site: site.map(str::to_owned), order }
    }

    fn up(since: i64) -> Health {
        Health::Up { since: t(since) }
    }

    fn down(retry_at: i64) -> Health {
        Health::Down { since: t(-100), failures: 3, retry_at: t(retry_at) }
    }

    fn uses(name: &str, why: Why) -> (String, Why) {
        (format!("ldaps://{name}"), why)
    }

    /// (what, health of dc1/dc2/dc3 (None: never tried), current, expected: the DC and why, or
    /// `Err` with the DC waited for and until when). Now is t(0); the settle time is 60 s.
    type Case = (&'static str, [Option<Health>; 3], Option<&'static str>, Result<(String, Why), (&'static str, i64)>);

    #[test]
    fn choices() {
        let candidates = [dc("dc1", None, 0), dc("dc2", None, 1), dc("dc3", None, 2)];
        let cases: Vec<Case> = vec![
            ("preferred up: it", [Some(up(-10)), Some(up(-10)), None], None, Ok(uses("dc1", Why::Up))),
            (
                "preferred down: the next",
                [Some(down(30)), Some(up(-10)), None],
                Some("ldaps://dc1"),
                Ok(uses("dc2", Why::Up)),
            ),
            (
                "failover ignores the settle time",
                [Some(down(30)), Some(up(-1)), None],
                Some("ldaps://dc1"),
                Ok(uses("dc2", Why::Up)),
            ),
            (
                "preferred and second down: the third, up",
                [Some(down(30)), Some(down(5)), Some(up(-1))],
                None,
                Ok(uses("dc3", Why::Up)),
            ),
            ("nothing known: try the preferred", [None, None, None], None, Ok(uses("dc1", Why::Try))),
            ("none up: the first never tried", [Some(down(30)), None, None], None, Ok(uses("dc2", Why::Try))),
            (
                "none up: a backoff has ended",
                [Some(down(30)), Some(down(0)), Some(down(10))],
                None,
                Ok(uses("dc2", Why::Try)),
            ),
            (
                "all down: the backoff that ends first",
                [Some(down(30)), Some(down(20)), Some(down(10))],
                None,
                Err(("dc3", 10)),
            ),
            (
                "all down, a tie: the preferred",
                [Some(down(10)), Some(down(20)), Some(down(10))],
                None,
                Err(("dc1", 10)),
            ),
            (
                "preferred back, not settled: stay",
                [Some(up(-59)), Some(up(-600)), None],
                Some("ldaps://dc2"),
                Ok(uses("dc2", Why::Stay)),
            ),
            (
                "preferred back for exactly the settle time: return",
                [Some(up(-60)), Some(up(-600)), None],
                Some("ldaps://dc2"),
                Ok(uses("dc1", Why::Return)),
            ),
            (
                "second back and settled, preferred down: return to the second",
                [Some(down(30)), Some(up(-120)), Some(up(-600))],
                Some("ldaps://dc3"),
                Ok(uses("dc2", Why::Return)),
            ),
            (
                "current is the preferred: stay",
                [Some(up(-1)), Some(up(-600)), None],
                Some("ldaps://dc1"),
                Ok(uses("dc1", Why::Stay)),
            ),
            (
                "current unknown to the list: the preferred up",
                [Some(up(-1)), None, None],
                Some("ldaps://gone"),
                Ok(uses("dc1", Why::Up)),
            ),
        ];
        for (what, healths, current, expected) in cases {
            let health: BTreeMap<String, Health> =
                candidates.iter().zip(healths).filter_map(|(c, h)| h.map(|h| (c.url.clone(), h))).collect();
            let got = choose(&candidates, None, &health, current, Duration::seconds(60), t(0));
            match (expected, &got) {
                (Ok((url, why)), Choice::Use { url: got_url, why: got_why, .. }) => {
                    assert_eq!((got_url, *got_why), (&url, why), "{what}")
                }
                (Err((name, until)), Choice::Wait { url, until: got_until }) => {
                    assert_eq!((url.as_str(), *got_until), (format!("ldaps://{name}").as_str(), t(until)), "{what}")
                }
                (expected, got) => panic!("{what}: expected {expected:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn staying_says_when_to_look_again_and_what_to_probe() {
        let candidates = [dc("dc1", None, 0), dc("dc2", None, 1), dc("dc3", None, 2)];
        let health = BTreeMap::from([
            ("ldaps://dc1".to_owned(), down(-5)),
            ("ldaps://dc2".to_owned(), up(-20)),
            ("ldaps://dc3".to_owned(), up(-600)),
        ]);
        let got = choose(&candidates, None, &health, Some("ldaps://dc3"), Duration::seconds(60), t(0));
        assert_eq!(
            got,
            Choice::Use {
                url: "ldaps://dc3".to_owned(),
                why: Why::Stay,
                settles_at: Some(t(40)),
                probe: vec!["ldaps://dc1".to_owned()],
            },
            "dc2 settles in 40 s; dc1's backoff has ended: probe it"
        );
    }

    #[test]
    fn no_candidates_says_why() {
        let got = choose(&[], None, &BTreeMap::new(), None, Duration::seconds(60), t(0));
        assert!(matches!(&got, Choice::None { why } if why.contains("no domain controller")), "{got:?}");
    }

    #[test]
    fn the_local_site_comes_first() {
        let candidates = [
            dc("paris1", Some("Paris"), 0),
            dc("lyon1", Some("Lyon"), 1),
            dc("nowhere", None, 2),
            dc("lyon2", Some("lyon"), 3),
        ];
        let names = |site: Option<&str>| -> Vec<String> {
            preference(&candidates, site).iter().map(|c| c.url.trim_start_matches("ldaps://").to_owned()).collect()
        };
        // (what, local site, expected order)
        let cases = [
            ("no site configured: as listed", None, ["paris1", "lyon1", "nowhere", "lyon2"]),
            (
                "Lyon's DCs first (case-insensitive), then in order",
                Some("Lyon"),
                ["lyon1", "lyon2", "paris1", "nowhere"],
            ),
            ("a site without DCs: as listed", Some("Oslo"), ["paris1", "lyon1", "nowhere", "lyon2"]),
        ];
        for (what, site, expected) in cases {
            assert_eq!(names(site), expected, "{what}");
        }
        let health = BTreeMap::from([("ldaps://lyon1".to_owned(), down(30)), ("ldaps://paris1".to_owned(), up(-600))]);
        let got = choose(&candidates, Some("Lyon"), &health, None, Duration::seconds(60), t(0));
        assert!(
            matches!(&got, Choice::Use { url, why: Why::Up, probe, .. } if url == "ldaps://paris1" && probe == &["ldaps://lyon2"]),
            "the site's DCs are down or untried: the other site's DC that is up, and probe lyon2: {got:?}"
        );
    }

    fn srv(priority: u16, weight: u16, target: &str) -> SrvRecord {
        SrvRecord { priority, weight, port: 389, target: target.to_owned(), site: None }
    }

    #[test]
    fn srv_ordering() {
        let records = [srv(10, 60, "a."), srv(0, 0, "z."), srv(10, 40, "b."), srv(10, 0, "c."), srv(20, 5, "d.")];
        // (what, the draws in turn, expected order of targets)
        let cases: Vec<(&str, Vec<u64>, [&str; 5])> = vec![
            // priority 0: z alone; priority 10 sums 0(c)+60(a)+40(b)=100.
            ("draw 0 picks the weight-0 record first", vec![0, 0, 0, 0, 0], ["z.", "c.", "a.", "b.", "d."]),
            ("draw 1..=60 picks a", vec![0, 1, 0, 0, 0], ["z.", "a.", "c.", "b.", "d."]),
            ("draw 60 is still a (running sum reaches it)", vec![0, 60, 0, 0, 0], ["z.", "a.", "c.", "b.", "d."]),
            ("draw 61 picks b; then 40 of c+a: a", vec![0, 61, 40, 0, 0], ["z.", "b.", "a.", "c.", "d."]),
            ("a draw above the sum counts as the sum", vec![0, 1_000, 1_000, 0, 0], ["z.", "b.", "a.", "c.", "d."]),
        ];
        for (what, draws, expected) in cases {
            let mut draws = draws.into_iter();
            let got = order_srv(&records, |_| draws.next().expect("a draw per pick"));
            let targets: Vec<&str> = got.iter().map(|r| r.target.as_str()).collect();
            assert_eq!(targets, expected, "{what}");
        }
    }

    #[test]
    fn srv_draws_are_asked_for_the_running_sum() {
        let mut sums = Vec::new();
        order_srv(&[srv(0, 3, "a"), srv(0, 5, "b"), srv(1, 7, "c")], |sum| {
            sums.push(sum);
            0
        });
        assert_eq!(sums, [8, 5, 7], "8 for a+b, then 5 for b alone, then c's priority");
    }

    #[test]
    fn a_dot_target_offers_no_service() {
        assert!(order_srv(&[srv(0, 0, ".")], |_| 0).is_empty());
    }

    #[test]
    fn srv_records_become_candidates() {
        let mut paris = srv(0, 100, "dc2.contoso.com.");
        paris.site = Some("Paris".to_owned());
        let ordered = [srv(0, 100, "dc1.contoso.com."), paris, srv(0, 100, "DC1.contoso.com")];
        assert_eq!(
            srv_candidates(&ordered, true),
            vec![
                Candidate { url: "ldaps://dc1.contoso.com:636".to_owned(), site: None, order: 0 },
                Candidate { url: "ldaps://dc2.contoso.com:636".to_owned(), site: Some("Paris".to_owned()), order: 1 },
            ],
            "LDAPS on 636; a DC listed twice is kept once"
        );
        assert_eq!(srv_candidates(&ordered[..1], false)[0].url, "ldap://dc1.contoso.com:389", "StartTLS: the SRV port");
        assert_eq!(list_candidates(&["ldaps://a".to_owned(), "ldaps://b".to_owned()])[1].order, 1);
    }
}
