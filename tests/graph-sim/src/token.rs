//! `POST /{tenant}/oauth2/v2.0/token`: the Microsoft identity platform's client credentials grant,
//! with a shared secret, a client assertion signed with a registered certificate, or a federated
//! token. Issues opaque random bearer tokens (real ones are JWTs; a client must treat both as
//! opaque).
//!
//! Sources: https://learn.microsoft.com/en-us/entra/identity-platform/v2-oauth2-client-creds-grant-flow
//! (request parameters, `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
//! with `client_assertion` for a certificate or a federated credential; success body
//! token_type/expires_in/ext_expires_in/access_token; error body
//! error/error_description/error_codes/timestamp/trace_id/correlation_id),
//! https://learn.microsoft.com/en-us/previous-versions/azure/dn645548(v=azure.100) (an error body verbatim:
//! `AADSTSnnnn: ...\r\nTrace ID: ...\r\nCorrelation ID: ...\r\nTimestamp: ...`, timestamp `YYYY-MM-DD hh:mm:ssZ`),
//! https://learn.microsoft.com/en-us/entra/identity-platform/reference-error-codes (AADSTS numbers:
//! 7000215 invalid secret, 700016 unknown application, 90002 unknown tenant, 1002012 scope without
//! `/.default`, 500011 unknown resource, 70003 unsupported grant, 900144 missing parameter, 7000216
//! missing credentials, 50027 invalid or malformed JWT) and https://learn.microsoft.com/en-us/azure/developer/java/sdk/troubleshooting-authentication-service-principal
//! (7000215 / 700016 as a client-secret credential meets them). Assertions: 700027 with its two
//! reasons ("The key was not found." naming the client's thumbprint; a signature that does not
//! match) as quoted on https://learn.microsoft.com/en-us/answers/questions/2262614 and /5915574;
//! 700024 (not within its valid time range) and 70021 (no matching federated identity record,
//! naming issuer, subject and audience) as the Azure DevOps workload identity documentation lists
//! them (MicrosoftDocs/azure-devops-docs, docs/pipelines/release/includes/errors-workload-identity.md);
//! 7000222 (expired secret) with the text quoted on
//! https://code2care.org/sharepoint/sharepoint-app-error-aadsts7000222-the-provided-client-secret-keys-are-expired/.
//! Assumptions: the HTTP status and OAuth `error` paired with each number (401 `invalid_client`
//! for bad, missing or expired credentials and assertions, 400 for the rest, as commonly
//! observed); 50027 for an assertion with a wrong `aud`, `sub` or no thumbprint (the real service
//! may use other numbers); a clock skew of 5 minutes allowed on `nbf` and `exp`; an injected
//! outage ([`crate::Fault::TokenOutage`]) answered as `temporarily_unavailable` with AADSTS90033
//! ("A transient error has occurred").

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::assertion::{named_thumbprint, Certificate, Jwt};
use crate::model::{LoggedRequest, SimConfig};
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

/// `audience_url`: the URLs of this endpoint a client assertion's `aud` may name.
fn check(
    config: &SimConfig,
    tenant: &str,
    audience_url: &[String],
    form: &Map<String, Value>,
) -> Result<(), TokenError> {
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
    let assertion_type = field("client_assertion_type");
    let assertion = field("client_assertion");
    if !assertion_type.is_empty() || !assertion.is_empty() {
        if assertion_type != JWT_BEARER {
            return Err(TokenError {
                status: 400,
                error: "invalid_request",
                code: 50027,
                description: format!(
                    "JWT token is invalid or malformed. (client_assertion_type must be '{JWT_BEARER}'.)"
                ),
            });
        }
        return check_assertion(config, tenant, audience_url, assertion, Utc::now().timestamp());
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
    if config.client_secret_expired {
        return Err(TokenError {
            status: 401,
            error: "invalid_client",
            code: 7000222,
            description: format!("The provided client secret keys for app '{}' are expired. Visit the Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or consider using certificate credentials for added security: https://aka.ms/certCreds.", config.client_id),
        });
    }
    Ok(())
}

/// `client_assertion_type` of both certificate and federated assertions.
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// How far `nbf` and `exp` may be off (Assumption).
const CLOCK_SKEW_SECONDS: i64 = 300;

fn invalid_client(code: u32, description: String) -> TokenError {
    TokenError { status: 401, error: "invalid_client", code, description }
}

/// A client assertion: the app's own (`iss` = the client id), signed with a registered
/// certificate's key; or an external token (any other `iss`) matched to a federated credential.
fn check_assertion(
    config: &SimConfig,
    tenant: &str,
    audience_url: &[String],
    text: &str,
    now: i64,
) -> Result<(), TokenError> {
    let jwt =
        Jwt::parse(text).map_err(|why| invalid_client(50027, format!("JWT token is invalid or malformed. ({why})")))?;
    let issuer = jwt.claim_text("iss").unwrap_or("");
    let subject = jwt.claim_text("sub").unwrap_or("");
    if issuer == config.client_id {
        if subject != config.client_id {
            return Err(invalid_client(
                50027,
                format!("JWT token is invalid or malformed. (sub '{subject}' must be the client id, as iss is.)"),
            ));
        }
        if !jwt.audiences().iter().any(|aud| audience_url.iter().any(|url| url.eq_ignore_ascii_case(aud))) {
            return Err(invalid_client(
                50027,
                format!(
                    "JWT token is invalid or malformed. (aud {:?} must be the token endpoint, {}.)",
                    jwt.audiences(),
                    audience_url.first().map_or("", String::as_str)
                ),
            ));
        }
        let thumbprint = named_thumbprint(&jwt);
        if thumbprint.is_empty() {
            return Err(invalid_client(
                50027,
                "JWT token is invalid or malformed. (The header names no certificate: x5t#S256 or x5t.)".into(),
            ));
        }
        let registered: Vec<Certificate> =
            config.client_certificates.iter().filter_map(|pem| Certificate::from_pem(pem).ok()).collect();
        let Some(certificate) = registered.iter().find(|c| c.is_named_by(&jwt)) else {
            return Err(invalid_client(700027, format!("The certificate with identifier used to sign the client assertion is not registered on application. [Reason - The key was not found., Thumbprint of key used by client: '{thumbprint}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph to see configured keys for app Id '{}'.]", config.client_id)));
        };
        if jwt.verify(&certificate.public_key).is_err() {
            return Err(invalid_client(700027, format!("Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value., Thumbprint of key used by client: '{thumbprint}', Found key 'Start={}, End={}']", date(certificate.not_before), date(certificate.not_after))));
        }
        if now > certificate.not_after || now < certificate.not_before {
            return Err(invalid_client(700027, format!("Client assertion contains an invalid signature. [Reason - The key used is expired., Thumbprint of key used by client: '{thumbprint}', Found key 'Start={}, End={}']", date(certificate.not_before), date(certificate.not_after))));
        }
        return within_time_range(&jwt, now);
    }
    let audiences = jwt.audiences();
    let Some(credential) = config.federated_credentials.iter().find(|c| {
        c.issuer == issuer && c.subject == subject && audiences.iter().any(|aud| c.audiences.iter().any(|a| a == aud))
    }) else {
        return Err(invalid_client(70021, format!("No matching federated identity record found for presented assertion. Assertion Issuer: '{issuer}'. Assertion Subject: '{subject}'. Assertion Audience: '{}'. https://learn.microsoft.com/entra/workload-id/workload-identity-federation (tenant '{tenant}', app '{}')", audiences.join(","), config.client_id)));
    };
    let signer = Certificate::from_pem(&credential.issuer_certificate).map_err(|e| {
        invalid_client(
            700027,
            format!("Client assertion failed signature validation. (The issuer's key cannot be read: {e}.)"),
        )
    })?;
    if jwt.verify(&signer.public_key).is_err() {
        return Err(invalid_client(700027, format!("Client assertion failed signature validation. [Reason - The provided signature value did not match the expected signature value of the issuer '{issuer}'.]")));
    }
    within_time_range(&jwt, now)
}

fn within_time_range(jwt: &Jwt, now: i64) -> Result<(), TokenError> {
    let Some(expires) = jwt.claim_time("exp") else {
        return Err(invalid_client(50027, "JWT token is invalid or malformed. (No exp claim.)".into()));
    };
    let not_before = jwt.claim_time("nbf").unwrap_or(i64::MIN);
    if now > expires + CLOCK_SKEW_SECONDS || now + CLOCK_SKEW_SECONDS < not_before {
        let from = if not_before == i64::MIN { "-".to_owned() } else { date(not_before) };
        return Err(invalid_client(700024, format!("Client assertion is not within its valid time range. Current time: {}, assertion valid from {from}, expiry time of assertion {}. Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials .", date(now), date(expires))));
    }
    Ok(())
}

fn date(seconds: i64) -> String {
    DateTime::from_timestamp(seconds, 0)
        .map_or_else(|| seconds.to_string(), |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
}

fn random_token() -> String {
    let mut token = String::from("graph-sim.");
    token.extend(std::iter::repeat_with(fastrand::alphanumeric).take(64));
    token
}

/// An access token shaped like the real service's app-only tokens (see
/// [`crate::SimConfig::app_roles`]): a JWT whose payload names the app, the tenant and its roles,
/// with a random signature.
fn jwt_token(config: &crate::SimConfig, roles: &[String], lifetime: u64) -> String {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let now = Utc::now().timestamp();
    let header = json!({"typ": "JWT", "alg": "RS256", "kid": "graph-sim"});
    let mut claims = json!({
        "aud": "https://graph.microsoft.com",
        "iss": format!("https://sts.windows.net/{}/", config.tenant_id),
        "tid": config.tenant_id,
        "appid": config.client_id,
        "idtyp": "app",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime as i64,
        "uti": std::iter::repeat_with(fastrand::alphanumeric).take(22).collect::<String>(),
    });
    if !roles.is_empty() {
        claims["roles"] = json!(roles);
    }
    let signature: Vec<u8> = std::iter::repeat_with(|| fastrand::u8(..)).take(256).collect();
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        URL_SAFE_NO_PAD.encode(signature)
    )
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
    for credential in ["client_secret", "client_assertion"] {
        if logged.contains_key(credential) {
            logged.insert(credential.into(), json!("<redacted>"));
        }
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
    // Assumption: an assertion names this endpoint as the client reached it (the real service
    // accepts its own host names).
    let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
    let audience_url: Vec<String> =
        ["https", "http"].iter().map(|scheme| format!("{scheme}://{host}/{tenant}/oauth2/v2.0/token")).collect();
    let outage = shared.lock().token_outage();
    let outcome = if let Some(status) = outage {
        Err(TokenError {
            status,
            error: "temporarily_unavailable",
            code: 90033,
            description:
                "A transient error has occurred. Please try again. (graph-sim: an injected token endpoint outage.)"
                    .into(),
        })
    } else if form_encoded {
        check(&shared.config, &tenant, &audience_url, &form)
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
            let lifetime = shared.config.token_lifetime;
            let token = match &shared.config.app_roles {
                Some(roles) => jwt_token(&shared.config, roles, lifetime.as_secs()),
                None => random_token(),
            };
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
