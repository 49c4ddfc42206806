//! The controller's bookkeeping in the metrics registry after each pass: actions recorded by
//! outcome, providers in trouble, the pass's outcome and duration, the queue, the providers'
//! request counters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use remedy_policies::Provider;

use super::reconcile::PassResult;
use super::Trigger;
use crate::execute::Outcome;
use crate::metrics::{Metrics, PassOutcome};
use crate::providers::Providers;

/// What else the controller knows about a pass.
#[derive(Debug)]
pub struct PassFacts<'a> {
    pub trigger: Trigger,
    /// Providers that could not be asked, with why.
    pub unavailable: &'a BTreeMap<Provider, String>,
    /// The plan is held for approval.
    pub held: bool,
    pub took: Duration,
    pub started: DateTime<Utc>,
    pub queue_depth: usize,
    pub manifests: usize,
}

/// Records a finished pass.
pub fn record_pass(metrics: &Metrics, pass: &PassResult, facts: PassFacts<'_>, providers: &Providers) {
    for (provider, outcome) in &pass.recorded {
        metrics.record_action(*provider, *outcome);
    }
    let mut troubled: BTreeSet<Provider> = facts.unavailable.keys().copied().collect();
    troubled.extend(pass.sent.iter().filter(|s| s.outcome != Outcome::Succeeded).map(|s| s.provider));
    for provider in &troubled {
        metrics.record_provider_error(*provider);
    }
    let outcome = if facts.held {
        PassOutcome::Held
    } else if !troubled.is_empty() || !pass.deferred.is_empty() {
        PassOutcome::Failed
    } else if pass.plan.is_converged() {
        PassOutcome::Converged
    } else {
        PassOutcome::Progressing
    };
    metrics.record_pass(outcome, facts.took);
    metrics.set_queue_depth(facts.queue_depth);
    metrics.set_manifests(facts.manifests);
    if let Some(ad) = providers.ad() {
        metrics.set_ldap(ad.stats());
    }
    if let Some(entra) = providers.entra() {
        metrics.set_graph(entra.stats());
    }
    if facts.trigger == Trigger::Resync && matches!(outcome, PassOutcome::Converged | PassOutcome::Progressing) {
        metrics.resync_succeeded(facts.started);
    }
}
