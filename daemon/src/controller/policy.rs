//! The one error policy: what the controller does next about an account after a reconcile.
//!
//! Every reconcile ends, for each account, in one [`Verdict`]; [`WorkQueue::settle`] turns it into
//! the account's next step. A transient failure (a provider that could not be asked, a timeout,
//! a 429 the provider gave up on) is retried after an exponential backoff with jitter, capped; a
//! permanent one (access denied, account not found, a constraint the DC refuses) is recorded,
//! surfaced in the status, and *parked*: the same action is not sent again until something
//! changes — the manifests that ask for it, or an operator asking for a reconcile. Everything else
//! waits for the next event (a manifest change, the resync schedule, an expiry).
//!
//! The queue is keyed by account: an account has at most one pending retry (duplicates collapse
//! into the earliest), and the controller reconciles one pass at a time, so no two reconciles of
//! one account ever overlap.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use remedy_policies::{Action, Identity};

use crate::backoff::Backoff;

/// How a reconcile ended for one account: both parts may hold at once (an AD action refused for
/// good while Entra ID could not be asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Something failed in a way that waiting may fix: retry after a backoff.
    pub retry: bool,
    /// These actions failed in a way that waiting will not fix, with the error each had: park
    /// them.
    pub park: Vec<(Action, String)>,
    /// The manifests (and generations) that asked for them: they stay parked while it is the same.
    pub fingerprint: String,
}

impl Verdict {
    /// Nothing failed: wait for the next event.
    pub fn settled() -> Verdict {
        Verdict::default()
    }

    pub fn transient() -> Verdict {
        Verdict { retry: true, ..Verdict::default() }
    }

    pub fn permanent(actions: Vec<(Action, String)>, fingerprint: impl Into<String>) -> Verdict {
        Verdict { retry: false, park: actions, fingerprint: fingerprint.into() }
    }

    pub fn is_permanent(&self) -> bool {
        !self.park.is_empty()
    }

    /// Whether `action` is parked by this verdict.
    pub fn parks(&self, action: Action) -> bool {
        self.park.iter().any(|(parked, _)| *parked == action)
    }
}

/// A parked action: the manifests that asked for it, and the error it failed with.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parked {
    fingerprint: String,
    error: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Retry {
    attempts: u32,
    due: DateTime<Utc>,
}

/// The per-account retry and parking state (see the module documentation): the one place a
/// failure's parked state is kept.
#[derive(Debug, Default)]
pub struct WorkQueue {
    backoff: Backoff,
    retries: BTreeMap<Identity, Retry>,
    parked: BTreeMap<(Identity, Action), Parked>,
}

impl WorkQueue {
    pub fn new(backoff: Backoff) -> WorkQueue {
        WorkQueue { backoff, ..WorkQueue::default() }
    }

    /// Applies the error policy to one account's verdict; `jitter` in [0, 1].
    pub fn settle(&mut self, identity: &Identity, verdict: Verdict, now: DateTime<Utc>, jitter: f64) {
        for (action, error) in verdict.park {
            let parked = Parked { fingerprint: verdict.fingerprint.clone(), error };
            self.parked.insert((identity.clone(), action), parked);
        }
        if verdict.retry {
            let attempts = self.retries.get(identity).map_or(0, |r| r.attempts) + 1;
            let delay = self.backoff.delay(attempts, jitter);
            let due = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
            self.retries.insert(identity.clone(), Retry { attempts, due });
        } else {
            self.retries.remove(identity);
        }
    }

    /// Forgets the retries of accounts the last plan no longer has (a manifest deleted or
    /// retargeted, two names found to be one account): a retry nobody settles would be due for
    /// ever, and the loop would run pass after pass.
    pub fn retain_retries(&mut self, planned: &BTreeSet<Identity>) {
        self.retries.retain(|identity, _| planned.contains(identity));
    }

    /// The error `action` on `identity` failed with, when it failed permanently for the same
    /// manifests (`fingerprint`) and must not be sent again. A different fingerprint (the
    /// manifests changed) does not count: [`WorkQueue::retain_parked`] then forgets the entry.
    pub fn parked(&self, identity: &Identity, action: Action, fingerprint: &str) -> Option<&str> {
        let parked = self.parked.get(&(identity.clone(), action))?;
        (parked.fingerprint == fingerprint).then_some(parked.error.as_str())
    }

    /// Forgets parked failures: all of them, or those of the given accounts (an operator asked
    /// for a reconcile).
    pub fn unpark(&mut self, only: Option<&BTreeSet<Identity>>) {
        match only {
            None => self.parked.clear(),
            Some(identities) => self.parked.retain(|(identity, _), _| !identities.contains(identity)),
        }
    }

    /// Keeps parked entries only for actions still planned for the same manifests (the rest were
    /// fixed, dropped, or asked for anew): `planned` maps each planned action to its fingerprint.
    pub fn retain_parked(&mut self, planned: &BTreeMap<(Identity, Action), String>) {
        self.parked.retain(|key, parked| planned.get(key) == Some(&parked.fingerprint));
    }

    /// When the earliest retry is due.
    pub fn next_retry(&self) -> Option<DateTime<Utc>> {
        self.retries.values().map(|r| r.due).min()
    }

    /// When `identity`'s retry is due, and how many attempts it has had.
    pub fn retry_of(&self, identity: &Identity) -> Option<(DateTime<Utc>, u32)> {
        self.retries.get(identity).map(|r| (r.due, r.attempts))
    }

    /// How many accounts wait for a retry.
    pub fn depth(&self) -> usize {
        self.retries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Identity {
        Identity::sam_account_name("alice").unwrap()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn transient_failures_back_off_and_a_success_clears_the_retry() {
        let backoff = Backoff { base: std::time::Duration::from_secs(2), cap: std::time::Duration::from_secs(60) };
        let mut queue = WorkQueue::new(backoff);
        queue.settle(&alice(), Verdict::transient(), t0(), 1.0);
        assert_eq!(queue.retry_of(&alice()), Some((t0() + chrono::Duration::seconds(2), 1)));
        queue.settle(&alice(), Verdict::transient(), t0(), 1.0);
        queue.settle(&alice(), Verdict::transient(), t0(), 1.0);
        assert_eq!(queue.retry_of(&alice()), Some((t0() + chrono::Duration::seconds(8), 3)));
        assert_eq!(queue.next_retry(), Some(t0() + chrono::Duration::seconds(8)));
        assert_eq!(queue.depth(), 1, "one account, one entry, however often it failed");
        queue.settle(&alice(), Verdict::settled(), t0(), 1.0);
        assert_eq!(queue.next_retry(), None);
        queue.settle(&alice(), Verdict::transient(), t0(), 1.0);
        assert_eq!(queue.retry_of(&alice()).map(|r| r.1), Some(1), "attempts start again after a success");
    }

    fn planned(fingerprint: &str) -> BTreeMap<(Identity, Action), String> {
        BTreeMap::from([((alice(), Action::DisableAccount), fingerprint.to_owned())])
    }

    #[test]
    fn a_permanent_failure_parks_the_action_until_the_manifests_change() {
        let mut queue = WorkQueue::default();
        let verdict = Verdict::permanent(vec![(Action::DisableAccount, "access denied".into())], "inc-1@abc");
        queue.settle(&alice(), verdict, t0(), 0.5);
        assert_eq!(queue.next_retry(), None, "a permanent failure is not retried on a timer");
        assert_eq!(queue.parked(&alice(), Action::DisableAccount, "inc-1@abc"), Some("access denied"));
        assert_eq!(queue.parked(&alice(), Action::SuspendUser, "inc-1@abc"), None, "only the failed action");
        assert_eq!(queue.parked(&alice(), Action::DisableAccount, "inc-1@def"), None, "a new generation unparks");
        queue.retain_parked(&planned("inc-1@def"));
        assert_eq!(
            queue.parked(&alice(), Action::DisableAccount, "inc-1@abc"),
            None,
            "and once the new generation was planned, going back to the old one does not park it again"
        );
    }

    #[test]
    fn a_permanent_failure_is_parked_even_while_the_account_is_retried_for_another() {
        let mut queue = WorkQueue::default();
        let verdict =
            Verdict { retry: true, park: vec![(Action::DisableAccount, "e".into())], fingerprint: "f".into() };
        queue.settle(&alice(), verdict, t0(), 1.0);
        assert!(queue.parked(&alice(), Action::DisableAccount, "f").is_some(), "the refused AD action is not resent");
        assert!(queue.next_retry().is_some(), "the account is still retried for the provider that was down");
    }

    #[test]
    fn retries_of_accounts_no_longer_planned_are_dropped() {
        let mut queue = WorkQueue::default();
        queue.settle(&alice(), Verdict::transient(), t0(), 1.0);
        queue.retain_retries(&BTreeSet::from([Identity::sam_account_name("bob").unwrap()]));
        assert_eq!(queue.next_retry(), None, "nothing is left to wake the loop for alice");
    }

    #[test]
    fn an_operator_reconcile_unparks() {
        let mut queue = WorkQueue::default();
        let verdict = Verdict::permanent(vec![(Action::DisableAccount, "e".into())], "f");
        queue.settle(&alice(), verdict.clone(), t0(), 0.5);
        queue.unpark(Some(&BTreeSet::from([Identity::sam_account_name("bob").unwrap()])));
        assert!(queue.parked(&alice(), Action::DisableAccount, "f").is_some(), "another account's reconcile");
        queue.unpark(Some(&BTreeSet::from([alice()])));
        assert!(queue.parked(&alice(), Action::DisableAccount, "f").is_none());
        queue.settle(&alice(), verdict.clone(), t0(), 0.5);
        queue.retain_parked(&planned("f"));
        assert!(queue.parked(&alice(), Action::DisableAccount, "f").is_some(), "still planned alike: kept");
        queue.retain_parked(&BTreeMap::new());
        assert!(queue.parked(&alice(), Action::DisableAccount, "f").is_none(), "no longer planned: forgotten");
        queue.settle(&alice(), verdict, t0(), 0.5);
        queue.unpark(None);
        assert!(queue.parked(&alice(), Action::DisableAccount, "f").is_none(), "a reconcile of everything");
    }
}
