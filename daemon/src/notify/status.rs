//! How each notification sink is doing, shared with `/readyz` and the web page (never its URL).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// How each sink is doing, for `/readyz` (never the URL).
#[derive(Debug, Clone, Default)]
pub struct NotifyStatus(pub(super) Arc<Mutex<BTreeMap<String, SinkStatus>>>);

/// One sink's delivery state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkStatus {
    /// `webhook`, `slack` or `teams`.
    pub kind: String,
    /// Events written for it and not delivered yet (counted when it last read the outbox).
    pub pending: u64,
    /// Events delivered since remedy started.
    pub delivered: u64,
    /// Failed attempts since remedy started (each retry counts).
    pub failed_attempts: u64,
    /// Events dropped since remedy started because they could not be delivered within 7 days.
    pub expired: u64,
    /// Why the latest attempt failed, while the receiver has not accepted an event since.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl NotifyStatus {
    /// Every sink's state, by name.
    pub fn snapshot(&self) -> BTreeMap<String, SinkStatus> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub(super) fn update(&self, sink: &str, f: impl FnOnce(&mut SinkStatus)) {
        if let Some(status) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get_mut(sink) {
            f(status);
        }
    }
}
