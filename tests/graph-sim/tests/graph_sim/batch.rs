//! $batch.

use std::time::Duration;

use remedy_graph_sim::{SimConfig, Throttle};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

fn by_id(answer: &Answer) -> std::collections::HashMap<String, Value> {
    answer.body["responses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

#[tokio::test]
async fn twenty_requests_in_one_batch() {
    let env = start(config()).await;
    let requests: Vec<Value> = (0..20)
        .map(|n| {
            let user = if n % 2 == 0 { CLOUD } else { "staff0042@remedy.test" };
            json!({"id": n.to_string(), "method": "GET", "url": format!("/users/{user}?$select=id,accountEnabled")})
        })
        .collect();
    let answer = env.call(Method::POST, "/v1.0/$batch", Some(json!({"requests": requests}))).await;
    assert_eq!(answer.status, 200);
    let responses = by_id(&answer);
    assert_eq!(responses.len(), 20);
    assert_eq!(responses["0"]["status"], 200);
    assert_eq!(responses["0"]["body"]["id"], CLOUD);
    assert_eq!(responses["1"]["body"]["id"], SYNCED);
    assert!(responses["1"]["headers"]["Content-Type"].as_str().unwrap().starts_with("application/json"));

    let log = env.sim.log();
    let batched: Vec<_> = log.iter().filter(|r| r.in_batch).collect();
    assert_eq!(batched.len(), 20);
    assert!(batched.iter().all(|r| r.path.starts_with("/v1.0/users/") && r.status == 200));
    let envelope = log.iter().position(|r| r.path == "/v1.0/$batch").unwrap();
    assert!(log.iter().position(|r| r.in_batch).unwrap() > envelope, "arrival order");

    let too_many: Vec<Value> =
        (0..21).map(|n| json!({"id": n.to_string(), "method": "GET", "url": "/users"})).collect();
    let refused = env.call(Method::POST, "/v1.0/$batch", Some(json!({"requests": too_many}))).await;
    assert_eq!(refused.status, 400);
    assert_odata_error(&refused.body, Some("BadRequest"));
}

#[tokio::test]
async fn depends_on_orders_requests_and_fails_dependents_with_424() {
    let env = start(config()).await;
    let body = json!({"requests": [
        {"id": "disable", "method": "PATCH", "url": format!("/users/{CLOUD}"), "headers": {"Content-Type": "application/json"}, "body": {"accountEnabled": false}},
        {"id": "revoke", "method": "POST", "url": format!("/users/{CLOUD}/revokeSignInSessions"), "dependsOn": ["disable"]},
        {"id": "missing", "method": "PATCH", "url": "/users/nobody@remedy.test", "headers": {"Content-Type": "application/json"}, "body": {"accountEnabled": false}},
        {"id": "after-missing", "method": "POST", "url": "/users/nobody@remedy.test/revokeSignInSessions", "dependsOn": ["missing"]},
        {"id": "after-that", "method": "GET", "url": "users?$select=id", "dependsOn": ["after-missing"]},
    ]});
    let answer = env.call(Method::POST, "/v1.0/$batch", Some(body)).await;
    assert_eq!(answer.status, 200);
    let responses = by_id(&answer);
    assert_eq!(responses["disable"]["status"], 204);
    assert_eq!(responses["revoke"]["status"], 200);
    assert_eq!(responses["revoke"]["body"]["value"], true);
    assert_eq!(responses["missing"]["status"], 404);
    assert_odata_error(&responses["missing"]["body"], Some("Request_ResourceNotFound"));
    assert_eq!(responses["after-missing"]["status"], 424);
    assert_eq!(responses["after-that"]["status"], 424, "failure propagates down the chain");
    let user = env.sim.user(CLOUD).unwrap();
    assert!(!user.account_enabled && user.sign_in_sessions_valid_from.is_some());

    let paths: Vec<String> = env.sim.log().into_iter().filter(|r| r.in_batch).map(|r| r.path).collect();
    let disable = paths.iter().position(|p| p == &format!("/v1.0/users/{CLOUD}")).unwrap();
    let revoke = paths.iter().position(|p| p.ends_with("revokeSignInSessions") && p.contains(CLOUD)).unwrap();
    assert!(disable < revoke);
    assert_eq!(paths.len(), 3, "424s are not run: {paths:?}");

    let duplicate = json!({"requests": [{"id": "a", "method": "GET", "url": "/users"}, {"id": "A", "method": "GET", "url": "/users"}]});
    assert_eq!(env.call(Method::POST, "/v1.0/$batch", Some(duplicate)).await.status, 400);
    let no_content_type = json!({"requests": [{"id": "a", "method": "PATCH", "url": format!("/users/{CLOUD}"), "body": {"accountEnabled": true}}]});
    assert_eq!(env.call(Method::POST, "/v1.0/$batch", Some(no_content_type)).await.status, 400);
}

#[tokio::test]
async fn sub_requests_are_throttled_one_by_one() {
    let throttle = Throttle { budget: 3, window: Duration::from_secs(60), retry_after: Duration::from_secs(7) };
    let env = start(SimConfig { throttle: Some(throttle), ..config() }).await;
    let requests: Vec<Value> =
        (0..5).map(|n| json!({"id": format!("r{n}"), "method": "GET", "url": format!("/users/{CLOUD}")})).collect();
    let answer = env.call(Method::POST, "/v1.0/$batch", Some(json!({"requests": requests}))).await;
    assert_eq!(answer.status, 200, "the batch itself is not throttled");
    let responses = by_id(&answer);
    let throttled: Vec<&Value> = responses.values().filter(|r| r["status"] == 429).collect();
    assert_eq!(throttled.len(), 2);
    assert_eq!(responses.values().filter(|r| r["status"] == 200).count(), 3);
    for response in throttled {
        assert_eq!(response["headers"]["Retry-After"], "7");
        assert_odata_error(&response["body"], Some("TooManyRequests"));
        assert_eq!(response["body"]["error"]["innerError"]["status"], "429", "the documented sample's fields");
    }
    let logged: Vec<_> = env.sim.log().into_iter().filter(|r| r.status == 429).collect();
    assert!(logged.iter().all(|r| r.in_batch && r.retry_after == Some(7)));

    let plain = env.get(&format!("/v1.0/users/{CLOUD}")).await;
    assert_eq!(plain.status, 429);
    assert_eq!(plain.header("retry-after"), Some("7"));
}
