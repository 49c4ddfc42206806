//! Per-manifest status, in the Kubernetes/Flux style: conditions (`Ready`, `Reconciling`,
//! `Stalled`), the generation last reconciled, and the state of each account and provider.
//!
//! A condition's `lastTransitionTime` is the time its status last flipped: re-stating a condition
//! with the same status (and a new reason or message) keeps it. [`Store::put_status`] enforces this
//! against the stored status, so a controller may build the status afresh at every reconcile.
//!
//! Status is not flushed on every write: it is derived again at every reconcile, and sled's
//! background flush (500 ms) is enough for it.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use remedy_policies::manifest::Generation;
use remedy_policies::plan::{IdentityStatus, PlanId, Resolved};
use remedy_policies::{Identity, ManifestName, Provider};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use utoipa::ToSchema;

use super::error::StoreError;
use super::{decode, encode, layout, transaction_result, Store, WRITE_CHUNK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
pub enum ConditionType {
    /// The manifest's accounts are as it declares.
    Ready,
    /// remedy is working on it (actions pending or in flight).
    Reconciling,
    /// It cannot progress without someone's help (denied, invalid, needs approval...).
    Stalled,
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

impl Store {
    /// Stores a manifest's status, keeping the stored transition time of every condition whose
    /// status did not change; returns what was stored.
    pub fn put_status(&self, status: &ManifestStatus) -> Result<ManifestStatus, StoreError> {
        let abort = ConflictableTransactionError::Abort;
        let key = status.name.as_str();
        let result = self.status.transaction(|tree| {
            let mut stored = status.clone();
            if let Some(bytes) = tree.get(key)? {
                let previous: ManifestStatus = decode(layout::STATUS, key, &bytes).map_err(abort)?;
                stored.carry_transition_times(&previous);
            }
            tree.insert(key, encode(layout::STATUS, &stored).map_err(abort)?)?;
            Ok(stored)
        });
        transaction_result(result)
    }

    /// Stores the statuses of a whole pass (each keeping its stored transition times, as
    /// [`Store::put_status`] does), and returns the names of the stored statuses that are not
    /// among them. One batch per [`WRITE_CHUNK`] statuses instead of a transaction per manifest:
    /// a converged pass over 10,000 manifests writes 10,000 statuses. The previous statuses are
    /// read one chunk at a time, not all at once. The controller is the only writer of statuses,
    /// so nothing changes between the reads and the batches. Each batch is atomic; a reader may
    /// see one pass's statuses land chunk by chunk.
    pub fn put_statuses(&self, statuses: &[ManifestStatus]) -> Result<Vec<ManifestName>, StoreError> {
        for chunk in statuses.chunks(WRITE_CHUNK) {
            let mut batch = sled::Batch::default();
            for status in chunk {
                let key = status.name.as_str();
                let mut stored = status.clone();
                if let Some(bytes) = self.status.get(key)? {
                    stored.carry_transition_times(&decode(layout::STATUS, key, &bytes)?);
                }
                batch.insert(key, encode(layout::STATUS, &stored)?);
            }
            self.status.apply_batch(batch)?;
        }
        let written: BTreeSet<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
        let mut stale = Vec::new();
        for key in self.status.iter().keys() {
            let key = key?;
            let name = String::from_utf8_lossy(&key);
            if !written.contains(name.as_ref()) {
                stale.push(ManifestName::new(name.as_ref()).map_err(|error| StoreError::Corrupt {
                    path: self.path.clone(),
                    detail: format!("{}: a key that is not a manifest name: {error}", layout::STATUS),
                })?);
            }
        }
        Ok(stale)
    }

    pub fn get_status(&self, name: &ManifestName) -> Result<Option<ManifestStatus>, StoreError> {
        self.status.get(name.as_str())?.map(|bytes| decode(layout::STATUS, name.as_str(), &bytes)).transpose()
    }

    /// Every stored status, by manifest name.
    pub fn list_status(&self) -> Result<Vec<ManifestStatus>, StoreError> {
        self.status
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(layout::STATUS, &String::from_utf8_lossy(&key), &value)
            })
            .collect()
    }

    /// Removes a manifest's status; returns whether there was one.
    pub fn remove_status(&self, name: &ManifestName) -> Result<bool, StoreError> {
        Ok(self.status.remove(name.as_str())?.is_some())
    }
}
