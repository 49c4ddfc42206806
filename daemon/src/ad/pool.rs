//! A small pool of bound LDAP connections to one of the domain's DCs, rebuilt when the DC drops
//! them, moved to another DC when it fails.
//!
//! ldap3 gives one connection per `LdapConnAsync` and no reconnect. The pool keeps up to
//! `connections` of them; an operation leases one (waiting for a permit: that bounds operations in
//! flight), and a lease whose connection is closed, broken or to another DC than the one in use
//! opens a new one first. Which DC is in use is [`remedy_policies::dc_choice`]'s rule: the most
//! preferred that answers; when it fails to connect or bind, the next one at once (within the same
//! lease); back to a more preferred one once a probe has seen it answer for `returnAfter`.
//! Reconnects to a failed DC are spaced by exponential backoff with jitter: while every DC is down
//! a lease fails at once with the last error instead of hammering them (a wrong password retried
//! in a loop would also lock the action account out). There is no retry loop here: a failed
//! operation returns its error, and the controller's error policy decides.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
use remedy_policies::dc_choice::{self, Candidate, Choice, Health as DcHealth};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::error::AdError;
use super::kerberos::{Credentials, Kerberos};
use super::tls;
use crate::backoff::Backoff;
use crate::secret::Secret;

/// First reconnect delay after a failure; doubles per further failure up to [`BACKOFF_MAX`].
/// The pool's backoff only keeps many leases from hammering a DC that is down; the daemon's error
/// policy paces retries beyond that, so the cap is short: a DC that returns is used within
/// seconds, not after a pool backoff stacked on top of the controller's.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// How often, at most, more preferred DCs are probed while remedy uses a less preferred one.
const PROBE_EVERY: Duration = Duration::from_secs(5);

/// How the action account binds.
#[derive(Debug)]
pub enum Bind {
    /// A simple bind with the account's name and password.
    Simple { user: String, password: Secret },
    /// A SASL GSSAPI bind with tickets from a keytab (the service ticket for each DC's name).
    Kerberos(Kerberos),
}

/// Where and how to connect. Holds the password, so its `Debug` is written by hand.
pub struct Target {
    /// The DCs, most preferred first (at least one).
    pub urls: Vec<String>,
    /// How long a more preferred DC must answer before the pool returns to it.
    pub return_after: Duration,
    pub settings: LdapConnSettings,
    pub bind: Bind,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    /// For error messages about certificate verification.
    pub ca_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("urls", &self.urls)
            .field("bind", &self.bind)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// Counters, for tests, benchmarks and status pages.
#[derive(Debug, Default)]
pub struct Counters {
    pub connects: AtomicU64,
    pub searches: AtomicU64,
    pub entries: AtomicU64,
    pub modifies: AtomicU64,
    /// Times the pool moved to another DC.
    pub switches: AtomicU64,
}

/// What the pool knows of the DCs: each one's health (as [`dc_choice`] reads it), the last error
/// of each that failed, and the DC in use.
#[derive(Debug, Default)]
struct Dcs {
    health: BTreeMap<String, DcHealth>,
    last_error: BTreeMap<String, AdError>,
    current: Option<String>,
    /// Whether a task probes the more preferred DCs (while the pool uses a less preferred one).
    probing: bool,
}

/// A bound connection: its DC, and when to bind a new one instead (a Kerberos bind's ticket runs
/// out then, and a DC ends the session when it has: Samba does).
struct Conn {
    url: String,
    ldap: Ldap,
    renew_at: Option<Instant>,
}

pub struct Pool {
    pub target: Target,
    candidates: Vec<Candidate>,
    /// One slot per connection not leased right now, with the DC it is bound to; `None` is a
    /// connection to (re)open.
    idle: Mutex<Vec<Option<Conn>>>,
    permits: Semaphore,
    dcs: Mutex<Dcs>,
    pub counters: Counters,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("target", &self.target)
            .field("connections", &self.lock_idle().len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent data (plain assignments): keep going.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    pub fn new(target: Target, connections: usize) -> Self {
        let connections = connections.max(1);
        let candidates = target
            .urls
            .iter()
            .enumerate()
            .map(|(order, url)| Candidate { url: url.clone(), site: None, order })
            .collect();
        Pool {
            target,
            candidates,
            idle: Mutex::new((0..connections).map(|_| None).collect()),
            permits: Semaphore::new(connections),
            dcs: Mutex::new(Dcs::default()),
            counters: Counters::default(),
        }
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Option<Conn>>> {
        lock(&self.idle)
    }

    /// The DC in use (the most preferred one before any connection was made).
    pub fn current_url(&self) -> String {
        lock(&self.dcs).current.clone().unwrap_or_else(|| self.target.urls[0].clone())
    }

    /// A bound connection for one operation, on the DC in use, opened now if needed.
    pub async fn lease(self: &Arc<Self>) -> Result<Lease<'_>, AdError> {
        let permit = self.permits.acquire().await.map_err(|_| AdError::Connection {
            url: self.current_url(),
            message: "the connection pool is closed".into(),
        })?;
        // Permits and slots are equal in number, so a permit always finds a slot.
        let slot = self.lock_idle().pop().flatten();
        let mut lease = Lease { pool: self, ldap: None, renew_at: None, _permit: permit };
        let want = self.choose()?;
        let conn = match slot {
            Some(mut conn) if conn.url == want => {
                let closed = conn.ldap.is_closed();
                if !closed && conn.renew_at.is_none_or(|at| Instant::now() < at) {
                    conn
                } else {
                    if !closed {
                        tracing::debug!(url = %conn.url, "the connection's Kerberos ticket is near its end: binding a new connection");
                        // Let go politely (an unbind has no answer); it closes once its last
                        // handle is gone in any case.
                        let _ = tokio::time::timeout(self.target.operation_timeout, conn.ldap.unbind()).await;
                    }
                    self.open(want).await?
                }
            }
            _ => self.open(want).await?,
        };
        lease.renew_at = conn.renew_at;
        lease.ldap = Some((conn.url, conn.ldap));
        Ok(lease)
    }

    /// The DC to use now, by [`dc_choice::choose`].
    fn choose(&self) -> Result<String, AdError> {
        self.choice().map(|(url, _)| url)
    }

    /// The DC to use now and the more preferred DCs to probe.
    fn choice(&self) -> Result<(String, Vec<String>), AdError> {
        let now = Utc::now();
        let dcs = lock(&self.dcs);
        let return_after = chrono::Duration::from_std(self.target.return_after).unwrap_or(chrono::Duration::MAX);
        match dc_choice::choose(&self.candidates, None, &dcs.health, dcs.current.as_deref(), return_after, now) {
            Choice::Use { url, probe, .. } => Ok((url, probe)),
            Choice::Wait { url, until } => Err(self.waiting(&dcs, &url, until, now)),
            Choice::None { why } => Err(AdError::Config(why)),
        }
    }

    /// While the pool uses a less preferred DC, a task probes the more preferred ones every
    /// [`PROBE_EVERY`], so that remedy learns when one is back (and returns to it once it has
    /// answered for `returnAfter`) even when nothing else happens. It ends when the pool is back
    /// on its most preferred DC, or is dropped.
    fn keep_probing(self: &Arc<Self>) {
        {
            let mut dcs = lock(&self.dcs);
            if dcs.probing || dcs.current.as_deref() == Some(self.target.urls[0].as_str()) {
                return;
            }
            dcs.probing = true;
        }
        let pool = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROBE_EVERY).await;
                let Some(pool) = pool.upgrade() else { return };
                let probe = match pool.choice() {
                    Ok((url, probe)) if url != pool.target.urls[0] || !probe.is_empty() => probe,
                    Ok(_) => {
                        let mut dcs = lock(&pool.dcs);
                        if dcs.current.as_deref() == Some(pool.target.urls[0].as_str()) {
                            dcs.probing = false;
                            return;
                        }
                        Vec::new()
                    }
                    Err(_) => Vec::new(),
                };
                pool.probe(probe).await;
            }
        });
    }

    /// Every DC is backing off: the error of the one to be tried next, with when.
    fn waiting(&self, dcs: &Dcs, url: &str, until: DateTime<Utc>, now: DateTime<Utc>) -> AdError {
        let in_ms = (until - now).num_milliseconds().max(0);
        let others = if self.target.urls.len() > 1 { "every DC is down; " } else { "" };
        match dcs.last_error.get(url) {
            Some(AdError::Connection { url, message }) => AdError::Connection {
                url: url.clone(),
                message: format!("{message} ({others}next attempt in {in_ms}ms)"),
            },
            Some(other) => other.clone(),
            None => AdError::Connection { url: url.to_owned(), message: format!("{others}next attempt in {in_ms}ms") },
        }
    }

    /// Connects and binds to `first`; when that fails, to the next DC the rule names, until one
    /// answers or every DC is backing off.
    async fn open(self: &Arc<Self>, first: String) -> Result<Conn, AdError> {
        let mut url = first;
        for _ in 0..self.candidates.len() {
            match self.connect_and_bind(&url).await {
                Ok((ldap, renew_at)) => {
                    self.mark_up(&url, true);
                    self.counters.connects.fetch_add(1, Ordering::Relaxed);
                    self.keep_probing();
                    return Ok(Conn { url, ldap, renew_at });
                }
                Err(error) => {
                    self.mark_down(&url, &error);
                    // The account's own credentials refused: every DC would refuse them too, and
                    // each refusal counts toward locking the action account out.
                    if refuses_the_account(&error) {
                        return Err(error);
                    }
                    let next = self.choose();
                    match next {
                        Ok(next) if next != url => url = next,
                        Ok(_) => return Err(error),
                        Err(waiting) => return Err(if self.candidates.len() > 1 { waiting } else { error }),
                    }
                }
            }
        }
        Err(self.choose().err().unwrap_or_else(|| AdError::Connection {
            url: url.clone(),
            message: "no domain controller answered".to_owned(),
        }))
    }

    /// A DC answered: up since now unless it already was; `used` makes it the DC in use.
    fn mark_up(&self, url: &str, used: bool) {
        let mut dcs = lock(&self.dcs);
        if let Some(DcHealth::Down { failures, .. }) = dcs.health.get(url) {
            tracing::info!(url = %url, after_failures = failures, "the DC answers again");
        }
        if !matches!(dcs.health.get(url), Some(DcHealth::Up { .. })) {
            dcs.health.insert(url.to_owned(), DcHealth::Up { since: Utc::now() });
        }
        dcs.last_error.remove(url);
        if used && dcs.current.as_deref() != Some(url) {
            if let Some(previous) = dcs.current.replace(url.to_owned()) {
                self.counters.switches.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(from = %previous, to = %url, "now using another domain controller");
            }
        }
    }

    fn mark_down(&self, url: &str, error: &AdError) {
        let now = Utc::now();
        let mut dcs = lock(&self.dcs);
        let (since, failures) = match dcs.health.get(url) {
            Some(DcHealth::Down { since, failures, .. }) => (*since, failures.saturating_add(1)),
            _ => (now, 1),
        };
        let delay = backoff(failures);
        let retry_at = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
        dcs.health.insert(url.to_owned(), DcHealth::Down { since, failures, retry_at });
        dcs.last_error.insert(url.to_owned(), error.clone());
        tracing::warn!(url = %url, failures, retry_in_ms = delay.as_millis() as u64, error = %error, "cannot connect to the DC");
    }

    /// Connects and binds to each DC named (more preferred than the one in use), to learn when
    /// one is back; a probe reads nothing and writes nothing.
    async fn probe(&self, urls: Vec<String>) {
        for url in urls {
            match self.connect_and_bind(&url).await {
                Ok((mut ldap, _)) => {
                    self.mark_up(&url, false);
                    let _ = tokio::time::timeout(self.target.operation_timeout, ldap.unbind()).await;
                }
                Err(error) => self.mark_down(&url, &error),
            }
        }
    }

    /// A connection of its own, outside the pool's slots (a change-notification connection,
    /// held for as long as its searches last), to the DC in use: that DC's URL, the connection,
    /// and when it should be bound again (a Kerberos bind's ticket runs out then).
    pub async fn dedicated(self: &Arc<Self>) -> Result<(String, Ldap, Option<Instant>), AdError> {
        let want = self.choose()?;
        let conn = self.open(want).await?;
        Ok((conn.url, conn.ldap, conn.renew_at))
    }

    async fn connect_and_bind(&self, url: &str) -> Result<(Ldap, Option<Instant>), AdError> {
        let target = &self.target;
        let operation = format!("connect to {url}");
        let connecting = LdapConnAsync::with_settings(target.settings.clone(), url);
        let (conn, mut ldap) = self.finish_on(url, &operation, None, target.connect_timeout, connecting).await?;
        let url = url.to_owned();
        let driven = url.clone();
        tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(url = %driven, error = %error, "LDAP connection ended");
            }
        });
        match &target.bind {
            Bind::Simple { user, password } => {
                // The bind request carries the password: it is never logged, and its errors carry
                // only the DC's answer.
                let bind = async {
                    ldap.with_timeout(target.operation_timeout).simple_bind(user, password.expose()).await?.success()
                };
                self.finish_on(&url, "bind", Some(user), target.operation_timeout, bind)
                    .await
                    .map_err(explain_simple_bind)?;
                Ok((ldap, None))
            }
            Bind::Kerberos(kerberos) => {
                // The service ticket is for ldap/<this DC's name>.
                let kerberos = Kerberos { host: url_host(&url).to_owned(), ..kerberos.clone() };
                let host = kerberos.host.clone();
                let principal = kerberos.principal.clone();
                let Credentials { cred, renew_after } = self.kerberos_credentials(kerberos).await?;
                let bind = async {
                    ldap.with_timeout(target.operation_timeout).sasl_gssapi_cred_bind(cred, &host).await?.success()
                };
                self.finish_on(&url, "bind", Some(&principal), target.operation_timeout, bind).await?;
                Ok((ldap, Some(Instant::now() + renew_after)))
            }
        }
    }

    /// The keytab's credentials, got on a blocking thread (the KDC is asked over the network),
    /// within the connect timeout.
    async fn kerberos_credentials(&self, kerberos: Kerberos) -> Result<Credentials, AdError> {
        let principal = kerberos.principal.clone();
        let timeout = self.target.connect_timeout;
        match tokio::time::timeout(timeout, tokio::task::spawn_blocking(move || kerberos.credentials())).await {
            Ok(Ok(credentials)) => credentials,
            Ok(Err(join)) => Err(AdError::Kerberos { principal, message: join.to_string(), transient: true }),
            Err(_) => {
                Err(AdError::Timeout { operation: format!("Kerberos credentials for {principal}"), after: timeout })
            }
        }
    }

    /// Runs one LDAP call on the DC at `url` under a timeout and maps its error.
    pub async fn finish_on<T>(
        &self,
        url: &str,
        operation: &str,
        dn: Option<&str>,
        timeout: Duration,
        call: impl Future<Output = Result<T, LdapError>>,
    ) -> Result<T, AdError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.map_error(url, operation, dn, timeout, error)),
            Err(_) => Err(AdError::Timeout { operation: operation_text(operation, dn), after: timeout }),
        }
    }

    fn map_error(&self, url: &str, operation: &str, dn: Option<&str>, timeout: Duration, error: LdapError) -> AdError {
        let url = url.to_owned();
        match error {
            LdapError::LdapResult { result } => AdError::Ldap {
                operation: static_operation(operation),
                dn: dn.map(str::to_owned),
                code: result.rc,
                message: result.text,
            },
            LdapError::Timeout { .. } => AdError::Timeout { operation: operation_text(operation, dn), after: timeout },
            LdapError::Io { source } => {
                let rustls_error = source.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
                match rustls_error {
                    Some(tls_error) => {
                        AdError::Tls { url, message: tls::explain(tls_error, self.target.ca_file.as_deref()) }
                    }
                    // ldaps:// on a plain LDAP port: the DC reads the ClientHello as a broken
                    // LDAP message and drops the connection before any TLS answer.
                    None if url.starts_with("ldaps://")
                        && operation.starts_with("connect")
                        && matches!(source.kind(), ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof) =>
                    {
                        AdError::Connection {
                            url,
                            message: format!(
                                "the server closed the connection in the TLS handshake ({source}), as a plain LDAP \
                                 port does: {}",
                                tls::PLAIN_TEXT_HINT
                            ),
                        }
                    }
                    None => AdError::Connection { url, message: source.to_string() },
                }
            }
            LdapError::Rustls { source } => {
                AdError::Tls { url, message: tls::explain(&source, self.target.ca_file.as_deref()) }
            }
            LdapError::DNSName { source } => AdError::Config(format!("{url}: {source}")),
            LdapError::UrlParsing { source } => AdError::Config(format!("{url}: {source}")),
            LdapError::UnknownScheme(scheme) => AdError::Config(format!("{url}: unknown scheme {scheme}")),
            LdapError::FilterParsing => AdError::Config(format!("{operation}: the LDAP filter does not parse")),
            // The connection's channels closed: the DC went away mid-operation.
            other => AdError::Connection { url, message: format!("connection lost during {operation}: {other}") },
        }
    }
}

/// A simple bind refused because the DC wants more than a password over this connection: say why
/// and what to do, keeping the DC's words.
fn explain_simple_bind(error: AdError) -> AdError {
    match error {
        AdError::Ldap { operation, dn, code: code @ (8 | 13), message } => AdError::Ldap {
            operation,
            dn,
            code,
            message: format!(
                "{message} — the DC requires strong authentication and refuses a simple bind on a connection without \
                 TLS: use ldaps:// or startTls: true, or a kerberos bind (signed and sealed), or relax the DC's \
                 policy (Windows: \"Domain controller: LDAP server signing requirements\"; Samba: \"ldap server \
                 require strong auth\")"
            ),
        },
        other => other,
    }
}

/// Whether a failed bind says the action account's credentials are wrong (a wrong password, a
/// keytab that cannot work), which no other DC would take either.
fn refuses_the_account(error: &AdError) -> bool {
    matches!(error, AdError::Ldap { operation: "bind", code: 49, .. } | AdError::Kerberos { transient: false, .. })
}

/// The host of an `ldap://` or `ldaps://` URL (no port, no brackets).
fn url_host(url: &str) -> &str {
    remedy_policies::config::url_host(url)
}

fn operation_text(operation: &str, dn: Option<&str>) -> String {
    match dn {
        Some(dn) => format!("{operation} {dn}"),
        None => operation.to_owned(),
    }
}

/// `AdError::Ldap` names its operation with a `&'static str`; the pool's operations are these.
fn static_operation(operation: &str) -> &'static str {
    match operation {
        "bind" => "bind",
        "search" => "search",
        "read" => "read",
        "modify" => "modify",
        _ if operation.starts_with("connect") => "connect",
        _ => "operation",
    }
}

/// Delay before reconnect attempt `failures + 1`: exponential, capped, with jitter (a random
/// 50 to 100 % of the step) so that many daemons do not reconnect in lockstep.
pub fn backoff(failures: u32) -> Duration {
    Backoff { base: BACKOFF_BASE, cap: BACKOFF_MAX }.delay(failures, fastrand::f64())
}

/// One leased connection. Returned to the pool on drop; dropped instead when marked broken.
pub struct Lease<'a> {
    pool: &'a Pool,
    /// The DC's URL and the connection to it.
    ldap: Option<(String, Ldap)>,
    /// When to bind a new connection instead of this one (Kerberos).
    renew_at: Option<Instant>,
    _permit: SemaphorePermit<'a>,
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("dc", &self.ldap.as_ref().map(|(url, _)| url)).finish()
    }
}

impl Lease<'_> {
    /// The URL of the DC this connection is bound to.
    pub fn dc(&self) -> Option<&str> {
        self.ldap.as_ref().map(|(url, _)| url.as_str())
    }

    /// Runs one call on this connection (given a handle: ldap3 handles are cheap clones of one
    /// connection). A connection-level failure (I/O, timeout) retires the connection so that the
    /// next lease opens a fresh one.
    pub async fn run<T, F, Fut>(&mut self, operation: &str, dn: Option<&str>, call: F) -> Result<T, AdError>
    where
        F: FnOnce(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let Some((url, ldap)) = self.ldap.clone() else {
            return Err(AdError::Connection {
                url: self.pool.current_url(),
                message: format!("the connection was retired before {operation}"),
            });
        };
        let result = self.pool.finish_on(&url, operation, dn, self.pool.target.operation_timeout, call(ldap)).await;
        if let Err(error) = &result {
            if matches!(error, AdError::Connection { .. } | AdError::Timeout { .. } | AdError::Tls { .. }) {
                tracing::debug!(error = %error, "retiring the connection");
                self.ldap = None;
            }
        }
        result
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let renew_at = self.renew_at;
        self.pool.lock_idle().push(self.ldap.take().map(|(url, ldap)| Conn { url, ldap, renew_at }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_bind_refused_for_strong_auth_says_why_and_what_to_do() {
        // Samba's answer with `ldap server require strong auth = yes`, and Windows' with LDAP
        // signing required.
        for (code, text) in [
            (8, "BindSimple: Transport encryption required."),
            (8, "00002028: LdapErr: DSID-0C090259, comment: The server requires binds to turn on integrity checking if SSL\\TLS are not already active on the connection, data 0, v4563"),
        ] {
            let refused = AdError::Ldap { operation: "bind", dn: Some("svc@x".into()), code, message: text.into() };
            let explained = explain_simple_bind(refused).to_string();
            assert!(explained.starts_with("bind svc@x: LDAP 8 (strongerAuthRequired): "), "{explained}");
            assert!(explained.contains(text), "the DC's words are kept: {explained}");
            for fix in ["ldaps://", "startTls: true", "kerberos bind", "ldap server require strong auth"] {
                assert!(explained.contains(fix), "{fix}: {explained}");
            }
        }
        let wrong_password = AdError::Ldap { operation: "bind", dn: None, code: 49, message: "x".into() };
        assert_eq!(explain_simple_bind(wrong_password).to_string(), "bind: LDAP 49 (invalidCredentials): x");
    }

    #[test]
    fn only_a_refusal_of_the_account_stops_the_move_to_the_next_dc() {
        let ldap = |code| AdError::Ldap { operation: "bind", dn: Some("svc@x".into()), code, message: "x".into() };
        assert!(refuses_the_account(&ldap(49)), "a wrong password: every DC says the same");
        let keytab = AdError::Kerberos { principal: "svc@X".into(), message: "stale key".into(), transient: false };
        assert!(refuses_the_account(&keytab));
        for other in [
            ldap(8), // this DC wants strong authentication: another may not
            AdError::Connection { url: "ldaps://dc1".into(), message: "refused".into() },
            AdError::Tls { url: "ldaps://dc1".into(), message: "certificate for another name".into() },
            AdError::Timeout { operation: "bind".into(), after: Duration::from_secs(1) },
            AdError::Kerberos { principal: "svc@X".into(), message: "KDC unreachable".into(), transient: true },
        ] {
            assert!(!refuses_the_account(&other), "{other:?}: try the next DC");
        }
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= BACKOFF_BASE / 2 && first <= BACKOFF_BASE, "{first:?}");
            let fourth = backoff(4);
            assert!(fourth >= BACKOFF_BASE * 4 && fourth <= BACKOFF_BASE * 8, "{fourth:?}");
            let late = backoff(40);
            assert!(late >= BACKOFF_MAX / 2 && late <= BACKOFF_MAX, "{late:?}");
        }
    }
}
