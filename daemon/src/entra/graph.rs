//! The Graph client: single requests and `$batch`, with the shared token, throttling, retries and
//! the one forced token refresh after a 401.
//!
//! `$batch` answers every sub-request on its own (status, headers, body), so a batch can partly
//! succeed. Only the sub-requests that failed in a retryable way are sent again, each with its own
//! attempt count; a sub-request that got a final answer (success or a permanent error) is never
//! sent twice. The wait before a re-send is the longest `Retry-After` among the re-sent
//! sub-requests (top-level or per sub-response), or exponential backoff with jitter when none said.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::error::{graph_error, retryable_status, transport_error, EntraError};
use super::http::Endpoints;
use super::retry::{parse_retry_after, Gate, RetryPolicy};
use super::token::{AccessToken, TokenSource};

/// Graph's limit of requests in one `$batch`.
pub const BATCH_LIMIT: usize = 20;

/// One request, sent alone or inside a `$batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphRequest {
    pub method: Method,
    /// Relative to the version root: `/users/{id}?$select=...`.
    pub path: String,
    pub body: Option<Value>,
}

impl GraphRequest {
    pub fn get(path: String) -> Self {
        GraphRequest { method: Method::GET, path, body: None }
    }

    /// `METHOD /path` without the query, for errors and logs.
    pub fn operation(&self) -> String {
        let path = self.path.split('?').next().unwrap_or(&self.path);
        format!("{} {path}", self.method)
    }
}

/// Graph's final answer to one request (a success, or an error that retrying does not cure).
#[derive(Debug, Clone, PartialEq)]
pub struct GraphResponse {
    pub status: u16,
    /// The JSON body; `Null` when there was none (204).
    pub body: Value,
    pub request_id: Option<String>,
    /// When the attempt that got this answer was sent (remedy's clock).
    pub sent_at: DateTime<Utc>,
}

impl GraphResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    pub fn error(&self, request: &GraphRequest) -> EntraError {
        graph_error(request.operation(), self.status, &self.body, self.request_id.clone())
    }
}

/// Request counters since the client was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphStats {
    /// Token requests sent to the token endpoint.
    pub token_requests: u64,
    /// `$batch` requests sent (re-sends included).
    pub batches: u64,
    /// Sub-requests sent inside them (re-sends included).
    pub sub_requests: u64,
    /// Requests sent alone (re-sends included).
    pub single_requests: u64,
    /// 429 answers seen, top-level or per sub-request.
    pub throttled: u64,
    /// Re-sends, of a request or of a sub-request.
    pub retries: u64,
}

impl std::ops::Add for GraphStats {
    type Output = GraphStats;

    /// Two clients' counters together (the provider's and the delta poller's).
    fn add(self, other: GraphStats) -> GraphStats {
        GraphStats {
            token_requests: self.token_requests + other.token_requests,
            batches: self.batches + other.batches,
            sub_requests: self.sub_requests + other.sub_requests,
            single_requests: self.single_requests + other.single_requests,
            throttled: self.throttled + other.throttled,
            retries: self.retries + other.retries,
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    sub_requests: AtomicU64,
    single_requests: AtomicU64,
    throttled: AtomicU64,
    retries: AtomicU64,
}

/// The Graph client of one tenant.
pub struct Graph {
    http: reqwest::Client,
    pub endpoints: Endpoints,
    tokens: TokenSource,
    gate: Gate,
    retry: RetryPolicy,
    timeout: Duration,
    counters: Counters,
}

impl fmt::Debug for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Graph")
            .field("endpoints", &self.endpoints)
            .field("tokens", &self.tokens)
            .field("retry", &self.retry)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// A sub-request's answer inside a `$batch` response.
#[derive(Deserialize)]
struct BatchItem {
    id: String,
    status: u16,
    #[serde(default)]
    headers: BTreeMap<String, Value>,
    #[serde(default)]
    body: Value,
}

#[derive(Deserialize)]
struct BatchBody {
    responses: Vec<BatchItem>,
}

fn header<'a>(headers: &'a BTreeMap<String, Value>, name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| v.as_str())
}

/// What one attempt at one (sub-)request came to.
enum Outcome {
    Final(GraphResponse),
    /// Retryable: throttled, a server error, a broken connection.
    Retry {
        error: EntraError,
        retry_after: Option<Duration>,
    },
    /// 401: the token was refused.
    Unauthorized(GraphResponse),
    /// Nothing more to try (configuration, an unreadable answer).
    Fail(EntraError),
}

impl Graph {
    pub fn new(
        http: reqwest::Client,
        endpoints: Endpoints,
        tokens: TokenSource,
        retry: RetryPolicy,
        timeout: Duration,
    ) -> Self {
        Graph { http, endpoints, tokens, gate: Gate::default(), retry, timeout, counters: Counters::default() }
    }

    pub fn stats(&self) -> GraphStats {
        let c = &self.counters;
        GraphStats {
            token_requests: self.tokens.requests.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            sub_requests: c.sub_requests.load(Ordering::Relaxed),
            single_requests: c.single_requests.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
        }
    }

    pub async fn token(&self) -> Result<AccessToken, EntraError> {
        self.tokens.get(&self.gate).await
    }

    /// Classifies a (sub-)response. `retry_after` is its `Retry-After`, parsed.
    fn classify(&self, response: GraphResponse, operation: String, retry_after: Option<Duration>) -> Outcome {
        let status = response.status;
        if status == 429 {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
        if status == 401 {
            return Outcome::Unauthorized(response);
        }
        if status == 202 && operation.starts_with("GET ") {
            // A read accepted without the resource (a busy service): not the user, read again.
            let error = EntraError::Graph {
                operation,
                status,
                code: String::new(),
                message: "202 Accepted without the resource: read again".into(),
                request_id: response.request_id,
            };
            return Outcome::Retry { error, retry_after };
        }
        let error = || graph_error(operation.clone(), status, &response.body, response.request_id.clone());
        if retryable_status(status) {
            return Outcome::Retry { error: error(), retry_after };
        }
        if status == 409 && error().is_transient() {
            return Outcome::Retry { error: error(), retry_after };
        }
        Outcome::Final(response)
    }

    /// Sends one request on its own, with retries and the forced refresh after a 401. Returns
    /// Graph's final answer, which may be an error status that retrying does not cure: see
    /// [`GraphResponse::error`]. `min_wait` is the least time between two attempts (the
    /// Identity Protection lane uses its per-tenant pace).
    pub async fn send(&self, request: &GraphRequest, min_wait: Duration) -> Result<GraphResponse, EntraError> {
        let started = Instant::now();
        let mut token = self.token().await?;
        let mut refreshed = false;
        let mut attempts = 0;
        let operation = request.operation();
        loop {
            self.gate.wait().await;
            attempts += 1;
            if attempts > 1 {
                self.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            self.counters.single_requests.fetch_add(1, Ordering::Relaxed);
            let (error, retry_after) = match self.attempt_single(request, &token).await {
                Outcome::Final(response) => return Ok(response),
                Outcome::Fail(error) => return Err(error),
                Outcome::Unauthorized(response) if !refreshed => {
                    tracing::debug!(operation = %operation, request_id = response.request_id.as_deref().unwrap_or("-"), "token refused (401); refreshing it once");
                    token = self.tokens.refresh_rejected(&token, &self.gate).await?;
                    refreshed = true;
                    continue;
                }
                Outcome::Unauthorized(response) => return Ok(response),
                Outcome::Retry { error, retry_after } => (error, retry_after),
            };
            let wait = self.wait_for(retry_after, attempts).max(min_wait);
            if !self.retry.allows(attempts, started.elapsed(), wait) {
                return Err(EntraError::RetryBudgetExhausted {
                    operation,
                    attempts,
                    elapsed: started.elapsed(),
                    last: Box::new(error),
                });
            }
            tracing::debug!(operation = %operation, attempt = attempts, wait_ms = wait.as_millis() as u64, error = %error, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt_single(&self, request: &GraphRequest, token: &AccessToken) -> Outcome {
        let url = self.endpoints.graph(&request.path);
        let operation = request.operation();
        let mut builder = self.http.request(request.method.clone(), &url).bearer_auth(token.expose());
        if let Some(body) = &request.body {
            builder = builder.json(body);
        }
        let sent_at = Utc::now();
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => return self.transport(&operation, &url, &error),
        };
        let status = response.status().as_u16();
        let request_id = response.headers().get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = self.retry_after_header(response.headers());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => return self.transport(&operation, &url, &error),
        };
        let body = parse_body(&bytes);
        self.classify(GraphResponse { status, body, request_id, sent_at }, operation, retry_after)
    }

    fn transport(&self, operation: &str, url: &str, error: &reqwest::Error) -> Outcome {
        let error = transport_error(operation, url, error, self.timeout);
        if error.is_transient() {
            Outcome::Retry { error, retry_after: None }
        } else {
            Outcome::Fail(error)
        }
    }

    fn retry_after_header(&self, headers: &reqwest::header::HeaderMap) -> Option<Duration> {
        headers.get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, Utc::now()))
    }

    /// The wait before the next attempt; a server-given `Retry-After` also holds back every other
    /// request of this client until it has passed.
    fn wait_for(&self, retry_after: Option<Duration>, attempts: u32) -> Duration {
        match retry_after {
            Some(after) => {
                self.gate.close_until(Instant::now() + after);
                self.retry.after_retry_after(after)
            }
            None => self.retry.backoff(attempts),
        }
    }

    /// Sends up to [`BATCH_LIMIT`] requests in one `$batch`, then re-sends (in a smaller
    /// `$batch`) only those that failed in a retryable way. One result per request, in order.
    pub async fn batch(&self, requests: &[GraphRequest]) -> Vec<Result<GraphResponse, EntraError>> {
        self.batch_on_budget(requests, Instant::now()).await
    }

    /// As [`Graph::batch`], with the retry budget's clock started at `budget_started` rather than
    /// at this call: the batches of one [`Graph::batch_all`] share one budget, so that an outage
    /// is reported after one budget, not after one per round of batches in flight.
    async fn batch_on_budget(
        &self,
        requests: &[GraphRequest],
        budget_started: Instant,
    ) -> Vec<Result<GraphResponse, EntraError>> {
        debug_assert!(requests.len() <= BATCH_LIMIT);
        let mut results: Vec<Option<Result<GraphResponse, EntraError>>> = vec![None; requests.len()];
        if requests.is_empty() {
            return Vec::new();
        }
        let mut token = match self.token().await {
            Ok(token) => token,
            Err(error) => return requests.iter().map(|_| Err(error.clone())).collect(),
        };
        let started = budget_started;
        let mut refreshed = false;
        let mut attempts = vec![0u32; requests.len()];
        let mut pending: Vec<usize> = (0..requests.len()).collect();
        while !pending.is_empty() {
            self.gate.wait().await;
            for &i in &pending {
                attempts[i] += 1;
                if attempts[i] > 1 {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
            let outcomes = self.attempt_batch(requests, &pending, &token).await;
            let mut retry: Vec<(usize, EntraError, Option<Duration>)> = Vec::new();
            let mut unauthorized: Vec<(usize, GraphResponse)> = Vec::new();
            for (i, outcome) in pending.iter().copied().zip(outcomes) {
                match outcome {
                    Outcome::Final(response) => results[i] = Some(Ok(response)),
                    Outcome::Fail(error) => results[i] = Some(Err(error)),
                    Outcome::Unauthorized(response) => unauthorized.push((i, response)),
                    Outcome::Retry { error, retry_after } => retry.push((i, error, retry_after)),
                }
            }
            pending.clear();
            if !unauthorized.is_empty() {
                if refreshed {
                    // A fresh token was refused too: a permanent error (consent revoked, ...).
                    for (i, response) in unauthorized {
                        results[i] = Some(Ok(response));
                    }
                } else {
                    refreshed = true;
                    tracing::debug!(requests = unauthorized.len(), "token refused (401); refreshing it once");
                    match self.tokens.refresh_rejected(&token, &self.gate).await {
                        Ok(new) => {
                            token = new;
                            // Sent again at once, not counted against the retry budget.
                            for (i, _) in unauthorized {
                                attempts[i] = attempts[i].saturating_sub(1);
                                pending.push(i);
                            }
                        }
                        Err(error) => {
                            for (i, _) in unauthorized {
                                results[i] = Some(Err(error.clone()));
                            }
                        }
                    }
                }
            }
            if !retry.is_empty() {
                let longest_retry_after = retry.iter().filter_map(|(_, _, after)| *after).max();
                let most_attempts = retry.iter().map(|(i, _, _)| attempts[*i]).max().unwrap_or(1);
                let wait = self.wait_for(longest_retry_after, most_attempts);
                for (i, error, _) in retry {
                    if self.retry.allows(attempts[i], started.elapsed(), wait) {
                        pending.push(i);
                    } else {
                        tracing::warn!(operation = %requests[i].operation(), attempts = attempts[i], error = %error, "retry budget spent");
                        results[i] = Some(Err(EntraError::RetryBudgetExhausted {
                            operation: requests[i].operation(),
                            attempts: attempts[i],
                            elapsed: started.elapsed(),
                            last: Box::new(error),
                        }));
                    }
                }
                if !pending.is_empty() {
                    pending.sort_unstable();
                    tracing::debug!(
                        requests = pending.len(),
                        wait_ms = wait.as_millis() as u64,
                        retry_after = longest_retry_after.is_some(),
                        "re-sending the failed part of a batch"
                    );
                    tokio::time::sleep(wait).await;
                }
            }
            pending.sort_unstable();
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(EntraError::Decode { operation: "$batch".into(), message: "no answer".into() }))
            })
            .collect()
    }

    /// One `$batch` POST of the pending sub-requests; one outcome per pending index, in order.
    async fn attempt_batch(&self, requests: &[GraphRequest], pending: &[usize], token: &AccessToken) -> Vec<Outcome> {
        let url = self.endpoints.graph("/$batch");
        let body = json!({
            "requests": pending.iter().map(|&i| {
                let request = &requests[i];
                let mut item = json!({"id": i.to_string(), "method": request.method.as_str(), "url": request.path});
                if let Some(body) = &request.body {
                    item["body"] = body.clone();
                    item["headers"] = json!({"Content-Type": "application/json"});
                }
                item
            }).collect::<Vec<_>>()
        });
        self.counters.batches.fetch_add(1, Ordering::Relaxed);
        self.counters.sub_requests.fetch_add(pending.len() as u64, Ordering::Relaxed);
        let sent_at = Utc::now();
        let all = |make: &dyn Fn() -> Outcome| pending.iter().map(|_| make()).collect::<Vec<_>>();
        let response = match self.http.post(&url).bearer_auth(token.expose()).json(&body).send().await {
            Ok(response) => response,
            Err(error) => {
                let error = transport_error("POST /$batch", &url, &error, self.timeout);
                return all(&|| retry_or_fail(error.clone()));
            }
        };
        let status = response.status().as_u16();
        let request_id = response.headers().get("request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let retry_after = self.retry_after_header(response.headers());
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                let error = transport_error("POST /$batch", &url, &error, self.timeout);
                return all(&|| retry_or_fail(error.clone()));
            }
        };
        let body = parse_body(&bytes);
        if status != 200 {
            // The batch as a whole was refused (throttled, 401, 5xx, malformed): every
            // sub-request shares that answer.
            let whole = GraphResponse { status, body, request_id, sent_at };
            return pending
                .iter()
                .map(|&i| self.classify(whole.clone(), requests[i].operation(), retry_after))
                .collect();
        }
        let parsed: BatchBody = match serde_json::from_value(body) {
            Ok(parsed) => parsed,
            Err(e) => {
                let error = EntraError::Decode {
                    operation: "POST /$batch".into(),
                    message: format!("not a batch response: {e}"),
                };
                return all(&|| Outcome::Fail(error.clone()));
            }
        };
        let mut by_id: BTreeMap<String, BatchItem> =
            parsed.responses.into_iter().map(|item| (item.id.clone(), item)).collect();
        pending
            .iter()
            .map(|&i| match by_id.remove(&i.to_string()) {
                Some(item) => {
                    let retry_after =
                        header(&item.headers, "retry-after").and_then(|v| parse_retry_after(v, Utc::now()));
                    let request_id =
                        header(&item.headers, "request-id").map(str::to_owned).or_else(|| request_id.clone());
                    let response = GraphResponse { status: item.status, body: item.body, request_id, sent_at };
                    self.classify(response, requests[i].operation(), retry_after)
                }
                // A sub-request the batch did not answer was not necessarily carried out: retry it.
                None => Outcome::Retry {
                    error: EntraError::Decode {
                        operation: requests[i].operation(),
                        message: "the $batch response has no answer for this request".into(),
                    },
                    retry_after: None,
                },
            })
            .collect()
    }

    /// Any number of requests: batches of [`BATCH_LIMIT`], at most `concurrency` in flight, all
    /// on one retry budget (a batch that starts late has only what is left of it; its first
    /// attempt is always made). One result per request, in order.
    pub async fn batch_all(
        &self,
        requests: &[GraphRequest],
        concurrency: usize,
    ) -> Vec<Result<GraphResponse, EntraError>> {
        // The futures are built first: a stream mapping a closure over borrowed chunks would not
        // be provably `Send` (a known limitation of higher-ranked lifetimes in async code).
        let started = Instant::now();
        let batches: Vec<_> = requests.chunks(BATCH_LIMIT).map(|chunk| self.batch_on_budget(chunk, started)).collect();
        let answers: Vec<Vec<Result<GraphResponse, EntraError>>> =
            stream::iter(batches).buffered(concurrency.max(1)).collect().await;
        answers.into_iter().flatten().collect()
    }
}

fn retry_or_fail(error: EntraError) -> Outcome {
    if error.is_transient() {
        Outcome::Retry { error, retry_after: None }
    } else {
        Outcome::Fail(error)
    }
}

/// A JSON body, `Null` for an empty one, a string for anything that is not JSON.
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
