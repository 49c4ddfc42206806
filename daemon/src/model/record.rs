//! What a history record is: the closed set of events remedy records, as the HTTP API returns
//! them (camelCase, actions and outcomes in kebab-case, times in RFC 3339).

use chrono::{DateTime, Utc};
use remedy_policies::manifest::Generation;
use remedy_policies::plan::{Cause, Disposition, PlanId, PlannedAction, RecordedChange, Resolved};
use remedy_policies::{Action, Identity, ManifestName, Provider};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ids::{IntentId, RecordId};

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryRecord {
    pub id: RecordId,
    /// When it happened (an action: when it was attempted).
    pub at: DateTime<Utc>,
    pub event: Event,
    /// The previous record's hash (hex SHA-256).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub prev_hash: String,
    /// This record's hash (hex SHA-256 of `id`, `at`, `event`, `prevHash`).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    pub hash: String,
}

/// What a history record is about: the closed set of things remedy records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "kebab-case")]
// Events are made one at a time and written at once, never kept by the thousand: boxing the action
// would only make them clumsier to build and match.
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// An action attempt, or an action that was planned and not sent (denied, held, blocked).
    Action(ActionRecord),
    /// An operator approved a held plan through the API.
    Approval(ApprovalEvent),
    /// An operator asked for a reconcile through the API.
    ReconcileRequest(ReconcileRequestEvent),
    /// An account keeps being changed back: remedy keeps the safer state, spacing its corrections.
    Contested(ContestedEvent),
}

/// A manifest as it was when it caused an action.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestRef {
    pub name: ManifestName,
    /// The manifest's content hash.
    pub generation: Generation,
    /// The git commit of the manifest directory, when it is a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// What became of an action, as the history tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ActionOutcome {
    /// Sent and confirmed, for a manifest that asked for it for the first time.
    Succeeded,
    /// Sent (or maybe sent) and not confirmed; `error` says why.
    Failed,
    /// Not sent because an earlier action of the same account and provider failed.
    Skipped,
    /// Cannot take effect as things are (e.g. password never expires, provider not configured).
    Blocked,
    /// A guardrail denied it.
    Denied,
    /// Held until an operator approves the plan (blast radius).
    Held,
    /// Sent and confirmed, redoing a change of remedy's that someone undid.
    DriftCorrected,
    /// Sent and confirmed, undoing remedy's change for a released manifest.
    Restored,
    /// Interrupted (a crash, or a send whose answer was lost) and, as the directory shows when
    /// read again, never applied. Not a failure: the account is planned again from what the
    /// directory shows, and the change is sent under a new intent if it is still wanted.
    NotApplied,
    /// Sent and accepted by the directory (Microsoft Graph answered 2xx), and not visible in its
    /// reads yet: Entra ID is eventually consistent. Not sent again; re-read at later passes (with
    /// the error policy's backoff) until `entraId.confirmationDeadline`. A later record of the
    /// same intent says how it ended: confirmed (`succeeded`, `drift-corrected`, `restored`) or
    /// `failed` (not effective).
    AwaitingConfirmation,
}

impl ActionOutcome {
    /// Whether the account was changed: such records are remedy's `RecordedChange`s.
    pub fn changed_account(self) -> bool {
        matches!(self, ActionOutcome::Succeeded | ActionOutcome::DriftCorrected | ActionOutcome::Restored)
    }

    /// The outcome of a confirmed change, by why it was planned.
    pub fn confirmed(cause: &Cause) -> ActionOutcome {
        match cause {
            Cause::Desired => ActionOutcome::Succeeded,
            Cause::DriftCorrection => ActionOutcome::DriftCorrected,
            Cause::Release { .. } => ActionOutcome::Restored,
        }
    }
}

/// One action attempt (or one planned action that was not sent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// The journal intent this record settled, when the action was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<IntentId>,
    /// The manifests that asked for it (the plan's provenance), as they were.
    pub manifests: Vec<ManifestRef>,
    /// The manifests' reasons (incident, alert).
    pub reason: String,
    /// The account as declared.
    pub identity: Identity,
    /// The account as the directories resolved it.
    #[serde(default)]
    #[schema(required = true)]
    pub resolved: Resolved,
    pub provider: Provider,
    pub action: Action,
    pub cause: Cause,
    /// The attribute's value before and after, as a person reads it.
    pub before: String,
    pub after: String,
    pub outcome: ActionOutcome,
    /// Why it failed or was not sent (provider texts are redacted before they get here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What else the record should say: for a drift correction, what was found and when the
    /// account was last changed, as far as the directory tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub duration_ms: u64,
    /// The account remedy acted as (bind DN, application id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_account: Option<String>,
    /// The DC an Active Directory action went to (its URL), when it was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain_controller: Option<String>,
}

impl ActionRecord {
    /// The record of a planned action that was not sent (denied or held). `None` for an allowed
    /// action: those are recorded from their report (`ActionReport::record`).
    pub fn unsent(
        identity: &Identity,
        resolved: Resolved,
        planned: &PlannedAction,
        manifests: Vec<ManifestRef>,
    ) -> Option<ActionRecord> {
        let (outcome, error) = match &planned.disposition {
            Disposition::Allowed => return None,
            Disposition::Denied { guardrail, detail } => {
                let guardrail = serde_json::to_value(guardrail).ok().and_then(|v| v.as_str().map(str::to_owned));
                (
                    ActionOutcome::Denied,
                    format!("denied by guardrail {}: {detail}", guardrail.as_deref().unwrap_or("?")),
                )
            }
            Disposition::Held { plan_id } => {
                (ActionOutcome::Held, format!("held until plan {plan_id} is approved (too many changes at once)"))
            }
        };
        Some(ActionRecord {
            intent: None,
            manifests,
            reason: planned.reason.clone(),
            identity: identity.clone(),
            resolved,
            provider: planned.provider,
            action: planned.action,
            cause: planned.cause.clone(),
            before: planned.before.clone(),
            after: planned.after.clone(),
            outcome,
            error: Some(error),
            note: None,
            duration_ms: 0,
            acting_account: None,
            domain_controller: None,
        })
    }

    /// The `RecordedChange`s this record stands for: one per manifest, if it changed the account.
    pub fn recorded_changes(&self, at: DateTime<Utc>) -> Vec<RecordedChange> {
        if !self.outcome.changed_account() {
            return Vec::new();
        }
        self.manifests
            .iter()
            .map(|manifest| RecordedChange {
                manifest: manifest.name.clone(),
                identity: self.identity.clone(),
                action: self.action,
                at,
                dc: self.domain_controller.clone(),
            })
            .collect()
    }
}

/// An operator approved a held plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalEvent {
    pub plan_id: PlanId,
    /// The caller, as the API authenticated it.
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An operator asked for a reconcile (of everything, or of one manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileRequestEvent {
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<ManifestName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// An account became contested: corrected `corrections` times within `windowSeconds`, by
/// changes from elsewhere (someone, or a sync or HR system, keeps undoing remedy's state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContestedEvent {
    pub identity: Identity,
    pub manifests: Vec<ManifestName>,
    pub corrections: usize,
    pub window_seconds: u64,
    /// The first correction of the fight.
    pub since: DateTime<Utc>,
    /// The account's `whenChanged` in AD as last read (the other side's latest change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_changed: Option<DateTime<Utc>>,
    /// How the latest change was noticed: `notification`, `poll` or `delta`; absent: at a resync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When remedy's next correction may go (corrections are spaced while the fight lasts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_correction: Option<DateTime<Utc>>,
}
