//! One reconcile pass over the whole manifest set, in phases: read what the store knows →
//! observe (batched, both providers) → settle interrupted intents → plan (guardrails and blast
//! radius included) → sort what is sent from what is held back → journal, send (read-back
//! verified) and settle, a slice of accounts at a time → record what was not sent → release
//! what is done with. The pass decides nothing about retries: it returns each account's
//! [`Verdict`] and the controller applies the error policy.
//!
//! A pass covers the whole set, except a *targeted* pass (`PassInput::focus`), set off by a change
//! to a managed account noticed between resyncs: it plans only that account's manifests. Those are
//! every manifest the last plan grouped with the account (the plan merges every manifest naming an
//! account, under any of its names), so the merge and the guardrails decide as a full pass would;
//! it releases nothing. Observation is batched, so a pass costs O(accounts / page size) requests.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use remedy_policies::config::Guardrails;
use remedy_policies::manifest::{Generation, Target};
use remedy_policies::observed::ObservedState;
use remedy_policies::plan::{plan, ActiveManifest, Cause, DepartedManifest, IdentityPlan, Plan, PlanId, PlanInput};
use remedy_policies::{Action, Identity, Manifest, ManifestName, Provider};

use super::clock::Clock;
use super::decide::{self, sent_to, Sent};
use super::notices::Notices;
use super::policy::{Verdict, WorkQueue};
use super::records::manifest_refs;
use super::recovery;
use super::send::{send_slice, slices};
use super::store_call::blocking;
use crate::execute::{Outcome, Work};
use crate::model::{ActionOutcome, Intent};
use crate::providers::Providers;
use crate::store::{KnownManifest, Store, StoreError};

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
    /// What is parked after a permanent failure (read only: the controller applies the verdicts).
    pub queue: &'a WorkQueue,
    /// When the pass started: what the plan judges against.
    pub now: DateTime<Utc>,
    /// The wall clock: records are dated when their attempt, read-back or decision happened.
    pub clock: &'a Clock,
    /// `remedy apply`'s pass: these manifests, each in force since the given time (its file's),
    /// planned as `remedy plan` plans them (no earlier changes of remedy's), without touching the
    /// daemon's knowledge of the set — nothing remembered, released or noticed — so that a later
    /// `remedy serve` neither releases what apply did nor loses its own notices.
    pub one_shot: Option<&'a [ActiveManifest]>,
    /// A targeted pass (a change noticed between resyncs): only these manifests are read, their
    /// accounts observed, planned (every manifest naming an account is among them: they come from
    /// the last plan's grouping) and acted on; nothing is released, and what the pass does not
    /// cover keeps its notices, retries and parked actions.
    pub focus: Option<&'a BTreeSet<ManifestName>>,
    /// Accounts whose drift corrections must wait (a fight: see `remedy_policies::contest`).
    pub spaced: &'a BTreeSet<Identity>,
}

/// What a pass did.
#[derive(Debug)]
pub struct PassResult {
    pub plan: Plan,
    pub observed: ObservedState,
    /// What became of each action sent, sorted by account.
    pub sent: Vec<Sent>,
    /// Each account's verdict for the error policy.
    pub verdicts: BTreeMap<Identity, Verdict>,
    /// Every allowed action with the fingerprint it was planned under (what stays parked).
    pub planned: BTreeMap<(Identity, Action), String>,
    /// Allowed actions not sent: parked after a permanent failure, with the error it had.
    pub parked: BTreeMap<(Identity, Action), String>,
    /// Accounts with interrupted actions that could not be checked: nothing was sent to them.
    pub deferred: BTreeSet<Identity>,
    /// Actions the directory accepted and does not show yet, with their confirmation deadlines:
    /// not sent again, read again at the next passes.
    pub awaiting: BTreeMap<(Identity, Action), DateTime<Utc>>,
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

    /// What was sent to `identity`.
    pub fn sent_to(&self, identity: &Identity) -> &[Sent] {
        sent_to(&self.sent, identity)
    }

    /// How many actions sent failed.
    pub fn failed(&self) -> usize {
        self.sent.iter().filter(|s| !matches!(s.outcome, Outcome::Succeeded | Outcome::AwaitingConfirmation)).count()
    }
}

/// What the store knows at the start of a pass.
struct Known {
    active: Vec<ActiveManifest>,
    departed: Vec<DepartedManifest>,
    generations: BTreeMap<ManifestName, Generation>,
    /// Intents journaled and never settled (a crash, a failure after sending).
    unsettled: Vec<Intent>,
}

pub async fn run_pass(
    input: &PassInput<'_>,
    store: &Store,
    providers: &mut Providers,
    notices: &mut Notices,
) -> Result<PassResult, StoreError> {
    let known = read_known(input, store).await?;
    let observed = observe(&known, providers).await;

    let recovery = recovery::recheck(&known.unsettled, &observed, input.clock.now(), |p| providers.acting_account(p));
    let recovered = recovery.settlements.len();
    let mut recorded: Vec<(Provider, ActionOutcome)> =
        recovery.settlements.iter().map(|(_, _, r)| (r.provider, r.outcome)).collect();
    blocking(store, move |store| store.settle_all(&recovery.settlements)).await?;
    let deferred = recovery.deferred;
    let mut awaiting = recovery.awaiting;
    let not_effective = recovery.not_effective;

    let remedy_changes = if input.one_shot.is_some() {
        Vec::new()
    } else {
        blocking(store, |store| store.all_recorded_changes()).await?
    };
    let plan = plan(&PlanInput {
        manifests: &known.active,
        departed: &known.departed,
        remedy_changes: &remedy_changes,
        observed: &observed,
        guardrails: input.guardrails,
        approvals: input.approvals,
        now: input.now,
    });
    // Several DCs: a correction that may only be replication catching up waits (awaiting, with
    // its deadline) instead of being sent as drift.
    let replicating = decide::replication_pending(&plan, &remedy_changes, providers.ad_dc().as_deref(), input.now);
    drop(remedy_changes);

    let mut sorted = decide::sort_allowed(&plan, &deferred, &known.generations, |who, action, fingerprint| {
        input.queue.parked(who, action, fingerprint)
    });
    sorted.withheld.extend(decide::spaced_corrections(&plan, input.spaced));
    // Sent already: awaiting confirmation, or not effective by its deadline (parked below).
    sorted.withheld.extend(awaiting.keys().cloned());
    sorted.withheld.extend(not_effective.iter().map(|(who, action, _)| (who.clone(), *action)));
    sorted.withheld.extend(replicating.keys().cloned());
    awaiting.extend(replicating);
    let refs =
        |provenance: &[ManifestName], cause: &Cause| manifest_refs(provenance, cause, &known.generations, input.commit);
    let mut sent = Vec::new();
    for slice in slices(Work { identities: &plan.identities, withheld: &sorted.withheld }) {
        let work = Work { identities: &plan.identities[slice], withheld: &sorted.withheld };
        let (done, outcomes, now_awaiting) =
            send_slice(input.now, input.clock, work, &observed, providers, store, &refs).await?;
        sent.extend(done);
        recorded.extend(outcomes);
        awaiting.extend(now_awaiting);
    }
    sent.sort_by(|a, b| (&a.identity, a.action).cmp(&(&b.identity, b.action)));

    if input.one_shot.is_none() {
        let scoped = input.focus.is_some();
        recorded.extend(notices.record(store, &plan, &deferred, input.clock.now(), &refs, scoped).await?);
    }

    let verdicts = plan
        .identities
        .iter()
        .map(|identity| {
            let mut verdict = decide::verdict_of(identity, &sent, &deferred, &known.generations);
            decide::confirmations(&mut verdict, identity, &awaiting, &not_effective, &known.generations);
            (identity.identity.clone(), verdict)
        })
        .collect();
    let releasable = decide::releasable(&known.departed, &plan, &sent, &deferred);
    let forgotten = if input.focus.is_some() { Vec::new() } else { release(input, store, releasable).await? };
    Ok(PassResult {
        plan,
        observed,
        sent,
        verdicts,
        planned: sorted.planned,
        parked: sorted.parked,
        deferred,
        awaiting,
        recovered,
        departed: known.departed,
        forgotten,
        generations: known.generations,
        recorded,
    })
}

/// The manifests in force (remembered, with the time each took effect), the departed ones that
/// may be released, and the unsettled intents.
async fn read_known(input: &PassInput<'_>, store: &Store) -> Result<Known, StoreError> {
    if let Some(active) = input.one_shot {
        let unsettled = blocking(store, |store| store.unsettled()).await?;
        let generations = active.iter().map(|a| (a.manifest.name.clone(), a.manifest.generation.clone())).collect();
        return Ok(Known { active: active.to_vec(), departed: Vec::new(), generations, unsettled });
    }
    let manifests: Vec<Manifest> = match input.focus {
        Some(focus) => focus.iter().filter_map(|name| input.manifests.get(name)).cloned().collect(),
        None => input.manifests.values().cloned().collect(),
    };
    let keep: BTreeSet<ManifestName> = input.manifests.keys().chain(input.rejected_names.iter()).cloned().collect();
    let may_release = input.may_release && input.focus.is_none();
    let now = input.now;
    let (active, departed, known, unsettled) = blocking(store, move |store| {
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
        let known: Vec<KnownManifest> = departed
            .iter()
            .filter_map(|gone| store.known_manifest(&gone.name).transpose())
            .collect::<Result<_, _>>()?;
        Ok((active, departed, known, store.unsettled()?))
    })
    .await?;
    let mut generations: BTreeMap<ManifestName, Generation> =
        active.iter().map(|a| (a.manifest.name.clone(), a.manifest.generation.clone())).collect();
    generations.extend(known.into_iter().map(|k| (k.name, k.generation)));
    Ok(Known { active, departed, generations, unsettled })
}

/// Observes every account the pass may touch: the targets of the manifests in force and departed,
/// and those of unsettled intents; the risk state where a confirmation is asked for or was
/// interrupted (it is re-checked by reading, whatever the manifests say now).
async fn observe(known: &Known, providers: &mut Providers) -> ObservedState {
    let mut targets: Vec<Target> = known
        .active
        .iter()
        .map(|a| a.manifest.spec.target.clone())
        .chain(known.departed.iter().map(|d| d.target.clone()))
        .collect();
    targets.extend(known.unsettled.iter().map(|intent| Target {
        identity: intent.change.identity.clone(),
        entra_object_id: intent.change.resolved.entra_id.as_deref().and_then(|id| id.parse().ok()),
    }));
    let mut risk_for: BTreeSet<Identity> = known
        .active
        .iter()
        .filter(|a| a.manifest.spec.entra_id.confirm_compromised)
        .map(|a| a.manifest.spec.target.identity.clone())
        .collect();
    risk_for.extend(
        known
            .unsettled
            .iter()
            .filter(|intent| intent.change.action == Action::ConfirmCompromised)
            .map(|intent| intent.change.identity.clone()),
    );
    providers.observe(&targets, &risk_for).await
}

/// Forgets the departed manifests that are done with (a retargeted one: only its old target).
async fn release(
    input: &PassInput<'_>,
    store: &Store,
    releasable: Vec<DepartedManifest>,
) -> Result<Vec<ManifestName>, StoreError> {
    let present: BTreeSet<ManifestName> = input.manifests.keys().cloned().collect();
    blocking(store, move |store| {
        let mut forgotten = Vec::new();
        for gone in &releasable {
            if present.contains(&gone.name) {
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
    .await
}
