//! The notification outbox: what is still to be told to the sinks of `notifications:`, and how
//! far each sink got.
//!
//! Events of the history (held, failed, drift corrected, contested) are derived from the
//! hash-chained history itself: `meta.outbox_fed_through` names the newest record whose
//! notifications are in the outbox, and [`Store::outbox_feed`] moves it forward in the same
//! transaction that appends them, so a crash at any point neither loses a record's notification
//! nor writes it twice. Events that are not records (provider health, chain verification) are
//! appended durably when they are detected ([`Store::outbox_push`]). Each sink's cursor
//! (`notify_cursors`) is the sequence number of the last entry it is done with (delivered,
//! expired, or not wanted); it moves only after the receiver accepted the entry, so a crash
//! between the two sends it again, with the same id. Entries every sink is done with are pruned.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::error::StoreError;
use super::history::{hash_of, GENESIS_HASH};
use super::{decode, encode, id_key, layout, show_id_key, transaction_result, Store, StoreOp};
use crate::model::{HistoryRecord, Notification, RecordId};

/// One notification in the outbox, with its place in the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub seq: u64,
    pub notification: Notification,
}

/// History records not fed into the outbox yet, oldest first, and whether each links to the one
/// before as the hash chain says it must.
#[derive(Debug, Clone, Default)]
pub struct FedRecords {
    pub records: Vec<HistoryRecord>,
    /// The first broken link or edited record found among them, said for people.
    pub fault: Option<String>,
}

impl Store {
    /// Notifications are configured: from now on, the history is fed into the outbox. The first
    /// time (or after they were turned off), feeding starts after the newest record: what was
    /// recorded before is not sent. Returns the newest record fed.
    pub fn outbox_start(&self) -> Result<RecordId, StoreError> {
        self.logged(|| StoreOp::OutboxStart, |store| store.outbox_start_applied())
    }

    pub(super) fn outbox_start_applied(&self) -> Result<RecordId, StoreError> {
        if let Some(bytes) = self.meta.get(layout::OUTBOX_FED_THROUGH_KEY)? {
            return decode(layout::META, layout::OUTBOX_FED_THROUGH_KEY, &bytes);
        }
        let head = self.history_head()?.map_or(RecordId(0), |head| head.last_id);
        self.meta.insert(layout::OUTBOX_FED_THROUGH_KEY, encode(layout::META, &head)?)?;
        self.db.flush()?;
        Ok(head)
    }

    /// Notifications are not configured: the outbox, the cursors and the feeding point are
    /// forgotten, so that configuring them again later starts afresh, not with a backlog.
    pub fn outbox_clear(&self) -> Result<(), StoreError> {
        self.logged(|| StoreOp::OutboxClear, |store| store.outbox_clear_applied())
    }

    pub(super) fn outbox_clear_applied(&self) -> Result<(), StoreError> {
        if self.meta.get(layout::OUTBOX_FED_THROUGH_KEY)?.is_none() && self.outbox.is_empty() {
            return Ok(());
        }
        self.outbox.clear()?;
        self.cursors.clear()?;
        self.meta.remove(layout::OUTBOX_FED_THROUGH_KEY)?;
        self.db.flush()?;
        Ok(())
    }

    /// Up to `limit` history records after the feeding point, each checked against the chain
    /// (its id follows, it links to the record before, its hash is over its content).
    pub fn outbox_unfed(&self, limit: usize) -> Result<FedRecords, StoreError> {
        let through: RecordId = match self.meta.get(layout::OUTBOX_FED_THROUGH_KEY)? {
            Some(bytes) => decode(layout::META, layout::OUTBOX_FED_THROUGH_KEY, &bytes)?,
            None => return Ok(FedRecords::default()),
        };
        let mut expected_prev = match through.0 {
            0 => Some(GENESIS_HASH.to_owned()),
            id => self.history_record(RecordId(id))?.map(|record| record.hash),
        };
        let mut fed = FedRecords::default();
        for entry in self.history.range(id_key(through.0.saturating_add(1))..).take(limit) {
            let (key, value) = entry?;
            let record: HistoryRecord = decode(layout::HISTORY, &show_id_key(&key), &value)?;
            let expected_id = through.0 + fed.records.len() as u64 + 1;
            let fault = if record.id.0 != expected_id {
                Some(format!("record {expected_id} is missing (the next is {})", record.id))
            } else if expected_prev.as_deref().is_some_and(|prev| prev != record.prev_hash) {
                Some(format!("record {} does not link to the record before it", record.id))
            } else if hash_of(record.id, &record.at, &record.event, &record.prev_hash)? != record.hash {
                Some(format!("record {} was changed after it was written (its hash does not match)", record.id))
            } else {
                None
            };
            if fed.fault.is_none() {
                fed.fault = fault;
            }
            expected_prev = Some(record.hash.clone());
            fed.records.push(record);
        }
        Ok(fed)
    }

    /// Appends the notifications of the history records up to `through` and moves the feeding
    /// point there, in one transaction, durably.
    pub fn outbox_feed(&self, through: RecordId, notifications: &[Notification]) -> Result<(), StoreError> {
        self.logged(
            || StoreOp::OutboxFeed { through, notifications: notifications.to_vec() },
            |store| store.outbox_feed_applied(through, notifications),
        )
    }

    pub(super) fn outbox_feed_applied(
        &self,
        through: RecordId,
        notifications: &[Notification],
    ) -> Result<(), StoreError> {
        let result = (&self.outbox, &self.meta).transaction(|(outbox, meta)| {
            let abort = ConflictableTransactionError::Abort;
            let mut next = match meta.get(layout::OUTBOX_NEXT_SEQ_KEY)? {
                Some(bytes) => decode::<u64>(layout::META, layout::OUTBOX_NEXT_SEQ_KEY, &bytes).map_err(abort)?,
                None => 1,
            };
            for notification in notifications {
                let entry = OutboxEntry { seq: next, notification: notification.clone() };
                outbox.insert(&id_key(next), encode(layout::OUTBOX, &entry).map_err(abort)?)?;
                next += 1;
            }
            meta.insert(layout::OUTBOX_NEXT_SEQ_KEY, encode(layout::META, &next).map_err(abort)?)?;
            meta.insert(layout::OUTBOX_FED_THROUGH_KEY, encode(layout::META, &through).map_err(abort)?)?;
            Ok(())
        });
        transaction_result(result)?;
        self.db.flush()?;
        Ok(())
    }

    /// Appends one notification that is not a history record (durably); returns its sequence
    /// number.
    pub fn outbox_push(&self, notification: &Notification) -> Result<u64, StoreError> {
        self.logged(
            || StoreOp::OutboxPush { notification: notification.clone() },
            |store| store.outbox_push_applied(notification),
        )
    }

    pub(super) fn outbox_push_applied(&self, notification: &Notification) -> Result<u64, StoreError> {
        let result = (&self.outbox, &self.meta).transaction(|(outbox, meta)| {
            let abort = ConflictableTransactionError::Abort;
            let seq = match meta.get(layout::OUTBOX_NEXT_SEQ_KEY)? {
                Some(bytes) => decode::<u64>(layout::META, layout::OUTBOX_NEXT_SEQ_KEY, &bytes).map_err(abort)?,
                None => 1,
            };
            let entry = OutboxEntry { seq, notification: notification.clone() };
            outbox.insert(&id_key(seq), encode(layout::OUTBOX, &entry).map_err(abort)?)?;
            meta.insert(layout::OUTBOX_NEXT_SEQ_KEY, encode(layout::META, &(seq + 1)).map_err(abort)?)?;
            Ok(seq)
        });
        let seq = transaction_result(result)?;
        self.db.flush()?;
        Ok(seq)
    }

    /// Up to `limit` outbox entries after sequence number `after`, in order.
    pub fn outbox_after(&self, after: u64, limit: usize) -> Result<Vec<OutboxEntry>, StoreError> {
        self.outbox
            .range(id_key(after.saturating_add(1))..)
            .take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                decode(layout::OUTBOX, &show_id_key(&key), &value)
            })
            .collect()
    }

    /// The sequence number of the newest outbox entry ever written (0: none).
    pub fn outbox_last_seq(&self) -> Result<u64, StoreError> {
        match self.meta.get(layout::OUTBOX_NEXT_SEQ_KEY)? {
            Some(bytes) => Ok(decode::<u64>(layout::META, layout::OUTBOX_NEXT_SEQ_KEY, &bytes)?.saturating_sub(1)),
            None => Ok(0),
        }
    }

    /// How far a sink got: the last entry it is done with (`None`: a sink new to this store).
    pub fn notify_cursor(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        self.cursors.get(sink.as_bytes())?.map(|bytes| decode(layout::NOTIFY_CURSORS, sink, &bytes)).transpose()
    }

    /// Records that a sink is done with the entries up to `seq` (durably).
    pub fn set_notify_cursor(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.logged(
            || StoreOp::SetNotifyCursor { sink: sink.to_owned(), seq },
            |store| store.set_notify_cursor_applied(sink, seq),
        )
    }

    pub(super) fn set_notify_cursor_applied(&self, sink: &str, seq: u64) -> Result<(), StoreError> {
        self.cursors.insert(sink.as_bytes(), encode(layout::NOTIFY_CURSORS, &seq)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets the cursors of sinks no longer configured.
    pub fn retain_notify_cursors(&self, sinks: &[&str]) -> Result<(), StoreError> {
        self.logged(
            || StoreOp::RetainNotifyCursors { sinks: sinks.iter().map(|s| (*s).to_owned()).collect() },
            |store| store.retain_notify_cursors_applied(sinks),
        )
    }

    pub(super) fn retain_notify_cursors_applied(&self, sinks: &[&str]) -> Result<(), StoreError> {
        for entry in self.cursors.iter() {
            let (key, _) = entry?;
            if !sinks.iter().any(|sink| sink.as_bytes() == key.as_ref()) {
                self.cursors.remove(key)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    /// Removes the entries up to `through` (every sink is done with them); returns how many.
    pub fn outbox_prune(&self, through: u64) -> Result<usize, StoreError> {
        self.logged(|| StoreOp::OutboxPrune { through }, |store| store.outbox_prune_applied(through))
    }

    pub(super) fn outbox_prune_applied(&self, through: u64) -> Result<usize, StoreError> {
        let mut removed = 0;
        for entry in self.outbox.range(..id_key(through.saturating_add(1))) {
            let (key, _) = entry?;
            self.outbox.remove(key)?;
            removed += 1;
        }
        if removed > 0 {
            self.db.flush()?;
        }
        Ok(removed)
    }

    /// When the oldest entry after `after` was written for, if any (for the status).
    pub fn outbox_oldest_after(&self, after: u64) -> Result<Option<DateTime<Utc>>, StoreError> {
        Ok(self.outbox_after(after, 1)?.into_iter().next().map(|entry| entry.notification.at))
    }
}
