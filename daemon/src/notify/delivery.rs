//! One sink's delivery task: its events one at a time, in order, retried with backoff or after
//! `Retry-After` until delivered or expired; its cursor moved only after a 2xx.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;

use super::sink::Sink;
use super::status::NotifyStatus;
use super::{blocking, BACKOFF, EXPIRE_AFTER, MAX_RETRY_AFTER, READ_BATCH};
use crate::metrics::Metrics;
use crate::model::Notification;
use crate::store::{Store, StoreError};

/// One sink's delivery task.
pub(super) struct Delivery {
    sink: Arc<Sink>,
    store: Store,
    metrics: Arc<Metrics>,
    status: NotifyStatus,
}

enum Done {
    Delivered,
    Expired,
    ShuttingDown,
}

impl Delivery {
    pub(super) fn new(sink: Arc<Sink>, store: Store, metrics: Arc<Metrics>, status: NotifyStatus) -> Delivery {
        Delivery { sink, store, metrics, status }
    }

    pub(super) async fn run(self, mut tail: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
        let name = self.sink.name().to_owned();
        loop {
            if *shutdown.borrow() {
                return;
            }
            match self.pass(&mut shutdown).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(sink = %name, %error, "notifications: the store failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
            tokio::select! {
                _ = tail.changed() => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    /// Delivers everything after the cursor; `Ok(true)` when shutting down.
    async fn pass(&self, shutdown: &mut watch::Receiver<bool>) -> Result<bool, StoreError> {
        let name = self.sink.name().to_owned();
        let store = self.store.clone();
        let (mut cursor, entries) = blocking({
            let name = name.clone();
            move || {
                let cursor = store.notify_cursor(&name)?.unwrap_or_default();
                Ok((cursor, store.outbox_after(cursor, READ_BATCH)?))
            }
        })
        .await?;
        let mut pending = entries.iter().filter(|e| self.sink.wants(&e.notification)).count() as u64;
        self.set_pending(pending);
        let mut unsaved = false;
        for entry in &entries {
            if !self.sink.wants(&entry.notification) {
                cursor = entry.seq;
                unsaved = true;
                continue;
            }
            if unsaved {
                self.save(cursor).await?;
                unsaved = false;
            }
            match self.deliver(&entry.notification, shutdown).await {
                Done::ShuttingDown => return Ok(true),
                Done::Delivered | Done::Expired => {}
            }
            cursor = entry.seq;
            self.save(cursor).await?;
            pending -= 1;
            self.set_pending(pending);
        }
        if unsaved {
            self.save(cursor).await?;
        }
        Ok(false)
    }

    async fn save(&self, cursor: u64) -> Result<(), StoreError> {
        let store = self.store.clone();
        let name = self.sink.name().to_owned();
        blocking(move || store.set_notify_cursor(&name, cursor)).await
    }

    fn set_pending(&self, pending: u64) {
        self.metrics.set_notifications_pending(self.sink.name(), pending);
        self.status.update(self.sink.name(), |s| s.pending = pending);
    }

    /// Tries until the receiver accepts it, it expires, or remedy stops.
    async fn deliver(&self, notification: &Notification, shutdown: &mut watch::Receiver<bool>) -> Done {
        let name = self.sink.name();
        let mut attempt = 0u32;
        loop {
            // A stop does not wait for an attempt in flight: the event is sent again after the
            // restart, with its id.
            let attempt_result = tokio::select! {
                result = self.sink.post(notification) => result,
                _ = shutdown.changed() => return Done::ShuttingDown,
            };
            match attempt_result {
                Ok(()) => {
                    self.metrics.notification_delivered(name);
                    self.status.update(name, |s| {
                        s.delivered += 1;
                        s.last_error = None;
                    });
                    tracing::debug!(sink = %name, event = %notification.id, kind = notification.kind.name(), attempts = attempt + 1, "notification delivered");
                    return Done::Delivered;
                }
                Err(failure) => {
                    attempt = attempt.saturating_add(1);
                    self.metrics.notification_failed(name);
                    self.status.update(name, |s| {
                        s.failed_attempts += 1;
                        s.last_error = Some(failure.text.clone());
                    });
                    let age = (Utc::now() - notification.at).to_std().unwrap_or_default();
                    if age >= EXPIRE_AFTER {
                        self.metrics.notification_expired(name);
                        self.status.update(name, |s| s.expired += 1);
                        tracing::error!(
                            sink = %name, event = %notification.id, kind = notification.kind.name(),
                            at = %notification.at, error = %failure.text,
                            "notification DROPPED: not delivered within 7 days"
                        );
                        return Done::Expired;
                    }
                    let wait = match failure.retry_after {
                        Some(after) => after.min(MAX_RETRY_AFTER),
                        None => BACKOFF.delay(attempt, fastrand::f64()),
                    };
                    tracing::warn!(
                        sink = %name, event = %notification.id, attempt, error = %failure.text,
                        retry_in_ms = wait.as_millis() as u64, "notification not delivered; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.changed() => return Done::ShuttingDown,
                    }
                    if *shutdown.borrow() {
                        return Done::ShuttingDown;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use remedy_policies::config::SinkKind;

    use super::super::event;
    use super::super::sink::tests::sink;
    use super::*;

    /// A delivery task for `sink` on a fresh store holding `notification`.
    fn delivery(sink: Sink, notification: &Notification) -> (Delivery, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, _) = Store::open(dir.path().join("store")).expect("store");
        store.outbox_start().expect("on");
        store.set_notify_cursor(sink.name(), 0).expect("cursor");
        store.outbox_push(notification).expect("pushed");
        let status = NotifyStatus::default();
        let delivery = Delivery { sink: Arc::new(sink), store, metrics: Arc::new(Metrics::default()), status };
        (delivery, dir)
    }

    /// A URL where nothing listens.
    fn nowhere() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let port = listener.local_addr().expect("address").port();
        drop(listener);
        format!("http://127.0.0.1:{port}/hooks/s3cr3t")
    }

    #[tokio::test]
    async fn an_event_older_than_seven_days_is_dropped_at_its_next_failure_and_counted() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let old = event::provider_recovered(
            "entra-id",
            Utc::now() - chrono::Duration::days(7) - chrono::Duration::minutes(1),
        );
        let (delivery, _store_dir) = delivery(sink(SinkKind::Webhook, &nowhere(), dir.path()).expect("sink"), &old);
        let (_stop, mut shutdown) = watch::channel(false);
        assert!(!delivery.pass(&mut shutdown).await.expect("a pass"), "done, not stopped");
        assert_eq!(delivery.store.notify_cursor("soc").expect("cursor"), Some(1), "moved past it");
        let metrics = delivery.metrics.render();
        assert!(metrics.contains("remedy_notifications_expired_total{sink=\"soc\"} 1"), "{metrics}");
        assert!(metrics.contains("remedy_notifications_failed_total{sink=\"soc\"} 1"), "{metrics}");
        assert!(!metrics.contains("s3cr3t"));
    }

    #[tokio::test]
    async fn an_event_not_delivered_stays_where_it_was_when_remedy_stops() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let fresh = event::provider_recovered("entra-id", Utc::now());
        let (delivery, _store_dir) = delivery(sink(SinkKind::Webhook, &nowhere(), dir.path()).expect("sink"), &fresh);
        let (stop, mut shutdown) = watch::channel(false);
        let metrics = Arc::clone(&delivery.metrics);
        let store = delivery.store.clone();
        let task = tokio::spawn(async move { delivery.pass(&mut shutdown).await });
        while !metrics.render().contains("remedy_notifications_failed_total{sink=\"soc\"} 1") {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.send(true).expect("stop");
        assert!(task.await.expect("joined").expect("a pass"), "stopped while retrying");
        assert_eq!(store.notify_cursor("soc").expect("cursor"), Some(0), "still to deliver after the restart");
    }
}
