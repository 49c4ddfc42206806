//! The Identity Protection lane: every request to `/identityProtection` (risk reads and
//! `confirmCompromised`) goes through here.
//!
//! Identity Protection allows one request per second per tenant, for all apps and any request
//! (https://learn.microsoft.com/graph/throttling-limits, "Identity protection and conditional
//! access service limits"), and its 429s carry no `Retry-After`. Inside `$batch` every sub-request
//! counts on its own, so batching does not help. So these requests are paced: never two of them
//! less than `interval` apart from this process, exponential backoff (at least `interval`) on 429.
//!
//! Confirmations queue, and whoever holds the lane sends them, many user ids per
//! `POST /identityProtection/riskyUsers/confirmCompromised`: callers that arrive while a request is
//! in flight or paced are served by the next one. When a request naming several users is refused
//! with a 400 or 404, each of its users is tried again alone, so that one bad id does not fail the
//! others and each error is its own.

use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::error::EntraError;
use super::graph::{Graph, GraphRequest, GraphResponse};
use super::user::risky_user_path;

/// The path of the action.
pub const CONFIRM_PATH: &str = "/identityProtection/riskyUsers/confirmCompromised";

type Reply = oneshot::Sender<Result<DateTime<Utc>, EntraError>>;

struct Queued {
    id: String,
    /// Send this id in a request of its own (after a multi-id request was refused).
    alone: bool,
    reply: Reply,
}

/// See the module documentation.
pub struct ProtectionLane {
    queue: Mutex<Vec<Queued>>,
    /// Held while sending; the instant the last Identity Protection request was answered.
    pacer: tokio::sync::Mutex<Option<Instant>>,
    max_ids: usize,
    interval: Duration,
}

impl fmt::Debug for ProtectionLane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProtectionLane")
            .field("queued", &self.lock_queue().len())
            .field("max_ids", &self.max_ids)
            .field("interval", &self.interval)
            .finish()
    }
}

impl ProtectionLane {
    pub fn new(max_ids: usize, interval: Duration) -> Self {
        ProtectionLane {
            queue: Mutex::new(Vec::new()),
            pacer: tokio::sync::Mutex::new(None),
            max_ids: max_ids.max(1),
            interval,
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sends one request in its turn.
    async fn paced(
        &self,
        graph: &Graph,
        last: &mut Option<Instant>,
        request: &GraphRequest,
    ) -> Result<GraphResponse, EntraError> {
        if let Some(last) = *last {
            tokio::time::sleep_until(last + self.interval).await;
        }
        let result = graph.send(request, self.interval).await;
        *last = Some(Instant::now());
        result
    }

    /// Reads the riskyUser of each id, one request per turn (other callers' requests may come in
    /// between). One answer per id, in order: Graph's final answer (404: no riskyUser) or the error.
    pub async fn read_risks(&self, graph: &Graph, ids: &[String]) -> Vec<Result<GraphResponse, EntraError>> {
        let mut answers = Vec::with_capacity(ids.len());
        for id in ids {
            let request = GraphRequest::get(risky_user_path(id));
            let mut last = self.pacer.lock().await;
            answers.push(self.paced(graph, &mut last, &request).await);
        }
        answers
    }

    /// Confirms every id in `ids` as compromised; per id, when the request that carried it was
    /// sent (for verification), or why it failed.
    pub async fn confirm(&self, graph: &Graph, ids: &[String]) -> Vec<Result<DateTime<Utc>, EntraError>> {
        let mut receivers = Vec::with_capacity(ids.len());
        {
            let mut queue = self.lock_queue();
            for id in ids {
                let (reply, receiver) = oneshot::channel();
                queue.push(Queued { id: id.clone(), alone: false, reply });
                receivers.push(receiver);
            }
        }
        {
            // Whoever holds the lane drains the whole queue, ids of other callers included; ours
            // are answered by then, by us or by a holder before us.
            let mut last = self.pacer.lock().await;
            self.drain(graph, &mut last).await;
        }
        let mut results = Vec::with_capacity(receivers.len());
        for receiver in receivers {
            results.push(receiver.await.unwrap_or_else(|_| {
                Err(EntraError::Connection {
                    url: graph.endpoints.graph(CONFIRM_PATH),
                    message: "the confirmation was cancelled before it was sent".into(),
                })
            }));
        }
        results
    }

    async fn drain(&self, graph: &Graph, last: &mut Option<Instant>) {
        loop {
            if let Some(last) = *last {
                tokio::time::sleep_until(last + self.interval).await;
            }
            // Taken after the pacing wait, so that callers arriving meanwhile share this request.
            let batch = {
                let mut queue = self.lock_queue();
                if queue.is_empty() {
                    return;
                }
                match queue.iter().position(|q| q.alone) {
                    Some(index) => vec![queue.remove(index)],
                    None => {
                        let take = queue.len().min(self.max_ids);
                        queue.drain(..take).collect::<Vec<_>>()
                    }
                }
            };
            let ids: Vec<&str> = batch.iter().map(|q| q.id.as_str()).collect();
            let request = GraphRequest {
                method: Method::POST,
                path: CONFIRM_PATH.to_owned(),
                body: Some(json!({ "userIds": ids })),
            };
            match self.paced(graph, last, &request).await {
                Ok(response) if response.is_success() => {
                    tracing::info!(
                        users = batch.len(),
                        request_id = response.request_id.as_deref().unwrap_or("-"),
                        "confirmed compromised"
                    );
                    for queued in batch {
                        let _ = queued.reply.send(Ok(response.sent_at));
                    }
                }
                // 400/404: most likely one of the ids; 401/403 would fail every id alike.
                Ok(response) if batch.len() > 1 && matches!(response.status, 400 | 404 | 422) => {
                    let error = response.error(&request);
                    tracing::warn!(users = batch.len(), error = %error, "confirmCompromised refused for a group of users; trying each alone");
                    let mut queue = self.lock_queue();
                    for queued in batch.into_iter().rev() {
                        queue.insert(0, Queued { alone: true, ..queued });
                    }
                }
                Ok(response) => {
                    let error = response.error(&request);
                    for queued in batch {
                        let _ = queued.reply.send(Err(error.clone()));
                    }
                }
                Err(error) => {
                    for queued in batch {
                        let _ = queued.reply.send(Err(error.clone()));
                    }
                }
            }
        }
    }
}
