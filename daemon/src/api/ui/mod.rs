//! The web action center at `/ui/`: server-rendered pages for people, on the API's listener,
//! with the API's tokens and roles (see `docs/ui.md`).
//!
//! This is a web page, not API: its routes are a separate axum [`Router`] merged into
//! [`crate::api::router`] and are not in the OpenAPI document (which lists the API's routes only,
//! from `routes()`).
//!
//! - [`session`]: sign in with a token once → a server-side session named by a random 256-bit id
//!   in an `HttpOnly`, `SameSite=Strict`, `Path=/ui` cookie (`Secure` on TLS), 8 hours.
//! - [`csrf`]: every POST carries the session's CSRF token, and `Origin`/`Referer`, when sent,
//!   must be this listener.
//! - [`pages`]: the pages, escaped by [`html::Html`]; CSS, the one script and the icon are embedded.
//!
//! Every answer under `/ui` carries a strict Content-Security-Policy (no inline script or style,
//! nothing from elsewhere), `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`,
//! and the pages `Cache-Control: no-store`.

mod csrf;
mod html;
mod pages;
mod session;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::FormRejection;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{Html as HtmlBody, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use remedy_policies::plan::PlanId;
use remedy_policies::{Action, Identity, ManifestName};
use serde::Deserialize;

use super::listener::Transport;
use super::ApiState;
use crate::ha::requests::RequestKind;
use crate::model::{ActionOutcome, Event, HistoryRecord, ManifestStatus};
use crate::store::{HistoryQuery, StoreError};
use pages::{Chain, Filters, HeldPlan};
use session::{Session, Sessions};

pub use session::LIFETIME as SESSION_LIFETIME;

/// The Content-Security-Policy of every `/ui` answer.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = include_str!("assets/style.css");
const SCRIPT: &str = include_str!("assets/live.js");
const ICON: &str = include_str!("assets/icon.svg");

/// Records a page shows at most (the history page, a manifest's records).
const PAGE_RECORDS: usize = 200;

/// How the page is served; the defaults are `remedy serve`'s.
#[derive(Debug, Clone)]
pub struct UiOptions {
    /// How long a session lasts from sign-in.
    pub session_lifetime: Duration,
}

impl Default for UiOptions {
    fn default() -> Self {
        UiOptions { session_lifetime: session::LIFETIME }
    }
}

#[derive(Debug, Clone)]
struct UiState {
    api: ApiState,
    sessions: Arc<Sessions>,
}

/// The page's routes, all under `/ui`.
pub fn router(api: ApiState, options: UiOptions) -> Router {
    let state = UiState { api, sessions: Arc::new(Sessions::new(options.session_lifetime)) };
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(manifests))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/manifests/{name}", get(manifest))
        .route("/ui/history", get(history))
        .route("/ui/history/feed", get(history_feed))
        .route("/ui/approvals", get(approvals))
        .route("/ui/approvals/{plan_id}", post(approve))
        .route("/ui/health", get(health))
        .route("/ui/static/style.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
        .route("/ui/static/live.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/static/icon.svg", get(|| async { asset("image/svg+xml", ICON) }))
        .route("/ui/{*rest}", get(not_found).post(not_found))
        .with_state(state)
        .layer(axum::middleware::from_fn(security_headers))
}

/// The headers of every `/ui` answer (pages also `no-store`; the static assets may be cached briefly).
async fn security_headers(request: Request, next: Next) -> Response {
    let is_asset = request.uri().path().starts_with("/ui/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    let cache = if is_asset { "private, max-age=300" } else { "no-store" };
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn html(status: StatusCode, body: String) -> Response {
    (status, HtmlBody(body)).into_response()
}

/// Whether the listener is TLS (the `Secure` cookie attribute, the origin's scheme).
fn is_tls(transport: Option<Extension<Transport>>) -> bool {
    transport.is_some_and(|Extension(t)| t.tls)
}

fn to_sign_in() -> Response {
    Redirect::to("/ui/sign-in").into_response()
}

fn refused(status: StatusCode, session: Option<&Session>, title: &str, message: &str) -> Response {
    html(status, pages::error_page(title, session, message))
}

fn store_failed(session: &Session, error: &str) -> Response {
    tracing::error!(%error, "the web page could not read the store");
    refused(StatusCode::INTERNAL_SERVER_ERROR, Some(session), "The store failed", error)
}

/// Runs a store read off the async threads; a failure as the text the page shows.
async fn read<T: Send + 'static>(read: impl FnOnce() -> Result<T, StoreError> + Send + 'static) -> Result<T, String> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(join) => Err(format!("the read did not finish: {join}")),
    }
}

async fn not_found(State(state): State<UiState>, headers: HeaderMap) -> Response {
    let session = state.sessions.find(&headers);
    refused(StatusCode::NOT_FOUND, session.as_ref(), "Not found", "There is no such page.")
}

async fn sign_in_page(State(state): State<UiState>, headers: HeaderMap) -> Response {
    if state.sessions.find(&headers).is_some() {
        return Redirect::to("/ui/").into_response();
    }
    html(StatusCode::OK, pages::sign_in(None))
}

#[derive(Deserialize)]
struct SignInForm {
    #[serde(default)]
    token: String,
}

async fn sign_in(
    State(state): State<UiState>,
    transport: Option<Extension<Transport>>,
    headers: HeaderMap,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let tls = is_tls(transport);
    if let Err(why) = csrf::same_origin(&headers, tls) {
        tracing::warn!(%why, "web sign-in refused");
        return refused(StatusCode::FORBIDDEN, None, "Refused", &why.to_string());
    }
    let token = form.map(|Form(f)| f.token).unwrap_or_default();
    let Some(caller) = state.api.tokens.caller(token.trim()) else {
        tracing::warn!("web sign-in with an unknown token");
        return html(StatusCode::UNAUTHORIZED, pages::sign_in(Some("That token is not known.")));
    };
    let name = caller.name.clone();
    match state.sessions.start(caller) {
        Ok(new) => {
            tracing::info!(caller = %name, "signed in to the web page");
            let cookie = session::set_cookie(&new.id, state.sessions.lifetime(), tls);
            ([(header::SET_COOKIE, cookie)], Redirect::to("/ui/")).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "no session could be made");
            refused(StatusCode::INTERNAL_SERVER_ERROR, None, "Sign-in failed", &error.to_string())
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    comment: Option<String>,
}

/// The checks of every state-changing request: a session (else to the sign-in page), the same
/// origin and the session's CSRF token (else 403).
fn check_post(
    state: &UiState,
    headers: &HeaderMap,
    tls: bool,
    form: Option<&CsrfForm>,
) -> Result<Session, Box<Response>> {
    let Some(session) = state.sessions.find(headers) else { return Err(Box::new(to_sign_in())) };
    if let Err(why) = csrf::same_origin(headers, tls) {
        tracing::warn!(caller = %session.caller.name, %why, "a web page request refused: not from this page");
        return Err(Box::new(refused(StatusCode::FORBIDDEN, Some(&session), "Refused", &why.to_string())));
    }
    if !csrf::token_matches(&session.csrf, form.and_then(|f| f.csrf.as_deref())) {
        tracing::warn!(caller = %session.caller.name, "a web page request refused: no or a wrong CSRF token");
        return Err(Box::new(refused(
            StatusCode::FORBIDDEN,
            Some(&session),
            "Refused",
            "The form's CSRF token is missing or wrong: reload the page and try again.",
        )));
    }
    Ok(session)
}

async fn sign_out(
    State(state): State<UiState>,
    transport: Option<Extension<Transport>>,
    headers: HeaderMap,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let tls = is_tls(transport);
    let session = match check_post(&state, &headers, tls, form.as_ref().ok().map(|Form(f)| f)) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    state.sessions.end(&session);
    tracing::info!(caller = %session.caller.name, "signed out of the web page");
    ([(header::SET_COOKIE, session::clear_cookie(tls))], Redirect::to("/ui/sign-in")).into_response()
}

async fn manifests(State(state): State<UiState>, headers: HeaderMap) -> Response {
    let Some(session) = state.sessions.find(&headers) else { return to_sign_in() };
    let store = state.api.store.clone();
    match read(move || store.list_status()).await {
        Ok(statuses) => {
            let progress = state.api.handle.progress().borrow().clone();
            html(StatusCode::OK, pages::manifests(&session, &statuses, &progress))
        }
        Err(error) => store_failed(&session, &error),
    }
}

async fn manifest(State(state): State<UiState>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    let Some(session) = state.sessions.find(&headers) else { return to_sign_in() };
    let Ok(name) = ManifestName::new(&name) else {
        return refused(StatusCode::NOT_FOUND, Some(&session), "Not found", "That is not a manifest name.");
    };
    let store = state.api.store.clone();
    let lookup = name.clone();
    let found = read(move || {
        let Some(status) = store.get_status(&lookup)? else { return Ok(None) };
        let mut query = HistoryQuery { manifest: Some(lookup.clone()), limit: 50, ..HistoryQuery::default() };
        let done = store.latest_history(&query)?;
        query.outcome = Some(ActionOutcome::Failed);
        query.limit = 5;
        let errors = store.latest_history(&query)?;
        Ok(Some((status, done, errors)))
    })
    .await;
    match found {
        Ok(Some((status, done, errors))) => html(StatusCode::OK, pages::manifest(&session, &status, &done, &errors)),
        Ok(None) => refused(
            StatusCode::NOT_FOUND,
            Some(&session),
            "Not found",
            &format!("No manifest named {name} has a status."),
        ),
        Err(error) => store_failed(&session, &error),
    }
}

/// The history filters from the query string: the form's names, empty values ignored.
fn filters(params: &BTreeMap<String, String>) -> (Filters, Result<HistoryQuery, String>) {
    let get = |name: &str| params.get(name).map(|v| v.trim().to_owned()).unwrap_or_default();
    let filters = Filters {
        manifest: get("manifest"),
        identity: get("identity"),
        outcome: get("outcome"),
        action: get("action"),
    };
    let mut query = HistoryQuery { limit: PAGE_RECORDS, ..HistoryQuery::default() };
    let parsed = (|| {
        if !filters.manifest.is_empty() {
            query.manifest = Some(ManifestName::new(&filters.manifest).map_err(|e| format!("Manifest: {e}"))?);
        }
        if !filters.identity.is_empty() {
            query.identity = Some(filters.identity.parse::<Identity>().map_err(|e| format!("Account: {e}"))?);
        }
        if !filters.outcome.is_empty() {
            query.outcome = Some(
                serde_json::from_value::<ActionOutcome>(serde_json::Value::String(filters.outcome.clone()))
                    .map_err(|_| format!("Outcome: {:?} is not an outcome", filters.outcome))?,
            );
        }
        if !filters.action.is_empty() {
            query.action = Some(
                serde_json::from_value::<Action>(serde_json::Value::String(filters.action.clone()))
                    .map_err(|_| format!("Action: {:?} is not an action", filters.action))?,
            );
        }
        if let Some(after) = params.get("after") {
            query.after_id =
                Some(crate::model::RecordId(after.parse().map_err(|_| "after: not a record id".to_owned())?));
        }
        Ok(query)
    })();
    (filters, parsed)
}

async fn history(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(session) = state.sessions.find(&headers) else { return to_sign_in() };
    let (filters, query) = filters(&params);
    let query = match query {
        Ok(query) => query,
        Err(problem) => return html(StatusCode::BAD_REQUEST, pages::history(&session, &filters, Some(&problem), &[])),
    };
    let store = state.api.store.clone();
    match read(move || store.latest_history(&query)).await {
        Ok(records) => html(StatusCode::OK, pages::history(&session, &filters, None, &records)),
        Err(error) => store_failed(&session, &error),
    }
}

/// The live feed of the history page: the records after `after` that match the filters, newest
/// first, as the cells of their rows (the script fills them in as text). 401 without a session.
async fn history_feed(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    if state.sessions.find(&headers).is_none() {
        return (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "signed out"}))).into_response();
    }
    let query = match filters(&params).1 {
        Ok(query) => query,
        Err(problem) => return (StatusCode::BAD_REQUEST, Json(serde_json::json!({"error": problem}))).into_response(),
    };
    let store = state.api.store.clone();
    match read(move || store.latest_history(&query)).await {
        Ok(records) => {
            let rows: Vec<pages::Row> = records.iter().map(|r| pages::row(r, None)).collect();
            Json(serde_json::json!({ "rows": rows })).into_response()
        }
        Err(error) => {
            tracing::error!(%error, "the web page could not read the store");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(serde_json::json!({"error": error}))).into_response()
        }
    }
}

/// The plans held now: the controller's held plan, and any other plan id statuses still name. On
/// a standby (`standby`), which runs no controller, every plan the replicated statuses name is
/// offered for approval: the leader refuses one it no longer holds.
fn held_plans(
    current: Option<PlanId>,
    standby: bool,
    statuses: Vec<ManifestStatus>,
    held: Vec<HistoryRecord>,
) -> Vec<HeldPlan> {
    let mut plans: Vec<HeldPlan> = Vec::new();
    if let Some(id) = current {
        plans.push(HeldPlan { plan_id: id, current: true, manifests: Vec::new(), held: Vec::new() });
    }
    for status in statuses {
        let Some(id) = status.held_plan_id.clone() else { continue };
        match plans.iter_mut().find(|p| p.plan_id == id) {
            Some(plan) => plan.manifests.push(status),
            None => plans.push(HeldPlan { plan_id: id, current: standby, manifests: vec![status], held: Vec::new() }),
        }
    }
    for record in held {
        let Event::Action(action) = &record.event else { continue };
        let Some(error) = &action.error else { continue };
        if let Some(plan) = plans.iter_mut().find(|p| error.contains(&p.plan_id.to_string())) {
            plan.held.push(record);
        }
    }
    plans
}

async fn approvals(
    State(state): State<UiState>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(session) = state.sessions.find(&headers) else { return to_sign_in() };
    let current = state.api.handle.progress().borrow().held_plan.clone();
    let store = state.api.store.clone();
    let found = read(move || {
        let statuses = store.list_status()?;
        let query = HistoryQuery { outcome: Some(ActionOutcome::Held), limit: PAGE_RECORDS, ..HistoryQuery::default() };
        Ok((statuses, store.latest_history(&query)?))
    })
    .await;
    match found {
        Ok((statuses, held)) => {
            let standby = super::ha::standby(&state.api);
            let plans = held_plans(current, standby.is_some(), statuses, held);
            let plan_param = |name: &str| params.get(name).filter(|id| id.parse::<PlanId>().is_ok()).cloned();
            let done = match (plan_param("approved"), plan_param("queued")) {
                (Some(plan), _) => Some(pages::Approval::Recorded(plan)),
                (None, Some(plan)) => {
                    let leader = state.api.ha.as_ref().and_then(|ha| ha.state().leader).map(|l| l.instance_id);
                    Some(pages::Approval::Queued { plan, leader })
                }
                (None, None) => None,
            };
            html(StatusCode::OK, pages::approvals(&session, &plans, done.as_ref()))
        }
        Err(error) => store_failed(&session, &error),
    }
}

async fn approve(
    State(state): State<UiState>,
    transport: Option<Extension<Transport>>,
    headers: HeaderMap,
    Path(plan_id): Path<String>,
    form: Result<Form<CsrfForm>, FormRejection>,
) -> Response {
    let form = form.ok().map(|Form(f)| f);
    let session = match check_post(&state, &headers, is_tls(transport), form.as_ref()) {
        Ok(session) => session,
        Err(response) => return *response,
    };
    if let Err(error) = session.caller.must_act() {
        tracing::warn!(caller = %session.caller.name, "a web page approval refused: the role may not act");
        return refused(StatusCode::FORBIDDEN, Some(&session), "Refused", &error.message);
    }
    let Ok(plan) = plan_id.parse::<PlanId>() else {
        return refused(StatusCode::BAD_REQUEST, Some(&session), "Not a plan", "That is not a plan id.");
    };
    let comment = form.and_then(|f| f.comment).map(|c| c.trim().to_owned()).filter(|c| !c.is_empty());
    if let Some(standby) = super::ha::standby(&state.api) {
        let kind = RequestKind::Approve { plan_id: plan.clone() };
        let queued = async {
            super::ha::check(&state.api.store, &kind).await?;
            super::ha::queue(standby, &session.caller.name, comment, kind).await
        };
        return match queued.await {
            Ok(queued) => {
                tracing::info!(caller = %session.caller.name, plan = %plan, leader = queued.leader().unwrap_or("none"), "plan approved on the web page of a standby: queued for the leader");
                Redirect::to(&format!("/ui/approvals?queued={plan}")).into_response()
            }
            Err(error) => refused(error.status(), Some(&session), "Not approved", &error.message),
        };
    }
    match state.api.handle.approve(plan.clone(), &session.caller.name, comment).await {
        Ok(()) => {
            tracing::info!(caller = %session.caller.name, plan = %plan, "plan approved on the web page");
            Redirect::to(&format!("/ui/approvals?approved={plan}")).into_response()
        }
        Err(error) => {
            let status = super::command_error_status(&error);
            refused(status, Some(&session), "Not approved", &error.to_string())
        }
    }
}

async fn health(State(state): State<UiState>, headers: HeaderMap) -> Response {
    let Some(session) = state.sessions.find(&headers) else { return to_sign_in() };
    let store = state.api.store.clone();
    let found = read(move || {
        let statuses = store.list_status()?;
        let chain = match store.verify_history() {
            Ok(report) => Chain::Verified { records: report.records, head_hash: report.head_hash },
            Err(StoreError::ChainBroken(broken)) => {
                Chain::Broken { at_id: broken.at_id.0, message: broken.to_string() }
            }
            Err(error) => Chain::Unreadable(error.to_string()),
        };
        Ok((statuses, chain))
    })
    .await;
    match found {
        Ok((statuses, chain)) => {
            let progress = state.api.handle.progress().borrow().clone();
            let ha = state.api.ha.as_ref().map(|view| view.state());
            html(
                StatusCode::OK,
                pages::health(
                    &session,
                    &progress,
                    ha.as_ref(),
                    &statuses,
                    &chain,
                    &state.api.notifications.snapshot(),
                    session.caller.role,
                ),
            )
        }
        Err(error) => store_failed(&session, &error),
    }
}
