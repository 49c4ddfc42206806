//! The 3-member etcd cluster of `scripts/ha` (loopback, plain HTTP), shared by every test of this
//! binary that talks to it (`ha_coord`, `ha`): its client URLs from the environment, and a
//! process-wide lock, taken shared by the tests that use the cluster ([`Etcd::shared`]) and
//! exclusively by those that stop members ([`Etcd::exclusive`]), so that no test finds a member
//! stopped under its feet by another. A stopped member starts again when the [`Restart`] guard
//! goes, also on a panic: the cluster is left as it was found. Take the DC's hold (if any) before
//! this one, never the other way round.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, OnceLock};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use uuid::Uuid;

/// Held only to be released when dropped.
#[allow(dead_code)]
enum Hold {
    Shared(OwnedRwLockReadGuard<()>),
    Exclusive(OwnedRwLockWriteGuard<()>),
}

/// The right to use the cluster: shared, or exclusive for the tests that stop members.
pub struct Etcd {
    pub endpoints: Vec<String>,
    dir: PathBuf,
    hold: Hold,
}

fn lock() -> Arc<RwLock<()>> {
    static LOCK: OnceLock<Arc<RwLock<()>>> = OnceLock::new();
    LOCK.get_or_init(|| Arc::new(RwLock::new(()))).clone()
}

/// The cluster's client URLs; these tests need the etcd cluster, as the AD tests need the DC.
pub fn endpoints() -> Vec<String> {
    match std::env::var("REMEDY_TEST_ETCD_ENDPOINTS") {
        Ok(list) if !list.trim().is_empty() => list.split(',').map(|e| e.trim().to_owned()).collect(),
        _ => panic!(
            "REMEDY_TEST_ETCD_ENDPOINTS is not set: these tests need the 3-member etcd cluster. Run `scripts/test`, \
             or `scripts/ha start && eval \"$(scripts/ha env)\"` and then cargo test"
        ),
    }
}

impl Etcd {
    /// For a test that uses the cluster: waits while a test that stops members runs.
    pub async fn shared() -> Etcd {
        let endpoints = endpoints();
        Etcd::new(endpoints, Hold::Shared(lock().read_owned().await))
    }

    /// For a test that stops members: waits until no other test of this binary uses the cluster.
    pub async fn exclusive() -> Etcd {
        let endpoints = endpoints();
        Etcd::new(endpoints, Hold::Exclusive(lock().write_owned().await))
    }

    fn new(endpoints: Vec<String>, hold: Hold) -> Etcd {
        let dir =
            std::env::var("REMEDY_TEST_ETCD_DIR").map(PathBuf::from).unwrap_or_else(|_| repo().join("target/etcd"));
        Etcd { endpoints, dir, hold }
    }

    /// A key prefix no other test (nor another run) uses.
    pub fn prefix() -> String {
        format!("/remedy-test/{}/", Uuid::new_v4())
    }

    /// `scripts/ha ARGS` on this cluster's folder.
    pub fn ha(&self, args: &[&str]) {
        let status = Command::new(repo().join("scripts/ha"))
            .args(args)
            .env("REMEDY_ETCD_DIR", &self.dir)
            .status()
            .expect("run scripts/ha");
        assert!(status.success(), "scripts/ha {args:?}: {status}");
    }

    /// Stops `members` (`member1`..`member3`); they start again when the returned guard goes, or
    /// at [`Restart::start`]. Only with the exclusive hold.
    pub fn stop(&self, members: &[&str]) -> Restart<'_> {
        assert!(matches!(self.hold, Hold::Exclusive(_)), "only a test holding Etcd::exclusive() may stop members");
        let mut args = vec!["stop"];
        args.extend_from_slice(members);
        self.ha(&args);
        Restart { etcd: self, started: false }
    }
}

/// Members stopped by [`Etcd::stop`]; started again (`scripts/ha start`, which waits until the
/// cluster is healthy) by [`Restart::start`] or when dropped.
pub struct Restart<'a> {
    etcd: &'a Etcd,
    started: bool,
}

impl Restart<'_> {
    pub fn start(mut self) {
        self.started = true;
        self.etcd.ha(&["start"]);
    }
}

impl Drop for Restart<'_> {
    fn drop(&mut self) {
        if !self.started {
            self.etcd.ha(&["start"]);
        }
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}
