//! A notification: one event remedy tells people about, as the outbox keeps it and as the generic
//! webhook's JSON body carries it (docs/operations.md documents each field).

use chrono::{DateTime, Utc};
use remedy_policies::notify::{EventKind, EventSeverity};
use serde::{Deserialize, Serialize};

use super::ids::RecordId;

/// One event to tell the sinks about. Its `id` is stable: every delivery of it, to every sink
/// and after every restart, carries the same id, so a receiver de-duplicates by it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// `rec-<history record id>-<first 12 hex digits of its hash>` for an event of the history,
    /// `evt-<UUID>` for the others (provider health, chain verification).
    pub id: String,
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub severity: EventSeverity,
    /// When it happened (an action: when it was attempted).
    pub at: DateTime<Utc>,
    /// One line for people.
    pub summary: String,
    /// The history record it comes from (the first, when several held actions make one event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_record: Option<RecordId>,
    /// The manifests concerned, by name.
    #[serde(default)]
    pub manifests: Vec<String>,
    /// The accounts concerned (at most [`Notification::MAX_IDENTITIES`]; `count` says how many
    /// actions there were).
    #[serde(default)]
    pub identities: Vec<String>,
    /// How many actions the event is about (several held actions of one plan make one event).
    pub count: usize,
    /// The action (`disable`, `revoke-sessions` ...), when the event is about one kind of action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// `active-directory` or `entra-id`, when the event is about one provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Why (the error, the guardrail, the chain's fault), as the history or the pass says it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Notification {
    pub const MAX_IDENTITIES: usize = 20;
}
