//! Changes noticed between resyncs (issue 3 of 6): what the watchers report is mapped to the
//! managed accounts, gathered into the next targeted pass, timed (re-containment latency), and
//! counted per account so that a fight does not become a tight loop.
//!
//! Which account an object is comes from the last passes: each planned account with the AD
//! account (`objectGUID`, and the `uSNChanged` read) and the Entra ID user (object id) it was
//! observed as, and the manifests it was planned under (all of them: the plan merges by account,
//! so a targeted pass over those manifests plans the account as a full pass would).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use remedy_policies::contest::{ContestLimits, Corrections, Standing};
use remedy_policies::plan::{Cause, Disposition, IdentityStatus};
use remedy_policies::usn::is_stale;
use remedy_policies::{Identity, ManifestName};
use tokio::time::Instant;
use uuid::Uuid;

use super::reconcile::PassResult;
use super::store_call::blocking;
use crate::ad::WatchedAccount;
use crate::drift::{ChangedObject, DriftSignal, DriftSource};
use crate::execute::Outcome;
use crate::model::{ContestedEvent, Event};
use crate::store::StoreError;

/// One managed account as the last pass saw it.
#[derive(Debug, Clone)]
struct Known {
    identity: Identity,
    manifests: BTreeSet<ManifestName>,
    /// The `uSNChanged` read: a notification at or below it is old news.
    usn: Option<u64>,
}

/// When and how an account's change was first noticed, for the latency metric.
#[derive(Debug, Clone, Copy)]
pub struct Noticed {
    pub at: Instant,
    pub source: DriftSource,
}

/// What the controller needs to do about a report.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    Nothing,
    Targeted,
    Full,
}

/// A fight that began in a pass: recorded once, with what is known.
#[derive(Debug, Clone)]
pub struct FightBegun {
    pub identity: Identity,
    pub manifests: BTreeSet<ManifestName>,
    pub standing: Standing,
    pub source: Option<DriftSource>,
}

#[derive(Debug, Default)]
pub struct Drift {
    by_guid: HashMap<Uuid, Known>,
    by_entra: HashMap<String, Known>,
    /// Manifests whose accounts changed, for the next targeted pass.
    pending: BTreeSet<ManifestName>,
    noticed: BTreeMap<Identity, Noticed>,
    corrections: HashMap<Identity, Corrections>,
    /// Accounts contested now, and since when.
    contested: BTreeMap<Identity, Standing>,
    /// Accounts whose next correction waits, until when (their manifests).
    waiting: BTreeMap<Identity, (DateTime<Utc>, BTreeSet<ManifestName>)>,
}

impl Drift {
    /// Maps a report to managed accounts. Changes to objects remedy does not manage, and
    /// notifications older than what was read, are dropped.
    pub fn on_signal(&mut self, signal: DriftSignal) -> Wanted {
        match signal {
            DriftSignal::Resync { why, source } => {
                tracing::warn!(%why, %source, "a full pass is needed to know what changed");
                Wanted::Full
            }
            DriftSignal::Changed { objects, source, noticed } => {
                let mut wanted = Wanted::Nothing;
                for object in objects {
                    let known = match &object {
                        ChangedObject::AdAccount { guid, usn } => {
                            self.by_guid.get(guid).filter(|known| !is_stale(*usn, known.usn))
                        }
                        ChangedObject::EntraUser { id } => self.by_entra.get(&id.to_ascii_lowercase()),
                    };
                    let Some(known) = known else { continue };
                    tracing::info!(identity = %known.identity, %source, "a managed account changed: reconciling it");
                    self.pending.extend(known.manifests.iter().cloned());
                    self.noticed.entry(known.identity.clone()).or_insert(Noticed { at: noticed, source });
                    wanted = Wanted::Targeted;
                }
                wanted
            }
        }
    }

    /// The manifests of the next targeted pass (emptied).
    pub fn take_pending(&mut self) -> BTreeSet<ManifestName> {
        std::mem::take(&mut self.pending)
    }

    /// A full pass covers every change noticed so far.
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Accounts whose corrections wait now.
    pub fn spaced(&self, now: DateTime<Utc>) -> BTreeSet<Identity> {
        self.waiting.iter().filter(|(_, (until, _))| *until > now).map(|(identity, _)| identity.clone()).collect()
    }

    /// The earliest time a waiting correction may go.
    pub fn next_correction(&self) -> Option<DateTime<Utc>> {
        self.waiting.values().map(|(until, _)| *until).min()
    }

    /// Corrections whose wait is over go into the next targeted pass.
    pub fn release_waiting(&mut self, now: DateTime<Utc>) -> bool {
        let due: Vec<Identity> =
            self.waiting.iter().filter(|(_, (until, _))| *until <= now).map(|(identity, _)| identity.clone()).collect();
        for identity in &due {
            if let Some((_, manifests)) = self.waiting.remove(identity) {
                self.pending.extend(manifests);
            }
        }
        !due.is_empty()
    }

    /// How many accounts are contested now.
    pub fn contested(&self) -> &BTreeMap<Identity, Standing> {
        &self.contested
    }

    /// Learns from a pass: which objects are which accounts (a full pass replaces what was known,
    /// a targeted one updates its accounts), the corrections sent (fights), and the re-containment
    /// latencies of changes now corrected (returned, with their source). Also returns the fights
    /// that began.
    pub fn learn(
        &mut self,
        result: &PassResult,
        targeted: bool,
        now: DateTime<Utc>,
        limits: &ContestLimits,
    ) -> (Vec<(DriftSource, std::time::Duration)>, Vec<FightBegun>) {
        if !targeted {
            self.by_guid.clear();
            self.by_entra.clear();
        }
        for identity in &result.plan.identities {
            let Some(observation) = result.observed.get(&identity.identity) else { continue };
            let manifests: BTreeSet<ManifestName> = identity.manifests.iter().cloned().collect();
            if let Some(account) = observation.active_directory.found() {
                let known = Known {
                    identity: identity.identity.clone(),
                    manifests: manifests.clone(),
                    // What was read, or what remedy's own write was read back at: the echo of
                    // remedy's own change is not a change to correct.
                    usn: account
                        .usn_changed
                        .and_then(|usn| u64::try_from(usn).ok())
                        .into_iter()
                        .chain(result.sent_to(&identity.identity).iter().filter_map(|s| s.usn_after))
                        .max(),
                };
                self.by_guid.insert(account.object_guid, known);
            }
            if let Some(user) = observation.entra_id.found() {
                let known = Known { identity: identity.identity.clone(), manifests, usn: None };
                self.by_entra.insert(user.id.to_ascii_lowercase(), known);
            }
        }
        let mut latencies = Vec::new();
        let mut begun = Vec::new();
        for identity in &result.plan.identities {
            let corrected: Vec<_> = identity
                .actions
                .iter()
                .filter(|planned| {
                    planned.cause == Cause::DriftCorrection && planned.disposition == Disposition::Allowed
                })
                .filter(|planned| {
                    result
                        .sent_to(&identity.identity)
                        .iter()
                        .any(|s| s.action == planned.action && s.outcome == Outcome::Succeeded)
                })
                .collect();
            let noticed = self.noticed.get(&identity.identity).copied();
            if corrected.is_empty() {
                // Observed as declared: nothing to time. Not observed (a provider down): the
                // change is still to be corrected, and timed when it is.
                let observed = identity.status != IdentityStatus::ProviderUnavailable;
                if observed && identity.actions.is_empty() && identity.blocked.is_empty() {
                    self.noticed.remove(&identity.identity);
                }
                continue;
            }
            if let Some(noticed) = self.noticed.remove(&identity.identity) {
                latencies.push((noticed.source, noticed.at.elapsed()));
            }
            let corrections = self.corrections.entry(identity.identity.clone()).or_default();
            corrections.record(now, limits);
            let standing = corrections.standing(now, limits);
            let manifests: BTreeSet<ManifestName> = identity.manifests.iter().cloned().collect();
            if let Some(until) = standing.next_allowed {
                self.waiting.insert(identity.identity.clone(), (until, manifests.clone()));
            }
            if standing.contested_since.is_some() {
                if !self.contested.contains_key(&identity.identity) {
                    begun.push(FightBegun {
                        identity: identity.identity.clone(),
                        manifests,
                        standing: standing.clone(),
                        source: noticed.map(|n| n.source),
                    });
                }
                self.contested.insert(identity.identity.clone(), standing);
            }
        }
        // A quiet window ends a fight.
        let corrections = &self.corrections;
        self.contested.retain(|identity, _| {
            corrections.get(identity).is_some_and(|c| c.standing(now, limits).contested_since.is_some())
        });
        self.corrections.retain(|_, c| c.standing(now, limits).recent > 0);
        (latencies, begun)
    }

    /// The managed AD accounts (where they are and what they are), for the AD watcher.
    pub fn watched_accounts(result: &PassResult) -> Vec<WatchedAccount> {
        let mut accounts: Vec<WatchedAccount> = result
            .plan
            .identities
            .iter()
            .filter_map(|identity| result.observed.get(&identity.identity)?.active_directory.found())
            .map(|account| WatchedAccount { dn: account.dn.clone(), guid: account.object_guid })
            .collect();
        accounts.sort();
        accounts.dedup();
        accounts
    }
}

impl super::Controller {
    /// After a pass: what it tells about the managed accounts, re-containment latencies, fights
    /// begun (a history record each, logged), and the accounts the AD watcher covers.
    pub(super) async fn after_drift(&mut self, result: &PassResult, targeted: bool) -> Result<(), StoreError> {
        let now = self.clock.now();
        let (latencies, begun) = self.drift.learn(result, targeted, now, &self.settings.contest);
        for (source, latency) in latencies {
            self.metrics.record_recontainment(source.as_str(), latency);
        }
        if !begun.is_empty() {
            let window_seconds = u64::try_from(self.settings.contest.window.num_seconds()).unwrap_or(0);
            let events: Vec<(DateTime<Utc>, Event)> = begun
                .into_iter()
                .map(|fight| {
                    let when_changed = result
                        .observed
                        .get(&fight.identity)
                        .and_then(|o| o.active_directory.found())
                        .and_then(|account| account.when_changed);
                    tracing::warn!(
                        identity = %fight.identity, manifests = ?fight.manifests, corrections = fight.standing.recent,
                        source = ?fight.source, when_changed = ?when_changed,
                        "contested: the account keeps being changed back; remedy keeps the declared state and spaces its corrections"
                    );
                    let event = ContestedEvent {
                        identity: fight.identity,
                        manifests: fight.manifests.into_iter().collect(),
                        corrections: fight.standing.recent,
                        window_seconds,
                        since: fight.standing.contested_since.unwrap_or(now),
                        when_changed,
                        source: fight.source.map(|s| s.as_str().to_owned()),
                        next_correction: fight.standing.next_allowed,
                    };
                    (now, Event::Contested(event))
                })
                .collect();
            let count = events.len();
            blocking(&self.store, move |store| store.append_all(&events)).await?;
            self.metrics.record_contests(count);
        }
        self.metrics.set_contested(self.drift.contested().len());
        if !targeted {
            if let Some(accounts) = &self.watched_accounts {
                let watched = Drift::watched_accounts(result);
                accounts.send_if_modified(|current| {
                    let changed = *current != watched;
                    if changed {
                        *current = watched;
                    }
                    changed
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> ManifestName {
        ManifestName::new(text).expect("manifest name")
    }

    fn knowing(guid: u128, usn: u64) -> Drift {
        let mut drift = Drift::default();
        let known =
            Known { identity: "sam:eve".parse().expect("identity"), manifests: [name("inc-1")].into(), usn: Some(usn) };
        drift.by_entra.insert("4f0a0007-5c1e-4b8a-9d2e-00000000a007".into(), known.clone());
        drift.by_guid.insert(Uuid::from_u128(guid), known);
        drift
    }

    fn changed(object: ChangedObject) -> DriftSignal {
        DriftSignal::Changed { objects: vec![object], source: DriftSource::Notification, noticed: Instant::now() }
    }

    #[tokio::test]
    async fn reports_are_mapped_to_managed_accounts_and_old_news_is_dropped() {
        let ad = |guid: u128, usn: u64| changed(ChangedObject::AdAccount { guid: Uuid::from_u128(guid), usn });
        // (what, report, wanted)
        let cases: Vec<(&str, DriftSignal, Wanted)> = vec![
            ("another object of the container", ad(2, 900), Wanted::Nothing),
            ("a change at the uSNChanged read: the echo of what was read", ad(1, 500), Wanted::Nothing),
            ("an older notification", ad(1, 499), Wanted::Nothing),
            ("a newer change", ad(1, 501), Wanted::Targeted),
            (
                "an Entra user, id in another case",
                changed(ChangedObject::EntraUser { id: "4F0A0007-5C1E-4B8A-9D2E-00000000A007".into() }),
                Wanted::Targeted,
            ),
            (
                "an unmanaged Entra user",
                changed(ChangedObject::EntraUser { id: "someone-else".into() }),
                Wanted::Nothing,
            ),
            (
                "a watermark that cannot be trusted",
                DriftSignal::Resync { why: "restored".into(), source: DriftSource::Poll },
                Wanted::Full,
            ),
        ];
        for (what, signal, wanted) in cases {
            let mut drift = knowing(1, 500);
            let targeted = wanted == Wanted::Targeted;
            assert_eq!(drift.on_signal(signal), wanted, "{what}");
            let pending = drift.take_pending();
            assert_eq!(pending.contains(&name("inc-1")), targeted, "{what}: the account's manifests are pending");
        }
    }

    #[test]
    fn a_pass_over_the_whole_set_is_never_narrowed_to_a_targeted_one() {
        use crate::controller::{want, Trigger::*};
        // (wanted before, trigger, wanted after)
        let cases = [
            (None, Drift, Some(Drift)),
            (Some(Drift), Resync, Some(Resync)),
            (Some(Drift), ManifestsChanged, Some(ManifestsChanged)),
            (Some(Resync), Drift, Some(Resync)),
            (Some(ManifestsChanged), Resync, Some(ManifestsChanged)),
            (Some(Drift), Drift, Some(Drift)),
        ];
        for (before, trigger, after) in cases {
            let mut wanted = before;
            want(&mut wanted, trigger);
            assert_eq!(wanted, after, "{before:?} then {trigger:?}");
        }
    }
}
