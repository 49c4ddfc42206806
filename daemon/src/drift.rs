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
use tokio::sync::{mpsc, oneshot, watch};
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

/// How long [`start`] waits for the watchers' first watermark (the DC's USN, a delta link) before
/// the controller's first pass; one taken later asks for a full pass of its own.
const FIRST_WATERMARK_WAIT: Duration = Duration::from_secs(5);

/// Starts the change watchers the configuration asks for as tasks that end when the controller
/// drops its side: in AD, change notification and/or USN polling (`activeDirectory.watch`); in
/// Entra ID, Graph delta rounds every `entraId.deltaInterval` (the delta link kept in `store`).
/// `None` when nothing is watched: changes are then picked up at each resync only.
///
/// Watch first, then read: it waits (up to five seconds) until each watcher holds its first
/// watermark, so that what changes after the controller's first read is reported.
pub async fn start(
    config: &Config,
    config_dir: &Path,
    store: &Store,
    metrics: &Metrics,
) -> anyhow::Result<Option<DriftWiring>> {
    let (signals_tx, signals) = mpsc::channel(1024);
    let mut watching = false;
    let mut accounts = None;
    let mut ready = Vec::new();
    if let Some(ad) = &config.active_directory {
        if !ad.watch.notification && ad.watch.poll_interval.is_zero() {
            tracing::info!("activeDirectory.watch: notification off and pollInterval 0s: AD changes are picked up at each resync only");
        } else {
            let (sender, receiver) = watch::channel(Vec::new());
            let watcher = ChangeWatcher::new(ad, config_dir)
                .context("cannot set up the watch for changes in Active Directory")?;
            metrics.watch_ldap(watcher.stats());
            let (ready_tx, ready_rx) = oneshot::channel();
            tokio::spawn(watcher.run(receiver, signals_tx.clone(), ready_tx));
            ready.push(ready_rx);
            accounts = Some(sender);
            watching = true;
        }
    }
    if let Some(entra) = config.entra_id.as_ref().filter(|e| !e.delta_interval.is_zero()) {
        let graph = GraphDirectory::with_options(entra, config_dir, daemon_graph_options())
            .with_context(|| format!("cannot set up Graph delta query for tenant {}", entra.tenant_id))?;
        let graph = Arc::new(graph);
        metrics.watch_graph(Arc::clone(&graph));
        let (ready_tx, ready_rx) = oneshot::channel();
        tokio::spawn(follow_entra(graph, store.clone(), entra.delta_interval, signals_tx, ready_tx));
        ready.push(ready_rx);
        watching = true;
    }
    let _ = tokio::time::timeout(FIRST_WATERMARK_WAIT, futures::future::join_all(ready)).await;
    Ok(watching.then_some(DriftWiring { signals, accounts }))
}

/// Graph delta rounds every `interval` until the controller is gone: the users that changed are
/// reported (the controller keeps those it manages). Without a kept link, the first round starts
/// from now (`ready` is told then). An expired token: a link from now is taken first, then a full
/// pass is asked for, so that nothing falls between the two. Other errors are retried at the next
/// round.
async fn follow_entra(
    graph: Arc<GraphDirectory>,
    store: Store,
    interval: Duration,
    signals: mpsc::Sender<DriftSignal>,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let kept = match store.entra_delta_link() {
        Ok(link) => link,
        Err(error) => {
            tracing::warn!(%error, "cannot read the kept Graph delta link: starting from now");
            None
        }
    };
    if kept.is_some() {
        // Whatever changed since the kept link is reported by the first round.
        ready.take().map(|ready| ready.send(()));
    }
    let mut link = kept;
    // A full pass to ask for once a link from now is held (the token expired, or the first link
    // came after the controller's first read).
    let mut resync: Option<String> = None;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    loop {
        if !first || link.is_some() {
            tokio::select! {
                _ = tick.tick() => {}
                _ = signals.closed() => return,
            }
        }
        first = false;
        let from = link.clone().map_or(DeltaFrom::Latest, DeltaFrom::Link);
        match graph.delta(from).await {
            Ok(round) => {
                if let Err(error) = store.set_entra_delta_link(Some(&round.delta_link)) {
                    tracing::warn!(%error, "cannot keep the Graph delta link: a restart starts from now");
                }
                link = Some(round.delta_link);
                if let Some(ready) = ready.take() {
                    if ready.send(()).is_err() {
                        resync = Some("the first Graph delta link was taken after the first pass began".to_owned());
                    }
                }
                if let Some(why) = resync.take() {
                    if signals.send(DriftSignal::Resync { why, source: DriftSource::Delta }).await.is_err() {
                        return;
                    }
                }
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
                tracing::warn!(%error, "the Graph delta link expired: starting again from now, then a full pass");
                let _ = store.set_entra_delta_link(None);
                // At once for an expired link; a round from now that fails so waits for the tick.
                first = link.take().is_some();
                resync = Some(error.to_string());
            }
            Err(error) => tracing::warn!(%error, "a Graph delta round failed: tried again at the next"),
        }
    }
}
