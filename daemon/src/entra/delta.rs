//! Change tracking of users: Graph's delta query (`GET /users/delta`), one round at a time.
//!
//! A round follows every `@odata.nextLink` until the `@odata.deltaLink`, which the caller keeps and
//! starts the next round from. `$select` is given once, in the first request; the links carry it.
//! Sources: https://learn.microsoft.com/graph/delta-query-overview,
//! https://learn.microsoft.com/graph/delta-query-users, https://learn.microsoft.com/graph/api/user-delta.
//!
//! The links are URLs chosen by the server. Each is followed only when it points under the
//! configured Graph URL (same scheme, host, port and version root): a link elsewhere would take the
//! bearer token with it.

use std::collections::BTreeMap;

use reqwest::Url;
use serde::Deserialize;
use serde_json::Value;

use super::error::{graph_error, EntraError};
use super::graph::{GraphRequest, GraphResponse};
use super::http::Endpoints;

/// The user properties a round tracks: only changes to these make a user show (Graph tracks only
/// the selected properties), and Graph returns at least the changed ones of them.
pub const DELTA_SELECT: &str = "id,accountEnabled,onPremisesSyncEnabled,userPrincipalName";

/// Most pages in one round; beyond it the round is abandoned (a server that never ends a round).
pub(crate) const MAX_PAGES: usize = 100_000;

/// Where a round starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaFrom {
    /// From now: no users, only a deltaLink for the next round (`$deltatoken=latest`).
    Latest,
    /// The `@odata.deltaLink` that ended the previous round, as Graph sent it.
    Link(String),
}

/// A user that changed (or was deleted) since the round's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaUser {
    /// The object id.
    pub id: String,
    /// `None` when Graph did not send it: Graph sends "at least the properties that have been
    /// updated", so an absent value means unchanged, not false.
    pub account_enabled: Option<bool>,
    pub on_premises_sync_enabled: Option<bool>,
    pub user_principal_name: Option<String>,
    /// Deleted (`@removed`): soft-deleted (reason `changed`) or permanently (`deleted`).
    pub removed: bool,
}

/// One round's changes, each user once, and the link to start the next round from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRound {
    pub changed: Vec<DeltaUser>,
    pub delta_link: String,
    /// Requests the round took.
    pub pages: usize,
}

/// The first request of a round from now.
pub(crate) fn latest_path() -> String {
    format!("/users/delta?$select={DELTA_SELECT}&$deltatoken=latest")
}

/// The path (relative to the version root) of a link Graph sent, when it points under the
/// configured Graph URL; an error naming only the host otherwise (the link carries a state token,
/// which is not shown either).
pub(crate) fn relative_link(endpoints: &Endpoints, link: &str) -> Result<String, EntraError> {
    let refused = |why: String| EntraError::UntrustedLink { graph_base: endpoints.graph_base.clone(), why };
    let base = Url::parse(&endpoints.graph_base).map_err(|e| refused(format!("the Graph URL does not parse: {e}")))?;
    let url = Url::parse(link).map_err(|_| refused("the link is not an absolute URL".into()))?;
    let same_origin = url.scheme() == base.scheme()
        && url.host_str().map(str::to_ascii_lowercase) == base.host_str().map(str::to_ascii_lowercase)
        && url.port_or_known_default() == base.port_or_known_default();
    if !same_origin {
        return Err(refused(format!(
            "the link points to {}://{}",
            url.scheme(),
            url.host_str().unwrap_or("(no host)")
        )));
    }
    let root = base.path().trim_end_matches('/');
    let rest = url.path().strip_prefix(root).filter(|rest| rest.starts_with('/'));
    let Some(rest) = rest else {
        return Err(refused("the link is outside the Graph version root".into()));
    };
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(refused("the link has credentials or a fragment".into()));
    }
    Ok(match url.query() {
        Some(query) => format!("{rest}?{query}"),
        None => rest.to_owned(),
    })
}

/// Whether an error answer means the state token is no longer usable: 410 Gone (a synchronization
/// reset), or the documented codes `syncStateNotFound` (expired: 7 days for directory objects) and
/// `resyncRequired`. Source: https://learn.microsoft.com/graph/delta-query-overview ("Synchronization
/// reset", "Token duration") and https://learn.microsoft.com/graph/errors ("Code property").
pub(crate) fn expired(response: &GraphResponse, request: &GraphRequest) -> Option<EntraError> {
    let error = graph_error(request.operation(), response.status, &response.body, response.request_id.clone());
    let code = error.code().unwrap_or_default();
    let resync = response.status == 410
        || ((400..500).contains(&response.status)
            && ["syncStateNotFound", "resyncRequired"].iter().any(|c| c.eq_ignore_ascii_case(code)));
    match (resync, error) {
        (true, EntraError::Graph { operation, status, code, message, request_id }) => {
            Some(EntraError::DeltaExpired { operation, status, code, message, request_id })
        }
        _ => None,
    }
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Value>,
    #[serde(default, rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(default, rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// Where a page leads.
pub(crate) enum Next {
    Page(String),
    Done(String),
}

/// Reads one page into `changed` (by object id: a user seen again replaces what was seen before,
/// keeping values the later entry does not repeat) and says where the round goes next.
pub(crate) fn read_page(
    body: Value,
    request: &GraphRequest,
    changed: &mut BTreeMap<String, DeltaUser>,
    order: &mut Vec<String>,
) -> Result<Next, EntraError> {
    let decode = |message: String| EntraError::Decode { operation: request.operation(), message };
    let page: Page = serde_json::from_value(body).map_err(|e| decode(format!("not a delta page: {e}")))?;
    for item in page.value {
        let Some(id) = item.get("id").and_then(Value::as_str).map(str::to_owned) else {
            return Err(decode("a delta entry without an id".into()));
        };
        let user = DeltaUser {
            id: id.clone(),
            account_enabled: item.get("accountEnabled").and_then(Value::as_bool),
            on_premises_sync_enabled: item.get("onPremisesSyncEnabled").and_then(Value::as_bool),
            user_principal_name: item.get("userPrincipalName").and_then(Value::as_str).map(str::to_owned),
            removed: item.get("@removed").is_some(),
        };
        let key = id.to_ascii_lowercase();
        match changed.get_mut(&key) {
            Some(seen) => {
                // Graph may list one user more than once in a round (replays); the later is newer.
                *seen = DeltaUser {
                    account_enabled: user.account_enabled.or(seen.account_enabled).filter(|_| !user.removed),
                    on_premises_sync_enabled: user.on_premises_sync_enabled.or(seen.on_premises_sync_enabled),
                    user_principal_name: user.user_principal_name.or(seen.user_principal_name.take()),
                    ..user
                };
            }
            None => {
                order.push(key.clone());
                changed.insert(key, user);
            }
        }
    }
    match (page.next_link, page.delta_link) {
        (Some(next), _) => Ok(Next::Page(next)),
        (None, Some(delta)) => Ok(Next::Done(delta)),
        (None, None) => Err(decode("a delta page with neither @odata.nextLink nor @odata.deltaLink".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn endpoints(graph: &str) -> Endpoints {
        Endpoints { token_url: String::new(), graph_base: graph.into(), scope: String::new() }
    }

    #[test]
    fn links_are_followed_only_under_the_graph_url() {
        let graph = endpoints("https://graph.microsoft.com/v1.0");
        assert_eq!(
            relative_link(&graph, "https://GRAPH.microsoft.com/v1.0/users/delta?$deltatoken=abc").unwrap(),
            "/users/delta?$deltatoken=abc"
        );
        assert_eq!(
            relative_link(&graph, "https://graph.microsoft.com:443/v1.0/users/delta").unwrap(),
            "/users/delta",
            "the default port is the same origin"
        );
        for elsewhere in [
            "https://evil.example/v1.0/users/delta?$deltatoken=abc",
            "http://graph.microsoft.com/v1.0/users/delta",
            "https://graph.microsoft.com:8443/v1.0/users/delta",
            "https://graph.microsoft.com/beta/users/delta",
            "https://graph.microsoft.com/v1.0evil/users/delta",
            "https://graph.microsoft.com.evil.example/v1.0/users/delta",
            "https://user:pw@graph.microsoft.com/v1.0/users/delta",
            "/v1.0/users/delta",
        ] {
            let error = relative_link(&graph, elsewhere).unwrap_err();
            assert!(matches!(error, EntraError::UntrustedLink { .. }), "{elsewhere}: {error}");
            assert!(!error.to_string().contains("deltatoken"), "the token is not shown: {error}");
            assert!(!error.is_transient());
        }
    }

    #[test]
    fn expiry_is_410_or_the_documented_codes() {
        let request = GraphRequest::get("/users/delta?$deltatoken=x".into());
        let answer = |status, code: &str| GraphResponse {
            status,
            body: json!({"error": {"code": code, "message": "m"}}),
            request_id: Some("r".into()),
            sent_at: chrono::Utc::now(),
        };
        for (status, code) in [(400, "syncStateNotFound"), (410, "resyncRequired"), (410, ""), (400, "resyncRequired")]
        {
            let error = expired(&answer(status, code), &request).unwrap();
            assert!(!error.is_transient(), "never retried blindly");
            assert!(error.to_string().contains("full resync"), "{error}");
            assert!(!error.to_string().contains("deltatoken"), "{error}");
        }
        assert!(expired(&answer(400, "Request_BadRequest"), &request).is_none());
        assert!(expired(&answer(503, "syncStateNotFound"), &request).is_none());
    }

    #[test]
    fn pages_collapse_replays_and_keep_what_is_not_repeated() {
        let request = GraphRequest::get(latest_path());
        let (mut changed, mut order) = (BTreeMap::new(), Vec::new());
        let first = json!({"@odata.nextLink": "n", "value": [
            {"id": "A", "accountEnabled": false, "userPrincipalName": "a@x.test"},
            {"id": "b", "@removed": {"reason": "changed"}},
        ]});
        assert!(matches!(read_page(first, &request, &mut changed, &mut order).unwrap(), Next::Page(l) if l == "n"));
        let second = json!({"@odata.deltaLink": "d", "value": [{"id": "a", "accountEnabled": true}]});
        assert!(matches!(read_page(second, &request, &mut changed, &mut order).unwrap(), Next::Done(l) if l == "d"));
        assert_eq!(order, ["a", "b"]);
        assert_eq!(changed["a"].account_enabled, Some(true));
        assert_eq!(changed["a"].user_principal_name.as_deref(), Some("a@x.test"));
        assert!(changed["b"].removed);
        let neither = json!({"value": []});
        assert!(read_page(neither, &request, &mut changed, &mut order).is_err());
    }
}
