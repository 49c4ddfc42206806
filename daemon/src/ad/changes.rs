//! Noticing changes to the managed accounts on the DC as they happen (issue 3 of 6).
//!
//! [`ChangeWatcher`] runs beside the controller with connections of its own. It registers LDAP
//! change-notification searches (`LDAP_SERVER_NOTIFICATION_OID`) that cover the managed accounts'
//! containers as [`remedy_policies::coverage`] decides, and polls the DC by `uSNChanged` where
//! notification is off, refused or does not reach ([`remedy_policies::usn`]). It reports each
//! change of an object by `objectGUID` and `uSNChanged`; the controller keeps those of accounts it
//! manages and drops notifications older than what it read.
//!
//! Order, so that nothing falls between two looks: the watermark (the DC's `highestCommittedUSN`)
//! is read when the watcher starts, before the controller's first pass reads the accounts; after
//! every (re)registration the watcher catches up by `uSNChanged` from that watermark, so a change
//! made while a connection was down is still reported. A DC whose `invocationId` changed (restored
//! from a backup) voids the watermark: the controller is asked for a full pass.
//!
//! While nothing changes, the cost does not grow with the number of accounts: the notification
//! searches are silent, and a poll is one rootDSE read per interval (more only when the DC's
//! `highestCommittedUSN` moved).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, Scope, SearchEntry, SearchResult};
use remedy_policies::config::{ActiveDirectoryConfig, AdWatchConfig};
use remedy_policies::coverage::{cover, Coverage, Limits, Registration};
use remedy_policies::usn::{catch_up, CatchUp, DcNow, Watermark};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use super::codec;
use super::directory::{target, Inner};
use super::error::AdError;
use super::pool::backoff;
use super::AdStats;
use crate::drift::{ChangedObject, DriftSignal, DriftSource};

/// `LDAP_SERVER_NOTIFICATION_OID` (MS-ADTS 3.1.1.3.4.1.9): no value.
pub const NOTIFICATION_OID: &str = "1.2.840.113556.1.4.528";
/// What a change report carries: enough to name the object and order the change.
const CHANGE_ATTRIBUTES: [&str; 2] = ["objectGUID", "uSNChanged"];
/// LDAP result codes with which a DC refuses the notification control.
const REFUSED: [u32; 3] = [
    12, /* unavailableCriticalExtension */
    50, /* insufficientAccessRights */
    53, /* unwillingToPerform */
];

/// An account the controller manages: where it lives (its container is watched) and what it is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct WatchedAccount {
    pub dn: String,
    pub guid: Uuid,
}

/// Watches the managed accounts on the DC; see the module documentation.
pub struct ChangeWatcher {
    inner: Arc<Inner>,
    settings: AdWatchConfig,
    /// The pool's DC switches when the DC was last asked (see [`ChangeWatcher::dc_now`]).
    last_switches: std::sync::atomic::AtomicU64,
}

/// The watcher's LDAP requests, read live (for `remedy_ldap_operations_total`).
#[derive(Clone)]
pub struct ChangeWatcherStats {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChangeWatcherStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ChangeWatcherStats").field(&self.stats()).finish()
    }
}

impl ChangeWatcherStats {
    pub fn stats(&self) -> AdStats {
        self.inner.stats()
    }
}

impl std::fmt::Debug for ChangeWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeWatcher").field("settings", &self.settings).finish_non_exhaustive()
    }
}

/// What one registration session learned.
enum Ended {
    /// The set of watched accounts changed: register again for the new containers.
    Rewatch,
    /// The controller is gone.
    Stopped,
}

/// What a notification search forwards.
enum Heard {
    Change {
        guid: Uuid,
        usn: u64,
    },
    /// The search ended: the connection dropped, or the DC refused the control (`refused`).
    Ended {
        base: String,
        refused: bool,
        error: String,
    },
}

impl ChangeWatcher {
    /// A watcher with a connection pool of its own (one connection for polls and reads, plus
    /// one per notification connection). Nothing is opened until it runs.
    pub fn new(config: &ActiveDirectoryConfig, config_dir: &std::path::Path) -> Result<ChangeWatcher, AdError> {
        let inner = Inner::new(target(config, config_dir)?, config, 1);
        Ok(ChangeWatcher {
            inner: Arc::new(inner),
            settings: config.watch.clone(),
            last_switches: std::sync::atomic::AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> ChangeWatcherStats {
        ChangeWatcherStats { inner: Arc::clone(&self.inner) }
    }

    /// Runs until `signals` is closed. `accounts` brings the managed accounts (after each full
    /// pass); changes to them, and resync requests, go to `signals`.
    /// `ready` is told once the first watermark is taken; if nobody waits for it any more (the
    /// controller may have read the accounts before it), a full pass is asked for then.
    pub async fn run(
        self,
        mut accounts: watch::Receiver<Vec<WatchedAccount>>,
        signals: mpsc::Sender<DriftSignal>,
        ready: oneshot::Sender<()>,
    ) {
        let mut ready = Some(ready);
        let mut watermark: Option<Watermark> = None;
        let mut refused = false;
        let mut failures: u32 = 0;
        loop {
            if signals.is_closed() {
                return;
            }
            let mut session =
                Session { watcher: &self, signals: &signals, watermark: &mut watermark, refused, ready: &mut ready };
            let outcome = session.run(&mut accounts).await;
            refused = session.refused;
            match outcome {
                Ok(Ended::Stopped) => return,
                Ok(Ended::Rewatch) => failures = 0,
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures);
                    tracing::warn!(%error, failures, retry_in_ms = delay.as_millis() as u64, "watching the DC for changes stopped: registering again");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = signals.closed() => return,
                    }
                }
            }
        }
    }

    /// The DC's latest USN and its invocationId (read again only when the USN moved, the pool
    /// moved to another DC, or first). A watermark belongs to one DC: USNs are local to each, so
    /// another DC's invocationId makes the caller ask for a full pass and start anew there.
    async fn dc_now(&self, known: Option<&Watermark>) -> Result<DcNow, AdError> {
        let switches = self.inner.pool.counters.switches.load(std::sync::atomic::Ordering::Relaxed);
        let root = self.read_base("", &["highestCommittedUSN", "dsServiceName"]).await?;
        let usn: u64 =
            single(&root, "highestCommittedUSN")?.parse().map_err(|_| decode("highestCommittedUSN", "not a number"))?;
        let same_dc = switches == self.inner.pool.counters.switches.load(std::sync::atomic::Ordering::Relaxed)
            && self.last_switches.swap(switches, std::sync::atomic::Ordering::Relaxed) == switches;
        if let Some(known) = known.filter(|k| k.usn == usn && same_dc) {
            return Ok(DcNow { invocation_id: known.invocation_id.clone(), highest_committed_usn: usn });
        }
        let service = single(&root, "dsServiceName")?;
        let settings = self.read_base(&service, &["invocationId"]).await?;
        let invocation_id = settings
            .bin_attrs
            .get("invocationId")
            .and_then(|values| values.first())
            .and_then(|bytes| codec::guid_from_bytes(bytes))
            .ok_or_else(|| decode("invocationId", "missing or not a GUID"))?;
        Ok(DcNow { invocation_id: invocation_id.to_string(), highest_committed_usn: usn })
    }

    /// One base-scope read.
    async fn read_base(&self, dn: &str, attributes: &[&str]) -> Result<SearchEntry, AdError> {
        let timeout = self.inner.pool.target.operation_timeout;
        let mut lease = self.inner.pool.lease().await?;
        self.inner.count_search();
        let dn_owned = dn.to_owned();
        let attributes: Vec<String> = attributes.iter().map(|a| (*a).to_owned()).collect();
        let entries = lease
            .run("search", Some(dn), |mut ldap| async move {
                let SearchResult(entries, result) =
                    ldap.with_timeout(timeout).search(&dn_owned, Scope::Base, "(objectClass=*)", attributes).await?;
                result.success().map(|_| entries)
            })
            .await?;
        entries.into_iter().next().map(SearchEntry::construct).ok_or_else(|| decode("entry", "the DC returned nothing"))
    }

    /// The accounts below the base DN changed since the watermark (`filter` from
    /// [`catch_up`]), by objectGUID and uSNChanged.
    async fn changed_since(&self, filter: &str) -> Result<Vec<(Uuid, u64)>, AdError> {
        let filter = format!("(&(objectClass=user){filter})");
        let entries = self.inner.search_paged(&self.inner.base_dn, &filter, &CHANGE_ATTRIBUTES).await?;
        Ok(entries.iter().filter_map(change_of).collect())
    }

    /// Registers one notification search on `ldap` and forwards what it hears to `heard`.
    async fn register(
        &self,
        mut ldap: Ldap,
        registration: Registration,
        heard: mpsc::Sender<Heard>,
    ) -> Result<(), AdError> {
        let (base, scope) = match &registration {
            Registration::OneLevel { base } => (base.clone(), Scope::OneLevel),
            Registration::Subtree { base } => (base.clone(), Scope::Subtree),
        };
        self.inner.count_search();
        let control = RawControl { ctype: NOTIFICATION_OID.to_owned(), crit: true, val: None };
        let mut stream = ldap
            .with_controls(control)
            .streaming_search(&base, scope, "(objectClass=*)", CHANGE_ATTRIBUTES.to_vec())
            .await
            .map_err(|error| AdError::Connection {
                url: self.inner.pool.current_url(),
                message: format!("cannot register a change notification on {base}: {error}"),
            })?;
        tokio::spawn(async move {
            let ended = loop {
                match stream.next().await {
                    Ok(Some(entry)) if !entry.is_ref() && !entry.is_intermediate() => {
                        if let Some((guid, usn)) = change_of(&SearchEntry::construct(entry)) {
                            if heard.send(Heard::Change { guid, usn }).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let result = stream.finish().await;
                        break Heard::Ended {
                            base,
                            refused: REFUSED.contains(&result.rc),
                            error: format!("the DC ended the search: {} (result code {})", result.text, result.rc),
                        };
                    }
                    Err(error) => break Heard::Ended { base, refused: false, error: error.to_string() },
                }
            };
            let _ = heard.send(ended).await;
        });
        Ok(())
    }
}

/// One registration of the watcher: from registering to the connection's end or a new set of
/// accounts.
struct Session<'a> {
    watcher: &'a ChangeWatcher,
    signals: &'a mpsc::Sender<DriftSignal>,
    watermark: &'a mut Option<Watermark>,
    /// The DC refused notification: everything is polled from now on.
    refused: bool,
    /// Told when the first watermark is taken.
    ready: &'a mut Option<oneshot::Sender<()>>,
}

impl Session<'_> {
    async fn run(&mut self, accounts: &mut watch::Receiver<Vec<WatchedAccount>>) -> Result<Ended, AdError> {
        let watcher = self.watcher;
        let settings = &watcher.settings;
        if self.watermark.is_none() {
            // Before the controller's first read of the accounts: what changes after it is caught up.
            let now = watcher.dc_now(None).await?;
            *self.watermark = Some(Watermark { invocation_id: now.invocation_id, usn: now.highest_committed_usn });
            if let Some(ready) = self.ready.take() {
                if ready.send(()).is_err() {
                    // Taken after the controller may have read the accounts: what changed between
                    // its read and this watermark is known only to a full pass.
                    let why = "the DC's watermark was taken after the first pass began".to_owned();
                    let _ = self.signals.send(DriftSignal::Resync { why, source: DriftSource::Poll }).await;
                }
            }
        }
        let watched = accounts.borrow_and_update().clone();
        let managed: HashSet<Uuid> = watched.iter().map(|a| a.guid).collect();
        let coverage = if settings.notification && !self.refused && !watched.is_empty() {
            let root = watcher.inner.naming_context().await?.to_owned();
            let dns: Vec<String> = watched.iter().map(|a| a.dn.clone()).collect();
            let limits = Limits { connections: settings.connections, domain_wide: settings.domain_wide };
            cover(&dns, &root, limits)
        } else {
            Coverage { connections: Vec::new(), polled: watched.iter().map(|a| a.dn.clone()).collect() }
        };
        // Register first …
        let (heard_tx, mut heard) = mpsc::channel::<Heard>(1024);
        let mut connections = Vec::new();
        let mut renew_at: Option<tokio::time::Instant> = None;
        for registrations in &coverage.connections {
            let (_dc, ldap, until) = watcher.inner.pool.dedicated().await?;
            renew_at = match (renew_at, until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            for registration in registrations {
                watcher.register(ldap.clone(), registration.clone(), heard_tx.clone()).await?;
            }
            connections.push(ldap);
        }
        drop(heard_tx);
        let searches: usize = coverage.connections.iter().map(Vec::len).sum();
        let polling = !settings.poll_interval.is_zero() && (searches == 0 || !coverage.polled.is_empty());
        tracing::info!(
            connections = connections.len(),
            searches,
            polled = coverage.polled.len(),
            polling,
            poll_interval_ms = settings.poll_interval.as_millis() as u64,
            accounts = watched.len(),
            "watching the managed accounts for changes"
        );
        // … then read: what changed since the watermark (while unregistered) is caught up.
        self.catch_up(&managed).await?;
        let mut tick = tokio::time::interval(settings.poll_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.reset();
        let result = loop {
            tokio::select! {
                message = heard.recv(), if searches > 0 => match message {
                    Some(Heard::Change { guid, usn }) => {
                        if managed.contains(&guid) {
                            let objects = vec![ChangedObject::AdAccount { guid, usn }];
                            if !self.send_changes(objects, DriftSource::Notification).await {
                                break Ok(Ended::Stopped);
                            }
                        }
                    }
                    Some(Heard::Ended { base, refused: true, error }) => {
                        tracing::warn!(base = %base, %error, "the DC refused change notification: the managed accounts are polled by uSNChanged instead");
                        self.refused = true;
                        break Ok(Ended::Rewatch);
                    }
                    Some(Heard::Ended { base, error, .. }) => {
                        break Err(AdError::Connection {
                            url: watcher.inner.pool.current_url(),
                            message: format!("the change notification on {base} ended: {error}"),
                        });
                    }
                    None => break Ok(Ended::Rewatch),
                },
                changed = accounts.changed() => {
                    if changed.is_err() {
                        break Ok(Ended::Stopped);
                    }
                    let next: BTreeSet<WatchedAccount> = accounts.borrow().iter().cloned().collect();
                    if next != watched.iter().cloned().collect::<BTreeSet<_>>() {
                        break Ok(Ended::Rewatch);
                    }
                }
                _ = tick.tick(), if polling => {
                    if let Err(error) = self.catch_up(&managed).await {
                        break Err(error);
                    }
                }
                // Registered again, with new tickets, before the DC ends the sessions whose
                // ticket expired; the catch-up after registering covers the moment between.
                _ = sleep_until_some(renew_at) => {
                    tracing::debug!("the change-notification connections' Kerberos ticket is near its end: registering again");
                    break Ok(Ended::Rewatch);
                }
                _ = self.signals.closed() => break Ok(Ended::Stopped),
            }
        };
        // Dropping the handles ends the connections and their searches.
        drop(connections);
        result
    }

    /// Reports what changed since the watermark and moves it to the DC's latest USN.
    async fn catch_up(&mut self, managed: &HashSet<Uuid>) -> Result<(), AdError> {
        let now = self.watcher.dc_now(self.watermark.as_ref()).await?;
        match catch_up(self.watermark.as_ref(), &now) {
            CatchUp::UpToDate => {}
            CatchUp::Poll { filter, to } => {
                let changed = self.watcher.changed_since(&filter).await?;
                let objects: Vec<ChangedObject> = changed
                    .into_iter()
                    .filter(|(guid, _)| managed.contains(guid))
                    .map(|(guid, usn)| ChangedObject::AdAccount { guid, usn })
                    .collect();
                if !objects.is_empty() {
                    self.send_changes(objects, DriftSource::Poll).await;
                }
                *self.watermark = Some(Watermark { invocation_id: now.invocation_id, usn: to });
            }
            CatchUp::FullRead { why, to } => {
                tracing::warn!(%why, "the DC's change history cannot be followed: asking for a full pass");
                let _ = self.signals.send(DriftSignal::Resync { why, source: DriftSource::Poll }).await;
                *self.watermark = Some(Watermark { invocation_id: now.invocation_id, usn: to });
            }
        }
        Ok(())
    }

    async fn send_changes(&self, objects: Vec<ChangedObject>, source: DriftSource) -> bool {
        let signal = DriftSignal::Changed { objects, source, noticed: tokio::time::Instant::now() };
        self.signals.send(signal).await.is_ok()
    }
}

/// objectGUID and uSNChanged of a change report.
/// Sleeps until `at`; never ends when there is no `at`.
async fn sleep_until_some(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn change_of(entry: &SearchEntry) -> Option<(Uuid, u64)> {
    let guid = entry.bin_attrs.get("objectGUID")?.first().and_then(|b| codec::guid_from_bytes(b))?;
    let usn = entry.attrs.get("uSNChanged")?.first()?.parse().ok()?;
    Some((guid, usn))
}

fn single(entry: &SearchEntry, attribute: &'static str) -> Result<String, AdError> {
    entry.attrs.get(attribute).and_then(|v| v.first().cloned()).ok_or_else(|| decode(attribute, "missing"))
}

fn decode(attribute: &'static str, message: &str) -> AdError {
    AdError::Decode { dn: String::new(), attribute, message: message.to_owned() }
}
