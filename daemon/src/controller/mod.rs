//! The controller behind `remedy serve`: one loop, driven by a closed set of events, that keeps
//! the directories as the manifests declare.
//!
//! Events: the manifest set changed (or failed to load), a resync is due, a retry or an expiry is
//! due, a reconcile was requested, a plan was approved, a change watcher reported a managed
//! account changed ([`drift`]), shutdown. Each event that can change what should be done marks a
//! reconcile as wanted; events that arrive together (or while a pass runs) collapse into one pass,
//! and a pass over the whole set is never narrowed to a targeted one. A pass
//! ([`reconcile::run_pass`]) covers the whole set (or, for a change noticed between resyncs, the
//! changed accounts' manifests) and returns its result; the loop then applies the error policy ([`policy`]) to each account's verdict, writes
//! each manifest's status ([`conditions`]) and the metrics ([`metrics`]).
//!
//! Which manifests are in force is decided by [`remedy_policies::admission`]: a set that fails to
//! load as a whole keeps the last good set running; a single invalid manifest takes only itself
//! out, its last valid version staying in force; nothing is released while a rejected document
//! names no manifest.

mod clock;
mod conditions;
mod decide;
mod drift;
mod handle;
mod intake;
mod metrics;
mod notices;
mod once;
mod pass;
mod policy;
mod progress;
mod reconcile;
mod records;
mod recovery;
mod send;
mod store_call;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use remedy_policies::admission::Admission;
use remedy_policies::config::Guardrails;
use remedy_policies::contest::ContestLimits;
use remedy_policies::plan::PlanId;
use remedy_policies::{Identity, ManifestName};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::ad::WatchedAccount;
pub use crate::backoff::Backoff;
use crate::drift::{DriftSignal, DriftWiring};
pub use crate::metrics::{Metrics, PassOutcome};
pub use crate::providers::Providers;
use crate::schedule::ResyncSchedule;
use crate::store::{Store, StoreError};
use crate::watch::WatchEvent;
pub use clock::Clock;
pub use decide::Sent;
use handle::Requests;
pub use handle::{CommandError, ControllerHandle};
pub use once::apply_once;
pub use policy::{Verdict, WorkQueue};
pub use progress::{PassSummary, Progress};
pub use reconcile::PassResult;

/// How long a pass in flight at shutdown may take to finish before it is abandoned (its
/// journaled intents are then settled by the next start).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What set a pass off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    ManifestsChanged,
    Resync,
    Retry,
    Expiry,
    Requested,
    Approved,
    /// A managed account changed between resyncs: a targeted pass over its manifests.
    Drift,
}

/// Wants `trigger`: a pass over the whole set is never narrowed to a targeted one.
fn want(wanted: &mut Option<Trigger>, trigger: Trigger) {
    match wanted {
        None => *wanted = Some(trigger),
        Some(Trigger::Drift) if trigger != Trigger::Drift => *wanted = Some(trigger),
        Some(_) => {}
    }
}

/// What the controller is configured with.
#[derive(Debug)]
pub struct Settings {
    pub guardrails: Guardrails,
    pub resync: ResyncSchedule,
    /// The manifest directory (for the git commit of the set).
    pub manifest_dir: PathBuf,
    pub backoff: Backoff,
    /// From the store's open report: shown in the progress (and `/readyz`).
    pub store_moved_aside: Option<PathBuf>,
    /// When an account that keeps changing back is contested, and how corrections are spaced.
    pub contest: ContestLimits,
}

pub struct Controller {
    settings: Settings,
    store: Store,
    providers: Providers,
    clock: Clock,
    /// The error policy's state: retries due, actions parked.
    queue: WorkQueue,
    /// Outcomes that sent nothing, recorded once while they last.
    notices: notices::Notices,
    /// Which manifests are in force, which rejected.
    admission: Admission,
    commit: Option<String>,
    approvals: BTreeSet<PlanId>,
    /// Each manifest's accounts, by the names the last plan grouped them under.
    accounts_of: BTreeMap<ManifestName, BTreeSet<Identity>>,
    /// The generation each stored status is about, as this process last wrote it (unknown after
    /// a start): see [`conditions::mark_progressing`].
    status_generations: conditions::Written,
    /// A pass that failed on the store is retried with backoff too.
    store_failures: u32,
    store_retry_at: Option<DateTime<Utc>>,
    requests: Arc<Requests>,
    progress: watch::Sender<Progress>,
    metrics: Arc<Metrics>,
    /// Changes noticed between resyncs, and fights.
    drift: drift::Drift,
    drift_signals: Option<mpsc::Receiver<DriftSignal>>,
    watched_accounts: Option<watch::Sender<Vec<WatchedAccount>>>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("manifests", &self.admission.in_force().len()).finish_non_exhaustive()
    }
}

/// The operator surface's side of the controller that outlives one controller: requests,
/// progress, metrics. One instance has one controller for its life ([`Controller::new`] makes
/// both); with several instances, each term of leadership runs a controller of its own on the same
/// surface ([`Controller::on`]), so that the API keeps one handle.
#[derive(Debug, Clone)]
pub struct Surface {
    requests: Arc<Requests>,
    progress: watch::Sender<Progress>,
    metrics: Arc<Metrics>,
}

impl Surface {
    pub fn new(store_moved_aside: Option<PathBuf>) -> Surface {
        let initial = Progress { store_moved_aside, ..Progress::default() };
        let (progress, _) = watch::channel(initial);
        Surface { requests: Arc::new(Requests::default()), progress, metrics: Arc::new(Metrics::default()) }
    }

    /// The handle the API uses.
    pub fn handle(&self, store: Store, clock: Clock) -> ControllerHandle {
        ControllerHandle {
            requests: Arc::clone(&self.requests),
            progress: self.progress.subscribe(),
            metrics: Arc::clone(&self.metrics),
            store,
            clock,
        }
    }

    /// Between terms (several instances): what the last controller showed of its passes is
    /// no longer this instance's to show.
    pub fn stand_by(&self) {
        let moved_aside = self.progress.borrow().store_moved_aside.clone();
        self.progress.send_replace(Progress { store_moved_aside: moved_aside, ..Progress::default() });
    }
}

impl Controller {
    pub fn new(settings: Settings, store: Store, providers: Providers, clock: Clock) -> (Controller, ControllerHandle) {
        let surface = Surface::new(settings.store_moved_aside.clone());
        let handle = surface.handle(store.clone(), clock.clone());
        (Controller::on(settings, store, providers, clock, surface), handle)
    }

    /// A controller on an existing surface (a new term of leadership): it starts as after a
    /// restart, from what the store holds.
    pub fn on(settings: Settings, store: Store, providers: Providers, clock: Clock, surface: Surface) -> Controller {
        let Surface { requests, progress, metrics } = surface;
        requests.with(|p| p.closed = false);
        progress.send_modify(|p| p.shutting_down = false);
        let queue = WorkQueue::new(settings.backoff);
        Controller {
            settings,
            store,
            providers,
            clock,
            queue,
            notices: notices::Notices::default(),
            admission: Admission::default(),
            commit: None,
            approvals: BTreeSet::new(),
            accounts_of: BTreeMap::new(),
            status_generations: BTreeMap::new(),
            store_failures: 0,
            store_retry_at: None,
            requests,
            progress,
            metrics,
            drift: drift::Drift::default(),
            drift_signals: None,
            watched_accounts: None,
        }
    }

    /// Listens to the change watchers (`remedy serve` starts them: [`crate::drift::start`]).
    pub fn with_drift(mut self, wiring: DriftWiring) -> Controller {
        self.drift_signals = Some(wiring.signals);
        self.watched_accounts = wiring.accounts;
        self
    }

    /// Runs until `shutdown` turns true (or its sender is dropped). `manifests` brings the
    /// watcher's reports; `rescan` asks the watcher to re-read the directory (at each resync).
    pub async fn run(
        mut self,
        mut manifests: mpsc::Receiver<WatchEvent>,
        rescan: impl Fn(),
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), StoreError> {
        let mut wanted: Option<Trigger> = None;
        let mut next_resync = self.settings.resync.next_after(self.clock.now());
        // Approvals given before this start still count for their plan.
        match store_call::blocking(&self.store, |store| store.approvals()).await {
            Ok(approvals) => self.approvals = approvals,
            Err(error) => tracing::error!(
                %error,
                "cannot read the approvals given before this start: a plan held for approval needs approving again"
            ),
        }
        let mut watching = true;
        loop {
            if *shutdown.borrow() {
                break;
            }
            if let Some(trigger) = wanted.take() {
                if self.progress.borrow().loaded {
                    let requests = Arc::clone(&self.requests);
                    let finished = {
                        let pass = self.pass(trigger);
                        tokio::pin!(pass);
                        tokio::select! {
                            result = &mut pass => Some(result),
                            _ = shutdown.changed() => {
                                // Requests recorded from now on would not be acted on.
                                requests.with(|p| p.closed = true);
                                tracing::info!(grace_s = SHUTDOWN_GRACE.as_secs(), "shutting down: letting the reconcile in flight finish");
                                tokio::time::timeout(SHUTDOWN_GRACE, &mut pass).await.ok()
                            }
                        }
                    };
                    match finished {
                        Some(Ok(())) => {
                            self.store_failures = 0;
                            self.store_retry_at = None;
                        }
                        Some(Err(error)) => {
                            tracing::error!(%error, "the store failed during a reconcile: it is retried");
                            self.metrics.record_pass(PassOutcome::Error, Duration::ZERO);
                            self.progress.send_modify(|p| p.store_error = Some(error.to_string()));
                            self.store_failures += 1;
                            let delay = self.settings.backoff.delay(self.store_failures, fastrand::f64());
                            self.store_retry_at = Some(
                                self.clock.now() + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX),
                            );
                        }
                        None => {
                            tracing::warn!("the reconcile in flight was abandoned at shutdown; its journaled actions are re-checked at the next start");
                        }
                    }
                    continue;
                }
            }
            let now = self.clock.now();
            let (wake_at, wake_trigger) = self.next_wake(now, next_resync);
            let sleep = async {
                match wake_at {
                    Some(at) => self.clock.sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                event = manifests.recv(), if watching => match event {
                    Some(event) => {
                        if self.on_manifests(event).await {
                            want(&mut wanted, Trigger::ManifestsChanged);
                        }
                    }
                    None => {
                        tracing::error!("the manifest watcher stopped: changes are picked up at each resync only");
                        watching = false;
                    }
                },
                signal = next_signal(&mut self.drift_signals) => match signal {
                    Some(signal) => self.on_drift(signal, &mut wanted),
                    None => {
                        tracing::error!("the change watchers stopped: changes are picked up at each resync only");
                        self.drift_signals = None;
                    }
                },
                _ = self.requests.wake.notified() => {
                    if let Some(trigger) = self.take_requests() {
                        want(&mut wanted, trigger);
                    }
                }
                _ = sleep => {
                    if wake_trigger == Trigger::Resync {
                        rescan();
                        next_resync = self.settings.resync.next_after(self.clock.now());
                        self.progress.send_modify(|p| p.last_resync = Some(now));
                    }
                    if wake_trigger == Trigger::Drift && !self.drift.release_waiting(self.clock.now()) {
                        continue;
                    }
                    want(&mut wanted, wake_trigger);
                }
            }
            // Whatever else is already waiting joins this pass.
            while let Ok(event) = manifests.try_recv() {
                if self.on_manifests(event).await {
                    want(&mut wanted, Trigger::ManifestsChanged);
                }
            }
            while let Some(Ok(signal)) = self.drift_signals.as_mut().map(mpsc::Receiver::try_recv) {
                self.on_drift(signal, &mut wanted);
            }
        }
        self.requests.with(|p| p.closed = true);
        self.progress.send_modify(|p| p.shutting_down = true);
        self.store.flush()?;
        tracing::info!("stopped; the store is flushed");
        Ok(())
    }

    /// The next timed wake: the resync, the earliest retry, the earliest expiry to come.
    fn next_wake(&self, now: DateTime<Utc>, next_resync: Option<DateTime<Utc>>) -> (Option<DateTime<Utc>>, Trigger) {
        let expiry = self.admission.in_force().values().filter_map(|m| m.spec.expires).filter(|at| *at > now).min();
        let candidates = [
            (next_resync, Trigger::Resync),
            (self.queue.next_retry(), Trigger::Retry),
            (self.store_retry_at, Trigger::Retry),
            (expiry, Trigger::Expiry),
            (self.drift.next_correction(), Trigger::Drift),
        ];
        candidates
            .into_iter()
            .filter_map(|(at, trigger)| at.map(|at| (at, trigger)))
            .min_by_key(|(at, _)| *at)
            .map_or((None, Trigger::Resync), |(at, trigger)| (Some(at), trigger))
    }

    /// A watcher's report: a targeted pass for the managed accounts it names, or a full one.
    fn on_drift(&mut self, signal: DriftSignal, wanted: &mut Option<Trigger>) {
        match self.drift.on_signal(signal) {
            drift::Wanted::Nothing => {}
            drift::Wanted::Targeted => want(wanted, Trigger::Drift),
            drift::Wanted::Full => want(wanted, Trigger::Resync),
        }
    }

    /// Acts on the operator requests recorded since the last look.
    fn take_requests(&mut self) -> Option<Trigger> {
        let pending = self.requests.with(std::mem::take);
        for approved in pending.approvals.iter().cloned() {
            self.approvals.insert(approved);
        }
        for manifest in pending.unpark {
            match manifest {
                None => self.queue.unpark(None),
                // The accounts the manifest's group went by in the last plan (parked failures are
                // kept under those names), and its own target.
                Some(name) => {
                    let mut accounts = self.accounts_of.get(&name).cloned().unwrap_or_default();
                    accounts.extend(self.admission.in_force().get(&name).map(|m| m.spec.target.identity.clone()));
                    self.queue.unpark(Some(&accounts));
                }
            }
        }
        if !pending.approvals.is_empty() {
            Some(Trigger::Approved)
        } else if pending.reconcile {
            Some(Trigger::Requested)
        } else {
            None
        }
    }
}

/// The next watcher report, or never when there are no watchers.
async fn next_signal(signals: &mut Option<mpsc::Receiver<DriftSignal>>) -> Option<DriftSignal> {
    match signals {
        Some(signals) => signals.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
