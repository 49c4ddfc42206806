//! [`GraphDirectory`]: the Entra ID provider over Microsoft Graph v1.0.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use remedy_policies::config::EntraConfig;
use remedy_policies::observed::{EntraUser, ProviderView, RiskState};
use remedy_policies::{Action, Identity};
use reqwest::Method;
use serde_json::json;

use super::credential::Credential;
use super::delta::{self, DeltaFrom, DeltaRound, DeltaUser};
use super::error::{CodeField, EntraError};
use super::graph::{Graph, GraphRequest, GraphResponse, GraphStats, BATCH_LIMIT};
use super::http::{self, user_path, Endpoints};
use super::lane::ProtectionLane;
use super::retry::RetryPolicy;
use super::token::AccessToken;
use super::token::TokenSource;
use super::user::{apply_risk, risky_user_path, user_from_json, user_request_path, verify};
use super::{EntraChange, EntraDirectory, EntraLookup, RiskReads};

/// Tuning of the provider; the defaults suit the real service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphOptions {
    /// `$batch` requests in flight at once (each up to 20 sub-requests).
    pub concurrency: usize,
    pub retry: RetryPolicy,
    /// User ids per `confirmCompromised` request.
    pub confirm_max_users: usize,
    /// Least time between two Identity Protection requests, reads and writes alike (its limit:
    /// 1 request/s per tenant).
    pub confirm_interval: Duration,
    /// How far Graph's clock may be behind remedy's when a revocation's time is checked.
    pub clock_skew: Duration,
    /// Reads of a written user before its effect is reported not visible yet
    /// ([`EntraError::NotVisibleYet`], which the controller confirms later): the directory is
    /// eventually consistent and a read right after a write may reach a replica that has not seen
    /// it yet.
    pub verify_reads: u32,
    /// Wait between those reads.
    pub verify_delay: Duration,
}

impl Default for GraphOptions {
    fn default() -> Self {
        GraphOptions {
            concurrency: 4,
            retry: RetryPolicy::default(),
            confirm_max_users: 60,
            confirm_interval: Duration::from_secs(1),
            clock_skew: Duration::from_secs(120),
            verify_reads: 3,
            verify_delay: Duration::from_secs(1),
        }
    }
}

/// The Entra ID provider: one tenant, one app registration, one shared token.
#[derive(Debug)]
pub struct GraphDirectory {
    graph: Graph,
    lane: ProtectionLane,
    options: GraphOptions,
}

/// What a risky-user read came to.
enum Risk {
    Read(serde_json::Value),
    /// No riskyUser resource: Identity Protection never flagged the user.
    NoRecord,
    /// Refused (403 without `IdentityRiskyUser.Read.All` or an Entra ID P2 licence) or throttled
    /// past the retry budget.
    Unreadable(EntraError),
}

impl GraphDirectory {
    /// Builds the provider: reads the credential (client secret, certificate and key, or a first
    /// look at the federated token file) and the CA file (relative paths are relative to
    /// `config_dir`) and checks the URLs. Nothing is sent yet: see [`Self::check`].
    pub fn new(config: &EntraConfig, config_dir: &Path) -> Result<Self, EntraError> {
        Self::with_options(config, config_dir, GraphOptions::default())
    }

    pub fn with_options(config: &EntraConfig, config_dir: &Path, options: GraphOptions) -> Result<Self, EntraError> {
        let resolve = |p: &str| -> PathBuf {
            let path = Path::new(p);
            if path.is_absolute() {
                path.to_owned()
            } else {
                config_dir.join(path)
            }
        };
        let endpoints = Endpoints::from_config(config)?;
        let credential = Credential::from_config(config, resolve)?;
        let ca_file = config.ca_file.as_deref().map(resolve);
        let http = http::client(config, ca_file.as_deref(), &endpoints)?;
        let tokens = TokenSource::new(
            http.clone(),
            endpoints.token_url.clone(),
            config.client_id.trim().to_owned(),
            credential,
            endpoints.scope.clone(),
            config.request_timeout,
            options.retry.clone(),
        );
        tracing::debug!(tenant = %config.tenant_id, client_id = %config.client_id, graph = %endpoints.graph_base, scope = %endpoints.scope, "Entra ID provider configured");
        let graph = Graph::new(http, endpoints, tokens, options.retry.clone(), config.request_timeout);
        let lane = ProtectionLane::new(options.confirm_max_users, options.confirm_interval);
        Ok(GraphDirectory { graph, lane, options })
    }

    /// Acquires a token, so that a wrong tenant, client id or secret shows at start.
    pub async fn check(&self) -> Result<(), EntraError> {
        self.graph.token().await.map(|_| ())
    }

    /// An access token from the configured credential (`remedy doctor` reads its `roles` claim).
    /// Never formatted: see [`AccessToken`].
    pub async fn access_token(&self) -> Result<AccessToken, EntraError> {
        self.graph.token().await
    }

    pub fn stats(&self) -> GraphStats {
        self.graph.stats()
    }

    /// Sends one request alone, with the shared token, the retry policy and the forced refresh
    /// after a 401 (diagnostics, and the benchmark's one-at-a-time baseline). The answer may be an
    /// error status: see [`GraphResponse::error`].
    pub async fn send(&self, request: &GraphRequest) -> Result<GraphResponse, EntraError> {
        self.graph.send(request, Duration::ZERO).await
    }

    /// One round of change tracking of users (Graph's delta query): from now
    /// ([`DeltaFrom::Latest`]: no users, a link for the next round) or from the deltaLink that
    /// ended the previous round. Follows every nextLink with the shared token, the timeouts and
    /// the retry policy of every other request (429 and `Retry-After` included), and counts them
    /// in [`Self::stats`]. A link that is expired or unknown to Graph is
    /// [`EntraError::DeltaExpired`] (read every user again and start from `Latest`); a link that
    /// does not point under the configured Graph URL is [`EntraError::UntrustedLink`], never
    /// followed.
    pub async fn delta(&self, from: DeltaFrom) -> Result<DeltaRound, EntraError> {
        let mut path = match &from {
            DeltaFrom::Latest => delta::latest_path(),
            DeltaFrom::Link(link) => delta::relative_link(&self.graph.endpoints, link)?,
        };
        let mut changed = BTreeMap::new();
        let mut order = Vec::new();
        for pages in 1..=delta::MAX_PAGES {
            let request = GraphRequest::get(path);
            let response = self.graph.send(&request, Duration::ZERO).await?;
            if !response.is_success() {
                return Err(delta::expired(&response, &request).unwrap_or_else(|| response.error(&request)));
            }
            match delta::read_page(response.body, &request, &mut changed, &mut order)? {
                delta::Next::Page(next) => path = delta::relative_link(&self.graph.endpoints, &next)?,
                delta::Next::Done(delta_link) => {
                    // Checked now, so that a link that would be refused is not kept for later.
                    delta::relative_link(&self.graph.endpoints, &delta_link)?;
                    let changed: Vec<DeltaUser> = order.iter().filter_map(|key| changed.remove(key)).collect();
                    tracing::debug!(
                        pages,
                        changed = changed.len(),
                        latest = matches!(from, DeltaFrom::Latest),
                        "delta round read"
                    );
                    return Ok(DeltaRound { changed, delta_link, pages });
                }
            }
        }
        Err(EntraError::Decode {
            operation: "GET /users/delta".into(),
            message: format!("the round did not end within {} pages", delta::MAX_PAGES),
        })
    }

    async fn observe_inner(
        &self,
        lookups: &[(Identity, EntraLookup)],
        risk: RiskReads<'_>,
    ) -> Result<BTreeMap<Identity, ProviderView<EntraUser>>, EntraError> {
        let mut by_key: BTreeMap<EntraLookup, Vec<&Identity>> = BTreeMap::new();
        for (identity, lookup) in lookups {
            by_key.entry(lookup.normalized()).or_default().push(identity);
        }
        let keys: Vec<&EntraLookup> = by_key.keys().collect();
        // Every user, in batches of 20, several in flight.
        let requests: Vec<GraphRequest> =
            keys.iter().map(|key| GraphRequest::get(user_request_path(key.value()))).collect();
        let answers = self.graph.batch_all(&requests, self.options.concurrency).await;
        if let Some(error) = all_failed(&answers) {
            tracing::warn!(lookups = keys.len(), error = %error, "Entra ID observation failed");
            return Err(error);
        }
        let mut users: Vec<Result<Option<EntraUser>, EntraError>> =
            requests.iter().zip(answers).map(|(request, answer)| user_answer(request, answer)).collect();
        // Then the risk of the users found whose identities need it, through the paced lane.
        let mut wanted = Vec::new();
        for (k, key) in keys.iter().enumerate() {
            if let Ok(Some(user)) = &mut users[k] {
                if by_key[*key].iter().any(|identity| risk.wants(identity)) {
                    wanted.push(k);
                } else {
                    user.risk_state = RiskState::UnknownFutureValue;
                }
            }
        }
        let ids: Vec<String> = wanted
            .iter()
            .filter_map(|&k| users[k].as_ref().ok().and_then(Option::as_ref))
            .map(|u| u.id.clone())
            .collect();
        let risk_answers = self.lane.read_risks(&self.graph, &ids).await;
        for (&k, answer) in wanted.iter().zip(risk_answers) {
            if let Ok(Some(user)) = &mut users[k] {
                let path = risky_user_path(&user.id);
                let outcome = match risk_answer(&user.id, answer) {
                    Risk::Read(body) => apply_risk(&path, user, &body),
                    Risk::NoRecord => Ok(()),
                    Risk::Unreadable(error) => Err(error),
                };
                if let Err(error) = outcome {
                    // Suspension and revocation must not wait for a licence, a permission or a
                    // quota they do not need: the risk is reported unknown, and a confirmation,
                    // if planned, meets the same error when it is sent.
                    tracing::warn!(id = %user.id, upn = %user.user_principal_name, status = error.status(), code = %CodeField(error.code()), request_id = error.request_id().unwrap_or("-"), error = %error, "risk state unreadable; reported as unknown");
                    user.risk_state = RiskState::UnknownFutureValue;
                    user.risk_last_updated = None;
                }
            }
        }
        let mut views = BTreeMap::new();
        for (key, user) in keys.iter().zip(users) {
            let view = match user {
                Ok(Some(user)) => {
                    tracing::trace!(lookup = %key, id = %user.id, "resolved");
                    ProviderView::Found(user)
                }
                Ok(None) => {
                    tracing::debug!(lookup = %key, "no Entra ID user");
                    ProviderView::NotFound
                }
                Err(error) => {
                    tracing::warn!(lookup = %key, status = error.status(), code = %CodeField(error.code()), request_id = error.request_id().unwrap_or("-"), transient = error.is_transient(), error = %error, "user unreadable");
                    ProviderView::Unavailable { error: error.to_string() }
                }
            };
            for identity in &by_key[*key] {
                views.insert((*identity).clone(), view.clone());
            }
        }
        tracing::debug!(lookups = keys.len(), risk_reads = ids.len(), stats = ?self.graph.stats(), "observed Entra ID");
        Ok(views)
    }

    /// Reads users back after writes: the user (batched), plus its riskyUser (paced) when
    /// `with_risk`; otherwise the risk fields are carried over from `before`.
    async fn read_back(&self, targets: &[(&EntraUser, bool)]) -> Vec<Result<EntraUser, EntraError>> {
        let requests: Vec<GraphRequest> =
            targets.iter().map(|(before, _)| GraphRequest::get(user_request_path(&before.id))).collect();
        let answers = self.graph.batch_all(&requests, self.options.concurrency).await;
        let mut users: Vec<Result<EntraUser, EntraError>> = requests
            .iter()
            .zip(answers)
            .map(|(request, answer)| match user_answer(request, answer) {
                Ok(Some(user)) => Ok(user),
                Ok(None) => Err(EntraError::Graph {
                    operation: request.operation(),
                    status: 404,
                    code: "Request_ResourceNotFound".into(),
                    message: "the user no longer exists".into(),
                    request_id: None,
                }),
                Err(error) => Err(error),
            })
            .collect();
        let risky: Vec<usize> = (0..targets.len()).filter(|&i| targets[i].1 && users[i].is_ok()).collect();
        let ids: Vec<String> = risky.iter().map(|&i| targets[i].0.id.clone()).collect();
        let risk_answers = self.lane.read_risks(&self.graph, &ids).await;
        for (&i, answer) in risky.iter().zip(risk_answers) {
            let path = risky_user_path(&targets[i].0.id);
            let outcome = match (&mut users[i], risk_answer(&targets[i].0.id, answer)) {
                (Ok(user), Risk::Read(body)) => apply_risk(&path, user, &body),
                (_, Risk::NoRecord) | (Err(_), _) => Ok(()),
                (Ok(_), Risk::Unreadable(error)) => Err(error),
            };
            if let Err(error) = outcome {
                users[i] = Err(error);
            }
        }
        for ((before, with_risk), user) in targets.iter().zip(&mut users) {
            if let (false, Ok(user)) = (with_risk, user) {
                user.risk_state = before.risk_state;
                user.risk_last_updated = before.risk_last_updated;
            }
        }
        users
    }

    /// Reads back and verifies written users, re-reading those not yet showing the effect.
    async fn verify_all(
        &self,
        items: &[(EntraUser, Action)],
        written: Vec<(usize, DateTime<Utc>)>,
    ) -> Vec<(usize, Result<EntraChange, EntraError>)> {
        // At least a second: Graph serves signInSessionsValidFromDateTime in whole seconds.
        let skew = chrono::Duration::from_std(self.options.clock_skew.max(Duration::from_secs(1)))
            .unwrap_or(chrono::Duration::minutes(2));
        let mut done = Vec::with_capacity(written.len());
        let mut pending = written;
        let reads = self.options.verify_reads.max(1);
        for round in 1..=reads {
            if pending.is_empty() {
                break;
            }
            if round > 1 {
                tokio::time::sleep(self.options.verify_delay).await;
            }
            let targets: Vec<(&EntraUser, bool)> =
                pending.iter().map(|(i, _)| (&items[*i].0, items[*i].1 == Action::ConfirmCompromised)).collect();
            let answers = self.read_back(&targets).await;
            let mut again = Vec::new();
            for ((i, sent_at), answer) in pending.into_iter().zip(answers) {
                let (before, action) = &items[i];
                match answer.and_then(|after| verify(*action, &after, sent_at, skew).map(|()| after)) {
                    Ok(after) => done.push((i, Ok(EntraChange { before: before.clone(), after }))),
                    Err(error @ EntraError::NotVisibleYet { .. }) if round < reads => {
                        tracing::debug!(id = %before.id, action = %action, error = %error, "effect not visible yet; reading again");
                        again.push((i, sent_at));
                    }
                    Err(error) => done.push((i, Err(error))),
                }
            }
            pending = again;
        }
        done
    }

    /// Suspend, unsuspend and revoke for up to 20 users: one `$batch` of writes, then the batched
    /// read-back.
    async fn apply_chunk(
        &self,
        items: &[(EntraUser, Action)],
        chunk: &[usize],
    ) -> Vec<(usize, Result<EntraChange, EntraError>)> {
        let mut results = Vec::new();
        let mut writes = Vec::new();
        let mut write_index = Vec::new();
        let mut written = Vec::new();
        for &i in chunk {
            let (user, action) = &items[i];
            let path = user_path(&user.id);
            let request = match action {
                Action::SuspendUser | Action::UnsuspendUser => {
                    let enable = *action == Action::UnsuspendUser;
                    if user.account_enabled == enable {
                        // Already as wanted: nothing to write, the read-back still checks it.
                        written.push((i, Utc::now()));
                        continue;
                    }
                    GraphRequest { method: Method::PATCH, path, body: Some(json!({ "accountEnabled": enable })) }
                }
                Action::RevokeSessions if user.guest => {
                    // Source: https://learn.microsoft.com/en-us/graph/api/user-revokesigninsessions
                    // (external users sign in at their home tenant: revoking here does not apply).
                    results.push((
                        i,
                        Err(EntraError::NotApplicable {
                            id: user.id.clone(),
                            upn: user.user_principal_name.clone(),
                            action: *action,
                            reason: "the user is a guest (userType Guest), who signs in at its home tenant: revoking its sessions in this tenant does not end them; ask the guest's home tenant, or suspend the guest here".to_owned(),
                        }),
                    ));
                    continue;
                }
                // An action without parameters; Graph wants a body with a Content-Type in $batch.
                Action::RevokeSessions => GraphRequest {
                    method: Method::POST,
                    path: format!("{path}/revokeSignInSessions"),
                    body: Some(json!({})),
                },
                _ => continue,
            };
            writes.push(request);
            write_index.push(i);
        }
        let answers = self.graph.batch(&writes).await;
        for ((i, request), answer) in write_index.into_iter().zip(&writes).zip(answers) {
            match answer {
                Ok(response) if response.is_success() => written.push((i, response.sent_at)),
                Ok(response) => results.push((i, Err(response.error(request)))),
                Err(error) => results.push((i, Err(error))),
            }
        }
        results.extend(self.verify_all(items, written).await);
        results
    }

    /// Confirmations through the slow lane, then the batched read-back.
    async fn apply_confirms(
        &self,
        items: &[(EntraUser, Action)],
        indices: &[usize],
    ) -> Vec<(usize, Result<EntraChange, EntraError>)> {
        if indices.is_empty() {
            return Vec::new();
        }
        let ids: Vec<String> = indices.iter().map(|&i| items[i].0.id.clone()).collect();
        let sent = self.lane.confirm(&self.graph, &ids).await;
        let mut results = Vec::new();
        let mut written = Vec::new();
        for (&i, result) in indices.iter().zip(sent) {
            match result {
                Ok(at) => written.push((i, at)),
                Err(error) => results.push((i, Err(error))),
            }
        }
        results.extend(self.verify_all(items, written).await);
        results
    }

    async fn apply_many_inner(&self, items: &[(EntraUser, Action)]) -> Vec<Result<EntraChange, EntraError>> {
        let mut results: Vec<Option<Result<EntraChange, EntraError>>> = items.iter().map(|_| None).collect();
        let mut direct = Vec::new();
        let mut confirms = Vec::new();
        for (i, (_, action)) in items.iter().enumerate() {
            match action {
                Action::SuspendUser | Action::UnsuspendUser | Action::RevokeSessions => direct.push(i),
                Action::ConfirmCompromised => confirms.push(i),
                other => results[i] = Some(Err(EntraError::NotAnEntraAction(*other))),
            }
        }
        let chunks: Vec<_> = direct.chunks(BATCH_LIMIT).map(|chunk| self.apply_chunk(items, chunk)).collect();
        let direct_work = stream::iter(chunks).buffer_unordered(self.options.concurrency.max(1)).collect::<Vec<_>>();
        let (direct_done, confirm_done) = futures::join!(direct_work, self.apply_confirms(items, &confirms));
        for (i, result) in direct_done.into_iter().flatten().chain(confirm_done) {
            results[i] = Some(result);
        }
        let results: Vec<Result<EntraChange, EntraError>> = results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Err(EntraError::Decode { operation: "apply".into(), message: "no result".into() }))
            })
            .collect();
        for ((user, action), result) in items.iter().zip(&results) {
            log_result(user, *action, result);
        }
        results
    }
}

fn log_result(user: &EntraUser, action: Action, result: &Result<EntraChange, EntraError>) {
    match result {
        Ok(change) => {
            tracing::info!(
                id = %user.id,
                upn = %user.user_principal_name,
                action = %action,
                account_enabled = change.after.account_enabled,
                sessions_valid_from = ?change.after.sign_in_sessions_valid_from,
                risk_state = ?change.after.risk_state,
                "applied and verified"
            );
            if action == Action::SuspendUser && change.after.on_premises_sync_enabled {
                tracing::info!(id = %user.id, upn = %user.user_principal_name, "synced user suspended in the cloud: directory sync undoes it unless the AD account is disabled too");
            }
        }
        Err(error @ EntraError::NotVisibleYet { .. }) => tracing::info!(
            id = %user.id,
            upn = %user.user_principal_name,
            action = %action,
            error = %error,
            "accepted by Graph, awaiting confirmation"
        ),
        Err(error) => tracing::warn!(
            id = %user.id,
            upn = %user.user_principal_name,
            action = %action,
            status = error.status(),
            code = %CodeField(error.code()),
            request_id = error.request_id().unwrap_or("-"),
            transient = error.is_transient(),
            error = %error,
            "action failed"
        ),
    }
}

/// The error to return for the whole call when not one request got an answer.
fn all_failed(answers: &[Result<GraphResponse, EntraError>]) -> Option<EntraError> {
    if answers.is_empty() || answers.iter().any(Result::is_ok) {
        return None;
    }
    answers.iter().find_map(|a| a.as_ref().err()).cloned()
}

/// A user read: the user, `None` for 404, or the error.
fn user_answer(
    request: &GraphRequest,
    answer: Result<GraphResponse, EntraError>,
) -> Result<Option<EntraUser>, EntraError> {
    let response = answer?;
    match response.status {
        200..=299 => user_from_json(&request.operation(), &response.body).map(Some),
        404 => Ok(None),
        _ => Err(response.error(request)),
    }
}

/// A risk read of the riskyUser `id`.
fn risk_answer(id: &str, answer: Result<GraphResponse, EntraError>) -> Risk {
    match answer {
        Ok(response) if response.is_success() => Risk::Read(response.body),
        Ok(response) if response.status == 404 => Risk::NoRecord,
        Ok(response) => Risk::Unreadable(response.error(&GraphRequest::get(risky_user_path(id)))),
        Err(error) => Risk::Unreadable(error),
    }
}

impl EntraDirectory for GraphDirectory {
    async fn observe_with_risk(
        &self,
        lookups: &[(Identity, EntraLookup)],
        risk: RiskReads<'_>,
    ) -> Result<BTreeMap<Identity, ProviderView<EntraUser>>, EntraError> {
        self.observe_inner(lookups, risk).await
    }

    async fn apply(&self, user: &EntraUser, action: Action, _now: DateTime<Utc>) -> Result<EntraChange, EntraError> {
        let items = [(user.clone(), action)];
        let mut results = self.apply_many_inner(&items).await;
        results
            .pop()
            .unwrap_or_else(|| Err(EntraError::Decode { operation: "apply".into(), message: "no result".into() }))
    }

    async fn apply_many(
        &self,
        items: &[(EntraUser, Action)],
        _now: DateTime<Utc>,
    ) -> Vec<Result<EntraChange, EntraError>> {
        self.apply_many_inner(items).await
    }
}
