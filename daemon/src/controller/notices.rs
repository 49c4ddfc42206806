//! Outcomes that send nothing — an action denied by a guardrail or held for approval, a change
//! blocked, an account not found — are recorded (and logged) once when they begin, not at every
//! resync. The set of open notices is kept here between passes and in the store, so that a
//! restart records nothing again either.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use remedy_policies::plan::{Cause, Disposition, IdentityStatus, Plan};
use remedy_policies::{Identity, ManifestName, Provider};

use super::decide::unobserved;
use super::store_call::blocking;
use crate::model::{ActionOutcome, ActionRecord, Event, ManifestRef};
use crate::store::{Store, StoreError, WRITE_CHUNK};

/// The notices open after the last pass (read from the store at the first).
#[derive(Debug, Default)]
pub struct Notices {
    open: BTreeSet<String>,
    loaded: bool,
}

impl Notices {
    /// Records what `plan` did not send and was not recorded before, and keeps the set of open
    /// notices, here and in the store. Returns the provider and outcome of each record appended.
    pub async fn record(
        &mut self,
        store: &Store,
        plan: &Plan,
        deferred: &BTreeSet<Identity>,
        decided_at: DateTime<Utc>,
        refs: &impl Fn(&[ManifestName], &Cause) -> Vec<ManifestRef>,
        scoped: bool,
    ) -> Result<Vec<(Provider, ActionOutcome)>, StoreError> {
        if !self.loaded {
            self.open = blocking(store, |store| store.open_notices()).await?;
            self.loaded = true;
        }
        let (unsent, mut now_open) = unsent_records(plan, deferred, decided_at, refs, &self.open);
        if scoped {
            // A targeted pass plans some accounts: the others' notices stay open.
            let planned: BTreeSet<String> = plan.identities.iter().map(|i| format!("{}\0", i.identity)).collect();
            now_open.extend(
                self.open.iter().filter(|key| key.find('\0').is_none_or(|at| !planned.contains(&key[..=at]))).cloned(),
            );
        }
        let outcomes: Vec<(Provider, ActionOutcome)> = unsent
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
                self.open = now_open.into_iter().filter(|key| !unwritten.contains(key)).collect();
                return Err(error);
            }
        }
        if now_open != self.open {
            let keys = now_open.clone();
            blocking(store, move |store| store.set_open_notices(&keys)).await?;
        }
        self.open = now_open;
        Ok(outcomes)
    }
}

/// A history event with the key [`Notices`] remembers it by.
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
pub(super) fn unsent_records(
    plan: &Plan,
    deferred: &BTreeSet<Identity>,
    decided_at: DateTime<Utc>,
    refs: &impl Fn(&[ManifestName], &Cause) -> Vec<ManifestRef>,
    recorded_before: &BTreeSet<String>,
) -> (Vec<KeyedEvent>, BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    let mut events = Vec::new();
    for identity in &plan.identities {
        if unobserved(identity, deferred) {
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
                    domain_controller: None,
                };
                events.push((key.clone(), (decided_at, Event::Action(record))));
            }
            seen.insert(key);
        }
    }
    (events, seen)
}
