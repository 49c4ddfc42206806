//! The controller's side of the operator surface: requests (a reconcile, an approval) are checked,
//! recorded in the history and handed to the loop; progress is watched.

use std::collections::BTreeSet;
use std::sync::Arc;

use remedy_policies::plan::PlanId;
use remedy_policies::ManifestName;
use tokio::sync::watch;

use super::clock::Clock;
use super::progress::Progress;
use crate::metrics::Metrics;
use crate::model::{ApprovalEvent, Event, ReconcileRequestEvent};
use crate::store::Store;

/// Requests from the operator surface, already checked and recorded by [`ControllerHandle`],
/// waiting for the loop to act on them. Shared rather than queued: the API answers at once, even
/// while a long pass runs, and no request is dropped because a queue was full.
#[derive(Debug, Default)]
pub(super) struct Pending {
    /// A reconcile was asked for.
    pub(super) reconcile: bool,
    /// Forget parked failures: of every account (`None` inside), or of these manifests' accounts.
    pub(super) unpark: Vec<Option<ManifestName>>,
    /// Plans approved.
    pub(super) approvals: BTreeSet<PlanId>,
    /// The loop has stopped: requests are refused.
    pub(super) closed: bool,
}

#[derive(Debug, Default)]
pub(super) struct Requests {
    pub(super) pending: std::sync::Mutex<Pending>,
    pub(super) wake: tokio::sync::Notify,
}

impl Requests {
    pub(super) fn with<T>(&self, f: impl FnOnce(&mut Pending) -> T) -> T {
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

/// The controller's side of the operator surface: send commands, watch progress.
#[derive(Debug, Clone)]
pub struct ControllerHandle {
    pub(super) requests: Arc<Requests>,
    pub(super) progress: watch::Receiver<Progress>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) store: Store,
    pub(super) clock: Clock,
}

impl ControllerHandle {
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The metrics, to keep in a task of its own (the notifier's deliveries).
    pub fn shared_metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
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
        let approval = ApprovalEvent { plan_id: plan_id.clone(), by: by.to_owned(), comment };
        let store = self.store.clone();
        let at = self.clock.now();
        // Recorded with the plan among the store's approvals: it counts after a restart too.
        match tokio::task::spawn_blocking(move || store.append_approval(at, approval)).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(CommandError::Store(error.to_string())),
            Err(join) => return Err(CommandError::Store(join.to_string())),
        }
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
