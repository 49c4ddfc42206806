//! What can go wrong talking to Entra ID, classified for the controller's error policy.
//!
//! Graph's own words are kept: the HTTP status, the OData error `code` (what the classification
//! branches on, never the message), the `message`, and the `request-id` that Microsoft support asks
//! for. No variant ever holds the client secret or an access token (the token endpoint's text is
//! scrubbed of the secret before it is stored, see [`scrub`]).

use std::fmt;
use std::time::Duration;

use remedy_policies::Action;
use serde::Deserialize;

/// Errors of the Entra ID provider.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EntraError {
    /// The configuration cannot work (unreadable secret or CA file, a URL that is not HTTPS).
    /// Fixed by an operator, not by waiting.
    #[error("Entra ID configuration: {0}")]
    Config(String),

    /// The token endpoint refused to issue a token (`invalid_client`: wrong or expired secret,
    /// a certificate or federated token it does not accept, `unauthorized_client`, unknown
    /// tenant, ...) or could not answer. `fix` says what to do, when remedy knows (by the AADSTS
    /// number and the credential in use).
    #[error("token request to {url} failed: HTTP {status} {code}: {description}{}{}", trace_suffix(trace_id.as_deref()), fix_suffix(fix.as_deref()))]
    Token { url: String, status: u16, code: String, description: String, trace_id: Option<String>, fix: Option<String> },

    /// Microsoft Graph answered a request with an error.
    #[error("{operation}: HTTP {status} {}: {message}{}", code_text(code), request_suffix(request_id.as_deref()))]
    Graph { operation: String, status: u16, code: String, message: String, request_id: Option<String> },

    /// The service could not be reached or the connection broke.
    #[error("cannot reach {url}: {message}")]
    Connection { url: String, message: String },

    /// A request took longer than `requestTimeout`.
    #[error("{operation} timed out after {}ms", after.as_millis())]
    Timeout { operation: String, after: Duration },

    /// Throttling or server errors went on for longer than the retry budget allows. `last` is the
    /// last answer seen.
    #[error("{operation}: gave up after {attempts} attempt(s) in {}s (retry budget spent): {last}", elapsed.as_secs())]
    RetryBudgetExhausted { operation: String, attempts: u32, elapsed: Duration, last: Box<EntraError> },

    /// Graph accepted the write (2xx) but the user's reads do not show its effect yet. Entra ID is
    /// eventually consistent (a read right after a write may reach a replica that has not seen
    /// it; a revocation may take minutes): the write is trusted as sent and awaits confirmation by
    /// a later read, never sent again meanwhile. Not a failure; whether it ever shows is decided
    /// by the controller against the confirmation deadline.
    #[error("{action} on {upn} ({id}) was accepted by Graph at {} and is not visible in its reads yet: {reason}", sent_at.to_rfc3339())]
    NotVisibleYet { id: String, upn: String, action: Action, reason: String, sent_at: chrono::DateTime<chrono::Utc> },

    /// The action does not apply to this user, so it is not sent (revoking a guest's sessions:
    /// a guest signs in at its home tenant).
    #[error("{action} on {upn} ({id}) is not applicable: {reason}")]
    NotApplicable { id: String, upn: String, action: Action, reason: String },

    /// Graph sent something remedy cannot read.
    #[error("{operation}: cannot read Graph's answer: {message}")]
    Decode { operation: String, message: String },

    /// A delta query's state token is expired or unknown to Graph (400 `syncStateNotFound`,
    /// `resyncRequired`, or 410 Gone): the changes since that token cannot be had. Permanent: the
    /// same link never works again; the caller reads every user afresh and starts a new round.
    #[error("{operation}: HTTP {status} {}: {message}{}: the delta link is expired or unknown to Graph, so the changes since it are lost; a full resync is needed (read every user again, then track changes from a new round)", code_text(code), request_suffix(request_id.as_deref()))]
    DeltaExpired { operation: String, status: u16, code: String, message: String, request_id: Option<String> },

    /// Graph sent a link (nextLink, deltaLink) that does not point under the configured Graph URL.
    /// It is not followed: the request would carry the access token there.
    #[error("a link from Graph was not followed ({why}): only links under the configured Graph URL {graph_base} are, as a request elsewhere would carry the access token there")]
    UntrustedLink { graph_base: String, why: String },

    /// The action is not an Entra ID action.
    #[error("{0} is not an Entra ID action")]
    NotAnEntraAction(Action),
}

fn code_text(code: &str) -> &str {
    if code.is_empty() {
        "(no error code)"
    } else {
        code
    }
}

fn request_suffix(request_id: Option<&str>) -> String {
    request_id.map(|id| format!(" (request-id {id})")).unwrap_or_default()
}

fn fix_suffix(fix: Option<&str>) -> String {
    fix.map(|fix| format!(". To fix: {fix}")).unwrap_or_default()
}

fn trace_suffix(trace_id: Option<&str>) -> String {
    trace_id.map(|id| format!(" (trace id {id})")).unwrap_or_default()
}

/// HTTP statuses after which the same request may succeed later without anyone changing anything.
pub(crate) fn retryable_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500 | 502 | 503 | 504 | 509)
}

impl EntraError {
    /// True when trying again later may succeed without anyone changing anything: throttling,
    /// a busy or failing service, a broken connection, a timeout. False for what needs a person:
    /// permissions (403 `Authorization_RequestDenied`), credentials (`invalid_client`, a 401 that
    /// a fresh token did not cure), a missing user (404), a malformed request (400), configuration,
    /// and a write that Graph accepted but did not make effective.
    pub fn is_transient(&self) -> bool {
        match self {
            EntraError::Connection { .. } | EntraError::Timeout { .. } | EntraError::RetryBudgetExhausted { .. } => {
                true
            }
            EntraError::Graph { status, code, .. } => {
                retryable_status(*status)
                    || (*status == 409 && code == "Directory_ConcurrencyViolation")
                    // A read answered 202 Accepted without the resource: reading again may work.
                    || *status == 202
            }
            EntraError::Token { status, code, .. } => {
                retryable_status(*status) || code == "temporarily_unavailable" || code == "server_error"
            }
            EntraError::Config(_)
            | EntraError::DeltaExpired { .. }
            | EntraError::UntrustedLink { .. }
            | EntraError::NotVisibleYet { .. }
            | EntraError::NotApplicable { .. }
            | EntraError::Decode { .. }
            | EntraError::NotAnEntraAction(_) => false,
        }
    }

    /// Graph's OData error code (`Authorization_RequestDenied`, `Request_ResourceNotFound`, ...)
    /// or the token endpoint's OAuth error (`invalid_client`), when there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            EntraError::Graph { code, .. } | EntraError::Token { code, .. } | EntraError::DeltaExpired { code, .. } => {
                Some(code)
            }
            EntraError::RetryBudgetExhausted { last, .. } => last.code(),
            _ => None,
        }
    }

    /// The HTTP status of the answer, when there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            EntraError::Graph { status, .. }
            | EntraError::Token { status, .. }
            | EntraError::DeltaExpired { status, .. } => Some(*status),
            EntraError::RetryBudgetExhausted { last, .. } => last.status(),
            _ => None,
        }
    }

    /// Graph's `request-id` (or the token endpoint's trace id), for Microsoft support.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            EntraError::Graph { request_id, .. } | EntraError::DeltaExpired { request_id, .. } => request_id.as_deref(),
            EntraError::Token { trace_id, .. } => trace_id.as_deref(),
            EntraError::RetryBudgetExhausted { last, .. } => last.request_id(),
            _ => None,
        }
    }
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {"request-id", "date"}}}`.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ODataErrorBody {
    #[serde(default)]
    pub error: ODataError,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ODataError {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, rename = "innerError", alias = "innererror")]
    pub inner_error: Option<InnerError>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct InnerError {
    #[serde(default, rename = "request-id")]
    pub request_id: Option<String>,
}

/// Microsoft Entra ID P2: what the riskyUsers API needs.
pub(crate) const P2_LICENCE_HINT: &str = "Identity Protection's riskyUsers API needs a Microsoft Entra ID P2 licence in the tenant (and the application permission IdentityRiskyUser.Read.All, or IdentityRiskyUser.ReadWrite.All to confirm a compromise): without the licence Graph refuses every riskyUsers request";

/// Builds a [`EntraError::Graph`] from an error answer. `header_request_id` is the `request-id`
/// response header (or sub-response header inside `$batch`), used when the body has none.
pub(crate) fn graph_error(
    operation: String,
    status: u16,
    body: &serde_json::Value,
    header_request_id: Option<String>,
) -> EntraError {
    let parsed = ODataErrorBody::deserialize(body).unwrap_or_default().error;
    let request_id = parsed.inner_error.and_then(|inner| inner.request_id).or(header_request_id);
    let message = if parsed.message.is_empty() && !body.is_null() && parsed.code.is_empty() {
        // Not an OData error (a proxy's page, say): keep a bounded piece of it.
        truncate(&body.to_string(), 300)
    } else {
        parsed.message
    };
    // A 403 from Identity Protection is usually a tenant without Entra ID P2 (or a missing
    // permission); Graph's own words do not say so plainly, so the error does.
    let message = if status == 403 && operation.contains("/identityProtection/") {
        format!("{message} ({P2_LICENCE_HINT})")
    } else {
        message
    };
    EntraError::Graph { operation, status, code: parsed.code, message, request_id }
}

pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// Replaces every occurrence of `secret` in `text`. Used on what the token endpoint says before it
/// is kept in an error, so that an endpoint echoing the request can't leak the client secret.
pub(crate) fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    text.replace(secret, "[redacted]")
}

/// The error of one reqwest call, classified.
pub(crate) fn transport_error(operation: &str, url: &str, error: &reqwest::Error, timeout: Duration) -> EntraError {
    if error.is_timeout() {
        return EntraError::Timeout { operation: operation.to_owned(), after: timeout };
    }
    if error.is_builder() {
        return EntraError::Config(format!("{operation}: {}", chain(error)));
    }
    if error.is_decode() {
        return EntraError::Decode { operation: operation.to_owned(), message: chain(error) };
    }
    EntraError::Connection { url: url.to_owned(), message: chain(error) }
}

/// An error and its sources on one line ("error sending request: connection refused").
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}

/// Shown in logs for an error's code, as `-` when there is none.
pub(crate) struct CodeField<'a>(pub Option<&'a str>);

impl fmt::Display for CodeField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.filter(|c| !c.is_empty()).unwrap_or("-"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(status: u16, code: &str) -> EntraError {
        EntraError::Graph {
            operation: "PATCH /users/1".into(),
            status,
            code: code.into(),
            message: "text".into(),
            request_id: Some("r-1".into()),
        }
    }

    #[test]
    fn classification_follows_status_and_code() {
        for (status, code) in [
            (400, "Request_BadRequest"),
            (401, "InvalidAuthenticationToken"),
            (403, "Authorization_RequestDenied"),
            (404, "Request_ResourceNotFound"),
            (409, "Request_MultipleObjectsWithSameKeyValue"),
        ] {
            assert!(!graph(status, code).is_transient(), "{status} {code} must be permanent");
        }
        for (status, code) in
            [(429, "TooManyRequests"), (503, "serviceNotAvailable"), (504, ""), (409, "Directory_ConcurrencyViolation")]
        {
            assert!(graph(status, code).is_transient(), "{status} {code} must be transient");
        }
        let token = |status, code: &str| EntraError::Token {
            url: "https://login.microsoftonline.com/t/oauth2/v2.0/token".into(),
            status,
            code: code.into(),
            description: "AADSTS7000215: Invalid client secret provided.".into(),
            trace_id: None,
            fix: None,
        };
        assert!(!token(401, "invalid_client").is_transient());
        assert!(!token(400, "unauthorized_client").is_transient());
        assert!(token(503, "temporarily_unavailable").is_transient());
        let exhausted = EntraError::RetryBudgetExhausted {
            operation: "$batch".into(),
            attempts: 8,
            elapsed: Duration::from_secs(61),
            last: Box::new(graph(429, "TooManyRequests")),
        };
        assert!(exhausted.is_transient());
        assert_eq!(exhausted.code(), Some("TooManyRequests"));
        assert_eq!(exhausted.request_id(), Some("r-1"));
    }

    #[test]
    fn graph_words_are_kept() {
        let body = serde_json::json!({"error": {"code": "Authorization_RequestDenied", "message": "Insufficient privileges to complete the operation.", "innerError": {"request-id": "93b6f17e", "date": "2025-02-13T10:17:06"}}});
        let error = graph_error("PATCH /users/abc".into(), 403, &body, Some("header-id".into()));
        assert_eq!(error.code(), Some("Authorization_RequestDenied"));
        assert_eq!(error.request_id(), Some("93b6f17e"));
        assert_eq!(
            error.to_string(),
            "PATCH /users/abc: HTTP 403 Authorization_RequestDenied: Insufficient privileges to complete the operation. (request-id 93b6f17e)"
        );
        let bare = graph_error(
            "GET /users/x".into(),
            502,
            &serde_json::Value::String("<html>bad gateway</html>".into()),
            Some("h".into()),
        );
        assert_eq!(bare.request_id(), Some("h"));
        assert!(bare.to_string().contains("bad gateway"), "{bare}");
    }

    #[test]
    fn a_refused_risky_user_read_names_the_licence() {
        let body = serde_json::json!({"error": {"code": "Authentication_RequestFromNonPremiumTenantOrB2CTenant", "message": "Neither tenant is B2C or tenant doesn't have premium license"}});
        let error = graph_error("GET /identityProtection/riskyUsers/1".into(), 403, &body, None);
        assert!(error.to_string().contains("needs a Microsoft Entra ID P2 licence"), "{error}");
        assert!(!error.is_transient());
        let users = graph_error("PATCH /users/1".into(), 403, &body, None);
        assert!(!users.to_string().contains("P2"), "{users}");
    }

    #[test]
    fn scrub_removes_the_secret() {
        assert_eq!(
            scrub("client_secret=s3cr3t was wrong (s3cr3t)", "s3cr3t"),
            "client_secret=[redacted] was wrong ([redacted])"
        );
        assert_eq!(truncate("ééé", 3), "é...");
    }
}
