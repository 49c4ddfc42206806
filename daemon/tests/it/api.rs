//! The HTTP API of `remedy serve` over real HTTP(S): the controller, the manifest watcher and the
//! API in this process, as `remedy serve` wires them, with Entra ID on graph-sim (loopback) and no
//! Active Directory. Each test starts its own daemon on its own port and asserts what a caller
//! sees: statuses, bodies, headers, and what became of the accounts in "Entra ID".

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use remedy::api::{ApiState, Tokens};
use remedy::controller::{Clock, Controller, ControllerHandle};
use remedy::entra::{GraphOptions, RetryPolicy};
use remedy::providers::Providers;
use remedy::store::Store;
use remedy::watch::ManifestWatcher;
use remedy_graph_sim::{Sim, SimConfig, SimUser};
use remedy_policies::config::Config;
use rustls::pki_types::CertificateDer;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::support::prometheus::parse_exposition;
use crate::support::{condition, entra_yaml, http_client, settings, token_yaml};

const TENANT: &str = "7c0ffee0-0000-4000-8000-0000000a9100";
const CLIENT_ID: &str = "5e1ec7ed-0000-4000-8000-0000000a9101";
const SECRET: &str = "api-test-secret-not-a-real-one";

/// Three cloud users, one manifest each: one more change than `maxChangesPerReconcile` allows.
const THREE: [&str; 3] = ["a@x.test", "b@x.test", "c@x.test"];

/// A plan id that is well formed and never held.
const UNHELD_PLAN: &str = "0123456789abcdef0123456789abcdef";

/// Caller calls, and how they present themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// No Authorization header.
    Nobody,
    /// A bearer token nobody was given.
    Stranger,
    /// The administrator's token, sent with the `Basic` scheme.
    BasicScheme,
    Reader,
    Operator,
    Administrator,
}

impl Caller {
    const ALL: [Caller; 6] = [
        Caller::Nobody,
        Caller::Stranger,
        Caller::BasicScheme,
        Caller::Reader,
        Caller::Operator,
        Caller::Administrator,
    ];

    fn authorization(self) -> Option<String> {
        match self {
            Caller::Nobody => None,
            Caller::Stranger => Some("Bearer not-a-token-anyone-was-given".into()),
            Caller::BasicScheme => Some(format!("Basic {}", base64(&format!("ada:{}", Caller::Administrator.token())))),
            Caller::Reader | Caller::Operator | Caller::Administrator => Some(format!("Bearer {}", self.token())),
        }
    }

    fn token(self) -> &'static str {
        match self {
            Caller::Reader => "reader-token-3b9e1d",
            Caller::Operator => "operator-token-8c4f2a",
            Caller::Administrator => "administrator-token-1d7e5b",
            _ => "",
        }
    }

    /// The name `api.tokens` gives the caller (recorded with what they ask for).
    fn name(self) -> &'static str {
        match self {
            Caller::Reader => "rita",
            Caller::Operator => "otto",
            Caller::Administrator => "ada",
            _ => "",
        }
    }

    fn is_known(self) -> bool {
        matches!(self, Caller::Reader | Caller::Operator | Caller::Administrator)
    }
}

fn base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in text.as_bytes().chunks(3) {
        let bytes = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = u32::from(bytes[0]) << 16 | u32::from(bytes[1]) << 8 | u32::from(bytes[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn token_entry(who: Caller, role: &str) -> String {
    token_yaml(who.name(), role, who.token())
}

/// `remedy.yaml` as an operator would write it for graph-sim, with no Active Directory.
fn config_yaml(dir: &Path, sim_url: &str, tls: bool) -> String {
    let tls = if tls { "  tls:\n    certFile: api-cert.pem\n    keyFile: api-key.pem\n" } else { "" };
    format!(
        "manifests:\n  path: {manifests}\n  debounce: 100ms\nguardrails:\n  allowedScopes: [\"OU=Tests,DC=x,DC=test\"]\n  \
         maxChangesPerReconcile: 2\nresync: \"0 0 * * * *\"\nstore:\n  path: {store}\n{entra}api:\n  \
         listen: \"127.0.0.1:0\"\n{tls}  tokens:\n{}{}{}",
        token_entry(Caller::Administrator, "security-administrator"),
        token_entry(Caller::Operator, "security-operator"),
        token_entry(Caller::Reader, "security-reader"),
        manifests = dir.join("manifests").display(),
        store = dir.join("store").display(),
        entra = entra_yaml(TENANT, CLIENT_ID, "graph.secret", sim_url, Some("5s")),
    )
}

/// The manifest of `inc-N-<local part>`: suspend the cloud user.
fn manifest_name(index: usize, upn: &str) -> String {
    format!("inc-{}-{}", index + 1, upn.split('@').next().expect("a local part"))
}

fn suspend_manifest(name: &str, upn: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"{name}: sign-ins \
         from a known bad ASN\"\n  target:\n    userPrincipalName: {upn}\n  entraId:\n    suspended: true\n"
    )
}

/// What came back, with what was asked (for the messages of failed assertions).
#[derive(Debug)]
struct Reply {
    asked: String,
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        assert!(self.content_type.starts_with("application/json"), "not JSON: {self:#?}");
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("the body is not JSON ({e}): {self:#?}"))
    }

    /// The body of a 2xx answer, as JSON.
    fn ok(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}: {self:#?}", self.asked);
        self.json()
    }

    /// Asserts the API's one error shape, `{"error": {"code", "message"}}` and nothing else;
    /// returns the message.
    fn error(&self, status: u16, code: &str) -> String {
        assert_eq!(self.status, status, "{}: {self:#?}", self.asked);
        let body = self.json();
        let shape = body.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("error")).and_then(Value::as_object);
        let inner = shape.filter(|e| e.len() == 2).unwrap_or_else(|| panic!("not the error shape: {self:#?}"));
        assert_eq!(inner.get("code").and_then(Value::as_str), Some(code), "{self:#?}");
        let message = inner.get("message").and_then(Value::as_str).unwrap_or_else(|| panic!("no message: {self:#?}"));
        assert!(!message.trim().is_empty(), "an empty message: {self:#?}");
        if status == 401 {
            let challenge = self.www_authenticate.as_deref().unwrap_or_else(|| panic!("no challenge: {self:#?}"));
            assert!(challenge.starts_with("Bearer"), "{self:#?}");
        }
        message.to_owned()
    }
}

/// The API's OpenAPI document, to hold real answers against.
struct Contract {
    document: Value,
}

impl Contract {
    /// The document `remedy::api::openapi()` generates (the one `/openapi.json` serves).
    fn generated() -> Contract {
        Contract { document: serde_json::to_value(remedy::api::openapi()).expect("the document is JSON") }
    }

    /// Every operation, as (method in upper case, path template).
    fn operations(&self) -> Vec<(String, String)> {
        let paths = self.document["paths"].as_object().expect("paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                item.as_object().expect("a path item").keys().map(|method| (method.to_uppercase(), path.clone()))
            })
            .collect()
    }

    fn operation(&self, method: &str, template: &str) -> &Value {
        let operation = &self.document["paths"][template][method.to_lowercase()];
        assert!(operation.is_object(), "{method} {template} is not in the document");
        operation
    }

    /// Follows a `$ref` to a response component.
    fn follow<'a>(&'a self, response: &'a Value) -> &'a Value {
        match response["$ref"].as_str() {
            Some(reference) => {
                let pointer = reference.strip_prefix('#').expect("a local reference");
                self.document.pointer(pointer).unwrap_or_else(|| panic!("{reference} does not resolve"))
            }
            None => response,
        }
    }

    /// A reusable response (`NotFound`, `MethodNotAllowed`...).
    fn component(&self, name: &str) -> &Value {
        let response = &self.document["components"]["responses"][name];
        assert!(response.is_object(), "no response component {name}");
        response
    }

    /// Asserts that `reply` is an answer the document lists for `method template`: a documented
    /// status, with the documented content type and headers, and a body its schema accepts.
    fn check(&self, method: &str, template: &str, reply: &Reply) {
        if let Err(why) = self.verdict(method, template, reply) {
            panic!("{method} {template}: {why}\n{reply:#?}");
        }
    }

    fn verdict(&self, method: &str, template: &str, reply: &Reply) -> Result<(), String> {
        let responses = &self.operation(method, template)["responses"];
        let response = responses
            .get(reply.status.to_string())
            .ok_or_else(|| format!("status {} is not documented", reply.status))?;
        self.matches(self.follow(response), reply)
    }

    /// Asserts that `reply` matches `response` (a Response object of the document).
    fn check_response(&self, response: &Value, reply: &Reply) {
        if let Err(why) = self.matches(response, reply) {
            panic!("{why}\n{reply:#?}");
        }
    }

    fn matches(&self, response: &Value, reply: &Reply) -> Result<(), String> {
        let content = response["content"].as_object().expect("every answer has a body");
        assert_eq!(content.len(), 1, "one media type: {response:#}");
        let (media_type, media) = content.iter().next().expect("one media type");
        if !reply.content_type.starts_with(media_type.as_str()) {
            return Err(format!("the content type is not {media_type}"));
        }
        for name in response["headers"].as_object().into_iter().flat_map(|headers| headers.keys()) {
            assert!(name.eq_ignore_ascii_case("www-authenticate"), "a header the test does not read: {name}");
            if reply.www_authenticate.is_none() {
                return Err(format!("no {name} header"));
            }
        }
        if media_type != "application/json" {
            return Ok(());
        }
        let body: Value = serde_json::from_str(&reply.text).map_err(|e| format!("the body is not JSON: {e}"))?;
        // The document as the root (for `#/components/...`), with the schema to apply.
        let mut root = self.document.clone();
        root["allOf"] = json!([media["schema"]]);
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("the schema does not compile: {e}: {:#}", media["schema"]));
        let errors: Vec<String> =
            validator.iter_errors(&body).map(|e| format!("at {:?}: {e}", e.instance_path().as_str())).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("the body does not match the document:\n{}", errors.join("\n")))
        }
    }
}

/// A running daemon: controller, watcher and API, as `remedy serve` wires them.
struct Daemon {
    base: String,
    client: reqwest::Client,
    sim: Option<Sim>,
    handle: ControllerHandle,
    stop: watch::Sender<bool>,
    controller: JoinHandle<()>,
    api: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// One suspend manifest per user of `upns`, plain HTTP.
    async fn start(upns: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        Daemon::start_in(dir, upns, false).await
    }

    /// As [`Daemon::start`], over HTTPS with a fresh self-signed certificate for 127.0.0.1 and
    /// localhost; returns that certificate.
    async fn start_tls(upns: &[&str]) -> (Daemon, CertificateDer<'static>) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("cert");
        std::fs::write(dir.path().join("api-cert.pem"), certified.cert.pem()).expect("certificate file");
        std::fs::write(dir.path().join("api-key.pem"), certified.signing_key.serialize_pem()).expect("key file");
        let der = certified.cert.der().clone();
        (Daemon::start_in(dir, upns, true).await, der)
    }

    async fn start_in(dir: tempfile::TempDir, upns: &[&str], tls: bool) -> Daemon {
        let users = upns.iter().map(|upn| SimUser::new(*upn)).collect();
        let sim = remedy_graph_sim::spawn(SimConfig { users, ..SimConfig::new(TENANT, CLIENT_ID, SECRET) })
            .await
            .expect("graph-sim starts");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("manifest directory");
        for (index, upn) in upns.iter().enumerate() {
            let name = manifest_name(index, upn);
            std::fs::write(manifests.join(format!("{name}.yaml")), suspend_manifest(&name, upn)).expect("manifest");
        }
        std::fs::write(dir.path().join("graph.secret"), SECRET).expect("secret file");
        let yaml = config_yaml(dir.path(), &sim.url(), tls);
        let config = Config::from_yaml("remedy.yaml", &yaml).unwrap_or_else(|e| panic!("config: {e:?}\n{yaml}"));

        let (store, _) = Store::open(dir.path().join("store")).expect("store opens");
        // Quick verification reads, and a Graph that is down is reported within a second instead
        // of after the production retry budget (two minutes).
        let graph = GraphOptions {
            verify_delay: Duration::from_millis(100),
            retry: RetryPolicy {
                max_attempts: 2,
                max_elapsed: Duration::from_secs(1),
                base_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
            },
            ..GraphOptions::default()
        };
        let providers = Providers::with_graph_options(&config, dir.path(), graph).expect("providers");
        let settings = settings(&config, manifests.clone());
        let (watcher, events) = ManifestWatcher::start(manifests, config.manifests.debounce).expect("watcher starts");
        let bound = remedy::api::serve(&config.api, dir.path()).await.expect("the API listens");
        assert_eq!(bound.is_tls(), tls);
        let (controller, handle) = Controller::new(settings, store.clone(), providers, Clock::System);
        let (stop, shutdown) = watch::channel(false);
        let state = ApiState {
            store,
            handle: handle.clone(),
            tokens: Arc::new(Tokens::new(&config.api.tokens)),
            notifications: Default::default(),
            ha: None,
        };
        let base = format!("{}://{}", if tls { "https" } else { "http" }, bound.address());
        let api = tokio::spawn(bound.run(remedy::api::router(state), shutdown.clone()));
        let controller = tokio::spawn(async move {
            controller.run(events, move || watcher.rescan(), shutdown).await.expect("the controller stops cleanly");
        });
        let daemon =
            Daemon { base, client: http_client(&[]), sim: Some(sim), handle, stop, controller, api, _dir: dir };
        if tokio::time::timeout(Duration::from_secs(10), daemon.handle.wait_for(|p| p.loaded && p.passes >= 1))
            .await
            .is_err()
        {
            panic!("no first reconcile within 10 s: {:#?}", daemon.handle.progress().borrow());
        }
        daemon
    }

    /// Stops like SIGTERM does; both the controller and the API must stop promptly.
    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.controller)
            .await
            .expect("the controller stops within 15 s")
            .expect("the controller did not panic");
        tokio::time::timeout(Duration::from_secs(5), self.api)
            .await
            .expect("the API stops within 5 s")
            .expect("the API task did not panic")
            .expect("the API served without an I/O error");
    }

    fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("graph-sim runs")
    }

    async fn send(&self, method: &str, path: &str, who: Caller, body: Option<&str>) -> Reply {
        send(&self.client, &self.base, method, path, who, body).await
    }

    async fn get(&self, path: &str, who: Caller) -> Reply {
        self.send("GET", path, who, None).await
    }

    async fn post(&self, path: &str, who: Caller, body: &str) -> Reply {
        self.send("POST", path, who, Some(body)).await
    }

    /// `GET /v1/manifests` as the reader, by name.
    async fn statuses(&self) -> BTreeMap<String, Value> {
        let body = self.get("/v1/manifests", Caller::Reader).await.ok(200);
        let list = body["manifests"].as_array().unwrap_or_else(|| panic!("no manifests list: {body:#}"));
        list.iter().map(|m| (m["name"].as_str().expect("a name").to_owned(), m.clone())).collect()
    }

    /// Waits until every manifest in `names` waits for approval; returns the held plan's id,
    /// read from the statuses' messages.
    async fn held_plan(&self, names: &[String]) -> String {
        let deadline = Deadline::after("every manifest to wait for approval", Duration::from_secs(10));
        loop {
            let statuses = self.statuses().await;
            let held: BTreeSet<String> = names
                .iter()
                .filter_map(|name| statuses.get(name))
                .filter(|s| condition(s, "Stalled")["reason"] == "NeedsApproval")
                .map(|s| plan_id_in(condition(s, "Stalled")["message"].as_str().expect("a message")))
                .collect();
            let all =
                names.iter().all(|n| statuses.get(n).is_some_and(|s| condition(s, "Stalled")["status"] == "True"));
            if all && held.len() == 1 && statuses.len() == names.len() {
                return held.into_iter().next().expect("one plan");
            }
            deadline.wait(&statuses).await;
        }
    }

    /// Waits until every manifest is Ready and every user suspended in graph-sim.
    async fn converged(&self, upns: &[&str]) -> BTreeMap<String, Value> {
        let deadline = Deadline::after("every user suspended and every manifest Ready", Duration::from_secs(15));
        loop {
            let statuses = self.statuses().await;
            let suspended = upns.iter().all(|upn| !self.sim().user(upn).expect("user").account_enabled);
            if suspended && statuses.values().all(|s| condition(s, "Ready")["status"] == "True") {
                return statuses;
            }
            deadline.wait(&statuses).await;
        }
    }

    /// Every history record, oldest first.
    async fn history(&self) -> Vec<Value> {
        let page = self.get("/v1/history?limit=1000", Caller::Reader).await.ok(200);
        assert!(page.get("nextAfter").is_none(), "one page holds it all: {page:#}");
        page["records"].as_array().expect("records").clone()
    }
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    method: &str,
    path: &str,
    who: Caller,
    body: Option<&str>,
) -> Reply {
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = client.request(method.clone(), format!("{base}{path}"));
    if let Some(authorization) = who.authorization() {
        request = request.header(reqwest::header::AUTHORIZATION, authorization);
    }
    if let Some(body) = body {
        request = request.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.to_owned());
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let header = |name| response.headers().get(name).map(|v| v.to_str().expect("a text header").to_owned());
    let content_type = header(reqwest::header::CONTENT_TYPE).unwrap_or_default();
    let www_authenticate = header(reqwest::header::WWW_AUTHENTICATE);
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    Reply { asked: format!("{method} {path} as {who:?}"), status, content_type, www_authenticate, text }
}

/// Gives up on waiting, saying what for and what was last seen.
struct Deadline {
    what: &'static str,
    at: Instant,
    timeout: Duration,
}

impl Deadline {
    fn after(what: &'static str, timeout: Duration) -> Deadline {
        Deadline { what, at: Instant::now() + timeout, timeout }
    }

    async fn wait(&self, last: &impl std::fmt::Debug) {
        assert!(
            Instant::now() < self.at,
            "timed out after {:?} waiting for {}; last seen: {last:#?}",
            self.timeout,
            self.what
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The plan id a NeedsApproval message names ("plan <32 hex digits> would make ...").
fn plan_id_in(message: &str) -> String {
    let id: String = message
        .split_once("plan ")
        .map(|(_, rest)| rest.chars().take_while(char::is_ascii_hexdigit).collect())
        .unwrap_or_default();
    assert_eq!(id.len(), 32, "no plan id in {message:?}");
    id
}

fn names(upns: &[&str]) -> Vec<String> {
    upns.iter().enumerate().map(|(i, upn)| manifest_name(i, upn)).collect()
}

fn ids(records: &[Value]) -> Vec<u64> {
    records.iter().map(|r| r["id"].as_u64().expect("a numeric id")).collect()
}

fn at(record: &Value) -> DateTime<Utc> {
    record["at"].as_str().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).expect("an RFC 3339 time").to_utc()
}

fn kind(record: &Value) -> &str {
    record["event"]["kind"].as_str().expect("an event kind")
}

/// Approves the plan the three manifests wait for, as the operator; returns its id.
async fn approve_as_operator(daemon: &Daemon) -> String {
    let plan = daemon.held_plan(&names(&THREE)).await;
    for upn in THREE {
        assert!(daemon.sim().user(upn).expect("user").account_enabled, "{upn}: nothing is applied before approval");
    }
    let body = json!({ "comment": "INC-1: confirmed by the SOC lead" }).to_string();
    let accepted = daemon.post(&format!("/v1/approvals/{plan}"), Caller::Operator, &body).await.ok(202);
    assert_eq!(accepted, json!({ "accepted": true, "by": "otto", "planId": plan }));
    daemon.converged(&THREE).await;
    plan
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_wants_a_known_bearer_token_and_only_operators_and_administrators_act() {
    let daemon = Daemon::start(&THREE).await;
    let plan = daemon.held_plan(&names(&THREE)).await;
    daemon.handle.reconcile("test setup", None, None).await.expect("history record 1 exists");
    let reads =
        ["/v1/manifests", "/v1/manifests/inc-1-a", "/v1/history", "/v1/history/1", "/v1/history/verify", "/metrics"];
    let unheld = format!("/v1/approvals/{UNHELD_PLAN}");
    let acts = ["/v1/manifests/inc-1-a/reconcile", "/v1/reconcile", unheld.as_str()];
    for who in Caller::ALL {
        for path in reads {
            let reply = daemon.get(path, who).await;
            if !who.is_known() {
                reply.error(401, "unauthorized");
            } else if path == "/metrics" {
                assert_eq!(reply.status, 200, "{reply:#?}");
                assert!(reply.content_type.starts_with("text/plain; version=0.0.4"), "{reply:#?}");
            } else {
                reply.ok(200);
            }
        }
        for path in acts {
            let reply = daemon.post(path, who, "").await;
            match who {
                Caller::Nobody | Caller::Stranger | Caller::BasicScheme => {
                    reply.error(401, "unauthorized");
                }
                Caller::Reader => {
                    let message = reply.error(403, "forbidden");
                    assert!(message.contains("rita") && message.contains("security-reader"), "{message}");
                }
                // Past the role check, the controller says that plan is not held.
                Caller::Operator | Caller::Administrator if path == unheld => {
                    reply.error(409, "conflict");
                }
                Caller::Operator | Caller::Administrator => {
                    let body = reply.ok(202);
                    assert_eq!(body["accepted"], true, "{reply:#?}");
                    assert_eq!(body["by"], who.name(), "{reply:#?}");
                }
            }
        }
    }
    // The readers' 403 changed nothing: the plan is still held, and the administrator may approve it.
    let accepted = daemon.post(&format!("/v1/approvals/{plan}"), Caller::Administrator, "").await.ok(202);
    assert_eq!(accepted["by"], "ada");
    daemon.converged(&THREE).await;

    // Authentication comes before anything is read from the request.
    daemon.get("/v1/manifests/Not_A_Name", Caller::Nobody).await.error(401, "unauthorized");
    daemon.post("/v1/approvals/not-a-plan", Caller::Stranger, "{").await.error(401, "unauthorized");
    daemon.post("/v1/approvals/not-a-plan", Caller::Reader, "{").await.error(403, "forbidden");
    for header in
        ["Bearer", "Bearer ", "bearer", "Token administrator-token-1d7e5b", "Bearer  administrator-token-1d7e5bx"]
    {
        let reply = daemon
            .client
            .get(format!("{}/v1/manifests", daemon.base))
            .header(reqwest::header::AUTHORIZATION, header)
            .send()
            .await
            .expect("an answer");
        assert_eq!(reply.status(), 401, "{header:?}");
        assert!(reply.headers().contains_key(reqwest::header::WWW_AUTHENTICATE), "{header:?}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_without_a_token() {
    let daemon = Daemon::start(&["a@x.test"]).await;
    for who in [Caller::Nobody, Caller::Stranger, Caller::BasicScheme] {
        assert_eq!(daemon.get("/healthz", who).await.ok(200), json!({ "status": "ok" }));
        let ready = daemon.get("/readyz", who).await.ok(200);
        assert_eq!(ready["ready"], true, "{ready:#}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_served_without_a_token_and_printed_by_remedy_openapi() {
    let daemon = Daemon::start(&["a@x.test"]).await;
    let generated = Contract::generated().document;
    for who in [Caller::Nobody, Caller::Stranger, Caller::BasicScheme, Caller::Reader] {
        assert_eq!(daemon.get("/openapi.json", who).await.ok(200), generated, "as {who:?}");
    }
    let printed = std::process::Command::new(env!("CARGO_BIN_EXE_remedy")).arg("openapi").output().expect("runs");
    assert!(printed.status.success(), "{printed:?}");
    let printed: Value = serde_json::from_slice(&printed.stdout).expect("JSON on standard output");
    assert_eq!(printed, generated, "`remedy openapi` prints what the daemon serves");
    daemon.stop().await;
}

/// The checks against the document fail where they should: they are no rubber stamp.
#[test]
fn answers_the_openapi_document_does_not_allow_are_caught() {
    let contract = Contract::generated();
    let reply = |status: u16, content_type: &str, text: &str| Reply {
        asked: format!("a made-up {status}"),
        status,
        content_type: content_type.to_owned(),
        www_authenticate: (status == 401).then(|| "Bearer realm=\"remedy\"".to_owned()),
        text: text.to_owned(),
    };
    let json = "application/json";
    let condition = r#"{"type": "Ready", "status": "True", "reason": "Succeeded", "message": "",
        "lastTransitionTime": "2026-11-30T10:41:47Z"}"#;
    let good = format!(r#"{{"manifests": [{{"name": "inc-1-a", "conditions": [{condition}]}}]}}"#);
    contract.check("GET", "/v1/manifests", &reply(200, json, &good));
    let unauthorized = r#"{"error": {"code": "unauthorized", "message": "unknown token"}}"#;
    contract.check("GET", "/v1/manifests", &reply(401, json, unauthorized));
    let record = r#"{"id": 1, "at": "2026-11-30T10:41:47Z", "prevHash": "PREV", "hash": "HASH", "event": EVENT}"#
        .replace("PREV", &"0".repeat(64))
        .replace("HASH", &"a".repeat(64));
    let approval = r#"{"kind": "approval", "planId": "f892516a36e3b7d86f70055690fa467d", "by": "otto"}"#;
    contract.check("GET", "/v1/history/{id}", &reply(200, json, &record.replace("EVENT", approval)));

    let bad = [
        ("GET", "/v1/manifests", reply(200, json, &good.replace("inc-1-a", "Not_A_Name"))),
        ("GET", "/v1/manifests", reply(200, json, &good.replace("\"Ready\"", "\"Happy\""))),
        ("GET", "/v1/manifests", reply(200, json, &good.replace("2026-11-30T10:41:47Z", "yesterday"))),
        ("GET", "/v1/manifests", reply(200, json, r#"{"manifests": [{"conditions": []}]}"#)),
        ("GET", "/v1/manifests", reply(200, "text/plain", &good)),
        ("GET", "/v1/manifests", reply(418, json, &good)),
        ("GET", "/v1/manifests", reply(401, json, &unauthorized.replace("unauthorized", "forbidden"))),
        ("GET", "/v1/manifests", reply(401, json, r#"{"error": "unknown token"}"#)),
        (
            "GET",
            "/v1/history/{id}",
            reply(200, json, &record.replace("EVENT", &approval.replace("approval", "applause"))),
        ),
        ("GET", "/v1/history/{id}", reply(200, json, &record.replace("EVENT", &approval.replace("f892", "xyz0")))),
        (
            "GET",
            "/v1/history/{id}",
            reply(200, json, &record.replace("EVENT", r#"{"kind": "approval", "by": "otto"}"#)),
        ),
    ];
    for (method, template, reply) in bad {
        assert!(contract.verdict(method, template, &reply).is_err(), "{method} {template} passed: {reply:#?}");
    }
}

/// The documented `identity` filter allows only identities remedy takes (a fuzzer sends what the
/// pattern allows and expects no 400), and the usual forms of each kind.
#[test]
fn the_identity_filter_allows_only_identities_remedy_takes() {
    let contract = Contract::generated();
    let parameters = contract.operation("GET", "/v1/history")["parameters"].as_array().expect("parameters").clone();
    let identity = parameters.iter().find(|p| p["name"] == "identity").expect("the identity parameter");
    let validator = jsonschema::validator_for(&identity["schema"]).expect("the pattern compiles");
    let taken = [
        "upn:alice@contoso.com",
        "upn:Alice.O'Neil+x@Sub-1.Contoso.COM",
        "sam:alice",
        "sam:svc remedy$",
        "sam:a.b_c-d~{e}!#%&()^`",
        "guid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "guid:{6F9619FF-8B86-D011-B42D-00C04FC964FF}",
        "sid:S-1-5-21-1004336348-1177238915-682003330-512",
        "sid:s-1-5-32-544",
        "sid:S-1-5-4294967295-0-3999999999-4199999999-4289999999",
    ];
    for text in taken {
        assert!(text.parse::<remedy_policies::Identity>().is_ok(), "{text} is not taken");
        assert!(validator.is_valid(&json!(text)), "{text} is not allowed");
    }
    let refused = [
        "alice",
        "upn:alice",
        "upn:al ice@contoso.com",
        "upn:alice@-contoso.com",
        "upn:alice@contoso..com",
        "sam:",
        "sam:   ",
        "sam:alice.",
        "sam:a/b",
        "sam:abcdefghijklmnopqrstu",
        "guid:6f9619ff8b86d011b42d00c04fc964ff",
        "guid:{6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "sid:S-1-5",
        "sid:S-1-281474976710656-1",
        "sid:S-1-5-4294967296",
        "sid:S-1-5-5000000000",
        "sid:S-1-5-1-2-3-4-5-6-7-8-9-10-11-12-13-14-15-16",
        "UPN:alice@contoso.com",
    ];
    for text in refused {
        assert!(text.parse::<remedy_policies::Identity>().is_err(), "{text} is taken");
        assert!(!validator.is_valid(&json!(text)), "{text} is allowed");
    }
}

/// A value `GET /v1/history` accepts for each of its query parameters (the THREE daemon's).
const HISTORY_FILTERS: [(&str, &str); 8] = [
    ("identity", "upn:a@x.test"),
    ("manifest", "inc-1-a"),
    ("action", "suspend-user"),
    ("outcome", "succeeded"),
    ("since", "2020-01-01T00:00:00Z"),
    ("until", "2100-01-01T00:00:00Z"),
    ("after", "1"),
    ("limit", "1000"),
];

/// The document against the live daemon: every route it lists is served at its path and method,
/// and answers (success and error alike, for every kind of caller) only with statuses it lists,
/// each with the content type, headers and body shape it gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_as_the_openapi_document_says() {
    let daemon = Daemon::start(&THREE).await;
    let contract = Contract::generated();
    let plan = daemon.held_plan(&names(&THREE)).await;
    let concrete = |template: &str, plan: &str| {
        template.replace("{name}", "inc-1-a").replace("{id}", "1").replace("{planId}", plan)
    };
    let operations = contract.operations();
    let mut answered = BTreeSet::new();
    for (method, template) in &operations {
        let path = concrete(template, UNHELD_PLAN);
        for who in [Caller::Nobody, Caller::Stranger, Caller::BasicScheme, Caller::Reader, Caller::Operator] {
            let reply = daemon.send(method, &path, who, None).await;
            contract.check(method, template, &reply);
            if reply.status < 300 {
                answered.insert((method.clone(), template.clone()));
            }
        }
    }
    let approval = format!("/v1/approvals/{plan}");
    let body = json!({ "comment": "INC-1: confirmed by the SOC lead" }).to_string();
    let reply = daemon.post(&approval, Caller::Administrator, &body).await;
    contract.check("POST", "/v1/approvals/{planId}", &reply);
    assert_eq!(reply.status, 202, "{reply:#?}");
    answered.insert(("POST".to_owned(), "/v1/approvals/{planId}".to_owned()));
    let all: BTreeSet<(String, String)> = operations.iter().cloned().collect();
    assert_eq!(answered, all, "each route answered with success at least once");
    daemon.converged(&THREE).await;

    // Errors, each in the response the document gives for its status.
    let op = Caller::Operator;
    for (method, template, path, body, status) in [
        ("GET", "/v1/manifests/{name}", "/v1/manifests/Not_A_Name", None, 400),
        ("GET", "/v1/manifests/{name}", "/v1/manifests/%FF", None, 400),
        ("GET", "/v1/manifests/{name}", "/v1/manifests/no-such-manifest", None, 404),
        ("POST", "/v1/manifests/{name}/reconcile", "/v1/manifests/no-such-manifest/reconcile", None, 404),
        ("POST", "/v1/manifests/{name}/reconcile", "/v1/manifests/inc-1-a/reconcile", Some("[]"), 400),
        ("POST", "/v1/reconcile", "/v1/reconcile", Some("{not json"), 400),
        ("POST", "/v1/reconcile", "/v1/reconcile", Some("{\"comment\": 5}"), 400),
        ("POST", "/v1/approvals/{planId}", "/v1/approvals/not-a-plan", None, 400),
        ("POST", "/v1/approvals/{planId}", approval.as_str(), Some("null"), 400),
        ("POST", "/v1/approvals/{planId}", approval.as_str(), None, 409),
        ("GET", "/v1/history", "/v1/history?limit=0", None, 400),
        ("GET", "/v1/history", "/v1/history?since=yesterday", None, 400),
        ("GET", "/v1/history/{id}", "/v1/history/abc", None, 400),
        ("GET", "/v1/history/{id}", "/v1/history/999999", None, 404),
    ] {
        let reply = daemon.send(method, path, op, body).await;
        assert_eq!(reply.status, status, "{reply:#?}");
        contract.check(method, template, &reply);
    }
    let huge = format!("{{\"comment\": \"{}\"}}", "x".repeat(2 << 20));
    let reply = send(&http_client(&[]), &daemon.base, "POST", "/v1/reconcile", op, Some(&huge)).await;
    assert_eq!(reply.status, 413, "{reply:#?}");
    contract.check("POST", "/v1/reconcile", &reply);
    // What no route documents: a path that is not one, a method a path does not take.
    for path in ["/", "/v1/nothing-here", "/v1/manifests/inc-1-a/status"] {
        let reply = daemon.get(path, Caller::Administrator).await;
        assert_eq!(reply.status, 404, "{reply:#?}");
        contract.check_response(contract.component("NotFound"), &reply);
    }
    for (method, path) in [("DELETE", "/v1/manifests"), ("GET", "/v1/reconcile"), ("POST", "/openapi.json")] {
        let reply = daemon.send(method, path, Caller::Administrator, None).await;
        assert_eq!(reply.status, 405, "{reply:#?}");
        contract.check_response(contract.component("MethodNotAllowed"), &reply);
    }

    // The history's query parameters are the ones documented, and each is taken.
    let documented: BTreeSet<&str> = contract.operation("GET", "/v1/history")["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(documented, HISTORY_FILTERS.iter().map(|(name, _)| *name).collect());
    let message = daemon.get("/v1/history?colour=blue", Caller::Reader).await.error(400, "bad-request");
    let named: BTreeSet<&str> = message.rsplit_once("use ").expect("the names").1.split(", ").collect();
    assert_eq!(named, documented, "the 400 for an unknown parameter names the documented ones: {message}");
    for (name, value) in HISTORY_FILTERS {
        let reply = daemon.get(&format!("/v1/history?{name}={value}"), Caller::Reader).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        contract.check("GET", "/v1/history", &reply);
    }

    // Every kind of event, in the list and one by one; the statuses once converged.
    let reply = daemon.get("/v1/history?limit=1000", Caller::Reader).await;
    contract.check("GET", "/v1/history", &reply);
    let records = reply.json()["records"].as_array().expect("records").clone();
    for event in ["action", "approval", "reconcile-request"] {
        let record = records.iter().find(|r| kind(r) == event).unwrap_or_else(|| panic!("no {event}: {records:#?}"));
        let reply = daemon.get(&format!("/v1/history/{}", record["id"]), Caller::Reader).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        contract.check("GET", "/v1/history/{id}", &reply);
    }
    for path in ["/v1/manifests", "/v1/manifests/inc-2-b", "/v1/history/verify", "/readyz"] {
        let reply = daemon.get(path, Caller::Reader).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        let template = if path == "/v1/manifests/inc-2-b" { "/v1/manifests/{name}" } else { path };
        contract.check("GET", template, &reply);
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_what_was_wrong() {
    let daemon = Daemon::start(&THREE).await;
    daemon.held_plan(&names(&THREE)).await;
    let op = Caller::Operator;

    let message = daemon.get("/v1/manifests/Not_A_Name", Caller::Reader).await.error(400, "bad-request");
    assert!(message.contains("Not_A_Name"), "{message}");
    let message = daemon.post("/v1/manifests/Not_A_Name/reconcile", op, "").await.error(400, "bad-request");
    assert!(message.contains("Not_A_Name"), "{message}");
    let message = daemon.post("/v1/approvals/not-a-plan", op, "").await.error(400, "bad-request");
    assert!(message.contains("not-a-plan") && message.contains("plan id"), "{message}");
    let message = daemon.post("/v1/approvals/0123456789abcdef", op, "").await.error(400, "bad-request");
    assert!(message.contains("32 hexadecimal digits"), "{message}");

    for (query, mentions) in [
        ("limit=0", ["limit", "between 1 and 1000"]),
        ("limit=1001", ["limit", "between 1 and 1000"]),
        ("limit=ten", ["limit", "\"ten\""]),
        ("since=yesterday", ["since", "RFC 3339"]),
        ("until=2026-13-01T00:00:00Z", ["until", "RFC 3339"]),
        ("outcome=bogus", ["outcome", "\"bogus\""]),
        ("action=bogus", ["action", "\"bogus\""]),
        ("identity=alice", ["identity", "alice"]),
        ("manifest=Not_A_Name", ["manifest", "Not_A_Name"]),
        ("after=first", ["after", "\"first\""]),
        ("colour=blue", ["unknown query parameter", "\"colour\""]),
        ("limit=5&sort=desc", ["unknown query parameter", "\"sort\""]),
    ] {
        let message = daemon.get(&format!("/v1/history?{query}"), Caller::Reader).await.error(400, "bad-request");
        assert!(mentions.iter().all(|m| message.contains(m)), "{query}: {message}");
    }
    let message = daemon.get("/v1/history/abc", Caller::Reader).await.error(400, "bad-request");
    assert!(message.contains("\"abc\"") && message.contains("record id"), "{message}");
    let message = daemon.get("/v1/history/-1", Caller::Reader).await.error(400, "bad-request");
    assert!(message.contains("\"-1\""), "{message}");

    let approve = format!("/v1/approvals/{UNHELD_PLAN}");
    for body in ["{not json", "{\"comment\": 5}", "{\"comment\": \"ok\", \"colour\": \"blue\"}", "[\"x\"]", "[]"] {
        let message = daemon.post(&approve, op, body).await.error(400, "bad-request");
        assert!(message.contains("comment"), "{body}: {message}");
    }
    let message = daemon.post("/v1/reconcile", op, "{not json").await.error(400, "bad-request");
    assert!(message.contains("comment"), "{message}");

    let message = daemon.get("/v1/manifests/no-such-manifest", Caller::Reader).await.error(404, "not-found");
    assert!(message.contains("no-such-manifest"), "{message}");
    let message = daemon.post("/v1/manifests/no-such-manifest/reconcile", op, "").await.error(404, "not-found");
    assert!(message.contains("no-such-manifest"), "{message}");
    let message = daemon.get("/v1/history/999999", Caller::Reader).await.error(404, "not-found");
    assert!(message.contains("999999"), "{message}");
    for path in ["/v1/nothing-here", "/v1/manifests/inc-1-a/status", "/", "/v2/manifests"] {
        daemon.get(path, Caller::Administrator).await.error(404, "not-found");
        daemon.get(path, Caller::Nobody).await.error(404, "not-found");
    }

    for (method, path) in [
        ("DELETE", "/v1/manifests"),
        ("PUT", "/v1/manifests/inc-1-a"),
        ("GET", "/v1/reconcile"),
        ("GET", "/v1/manifests/inc-1-a/reconcile"),
        ("POST", "/v1/history"),
        ("GET", "/v1/approvals/0123456789abcdef0123456789abcdef"),
        ("POST", "/metrics"),
        ("POST", "/healthz"),
    ] {
        daemon.send(method, path, Caller::Administrator, None).await.error(405, "method-not-allowed");
    }

    let message = daemon.post(&approve, op, "{\"comment\": \"wrong plan\"}").await.error(409, "conflict");
    assert!(message.contains(UNHELD_PLAN) && message.contains("not waiting for approval"), "{message}");

    // What axum itself refuses is answered in the API's shape too: a path that does not decode
    // to text, a body over the size limit.
    daemon.get("/v1/manifests/%FF", Caller::Reader).await.error(400, "bad-request");
    daemon.post("/v1/manifests/%FF/reconcile", op, "").await.error(400, "bad-request");
    daemon.get("/v1/history/%FF", Caller::Reader).await.error(400, "bad-request");
    daemon.post("/v1/approvals/%FF", op, "").await.error(400, "bad-request");
    // (On a connection of its own: the server closes it rather than read the rest.)
    let huge = format!("{{\"comment\": \"{}\"}}", "x".repeat(2 << 20));
    send(&http_client(&[]), &daemon.base, "POST", "/v1/reconcile", op, Some(&huge)).await.error(413, "too-large");
    // The history holds no trace of any of it.
    let history = daemon.history().await;
    assert!(history.iter().all(|r| kind(r) == "action"), "{history:#?}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_plan_is_approved_over_the_api_and_the_history_tells_who_did_what() {
    let daemon = Daemon::start(&THREE).await;
    let plan = daemon.held_plan(&names(&THREE)).await;
    for (name, status) in daemon.statuses().await {
        let stalled = condition(&status, "Stalled");
        let message = stalled["message"].as_str().expect("a message");
        assert!(message.contains("maxChangesPerReconcile (2)") && message.contains(&plan), "{name}: {message}");
        assert_eq!(condition(&status, "Ready")["status"], "False", "{name}: {status:#}");
    }
    approve_as_operator(&daemon).await;
    let status = daemon.get("/v1/manifests/inc-2-b", Caller::Reader).await.ok(200);
    assert_eq!(status["name"], "inc-2-b");
    assert_eq!(condition(&status, "Ready")["status"], "True", "{status:#}");
    assert_eq!(condition(&status, "Stalled")["status"], "False", "{status:#}");

    let reconcile = daemon.post("/v1/manifests/inc-2-b/reconcile", Caller::Administrator, "").await.ok(202);
    assert_eq!(reconcile, json!({ "accepted": true, "by": "ada", "manifest": "inc-2-b" }));
    let reconcile =
        daemon.post("/v1/reconcile", Caller::Operator, "{\"comment\": \"after the DC patch\"}").await.ok(202);
    assert_eq!(reconcile, json!({ "accepted": true, "by": "otto" }));

    let records = daemon.history().await;
    let approvals: Vec<&Value> = records.iter().filter(|r| kind(r) == "approval").collect();
    assert_eq!(approvals.len(), 1, "{records:#?}");
    let approval = approvals[0];
    assert_eq!(approval["event"]["planId"], plan.as_str());
    assert_eq!(approval["event"]["by"], "otto", "the approval names the operator's token");
    assert_eq!(approval["event"]["comment"], "INC-1: confirmed by the SOC lead");
    let requests: Vec<&Value> = records.iter().filter(|r| kind(r) == "reconcile-request").collect();
    assert_eq!(requests.len(), 2, "{records:#?}");
    assert_eq!(requests[0]["event"], json!({ "kind": "reconcile-request", "by": "ada", "manifest": "inc-2-b" }));
    assert_eq!(
        requests[1]["event"],
        json!({ "kind": "reconcile-request", "by": "otto", "comment": "after the DC patch" }),
        "the comment is recorded"
    );

    let succeeded: Vec<&Value> = records.iter().filter(|r| r["event"]["outcome"] == "succeeded").collect();
    let suspended: BTreeSet<&str> = succeeded.iter().map(|r| r["event"]["identity"].as_str().expect("id")).collect();
    assert_eq!(suspended, BTreeSet::from(["upn:a@x.test", "upn:b@x.test", "upn:c@x.test"]), "{records:#?}");
    for record in &succeeded {
        let event = &record["event"];
        assert_eq!((&event["provider"], &event["action"]), (&json!("entra-id"), &json!("suspend-user")), "{record:#}");
        let (before, after) = (event["before"].as_str().expect("before"), event["after"].as_str().expect("after"));
        assert!(!before.is_empty() && !after.is_empty() && before != after, "{record:#}");
        assert!(record["id"].as_u64() > approval["id"].as_u64(), "applied after the approval: {record:#}");
        assert!(event["reason"].as_str().is_some_and(|r| r.contains("known bad ASN")), "{record:#}");
    }
    let held: Vec<&Value> = records.iter().filter(|r| r["event"]["outcome"] == "held").collect();
    assert!(held.len() >= 3, "the held actions are on record: {records:#?}");
    assert!(held.iter().all(|r| r["id"].as_u64() < approval["id"].as_u64()), "{records:#?}");

    // Paging: one record at a time, each exactly once, in order.
    let mut walked = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let query = after.map_or(String::new(), |id| format!("&after={id}"));
        let page = daemon.get(&format!("/v1/history?limit=1{query}"), Caller::Reader).await.ok(200);
        let got = page["records"].as_array().expect("records");
        assert!(got.len() <= 1, "{page:#}");
        walked.extend(got.iter().cloned());
        match page.get("nextAfter") {
            Some(next) => {
                assert_eq!(next.as_u64(), got.last().and_then(|r| r["id"].as_u64()), "{page:#}");
                after = next.as_u64();
            }
            None => break,
        }
        assert!(walked.len() <= records.len(), "the walk goes past the end: {walked:#?}");
    }
    assert_eq!(walked, records, "paging with limit=1 returns every record once, in order");

    // Filters narrow to exactly what they say.
    let check = |query: &str, expected: Vec<&Value>| {
        let expected: Vec<u64> = expected.iter().map(|r| r["id"].as_u64().expect("id")).collect();
        (query.to_owned(), expected)
    };
    let approved_at = at(approval);
    let t = approved_at.to_rfc3339_opts(SecondsFormat::Nanos, true);
    let cases = [
        check("identity=upn:a@x.test", records.iter().filter(|r| r["event"]["identity"] == "upn:a@x.test").collect()),
        check("outcome=succeeded", succeeded.clone()),
        check("outcome=held", held.clone()),
        check("action=suspend-user", records.iter().filter(|r| r["event"]["action"] == "suspend-user").collect()),
        check(
            "manifest=inc-2-b",
            records
                .iter()
                .filter(|r| {
                    r["event"]["manifest"] == "inc-2-b"
                        || r["event"]["manifests"].as_array().is_some_and(|m| m.iter().any(|m| m["name"] == "inc-2-b"))
                })
                .collect(),
        ),
        check(&format!("since={t}"), records.iter().filter(|r| at(r) >= approved_at).collect()),
        check(&format!("until={t}"), records.iter().filter(|r| at(r) < approved_at).collect()),
        check(
            &format!("identity=upn:c@x.test&outcome=succeeded&since={t}"),
            succeeded.iter().copied().filter(|r| r["event"]["identity"] == "upn:c@x.test").collect(),
        ),
    ];
    for (query, expected) in cases {
        assert!(!expected.is_empty() && expected.len() < records.len(), "{query}: narrows nothing: {expected:?}");
        let page = daemon.get(&format!("/v1/history?{query}&limit=1000"), Caller::Reader).await.ok(200);
        let got = ids(page["records"].as_array().expect("records"));
        assert_eq!(got, expected, "{query}");
    }

    // One record, in full; and the chain checks out.
    let id = approval["id"].as_u64().expect("id");
    assert_eq!(&daemon.get(&format!("/v1/history/{id}"), Caller::Reader).await.ok(200), approval);
    let verified = daemon.get("/v1/history/verify", Caller::Reader).await.ok(200);
    assert_eq!(verified["verified"], true, "{verified:#}");
    assert_eq!(verified["records"].as_u64(), Some(records.len() as u64), "{verified:#}");
    assert_eq!(verified["headHash"], records.last().expect("records")["hash"], "{verified:#}");
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prevHash"], pair[0]["hash"], "{pair:#?}");
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_valid_prometheus_text_and_count_what_happened() {
    let daemon = Daemon::start(&THREE).await;
    approve_as_operator(&daemon).await;
    let reply = daemon.get("/metrics", Caller::Reader).await;
    assert_eq!(reply.status, 200, "{reply:#?}");
    assert_eq!(reply.content_type, "text/plain; version=0.0.4; charset=utf-8");
    let metrics = parse_exposition(&reply.text).unwrap_or_else(|e| panic!("{e}\n{}", reply.text));
    let value = |name: &str, labels: &[(&str, &str)]| {
        metrics.value(name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in\n{}", reply.text))
    };
    assert_eq!(metrics.types.get("remedy_reconciles_total").map(String::as_str), Some("counter"));
    assert_eq!(metrics.types.get("remedy_reconcile_duration_seconds").map(String::as_str), Some("histogram"));
    assert!(
        value("remedy_actions_total", &[("provider", "entra-id"), ("outcome", "succeeded")]) >= 3.0,
        "{}",
        reply.text
    );
    assert!(value("remedy_actions_total", &[("provider", "entra-id"), ("outcome", "held")]) >= 3.0, "{}", reply.text);
    assert!(value("remedy_reconciles_total", &[("outcome", "held")]) >= 1.0, "{}", reply.text);
    assert_eq!(value("remedy_reconciles_total", &[("outcome", "error")]), 0.0, "{}", reply.text);
    assert_eq!(value("remedy_provider_errors_total", &[("provider", "entra-id")]), 0.0, "{}", reply.text);
    assert_eq!(value("remedy_manifests", &[]), 3.0, "{}", reply.text);
    assert_eq!(value("remedy_queue_depth", &[]), 0.0, "{}", reply.text);
    // Three suspensions and their verification, observed and written in batches: the requests
    // Graph saw are counted, and they are batches, not one request per user and step.
    assert!(value("remedy_graph_requests_total", &[("kind", "batch")]) >= 2.0, "{}", reply.text);
    assert!(value("remedy_graph_batched_requests_total", &[]) >= 6.0, "{}", reply.text);
    assert_eq!(value("remedy_graph_throttled_total", &[]), 0.0, "{}", reply.text);
    assert!(!reply.text.contains("remedy_ldap_"), "no AD configured, no LDAP counters: {}", reply.text);
    let passes = metrics.sum("remedy_reconciles_total");
    assert!(passes >= 2.0, "held, then applied: {}", reply.text);
    assert_eq!(value("remedy_reconcile_duration_seconds_count", &[]), passes, "one observation per pass");
    assert!(value("remedy_reconcile_duration_seconds_sum", &[]) > 0.0, "{}", reply.text);
    assert!(metrics.samples.iter().all(|s| s.family.starts_with("remedy_")), "{}", reply.text);

    // Counters only grow: another pass adds to them.
    daemon.post("/v1/reconcile", Caller::Operator, "").await.ok(202);
    let deadline = Deadline::after("the requested pass to be counted", Duration::from_secs(10));
    loop {
        let again = daemon.get("/metrics", Caller::Administrator).await;
        let later = parse_exposition(&again.text).unwrap_or_else(|e| panic!("{e}\n{}", again.text));
        for sample in metrics.samples.iter().filter(|s| metrics.types[&s.family] == "counter") {
            let now = later
                .value(&sample.name, &sample.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
            assert!(now.is_some_and(|v| v >= sample.value), "{} went down or away: {}", sample.name, again.text);
        }
        if later.sum("remedy_reconciles_total") > passes {
            break;
        }
        deadline.wait(&again.text).await;
    }
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_entra_id_once_graph_cannot_be_reached() {
    let mut daemon = Daemon::start(&["a@x.test"]).await;
    daemon.converged(&["a@x.test"]).await;
    let ready = daemon.get("/readyz", Caller::Nobody).await.ok(200);
    assert_eq!(
        ready,
        json!({ "ready": true, "store": "open", "manifestsLoaded": true, "unavailableProviders": {} }),
        "{ready:#}"
    );

    daemon.sim.take().expect("graph-sim runs").shutdown().await;
    daemon.post("/v1/reconcile", Caller::Operator, "").await.ok(202);
    let deadline = Deadline::after("/readyz to report Entra ID unavailable", Duration::from_secs(15));
    let body = loop {
        let reply = daemon.get("/readyz", Caller::Nobody).await;
        if reply.status == 503 {
            Contract::generated().check("GET", "/readyz", &reply);
            break reply.json();
        }
        assert_eq!(reply.status, 200, "{reply:#?}");
        deadline.wait(&reply).await;
    };
    assert_eq!(body["ready"], false, "{body:#}");
    assert_eq!(body["manifestsLoaded"], true, "{body:#}");
    let providers = body["unavailableProviders"].as_object().expect("a map");
    assert_eq!(providers.keys().collect::<Vec<_>>(), ["entra-id"], "{body:#}");
    assert!(providers["entra-id"].as_str().is_some_and(|why| !why.is_empty()), "{body:#}");
    // Alive, though not ready; and the API still answers.
    assert_eq!(daemon.get("/healthz", Caller::Nobody).await.ok(200), json!({ "status": "ok" }));
    let status = daemon.get("/v1/manifests/inc-1-a", Caller::Reader).await.ok(200);
    assert_eq!(condition(&status, "Ready")["reason"], "ProviderUnavailable", "{status:#}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_https_with_the_configured_certificate_and_refuses_plain_http() {
    let (daemon, certificate) = Daemon::start_tls(&["a@x.test"]).await;
    assert!(daemon.base.starts_with("https://127.0.0.1:"), "{}", daemon.base);
    let trusting = http_client(&[certificate]);
    let port = daemon.base.rsplit(':').next().expect("a port");
    for base in [daemon.base.clone(), format!("https://localhost:{port}")] {
        let reply = send(&trusting, &base, "GET", "/healthz", Caller::Nobody, None).await;
        assert_eq!(reply.ok(200), json!({ "status": "ok" }));
        let manifests = send(&trusting, &base, "GET", "/v1/manifests", Caller::Reader, None).await.ok(200);
        assert_eq!(manifests["manifests"][0]["name"], "inc-1-a", "{manifests:#}");
        send(&trusting, &base, "GET", "/v1/manifests", Caller::Nobody, None).await.error(401, "unauthorized");
    }
    let plain = format!("http://127.0.0.1:{port}/healthz");
    let refused = daemon.client.get(&plain).send().await;
    assert!(refused.is_err(), "plain HTTP to the HTTPS port: {refused:?}");
    let untrusting = http_client(&[]);
    let refused = untrusting.get(format!("{}/healthz", daemon.base)).send().await;
    assert!(refused.is_err(), "a client that does not trust the certificate: {refused:?}");
    // The listener still serves after those failed handshakes.
    send(&trusting, &daemon.base, "GET", "/healthz", Caller::Nobody, None).await.ok(200);
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_its_tls_handshake_does_not_hold_up_the_others() {
    let (daemon, certificate) = Daemon::start_tls(&["a@x.test"]).await;
    let address = daemon.base.trim_start_matches("https://").to_owned();
    // Connects and sends nothing, as a port scanner or a slow client would.
    let _silent = tokio::net::TcpStream::connect(&address).await.expect("connects");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let trusting = http_client(&[certificate]);
    let started = Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(3), trusting.get(format!("{}/healthz", daemon.base)).send())
        .await
        .unwrap_or_else(|_| panic!("no answer within 3 s while another client stalls its handshake"))
        .expect("an answer");
    assert_eq!(answer.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(3));
    daemon.stop().await;
}
