//! What the change watchers tell the controller between resyncs: objects that changed (an AD
//! account by `objectGUID`, an Entra ID user by object id), or that a watermark can no longer be
//! trusted and only a full pass is safe. The watchers know nothing of manifests: the controller
//! maps what changed to the identities it manages and drops the rest.

use std::path::Path;

use remedy_policies::config::Config;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::ad::{AdError, ChangeWatcher, WatchedAccount};
use crate::metrics::Metrics;

/// How a change was noticed (the `source` label of the re-containment metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DriftSource {
    /// An LDAP change notification.
    Notification,
    /// A `uSNChanged` poll (where notification is off, refused or does not reach), or the catch-up
    /// after a notification connection dropped.
    Poll,
    /// A Graph delta query round.
    Delta,
}

impl DriftSource {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftSource::Notification => "notification",
            DriftSource::Poll => "poll",
            DriftSource::Delta => "delta",
        }
    }
}

impl std::fmt::Display for DriftSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object that changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangedObject {
    /// An AD object, with the `uSNChanged` the DC gave the change (per DC).
    AdAccount { guid: Uuid, usn: u64 },
    /// An Entra ID user, by object id.
    EntraUser { id: String },
}

/// A watcher's report.
#[derive(Debug, Clone)]
pub enum DriftSignal {
    Changed {
        objects: Vec<ChangedObject>,
        source: DriftSource,
        /// When the watcher learned of it: the start of the re-containment latency.
        noticed: tokio::time::Instant,
    },
    /// What changed since the last look cannot be told (a DC restored from backup, a delta token
    /// that expired): only a pass over the whole set is safe.
    Resync { why: String, source: DriftSource },
}

/// The watchers' side of the controller: their reports, and where the managed AD accounts are
/// published after each full pass (what the AD watcher covers).
#[derive(Debug)]
pub struct DriftWiring {
    pub signals: mpsc::Receiver<DriftSignal>,
    pub accounts: Option<watch::Sender<Vec<WatchedAccount>>>,
}

/// Starts the change watchers the configuration asks for (AD: notification and/or USN polling;
/// `activeDirectory.watch`) as tasks that end when the controller drops its side. `None` when
/// nothing is watched: changes are then picked up at each resync only.
pub fn start(config: &Config, config_dir: &Path, metrics: &Metrics) -> Result<Option<DriftWiring>, AdError> {
    let Some(ad) = &config.active_directory else { return Ok(None) };
    if !ad.watch.notification && ad.watch.poll_interval.is_zero() {
        tracing::info!(
            "activeDirectory.watch: notification off and pollInterval 0s: AD changes are picked up at each resync only"
        );
        return Ok(None);
    }
    let (signals_tx, signals) = mpsc::channel(1024);
    let (accounts, accounts_rx) = watch::channel(Vec::new());
    let watcher = ChangeWatcher::new(ad, config_dir)?;
    metrics.watch_ldap(watcher.stats());
    tokio::spawn(watcher.run(accounts_rx, signals_tx));
    Ok(Some(DriftWiring { signals, accounts: Some(accounts) }))
}
