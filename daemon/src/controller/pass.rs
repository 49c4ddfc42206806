//! One pass, and what follows it: the error policy applied to the pass's verdicts, each
//! manifest's status, the metrics and the progress.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use remedy_policies::plan::Approval;
use remedy_policies::{ManifestName, Provider};
use tracing::Instrument;

use super::progress::PassSummary;
use super::store_call::blocking;
use super::{conditions, decide, metrics, reconcile, Controller, Trigger};
use crate::store::StoreError;

impl Controller {
    /// One pass; then the error policy, the statuses, the metrics and the progress.
    pub(super) async fn pass(&mut self, trigger: Trigger) -> Result<(), StoreError> {
        let started = self.clock.now();
        let clock_started = tokio::time::Instant::now();
        let focus = if trigger == Trigger::Drift {
            let pending = self.drift.take_pending();
            if pending.is_empty() {
                return Ok(());
            }
            Some(pending)
        } else {
            self.drift.clear_pending();
            None
        };
        let spaced = self.drift.spaced(started);
        let rejected_names: BTreeSet<ManifestName> = self.admission.invalid().keys().cloned().collect();
        let input = reconcile::PassInput {
            manifests: self.admission.in_force(),
            may_release: self.admission.may_release(),
            rejected_names: &rejected_names,
            commit: self.commit.as_deref(),
            guardrails: &self.settings.guardrails,
            approvals: &self.approvals,
            queue: &self.queue,
            now: started,
            clock: &self.clock,
            one_shot: None,
            focus: focus.as_ref(),
            spaced: &spaced,
        };
        if focus.is_none() {
            conditions::mark_progressing(&self.store, &self.admission, &self.status_generations, started).await?;
        }
        let manifests = focus.as_ref().map_or(self.admission.in_force().len(), BTreeSet::len);
        let span = tracing::info_span!("reconcile", ?trigger, manifests);
        let result =
            reconcile::run_pass(&input, &self.store, &mut self.providers, &mut self.notices).instrument(span).await?;
        let targeted = focus.is_some();
        self.apply_error_policy(&result, started, targeted);
        self.after_drift(&result, targeted).await?;

        // The held plan is known before any status names it: an operator who reads the plan id
        // from a status can approve it at once.
        let held = match &result.plan.approval {
            Approval::Required { plan_id, changes, limit } => {
                if self.progress.borrow().held_plan.as_ref() != Some(plan_id) {
                    tracing::warn!(
                        plan = %plan_id, changes, limit,
                        "plan held for approval: more changes than maxChangesPerReconcile; nothing of it is applied \
                         until `remedy approve {plan_id}`"
                    );
                }
                self.progress.send_modify(|p| p.held_plan = Some(plan_id.clone()));
                Some(plan_id.clone())
            }
            // A targeted plan that needs no approval says nothing of a whole-set plan held.
            _ if targeted => self.progress.borrow().held_plan.clone(),
            _ => None,
        };
        let queue = &self.queue;
        let providers = &self.providers;
        let contested = self.drift.contested();
        let written = conditions::write_after_pass(
            &self.store,
            conditions::Scope { admission: &self.admission, focus: focus.as_ref(), contested },
            &result,
            |p| providers.is_configured(p),
            |identity| queue.retry_of(identity).map(|(at, _)| at),
            started,
            self.clock.now(),
        )
        .await?;
        if targeted {
            self.status_generations.extend(written);
        } else {
            self.status_generations = written;
            self.accounts_of.clear();
        }
        for identity in &result.plan.identities {
            for name in &identity.manifests {
                self.accounts_of.entry(name.clone()).or_default().insert(identity.identity.clone());
            }
        }
        // Approvals count for the plan they were given for; a new plan needs a new one.
        if !targeted {
            let before = self.approvals.len();
            self.approvals.retain(|id| *id == result.plan.id);
            if self.approvals.len() != before {
                let approvals = self.approvals.clone();
                blocking(&self.store, move |store| store.set_approvals(&approvals)).await?;
            }
        }
        let summary = PassSummary {
            trigger,
            started,
            duration_ms: u64::try_from(clock_started.elapsed().as_millis()).unwrap_or(u64::MAX),
            plan_id: result.plan.id.clone(),
            actions_sent: result.sent.len(),
            actions_failed: result.failed(),
            recovered: result.recovered,
            converged: result.plan.is_converged(),
        };
        tracing::info!(
            plan = %summary.plan_id, sent = summary.actions_sent, failed = summary.actions_failed,
            recovered = summary.recovered, held = held.is_some(), duration_ms = summary.duration_ms, "reconciled"
        );
        let mut unavailable: BTreeMap<Provider, String> = BTreeMap::new();
        for identity in &result.plan.identities {
            for provider in [Provider::ActiveDirectory, Provider::EntraId] {
                if let Some(error) = decide::provider_error(&result.observed, &identity.identity, provider) {
                    unavailable.entry(provider).or_insert(error);
                }
            }
        }
        let facts = metrics::PassFacts {
            trigger,
            unavailable: &unavailable,
            held: held.is_some(),
            took: clock_started.elapsed(),
            started,
            queue_depth: self.queue.depth(),
            manifests: self.admission.in_force().len(),
        };
        metrics::record_pass(&self.metrics, &result, facts, &self.providers);
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

    /// The error policy, applied to a pass's verdicts: parked actions no longer planned alike are
    /// forgotten, each account's verdict is settled, retries of accounts no longer planned go.
    /// A targeted pass settles its accounts only: the others keep their retries and parked actions.
    fn apply_error_policy(&mut self, result: &reconcile::PassResult, now: DateTime<Utc>, targeted: bool) {
        if !targeted {
            self.queue.retain_parked(&result.planned);
        }
        for (identity, verdict) in &result.verdicts {
            self.queue.settle(identity, verdict.clone(), now, fastrand::f64());
        }
        if !targeted {
            self.queue.retain_retries(&result.verdicts.keys().cloned().collect());
        }
    }
}
