//! The HTTP API of `remedy serve` (axum): status and history for readers, reconcile and approve
//! for operators and administrators, health and metrics. See `docs/api.md`.
//!
//! Every route but `/healthz`, `/readyz` and `/openapi.json` needs a bearer token (401 without a
//! known one, 403 when its role may not do what is asked). Errors have one shape
//! ([`error::ApiError`]).
//!
//! Each handler carries its OpenAPI description (`#[utoipa::path]`: method, path, parameters,
//! responses), and [`routes`] builds both the router and the document from those: a route cannot
//! be served undocumented, nor documented at another path or method.

mod auth;
mod error;
mod ha;
mod listener;
mod openapi;
pub mod ui;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use remedy_policies::plan::PlanId;
use remedy_policies::{Action, Identity, ManifestName};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Caller, Tokens};
pub use error::{ApiError, ErrorCode};
pub use ha::ready;
pub use listener::{serve, Bound, ListenError};
pub use openapi::openapi;

use openapi::{BadRequest, Conflict, Forbidden, Internal, NotFound, TooLarge, Unauthorized, Unavailable};

use crate::controller::{CommandError, ControllerHandle};
use crate::ha::requests::RequestKind;
use crate::model::{ActionOutcome, HistoryRecord, ManifestStatus, RecordId};
use crate::store::{HistoryQuery, Store};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub handle: ControllerHandle,
    pub tokens: Arc<Tokens>,
    /// The notification sinks' delivery state (empty when none is configured).
    pub notifications: crate::notify::NotifyStatus,
    /// Several instances: this instance's part (absent: one instance).
    pub ha: Option<crate::ha::HaView>,
}

/// Every route with its documentation: the one list both [`router`] and [`openapi`] are made from.
/// Add a route here, with `routes!`, never with `.route` (that would serve it undocumented).
fn routes() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(openapi_document))
        .routes(routes!(metrics))
        .routes(routes!(list_manifests))
        .routes(routes!(get_manifest))
        .routes(routes!(reconcile_manifest))
        .routes(routes!(reconcile_all))
        .routes(routes!(history))
        .routes(routes!(verify_history))
        .routes(routes!(history_record))
        .routes(routes!(approve))
}

/// The API's routes and the web page's (`/ui/`, [`ui`]: a web page, not API, so not in the OpenAPI
/// document), as `remedy serve` serves them.
pub fn router(state: ApiState) -> Router {
    router_with(state, ui::UiOptions::default())
}

/// [`router`] with the web page's options (tests use a short session lifetime).
pub fn router_with(state: ApiState, ui: ui::UiOptions) -> Router {
    let (router, _document) = routes().split_for_parts();
    let page = ui::router(state.clone(), ui);
    router
        .fallback(|| async { ApiError::not_found("no such endpoint: see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(ErrorCode::MethodNotAllowed, "this endpoint does not take that method")
        })
        .with_state(state)
        .merge(page)
}

#[derive(Debug, Serialize, ToSchema)]
struct Health {
    #[schema(examples("ok"))]
    status: &'static str,
}

/// Liveness
///
/// The process is up and serves requests. No token needed.
#[utoipa::path(get, path = "/healthz", tag = "health", responses(
    (status = 200, description = "the process serves requests", body = Health),
))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Readiness {
    ready: bool,
    #[schema(examples("open"))]
    store: &'static str,
    manifests_loaded: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    load_error: Option<String>,
    /// Providers that could not be asked in the last reconcile, with why.
    unavailable_providers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    store_error: Option<String>,
    /// A corrupt store was moved here at start and an empty one used: the history from before is
    /// there.
    #[serde(skip_serializing_if = "Option::is_none")]
    store_moved_aside: Option<String>,
    /// Each notification sink's delivery state, by name (absent when none is configured). A
    /// receiver that is down does not make remedy unready.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    notifications: BTreeMap<String, crate::notify::SinkStatus>,
    /// This instance's part when several run on etcd (absent with one instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    ha: Option<crate::ha::HaState>,
}

/// Readiness
///
/// Ready when a manifest set is loaded, the latest reconcile could ask every configured provider,
/// the store works, and remedy is not shutting down. With several instances (`ha`), that is the
/// leader's readiness; a standby is ready once it has applied the whole write log and etcd
/// answers; an instance that cannot reach etcd's quorum (role `etcd-unavailable`) is not ready.
/// No token needed.
#[utoipa::path(get, path = "/readyz", tag = "health", responses(
    (status = 200, description = "ready", body = Readiness),
    (status = 503, description = "not ready: the body says why", body = Readiness),
))]
async fn readyz(State(state): State<ApiState>) -> Response {
    let progress = state.handle.progress().borrow().clone();
    let ha = state.ha.as_ref().map(|view| view.state());
    let readiness = Readiness {
        ready: ready(&progress, ha.as_ref()),
        store: "open",
        manifests_loaded: progress.loaded,
        load_error: progress.load_error,
        unavailable_providers: progress.unavailable_providers,
        store_error: progress.store_error,
        store_moved_aside: progress.store_moved_aside.map(|p| p.display().to_string()),
        notifications: state.notifications.snapshot(),
        ha,
    };
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

/// This OpenAPI document
///
/// No token needed. `remedy openapi` prints the same document without a daemon.
#[utoipa::path(get, path = "/openapi.json", tag = "health", responses(
    (status = 200, description = "the OpenAPI document of this API", body = Object),
))]
async fn openapi_document() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi())
}

/// Prometheus metrics
///
/// The text exposition format 0.0.4, for a token of any role. With several instances, the
/// `remedy_ha_*` metrics of this instance follow.
#[utoipa::path(get, path = "/metrics", tag = "health", security(("bearer" = [])), responses(
    (status = 200, description = "the Prometheus text exposition, version 0.0.4", body = String,
        content_type = "text/plain"),
    (status = 401, response = Unauthorized),
))]
async fn metrics(State(state): State<ApiState>, _caller: Caller) -> Response {
    let mut text = state.handle.metrics().render();
    if let Some(ha) = &state.ha {
        text.push_str(&ha::metrics(ha));
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

#[derive(Debug, Serialize, ToSchema)]
struct ManifestList {
    /// Sorted by name.
    manifests: Vec<ManifestStatus>,
}

/// Every manifest's status
///
/// As the controller wrote it at its latest reconcile, sorted by name.
#[utoipa::path(get, path = "/v1/manifests", tag = "manifests", security(("bearer" = [])), responses(
    (status = 200, description = "every manifest's status", body = ManifestList),
    (status = 401, response = Unauthorized),
    (status = 500, response = Internal),
))]
async fn list_manifests(State(state): State<ApiState>, _caller: Caller) -> Result<Json<ManifestList>, ApiError> {
    let store = state.store.clone();
    let manifests = blocking(move || store.list_status()).await?;
    Ok(Json(ManifestList { manifests }))
}

fn manifest_name(text: &str) -> Result<ManifestName, ApiError> {
    ManifestName::new(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// One manifest's status
///
/// As the controller wrote it at its latest reconcile; 404 when there is none.
#[utoipa::path(get, path = "/v1/manifests/{name}", tag = "manifests", security(("bearer" = [])),
    params(("name" = ManifestName, Path, description = "the manifest's name")),
    responses(
        (status = 200, description = "the manifest's status", body = ManifestStatus),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
)]
async fn get_manifest(
    State(state): State<ApiState>,
    _caller: Caller,
    PathText(name): PathText,
) -> Result<Json<ManifestStatus>, ApiError> {
    let name = manifest_name(&name)?;
    let store = state.store.clone();
    let lookup = name.clone();
    match blocking(move || store.get_status(&lookup)).await? {
        Some(status) => Ok(Json(status)),
        None => Err(ApiError::not_found(format!("no manifest named {name} (GET /v1/manifests lists them)"))),
    }
}

/// The optional body of the POST endpoints; an empty body is the same as `{}`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    /// Recorded in the history with the request.
    #[serde(default)]
    comment: Option<String>,
}

/// An optional JSON body `{"comment": "..."}`.
fn request_body(bytes: &Bytes) -> Result<RequestBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(RequestBody::default());
    }
    let shape = || "the body must be empty or a JSON object {\"comment\": \"...\"}".to_owned();
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| ApiError::bad_request(format!("{}: {e}", shape())))?;
    // serde would also take a list for the struct (["x"] as the comment): only an object is one.
    if !value.is_object() {
        return Err(ApiError::bad_request(format!("{}, not {}", shape(), json_kind(&value))));
    }
    serde_json::from_value(value).map_err(|e| ApiError::bad_request(format!("{}: {e}", shape())))
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}

/// A request recorded: what `202` answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    accepted: bool,
    /// The caller's name, from `api.tokens`.
    by: String,
    /// The manifest to reconcile (`POST /v1/manifests/{name}/reconcile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<ManifestName>,
    /// The plan approved (`POST /v1/approvals/{planId}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_id: Option<PlanId>,
}

/// What `202` answers: the request recorded (one instance, or the leader), or, on a standby,
/// queued for the leader.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
enum Answered {
    Recorded(Accepted),
    Queued(ha::Queued),
}

fn accepted(answer: Answered) -> (StatusCode, Json<Answered>) {
    (StatusCode::ACCEPTED, Json(answer))
}

/// On a standby: `kind` checked against the replicated statuses and queued for the leader.
async fn queue_on_standby(
    state: &ApiState,
    caller: &Caller,
    comment: Option<String>,
    kind: RequestKind,
) -> Option<Result<(StatusCode, Json<Answered>), ApiError>> {
    let standby = ha::standby(state)?;
    let queued = async {
        ha::check(&state.store, &kind).await?;
        ha::queue(standby, &caller.name, comment, kind).await
    };
    Some(queued.await.map(|q| accepted(Answered::Queued(q))))
}

fn command_error(error: CommandError) -> ApiError {
    ApiError::new(command_error_code(&error), error.to_string())
}

fn command_error_code(error: &CommandError) -> ErrorCode {
    match error {
        CommandError::UnknownManifest(_) => ErrorCode::NotFound,
        CommandError::NotHeld(..) => ErrorCode::Conflict,
        CommandError::Store(_) => ErrorCode::Internal,
        CommandError::ShuttingDown => ErrorCode::Unavailable,
    }
}

/// The HTTP status the API answers a refused command with (the web page answers the same).
fn command_error_status(error: &CommandError) -> StatusCode {
    command_error_code(error).status()
}

/// Reconcile a manifest now
///
/// The request is recorded in the history with the caller's name, and the permanent failures parked
/// for this manifest's accounts are tried again. The answer comes at once: `202` means recorded, not
/// run (a pass covers the whole set). 404 for a manifest remedy does not hold. On a standby of
/// several instances the request is queued for the leader through etcd (`queued`; the leader
/// records it); 503 when etcd does not take it.
#[utoipa::path(post, path = "/v1/manifests/{name}/reconcile", tag = "manifests", security(("bearer" = [])),
    params(("name" = ManifestName, Path, description = "the manifest's name")),
    request_body(content = RequestBody, content_type = "application/json",
        description = "empty, or `{\"comment\": \"...\"}`"),
    responses(
        (status = 202, description = "the request is recorded (`accepted`), or, on a standby of several \
            instances, queued for the leader (`queued`)", body = Answered),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 413, response = TooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn reconcile_manifest(
    State(state): State<ApiState>,
    caller: Caller,
    PathText(name): PathText,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Answered>), ApiError> {
    caller.must_act()?;
    let name = manifest_name(&name)?;
    let body = request_body(&body)?;
    let kind = RequestKind::Reconcile { manifest: Some(name.clone()) };
    if let Some(queued) = queue_on_standby(&state, &caller, body.comment.clone(), kind).await {
        return queued;
    }
    state.handle.reconcile(&caller.name, Some(name.clone()), body.comment).await.map_err(command_error)?;
    let recorded = Accepted { accepted: true, by: caller.name, manifest: Some(name), plan_id: None };
    Ok(accepted(Answered::Recorded(recorded)))
}

/// Reconcile everything now
///
/// The request is recorded in the history with the caller's name, and every parked permanent
/// failure is tried again. The answer comes at once: `202` means recorded, not run. On a standby
/// of several instances the request is queued for the leader through etcd (`queued`; the leader
/// records it); 503 when etcd does not take it.
#[utoipa::path(post, path = "/v1/reconcile", tag = "manifests", security(("bearer" = [])),
    request_body(content = RequestBody, content_type = "application/json",
        description = "empty, or `{\"comment\": \"...\"}`"),
    responses(
        (status = 202, description = "the request is recorded (`accepted`), or, on a standby of several \
            instances, queued for the leader (`queued`)", body = Answered),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 413, response = TooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn reconcile_all(
    State(state): State<ApiState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Answered>), ApiError> {
    caller.must_act()?;
    let body = request_body(&body)?;
    let kind = RequestKind::Reconcile { manifest: None };
    if let Some(queued) = queue_on_standby(&state, &caller, body.comment.clone(), kind).await {
        return queued;
    }
    state.handle.reconcile(&caller.name, None, body.comment).await.map_err(command_error)?;
    Ok(accepted(Answered::Recorded(Accepted { accepted: true, by: caller.name, manifest: None, plan_id: None })))
}

/// Approve a held plan
///
/// Approves the plan remedy holds for making more new changes than
/// `guardrails.maxChangesPerReconcile`, recorded in the history; the next reconcile applies it.
/// `409` when that plan is not the one held now. On a standby of several instances the approval
/// is queued for the leader through etcd (`queued`; the leader records it, or refuses it when the
/// plan is no longer held); 503 when etcd does not take it.
#[utoipa::path(post, path = "/v1/approvals/{planId}", tag = "approvals", security(("bearer" = [])),
    params(("planId" = String, Path, pattern = "^[0-9a-fA-F]{32}$",
        description = "the held plan's id (`heldPlanId` in the manifests' status)")),
    request_body(content = RequestBody, content_type = "application/json",
        description = "empty, or `{\"comment\": \"...\"}`"),
    responses(
        (status = 202, description = "the request is recorded (`accepted`), or, on a standby of several \
            instances, queued for the leader (`queued`)", body = Answered),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    ),
)]
async fn approve(
    State(state): State<ApiState>,
    caller: Caller,
    PathText(plan_id): PathText,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Answered>), ApiError> {
    caller.must_act()?;
    let plan_id: PlanId =
        plan_id.parse().map_err(|e: remedy_policies::plan::PlanIdError| ApiError::bad_request(e.to_string()))?;
    let body = request_body(&body)?;
    let kind = RequestKind::Approve { plan_id: plan_id.clone() };
    if let Some(queued) = queue_on_standby(&state, &caller, body.comment.clone(), kind).await {
        return queued;
    }
    state.handle.approve(plan_id.clone(), &caller.name, body.comment).await.map_err(command_error)?;
    let recorded = Accepted { accepted: true, by: caller.name, manifest: None, plan_id: Some(plan_id) };
    Ok(accepted(Answered::Recorded(recorded)))
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(as = HistoryPage)]
struct HistoryPageBody {
    records: Vec<HistoryRecord>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_after: Option<RecordId>,
}

/// Reads `GET /v1/history`'s query parameters, naming the one that is wrong.
fn history_query(params: &BTreeMap<String, String>) -> Result<HistoryQuery, ApiError> {
    let mut query = HistoryQuery::default();
    let bad = |name: &str, why: String| ApiError::bad_request(format!("query parameter {name}: {why}"));
    let time = |name: &str, text: &str| -> Result<DateTime<Utc>, ApiError> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| bad(name, format!("{text:?} is not an RFC 3339 time such as 2026-11-30T10:00:00Z: {e}")))
    };
    for (name, value) in params {
        match name.as_str() {
            "identity" => query.identity = Some(value.parse::<Identity>().map_err(|e| bad(name, e.to_string()))?),
            "manifest" => query.manifest = Some(ManifestName::new(value).map_err(|e| bad(name, e.to_string()))?),
            "action" => {
                let action: Action = serde_json::from_value(serde_json::Value::String(value.clone()))
                    .map_err(|_| bad(name, format!("{value:?} is not an action such as disable-account")))?;
                query.action = Some(action);
            }
            "outcome" => {
                let outcome: ActionOutcome = serde_json::from_value(serde_json::Value::String(value.clone()))
                    .map_err(|_| bad(name, format!("{value:?} is not an outcome such as succeeded or drift-corrected")))?;
                query.outcome = Some(outcome);
            }
            "since" => query.since = Some(time(name, value)?),
            "until" => query.until = Some(time(name, value)?),
            "after" => {
                query.after_id =
                    Some(RecordId(value.parse().map_err(|_| bad(name, format!("{value:?} is not a record id")))?))
            }
            "limit" => {
                let limit: usize = value.parse().map_err(|_| bad(name, format!("{value:?} is not a number")))?;
                if !(1..=HistoryQuery::MAX_LIMIT).contains(&limit) {
                    return Err(bad(name, format!("must be between 1 and {}", HistoryQuery::MAX_LIMIT)));
                }
                query.limit = limit;
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?}: use identity, manifest, action, outcome, since, until, after, limit"
                )))
            }
        }
    }
    Ok(query)
}

/// History records
///
/// Oldest first, filtered (all filters given must match) and paged. `identity`, `action` and
/// `outcome` select action records only; approvals are returned only when none of `identity`,
/// `manifest`, `action`, `outcome` is given. An unknown parameter is a `400`.
#[utoipa::path(get, path = "/v1/history", tag = "history", security(("bearer" = [])),
    params(
        ("identity" = inline(Option<openapi::IdentityFilter>), Query,
            description = "actions on this account, as declared: `upn:alice@contoso.com`, `sam:alice`, \
                           `guid:...`, `sid:S-1-5-...`"),
        ("manifest" = Option<ManifestName>, Query,
            description = "actions this manifest asked for, and reconcile requests for it"),
        ("action" = Option<Action>, Query, description = "actions of this kind"),
        ("outcome" = Option<ActionOutcome>, Query, description = "actions with this outcome"),
        ("since" = Option<DateTime<Utc>>, Query, description = "at or after this RFC 3339 time"),
        ("until" = Option<DateTime<Utc>>, Query, description = "before this RFC 3339 time"),
        ("after" = Option<RecordId>, Query,
            description = "records after this id (the previous page's `nextAfter`)"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000,
            description = "at most this many records (default 100)"),
    ),
    responses(
        (status = 200, description = "a page of records, with `nextAfter` when it is full", body = HistoryPageBody),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 500, response = Internal),
    ),
)]
async fn history(
    State(state): State<ApiState>,
    _caller: Caller,
    QueryParams(params): QueryParams,
) -> Result<Json<HistoryPageBody>, ApiError> {
    let query = history_query(&params)?;
    let store = state.store.clone();
    let page = blocking(move || store.query_history(&query)).await?;
    Ok(Json(HistoryPageBody { records: page.records, next_after: page.next_after_id }))
}

/// One history record
///
/// 404 when there is none.
#[utoipa::path(get, path = "/v1/history/{id}", tag = "history", security(("bearer" = [])),
    params(("id" = RecordId, Path, description = "the record's id")),
    responses(
        (status = 200, description = "the record", body = HistoryRecord),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = NotFound),
        (status = 500, response = Internal),
    ),
)]
async fn history_record(
    State(state): State<ApiState>,
    _caller: Caller,
    PathText(id): PathText,
) -> Result<Json<HistoryRecord>, ApiError> {
    let id: u64 = id.parse().map_err(|_| ApiError::bad_request(format!("{id:?} is not a record id")))?;
    let store = state.store.clone();
    match blocking(move || store.history_record(RecordId(id))).await? {
        Some(record) => Ok(Json(record)),
        None => Err(ApiError::not_found(format!("no history record {id}"))),
    }
}

/// The whole hash chain checked.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct Verified {
    /// Always `true` here.
    verified: bool,
    /// How many records were checked.
    records: u64,
    /// The newest record's hash (64 zeros for an empty history).
    #[schema(pattern = "^[0-9a-f]{64}$")]
    head_hash: String,
}

/// A broken hash chain: the error shape, with `verified` and where it broke.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
struct ChainBroken {
    /// Always `false` here.
    verified: bool,
    error: ChainBrokenDetail,
    /// The first record found wrong.
    at_id: RecordId,
}

#[derive(Debug, Serialize, ToSchema)]
struct ChainBrokenDetail {
    code: ChainBrokenCode,
    message: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
enum ChainBrokenCode {
    ChainBroken,
}

/// Verify the history's hash chain
///
/// Checks the whole history: ids without gaps from 1, every record's hash over its content, every
/// link, and the chain head kept apart from the records.
#[utoipa::path(get, path = "/v1/history/verify", tag = "history", security(("bearer" = [])), responses(
    (status = 200, description = "the chain is whole", body = Verified),
    (status = 401, response = Unauthorized),
    (status = 409, description = "the chain is broken: `chain-broken`, and where", body = ChainBroken),
    (status = 500, response = Internal),
))]
async fn verify_history(State(state): State<ApiState>, _caller: Caller) -> Result<Response, ApiError> {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.verify_history()).await {
        Ok(Ok(report)) => {
            Ok(Json(Verified { verified: true, records: report.records, head_hash: report.head_hash }).into_response())
        }
        Ok(Err(crate::store::StoreError::ChainBroken(broken))) => Ok((
            StatusCode::CONFLICT,
            Json(ChainBroken {
                verified: false,
                error: ChainBrokenDetail { code: ChainBrokenCode::ChainBroken, message: broken.to_string() },
                at_id: broken.at_id,
            }),
        )
            .into_response()),
        Ok(Err(error)) => Err(error.into()),
        Err(join) => Err(ApiError::internal(format!("the check did not finish: {join}"))),
    }
}

/// A path parameter. What axum refuses itself (a segment that is not UTF-8 once decoded) is
/// answered in the API's error shape like every other bad request.
struct PathText(String);

impl<S: Send + Sync> FromRequestParts<S> for PathText {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(text)) => Ok(PathText(text)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// The query parameters, by name, refused in the API's error shape.
struct QueryParams(BTreeMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<BTreeMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Query(params)) => Ok(QueryParams(params)),
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// The request body, refused in the API's error shape when it cannot be read (413 when it is
/// larger than axum's limit).
struct RawBody(Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match Bytes::from_request(request, state).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::new(ErrorCode::TooLarge, format!("the body is too large: {}", rejection.body_text())))
            }
            Err(rejection) => Err(ApiError::bad_request(rejection.body_text())),
        }
    }
}

/// Runs a store read off the async threads.
async fn blocking<T: Send + 'static>(
    read: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(read).await {
        Ok(result) => Ok(result?),
        Err(join) => Err(ApiError::internal(format!("the request did not finish: {join}"))),
    }
}
