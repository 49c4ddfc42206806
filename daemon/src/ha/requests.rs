//! Operator requests made on a standby, queued through etcd for the leader (issue 18): a standby
//! puts `<prefix>requests/<uuid>`; the leader takes each in key order, acts on it through its
//! controller handle (which records it in the history, as a request made on the leader is) and
//! deletes the key. A request waits there while no instance leads; nothing is lost.

use std::time::Duration;

use chrono::{DateTime, Utc};
use remedy_policies::plan::PlanId;
use remedy_policies::ManifestName;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::controller::{CommandError, ControllerHandle};
use crate::coord::etcd::EtcdCoordination;
use crate::coord::{CoordError, Coordination};

/// How often the leader looks for queued requests.
const POLL: Duration = Duration::from_millis(300);

/// One request, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedRequest {
    /// The caller's token name.
    pub by: String,
    pub comment: Option<String>,
    /// When the standby queued it.
    pub at: DateTime<Utc>,
    /// The instance that queued it.
    pub via: String,
    #[serde(flatten)]
    pub kind: RequestKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RequestKind {
    /// A reconcile of one manifest, or of everything.
    Reconcile { manifest: Option<ManifestName> },
    /// An approval of a held plan.
    Approve { plan_id: PlanId },
}

pub(super) fn queue_prefix(prefix: &str) -> String {
    format!("{prefix}requests/")
}

/// Queues `request` for the leader.
pub(super) async fn submit(coord: &EtcdCoordination, prefix: &str, request: &QueuedRequest) -> Result<(), CoordError> {
    // Time-ordered keys: the leader takes them in the order they were made.
    let key = format!(
        "{}{}-{}-{:016x}",
        queue_prefix(prefix),
        request.at.format("%Y%m%dT%H%M%S%.6fZ"),
        request.via,
        fastrand::u64(..)
    );
    let value = serde_json::to_vec(request).map_err(|e| CoordError::Refused {
        endpoint: String::new(),
        answer: format!("cannot encode the request: {e}"),
    })?;
    coord.put(&key, &value).await
}

/// The leader's side: takes queued requests and hands them to `handle` until `ended` turns true.
pub(super) async fn serve_queue(
    coord: EtcdCoordination,
    prefix: String,
    handle: ControllerHandle,
    mut ended: watch::Receiver<bool>,
) {
    let queue = queue_prefix(&prefix);
    loop {
        if *ended.borrow() {
            return;
        }
        match coord.range(&queue, &queue, 50).await {
            Ok(entries) => {
                for (key, value) in entries {
                    if *ended.borrow() {
                        return;
                    }
                    take(&coord, &handle, &key, &value).await;
                }
            }
            Err(error) => tracing::debug!(%error, "cannot read the queued requests"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = ended.changed() => {}
        }
    }
}

/// Acts on one queued request and deletes it (also when it cannot be acted on: it is logged).
async fn take(coord: &EtcdCoordination, handle: &ControllerHandle, key: &str, value: &[u8]) {
    let request: QueuedRequest = match serde_json::from_slice(value) {
        Ok(request) => request,
        Err(error) => {
            tracing::error!(key, %error, "a queued request that cannot be read: dropped");
            let _ = coord.delete(key).await;
            return;
        }
    };
    let done = match &request.kind {
        RequestKind::Reconcile { manifest } => {
            handle.reconcile(&request.by, manifest.clone(), request.comment.clone()).await
        }
        RequestKind::Approve { plan_id } => handle.approve(plan_id.clone(), &request.by, request.comment.clone()).await,
    };
    match done {
        Ok(()) => {
            tracing::info!(by = %request.by, via = %request.via, request = ?request.kind, "acted on a request queued on a standby")
        }
        Err(CommandError::ShuttingDown) | Err(CommandError::Store(_)) => {
            // Left queued: the next leader (or this one, later) takes it.
            tracing::warn!(key, "a queued request could not be taken now: left queued");
            return;
        }
        Err(error) => {
            tracing::warn!(by = %request.by, via = %request.via, request = ?request.kind, %error, "a request queued on a standby was refused by the leader")
        }
    }
    if let Err(error) = coord.delete(key).await {
        tracing::warn!(key, %error, "cannot delete a queued request that was acted on: it may be acted on again");
    }
}
