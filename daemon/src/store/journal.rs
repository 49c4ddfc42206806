//! The intent journal: what makes an action crash-safe.
//!
//! # Protocol
//! 1. Before an action is sent, the controller journals it: [`Store::journal_intent`] returns once
//!    the intent is on disk (flushed).
//! 2. It sends the action and reads the account back.
//! 3. It settles the intent with the action's record: [`Store::settle`] appends the record to the
//!    history AND removes the intent in one sled transaction (recovered atomically, all or
//!    nothing), then flushes.
//!
//! A crash (even `kill -9`, or power loss once the disk honours fsync) leaves each intent in one of
//! two states, never both and never neither: journaled and unsettled (the crash came before the
//! transaction of step 3 reached the disk), or settled with exactly one history record (it did).
//! So no record is lost, and none is written twice: a second `settle` of the same intent fails
//! with [`StoreError::UnknownIntent`].
//!
//! # Recovery, on start (the controller's part)
//! [`OpenReport::unsettled_intents`](super::OpenReport) says whether there is work. For each intent
//! of [`Store::unsettled`], before anything is planned:
//! - observe the account in the intent's provider (never send the action again blindly: the crash
//!   may have come after the directory applied it, and a second send of a one-shot such as
//!   "revoke sessions" is a second change);
//! - if the observed value shows the intended effect (`after`), settle it as succeeded (or
//!   drift-corrected / restored, by its cause) with `after` as observed, and an error text saying it
//!   was confirmed after a restart;
//! - if it does not, settle it as not applied (`not-applied`, no error: an interruption is not a
//!   failure; the record shows the value as observed, before and after, and a note saying why):
//!   the next reconcile plans from what it observes, as always, and sends it again if it is still
//!   wanted, under a new intent;
//! - if the provider cannot be asked, leave the intent unsettled and do not plan that account
//!   (its state is unknown) until it can.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::error::StoreError;
use super::history::append_in;
use super::{decode, encode, id_key, layout, show_id_key, transaction_result, Store, StoreOp, WRITE_CHUNK};
use crate::model::{ActionRecord, Event, HistoryRecord, IntendedChange, Intent, IntentId, RecordId};

impl Store {
    /// Journals a change before it is sent; durable when it returns.
    pub fn journal_intent(&self, change: &IntendedChange) -> Result<IntentId, StoreError> {
        let changes = std::slice::from_ref(change);
        let ids = self.logged(
            || StoreOp::JournalChunk { changes: changes.to_vec() },
            |store| store.journal_chunk_applied(changes),
        )?;
        ids.into_iter().next().ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            detail: "journaling one intent gave no id".to_owned(),
        })
    }

    /// Settles an intent: appends `record` (its `intent` set to `intent`) to the history and
    /// removes the intent, in one transaction; durable when it returns. The record must be about
    /// the intent's account, provider and action.
    pub fn settle(
        &self,
        intent: IntentId,
        at: DateTime<Utc>,
        record: &ActionRecord,
    ) -> Result<HistoryRecord, StoreError> {
        self.logged(
            || StoreOp::Settle { intent, at, record: record.clone() },
            |store| store.settle_applied(intent, at, record),
        )
    }

    pub(super) fn settle_applied(
        &self,
        intent: IntentId,
        at: DateTime<Utc>,
        record: &ActionRecord,
    ) -> Result<HistoryRecord, StoreError> {
        let abort = ConflictableTransactionError::Abort;
        let mut record = record.clone();
        record.intent = Some(intent);
        let event = Event::Action(record.clone());
        let result = (&self.history, &self.changes, &self.meta, &self.journal).transaction(
            |(history, changes, meta, journal)| {
                let Some(bytes) = journal.remove(&id_key(intent.0))? else {
                    return Err(abort(StoreError::UnknownIntent(intent)));
                };
                let journaled: Intent = decode(layout::JOURNAL, &intent.to_string(), &bytes).map_err(abort)?;
                check_matches(&journaled, &record).map_err(abort)?;
                append_in(history, changes, meta, at, &event)
            },
        );
        let stored = transaction_result(result).map_err(|e| self.with_path(e))?;
        self.db.flush()?;
        self.raise_watermark(Some(stored.id.0), None);
        Ok(stored)
    }

    /// Journals several changes: the ids, in order. Durable when it returns. The changes are
    /// written in chunks of [`WRITE_CHUNK`], each one transaction and one flush. When a chunk
    /// fails, the chunks before it are taken out of the journal again (nothing was sent for
    /// them); should that fail too, they stay journaled and the next reconcile settles them from
    /// what the providers show, as after a crash. The failed chunk itself may have been written
    /// if only its flush failed: the same applies to it.
    pub fn journal_intents(&self, changes: &[IntendedChange]) -> Result<Vec<IntentId>, StoreError> {
        let mut ids = Vec::with_capacity(changes.len());
        for chunk in changes.chunks(WRITE_CHUNK) {
            let written = self.logged(
                || StoreOp::JournalChunk { changes: chunk.to_vec() },
                |store| store.journal_chunk_applied(chunk),
            );
            match written {
                Ok(chunk_ids) => ids.extend(chunk_ids),
                Err(error) => {
                    self.withdraw_intents(&ids);
                    return Err(error);
                }
            }
        }
        Ok(ids)
    }

    /// Takes intents that were never sent out of the journal again, best effort (logged when it
    /// fails: they are then settled by the next reconcile).
    fn withdraw_intents(&self, ids: &[IntentId]) {
        for chunk in ids.chunks(WRITE_CHUNK) {
            let withdrawn =
                self.logged(|| StoreOp::WithdrawIntents { ids: chunk.to_vec() }, |store| store.withdraw_applied(chunk));
            if let Err(error) = withdrawn {
                tracing::error!(intents = chunk.len(), %error, "cannot withdraw intents that were never sent: the next reconcile settles them");
                return;
            }
        }
    }

    pub(super) fn withdraw_applied(&self, ids: &[IntentId]) -> Result<(), StoreError> {
        let result = self.journal.transaction(|journal| {
            for id in ids {
                journal.remove(&id_key(id.0))?;
            }
            Ok::<_, ConflictableTransactionError<StoreError>>(())
        });
        transaction_result(result)?;
        self.db.flush()?;
        Ok(())
    }

    /// Journals one chunk in one transaction; durable when it returns.
    pub(super) fn journal_chunk_applied(&self, changes: &[IntendedChange]) -> Result<Vec<IntentId>, StoreError> {
        let ids = self.journal_chunk(changes)?;
        self.db.flush()?;
        self.raise_watermark(None, ids.last().map(|id| id.0 + 1));
        Ok(ids)
    }

    fn journal_chunk(&self, changes: &[IntendedChange]) -> Result<Vec<IntentId>, StoreError> {
        let abort = ConflictableTransactionError::Abort;
        let result = (&self.meta, &self.journal).transaction(|(meta, journal)| {
            let first = match meta.get(layout::NEXT_INTENT_ID_KEY)? {
                Some(bytes) => decode(layout::META, layout::NEXT_INTENT_ID_KEY, &bytes).map_err(abort)?,
                None => 1u64,
            };
            let mut ids = Vec::with_capacity(changes.len());
            for (offset, change) in (0u64..).zip(changes) {
                let id = IntentId(first + offset);
                let intent = Intent { id, change: change.clone() };
                journal.insert(&id_key(id.0), encode(layout::JOURNAL, &intent).map_err(abort)?)?;
                ids.push(id);
            }
            let next = first + ids.len() as u64;
            meta.insert(layout::NEXT_INTENT_ID_KEY, encode(layout::META, &next).map_err(abort)?)?;
            Ok(ids)
        });
        transaction_result(result)
    }

    /// Settles several intents, in order, and returns the ids of their records (the records
    /// themselves can be read back: a pass of 10,000 settlements does not hold them twice);
    /// durable when it returns. Each record must be about its
    /// intent's account, provider and action, and each intent journaled and named once: that is
    /// checked for all of them before anything is written, and nothing is settled when it fails.
    /// The settlements are then written in chunks of [`WRITE_CHUNK`], each one transaction (the
    /// records appended and their intents removed together) and one flush; when a chunk fails
    /// (a storage error), the chunks before it are settled, the rest stay journaled for the next
    /// reconcile to settle from what the providers show.
    pub fn settle_all(
        &self,
        settlements: &[(IntentId, DateTime<Utc>, ActionRecord)],
    ) -> Result<Vec<RecordId>, StoreError> {
        let mut named = BTreeSet::new();
        for (intent, _, record) in settlements {
            if !named.insert(*intent) {
                return Err(StoreError::UnknownIntent(*intent));
            }
            let Some(bytes) = self.journal.get(id_key(intent.0))? else {
                return Err(StoreError::UnknownIntent(*intent));
            };
            let journaled: Intent =
                decode(layout::JOURNAL, &intent.to_string(), &bytes).map_err(|e| self.with_path(e))?;
            check_matches(&journaled, record)?;
        }
        let mut stored = Vec::with_capacity(settlements.len());
        for chunk in settlements.chunks(WRITE_CHUNK) {
            let records = self.logged(
                || StoreOp::SettleChunk { settlements: chunk.to_vec() },
                |store| store.settle_chunk_applied(chunk),
            )?;
            stored.extend(records);
        }
        Ok(stored)
    }

    /// Settles one chunk in one transaction; durable when it returns.
    pub(super) fn settle_chunk_applied(
        &self,
        settlements: &[(IntentId, DateTime<Utc>, ActionRecord)],
    ) -> Result<Vec<RecordId>, StoreError> {
        let records = self.settle_chunk(settlements).map_err(|e| self.with_path(e))?;
        self.db.flush()?;
        self.raise_watermark(records.last().map(|id| id.0), None);
        Ok(records)
    }

    fn settle_chunk(
        &self,
        settlements: &[(IntentId, DateTime<Utc>, ActionRecord)],
    ) -> Result<Vec<RecordId>, StoreError> {
        let abort = ConflictableTransactionError::Abort;
        let events: Vec<(IntentId, DateTime<Utc>, Event)> = settlements
            .iter()
            .map(|(intent, at, record)| {
                let mut record = record.clone();
                record.intent = Some(*intent);
                (*intent, *at, Event::Action(record))
            })
            .collect();
        let result = (&self.history, &self.changes, &self.meta, &self.journal).transaction(
            |(history, changes, meta, journal)| {
                let mut stored = Vec::with_capacity(events.len());
                for (intent, at, event) in &events {
                    let Some(bytes) = journal.remove(&id_key(intent.0))? else {
                        return Err(abort(StoreError::UnknownIntent(*intent)));
                    };
                    let journaled: Intent = decode(layout::JOURNAL, &intent.to_string(), &bytes).map_err(abort)?;
                    if let Event::Action(record) = event {
                        check_matches(&journaled, record).map_err(abort)?;
                    }
                    stored.push(append_in(history, changes, meta, *at, event)?.id);
                }
                Ok(stored)
            },
        );
        transaction_result(result)
    }

    /// Notes on journaled intents that they were sent and not confirmed, with the error; they
    /// stay unsettled for the next reconcile to settle from what the directory shows. Durable
    /// when it returns. Written in chunks of [`WRITE_CHUNK`], each one transaction: a note is only
    /// a detail for that settlement, so a failed chunk leaves the notes before it in place.
    pub fn mark_unconfirmed(&self, intents: &[(IntentId, String)]) -> Result<(), StoreError> {
        let intents: Vec<(IntentId, String, Option<DateTime<Utc>>)> =
            intents.iter().map(|(id, error)| (*id, error.clone(), None)).collect();
        self.mark_sent(&intents)
    }

    /// Marks intents as sent, accepted by the directory and not visible yet: they stay unsettled
    /// until a pass sees their effect, or `until` has passed (see `IntendedChange::awaiting_until`).
    pub fn mark_awaiting(&self, intents: &[(IntentId, String, DateTime<Utc>)]) -> Result<(), StoreError> {
        let intents: Vec<(IntentId, String, Option<DateTime<Utc>>)> =
            intents.iter().map(|(id, why, until)| (*id, why.clone(), Some(*until))).collect();
        self.mark_sent(&intents)
    }

    fn mark_sent(&self, intents: &[(IntentId, String, Option<DateTime<Utc>>)]) -> Result<(), StoreError> {
        for chunk in intents.chunks(WRITE_CHUNK) {
            self.logged(|| StoreOp::MarkSent { intents: chunk.to_vec() }, |store| store.mark_sent_applied(chunk))?;
        }
        Ok(())
    }

    pub(super) fn mark_sent_applied(
        &self,
        intents: &[(IntentId, String, Option<DateTime<Utc>>)],
    ) -> Result<(), StoreError> {
        let abort = ConflictableTransactionError::Abort;
        for chunk in intents.chunks(WRITE_CHUNK) {
            let result = self.journal.transaction(|journal| {
                for (id, error, until) in chunk {
                    let key = id_key(id.0);
                    let Some(bytes) = journal.get(key)? else {
                        return Err(abort(StoreError::UnknownIntent(*id)));
                    };
                    let mut intent: Intent = decode(layout::JOURNAL, &id.to_string(), &bytes).map_err(abort)?;
                    intent.change.unconfirmed = Some(error.clone());
                    intent.change.awaiting_until = *until;
                    journal.insert(&key, encode(layout::JOURNAL, &intent).map_err(abort)?)?;
                }
                Ok(())
            });
            transaction_result(result)?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// The intents journaled and not settled, oldest first.
    pub fn unsettled(&self) -> Result<Vec<Intent>, StoreError> {
        self.journal
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(layout::JOURNAL, &show_id_key(&key), &value)
            })
            .collect()
    }

    /// The next intent id (for the open-time check that `meta` is readable).
    pub(super) fn next_intent_id(&self) -> Result<IntentId, StoreError> {
        match self.meta.get(layout::NEXT_INTENT_ID_KEY)? {
            Some(bytes) => Ok(IntentId(decode(layout::META, layout::NEXT_INTENT_ID_KEY, &bytes)?)),
            None => Ok(IntentId(1)),
        }
    }
}

fn check_matches(intent: &Intent, record: &ActionRecord) -> Result<(), StoreError> {
    let change = &intent.change;
    if change.identity == record.identity && change.provider == record.provider && change.action == record.action {
        return Ok(());
    }
    Err(StoreError::IntentMismatch {
        intent: intent.id,
        expected: format!("{} {} on {}", change.action, change.identity, change.provider),
        found: format!("{} {} on {}", record.action, record.identity, record.provider),
    })
}
