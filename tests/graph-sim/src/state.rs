//! The simulated tenant's mutable state behind one lock: users, issued tokens, pending faults, rate
//! counters and the request log. Nothing here awaits while holding the lock.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{Fault, LoggedRequest, ReplicaLag, SimConfig, SimUser};
use crate::odata::Reply;

/// What every request handler shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub config: SimConfig,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub users: Vec<SimUser>,
    /// Access token → expiry.
    pub tokens: HashMap<String, Instant>,
    faults: VecDeque<PendingFault>,
    pub latency: Duration,
    /// Arrival of each Graph request counted against the general budget, oldest first.
    budget_spent: VecDeque<Instant>,
    /// Arrival of each accepted Identity Protection request, oldest first.
    identity_protection_calls: VecDeque<Instant>,
    log: Vec<(u64, LoggedRequest)>,
    next_log_id: u64,
    /// Bumped on every change to `users` (the binary's state file watches it).
    pub users_version: u64,
    /// Every change to a user that Graph can show, numbered in order (what `/users/delta` reads).
    pub changes: Vec<Change>,
    /// Delta tokens carry the generation they were issued in; retiring tokens starts a new one.
    pub delta_generation: u64,
    /// Tokens of an earlier generation than this are expired (`syncStateNotFound`).
    pub delta_expired_below: u64,
    /// Tokens of an earlier generation than this need a synchronization reset (410 Gone).
    pub delta_reset_below: u64,
    /// The zero of the delta tokens' issue times.
    pub delta_clock_origin: Instant,
    /// How far lagging replicas are behind (see [`SimConfig::replica_lag`]).
    pub replica_lag: Option<ReplicaLag>,
    /// By lower-case object id: the user as it was before its latest write, and when that write
    /// was made (what a lagging replica still shows).
    before_write: HashMap<String, (SimUser, Instant)>,
    /// `$batch` requests still to be throttled as a whole, and their `Retry-After`.
    batch_throttle: Option<(u32, Duration)>,
    /// GET requests still to be answered 202 Accepted without a body.
    accepted_gets: u32,
    /// The token endpoint's injected outage ([`Fault::TokenOutage`]).
    token_outage: Option<TokenOutage>,
}

#[derive(Debug, Clone, Copy)]
struct TokenOutage {
    status: u16,
    until: Instant,
}

/// One numbered change to a user, in the simulator's change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Change {
    /// 1, 2, 3, ...: the log's order.
    pub sequence: u64,
    /// The user's object id.
    pub id: String,
    pub kind: ChangeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// These Graph properties changed (in Graph's spelling).
    Updated(Vec<&'static str>),
    /// The user was deleted: soft (`changed`, restorable from deletedItems) or for good (`deleted`).
    Removed { permanently: bool },
}

#[derive(Debug, Clone, Copy)]
enum PendingFault {
    Status { status: u16, remaining: u32 },
    Throttle { remaining: u32, retry_after: Duration },
}

impl Shared {
    pub fn new(config: SimConfig) -> Shared {
        let mut users = config.users.clone();
        users.sort_by_key(|u| u.user_principal_name.to_ascii_lowercase());
        let inner = Inner {
            users,
            tokens: HashMap::new(),
            faults: VecDeque::new(),
            latency: config.latency,
            budget_spent: VecDeque::new(),
            identity_protection_calls: VecDeque::new(),
            log: Vec::new(),
            next_log_id: 0,
            users_version: 0,
            changes: Vec::new(),
            delta_generation: 0,
            delta_expired_below: 0,
            delta_reset_below: 0,
            delta_clock_origin: Instant::now(),
            replica_lag: config.replica_lag,
            before_write: HashMap::new(),
            batch_throttle: None,
            accepted_gets: 0,
            token_outage: None,
        };
        Shared { config, inner: Mutex::new(inner) }
    }

    /// The state; a handler that panicked mid-change cannot leave it worse than a crash would, so a
    /// poisoned lock is still usable.
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    /// Index of the user with this object id or userPrincipalName (both case-insensitive, as in Entra ID).
    pub fn find_user(&self, id_or_upn: &str) -> Option<usize> {
        self.users
            .iter()
            .position(|u| u.id.eq_ignore_ascii_case(id_or_upn) || u.user_principal_name.eq_ignore_ascii_case(id_or_upn))
    }

    pub fn find_user_by_id(&self, id: &str) -> Option<usize> {
        self.users.iter().position(|u| u.id.eq_ignore_ascii_case(id))
    }

    /// Keeps the user at `index` as it is now, for lagging replicas: call before writing to it.
    pub fn before_write(&mut self, index: usize) {
        if self.replica_lag.is_some() {
            let user = self.users[index].clone();
            self.before_write.insert(user.id.to_ascii_lowercase(), (user, Instant::now()));
        }
    }

    /// The user at `index` as this read sees it: from a replica that lags by a newly drawn
    /// amount, which may not have seen the latest write yet (`true` then).
    pub fn read_user(&self, index: usize) -> (&SimUser, bool) {
        let user = &self.users[index];
        let (Some(lag), Some((before, written))) =
            (self.replica_lag, self.before_write.get(&user.id.to_ascii_lowercase()))
        else {
            return (user, false);
        };
        if written.elapsed() < lag.draw() {
            (before, true)
        } else {
            (user, false)
        }
    }

    /// Whether this GET is answered 202 Accepted without a body (consumes one).
    pub fn take_accepted_get(&mut self) -> bool {
        if self.accepted_gets == 0 {
            return false;
        }
        self.accepted_gets -= 1;
        true
    }

    /// Whether this `$batch` request is throttled as a whole; `Some` is its `Retry-After`.
    pub fn take_batch_throttle(&mut self) -> Option<Duration> {
        let (remaining, retry_after) = self.batch_throttle.as_mut()?;
        let after = *retry_after;
        *remaining -= 1;
        if *remaining == 0 {
            self.batch_throttle = None;
        }
        Some(after)
    }

    /// A change Graph cannot show (on-premises state, risk): only the version moves.
    pub fn users_changed(&mut self) {
        self.users_version += 1;
    }

    /// The sequence number of the latest change (0 before any).
    pub fn last_change(&self) -> u64 {
        self.changes.last().map_or(0, |c| c.sequence)
    }

    /// Logs a change of these Graph properties of the user with this object id.
    pub fn record_change(&mut self, id: &str, properties: &[&'static str]) {
        self.log_change(id, ChangeKind::Updated(properties.to_vec()));
    }

    fn log_change(&mut self, id: &str, kind: ChangeKind) {
        let sequence = self.last_change() + 1;
        self.changes.push(Change { sequence, id: id.to_owned(), kind });
        self.users_changed();
    }

    /// Sets accountEnabled and logs the change when there is one.
    pub fn set_account_enabled(&mut self, index: usize, enabled: bool) {
        if self.users[index].account_enabled != enabled {
            self.users[index].account_enabled = enabled;
            let id = self.users[index].id.clone();
            self.record_change(&id, &["accountEnabled"]);
        }
    }

    /// Deletes a user (soft: restorable from deletedItems in Entra ID; or for good).
    pub fn remove_user(&mut self, index: usize, permanently: bool) {
        let user = self.users.remove(index);
        self.log_change(&user.id, ChangeKind::Removed { permanently });
    }

    /// One Entra Connect cycle: every synced user's accountEnabled becomes what AD says.
    pub fn directory_sync(&mut self) {
        for index in 0..self.users.len() {
            let user = &self.users[index];
            if user.on_premises_sync_enabled {
                let on_premises = user.on_premises_account_enabled;
                self.set_account_enabled(index, on_premises);
            }
        }
    }

    pub fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::Status { status, count } if count > 0 => {
                self.faults.push_back(PendingFault::Status { status, remaining: count })
            }
            Fault::Throttle { count, retry_after } if count > 0 => {
                self.faults.push_back(PendingFault::Throttle { remaining: count, retry_after })
            }
            Fault::BatchThrottle { count, retry_after } if count > 0 => {
                self.batch_throttle = Some((count, retry_after))
            }
            Fault::AcceptedGets { count } => self.accepted_gets += count,
            Fault::Status { .. } | Fault::Throttle { .. } | Fault::BatchThrottle { .. } => {}
            Fault::Latency(latency) => self.latency = latency,
            Fault::ExpireDeltaTokens => {
                self.delta_generation += 1;
                self.delta_expired_below = self.delta_generation;
            }
            Fault::ResetDeltaTokens => {
                self.delta_generation += 1;
                self.delta_reset_below = self.delta_generation;
            }
            Fault::ExpireTokens => {
                let now = Instant::now();
                for expiry in self.tokens.values_mut() {
                    *expiry = (*expiry).min(now);
                }
            }
            Fault::TokenOutage { status, duration } => {
                self.token_outage = Some(TokenOutage { status, until: Instant::now() + duration })
            }
        }
    }

    /// The status the token endpoint answers while it is down, if it is.
    pub fn token_outage(&mut self) -> Option<u16> {
        match self.token_outage {
            Some(outage) if Instant::now() < outage.until => Some(outage.status),
            Some(_) => {
                self.token_outage = None;
                None
            }
            None => None,
        }
    }

    /// The injected fault this Graph request suffers, if any (consumes one unit of it).
    pub fn take_fault(&mut self) -> Option<Reply> {
        let front = self.faults.front_mut()?;
        let reply = match front {
            PendingFault::Status { status, remaining } => {
                *remaining -= 1;
                status_fault(*status)
            }
            PendingFault::Throttle { remaining, retry_after } => {
                *remaining -= 1;
                too_many_requests(*retry_after)
            }
        };
        if matches!(front, PendingFault::Status { remaining: 0, .. } | PendingFault::Throttle { remaining: 0, .. }) {
            self.faults.pop_front();
        }
        Some(reply)
    }

    /// Counts this request against the general budget; `Some` is the 429 when it is spent.
    pub fn spend_budget(&mut self, config: &SimConfig, now: Instant) -> Option<Reply> {
        let throttle = config.throttle.as_ref()?;
        while self.budget_spent.front().is_some_and(|&at| now.duration_since(at) >= throttle.window) {
            self.budget_spent.pop_front();
        }
        if self.budget_spent.len() >= throttle.budget as usize {
            return Some(too_many_requests(throttle.retry_after));
        }
        self.budget_spent.push_back(now);
        None
    }

    /// Counts an Identity Protection request; `false` when the per-second limit is already reached.
    pub fn allow_identity_protection(&mut self, per_second: u32, now: Instant) -> bool {
        if per_second == 0 {
            return true;
        }
        while self.identity_protection_calls.front().is_some_and(|&at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.identity_protection_calls.pop_front();
        }
        if self.identity_protection_calls.len() >= per_second as usize {
            return false;
        }
        self.identity_protection_calls.push_back(now);
        true
    }

    /// Records an arriving request; its status is filled in by [`Inner::log_answer`].
    pub fn log_arrival(&mut self, entry: LoggedRequest) -> u64 {
        let id = self.next_log_id;
        self.next_log_id += 1;
        self.log.push((id, entry));
        id
    }

    pub fn log_answer(&mut self, id: u64, status: u16, retry_after: Option<u64>) {
        if let Some((_, entry)) = self.log.iter_mut().rev().find(|(entry_id, _)| *entry_id == id) {
            entry.status = status;
            entry.retry_after = retry_after;
        }
    }

    pub fn log(&self) -> Vec<LoggedRequest> {
        self.log.iter().map(|(_, entry)| entry.clone()).collect()
    }

    pub fn clear_log(&mut self) {
        self.log.clear();
    }
}

/// An injected 5xx (or other) answer with an OData error body.
/// Codes from https://learn.microsoft.com/en-us/graph/errors ("Code property": serviceNotAvailable,
/// generalException); 504's code is an assumption.
fn status_fault(status: u16) -> Reply {
    let (code, message) = match status {
        503 => ("serviceNotAvailable", "The service is temporarily unavailable for maintenance or is overloaded."),
        504 => ("gatewayTimeout", "The server, while acting as a proxy, did not receive a timely response."),
        429 => ("TooManyRequests", "Too many requests."),
        _ => ("generalException", "An unspecified error has occurred."),
    };
    Reply::error(status, code, format!("{message} (injected by graph-sim)"))
}

/// Graph's throttling answer: 429, `Retry-After` in whole seconds, code `TooManyRequests`, and the
/// innerError fields of the documented sample.
/// Source: https://learn.microsoft.com/en-us/graph/throttling ("Sample response"; the sample once showed a
/// fractional `Retry-After: 2.128`, today `Retry-After: 10`: clients should accept both, the simulator
/// sends whole seconds).
pub(crate) fn too_many_requests(retry_after: Duration) -> Reply {
    let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    Reply::json(
        429,
        serde_json::json!({"error": {
            "code": "TooManyRequests",
            "message": "Please retry again later.",
            "innerError": {"code": "429", "message": "Please retry after", "status": "429"},
        }}),
    )
    .with_header("Retry-After", seconds.to_string())
}
