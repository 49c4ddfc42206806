//! `POST /{tenant}/oauth2/v2.0/token`: the Microsoft identity platform's client credentials grant with a
//! shared secret. Issues opaque random bearer tokens (real ones are JWTs; a client must treat both as
//! opaque).
//!
//! Sources: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
//! (request parameters; success body token_type/expires_in/ext_expires_in/access_token; error body
//! error/error_description/error_codes/timestamp/trace_id/correlation_id),
//! https://learn.microsoft.com/en-us/previous-versions/azure/dn645548(v=azure.100) (an error body verbatim:
//! `AADSTSnnnn: ...\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ...`, timestamp `YYYY-MM-DD hh:mm:ssZ`),
//! https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes (AADSTS numbers:
//! 7000215 invalid secret, 700016 unknown application, 90002 unknown tenant, 1002012 scope without
//! `/.default`, 500011 unknown resource, 70003 unsupported grant, 900144 missing parameter, 7000216
//! missing credentials) and https://learn.microsoft.com/en-us/azure/developer/java/sdk/troubleshooting-authentication-service-principal
//! (7000215 / 700016 as a client-secret credential meets them).
//! Assumption: the HTTP status and OAuth `error` paired with each number (401 `invalid_client` for bad or
//! missing secrets, 400 for the rest, as commonly observed).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::model::LoggedRequest;
use crate::odata::percent_decode;
use crate::state::Shared;

/// The scope the client credentials flow must ask for to call Graph.
const GRAPH_DEFAULT_SCOPES: &[&str] =
    &["https://graph.microsoft.com/.default", "00000003-0000-0000-c000-000000000000/.default"];

/// A token endpoint error in the identity platform's shape.
#[derive(Debug)]
struct TokenError {
    status: u16,
    error: &'static str,
    code: u32,
    description: String,
}

impl TokenError {
    fn body(&self, now: DateTime<Utc>) -> Value {
        let trace_id = uuid::Uuid::new_v4().to_string();
        let correlation_id = uuid::Uuid::new_v4().to_string();
        let timestamp = now.format("%Y-%m-%d %H:%M:%SZ").to_string();
        json!({
            "error": self.error,
            "error_description": format!(
                "AADSTS{}: {}\r\nTrace ID: {trace_id}\r\nCorrelation ID: {correlation_id}\r\nTimestamp: {timestamp}",
                self.code, self.description
            ),
            "error_codes": [self.code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={}", self.code),
        })
    }
}

fn check(shared: &Shared, tenant: &str, form: &Map<String, Value>) -> Result<(), TokenError> {
    let config = &shared.config;
    let field = |name: &str| form.get(name).and_then(Value::as_str).unwrap_or("");
    if !tenant.eq_ignore_ascii_case(&config.tenant_id) {
        return Err(TokenError {
            status: 400,
            error: "invalid_request",
            code: 90002,
            description: format!("Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."),
        });
    }
    if field("grant_type") != "client_credentials" {
        return Err(TokenError {
            status: 400,
            error: "unsupported_grant_type",
            code: 70003,
            description: format!(
                "The app requested an unsupported grant type '{}'. (graph-sim supports client_credentials only.)",
                field("grant_type")
            ),
        });
    }
    if field("client_id").is_empty() {
        return Err(TokenError {
            status: 400,
            error: "invalid_request",
            code: 900144,
            description: "The request body must contain the following parameter: 'client_id'.".into(),
        });
    }
    if field("client_id") != config.client_id {
        return Err(TokenError {
            status: 400,
            error: "unauthorized_client",
            code: 700016,
            description: format!(
                "Application with identifier '{}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
                field("client_id")
            ),
        });
    }
    let scope = field("scope");
    if scope.is_empty() {
        return Err(TokenError {
            status: 400,
            error: "invalid_request",
            code: 900144,
            description: "The request body must contain the following parameter: 'scope'.".into(),
        });
    }
    if !GRAPH_DEFAULT_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
        return Err(if scope.ends_with("/.default") {
            TokenError {
                status: 400,
                error: "invalid_resource",
                code: 500011,
                description: format!("The resource principal named {} was not found in the tenant. (graph-sim issues Graph tokens only.)", scope.trim_end_matches("/.default")),
            }
        } else {
            TokenError {
                status: 400,
                error: "invalid_scope",
                code: 1002012,
                description: format!("The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."),
            }
        });
    }
    if field("client_secret").is_empty() {
        return Err(TokenError {
            status: 401,
            error: "invalid_client",
            code: 7000216,
            description:
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type."
                    .into(),
        });
    }
    if field("client_secret") != config.client_secret {
        return Err(TokenError {
            status: 401,
            error: "invalid_client",
            code: 7000215,
            description: format!("Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{}'.", config.client_id),
        });
    }
    Ok(())
}

fn random_token() -> String {
    let mut token = String::from("graph-sim.");
    token.extend(std::iter::repeat_with(fastrand::alphanumeric).take(64));
    token
}

pub(crate) async fn token(
    State(shared): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let now = Utc::now();
    let mut form = Map::new();
    for pair in String::from_utf8_lossy(&body).split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        form.insert(percent_decode(name, true), Value::String(percent_decode(value, true)));
    }
    let mut logged = form.clone();
    if logged.contains_key("client_secret") {
        logged.insert("client_secret".into(), json!("<redacted>"));
    }
    let log_id = shared.lock().log_arrival(LoggedRequest {
        at: now,
        method: "POST".into(),
        path: format!("/{tenant}/oauth2/v2.0/token"),
        status: 0,
        in_batch: false,
        body: Some(Value::Object(logged)),
        retry_after: None,
    });
    let form_encoded = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded"));
    let outcome = if form_encoded {
        check(&shared, &tenant, &form)
    } else {
        Err(TokenError {
            status: 400,
            error: "invalid_request",
            code: 900144,
            description: "The request body must contain the following parameter: 'grant_type'. (Send it as application/x-www-form-urlencoded.)".into(),
        })
    };
    let (status, body) = match outcome {
        Ok(()) => {
            let token = random_token();
            let lifetime = shared.config.token_lifetime;
            shared.lock().tokens.insert(token.clone(), Instant::now() + lifetime);
            let seconds = lifetime.as_secs_f64().ceil() as u64;
            (
                200,
                json!({"token_type": "Bearer", "expires_in": seconds, "ext_expires_in": seconds, "access_token": token}),
            )
        }
        Err(error) => (error.status, error.body(now)),
    };
    shared.lock().log_answer(log_id, status, None);
    tracing::info!(%tenant, status, "token request");
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        [("content-type", "application/json; charset=utf-8"), ("cache-control", "no-store, no-cache")],
        body.to_string(),
    )
        .into_response()
}
