//! A change about to be sent, as the store's journal keeps it until the change is settled with its
//! history record (the protocol is in `store::journal`).

use chrono::{DateTime, Utc};
use remedy_policies::plan::{Cause, PlannedAction, Resolved};
use remedy_policies::{Action, Identity, Provider};
use serde::{Deserialize, Serialize};

use super::ids::IntentId;
use super::record::{ActionOutcome, ActionRecord, ManifestRef};

/// A change about to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntendedChange {
    /// When it was journaled.
    pub at: DateTime<Utc>,
    /// The account as declared, and as resolved (what recovery observes).
    pub identity: Identity,
    #[serde(default)]
    pub resolved: Resolved,
    pub provider: Provider,
    pub action: Action,
    pub manifests: Vec<ManifestRef>,
    /// The attribute's value as planned, before and after.
    pub before: String,
    pub after: String,
    /// Why it was planned, and the manifests' reasons: what the record settling it says.
    #[serde(default = "desired")]
    pub cause: Cause,
    #[serde(default)]
    pub reason: String,
    /// Sent, and not confirmed: the error it had. Such an intent stays unsettled until the account
    /// is read again (the write may have reached the directory before the connection broke).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unconfirmed: Option<String>,
    /// Accepted by the directory (Graph answered 2xx) and not visible in its reads yet: re-read
    /// at every pass until this deadline, never sent again meanwhile; still not visible after
    /// it, the action is settled as not effective.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting_until: Option<DateTime<Utc>>,
}

fn desired() -> Cause {
    Cause::Desired
}

impl IntendedChange {
    /// The intent of sending a planned action.
    pub fn planned(
        identity: &Identity,
        resolved: Resolved,
        planned: &PlannedAction,
        manifests: Vec<ManifestRef>,
        at: DateTime<Utc>,
    ) -> IntendedChange {
        IntendedChange {
            at,
            identity: identity.clone(),
            resolved,
            provider: planned.provider,
            action: planned.action,
            manifests,
            before: planned.before.clone(),
            after: planned.after.clone(),
            cause: planned.cause.clone(),
            reason: planned.reason.clone(),
            unconfirmed: None,
            awaiting_until: None,
        }
    }

    /// The record that settles this change: what the intent knows (account, action, manifests,
    /// reason, before), with the outcome, the value the account shows after, and the error. No
    /// acting account, no duration: the caller sets what it knows.
    pub fn settled(&self, outcome: ActionOutcome, after: String, error: Option<String>) -> ActionRecord {
        ActionRecord {
            intent: None,
            manifests: self.manifests.clone(),
            reason: self.reason.clone(),
            identity: self.identity.clone(),
            resolved: self.resolved.clone(),
            provider: self.provider,
            action: self.action,
            cause: self.cause.clone(),
            before: self.before.clone(),
            after,
            outcome,
            error,
            note: None,
            duration_ms: 0,
            acting_account: None,
            domain_controller: None,
        }
    }
}

/// A journaled, not yet settled change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    pub id: IntentId,
    pub change: IntendedChange,
}
