//! One reconcile pass over the whole manifest set: observe (batched, both providers) → settle
//! interrupted intents → plan (guardrails and blast radius included) → journal → apply (read-back
//! verified) → settle and record → judge each account for the error policy.
//!
//! A pass always covers the whole set. The plan merges every manifest naming an account (also
//! under another of its names) and counts the blast radius over everything, so a pass over part of
//! the set could plan what the whole set would not; observation is batched, so a pass costs
//! O(accounts / page size) requests.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use remedy_policies::config::Guardrails;
use remedy_policies::manifest::{Generation, Target};
use remedy_policies::observed::{ObservedState, ProviderView};
use remedy_policies::plan::{
    plan, ActiveManifest, Cause, DepartedManifest, Disposition, IdentityPlan, IdentityStatus, Plan, PlanId, PlanInput,
    PlannedAction,
};
use remedy_policies::{Action, Identity, Manifest, ManifestName, Provider};

use super::clock::Clock;
use super::policy::{Verdict, WorkQueue};
use super::recovery;
use crate::execute::{execute, reports_of, ActionReport, Outcome};
use crate::model::{ActionOutcome, ActionRecord, Event, IntendedChange, ManifestRef};
use crate::providers::Providers;
use crate::store::{Store, StoreError, WRITE_CHUNK};

/// What a pass is given.
pub struct PassInput<'a> {
    /// The manifests in force: the valid ones, and the last valid version of those now invalid.
    pub manifests: &'a BTreeMap<ManifestName, Manifest>,
    /// Whether a manifest that left the set may be released: false while a rejected document
    /// cannot be attributed to a manifest (it may be the one that seems to be gone).
    pub may_release: bool,
    /// Names of manifests rejected in the latest load: never released, whatever the store knows.
    pub rejected_names: &'a BTreeSet<ManifestName>,
    pub commit: Option<&'a str>,
    pub guardrails: &'a Guardrails,
    pub approvals: &'a BTreeSet<PlanId>,
    /// When the pass started: what the plan judges against.
    pub now: DateTime<Utc>,
    /// The wall clock: records are dated when their attempt, read-back or decision happened.
    pub clock: &'a Clock,
}

/// What a pass did.
#[derive(Debug)]
pub struct PassResult {
    pub plan: Plan,
    pub observed: ObservedState,
    pub reports: Vec<ActionReport>,
    /// Each account's verdict for the error policy.
    pub verdicts: BTreeMap<Identity, Verdict>,
    /// Allowed actions not sent: parked after a permanent failure, with the error it had.
    pub parked: BTreeMap<(Identity, Action), String>,
    /// Accounts with interrupted actions that could not be checked: nothing was sent to them.
    pub deferred: BTreeSet<Identity>,
    /// Interrupted actions settled at the start of the pass.
    pub recovered: usize,
    pub departed: Vec<DepartedManifest>,
    /// Departed manifests fully released and forgotten in this pass.
    pub forgotten: Vec<ManifestName>,
    /// Each manifest's generation (departed ones: the last known).
    pub generations: BTreeMap<ManifestName, Generation>,
    /// Every action record this pass appended, by provider and outcome (for the metrics).
    pub recorded: Vec<(Provider, ActionOutcome)>,
}

impl PassResult {
    /// The planned accounts of each manifest, in one walk over the plan (a manifest's status is
    /// made from them; finding them by a scan per manifest was quadratic at 10,000 manifests).
    pub fn identities_by_manifest(&self) -> BTreeMap<&ManifestName, Vec<&IdentityPlan>> {
        let mut by_manifest: BTreeMap<&ManifestName, Vec<&IdentityPlan>> = BTreeMap::new();
        for identity in &self.plan.identities {
            for name in &identity.manifests {
                by_manifest.entry(name).or_default().push(identity);
            }
        }
        by_manifest
    }

    /// The reports about `identity`.
    pub fn reports_of(&self, identity: &Identity) -> &[ActionReport] {
        reports_of(&self.reports, identity)
    }
}

/// The pass's memory between passes: which not-sent outcomes were already recorded (a denied
/// action is recorded when it starts being denied, not at every resync), and the last error of
/// each parked action.
#[derive(Debug, Default)]
pub struct Memory {
    /// Also in the store (`Store::open_notices`), read at the first pass: a restart records
    /// nothing again either.
    recorded_unsent: BTreeSet<String>,
    recorded_unsent_loaded: bool,
    parked_errors: BTreeMap<(Identity, Action), String>,
}

pub async fn run_pass(
    input: &PassInput<'_>,
    store: &Store,
    providers: &mut Providers,
    queue: &mut WorkQueue,
    memory: &mut Memory,
) -> Result<PassResult, StoreError> {
    let now = input.now;
    if !memory.recorded_unsent_loaded {
        memory.recorded_unsent = blocking(store, |store| store.open_notices()).await?;
        memory.recorded_unsent_loaded = true;
    }
    let manifests: Vec<Manifest> = input.manifests.values().cloned().collect();
    let (active, departed, known, unsettled) = {
        let keep: BTreeSet<ManifestName> = input.manifests.keys().chain(input.rejected_names.iter()).cloned().collect();
        let may_release = input.may_release;
        blocking(store, move |store| {
            let since = store.remember_manifests(&manifests, now)?;
            let active: Vec<ActiveManifest> = manifests
                .into_iter()
                .zip(since)
                .map(|(manifest, effective_since)| ActiveManifest { manifest, effective_since })
                .collect();
            let departed = if may_release {
                store.departed_manifests(&keep, "deleted from the manifest directory")?
            } else {
                Vec::new()
            };
            let known: Vec<_> = departed
                .iter()
                .filter_map(|gone| store.known_manifest(&gone.name).transpose())
                .collect::<Result<_, _>>()?;
            Ok((active, departed, known, store.unsettled()?))
        })
        .await?
    };
    let mut generations: BTreeMap<ManifestName, Generation> =
        active.iter().map(|a| (a.manifest.name.clone(), a.manifest.generation.clone())).collect();
    generations.extend(known.into_iter().map(|k: crate::store::KnownManifest| (k.name, k.generation)));

    let mut targets: Vec<Target> = active
        .iter()
        .map(|a| a.manifest.spec.target.clone())
        .chain(departed.iter().map(|d| d.target.clone()))
        .collect();
    targets.extend(unsettled.iter().map(|intent| Target {
        identity: intent.change.identity.clone(),
        entra_object_id: intent.change.resolved.entra_id.as_deref().and_then(|id| id.parse().ok()),
    }));
    let risk_for: BTreeSet<Identity> = active
        .iter()
        .filter(|a| a.manifest.spec.entra_id.confirm_compromised)
        .map(|a| a.manifest.spec.target.identity.clone())
        .collect();
    // An interrupted confirmation is re-checked by reading the risk state, whatever the manifests
    // say now.
    let mut risk_for = risk_for;
    risk_for.extend(
        unsettled
            .iter()
            .filter(|intent| intent.change.action == Action::ConfirmCompromised)
            .map(|intent| intent.change.identity.clone()),
    );
    let observed = providers.observe(&targets, &risk_for).await;

    let observed_at = input.clock.now();
    let recovery = recovery::recheck(&unsettled, &observed, observed_at, |p| providers.acting_account(p));
    let recovered = recovery.settlements.len();
    let mut recorded: Vec<(Provider, ActionOutcome)> =
        recovery.settlements.iter().map(|(_, _, r)| (r.provider, r.outcome)).collect();
    blocking(store, move |store| store.settle_all(&recovery.settlements)).await?;
    let deferred = recovery.deferred;

    let remedy_changes = blocking(store, |store| store.all_recorded_changes()).await?;
    let plan = plan(&PlanInput {
        manifests: &active,
        departed: &departed,
        remedy_changes: &remedy_changes,
        observed: &observed,
        guardrails: input.guardrails,
        approvals: input.approvals,
        now,
    });

    // What is sent: the allowed actions, less those of accounts with an unchecked interrupted
    // action and those parked after a permanent failure.
    // The plan itself when nothing is held back (the usual case): a copy of a 10,000-account plan
    // is megabytes.
    let mut parked = BTreeMap::new();
    let mut still_planned = BTreeSet::new();
    let mut withheld = BTreeSet::new();
    for identity in &plan.identities {
        let names = names_of(identity);
        let held_back = names.iter().any(|name| deferred.contains(name));
        let fingerprint = fingerprint(identity, &generations);
        let declared = &identity.identity;
        for planned in identity.actions.iter().filter(|planned| planned.disposition == Disposition::Allowed) {
            let key = (declared.clone(), planned.action);
            still_planned.insert(key.clone());
            if held_back {
                withheld.insert(key);
            } else if queue.is_parked(declared, planned.action, &fingerprint) {
                let error = memory.parked_errors.get(&key).cloned().unwrap_or_default();
                parked.insert(key.clone(), error);
                withheld.insert(key);
            }
        }
    }
    let sendable: Cow<'_, Plan> = if withheld.is_empty() {
        Cow::Borrowed(&plan)
    } else {
        let mut sendable = plan.clone();
        for identity in &mut sendable.identities {
            let declared = identity.identity.clone();
            identity.actions.retain(|planned| {
                planned.disposition != Disposition::Allowed || !withheld.contains(&(declared.clone(), planned.action))
            });
        }
        Cow::Owned(sendable)
    };
    queue.retain_parked(&still_planned);
    memory.parked_errors.retain(|key, _| still_planned.contains(key));

    let refs =
        |provenance: &[ManifestName], cause: &Cause| manifest_refs(provenance, cause, &generations, input.commit);
    // The changes go to the store and are dropped once journaled: only their keys are kept.
    let (intended, changes): (Vec<(Identity, Action)>, Vec<IntendedChange>) = sendable
        .allowed_actions()
        .map(|(identity, planned)| {
            let change = IntendedChange::planned(
                &identity.identity,
                identity.resolved.clone(),
                planned,
                refs(&planned.provenance, &planned.cause),
                now,
            );
            ((identity.identity.clone(), planned.action), change)
        })
        .unzip();
    let ids = blocking(store, move |store| store.journal_intents(&changes)).await?;
    let mut intent_of: BTreeMap<(Identity, Action), _> = intended.into_iter().zip(ids.iter().copied()).collect();

    let stamp = || input.clock.now();
    let reports =
        execute(&sendable, &observed, providers.ad(), providers.entra(), providers.concurrency(), now, &stamp).await;

    let by_identity: BTreeMap<&Identity, &IdentityPlan> = plan.identities.iter().map(|i| (&i.identity, i)).collect();
    let mut settlements = Vec::new();
    let mut unconfirmed = Vec::new();
    for report in &reports {
        let Some(intent) = intent_of.remove(&(report.identity.clone(), report.action)) else {
            tracing::error!(identity = %report.identity, action = %report.action, "a report without an intent: not recorded");
            continue;
        };
        // A transient failure may have come after the directory applied the write (a timeout, a
        // broken connection, a read-back that failed): the intent stays journaled, and the next
        // pass settles it from what the directory shows, as after a crash. One that failed
        // before anything was sent is recorded as failed at once.
        if report.outcome == Outcome::Failed && report.transient && !report.nothing_sent {
            unconfirmed.push((intent, report.error.clone().unwrap_or_default()));
            continue;
        }
        let identity = by_identity.get(&report.identity);
        let resolved = identity.map(|i| i.resolved.clone()).unwrap_or_default();
        let mut record = report.record(
            resolved,
            refs(&report.planned.provenance, &report.planned.cause),
            providers.acting_account(report.provider),
        );
        if report.outcome == Outcome::Succeeded && report.planned.cause == Cause::DriftCorrection {
            record.note = Some(drift_note(report, &observed));
        }
        settlements.push((intent, report.at, record));
    }
    // Every journaled intent is settled in this pass; one the executor did not report on (it
    // cannot happen, but a record must never be lost) is settled as not attempted.
    for ((identity, action), intent) in intent_of {
        let planned = sendable
            .identities
            .iter()
            .filter(|i| i.identity == identity)
            .flat_map(|i| i.actions.iter())
            .find(|a| a.action == action);
        if let Some(planned) = planned {
            let mut record = failed_record(&identity, planned);
            record.manifests = refs(&planned.provenance, &planned.cause);
            settlements.push((intent, input.clock.now(), record));
        }
    }
    recorded.extend(settlements.iter().map(|(_, _, r)| (r.provider, r.outcome)));
    blocking(store, move |store| store.settle_all(&settlements)).await?;
    blocking(store, move |store| store.mark_unconfirmed(&unconfirmed)).await?;

    let (unsent, now_unsent) = unsent_records(&plan, &deferred, input.clock.now(), &refs, &memory.recorded_unsent);
    let unsent_outcomes: Vec<(Provider, ActionOutcome)> = unsent
        .iter()
        .filter_map(|(_, (_, event))| match event {
            Event::Action(record) => Some((record.provider, record.outcome)),
            _ => None,
        })
        .collect();
    // In chunks, each one transaction (see `store::WRITE_CHUNK`), and remembered only once
    // written: a pass that failed to write some writes those again, and only those.
    for (index, chunk) in unsent.chunks(WRITE_CHUNK).enumerate() {
        let events: Vec<(DateTime<Utc>, Event)> = chunk.iter().map(|(_, event)| event.clone()).collect();
        if let Err(error) = blocking(store, move |store| store.append_all(&events)).await {
            let unwritten: BTreeSet<&String> = unsent[index * WRITE_CHUNK..].iter().map(|(key, _)| key).collect();
            memory.recorded_unsent = now_unsent.into_iter().filter(|key| !unwritten.contains(key)).collect();
            return Err(error);
        }
    }
    if now_unsent != memory.recorded_unsent {
        let keys = now_unsent.clone();
        blocking(store, move |store| store.set_open_notices(&keys)).await?;
    }
    memory.recorded_unsent = now_unsent;
    recorded.extend(unsent_outcomes);

    let mut verdicts = BTreeMap::new();
    for identity in &plan.identities {
        let verdict = verdict_of(identity, &reports, &deferred, &generations);
        for report in reports_of(&reports, &identity.identity).iter().filter(|r| r.outcome == Outcome::Failed) {
            if !report.transient {
                memory
                    .parked_errors
                    .insert((report.identity.clone(), report.action), report.error.clone().unwrap_or_default());
            }
        }
        queue.settle(&identity.identity, verdict.clone(), now, fastrand::f64());
        verdicts.insert(identity.identity.clone(), verdict);
    }
    queue.retain_retries(&plan.identities.iter().map(|i| i.identity.clone()).collect());

    let forgettable = releasable(&departed, &plan, &reports, &deferred);
    let present: BTreeSet<ManifestName> = input.manifests.keys().cloned().collect();
    let forgotten = blocking(store, move |store| {
        let mut forgotten = Vec::new();
        for gone in &forgettable {
            if present.contains(&gone.name) {
                // A retargeted manifest: only its old target is done with.
                store.forget_retired(&gone.name, &gone.target)?;
                tracing::info!(manifest = %gone.name, target = %gone.target.identity, "old target released");
            } else {
                store.forget_manifest(&gone.name)?;
                store.remove_status(&gone.name)?;
                tracing::info!(manifest = %gone.name, "released and forgotten");
                forgotten.push(gone.name.clone());
            }
        }
        Ok(forgotten)
    })
    .await?;
    Ok(PassResult {
        plan,
        observed,
        reports,
        verdicts,
        parked,
        deferred,
        recovered,
        departed,
        forgotten,
        generations,
        recorded,
    })
}

/// Runs a store call off the async threads (sled flushes block).
async fn blocking<T: Send + 'static>(
    store: &Store,
    call: impl FnOnce(Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || call(store)).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

pub(super) fn names_of(identity: &IdentityPlan) -> Vec<Identity> {
    std::iter::once(identity.identity.clone()).chain(identity.also_declared_as.iter().cloned()).collect()
}

/// The manifests (with generations) an account's plan comes from: a parked failure stays parked
/// while this is the same.
fn fingerprint(identity: &IdentityPlan, generations: &BTreeMap<ManifestName, Generation>) -> String {
    identity
        .manifests
        .iter()
        .map(|name| format!("{name}@{}", generations.get(name).map_or("?", Generation::as_str)))
        .collect::<Vec<_>>()
        .join(",")
}

fn manifest_refs(
    provenance: &[ManifestName],
    cause: &Cause,
    generations: &BTreeMap<ManifestName, Generation>,
    commit: Option<&str>,
) -> Vec<ManifestRef> {
    let mut names: BTreeSet<&ManifestName> = provenance.iter().collect();
    if let Cause::Release { manifest } = cause {
        names.insert(manifest);
    }
    names
        .into_iter()
        .filter_map(|name| {
            generations.get(name).map(|generation| ManifestRef {
                name: name.clone(),
                generation: generation.clone(),
                commit: commit.map(str::to_owned),
            })
        })
        .collect()
}

/// What a drift correction found: the value someone else set, and when the account was last
/// changed where the directory tells (AD's whenChanged; Graph: a directory-sync revert).
fn drift_note(report: &ActionReport, observed: &ObservedState) -> String {
    let found = format!("found {} where remedy had left {}", report.planned.before, report.planned.after);
    let observation = observed.get(&report.identity);
    match report.provider {
        Provider::ActiveDirectory => match observation.and_then(|o| o.active_directory.found()) {
            Some(account) => match account.when_changed {
                Some(at) => format!(
                    "{found}; the account was last changed at {} (whenChanged; the DC does not record by whom — see \
                     its security log, event 4722 'account enabled')",
                    at.to_rfc3339()
                ),
                None => format!("{found}; the DC does not say when or by whom"),
            },
            None => found,
        },
        Provider::EntraId => match observation.and_then(|o| o.entra_id.found()) {
            Some(user) if user.on_premises_sync_enabled => format!(
                "{found}; {} is synced from on-premises AD, so directory sync may have re-enabled it (AD is the \
                 source of authority; see the Entra audit log for who changed it)",
                user.user_principal_name
            ),
            Some(_) => format!("{found}; see the Entra audit log for who changed it"),
            None => found,
        },
    }
}

fn failed_record(identity: &Identity, planned: &PlannedAction) -> ActionRecord {
    ActionRecord {
        intent: None,
        manifests: Vec::new(),
        reason: planned.reason.clone(),
        identity: identity.clone(),
        resolved: Default::default(),
        provider: planned.provider,
        action: planned.action,
        cause: planned.cause.clone(),
        before: planned.before.clone(),
        after: planned.before.clone(),
        outcome: ActionOutcome::Failed,
        error: Some("not attempted".to_owned()),
        note: None,
        duration_ms: 0,
        acting_account: None,
    }
}

/// A history event with the key [`Memory`] remembers it by.
type KeyedEvent = (String, (DateTime<Utc>, Event));

/// The key a not-sent record is remembered by: the account, then a digest of what makes it a
/// different notice (action, outcome, guardrail verdict or block message), so that the set kept in
/// the store stays small.
fn notice_key(identity: &Identity, what: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{identity}\0{}", &hex::encode(Sha256::digest(what.as_bytes()))[..16])
}

/// Records of planned actions that were not sent (denied, held) and of blocked items, each once
/// while it lasts: a resync that finds the same denial records nothing new. Each new record comes
/// with its key; the set is every key of this plan, new or recorded before, and the keys of
/// accounts this pass could not observe (a provider down, an interrupted action unchecked): what
/// was not looked at has not ended.
fn unsent_records(
    plan: &Plan,
    deferred: &BTreeSet<Identity>,
    decided_at: DateTime<Utc>,
    refs: &impl Fn(&[ManifestName], &Cause) -> Vec<ManifestRef>,
    recorded_before: &BTreeSet<String>,
) -> (Vec<KeyedEvent>, BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    for identity in &plan.identities {
        let unobserved = identity.status == IdentityStatus::ProviderUnavailable
            || names_of(identity).iter().any(|name| deferred.contains(name));
        if unobserved {
            let prefix = format!("{}\0", identity.identity);
            seen.extend(recorded_before.range(prefix.clone()..).take_while(|k| k.starts_with(&prefix)).cloned());
        }
        if identity.status == IdentityStatus::NotFound {
            // No record (nothing was planned), but an operator alerting on logs must see it, once
            // while it lasts.
            let key = notice_key(&identity.identity, "not-found");
            if !recorded_before.contains(&key) {
                tracing::warn!(
                    identity = %identity.identity,
                    manifests = ?identity.manifests,
                    reason = %identity.notes.join("; "),
                    "not found: no account matches the manifest's target"
                );
            }
            seen.insert(key);
        }
        for planned in &identity.actions {
            let Some(record) = ActionRecord::unsent(
                &identity.identity,
                identity.resolved.clone(),
                planned,
                refs(&planned.provenance, &planned.cause),
            ) else {
                continue;
            };
            // Held: once per action while it is held, whatever plan holds it; denied: once per
            // guardrail verdict.
            let detail = match &planned.disposition {
                Disposition::Denied { detail, .. } => detail.as_str(),
                _ => "",
            };
            let key = notice_key(&identity.identity, &format!("{}\0{:?}\0{detail}", planned.action, record.outcome));
            if !recorded_before.contains(&key) {
                // A held plan is logged once for the whole plan (by the controller), not per action.
                if record.outcome == ActionOutcome::Denied {
                    tracing::warn!(
                        identity = %identity.identity,
                        action = %planned.action,
                        manifests = ?planned.provenance,
                        reason = record.error.as_deref().unwrap_or_default(),
                        "denied by a guardrail: not sent"
                    );
                }
                events.push((key.clone(), (decided_at, Event::Action(record))));
            }
            seen.insert(key);
        }
        for blocked in &identity.blocked {
            let key = notice_key(&identity.identity, &format!("{}\0blocked\0{}", blocked.action, blocked.message));
            if !recorded_before.contains(&key) {
                tracing::warn!(
                    identity = %identity.identity,
                    action = %blocked.action,
                    block = ?blocked.reason,
                    manifests = ?blocked.provenance,
                    reason = %blocked.message,
                    "blocked: the change cannot take effect as things are"
                );
                let record = ActionRecord {
                    intent: None,
                    manifests: refs(&blocked.provenance, &Cause::Desired),
                    reason: blocked.spec_reason.clone(),
                    identity: identity.identity.clone(),
                    resolved: identity.resolved.clone(),
                    provider: blocked.action.provider(),
                    action: blocked.action,
                    cause: Cause::Desired,
                    before: blocked.before.clone(),
                    after: blocked.after.clone(),
                    outcome: ActionOutcome::Blocked,
                    error: Some(blocked.message.clone()),
                    note: None,
                    duration_ms: 0,
                    acting_account: None,
                };
                events.push((key.clone(), (decided_at, Event::Action(record))));
            }
            seen.insert(key);
        }
    }
    (events, seen)
}

/// The error policy's input for one account: transient trouble (a provider that could not be
/// asked, a failure that may pass) is retried; a permanent failure parks its actions.
fn verdict_of(
    identity: &IdentityPlan,
    reports: &[ActionReport],
    deferred: &BTreeSet<Identity>,
    generations: &BTreeMap<ManifestName, Generation>,
) -> Verdict {
    let failed: Vec<&ActionReport> =
        reports_of(reports, &identity.identity).iter().filter(|r| r.outcome == Outcome::Failed).collect();
    let unavailable = identity.status == IdentityStatus::ProviderUnavailable;
    let held_back = names_of(identity).iter().any(|name| deferred.contains(name));
    // Skipped actions were not sent (an earlier one failed): they are neither parked nor retried
    // for themselves; they follow the failure that stopped them.
    let permanent: Vec<Action> = failed.iter().filter(|r| !r.transient).map(|r| r.action).collect();
    Verdict {
        retry: unavailable || held_back || failed.iter().any(|r| r.transient),
        fingerprint: if permanent.is_empty() { String::new() } else { fingerprint(identity, generations) },
        park: permanent,
    }
}

/// The departed manifests that have nothing left to restore: every account they named was
/// observed and every restore for them succeeded. They are forgotten, status included; the
/// history keeps what was done.
fn releasable(
    departed: &[DepartedManifest],
    plan: &Plan,
    reports: &[ActionReport],
    deferred: &BTreeSet<Identity>,
) -> Vec<DepartedManifest> {
    let mut done_with = Vec::new();
    for gone in departed {
        let mut done = true;
        for identity in plan.identities.iter().filter(|i| i.manifests.contains(&gone.name)) {
            let unobserved = identity.status == IdentityStatus::ProviderUnavailable
                || names_of(identity).iter().any(|name| deferred.contains(name));
            let restore_left = identity.actions.iter().any(|planned| {
                matches!(&planned.cause, Cause::Release { manifest } if *manifest == gone.name)
                    && !reports_of(reports, &identity.identity)
                        .iter()
                        .any(|r| r.action == planned.action && r.outcome == Outcome::Succeeded)
            });
            done &= !unobserved && !restore_left;
        }
        if done {
            done_with.push(gone.clone());
        }
    }
    done_with
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
