//! Notifications end to end: the real `remedy serve` (a child process) delivers what its history
//! says to a real HTTP receiver on loopback that can be down (nothing listening), slow (beyond the
//! sink's timeout), answer 500s or 429 with Retry-After, and that records every request, so that
//! duplicates are counted by event id. No Active Directory: the delivery tests write the history
//! records that cause events into the store before `remedy serve` starts (the history is where
//! events come from), and one test has graph-sim hold a plan for real.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use remedy::model::{ActionOutcome, ActionRecord, ContestedEvent, Event, HistoryRecord, ManifestRef};
use remedy::store::Store;
use remedy_graph_sim::{spawn, SimConfig, SimUser};
use remedy_policies::plan::{Cause, Resolved};
use remedy_policies::{Action, Identity, ManifestName, Provider};
use serde_json::Value;

use crate::support::serve::Serve;
use crate::support::{entra_yaml, free_port, http_client, write_private};

const HMAC_KEY: &str = "whsec-notify-test-key-0123456789";

/// What the receiver answers to the next requests, in order; then 200.
#[derive(Debug, Clone, Copy)]
enum Reply {
    Status(u16),
    TooMany {
        retry_after_s: u64,
    },
    /// Answers 200, after this long (beyond the sink's timeout: remedy has given up by then).
    Slow(Duration),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    path: String,
    headers: HeaderMap,
    body: Vec<u8>,
    status: u16,
}

impl Received {
    fn id(&self) -> String {
        self.headers.get("remedy-event-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }

    /// Checks `Remedy-Signature` as docs/operations.md tells a receiver to: HMAC-SHA256 keyed by
    /// the shared secret over `<Remedy-Timestamp>.<body>`, in constant time, and a timestamp
    /// within five minutes.
    fn signature_holds(&self, key: &str) -> bool {
        let header = |name: &str| self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let timestamp = header("remedy-timestamp");
        let Some(hex_mac) = header("remedy-signature").strip_prefix("sha256=").map(str::to_owned) else {
            return false;
        };
        let Ok(mac) = hex::decode(hex_mac) else { return false };
        let fresh = timestamp.parse::<i64>().is_ok_and(|t| (Utc::now().timestamp() - t).abs() <= 300);
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(&self.body);
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key.as_bytes());
        fresh && ring::hmac::verify(&key, &signed, &mac).is_ok()
    }
}

#[derive(Debug, Default)]
struct ReceiverState {
    script: VecDeque<Reply>,
    seen: Vec<Received>,
}

/// A local webhook receiver on a fixed port, started (and stopped) by the test.
#[derive(Debug, Clone)]
struct Receiver {
    port: u16,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver { port: free_port(), state: Arc::default() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn script(&self, replies: &[Reply]) {
        self.state.lock().expect("the receiver's state").script.extend(replies.iter().copied());
    }

    /// Starts listening (the port was free when it was picked).
    async fn listen(&self) -> tokio::task::JoinHandle<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(listener) => break listener,
                Err(error) if Instant::now() < deadline => {
                    eprintln!("receiver: port {} not free yet: {error}", self.port);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("the receiver cannot listen on {}: {error}", self.port),
            }
        };
        let app = axum::Router::new().fallback(receive).with_state(self.state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        })
    }

    fn seen(&self) -> Vec<Received> {
        self.state.lock().expect("the receiver's state").seen.clone()
    }

    /// The requests answered 2xx, by event id.
    fn delivered(&self) -> BTreeMap<String, Vec<Received>> {
        let mut by_id: BTreeMap<String, Vec<Received>> = BTreeMap::new();
        for received in self.seen().into_iter().filter(|r| (200..300).contains(&r.status)) {
            by_id.entry(received.id()).or_default().push(received);
        }
        by_id
    }

    async fn wait_for_delivered(&self, count: usize, serve: &mut Serve, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.delivered().len() < count {
            serve.assert_running();
            assert!(
                Instant::now() < deadline,
                "{count} events not delivered within {timeout:?}: {:?}\n{}",
                self.seen().iter().map(|r| (r.id(), r.status)).collect::<Vec<_>>(),
                serve.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = state.lock().expect("the receiver's state").script.pop_front();
    let status = match reply {
        None | Some(Reply::Slow(_)) => 200,
        Some(Reply::Status(code)) => code,
        Some(Reply::TooMany { .. }) => 429,
    };
    // Recorded on arrival: a slow answer's request counts even when remedy gives up waiting.
    let received = Received { at: Instant::now(), path: uri.path().to_owned(), headers, body: body.to_vec(), status };
    state.lock().expect("the receiver's state").seen.push(received);
    match reply {
        None => StatusCode::OK.into_response(),
        Some(Reply::Status(code)) => {
            (StatusCode::from_u16(code).expect("as the test wrote it"), "scripted failure").into_response()
        }
        Some(Reply::TooMany { retry_after_s }) => {
            (StatusCode::TOO_MANY_REQUESTS, [("retry-after", retry_after_s.to_string())], "slow down").into_response()
        }
        Some(Reply::Slow(delay)) => {
            tokio::time::sleep(delay).await;
            StatusCode::OK.into_response()
        }
    }
}

/// A test's directory: `remedy.yaml`, an empty manifest directory, the store.
struct Setup {
    dir: tempfile::TempDir,
    api_port: u16,
}

impl Setup {
    /// `sinks` is the `notifications:` list (indented by two); `extra` more top-level YAML.
    fn new(sinks: &str, extra: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temporary directory");
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        write_private(&dir.path().join("hmac.key"), &format!("{HMAC_KEY}\n"));
        let api_port = free_port();
        let config = format!(
            "manifests:\n  path: manifests\n  debounce: 100ms\nguardrails:\n  allowedScopes: [\"OU=Staff,DC=remedy,DC=test\"]\n\
             {extra}resync: \"0 0 * * * *\"\nstore:\n  path: store\napi:\n  listen: 127.0.0.1:{api_port}\nnotifications:\n{sinks}"
        );
        std::fs::write(dir.path().join("remedy.yaml"), config).expect("remedy.yaml");
        Setup { dir, api_port }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a sink's URL file.
    fn url_file(&self, name: &str, url: &str) {
        write_private(&self.path(name), &format!("{url}\n"));
    }

    /// Writes the history records that cause events, as the controller would have, into a store
    /// that already feeds notifications (as one that ran with them configured does).
    fn seed(&self, events: Vec<Event>) -> Vec<HistoryRecord> {
        let (store, _) = Store::open(self.path("store")).expect("store");
        store.outbox_start().expect("notifications on");
        events.into_iter().map(|event| store.append(Utc::now(), event).expect("append")).collect()
    }

    async fn serve(&self, log: &str) -> Serve {
        let mut serve = Serve::start(&self.path("remedy.yaml"), self.path(log), "debug", false);
        serve.wait_for_port(self.api_port, Duration::from_secs(30)).await;
        serve
    }

    async fn readyz(&self) -> Value {
        let client = http_client(&[]);
        let reply = client.get(format!("http://127.0.0.1:{}/readyz", self.api_port)).send().await.expect("/readyz");
        reply.json().await.expect("JSON")
    }
}

fn action(identity: &str, outcome: ActionOutcome, cause: Cause, error: Option<&str>) -> Event {
    Event::Action(ActionRecord {
        intent: None,
        manifests: vec![ManifestRef {
            name: ManifestName::new("inc-7").expect("as the test wrote it"),
            generation: serde_json::from_value(serde_json::json!("0123456789abcdef")).expect("as the test wrote it"),
            commit: None,
        }],
        reason: "INC-7: password spray".to_owned(),
        identity: identity.parse::<Identity>().expect("as the test wrote it"),
        resolved: Resolved::default(),
        provider: Provider::ActiveDirectory,
        action: Action::DisableAccount,
        cause,
        before: "enabled".to_owned(),
        after: "disabled".to_owned(),
        outcome,
        error: error.map(str::to_owned),
        note: None,
        duration_ms: 12,
        acting_account: None,
        domain_controller: None,
    })
}

/// Four records that make four events (two held actions of one plan are one event), and one
/// that makes none.
fn incident() -> Vec<Event> {
    let held = Some("held until plan p-7 is approved (too many changes at once)");
    vec![
        action("sam:alice", ActionOutcome::Failed, Cause::Desired, Some("insufficient access rights")),
        action("sam:bob", ActionOutcome::Succeeded, Cause::Desired, None),
        action("sam:carol", ActionOutcome::DriftCorrected, Cause::DriftCorrection, None),
        action("sam:dan", ActionOutcome::Held, Cause::Desired, held),
        action("sam:erin", ActionOutcome::Held, Cause::Desired, held),
        Event::Contested(ContestedEvent {
            identity: "sam:carol".parse().expect("as the test wrote it"),
            manifests: vec![ManifestName::new("inc-7").expect("as the test wrote it")],
            corrections: 3,
            window_seconds: 600,
            since: Utc::now(),
            when_changed: None,
            source: Some("notification".to_owned()),
            next_correction: None,
        }),
    ]
}

/// The ids remedy gives the events of `records` (documented: `rec-<id>-<12 hex digits of hash>`).
fn expected_ids(records: &[HistoryRecord], which: &[usize]) -> Vec<String> {
    which.iter().map(|&i| format!("rec-{}-{}", records[i].id, &records[i].hash[..12])).collect()
}

fn webhook_sink(name: &str, extra: &str) -> String {
    format!("  - name: {name}\n    kind: webhook\n    urlFile: {name}.url\n    hmacSecretFile: hmac.key\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_a_receiver_down_for_a_while_then_up_gets_every_event_once_in_order() {
    let receiver = Receiver::new();
    let setup = Setup::new(&webhook_sink("soc", ""), "");
    let token = "T0KEN-soc-5f2c9a";
    setup.url_file("soc.url", &receiver.url(&format!("/hooks/{token}")));
    let records = setup.seed(incident());
    let mut serve = setup.serve("serve.log").await;
    // Down: nothing listens. remedy keeps trying, and says so without the URL.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let ready = setup.readyz().await;
        let soc = ready["notifications"]["soc"].clone();
        if soc["pending"] == 4 && soc["failedAttempts"].as_u64().unwrap_or(0) >= 2 {
            break soc;
        }
        assert!(Instant::now() < deadline, "no failed attempts shown: {ready:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status["kind"], "webhook");
    assert!(status["lastError"].as_str().is_some_and(|e| !e.contains(token) && !e.contains("/hooks")), "{status:#}");
    let _server = receiver.listen().await;
    receiver.wait_for_delivered(4, &mut serve, Duration::from_secs(60)).await;
    // Every event once, in the order of the history, each signed, each id the record's.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let delivered = receiver.seen();
    let ids: Vec<String> = delivered.iter().map(Received::id).collect();
    assert_eq!(ids, expected_ids(&records, &[0, 2, 3, 5]), "once each, in order");
    let kinds: Vec<Value> = delivered.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(kinds, ["action-failed", "drift-corrected", "held-for-approval", "contested"]);
    for received in &delivered {
        assert_eq!(received.path, format!("/hooks/{token}"));
        assert!(received.signature_holds(HMAC_KEY), "the signature verifies: {:?}", received.headers);
        assert!(!received.signature_holds("another key"));
        assert_eq!(received.json()["id"].as_str(), Some(received.id().as_str()), "the body carries the id too");
    }
    let held = delivered[2].json();
    assert_eq!((held["count"].clone(), held["severity"].clone()), (serde_json::json!(2), serde_json::json!("warning")));
    assert_eq!(delivered[0].json()["detail"], "insufficient access rights");
    let ready = setup.readyz().await;
    assert_eq!(ready["notifications"]["soc"]["pending"], 0, "{ready:#}");
    assert_eq!(ready["notifications"]["soc"]["delivered"], 4, "{ready:#}");
    assert!(ready["notifications"]["soc"].get("lastError").is_none(), "{ready:#}");
    serve.terminate(Duration::from_secs(15)).await;
    assert!(!serve.log().contains(token), "the URL's token is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_500s_and_a_429_are_retried_and_each_event_is_delivered_once() {
    let receiver = Receiver::new();
    receiver.script(&[Reply::Status(500), Reply::Status(503), Reply::TooMany { retry_after_s: 2 }]);
    let _server = receiver.listen().await;
    let setup = Setup::new(&webhook_sink("soc", ""), "");
    setup.url_file("soc.url", &receiver.url("/in"));
    let records = setup.seed(incident()[..1].to_vec());
    let mut serve = setup.serve("serve.log").await;
    receiver.wait_for_delivered(1, &mut serve, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = receiver.seen();
    let statuses: Vec<u16> = seen.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 503, 429, 200], "retried until accepted, then never again");
    assert!(seen.iter().all(|r| r.id() == expected_ids(&records, &[0])[0]), "the same id at every attempt");
    let waited = seen[3].at - seen[2].at;
    assert!(waited >= Duration::from_millis(1900), "Retry-After: 2 honoured, waited {waited:?}");
    assert_eq!(receiver.delivered().len(), 1);
    serve.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_a_slow_receiver_times_out_and_gets_the_event_again_with_the_same_id() {
    let receiver = Receiver::new();
    receiver.script(&[Reply::Slow(Duration::from_secs(3))]);
    let _server = receiver.listen().await;
    let setup = Setup::new(&webhook_sink("soc", "    timeout: 1s\n"), "");
    setup.url_file("soc.url", &receiver.url("/in"));
    setup.seed(incident()[..1].to_vec());
    let mut serve = setup.serve("serve.log").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.seen().len() < 2 {
        serve.assert_running();
        assert!(Instant::now() < deadline, "not sent again after the timeout: {:?}", receiver.seen().len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = receiver.seen();
    // The slow answer came after remedy gave up: the receiver saw it twice, by one id.
    assert_eq!(seen[0].id(), seen[1].id());
    let ready = setup.readyz().await;
    assert!(ready["notifications"]["soc"]["failedAttempts"].as_u64() >= Some(1), "{ready:#}");
    assert!(serve.log().contains("timed out") || serve.log().contains("timeout"), "{}", serve.log());
    serve.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_events_written_before_a_kill_9_are_delivered_after_the_restart() {
    let receiver = Receiver::new();
    let setup = Setup::new(&webhook_sink("soc", ""), "");
    setup.url_file("soc.url", &receiver.url("/in"));
    let records = setup.seed(incident());
    let mut serve = setup.serve("serve-1.log").await;
    // The outbox holds the four events (pending), the receiver is down: kill -9.
    let deadline = Instant::now() + Duration::from_secs(20);
    while setup.readyz().await["notifications"]["soc"]["pending"] != 4 {
        assert!(Instant::now() < deadline, "the outbox was not written:\n{}", serve.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    serve.kill_9();
    let _server = receiver.listen().await;
    let mut serve = setup.serve("serve-2.log").await;
    receiver.wait_for_delivered(4, &mut serve, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ids: Vec<String> = receiver.seen().iter().map(Received::id).collect();
    assert_eq!(ids, expected_ids(&records, &[0, 2, 3, 5]), "each once, with the ids they had before the crash");
    serve.terminate(Duration::from_secs(15)).await;
    // A third start sends nothing again.
    let mut serve = setup.serve("serve-3.log").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    serve.assert_running();
    assert_eq!(receiver.seen().len(), 4, "nothing sent twice after a clean stop");
    serve.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_slack_and_teams_get_their_shapes_and_only_the_events_they_ask_for() {
    let receiver = Receiver::new();
    let _server = receiver.listen().await;
    let sinks = "  - {name: chat, kind: slack, urlFile: slack.url}\n  - {name: channel, kind: teams, urlFile: teams.url, \
                 minSeverity: critical}\n  - {name: drift, kind: webhook, urlFile: drift.url, events: [drift-corrected]}\n";
    let setup = Setup::new(sinks, "");
    setup.url_file("slack.url", &receiver.url("/slack"));
    setup.url_file("teams.url", &receiver.url("/teams?sig=s3cr3t"));
    setup.url_file("drift.url", &receiver.url("/drift"));
    setup.seed(incident());
    let mut serve = setup.serve("serve.log").await;
    // Slack: 4 events; Teams: the one critical; drift: the one drift correction.
    receiver.wait_for_delivered(4, &mut serve, Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.seen().len() < 6 {
        assert!(Instant::now() < deadline, "{:?}", receiver.seen().iter().map(|r| r.path.clone()).collect::<Vec<_>>());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = receiver.seen();
    let on = |path: &str| seen.iter().filter(|r| r.path == path).cloned().collect::<Vec<_>>();
    let (slack, teams, drift) = (on("/slack"), on("/teams"), on("/drift"));
    assert_eq!((slack.len(), teams.len(), drift.len()), (4, 1, 1), "{seen:?}");
    for message in &slack {
        let body = message.json();
        assert!(body["text"].as_str().is_some_and(|t| !t.is_empty()), "{body:#}");
        assert_eq!(body["blocks"][0]["type"], "header");
        assert!(message.headers.get("remedy-signature").is_none(), "Slack messages are not signed");
    }
    assert!(slack[0].json()["text"].as_str().expect("as the test wrote it").starts_with("[CRITICAL] Action failed"));
    let card = teams[0].json();
    assert_eq!(card["type"], "message");
    assert_eq!(card["attachments"][0]["contentType"], "application/vnd.microsoft.card.adaptive");
    assert_eq!(card["attachments"][0]["content"]["version"], "1.4");
    assert_eq!(card["attachments"][0]["content"]["body"][0]["text"], "remedy: Action failed");
    assert_eq!(drift[0].json()["type"], "drift-corrected");
    assert!(drift[0].headers.get("remedy-signature").is_none(), "no hmacSecretFile: no signature");
    assert_eq!(slack[0].id(), teams[0].id(), "one event, one id, whichever sink");
    serve.terminate(Duration::from_secs(15)).await;
    assert!(!serve.log().contains("s3cr3t"), "the URL's query is never logged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_a_plan_graph_sim_holds_for_approval_is_told_to_the_webhook() {
    const TENANT: &str = "22222222-3333-4444-5555-666666666666";
    const CLIENT_ID: &str = "bbbbbbbb-cccc-dddd-eeee-ffffffffffff";
    const SECRET: &str = "notify~test.secret-in-its-file";
    let sim = spawn(SimConfig {
        users: vec![SimUser::new("ann@remedy.test"), SimUser::new("ben@remedy.test")],
        ..SimConfig::new(TENANT, CLIENT_ID, SECRET)
    })
    .await
    .expect("simulator starts");
    let receiver = Receiver::new();
    let _server = receiver.listen().await;
    let entra = entra_yaml(TENANT, CLIENT_ID, "client-secret", &sim.url(), Some("10s"));
    let setup = Setup::new(&webhook_sink("soc", ""), &entra);
    // One change per reconcile at most: a manifest suspending two users is held.
    let config = std::fs::read_to_string(setup.path("remedy.yaml")).expect("as the test wrote it").replace(
        "allowedScopes: [\"OU=Staff,DC=remedy,DC=test\"]\n",
        "allowedScopes: [\"OU=Staff,DC=remedy,DC=test\"]\n  maxChangesPerReconcile: 1\n",
    );
    std::fs::write(setup.path("remedy.yaml"), config).expect("as the test wrote it");
    write_private(&setup.path("client-secret"), SECRET);
    setup.url_file("soc.url", &receiver.url("/in"));
    for (name, upn) in [("inc-a", "ann@remedy.test"), ("inc-b", "ben@remedy.test")] {
        std::fs::write(
            setup.path("manifests").join(format!("{name}.yaml")),
            format!(
                "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"token theft\"\n  \
                 target:\n    userPrincipalName: {upn}\n  entraId:\n    suspended: true\n"
            ),
        )
        .expect("as the test wrote it");
    }
    let mut serve = setup.serve("serve.log").await;
    receiver.wait_for_delivered(1, &mut serve, Duration::from_secs(60)).await;
    let event = receiver.seen()[0].json();
    assert_eq!(event["type"], "held-for-approval", "{event:#}");
    assert_eq!(event["count"], 2, "{event:#}");
    let mut manifests: Vec<String> = event["manifests"]
        .as_array()
        .expect("as the test wrote it")
        .iter()
        .map(|m| m.as_str().expect("as the test wrote it").to_owned())
        .collect();
    manifests.sort();
    assert_eq!(manifests, ["inc-a", "inc-b"]);
    assert!(receiver.seen()[0].signature_holds(HMAC_KEY));
    assert!(sim.user("ann@remedy.test").expect("as the test wrote it").account_enabled, "held, not sent");
    serve.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_an_edited_history_record_is_told_as_a_chain_verification_failure() {
    let receiver = Receiver::new();
    let _server = receiver.listen().await;
    let setup = Setup::new(&webhook_sink("soc", "    events: [chain-verification-failed, action-failed]\n"), "");
    setup.url_file("soc.url", &receiver.url("/in"));
    let records = setup.seed(incident()[..1].to_vec());
    // Someone with write access to the store softens the record of the failure.
    {
        let db = remedy::store::sled_config(&setup.path("store")).open().expect("sled");
        let history = db.open_tree(remedy::store::layout::HISTORY).expect("tree");
        let key = records[0].id.0.to_be_bytes();
        let text =
            String::from_utf8(history.get(key).expect("as the test wrote it").expect("as the test wrote it").to_vec())
                .expect("as the test wrote it");
        history
            .insert(key, text.replace("insufficient access rights", "all good").into_bytes())
            .expect("as the test wrote it");
        db.flush().expect("as the test wrote it");
    }
    let mut serve = setup.serve("serve.log").await;
    receiver.wait_for_delivered(2, &mut serve, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let seen = receiver.seen();
    let kinds: Vec<Value> = seen.iter().map(|r| r.json()["type"].clone()).collect();
    assert_eq!(kinds, ["chain-verification-failed", "action-failed"], "told once, before the records it doubts");
    let chain = seen[0].json();
    assert_eq!(chain["severity"], "critical");
    assert!(chain["detail"].as_str().is_some_and(|d| d.contains("record 1")), "{chain:#}");
    assert!(chain["id"].as_str().is_some_and(|id| id.starts_with("evt-")), "{chain:#}");
    serve.terminate(Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_graph_going_down_and_coming_back_is_told_as_unavailable_then_recovered() {
    const TENANT: &str = "33333333-4444-5555-6666-777777777777";
    const CLIENT_ID: &str = "cccccccc-dddd-eeee-ffff-000000000000";
    const SECRET: &str = "notify~health.secret-in-its-file";
    let config =
        || SimConfig { users: vec![SimUser::new("ann@remedy.test")], ..SimConfig::new(TENANT, CLIENT_ID, SECRET) };
    let sim = spawn(config()).await.expect("simulator starts");
    let address = sim.address();
    let receiver = Receiver::new();
    let _server = receiver.listen().await;
    let entra = entra_yaml(TENANT, CLIENT_ID, "client-secret", &sim.url(), Some("2s"));
    let setup = Setup::new(&webhook_sink("soc", "    events: [provider-unavailable, provider-recovered]\n"), &entra);
    // A resync every second: each pass asks Graph again.
    let yaml = std::fs::read_to_string(setup.path("remedy.yaml"))
        .expect("as the test wrote it")
        .replace("0 0 * * * *", "*/1 * * * * *");
    std::fs::write(setup.path("remedy.yaml"), yaml).expect("as the test wrote it");
    write_private(&setup.path("client-secret"), SECRET);
    setup.url_file("soc.url", &receiver.url("/in"));
    std::fs::write(
        setup.path("manifests/inc-a.yaml"),
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-a\nspec:\n  reason: \"token theft\"\n  \
         target:\n    userPrincipalName: ann@remedy.test\n  entraId:\n    suspended: true\n",
    )
    .expect("as the test wrote it");
    let mut serve = setup.serve("serve.log").await;
    serve.wait_for_log("suspend", Duration::from_secs(30)).await;
    sim.shutdown().await;
    receiver.wait_for_delivered(1, &mut serve, Duration::from_secs(90)).await;
    let down = receiver.seen()[0].json();
    assert_eq!((down["type"].as_str(), down["severity"].as_str()), (Some("provider-unavailable"), Some("critical")));
    assert_eq!(down["provider"], "entra-id", "{down:#}");
    let _sim = remedy_graph_sim::spawn_on(config(), address).await.expect("the simulator is back on its address");
    receiver.wait_for_delivered(2, &mut serve, Duration::from_secs(90)).await;
    let up = receiver.seen().last().expect("as the test wrote it").json();
    assert_eq!((up["type"].as_str(), up["severity"].as_str()), (Some("provider-recovered"), Some("info")));
    serve.terminate(Duration::from_secs(15)).await;
}
