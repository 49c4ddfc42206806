//! Carrying out a plan's allowed actions through the providers, and reporting what became of each.
//!
//! AD: identities are worked on concurrently (bounded); the actions of one identity run one after
//! the other in plan order, each against the account as the previous one left it, and the rest of
//! an identity's AD actions are skipped once one of them fails (clearing "password never expires"
//! failed → forcing the change would not take effect either).
//!
//! Entra ID: every allowed action of every identity goes to the provider's batched path at once
//! (20 per `$batch`, several in flight). An identity's Entra actions touch independent properties
//! (accountEnabled, sessions, risk), so none waits for another.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::stream::{FuturesUnordered, StreamExt};
use remedy_policies::observed::{AdAccount, ObservedState};
use remedy_policies::plan::{Disposition, IdentityPlan, PlannedAction, Resolved};
use remedy_policies::{Action, Identity, Provider};
use serde::Serialize;

use crate::ad::{AdDirectory, AdError};
use crate::entra::{EntraChange, EntraDirectory, EntraError};
use crate::ha::gate::{cut, SendGate};
use crate::model::{ActionOutcome, ActionRecord, ManifestRef};

/// What became of one action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Sent, and the read-back shows the intended effect.
    Succeeded,
    /// Not done; `error` says why and `transient` whether trying again later may help.
    Failed,
    /// Not sent because an earlier action of the same identity and provider failed.
    Skipped,
    /// Sent and accepted by the directory, whose reads do not show it yet (Entra ID is eventually
    /// consistent): confirmed, or found not effective, by a later pass.
    AwaitingConfirmation,
}

/// The report of one action attempt.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionReport {
    pub identity: Identity,
    pub action: Action,
    pub provider: Provider,
    pub planned: PlannedAction,
    pub outcome: Outcome,
    /// The attribute's value as read back after the action, when it succeeded (as
    /// [`Action::value_on_ad`] and [`Action::value_on_entra`] show it, like the plan's before/after).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_after: Option<String>,
    /// The AD account's `uSNChanged` as read back (a change notification at or below it is this
    /// write's own echo).
    #[serde(skip)]
    pub usn_after: Option<u64>,
    /// The DC an Active Directory action went to (its URL), when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain_controller: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub transient: bool,
    /// A failure before anything was sent (no connection to be had): the action certainly did
    /// not happen, so it needs no settling from what the directory shows.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub nothing_sent: bool,
    #[serde(with = "millis")]
    pub duration: Duration,
    pub at: DateTime<Utc>,
}

impl ActionReport {
    /// The history record of this attempt. No intent: the store sets it when it settles one.
    pub fn record(
        &self,
        resolved: Resolved,
        manifests: Vec<ManifestRef>,
        acting_account: Option<String>,
    ) -> ActionRecord {
        let outcome = match self.outcome {
            Outcome::Succeeded => ActionOutcome::confirmed(&self.planned.cause),
            Outcome::Failed => ActionOutcome::Failed,
            Outcome::Skipped => ActionOutcome::Skipped,
            Outcome::AwaitingConfirmation => ActionOutcome::AwaitingConfirmation,
        };
        ActionRecord {
            intent: None,
            manifests,
            reason: self.planned.reason.clone(),
            identity: self.identity.clone(),
            resolved,
            provider: self.provider,
            action: self.action,
            cause: self.planned.cause.clone(),
            before: self.planned.before.clone(),
            after: self.observed_after.clone().unwrap_or_else(|| self.planned.after.clone()),
            outcome,
            error: self.error.clone(),
            note: None,
            duration_ms: u64::try_from(self.duration.as_millis()).unwrap_or(u64::MAX),
            acting_account,
            domain_controller: self.domain_controller.clone(),
        }
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// Reads the wall clock: each report's `at` is the moment of its attempt, not the pass's start.
pub type Stamp<'a> = &'a (dyn Fn() -> DateTime<Utc> + Sync);

/// What is to be sent: the allowed actions of these accounts, less those withheld (an account
/// whose interrupted action is unchecked, an action parked after a permanent failure).
#[derive(Debug, Clone, Copy)]
pub struct Work<'a> {
    pub identities: &'a [IdentityPlan],
    pub withheld: &'a BTreeSet<(Identity, Action)>,
}

impl Work<'_> {
    /// The actions of `identity` this work sends: allowed, and not withheld.
    pub fn sending<'p>(&'p self, identity: &'p IdentityPlan) -> impl Iterator<Item = &'p PlannedAction> + 'p {
        identity.actions.iter().filter(move |action| self.sends_action(identity, action))
    }

    fn sends_action(&self, identity: &IdentityPlan, action: &PlannedAction) -> bool {
        action.disposition == Disposition::Allowed
            && !self.withheld.contains(&(identity.identity.clone(), action.action))
    }

    fn sends(&self, identity: &IdentityPlan, action: &PlannedAction, provider: Provider) -> bool {
        action.provider == provider && self.sends_action(identity, action)
    }
}

/// Applies the actions `work` names. `observed` must be the state the plan was made from; `now` is
/// the plan's time (what the actions are judged against), `stamp` dates each attempt.
///
/// `gate` is asked before every send (several instances: only the leader sends, and never with
/// less lease left than the send may take); a send it refuses is reported failed, transient and
/// not sent, and one that outlasts the gate's cut is reported failed and transient (it may have
/// arrived).
#[allow(clippy::too_many_arguments)]
pub async fn execute<A, E>(
    work: Work<'_>,
    observed: &ObservedState,
    ad: Option<&A>,
    entra: Option<&E>,
    concurrency: usize,
    gate: &SendGate,
    now: DateTime<Utc>,
    stamp: Stamp<'_>,
) -> Vec<ActionReport>
where
    A: AdDirectory + Sync,
    E: EntraDirectory + Sync,
{
    let accounts: Vec<&IdentityPlan> = work
        .identities
        .iter()
        .filter(|identity| identity.actions.iter().any(|a| work.sends(identity, a, Provider::ActiveDirectory)))
        .collect();
    // At most `concurrency` accounts in flight, and only their futures made: one future is about
    // 10 KB, and making all of them first held 100 MB at 10,000 accounts. A loop, not a stream
    // with a closure, which would make this future !Send for higher-ranked lifetime reasons
    // (rust-lang/rust#102211).
    let mut waiting = accounts.into_iter();
    let mut running = FuturesUnordered::new();
    for identity in waiting.by_ref().take(concurrency.max(1)) {
        running.push(execute_identity(work, identity, observed, ad, gate, now, stamp));
    }
    let mut reports: Vec<ActionReport> = Vec::new();
    while let Some(done) = running.next().await {
        reports.extend(done);
        if let Some(identity) = waiting.next() {
            running.push(execute_identity(work, identity, observed, ad, gate, now, stamp));
        }
    }
    reports.extend(execute_entra(work, observed, entra, gate, now, stamp).await);
    reports.sort_by(|a, b| (&a.identity, a.action).cmp(&(&b.identity, b.action)));
    reports
}

async fn execute_entra<E: EntraDirectory + Sync>(
    work: Work<'_>,
    observed: &ObservedState,
    entra: Option<&E>,
    gate: &SendGate,
    now: DateTime<Utc>,
    stamp: Stamp<'_>,
) -> Vec<ActionReport> {
    let mut items = Vec::new();
    let mut owners = Vec::new();
    let mut reports = Vec::new();
    for identity in work.identities {
        let user = observed.get(&identity.identity).and_then(|o| o.entra_id.found());
        for planned in identity.actions.iter().filter(|a| work.sends(identity, a, Provider::EntraId)) {
            match (entra, user) {
                (Some(_), Some(user)) => {
                    items.push((user.clone(), planned.action));
                    owners.push((identity, planned));
                }
                (None, _) => {
                    reports.push(failed(identity, planned, "Entra ID is not configured".to_owned(), false, stamp()))
                }
                (Some(_), None) => reports.push(failed(
                    identity,
                    planned,
                    format!("{} was not observed in Entra ID", identity.identity),
                    false,
                    stamp(),
                )),
            }
        }
    }
    let Some(entra) = entra.filter(|_| !items.is_empty()) else {
        return reports;
    };
    let started = Instant::now();
    let attempted_at = stamp();
    // Under a gate's cut, sent a group at a time, each group asked for and cut on its own.
    let group = if gate.permit_is_open() { items.len() } else { ENTRA_GATED_GROUP };
    let mut results: Vec<Gated> = Vec::with_capacity(items.len());
    for chunk in items.chunks(group.max(1)) {
        match gate.permit() {
            Err(why) => results.extend(chunk.iter().map(|_| Gated::Refused(why.clone()))),
            Ok(limit) => match cut(limit, entra.apply_many(chunk, now)).await {
                Ok(done) => results.extend(done.into_iter().map(Gated::Sent)),
                Err(after) => results.extend(chunk.iter().map(|_| Gated::Cut(after))),
            },
        }
    }
    let duration = started.elapsed();
    for ((identity, planned), result) in owners.into_iter().zip(results) {
        let result = match result {
            Gated::Sent(result) => result,
            Gated::Refused(why) => {
                let mut report = failed(identity, planned, format!("not sent: {why}"), true, attempted_at);
                report.nothing_sent = true;
                reports.push(report);
                continue;
            }
            Gated::Cut(after) => {
                reports.push(failed(identity, planned, cut_message(after), true, attempted_at));
                continue;
            }
        };
        let mut report = match result {
            Ok(change) => ActionReport {
                identity: identity.identity.clone(),
                action: planned.action,
                provider: planned.provider,
                planned: planned.clone(),
                outcome: Outcome::Succeeded,
                observed_after: Some(planned.action.value_on_entra(&change.after)),
                usn_after: None,
                domain_controller: None,
                error: None,
                transient: false,
                nothing_sent: false,
                duration,
                at: attempted_at,
            },
            Err(error @ EntraError::NotVisibleYet { .. }) => ActionReport {
                outcome: Outcome::AwaitingConfirmation,
                ..failed(identity, planned, error.to_string(), false, attempted_at)
            },
            Err(error) => {
                tracing::warn!(identity = %identity.identity, action = %planned.action, error = %error, "action failed");
                failed(identity, planned, error.to_string(), error.is_transient(), attempted_at)
            }
        };
        report.duration = duration;
        reports.push(report);
    }
    reports
}

/// How many Graph actions are sent at a time under a gate's cut (a `$batch` request's worth).
const ENTRA_GATED_GROUP: usize = 20;

/// What became of an Entra action of a gated group.
enum Gated {
    Sent(Result<EntraChange, EntraError>),
    /// Not sent: the gate said why.
    Refused(String),
    /// Its group was cut after this long.
    Cut(Duration),
}

fn cut_message(after: Duration) -> String {
    format!(
        "no answer within the send timeout ({}s, several instances): it may have been applied; the next pass reads the account back before anything is sent again",
        after.as_secs_f64()
    )
}

fn failed(
    identity: &IdentityPlan,
    planned: &PlannedAction,
    error: String,
    transient: bool,
    at: DateTime<Utc>,
) -> ActionReport {
    ActionReport {
        identity: identity.identity.clone(),
        action: planned.action,
        provider: planned.provider,
        planned: planned.clone(),
        outcome: Outcome::Failed,
        observed_after: None,
        usn_after: None,
        domain_controller: None,
        error: Some(error),
        transient,
        nothing_sent: false,
        duration: Duration::ZERO,
        at,
    }
}

async fn execute_identity<D: AdDirectory + Sync>(
    work: Work<'_>,
    identity: &IdentityPlan,
    observed: &ObservedState,
    ad: Option<&D>,
    gate: &SendGate,
    now: DateTime<Utc>,
    stamp: Stamp<'_>,
) -> Vec<ActionReport> {
    let mut account: Option<AdAccount> =
        observed.get(&identity.identity).and_then(|o| o.active_directory.found()).cloned();
    let mut failed_provider: Vec<Provider> = Vec::new();
    let mut reports = Vec::new();
    for planned in identity.actions.iter().filter(|a| work.sends(identity, a, Provider::ActiveDirectory)) {
        let started = Instant::now();
        let attempted_at = stamp();
        let report = |outcome, observed_after, error: Option<String>, transient, nothing_sent| ActionReport {
            identity: identity.identity.clone(),
            action: planned.action,
            provider: planned.provider,
            planned: planned.clone(),
            outcome,
            observed_after,
            usn_after: None,
            domain_controller: None,
            error,
            transient,
            nothing_sent,
            duration: started.elapsed(),
            at: attempted_at,
        };
        if failed_provider.contains(&planned.provider) {
            reports.push(report(
                Outcome::Skipped,
                None,
                Some("an earlier action on this account failed".to_owned()),
                true,
                true,
            ));
            continue;
        }
        let limit = match gate.permit() {
            Ok(limit) => limit,
            Err(why) => {
                reports.push(report(Outcome::Failed, None, Some(format!("not sent: {why}")), true, true));
                failed_provider.push(planned.provider);
                continue;
            }
        };
        let result = match planned.provider {
            Provider::ActiveDirectory => match (ad, account.as_ref()) {
                (Some(ad), Some(current)) => match cut(limit, ad.apply(current, planned.action, now)).await {
                    Ok(Ok(change)) => {
                        let shown = planned.action.value_on_ad(&change.after);
                        account = Some(change.after);
                        Ok((shown, change.dc))
                    }
                    Ok(Err(error)) => Err(error),
                    Err(after) => {
                        reports.push(report(Outcome::Failed, None, Some(cut_message(after)), true, false));
                        failed_provider.push(planned.provider);
                        continue;
                    }
                },
                (None, _) => Err(AdError::Config("Active Directory is not configured".to_owned())),
                (Some(_), None) => {
                    Err(AdError::Config(format!("{} was not observed in Active Directory", identity.identity)))
                }
            },
            Provider::EntraId => {
                Err(AdError::Config("the Entra ID provider is not available in this build".to_owned()))
            }
        };
        match result {
            Ok((shown, dc)) => {
                let mut succeeded = report(Outcome::Succeeded, Some(shown), None, false, false);
                succeeded.domain_controller = Some(dc);
                succeeded.usn_after =
                    account.as_ref().and_then(|a| a.usn_changed).and_then(|usn| u64::try_from(usn).ok());
                reports.push(succeeded);
            }
            Err(error) => {
                tracing::warn!(identity = %identity.identity, action = %planned.action, error = %error, "action failed");
                failed_provider.push(planned.provider);
                reports.push(report(
                    Outcome::Failed,
                    None,
                    Some(error.to_string()),
                    error.is_transient(),
                    error.nothing_sent(),
                ));
            }
        }
    }
    reports
}
