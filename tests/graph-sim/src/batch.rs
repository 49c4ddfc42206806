//! `POST /v1.0/$batch`: JSON batching.
//!
//! Source for everything here unless marked: https://learn.microsoft.com/en-us/graph/json-batching
//! (at most 20 requests; unique `id`s; `url` relative to the version; `headers` must carry Content-Type
//! when a `body` is given; `dependsOn` orders execution and a failed dependency fails its dependents with
//! 424; responses may come back in any order; each sub-request is throttled on its own and a throttled
//! one answers 429 with its own `Retry-After` header while the batch itself answers 200; see also
//! https://learn.microsoft.com/en-us/graph/throttling#throttling-and-batching).

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use serde_json::{json, Map, Value};

use crate::graph::{self, Call, Context, VERSION};
use crate::model::LoggedRequest;
use crate::odata::{Reply, JSON_CONTENT_TYPE};
use crate::state::Shared;

/// Documented limit of requests in one batch.
pub(crate) const MAX_REQUESTS: usize = 20;

#[derive(Debug)]
struct SubRequest {
    id: String,
    method: String,
    url: String,
    headers: Map<String, Value>,
    body: Option<Value>,
    depends_on: Vec<String>,
}

fn bad_batch(message: impl Into<String>) -> Reply {
    Reply::error(400, "BadRequest", message)
}

fn parse(body: Option<&Value>) -> Result<Vec<SubRequest>, Reply> {
    let Some(Value::Array(requests)) = body.and_then(|b| b.get("requests")) else {
        // Assumption: wording.
        return Err(bad_batch("Invalid batch payload format: a JSON object with a 'requests' array is required."));
    };
    if requests.len() > MAX_REQUESTS {
        // Documented limit; the message is Graph's observed wording (assumption).
        return Err(bad_batch(format!(
            "Invalid batch payload format. The number of requests in a batch cannot exceed {MAX_REQUESTS}."
        )));
    }
    if requests.is_empty() {
        return Err(bad_batch("Invalid batch payload format: the 'requests' array is empty."));
    }
    let mut parsed = Vec::new();
    let mut ids = HashSet::new();
    for (index, request) in requests.iter().enumerate() {
        let text = |name: &str| request.get(name).and_then(Value::as_str).map(str::to_owned);
        let (Some(id), Some(method), Some(url)) = (text("id"), text("method"), text("url")) else {
            return Err(bad_batch(format!(
                "Invalid batch payload format: requests[{index}] needs string 'id', 'method' and 'url'."
            )));
        };
        if !ids.insert(id.to_ascii_lowercase()) {
            return Err(bad_batch(format!("Invalid batch payload format: request id '{id}' is used more than once.")));
        }
        let headers = match request.get("headers") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(headers)) => headers.clone(),
            Some(_) => {
                return Err(bad_batch(format!(
                    "Invalid batch payload format: request '{id}' has non-object 'headers'."
                )))
            }
        };
        let body = request.get("body").filter(|b| !b.is_null()).cloned();
        if body.is_some() && !headers.keys().any(|name| name.eq_ignore_ascii_case("content-type")) {
            return Err(bad_batch(format!(
                "Invalid batch payload format: request '{id}' has a body but no Content-Type header."
            )));
        }
        let depends_on = match request.get("dependsOn") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ids)) if ids.iter().all(Value::is_string) => {
                ids.iter().filter_map(Value::as_str).map(str::to_owned).collect()
            }
            Some(_) => {
                return Err(bad_batch(format!(
                    "Invalid batch payload format: request '{id}' has a malformed 'dependsOn'."
                )))
            }
        };
        if url.starts_with("http://") || url.starts_with("https://") {
            return Err(bad_batch(format!(
                "Invalid batch payload format: request '{id}' has an absolute url; use one relative to /{VERSION}."
            )));
        }
        parsed.push(SubRequest { id, method, url, headers, body, depends_on });
    }
    for request in &parsed {
        for dependency in &request.depends_on {
            if !ids.contains(&dependency.to_ascii_lowercase()) {
                return Err(bad_batch(format!(
                    "Invalid batch payload format: request '{}' depends on unknown request '{dependency}'.",
                    request.id
                )));
            }
        }
    }
    Ok(parsed)
}

/// Runs a batch (already authenticated; latency already paid once for the HTTP request).
pub(crate) fn run(shared: &Shared, body: Option<&Value>, context: &Context) -> Reply {
    if let Some(retry_after) = shared.lock().take_batch_throttle() {
        // The batch itself throttled (Fault::BatchThrottle): nothing in it is run.
        return crate::state::too_many_requests(retry_after);
    }
    let requests = match parse(body) {
        Ok(requests) => requests,
        Err(reply) => return reply,
    };
    let mut statuses: HashMap<String, u16> = HashMap::new();
    let mut responses = Vec::new();
    while statuses.len() < requests.len() {
        let ready = requests.iter().find(|r| {
            !statuses.contains_key(&r.id.to_ascii_lowercase())
                && r.depends_on.iter().all(|d| statuses.contains_key(&d.to_ascii_lowercase()))
        });
        let Some(request) = ready else {
            return bad_batch("Invalid batch payload format: the dependsOn chain has a cycle.");
        };
        let failed_dependency = request
            .depends_on
            .iter()
            .any(|d| statuses.get(&d.to_ascii_lowercase()).is_some_and(|s| !(200..300).contains(s)));
        let reply = if failed_dependency {
            // Assumption: code and wording of the 424 body.
            Reply::error(424, "FailedDependency", "The request was not run because a request it depends on failed.")
        } else {
            run_one(shared, request, context)
        };
        statuses.insert(request.id.to_ascii_lowercase(), reply.status);
        responses.push(sub_response(&request.id, reply));
    }
    // Graph answers in whatever order it finished; clients must match responses by id.
    fastrand::shuffle(&mut responses);
    Reply::json(200, json!({ "responses": responses }))
}

fn run_one(shared: &Shared, request: &SubRequest, context: &Context) -> Reply {
    let target = if request.url.starts_with('/') { request.url.clone() } else { format!("/{}", request.url) };
    let log_id = shared.lock().log_arrival(LoggedRequest {
        at: Utc::now(),
        method: request.method.to_ascii_uppercase(),
        path: format!("/{VERSION}{target}"),
        status: 0,
        in_batch: true,
        body: request.body.clone(),
        retry_after: None,
    });
    let call = Call { method: &request.method, target: &target, body: request.body.as_ref() };
    let mut reply = graph::serve(shared, &call, context);
    let client_request_id = request
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("client-request-id"))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    reply.finish_error(Utc::now(), &uuid::Uuid::new_v4().to_string(), &client_request_id);
    shared.lock().log_answer(log_id, reply.status, reply.retry_after());
    reply
}

fn sub_response(id: &str, reply: Reply) -> Value {
    let mut headers = Map::new();
    for (name, value) in &reply.headers {
        if !name.eq_ignore_ascii_case("WWW-Authenticate") {
            headers.insert(name.clone(), json!(value));
        }
    }
    headers.insert("Cache-Control".into(), json!("no-cache"));
    if reply.body.is_some() {
        headers.insert("Content-Type".into(), json!(JSON_CONTENT_TYPE));
    }
    let mut response = Map::new();
    response.insert("id".into(), json!(id));
    response.insert("status".into(), json!(reply.status));
    response.insert("headers".into(), Value::Object(headers));
    if let Some(body) = reply.body {
        response.insert("body".into(), body);
    }
    Value::Object(response)
}
