//! `/_sim/*`: the simulator's own control and inspection endpoints, for scripts and other processes
//! (tests in the same process use [`crate::Sim`]'s methods). Not part of Microsoft Graph; no
//! authentication, which is acceptable only because the simulator binds to loopback.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::model::Fault;
use crate::state::Shared;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/_sim/state", get(state))
        .route("/_sim/log", get(log).delete(clear_log))
        .route("/_sim/sync", post(sync))
        .route("/_sim/faults", post(inject))
        .route("/_sim/on-premises/{id}", post(on_premises))
        .route("/_sim/users/{id}", post(out_of_band).delete(remove))
}

async fn state(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.lock().users.clone()).into_response()
}

async fn log(State(shared): State<Arc<Shared>>) -> Response {
    Json(shared.lock().log()).into_response()
}

async fn clear_log(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().clear_log();
    StatusCode::NO_CONTENT
}

async fn sync(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.lock().directory_sync();
    StatusCode::NO_CONTENT
}

async fn inject(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<Fault>(&body) {
        Ok(fault) => {
            shared.lock().inject(fault);
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(json!({"error": format!("not a fault: {e}")}))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OnPremises {
    account_enabled: bool,
}

async fn on_premises(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let OnPremises { account_enabled } = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("expected {{\"accountEnabled\": bool}}: {e}")})),
            )
                .into_response()
        }
    };
    if crate::set_on_premises(&shared, &id, account_enabled) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"error": format!("no user {id}")}))).into_response()
    }
}

/// `POST /_sim/users/{id}` `{"accountEnabled": bool}`: a change made out of band (the portal, an
/// attacker), not through the app's Graph requests.
async fn out_of_band(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    let OnPremises { account_enabled } = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("expected {{\"accountEnabled\": bool}}: {e}")})),
            )
                .into_response()
        }
    };
    if crate::set_account_enabled(&shared, &id, account_enabled) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"error": format!("no user {id}")}))).into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Removal {
    permanent: bool,
}

/// `DELETE /_sim/users/{id}` (`?permanent=true`): the user is deleted.
async fn remove(State(shared): State<Arc<Shared>>, Path(id): Path<String>, Query(removal): Query<Removal>) -> Response {
    if crate::remove_user(&shared, &id, removal.permanent) {
        StatusCode::NO_CONTENT.into_response()
    } else {
        (StatusCode::NOT_FOUND, Json(json!({"error": format!("no user {id}")}))).into_response()
    }
}
