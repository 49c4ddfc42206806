//! Notifications: remedy tells webhooks, Slack and Microsoft Teams what happened (held for
//! approval, action failed, drift corrected, contested, provider unavailable or recovered, chain
//! verification failure), from a durable outbox in the store.
//!
//! - **Nothing lost.** Events of the history are fed into the outbox in the same transaction that
//!   moves the feeding point (`store::outbox`); provider health and chain faults are written to
//!   it when they are detected. Each sink has its own cursor, moved only after its receiver
//!   answered 2xx: a crash (kill -9) in between sends that event again, with the same `id`.
//! - **Retries.** A failed delivery (no answer within the sink's `timeout`, a refused
//!   connection, any status but 2xx) is retried after `Retry-After` when the receiver sends one
//!   (at most [`MAX_RETRY_AFTER`]), else with exponential backoff and jitter ([`BACKOFF`]),
//!   for as long as the event is younger than [`EXPIRE_AFTER`]; then it is dropped, logged at
//!   ERROR and counted in `remedy_notifications_expired_total`. A sink gets its events one at a
//!   time, in the order they were written: an event waits until the one before it is done.
//! - **The chain.** Every history record is checked against the chain as it is fed (its link to
//!   the record before and its hash), and the whole chain is verified at start and every
//!   [`CHAIN_CHECK_EVERY`]. A fault makes one `chain-verification-failed` event (again only
//!   when the fault found changes, or after a restart).
//! - **Provider health** comes from the controller's progress after each pass: a provider that
//!   appears among the unavailable makes `provider-unavailable`, one that leaves them
//!   `provider-recovered`.
//! - **Secrets.** The URL and the HMAC key are [`Secret`]s read from files; errors are stripped of
//!   the URL before they are logged or shown.

mod delivery;
pub mod event;
mod feeder;
pub mod payload;
mod sink;
mod status;

use std::path::Path;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use remedy_policies::config::NotificationSink;
use tokio::sync::watch;

pub use sink::{NotifyError, Sink};
pub use status::{NotifyStatus, SinkStatus};

use crate::backoff::Backoff;
use crate::controller::ControllerHandle;
use crate::store::{Store, StoreError};
use delivery::Delivery;
use feeder::Feeder;

/// An event not delivered within this time after it happened is dropped (and counted).
pub const EXPIRE_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);
/// Retries without `Retry-After`: 1 s, 2 s, 4 s ... up to 2 minutes, each 50–100 % of that.
pub const BACKOFF: Backoff = Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(120) };
/// The longest `Retry-After` honoured as given.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// How often the whole history chain is verified (besides at start and record by record).
pub const CHAIN_CHECK_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How often the history is looked at for new records when no pass ended meanwhile.
const FEED_EVERY: Duration = Duration::from_secs(1);
/// History records fed in one transaction.
const FEED_BATCH: usize = 256;
/// Outbox entries a sink reads at once.
const READ_BATCH: usize = 10_000;

/// The notification machinery of `remedy serve`: the feeder and one delivery task per sink.
#[derive(Debug)]
pub struct Notifier {
    store: Store,
    sinks: Vec<Arc<Sink>>,
    handle: ControllerHandle,
    status: NotifyStatus,
}

impl Notifier {
    /// Sets up the configured sinks (their secrets read, their URLs checked). With no sinks,
    /// returns `None` and forgets any outbox an earlier configuration left.
    pub fn new(
        sinks: &[NotificationSink],
        config_dir: &Path,
        store: &Store,
        handle: &ControllerHandle,
    ) -> Result<Option<Notifier>, NotifyError> {
        if sinks.is_empty() {
            store.outbox_clear()?;
            return Ok(None);
        }
        let sinks =
            sinks.iter().map(|s| Sink::from_config(s, config_dir).map(Arc::new)).collect::<Result<Vec<_>, _>>()?;
        let status = NotifyStatus::default();
        {
            let mut map = status.0.lock().unwrap_or_else(PoisonError::into_inner);
            for sink in &sinks {
                handle.metrics().notification_sink(sink.name());
                let kind = serde_json::to_value(sink.config.kind).ok().and_then(|v| v.as_str().map(str::to_owned));
                map.insert(
                    sink.name().to_owned(),
                    SinkStatus {
                        kind: kind.unwrap_or_default(),
                        pending: 0,
                        delivered: 0,
                        failed_attempts: 0,
                        expired: 0,
                        last_error: None,
                    },
                );
            }
        }
        Ok(Some(Notifier { store: store.clone(), sinks, handle: handle.clone(), status }))
    }

    /// Keeps the sinks' state in `shared` (several instances: the API keeps one status across
    /// terms of leadership, each with a notifier of its own).
    pub fn sharing(mut self, shared: &NotifyStatus) -> Notifier {
        let mine = std::mem::take(&mut *self.status.0.lock().unwrap_or_else(PoisonError::into_inner));
        *shared.0.lock().unwrap_or_else(PoisonError::into_inner) = mine;
        self.status = shared.clone();
        self
    }

    /// The sinks' state, shared with `/readyz`.
    pub fn status(&self) -> NotifyStatus {
        self.status.clone()
    }

    /// Feeds the outbox and delivers it until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut progress = self.handle.progress();
        let store = self.store.clone();
        let names: Vec<String> = self.sinks.iter().map(|s| s.name().to_owned()).collect();
        let started = blocking(move || {
            let fed = store.outbox_start()?;
            store.retain_notify_cursors(&names.iter().map(String::as_str).collect::<Vec<_>>())?;
            let last = store.outbox_last_seq()?;
            for name in &names {
                if store.notify_cursor(name)?.is_none() {
                    store.set_notify_cursor(name, last)?;
                }
            }
            Ok(fed)
        })
        .await;
        match started {
            Ok(fed) => tracing::info!(sinks = self.sinks.len(), fed_through = fed.0, "notifications started"),
            Err(error) => {
                tracing::error!(%error, "notifications cannot start: the store failed; no notification is sent");
                return;
            }
        }
        let (tail, tail_seen) = watch::channel(0u64);
        let mut tasks = Vec::new();
        for sink in &self.sinks {
            let delivery =
                Delivery::new(Arc::clone(sink), self.store.clone(), self.handle.shared_metrics(), self.status.clone());
            tasks.push(tokio::spawn(delivery.run(tail_seen.clone(), shutdown.clone())));
        }
        let mut feeder = Feeder::new(self.store.clone(), self.sinks.iter().map(|s| s.name().to_owned()).collect());
        loop {
            let unavailable = progress.borrow_and_update().unavailable_providers.clone();
            match feeder.round(unavailable).await {
                Ok(last) => {
                    // Wakes the sinks only when something was written.
                    tail.send_if_modified(|seen| std::mem::replace(seen, last) != last);
                }
                Err(error) => tracing::error!(%error, "notifications: the store failed; retrying"),
            }
            tokio::select! {
                _ = tokio::time::sleep(FEED_EVERY) => {}
                changed = progress.changed() => if changed.is_err() { tokio::time::sleep(FEED_EVERY).await },
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        for task in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

/// Runs a store call off the async threads (sled's flushes block); a panic in it is resumed here.
pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receiver_back_after_ten_minutes_down_is_tried_again_within_two_minutes() {
        // Attempts while it is down, each failing at once, the unluckiest jitter (the longest
        // waits): the wait after the last failure before it came back is what it waits for.
        let mut elapsed = Duration::ZERO;
        let mut attempt = 0;
        while elapsed < Duration::from_secs(600) {
            attempt += 1;
            let wait = BACKOFF.delay(attempt, 1.0);
            assert!(wait <= Duration::from_secs(120), "attempt {attempt}: {wait:?}");
            elapsed += wait;
        }
        assert!(attempt < 15, "{attempt} attempts in ten minutes");
    }
}
