//! Each manifest's status after a pass, in the Kubernetes/Flux style: `Ready`, `Reconciling` and
//! `Stalled`, with one reason and a message a person can act on.
//!
//! The reason is the most pressing of the manifest's accounts, in this order: Invalid (the
//! manifest itself), Ambiguous, NotFound, Denied, Conflict (another manifest's safer state
//! overrules this one), NeedsApproval, Failed permanently (Stalled: someone must act); ProviderUnavailable, Failed transiently (Reconciling: remedy retries);
//! AwaitingConfirmation (Reconciling: an accepted write not visible yet, re-read); Blocked (Stalled: e.g. password never expires); then Ready (Succeeded, Suspended, Released).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use remedy_policies::manifest::Generation;
use remedy_policies::plan::{Approval, Disposition, IdentityPlan, IdentityStatus};
use remedy_policies::{Action, Identity, ManifestName, Provider};

use remedy_policies::admission::Admission;
use remedy_policies::contest::Standing;

use super::decide::{names_of, provider_error};
use super::reconcile::PassResult;
use super::store_call::blocking;
use crate::execute::Outcome;
use crate::model::{
    ConditionReason, ConditionStatus, ConditionType, IdentityState, ManifestStatus, ProviderHealth, ProviderState,
};
use crate::store::{Store, StoreError};

/// The generation each stored status is about, as this process last wrote it.
pub type Written = BTreeMap<ManifestName, Option<Generation>>;

/// Before a pass: a manifest without a status, or with one about another generation, says it is
/// being reconciled (`Reconciling`, `Ready` unknown), so that a status never shows an old
/// generation's verdict as the new one's, nor is missing, while a long pass runs. A manifest whose
/// generation `written` already shows needs no mark, and the store is not read to tell (a status
/// read per manifest per pass, 10,000 of them at scale).
pub async fn mark_progressing(
    store: &Store,
    admission: &Admission,
    written: &Written,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let current: Vec<(ManifestName, Generation)> = admission
        .in_force()
        .iter()
        .filter(|(name, _)| !admission.invalid().contains_key(*name))
        .filter(|(name, m)| written.get(*name) != Some(&Some(m.generation.clone())))
        .map(|(name, m)| (name.clone(), m.generation.clone()))
        .collect();
    if current.is_empty() {
        return Ok(());
    }
    blocking(store, move |store| {
        let mut progressing = Vec::new();
        for (name, generation) in current {
            let previous = store.get_status(&name)?;
            if previous.as_ref().is_some_and(|s| s.observed_generation.as_ref() == Some(&generation)) {
                continue;
            }
            let mut status = previous.unwrap_or_else(|| ManifestStatus::new(name.clone()));
            let message = format!("generation {generation} is being reconciled");
            let reason = ConditionReason::Progressing;
            status.set_condition(ConditionType::Ready, ConditionStatus::Unknown, reason, &message, now);
            status.set_condition(ConditionType::Reconciling, ConditionStatus::True, reason, &message, now);
            status.set_condition(ConditionType::Stalled, ConditionStatus::False, reason, "", now);
            status.held_plan_id = None;
            progressing.push(status);
        }
        // In chunks, not one write per manifest (with several instances each write is a round
        // trip to etcd); the other stored statuses are left as they are.
        store.put_statuses(&progressing).map(drop)
    })
    .await
}

/// After a pass: every manifest's status (in force, rejected, or departed and not yet forgotten)
/// is written; a status nobody writes any more goes. Returns the generations written.
pub async fn write_after_pass(
    store: &Store,
    scope: Scope<'_>,
    pass: &PassResult,
    configured: impl Fn(Provider) -> bool,
    retry_at: impl Fn(&Identity) -> Option<DateTime<Utc>>,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Written, StoreError> {
    let Scope { admission, focus, contested } = scope;
    let mut names: BTreeSet<&ManifestName> = match focus {
        // A targeted pass speaks only of the manifests it planned.
        Some(focus) => focus.iter().filter(|name| admission.in_force().contains_key(*name)).collect(),
        None => admission.in_force().keys().collect(),
    };
    if focus.is_none() {
        names.extend(admission.invalid().keys());
        names.extend(pass.departed.iter().map(|d| &d.name));
    }
    let identities_of = pass.identities_by_manifest();
    let mut statuses = Vec::with_capacity(names.len());
    for name in names.into_iter().filter(|name| !pass.forgotten.contains(name)) {
        let in_force = admission.in_force().get(name);
        let subject = Subject {
            name,
            generation: in_force.map(|m| &m.generation).or_else(|| pass.generations.get(name)),
            invalid: admission.invalid().get(name).map(Vec::as_slice),
            identities: identities_of.get(name).map_or(&[], Vec::as_slice),
            released: match in_force {
                Some(manifest) => manifest.is_expired(started),
                None => pass.departed.iter().any(|gone| gone.name == *name),
            },
        };
        let mut status = status_of(subject, pass, &configured, &retry_at, now);
        mark_contested(&mut status, identities_of.get(name).map_or(&[], Vec::as_slice), contested, now);
        // The time the pass observed from: a reconcile asked for during a pass is answered by the
        // next one (what `remedy reconcile --wait` waits for), not by this one.
        status.last_reconcile_time = Some(started);
        statuses.push(status);
    }
    let written = statuses.iter().map(|s| (s.name.clone(), s.observed_generation.clone())).collect();
    let whole_set = focus.is_none();
    blocking(store, move |store| {
        let others = store.put_statuses(&statuses)?;
        if !whole_set {
            // A targeted pass wrote its manifests' statuses: the others are not stale.
            return Ok(());
        }
        // A status nobody writes any more (a manifest that never loaded, then was deleted) goes:
        // what is not in force, not rejected and not remembered for a release has no status.
        for stale in others {
            if store.known_manifest(&stale)?.is_none() {
                store.remove_status(&stale)?;
            }
        }
        Ok(())
    })
    .await?;
    Ok(written)
}

/// What a status write covers: the manifests admitted, a targeted pass's manifests (`None`: all),
/// and the accounts in a fight now.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub admission: &'a Admission,
    pub focus: Option<&'a BTreeSet<ManifestName>>,
    pub contested: &'a BTreeMap<Identity, Standing>,
}

/// The `Contested` condition, while an account of the manifest is in a fight.
fn mark_contested(
    status: &mut ManifestStatus,
    identities: &[&IdentityPlan],
    contested: &BTreeMap<Identity, Standing>,
    now: DateTime<Utc>,
) {
    let fights: Vec<String> = identities
        .iter()
        .filter_map(|identity| {
            let standing = contested.get(&identity.identity)?;
            let since =
                standing.contested_since.map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
            let next = standing
                .next_allowed
                .map(|t| format!("; the next correction waits until {}", t.format("%Y-%m-%dT%H:%M:%SZ")))
                .unwrap_or_default();
            Some(format!(
                "{} was changed back and corrected {} times since {since}{next}",
                identity.identity, standing.recent
            ))
        })
        .collect();
    if !fights.is_empty() {
        let message = format!(
            "{}: someone or something (a sync, an HR system, a helpdesk script) keeps undoing the declared state; \
             remedy keeps it, spacing its corrections",
            fights.join("; ")
        );
        status.set_condition(
            ConditionType::Contested,
            ConditionStatus::True,
            ConditionReason::RepeatedDrift,
            message,
            now,
        );
    }
}

/// The manifest a status is made for.
pub struct Subject<'a> {
    pub name: &'a ManifestName,
    /// The generation in force (for a rejected manifest: the last valid one, if any).
    pub generation: Option<&'a Generation>,
    /// Its diagnostics, when the latest load rejected it.
    pub invalid: Option<&'a [String]>,
    /// Its accounts in the pass's plan ([`PassResult::identities_by_manifest`]).
    pub identities: &'a [&'a IdentityPlan],
    /// It asks for nothing any more (expired, or deleted): once nothing stands in the way, its
    /// status is `Released` in the pass that released it, whatever other manifests still hold.
    pub released: bool,
}

/// The status of a manifest after `pass`.
pub fn status_of(
    subject: Subject<'_>,
    pass: &PassResult,
    configured: &impl Fn(Provider) -> bool,
    retry_at: &impl Fn(&Identity) -> Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> ManifestStatus {
    let Subject { name, generation, invalid, identities, released } = subject;
    let mut status = ManifestStatus::new(name.clone());
    status.observed_generation = generation.cloned();
    status.last_reconcile_time = Some(now);

    let mut findings: Vec<Finding> = Vec::new();
    if let Some(diagnostics) = invalid {
        let kept = match generation {
            Some(g) => format!("; its last valid version (generation {g}) is still enforced"),
            None => String::new(),
        };
        findings.push(Finding::stalled(ConditionReason::Invalid, format!("{}{kept}", diagnostics.join("; "))));
    }
    for identity in identities {
        let state = identity_state(identity, pass);
        findings.extend(identity_findings(identity, pass, retry_at));
        status.identities.push(state);
    }
    for conflict in pass.plan.conflicts.iter().filter(|c| c.overruled.manifests.contains(name)) {
        findings.push(Finding::stalled(
            ConditionReason::Conflict,
            format!("{}: {}", conflict.identity, conflict.describe()),
        ));
    }
    if let Approval::Required { plan_id, changes, limit } = &pass.plan.approval {
        let is_held = |a: &remedy_policies::plan::PlannedAction| matches!(a.disposition, Disposition::Held { .. });
        // Held actions, whatever else the account's status says (a provider down outranks Held).
        let what: Vec<String> = identities
            .iter()
            .flat_map(|i| i.actions.iter().filter(|a| is_held(a)).map(move |a| format!("{} {}", a.action, i.identity)))
            .collect();
        if !what.is_empty() {
            status.held_plan_id = Some(plan_id.clone());
            findings.push(Finding::stalled(
                ConditionReason::NeedsApproval,
                format!(
                    "plan {plan_id} would make {changes} changes, more than maxChangesPerReconcile ({limit}); nothing \
                     was applied. This manifest's share: {}. Approve with `remedy approve {plan_id}`",
                    what.join(", ")
                ),
            ));
        }
    }
    findings.sort_by_key(|f| f.rank);
    match findings.first() {
        Some(first) if first.stalled => {
            status.set_condition(ConditionType::Ready, ConditionStatus::False, first.reason, &first.message, now);
            status.set_condition(ConditionType::Stalled, ConditionStatus::True, first.reason, &first.message, now);
            status.set_condition(ConditionType::Reconciling, ConditionStatus::False, first.reason, "", now);
        }
        Some(first) => {
            status.set_condition(ConditionType::Ready, ConditionStatus::False, first.reason, &first.message, now);
            status.set_condition(ConditionType::Reconciling, ConditionStatus::True, first.reason, &first.message, now);
            status.set_condition(ConditionType::Stalled, ConditionStatus::False, first.reason, "", now);
        }
        None => {
            let (reason, message) = ready_reason(identities, released);
            status.set_condition(ConditionType::Ready, ConditionStatus::True, reason, message, now);
            status.set_condition(ConditionType::Reconciling, ConditionStatus::False, reason, "", now);
            status.set_condition(ConditionType::Stalled, ConditionStatus::False, reason, "", now);
        }
    }
    status.providers = provider_states(identities, pass, configured);
    status
}

struct Finding {
    rank: u8,
    stalled: bool,
    reason: ConditionReason,
    message: String,
}

impl Finding {
    fn stalled(reason: ConditionReason, message: String) -> Finding {
        Finding { rank: rank(reason), stalled: true, reason, message }
    }

    fn progressing(reason: ConditionReason, message: String) -> Finding {
        Finding { rank: rank(reason), stalled: false, reason, message }
    }
}

fn rank(reason: ConditionReason) -> u8 {
    match reason {
        ConditionReason::Invalid => 0,
        ConditionReason::Ambiguous => 1,
        ConditionReason::NotFound => 2,
        ConditionReason::Denied => 3,
        ConditionReason::Conflict => 4,
        ConditionReason::NeedsApproval => 5,
        ConditionReason::Failed => 6,
        ConditionReason::ProviderUnavailable => 7,
        ConditionReason::AwaitingConfirmation => 8,
        ConditionReason::Progressing => 9,
        ConditionReason::Blocked => 10,
        _ => 11,
    }
}

fn identity_findings(
    identity: &IdentityPlan,
    pass: &PassResult,
    retry_at: &impl Fn(&Identity) -> Option<DateTime<Utc>>,
) -> Vec<Finding> {
    let who = &identity.identity;
    let retry = || match retry_at(who) {
        Some(at) => format!("; retrying at {}", at.to_rfc3339()),
        None => String::new(),
    };
    let mut findings = Vec::new();
    match identity.status {
        IdentityStatus::Ambiguous => findings.push(Finding::stalled(
            ConditionReason::Ambiguous,
            format!("{who} names more than one account: {}", identity.notes.join("; ")),
        )),
        IdentityStatus::NotFound => findings.push(Finding::stalled(
            ConditionReason::NotFound,
            format!("{who}: {}", non_empty(&identity.notes, "no such account")),
        )),
        IdentityStatus::Denied => {
            let denied: Vec<String> = identity
                .actions
                .iter()
                .filter_map(|a| match &a.disposition {
                    remedy_policies::plan::Disposition::Denied { detail, .. } => {
                        Some(format!("{}: {detail}", a.action))
                    }
                    _ => None,
                })
                .collect();
            findings.push(Finding::stalled(ConditionReason::Denied, format!("{who}: {}", denied.join("; "))));
        }
        IdentityStatus::ProviderUnavailable => {
            let errors: BTreeSet<String> = [Provider::ActiveDirectory, Provider::EntraId]
                .into_iter()
                .filter_map(|p| provider_error(&pass.observed, who, p).map(|e| format!("{p}: {e}")))
                .collect();
            let errors: Vec<String> = errors.into_iter().collect();
            findings.push(Finding::progressing(
                ConditionReason::ProviderUnavailable,
                format!("{who}: {}{}", non_empty(&errors, "a provider could not be asked"), retry()),
            ));
        }
        _ => {}
    }
    if names_of(identity).iter().any(|name| pass.deferred.contains(name)) {
        findings.push(Finding::progressing(
            ConditionReason::ProviderUnavailable,
            format!("{who}: an action interrupted by a restart cannot be checked yet{}", retry()),
        ));
    }
    for ((awaiting_who, action), until) in &pass.awaiting {
        if names_of(identity).contains(awaiting_who) {
            findings.push(Finding::progressing(
                ConditionReason::AwaitingConfirmation,
                format!(
                    "{action} {who} was accepted by the directory and is awaiting confirmation: not visible in its reads yet, re-read until {} and never sent again meanwhile",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            ));
        }
    }
    for ((parked_who, action), error) in &pass.parked {
        if parked_who == who {
            findings.push(Finding::stalled(
                ConditionReason::Failed,
                format!("{action} {who} failed and is not retried until the manifest changes or a reconcile is requested: {error}"),
            ));
        }
    }
    for report in pass.sent_to(who).iter().filter(|r| r.outcome == Outcome::Failed) {
        let error = report.error.as_deref().unwrap_or("");
        let finding = match pass.verdicts.get(who) {
            Some(verdict) if verdict.parks(report.action) => Finding::stalled(
                ConditionReason::Failed,
                format!("{} {who} failed (not retried until the manifest changes): {error}", report.action),
            ),
            _ => Finding::progressing(
                ConditionReason::Failed,
                format!("{} {who} failed: {error}{}", report.action, retry()),
            ),
        };
        findings.push(finding);
    }
    if !identity.blocked.is_empty() {
        let blocked: Vec<String> = identity.blocked.iter().map(|b| format!("{}: {}", b.action, b.message)).collect();
        findings.push(Finding::stalled(ConditionReason::Blocked, format!("{who}: {}", blocked.join("; "))));
    }
    findings
}

fn non_empty(notes: &[String], otherwise: &str) -> String {
    if notes.is_empty() {
        otherwise.to_owned()
    } else {
        notes.join("; ")
    }
}

/// The account's state after the pass: the plan's word, with `Pending` turned into `Converged`
/// when every allowed action was sent and confirmed.
fn identity_state(identity: &IdentityPlan, pass: &PassResult) -> IdentityState {
    let mut status = identity.status;
    let mut notes = identity.notes.clone();
    let sent = pass.sent_to(&identity.identity);
    if status == IdentityStatus::Pending {
        let allowed: BTreeSet<Action> = identity
            .actions
            .iter()
            .filter(|a| a.disposition == remedy_policies::plan::Disposition::Allowed)
            .map(|a| a.action)
            .collect();
        let done: BTreeSet<Action> =
            sent.iter().filter(|r| r.outcome == Outcome::Succeeded).map(|r| r.action).collect();
        if allowed.is_subset(&done) {
            status = if identity.blocked.is_empty() { IdentityStatus::Converged } else { IdentityStatus::Blocked };
        }
    }
    for report in sent {
        match report.outcome {
            Outcome::Succeeded => notes.push(match &report.domain_controller {
                Some(dc) => format!("{}: {} → {} (on {dc})", report.action, report.before, report.after),
                None => format!("{}: {} → {}", report.action, report.before, report.after),
            }),
            Outcome::Failed | Outcome::Skipped => {
                notes.push(format!("{} failed: {}", report.action, report.error.as_deref().unwrap_or("")))
            }
            Outcome::AwaitingConfirmation => notes.push(format!(
                "{} sent and awaiting confirmation: {}",
                report.action,
                report.error.as_deref().unwrap_or("")
            )),
        }
    }
    IdentityState { identity: identity.identity.clone(), resolved: identity.resolved.clone(), status, notes }
}

fn ready_reason(identities: &[&IdentityPlan], released: bool) -> (ConditionReason, String) {
    let count = identities.len();
    if released || (count > 0 && identities.iter().all(|i| i.status == IdentityStatus::Released)) {
        (ConditionReason::Released, "released: nothing left to restore".to_owned())
    } else if count > 0 && identities.iter().all(|i| i.status == IdentityStatus::Suspended) {
        (ConditionReason::Suspended, "spec.suspend is set: remedy leaves the accounts alone".to_owned())
    } else {
        (ConditionReason::Succeeded, format!("{count} account(s) as declared"))
    }
}

fn provider_states(
    identities: &[&IdentityPlan],
    pass: &PassResult,
    configured: impl Fn(Provider) -> bool,
) -> Vec<ProviderState> {
    let mut states = BTreeMap::new();
    for provider in [Provider::ActiveDirectory, Provider::EntraId] {
        if !configured(provider) {
            states.insert(provider, ProviderState { provider, health: ProviderHealth::NotConfigured, message: None });
            continue;
        }
        let error = identities.iter().find_map(|i| provider_error(&pass.observed, &i.identity, provider));
        let health = if error.is_some() { ProviderHealth::Unavailable } else { ProviderHealth::Available };
        states.insert(provider, ProviderState { provider, health, message: error });
    }
    states.into_values().collect()
}
