//! App-only access tokens: the OAuth 2.0 client credentials grant against the Microsoft identity
//! platform, one token shared by every request. The app proves who it is with a client secret, a
//! signed client assertion or a federated token ([`super::credential`]).
//!
//! A refusal that needs a person (a wrong or expired secret, an unregistered certificate, no
//! matching federated credential) is returned at once, never retried, with what to do about it;
//! an endpoint that is down (5xx, refused connections, timeouts) is retried within the retry
//! policy, and past it the error is transient: the provider is unavailable for now.
//!
//! The token is refreshed ahead of its expiry (5 minutes, or a tenth of its lifetime when that is
//! shorter). Refreshes are single-flight: callers that find the token due wait for the one refresh
//! in progress instead of starting their own. A Graph 401 forces one refresh, again shared: every
//! request rejected with the same token gets the one new token (see [`TokenSource::refresh_rejected`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::time::Instant;

use super::credential::{aadsts_number, fix_for, Credential};
use super::error::{scrub, transport_error, truncate, EntraError};
use super::retry::{parse_retry_after, Gate, RetryPolicy};
use crate::secret::Secret;

/// Refresh this long before expiry at most ...
const REFRESH_MARGIN: Duration = Duration::from_secs(300);
/// ... and at least a tenth of the lifetime before it.
const REFRESH_FRACTION: u32 = 10;

/// One access token. Cheap to clone; never formatted.
#[derive(Clone)]
pub struct AccessToken {
    value: Arc<Secret>,
    /// Which token this is: a 401 names the token it was refused, so that only the first refusal
    /// of a given token triggers a refresh.
    generation: u64,
}

impl AccessToken {
    pub fn expose(&self) -> &str {
        self.value.expose()
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccessToken {{ generation: {}, value: [redacted] }}", self.generation)
    }
}

struct Cached {
    token: AccessToken,
    refresh_at: Instant,
    expires_at: Instant,
}

/// Issues and caches access tokens.
pub struct TokenSource {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    credential: Credential,
    scope: String,
    timeout: Duration,
    retry: RetryPolicy,
    cached: Mutex<Option<Cached>>,
    refreshing: tokio::sync::Mutex<()>,
    generations: AtomicU64,
    /// Token requests sent (tests and status pages read it).
    pub requests: AtomicU64,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.lock_cached() {
            Some(cached) => {
                let left = cached.expires_at.saturating_duration_since(Instant::now());
                format!("cached (generation {}, expires in {}s)", cached.token.generation, left.as_secs())
            }
            None => "none".to_owned(),
        };
        f.debug_struct("TokenSource")
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .field("token", &state)
            .field("requests", &self.requests.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// The token endpoint's success answer.
#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    /// Seconds; the v1 endpoint sent it as a string.
    expires_in: NumberOrText,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

/// The token endpoint's error answer (RFC 6749 section 5.2, plus Entra's trace id).
#[derive(Deserialize, Default)]
struct TokenErrorResponse {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
}

impl TokenSource {
    pub fn new(
        http: reqwest::Client,
        token_url: String,
        client_id: String,
        credential: Credential,
        scope: String,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Self {
        TokenSource {
            http,
            token_url,
            client_id,
            credential,
            scope,
            timeout,
            retry,
            cached: Mutex::new(None),
            refreshing: tokio::sync::Mutex::new(()),
            generations: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn lock_cached(&self) -> std::sync::MutexGuard<'_, Option<Cached>> {
        self.cached.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached token while it is fresh, else a new one.
    pub async fn get(&self, gate: &Gate) -> Result<AccessToken, EntraError> {
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        let _refreshing = self.refreshing.lock().await;
        // Someone else may have refreshed while this caller waited for the lock.
        if let Some(token) = self.fresh() {
            return Ok(token);
        }
        self.fetch_or_keep(gate).await
    }

    /// A new token after Graph refused `rejected` (401). Requests that were refused the same token
    /// all get the one token that replaced it.
    pub async fn refresh_rejected(&self, rejected: &AccessToken, gate: &Gate) -> Result<AccessToken, EntraError> {
        let _refreshing = self.refreshing.lock().await;
        if let Some(cached) = &*self.lock_cached() {
            if cached.token.generation != rejected.generation && Instant::now() < cached.expires_at {
                return Ok(cached.token.clone());
            }
        }
        // Graph says the token is no good: never fall back to it.
        *self.lock_cached() = None;
        self.fetch(gate).await
    }

    fn fresh(&self) -> Option<AccessToken> {
        let cached = self.lock_cached();
        cached.as_ref().filter(|c| Instant::now() < c.refresh_at).map(|c| c.token.clone())
    }

    /// Fetches a new token; when that fails transiently and the old token has not expired yet,
    /// the old one is used until it does.
    async fn fetch_or_keep(&self, gate: &Gate) -> Result<AccessToken, EntraError> {
        match self.fetch(gate).await {
            Ok(token) => Ok(token),
            Err(error) if error.is_transient() => {
                let cached = self.lock_cached();
                match cached.as_ref().filter(|c| Instant::now() < c.expires_at) {
                    Some(c) => {
                        tracing::warn!(error = %error, "token refresh failed; the current token is still valid and used until it expires");
                        Ok(c.token.clone())
                    }
                    None => Err(error),
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The token request, retried within the retry policy on transient failures.
    async fn fetch(&self, gate: &Gate) -> Result<AccessToken, EntraError> {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            gate.wait().await;
            attempts += 1;
            let (error, retry_after) = match self.fetch_once().await {
                Ok(token) => return Ok(token),
                Err((error, _)) if !error.is_transient() => return Err(error),
                Err((error, retry_after)) => (error, retry_after),
            };
            let wait = match retry_after {
                Some(after) => self.retry.after_retry_after(after),
                None => self.retry.backoff(attempts),
            };
            if !self.retry.allows(attempts, started.elapsed(), wait) {
                return Err(EntraError::RetryBudgetExhausted {
                    operation: "token request".into(),
                    attempts,
                    elapsed: started.elapsed(),
                    last: Box::new(error),
                });
            }
            tracing::debug!(attempt = attempts, wait_ms = wait.as_millis() as u64, error = %error, "token request failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn fetch_once(&self) -> Result<AccessToken, (EntraError, Option<Duration>)> {
        let proof = self.credential.proof(&self.token_url, &self.client_id).map_err(|e| (e, None))?;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut form = vec![("client_id", self.client_id.as_str()), ("scope", self.scope.as_str())];
        form.extend(proof.fields());
        form.push(("grant_type", "client_credentials"));
        let sent = Instant::now();
        let response = self
            .http
            .post(&self.token_url)
            .form(&form)
            .send()
            .await
            .map_err(|e| (transport_error("token request", &self.token_url, &e, self.timeout), None))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let bytes = response
            .bytes()
            .await
            .map_err(|e| (transport_error("token request", &self.token_url, &e, self.timeout), None))?;
        if status == 200 {
            let parsed: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
                // Never echo the body: it holds the token.
                (
                    EntraError::Decode {
                        operation: "token request".into(),
                        message: format!("not a token response: {}", e.classify_name()),
                    },
                    None,
                )
            })?;
            let lifetime = match parsed.expires_in {
                NumberOrText::Number(n) => n,
                NumberOrText::Text(t) => t.trim().parse().unwrap_or(0),
            };
            if parsed.access_token.is_empty() || lifetime == 0 {
                return Err((
                    EntraError::Decode {
                        operation: "token request".into(),
                        message: "the token response has no token or no lifetime".into(),
                    },
                    None,
                ));
            }
            let lifetime = Duration::from_secs(lifetime);
            let margin = REFRESH_MARGIN.min(lifetime / REFRESH_FRACTION);
            let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
            let token = AccessToken { value: Arc::new(Secret::new(parsed.access_token)), generation };
            *self.lock_cached() = Some(Cached {
                token: token.clone(),
                refresh_at: sent + lifetime - margin,
                expires_at: sent + lifetime,
            });
            tracing::debug!(generation, lifetime_s = lifetime.as_secs(), "access token issued");
            return Ok(token);
        }
        let text = String::from_utf8_lossy(&bytes);
        let secret = proof.secret();
        let parsed: TokenErrorResponse = serde_json::from_str(&text).unwrap_or_default();
        let fix = aadsts_number(&parsed.error_codes, &parsed.error_description)
            .and_then(|number| fix_for(number, self.credential.kind()));
        let (code, description) = if parsed.error.is_empty() {
            (String::new(), truncate(&scrub(&text, secret), 300))
        } else {
            (scrub(&parsed.error, secret), scrub(&parsed.error_description, secret))
        };
        let error = EntraError::Token {
            url: self.token_url.clone(),
            status,
            code,
            description,
            trace_id: parsed.trace_id.map(|t| scrub(&t, secret)),
            fix,
        };
        tracing::warn!(
            status,
            code = error.code().unwrap_or("-"),
            trace_id = error.request_id().unwrap_or("-"),
            transient = error.is_transient(),
            credential = self.credential.kind().key(),
            "token request refused"
        );
        Err((error, retry_after))
    }
}

trait ClassifyName {
    fn classify_name(&self) -> &'static str;
}

impl ClassifyName for serde_json::Error {
    fn classify_name(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "not JSON",
            serde_json::error::Category::Data => "unexpected fields",
            serde_json::error::Category::Eof => "truncated",
        }
    }
}
