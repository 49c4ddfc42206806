//! A pass's sending, a slice at a time: the plan's accounts are cut into slices of about
//! [`SLICE_ACTIONS`] actions; each slice's intents are journaled, sent (read-back verified) and
//! settled with their history records before the next slice starts, so that what a pass holds for
//! the actions in flight does not grow with the size of the pass.

use std::collections::BTreeMap;
use std::ops::Range;

use chrono::{DateTime, Utc};
use remedy_policies::observed::ObservedState;
use remedy_policies::plan::Cause;
use remedy_policies::{Action, Identity, ManifestName, Provider};

use super::clock::Clock;
use super::decide::Sent;
use super::records::{drift_note, failed_record};
use super::store_call::blocking;
use crate::execute::{execute, Outcome, Work};
use crate::model::{ActionOutcome, Event, IntendedChange, ManifestRef};
use crate::providers::Providers;
use crate::store::{Store, StoreError};

/// How many actions are journaled, sent and settled at a time. What a slice sends is held in
/// memory until it is settled; the plan and the observed state are held for the whole pass.
const SLICE_ACTIONS: usize = 500;

/// The plan's accounts cut into ranges of about [`SLICE_ACTIONS`] actions to send each (an
/// account's actions stay together); ranges with nothing to send are left out.
pub(super) fn slices(work: Work<'_>) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    let (mut start, mut count) = (None, 0);
    for (index, identity) in work.identities.iter().enumerate() {
        let sending = work.sending(identity).count();
        if sending == 0 {
            continue;
        }
        start.get_or_insert(index);
        count += sending;
        if count >= SLICE_ACTIONS {
            ranges.extend(start.take().map(|s| s..index + 1));
            count = 0;
        }
    }
    ranges.extend(start.map(|s| s..work.identities.len()));
    ranges
}

/// What a slice's sending came to: what became of each action, the provider and outcome of each
/// record appended, and the actions now awaiting confirmation with their deadlines.
pub(super) type SliceSent = (Vec<Sent>, Vec<(Provider, ActionOutcome)>, Vec<((Identity, Action), DateTime<Utc>)>);

/// Journals the slice's intents, sends them, and settles each from its report: what became of it
/// and the provider and outcome of each record appended. `now` is what the pass judges against;
/// records are dated by `clock` when their attempt or read-back happened.
pub(super) async fn send_slice(
    now: DateTime<Utc>,
    clock: &Clock,
    work: Work<'_>,
    observed: &ObservedState,
    providers: &Providers,
    store: &Store,
    refs: &impl Fn(&[ManifestName], &Cause) -> Vec<ManifestRef>,
) -> Result<SliceSent, StoreError> {
    // The changes go to the store and are dropped once journaled: only their keys are kept.
    let work_ref = &work;
    let (keys, changes): (Vec<(Identity, Action)>, Vec<IntendedChange>) = work
        .identities
        .iter()
        .flat_map(|identity| work_ref.sending(identity).map(move |planned| (identity, planned)))
        .map(|(identity, planned)| {
            let refs = refs(&planned.provenance, &planned.cause);
            let change = IntendedChange::planned(&identity.identity, identity.resolved.clone(), planned, refs, now);
            ((identity.identity.clone(), planned.action), change)
        })
        .unzip();
    let ids = blocking(store, move |store| store.journal_intents(&changes)).await?;
    let mut intent_of: BTreeMap<(Identity, Action), _> = keys.into_iter().zip(ids).collect();

    let stamp = || clock.now();
    let (ad, entra) = (providers.ad(), providers.entra());
    let reports = execute(work, observed, ad, entra, providers.concurrency(), providers.gate(), now, &stamp).await;

    let mut settlements = Vec::new();
    let mut unconfirmed = Vec::new();
    let mut awaiting = Vec::new();
    let mut awaiting_records = Vec::new();
    let mut awaiting_keys = Vec::new();
    for report in &reports {
        let Some(intent) = intent_of.remove(&(report.identity.clone(), report.action)) else {
            tracing::error!(identity = %report.identity, action = %report.action, "a report without an intent: not recorded");
            continue;
        };
        // Accepted and not visible yet (Entra ID is eventually consistent): recorded as awaiting
        // confirmation, and the intent stays journaled, marked with its deadline, for the next
        // passes to confirm from what the directory shows (never sent again before then).
        if report.outcome == Outcome::AwaitingConfirmation {
            let until = report.at
                + chrono::Duration::from_std(providers.confirmation_deadline()).unwrap_or(chrono::Duration::MAX);
            let resolved = work.identities.iter().find(|i| i.identity == report.identity).map(|i| i.resolved.clone());
            let mut record = report.record(
                resolved.unwrap_or_default(),
                refs(&report.planned.provenance, &report.planned.cause),
                providers.acting_account(report.provider),
            );
            record.intent = Some(intent);
            record.note = Some(format!(
                "accepted by the directory and not visible in its reads yet: awaiting confirmation, re-read at the next passes until {} (the confirmation deadline), never sent again meanwhile",
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ));
            tracing::info!(identity = %report.identity, action = %report.action, intent = %intent, until = %until, "awaiting confirmation");
            awaiting.push((intent, report.error.clone().unwrap_or_default(), until));
            awaiting_keys.push(((report.identity.clone(), report.action), until));
            awaiting_records.push((report.at, Event::Action(record)));
            continue;
        }
        // A transient failure may have come after the directory applied the write (a timeout, a
        // broken connection, a read-back that failed): the intent stays journaled, and the next
        // pass settles it from what the directory shows, as after a crash. One that failed
        // before anything was sent is recorded as failed at once.
        if report.outcome == Outcome::Failed && report.transient && !report.nothing_sent {
            unconfirmed.push((intent, report.error.clone().unwrap_or_default()));
            continue;
        }
        let resolved = work.identities.iter().find(|i| i.identity == report.identity).map(|i| i.resolved.clone());
        let mut record = report.record(
            resolved.unwrap_or_default(),
            refs(&report.planned.provenance, &report.planned.cause),
            providers.acting_account(report.provider),
        );
        if report.outcome == Outcome::Succeeded && report.planned.cause == Cause::DriftCorrection {
            record.note = Some(drift_note(report, observed));
        }
        settlements.push((intent, report.at, record));
    }
    // Every journaled intent is settled; one the executor did not report on (it cannot happen,
    // but a record must never be lost) is settled as not attempted.
    for ((identity, action), intent) in intent_of {
        let planned = work
            .identities
            .iter()
            .filter(|i| i.identity == identity)
            .flat_map(|i| i.actions.iter())
            .find(|a| a.action == action);
        if let Some(planned) = planned {
            let mut record = failed_record(&identity, planned);
            record.manifests = refs(&planned.provenance, &planned.cause);
            settlements.push((intent, clock.now(), record));
        }
    }
    let mut outcomes: Vec<(Provider, ActionOutcome)> =
        settlements.iter().map(|(_, _, r)| (r.provider, r.outcome)).collect();
    outcomes.extend(awaiting_records.iter().filter_map(|(_, event)| match event {
        Event::Action(record) => Some((record.provider, record.outcome)),
        _ => None,
    }));
    blocking(store, move |store| store.settle_all(&settlements)).await?;
    blocking(store, move |store| store.mark_unconfirmed(&unconfirmed)).await?;
    // The journal first: a crash before the record is written leaves an awaiting intent that the
    // next pass settles all the same, its history then without the "awaiting" step.
    blocking(store, move |store| store.mark_awaiting(&awaiting)).await?;
    blocking(store, move |store| store.append_all(&awaiting_records)).await?;
    Ok((reports.iter().map(Sent::of).collect(), outcomes, awaiting_keys))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use remedy_policies::plan::{Disposition, IdentityPlan, IdentityStatus, PlannedAction};

    use super::*;

    fn account(who: &str, actions: usize) -> IdentityPlan {
        let action = PlannedAction {
            action: Action::DisableAccount,
            provider: Provider::ActiveDirectory,
            provenance: Vec::new(),
            reason: String::new(),
            cause: Cause::Desired,
            before: String::new(),
            after: String::new(),
            disposition: Disposition::Allowed,
        };
        let kinds = [Action::DisableAccount, Action::ForcePasswordChange, Action::ClearPasswordNeverExpires];
        IdentityPlan {
            identity: Identity::sam_account_name(who).expect("identity"),
            also_declared_as: Vec::new(),
            resolved: Default::default(),
            manifests: Vec::new(),
            status: IdentityStatus::Pending,
            actions: kinds.iter().take(actions).map(|kind| PlannedAction { action: *kind, ..action.clone() }).collect(),
            blocked: Vec::new(),
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_large_pass_is_sent_in_slices_that_keep_each_account_whole() {
        let mut identities: Vec<IdentityPlan> = (0..1_200).map(|n| account(&format!("u{n:05}"), 1)).collect();
        identities[499] = account("u00499", 2);
        let none = BTreeSet::new();
        let ranges = slices(Work { identities: &identities, withheld: &none });
        assert_eq!(ranges, [0..500, 500..1000, 1000..1200], "500 actions each, the account with 2 not cut");
        let covered: usize = ranges.iter().map(|r| r.len()).sum();
        assert_eq!(covered, identities.len());
    }

    #[test]
    fn slices_leave_out_what_sends_nothing() {
        let mut identities: Vec<IdentityPlan> = (0..10).map(|n| account(&format!("u{n:02}"), 0)).collect();
        identities[3] = account("u03", 1);
        identities[7] = account("u07", 1);
        let withheld = BTreeSet::from([(identities[7].identity.clone(), Action::DisableAccount)]);
        let bounds = |ranges: Vec<Range<usize>>| ranges.into_iter().map(|r| (r.start, r.end)).collect::<Vec<_>>();
        let none = BTreeSet::new();
        let work = |identities, withheld| Work { identities, withheld };
        assert_eq!(bounds(slices(work(&identities, &none))), [(3, 10)]);
        assert_eq!(
            bounds(slices(work(&identities, &withheld))),
            [(3, 10)],
            "what follows the last sendable is harmless"
        );
        assert!(slices(work(&identities[..3], &none)).is_empty(), "a converged pass sends nothing");
    }
}
