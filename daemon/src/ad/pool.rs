//! A small pool of bound LDAP connections, rebuilt when the DC drops them.
//!
//! ldap3 gives one connection per `LdapConnAsync` and no reconnect. The pool keeps up to
//! `connections` of them; an operation leases one (waiting for a permit: that bounds operations in
//! flight), and a lease whose connection is closed or broken opens a new one first. Reconnects
//! after failures are spaced by exponential backoff with jitter, shared by the whole pool: while
//! the DC is down a lease fails at once with the last error instead of hammering the DC (a wrong
//! password retried in a loop would also lock the action account out). There is no retry loop
//! here: a failed operation returns its error, and the controller's error policy decides.

use std::fmt;
use std::future::Future;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError};
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

/// How the action account binds.
#[derive(Debug)]
pub enum Bind {
    /// A simple bind with the account's name and password.
    Simple { user: String, password: Secret },
    /// A SASL GSSAPI bind with tickets from a keytab.
    Kerberos(Kerberos),
}

/// Where and how to connect. Holds the password, so its `Debug` is written by hand.
pub struct Target {
    pub url: String,
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
            .field("url", &self.url)
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
}

#[derive(Debug, Default)]
struct Health {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<AdError>,
}

/// A bound connection, and when to bind a new one instead (a Kerberos bind's ticket runs out).
struct Bound {
    ldap: Ldap,
    renew_at: Option<Instant>,
}

pub struct Pool {
    pub target: Target,
    /// One slot per connection not leased right now; `None` is a connection to (re)open.
    idle: Mutex<Vec<Option<Bound>>>,
    permits: Semaphore,
    health: Mutex<Health>,
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
        Pool {
            target,
            idle: Mutex::new((0..connections).map(|_| None).collect()),
            permits: Semaphore::new(connections),
            health: Mutex::new(Health::default()),
            counters: Counters::default(),
        }
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<Option<Bound>>> {
        lock(&self.idle)
    }

    /// A bound connection for one operation, opened now if needed.
    pub async fn lease(&self) -> Result<Lease<'_>, AdError> {
        let permit = self.permits.acquire().await.map_err(|_| AdError::Connection {
            url: self.target.url.clone(),
            message: "the connection pool is closed".into(),
        })?;
        // Permits and slots are equal in number, so a permit always finds a slot.
        let slot = self.lock_idle().pop().flatten();
        let mut lease = Lease { pool: self, ldap: None, renew_at: None, _permit: permit };
        let bound = match slot {
            Some(mut bound) => {
                let closed = bound.ldap.is_closed();
                if !closed && bound.renew_at.is_none_or(|at| Instant::now() < at) {
                    lease.ldap = Some(bound.ldap);
                    lease.renew_at = bound.renew_at;
                    return Ok(lease);
                }
                if !closed {
                    tracing::debug!(url = %self.target.url, "the connection's Kerberos ticket is near its end: binding a new connection");
                    // Let go politely (an unbind has no answer); it closes once its last handle is
                    // gone in any case.
                    let _ = tokio::time::timeout(self.target.operation_timeout, bound.ldap.unbind()).await;
                }
                self.open().await?
            }
            None => self.open().await?,
        };
        lease.ldap = Some(bound.ldap);
        lease.renew_at = bound.renew_at;
        Ok(lease)
    }

    /// Opens and binds one connection, unless the backoff says to wait.
    async fn open(&self) -> Result<Bound, AdError> {
        {
            let health = lock(&self.health);
            if let (Some(retry_at), Some(last)) = (health.retry_at, &health.last_error) {
                let now = Instant::now();
                if now < retry_at {
                    return Err(match last {
                        AdError::Connection { url, message } => AdError::Connection {
                            url: url.clone(),
                            message: format!("{message} (next attempt in {}ms)", (retry_at - now).as_millis()),
                        },
                        other => other.clone(),
                    });
                }
            }
        }
        match self.connect_and_bind().await {
            Ok(ldap) => {
                let mut health = lock(&self.health);
                if health.failures > 0 {
                    tracing::info!(url = %self.target.url, after_failures = health.failures, "reconnected to the DC");
                }
                *health = Health::default();
                self.counters.connects.fetch_add(1, Ordering::Relaxed);
                Ok(ldap)
            }
            Err(error) => {
                let mut health = lock(&self.health);
                health.failures = health.failures.saturating_add(1);
                let delay = backoff(health.failures);
                health.retry_at = Some(Instant::now() + delay);
                health.last_error = Some(error.clone());
                tracing::warn!(url = %self.target.url, failures = health.failures, retry_in_ms = delay.as_millis() as u64, error = %error, "cannot connect to the DC");
                Err(error)
            }
        }
    }

    /// A connection of its own, outside the pool's slots (a change-notification connection,
    /// held for as long as its searches last), and when it should be bound again: a Kerberos
    /// bind's ticket runs out then, and a DC ends the session when it has (Samba does).
    pub async fn dedicated(&self) -> Result<(Ldap, Option<Instant>), AdError> {
        let bound = self.connect_and_bind().await?;
        self.counters.connects.fetch_add(1, Ordering::Relaxed);
        Ok((bound.ldap, bound.renew_at))
    }

    async fn connect_and_bind(&self) -> Result<Bound, AdError> {
        let target = &self.target;
        let operation = format!("connect to {}", target.url);
        let connecting = LdapConnAsync::with_settings(target.settings.clone(), &target.url);
        let (conn, mut ldap) = self.finish(&operation, None, target.connect_timeout, connecting).await?;
        let url = target.url.clone();
        tokio::spawn(async move {
            if let Err(error) = conn.drive().await {
                tracing::debug!(url = %url, error = %error, "LDAP connection ended");
            }
        });
        match &target.bind {
            Bind::Simple { user, password } => {
                // The bind request carries the password: it is never logged, and its errors carry
                // only the DC's answer.
                let bind = async {
                    ldap.with_timeout(target.operation_timeout).simple_bind(user, password.expose()).await?.success()
                };
                self.finish("bind", Some(user), target.operation_timeout, bind).await.map_err(explain_simple_bind)?;
                Ok(Bound { ldap, renew_at: None })
            }
            Bind::Kerberos(kerberos) => {
                let Credentials { cred, renew_after } = self.kerberos_credentials(kerberos).await?;
                let bind = async {
                    ldap.with_timeout(target.operation_timeout)
                        .sasl_gssapi_cred_bind(cred, &kerberos.host)
                        .await?
                        .success()
                };
                self.finish("bind", Some(&kerberos.principal), target.operation_timeout, bind).await?;
                Ok(Bound { ldap, renew_at: Some(Instant::now() + renew_after) })
            }
        }
    }

    /// The keytab's credentials, got on a blocking thread (the KDC is asked over the network),
    /// within the connect timeout.
    async fn kerberos_credentials(&self, kerberos: &Kerberos) -> Result<Credentials, AdError> {
        let kerberos = kerberos.clone();
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

    /// Runs one LDAP call under a timeout and maps its error.
    pub async fn finish<T>(
        &self,
        operation: &str,
        dn: Option<&str>,
        timeout: Duration,
        call: impl Future<Output = Result<T, LdapError>>,
    ) -> Result<T, AdError> {
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.map_error(operation, dn, timeout, error)),
            Err(_) => Err(AdError::Timeout { operation: operation_text(operation, dn), after: timeout }),
        }
    }

    fn map_error(&self, operation: &str, dn: Option<&str>, timeout: Duration, error: LdapError) -> AdError {
        let url = self.target.url.clone();
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
                    None if self.target.url.starts_with("ldaps://")
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
    ldap: Option<Ldap>,
    renew_at: Option<Instant>,
    _permit: SemaphorePermit<'a>,
}

impl fmt::Debug for Lease<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("open", &self.ldap.is_some()).finish()
    }
}

impl Lease<'_> {
    /// Runs one call on this connection (given a handle: ldap3 handles are cheap clones of one
    /// connection). A connection-level failure (I/O, timeout) retires the connection so that the
    /// next lease opens a fresh one.
    pub async fn run<T, F, Fut>(&mut self, operation: &str, dn: Option<&str>, call: F) -> Result<T, AdError>
    where
        F: FnOnce(Ldap) -> Fut,
        Fut: Future<Output = Result<T, LdapError>>,
    {
        let Some(ldap) = self.ldap.clone() else {
            return Err(AdError::Connection {
                url: self.pool.target.url.clone(),
                message: format!("the connection was retired before {operation}"),
            });
        };
        let result = self.pool.finish(operation, dn, self.pool.target.operation_timeout, call(ldap)).await;
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
        self.pool.lock_idle().push(self.ldap.take().map(|ldap| Bound { ldap, renew_at }));
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
