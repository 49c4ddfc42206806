//! The model remedy records and reports: history records and their events, per-manifest status,
//! journaled intents, and their ids. One home for three readers: the store persists these types
//! (their JSON is the store's value format, and a record's hash is taken over it), the HTTP API
//! returns them (their schemas are the OpenAPI document's), and the CLI shows them. A change here
//! is a change of the store format and of the API at once: it needs both in mind.
//!
//! **May not**: do I/O, or know the executor or the controller. What turns their results into
//! records lives with them (`ActionReport::record`, the controller's recovery).

mod ids;
mod intent;
mod notification;
mod record;
mod status;

pub use ids::{IntentId, RecordId};
pub use intent::{IntendedChange, Intent};
pub use notification::Notification;
pub use record::{
    ActionOutcome, ActionRecord, ApprovalEvent, ContestedEvent, Event, HistoryRecord, ManifestRef,
    ReconcileRequestEvent,
};
pub use status::{
    Condition, ConditionReason, ConditionStatus, ConditionType, IdentityState, ManifestStatus, ProviderHealth,
    ProviderState,
};
