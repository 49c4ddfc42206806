//! The Graph resources the simulator serves (users, riskyUsers) and the gateway every Graph HTTP request
//! passes: request ids, latency, authentication, injected faults, throttling, then the resource.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use crate::model::{LoggedRequest, SimConfig, SimUser};
use crate::odata::{self, Filter, Reply, Target, JSON_CONTENT_TYPE};
use crate::state::{Inner, Shared};

/// The only Graph version served.
pub(crate) const VERSION: &str = "v1.0";
/// Largest request body accepted (Graph's own limit is larger; nothing here needs more).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// What a resource handler needs to know about the request besides its target.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// `http://host:port` as the client addressed us, for `@odata.context` and nextLinks.
    pub base: String,
    pub now: DateTime<Utc>,
}

/// One Graph request: a plain HTTP one or a `$batch` sub-request.
#[derive(Debug, Clone)]
pub(crate) struct Call<'a> {
    pub method: &'a str,
    /// Path after `/v1.0`, with its query.
    pub target: &'a str,
    pub body: Option<&'a Value>,
}

/// Faults, budget, then the resource: the part of the pipeline every Graph request (and every `$batch`
/// sub-request) goes through once authenticated.
pub(crate) fn serve(shared: &Shared, call: &Call<'_>, context: &Context) -> Reply {
    let mut inner = shared.lock();
    if let Some(fault) = inner.take_fault() {
        return fault;
    }
    if let Some(throttled) = inner.spend_budget(&shared.config, Instant::now()) {
        return throttled;
    }
    if call.method.eq_ignore_ascii_case("GET") && inner.take_accepted_get() {
        // Fault::AcceptedGets (Assumption: see there).
        return crate::odata::Reply { status: 202, headers: Vec::new(), body: None };
    }
    dispatch(&mut inner, &shared.config, call, context)
}

fn dispatch(inner: &mut Inner, config: &SimConfig, call: &Call<'_>, context: &Context) -> Reply {
    let target = Target::parse(call.target);
    let method = call.method.to_ascii_uppercase();
    let addressed = match address_by_key(&target.segments) {
        Ok(addressed) => addressed,
        Err(reply) => return reply,
    };
    let segments: Vec<&str> = addressed.iter().map(String::as_str).collect();
    if segments.first() == Some(&"identityProtection") && !config.identity_protection_licensed {
        // Source: https://learn.microsoft.com/en-us/graph/api/riskyuser-get ("Using the riskyUsers API
        // requires a Microsoft Entra ID P2 license"). Assumption: the code and wording, those Graph
        // uses for other premium-only APIs (sign-in logs) in a tenant without the licence.
        return Reply::error(
            403,
            "Authentication_RequestFromNonPremiumTenantOrB2CTenant",
            "Neither tenant is B2C or tenant doesn't have premium license",
        );
    }
    if segments.first() == Some(&"identityProtection")
        && !inner.allow_identity_protection(config.confirm_compromised_per_second, Instant::now())
    {
        // Identity Protection allows 1 request per second per tenant (all apps, any request on riskyUser,
        // riskDetection, ...) and its 429s carry no Retry-After: the client must back off by itself.
        // Source: https://learn.microsoft.com/en-us/graph/throttling-limits ("Identity protection and
        // Conditional Access service limits"). The body is an assumption (Graph's usual TooManyRequests).
        return Reply::error(429, "TooManyRequests", "Too many requests to Identity Protection; retry later.");
    }
    match (method.as_str(), segments.as_slice()) {
        ("GET", ["users"]) => list_users(inner, config, &target, context),
        // Source: https://learn.microsoft.com/graph/delta-query-overview ("/delta is a shortcut for
        // the fully qualified name /microsoft.graph.delta").
        ("GET", ["users", "delta" | "microsoft.graph.delta"]) => {
            crate::delta::users_delta(inner, config, &target, context)
        }
        ("GET", ["users", key]) => get_user(inner, key, &target, context),
        ("PATCH", ["users", key]) => update_user(inner, key, call.body, context.now),
        ("POST", ["users", key, "revokeSignInSessions"]) => revoke_sign_in_sessions(inner, key, context),
        ("POST", ["identityProtection", "riskyUsers", "confirmCompromised"]) => {
            confirm_compromised(inner, call.body, context.now)
        }
        ("GET", ["identityProtection", "riskyUsers", id]) => get_risky_user(inner, id, context),
        (_, ["users"] | ["users", _] | ["users", _, "revokeSignInSessions"])
        | (_, ["identityProtection", "riskyUsers", _]) => {
            // Source: the 405 sub-response in https://learn.microsoft.com/en-us/graph/json-batching.
            Reply::error(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
        }
        (_, ["$batch"]) => Reply::error(400, "BadRequest", "A $batch request cannot contain another $batch request."),
        _ => {
            let segment = segments.iter().find(|s| !matches!(**s, "users" | "identityProtection")).unwrap_or(&"");
            // Assumption (observed Graph wording): "Resource not found for the segment '...'".
            Reply::error(
                400,
                "BadRequest",
                format!(
                    "Resource not found for the segment '{segment}'. (graph-sim serves /users, /users/delta, /users/{{id}}, \
                     /users/{{id}}/revokeSignInSessions, /identityProtection/riskyUsers/{{id}}, \
                     /identityProtection/riskyUsers/confirmCompromised and /$batch.)"
                ),
            )
        }
    }
}

/// The path's segments with a user addressed by key (`users('$x@contoso.com')`) written as
/// `users/$x@contoso.com`; a bare `users/$...` (other than `$batch`-like system segments) is
/// refused, as Graph reads a `$` segment as a system query option or function.
/// Source: https://learn.microsoft.com/en-us/graph/api/user-get ("If the userPrincipalName begins
/// with a $ character, remove the slash (/) after /users and enclose the userPrincipalName in
/// parentheses and single quotes", e.g. `/users('$AdeleVance@contoso.com')`). Assumption: the
/// 400 code and wording for the bare form.
fn address_by_key(segments: &[String]) -> Result<Vec<String>, Reply> {
    let mut out = Vec::with_capacity(segments.len() + 1);
    for (position, segment) in segments.iter().enumerate() {
        if position == 0 {
            if let Some(key) = segment.strip_prefix("users('").and_then(|rest| rest.strip_suffix("')")) {
                out.push("users".to_owned());
                out.push(key.replace("''", "'"));
                continue;
            }
        }
        if position == 1 && segments[0] == "users" && segment.starts_with('$') {
            return Err(Reply::error(
                400,
                "BadRequest",
                format!(
                    "Resource not found for the segment '{segment}'. A userPrincipalName that begins with '$' is \
                     addressed as /users('{segment}')."
                ),
            ));
        }
        out.push(segment.clone());
    }
    Ok(out)
}

/// 404 for a user that does not exist, in the directory service's words.
/// Source: https://learn.microsoft.com/en-us/graph/errors (404 Not Found) and the directory's
/// `Request_ResourceNotFound` code (observed wording).
fn user_not_found(key: &str) -> Reply {
    Reply::error(
        404,
        "Request_ResourceNotFound",
        format!("Resource '{key}' does not exist or one of its queried reference-property objects are not present."),
    )
}

pub(crate) fn user_json(user: &SimUser, properties: &[&str]) -> Map<String, Value> {
    let mut object = Map::new();
    for &property in properties {
        let value = match property {
            "id" => json!(user.id),
            "userPrincipalName" => json!(user.user_principal_name),
            "accountEnabled" => json!(user.account_enabled),
            // Graph answers null (not false) for users that never came from on-premises.
            // Sources: https://learn.microsoft.com/en-us/graph/api/resources/user (onPremisesSyncEnabled
            // supports "eq on null values"; returned only on $select) and the null shown for cloud users in
            // https://github.com/microsoftgraph/microsoft-graph-docs-contrib/issues/3564
            "onPremisesSyncEnabled" => {
                if user.on_premises_sync_enabled {
                    json!(true)
                } else {
                    Value::Null
                }
            }
            "signInSessionsValidFromDateTime" => json!(user.sign_in_sessions_valid_from.map(odata::seconds)),
            "lastPasswordChangeDateTime" => json!(user.last_password_change.map(odata::seconds)),
            "userType" => json!(user.user_type),
            _ => continue,
        };
        object.insert(property.to_owned(), value);
    }
    object
}

pub(crate) fn metadata_context(context: &Context, properties: Option<&[&str]>, entity: bool) -> String {
    let selected = properties.map(|p| format!("({})", p.join(","))).unwrap_or_default();
    let entity = if entity { "/$entity" } else { "" };
    format!("{}/{VERSION}/$metadata#users{selected}{entity}", context.base)
}

/// `GET /users/{id | userPrincipalName}`.
/// Source: https://learn.microsoft.com/en-us/graph/api/user-get
fn get_user(inner: &Inner, key: &str, target: &Target, context: &Context) -> Reply {
    let properties = match odata::parse_select(target.option("$select")) {
        Ok(properties) => properties,
        Err(reply) => return reply,
    };
    let Some(index) = inner.find_user(key) else {
        return user_not_found(key);
    };
    let mut object = Map::new();
    let selected = target.option("$select").map(|_| properties.as_slice());
    object.insert("@odata.context".into(), json!(metadata_context(context, selected, true)));
    let (user, _lagging) = inner.read_user(index);
    object.extend(user_json(user, &properties));
    Reply::json(200, Value::Object(object))
}

/// Most values an `in (...)`/`or` filter may compare against.
/// Source: https://learn.microsoft.com/en-us/graph/filter-query-parameter (with `in`, "requests are limited
/// to 15 expressions in the filter clause by default").
const MAX_FILTER_VALUES: usize = 15;
/// Largest `$top` for users. Source: https://learn.microsoft.com/en-us/graph/api/user-list ($top 1..999).
const MAX_TOP: usize = 999;

/// `GET /users` with `$filter`, `$select`, `$top` and `$skiptoken` paging.
/// Source: https://learn.microsoft.com/en-us/graph/paging (absolute `@odata.nextLink` with an opaque
/// `$skiptoken`, followed as is).
fn list_users(inner: &Inner, config: &SimConfig, target: &Target, context: &Context) -> Reply {
    let properties = match odata::parse_select(target.option("$select")) {
        Ok(properties) => properties,
        Err(reply) => return reply,
    };
    let filter = match target.option("$filter").map(Filter::parse).transpose() {
        Ok(filter) => filter,
        Err(reply) => return reply,
    };
    if let Some(filter) = &filter {
        if filter.value_count() > MAX_FILTER_VALUES {
            // Assumption: the exact wording; the limit itself is documented (see MAX_FILTER_VALUES).
            return Reply::error(
                400,
                "Request_UnsupportedQuery",
                format!("Too many expressions in the filter: {} (at most {MAX_FILTER_VALUES}).", filter.value_count()),
            );
        }
    }
    let top = match target.option("$top").map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(top)) if (1..=MAX_TOP).contains(&top) => Some(top),
        Some(_) => {
            return Reply::error(
                400,
                "Request_BadRequest",
                format!(
                    "Invalid page size specified: '{}'. Must be between 1 and {MAX_TOP} inclusive.",
                    target.option("$top").unwrap_or("")
                ),
            )
        }
    };
    let offset = match target.option("$skiptoken").map(decode_skiptoken) {
        None => 0,
        Some(Some(offset)) => offset,
        Some(None) => return Reply::error(400, "Request_BadRequest", "Invalid $skiptoken value."),
    };
    let page_size = top.unwrap_or(config.page_size).min(config.page_size).max(1);

    let matching: Vec<&SimUser> = inner
        .users
        .iter()
        .filter(|user| {
            filter.as_ref().is_none_or(|filter| {
                filter.clauses.iter().any(|(property, values)| {
                    let actual = if *property == "id" { &user.id } else { &user.user_principal_name };
                    values.iter().any(|v| v.eq_ignore_ascii_case(actual))
                })
            })
        })
        .collect();
    let page: Vec<Value> =
        matching.iter().skip(offset).take(page_size).map(|user| Value::Object(user_json(user, &properties))).collect();

    let selected = target.option("$select").map(|_| properties.as_slice());
    let mut body = Map::new();
    body.insert("@odata.context".into(), json!(metadata_context(context, selected, false)));
    if offset + page_size < matching.len() {
        let mut query: Vec<String> = target
            .query
            .iter()
            .filter(|(name, _)| !name.trim_start_matches('$').eq_ignore_ascii_case("skiptoken"))
            .map(|(name, value)| format!("{}={}", odata::percent_encode(name), odata::percent_encode(value)))
            .collect();
        query.push(format!("$skiptoken={}", encode_skiptoken(offset + page_size)));
        body.insert("@odata.nextLink".into(), json!(format!("{}/{VERSION}/users?{}", context.base, query.join("&"))));
    }
    body.insert("value".into(), Value::Array(page));
    Reply::json(200, Value::Object(body))
}

/// Skip tokens are opaque to clients; this one hides an offset.
fn encode_skiptoken(offset: usize) -> String {
    let text = format!("graph-sim:{offset}");
    text.bytes().map(|b| format!("{b:02X}")).collect()
}

fn decode_skiptoken(token: &str) -> Option<usize> {
    if token.len() % 2 != 0 || !token.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> =
        (0..token.len()).step_by(2).map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok()).collect();
    String::from_utf8(bytes?).ok()?.strip_prefix("graph-sim:")?.parse().ok()
}

/// Real user properties an app could PATCH but the simulator does not model.
const UPDATABLE_NOT_SIMULATED: &[&str] = &[
    "displayName",
    "givenName",
    "surname",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "usageLocation",
    "passwordPolicies",
];

/// `PATCH /users/{id}`: accountEnabled and passwordProfile.
/// Source: https://learn.microsoft.com/en-us/graph/api/user-update (204 No Content; updating
/// passwordProfile needs a password; privileged users need a more privileged caller).
fn update_user(inner: &mut Inner, key: &str, body: Option<&Value>, now: DateTime<Utc>) -> Reply {
    let Some(Value::Object(body)) = body else {
        // Assumption: Graph's wording for a PATCH without a JSON object.
        return Reply::error(400, "BadRequest", "Empty Payload. JSON content expected.");
    };
    let Some(index) = inner.find_user(key) else {
        return user_not_found(key);
    };
    let mut account_enabled = None;
    let mut password_profile = None;
    for (name, value) in body {
        match name.as_str() {
            name if name.starts_with('@') => {}
            "accountEnabled" => match value {
                Value::Bool(enabled) => account_enabled = Some(*enabled),
                _ => return invalid_value("accountEnabled"),
            },
            "passwordProfile" => match parse_password_profile(value) {
                Ok(profile) => password_profile = Some(profile),
                Err(reply) => return reply,
            },
            other if UPDATABLE_NOT_SIMULATED.iter().any(|p| p.eq_ignore_ascii_case(other)) => {
                return Reply::error(
                    400,
                    "Request_BadRequest",
                    format!("graph-sim does not simulate updating '{other}' (Microsoft Graph allows it); simulated: accountEnabled, passwordProfile."),
                )
            }
            // Assumption: the directory's wording for a property the user type does not have.
            other => {
                return Reply::error(
                    400,
                    "Request_BadRequest",
                    format!("Property '{other}' does not exist as a declared property or extension property."),
                )
            }
        }
    }
    let user = &inner.users[index];
    let password = password_profile.as_ref().and_then(|p: &PasswordProfile| p.password.clone());
    if password_profile.is_some() && user.on_premises_sync_enabled {
        // Source (message as reported, and a maintainer's "synced user cannot be updated in the cloud"):
        // https://github.com/microsoftgraph/microsoft-graph-docs/issues/7301
        return Reply::error(
            400,
            "Request_BadRequest",
            "Unable to update the specified properties for on-premises mastered Directory Sync objects or objects currently undergoing migration.",
        );
    }
    if user.privileged_role && (account_enabled.is_some() || password.is_some()) {
        // Source: https://learn.microsoft.com/en-us/graph/api/user-update (Permissions: changing
        // accountEnabled or the password of a user with a privileged role needs a more privileged role)
        // and https://learn.microsoft.com/en-us/graph/errors (403 Authorization_RequestDenied).
        return Reply::error(403, "Authorization_RequestDenied", "Insufficient privileges to complete the operation.");
    }
    if let Some(password) = &password {
        if !complex_enough(password) {
            // Source: https://learn.microsoft.com/en-us/entra/identity/authentication/concept-password-ban-bad-combined-policy
            // (8-256 characters, three of: lowercase, uppercase, digits, symbols). Wording: assumption.
            return Reply::error(
                400,
                "Request_BadRequest",
                "The specified password does not comply with password complexity requirements. Please provide a different password.",
            );
        }
    }
    inner.before_write(index);
    if let Some(enabled) = account_enabled {
        inner.set_account_enabled(index, enabled);
    }
    // forceChangePasswordNextSignIn without a password is accepted and changes nothing, as Graph does.
    if password.is_some() {
        inner.users[index].last_password_change = Some(now);
        let id = inner.users[index].id.clone();
        inner.record_change(&id, &["lastPasswordChangeDateTime"]);
    }
    Reply::no_content()
}

#[derive(Debug)]
struct PasswordProfile {
    password: Option<String>,
}

fn parse_password_profile(value: &Value) -> Result<PasswordProfile, Reply> {
    let Value::Object(fields) = value else {
        return Err(invalid_value("passwordProfile"));
    };
    let mut password = None;
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("password", Value::String(text)) => password = Some(text.clone()),
            ("password", Value::Null) => {}
            ("forceChangePasswordNextSignIn" | "forceChangePasswordNextSignInWithMfa", Value::Bool(_)) => {}
            ("password" | "forceChangePasswordNextSignIn" | "forceChangePasswordNextSignInWithMfa", _) => {
                return Err(invalid_value(&format!("passwordProfile.{name}")))
            }
            (other, _) if other.starts_with('@') => {}
            (other, _) => {
                return Err(Reply::error(
                    400,
                    "Request_BadRequest",
                    format!("Property '{other}' does not exist as a declared property or extension property."),
                ))
            }
        }
    }
    Ok(PasswordProfile { password })
}

fn complex_enough(password: &str) -> bool {
    let length = password.chars().count();
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password.chars().any(|c| !c.is_alphanumeric()),
    ];
    (8..=256).contains(&length) && classes.iter().filter(|&&c| c).count() >= 3
}

fn invalid_value(property: &str) -> Reply {
    // Assumption: the directory's wording for a value of the wrong type.
    Reply::error(
        400,
        "Request_BadRequest",
        format!("Invalid value specified for property '{property}' of resource 'User'."),
    )
}

/// `POST /users/{id}/revokeSignInSessions`: 200 with an OData boolean `true` (a documented service quirk:
/// it should be 204), and signInSessionsValidFromDateTime becomes now.
/// Sources: https://learn.microsoft.com/en-us/graph/api/user-revokesigninsessions (example response) and
/// https://learn.microsoft.com/en-us/graph/known-issues ("Revoke sign-in sessions returns wrong HTTP code":
/// treat any 2xx as success).
fn revoke_sign_in_sessions(inner: &mut Inner, key: &str, context: &Context) -> Reply {
    let Some(index) = inner.find_user(key) else {
        return user_not_found(key);
    };
    // A guest signs in at its home tenant: revoking its sessions here does not apply. Source:
    // https://learn.microsoft.com/en-us/graph/api/user-revokesigninsessions (remarks: external
    // users are not affected). Assumption: the request is still answered as a success and
    // signInSessionsValidFromDateTime does not move.
    if inner.users[index].user_type != "Guest" {
        // "There might be a small delay of a few minutes before tokens are revoked" (same page):
        // with replicaLag set, reads may not show it at once.
        inner.before_write(index);
        inner.users[index].sign_in_sessions_valid_from = Some(context.now);
        let id = inner.users[index].id.clone();
        inner.record_change(&id, &["signInSessionsValidFromDateTime"]);
    }
    Reply::json(
        200,
        json!({"@odata.context": format!("{}/{VERSION}/$metadata#Edm.Boolean", context.base), "value": true}),
    )
}

/// `GET /identityProtection/riskyUsers/{id}` (object id only).
/// Source: https://learn.microsoft.com/en-us/graph/api/riskyuser-get
/// Assumption: every user has a riskyUser record (riskState "none" until something happens); the real
/// service may answer 404 for users Identity Protection never looked at.
fn get_risky_user(inner: &Inner, id: &str, context: &Context) -> Reply {
    let Some(index) = inner.find_user_by_id(id) else {
        // Assumption: same 404 shape as for users.
        return Reply::error(404, "ResourceNotFound", format!("Resource '{id}' does not exist."));
    };
    // While a lagging replica has not seen a confirmCompromised yet, the riskyUser says it is
    // being processed. Source: https://learn.microsoft.com/en-us/graph/api/resources/riskyuser
    // (isProcessing: "Indicates whether a user's risky state is being processed by the backend").
    // Assumption: when it is true.
    let (user, lagging) = inner.read_user(index);
    let processing = lagging && user.risk_state != inner.users[index].risk_state;
    let detail = match user.risk_state.as_str() {
        "confirmedCompromised" => "adminConfirmedUserCompromised",
        "none" => "none",
        _ => "unknownFutureValue",
    };
    Reply::json(
        200,
        json!({
            "@odata.context": format!("{}/{VERSION}/$metadata#identityProtection/riskyUsers/$entity", context.base),
            "id": user.id,
            "isDeleted": false,
            "isProcessing": processing,
            "riskLastUpdatedDateTime": user.risk_last_updated.map(odata::fractional),
            "riskLevel": user.risk_level,
            "riskState": user.risk_state,
            "riskDetail": detail,
            "userDisplayName": Value::Null,
            "userPrincipalName": user.user_principal_name,
        }),
    )
}

/// `POST /identityProtection/riskyUsers/confirmCompromised` `{"userIds": [...]}` → 204.
/// Source: https://learn.microsoft.com/en-us/graph/api/riskyuser-confirmcompromised (204 No Content;
/// "sets the targeted user's risk level to high").
fn confirm_compromised(inner: &mut Inner, body: Option<&Value>, now: DateTime<Utc>) -> Reply {
    let ids: Vec<&str> = match body.and_then(|b| b.get("userIds")) {
        Some(Value::Array(ids)) if !ids.is_empty() && ids.iter().all(Value::is_string) => {
            ids.iter().filter_map(Value::as_str).collect()
        }
        _ => {
            return Reply::error(
                400,
                "BadRequest",
                "The request body must contain a non-empty 'userIds' array of user object ids.",
            )
        }
    };
    let mut indices = Vec::new();
    for id in ids {
        match inner.find_user_by_id(id) {
            Some(index) => indices.push(index),
            // Assumption: unknown ids (or userPrincipalNames, which this action does not take) are refused.
            None => {
                return Reply::error(
                    404,
                    "ResourceNotFound",
                    format!("User '{id}' was not found (userIds takes object ids)."),
                )
            }
        }
    }
    for index in indices {
        inner.before_write(index);
        let user = &mut inner.users[index];
        user.risk_state = "confirmedCompromised".to_owned();
        user.risk_level = "high".to_owned();
        user.risk_last_updated = Some(now);
    }
    inner.users_changed();
    Reply::no_content()
}

/// Why a bearer token is refused, in Graph's words (401 InvalidAuthenticationToken).
/// Source: https://learn.microsoft.com/en-us/graph/errors (401; code InvalidAuthenticationToken).
/// Messages: observed Graph wording (assumption).
fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<(), Reply> {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").trim();
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => "",
    };
    let message = if token.is_empty() {
        "Access token is empty."
    } else {
        match inner.tokens.get(token) {
            Some(&expiry) if Instant::now() < expiry => return Ok(()),
            Some(_) => "Lifetime validation failed, the token is expired.",
            None => "Access token validation failure. Invalid audience.",
        }
    };
    Err(Reply::error(401, "InvalidAuthenticationToken", message).with_header(
        "WWW-Authenticate",
        "Bearer realm=\"\", authorization_uri=\"https://login.microsoftonline.com/common/oauth2/authorize\", client_id=\"00000003-0000-0000-c000-000000000000\"",
    ))
}

/// Every request that is not the token endpoint nor `/_sim`: Graph's own door.
pub(crate) async fn gateway(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let arrived = Utc::now();
    let (parts, body) = request.into_parts();
    let request_id = uuid::Uuid::new_v4().to_string();
    let client_request_id = parts
        .headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| parts.uri.path().to_owned());
    let host = parts.headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1");
    let context = Context { base: format!("http://{host}"), now: arrived };

    let bytes = axum::body::to_bytes(body, MAX_BODY).await.unwrap_or_default();
    let (body, body_error) = if bytes.iter().all(u8::is_ascii_whitespace) {
        (None, None)
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(value) => (Some(value), None),
            Err(e) => {
                (None, Some(Reply::error(400, "BadRequest", format!("Unable to read JSON request payload: {e}"))))
            }
        }
    };

    let (log_id, latency) = {
        let mut inner = shared.lock();
        let entry = LoggedRequest {
            at: arrived,
            method: method.clone(),
            path: path.clone(),
            status: 0,
            in_batch: false,
            body: body.clone(),
            retry_after: None,
        };
        (inner.log_arrival(entry), inner.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let authenticated = authenticate(&shared.lock(), &parts.headers);
    let version_prefix = format!("/{VERSION}");
    let mut reply = match (authenticated, body_error) {
        (Err(reply), _) => reply,
        (Ok(()), Some(reply)) => reply,
        (Ok(()), None) => {
            match path.strip_prefix(&version_prefix).filter(|rest| rest.is_empty() || rest.starts_with(['/', '?'])) {
                Some(rest) if rest.split('?').next() == Some("/$batch") && method == "POST" => {
                    crate::batch::run(&shared, body.as_ref(), &context)
                }
                Some(rest) => serve(&shared, &Call { method: &method, target: rest, body: body.as_ref() }, &context),
                None => {
                    let version = path.trim_start_matches('/').split(['/', '?']).next().unwrap_or("");
                    // Assumption: Graph's wording for an unknown version segment.
                    Reply::error(
                        400,
                        "BadRequest",
                        format!("Invalid version: {version}. graph-sim serves /{VERSION} only."),
                    )
                }
            }
        }
    };
    reply.finish_error(Utc::now(), &request_id, &client_request_id);
    shared.lock().log_answer(log_id, reply.status, reply.retry_after());
    tracing::info!(%method, %path, status = reply.status, "graph request");
    into_response(reply, &request_id, &client_request_id)
}

/// A reply as an HTTP response, with the headers Graph puts on every answer.
pub(crate) fn into_response(reply: Reply, request_id: &str, client_request_id: &str) -> Response {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("request-id", request_id)
        .header("client-request-id", client_request_id);
    for (name, value) in &reply.headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            builder = builder.header(name.as_str(), value);
        }
    }
    let body = match &reply.body {
        Some(body) => {
            builder = builder.header("content-type", JSON_CONTENT_TYPE);
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    builder.body(body).unwrap_or_else(|_| Response::new(Body::empty()))
}
