//! The pass's decisions, apart from its effects: what is held back from sending, each account's
//! verdict for the error policy, and which departed manifests are done with. Pure functions over
//! the plan and what became of the actions sent; the pass ([`super::reconcile`]) carries them out
//! and the controller applies the verdicts ([`super::policy::WorkQueue::settle`]).

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};

use remedy_policies::manifest::Generation;
use remedy_policies::observed::{ObservedState, ProviderView};
use remedy_policies::plan::{Cause, DepartedManifest, Disposition, IdentityPlan, IdentityStatus, Plan, RecordedChange};
use remedy_policies::replication::{self, Allowance, DcRef, Sent as ReplicationSent, Settlement};
use remedy_policies::{Action, Identity, ManifestName, Provider};

use super::policy::Verdict;
use crate::execute::{ActionReport, Outcome};

/// What became of one action sent, kept for the statuses, the error policy and the metrics once
/// the pass has recorded it (an [`ActionReport`] carries the whole planned action besides).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    pub identity: Identity,
    pub action: Action,
    pub provider: Provider,
    pub outcome: Outcome,
    pub transient: bool,
    pub error: Option<String>,
    /// What the directory showed before, and after (as read back; as planned if not read).
    pub before: String,
    pub after: String,
    /// How long the attempt took, read-back included.
    pub duration_ms: u64,
    /// The AD account's `uSNChanged` as read back after the write.
    pub usn_after: Option<u64>,
    /// The DC an Active Directory action went to, when it succeeded.
    pub domain_controller: Option<String>,
}

impl Sent {
    pub fn of(report: &ActionReport) -> Sent {
        Sent {
            identity: report.identity.clone(),
            action: report.action,
            provider: report.provider,
            outcome: report.outcome.clone(),
            transient: report.transient,
            error: report.error.clone(),
            before: report.planned.before.clone(),
            after: report.observed_after.clone().unwrap_or_else(|| report.planned.after.clone()),
            duration_ms: u64::try_from(report.duration.as_millis()).unwrap_or(u64::MAX),
            usn_after: report.usn_after,
            domain_controller: report.domain_controller.clone(),
        }
    }
}

/// What was sent about `identity`, from a list sorted by identity: a binary search, not a scan,
/// since a pass asks for each of thousands of accounts.
pub fn sent_to<'a>(sent: &'a [Sent], identity: &Identity) -> &'a [Sent] {
    let start = sent.partition_point(|s| s.identity < *identity);
    let end = start + sent[start..].partition_point(|s| s.identity == *identity);
    &sent[start..end]
}

/// Every name an account was declared under.
pub fn names_of(identity: &IdentityPlan) -> Vec<Identity> {
    std::iter::once(identity.identity.clone()).chain(identity.also_declared_as.iter().cloned()).collect()
}

/// Whether the pass could not look at the account: a provider could not be asked, or an
/// interrupted action on it could not be checked (`deferred`).
pub fn unobserved(identity: &IdentityPlan, deferred: &BTreeSet<Identity>) -> bool {
    identity.status == IdentityStatus::ProviderUnavailable || names_of(identity).iter().any(|n| deferred.contains(n))
}

/// The manifests (with generations) an account's plan comes from: a parked failure stays parked
/// while this is the same.
pub fn fingerprint(identity: &IdentityPlan, generations: &BTreeMap<ManifestName, Generation>) -> String {
    identity
        .manifests
        .iter()
        .map(|name| format!("{name}@{}", generations.get(name).map_or("?", Generation::as_str)))
        .collect::<Vec<_>>()
        .join(",")
}

/// The allowed actions of a plan, sorted into what is sent and what is held back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sorted {
    /// Every allowed action, with the fingerprint it was planned under.
    pub planned: BTreeMap<(Identity, Action), String>,
    /// Allowed actions not sent: of accounts with an unchecked interrupted action, or parked.
    pub withheld: BTreeSet<(Identity, Action)>,
    /// The parked ones among them, with the error they failed with.
    pub parked: BTreeMap<(Identity, Action), String>,
}

/// Sorts the allowed actions of `plan`: an account with an unchecked interrupted action
/// (`deferred`) gets nothing; an action `parked_error` names for the same fingerprint is not sent
/// again.
pub fn sort_allowed<'e>(
    plan: &Plan,
    deferred: &BTreeSet<Identity>,
    generations: &BTreeMap<ManifestName, Generation>,
    parked_error: impl Fn(&Identity, Action, &str) -> Option<&'e str>,
) -> Sorted {
    let mut sorted = Sorted::default();
    for identity in &plan.identities {
        let held_back = names_of(identity).iter().any(|name| deferred.contains(name));
        let fingerprint = fingerprint(identity, generations);
        let declared = &identity.identity;
        for planned in identity.actions.iter().filter(|planned| planned.disposition == Disposition::Allowed) {
            let key = (declared.clone(), planned.action);
            if held_back {
                sorted.withheld.insert(key.clone());
            } else if let Some(error) = parked_error(declared, planned.action, &fingerprint) {
                sorted.parked.insert(key.clone(), error.to_owned());
                sorted.withheld.insert(key.clone());
            }
            sorted.planned.insert(key, fingerprint.clone());
        }
    }
    sorted
}

/// The drift corrections of accounts in a fight that must wait (`spaced`): held back from this
/// pass; the first actions of a manifest (not a correction) are not held.
pub fn spaced_corrections(plan: &Plan, spaced: &BTreeSet<Identity>) -> Vec<(Identity, Action)> {
    plan.identities
        .iter()
        .filter(|identity| names_of(identity).iter().any(|name| spaced.contains(name)))
        .flat_map(|identity| {
            identity
                .actions
                .iter()
                .filter(|planned| planned.cause == Cause::DriftCorrection)
                .map(|planned| (identity.identity.clone(), planned.action))
        })
        .collect()
}

/// The drift corrections that may only be replication catching up: remedy's latest change of the
/// attribute was made on another DC than the one that served this pass's observation, within the
/// replication allowance (`policies::replication`). They are neither sent nor counted as drift yet;
/// each is looked at again by its deadline (awaiting, with the deadline), and corrected on the DC
/// in use once the allowance is used up without the change showing.
pub fn replication_pending(
    plan: &Plan,
    remedy_changes: &[RecordedChange],
    serving_dc: Option<&str>,
    now: DateTime<Utc>,
) -> BTreeMap<(Identity, Action), DateTime<Utc>> {
    let Some(serving) = serving_dc else { return BTreeMap::new() };
    let serving = DcRef { url: serving.to_owned(), site: None };
    let attribute = |action: Action| action.inverse().map_or(action, |inverse| inverse.min(action));
    let mut pending = BTreeMap::new();
    for identity in &plan.identities {
        let names = names_of(identity);
        for planned in &identity.actions {
            if planned.cause != Cause::DriftCorrection || planned.provider != Provider::ActiveDirectory {
                continue;
            }
            let latest = remedy_changes
                .iter()
                .filter(|c| attribute(c.action) == attribute(planned.action) && names.contains(&c.identity))
                .max_by_key(|c| c.at);
            let Some(change) = latest.filter(|c| c.action == planned.action) else { continue };
            let Some(dc) = &change.dc else { continue };
            let sent = ReplicationSent { to: Some(DcRef { url: dc.clone(), site: None }), at: change.at };
            // remedy knows no sites for a list of DCs: it allows them the within-site minute (list
            // the DCs of remedy's own site; between sites replication can take 15 minutes).
            let allowance = Allowance { between_sites: Allowance::default().within_site, ..Allowance::default() };
            if let Settlement::Pending { check_again_at } = replication::settle(&sent, &serving, false, &allowance, now)
            {
                tracing::info!(
                    identity = %identity.identity,
                    action = %planned.action,
                    written_to = %dc,
                    serving = %serving.url,
                    until = %check_again_at,
                    "not shown by the DC in use yet: waiting for replication before correcting"
                );
                pending.insert((identity.identity.clone(), planned.action), check_again_at);
            }
        }
    }
    pending
}

/// The error policy's input for one account: transient trouble (a provider that could not be
/// asked, a failure that may pass) is retried; a permanent failure parks its action.
pub fn verdict_of(
    identity: &IdentityPlan,
    sent: &[Sent],
    deferred: &BTreeSet<Identity>,
    generations: &BTreeMap<ManifestName, Generation>,
) -> Verdict {
    let failed: Vec<&Sent> =
        sent_to(sent, &identity.identity).iter().filter(|s| s.outcome == Outcome::Failed).collect();
    // Skipped actions were not sent (an earlier one failed): they are neither parked nor retried
    // for themselves; they follow the failure that stopped them.
    let permanent: Vec<(Action, String)> =
        failed.iter().filter(|s| !s.transient).map(|s| (s.action, s.error.clone().unwrap_or_default())).collect();
    Verdict {
        retry: unobserved(identity, deferred)
            || failed.iter().any(|s| s.transient)
            || sent_to(sent, &identity.identity).iter().any(|s| s.outcome == Outcome::AwaitingConfirmation),
        fingerprint: if permanent.is_empty() { String::new() } else { fingerprint(identity, generations) },
        park: permanent,
    }
}

/// Adds to an account's verdict what its actions awaiting confirmation ask for: a pass after the
/// error policy's backoff while one awaits (it is read again then), and parking for one not
/// effective by its deadline (not sent again until the manifests change or an operator asks).
pub fn confirmations(
    verdict: &mut Verdict,
    identity: &IdentityPlan,
    awaiting: &BTreeMap<(Identity, Action), DateTime<Utc>>,
    not_effective: &[(Identity, Action, String)],
    generations: &BTreeMap<ManifestName, Generation>,
) {
    let names = names_of(identity);
    if awaiting.keys().any(|(who, _)| names.contains(who)) {
        verdict.retry = true;
    }
    let parked: Vec<(Action, String)> = not_effective
        .iter()
        .filter(|(who, _, _)| names.contains(who))
        .map(|(_, action, error)| (*action, error.clone()))
        .collect();
    if !parked.is_empty() {
        verdict.park.extend(parked);
        verdict.fingerprint = fingerprint(identity, generations);
    }
}

/// The departed manifests that have nothing left to restore: every account they named was
/// observed and every restore for them succeeded. They are forgotten, status included; the
/// history keeps what was done.
pub fn releasable(
    departed: &[DepartedManifest],
    plan: &Plan,
    sent: &[Sent],
    deferred: &BTreeSet<Identity>,
) -> Vec<DepartedManifest> {
    departed
        .iter()
        .filter(|gone| {
            plan.identities.iter().filter(|i| i.manifests.contains(&gone.name)).all(|identity| {
                let restore_left = identity.actions.iter().any(|planned| {
                    matches!(&planned.cause, Cause::Release { manifest } if *manifest == gone.name)
                        && !sent_to(sent, &identity.identity)
                            .iter()
                            .any(|s| s.action == planned.action && s.outcome == Outcome::Succeeded)
                });
                !unobserved(identity, deferred) && !restore_left
            })
        })
        .cloned()
        .collect()
}

/// Whether the observation could ask `provider` about `identity`.
pub fn provider_error(observed: &ObservedState, identity: &Identity, provider: Provider) -> Option<String> {
    let observation = observed.get(identity)?;
    match provider {
        Provider::ActiveDirectory => match &observation.active_directory {
            ProviderView::Unavailable { error } => Some(error.clone()),
            _ => None,
        },
        Provider::EntraId => match &observation.entra_id {
            ProviderView::Unavailable { error } => Some(error.clone()),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use remedy_policies::manifest::{OnRelease, Target};
    use remedy_policies::plan::{PlanId, PlannedAction};

    use super::*;

    fn id(name: &str) -> Identity {
        Identity::sam_account_name(name).expect("identity")
    }

    fn name(n: &str) -> ManifestName {
        ManifestName::new(n).expect("name")
    }

    fn planned(action: Action, cause: Cause, disposition: Disposition) -> PlannedAction {
        PlannedAction {
            action,
            provider: action.provider(),
            provenance: vec![name("inc-1")],
            reason: "test".into(),
            cause,
            before: "512".into(),
            after: "514".into(),
            disposition,
        }
    }

    fn account(who: &str, status: IdentityStatus, actions: Vec<PlannedAction>) -> IdentityPlan {
        IdentityPlan {
            identity: id(who),
            also_declared_as: Vec::new(),
            resolved: Default::default(),
            manifests: vec![name("inc-1")],
            status,
            actions,
            blocked: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn plan_id() -> PlanId {
        "0123456789abcdef0123456789abcdef".parse().expect("plan id")
    }

    fn plan_of(identities: Vec<IdentityPlan>) -> Plan {
        Plan {
            id: plan_id(),
            computed_at: chrono::Utc::now(),
            identities,
            conflicts: Vec::new(),
            warnings: Vec::new(),
            approval: remedy_policies::plan::Approval::NotNeeded,
        }
    }

    fn generations() -> BTreeMap<ManifestName, Generation> {
        let generation = serde_json::from_str("\"g1\"").expect("generation");
        BTreeMap::from([(name("inc-1"), generation)])
    }

    fn sent(who: &str, action: Action, outcome: Outcome, transient: bool) -> Sent {
        Sent {
            identity: id(who),
            action,
            provider: action.provider(),
            outcome,
            transient,
            error: Some("the DC said no".into()),
            before: "512".into(),
            after: "514".into(),
            duration_ms: 3,
            usn_after: None,
            domain_controller: None,
        }
    }

    const DISABLE: Action = Action::DisableAccount;
    const SUSPEND: Action = Action::SuspendUser;

    #[test]
    fn what_is_sent_and_what_is_held_back() {
        let allowed = |a| planned(a, Cause::Desired, Disposition::Allowed);
        let held = planned(DISABLE, Cause::Desired, Disposition::Held { plan_id: plan_id() });
        let plan = plan_of(vec![
            account("alice", IdentityStatus::Pending, vec![allowed(DISABLE), allowed(SUSPEND)]),
            account("bob", IdentityStatus::Pending, vec![allowed(DISABLE)]),
            account("carol", IdentityStatus::Pending, vec![allowed(DISABLE)]),
            account("dave", IdentityStatus::Held, vec![held]),
        ]);
        let deferred = BTreeSet::from([id("bob")]);
        let parked = |who: &Identity, action: Action, fingerprint: &str| {
            (*who == id("carol") && action == DISABLE && fingerprint == "inc-1@g1").then_some("access denied")
        };
        let sorted = sort_allowed(&plan, &deferred, &generations(), parked);
        assert_eq!(sorted.planned.len(), 4, "every allowed action, held back or not; not the held one");
        assert!(sorted.planned.values().all(|f| f == "inc-1@g1"));
        assert_eq!(sorted.withheld, BTreeSet::from([(id("bob"), DISABLE), (id("carol"), DISABLE)]));
        assert_eq!(sorted.parked, BTreeMap::from([((id("carol"), DISABLE), "access denied".to_owned())]));

        let moved_on = sort_allowed(&plan, &BTreeSet::new(), &BTreeMap::new(), parked);
        assert!(moved_on.withheld.is_empty(), "a new generation is sent again: {moved_on:?}");
    }

    /// (what, the account's status, deferred, what was sent, retry?, parked actions)
    type VerdictCase = (&'static str, IdentityStatus, bool, Vec<Sent>, bool, Vec<Action>);

    #[test]
    fn verdicts() {
        use IdentityStatus::{Converged, Pending, ProviderUnavailable};
        use Outcome::{Failed, Skipped, Succeeded};
        let cases: Vec<VerdictCase> = vec![
            ("nothing to do", Converged, false, vec![], false, vec![]),
            ("a success", Pending, false, vec![sent("alice", DISABLE, Succeeded, false)], false, vec![]),
            (
                "a transient failure is retried",
                Pending,
                false,
                vec![sent("alice", DISABLE, Failed, true)],
                true,
                vec![],
            ),
            (
                "a permanent failure parks",
                Pending,
                false,
                vec![sent("alice", DISABLE, Failed, false)],
                false,
                vec![DISABLE],
            ),
            (
                "a skipped action follows the failure",
                Pending,
                false,
                vec![sent("alice", DISABLE, Skipped, false)],
                false,
                vec![],
            ),
            ("a provider down is retried", ProviderUnavailable, false, vec![], true, vec![]),
            ("an unchecked interrupted action is retried", Pending, true, vec![], true, vec![]),
            (
                "both at once: parked for AD, retried for Entra",
                Pending,
                false,
                vec![sent("alice", DISABLE, Failed, false), sent("alice", SUSPEND, Failed, true)],
                true,
                vec![DISABLE],
            ),
            ("another account's failure", Pending, false, vec![sent("bob", DISABLE, Failed, false)], false, vec![]),
        ];
        for (what, status, is_deferred, sent, retry, park) in cases {
            let identity = account("alice", status, Vec::new());
            let deferred = if is_deferred { BTreeSet::from([id("alice")]) } else { BTreeSet::new() };
            let verdict = verdict_of(&identity, &sent, &deferred, &generations());
            assert_eq!(verdict.retry, retry, "{what}: retry");
            assert_eq!(verdict.park.iter().map(|(a, _)| *a).collect::<Vec<_>>(), park, "{what}: parked");
            if !park.is_empty() {
                assert_eq!(verdict.fingerprint, "inc-1@g1", "{what}: parked for these manifests");
                assert_eq!(verdict.park[0].1, "the DC said no", "{what}: with its error");
            }
        }
    }

    #[test]
    fn a_departed_manifest_is_done_with_once_every_restore_succeeded() {
        use Outcome::{Failed, Succeeded};
        let gone = DepartedManifest {
            name: name("inc-1"),
            target: Target { identity: id("alice"), entra_object_id: None },
            on_release: OnRelease::default(),
            reason: "deleted".into(),
        };
        let restore = planned(Action::EnableAccount, Cause::Release { manifest: name("inc-1") }, Disposition::Allowed);
        // (what, the account's status, deferred, what was sent, done with?)
        let cases: Vec<(&str, IdentityStatus, bool, Vec<Sent>, bool)> = vec![
            (
                "restored",
                IdentityStatus::Pending,
                false,
                vec![sent("alice", Action::EnableAccount, Succeeded, false)],
                true,
            ),
            (
                "the restore failed",
                IdentityStatus::Pending,
                false,
                vec![sent("alice", Action::EnableAccount, Failed, true)],
                false,
            ),
            ("not sent", IdentityStatus::Pending, false, vec![], false),
            ("not observed", IdentityStatus::ProviderUnavailable, false, vec![], false),
            ("unchecked interrupted action", IdentityStatus::Pending, true, vec![], false),
        ];
        for (what, status, is_deferred, sent, done) in cases {
            let plan = plan_of(vec![account("alice", status, vec![restore.clone()])]);
            let deferred = if is_deferred { BTreeSet::from([id("alice")]) } else { BTreeSet::new() };
            let released = releasable(std::slice::from_ref(&gone), &plan, &sent, &deferred);
            assert_eq!(!released.is_empty(), done, "{what}");
        }
        let nothing_left = plan_of(vec![account("alice", IdentityStatus::Released, vec![])]);
        assert_eq!(releasable(&[gone], &nothing_left, &[], &BTreeSet::new()).len(), 1, "nothing to restore");
    }

    #[test]
    fn what_was_sent_is_found_by_account() {
        let list = vec![
            sent("alice", DISABLE, Outcome::Succeeded, false),
            sent("bob", DISABLE, Outcome::Succeeded, false),
            sent("bob", SUSPEND, Outcome::Failed, true),
            sent("carol", DISABLE, Outcome::Succeeded, false),
        ];
        assert_eq!(sent_to(&list, &id("bob")).len(), 2);
        assert_eq!(sent_to(&list, &id("aaron")).len(), 0);
        assert_eq!(sent_to(&list, &id("zoe")).len(), 0);
    }

    #[test]
    fn awaited_actions_are_read_again_and_one_not_effective_is_parked() {
        let suspend = planned(Action::SuspendUser, Cause::Desired, Disposition::Allowed);
        let alice = account("alice", IdentityStatus::Pending, vec![suspend]);
        let deadline = chrono::Utc::now();
        let none = BTreeSet::new();
        // Sent this pass and awaiting: a pass comes again after the backoff; nothing parked.
        let awaiting_now = [sent("alice", Action::SuspendUser, Outcome::AwaitingConfirmation, false)];
        let verdict = verdict_of(&alice, &awaiting_now, &none, &generations());
        assert!(verdict.retry && verdict.park.is_empty(), "{verdict:?}");
        // Awaited from an earlier pass: the same.
        let mut verdict = verdict_of(&alice, &[], &none, &generations());
        assert!(!verdict.retry);
        let awaiting = BTreeMap::from([((id("alice"), Action::SuspendUser), deadline)]);
        confirmations(&mut verdict, &alice, &awaiting, &[], &generations());
        assert!(verdict.retry && verdict.park.is_empty(), "{verdict:?}");
        // Past its deadline, not shown: parked under the manifests' fingerprint.
        let mut verdict = verdict_of(&alice, &[], &none, &generations());
        let not_effective = [(id("alice"), Action::SuspendUser, "not effective".to_owned())];
        confirmations(&mut verdict, &alice, &BTreeMap::new(), &not_effective, &generations());
        assert_eq!(verdict.park, [(Action::SuspendUser, "not effective".to_owned())]);
        assert_eq!(verdict.fingerprint, "inc-1@g1");
        // Another account's are not this one's business.
        let mut verdict = verdict_of(&account("bob", IdentityStatus::Pending, vec![]), &[], &none, &generations());
        confirmations(
            &mut verdict,
            &account("bob", IdentityStatus::Pending, vec![]),
            &awaiting,
            &not_effective,
            &generations(),
        );
        assert_eq!(verdict, Verdict::settled());
    }

    #[test]
    fn a_correction_that_may_be_replication_waits_for_the_allowance_and_only_then() {
        let dc1 = "ldaps://dc1";
        let dc2 = "ldaps://dc2";
        let now = chrono::Utc::now();
        let ago = |seconds: i64| now - chrono::Duration::seconds(seconds);
        let change = |action: Action, seconds: i64, dc: Option<&str>| RecordedChange {
            manifest: name("inc-1"),
            identity: id("alice"),
            action,
            at: ago(seconds),
            dc: dc.map(str::to_owned),
        };
        let correction = || {
            plan_of(vec![account(
                "alice",
                IdentityStatus::Pending,
                vec![planned(Action::DisableAccount, Cause::DriftCorrection, Disposition::Allowed)],
            )])
        };
        let key = (id("alice"), Action::DisableAccount);
        // (what, remedy's changes, the DC serving now, waits until)
        type Case<'a> = (&'a str, Vec<RecordedChange>, Option<&'a str>, Option<DateTime<Utc>>);
        let cases: Vec<Case> = vec![
            (
                "written on dc1 10 s ago, dc2 serves: wait",
                vec![change(Action::DisableAccount, 10, Some(dc1))],
                Some(dc2),
                Some(ago(10) + chrono::Duration::minutes(1)),
            ),
            (
                "written on dc1 2 min ago: the allowance is used up",
                vec![change(Action::DisableAccount, 120, Some(dc1))],
                Some(dc2),
                None,
            ),
            (
                "the same DC serves: its view decides at once",
                vec![change(Action::DisableAccount, 10, Some(dc1))],
                Some(dc1),
                None,
            ),
            (
                "no DC named in the record (one DC, or an old record)",
                vec![change(Action::DisableAccount, 10, None)],
                Some(dc2),
                None,
            ),
            ("one DC configured: nothing to wait for", vec![change(Action::DisableAccount, 10, Some(dc1))], None, None),
            (
                "remedy's latest change of the attribute was the opposite",
                vec![change(Action::DisableAccount, 30, Some(dc1)), change(Action::EnableAccount, 10, Some(dc1))],
                Some(dc2),
                None,
            ),
            (
                "the latest of several decides",
                vec![change(Action::DisableAccount, 120, Some(dc2)), change(Action::DisableAccount, 10, Some(dc1))],
                Some(dc2),
                Some(ago(10) + chrono::Duration::minutes(1)),
            ),
        ];
        for (what, changes, serving, waits_until) in cases {
            let pending = replication_pending(&correction(), &changes, serving, now);
            assert_eq!(pending.get(&key).copied(), waits_until, "{what}");
        }
        // Only drift corrections wait: a manifest's first disable goes at once.
        let first = plan_of(vec![account(
            "alice",
            IdentityStatus::Pending,
            vec![planned(Action::DisableAccount, Cause::Desired, Disposition::Allowed)],
        )]);
        assert!(
            replication_pending(&first, &[change(Action::DisableAccount, 10, Some(dc1))], Some(dc2), now).is_empty()
        );
    }
}
