//! The HTTP API of `remedy serve` (axum): status and history for readers, reconcile and approve
//! for operators and administrators, health and metrics. See `docs/api.md`.
//!
//! Every route but `/healthz` and `/readyz` needs a bearer token (401 without a known one, 403
//! when its role may not do what is asked). Errors have one shape ([`error::ApiError`]).

mod auth;
mod error;
mod listener;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use remedy_policies::plan::PlanId;
use remedy_policies::{Action, Identity, ManifestName};
use serde::{Deserialize, Serialize};

pub use auth::{Caller, Tokens};
pub use error::ApiError;
pub use listener::{serve, Bound, ListenError};

use crate::controller::{CommandError, ControllerHandle};
use crate::store::{ActionOutcome, HistoryQuery, HistoryRecord, ManifestStatus, RecordId, Store};

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub store: Store,
    pub handle: ControllerHandle,
    pub tokens: Arc<Tokens>,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/manifests", get(list_manifests))
        .route("/v1/manifests/{name}", get(get_manifest))
        .route("/v1/manifests/{name}/reconcile", post(reconcile_manifest))
        .route("/v1/reconcile", post(reconcile_all))
        .route("/v1/history", get(history))
        .route("/v1/history/verify", get(verify_history))
        .route("/v1/history/{id}", get(history_record))
        .route("/v1/approvals/{plan_id}", post(approve))
        .fallback(|| async { ApiError::not_found("no such endpoint: see docs/api.md") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this endpoint does not take that method",
            )
        })
        .with_state(state)
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Readiness {
    ready: bool,
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
}

async fn readyz(State(state): State<ApiState>) -> Response {
    let progress = state.handle.progress().borrow().clone();
    let readiness = Readiness {
        ready: progress.loaded
            && progress.unavailable_providers.is_empty()
            && progress.store_error.is_none()
            && !progress.shutting_down,
        store: "open",
        manifests_loaded: progress.loaded,
        load_error: progress.load_error,
        unavailable_providers: progress.unavailable_providers,
        store_error: progress.store_error,
        store_moved_aside: progress.store_moved_aside.map(|p| p.display().to_string()),
    };
    let status = if readiness.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(readiness)).into_response()
}

async fn metrics(State(state): State<ApiState>, _caller: Caller) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.handle.metrics().render())
        .into_response()
}

#[derive(Debug, Serialize)]
struct ManifestList {
    manifests: Vec<ManifestStatus>,
}

async fn list_manifests(State(state): State<ApiState>, _caller: Caller) -> Result<Json<ManifestList>, ApiError> {
    let store = state.store.clone();
    let manifests = blocking(move || store.list_status()).await?;
    Ok(Json(ManifestList { manifests }))
}

fn manifest_name(text: &str) -> Result<ManifestName, ApiError> {
    ManifestName::new(text).map_err(|e| ApiError::bad_request(e.to_string()))
}

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

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    accepted: bool,
    by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<ManifestName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_id: Option<PlanId>,
}

fn command_error(error: CommandError) -> ApiError {
    match error {
        CommandError::UnknownManifest(_) => ApiError::not_found(error.to_string()),
        CommandError::NotHeld(..) => ApiError::conflict(error.to_string()),
        CommandError::Store(_) => ApiError::internal(error.to_string()),
        CommandError::ShuttingDown => ApiError::unavailable(error.to_string()),
    }
}

async fn reconcile_manifest(
    State(state): State<ApiState>,
    caller: Caller,
    PathText(name): PathText,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    caller.must_act()?;
    let name = manifest_name(&name)?;
    let body = request_body(&body)?;
    state.handle.reconcile(&caller.name, Some(name.clone()), body.comment).await.map_err(command_error)?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true, by: caller.name, manifest: Some(name), plan_id: None })))
}

async fn reconcile_all(
    State(state): State<ApiState>,
    caller: Caller,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    caller.must_act()?;
    let body = request_body(&body)?;
    state.handle.reconcile(&caller.name, None, body.comment).await.map_err(command_error)?;
    Ok((StatusCode::ACCEPTED, Json(Accepted { accepted: true, by: caller.name, manifest: None, plan_id: None })))
}

async fn approve(
    State(state): State<ApiState>,
    caller: Caller,
    PathText(plan_id): PathText,
    RawBody(body): RawBody,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    caller.must_act()?;
    let plan_id: PlanId =
        plan_id.parse().map_err(|e: remedy_policies::plan::PlanIdError| ApiError::bad_request(e.to_string()))?;
    let body = request_body(&body)?;
    state.handle.approve(plan_id.clone(), &caller.name, body.comment).await.map_err(command_error)?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted { accepted: true, by: caller.name, manifest: None, plan_id: Some(plan_id) }),
    ))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
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

async fn verify_history(State(state): State<ApiState>, _caller: Caller) -> Result<Response, ApiError> {
    let store = state.store.clone();
    match tokio::task::spawn_blocking(move || store.verify_history()).await {
        Ok(Ok(report)) => {
            Ok(Json(serde_json::json!({ "verified": true, "records": report.records, "headHash": report.head_hash }))
                .into_response())
        }
        Ok(Err(crate::store::StoreError::ChainBroken(broken))) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "verified": false,
                "error": { "code": "chain-broken", "message": broken.to_string() },
                "atId": broken.at_id,
            })),
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
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too-large",
                format!("the body is too large: {}", rejection.body_text()),
            )),
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
