//! One store kept by several instances (issue 18): every write of the store is an entry of a
//! shared, ordered log before it is applied, and each instance's sled store is a replica made by
//! applying the log's entries in order.
//!
//! # Protocol
//! - A write of the store (a [`StoreOp`]: the arguments of one store method, or one chunk of a
//!   chunked one) is first appended to the log as entry `applied + 1` through the [`WriteLog`]
//!   (on etcd: a transaction that only the leader can make, and only if that entry does not exist
//!   yet), then applied to the local store. When the log refuses or cannot say whether it took the
//!   entry, nothing is applied locally and the method fails with [`StoreError::Replication`].
//! - The instances that do not write apply the log's entries as they come
//!   ([`Store::apply_log_entry`]), each exactly once, in order: the applying store method is
//!   deterministic (ids and hashes follow from the store's content and the entry), so every replica
//!   holds the same history chain, journal, statuses, approvals and outbox.
//! - Applying one entry is marked in `meta` before and after (`replica_applying`,
//!   `replica_applied`): a replica found with an entry half applied (a crash in between) is
//!   rebuilt from the whole log ([`Store::replica_needs_rebuild`], [`Store::clear_replica`]).
//! - An entry whose method fails the same way on every replica (an intent already settled) is a
//!   no-op everywhere: it counts as applied.
//!
//! Without a write log (one instance, the default) the methods write sled directly, as always.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use remedy_policies::manifest::{Generation, Manifest, Target};
use remedy_policies::plan::PlanId;
use remedy_policies::ManifestName;
use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::{decode, encode, layout, Store};
use crate::model::{
    ActionRecord, ApprovalEvent, Event, IntendedChange, IntentId, ManifestStatus, Notification, RecordId,
};

/// Where the store's writes go first when several instances share one store.
pub trait WriteLog: Send + Sync + std::fmt::Debug {
    /// Appends `entry` as the log's entry number `seq` (the one after the last this store applied).
    /// Returns once the log holds it durably; fails, having written nothing, when this writer may
    /// not write (not the leader) or `seq` is taken; fails with `ambiguous` set when it cannot
    /// tell whether the entry was written. Blocking.
    fn append(&self, seq: u64, entry: &[u8]) -> Result<(), LogRefusal>;
}

/// Why the write log did not take an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRefusal {
    pub detail: String,
    /// The entry may have been written all the same (a request timed out): the writer must learn
    /// the log's state from the log before it writes again.
    pub ambiguous: bool,
}

/// One write of the store, as the log carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum StoreOp {
    Append { at: DateTime<Utc>, event: Event },
    AppendApproval { at: DateTime<Utc>, approval: ApprovalEvent },
    SetApprovals { approvals: BTreeSet<PlanId> },
    AppendAll { events: Vec<(DateTime<Utc>, Event)> },
    JournalChunk { changes: Vec<IntendedChange> },
    WithdrawIntents { ids: Vec<IntentId> },
    Settle { intent: IntentId, at: DateTime<Utc>, record: ActionRecord },
    SettleChunk { settlements: Vec<(IntentId, DateTime<Utc>, ActionRecord)> },
    MarkSent { intents: Vec<(IntentId, String, Option<DateTime<Utc>>)> },
    RecordFirstSeen { name: ManifestName, generation: Generation, at: DateTime<Utc> },
    RememberManifest { manifest: Manifest },
    RememberChunk { manifests: Vec<Manifest>, at: DateTime<Utc> },
    ForgetRetired { name: ManifestName, target: Target },
    ForgetManifest { name: ManifestName },
    PutStatus { status: ManifestStatus },
    PutStatusChunk { statuses: Vec<ManifestStatus> },
    RemoveStatus { name: ManifestName },
    SetOpenNotices { keys: BTreeSet<String> },
    OutboxStart,
    OutboxClear,
    OutboxFeed { through: RecordId, notifications: Vec<Notification> },
    OutboxPush { notification: Notification },
    SetNotifyCursor { sink: String, seq: u64 },
    RetainNotifyCursors { sinks: Vec<String> },
    OutboxPrune { through: u64 },
}

impl StoreOp {
    /// Applies the write to the local store, as the method that logged it did.
    fn apply(self, store: &Store) -> Result<(), StoreError> {
        match self {
            StoreOp::Append { at, event } => store.append_applied(at, &event).map(drop),
            StoreOp::AppendApproval { at, approval } => store.append_approval_applied(at, approval).map(drop),
            StoreOp::SetApprovals { approvals } => store.set_approvals_applied(&approvals),
            StoreOp::AppendAll { events } => store.append_all_applied(&events).map(drop),
            StoreOp::JournalChunk { changes } => store.journal_chunk_applied(&changes).map(drop),
            StoreOp::WithdrawIntents { ids } => store.withdraw_applied(&ids),
            StoreOp::Settle { intent, at, record } => store.settle_applied(intent, at, &record).map(drop),
            StoreOp::SettleChunk { settlements } => store.settle_chunk_applied(&settlements).map(drop),
            StoreOp::MarkSent { intents } => store.mark_sent_applied(&intents),
            StoreOp::RecordFirstSeen { name, generation, at } => {
                store.record_first_seen_applied(&name, &generation, at).map(drop)
            }
            StoreOp::RememberManifest { manifest } => store.remember_manifest_applied(&manifest),
            StoreOp::RememberChunk { manifests, at } => store.remember_chunk_applied(&manifests, at).map(drop),
            StoreOp::ForgetRetired { name, target } => store.forget_retired_applied(&name, &target),
            StoreOp::ForgetManifest { name } => store.forget_manifest_applied(&name),
            StoreOp::PutStatus { status } => store.put_status_applied(&status).map(drop),
            StoreOp::PutStatusChunk { statuses } => store.put_status_chunk_applied(&statuses),
            StoreOp::RemoveStatus { name } => store.remove_status_applied(&name).map(drop),
            StoreOp::SetOpenNotices { keys } => store.set_open_notices_applied(&keys),
            StoreOp::OutboxStart => store.outbox_start_applied().map(drop),
            StoreOp::OutboxClear => store.outbox_clear_applied(),
            StoreOp::OutboxFeed { through, notifications } => store.outbox_feed_applied(through, &notifications),
            StoreOp::OutboxPush { notification } => store.outbox_push_applied(&notification).map(drop),
            StoreOp::SetNotifyCursor { sink, seq } => store.set_notify_cursor_applied(&sink, seq),
            StoreOp::RetainNotifyCursors { sinks } => {
                store.retain_notify_cursors_applied(&sinks.iter().map(String::as_str).collect::<Vec<_>>())
            }
            StoreOp::OutboxPrune { through } => store.outbox_prune_applied(through).map(drop),
        }
    }
}

/// The store's write log and the turn its writers take (one entry at a time, in order).
#[derive(Debug, Clone)]
pub(super) struct Replication {
    log: Arc<dyn WriteLog>,
    turn: Arc<std::sync::Mutex<()>>,
}

/// Whether an error of an applying method is the same on every replica (it follows from the
/// store's content and the entry), so that the entry counts as applied.
fn deterministic(error: &StoreError) -> bool {
    matches!(error, StoreError::UnknownIntent(_) | StoreError::IntentMismatch { .. })
}

impl Store {
    /// This store's writes go to `log` first (see the module documentation). Set once, right
    /// after [`Store::open`], before the store is cloned.
    pub fn replicated_through(mut self, log: Arc<dyn WriteLog>) -> Store {
        self.replication = Some(Replication { log, turn: Arc::new(std::sync::Mutex::new(())) });
        self
    }

    /// Whether the store's writes go through a write log.
    pub fn is_replicated(&self) -> bool {
        self.replication.is_some()
    }

    /// Logs `op` (made only when there is a log) and applies it with `apply`; without a log, only
    /// applies.
    pub(super) fn logged<T>(
        &self,
        op: impl FnOnce() -> StoreOp,
        apply: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(replication) = &self.replication else {
            return apply(self);
        };
        let _turn = replication.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seq = self.replica_applied()? + 1;
        let entry = serde_json::to_vec(&op()).map_err(|source| StoreError::Encode { tree: "log", source })?;
        replication.log.append(seq, &entry).map_err(|refusal| StoreError::Replication {
            seq,
            detail: refusal.detail,
            ambiguous: refusal.ambiguous,
        })?;
        self.applying(seq, || apply(self))
    }

    /// Applies entry `seq` of the log, which another instance wrote. Entries this store has
    /// applied already are skipped; one that does not follow the last applied is refused
    /// ([`StoreError::Replication`]: the caller reads the log from where this store is).
    pub fn apply_log_entry(&self, seq: u64, entry: &[u8]) -> Result<(), StoreError> {
        let _turn = self
            .replication
            .as_ref()
            .map(|replication| replication.turn.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let applied = self.replica_applied()?;
        if seq <= applied {
            return Ok(());
        }
        if seq != applied + 1 {
            return Err(StoreError::Replication {
                seq,
                detail: format!("the log's entry {seq} does not follow entry {applied}, the last this store applied"),
                ambiguous: false,
            });
        }
        let op: StoreOp = decode("log", &seq.to_string(), entry)?;
        match self.applying(seq, || op.apply(self)) {
            Err(error) if deterministic(&error) => {
                tracing::debug!(seq, %error, "a log entry that changes nothing here, as on the instance that wrote it");
                Ok(())
            }
            other => other,
        }
    }

    /// The number of the last log entry this store applied (0: none).
    pub fn replica_applied(&self) -> Result<u64, StoreError> {
        match self.meta.get(layout::REPLICA_APPLIED_KEY)? {
            Some(bytes) => decode(layout::META, layout::REPLICA_APPLIED_KEY, &bytes),
            None => Ok(0),
        }
    }

    /// Whether the store was stopped half-way through applying a log entry: it must be rebuilt
    /// from the whole log.
    pub fn replica_needs_rebuild(&self) -> Result<bool, StoreError> {
        Ok(self.meta.get(layout::REPLICA_APPLYING_KEY)?.is_some())
    }

    /// Whether the store holds history or intents that did not come from a log (one instance
    /// wrote it): it cannot become a replica without losing them.
    pub fn written_without_log(&self) -> Result<bool, StoreError> {
        Ok(self.replica_applied()? == 0 && (!self.history.is_empty() || !self.journal.is_empty()))
    }

    /// Empties the store for a rebuild from the log (the format version is kept).
    pub fn clear_replica(&self) -> Result<(), StoreError> {
        for tree in self.data_trees() {
            tree.clear()?;
        }
        let format = self.meta.get(layout::FORMAT_VERSION_KEY)?;
        self.meta.clear()?;
        if let Some(format) = format {
            self.meta.insert(layout::FORMAT_VERSION_KEY, format)?;
        }
        self.db.flush()?;
        self.reset_watermark();
        Ok(())
    }

    /// Runs `apply` as log entry `seq`: marked applying before, applied after, both durable.
    fn applying<T>(&self, seq: u64, apply: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.meta.insert(layout::REPLICA_APPLYING_KEY, encode(layout::META, &seq)?)?;
        let result = apply();
        if let Err(error) = &result {
            if !deterministic(error) {
                // Left marked: the replica is rebuilt from the log at the next start.
                self.db.flush()?;
                return result;
            }
        }
        self.meta.insert(layout::REPLICA_APPLIED_KEY, encode(layout::META, &seq)?)?;
        self.meta.remove(layout::REPLICA_APPLYING_KEY)?;
        self.db.flush()?;
        result
    }
}
