//! Per-manifest status, in the Kubernetes/Flux style: conditions (`Ready`, `Reconciling`,
//! `Stalled`), the generation last reconciled, and the state of each account and provider.
//!
//! A condition's `lastTransitionTime` is the time its status last flipped: re-stating a condition
//! with the same status (and a new reason or message) keeps it ([`ManifestStatus::set_condition`],
//! and [`ManifestStatus::carry_transition_times`], which the store applies against the stored
//! status, so a controller may build the status afresh at every reconcile).

use chrono::{DateTime, Utc};
use remedy_policies::manifest::Generation;
use remedy_policies::plan::{IdentityStatus, PlanId, Resolved};
use remedy_policies::{Identity, ManifestName, Provider};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub enum ConditionType {
    /// The manifest's accounts are as it declares.
    Ready,
    /// remedy is working on it (actions pending or in flight).
    Reconciling,
    /// It cannot progress without someone's help (denied, invalid, needs approval...).
    Stalled,
    /// An account of it keeps being changed back (present only while the fight lasts).
    Contested,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// Why a condition has its status: one word, CamelCase as in Kubernetes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub enum ConditionReason {
    Succeeded,
    Progressing,
    Failed,
    Blocked,
    Denied,
    NeedsApproval,
    ProviderUnavailable,
    Invalid,
    Conflict,
    NotFound,
    Ambiguous,
    Suspended,
    Released,
    /// Corrected again and again within the contest window.
    RepeatedDrift,
    /// An action the directory accepted is not visible in its reads yet (Entra ID is eventually
    /// consistent): re-read until its confirmation deadline.
    AwaitingConfirmation,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub kind: ConditionType,
    pub status: ConditionStatus,
    pub reason: ConditionReason,
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: DateTime<Utc>,
}

/// One account a manifest is about, as the last reconcile left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityState {
    pub identity: Identity,
    #[serde(default)]
    #[schema(required = true)]
    pub resolved: Resolved,
    pub status: IdentityStatus,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ProviderHealth {
    Available,
    Unavailable,
    NotConfigured,
}

/// A provider the manifest needs, as the last reconcile found it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderState {
    pub provider: Provider,
    pub health: ProviderHealth,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManifestStatus {
    pub name: ManifestName,
    /// The generation the conditions are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<Generation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reconcile_time: Option<DateTime<Utc>>,
    #[serde(default)]
    #[schema(required = true)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<IdentityState>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderState>,
    /// The plan to approve when the status is `Stalled` / `NeedsApproval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_plan_id: Option<PlanId>,
}

impl ManifestStatus {
    pub fn new(name: ManifestName) -> ManifestStatus {
        ManifestStatus {
            name,
            observed_generation: None,
            last_reconcile_time: None,
            conditions: Vec::new(),
            identities: Vec::new(),
            providers: Vec::new(),
            held_plan_id: None,
        }
    }

    pub fn condition(&self, kind: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.kind == kind)
    }

    /// Sets a condition. Its transition time becomes `now` when it is new or its status changes,
    /// and is kept otherwise.
    pub fn set_condition(
        &mut self,
        kind: ConditionType,
        status: ConditionStatus,
        reason: ConditionReason,
        message: impl Into<String>,
        now: DateTime<Utc>,
    ) {
        let message = message.into();
        match self.conditions.iter_mut().find(|c| c.kind == kind) {
            Some(existing) => {
                if existing.status != status {
                    existing.last_transition_time = now;
                }
                existing.status = status;
                existing.reason = reason;
                existing.message = message;
            }
            None => {
                self.conditions.push(Condition { kind, status, reason, message, last_transition_time: now });
                self.conditions.sort_by_key(|c| c.kind);
            }
        }
    }

    /// Keeps `previous`'s transition time for every condition whose status did not change.
    pub fn carry_transition_times(&mut self, previous: &ManifestStatus) {
        for condition in &mut self.conditions {
            if let Some(before) = previous.condition(condition.kind).filter(|b| b.status == condition.status) {
                condition.last_transition_time = before.last_transition_time;
            }
        }
    }
}
