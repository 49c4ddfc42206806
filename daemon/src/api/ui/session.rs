//! Sessions of the web page: a person signs in with an API token once and gets a session, kept
//! in memory on the server and named by a random 256-bit id in a cookie. The token itself is
//! never kept, nor put in the cookie, a URL or a log: the session holds the caller it stood for.
//!
//! Each session has its own CSRF token (256 random bits) and an absolute expiry enforced here,
//! whatever the browser does with the cookie. Sessions do not survive a restart of `remedy serve`
//! (people sign in again).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ring::rand::{SecureRandom, SystemRandom};
use sha2::{Digest, Sha256};

use crate::api::Caller;

/// The session cookie's name.
pub const COOKIE: &str = "remedy_session";

/// How long a session lasts from sign-in (the cookie's `Max-Age` too).
pub const LIFETIME: Duration = Duration::from_secs(8 * 60 * 60);

/// Sessions kept at most; signing in past it drops the oldest.
const MAX_SESSIONS: usize = 10_000;

/// Sessions kept at most for one caller (one token's `name`): signing in past it drops that
/// caller's oldest, so that one token signing in again and again cannot push anyone else out.
const MAX_SESSIONS_PER_CALLER: usize = 50;

/// A signed-in person, as a request sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub caller: Caller,
    /// The per-session CSRF token (hex), the hidden field of every form.
    pub csrf: String,
    /// The key of the session in the table (the SHA-256 of its id), to sign it out.
    key: [u8; 32],
}

#[derive(Debug)]
struct Entry {
    caller: Caller,
    csrf: String,
    created: Instant,
    expires: Instant,
}

/// The server-side session table. Sessions are looked up by the SHA-256 of their id, so the
/// table's own lookup reveals nothing about ids by its timing.
#[derive(Debug)]
pub struct Sessions {
    lifetime: Duration,
    table: Mutex<HashMap<[u8; 32], Entry>>,
    random: SystemRandom,
}

/// A new session: the id for the cookie, never stored as such.
#[derive(Debug)]
pub struct NewSession {
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the system's random number generator failed")]
pub struct RandomFailed;

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions { lifetime, table: Mutex::new(HashMap::new()), random: SystemRandom::new() }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    fn random_hex(&self) -> Result<String, RandomFailed> {
        let mut bytes = [0u8; 32];
        self.random.fill(&mut bytes).map_err(|_| RandomFailed)?;
        Ok(hex::encode(bytes))
    }

    /// Starts a session for `caller`.
    pub fn start(&self, caller: Caller) -> Result<NewSession, RandomFailed> {
        let id = self.random_hex()?;
        let csrf = self.random_hex()?;
        let now = Instant::now();
        let mut table = self.lock();
        table.retain(|_, entry| entry.expires > now);
        let own = table.iter().filter(|(_, e)| e.caller.name == caller.name);
        if own.clone().count() >= MAX_SESSIONS_PER_CALLER {
            if let Some(oldest) = own.min_by_key(|(_, e)| e.created).map(|(k, _)| *k) {
                table.remove(&oldest);
            }
        }
        if table.len() >= MAX_SESSIONS {
            if let Some(oldest) = table.iter().min_by_key(|(_, e)| e.created).map(|(k, _)| *k) {
                table.remove(&oldest);
            }
        }
        table.insert(key(&id), Entry { caller, csrf, created: now, expires: now + self.lifetime });
        Ok(NewSession { id })
    }

    /// The session a request's cookie names, if it is known and has not expired (an expired one
    /// is removed).
    pub fn find(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_value(headers, COOKIE)?;
        let key = key(&id);
        let mut table = self.lock();
        let entry = table.get(&key)?;
        if entry.expires <= Instant::now() {
            table.remove(&key);
            return None;
        }
        Some(Session { caller: entry.caller.clone(), csrf: entry.csrf.clone(), key })
    }

    /// Signs a session out.
    pub fn end(&self, session: &Session) {
        self.lock().remove(&session.key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding the lock leaves a table that is still whole (every change is one
        // call): keep using it.
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

/// The `Set-Cookie` value of a new session.
pub fn set_cookie(id: &str, lifetime: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; Max-Age={}; HttpOnly; SameSite=Strict{}",
        lifetime.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict{}", if secure { "; Secure" } else { "" })
}

/// A cookie's value from the request's `Cookie` headers.
fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_policies::config::Role;

    fn caller() -> Caller {
        Caller { name: "otto".into(), role: Role::SecurityOperator }
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, value.parse().expect("header"));
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends() {
        let sessions = Sessions::new(LIFETIME);
        let new = sessions.start(caller()).expect("random");
        assert_eq!(new.id.len(), 64, "256 bits in hex");
        let found = sessions.find(&with_cookie(&format!("theme=dark; {COOKIE}={}", new.id))).expect("found");
        assert_eq!(found.caller, caller());
        assert_eq!(found.csrf.len(), 64);
        assert_ne!(found.csrf, new.id);
        sessions.end(&found);
        assert!(sessions.find(&with_cookie(&format!("{COOKIE}={}", new.id))).is_none());
    }

    #[test]
    fn one_caller_signing_in_again_and_again_pushes_out_only_its_own_oldest_sessions() {
        let sessions = Sessions::new(LIFETIME);
        let operator = Caller { name: "ops".into(), role: Role::SecurityOperator };
        let kept = sessions.start(operator).expect("random");
        let first = sessions.start(caller()).expect("random");
        for _ in 0..MAX_SESSIONS_PER_CALLER {
            sessions.start(caller()).expect("random");
        }
        assert!(sessions.find(&with_cookie(&format!("{COOKIE}={}", first.id))).is_none(), "its own oldest went");
        assert!(sessions.find(&with_cookie(&format!("{COOKIE}={}", kept.id))).is_some(), "another's stays");
    }

    #[test]
    fn unknown_and_expired_sessions_are_not_found() {
        let sessions = Sessions::new(Duration::from_millis(30));
        let new = sessions.start(caller()).expect("random");
        assert!(sessions.find(&with_cookie(&format!("{COOKIE}={}", "0".repeat(64)))).is_none());
        assert!(sessions.find(&with_cookie(&format!("{COOKIE}={}", new.id))).is_some());
        std::thread::sleep(Duration::from_millis(50));
        assert!(sessions.find(&with_cookie(&format!("{COOKIE}={}", new.id))).is_none());
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_scoped_to_the_page() {
        assert_eq!(
            set_cookie("ab", LIFETIME, true),
            "remedy_session=ab; Path=/ui; Max-Age=28800; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(!set_cookie("ab", LIFETIME, false).contains("Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
