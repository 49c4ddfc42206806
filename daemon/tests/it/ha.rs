//! Several instances on etcd (issue 18), end to end: three real `remedy serve` processes, each
//! with its own store and API port, one shared manifest directory, the same private OU on the
//! Samba DC, and `ha:` pointing at the 3-member etcd cluster of `scripts/ha` under a key prefix of
//! their own. What they must show: one leader and two standbys; a change applied once, with one
//! history that every instance serves and verifies; the leader killed (`kill -9`) again and again
//! mid-pass with every change still applied exactly once; a paused leader (`SIGSTOP` past its
//! lease) that sends and writes nothing once it resumes; one etcd member lost changes nothing, and
//! quorum lost stops acting until it returns, nothing lost and nothing done twice.
//!
//! "Exactly once" is checked on both sides of a send: the history (one succeeded record per account
//! and action, the same ids and hashes on every instance) and the instances' own logs, where the AD
//! provider logs every write it made once, with the account (`applied and verified` or `action
//! failed`): no account is written twice by any instance in any run, and a resumed old leader's log
//! shows no write at all. (The DC cannot tell: Samba takes a repeated disable as a no-op that
//! changes nothing, not even `userAccountControl`'s version in `replPropertyMetaData`; what the DC
//! does show is checked — every account disabled, and no account changed after the old leader
//! resumed or while etcd had no quorum.)
//!
//! Sizes: `REMEDY_HA_KILLS` (default 3) and `REMEDY_HA_IDENTITIES` (default 100) for the kill
//! test; `scripts/ha test` runs it at 20 and 1,000. `REMEDY_HA_SEED` repeats a run's random
//! moments (the seed is printed). The tests that stop etcd members hold `Etcd::exclusive()`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ldap3::adapters::{Adapter, PagedResults};
use ldap3::{Ldap, Scope, SearchEntry};
use remedy::model::{ActionOutcome, Event, HistoryRecord};
use remedy_policies::{Action, Identity};
use serde_json::Value;

use crate::support::daemon::{config_yaml, manifest, Options, DISABLE, HOURLY};
use crate::support::dc::{Dc, TestOu};
use crate::support::etcd::Etcd;
use crate::support::serve::Serve;
use crate::support::{free_port, http_client, token_yaml};

/// `ha.leaseTtl` and `ha.sendTimeout` of the tests: half the defaults (8s, 3s), so that a failover
/// takes seconds, with the same proportions (the send timeout at most half the lease).
const LEASE_TTL: Duration = Duration::from_secs(4);
const LEASE_TTL_YAML: &str = "4s";
const SEND_TIMEOUT_YAML: &str = "2s";

/// How long etcd's client may take to give up on a cluster without quorum: `requestTimeout` (2 s,
/// the default) for each of the three members, plus slack for a loaded machine.
const ETCD_GIVES_UP_WITHIN: Duration = Duration::from_secs(10);

/// A standby elected after the leader is gone: the lease runs out (at most its TTL), the next
/// campaigner sees it (250 ms polls), catches up the log and starts; slack for two busy cores.
const ELECTED_WITHIN: Duration = Duration::from_secs(25);

const INSTANCES: [&str; 3] = ["remedy-a", "remedy-b", "remedy-c"];
const OPERATOR: &str = "ha-operator";

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => {
            text.trim().parse().unwrap_or_else(|_| panic!("{name}={text:?} is not a number"))
        }
        _ => default,
    }
}

/// One `remedy serve` of the three: its directory (store, config, logs), its API port, and the
/// process while it runs.
struct Instance {
    id: &'static str,
    dir: PathBuf,
    port: u16,
    serve: Option<Serve>,
    runs: usize,
    /// Stopped by SIGSTOP: it answers nothing until resumed.
    paused: bool,
}

/// Three instances on one manifest directory and one etcd prefix.
struct HaCluster {
    dir: tempfile::TempDir,
    manifests: PathBuf,
    instances: Vec<Instance>,
    token: String,
    http: reqwest::Client,
    batches: usize,
}

/// What an instance says of itself: `ha` in `/readyz`.
#[derive(Debug, Clone)]
struct HaView {
    role: String,
    leader: Option<String>,
    ready: bool,
    body: Value,
}

impl HaView {
    /// A standby naming `leader` as the leader.
    fn stands_by_for(&self, leader: &str) -> bool {
        self.role == "standby" && self.leader.as_deref() == Some(leader)
    }
}

impl HaCluster {
    /// Writes the three configurations and starts the three instances; waits until each API listens.
    async fn start(dc: &Dc, etcd: &Etcd) -> HaCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("manifest directory");
        let token = format!("ha-{:032x}", fastrand::u128(..));
        let prefix = Etcd::prefix();
        let endpoints: Vec<String> = etcd.endpoints.iter().map(|e| format!("\"{e}\"")).collect();
        let options = Options { resync: HOURLY, max_changes: 100_000, with_entra: false, ..Options::default() };
        let mut instances = Vec::new();
        for id in INSTANCES {
            let own = dir.path().join(id);
            std::fs::create_dir(&own).expect("instance directory");
            let port = free_port();
            let yaml = config_yaml(dc, &own, &manifests, &options, None)
                + &format!("api:\n  listen: 127.0.0.1:{port}\n  tokens:\n")
                + &token_yaml(OPERATOR, "security-operator", &token)
                + &format!(
                    "ha:\n  instanceId: {id}\n  leaseTtl: {LEASE_TTL_YAML}\n  sendTimeout: {SEND_TIMEOUT_YAML}\n  \
                     etcd:\n    endpoints: [{}]\n    prefix: {prefix}\n    insecurePlaintext: true\n",
                    endpoints.join(", ")
                );
            std::fs::write(own.join("remedy.yaml"), yaml).expect("remedy.yaml");
            instances.push(Instance { id, dir: own, port, serve: None, runs: 0, paused: false });
        }
        let mut cluster = HaCluster { dir, manifests, instances, token, http: http_client(&[]), batches: 0 };
        for i in 0..INSTANCES.len() {
            cluster.start_instance(i).await;
        }
        cluster
    }

    async fn start_instance(&mut self, i: usize) {
        let instance = &mut self.instances[i];
        assert!(instance.serve.is_none(), "{} runs already", instance.id);
        instance.runs += 1;
        let log = instance.dir.join(format!("run-{}.log", instance.runs));
        let mut serve = Serve::start(&instance.dir.join("remedy.yaml"), log, "info", true);
        serve.wait_for_port(instance.port, Duration::from_secs(30)).await;
        instance.serve = Some(serve);
    }

    fn kill_9(&mut self, i: usize) {
        self.instances[i].serve.as_mut().expect("running").kill_9();
        self.instances[i].serve = None;
    }

    fn pause(&mut self, i: usize) {
        self.instances[i].serve.as_mut().expect("running").pause();
        self.instances[i].paused = true;
    }

    fn resume(&mut self, i: usize) {
        self.instances[i].serve.as_mut().expect("running").resume();
        self.instances[i].paused = false;
    }

    /// The instances that run and are not paused: those that answer.
    fn running(&self) -> Vec<usize> {
        (0..self.instances.len()).filter(|&i| self.instances[i].serve.is_some() && !self.instances[i].paused).collect()
    }

    /// Panics (with its log) if a running instance exited by itself.
    fn assert_running(&mut self) {
        for instance in &mut self.instances {
            if let Some(serve) = instance.serve.as_mut() {
                serve.assert_running();
            }
        }
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.instances[i].port)
    }

    /// GET with the operator's token; `None` when the instance does not answer within 3 s (killed,
    /// paused, starting).
    async fn get(&self, i: usize, path: &str) -> Option<(u16, Value)> {
        let request = self.http.get(self.url(i, path)).bearer_auth(&self.token).send();
        let response = tokio::time::timeout(Duration::from_secs(3), request).await.ok()?.ok()?;
        let status = response.status().as_u16();
        let body = tokio::time::timeout(Duration::from_secs(3), response.json::<Value>()).await.ok()?.ok()?;
        Some((status, body))
    }

    async fn post(&self, i: usize, path: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(i, path))
            .bearer_auth(&self.token)
            .json(&serde_json::json!({"comment": "asked of a standby"}))
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path} to {}: {e}", self.instances[i].id));
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// The value of a metric's first series in `/metrics`, if it has one.
    async fn metric(&self, i: usize, name: &str) -> Option<f64> {
        let request = self.http.get(self.url(i, "/metrics")).bearer_auth(&self.token).send();
        let text = tokio::time::timeout(Duration::from_secs(3), request).await.ok()?.ok()?.text().await.ok()?;
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !rest.starts_with([' ', '{']) {
                return None;
            }
            rest.rsplit(' ').next()?.trim().parse().ok()
        })
    }

    /// The instance's `ha` status, from `/readyz` (no token).
    async fn ha(&self, i: usize) -> Option<HaView> {
        let (status, body) = self.get(i, "/readyz").await?;
        let ha = body.get("ha").unwrap_or_else(|| panic!("/readyz of {} has no ha: {body}", self.instances[i].id));
        let role = ha["role"].as_str().unwrap_or_else(|| panic!("ha.role missing: {ha}")).to_owned();
        let leader = ha["leader"]["instanceId"].as_str().map(str::to_owned);
        Some(HaView { role, leader, ready: status == 200, body: ha.clone() })
    }

    /// Each running instance's view (`None`: it did not answer).
    async fn views(&self) -> Vec<(usize, Option<HaView>)> {
        let mut views = Vec::new();
        for i in self.running() {
            views.push((i, self.ha(i).await));
        }
        views
    }

    /// Waits until the instances in `among` answer, exactly one says `leader` and the others
    /// `standby` naming it as the leader; returns the leader's index.
    async fn wait_leader(&mut self, among: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running();
            let mut views = Vec::new();
            for &i in among {
                views.push((i, self.ha(i).await));
            }
            let leaders: Vec<usize> =
                views.iter().filter(|(_, v)| v.as_ref().is_some_and(|v| v.role == "leader")).map(|(i, _)| *i).collect();
            if let [leader] = leaders[..] {
                let id = self.instances[leader].id;
                let settled =
                    views.iter().all(|(i, v)| *i == leader || v.as_ref().is_some_and(|v| v.stands_by_for(id)));
                if settled {
                    return leader;
                }
            }
            if Instant::now() > deadline {
                let seen: Vec<String> = views
                    .iter()
                    .map(|(i, v)| {
                        format!(
                            "{}: {}",
                            self.instances[*i].id,
                            v.as_ref().map_or("no answer".into(), |v| v.body.to_string())
                        )
                    })
                    .collect();
                panic!("no single leader with standbys within {within:?}: {seen:#?}\n{}", self.logs_tail());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The instances that are not `i`.
    fn others(&self, i: usize) -> Vec<usize> {
        (0..self.instances.len()).filter(|&j| j != i).collect()
    }

    /// Every history record instance `i` serves, page by page, oldest first.
    async fn history(&self, i: usize) -> Vec<HistoryRecord> {
        let mut records = Vec::new();
        let mut after = None;
        loop {
            let path = match after {
                Some(id) => format!("/v1/history?limit=1000&after={id}"),
                None => "/v1/history?limit=1000".to_owned(),
            };
            let (status, body) =
                self.get(i, &path).await.unwrap_or_else(|| panic!("{} does not answer {path}", self.instances[i].id));
            assert_eq!(status, 200, "GET {path} of {}: {body}", self.instances[i].id);
            let page: Vec<HistoryRecord> = serde_json::from_value(body["records"].clone()).expect("history records");
            records.extend(page);
            match body["nextAfter"].as_u64() {
                Some(id) => after = Some(id),
                None => return records,
            }
        }
    }

    /// `GET /v1/history/verify` of instance `i`: 200 and verified, with `records` records.
    async fn verify(&self, i: usize) -> u64 {
        let (status, body) = self.get(i, "/v1/history/verify").await.expect("verify answers");
        assert_eq!(status, 200, "{}: the chain does not verify: {body}", self.instances[i].id);
        assert_eq!(body["verified"], true, "{}: {body}", self.instances[i].id);
        body["records"].as_u64().expect("records")
    }

    /// Waits until the leader's history satisfies `done` and every running instance serves the
    /// very same records (ids and hashes); returns them.
    async fn wait_history(
        &mut self,
        leader: usize,
        within: Duration,
        done: impl Fn(&[HistoryRecord]) -> bool,
    ) -> Vec<HistoryRecord> {
        let deadline = Instant::now() + within;
        loop {
            self.assert_running();
            let records = self.history(leader).await;
            if done(&records) {
                let want = chain(&records);
                let mut same = true;
                for i in self.running() {
                    if i != leader && chain(&self.history(i).await) != want {
                        same = false;
                    }
                }
                if same {
                    return records;
                }
            }
            if Instant::now() > deadline {
                let mut lengths = Vec::new();
                for i in self.running() {
                    lengths.push(format!("{}: {} records", self.instances[i].id, self.history(i).await.len()));
                }
                panic!(
                    "the histories did not settle within {within:?} ({lengths:?}); the leader's:\n{}\n{}",
                    summary(&records),
                    self.logs_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Writes manifests disabling `sams` into a staging folder, then renames it into the manifest
    /// directory: one commit's worth, at once. Returns the manifests' names.
    fn commit(&mut self, sams: &[String]) -> Vec<String> {
        self.batches += 1;
        let batch = format!("batch-{:03}", self.batches);
        let staging = self.dir.path().join(format!(".{batch}"));
        std::fs::create_dir(&staging).expect("staging");
        let mut names = Vec::new();
        for sam in sams {
            let name = format!("inc-ha-{}", sam.to_lowercase());
            std::fs::write(staging.join(format!("{name}.yaml")), manifest(&name, sam, DISABLE)).expect("write");
            names.push(name);
        }
        std::fs::rename(&staging, self.manifests.join(&batch)).expect("rename into the manifest directory");
        names
    }

    fn log_path(&self, i: usize, run: usize) -> PathBuf {
        self.instances[i].dir.join(format!("run-{run}.log"))
    }

    /// The AD sends every run of every instance logged, per account.
    fn sends(&self) -> BTreeMap<String, Sends> {
        let mut all: BTreeMap<String, Sends> = BTreeMap::new();
        for i in 0..self.instances.len() {
            for run in 1..=self.instances[i].runs {
                let log = std::fs::read_to_string(self.log_path(i, run)).unwrap_or_default();
                for (sam, sends) in sends_in(&log) {
                    let total = all.entry(sam).or_default();
                    total.applied += sends.applied;
                    total.failed += sends.failed;
                }
            }
        }
        all
    }

    /// Every instance's log lines about its leadership (won, lost, ended), in each run.
    fn terms(&self) -> String {
        let mut lines = Vec::new();
        for i in 0..self.instances.len() {
            for run in 1..=self.instances[i].runs {
                let log = std::fs::read_to_string(self.log_path(i, run)).unwrap_or_default();
                for event in log.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()) {
                    let message = event["fields"]["message"].as_str().unwrap_or_default();
                    if ["lead", "lease", "term", "resign"].iter().any(|w| message.contains(w)) {
                        let at = event["timestamp"].as_str().unwrap_or_default();
                        lines.push(format!("{at} {} run {run}: {message}", self.instances[i].id));
                    }
                }
            }
        }
        lines.sort();
        lines.join("\n")
    }

    /// The last lines of every instance's current log.
    fn logs_tail(&self) -> String {
        let mut text = String::new();
        for instance in &self.instances {
            let log = instance.serve.as_ref().map(Serve::log).unwrap_or_else(|| {
                std::fs::read_to_string(instance.dir.join(format!("run-{}.log", instance.runs))).unwrap_or_default()
            });
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(25)..].join("\n");
            text.push_str(&format!("--- {} (run {}), last lines:\n{tail}\n", instance.id, instance.runs));
        }
        text
    }
}

/// (id, hash) of each record: what two copies of one history must share.
fn chain(records: &[HistoryRecord]) -> Vec<(u64, String)> {
    records.iter().map(|r| (r.id.0, r.hash.clone())).collect()
}

fn summary(records: &[HistoryRecord]) -> String {
    records
        .iter()
        .rev()
        .take(20)
        .map(|r| match &r.event {
            Event::Action(a) => format!("#{} {} {:?} {:?} {:?}", r.id.0, a.identity, a.action, a.outcome, a.error),
            other => format!("#{} {other:?}", r.id.0),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The records that changed an account, per account: (outcome, error, note).
fn changes(records: &[HistoryRecord]) -> BTreeMap<String, Vec<(ActionOutcome, String)>> {
    let mut by = BTreeMap::new();
    for record in records {
        if let Event::Action(a) = &record.event {
            assert_eq!(a.action, Action::DisableAccount, "only disables were asked for: {record:#?}");
            if a.outcome.changed_account() {
                by.entry(a.identity.value())
                    .or_insert_with(Vec::new)
                    .push((a.outcome, a.error.clone().or(a.note.clone()).unwrap_or_default()));
            }
        }
    }
    by
}

/// Whether every one of `sams` has exactly one record that changed it (and none has more).
fn each_changed_once(records: &[HistoryRecord], sams: &[String]) -> bool {
    let by = changes(records);
    sams.iter().all(|sam| by.get(&sam.to_lowercase()).is_some_and(|c| c.len() == 1))
}

/// Asserts: exactly one record changed each of `sams`, a succeeded disable (the first disable, not a
/// drift correction), and no record changed another account.
fn assert_each_changed_once(records: &[HistoryRecord], sams: &[String]) {
    let mut by = changes(records);
    for sam in sams {
        let identity = Identity::sam_account_name(sam).expect("sAMAccountName").value();
        let made = by.remove(&identity).unwrap_or_default();
        assert_eq!(made.len(), 1, "{sam}: exactly one change recorded, not {made:?}");
        assert_eq!(made[0].0, ActionOutcome::Succeeded, "{sam}: {made:?}");
    }
    assert!(by.is_empty(), "changes recorded for accounts not in the test: {by:?}");
}

/// What the DC shows of each user of the OU: disabled or not, and how many writes to
/// userAccountControl it accepted (its version in `replPropertyMetaData`).
async fn uac_on_dc(ldap: &mut Ldap, ou: &str) -> BTreeMap<String, (bool, u32)> {
    let attrs = ["sAMAccountName", "userAccountControl", "replPropertyMetaData"];
    paged(ldap, ou, "(objectClass=user)", &attrs)
        .await
        .into_iter()
        .map(|entry| {
            let sam = entry.attrs["sAMAccountName"][0].to_lowercase();
            let uac: u32 = entry.attrs["userAccountControl"][0].parse().expect("userAccountControl");
            let meta = entry
                .bin_attrs
                .get("replPropertyMetaData")
                .and_then(|v| v.first().cloned())
                .or_else(|| {
                    entry.attrs.get("replPropertyMetaData").and_then(|v| v.first()).map(|s| s.as_bytes().to_vec())
                })
                .unwrap_or_else(|| panic!("{sam}: no replPropertyMetaData"));
            (sam.clone(), (uac & 0x2 != 0, uac_version(&meta).unwrap_or_else(|| panic!("{sam}: no uac metadata"))))
        })
        .collect()
}

/// The version of userAccountControl (attribute id 0x00090008) in a `replPropertyMetaData` value
/// (MS-DRSR `replPropertyMetaDataBlob`, little-endian: version 1, reserved, count, reserved, then
/// `count` 48-byte entries: attid, version, change time (8), invocation id (16), originating USN
/// (8), local USN (8)).
fn uac_version(blob: &[u8]) -> Option<u32> {
    let word = |at: usize| blob.get(at..at + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    if word(0)? != 1 {
        return None;
    }
    let count = word(8)? as usize;
    (0..count).find_map(|k| {
        let at = 16 + k * 48;
        (word(at)? == 0x0009_0008).then(|| word(at + 4)).flatten()
    })
}

/// How many of `sams` (lower case) the DC shows disabled: a light search (names only) for polling.
async fn disabled_count(ldap: &mut Ldap, ou: &str, sams: &BTreeSet<String>) -> usize {
    let filter = "(&(objectClass=user)(userAccountControl:1.2.840.113556.1.4.803:=2))";
    paged(ldap, ou, filter, &["sAMAccountName"])
        .await
        .iter()
        .filter(|entry| {
            entry
                .attrs
                .get("sAMAccountName")
                .and_then(|v| v.first())
                .is_some_and(|sam| sams.contains(&sam.to_lowercase()))
        })
        .count()
}

/// A one-level search of `ou` in pages of 500 (the DC returns at most 1,000 entries at once).
async fn paged(ldap: &mut Ldap, ou: &str, filter: &str, attrs: &[&str]) -> Vec<SearchEntry> {
    let adapters: Vec<Box<dyn Adapter<'_, &str, Vec<&str>>>> = vec![Box::new(PagedResults::new(500))];
    let mut stream = ldap
        .streaming_search_with(adapters, ou, Scope::OneLevel, filter, attrs.to_vec())
        .await
        .unwrap_or_else(|e| panic!("admin search of {ou}: {e}"));
    let mut entries = Vec::new();
    while let Some(entry) = stream.next().await.unwrap_or_else(|e| panic!("admin search of {ou}: {e}")) {
        if !entry.is_ref() && !entry.is_intermediate() {
            entries.push(SearchEntry::construct(entry));
        }
    }
    stream.finish().await.success().unwrap_or_else(|e| panic!("admin search of {ou}: {e}"));
    entries
}

async fn wait_disabled(ldap: &mut Ldap, ou: &str, sams: &[String], cluster: &mut HaCluster, within: Duration) {
    let want: BTreeSet<String> = sams.iter().map(|s| s.to_lowercase()).collect();
    let deadline = Instant::now() + within;
    loop {
        let seen = disabled_count(ldap, ou, &want).await;
        if seen == want.len() {
            return;
        }
        cluster.assert_running();
        assert!(
            Instant::now() < deadline,
            "{seen} of {} accounts disabled on the DC within {within:?}\n{}",
            want.len(),
            cluster.logs_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the AD provider logged of its sends to one account: each write it made is logged once,
/// `applied and verified` or `action failed` (daemon/src/ad/directory.rs), with `sam`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sends {
    applied: usize,
    failed: usize,
}

/// The sends logged in one log of `remedy serve --log-format json`, per account (lower case).
fn sends_in(log: &str) -> BTreeMap<String, Sends> {
    let mut sends: BTreeMap<String, Sends> = BTreeMap::new();
    for line in log.lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else { continue };
        let fields = &event["fields"];
        let Some(sam) = fields["sam"].as_str() else { continue };
        let entry = sends.entry(sam.to_lowercase()).or_default();
        match fields["message"].as_str() {
            Some("applied and verified") => entry.applied += 1,
            Some("action failed") => entry.failed += 1,
            _ => {}
        }
    }
    sends.retain(|_, s| *s != Sends::default());
    sends
}

/// Asserts that no account of `sams` was written successfully more than once, by any instance in
/// any run, and that each was written once: its write logged, or — when the write went out but its
/// answer was never awaited (the writer killed, its term ended mid-pass, or the send cut at
/// `sendTimeout` on a slow DC) — its record says recovery found it applied ("confirmed when read
/// again"), the one case where a write leaves no line. Returns how many were settled that way.
fn assert_sent_once(sends: &BTreeMap<String, Sends>, records: &[HistoryRecord], sams: &[String]) -> usize {
    let by = changes(records);
    let mut unlogged = 0;
    for sam in sams {
        let sam = sam.to_lowercase();
        let sent = sends.get(&sam).copied().unwrap_or_default();
        assert!(sent.applied <= 1, "{sam}: written {} times: {sent:?}", sent.applied);
        if sent.applied == 0 {
            let made = by.get(&sam).cloned().unwrap_or_default();
            assert!(
                made.len() == 1 && made[0].1.contains("confirmed when read again"),
                "{sam}: no write logged, and its record is not recovery's: {made:?}"
            );
            unlogged += 1;
        }
    }
    unlogged
}

/// Asserts that the DC shows every one of `sams` disabled.
fn assert_disabled(on_dc: &BTreeMap<String, (bool, u32)>, sams: &[String]) {
    for sam in sams {
        assert!(on_dc[&sam.to_lowercase()].0, "{sam} is not disabled on the DC");
    }
}

async fn users(ou: &TestOu, ldap: &mut Ldap, prefix: &str, n: usize) -> Vec<String> {
    let mut sams = Vec::with_capacity(n);
    for i in 0..n {
        sams.push(ou.add_user_with(ldap, &format!("{prefix}{i:04}"), 512, false).await.sam);
    }
    sams
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_one_leader_two_standbys_apply_a_change_once_and_serve_one_history() {
    let dc = Dc::shared().await;
    let etcd = Etcd::shared().await;
    let ou = dc.ou("ha-one").await;
    let mut ldap = dc.admin().await;
    let sams = users(&ou, &mut ldap, "h", 5).await;

    let mut cluster = HaCluster::start(&dc, &etcd).await;
    let leader = cluster.wait_leader(&[0, 1, 2], ELECTED_WITHIN).await;
    let leader_id = cluster.instances[leader].id;

    cluster.commit(&sams);
    wait_disabled(&mut ldap, &ou.dn, &sams, &mut cluster, Duration::from_secs(60)).await;
    let records =
        cluster.wait_history(leader, Duration::from_secs(60), |records| each_changed_once(records, &sams)).await;
    assert_each_changed_once(&records, &sams);
    for i in 0..3 {
        assert_eq!(cluster.verify(i).await, records.len() as u64, "{}", cluster.instances[i].id);
    }
    assert_disabled(&uac_on_dc(&mut ldap, &ou.dn).await, &sams);
    assert_eq!(assert_sent_once(&cluster.sends(), &records, &sams), 0, "a steady leader logs every write");
    // Still one leader, the same.
    assert_eq!(cluster.wait_leader(&[0, 1, 2], Duration::from_secs(5)).await, leader);

    // What each says of itself.
    for (i, view) in cluster.views().await {
        let view = view.expect("every instance answers");
        assert_eq!(view.body["instanceId"], cluster.instances[i].id, "{view:?}");
        assert_eq!(view.body["leaseTtlSeconds"], 4, "{view:?}");
        assert!(view.body["replicatedThrough"].as_u64().is_some_and(|seq| seq > 0), "{view:?}");
        if i == leader {
            assert!(view.body["leadingSince"].is_string(), "{view:?}");
            assert!(view.body["leaseRemainingSeconds"].as_f64().is_some_and(|s| s > 0.0 && s <= 4.0), "{view:?}");
        } else {
            assert!(view.ready, "a caught-up standby is ready: {view:?}");
            assert_eq!(view.body["leader"]["instanceId"], leader_id, "{view:?}");
        }
    }

    // An operator's request to a standby is queued through etcd and recorded once, by the leader.
    let standby = cluster.others(leader)[0];
    let (status, body) = cluster.post(standby, "/v1/reconcile").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["queued"], true, "{body}");
    assert_eq!(body["leader"], leader_id, "{body}");
    let records = cluster
        .wait_history(leader, Duration::from_secs(30), |records| {
            records.iter().any(|r| matches!(&r.event, Event::ReconcileRequest(q) if q.by == OPERATOR))
        })
        .await;
    let requests = records.iter().filter(|r| matches!(r.event, Event::ReconcileRequest(_))).count();
    assert_eq!(requests, 1, "the queued request is recorded once:\n{}", summary(&records));
    assert_each_changed_once(&records, &sams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_kill_9_of_the_leader_again_and_again_applies_every_change_exactly_once() {
    let kills = env_number("REMEDY_HA_KILLS", 3);
    let identities = env_number("REMEDY_HA_IDENTITIES", 100);
    let seed = env_number("REMEDY_HA_SEED", fastrand::usize(..1_000_000)) as u64;
    let mut rng = fastrand::Rng::with_seed(seed);
    assert!(identities > kills, "at least one identity per batch");
    println!("ha kill test: {kills} kills, {identities} identities, REMEDY_HA_SEED={seed}");

    let dc = Dc::shared().await;
    let etcd = Etcd::shared().await;
    let ou = dc.ou("ha-kill").await;
    let mut ldap = dc.admin().await;
    let created = Instant::now();
    let sams = users(&ou, &mut ldap, "k", identities).await;
    println!("{identities} users created in {:.1} s", created.elapsed().as_secs_f64());

    let mut cluster = HaCluster::start(&dc, &etcd).await;
    let mut leader = cluster.wait_leader(&[0, 1, 2], ELECTED_WITHIN).await;
    // One batch before each kill and one after the last.
    let batches: Vec<Vec<String>> =
        (0..=kills).map(|j| sams[j * identities / (kills + 1)..(j + 1) * identities / (kills + 1)].to_vec()).collect();
    let mut elections = Vec::new();
    let mut mid_pass = 0;
    for (k, batch) in batches.iter().enumerate() {
        cluster.commit(batch);
        if k >= kills {
            continue;
        }
        // A random moment of the sends: once a random share of this batch shows disabled, or a
        // random 0–2 s after its first disable shows, whichever comes first; one kill in four at a
        // random 0.2–3 s after the commit instead (before or while the pass observes).
        let want: BTreeSet<String> = batch.iter().map(|s| s.to_lowercase()).collect();
        let share = rng.usize(1..want.len().max(2));
        let early = rng.u8(..4) == 0;
        let wait = Duration::from_millis(if early { rng.u64(200..3000) } else { rng.u64(0..2000) });
        let committed = Instant::now();
        let mut first_seen: Option<Instant> = None;
        let seen = loop {
            let seen = disabled_count(&mut ldap, &ou.dn, &want).await;
            if seen > 0 && first_seen.is_none() {
                first_seen = Some(Instant::now());
            }
            let since = if early { Some(committed) } else { first_seen };
            if seen >= share || since.is_some_and(|t| t.elapsed() >= wait) {
                break seen;
            }
            assert!(committed.elapsed() < Duration::from_secs(120), "nothing of batch {k} disabled within 120 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let killed = Instant::now();
        cluster.kill_9(leader);
        let after_kill = disabled_count(&mut ldap, &ou.dn, &want).await;
        if after_kill > 0 && after_kill < want.len() {
            mid_pass += 1;
        }
        let victim = leader;
        let others = cluster.others(victim);
        leader = cluster.wait_leader(&others, ELECTED_WITHIN).await;
        let elected = killed.elapsed();
        elections.push(elected);
        println!(
            "kill {}: {} killed {:.2} s after the commit with {seen}/{} of its batch disabled ({after_kill} once \
             dead); {} elected after {:.2} s",
            k + 1,
            cluster.instances[victim].id,
            (killed - committed).as_secs_f64(),
            want.len(),
            cluster.instances[leader].id,
            elected.as_secs_f64()
        );
        cluster.start_instance(victim).await;
        leader = cluster.wait_leader(&[0, 1, 2], ELECTED_WITHIN).await;
    }

    let converge = Duration::from_secs(120 + identities as u64 / 5);
    wait_disabled(&mut ldap, &ou.dn, &sams, &mut cluster, converge).await;
    let records = cluster.wait_history(leader, converge, |records| each_changed_once(records, &sams)).await;
    // A moment more: nothing else is sent or recorded once converged.
    tokio::time::sleep(LEASE_TTL).await;
    let records_later = cluster.wait_history(leader, converge, |_| true).await;
    assert_eq!(chain(&records), chain(&records_later), "records after convergence:\n{}", summary(&records_later));

    assert_each_changed_once(&records, &sams);
    let by = changes(&records);
    let confirmed = by.values().filter(|c| c[0].1.contains("confirmed when read again")).count();
    for i in 0..3 {
        assert_eq!(cluster.verify(i).await, records.len() as u64, "{}", cluster.instances[i].id);
    }
    assert_disabled(&uac_on_dc(&mut ldap, &ou.dn).await, &sams);
    let sends = cluster.sends();
    assert_sent_once(&sends, &records, &sams);
    let logged = sends.values().filter(|s| s.applied == 1).count();
    let failed: usize = sends.values().map(|s| s.failed).sum();
    elections.sort();
    println!(
        "{kills} kills ({mid_pass} with the batch part-way disabled), {identities} identities: each disabled, one \
         succeeded record each ({confirmed} settled by recovery as confirmed); no account written twice (the logs show \
         {logged} writes, the others' answers never awaited: killed, or cut at sendTimeout; {failed} failed sends); {} records, the same \
         on all three, verified; elections after a kill: min {:.2} s, max {:.2} s",
        records.len(),
        elections.first().map_or(0.0, Duration::as_secs_f64),
        elections.last().map_or(0.0, Duration::as_secs_f64),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_a_paused_leader_sends_and_writes_nothing_after_it_resumes() {
    let dc = Dc::shared().await;
    let etcd = Etcd::shared().await;
    let ou = dc.ou("ha-pause").await;
    let mut ldap = dc.admin().await;
    let first = users(&ou, &mut ldap, "p", 50).await;
    let late = users(&ou, &mut ldap, "q", 1).await;
    let all: Vec<String> = first.iter().chain(&late).cloned().collect();

    let mut cluster = HaCluster::start(&dc, &etcd).await;
    let old = cluster.wait_leader(&[0, 1, 2], ELECTED_WITHIN).await;
    let others = cluster.others(old);

    // Paused, then a change arrives: when it resumes, it has a whole change to act on (its watcher's
    // events wait in the kernel), and must not. (Paused after the change arrived, it may be
    // mid-send: such a send completes after the resume, which tells nothing.)
    cluster.pause(old);
    let paused = Instant::now();
    cluster.commit(&first);
    let old_log = cluster.log_path(old, cluster.instances[old].runs);

    // A standby takes over, applies the change, and acts on a new manifest.
    let new = cluster.wait_leader(&others, ELECTED_WITHIN).await;
    println!("{} elected {:.2} s after the pause", cluster.instances[new].id, paused.elapsed().as_secs_f64());
    wait_disabled(&mut ldap, &ou.dn, &first, &mut cluster, Duration::from_secs(60)).await;
    cluster.commit(&late);
    wait_disabled(&mut ldap, &ou.dn, &late, &mut cluster, Duration::from_secs(60)).await;
    let settled = cluster.wait_history(new, Duration::from_secs(60), |r| each_changed_once(r, &all)).await;
    let dc_settled = uac_on_dc(&mut ldap, &ou.dn).await;
    // Well past the old leader's lease.
    tokio::time::sleep((LEASE_TTL * 2).saturating_sub(paused.elapsed())).await;

    // Frozen, it wrote nothing since the pause: whatever its log says from here on is after the resume.
    let at_resume = std::fs::metadata(&old_log).expect("the old leader's log").len() as usize;
    cluster.resume(old);
    let resumed = Instant::now();
    // It learns it lost the lease and becomes a standby of the new leader.
    let deadline = resumed + LEASE_TTL + ETCD_GIVES_UP_WITHIN;
    loop {
        cluster.assert_running();
        let view = cluster.ha(old).await;
        if view.as_ref().is_some_and(|v| v.stands_by_for(cluster.instances[new].id)) {
            break;
        }
        assert!(Instant::now() < deadline, "the resumed old leader says {view:?}\n{}", cluster.logs_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("{} standby {:.2} s after it resumed", cluster.instances[old].id, resumed.elapsed().as_secs_f64());
    // Time for anything it would still do to show.
    tokio::time::sleep(LEASE_TTL).await;

    // Nothing sent: its log shows no write after the resume, and the DC has changed no account since.
    let log = std::fs::read_to_string(&old_log).expect("the old leader's log");
    let said: Vec<String> = log[at_resume..]
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter_map(|event| event["fields"]["message"].as_str().map(str::to_owned))
        .take(12)
        .collect();
    println!("the old leader's log after it resumed: {said:#?}");
    let after_resume = sends_in(&log[at_resume..]);
    assert!(after_resume.is_empty(), "the old leader wrote after it resumed: {after_resume:?}\n{}", &log[at_resume..]);
    let dc_now = uac_on_dc(&mut ldap, &ou.dn).await;
    assert_eq!(dc_now, dc_settled, "the DC changed after the old leader resumed");
    assert_disabled(&dc_now, &all);
    let unlogged = assert_sent_once(&cluster.sends(), &settled, &all);
    if unlogged > 0 {
        println!(
            "{unlogged} writes without a log line (not awaited: cut at sendTimeout, or the term ended), settled by \
             recovery; who led when:\n{}",
            cluster.terms()
        );
    }
    // Nothing written: the same history everywhere, as it was before the resume.
    let records = cluster.wait_history(new, Duration::from_secs(30), |_| true).await;
    assert_eq!(chain(&records), chain(&settled), "records after the resume:\n{}", summary(&records));
    assert_each_changed_once(&records, &all);
    for i in 0..3 {
        assert_eq!(cluster.verify(i).await, records.len() as u64, "{}", cluster.instances[i].id);
    }
    let refused = cluster.metric(old, "remedy_ha_sends_refused_total").await;
    println!("the old leader's remedy_ha_sends_refused_total: {refused:?}");
    assert_eq!(cluster.wait_leader(&[0, 1, 2], Duration::from_secs(10)).await, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_one_etcd_member_lost_changes_nothing_and_quorum_lost_stops_acting_until_it_returns() {
    let dc = Dc::shared().await;
    let etcd = Etcd::exclusive().await;
    let ou = dc.ou("ha-etcd").await;
    let mut ldap = dc.admin().await;
    let sams = users(&ou, &mut ldap, "e", 2).await;
    let (one, two) = (vec![sams[0].clone()], vec![sams[1].clone()]);
    let mut cluster = HaCluster::start(&dc, &etcd).await;
    cluster.wait_leader(&[0, 1, 2], ELECTED_WITHIN).await;

    // One member of three lost: a change is still applied.
    let stopped = etcd.stop(&["member2"]);
    cluster.commit(&one);
    wait_disabled(&mut ldap, &ou.dn, &one, &mut cluster, Duration::from_secs(60)).await;
    cluster.wait_leader(&[0, 1, 2], Duration::from_secs(10)).await;
    stopped.start();

    // Two lost: nobody leads, within the lease and the client's time to give up.
    let leader = cluster.wait_leader(&[0, 1, 2], ELECTED_WITHIN).await;
    let stopped = etcd.stop(&["member2", "member3"]);
    let lost = Instant::now();
    let bound = LEASE_TTL + ETCD_GIVES_UP_WITHIN;
    loop {
        cluster.assert_running();
        let views = cluster.views().await;
        let acting = views.iter().any(|(_, v)| v.as_ref().is_none_or(|v| v.role == "leader"));
        if !acting {
            break;
        }
        assert!(lost.elapsed() < bound, "still acting {bound:?} after quorum was lost: {views:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "no leader {:.2} s after quorum was lost ({} led)",
        lost.elapsed().as_secs_f64(),
        cluster.instances[leader].id
    );

    // A change committed meanwhile waits.
    let before = uac_on_dc(&mut ldap, &ou.dn).await;
    cluster.commit(&two);
    tokio::time::sleep(LEASE_TTL * 2).await;
    let dc_now = uac_on_dc(&mut ldap, &ou.dn).await;
    assert_eq!(dc_now, before, "an account changed while etcd had no quorum");
    assert!(!cluster.sends().contains_key(&two[0].to_lowercase()), "sent without quorum");
    // What they say meanwhile (checked at the end, after what they do).
    let outage_views = cluster.views().await;

    // Quorum back: it is applied, once.
    stopped.start();
    let back = Instant::now();
    wait_disabled(&mut ldap, &ou.dn, &two, &mut cluster, Duration::from_secs(60)).await;
    println!("applied {:.2} s after quorum returned", back.elapsed().as_secs_f64());
    let leader = cluster.wait_leader(&[0, 1, 2], ELECTED_WITHIN).await;
    let records = cluster.wait_history(leader, Duration::from_secs(60), |r| each_changed_once(r, &sams)).await;
    assert_each_changed_once(&records, &sams);
    for i in 0..3 {
        assert_eq!(cluster.verify(i).await, records.len() as u64, "{}", cluster.instances[i].id);
    }
    assert_disabled(&uac_on_dc(&mut ldap, &ou.dn).await, &sams);
    assert_sent_once(&cluster.sends(), &records, &sams);

    // Without quorum, each said so, and was not ready.
    for (i, view) in &outage_views {
        let view =
            view.as_ref().unwrap_or_else(|| panic!("{} did not answer without quorum", cluster.instances[*i].id));
        assert_eq!(view.role, "etcd-unavailable", "{}: {view:?}", cluster.instances[*i].id);
        assert!(!view.ready, "without etcd's quorum an instance is not ready: {view:?}");
        assert!(view.body["etcdError"].is_string(), "says why: {view:?}");
    }
}
