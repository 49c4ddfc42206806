//! Storing per-manifest status ([`ManifestStatus`]).
//!
//! A condition's `lastTransitionTime` is the time its status last flipped: re-stating a condition
//! with the same status (and a new reason or message) keeps it. [`Store::put_status`] enforces this
//! against the stored status, so a controller may build the status afresh at every reconcile.
//!
//! Status is not flushed on every write: it is derived again at every reconcile, and sled's
//! background flush (500 ms) is enough for it.

use std::collections::BTreeSet;

use remedy_policies::ManifestName;
use sled::transaction::ConflictableTransactionError;

use super::error::StoreError;
use super::{decode, encode, layout, transaction_result, Store, StoreOp, WRITE_CHUNK};
use crate::model::ManifestStatus;

impl Store {
    /// Stores a manifest's status, keeping the stored transition time of every condition whose
    /// status did not change; returns what was stored.
    pub fn put_status(&self, status: &ManifestStatus) -> Result<ManifestStatus, StoreError> {
        self.logged(|| StoreOp::PutStatus { status: status.clone() }, |store| store.put_status_applied(status))
    }

    pub(super) fn put_status_applied(&self, status: &ManifestStatus) -> Result<ManifestStatus, StoreError> {
        let abort = ConflictableTransactionError::Abort;
        let key = status.name.as_str();
        let result = self.status.transaction(|tree| {
            let mut stored = status.clone();
            if let Some(bytes) = tree.get(key)? {
                let previous: ManifestStatus = decode(layout::STATUS, key, &bytes).map_err(abort)?;
                stored.carry_transition_times(&previous);
            }
            tree.insert(key, encode(layout::STATUS, &stored).map_err(abort)?)?;
            Ok(stored)
        });
        transaction_result(result)
    }

    /// Stores the statuses of a whole pass (each keeping its stored transition times, as
    /// [`Store::put_status`] does), and returns the names of the stored statuses that are not
    /// among them. One batch per [`WRITE_CHUNK`] statuses instead of a transaction per manifest:
    /// a converged pass over 10,000 manifests writes 10,000 statuses. The previous statuses are
    /// read one chunk at a time, not all at once. The controller is the only writer of statuses,
    /// so nothing changes between the reads and the batches. Each batch is atomic; a reader may
    /// see one pass's statuses land chunk by chunk.
    pub fn put_statuses(&self, statuses: &[ManifestStatus]) -> Result<Vec<ManifestName>, StoreError> {
        for chunk in statuses.chunks(WRITE_CHUNK) {
            self.logged(
                || StoreOp::PutStatusChunk { statuses: chunk.to_vec() },
                |store| store.put_status_chunk_applied(chunk),
            )?;
        }
        let written: BTreeSet<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
        let mut stale = Vec::new();
        for key in self.status.iter().keys() {
            let key = key?;
            let name = String::from_utf8_lossy(&key);
            if !written.contains(name.as_ref()) {
                stale.push(ManifestName::new(name.as_ref()).map_err(|error| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("{}: a key that is not a manifest name: {error}", layout::STATUS),
                })?);
            }
        }
        Ok(stale)
    }

    pub(super) fn put_status_chunk_applied(&self, statuses: &[ManifestStatus]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for status in statuses {
            let key = status.name.as_str();
            let mut stored = status.clone();
            if let Some(bytes) = self.status.get(key)? {
                stored.carry_transition_times(&decode(layout::STATUS, key, &bytes)?);
            }
            batch.insert(key, encode(layout::STATUS, &stored)?);
        }
        self.status.apply_batch(batch)?;
        Ok(())
    }

    pub fn get_status(&self, name: &ManifestName) -> Result<Option<ManifestStatus>, StoreError> {
        self.status.get(name.as_str())?.map(|bytes| decode(layout::STATUS, name.as_str(), &bytes)).transpose()
    }

    /// Every stored status, by manifest name.
    pub fn list_status(&self) -> Result<Vec<ManifestStatus>, StoreError> {
        self.status
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(layout::STATUS, &String::from_utf8_lossy(&key), &value)
            })
            .collect()
    }

    /// Removes a manifest's status; returns whether there was one.
    pub fn remove_status(&self, name: &ManifestName) -> Result<bool, StoreError> {
        self.logged(|| StoreOp::RemoveStatus { name: name.clone() }, |store| store.remove_status_applied(name))
    }

    pub(super) fn remove_status_applied(&self, name: &ManifestName) -> Result<bool, StoreError> {
        Ok(self.status.remove(name.as_str())?.is_some())
    }
}
