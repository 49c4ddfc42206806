//! Several `remedy serve` instances on etcd, one of them acting (issue 18).
//!
//! - **One leader acts.** Every instance campaigns ([`crate::coord`]); the one elected runs the
//!   controller, the change watchers and the notifier for as long as its lease surely lasts (a
//!   *term*); the others are standbys that follow the store's write log, serve the read API and
//!   the web page, and queue operator requests for the leader ([`requests`]).
//! - **One store.** Every write of the store is an entry of one log in etcd, made only by the
//!   leader, fenced on its leadership (`store::replica`, [`log`]); every instance's sled store is a
//!   replica of that log. A new leader first applies the whole log, so it holds the previous
//!   leader's journal and continues the same hash chain; it settles interrupted intents by the
//!   recovery protocol (observe, never re-send blindly), as after a crash.
//! - **Fencing of sends** ([`gate`]): no send starts with `sendTimeout` or less of the lease
//!   surely left, and every send is cut at `sendTimeout`.
//! - **Losing etcd** (its quorum, or every member): keepalives fail, the lease runs out, the gate
//!   refuses every send, the term ends; the instance reports `etcd-unavailable` and campaigns again
//!   until etcd answers.

pub mod gate;
mod log;
pub mod requests;

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use utoipa::ToSchema;

use crate::coord::etcd::EtcdCoordination;
use crate::coord::{CoordError, Coordination, Leadership};
use crate::store::{Store, StoreError, WriteLog};
use gate::{CurrentLeadership, SendGate};
use requests::QueuedRequest;

/// Why an instance cannot start in HA mode.
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    #[error(
        "the store {} holds history written by a single instance (not by the shared log): several instances start from an empty store of their own and share the log's history; keep this store for the record and give store.path a new directory",
        .0.display()
    )]
    SingleInstanceStore(std::path::PathBuf),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a standby reads the log's new entries and who leads.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(200);
/// How many log entries are read at a time.
const READ_BATCH: usize = 64;
/// How often a leader checks that its lease still holds.
const LEASE_CHECK: Duration = Duration::from_millis(100);
/// How long resigning may take at the end of a term.
const RESIGN_PATIENCE: Duration = Duration::from_secs(2);

/// What an instance is configured with.
#[derive(Debug, Clone)]
pub struct HaSettings {
    pub instance_id: String,
    pub prefix: String,
    pub lease_ttl: Duration,
    pub send_timeout: Duration,
}

/// This instance's part, as status, `/readyz` and metrics show it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HaState {
    pub instance_id: String,
    pub role: Role,
    /// Who leads, as last seen (`null`: no one, or unknown).
    pub leader: Option<LeaderView>,
    /// Since when this instance leads (its own clock).
    pub leading_since: Option<DateTime<Utc>>,
    /// How much of this leader's lease surely remains.
    pub lease_remaining_seconds: Option<f64>,
    pub lease_ttl_seconds: u64,
    /// The last entry of the store's write log applied to this instance's store.
    pub replicated_through: u64,
    /// Whether this instance has applied every log entry it knows of.
    pub caught_up: bool,
    /// etcd's last answer when it could not act.
    pub etcd_error: Option<String>,
    /// How many times this instance became leader.
    pub terms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
#[schema(as = HaRole)]
pub enum Role {
    Leader,
    Standby,
    /// etcd cannot act (no quorum, or unreachable): this instance neither acts nor knows who does.
    EtcdUnavailable,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Standby => "standby",
            Role::EtcdUnavailable => "etcd-unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaderView {
    pub instance_id: String,
    pub since: Option<DateTime<Utc>>,
}

/// What the API sees of the HA runtime. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HaView {
    state: watch::Receiver<HaState>,
    store: Store,
    current: CurrentLeadership,
    coord: EtcdCoordination,
    prefix: String,
    gate: SendGate,
}

impl HaView {
    /// The state now (the lease's remaining time and the last log entry applied read at this
    /// moment: a leader applies its own entries as it writes them).
    pub fn state(&self) -> HaState {
        let mut state = self.state.borrow().clone();
        state.lease_remaining_seconds = self.leadership().map(|l| l.remaining().as_secs_f64());
        match self.store.replica_applied() {
            Ok(applied) => state.replicated_through = state.replicated_through.max(applied),
            Err(error) => tracing::warn!(%error, "cannot read how far the store applied the log"),
        }
        state
    }

    /// Whether this instance leads now.
    pub fn is_leader(&self) -> bool {
        self.leadership().is_some_and(|l| l.lost().is_none())
    }

    /// Sends refused by the lease check so far.
    pub fn refused_sends(&self) -> u64 {
        self.gate.refused()
    }

    /// Queues an operator request for the leader (made on a standby).
    pub async fn queue(&self, request: &QueuedRequest) -> Result<(), CoordError> {
        requests::submit(&self.coord, &self.prefix, request).await
    }

    fn leadership(&self) -> Option<Arc<Leadership>> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// One term of leadership, handed to the code that acts during it.
#[derive(Debug)]
pub struct Term {
    /// Turns true when the term ends (the lease is lost, or remedy shuts down): stop acting.
    pub ended: watch::Receiver<bool>,
    /// Whether the term ended because remedy shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// The HA runtime of one instance.
#[derive(Debug)]
pub struct Ha {
    coord: EtcdCoordination,
    settings: HaSettings,
    store: Store,
    current: CurrentLeadership,
    gate: SendGate,
    state: watch::Sender<HaState>,
}

impl Ha {
    /// The runtime of `store`, and the store replicated through the shared log (every write of it
    /// goes to the log first; use only this one). A store half-way through applying an entry is
    /// emptied here to be rebuilt from the log; one written by a single instance is refused (its
    /// history would be lost).
    pub fn new(coord: EtcdCoordination, settings: HaSettings, store: Store) -> Result<(Ha, Store), HaError> {
        if store.written_without_log()? {
            return Err(HaError::SingleInstanceStore(store.path().to_path_buf()));
        }
        if store.replica_needs_rebuild()? {
            tracing::warn!(store = %store.path().display(), "the store was stopped while applying an entry of the shared log: it is emptied and rebuilt from the log");
            store.clear_replica()?;
        }
        let current: CurrentLeadership = Arc::new(Mutex::new(None));
        let gate = SendGate::leased(Arc::clone(&current), settings.send_timeout);
        let state = HaState {
            instance_id: settings.instance_id.clone(),
            role: Role::Standby,
            leader: None,
            leading_since: None,
            lease_remaining_seconds: None,
            lease_ttl_seconds: settings.lease_ttl.as_secs(),
            replicated_through: store.replica_applied()?,
            caught_up: false,
            etcd_error: None,
            terms: 0,
        };
        let (state, _) = watch::channel(state);
        let log: Arc<dyn WriteLog> = Arc::new(log::EtcdLog {
            coord: coord.clone(),
            prefix: settings.prefix.clone(),
            current: Arc::clone(&current),
            runtime: tokio::runtime::Handle::current(),
        });
        let store = store.replicated_through(log);
        Ok((Ha { coord, settings, store: store.clone(), current, gate, state }, store))
    }

    /// The check every send of this instance passes.
    pub fn gate(&self) -> SendGate {
        self.gate.clone()
    }

    pub fn view(&self) -> HaView {
        HaView {
            state: self.state.subscribe(),
            store: self.store.clone(),
            current: Arc::clone(&self.current),
            coord: self.coord.clone(),
            prefix: self.settings.prefix.clone(),
            gate: self.gate.clone(),
        }
    }

    pub fn settings(&self) -> &HaSettings {
        &self.settings
    }

    pub fn coordination(&self) -> &EtcdCoordination {
        &self.coord
    }

    /// Takes queued requests for `handle` while the term lasts (run it in the term).
    pub async fn serve_requests(&self, handle: crate::controller::ControllerHandle, ended: watch::Receiver<bool>) {
        requests::serve_queue(self.coord.clone(), self.settings.prefix.clone(), handle, ended).await;
    }

    /// Campaigns, follows the log while standing by, and runs `lead` for each term won, until
    /// `shutdown` turns true. `lead` must return once its term's `ended` turns true.
    pub async fn run<F, Fut>(&self, mut lead: F, shutdown: watch::Receiver<bool>)
    where
        F: FnMut(Term) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let mut shutdown_changes = shutdown.clone();
        loop {
            if *shutdown.borrow() {
                break;
            }
            self.state.send_modify(|s| {
                s.role = if s.etcd_error.is_some() { Role::EtcdUnavailable } else { Role::Standby };
                s.leading_since = None;
            });
            let won = tokio::select! {
                won = self.coord.campaign(&self.settings.instance_id, self.settings.lease_ttl) => won,
                () = self.follow() => unreachable!("following the log ends only with the campaign"),
                _ = shutdown_changes.changed() => break,
            };
            let leadership = match won {
                Ok(leadership) => Arc::new(leadership),
                Err(error) => {
                    tracing::warn!(%error, "campaign for leadership failed: standing by, trying again");
                    self.note_etcd(Err(&error));
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown_changes.changed() => break,
                    }
                    continue;
                }
            };
            // The whole log first: this instance's store then holds everything the previous
            // leader wrote, its unsettled intents included.
            if let Err(error) = self.catch_up().await {
                tracing::error!(%error, "elected, but cannot read the whole log: resigning");
                self.note_etcd(Err(&error));
                self.end(leadership).await;
                continue;
            }
            *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::clone(&leadership));
            let since = Utc::now();
            self.state.send_modify(|s| {
                s.role = Role::Leader;
                s.leading_since = Some(since);
                s.leader = Some(LeaderView { instance_id: self.settings.instance_id.clone(), since: Some(since) });
                s.etcd_error = None;
                s.terms += 1;
            });
            tracing::info!(instance = %self.settings.instance_id, replicated_through = self.state.borrow().replicated_through, "leading: acting from now on");
            let (end, ended) = watch::channel(false);
            let watch_lease = {
                let leadership = Arc::clone(&leadership);
                let mut shutdown = shutdown.clone();
                async move {
                    loop {
                        if let Some(why) = leadership.lost() {
                            tracing::warn!(why, "leadership lost: this instance stops acting");
                            break;
                        }
                        if leadership.remaining().is_zero() {
                            tracing::warn!("the lease ran out without a renewal (etcd unreachable or without quorum): this instance stops acting");
                            break;
                        }
                        if *shutdown.borrow() {
                            break;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(LEASE_CHECK) => {}
                            _ = shutdown.changed() => {}
                        }
                    }
                    let _ = end.send(true);
                }
            };
            let watcher = tokio::spawn(watch_lease);
            if let Err(error) = lead(Term { ended, shutdown: shutdown.clone() }).await {
                tracing::error!(error = %format!("{error:#}"), "the term ended on an error: resigning");
            }
            watcher.abort();
            self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
            if leadership.lost().is_some() || leadership.remaining().is_zero() {
                self.note_etcd(Err(&CoordError::Unavailable {
                    endpoint: String::new(),
                    answer: leadership.lost().unwrap_or_else(|| "the lease was not renewed in time".to_owned()),
                }));
            }
            self.end(leadership).await;
        }
        tracing::info!("stopped campaigning");
    }

    /// Gives up a term's leadership: resigns when etcd answers (a standby takes over at once),
    /// else lets the lease expire.
    async fn end(&self, leadership: Arc<Leadership>) {
        self.state.send_modify(|s| {
            s.leading_since = None;
            if s.role == Role::Leader {
                s.role = Role::Standby;
            }
        });
        match Arc::try_unwrap(leadership) {
            Ok(leadership) => match tokio::time::timeout(RESIGN_PATIENCE, self.coord.resign(leadership)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "cannot resign: the lease expires by itself"),
                Err(_) => tracing::warn!("resigning took too long: the lease expires by itself"),
            },
            Err(shared) => shared.let_lapse(),
        }
    }

    /// Standing by: applies the log's new entries and notes who leads, forever.
    async fn follow(&self) {
        loop {
            let applied = self.catch_up().await.map(drop);
            let leader = self.coord.observe_leader().await;
            match (&applied, &leader) {
                (Ok(()), Ok(_)) => self.note_etcd(Ok(())),
                (Err(error), _) => self.note_etcd(Err(error)),
                (_, Err(error)) => self.note_etcd(Err(error)),
            }
            if let Ok(leader) = leader {
                self.state.send_modify(|s| {
                    s.leader = leader.map(|l| LeaderView { instance_id: l.instance_id, since: l.leading_since });
                });
            }
            tokio::time::sleep(FOLLOW_INTERVAL).await;
        }
    }

    /// Applies every log entry after the last one this store applied; returns the last applied.
    pub async fn catch_up(&self) -> Result<u64, CoordError> {
        let entries = log::entries_prefix(&self.settings.prefix);
        loop {
            let applied = self.applied()?;
            let from = log::entry_key(&self.settings.prefix, applied + 1);
            let batch = self.coord.range(&entries, &from, READ_BATCH).await?;
            if batch.is_empty() {
                self.state.send_modify(|s| {
                    s.replicated_through = applied;
                    s.caught_up = true;
                });
                return Ok(applied);
            }
            self.state.send_modify(|s| s.caught_up = false);
            let store = self.store.clone();
            let prefix = self.settings.prefix.clone();
            let last = tokio::task::spawn_blocking(move || -> Result<u64, StoreError> {
                let mut last = 0;
                for (key, value) in batch {
                    let Some(seq) = log::entry_seq(&prefix, &key) else { continue };
                    store.apply_log_entry(seq, &value)?;
                    last = seq;
                }
                Ok(last)
            })
            .await
            .map_err(|join| local_failure(join.to_string()))?
            .map_err(|error| local_failure(error.to_string()))?;
            self.state.send_modify(|s| s.replicated_through = last.max(s.replicated_through));
        }
    }

    fn applied(&self) -> Result<u64, CoordError> {
        self.store.replica_applied().map_err(|error| local_failure(error.to_string()))
    }

    fn note_etcd(&self, result: Result<(), &CoordError>) {
        self.state.send_modify(|s| match result {
            Ok(()) => {
                s.etcd_error = None;
                if s.role == Role::EtcdUnavailable {
                    s.role = Role::Standby;
                }
            }
            Err(error) => {
                s.etcd_error = Some(error.to_string());
                if s.role != Role::Leader && error.is_transient() {
                    s.role = Role::EtcdUnavailable;
                }
            }
        });
    }
}

/// The local store failed while applying the log: reported as a refusal (not etcd's fault, not
/// transient).
fn local_failure(detail: String) -> CoordError {
    CoordError::Refused { endpoint: "local store".to_owned(), answer: detail }
}
