//! What the controller has done, for the operator surface (`/readyz`, status) and tests.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use remedy_policies::plan::PlanId;
use remedy_policies::ManifestName;
use serde::Serialize;

use super::Trigger;

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
