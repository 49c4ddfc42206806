//! What the change watchers tell the controller between resyncs: objects that changed (an AD
//! account by `objectGUID`, an Entra ID user by object id), or that a watermark can no longer be
//! trusted and only a full pass is safe. The watchers know nothing of manifests: the controller
//! maps what changed to the identities it manages and drops the rest.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use remedy_policies::config::Config;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::ad::{ChangeWatcher, WatchedAccount};
use crate::entra::{DeltaFrom, EntraError, GraphDirectory};
use crate::metrics::Metrics;
use crate::providers::daemon_graph_options;
use crate::store::Store;

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

/// Starts the change watchers the configuration asks for as tasks that end when the controller
/// drops its side: in AD, change notification and/or USN polling (`activeDirectory.watch`); in
/// Entra ID, Graph delta rounds every `entraId.deltaInterval` (the delta link kept in `store`).
/// `None` when nothing is watched: changes are then picked up at each resync only.
pub fn start(
    config: &Config,
    config_dir: &Path,
    store: &Store,
    metrics: &Metrics,
) -> anyhow::Result<Option<DriftWiring>> {
    let (signals_tx, signals) = mpsc::channel(1024);
    let mut watching = false;
    let mut accounts = None;
    if let Some(ad) = &config.active_directory {
        if !ad.watch.notification && ad.watch.poll_interval.is_zero() {
            tracing::info!("activeDirectory.watch: notification off and pollInterval 0s: AD changes are picked up at each resync only");
        } else {
            let (sender, receiver) = watch::channel(Vec::new());
            let watcher = ChangeWatcher::new(ad, config_dir)
                .context("cannot set up the watch for changes in Active Directory")?;
            metrics.watch_ldap(watcher.stats());
            tokio::spawn(watcher.run(receiver, signals_tx.clone()));
            accounts = Some(sender);
            watching = true;
        }
    }
    if let Some(entra) = config.entra_id.as_ref().filter(|e| !e.delta_interval.is_zero()) {
        let graph = GraphDirectory::with_options(entra, config_dir, daemon_graph_options())
            .with_context(|| format!("cannot set up Graph delta query for tenant {}", entra.tenant_id))?;
        let graph = Arc::new(graph);
        metrics.watch_graph(Arc::clone(&graph));
        tokio::spawn(follow_entra(graph, store.clone(), entra.delta_interval, signals_tx));
        watching = true;
    }
    Ok(watching.then_some(DriftWiring { signals, accounts }))
}

/// Graph delta rounds every `interval` until the controller is gone: the users that changed are
/// reported (the controller keeps those it manages); an expired token asks for a full pass and
/// starts again from now; other errors are retried at the next round.
async fn follow_entra(
    graph: Arc<GraphDirectory>,
    store: Store,
    interval: Duration,
    signals: mpsc::Sender<DriftSignal>,
) {
    let kept = match store.entra_delta_link() {
        Ok(link) => link,
        Err(error) => {
            tracing::warn!(%error, "cannot read the kept Graph delta link: starting from now");
            None
        }
    };
    let mut from = kept.map_or(DeltaFrom::Latest, DeltaFrom::Link);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = signals.closed() => return,
        }
        match graph.delta(from.clone()).await {
            Ok(round) => {
                if let Err(error) = store.set_entra_delta_link(Some(&round.delta_link)) {
                    tracing::warn!(%error, "cannot keep the Graph delta link: a restart starts from now");
                }
                from = DeltaFrom::Link(round.delta_link);
                if !round.changed.is_empty() {
                    tracing::debug!(users = round.changed.len(), pages = round.pages, "Graph delta: users changed");
                    let objects =
                        round.changed.into_iter().map(|user| ChangedObject::EntraUser { id: user.id }).collect();
                    let signal = DriftSignal::Changed {
                        objects,
                        source: DriftSource::Delta,
                        noticed: tokio::time::Instant::now(),
                    };
                    if signals.send(signal).await.is_err() {
                        return;
                    }
                }
            }
            Err(error @ EntraError::DeltaExpired { .. }) => {
                let _ = store.set_entra_delta_link(None);
                from = DeltaFrom::Latest;
                let signal = DriftSignal::Resync { why: error.to_string(), source: DriftSource::Delta };
                if signals.send(signal).await.is_err() {
                    return;
                }
            }
            Err(error) => tracing::warn!(%error, "a Graph delta round failed: tried again at the next"),
        }
    }
}
