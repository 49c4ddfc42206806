//! Shared fixtures: a seeded simulator, an HTTP client, and checks of Graph's response shapes.

use std::time::Duration;

use remedy_graph_sim::{spawn, Sim, SimConfig, SimUser};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method};
use serde_json::Value;

pub const TENANT: &str = "7a1e2b3c-0000-4000-8000-000000000001";
pub const CLIENT: &str = "0c0ffee0-0000-4000-8000-000000000002";
pub const SECRET: &str = "s3cret-for-tests";

pub const CLOUD: &str = "11111111-0000-4000-8000-000000000007";
pub const SYNCED: &str = "11111111-0000-4000-8000-000000000042";
pub const ADMIN: &str = "11111111-0000-4000-8000-000000000900";

/// Three named users (cloud-only, synced, privileged) and eight fillers.
pub fn config() -> SimConfig {
    let mut users = vec![
        SimUser { id: CLOUD.into(), ..SimUser::new("staff0007@remedy.test") },
        SimUser { id: SYNCED.into(), ..SimUser::new("staff0042@remedy.test").synced() },
        SimUser { id: ADMIN.into(), privileged_role: true, ..SimUser::new("admin@remedy.test") },
    ];
    users.extend((0..8).map(|n| SimUser::new(format!("filler{n:02}@remedy.test"))));
    SimConfig { users, ..SimConfig::new(TENANT, CLIENT, SECRET) }
}

pub fn http() -> Client {
    // reqwest is built without a bundled crypto provider; the workspace's is ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

/// A running simulator, a client and a valid token.
pub struct Env {
    pub sim: Sim,
    pub http: Client,
    pub token: String,
}

pub async fn start(config: SimConfig) -> Env {
    let sim = spawn(config).await.unwrap();
    let http = http();
    let token = token(&http, &sim, SECRET).await.1["access_token"].as_str().unwrap().to_owned();
    Env { sim, http, token }
}

/// Asks the token endpoint for a Graph token with this secret.
pub async fn token(http: &Client, sim: &Sim, secret: &str) -> (u16, Value) {
    let response = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", sim.url()))
        .form(&[
            ("client_id", CLIENT),
            ("client_secret", secret),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Env {
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.sim.url()))
            .bearer_auth(&self.token)
            .header("client-request-id", "c0ffee00-1111-4222-8333-444455556666");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        let answer = Answer { status, headers, body };
        assert!(answer.header("request-id").is_some_and(uuid_like), "every answer has a request-id");
        assert_eq!(answer.header("client-request-id"), Some("c0ffee00-1111-4222-8333-444455556666"));
        if status >= 400 {
            assert_odata_error(&answer.body, None);
        }
        answer
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None).await
    }
}

pub fn uuid_like(text: &str) -> bool {
    text.len() == 36 && text.chars().filter(|&c| c == '-').count() == 4
}

/// Graph's error body: `{"error": {"code", "message", "innerError": {"date", "request-id", "client-request-id"}}}`.
pub fn assert_odata_error(body: &Value, code: Option<&str>) {
    let error = &body["error"];
    assert!(error["code"].is_string(), "error.code in {body}");
    assert!(error["message"].is_string(), "error.message in {body}");
    let inner = &error["innerError"];
    let date = inner["date"].as_str().unwrap_or_default();
    assert!(chrono::NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%S").is_ok(), "innerError.date in {body}");
    assert!(inner["request-id"].as_str().is_some_and(uuid_like), "innerError.request-id in {body}");
    assert!(inner["client-request-id"].is_string(), "innerError.client-request-id in {body}");
    if let Some(code) = code {
        assert_eq!(error["code"], code, "{body}");
    }
}
