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

pub mod event;
pub mod payload;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use remedy_policies::config::{NotificationSink, SinkKind};
use reqwest::Url;
use serde::Serialize;
use tokio::sync::watch;

use crate::backoff::Backoff;
use crate::controller::ControllerHandle;
use crate::metrics::Metrics;
use crate::model::Notification;
use crate::secret::{Secret, SecretError};
use crate::store::{Store, StoreError};

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

/// Why notifications cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("notifications {sink}: urlFile: {source}")]
    UrlFile {
        sink: String,
        #[source]
        source: SecretError,
    },
    #[error("notifications {sink}: hmacSecretFile: {source}")]
    HmacFile {
        sink: String,
        #[source]
        source: SecretError,
    },
    /// Never says the URL: it is a secret.
    #[error("notifications {sink}: the URL in {file} {problem}")]
    Url { sink: String, file: String, problem: &'static str },
    #[error("notifications {sink}: cannot make the HTTP client: {detail}")]
    Client { sink: String, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One configured sink, ready to post.
pub struct Sink {
    config: NotificationSink,
    url: Secret,
    hmac: Option<Secret>,
    client: reqwest::Client,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink").field("name", &self.config.name).field("kind", &self.config.kind).finish_non_exhaustive()
    }
}

/// Why one delivery failed, without the URL.
#[derive(Debug, Clone)]
struct Failure {
    text: String,
    retry_after: Option<Duration>,
}

impl Sink {
    /// Reads the sink's secrets (paths relative to `config_dir`) and checks its URL: `https://`,
    /// or `http://` to a loopback address only.
    pub fn from_config(config: &NotificationSink, config_dir: &Path) -> Result<Sink, NotifyError> {
        let sink = config.name.clone();
        let url_path = config_dir.join(&config.url_file);
        let url = Secret::from_file(&url_path).map_err(|source| NotifyError::UrlFile { sink: sink.clone(), source })?;
        let bad = |problem| NotifyError::Url { sink: sink.clone(), file: url_path.display().to_string(), problem };
        let parsed = Url::parse(url.expose().trim()).map_err(|_| bad("is not a URL"))?;
        match parsed.scheme() {
            "https" => {}
            "http" if is_loopback(&parsed) => {}
            "http" => return Err(bad("is plain http://: use https:// (http:// only to a loopback address)")),
            _ => return Err(bad("is not an https:// URL")),
        }
        let hmac = match &config.hmac_secret_file {
            Some(file) => Some(
                Secret::from_file(&config_dir.join(file))
                    .map_err(|source| NotifyError::HmacFile { sink: sink.clone(), source })?,
            ),
            None => None,
        };
        let client = http_client(config.timeout).map_err(|detail| NotifyError::Client { sink, detail })?;
        Ok(Sink { config: config.clone(), url, hmac, client })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    fn wants(&self, notification: &Notification) -> bool {
        self.config.filter().wants(notification.kind)
    }

    /// Posts one notification; 2xx is delivered, anything else a failure.
    async fn post(&self, notification: &Notification) -> Result<(), Failure> {
        let body = payload::body(self.config.kind, notification);
        let mut request = self
            .client
            .post(self.url.expose().trim())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(payload::EVENT_ID_HEADER, &notification.id);
        if let (SinkKind::Webhook, Some(key)) = (self.config.kind, &self.hmac) {
            let timestamp = Utc::now().timestamp();
            request = request
                .header(payload::TIMESTAMP_HEADER, timestamp.to_string())
                .header(payload::SIGNATURE_HEADER, payload::signature(key.expose().as_bytes(), timestamp, &body));
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|error| Failure { text: self.redact(&describe(&error.without_url())), retry_after: None })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| crate::entra::retry::parse_retry_after(v, Utc::now()));
        Err(Failure { text: format!("the receiver answered {status}"), retry_after })
    }

    /// Removes the URL (and its path, which holds the token) from a text, should a library have
    /// put it there.
    fn redact(&self, text: &str) -> String {
        let url = self.url.expose().trim();
        let mut text = text.replace(url, "[url]");
        if let Ok(parsed) = Url::parse(url) {
            for secret in [parsed.path(), parsed.query().unwrap_or_default()] {
                if secret.len() > 1 {
                    text = text.replace(secret, "[url]");
                }
            }
        }
        text
    }
}

/// An error and its sources on one line.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// rustls (ring) trusting the system's CA certificates; no redirects (a redirect would carry the
/// body elsewhere).
fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("remedy/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| e.to_string())
}

/// How each sink is doing, for `/readyz` (never the URL).
#[derive(Debug, Clone, Default)]
pub struct NotifyStatus(Arc<Mutex<BTreeMap<String, SinkStatus>>>);

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

    fn update(&self, sink: &str, f: impl FnOnce(&mut SinkStatus)) {
        if let Some(status) = self.0.lock().unwrap_or_else(PoisonError::into_inner).get_mut(sink) {
            f(status);
        }
    }
}

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
            let delivery = Delivery {
                sink: Arc::clone(sink),
                store: self.store.clone(),
                metrics: self.handle.shared_metrics(),
                status: self.status.clone(),
            };
            tasks.push(tokio::spawn(delivery.run(tail_seen.clone(), shutdown.clone())));
        }
        let mut feeder = Feeder {
            store: self.store.clone(),
            sinks: self.sinks.iter().map(|s| s.name().to_owned()).collect(),
            down: BTreeMap::new(),
            last_fault: None,
            last_full_check: None,
        };
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
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

/// Writes what happened into the outbox.
struct Feeder {
    store: Store,
    sinks: Vec<String>,
    /// Providers unavailable after the latest pass, as notified.
    down: BTreeMap<String, String>,
    last_fault: Option<String>,
    last_full_check: Option<std::time::Instant>,
}

impl Feeder {
    /// One round: provider health, new history records, the chain when due, pruning. Returns the
    /// newest outbox sequence number.
    async fn round(&mut self, unavailable: BTreeMap<String, String>) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut health = Vec::new();
        for (name, why) in &unavailable {
            if !self.down.contains_key(name) {
                health.push(event::provider_unavailable(name, why, now));
            }
        }
        for name in self.down.keys() {
            if !unavailable.contains_key(name) {
                health.push(event::provider_recovered(name, now));
            }
        }
        let full_check = self.last_full_check.is_none_or(|at| at.elapsed() >= CHAIN_CHECK_EVERY);
        let store = self.store.clone();
        let sinks = self.sinks.clone();
        let last_fault = self.last_fault.clone();
        let reported = blocking(move || {
            for notification in &health {
                store.outbox_push(notification)?;
            }
            // A fault is told once (until another is found), before the records it casts doubt on.
            let mut reported = last_fault;
            let mut report = |fault: String| -> Result<(), StoreError> {
                if reported.as_ref() != Some(&fault) {
                    tracing::error!(%fault, "THE HISTORY'S HASH CHAIN DOES NOT VERIFY");
                    store.outbox_push(&event::chain_failure(&fault, Utc::now()))?;
                    reported = Some(fault);
                }
                Ok(())
            };
            let mut found = false;
            if full_check {
                match store.verify_history() {
                    Ok(_) => {}
                    Err(StoreError::ChainBroken(broken)) => {
                        found = true;
                        report(broken.to_string())?;
                    }
                    Err(error) => return Err(error),
                }
            }
            loop {
                let unfed = store.outbox_unfed(FEED_BATCH)?;
                let Some(last) = unfed.records.last() else { break };
                if let (Some(fault), false) = (unfed.fault, found) {
                    found = true;
                    report(fault)?;
                }
                store.outbox_feed(last.id, &event::from_records(&unfed.records))?;
            }
            let done = sinks
                .iter()
                .map(|sink| store.notify_cursor(sink).map(Option::unwrap_or_default))
                .collect::<Result<Vec<u64>, _>>()?;
            if let Some(&through) = done.iter().min() {
                store.outbox_prune(through)?;
            }
            Ok(reported)
        })
        .await?;
        // Only once written: a round the store failed is done again, transitions included.
        self.down = unavailable;
        self.last_fault = reported;
        if full_check {
            self.last_full_check = Some(std::time::Instant::now());
        }
        let store = self.store.clone();
        blocking(move || store.outbox_last_seq()).await
    }
}

/// One sink's delivery task.
struct Delivery {
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
    async fn run(self, mut tail: watch::Receiver<u64>, mut shutdown: watch::Receiver<bool>) {
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
    use super::*;

    fn sink(kind: SinkKind, url: &str, dir: &Path) -> Result<Sink, NotifyError> {
        std::fs::write(dir.join("url"), format!("{url}\n")).expect("url file");
        let config = NotificationSink {
            name: "soc".to_owned(),
            kind,
            url_file: "url".to_owned(),
            events: None,
            min_severity: Default::default(),
            hmac_secret_file: None,
            timeout: Duration::from_secs(10),
        };
        Sink::from_config(&config, dir)
    }

    #[test]
    fn a_sink_url_is_https_or_loopback_http_and_never_shown() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        for url in ["https://hooks.slack.com/services/T0/B0/s3cr3t", "http://127.0.0.1:9/x", "http://[::1]/x"] {
            assert!(sink(SinkKind::Slack, url, dir.path()).is_ok(), "{url}");
        }
        for url in ["http://hooks.example.com/s3cr3t", "ftp://example.com/s3cr3t", "not a url s3cr3t"] {
            let error = sink(SinkKind::Webhook, url, dir.path()).expect_err(url).to_string();
            assert!(!error.contains("s3cr3t") && error.contains("url"), "{url}: {error}");
        }
        let missing = NotificationSink {
            url_file: "absent".to_owned(),
            ..NotificationSink {
                name: "soc".to_owned(),
                kind: SinkKind::Teams,
                url_file: String::new(),
                events: None,
                min_severity: Default::default(),
                hmac_secret_file: None,
                timeout: Duration::from_secs(10),
            }
        };
        let error = Sink::from_config(&missing, dir.path()).expect_err("no file").to_string();
        assert!(error.contains("notifications soc: urlFile") && error.contains("absent"), "{error}");
    }

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

    #[test]
    fn errors_are_stripped_of_the_url() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = sink(SinkKind::Teams, "https://example.com/workflows/abc123?sig=s3cr3t", dir.path()).expect("sink");
        let text = sink.redact("error sending request for url (https://example.com/workflows/abc123?sig=s3cr3t): x");
        assert!(!text.contains("s3cr3t") && !text.contains("abc123"), "{text}");
        assert_eq!(sink.redact("sig=s3cr3t"), "[url]");
    }
}
