//! The store's one error type.

use std::fmt;
use std::path::PathBuf;

use crate::model::{IntentId, RecordId};

/// What went wrong in the store. Nothing here is swallowed: every method that can fail returns it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled refused to open the directory for a reason that is neither corruption nor the lock
    /// (e.g. it was written by an incompatible sled version).
    #[error("cannot open the store at {}: {source}", path.display())]
    Open { path: PathBuf, source: sled::Error },
    /// Another process holds the store's lock.
    #[error("store {} is in use by another remedy process: stop it, or give this one another store path", path.display())]
    Locked { path: PathBuf },
    /// The store was written by a later remedy: it is refused rather than misread or moved aside.
    #[error("store format {found} is newer than this remedy ({supported}): upgrade remedy or restore a backup ({})", path.display())]
    NewerFormat { path: PathBuf, found: u64, supported: u64 },
    /// The store cannot be read. `Store::open` moves such a store aside; elsewhere it is returned.
    #[error("store {} is corrupt: {detail}", path.display())]
    Corrupt { path: PathBuf, detail: String },
    /// A file-system operation of the store's own (directory, lock file, moving aside) failed.
    #[error("{what} {}: {source}", path.display())]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A sled operation failed after the store was opened.
    #[error("store operation failed: {0}")]
    Db(#[from] sled::Error),
    /// A stored value is not what this remedy wrote.
    #[error("store tree {tree:?}, key {key}: the value cannot be decoded: {source}")]
    Decode { tree: &'static str, key: String, source: serde_json::Error },
    /// A value could not be encoded (not expected for the store's own types).
    #[error("cannot encode a value for store tree {tree:?}: {source}")]
    Encode { tree: &'static str, source: serde_json::Error },
    /// The history's hash chain does not hold: a record was edited, removed or added by hand.
    #[error(transparent)]
    ChainBroken(#[from] ChainBroken),
    /// `settle` was given an intent that is not in the journal (already settled, or never journaled).
    #[error("intent {0} is not in the journal: it was settled already or never journaled")]
    UnknownIntent(IntentId),
    /// The shared write log (several instances, issue 18) did not take a write, so nothing was
    /// written: this instance does not lead, or the log cannot be reached. `ambiguous`: the log
    /// may hold the entry all the same.
    #[error("the write was not replicated (log entry {seq}): {detail}")]
    Replication { seq: u64, detail: String, ambiguous: bool },
    /// `settle` was given a record about another change than the intent's.
    #[error("intent {intent} was for {expected}, the record to settle it is for {found}")]
    IntentMismatch { intent: IntentId, expected: String, found: String },
}

impl StoreError {
    /// Whether trying again later may help (the error policy reads this): I/O trouble and a lock
    /// held by another process may pass; corruption, a newer format and a broken chain do not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Locked { .. } | StoreError::Io { .. } | StoreError::Replication { .. } => true,
            StoreError::Db(error) => matches!(error, sled::Error::Io(_)),
            StoreError::Open { .. }
            | StoreError::NewerFormat { .. }
            | StoreError::Corrupt { .. }
            | StoreError::Decode { .. }
            | StoreError::Encode { .. }
            | StoreError::ChainBroken(_)
            | StoreError::UnknownIntent(_)
            | StoreError::IntentMismatch { .. } => false,
        }
    }
}

/// Where and how the history's hash chain breaks: the first record that does not follow from the
/// one before it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history hash chain broken at record {at_id} ({fault}): expected {expected}, found {found}")]
pub struct ChainBroken {
    pub at_id: RecordId,
    pub fault: ChainFault,
    pub expected: String,
    pub found: String,
}

/// The kind of break found by `Store::verify_history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainFault {
    /// The record's content does not hash to its stored hash: it was edited.
    Edited,
    /// The record does not name the previous record's hash: a record before it was removed or
    /// replaced.
    Unlinked,
    /// A record id is missing from the sequence (or the newest records are gone).
    Missing,
    /// The stored bytes are not the record's canonical form, or cannot be read as a record at all.
    NotCanonical,
}

impl fmt::Display for ChainFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChainFault::Edited => "content does not match its hash: edited",
            ChainFault::Unlinked => "does not follow the previous record: a record was removed or replaced",
            ChainFault::Missing => "record missing",
            ChainFault::NotCanonical => "stored bytes are not what remedy wrote",
        })
    }
}
