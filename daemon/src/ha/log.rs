//! The store's write log on etcd: entry `n` is key `<prefix>log/<n, 20 digits>`, created by the
//! leader in a transaction fenced on its leadership that also requires the key to be absent.

use std::sync::Arc;

use crate::coord::etcd::EtcdCoordination;
use crate::coord::{CoordError, Coordination, FencedOp};
use crate::store::{LogRefusal, WriteLog};

use super::gate::CurrentLeadership;

/// The key of log entry `seq` under `prefix`.
pub(super) fn entry_key(prefix: &str, seq: u64) -> String {
    format!("{prefix}log/{seq:020}")
}

/// The prefix of every log entry.
pub(super) fn entries_prefix(prefix: &str) -> String {
    format!("{prefix}log/")
}

/// The entry number of a log key, if it is one.
pub(super) fn entry_seq(prefix: &str, key: &str) -> Option<u64> {
    key.strip_prefix(&entries_prefix(prefix))?.parse().ok()
}

#[derive(Debug)]
pub(super) struct EtcdLog {
    pub(super) coord: EtcdCoordination,
    pub(super) prefix: String,
    pub(super) current: CurrentLeadership,
    pub(super) runtime: tokio::runtime::Handle,
}

impl WriteLog for EtcdLog {
    fn append(&self, seq: u64, entry: &[u8]) -> Result<(), LogRefusal> {
        let leadership = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let Some(leadership) = leadership else {
            return Err(LogRefusal {
                detail: "this instance does not lead: only the leader writes (several instances)".to_owned(),
                ambiguous: false,
            });
        };
        let op = FencedOp::Create { key: entry_key(&self.prefix, seq), value: entry.to_vec() };
        let coord = self.coord.clone();
        let fenced = Arc::clone(&leadership);
        let write = async move { coord.fenced_txn(&fenced, std::slice::from_ref(&op)).await };
        // The store's callers block (spawn_blocking, or a worker thread of the multi-threaded
        // runtime that `block_in_place` hands over).
        let result = tokio::task::block_in_place(|| self.runtime.block_on(write));
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let ambiguous = matches!(error, CoordError::Unavailable { .. });
                // Whatever the reason, this term cannot go on writing: a refused or unknown entry
                // means the log is not where this instance thinks. The term ends; the instance
                // reads the log again as a standby.
                leadership.give_up(format!("a write to the log was not taken: {error}"));
                tracing::error!(seq, %error, ambiguous, "the store's write was not replicated: this instance stops leading");
                Err(LogRefusal { detail: error.to_string(), ambiguous })
            }
        }
    }
}
