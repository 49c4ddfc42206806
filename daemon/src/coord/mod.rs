//! Coordination of several `remedy serve` instances (issue 18): who leads, for how long surely,
//! and writes that only the leader can make.
//!
//! The [`Coordination`] trait is what the controller will use; [`etcd::EtcdCoordination`] is its
//! implementation on an etcd cluster. Three primitives:
//!
//! - [`Coordination::campaign`]: leader election on a lease. Every candidate puts a key under the
//!   election prefix attached to its own lease; the key with the lowest create revision leads
//!   (etcd's own election recipe). A background task keeps the lease alive and records, in local
//!   monotonic time, until when the lease surely lasts: the send time of the last acknowledged
//!   keepalive plus the TTL etcd granted. etcd counts the TTL from when it received that keepalive,
//!   which is later, so the local figure errs on the short side.
//! - [`Coordination::fenced_txn`] / [`Coordination::fenced_put`]: a transaction that etcd applies
//!   only if the leader key still exists with this leadership's create revision. A deposed leader
//!   (its lease expired or revoked, another elected) cannot write, whatever its local clock says:
//!   this is the fencing primitive the intent journal will use.
//! - [`Leadership::remaining`]: how much of the lease surely remains, for "no send starts with
//!   less lease time left than its timeout" (AD and Graph cannot check a fencing token).
//!
//! Nothing here decides what to do with leadership: the controller will.

pub mod etcd;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::path::PathBuf;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

/// What went wrong talking to the coordination service.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// The leadership this write was fenced on is gone: the lease expired or was revoked, or
    /// another instance's key leads. Nothing was written.
    #[error("not the leader any more ({key}): {reason}")]
    NotLeader { key: String, reason: String },
    /// No member could act on the request: the cluster has no quorum (no leader, request timed
    /// out) or no endpoint answered. `answer` is what the last endpoint said, or why it did not.
    #[error("etcd cannot act on the request (no quorum or unreachable): {endpoint}: {answer}")]
    Unavailable { endpoint: String, answer: String },
    /// A fenced [`FencedOp::Create`] found its key already there (another writer put it): nothing
    /// was written.
    #[error("{key} exists already: another instance wrote it")]
    Exists { key: String },
    /// A member answered with a refusal that is not about quorum (a malformed request, a
    /// permission, a lease that does not exist).
    #[error("etcd refused the request: {endpoint}: {answer}")]
    Refused { endpoint: String, answer: String },
    /// TLS with a member failed over a certificate: the member's is not signed by
    /// `ha.etcd.tls.caFile` or does not name its host, or the member refused remedy's (absent,
    /// or not signed by the CA it trusts). A configuration problem, not a transient one.
    #[error("TLS with etcd member {endpoint} failed: {problem}")]
    Tls { endpoint: String, problem: String },
    /// A file of `ha.etcd.tls` cannot be used: unreadable, no certificate or key in it, a key
    /// that others may read or that is not the certificate's.
    #[error("{key} {}: {problem}", path.display())]
    TlsFile { key: &'static str, path: PathBuf, problem: String },
    /// The client cannot be made from the configuration (an endpoint it cannot use, TLS setup).
    #[error("etcd client: {0}")]
    Setup(String),
    /// The lease taken for a campaign expired before the campaign was won.
    #[error("the campaign's lease {lease_id:x} expired before it was elected")]
    LeaseExpired { lease_id: i64 },
}

impl CoordError {
    /// Worth trying again later as it is (quorum may come back); the other errors need a new
    /// campaign or a fix.
    pub fn is_transient(&self) -> bool {
        matches!(self, CoordError::Unavailable { .. })
    }
}

/// One operation of a fenced transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencedOp {
    Put {
        key: String,
        value: Vec<u8>,
    },
    /// A put that requires the key to be absent: the whole transaction is refused with
    /// [`CoordError::Exists`] otherwise.
    Create {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
}

/// Who leads, as a standby sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The instance id the leader campaigned with.
    pub instance_id: String,
    /// When it was elected, by its own clock (absent for the moment between its election and
    /// its first write of the time).
    pub leading_since: Option<DateTime<Utc>>,
    /// Its leader key and that key's create revision (the fencing token).
    pub key: String,
    pub create_revision: i64,
    /// The lease its key is attached to.
    pub lease_id: i64,
}

/// Leadership won by [`Coordination::campaign`]. Its lease is kept alive by a background task for
/// as long as this value lives (dropping it stops the keepalive without revoking the lease, which
/// then expires after its TTL); [`Coordination::resign`] hands it over at once.
#[derive(Debug)]
pub struct Leadership {
    key: String,
    create_revision: i64,
    lease_id: i64,
    instance_id: String,
    ttl: Duration,
    lease: Arc<LeaseState>,
    keepalive: KeepaliveTask,
}

impl Leadership {
    /// The leader key under the election prefix.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The leader key's create revision: the fencing token every fenced write compares.
    pub fn create_revision(&self) -> i64 {
        self.create_revision
    }

    /// The lease the leader key is attached to.
    pub fn lease_id(&self) -> i64 {
        self.lease_id
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The lease's TTL as etcd granted it.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The local (monotonic) time until which the lease surely lasts: the send time of the last
    /// keepalive etcd acknowledged, plus the TTL it granted.
    pub fn surely_until(&self) -> Instant {
        self.lease.view().surely_until
    }

    /// How much of the lease surely remains now (zero once it may have expired, or once etcd
    /// said it has).
    pub fn remaining(&self) -> Duration {
        let view = self.lease.view();
        if view.lost.is_some() {
            return Duration::ZERO;
        }
        view.surely_until.saturating_duration_since(Instant::now())
    }

    /// Why the leadership is known to be lost (etcd answered that the lease is gone), if it is.
    pub fn lost(&self) -> Option<String> {
        self.lease.view().lost
    }

    /// Gives the leadership up locally: [`Leadership::remaining`] is zero from now on and
    /// [`Leadership::lost`] says `why`; the lease is no longer renewed (it expires after its TTL
    /// unless resigned). For a leader that found it cannot go on (a write refused).
    pub fn give_up(&self, why: String) {
        self.lease.mark_lost(why);
        self.keepalive.abort();
    }

    /// Stops renewing the lease without revoking it: it expires after its TTL, as a crashed or
    /// paused leader's does. For a leader that must stop acting at once and let a standby take
    /// over after the TTL (and for tests of exactly that).
    pub fn let_lapse(&self) {
        self.keepalive.abort();
    }
}

/// The lease as the keepalive task last saw it, shared with the [`Leadership`].
#[derive(Debug)]
struct LeaseState(Mutex<LeaseView>);

#[derive(Debug, Clone)]
struct LeaseView {
    surely_until: Instant,
    lost: Option<String>,
}

impl LeaseState {
    fn new(surely_until: Instant) -> Self {
        LeaseState(Mutex::new(LeaseView { surely_until, lost: None }))
    }

    fn view(&self) -> LeaseView {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    fn acknowledged(&self, sent: Instant, ttl: Duration) {
        let mut view = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        view.surely_until = view.surely_until.max(sent + ttl);
    }

    fn mark_lost(&self, why: String) {
        let mut view = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        view.lost.get_or_insert(why);
    }
}

/// The keepalive task, aborted when its owner goes.
#[derive(Debug)]
struct KeepaliveTask(tokio::task::AbortHandle);

impl KeepaliveTask {
    fn abort(&self) {
        self.0.abort();
    }
}

impl Drop for KeepaliveTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Leader election and fenced writes among the instances of one deployment.
#[async_trait]
pub trait Coordination: Send + Sync {
    /// Campaigns for leadership with a new lease of `ttl` (whole seconds, at least 1): returns
    /// when this instance leads, which may be never while another instance keeps its lease. Fails
    /// with [`CoordError::Unavailable`] when the cluster cannot act (checked at least every
    /// polling interval), and with [`CoordError::LeaseExpired`] when the lease runs out while
    /// waiting. A campaign dropped while waiting stops its keepalive; its key goes with the lease.
    async fn campaign(&self, instance_id: &str, ttl: Duration) -> Result<Leadership, CoordError>;

    /// Who leads now, if anyone (a linearizable read: it fails without quorum).
    async fn observe_leader(&self) -> Result<Option<LeaderInfo>, CoordError>;

    /// Applies `ops` in one etcd transaction if, and only if, `leadership`'s key still exists with
    /// its create revision; otherwise writes nothing and answers [`CoordError::NotLeader`].
    async fn fenced_txn(&self, leadership: &Leadership, ops: &[FencedOp]) -> Result<(), CoordError>;

    /// [`Coordination::fenced_txn`] of one put.
    async fn fenced_put(&self, leadership: &Leadership, key: &str, value: &[u8]) -> Result<(), CoordError> {
        let op = FencedOp::Put { key: key.to_owned(), value: value.to_vec() };
        self.fenced_txn(leadership, std::slice::from_ref(&op)).await
    }

    /// Gives leadership up at once: revokes the lease, which deletes the leader key.
    async fn resign(&self, leadership: Leadership) -> Result<(), CoordError>;

    /// Reads one key (not fenced: any instance may read).
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CoordError>;

    /// The keys under `prefix` from `from` on (inclusive; `from` starts with `prefix`), in key
    /// order, at most `limit` of them, with their values.
    async fn range(&self, prefix: &str, from: &str, limit: usize) -> Result<Vec<(String, Vec<u8>)>, CoordError>;

    /// Writes one key, not fenced (any instance may, e.g. to queue a request for the leader).
    async fn put(&self, key: &str, value: &[u8]) -> Result<(), CoordError>;

    /// Deletes one key, not fenced; whether it was there.
    async fn delete(&self, key: &str) -> Result<bool, CoordError>;
}
