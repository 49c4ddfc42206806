//! The controller behind `remedy serve`: one loop, driven by a closed set of events, that keeps
//! the directories as the manifests declare.
//!
//! Events: the manifest set changed (or failed to load), a resync is due, a retry or an expiry is
//! due, a reconcile was requested, a plan was approved, shutdown. Each event that can change what
//! should be done marks a reconcile as wanted; events that arrive together (or while a pass runs)
//! collapse into one pass. A pass ([`reconcile::run_pass`]) covers the whole set; the error
//! policy ([`policy`]) decides each account's retry; [`conditions`] writes each manifest's status.
//!
//! Manifests: a set that fails to load as a whole keeps the last good set running; a single
//! invalid manifest takes only itself out — its last valid version stays in force (an invalid
//! edit must not release an account), and its status is `Stalled/Invalid` with the file, line and
//! column. A manifest that leaves the set is released only when every rejected document of the
//! set can be attributed to a manifest by name: one that cannot (a file that is not YAML) might be
//! the manifest that seems to be gone.

mod clock;
mod conditions;
mod policy;
mod reconcile;
mod recovery;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use remedy_policies::config::Guardrails;
use remedy_policies::load::ManifestSet;
use remedy_policies::plan::{Approval, PlanId};
use remedy_policies::{Manifest, ManifestName, Provider};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

pub use clock::Clock;
pub use policy::{Backoff, Verdict, WorkQueue};

use crate::metrics::{Metrics, PassOutcome};
use crate::model::{ApprovalEvent, ConditionReason, ConditionStatus, ConditionType, Event, ReconcileRequestEvent};
use crate::providers::Providers;
use crate::schedule::ResyncSchedule;
use crate::store::{Store, StoreError};
use crate::watch::WatchEvent;

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
}

/// Requests from the operator surface, already checked and recorded by [`ControllerHandle`],
/// waiting for the loop to act on them. Shared rather than queued: the API answers at once, even
/// while a long pass runs, and no request is dropped because a queue was full.
#[derive(Debug, Default)]
struct Pending {
    /// A reconcile was asked for.
    reconcile: bool,
    /// Forget parked failures: of every account (`None` inside), or of these manifests' accounts.
    unpark: Vec<Option<ManifestName>>,
    /// Plans approved.
    approvals: BTreeSet<PlanId>,
    /// The loop has stopped: requests are refused.
    closed: bool,
}

#[derive(Debug, Default)]
struct Requests {
    pending: std::sync::Mutex<Pending>,
    wake: tokio::sync::Notify,
}

impl Requests {
    fn with<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
        f(&mut self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("no manifest named {0}")]
    UnknownManifest(ManifestName),
    #[error("plan {0} is not waiting for approval (the held plan is {1})")]
    NotHeld(PlanId, String),
    #[error("the store could not record the request: {0}")]
    Store(String),
    #[error("remedy is shutting down")]
    ShuttingDown,
}

/// What the controller has done, for the operator surface and tests.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// A manifest set has been loaded (the daemon is ready to reconcile).
    pub loaded: bool,
    /// Why the latest load of the whole set failed, while the last good set keeps running.
    pub load_error: Option<String>,
    /// Rejected documents that name no manifest, with their diagnostics.
    pub unattributed_rejections: Vec<String>,
    /// Passes run, in all and by trigger (a pass set off by several triggers counts once, under
    /// the first).
    pub passes: u64,
    pub passes_by_trigger: BTreeMap<Trigger, u64>,
    pub last_pass: Option<PassSummary>,
    pub last_resync: Option<DateTime<Utc>>,
    /// Accounts waiting for a retry.
    pub queue_depth: usize,
    /// The plan waiting for approval, if any.
    pub held_plan: Option<PlanId>,
    /// A store error of the latest pass (the pass is retried).
    pub store_error: Option<String>,
    /// Providers that could not be asked in the latest pass, with why.
    pub unavailable_providers: BTreeMap<String, String>,
    /// Where a corrupt store was moved at start (an empty store replaced it): history and status
    /// from before are there, not here.
    pub store_moved_aside: Option<PathBuf>,
    /// The manifests in force or rejected by the latest load, by name.
    #[serde(skip)]
    pub manifest_names: BTreeSet<ManifestName>,
    pub shutting_down: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PassSummary {
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    pub duration_ms: u64,
    pub plan_id: PlanId,
    pub actions_sent: usize,
    pub actions_failed: usize,
    pub recovered: usize,
    pub converged: bool,
}

/// The controller's side of the operator surface: send commands, watch progress.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    requests: Arc<Requests>,
    progress: watch::Receiver<Progress>,
    metrics: Arc<Metrics>,
    store: Store,
    clock: Clock,
}

impl ControllerHandle {
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Records an operator's request for a reconcile (of one manifest, or of everything) and
    /// hands it to the loop; returns once it is recorded, not once the pass ran.
    pub async fn reconcile(
        &self,
        by: &str,
        manifest: Option<ManifestName>,
        comment: Option<String>,
    ) -> Result<(), CommandError> {
        if let Some(name) = &manifest {
            if !self.progress.borrow().manifest_names.contains(name) {
                return Err(CommandError::UnknownManifest(name.clone()));
            }
        }
        self.refuse_when_closed()?;
        let event =
            Event::ReconcileRequest(ReconcileRequestEvent { by: by.to_owned(), manifest: manifest.clone(), comment });
        self.record(event).await?;
        self.requests.with(|p| {
            p.reconcile = true;
            p.unpark.push(manifest);
        });
        self.requests.wake.notify_one();
        Ok(())
    }

    /// Records an operator's approval of the held plan `plan_id` and hands it to the loop. An
    /// approval counts for that plan only: when the set of changes differs by the next pass, the
    /// new plan needs its own.
    pub async fn approve(&self, plan_id: PlanId, by: &str, comment: Option<String>) -> Result<(), CommandError> {
        let held = self.progress.borrow().held_plan.clone();
        if held.as_ref() != Some(&plan_id) {
            let shown = held.map_or_else(|| "none".to_owned(), |id| id.to_string());
            return Err(CommandError::NotHeld(plan_id, shown));
        }
        self.refuse_when_closed()?;
        let event = Event::Approval(ApprovalEvent { plan_id: plan_id.clone(), by: by.to_owned(), comment });
        self.record(event).await?;
        self.requests.with(|p| p.approvals.insert(plan_id));
        self.requests.wake.notify_one();
        Ok(())
    }

    fn refuse_when_closed(&self) -> Result<(), CommandError> {
        if self.requests.with(|p| p.closed) || self.progress.borrow().shutting_down {
            return Err(CommandError::ShuttingDown);
        }
        Ok(())
    }

    async fn record(&self, event: Event) -> Result<(), CommandError> {
        let store = self.store.clone();
        let at = self.clock.now();
        match tokio::task::spawn_blocking(move || store.append(at, event)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(CommandError::Store(error.to_string())),
            Err(join) => Err(CommandError::Store(join.to_string())),
        }
    }

    /// Waits until `done` holds for the progress (or the controller stops: then `false`).
    pub async fn wait_for(&self, done: impl Fn(&Progress) -> bool) -> bool {
        let mut progress = self.progress.clone();
        let reached = progress.wait_for(|p| done(p)).await.is_ok();
        reached
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
}

pub struct Controller {
    settings: Settings,
    store: Store,
    providers: Providers,
    clock: Clock,
    queue: WorkQueue,
    memory: reconcile::Memory,
    /// The manifests in force (valid, plus the last valid version of invalid ones).
    running: BTreeMap<ManifestName, Manifest>,
    /// Manifests rejected by the latest load, with their diagnostics.
    invalid: BTreeMap<ManifestName, Vec<String>>,
    /// The files that named each manifest in the latest load (valid or rejected), and rejected
    /// files that named it before and cannot be read now.
    claims: BTreeMap<ManifestName, BTreeSet<String>>,
    may_release: bool,
    commit: Option<String>,
    approvals: BTreeSet<PlanId>,
    /// Each manifest's accounts, by the names the last plan grouped them under.
    accounts_of: BTreeMap<ManifestName, BTreeSet<remedy_policies::Identity>>,
    /// The generation each stored status is about, as this process last wrote it: a manifest
    /// whose generation is unchanged needs no `Progressing` mark, and the store is not read to
    /// tell (a status read per manifest per pass, 10,000 of them at scale). Unknown after a start.
    status_generations: BTreeMap<ManifestName, Option<remedy_policies::manifest::Generation>>,
    /// A pass that failed on the store is retried with backoff too.
    store_failures: u32,
    store_retry_at: Option<DateTime<Utc>>,
    requests: Arc<Requests>,
    progress: watch::Sender<Progress>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller").field("manifests", &self.running.len()).finish_non_exhaustive()
    }
}

impl Controller {
    pub fn new(settings: Settings, store: Store, providers: Providers, clock: Clock) -> (Controller, ControllerHandle) {
        let requests = Arc::new(Requests::default());
        let initial = Progress { store_moved_aside: settings.store_moved_aside.clone(), ..Progress::default() };
        let (progress, progress_receiver) = watch::channel(initial);
        let queue = WorkQueue::new(settings.backoff);
        let metrics = Arc::new(Metrics::default());
        let controller = Controller {
            settings,
            store,
            providers,
            clock,
            queue,
            memory: reconcile::Memory::default(),
            running: BTreeMap::new(),
            invalid: BTreeMap::new(),
            claims: BTreeMap::new(),
            may_release: false,
            commit: None,
            approvals: BTreeSet::new(),
            accounts_of: BTreeMap::new(),
            status_generations: BTreeMap::new(),
            store_failures: 0,
            store_retry_at: None,
            requests: Arc::clone(&requests),
            progress,
            metrics: Arc::clone(&metrics),
        };
        let handle = ControllerHandle {
            requests,
            progress: progress_receiver,
            metrics,
            store: controller.store.clone(),
            clock: controller.clock.clone(),
        };
        (controller, handle)
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
                            wanted = wanted.or(Some(Trigger::ManifestsChanged));
                        }
                    }
                    None => {
                        tracing::error!("the manifest watcher stopped: changes are picked up at each resync only");
                        watching = false;
                    }
                },
                _ = self.requests.wake.notified() => {
                    if let Some(trigger) = self.take_requests() {
                        wanted = wanted.or(Some(trigger));
                    }
                }
                _ = sleep => {
                    if wake_trigger == Trigger::Resync {
                        rescan();
                        next_resync = self.settings.resync.next_after(self.clock.now());
                        self.progress.send_modify(|p| p.last_resync = Some(now));
                    }
                    wanted = wanted.or(Some(wake_trigger));
                }
            }
            // Whatever else is already waiting joins this pass.
            while let Ok(event) = manifests.try_recv() {
                if self.on_manifests(event).await {
                    wanted = wanted.or(Some(Trigger::ManifestsChanged));
                }
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
        let expiry = self.running.values().filter_map(|m| m.spec.expires).filter(|at| *at > now).min();
        let candidates = [
            (next_resync, Trigger::Resync),
            (self.queue.next_retry(), Trigger::Retry),
            (self.store_retry_at, Trigger::Retry),
            (expiry, Trigger::Expiry),
        ];
        candidates
            .into_iter()
            .filter_map(|(at, trigger)| at.map(|at| (at, trigger)))
            .min_by_key(|(at, _)| *at)
            .map_or((None, Trigger::Resync), |(at, trigger)| (Some(at), trigger))
    }

    /// Takes in the watcher's report; returns whether the manifests in force changed.
    async fn on_manifests(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::LoadFailed(why) => {
                tracing::error!(error = %why, manifests = self.running.len(), "the manifest set cannot be read: the last good set stays in force");
                self.progress.send_modify(|p| p.load_error = Some(why));
                false
            }
            WatchEvent::Changed(set) => {
                if set.manifests.is_empty() && set.rejected.is_empty() && self.looks_unmounted().await {
                    let why = format!(
                        "{} is empty (not even a .git), while manifests were in force: an unmounted volume or a \
                         checkout not there yet? Nothing is released from an empty directory; the last good set stays \
                         in force. To release every manifest, remove them with a commit (the checkout keeps its .git)",
                        self.settings.manifest_dir.display()
                    );
                    tracing::error!(error = %why, "the manifest directory is empty");
                    self.progress.send_modify(|p| p.load_error = Some(why));
                    return false;
                }
                self.commit = git_commit(&self.settings.manifest_dir).await;
                let changed = self.take_set(set);
                self.progress.send_modify(|p| {
                    p.loaded = true;
                    p.load_error = None;
                });
                changed
            }
        }
    }

    /// Before a pass: a manifest without a status, or with one about another generation, says it
    /// is being reconciled (`Reconciling`, `Ready` unknown), so that a status never shows an old
    /// generation's verdict as the new one's, nor is missing, while a long pass runs.
    async fn mark_progressing(&self, now: DateTime<Utc>) -> Result<(), StoreError> {
        let store = self.store.clone();
        let current: Vec<(ManifestName, remedy_policies::manifest::Generation)> = self
            .running
            .iter()
            .filter(|(name, _)| !self.invalid.contains_key(*name))
            .filter(|(name, m)| self.status_generations.get(*name) != Some(&Some(m.generation.clone())))
            .map(|(name, m)| (name.clone(), m.generation.clone()))
            .collect();
        if current.is_empty() {
            return Ok(());
        }
        let marked = tokio::task::spawn_blocking(move || {
            for (name, generation) in current {
                let previous = store.get_status(&name)?;
                if previous.as_ref().is_some_and(|s| s.observed_generation.as_ref() == Some(&generation)) {
                    continue;
                }
                let mut status = previous.unwrap_or_else(|| crate::model::ManifestStatus::new(name.clone()));
                let message = format!("generation {generation} is being reconciled");
                status.set_condition(
                    ConditionType::Ready,
                    ConditionStatus::Unknown,
                    ConditionReason::Progressing,
                    &message,
                    now,
                );
                status.set_condition(
                    ConditionType::Reconciling,
                    ConditionStatus::True,
                    ConditionReason::Progressing,
                    &message,
                    now,
                );
                status.set_condition(
                    ConditionType::Stalled,
                    ConditionStatus::False,
                    ConditionReason::Progressing,
                    "",
                    now,
                );
                status.held_plan_id = None;
                store.put_status(&status)?;
            }
            Ok::<(), StoreError>(())
        });
        match marked.await {
            Ok(result) => result,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    /// Whether the manifest directory has no entry at all (hidden ones included) while remedy
    /// knows manifests: an empty mount point, not a repository whose manifests were removed.
    async fn looks_unmounted(&self) -> bool {
        let dir = self.settings.manifest_dir.clone();
        let store = self.store.clone();
        let knows_manifests = !self.running.is_empty();
        let check = tokio::task::spawn_blocking(move || {
            let empty = std::fs::read_dir(&dir).map(|mut entries| entries.next().is_none()).unwrap_or(false);
            empty && (knows_manifests || store.known_manifests().map(|k| !k.is_empty()).unwrap_or(true))
        });
        check.await.unwrap_or(false)
    }

    fn take_set(&mut self, set: ManifestSet) -> bool {
        let ManifestSet { manifests, rejected } = set;
        let mut next: BTreeMap<ManifestName, Manifest> = manifests.into_iter().map(|m| (m.name.clone(), m)).collect();
        let rejected_files: BTreeSet<&str> = rejected.iter().map(|r| r.file.as_str()).collect();
        let mut invalid: BTreeMap<ManifestName, Vec<String>> = BTreeMap::new();
        let mut unattributed = Vec::new();
        for rejection in &rejected {
            let diagnostics: Vec<String> = rejection.diagnostics.iter().map(ToString::to_string).collect();
            match rejection.name.as_deref().and_then(|n| ManifestName::new(n).ok()) {
                Some(name) => invalid.entry(name).or_default().extend(diagnostics),
                None => unattributed.push(diagnostics.join("; ")),
            }
        }
        // Keep the last valid version of a manifest that is now rejected, by name or by file.
        for (name, previous) in &self.running {
            let previous_file_rejected = rejected_files.contains(previous.origin.file.as_str());
            if let Some(current) = next.get(name) {
                // Another file now holds the name while the manifest's own file is rejected: the
                // rejected file may still mean the manifest (its name just cannot be read), so the
                // last valid version stays, rather than whatever else claims the name.
                if previous_file_rejected && current.origin.file != previous.origin.file {
                    let mut diagnostics: Vec<String> = rejected
                        .iter()
                        .filter(|r| r.file == previous.origin.file)
                        .flat_map(|r| r.diagnostics.iter().map(ToString::to_string))
                        .collect();
                    diagnostics.push(format!(
                        "{} now also names {name}; the version from {} stays in force until {} is fixed",
                        current.origin.file, previous.origin.file, previous.origin.file
                    ));
                    invalid.insert(name.clone(), diagnostics);
                    next.insert(name.clone(), previous.clone());
                }
                continue;
            }
            if invalid.contains_key(name) {
                next.insert(name.clone(), previous.clone());
            } else if rejected_files.contains(previous.origin.file.as_str()) {
                let diagnostics: Vec<String> = rejected
                    .iter()
                    .filter(|r| r.file == previous.origin.file)
                    .flat_map(|r| r.diagnostics.iter().map(ToString::to_string))
                    .collect();
                invalid.insert(name.clone(), diagnostics);
                next.insert(name.clone(), previous.clone());
            }
        }
        // A name some other file claimed before, while that file is now rejected: it may still
        // claim it (its name just cannot be read now). A manifest new to the daemon waits; one in
        // force keeps its version (above). E.g. a duplicate of inc-9 elsewhere must not become
        // "the" inc-9 because inc-9's own file got a syntax error.
        let mut claimed_elsewhere: Vec<(ManifestName, String, String)> = Vec::new();
        for (name, current) in &next {
            let contested = self.claims.get(name).and_then(|files| {
                files.iter().find(|f| **f != current.origin.file && rejected_files.contains(f.as_str())).cloned()
            });
            if let Some(other) = contested.filter(|_| !self.running.contains_key(name)) {
                claimed_elsewhere.push((name.clone(), current.origin.file.clone(), other));
            }
        }
        let mut claims: BTreeMap<ManifestName, BTreeSet<String>> = BTreeMap::new();
        for (name, current, other) in claimed_elsewhere {
            next.remove(&name);
            invalid.entry(name.clone()).or_default().push(format!(
                "{other}, which named {name} before, cannot be read now; {current}'s {name} waits until {other} is \
                 fixed or deleted"
            ));
            claims.entry(name).or_default().insert(current);
        }
        for manifest in next.values() {
            claims.entry(manifest.name.clone()).or_default().insert(manifest.origin.file.clone());
        }
        for rejection in &rejected {
            if let Some(name) = rejection.name.as_deref().and_then(|n| ManifestName::new(n).ok()) {
                claims.entry(name).or_default().insert(rejection.file.clone());
            }
        }
        for (name, files) in &self.claims {
            for file in files.iter().filter(|f| rejected_files.contains(f.as_str())) {
                claims.entry(name.clone()).or_default().insert(file.clone());
            }
        }
        self.claims = claims;
        for (name, diagnostics) in &invalid {
            tracing::error!(manifest = %name, problems = %diagnostics.join("; "), "invalid manifest");
        }
        for problem in &unattributed {
            tracing::error!(%problem, "a rejected document names no manifest: no manifest is released until it is fixed");
        }
        self.may_release = unattributed.is_empty();
        let names: BTreeSet<ManifestName> = next.keys().chain(invalid.keys()).cloned().collect();
        self.progress.send_modify(|p| {
            p.unattributed_rejections = unattributed;
            p.manifest_names = names;
        });
        let changed = next != self.running || invalid != self.invalid;
        self.running = next;
        self.invalid = invalid;
        changed
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
                    accounts.extend(self.running.get(&name).map(|m| m.spec.target.identity.clone()));
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

    /// One pass, then the statuses and the progress.
    async fn pass(&mut self, trigger: Trigger) -> Result<(), StoreError> {
        let started = self.clock.now();
        let clock_started = tokio::time::Instant::now();
        let rejected_names: BTreeSet<ManifestName> = self.invalid.keys().cloned().collect();
        let input = reconcile::PassInput {
            manifests: &self.running,
            may_release: self.may_release,
            rejected_names: &rejected_names,
            commit: self.commit.as_deref(),
            guardrails: &self.settings.guardrails,
            approvals: &self.approvals,
            now: started,
            clock: &self.clock,
        };
        self.mark_progressing(started).await?;
        let span = tracing::info_span!("reconcile", ?trigger, manifests = self.running.len());
        let result = reconcile::run_pass(&input, &self.store, &mut self.providers, &mut self.queue, &mut self.memory)
            .instrument(span)
            .await?;
        let now = self.clock.now();
        let mut names: BTreeSet<&ManifestName> = self.running.keys().collect();
        names.extend(self.invalid.keys());
        names.extend(result.departed.iter().map(|d| &d.name));
        let mut statuses = Vec::with_capacity(names.len());
        let identities_of = result.identities_by_manifest();
        for name in names {
            if result.forgotten.contains(name) {
                continue;
            }
            let generation = self.running.get(name).map(|m| &m.generation).or_else(|| result.generations.get(name));
            let subject = conditions::Subject {
                name,
                generation,
                invalid: self.invalid.get(name).map(Vec::as_slice),
                identities: identities_of.get(name).map_or(&[], Vec::as_slice),
                released: match self.running.get(name) {
                    Some(manifest) => manifest.is_expired(started),
                    None => result.departed.iter().any(|gone| gone.name == *name),
                },
            };
            let mut status = conditions::status_of(
                subject,
                &result,
                |p| self.providers.is_configured(p),
                |identity| self.queue.retry_of(identity).map(|(at, _)| at),
                now,
            );
            // The time the pass observed from: a reconcile asked for during a pass is answered by
            // the next one (what `remedy reconcile --wait` waits for), not by this one.
            status.last_reconcile_time = Some(started);
            statuses.push(status);
        }
        // The held plan is known before any status names it: an operator who reads the plan id
        // from a status can approve it at once.
        let held = match &result.plan.approval {
            Approval::Required { plan_id, .. } => Some(plan_id.clone()),
            _ => None,
        };
        if let (Some(plan_id), Approval::Required { changes, limit, .. }) = (&held, &result.plan.approval) {
            if self.progress.borrow().held_plan.as_ref() != Some(plan_id) {
                tracing::warn!(
                    plan = %plan_id, changes, limit,
                    "plan held for approval: more changes than maxChangesPerReconcile; nothing of it is applied \
                     until `remedy approve {plan_id}`"
                );
            }
            self.progress.send_modify(|p| p.held_plan = Some(plan_id.clone()));
        }
        let generations = statuses.iter().map(|s| (s.name.clone(), s.observed_generation.clone())).collect();
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || {
            // A status nobody writes any more (a manifest that never loaded, then was deleted) goes:
            // what is not in force, not rejected and not remembered for a release has no status.
            for stale in store.put_statuses(&statuses)? {
                if store.known_manifest(&stale)?.is_none() {
                    store.remove_status(&stale)?;
                }
            }
            Ok::<(), StoreError>(())
        });
        match written.await {
            Ok(result) => result?,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
        self.status_generations = generations;
        self.accounts_of.clear();
        for identity in &result.plan.identities {
            for name in &identity.manifests {
                self.accounts_of.entry(name.clone()).or_default().insert(identity.identity.clone());
            }
        }
        // Approvals count for the plan they were given for; a new plan needs a new one.
        self.approvals.retain(|id| *id == result.plan.id);
        let failed = result.reports.iter().filter(|r| r.outcome != crate::execute::Outcome::Succeeded).count();
        let summary = PassSummary {
            trigger,
            started,
            duration_ms: u64::try_from(clock_started.elapsed().as_millis()).unwrap_or(u64::MAX),
            plan_id: result.plan.id.clone(),
            actions_sent: result.reports.len(),
            actions_failed: failed,
            recovered: result.recovered,
            converged: result.plan.is_converged(),
        };
        tracing::info!(
            plan = %summary.plan_id, sent = summary.actions_sent, failed, recovered = summary.recovered,
            held = held.is_some(), duration_ms = summary.duration_ms, "reconciled"
        );
        let mut unavailable: BTreeMap<Provider, String> = BTreeMap::new();
        for identity in &result.plan.identities {
            for provider in [Provider::ActiveDirectory, Provider::EntraId] {
                if let Some(error) = reconcile::provider_error(&result.observed, &identity.identity, provider) {
                    unavailable.entry(provider).or_insert(error);
                }
            }
        }
        self.record_metrics(trigger, &result, &unavailable, held.is_some(), clock_started.elapsed(), started);
        let unavailable: BTreeMap<String, String> = unavailable.into_iter().map(|(p, e)| (p.to_string(), e)).collect();
        let depth = self.queue.depth();
        self.progress.send_modify(|p| {
            p.passes += 1;
            *p.passes_by_trigger.entry(trigger).or_default() += 1;
            p.last_pass = Some(summary);
            p.queue_depth = depth;
            p.held_plan = held;
            p.store_error = None;
            p.unavailable_providers = unavailable;
        });
        Ok(())
    }
}

impl Controller {
    fn record_metrics(
        &self,
        trigger: Trigger,
        result: &reconcile::PassResult,
        unavailable: &BTreeMap<Provider, String>,
        held: bool,
        took: Duration,
        started: DateTime<Utc>,
    ) {
        let metrics = &self.metrics;
        for (provider, outcome) in &result.recorded {
            metrics.record_action(*provider, *outcome);
        }
        let mut troubled: BTreeSet<Provider> = unavailable.keys().copied().collect();
        let failed = result.reports.iter().filter(|r| r.outcome != crate::execute::Outcome::Succeeded);
        troubled.extend(failed.map(|r| r.provider));
        for provider in &troubled {
            metrics.record_provider_error(*provider);
        }
        let outcome = if held {
            PassOutcome::Held
        } else if !troubled.is_empty() || !result.deferred.is_empty() {
            PassOutcome::Failed
        } else if result.plan.is_converged() {
            PassOutcome::Converged
        } else {
            PassOutcome::Progressing
        };
        metrics.record_pass(outcome, took);
        metrics.set_queue_depth(self.queue.depth());
        metrics.set_manifests(self.running.len());
        if let Some(ad) = self.providers.ad() {
            metrics.set_ldap(ad.stats());
        }
        if let Some(entra) = self.providers.entra() {
            metrics.set_graph(entra.stats());
        }
        if trigger == Trigger::Resync && matches!(outcome, PassOutcome::Converged | PassOutcome::Progressing) {
            metrics.resync_succeeded(started);
        }
    }
}

/// The git commit checked out in `dir`, when it is a git work tree.
async fn git_commit(dir: &std::path::Path) -> Option<String> {
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !commit.is_empty()).then_some(commit)
}

#[cfg(test)]
mod tests;
