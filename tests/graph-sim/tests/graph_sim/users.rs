//! /users, revokeSignInSessions and identityProtection/riskyUsers.

use std::time::Duration;

use chrono::{DateTime, Utc};
use remedy_graph_sim::SimConfig;
use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn get_user_by_id_or_upn_with_select() {
    let env = start(config()).await;
    let by_id = env.get(&format!("/v1.0/users/{SYNCED}?$select=id,accountEnabled,onPremisesSyncEnabled")).await;
    assert_eq!(by_id.status, 200);
    assert!(by_id.header("content-type").unwrap().starts_with("application/json"));
    let body = by_id.body.as_object().unwrap();
    assert!(body["@odata.context"]
        .as_str()
        .unwrap()
        .ends_with("$metadata#users(id,accountEnabled,onPremisesSyncEnabled)/$entity"));
    assert_eq!(body["id"], SYNCED);
    assert_eq!(body["accountEnabled"], true);
    assert_eq!(body["onPremisesSyncEnabled"], true);
    assert_eq!(body.len(), 4, "only the selected properties: {body:?}");

    let by_upn = env
        .get("/v1.0/users/STAFF0007%40remedy.test?$select=id,onPremisesSyncEnabled,signInSessionsValidFromDateTime")
        .await;
    assert_eq!(by_upn.body["id"], CLOUD);
    assert_eq!(by_upn.body["onPremisesSyncEnabled"], Value::Null, "cloud-only users have null, as in Graph");
    assert_eq!(by_upn.body["signInSessionsValidFromDateTime"], Value::Null);

    let default = env.get(&format!("/v1.0/users/{CLOUD}")).await;
    assert_eq!(default.body["userPrincipalName"], "staff0007@remedy.test");
    assert!(default.body.get("accountEnabled").is_none(), "accountEnabled only on $select");

    let missing = env.get("/v1.0/users/nobody@remedy.test").await;
    assert_eq!(missing.status, 404);
    assert_odata_error(&missing.body, Some("Request_ResourceNotFound"));
    assert!(missing.body["error"]["message"].as_str().unwrap().contains("'nobody@remedy.test' does not exist"));

    let unknown_property = env.get(&format!("/v1.0/users/{CLOUD}?$select=id,favouriteColour")).await;
    assert_eq!(unknown_property.status, 400);
    assert_odata_error(&unknown_property.body, Some("Request_BadRequest"));

    let unknown_resource = env.get("/v1.0/groups").await;
    assert_eq!(unknown_resource.status, 400);
}

#[tokio::test]
async fn filter_with_or_and_in_pages_through_next_links() {
    let env = start(SimConfig { page_size: 2, ..config() }).await;
    let filter = format!(
        "userPrincipalName eq 'staff0007@remedy.test' or id eq '{SYNCED}' or userPrincipalName in ('filler01@remedy.test', 'filler02@remedy.test', 'nobody@remedy.test')"
    );
    let mut url = reqwest::Url::parse(&format!("{}/v1.0/users", env.sim.url())).unwrap();
    url.query_pairs_mut().append_pair("$filter", &filter).append_pair("$select", "id,userPrincipalName");
    let mut next = Some(url.to_string());
    let mut seen = Vec::new();
    let mut pages = 0;
    while let Some(link) = next {
        let path = link.strip_prefix(&env.sim.url()).expect("nextLink is absolute, on the simulator");
        let page = env.get(path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body["@odata.context"].as_str().unwrap().ends_with("$metadata#users(id,userPrincipalName)"));
        for user in page.body["value"].as_array().unwrap() {
            assert_eq!(user.as_object().unwrap().len(), 2);
            seen.push(user["userPrincipalName"].as_str().unwrap().to_owned());
        }
        next = page.body["@odata.nextLink"].as_str().map(str::to_owned);
        if let Some(link) = &next {
            assert!(link.contains("skiptoken="), "{link}");
        }
        pages += 1;
    }
    seen.sort();
    assert_eq!(
        seen,
        ["filler01@remedy.test", "filler02@remedy.test", "staff0007@remedy.test", "staff0042@remedy.test"]
    );
    assert_eq!(pages, 2);

    let top = env.get("/v1.0/users?$top=1").await;
    assert_eq!(top.body["value"].as_array().unwrap().len(), 1);
    assert!(top.body["@odata.nextLink"].as_str().unwrap().contains("top=1"));

    for unsupported in
        ["displayName eq 'x'", "id ne 'x'", "startswith(userPrincipalName,'s')", "id eq 'a' and id eq 'b'"]
    {
        let mut url = reqwest::Url::parse(&format!("{}/v1.0/users", env.sim.url())).unwrap();
        url.query_pairs_mut().append_pair("$filter", unsupported);
        let answer = env.get(url.as_str().strip_prefix(&env.sim.url()).unwrap()).await;
        assert_eq!(answer.status, 400, "{unsupported}");
    }
}

#[tokio::test]
async fn disabling_a_synced_user_is_undone_by_directory_sync() {
    let env = start(config()).await;
    let patch = env.call(Method::PATCH, &format!("/v1.0/users/{SYNCED}"), Some(json!({"accountEnabled": false}))).await;
    assert_eq!(patch.status, 204);
    assert_eq!(patch.body, Value::Null);
    assert!(!env.sim.user(SYNCED).unwrap().account_enabled, "accepted in the cloud");

    env.sim.run_directory_sync();
    assert!(env.sim.user(SYNCED).unwrap().account_enabled, "AD still says enabled");

    env.sim.set_on_premises_enabled("staff0042@remedy.test", false);
    env.sim.run_directory_sync();
    assert!(!env.sim.user(SYNCED).unwrap().account_enabled, "AD disabled it");

    let cloud = env.call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(json!({"accountEnabled": false}))).await;
    assert_eq!(cloud.status, 204);
    env.sim.run_directory_sync();
    assert!(!env.sim.user(CLOUD).unwrap().account_enabled, "sync leaves cloud-only users alone");
}

#[tokio::test]
async fn password_profile_rules() {
    let env = start(config()).await;
    let before = env.sim.user(CLOUD).unwrap();
    let force_only = json!({"passwordProfile": {"forceChangePasswordNextSignIn": true}});
    let answer = env.call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(force_only.clone())).await;
    assert_eq!(answer.status, 204);
    assert_eq!(env.sim.user(CLOUD).unwrap(), before, "no password: accepted, nothing changes");

    let weak = env
        .call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(json!({"passwordProfile": {"password": "short"}})))
        .await;
    assert_eq!(weak.status, 400);

    let reset = json!({"passwordProfile": {"password": "Correct-Horse-7", "forceChangePasswordNextSignIn": true}});
    let answer = env.call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(reset)).await;
    assert_eq!(answer.status, 204);
    assert!(env.sim.user(CLOUD).unwrap().last_password_change.is_some());

    let synced = env.call(Method::PATCH, &format!("/v1.0/users/{SYNCED}"), Some(force_only)).await;
    assert_eq!(synced.status, 400);
    assert_odata_error(&synced.body, Some("Request_BadRequest"));
    assert!(synced.body["error"]["message"].as_str().unwrap().contains("on-premises mastered Directory Sync objects"));

    let unknown = env
        .call(Method::PATCH, &format!("/v1.0/users/{CLOUD}"), Some(json!({"accountEnabled": false, "shoeSize": 44})))
        .await;
    assert_eq!(unknown.status, 400);
    assert!(env.sim.user(CLOUD).unwrap().account_enabled, "a refused PATCH changes nothing");
}

#[tokio::test]
async fn privileged_users_cannot_be_disabled() {
    let env = start(config()).await;
    let answer = env.call(Method::PATCH, &format!("/v1.0/users/{ADMIN}"), Some(json!({"accountEnabled": false}))).await;
    assert_eq!(answer.status, 403);
    assert_odata_error(&answer.body, Some("Authorization_RequestDenied"));
    assert_eq!(answer.body["error"]["message"], "Insufficient privileges to complete the operation.");
    assert!(env.sim.user(ADMIN).unwrap().account_enabled);
}

#[tokio::test]
async fn revoke_sign_in_sessions_moves_the_valid_from_time() {
    let env = start(config()).await;
    let before = Utc::now() - chrono::Duration::seconds(1);
    let answer = env.call(Method::POST, "/v1.0/users/staff0007@remedy.test/revokeSignInSessions", None).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body["value"], true);
    assert!(answer.body["@odata.context"].as_str().unwrap().ends_with("/v1.0/$metadata#Edm.Boolean"));
    assert!(env.sim.user(CLOUD).unwrap().sign_in_sessions_valid_from.unwrap() >= before);

    let read = env.get(&format!("/v1.0/users/{CLOUD}?$select=signInSessionsValidFromDateTime")).await;
    let text = read.body["signInSessionsValidFromDateTime"].as_str().unwrap();
    assert!(text.parse::<DateTime<Utc>>().unwrap() >= before.with_nanosecond_zero());
}

trait WholeSeconds {
    fn with_nanosecond_zero(self) -> Self;
}

impl WholeSeconds for DateTime<Utc> {
    fn with_nanosecond_zero(self) -> Self {
        chrono::Timelike::with_nanosecond(&self, 0).unwrap()
    }
}

#[tokio::test]
async fn identity_protection_allows_one_request_per_second_without_retry_after() {
    let env = start(config()).await;
    let risky = env.get(&format!("/v1.0/identityProtection/riskyUsers/{CLOUD}")).await;
    assert_eq!(risky.status, 200);
    assert_eq!(risky.body["riskState"], "none");

    let body = json!({"userIds": [CLOUD, SYNCED]});
    let path = "/v1.0/identityProtection/riskyUsers/confirmCompromised";
    let too_soon = env.call(Method::POST, path, Some(body.clone())).await;
    assert_eq!(too_soon.status, 429, "the read a moment ago used this second's request");
    assert_eq!(too_soon.header("retry-after"), None, "this limit answers without Retry-After");
    assert_eq!(env.sim.log().last().unwrap().retry_after, None);

    tokio::time::sleep(Duration::from_millis(1020)).await;
    assert_eq!(env.call(Method::POST, path, Some(body.clone())).await.status, 204);
    let second = env.call(Method::POST, path, Some(body)).await;
    assert_eq!(second.status, 429);
    assert_eq!(second.header("retry-after"), None);

    tokio::time::sleep(Duration::from_millis(1020)).await;
    let risky = env.get(&format!("/v1.0/identityProtection/riskyUsers/{SYNCED}")).await;
    assert_eq!(risky.status, 200);
    assert_eq!(risky.body["riskState"], "confirmedCompromised");
    assert_eq!(risky.body["riskLevel"], "high");
    assert_eq!(risky.body["riskDetail"], "adminConfirmedUserCompromised");
    assert_eq!(risky.body["userPrincipalName"], "staff0042@remedy.test");
    assert!(risky.body["riskLastUpdatedDateTime"].as_str().unwrap().parse::<DateTime<Utc>>().is_ok());
    assert_eq!(env.sim.user(CLOUD).unwrap().risk_state, "confirmedCompromised");
}

#[tokio::test]
async fn confirm_compromised_takes_object_ids_only() {
    let env = start(SimConfig { confirm_compromised_per_second: 0, ..config() }).await;
    let path = "/v1.0/identityProtection/riskyUsers/confirmCompromised";
    let by_upn = env.call(Method::POST, path, Some(json!({"userIds": ["staff0007@remedy.test"]}))).await;
    assert_eq!(by_upn.status, 404);
    let empty = env.call(Method::POST, path, Some(json!({"userIds": []}))).await;
    assert_eq!(empty.status, 400);
    assert_eq!(env.sim.user(CLOUD).unwrap().risk_state, "none");
}
