//! The history (the action center): one record per action attempt and per operator event, in one
//! append-only, hash-chained sequence.
//!
//! Record `n` stores `prevHash` (record `n-1`'s hash; 64 zeros for record 1) and `hash`, the
//! SHA-256 of its own canonical bytes (the JSON of `id`, `at`, `event` and `prevHash`, in that
//! order). Editing a record breaks its hash; removing one breaks the link of the next (or, for the
//! newest, the chain head kept in `meta`). This detects changes made by hand or by a bug; it does
//! not stop someone who can write the store from rewriting the whole chain, so the daemon should
//! also publish [`VerifyReport::head_hash`] where the store's writer cannot change it (logs, metrics).
//!
//! Records of actions that changed an account (succeeded, drift-corrected, restored) are also
//! indexed by identity, in the same transaction, as the `RecordedChange`s the plan needs.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use remedy_policies::plan::{PlanId, RecordedChange};
use remedy_policies::{Action, Identity, ManifestName};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, ConflictableTransactionResult, TransactionalTree};
use sled::Transactional;

use super::error::{ChainBroken, ChainFault, StoreError};
use super::{decode, encode, id_key, key_id, layout, show_id_key, transaction_result, Store, StoreOp};
use crate::model::{ActionOutcome, ApprovalEvent, Event, HistoryRecord, IntentId, RecordId};

/// The hash that record 1 links to.
pub(super) const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The hashed part of a record: everything but the hash, in the stored field order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordBody<'a> {
    id: RecordId,
    at: &'a DateTime<Utc>,
    event: &'a Event,
    prev_hash: &'a str,
}

pub(super) fn hash_of(id: RecordId, at: &DateTime<Utc>, event: &Event, prev_hash: &str) -> Result<String, StoreError> {
    let bytes = encode(layout::HISTORY, &RecordBody { id, at, event, prev_hash })?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// The newest record's id and hash, kept in `meta` so that an append reads one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ChainHead {
    pub(super) last_id: RecordId,
    pub(super) hash: String,
}

/// Which records a query returns. Every filter that is set must match; filters about actions
/// (identity, action, outcome, intent) match only action records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HistoryQuery {
    pub identity: Option<Identity>,
    /// An action of this manifest (one of its provenance) or a reconcile request for it.
    pub manifest: Option<ManifestName>,
    pub action: Option<Action>,
    pub outcome: Option<ActionOutcome>,
    pub intent: Option<IntentId>,
    /// At or after.
    pub since: Option<DateTime<Utc>>,
    /// Before.
    pub until: Option<DateTime<Utc>>,
    /// Only records after this id (the previous page's `nextAfterId`).
    pub after_id: Option<RecordId>,
    /// At most this many records (1 to [`HistoryQuery::MAX_LIMIT`]).
    pub limit: usize,
}

impl Default for HistoryQuery {
    fn default() -> Self {
        HistoryQuery {
            identity: None,
            manifest: None,
            action: None,
            outcome: None,
            intent: None,
            since: None,
            until: None,
            after_id: None,
            limit: HistoryQuery::DEFAULT_LIMIT,
        }
    }
}

impl HistoryQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 1000;

    fn matches(&self, record: &HistoryRecord) -> bool {
        if self.since.is_some_and(|since| record.at < since) || self.until.is_some_and(|until| record.at >= until) {
            return false;
        }
        match &record.event {
            Event::Action(action) => {
                self.identity.as_ref().is_none_or(|identity| &action.identity == identity)
                    && self.manifest.as_ref().is_none_or(|name| action.manifests.iter().any(|m| &m.name == name))
                    && self.action.is_none_or(|wanted| action.action == wanted)
                    && self.outcome.is_none_or(|wanted| action.outcome == wanted)
                    && self.intent.is_none_or(|wanted| action.intent == Some(wanted))
            }
            Event::ReconcileRequest(request) => {
                self.identity.is_none()
                    && self.action.is_none()
                    && self.outcome.is_none()
                    && self.intent.is_none()
                    && self.manifest.as_ref().is_none_or(|name| request.manifest.as_ref() == Some(name))
            }
            Event::Contested(contest) => {
                self.identity.as_ref().is_none_or(|identity| &contest.identity == identity)
                    && self.manifest.as_ref().is_none_or(|name| contest.manifests.contains(name))
                    && self.action.is_none()
                    && self.outcome.is_none()
                    && self.intent.is_none()
            }
            Event::Approval(_) => {
                self.identity.is_none()
                    && self.manifest.is_none()
                    && self.action.is_none()
                    && self.outcome.is_none()
                    && self.intent.is_none()
            }
        }
    }
}

/// One page of a history query, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub records: Vec<HistoryRecord>,
    /// Pass as `afterId` for the next page; `None` when the history was read to its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after_id: Option<RecordId>,
}

/// The history's chain holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// How many records were checked.
    pub records: u64,
    /// The newest record's hash (64 zeros for an empty history).
    pub head_hash: String,
}

/// Appends `event` inside a transaction over the history, the change index and meta. Pure apart
/// from the transactional trees: sled may run it more than once.
pub(super) fn append_in(
    history: &TransactionalTree,
    changes: &TransactionalTree,
    meta: &TransactionalTree,
    at: DateTime<Utc>,
    event: &Event,
) -> ConflictableTransactionResult<HistoryRecord, StoreError> {
    let abort = ConflictableTransactionError::Abort;
    let head: Option<ChainHead> = match meta.get(layout::HISTORY_HEAD_KEY)? {
        Some(bytes) => Some(decode(layout::META, layout::HISTORY_HEAD_KEY, &bytes).map_err(abort)?),
        None => None,
    };
    let (id, prev_hash) = match head {
        Some(head) => (RecordId(head.last_id.0 + 1), head.hash),
        None => (RecordId(1), GENESIS_HASH.to_owned()),
    };
    // Never overwrite: a head that lags behind the records (edited by hand) must not make an
    // append replace one.
    if history.get(id_key(id.0))?.is_some() {
        return Err(abort(StoreError::Corrupt {
            path: Default::default(),
            detail: format!("the history chain head names record {} as the newest, but record {id} exists", id.0 - 1),
        }));
    }
    let hash = hash_of(id, &at, event, &prev_hash).map_err(abort)?;
    let record = HistoryRecord { id, at, event: event.clone(), prev_hash, hash };
    history.insert(&id_key(id.0), encode(layout::HISTORY, &record).map_err(abort)?)?;
    let head = ChainHead { last_id: id, hash: record.hash.clone() };
    meta.insert(layout::HISTORY_HEAD_KEY, encode(layout::META, &head).map_err(abort)?)?;
    if let Event::Action(action) = &record.event {
        let recorded = action.recorded_changes(at);
        if !recorded.is_empty() {
            changes.insert(
                change_key(&action.identity, id),
                encode(layout::CHANGES_BY_IDENTITY, &recorded).map_err(abort)?,
            )?;
        }
    }
    Ok(record)
}

/// `<identity>\0<record id, big-endian>`: an identity's text never contains a NUL (control
/// characters are refused by its parser).
fn change_key(identity: &Identity, id: RecordId) -> Vec<u8> {
    let mut key = change_prefix(identity);
    key.extend_from_slice(&id_key(id.0));
    key
}

fn change_prefix(identity: &Identity) -> Vec<u8> {
    let mut key = identity.to_string().into_bytes();
    key.push(0);
    key
}

impl Store {
    /// Appends an event to the history, durably (flushed before it returns).
    pub fn append(&self, at: DateTime<Utc>, event: Event) -> Result<HistoryRecord, StoreError> {
        self.logged(|| StoreOp::Append { at, event: event.clone() }, |store| store.append_applied(at, &event))
    }

    pub(super) fn append_applied(&self, at: DateTime<Utc>, event: &Event) -> Result<HistoryRecord, StoreError> {
        let result = (&self.history, &self.changes, &self.meta)
            .transaction(|(history, changes, meta)| append_in(history, changes, meta, at, event));
        let record = transaction_result(result).map_err(|e| self.with_path(e))?;
        self.db.flush()?;
        self.raise_watermark(Some(record.id.0), None);
        Ok(record)
    }

    /// Records an operator's approval of a held plan: the history record and the plan among the
    /// [`Store::approvals`], in one transaction, durably — an approval given just before a crash
    /// or a restart still counts for that plan afterwards.
    pub fn append_approval(&self, at: DateTime<Utc>, approval: ApprovalEvent) -> Result<HistoryRecord, StoreError> {
        let logged = approval.clone();
        self.logged(
            move || StoreOp::AppendApproval { at, approval: logged },
            |store| store.append_approval_applied(at, approval),
        )
    }

    pub(super) fn append_approval_applied(
        &self,
        at: DateTime<Utc>,
        approval: ApprovalEvent,
    ) -> Result<HistoryRecord, StoreError> {
        let plan_id = approval.plan_id.clone();
        let event = Event::Approval(approval);
        let result = (&self.history, &self.changes, &self.meta).transaction(|(history, changes, meta)| {
            let abort = ConflictableTransactionError::Abort;
            let mut approvals: BTreeSet<PlanId> = match meta.get(layout::APPROVALS_KEY)? {
                Some(bytes) => decode(layout::META, layout::APPROVALS_KEY, &bytes).map_err(abort)?,
                None => BTreeSet::new(),
            };
            approvals.insert(plan_id.clone());
            meta.insert(layout::APPROVALS_KEY, encode(layout::META, &approvals).map_err(abort)?)?;
            append_in(history, changes, meta, at, &event)
        });
        let record = transaction_result(result).map_err(|e| self.with_path(e))?;
        self.db.flush()?;
        self.raise_watermark(Some(record.id.0), None);
        Ok(record)
    }

    /// The held plans approved and not yet done with: the controller reads them at start.
    pub fn approvals(&self) -> Result<BTreeSet<PlanId>, StoreError> {
        match self.meta.get(layout::APPROVALS_KEY)? {
            Some(bytes) => decode(layout::META, layout::APPROVALS_KEY, &bytes),
            None => Ok(BTreeSet::new()),
        }
    }

    /// Replaces the set of [`Store::approvals`] (durably): the controller keeps only the approval
    /// of the plan in force.
    pub fn set_approvals(&self, approvals: &BTreeSet<PlanId>) -> Result<(), StoreError> {
        self.logged(
            || StoreOp::SetApprovals { approvals: approvals.clone() },
            |store| store.set_approvals_applied(approvals),
        )
    }

    pub(super) fn set_approvals_applied(&self, approvals: &BTreeSet<PlanId>) -> Result<(), StoreError> {
        self.meta.insert(layout::APPROVALS_KEY, encode(layout::META, approvals)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// Appends several events in one transaction (all or none), durably. One transaction holds
    /// what it replaces until it commits (see [`WRITE_CHUNK`](super::WRITE_CHUNK)): a caller with
    /// many events appends them in chunks of that size, as the controller does.
    pub fn append_all(&self, events: &[(DateTime<Utc>, Event)]) -> Result<Vec<HistoryRecord>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.logged(|| StoreOp::AppendAll { events: events.to_vec() }, |store| store.append_all_applied(events))
    }

    pub(super) fn append_all_applied(
        &self,
        events: &[(DateTime<Utc>, Event)],
    ) -> Result<Vec<HistoryRecord>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let result = (&self.history, &self.changes, &self.meta).transaction(|(history, changes, meta)| {
            events
                .iter()
                .map(|(at, event)| append_in(history, changes, meta, *at, event))
                .collect::<Result<Vec<_>, _>>()
        });
        let records = transaction_result(result).map_err(|e| self.with_path(e))?;
        self.db.flush()?;
        self.raise_watermark(records.last().map(|r| r.id.0), None);
        Ok(records)
    }

    /// One record by id.
    pub fn history_record(&self, id: RecordId) -> Result<Option<HistoryRecord>, StoreError> {
        self.history.get(id_key(id.0))?.map(|bytes| decode(layout::HISTORY, &id.to_string(), &bytes)).transpose()
    }

    /// The records that match `query`, oldest first, one page at a time. Reads the history one
    /// record at a time (it is never loaded whole).
    pub fn query_history(&self, query: &HistoryQuery) -> Result<HistoryPage, StoreError> {
        let limit = query.limit.clamp(1, HistoryQuery::MAX_LIMIT);
        let start = query.after_id.map_or(0, |id| id.0.saturating_add(1));
        let mut records = Vec::new();
        for entry in self.history.range(id_key(start)..) {
            let (key, value) = entry?;
            let record: HistoryRecord = decode(layout::HISTORY, &show_id_key(&key), &value)?;
            if query.matches(&record) {
                records.push(record);
                if records.len() == limit {
                    let next_after_id = records.last().map(|r| r.id);
                    return Ok(HistoryPage { records, next_after_id });
                }
            }
        }
        Ok(HistoryPage { records, next_after_id: None })
    }

    /// The newest records that match `query` (its `after_id` and `limit` too), newest first: what
    /// the web page's history shows. Reads from the end, one record at a time.
    pub fn latest_history(&self, query: &HistoryQuery) -> Result<Vec<HistoryRecord>, StoreError> {
        let limit = query.limit.clamp(1, HistoryQuery::MAX_LIMIT);
        let start = query.after_id.map_or(0, |id| id.0.saturating_add(1));
        let mut records = Vec::new();
        for entry in self.history.range(id_key(start)..).rev() {
            let (key, value) = entry?;
            let record: HistoryRecord = decode(layout::HISTORY, &show_id_key(&key), &value)?;
            if query.matches(&record) {
                records.push(record);
                if records.len() == limit {
                    break;
                }
            }
        }
        Ok(records)
    }

    /// Checks the whole chain: ids without gaps from 1, each record linked to the one before,
    /// each record's hash over its content, its stored bytes canonical, and the chain head in
    /// `meta` naming the newest record (so that removing the newest records is seen too).
    pub fn verify_history(&self) -> Result<VerifyReport, StoreError> {
        let mut expected_prev = GENESIS_HASH.to_owned();
        let mut next_id = 1u64;
        for entry in self.history.iter() {
            let (key, value) = entry?;
            let broken = |at: u64, fault, expected: String, found: String| {
                StoreError::ChainBroken(ChainBroken { at_id: RecordId(at), fault, expected, found })
            };
            let at_key = key_id(&key).unwrap_or(next_id);
            let record: HistoryRecord = serde_json::from_slice(&value).map_err(|e| {
                broken(
                    at_key,
                    ChainFault::NotCanonical,
                    "a history record".to_owned(),
                    format!("undecodable bytes ({e})"),
                )
            })?;
            if key_id(&key) != Some(record.id.0) {
                return Err(broken(
                    at_key,
                    ChainFault::NotCanonical,
                    format!("record {at_key}"),
                    format!("record {}", record.id),
                ));
            }
            if record.id.0 != next_id {
                return Err(broken(
                    next_id,
                    ChainFault::Missing,
                    format!("record {next_id}"),
                    format!("record {}", record.id),
                ));
            }
            if record.prev_hash != expected_prev {
                return Err(broken(next_id, ChainFault::Unlinked, expected_prev, record.prev_hash));
            }
            let computed = hash_of(record.id, &record.at, &record.event, &record.prev_hash)?;
            if computed != record.hash {
                return Err(broken(next_id, ChainFault::Edited, computed, record.hash));
            }
            if encode(layout::HISTORY, &record)? != value.as_ref() {
                return Err(broken(
                    next_id,
                    ChainFault::NotCanonical,
                    "the canonical JSON of the record".to_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                ));
            }
            expected_prev = record.hash;
            next_id += 1;
        }
        let records = next_id - 1;
        match self.history_head()? {
            None if records == 0 => {}
            None => {
                return Err(ChainBroken {
                    at_id: RecordId(records),
                    fault: ChainFault::Missing,
                    expected: "a chain head in meta".to_owned(),
                    found: "none".to_owned(),
                }
                .into())
            }
            Some(head) if head.last_id.0 > records => {
                return Err(ChainBroken {
                    at_id: RecordId(records + 1),
                    fault: ChainFault::Missing,
                    expected: format!("records up to {} (head {})", head.last_id, head.hash),
                    found: format!("records up to {records} (head {expected_prev})"),
                }
                .into())
            }
            Some(head) if head.last_id.0 < records => {
                return Err(ChainBroken {
                    at_id: RecordId(head.last_id.0 + 1),
                    fault: ChainFault::Unlinked,
                    expected: format!("no record after {}", head.last_id),
                    found: format!("records up to {records}"),
                }
                .into())
            }
            Some(head) if head.hash != expected_prev => {
                return Err(ChainBroken {
                    at_id: RecordId(records),
                    fault: ChainFault::Edited,
                    expected: head.hash,
                    found: expected_prev,
                }
                .into())
            }
            Some(_) => {}
        }
        Ok(VerifyReport { records, head_hash: expected_prev })
    }

    /// remedy's own changes to the account named `identity` (as the records declared it), oldest
    /// first: what the plan needs for drift and restore decisions. Reads the index, not the history.
    pub fn recorded_changes(&self, identity: &Identity) -> Result<Vec<RecordedChange>, StoreError> {
        let mut changes = Vec::new();
        for entry in self.changes.scan_prefix(change_prefix(identity)) {
            let (key, value) = entry?;
            let batch: Vec<RecordedChange> =
                decode(layout::CHANGES_BY_IDENTITY, &String::from_utf8_lossy(&key), &value)?;
            changes.extend(batch);
        }
        Ok(changes)
    }

    /// remedy's own changes to every account (the plan input's `remedy_changes`).
    pub fn all_recorded_changes(&self) -> Result<Vec<RecordedChange>, StoreError> {
        let mut changes = Vec::new();
        for entry in self.changes.iter() {
            let (key, value) = entry?;
            let batch: Vec<RecordedChange> =
                decode(layout::CHANGES_BY_IDENTITY, &String::from_utf8_lossy(&key), &value)?;
            changes.extend(batch);
        }
        Ok(changes)
    }

    pub(super) fn history_head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.meta
            .get(layout::HISTORY_HEAD_KEY)?
            .map(|bytes| decode(layout::META, layout::HISTORY_HEAD_KEY, &bytes))
            .transpose()
    }

    /// Fills in the store's path in errors made inside transactions (which do not know it).
    pub(super) fn with_path(&self, error: StoreError) -> StoreError {
        match error {
            StoreError::Corrupt { path, detail } if path.as_os_str().is_empty() => {
                StoreError::Corrupt { path: self.path.clone(), detail }
            }
            other => other,
        }
    }
}
