//! Entra ID as it really behaves: lagging replicas, isProcessing, guests, `$` UPNs, a tenant
//! without Entra ID P2, a throttled `$batch`.

use std::time::Duration;

use remedy_graph_sim::{Fault, ReplicaLag, SimConfig, SimUser};
use reqwest::Method;
use serde_json::json;

use crate::support::*;

const GUEST: &str = "11111111-0000-4000-8000-000000000777";
const DOLLAR: &str = "11111111-0000-4000-8000-000000000024";

fn with_lag(lag: ReplicaLag) -> SimConfig {
    SimConfig { replica_lag: Some(lag), ..config() }
}

#[tokio::test]
async fn realism_a_lagging_replica_shows_the_user_as_before_the_write_until_the_lag_passes() {
    let env = start(with_lag(ReplicaLag::fixed(Duration::from_millis(600)))).await;
    let path = format!("/v1.0/users/{CLOUD}?$select=accountEnabled");
    let patch = env.call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(json!({"accountEnabled": false}))).await;
    assert_eq!(patch.status, 204, "the write is accepted at once");
    assert_eq!(env.get(&path).await.body["accountEnabled"], json!(true), "a read right after it misses it");
    // Through $batch too: the same replicas answer.
    let batch = env
        .call(
            Method::POST,
            "/v1.0/$batch",
            Some(json!({"requests": [{"id": "1", "method": "GET", "url": format!("/users/{CLOUD}?$select=accountEnabled")}]})),
        )
        .await;
    assert_eq!(batch.body["responses"][0]["body"]["accountEnabled"], json!(true));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(env.get(&path).await.body["accountEnabled"], json!(false), "then every replica has it");
}

#[tokio::test]
async fn realism_a_random_lag_is_drawn_per_read() {
    let env = start(with_lag(ReplicaLag { min: Duration::ZERO, max: Duration::from_millis(2000) })).await;
    let revoke = env.call(Method::POST, &format!("/v1.0/users/{CLOUD}/revokeSignInSessions"), Some(json!({}))).await;
    assert_eq!(revoke.status, 200);
    // 1 s after the write, a lag drawn between 0 and 2 s misses it about half the time.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let path = format!("/v1.0/users/{CLOUD}?$select=signInSessionsValidFromDateTime");
    let mut seen = (0, 0);
    for _ in 0..60 {
        match env.get(&path).await.body["signInSessionsValidFromDateTime"].is_null() {
            true => seen.0 += 1,
            false => seen.1 += 1,
        }
    }
    assert!(seen.0 > 0 && seen.1 > 0, "some reads reach a lagging replica, some a current one: {seen:?}");
}

#[tokio::test]
async fn realism_a_risky_user_is_processing_until_the_confirmation_shows() {
    let env = start(with_lag(ReplicaLag::fixed(Duration::from_secs(3600)))).await;
    let confirm = env
        .call(Method::POST, "/v1.0/identityProtection/riskyUsers/confirmCompromised", Some(json!({"userIds": [CLOUD]})))
        .await;
    assert_eq!(confirm.status, 204);
    tokio::time::sleep(Duration::from_millis(1100)).await; // Identity Protection: 1 request/s.
    let risky = env.get(&format!("/v1.0/identityProtection/riskyUsers/{CLOUD}")).await;
    assert_eq!(risky.status, 200);
    assert_eq!(risky.body["riskState"], json!("none"), "not visible yet");
    assert_eq!(risky.body["isProcessing"], json!(true));
    let calm = start(config()).await;
    let risky = calm.get(&format!("/v1.0/identityProtection/riskyUsers/{CLOUD}")).await;
    assert_eq!(risky.body["isProcessing"], json!(false), "nothing pending, nothing processing");
}

#[tokio::test]
async fn realism_revoking_a_guest_is_answered_and_changes_nothing() {
    let mut config = config();
    config.users.push(SimUser { id: GUEST.into(), ..SimUser::new("partner_fabrikam.com#EXT#@remedy.test").guest() });
    let env = start(config).await;
    let user = env.get(&format!("/v1.0/users/{GUEST}?$select=userType,signInSessionsValidFromDateTime")).await;
    assert_eq!(user.body["userType"], json!("Guest"));
    let revoke = env.call(Method::POST, &format!("/v1.0/users/{GUEST}/revokeSignInSessions"), Some(json!({}))).await;
    assert_eq!(revoke.status, 200);
    let after = env.get(&format!("/v1.0/users/{GUEST}?$select=signInSessionsValidFromDateTime")).await;
    assert!(after.body["signInSessionsValidFromDateTime"].is_null(), "{:?}", after.body);
    let member = env.get(&format!("/v1.0/users/{CLOUD}?$select=userType")).await;
    assert_eq!(member.body["userType"], json!("Member"));
    assert!(SimConfig::from_yaml(
        "tenantId: t\nclientId: c\nclientSecret: s\nusers:\n  - {id: x, userPrincipalName: a@b.c, userType: Visitor}\n"
    )
    .unwrap_err()
    .contains("userType \"Visitor\" is not one of Member, Guest"));
}

#[tokio::test]
async fn realism_a_dollar_upn_is_addressed_in_parentheses_and_refused_bare() {
    let mut config = config();
    config.users.push(SimUser { id: DOLLAR.into(), ..SimUser::new("$svc-o'neil@remedy.test") });
    let env = start(config).await;
    let quoted = env.get("/v1.0/users('%24svc-o''neil@remedy.test')?$select=id").await;
    assert_eq!(quoted.status, 200, "{:?}", quoted.body);
    assert_eq!(quoted.body["id"], json!(DOLLAR));
    let patch = env
        .call(Method::PATCH, "/v1.0/users('$svc-o''neil@remedy.test')", Some(json!({"accountEnabled": false})))
        .await;
    assert_eq!(patch.status, 204);
    let bare = env.get("/v1.0/users/$svc-o'neil@remedy.test?$select=id").await;
    assert_eq!(bare.status, 400);
    assert_odata_error(&bare.body, Some("BadRequest"));
    assert!(bare.body["error"]["message"].as_str().unwrap().contains("/users('"), "{:?}", bare.body);
}

#[tokio::test]
async fn realism_a_tenant_without_entra_id_p2_refuses_risky_users() {
    let env = start(SimConfig { identity_protection_licensed: false, ..config() }).await;
    let risky = env.get(&format!("/v1.0/identityProtection/riskyUsers/{CLOUD}")).await;
    assert_eq!(risky.status, 403);
    assert_odata_error(&risky.body, Some("Authentication_RequestFromNonPremiumTenantOrB2CTenant"));
    assert_eq!(env.get(&format!("/v1.0/users/{CLOUD}")).await.status, 200, "users need no licence");
}

#[tokio::test]
async fn realism_a_get_can_be_answered_202_without_a_body() {
    let env = start(config()).await;
    env.sim.inject(Fault::AcceptedGets { count: 2 });
    let path = format!("/v1.0/users/{CLOUD}");
    assert_eq!(
        env.call(Method::PATCH, &path, Some(json!({"accountEnabled": false}))).await.status,
        204,
        "writes are not affected"
    );
    let accepted = env.get(&path).await;
    assert_eq!(accepted.status, 202);
    assert!(accepted.body.is_null(), "{:?}", accepted.body);
    let batch = env
        .call(
            Method::POST,
            "/v1.0/$batch",
            Some(json!({"requests": [{"id": "1", "method": "GET", "url": format!("/users/{CLOUD}")}]})),
        )
        .await;
    assert_eq!(batch.status, 200);
    assert_eq!(batch.body["responses"][0]["status"], json!(202));
    assert_eq!(env.get(&path).await.status, 200, "then reads answer again");
}

#[tokio::test]
async fn realism_a_batch_can_be_throttled_as_a_whole() {
    let env = start(config()).await;
    env.sim.inject(Fault::BatchThrottle { count: 1, retry_after: Duration::from_secs(2) });
    let body = json!({"requests": [{"id": "1", "method": "GET", "url": format!("/users/{CLOUD}")}]});
    let throttled = env.call(Method::POST, "/v1.0/$batch", Some(body.clone())).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("2"));
    assert!(env.sim.log().iter().all(|r| !r.in_batch), "nothing in it was run");
    let ok = env.call(Method::POST, "/v1.0/$batch", Some(body)).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body["responses"][0]["status"], json!(200));
}
