//! Step 5: the blast radius. A plan with more new changes than `maxChangesPerReconcile` is held
//! as a whole until an operator approves its id. Drift corrections are not new changes and are
//! never held: an attacker who undoes thirty remediations must not get them held.

use sha2::{Digest, Sha256};

use super::engine::Work;
use super::merge::Group;
use super::{Approval, Cause, Disposition, PlanId, PlanInput, PLAN_ID_HEX_DIGITS};

pub(super) fn apply(identities: &mut [(&Group<'_>, Work)], input: &PlanInput<'_>) -> (PlanId, Approval) {
    let is_new = |disposition: &Disposition, cause: &Cause| {
        *disposition == Disposition::Allowed && *cause != Cause::DriftCorrection
    };
    let mut changes: Vec<String> = identities
        .iter()
        .flat_map(|(group, work)| {
            work.actions
                .iter()
                .filter(|a| is_new(&a.disposition, &a.cause))
                .map(move |a| format!("{} {}", group.identity, a.action))
        })
        .collect();
    changes.sort();
    let id = plan_id(&changes);
    let limit = input.guardrails.max_changes_per_reconcile;
    if changes.len() <= limit {
        return (id, Approval::NotNeeded);
    }
    if input.approvals.contains(&id) {
        return (id.clone(), Approval::Granted { plan_id: id });
    }
    for (_, work) in identities.iter_mut() {
        for planned in &mut work.actions {
            if is_new(&planned.disposition, &planned.cause) {
                planned.disposition = Disposition::Held { plan_id: id.clone() };
            }
        }
    }
    (id.clone(), Approval::Required { plan_id: id, changes: changes.len(), limit })
}

/// SHA-256 over the sorted `identity action` lines of the new changes.
fn plan_id(changes: &[String]) -> PlanId {
    let mut hasher = Sha256::new();
    for change in changes {
        hasher.update(change.as_bytes());
        hasher.update(b"\n");
    }
    let digest = hex::encode(hasher.finalize());
    PlanId(digest[..PLAN_ID_HEX_DIGITS].to_owned())
}
