//! `remedy serve` end to end: the controller in this process, watching a real manifest directory
//! (real notify), acting on the real Samba DC as the scoped action account and on graph-sim over
//! loopback HTTP, recording in a real store. Each test has its own OU, directory and store.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use remedy::controller::{Backoff, Clock, Controller, ControllerHandle, Progress, Providers, Settings, Trigger};
use remedy::schedule::ResyncSchedule;
use remedy::store::{
    ActionOutcome, ConditionReason, ConditionStatus, ConditionType, Event, HistoryQuery, HistoryRecord, ManifestStatus,
    Store,
};
use remedy::watch::ManifestWatcher;
use remedy_graph_sim::{Sim, SimConfig, SimUser};
use remedy_policies::config::Config;
use remedy_policies::{Action, Identity, ManifestName};
use tokio::sync::watch;

use crate::dc::{self, TestOu, TestUser};

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
}

impl Default for Options {
    fn default() -> Self {
        Options { resync: HOURLY, max_changes: 25, entra_users: Vec::new(), with_entra: true }
    }
}

/// A running controller and everything around it.
pub struct Daemon {
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
pub fn config_yaml(dir: &Path, manifests: &Path, options: &Options, sim_url: Option<&str>) -> String {
    let env = dc::env();
    let mut yaml = format!(
        "manifests:\n  path: {}\n  debounce: 200ms\nguardrails:\n  allowedScopes: [\"{}\"]\n  maxChangesPerReconcile: {}\n\
         resync: \"{}\"\nstore:\n  path: {}\nactiveDirectory:\n  url: {}\n  caFile: {}\n  bindUser: {}\n  \
         passwordFile: {}\n  baseDn: {}\n  connections: 4\n  connectTimeout: 2s\n  operationTimeout: 10s\n",
        manifests.display(),
        env.tests_ou,
        options.max_changes,
        options.resync,
        dir.join("store").display(),
        env.ldaps_url,
        env.ca_file.display(),
        env.action_bind,
        env.action_password_file.display(),
        env.base_dn,
    );
    if let Some(url) = sim_url {
        std::fs::write(dir.join("graph.secret"), SECRET).expect("secret file");
        yaml.push_str(&format!(
            "entraId:\n  tenantId: {TENANT}\n  clientId: {CLIENT_ID}\n  clientSecretFile: {}\n  authorityHost: {url}\n  \
             graphUrl: {url}\n",
            dir.join("graph.secret").display()
        ));
    }
    yaml
}

impl Daemon {
    /// Starts a controller on a fresh directory `<tmp>/manifests` (empty unless `setup` fills it).
    pub async fn start(options: Options) -> Daemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("manifest directory");
        Daemon::start_on(dir, manifests, options).await
    }

    pub async fn start_on(dir: tempfile::TempDir, manifests: PathBuf, options: Options) -> Daemon {
        let sim = if options.with_entra {
            let config = SimConfig { users: options.entra_users.clone(), ..SimConfig::new(TENANT, CLIENT_ID, SECRET) };
            Some(remedy_graph_sim::spawn(config).await.expect("graph-sim starts"))
        } else {
            None
        };
        let yaml = config_yaml(dir.path(), &manifests, &options, sim.as_ref().map(Sim::url).as_deref());
        let config = Config::from_yaml("remedy.yaml", &yaml).unwrap_or_else(|e| panic!("config: {e:?}\n{yaml}"));
        let (store, _) = Store::open(dir.path().join("store")).expect("store opens");
        let providers = Providers::new(&config, dir.path()).expect("providers");
        let settings = Settings {
            guardrails: config.guardrails.clone(),
            resync: ResyncSchedule::parse(&config.resync).expect("schedule"),
            manifest_dir: manifests.clone(),
            backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(5) },
        };
        let (controller, handle) = Controller::new(settings, store.clone(), providers, Clock::System);
        let (watcher, events) =
            ManifestWatcher::start(manifests.clone(), config.manifests.debounce).expect("watcher starts");
        let (stop, shutdown) = watch::channel(false);
        let task = tokio::spawn(async move {
            controller.run(events, move || watcher.rescan(), shutdown).await.expect("the controller stops cleanly");
        });
        let daemon = Daemon { dir, manifests, store, handle, sim, stop, task };
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

    pub fn manifest_passes(&self) -> u64 {
        self.progress().passes_by_trigger.get(&Trigger::ManifestsChanged).copied().unwrap_or(0)
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

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=test", "-c", "user.email=test@remedy.test", "-c", "init.defaultBranch=main"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} in {} failed", dir.display());
}

#[tokio::test]
async fn a_new_manifest_disables_in_ad_and_suspends_in_entra_within_seconds() {
    let ou = TestOu::create("serve-new").await;
    let user = ou.add_user("new", 0x200).await;
    let options = Options { entra_users: vec![SimUser::new(&user.upn)], ..Options::default() };
    let daemon = Daemon::start(options).await;

    daemon.save("inc-1.yaml", &manifest("inc-1", &user.sam, DISABLE_AND_SUSPEND));
    let status = daemon.wait_status("inc-1", Duration::from_secs(15), is_ready).await;

    let mut ldap = dc::admin().await;
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x202, "disabled in AD");
    let sim = daemon.sim.as_ref().expect("graph-sim");
    assert!(!sim.user(&user.upn).expect("in Entra").account_enabled, "suspended in Entra ID");

    let (_, reason, message) = condition(&status, ConditionType::Ready);
    assert_eq!(reason, ConditionReason::Succeeded, "{message}");
    assert!(status.observed_generation.is_some());
    let history = actions(&daemon.history(&sam(&user)));
    assert_eq!(
        history,
        vec![
            (Action::DisableAccount, ActionOutcome::Succeeded, "0x200".into(), "0x202".into()),
            (Action::SuspendUser, ActionOutcome::Succeeded, "true".into(), "false".into()),
        ],
        "one record per action, with the value before and after"
    );
    daemon.store.verify_history().expect("the chain verifies");
    daemon.stop().await;
}

#[tokio::test]
async fn an_account_re_enabled_behind_remedys_back_is_disabled_again_with_a_drift_record() {
    let ou = TestOu::create("serve-drift").await;
    let user = ou.add_user("drift", 0x200).await;
    let options = Options { resync: FAST_RESYNC, with_entra: false, ..Options::default() };
    let daemon = Daemon::start(options).await;
    daemon.save("inc-2.yaml", &manifest("inc-2", &user.sam, DISABLE));
    daemon.wait_status("inc-2", Duration::from_secs(15), is_ready).await;

    // Someone re-enables the account with ldapmodify, as an administrator.
    let env = dc::env();
    let ldif = format!("dn: {}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 512\n", user.dn);
    let ldif_file = daemon.dir.path().join("enable.ldif");
    std::fs::write(&ldif_file, ldif).expect("ldif");
    let status = Command::new("ldapmodify")
        .args(["-x", "-H", &env.ldaps_url, "-D", &env.admin_bind, "-y"])
        .arg(&env.admin_password_file)
        .arg("-f")
        .arg(&ldif_file)
        .env("LDAPTLS_CACERT", &env.ca_file)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("ldapmodify runs");
    assert!(status.success(), "ldapmodify re-enabled the account");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let drift = loop {
        let records = daemon.history(&sam(&user));
        let found = records.iter().find_map(|r| match &r.event {
            Event::Action(a) if a.outcome == ActionOutcome::DriftCorrected => Some(a.clone()),
            _ => None,
        });
        if let Some(found) = found {
            break found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no drift correction within 15 s: {records:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((drift.action, drift.before.as_str(), drift.after.as_str()), (Action::DisableAccount, "0x200", "0x202"));
    let note = drift.note.expect("a drift record says what was found");
    assert!(note.contains("found 0x200") && note.contains("whenChanged"), "{note}");
    let mut ldap = dc::admin().await;
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x202, "disabled again");
    daemon.stop().await;
}

#[tokio::test]
async fn an_invalid_manifest_takes_only_itself_out() {
    let ou = TestOu::create("serve-invalid").await;
    let good = ou.add_user("good", 0x200).await;
    let bad = ou.add_user("bad", 0x200).await;
    let options = Options { with_entra: false, ..Options::default() };
    let daemon = Daemon::start(options).await;
    // One directory change carrying both (a rename of a prepared folder): one load.
    let staging = daemon.dir.path().join("staging");
    std::fs::create_dir(&staging).expect("staging");
    std::fs::write(staging.join("good.yaml"), manifest("inc-good", &good.sam, DISABLE)).expect("write");
    let invalid = manifest("inc-bad", &bad.sam, "  activeDirectory:\n    disabled: sometimes\n");
    std::fs::write(staging.join("bad.yaml"), invalid).expect("write");
    std::fs::rename(&staging, daemon.manifests.join("batch")).expect("rename");

    daemon.wait_status("inc-good", Duration::from_secs(15), is_ready).await;
    let status = daemon.wait_status("inc-bad", Duration::from_secs(5), |_| true).await;
    let (stalled, reason, message) = condition(&status, ConditionType::Stalled);
    assert_eq!((stalled, reason), (ConditionStatus::True, ConditionReason::Invalid), "{message}");
    assert!(message.contains("batch/bad.yaml:10:"), "the message names file, line and column: {message}");
    assert_eq!(condition(&status, ConditionType::Ready).0, ConditionStatus::False);

    let mut ldap = dc::admin().await;
    assert_eq!(dc::read_user(&mut ldap, &good.dn).await.user_account_control, 0x202, "the valid one converged");
    assert_eq!(dc::read_user(&mut ldap, &bad.dn).await.user_account_control, 0x200, "the invalid one did nothing");
    daemon.stop().await;
}

#[tokio::test]
async fn a_commit_larger_than_the_blast_radius_applies_nothing_until_approved() {
    let ou = TestOu::create("serve-blast").await;
    let mut ldap = dc::admin().await;
    let mut users = Vec::new();
    for i in 0..40 {
        users.push(ou.add_user_with(&mut ldap, &format!("b{i:02}"), 0x200, false).await);
    }
    let options = Options { with_entra: false, max_changes: 25, ..Options::default() };
    let daemon = Daemon::start(options).await;
    let staging = daemon.dir.path().join("staging");
    std::fs::create_dir(&staging).expect("staging");
    for (i, user) in users.iter().enumerate() {
        let name = format!("inc-blast-{i:02}");
        std::fs::write(staging.join(format!("{name}.yaml")), manifest(&name, &user.sam, DISABLE)).expect("write");
    }
    std::fs::rename(&staging, daemon.manifests.join("incident")).expect("one commit's worth, at once");

    let status = daemon
        .wait_status("inc-blast-07", Duration::from_secs(15), |s| {
            s.condition(ConditionType::Stalled).is_some_and(|c| c.reason == ConditionReason::NeedsApproval)
        })
        .await;
    let (_, _, message) = condition(&status, ConditionType::Stalled);
    assert!(message.contains("40 changes") && message.contains("(25)"), "{message}");
    let held = daemon.progress().held_plan.expect("a plan is held");
    for user in &users {
        assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x200, "nothing applied");
        let history = actions(&daemon.history(&sam(user)));
        assert_eq!(history.len(), 1, "{history:?}");
        assert_eq!(history[0].1, ActionOutcome::Held);
    }

    daemon.handle.approve(held.clone(), "alice (security-administrator)", None).await.expect("approved");
    for i in [0, 39] {
        daemon.wait_status(&format!("inc-blast-{i:02}"), Duration::from_secs(30), is_ready).await;
    }
    for user in &users {
        assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x202, "applied once approved");
    }
    let approvals: Vec<_> = daemon
        .store
        .query_history(&HistoryQuery { limit: 1000, ..HistoryQuery::default() })
        .expect("history")
        .records
        .into_iter()
        .filter(|r| matches!(&r.event, Event::Approval(a) if a.plan_id == held && a.by.starts_with("alice")))
        .collect();
    assert_eq!(approvals.len(), 1, "the approval is recorded with who gave it");
    daemon.stop().await;
}

#[tokio::test]
async fn atomic_saves_git_pulls_and_symlink_swaps_each_make_exactly_one_reconcile() {
    let root = tempfile::tempdir().expect("temporary directory");
    // upstream: the repository operators commit to; checkout-a: the daemon's clone of it;
    // live -> checkout-a: what the daemon watches (git-sync style).
    let upstream = root.path().join("upstream");
    std::fs::create_dir(&upstream).expect("upstream");
    git(&upstream, &["init", "-q"]);
    std::fs::write(upstream.join("inc-a.yaml"), manifest("inc-a", "nobody-a", DISABLE)).expect("write");
    git(&upstream, &["add", "."]);
    git(&upstream, &["commit", "-q", "-m", "inc-a"]);
    let checkout_a = root.path().join("checkout-a");
    git(root.path(), &["clone", "-q", upstream.to_str().unwrap(), checkout_a.to_str().unwrap()]);
    let live = root.path().join("live");
    std::os::unix::fs::symlink(&checkout_a, &live).expect("symlink");
    let options = Options { with_entra: false, ..Options::default() };
    let daemon = Daemon::start_on(root, live.clone(), options).await;
    daemon.wait("the first reconcile", Duration::from_secs(15), |p| p.passes >= 1).await;
    let settle = Duration::from_millis(1500);

    let expect_one_more = |before: u64, what: &'static str| {
        let daemon = &daemon;
        async move {
            daemon
                .wait(what, Duration::from_secs(10), |p| {
                    p.passes_by_trigger.get(&Trigger::ManifestsChanged) > Some(&before)
                })
                .await;
            tokio::time::sleep(settle).await;
            assert_eq!(daemon.manifest_passes(), before + 1, "{what}: exactly one reconcile");
        }
    };

    // 1. An editor's atomic save in the checkout.
    let before = daemon.manifest_passes();
    save_atomically(&checkout_a.join("inc-b.yaml"), &manifest("inc-b", "nobody-b", DISABLE));
    expect_one_more(before, "an atomic save").await;

    // 2. A commit upstream, pulled into the checkout.
    std::fs::write(upstream.join("inc-c.yaml"), manifest("inc-c", "nobody-c", DISABLE)).expect("write");
    git(&upstream, &["add", "."]);
    git(&upstream, &["commit", "-q", "-m", "inc-c"]);
    let before = daemon.manifest_passes();
    git(&checkout_a, &["pull", "-q", "--no-rebase"]);
    expect_one_more(before, "a git pull").await;
    let status = daemon.wait_status("inc-c", Duration::from_secs(5), |_| true).await;
    assert!(status.observed_generation.is_some());

    // 3. A git-sync style swap of the link to a new checkout.
    let checkout_b = daemon.dir.path().join("checkout-b");
    git(daemon.dir.path(), &["clone", "-q", upstream.to_str().unwrap(), checkout_b.to_str().unwrap()]);
    std::fs::write(checkout_b.join("inc-d.yaml"), manifest("inc-d", "nobody-d", DISABLE)).expect("write");
    let before = daemon.manifest_passes();
    let new_link = daemon.dir.path().join("live.new");
    std::os::unix::fs::symlink(&checkout_b, &new_link).expect("symlink");
    std::fs::rename(&new_link, &live).expect("swap");
    expect_one_more(before, "a symlink swap").await;
    daemon.wait_status("inc-d", Duration::from_secs(5), |_| true).await;
    // inc-b lived only in checkout-a: it left the set with the swap (and is forgotten).
    let known: BTreeSet<String> =
        daemon.store.list_status().expect("statuses").into_iter().map(|s| s.name.to_string()).collect();
    assert_eq!(known, BTreeSet::from(["inc-a".into(), "inc-c".into(), "inc-d".into()]), "statuses follow the set");
    daemon.stop().await;
}
