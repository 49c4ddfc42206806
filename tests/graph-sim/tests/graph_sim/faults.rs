//! Injected faults, the general budget, latency and the /_sim control endpoints.

use std::time::{Duration, Instant};

use remedy_graph_sim::{Fault, SimConfig, Throttle};
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn injected_503_then_recovery() {
    let env = start(config()).await;
    env.sim.inject(Fault::Status { status: 503, count: 2 });
    env.sim.inject(Fault::Throttle { count: 1, retry_after: Duration::from_millis(1500) });
    let path = format!("/v1.0/users/{CLOUD}");
    for _ in 0..2 {
        let answer = env.get(&path).await;
        assert_eq!(answer.status, 503);
        assert_odata_error(&answer.body, Some("serviceNotAvailable"));
    }
    let throttled = env.get(&path).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("2"), "whole seconds, rounded up");
    assert_odata_error(&throttled.body, Some("TooManyRequests"));
    assert_eq!(env.get(&path).await.status, 200);
    let statuses: Vec<u16> = env.sim.log().iter().filter(|r| r.path == path).map(|r| r.status).collect();
    assert_eq!(statuses, [503, 503, 429, 200]);
}

#[tokio::test]
async fn general_budget_answers_429_with_retry_after() {
    let throttle = Throttle { budget: 2, window: Duration::from_secs(1), retry_after: Duration::from_secs(1) };
    let env = start(SimConfig { throttle: Some(throttle), ..config() }).await;
    let path = format!("/v1.0/users/{CLOUD}");
    assert_eq!(env.get(&path).await.status, 200);
    assert_eq!(env.get(&path).await.status, 200);
    let third = env.get(&path).await;
    assert_eq!(third.status, 429);
    assert_eq!(third.header("retry-after"), Some("1"));
    tokio::time::sleep(Duration::from_millis(1050)).await;
    assert_eq!(env.get(&path).await.status, 200, "the window moved on");
}

#[tokio::test]
async fn latency_is_added_once_per_http_request() {
    let env = start(config()).await;
    env.sim.inject(Fault::Latency(Duration::from_millis(300)));
    env.sim.clear_log();
    let started = Instant::now();
    let requests: Vec<Value> =
        (0..5).map(|n| json!({"id": n.to_string(), "method": "GET", "url": "/users?$top=1"})).collect();
    assert_eq!(env.call(Method::POST, "/v1.0/$batch", Some(json!({"requests": requests}))).await.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The envelope waits once; its sub-requests then run back to back.
    let log = env.sim.log();
    let subs: Vec<_> = log.iter().filter(|r| r.in_batch).collect();
    assert!((subs[0].at - log[0].at).to_std().unwrap() >= Duration::from_millis(300));
    assert!((subs[4].at - subs[0].at).to_std().unwrap() < Duration::from_millis(300), "{log:?}");
}

#[tokio::test]
async fn sim_endpoints_inspect_and_steer() {
    let env = start(config()).await;
    let url = env.sim.url();
    let http = &env.http;

    let state: Vec<Value> = http.get(format!("{url}/_sim/state")).send().await.unwrap().json().await.unwrap();
    let upns: Vec<&str> = state.iter().map(|u| u["userPrincipalName"].as_str().unwrap()).collect();
    let mut sorted = upns.clone();
    sorted.sort();
    assert_eq!(upns, sorted);

    let fault = http
        .post(format!("{url}/_sim/faults"))
        .json(&json!({"status": {"status": 504, "count": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), 204);
    assert_eq!(env.get(&format!("/v1.0/users/{CLOUD}")).await.status, 504);

    let patch = env.call(Method::PATCH, &format!("/v1.0/users/{SYNCED}"), Some(json!({"accountEnabled": false}))).await;
    assert_eq!(patch.status, 204);
    let on_premises = http
        .post(format!("{url}/_sim/on-premises/{SYNCED}"))
        .json(&json!({"accountEnabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(on_premises.status(), 204);
    assert_eq!(http.post(format!("{url}/_sim/sync")).send().await.unwrap().status(), 204);
    let user = env.sim.user(SYNCED).unwrap();
    assert!(!user.account_enabled && !user.on_premises_account_enabled);

    let log: Vec<Value> = http.get(format!("{url}/_sim/log")).send().await.unwrap().json().await.unwrap();
    assert!(log.iter().all(|r| !r["path"].as_str().unwrap().starts_with("/_sim")));
    assert!(log.iter().any(|r| r["status"] == 504));
    assert_eq!(http.delete(format!("{url}/_sim/log")).send().await.unwrap().status(), 204);
    assert!(env.sim.log().is_empty());
}
