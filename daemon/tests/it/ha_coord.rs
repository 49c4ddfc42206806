//! The coordination of several instances (issue 18), on the real 3-member etcd cluster of
//! `scripts/ha` (loopback, plain HTTP): one leader among campaigners, a lease that expires or is
//! revoked hands leadership over and fences the old leader out, one member lost changes nothing,
//! quorum lost stops everything within a bounded time until it returns.
//!
//! Run `scripts/ha start && eval "$(scripts/ha env)"` first. Without `REMEDY_TEST_ETCD_ENDPOINTS`
//! the tests fail, saying so. Each test
//! campaigns under a prefix of its own; the tests that stop members hold the cluster exclusively,
//! the others shared (`support::etcd`, a lock shared with the `ha` tests), so no test finds a
//! member stopped under its feet. The tests
//! run on a multi-threaded runtime, as `remedy serve` does: a keepalive must not wait while the
//! test blocks on `scripts/ha`.
//!
//! TLS to the members is checked on a second cluster, `scripts/ha start --tls` (other ports, its
//! own folder; `scripts/ha env` then prints `REMEDY_TEST_ETCD_TLS_ENDPOINTS` and
//! `REMEDY_TEST_ETCD_TLS_DIR`). Without it that test says it was skipped, unless
//! `REMEDY_TEST_ETCD_TLS_REQUIRED=1`, which makes its absence a failure.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use remedy::coord::etcd::{EtcdCoordination, EtcdSettings};
use remedy::coord::{CoordError, Coordination, FencedOp, Leadership};
use remedy_policies::config::{EtcdConfig, EtcdTls};
use tokio::task::JoinSet;

use crate::support::etcd::{Etcd, Restart};

const TTL: Duration = Duration::from_secs(3);

fn settings() -> EtcdSettings {
    EtcdSettings {
        request_timeout: Duration::from_secs(2),
        connect_timeout: Duration::from_millis(500),
        poll_interval: Duration::from_millis(100),
    }
}

/// What the client may take, at most, to say that the cluster cannot act: each of the three
/// endpoints' request timeout, plus slack for a loaded machine.
const UNAVAILABLE_WITHIN: Duration = Duration::from_secs(9);

/// The cluster (its lock shared with the `ha` tests: see `support::etcd`) and clients of it.
struct Cluster(Etcd);

impl Cluster {
    async fn shared() -> Cluster {
        Cluster(Etcd::shared().await)
    }

    async fn exclusive() -> Cluster {
        Cluster(Etcd::exclusive().await)
    }

    /// A client for a campaign of its own (its own prefix: tests do not compete).
    fn client(&self, prefix: &str) -> EtcdCoordination {
        EtcdCoordination::new(&self.0.endpoints, prefix, settings()).expect("client")
    }

    /// Stops `members`; they are started again when the returned guard goes, even on a panic.
    fn stop(&self, members: &[&str]) -> Restart<'_> {
        self.0.stop(members)
    }

    /// Revokes a lease directly (not through the code under test), as an operator could.
    async fn revoke(&self, lease_id: i64) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::new();
        let answer: serde_json::Value = http
            .post(format!("{}/v3/lease/revoke", self.0.endpoints[0]))
            .json(&serde_json::json!({ "ID": lease_id.to_string() }))
            .send()
            .await
            .expect("revoke")
            .json()
            .await
            .expect("revoke answer");
        assert!(answer.get("error").is_none(), "revoke: {answer}");
    }
}

fn prefix() -> String {
    Etcd::prefix()
}

/// Campaigns of `names` under `prefix`, each with a client of its own.
fn campaigners(cluster: &Cluster, prefix: &str, names: &[&str], ttl: Duration) -> JoinSet<Leadership> {
    let mut set = JoinSet::new();
    for name in names {
        let client = cluster.client(prefix);
        let name = name.to_string();
        set.spawn(async move { client.campaign(&name, ttl).await.expect("campaign") });
    }
    set
}

async fn next_leader(set: &mut JoinSet<Leadership>, within: Duration) -> Leadership {
    tokio::time::timeout(within, set.join_next())
        .await
        .expect("a campaigner elected in time")
        .expect("a campaigner")
        .expect("campaign task")
}

fn assert_not_leader<T: std::fmt::Debug>(result: Result<T, CoordError>) {
    match result {
        Err(CoordError::NotLeader { .. }) => {}
        other => panic!("expected NotLeader, got {other:?}"),
    }
}

fn assert_unavailable<T: std::fmt::Debug>(result: Result<T, CoordError>, started: Instant, what: &str) {
    let took = started.elapsed();
    match result {
        Err(CoordError::Unavailable { ref answer, .. }) => {
            eprintln!("{what}: unavailable after {took:?}: {answer}");
        }
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
    assert!(took <= UNAVAILABLE_WITHIN, "{what}: took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_coord_one_leader_among_three_campaigners() {
    let cluster = Cluster::shared().await;
    let prefix = prefix();
    let mut set = campaigners(&cluster, &prefix, &["a", "b", "c"], TTL);

    let leader = next_leader(&mut set, Duration::from_secs(10)).await;
    // The others keep their leases alive and wait: nobody else leads for several TTLs.
    let others = tokio::time::timeout(3 * TTL, set.join_next()).await;
    assert!(others.is_err(), "a second leader while the first keeps its lease");
    assert!(leader.remaining() > Duration::ZERO);

    let observer = cluster.client(&prefix);
    let seen = observer.observe_leader().await.expect("observe").expect("a leader");
    assert_eq!(seen.instance_id, leader.instance_id());
    assert_eq!(seen.key, leader.key());
    assert_eq!(seen.create_revision, leader.create_revision());
    assert_eq!(seen.lease_id, leader.lease_id());
    assert!(seen.leading_since.is_some());

    let key = format!("{prefix}journal/1");
    observer.fenced_put(&leader, &key, b"intent").await.expect("the leader writes");
    assert_eq!(observer.get(&key).await.expect("get"), Some(b"intent".to_vec()));

    set.abort_all();
    observer.resign(leader).await.expect("resign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_coord_a_revoked_lease_elects_another_and_fences_the_old_leader_out() {
    let cluster = Cluster::shared().await;
    let prefix = prefix();
    let client = cluster.client(&prefix);
    let old = client.campaign("old", TTL).await.expect("campaign");
    let existing = format!("{prefix}journal/existing");
    client.fenced_put(&old, &existing, b"kept").await.expect("the leader writes");

    let mut set = campaigners(&cluster, &prefix, &["new"], TTL);
    cluster.revoke(old.lease_id()).await;
    let new = next_leader(&mut set, Duration::from_secs(5)).await;
    assert_eq!(new.instance_id(), "new");
    assert!(new.create_revision() > old.create_revision());

    // The deposed leader's fenced transaction writes nothing: neither its puts nor its delete.
    let (a, b) = (format!("{prefix}journal/a"), format!("{prefix}journal/b"));
    let ops = [
        FencedOp::Put { key: a.clone(), value: b"stale".to_vec() },
        FencedOp::Put { key: b.clone(), value: b"stale".to_vec() },
        FencedOp::Delete { key: existing.clone() },
    ];
    assert_not_leader(client.fenced_txn(&old, &ops).await);
    assert_eq!(client.get(&a).await.expect("get"), None);
    assert_eq!(client.get(&b).await.expect("get"), None);
    assert_eq!(client.get(&existing).await.expect("get"), Some(b"kept".to_vec()));
    assert_eq!(old.remaining(), Duration::ZERO, "a refused leadership has no time left");
    assert!(old.lost().is_some());

    client.fenced_txn(&new, &ops).await.expect("the new leader writes");
    assert_eq!(client.get(&a).await.expect("get"), Some(b"stale".to_vec()));
    assert_eq!(client.get(&existing).await.expect("get"), None);
    client.resign(new).await.expect("resign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_coord_an_expired_lease_elects_another_after_the_old_leaders_own_deadline() {
    let cluster = Cluster::shared().await;
    let ttl = Duration::from_secs(5);
    let prefix = prefix();
    let client = cluster.client(&prefix);
    let old = client.campaign("old", ttl).await.expect("campaign");
    let mut set = campaigners(&cluster, &prefix, &["new"], ttl);
    tokio::time::sleep(Duration::from_secs(1)).await; // the standby waits on its own key

    // A crashed or paused leader: its lease is no longer renewed, and expires.
    let lapsed = Instant::now();
    old.let_lapse();
    let new = next_leader(&mut set, ttl + Duration::from_secs(5)).await;
    let failover = lapsed.elapsed();
    eprintln!("failover after a lapsed lease of TTL {ttl:?}: {failover:?}");
    // Not before the lease could have expired: the last keepalive was at most TTL/3 earlier.
    assert!(failover >= ttl / 2, "elected after {failover:?}, before the lease expired");
    assert!(failover <= ttl + Duration::from_secs(2), "elected after {failover:?}");
    // The old leader's own clock said its time was up no later than the new one was elected:
    // a send that respects `remaining` never overlaps the new leader.
    assert_eq!(old.remaining(), Duration::ZERO);

    let key = format!("{prefix}journal/1");
    assert_not_leader(client.fenced_put(&old, &key, b"stale").await);
    assert_eq!(client.get(&key).await.expect("get"), None);
    client.fenced_put(&new, &key, b"fresh").await.expect("the new leader writes");
    client.resign(new).await.expect("resign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_coord_losing_one_member_of_three_changes_nothing() {
    let cluster = Cluster::exclusive().await;
    let prefix = prefix();
    let client = cluster.client(&prefix);
    let leader = client.campaign("a", TTL).await.expect("campaign");

    // member1 is the first endpoint, the one the client was using.
    let restart = cluster.stop(&["member1"]);
    let mut set = campaigners(&cluster, &prefix, &["b"], TTL);
    tokio::time::sleep(3 * TTL).await;
    assert!(leader.remaining() > Duration::ZERO, "the lease is still renewed");
    assert!(leader.lost().is_none());
    let key = format!("{prefix}journal/1");
    client.fenced_put(&leader, &key, b"intent").await.expect("the leader writes");
    assert_eq!(client.get(&key).await.expect("get"), Some(b"intent".to_vec()));
    let seen = client.observe_leader().await.expect("observe").expect("a leader");
    assert_eq!(seen.instance_id, "a");
    assert!(set.try_join_next().is_none(), "no second leader");

    client.resign(leader).await.expect("resign");
    let b = next_leader(&mut set, Duration::from_secs(5)).await;
    client.fenced_put(&b, &key, b"next").await.expect("the next leader writes");
    client.resign(b).await.expect("resign");
    drop(restart);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_coord_losing_quorum_stops_everything_within_bounds_until_it_returns() {
    let cluster = Cluster::exclusive().await;
    let prefix = prefix();
    let client = cluster.client(&prefix);
    let leader = client.campaign("a", TTL).await.expect("campaign");
    let key = format!("{prefix}journal/1");

    let stopped = Instant::now();
    let restart = cluster.stop(&["member2", "member3"]);

    let started = Instant::now();
    assert_unavailable(client.fenced_put(&leader, &key, b"intent").await, started, "fenced_put");
    let started = Instant::now();
    assert_unavailable(client.campaign("b", TTL).await, started, "campaign");
    let started = Instant::now();
    assert_unavailable(client.observe_leader().await, started, "observe_leader");
    // No keepalive is acknowledged: the leader's time runs out within its TTL.
    tokio::time::sleep(TTL.saturating_sub(stopped.elapsed())).await;
    assert_eq!(leader.remaining(), Duration::ZERO, "no lease time without quorum");

    drop(restart); // scripts/ha start: quorum is back
                   // The lease outlived the outage or not, as etcd decides (a new raft leader renews every
                   // lease; one that expired while quorum was lost is revoked when proposals go through again):
                   // either the leader's writes go through again, or they are refused and write nothing.
    let deadline = Instant::now() + Duration::from_secs(15);
    let resumed = loop {
        match client.fenced_put(&leader, &key, b"intent").await {
            Ok(()) => break true,
            Err(CoordError::NotLeader { reason, .. }) => {
                eprintln!("after quorum returned, the old leadership is gone: {reason}");
                break false;
            }
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("after quorum returned: {e}"),
        }
    };
    if resumed {
        // The next acknowledged keepalive gives the leader its lease time back.
        let deadline = Instant::now() + TTL + Duration::from_secs(3);
        while leader.remaining() == Duration::ZERO {
            assert!(Instant::now() < deadline, "no keepalive acknowledged after quorum returned");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(client.get(&key).await.expect("get"), Some(b"intent".to_vec()));
    } else {
        assert_eq!(leader.remaining(), Duration::ZERO);
        assert_eq!(client.get(&key).await.expect("get"), None);
    }
    client.resign(leader).await.expect("resign");
    let b = tokio::time::timeout(Duration::from_secs(10), client.campaign("b", TTL))
        .await
        .expect("elected in time")
        .expect("campaign after quorum returned");
    client.fenced_put(&b, &key, b"next").await.expect("the next leader writes");
    assert_eq!(client.get(&key).await.expect("get"), Some(b"next".to_vec()));
    client.resign(b).await.expect("resign");
}

/// The TLS cluster of `scripts/ha start --tls`: its client URLs and the folder of its CA and
/// client certificate. Absent: `None` after saying so, or a failure when
/// `REMEDY_TEST_ETCD_TLS_REQUIRED=1` says the run must check TLS.
fn tls_cluster() -> Option<(Vec<String>, PathBuf)> {
    let endpoints = std::env::var("REMEDY_TEST_ETCD_TLS_ENDPOINTS").unwrap_or_default();
    let dir = std::env::var("REMEDY_TEST_ETCD_TLS_DIR").unwrap_or_default();
    if !endpoints.trim().is_empty() && !dir.trim().is_empty() {
        return Some((endpoints.split(',').map(|e| e.trim().to_owned()).collect(), PathBuf::from(dir)));
    }
    let how = "REMEDY_TEST_ETCD_TLS_ENDPOINTS and REMEDY_TEST_ETCD_TLS_DIR are not set: start the TLS cluster with \
               `scripts/ha start --tls && eval \"$(scripts/ha env)\"`, then cargo test";
    if std::env::var("REMEDY_TEST_ETCD_TLS_REQUIRED").is_ok_and(|v| v == "1") {
        panic!("REMEDY_TEST_ETCD_TLS_REQUIRED=1 but {how}");
    }
    eprintln!("skipped, TLS to etcd not checked: {how} (REMEDY_TEST_ETCD_TLS_REQUIRED=1 makes this a failure)");
    None
}

fn tls_config(endpoints: &[String], ca_file: &str, client: Option<(&str, &str)>) -> EtcdConfig {
    EtcdConfig {
        endpoints: endpoints.to_vec(),
        prefix: prefix(),
        request_timeout: Duration::from_secs(2),
        tls: Some(EtcdTls {
            ca_file: ca_file.to_owned(),
            cert_file: client.map(|(cert, _)| cert.to_owned()),
            key_file: client.map(|(_, key)| key.to_owned()),
        }),
        insecure_plaintext: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_coord_tls_campaigns_with_a_client_certificate_and_trusts_only_its_ca() {
    let Some((endpoints, dir)) = tls_cluster() else { return };
    // Files relative to the configuration's folder, as remedy.yaml names them.
    let config = tls_config(&endpoints, "ca.pem", Some(("client.pem", "client.key")));
    let client = EtcdCoordination::from_config(&config, &dir).expect("client");
    let leader = tokio::time::timeout(Duration::from_secs(10), client.campaign("tls-a", TTL))
        .await
        .expect("in time")
        .expect("elected");
    let seen = client.observe_leader().await.expect("observe").expect("a leader");
    assert_eq!(seen.instance_id, "tls-a");
    let key = format!("{}journal/1", config.prefix);
    client.fenced_put(&leader, &key, b"over TLS").await.expect("the leader writes");
    assert_eq!(client.get(&key).await.expect("get"), Some(b"over TLS".to_vec()));
    client.resign(leader).await.expect("resign");

    // The members require a client certificate (--client-cert-auth).
    let anonymous = EtcdCoordination::from_config(&tls_config(&endpoints, "ca.pem", None), &dir).expect("client");
    match anonymous.get(&key).await {
        Err(CoordError::Tls { problem, .. }) => {
            assert!(problem.contains("refused remedy's client certificate"), "{problem}")
        }
        other => panic!("without a client certificate: expected a TLS refusal, got {other:?}"),
    }

    // A CA that did not sign the members' certificate: no request reaches them.
    let other = tempfile::tempdir().expect("tempdir");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "not the etcd lab CA");
    let key_pair = rcgen::KeyPair::generate().expect("key");
    let wrong_ca = params.self_signed(&key_pair).expect("CA");
    std::fs::write(other.path().join("ca.pem"), wrong_ca.pem()).expect("write");
    let client_cert = dir.join("client.pem");
    let client_key = dir.join("client.key");
    let config = tls_config(
        &endpoints,
        other.path().join("ca.pem").to_str().expect("utf-8"),
        Some((client_cert.to_str().expect("utf-8"), client_key.to_str().expect("utf-8"))),
    );
    let distrusted = EtcdCoordination::from_config(&config, &dir).expect("client");
    match distrusted.campaign("tls-b", TTL).await {
        Err(error @ CoordError::Tls { .. }) => {
            let text = error.to_string();
            assert!(text.contains("certificate is not accepted") && text.contains("UnknownIssuer"), "{text}");
            assert!(!error.is_transient(), "a configuration problem: {text}");
        }
        other => panic!("with the wrong CA: expected a TLS refusal, got {other:?}"),
    }
}
