//! The history records a pass writes about the actions it sent: which manifests (and commit)
//! asked for each, what a drift correction found, and the record of an action never attempted.

use std::collections::{BTreeMap, BTreeSet};

use remedy_policies::manifest::Generation;
use remedy_policies::observed::ObservedState;
use remedy_policies::plan::{Cause, PlannedAction};
use remedy_policies::{Identity, ManifestName, Provider};

use crate::execute::ActionReport;
use crate::model::{ActionOutcome, ActionRecord, ManifestRef};

pub fn manifest_refs(
    provenance: &[ManifestName],
    cause: &Cause,
    generations: &BTreeMap<ManifestName, Generation>,
    commit: Option<&str>,
) -> Vec<ManifestRef> {
    let mut names: BTreeSet<&ManifestName> = provenance.iter().collect();
    if let Cause::Release { manifest } = cause {
        names.insert(manifest);
    }
    names
        .into_iter()
        .filter_map(|name| {
            generations.get(name).map(|generation| ManifestRef {
                name: name.clone(),
                generation: generation.clone(),
                commit: commit.map(str::to_owned),
            })
        })
        .collect()
}

/// What a drift correction found: the value someone else set, and when the account was last
/// changed where the directory tells (AD's whenChanged; Graph: a directory-sync revert).
pub fn drift_note(report: &ActionReport, observed: &ObservedState) -> String {
    let found = format!("found {} where remedy had left {}", report.planned.before, report.planned.after);
    let observation = observed.get(&report.identity);
    match report.provider {
        Provider::ActiveDirectory => match observation.and_then(|o| o.active_directory.found()) {
            Some(account) => match account.when_changed {
                Some(at) => format!(
                    "{found}; the account was last changed at {} (whenChanged; the DC does not record by whom — see \
                     its security log, event 4722 'account enabled')",
                    at.to_rfc3339()
                ),
                None => format!("{found}; the DC does not say when or by whom"),
            },
            None => found,
        },
        Provider::EntraId => match observation.and_then(|o| o.entra_id.found()) {
            Some(user) if user.on_premises_sync_enabled => format!(
                "{found}; {} is synced from on-premises AD, so directory sync may have re-enabled it (AD is the \
                 source of authority; see the Entra audit log for who changed it)",
                user.user_principal_name
            ),
            Some(_) => format!("{found}; see the Entra audit log for who changed it"),
            None => found,
        },
    }
}

pub fn failed_record(identity: &Identity, planned: &PlannedAction) -> ActionRecord {
    ActionRecord {
        intent: None,
        manifests: Vec::new(),
        reason: planned.reason.clone(),
        identity: identity.clone(),
        resolved: Default::default(),
        provider: planned.provider,
        action: planned.action,
        cause: planned.cause.clone(),
        before: planned.before.clone(),
        after: planned.before.clone(),
        outcome: ActionOutcome::Failed,
        error: Some("not attempted".to_owned()),
        note: None,
        duration_ms: 0,
        acting_account: None,
        domain_controller: None,
    }
}
