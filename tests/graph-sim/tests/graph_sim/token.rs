//! The token endpoint and bearer-token checks on Graph requests.

use std::time::Duration;

use remedy_graph_sim::{spawn, Fault, SimConfig};
use serde_json::Value;

use crate::support::*;

fn assert_token_error(body: &Value, error: &str, code: u64) {
    assert_eq!(body["error"], error, "{body}");
    assert_eq!(body["error_codes"][0], code, "{body}");
    assert!(body["error_description"].as_str().unwrap().starts_with(&format!("AADSTS{code}:")), "{body}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
}

#[tokio::test]
async fn client_credentials_issue_a_bearer_token() {
    let sim = spawn(config()).await.unwrap();
    let (status, body) = token(&http(), &sim, SECRET).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert_eq!(body["ext_expires_in"], 3600);
    assert!(body["access_token"].as_str().unwrap().len() > 20);
    let logged = &sim.log()[0];
    assert_eq!(logged.path, format!("/{TENANT}/oauth2/v2.0/token"));
    assert_eq!(logged.body.as_ref().unwrap()["client_secret"], "<redacted>");
}

/// With `appRoles`, tokens are JWTs whose `roles` claim lists the granted permissions, as the
/// real service's app-only tokens do; a token granting nothing has no `roles` claim; and such a
/// token is a bearer token like any other.
#[tokio::test]
async fn app_roles_make_tokens_jwts_with_a_roles_claim() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let claims = |token: &str| -> Value {
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "{token}");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
    };
    let roles = vec!["User.ReadWrite.All".to_owned(), "User.RevokeSessions.All".to_owned()];
    let sim = spawn(SimConfig { app_roles: Some(roles.clone()), ..config() }).await.unwrap();
    let (status, body) = token(&http(), &sim, SECRET).await;
    assert_eq!(status, 200, "{body}");
    let access_token = body["access_token"].as_str().unwrap();
    let payload = claims(access_token);
    assert_eq!(payload["roles"], serde_json::json!(roles), "{payload}");
    assert_eq!(payload["tid"], TENANT);
    assert_eq!(payload["appid"], CLIENT);
    assert_eq!(payload["aud"], "https://graph.microsoft.com");
    let users = http().get(format!("{}/v1.0/users", sim.url())).bearer_auth(access_token).send().await.unwrap();
    assert_eq!(users.status().as_u16(), 200);

    let sim = spawn(SimConfig { app_roles: Some(Vec::new()), ..config() }).await.unwrap();
    let (_, body) = token(&http(), &sim, SECRET).await;
    let payload = claims(body["access_token"].as_str().unwrap());
    assert!(payload.get("roles").is_none(), "{payload}");

    let sim = spawn(config()).await.unwrap();
    let (_, body) = token(&http(), &sim, SECRET).await;
    assert!(body["access_token"].as_str().unwrap().starts_with("graph-sim."), "{body}");
}

#[tokio::test]
async fn token_endpoint_errors_are_the_identity_platforms() {
    let sim = spawn(config()).await.unwrap();
    let http = http();
    let (status, body) = token(&http, &sim, "wrong").await;
    assert_eq!(status, 401);
    assert_token_error(&body, "invalid_client", 7000215);

    let post = |tenant: &str, fields: Vec<(&'static str, &'static str)>| {
        http.post(format!("{}/{tenant}/oauth2/v2.0/token", sim.url())).form(&fields).send()
    };
    let good = vec![
        ("client_id", CLIENT),
        ("client_secret", SECRET),
        ("scope", "https://graph.microsoft.com/.default"),
        ("grant_type", "client_credentials"),
    ];
    let with = |name: &'static str, value: &'static str| {
        good.iter().map(|&(n, v)| if n == name { (n, value) } else { (n, v) }).collect::<Vec<_>>()
    };
    for (tenant, fields, status, error, code) in [
        (TENANT, with("client_id", "00000000-0000-0000-0000-00000000dead"), 400, "unauthorized_client", 700016),
        (TENANT, with("scope", "User.ReadWrite.All"), 400, "invalid_scope", 1002012),
        (TENANT, with("grant_type", "password"), 400, "unsupported_grant_type", 70003),
        ("other-tenant", good.clone(), 400, "invalid_request", 90002),
    ] {
        let response = post(tenant, fields).await.unwrap();
        assert_eq!(response.status().as_u16(), status);
        assert_token_error(&response.json().await.unwrap(), error, code);
    }
}

#[tokio::test]
async fn graph_refuses_missing_unknown_and_expired_tokens() {
    let config = SimConfig { token_lifetime: Duration::from_secs(1), ..config() };
    let env = start(config).await;
    assert_eq!(env.get(&format!("/v1.0/users/{CLOUD}")).await.status, 200);

    let no_token = env.http.get(format!("{}/v1.0/users/{CLOUD}", env.sim.url())).send().await.unwrap();
    assert_eq!(no_token.status(), 401);
    assert!(no_token.headers().get("request-id").is_some());
    assert!(no_token.headers().get("www-authenticate").is_some());
    assert_odata_error(&no_token.json().await.unwrap(), Some("InvalidAuthenticationToken"));

    let forged =
        env.http.get(format!("{}/v1.0/users/{CLOUD}", env.sim.url())).bearer_auth("forged").send().await.unwrap();
    assert_eq!(forged.status(), 401);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = env.get(&format!("/v1.0/users/{CLOUD}")).await;
    assert_eq!(expired.status, 401);
    assert_odata_error(&expired.body, Some("InvalidAuthenticationToken"));
    assert!(expired.body["error"]["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn injected_expiry_ends_every_issued_token() {
    let env = start(config()).await;
    env.sim.inject(Fault::ExpireTokens);
    assert_eq!(env.get(&format!("/v1.0/users/{CLOUD}")).await.status, 401);
    let (status, fresh) = token(&env.http, &env.sim, SECRET).await;
    assert_eq!(status, 200);
    let response = env
        .http
        .get(format!("{}/v1.0/users/{CLOUD}", env.sim.url()))
        .bearer_auth(fresh["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "tokens issued after the fault work");
}
