//! What operators see of several instances (issue 18): two real `remedy serve` processes on the
//! etcd cluster of `scripts/ha` and the Samba DC, one leading, one standing by. `/readyz` says
//! which is which, requests made on the standby are queued for the leader (the API's and the web
//! page's), the leader records them in the one history that both serve, and `/metrics` shows each
//! instance's part.
//!
//! Needs `scripts/ha start && eval "$(scripts/ha env)"` (REMEDY_TEST_ETCD_ENDPOINTS); fails, saying
//! so, without it. Each run campaigns under a prefix of its own.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::daemon::{config_yaml, manifest, Options, DISABLE, HOURLY};
use crate::support::dc::{read_user, Dc};
use crate::support::etcd::{endpoints, Etcd};
use crate::support::serve::{Serve, Tokens, Who};
use crate::support::{free_port, http_client};

const OPERATOR: (&str, &str) = ("op-alice", "ha-api-operator-token-0123456789abcdef");
const READER: (&str, &str) = ("grafana", "ha-api-reader-token-0123456789abcdef01");

/// One `remedy serve` of the pair.
struct Instance {
    id: &'static str,
    serve: Serve,
    base: String,
}

/// An answer: status, body as JSON (or `Value::Null`), and the text.
#[derive(Debug)]
struct Reply {
    status: u16,
    location: Option<String>,
    set_cookie: Option<String>,
    json: Value,
    text: String,
}

/// The test's HTTP client, plain HTTP to the loopback listeners.
struct Http(reqwest::Client);

impl Http {
    async fn send(
        &self,
        on: &Instance,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        form: Option<(&str, &[(&str, &str)])>,
    ) -> Reply {
        let mut request = self.0.request(method.parse().expect("method"), format!("{}{path}", on.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some((cookie, fields)) = form {
            let encoded: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
            request = request
                .header("Cookie", format!("remedy_session={cookie}"))
                .header("Origin", on.base.as_str())
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(encoded.join("&"));
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path} on {}: {e}", on.id));
        let status = response.status().as_u16();
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (location, set_cookie) = (header("location"), header("set-cookie"));
        let text = response.text().await.expect("a body");
        Reply { status, location, set_cookie, json: serde_json::from_str(&text).unwrap_or(Value::Null), text }
    }

    async fn get(&self, on: &Instance, path: &str, token: Option<&str>) -> Reply {
        self.send(on, "GET", path, token, None, None).await
    }

    async fn post(&self, on: &Instance, path: &str, token: &str, body: Option<Value>) -> Reply {
        self.send(on, "POST", path, Some(token), body, None).await
    }

    /// Waits until `done` holds for `GET path` on `on` (as the reader), which it returns.
    async fn wait_for(&self, on: &mut Instance, path: &str, what: &str, done: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let token = (!path.starts_with("/readyz")).then_some(READER.1);
            let reply = self.get(on, path, token).await;
            if done(&reply) {
                return reply;
            }
            on.serve.assert_running();
            assert!(Instant::now() < deadline, "{}: not {what} within 60 s: {reply:#?}\n{}", on.id, on.serve.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The history records on `on`, as the reader reads them.
    async fn history(&self, on: &Instance) -> Vec<Value> {
        let reply = self.get(on, "/v1/history?limit=1000", Some(READER.1)).await;
        assert_eq!(reply.status, 200, "{reply:#?}");
        reply.json["records"].as_array().cloned().expect("records")
    }

    /// Signs in on `on`'s web page with `token`: the session id.
    async fn sign_in(&self, on: &Instance, token: &str) -> String {
        let request = self
            .0
            .post(format!("{}/ui/sign-in", on.base))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={}", urlencode(token)));
        let response = request.send().await.expect("sign in");
        assert_eq!(response.status().as_u16(), 303, "sign-in on {}", on.id);
        let cookie = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("a cookie");
        cookie.split(';').next().and_then(|p| p.strip_prefix("remedy_session=")).expect("the session").to_owned()
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// The value of the sample `name{instance="<id>"}` in a Prometheus text.
fn sample(metrics: &str, name: &str, id: &str) -> f64 {
    let prefix = format!("{name}{{instance=\"{id}\"}} ");
    let line = metrics.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {prefix}in:\n{metrics}"));
    line[prefix.len()..].trim().parse().unwrap_or_else(|_| panic!("not a number: {line}"))
}

/// Panics unless `body` is what the OpenAPI document gives for `method template` answering `status`.
fn documented(method: &str, template: &str, status: u16, body: &Value) {
    let document = serde_json::to_value(remedy::api::openapi()).expect("the document is JSON");
    let mut response = &document["paths"][template][method]["responses"][status.to_string()];
    if let Some(reference) = response["$ref"].as_str() {
        response = document.pointer(reference.strip_prefix('#').expect("local")).expect("the reference resolves");
    }
    let schema = response["content"]["application/json"]["schema"].clone();
    assert!(schema.is_object(), "{method} {template} {status} is not documented");
    // The document as the root (for `#/components/...`), with the schema to apply.
    let mut root = document.clone();
    root["allOf"] = json!([schema]);
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .build(&root)
        .expect("the schema compiles");
    let errors: Vec<String> =
        validator.iter_errors(body).map(|e| format!("at {:?}: {e}", e.instance_path().as_str())).collect();
    assert!(
        errors.is_empty(),
        "{method} {template} {status}: {body:#}\ndoes not match the document:\n{}",
        errors.join("\n")
    );
}

/// Whether `record` is a reconcile request or an approval made by `by`.
fn made_by(record: &Value, kind: &str, by: &str) -> bool {
    record["event"]["kind"] == kind && record["event"]["by"] == by
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_says_who_leads_queues_requests_for_it_and_serves_the_history_the_leader_records() {
    let endpoints = endpoints();
    let dc = Dc::shared().await;
    // No member is stopped while this test uses the cluster (the ha and ha_coord tests that stop
    // members hold it exclusively).
    let _etcd = Etcd::shared().await;
    let ou = dc.ou("ha-api").await;
    let users = [ou.add_user("haa1", 512).await, ou.add_user("haa2", 512).await];
    let root = tempfile::tempdir().expect("temporary directory");
    let manifests = root.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifest directory");
    for (i, user) in users.iter().enumerate() {
        let name = format!("inc-ha-api-{i}");
        std::fs::write(manifests.join(format!("{name}.yaml")), manifest(&name, &user.sam, DISABLE)).expect("write");
    }
    let tokens = Tokens::write(root.path(), OPERATOR, READER, "ha-api-nobody");
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("time").as_nanos();
    let prefix = format!("/remedy-test/ha-api-{}-{nanos}/", std::process::id());
    // Two new changes, one allowed at once: the plan is held until someone approves it.
    let options = Options { resync: HOURLY, max_changes: 1, with_entra: false, ..Options::default() };
    let start = |id: &'static str| {
        let dir = root.path().join(id);
        std::fs::create_dir(&dir).expect("instance directory");
        let port = free_port();
        let yaml = format!(
            "{}api:\n  listen: 127.0.0.1:{port}\n  tokens:\n{}ha:\n  instanceId: {id}\n  leaseTtl: 4s\n  sendTimeout: 2s\n  \
             etcd:\n    endpoints: {endpoints:?}\n    prefix: \"{prefix}\"\n    insecurePlaintext: true\n",
            config_yaml(&dc, &dir, &manifests, &options, None),
            tokens.yaml(),
        );
        let config = dir.join("remedy.yaml");
        std::fs::write(&config, yaml).expect("remedy.yaml");
        let serve = Serve::start(&config, dir.join("serve.log"), "info", false);
        (Instance { id, serve, base: format!("http://127.0.0.1:{port}") }, port)
    };

    // remedy-a first: it leads, and holds the plan. Then remedy-b: it stands by.
    let (mut a, port_a) = start("remedy-a");
    a.serve.wait_for_port(port_a, Duration::from_secs(30)).await;
    let http = Http(http_client(&[]));
    let ready_a = http
        .wait_for(&mut a, "/readyz", "the ready leader", |r| r.status == 200 && r.json["ha"]["role"] == "leader")
        .await;
    let (mut b, port_b) = start("remedy-b");
    b.serve.wait_for_port(port_b, Duration::from_secs(30)).await;
    assert_eq!(ready_a.json["ha"]["instanceId"], "remedy-a", "{ready_a:#?}");
    assert_eq!(ready_a.json["ha"]["leader"]["instanceId"], "remedy-a");
    assert_eq!(ready_a.json["ha"]["leaseTtlSeconds"], 4);
    assert!(ready_a.json["ha"]["leaseRemainingSeconds"].as_f64().is_some_and(|s| s > 0.0 && s <= 4.0), "{ready_a:#?}");
    assert_eq!(ready_a.json["manifestsLoaded"], true);
    let ready_b = http
        .wait_for(&mut b, "/readyz", "the ready standby", |r| {
            r.status == 200 && r.json["ha"]["role"] == "standby" && r.json["ha"]["leader"]["instanceId"] == "remedy-a"
        })
        .await;
    assert_eq!(ready_b.json["ha"]["instanceId"], "remedy-b");
    assert_eq!(ready_b.json["ha"]["caughtUp"], true);
    assert_eq!(ready_b.json["ha"]["leaseRemainingSeconds"], Value::Null, "{ready_b:#?}");
    assert_eq!(ready_b.json["ha"]["etcdError"], Value::Null);
    assert_eq!(ready_b.json["manifestsLoaded"], false, "a standby loads no manifests, and is ready all the same");
    documented("get", "/readyz", 200, &ready_a.json);
    documented("get", "/readyz", 200, &ready_b.json);
    // The standby serves the statuses the leader wrote: the plan held.
    let held = http
        .wait_for(&mut b, "/v1/manifests", "the held plan replicated", |r| {
            r.json["manifests"]
                .as_array()
                .is_some_and(|m| m.len() == 2 && m.iter().all(|s| s["heldPlanId"].is_string()))
        })
        .await;
    let plan = held.json["manifests"][0]["heldPlanId"].as_str().expect("a plan id").to_owned();

    // A reader's requests on the standby are refused before anything is queued.
    let reader_reconcile = http.post(&b, "/v1/reconcile", READER.1, None).await;
    assert_eq!((reader_reconcile.status, &reader_reconcile.json["error"]["code"]), (403, &json!("forbidden")));
    let reader_approve = http.post(&b, &format!("/v1/approvals/{plan}"), READER.1, None).await;
    assert_eq!(reader_approve.status, 403, "{reader_approve:#?}");
    // What the standby can tell from its replica is refused there too.
    let unknown = http.post(&b, "/v1/manifests/inc-ha-api-nope/reconcile", OPERATOR.1, None).await;
    assert_eq!((unknown.status, &unknown.json["error"]["code"]), (404, &json!("not-found")), "{unknown:#?}");
    let other_plan = http.post(&b, &format!("/v1/approvals/{}", "0".repeat(32)), OPERATOR.1, None).await;
    assert_eq!(other_plan.status, 409, "{other_plan:#?}");
    assert!(other_plan.text.contains(&plan), "the message names the held plan: {other_plan:#?}");

    // The web page's Approve button on the standby: queued for the leader, which applies the plan.
    let session = http.sign_in(&b, OPERATOR.1).await;
    let page = http.send(&b, "GET", "/ui/approvals", None, None, Some((&session, &[]))).await;
    assert!(page.text.contains("Approve plan"), "the standby offers the held plan for approval: {}", page.text);
    let marker = "name=\"csrf\" value=\"";
    let at = page.text.find(marker).expect("a CSRF field") + marker.len();
    let csrf = page.text[at..at + 64].to_owned();
    let fields = [("csrf", csrf.as_str()), ("comment", "INC-7 ok")];
    let approved = http.send(&b, "POST", &format!("/ui/approvals/{plan}"), None, None, Some((&session, &fields))).await;
    assert_eq!((approved.status, approved.location.clone()), (303, Some(format!("/ui/approvals?queued={plan}"))));
    assert!(approved.set_cookie.is_none());
    let confirmed =
        http.send(&b, "GET", &format!("/ui/approvals?queued={plan}"), None, None, Some((&session, &[]))).await;
    assert!(confirmed.text.contains("is queued for the leader remedy-a"), "{}", confirmed.text);
    let mut ldap = dc.admin().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    for user in &users {
        while read_user(&mut ldap, &user.dn).await.user_account_control & 2 == 0 {
            assert!(Instant::now() < deadline, "the approved plan was not applied; leader's log:\n{}", a.serve.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A reconcile asked of the standby: 202 queued, naming the leader.
    let queued = http.post(&b, "/v1/reconcile", OPERATOR.1, Some(json!({"comment": "after INC-7"}))).await;
    assert_eq!(queued.status, 202, "{queued:#?}");
    assert_eq!(queued.json, json!({"queued": true, "leader": "remedy-a", "by": "op-alice"}));
    documented("post", "/v1/reconcile", 202, &queued.json);
    let named = http.post(&b, "/v1/manifests/inc-ha-api-1/reconcile", OPERATOR.1, None).await;
    assert_eq!(named.json, json!({"queued": true, "leader": "remedy-a", "by": "op-alice", "manifest": "inc-ha-api-1"}));
    documented("post", "/v1/manifests/{name}/reconcile", 202, &named.json);
    // On the leader, as with one instance.
    let on_leader = http.post(&a, "/v1/reconcile", OPERATOR.1, None).await;
    assert_eq!(on_leader.json, json!({"accepted": true, "by": "op-alice"}), "{on_leader:#?}");

    // The leader records each request in the history; both instances serve the same records.
    for instance in [&mut a, &mut b] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let records = http.history(instance).await;
            let requests: Vec<&Value> =
                records.iter().filter(|r| made_by(r, "reconcile-request", "op-alice")).collect();
            let approval = records.iter().find(|r| made_by(r, "approval", "op-alice"));
            if let (3, Some(approval)) = (requests.len(), approval) {
                assert!(requests.iter().any(|r| r["event"]["comment"] == "after INC-7"), "{requests:#?}");
                assert!(requests.iter().any(|r| r["event"]["manifest"] == "inc-ha-api-1"), "{requests:#?}");
                assert_eq!(
                    (&approval["event"]["planId"], &approval["event"]["comment"]),
                    (&json!(plan), &json!("INC-7 ok"))
                );
                assert!(
                    !records.iter().any(|r| r["event"]["by"] == "grafana"),
                    "the reader's refused requests were queued after all: {records:#?}"
                );
                break;
            }
            instance.serve.assert_running();
            assert!(Instant::now() < deadline, "{}: the requests are not in its history: {records:#?}", instance.id);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let (history_a, history_b) = (http.history(&a).await, http.history(&b).await);
    // The standby may be an entry or two behind: what both hold is the same, record for record.
    let both = history_a.len().min(history_b.len());
    assert!(both >= 8, "2 actions held, 2 applied, the approval, 3 requests: {history_a:#?}");
    assert_eq!(history_a[..both], history_b[..both], "one history, the same on both");
    for instance in [&a, &b] {
        let verified = http.get(instance, "/v1/history/verify", Some(READER.1)).await;
        assert_eq!(
            (verified.status, &verified.json["verified"]),
            (200, &json!(true)),
            "{}: {verified:#?}",
            instance.id
        );
    }

    // Each instance's part in /metrics.
    let metrics_a = http.get(&a, "/metrics", Some(READER.1)).await.text;
    for help in [
        "remedy_ha_leader",
        "remedy_ha_lease_remaining_seconds",
        "remedy_ha_terms_total",
        "remedy_ha_replicated_seq",
        "remedy_ha_sends_refused_total",
        "remedy_ha_etcd_up",
    ] {
        assert!(metrics_a.contains(&format!("# HELP {help} ")), "no HELP for {help}:\n{metrics_a}");
    }
    assert_eq!(sample(&metrics_a, "remedy_ha_leader", "remedy-a"), 1.0);
    assert_eq!(sample(&metrics_a, "remedy_ha_terms_total", "remedy-a"), 1.0);
    assert_eq!(sample(&metrics_a, "remedy_ha_etcd_up", "remedy-a"), 1.0);
    assert_eq!(sample(&metrics_a, "remedy_ha_sends_refused_total", "remedy-a"), 0.0);
    let lease = sample(&metrics_a, "remedy_ha_lease_remaining_seconds", "remedy-a");
    assert!(lease > 0.0 && lease <= 4.0, "{lease}");
    let seq_a = sample(&metrics_a, "remedy_ha_replicated_seq", "remedy-a");
    assert!(seq_a > 0.0, "the leader's writes are log entries: {seq_a}");
    assert!(metrics_a.contains("remedy_reconciles_total"), "the controller's metrics come first:\n{metrics_a}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics_b = http.get(&b, "/metrics", Some(READER.1)).await.text;
        assert_eq!(sample(&metrics_b, "remedy_ha_leader", "remedy-b"), 0.0);
        assert_eq!(sample(&metrics_b, "remedy_ha_terms_total", "remedy-b"), 0.0);
        assert_eq!(sample(&metrics_b, "remedy_ha_lease_remaining_seconds", "remedy-b"), 0.0);
        assert_eq!(sample(&metrics_b, "remedy_ha_etcd_up", "remedy-b"), 1.0);
        let seq_a =
            sample(&http.get(&a, "/metrics", Some(READER.1)).await.text, "remedy_ha_replicated_seq", "remedy-a");
        if sample(&metrics_b, "remedy_ha_replicated_seq", "remedy-b") == seq_a {
            break;
        }
        assert!(Instant::now() < deadline, "the standby does not catch up with the leader's log:\n{metrics_b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // What `remedy status` and the health page say on each.
    for (instance, line) in
        [(&a, "instance remedy-a: leader since "), (&b, "instance remedy-b: standby, leader remedy-a")]
    {
        let output = tokens.command(&instance.base, Who::Operator, &["status"]).output().expect("remedy status runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "{}: {stdout}{}", instance.id, String::from_utf8_lossy(&output.stderr));
        assert!(stdout.starts_with(line), "{}: {stdout}", instance.id);
        assert!(stdout.contains("inc-ha-api-0"), "{stdout}");
    }
    let health = http.send(&b, "GET", "/ui/health", None, None, Some((&session, &[]))).await;
    assert!(health.text.contains("<span class=\"badge info\">Standby</span>"), "{}", health.text);
    assert!(health.text.contains("the leader is <code>remedy-a</code>"), "{}", health.text);
    let reconcile = tokens.command(&b.base, Who::Operator, &["reconcile", "inc-ha-api-0"]).output().expect("runs");
    assert_eq!(
        String::from_utf8_lossy(&reconcile.stdout),
        "reconcile of inc-ha-api-0 requested by op-alice (queued for the leader remedy-a)\n"
    );

    for instance in [&mut b, &mut a] {
        let status = instance.serve.terminate(Duration::from_secs(30)).await;
        assert!(status.success(), "{} exits 0 on SIGTERM ({status}):\n{}", instance.id, instance.serve.log());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_that_cannot_reach_etcd_is_not_ready_says_why_and_queues_nothing() {
    // The cluster is not needed for this one, but the module needs it: say so the same way.
    let _ = endpoints();
    let dc = Dc::shared().await;
    let root = tempfile::tempdir().expect("temporary directory");
    let manifests = root.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifest directory");
    let tokens = Tokens::write(root.path(), OPERATOR, READER, "ha-api-nobody");
    let (port, nowhere) = (free_port(), free_port());
    let options = Options { resync: HOURLY, with_entra: false, ..Options::default() };
    let yaml = format!(
        "{}api:\n  listen: 127.0.0.1:{port}\n  tokens:\n{}ha:\n  instanceId: remedy-c\n  leaseTtl: 4s\n  \
         sendTimeout: 2s\n  etcd:\n    endpoints: [\"http://127.0.0.1:{nowhere}\"]\n    requestTimeout: 1s\n    \
         insecurePlaintext: true\n",
        config_yaml(&dc, root.path(), &manifests, &options, None),
        tokens.yaml(),
    );
    let config = root.path().join("remedy.yaml");
    std::fs::write(&config, yaml).expect("remedy.yaml");
    let serve = Serve::start(&config, root.path().join("serve.log"), "info", false);
    let mut c = Instance { id: "remedy-c", serve, base: format!("http://127.0.0.1:{port}") };
    c.serve.wait_for_port(port, Duration::from_secs(30)).await;
    let http = Http(http_client(&[]));
    let readyz =
        http.wait_for(&mut c, "/readyz", "etcd-unavailable", |r| r.json["ha"]["role"] == "etcd-unavailable").await;
    assert_eq!((readyz.status, &readyz.json["ready"]), (503, &json!(false)), "{readyz:#?}");
    documented("get", "/readyz", 503, &readyz.json);
    let why = readyz.json["ha"]["etcdError"].as_str().expect("etcd's answer");
    assert!(why.contains(&format!("127.0.0.1:{nowhere}")), "the error names the member it tried: {why}");
    assert_eq!(readyz.json["ha"]["leader"], Value::Null);

    let refused = http.post(&c, "/v1/reconcile", OPERATOR.1, None).await;
    assert_eq!((refused.status, &refused.json["error"]["code"]), (503, &json!("unavailable")), "{refused:#?}");
    documented("post", "/v1/reconcile", 503, &refused.json);
    let message = refused.json["error"]["message"].as_str().expect("a message");
    assert!(message.contains("etcd did not take it") && message.contains(&format!("127.0.0.1:{nowhere}")), "{message}");
    let reader = http.post(&c, "/v1/reconcile", READER.1, None).await;
    assert_eq!(reader.status, 403, "the role is checked first: {reader:#?}");

    let metrics = http.get(&c, "/metrics", Some(READER.1)).await.text;
    assert_eq!(sample(&metrics, "remedy_ha_etcd_up", "remedy-c"), 0.0);
    assert_eq!(sample(&metrics, "remedy_ha_leader", "remedy-c"), 0.0);
    let output = tokens.command(&c.base, Who::Operator, &["status"]).output().expect("remedy status runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("instance remedy-c: etcd unavailable: "), "{stdout}");
    let status = c.serve.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "exits 0 on SIGTERM without etcd ({status}):\n{}", c.serve.log());
}
