//! Settling intents left unsettled by a crash, against what the directories show now (the
//! recovery protocol of `store::journal`): never by sending the action again.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use remedy_policies::observed::{AdAccount, EntraUser, ObservedState, ProviderView};
use remedy_policies::{Action, Identity, Provider};

use crate::model::{ActionOutcome, ActionRecord, Intent, IntentId};

/// How much earlier than the intent Graph's `signInSessionsValidFrom` may read and still count as
/// remedy's revocation (the two clocks differ a little).
const CLOCK_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// What recovery decided.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Intents to settle now, with their records.
    pub settlements: Vec<(IntentId, DateTime<Utc>, ActionRecord)>,
    /// Accounts whose provider could not be asked: their intents stay unsettled, and nothing is
    /// sent to them until they are settled.
    pub deferred: BTreeSet<Identity>,
    /// Actions the directory accepted and does not show yet, within their confirmation deadline
    /// (the value): their intents stay unsettled, the action is not sent again, and the account
    /// is read again after the error policy's backoff.
    pub awaiting: BTreeMap<(Identity, Action), DateTime<Utc>>,
    /// Actions the directory accepted and still did not show at their deadline: settled as
    /// failed now, and parked (with this error) rather than sent again.
    pub not_effective: Vec<(Identity, Action, String)>,
}

/// Decides each unsettled intent from `observed`, which must have been observed after the crash
/// (at `observed_at`).
pub fn recheck(
    intents: &[Intent],
    observed: &ObservedState,
    observed_at: DateTime<Utc>,
    acting_account: impl Fn(Provider) -> Option<String>,
) -> Recovery {
    let mut recovery = Recovery::default();
    for intent in intents {
        let change = &intent.change;
        let observation = observed.get(&change.identity);
        let verdict = match change.provider {
            Provider::ActiveDirectory => {
                judge(observation.map(|o| &o.active_directory), |account| ad_effect_holds(change.action, account))
            }
            Provider::EntraId => {
                judge(observation.map(|o| &o.entra_id), |user| entra_effect_holds(change.action, user, change.at))
            }
        };
        let (outcome, before, after, error, note) = match (verdict, change.awaiting_until) {
            // Sent, accepted, not visible yet: confirmed when it shows, not effective once its
            // deadline has passed without it showing, awaited until then.
            (Judgement::Holds(after), Some(_)) => (
                ActionOutcome::confirmed(&change.cause),
                change.before.clone(),
                after,
                None,
                Some(format!(
                    "accepted by the directory at {}; its effect shows when read again: confirmed",
                    change.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )),
            ),
            (Judgement::DoesNotHold(_), Some(until)) if observed_at < until => {
                tracing::debug!(intent = %intent.id, identity = %change.identity, action = %change.action, %until, "still awaiting confirmation");
                recovery.awaiting.insert((change.identity.clone(), change.action), until);
                continue;
            }
            (Judgement::DoesNotHold(now), Some(until)) => {
                let error = format!(
                    "{} on {} was accepted by the directory at {} but is not effective: {} still reads {now} at the confirmation deadline {} ({})",
                    change.action,
                    change.identity,
                    change.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    change.action.attribute(),
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    change.unconfirmed.as_deref().unwrap_or("not visible when read back"),
                );
                tracing::warn!(intent = %intent.id, identity = %change.identity, action = %change.action, %until, "not effective by the confirmation deadline");
                recovery.not_effective.push((change.identity.clone(), change.action, error.clone()));
                (ActionOutcome::Failed, change.before.clone(), now, Some(error), None)
            }
            (verdict, _) => match verdict {
                Judgement::Unknown(why) => {
                    tracing::warn!(intent = %intent.id, identity = %change.identity, action = %change.action, %why, "an unconfirmed action cannot be checked yet");
                    recovery.deferred.insert(change.identity.clone());
                    continue;
                }
                Judgement::Holds(after) => (
                    ActionOutcome::confirmed(&change.cause),
                    change.before.clone(),
                    after,
                    Some(format!("{}; the directory shows its effect: confirmed when read again", interrupted(change))),
                    None,
                ),
                // Nothing changed: the record shows the value as it is, before and after, and says why.
                Judgement::DoesNotHold(now) => (
                    ActionOutcome::NotApplied,
                    now.clone(),
                    now,
                    None,
                    Some(format!(
                        "{}; the directory does not show its effect: not applied, and planned again from what it shows",
                        interrupted(change)
                    )),
                ),
                Judgement::Gone(why) => (
                    ActionOutcome::Failed,
                    change.before.clone(),
                    change.before.clone(),
                    Some(format!("{}; {why}", interrupted(change))),
                    None,
                ),
            },
        };
        tracing::info!(intent = %intent.id, identity = %change.identity, action = %change.action, ?outcome, "settled an interrupted action from what the directory shows");
        let record = ActionRecord {
            intent: Some(intent.id),
            acting_account: acting_account(change.provider),
            domain_controller: None,
            before,
            note,
            ..change.settled(outcome, after, error)
        };
        // Dated when the directory was read again: that is when the outcome became known.
        recovery.settlements.push((intent.id, observed_at, record));
    }
    recovery
}

/// What happened to the action before it was re-checked.
fn interrupted(change: &crate::model::IntendedChange) -> String {
    match &change.unconfirmed {
        Some(error) => format!("sent and not confirmed ({error})"),
        None => "interrupted by a restart before it was confirmed".to_owned(),
    }
}

enum Judgement {
    /// The effect shows; the value as observed.
    Holds(String),
    /// It does not; the value as observed.
    DoesNotHold(String),
    /// The account is gone or ambiguous now: the action cannot be confirmed and will not be.
    Gone(String),
    /// The provider could not be asked.
    Unknown(String),
}

fn judge<T>(view: Option<&ProviderView<T>>, holds: impl Fn(&T) -> (bool, String)) -> Judgement {
    match view {
        Some(ProviderView::Found(account)) => match holds(account) {
            (true, value) => Judgement::Holds(value),
            (false, value) => Judgement::DoesNotHold(value),
        },
        Some(ProviderView::NotFound) => Judgement::Gone("the account no longer exists".to_owned()),
        Some(ProviderView::Ambiguous { .. }) => Judgement::Gone("the identity names several accounts now".to_owned()),
        Some(ProviderView::NotConfigured) => Judgement::Gone("the provider is no longer configured".to_owned()),
        Some(ProviderView::Unavailable { error }) => Judgement::Unknown(error.clone()),
        None => Judgement::Unknown("the account was not observed".to_owned()),
    }
}

/// Whether the account shows `action`'s effect, and the attribute as observed.
fn ad_effect_holds(action: Action, account: &AdAccount) -> (bool, String) {
    (action.shows_on_ad(account), action.value_on_ad(account))
}

/// As [`ad_effect_holds`]; a revocation counts from the intent's time, less the clock skew.
fn entra_effect_holds(action: Action, user: &EntraUser, intended_at: DateTime<Utc>) -> (bool, String) {
    (action.shows_on_entra(user, intended_at - CLOCK_SKEW), action.value_on_entra(user))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use remedy_policies::observed::{Observation, RiskState};
    use remedy_policies::plan::Cause;

    use super::*;
    use crate::model::{IntendedChange, IntentId};

    fn sent_at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0).unwrap()
    }

    fn alice() -> Identity {
        Identity::user_principal_name("alice@remedy.test").unwrap()
    }

    /// A suspension Graph accepted at `sent_at` and the reads did not show, awaited 5 minutes.
    fn awaiting_suspension() -> Intent {
        let change = IntendedChange {
            at: sent_at(),
            identity: alice(),
            resolved: Default::default(),
            provider: Provider::EntraId,
            action: Action::SuspendUser,
            manifests: Vec::new(),
            before: "true".into(),
            after: "false".into(),
            cause: Cause::Desired,
            reason: "INC-1".into(),
            unconfirmed: Some("accountEnabled reads back true, expected false".into()),
            awaiting_until: Some(sent_at() + chrono::Duration::minutes(5)),
        };
        Intent { id: IntentId(7), change }
    }

    fn observed(enabled: bool) -> ObservedState {
        let user = EntraUser {
            id: "a1".into(),
            user_principal_name: "alice@remedy.test".into(),
            account_enabled: enabled,
            on_premises_sync_enabled: false,
            sign_in_sessions_valid_from: None,
            last_password_change: None,
            risk_state: RiskState::None,
            risk_last_updated: None,
            guest: false,
        };
        let observation =
            Observation { active_directory: ProviderView::NotConfigured, entra_id: ProviderView::Found(user) };
        ObservedState { accounts: [(alice(), observation)].into(), privileged_groups: None }
    }

    fn acting(_: Provider) -> Option<String> {
        Some("application x".into())
    }

    #[test]
    fn an_awaited_write_that_shows_is_confirmed() {
        let recovery =
            recheck(&[awaiting_suspension()], &observed(false), sent_at() + chrono::Duration::seconds(9), acting);
        assert!(recovery.awaiting.is_empty() && recovery.not_effective.is_empty());
        let (intent, _, record) = &recovery.settlements[0];
        assert_eq!(*intent, IntentId(7));
        assert_eq!(record.outcome, ActionOutcome::Succeeded);
        assert_eq!(record.after, "false");
        assert_eq!(record.error, None);
        assert!(record.note.as_deref().unwrap().contains("confirmed"), "{record:?}");
    }

    #[test]
    fn an_awaited_write_not_shown_before_its_deadline_is_awaited_still_and_not_settled() {
        let recovery =
            recheck(&[awaiting_suspension()], &observed(true), sent_at() + chrono::Duration::minutes(4), acting);
        assert!(recovery.settlements.is_empty());
        assert_eq!(
            recovery.awaiting,
            BTreeMap::from([((alice(), Action::SuspendUser), sent_at() + chrono::Duration::minutes(5))])
        );
        assert!(recovery.deferred.is_empty(), "the account's other actions are not held back");
    }

    #[test]
    fn an_awaited_write_not_shown_at_its_deadline_is_not_effective() {
        let recovery =
            recheck(&[awaiting_suspension()], &observed(true), sent_at() + chrono::Duration::minutes(5), acting);
        assert!(recovery.awaiting.is_empty());
        let (_, _, record) = &recovery.settlements[0];
        assert_eq!(record.outcome, ActionOutcome::Failed);
        let error = record.error.as_deref().unwrap();
        assert!(error.contains("accepted by the directory at 2026-12-05T10:00:00Z but is not effective"), "{error}");
        assert!(
            error.contains("accountEnabled still reads true at the confirmation deadline 2026-12-05T10:05:00Z"),
            "{error}"
        );
        assert_eq!(recovery.not_effective, [(alice(), Action::SuspendUser, error.to_owned())]);
    }

    #[test]
    fn an_interrupted_write_without_a_deadline_is_settled_as_before() {
        let mut intent = awaiting_suspension();
        intent.change.awaiting_until = None;
        let recovery = recheck(&[intent], &observed(true), sent_at() + chrono::Duration::seconds(9), acting);
        assert_eq!(recovery.settlements[0].2.outcome, ActionOutcome::NotApplied);
        assert!(recovery.awaiting.is_empty() && recovery.not_effective.is_empty());
    }
}
