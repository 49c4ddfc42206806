//! The daemon of the `remedy serve` end-to-end tests: the controller in this process, watching a
//! real manifest directory (real notify), acting on the real Samba DC as the scoped action account
//! and on graph-sim over loopback HTTP, recording in a real store. Used by `serve`, `dc_outage`
//! and (its configuration) `crash`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use remedy::controller::{Clock, Controller, ControllerHandle, Progress, Trigger};
use remedy::model::{
    ActionOutcome, ConditionReason, ConditionStatus, ConditionType, Event, HistoryRecord, ManifestStatus,
};
use remedy::providers::Providers;
use remedy::store::{HistoryQuery, Store};
use remedy::watch::ManifestWatcher;
use remedy_graph_sim::{Sim, SimConfig, SimUser};
use remedy_policies::config::Config;
use remedy_policies::{Action, Identity, ManifestName};
use tokio::sync::watch;

use super::dc::{Dc, TestUser};
use super::{entra_yaml, settings};

const TENANT: &str = "6f1c2a34-0000-4000-8000-00000000d3e0";
const CLIENT_ID: &str = "0b7d9e51-0000-4000-8000-0000000a9901";
const SECRET: &str = "serve-test-secret-not-a-real-one";

/// Every second: drift tests do not wait long.
pub const FAST_RESYNC: &str = "* * * * * *";
/// Once an hour: tests that count reconciles set off by manifest changes see no resync.
pub const HOURLY: &str = "0 0 * * * *";

pub struct Options {
    pub resync: &'static str,
    pub max_changes: usize,
    pub entra_users: Vec<SimUser>,
    pub with_entra: bool,
    /// `guardrails.protectedGroups`.
    pub protected_groups: Vec<String>,
    /// Lines of `activeDirectory.watch` (indented by four), e.g. `"    notification: false\n"`;
    /// empty: the defaults (change notification on).
    pub ad_watch: String,
    /// Top-level sections appended to `remedy.yaml` (e.g. `contest:`).
    pub extra_yaml: String,
    /// The DC's address as remedy reaches it (a proxy's), instead of the DC's own URL.
    pub ldaps_url: Option<String>,
    /// `activeDirectory.domainControllers` instead of `url`, and its `returnAfter`.
    pub domain_controllers: Vec<String>,
    pub return_after: Option<&'static str>,
    /// `entraId.deltaInterval` (the default, 30s, when `None`).
    pub delta_interval: Option<&'static str>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            resync: HOURLY,
            max_changes: 25,
            entra_users: Vec::new(),
            with_entra: true,
            protected_groups: Vec::new(),
            ad_watch: String::new(),
            extra_yaml: String::new(),
            ldaps_url: None,
            domain_controllers: Vec::new(),
            return_after: None,
            delta_interval: None,
        }
    }
}

/// A running controller and everything around it.
pub struct Daemon {
    /// The DC stays usable while the daemon runs.
    dc: Dc,
    pub dir: tempfile::TempDir,
    /// What the daemon watches (may be a symlink the test swaps).
    pub manifests: PathBuf,
    pub store: Store,
    pub handle: ControllerHandle,
    pub sim: Option<Sim>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The configuration an operator would write for the test DC and graph-sim.
pub fn config_yaml(dc: &Dc, dir: &Path, manifests: &Path, options: &Options, sim_url: Option<&str>) -> String {
    let env = dc.env();
    let mut yaml = format!(
        "manifests:\n  path: {}\n  debounce: 200ms\nguardrails:\n  allowedScopes: [\"{}\"]\n  maxChangesPerReconcile: {}\n\
         resync: \"{}\"\nstore:\n  path: {}\n{}",
        manifests.display(),
        env.tests_ou,
        options.max_changes,
        options.resync,
        dir.join("store").display(),
        dc.active_directory_yaml(&env.action_password_file, 4),
    );
    if let Some(url) = &options.ldaps_url {
        yaml = yaml.replace(&format!("url: {}\n", env.ldaps_url), &format!("url: {url}\n"));
    }
    if !options.domain_controllers.is_empty() {
        let mut list = format!("domainControllers: {:?}\n", options.domain_controllers);
        if let Some(after) = options.return_after {
            list.push_str(&format!("  returnAfter: {after}\n"));
        }
        yaml = yaml.replace(&format!("url: {}\n", env.ldaps_url), &list);
    }
    if !options.ad_watch.is_empty() {
        yaml.push_str("  watch:\n");
        yaml.push_str(&options.ad_watch);
    }
    yaml.push_str(&options.extra_yaml);
    if !options.protected_groups.is_empty() {
        yaml =
            yaml.replace("guardrails:\n", &format!("guardrails:\n  protectedGroups: {:?}\n", options.protected_groups));
    }
    if let Some(url) = sim_url {
        std::fs::write(dir.join("graph.secret"), SECRET).expect("secret file");
        yaml.push_str(&entra_yaml(TENANT, CLIENT_ID, dir.join("graph.secret").display(), url, None));
        if let Some(interval) = options.delta_interval {
            yaml.push_str(&format!("  deltaInterval: {interval}\n"));
        }
    }
    yaml
}

impl Daemon {
    /// Starts a controller on a fresh directory `<tmp>/manifests` (empty unless `setup` fills it).
    pub async fn start(dc: &Dc, options: Options) -> Daemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("manifest directory");
        Daemon::start_on(dc, dir, manifests, options).await
    }

    pub async fn start_on(dc: &Dc, dir: tempfile::TempDir, manifests: PathBuf, options: Options) -> Daemon {
        let sim = if options.with_entra {
            let config = SimConfig { users: options.entra_users.clone(), ..SimConfig::new(TENANT, CLIENT_ID, SECRET) };
            Some(remedy_graph_sim::spawn(config).await.expect("graph-sim starts"))
        } else {
            None
        };
        let yaml = config_yaml(dc, dir.path(), &manifests, &options, sim.as_ref().map(Sim::url).as_deref());
        let config = Config::from_yaml("remedy.yaml", &yaml).unwrap_or_else(|e| panic!("config: {e:?}\n{yaml}"));
        let (store, _) = Store::open(dir.path().join("store")).expect("store opens");
        let providers = Providers::new(&config, dir.path()).expect("providers");
        let settings = settings(&config, manifests.clone());
        let (mut controller, handle) = Controller::new(settings, store.clone(), providers, Clock::System);
        // As `remedy serve` wires it.
        if let Some(wiring) =
            remedy::drift::start(&config, dir.path(), &store, handle.metrics()).await.expect("change watchers")
        {
            controller = controller.with_drift(wiring);
        }
        let (watcher, events) =
            ManifestWatcher::start(manifests.clone(), config.manifests.debounce).expect("watcher starts");
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            controller.run(events, move || watcher.rescan(), shutdown).await.expect("the controller stops cleanly");
        });
        let daemon = Daemon { dc: dc.clone(), dir, manifests, store, handle, sim, stop, task };
        daemon.wait("the first manifest set is loaded", Duration::from_secs(10), |p| p.loaded).await;
        daemon
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the controller stops within 20 s")
            .expect("the controller task did not panic");
    }

    /// Stops the controller and starts a new one on the same directory, store and manifests (a
    /// restart of `remedy serve`).
    pub async fn restart(self, options: Options) -> Daemon {
        let Daemon { dc, dir, manifests, store, handle, sim, stop, task } = self;
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("the controller stops within 20 s")
            .expect("the controller task did not panic");
        drop((store, handle, sim));
        Daemon::start_on(&dc, dir, manifests, options).await
    }

    pub fn progress(&self) -> Progress {
        self.handle.progress().borrow().clone()
    }

    pub async fn wait(&self, what: &str, timeout: Duration, done: impl Fn(&Progress) -> bool) {
        if tokio::time::timeout(timeout, self.handle.wait_for(done)).await.is_err() {
            panic!("timed out after {timeout:?} waiting for {what}; progress: {:#?}", self.progress());
        }
    }

    /// Waits until the manifest's status satisfies `done`; returns it.
    pub async fn wait_status(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&ManifestStatus) -> bool,
    ) -> ManifestStatus {
        let name = ManifestName::new(name).expect("manifest name");
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let status = self.store.get_status(&name).expect("status readable");
            if let Some(status) = status.as_ref().filter(|s| done(s)) {
                return status.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out after {timeout:?} waiting on the status of {name}: {status:#?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Writes a manifest file the way editors do: a temporary file, then a rename over the name.
    pub fn save(&self, file: &str, text: &str) {
        save_atomically(&self.manifests.join(file), text);
    }

    pub fn history(&self, identity: &Identity) -> Vec<HistoryRecord> {
        let query = HistoryQuery { identity: Some(identity.clone()), limit: 1000, ..HistoryQuery::default() };
        self.store.query_history(&query).expect("history readable").records
    }

    /// Passes set off by `trigger` so far.
    pub fn passes_by(&self, trigger: Trigger) -> u64 {
        self.progress().passes_by_trigger.get(&trigger).copied().unwrap_or(0)
    }

    pub fn manifest_passes(&self) -> u64 {
        self.passes_by(Trigger::ManifestsChanged)
    }
}

pub fn save_atomically(path: &Path, text: &str) {
    let temporary = path.with_file_name(format!(".{}.tmp", path.file_name().expect("a file name").to_string_lossy()));
    std::fs::write(&temporary, text).expect("write");
    std::fs::rename(&temporary, path).expect("rename");
}

pub fn manifest(name: &str, sam: &str, spec: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"{name}: test\"\n  \
         target:\n    samAccountName: {sam}\n{spec}"
    )
}

pub const DISABLE_AND_SUSPEND: &str = "  activeDirectory:\n    disabled: true\n  entraId:\n    suspended: true\n";
pub const DISABLE: &str = "  activeDirectory:\n    disabled: true\n";
pub const SUSPEND: &str = "  entraId:\n    suspended: true\n";

pub fn sam(user: &TestUser) -> Identity {
    Identity::sam_account_name(&user.sam).expect("sAMAccountName")
}

pub fn condition(status: &ManifestStatus, kind: ConditionType) -> (ConditionStatus, ConditionReason, String) {
    let c = status.condition(kind).unwrap_or_else(|| panic!("no {kind:?} condition in {status:#?}"));
    (c.status, c.reason, c.message.clone())
}

pub fn is_ready(status: &ManifestStatus) -> bool {
    status.condition(ConditionType::Ready).is_some_and(|c| c.status == ConditionStatus::True)
}

pub fn actions(records: &[HistoryRecord]) -> Vec<(Action, ActionOutcome, String, String)> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Action(a) => Some((a.action, a.outcome, a.before.clone(), a.after.clone())),
            _ => None,
        })
        .collect()
}

/// Every history record of a store, page by page, oldest first.
pub fn all_history(store: &Store) -> Vec<HistoryRecord> {
    let mut records = Vec::new();
    let mut after_id = None;
    loop {
        let query = HistoryQuery { after_id, limit: HistoryQuery::MAX_LIMIT, ..HistoryQuery::default() };
        let page = store.query_history(&query).expect("history readable");
        records.extend(page.records);
        match page.next_after_id {
            Some(id) => after_id = Some(id),
            None => return records,
        }
    }
}
