//! A guard against sled's silent loss of its newest writes.
//!
//! sled 0.34 reads a damaged region of its log as the end of the log: everything written after it
//! is dropped without an error, and what remains is a consistent prefix (the history's chain still
//! verifies, its head was cut with it). A wholly damaged log opens as an empty database. To notice,
//! remedy keeps `remedy.watermark` beside sled's files: the newest history record id and the next
//! intent id that are known to be durable. It is written only after sled's flush returned, so it is
//! never ahead of what sled holds; if sled opens with less, sled lost data, and the store is
//! treated as corrupt. The file is replaced by rename (never seen half-written); it is not fsynced
//! on every write, so a power loss may leave it behind sled, which only weakens the check.

use std::path::Path;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use super::{layout, Store};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Watermark {
    pub(super) history_last_id: u64,
    pub(super) next_intent_id: u64,
}

/// What the watermark file says.
#[derive(Debug)]
pub(super) enum Marker {
    /// No file: a store that was never written (or one from before the file existed).
    Absent,
    Unreadable(String),
    Known(Watermark),
}

pub(super) fn read(dir: &Path) -> Marker {
    match std::fs::read(dir.join(layout::WATERMARK_FILE)) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Marker::Absent,
        Err(error) => Marker::Unreadable(error.to_string()),
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(watermark) => Marker::Known(watermark),
            Err(error) => Marker::Unreadable(error.to_string()),
        },
    }
}

/// Replaces the file (write, optionally fsync, rename).
pub(super) fn write(dir: &Path, watermark: Watermark, sync: bool) -> Result<(), StoreError> {
    let path = dir.join(layout::WATERMARK_FILE);
    let temporary = dir.join(format!("{}.tmp", layout::WATERMARK_FILE));
    let io = |source| StoreError::Io { what: "cannot write the store's watermark", path: path.clone(), source };
    let bytes = serde_json::to_vec(&watermark).map_err(|source| StoreError::Encode { tree: "watermark", source })?;
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&temporary).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        if sync {
            file.sync_all().map_err(io)?;
        }
    }
    std::fs::rename(&temporary, &path).map_err(io)?;
    if sync {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

impl Store {
    /// Raises the watermark to values the caller has just flushed. A failure to write it is
    /// logged, not returned: what it guards is already durable, and the caller must not take a
    /// durable record for a failed one.
    pub(super) fn raise_watermark(&self, history_last_id: Option<u64>, next_intent_id: Option<u64>) {
        let mut current = self.watermark.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let raised = Watermark {
            history_last_id: current.history_last_id.max(history_last_id.unwrap_or(0)),
            next_intent_id: current.next_intent_id.max(next_intent_id.unwrap_or(0)),
        };
        if raised == *current {
            return;
        }
        match write(&self.path, raised, false) {
            Ok(()) => *current = raised,
            Err(error) => tracing::warn!(store = %self.path.display(), %error, "the store's watermark was not updated"),
        }
    }
}

impl Store {
    /// Lowers the watermark to nothing, for a store emptied on purpose (a replica rebuilt from the
    /// log). Written and synced before the rebuild writes anything.
    pub(super) fn reset_watermark(&self) {
        let mut current = self.watermark.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match write(&self.path, Watermark::default(), true) {
            Ok(()) => *current = Watermark::default(),
            Err(error) => tracing::warn!(store = %self.path.display(), %error, "the store's watermark was not reset"),
        }
    }
}

/// The in-memory copy, shared by the clones of a store.
pub(super) type Shared = std::sync::Arc<Mutex<Watermark>>;
