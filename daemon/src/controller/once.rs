//! `remedy apply`'s pass: the daemon's pass, once, outside the loop.

use std::collections::{BTreeMap, BTreeSet};

use remedy_policies::config::Guardrails;
use remedy_policies::load::ManifestSet;
use remedy_policies::plan::{ActiveManifest, PlanId};
use remedy_policies::{Manifest, ManifestName};

use super::{intake, notices, reconcile, Clock, PassResult, Providers, WorkQueue};
use crate::store::{Store, StoreError};

/// One pass outside the loop, for `remedy apply`: the same phases as the daemon's — interrupted
/// intents settled first, every action journaled before it is sent and settled with its history
/// record — planned as `remedy plan` plans (`active`: each manifest in force since its file's
/// time; no earlier changes of remedy's), and leaving the daemon's knowledge of the set alone:
/// nothing remembered or released, no denied/held/blocked notice, no status.
pub async fn apply_once(
    set: &ManifestSet,
    active: &[ActiveManifest],
    guardrails: &Guardrails,
    approvals: &BTreeSet<PlanId>,
    manifest_dir: &std::path::Path,
    store: Store,
    providers: &mut Providers,
) -> Result<PassResult, StoreError> {
    let manifests: BTreeMap<ManifestName, Manifest> =
        set.manifests.iter().map(|m| (m.name.clone(), m.clone())).collect();
    let rejected_names: BTreeSet<ManifestName> =
        set.rejected.iter().filter_map(|r| r.name.as_deref().and_then(|n| ManifestName::new(n).ok())).collect();
    let commit = intake::git_commit(manifest_dir).await;
    let clock = Clock::System;
    let queue = WorkQueue::default();
    let input = reconcile::PassInput {
        manifests: &manifests,
        may_release: false,
        rejected_names: &rejected_names,
        commit: commit.as_deref(),
        guardrails,
        approvals,
        queue: &queue,
        now: clock.now(),
        clock: &clock,
        one_shot: Some(active),
        focus: None,
        spaced: &BTreeSet::new(),
    };
    let result = reconcile::run_pass(&input, &store, providers, &mut notices::Notices::default()).await?;
    store.flush()?;
    Ok(result)
}
