//! Entra ID is eventually consistent: the whole daemon (`remedy serve`, a child process) against
//! a Graph simulator whose replicas lag behind writes. No Active Directory: the manifest suspends
//! a cloud user by userPrincipalName. What the API answers (history, status) and what reached
//! "Graph" (the simulator's log) are the proof.

use std::time::{Duration, Instant};

use remedy_graph_sim::{spawn, ReplicaLag, Sim, SimConfig, SimUser};
use serde_json::Value;

use crate::support::serve::{Serve, Tokens};
use crate::support::{condition, entra_yaml, free_port, http_client, write_private};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cret~Value.only-in-the-file";
const UPN: &str = "alice@remedy.test";

struct Daemon {
    // First: `remedy serve` is killed before its directory goes.
    serve: Serve,
    sim: Sim,
    _dir: tempfile::TempDir,
    server: String,
    tokens: Tokens,
    http: reqwest::Client,
}

/// The simulator with one user whose writes show after `lag`, and `remedy serve` with a manifest
/// suspending it and this `confirmationDeadline`.
async fn start(lag: Duration, deadline: &str) -> Daemon {
    let sim = spawn(SimConfig {
        users: vec![SimUser::new(UPN)],
        replica_lag: Some(ReplicaLag::fixed(lag)),
        ..SimConfig::new(TENANT, CLIENT_ID, SECRET)
    })
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    write_private(&dir.path().join("client-secret"), &format!("{SECRET}\n"));
    let tokens = Tokens::write(
        dir.path(),
        ("ops", "op-0123456789abcdef0123456789abcdef"),
        ("reader", "rd-0123456789abcdef0123456789abcdef"),
        "wrong",
    );
    std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
    std::fs::write(
        dir.path().join("manifests/inc-1.yaml"),
        format!(
            "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-1\nspec:\n  reason: \"INC-1: token theft\"\n  \
             target:\n    userPrincipalName: {UPN}\n  entraId:\n    suspended: true\n"
        ),
    )
    .expect("manifest");
    let port = free_port();
    let config = format!(
        "manifests:\n  path: manifests\n  debounce: 100ms\nguardrails:\n  allowedScopes: [\"OU=Staff,DC=remedy,DC=test\"]\n\
         {entra}  confirmationDeadline: {deadline}\nresync: \"0 0 * * * *\"\nstore:\n  path: store\napi:\n  listen: 127.0.0.1:{port}\n  tokens:\n{tokens}",
        entra = entra_yaml(TENANT, CLIENT_ID, "client-secret", &sim.url(), Some("10s")),
        tokens = tokens.yaml(),
    );
    let config_path = dir.path().join("remedy.yaml");
    std::fs::write(&config_path, config).expect("remedy.yaml");
    let mut serve = Serve::start(&config_path, dir.path().join("serve.log"), "info", false);
    serve.wait_for_port(port, Duration::from_secs(30)).await;
    Daemon { serve, sim, _dir: dir, server: format!("http://127.0.0.1:{port}"), tokens, http: http_client(&[]) }
}

impl Daemon {
    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.server))
            .bearer_auth(&self.tokens.reader)
            .send()
            .await
            .expect("API answers");
        assert!(response.status().is_success(), "{path}: {}", response.status());
        response.json().await.expect("JSON")
    }

    /// The manifest's status; `None` while the first pass has not written one yet (the API answers
    /// from the moment `remedy serve` listens: on a busy machine that is before the pass ends).
    async fn status(&self, name: &str) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/v1/manifests/{name}", self.server))
            .bearer_auth(&self.tokens.reader)
            .send()
            .await
            .expect("API answers");
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return None;
        }
        assert!(response.status().is_success(), "/v1/manifests/{name}: {}", response.status());
        Some(response.json().await.expect("JSON"))
    }

    /// The action records of the user, oldest first.
    async fn records(&self) -> Vec<Value> {
        let page = self.get(&format!("/v1/history?identity=upn:{UPN}")).await;
        page["records"].as_array().expect("records").iter().map(|r| r["event"].clone()).collect()
    }

    /// Waits until the user's history has a record with an outcome other than awaiting.
    async fn wait_for_end(&mut self, within: Duration) -> Vec<Value> {
        let started = Instant::now();
        loop {
            let records = self.records().await;
            if records.iter().any(|r| r["outcome"] != "awaiting-confirmation") {
                return records;
            }
            self.serve.assert_running();
            assert!(started.elapsed() < within, "no end within {within:?}: {records:#?}\n{}", self.serve.log());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits (up to 30 s) for the manifest's status to satisfy `done`, and returns it.
    async fn wait_status(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let started = Instant::now();
        loop {
            let status = self.status(name).await;
            if let Some(status) = status.as_ref().filter(|s| done(s)) {
                return status.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{name}: not {what} after 30 s: {status:#?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn patches(&self) -> usize {
        let id = self.sim.user(UPN).expect("user").id;
        self.sim.log().iter().filter(|e| e.method == "PATCH" && e.path == format!("/v1.0/users/{id}")).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_a_suspension_a_lagging_replica_hides_ends_confirmed_not_parked() {
    // The write shows after 5 s: after the pass's three quick reads (2 s), before the deadline.
    let mut daemon = start(Duration::from_secs(5), "5m").await;
    let records = daemon.wait_for_end(Duration::from_secs(60)).await;
    let outcomes: Vec<&str> = records.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["awaiting-confirmation", "succeeded"], "{records:#?}");
    assert_eq!(records[0]["intent"], records[1]["intent"], "one intent, awaited then confirmed");
    assert!(records[0]["note"].as_str().unwrap().contains("awaiting confirmation"), "{:#}", records[0]);
    assert!(records[1]["note"].as_str().unwrap().contains("confirmed"), "{:#}", records[1]);
    assert_eq!(records[1]["after"], "false");
    assert_eq!(daemon.patches(), 1, "sent once, never again while awaited");
    // The manifest ends Ready.
    daemon.wait_status("inc-1", "Ready", |s| condition(s, "Ready")["status"] == "True").await;
    daemon.serve.terminate(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_a_suspension_that_never_shows_is_not_effective_after_the_deadline() {
    let mut daemon = start(Duration::from_secs(3600), "12s").await;
    // While awaited, the status says so.
    let status = daemon
        .wait_status("inc-1", "awaiting confirmation", |s| condition(s, "Ready")["reason"] == "AwaitingConfirmation")
        .await;
    let ready = condition(&status, "Ready");
    assert_eq!(ready["status"], "False", "{status:#}");
    assert!(ready["message"].as_str().unwrap().contains("awaiting confirmation"), "{status:#}");
    let records = daemon.wait_for_end(Duration::from_secs(60)).await;
    let outcomes: Vec<&str> = records.iter().map(|r| r["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["awaiting-confirmation", "failed"], "{records:#?}");
    let error = records[1]["error"].as_str().unwrap();
    assert!(
        error.contains("is not effective: accountEnabled still reads true at the confirmation deadline"),
        "{error}"
    );
    // Parked, not sent again: the status says so, and Graph saw one write.
    let status = daemon.wait_status("inc-1", "Stalled", |s| condition(s, "Stalled")["status"] == "True").await;
    assert!(condition(&status, "Stalled")["message"].as_str().unwrap().contains("not effective"), "{status:#}");
    assert_eq!(daemon.patches(), 1);
    daemon.serve.terminate(Duration::from_secs(10)).await;
}
