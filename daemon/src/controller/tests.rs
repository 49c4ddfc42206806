//! The loop's timing on Tokio's paused clock: expiry wakes it on time, transient failures back
//! off. No directory is needed for these (the providers are absent or unreachable); the store is
//! real.

use std::time::Duration;

use chrono::{DateTime, Utc};
use remedy_policies::config::Config;
use remedy_policies::load::ManifestSet;
use remedy_policies::load::{assemble, load_file};
use tokio::sync::{mpsc, watch};

use super::*;

fn anchor() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z").expect("time").with_timezone(&Utc)
}

struct Loop {
    handle: ControllerHandle,
    events: mpsc::Sender<WatchEvent>,
    store: Store,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts the controller on `config_yaml` with one manifest file, on the paused clock.
async fn start(config_yaml: &str, manifest_yaml: &str) -> Loop {
    start_at(anchor(), config_yaml, manifest_yaml).await
}

async fn start_at(at: DateTime<Utc>, config_yaml: &str, manifest_yaml: &str) -> Loop {
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(dir.path().join("password"), "not-used\n").expect("password file");
    let config = Config::from_yaml("remedy.yaml", config_yaml).expect("valid configuration");
    let (store, _) = Store::open(dir.path().join("store")).expect("store");
    let providers = Providers::new(&config, dir.path()).expect("providers");
    let settings = Settings {
        guardrails: config.guardrails.clone(),
        resync: ResyncSchedule::parse(&config.resync).expect("schedule"),
        manifest_dir: {
            let manifests = dir.path().join("manifests");
            std::fs::create_dir(&manifests).expect("manifest directory");
            manifests
        },
        backoff: Backoff { base: Duration::from_secs(2), cap: Duration::from_secs(30) },
        store_moved_aside: None,
        contest: Default::default(),
    };
    let (controller, handle) = Controller::new(settings, store.clone(), providers, Clock::following_tokio(at));
    let (events, receiver) = mpsc::channel(4);
    let set = assemble([load_file("inc.yaml", manifest_yaml)]);
    assert!(set.is_valid(), "{:?}", set.rejected);
    events.send(WatchEvent::Changed(set)).await.expect("sent");
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move {
        controller.run(receiver, || {}, shutdown).await.expect("stops cleanly");
    });
    Loop { handle, events, store, stop, task, _dir: dir }
}

impl Loop {
    fn passes(&self, trigger: Trigger) -> u64 {
        self.handle.progress().borrow().passes_by_trigger.get(&trigger).copied().unwrap_or(0)
    }

    fn status(&self) -> crate::model::ManifestStatus {
        let name = ManifestName::new("inc-1").expect("name");
        self.store.get_status(&name).expect("readable").expect("a status")
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.expect("no panic");
    }
}

const NO_PROVIDERS: &str = "manifests:\n  path: .\nguardrails:\n  allowedScopes: [\"OU=Staff,DC=remedy,DC=test\"]\n\
    resync: \"0 0 0 * * *\"\n";

#[tokio::test(start_paused = true)]
async fn an_expiry_wakes_the_loop_on_time_and_releases_the_manifest() {
    let manifest = "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-1\nspec:\n  reason: r\n  \
                    expires: 2026-11-30T12:00:00Z\n  target:\n    samAccountName: alice\n  activeDirectory:\n    \
                    disabled: true\n";
    let running = start(NO_PROVIDERS, manifest).await;
    assert!(running.handle.wait_for(|p| p.passes == 1).await);
    let (_, reason, _) = {
        let status = running.status();
        let c = status.condition(crate::model::ConditionType::Stalled).cloned().expect("stalled");
        (c.status, c.reason, c.message)
    };
    assert_eq!(reason, crate::model::ConditionReason::Blocked, "AD is not configured: blocked until it expires");

    // Nothing wakes the loop before the expiry (the next resync is at midnight)...
    tokio::time::sleep(Duration::from_secs(2 * 3600 - 60)).await;
    assert_eq!(running.handle.progress().borrow().passes, 1, "no pass before the expiry");
    // ...and the expiry does, on time.
    assert!(running.handle.wait_for(|p| p.passes_by_trigger.contains_key(&Trigger::Expiry)).await);
    let status = running.status();
    let started = running.handle.progress().borrow().last_pass.as_ref().map(|p| p.started).expect("a pass");
    let expiry = DateTime::parse_from_rfc3339("2026-11-30T12:00:00Z").expect("time").with_timezone(&Utc);
    assert!(started >= expiry && started < expiry + chrono::Duration::seconds(1), "woke at {started}");
    let ready = status.condition(crate::model::ConditionType::Ready).expect("ready");
    assert_eq!(
        (ready.status, ready.reason),
        (crate::model::ConditionStatus::True, crate::model::ConditionReason::Released),
        "{status:#?}"
    );
    assert_eq!(running.passes(Trigger::Expiry), 1);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_dc_is_retried_with_growing_capped_delays() {
    let config = format!(
        "{NO_PROVIDERS}activeDirectory:\n  url: ldap://127.0.0.1:9\n  allowInsecure: true\n  bindUser: svc@remedy.test\n  \
         passwordFile: password\n  baseDn: DC=remedy,DC=test\n  connectTimeout: 1s\n"
    );
    let manifest = "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-1\nspec:\n  reason: r\n  \
                    target:\n    samAccountName: alice\n  activeDirectory:\n    disabled: true\n";
    let running = start(&config, manifest).await;
    let mut starts = Vec::new();
    for passes in 1..=9u64 {
        assert!(running.handle.wait_for(|p| p.passes >= passes).await);
        let last = running.handle.progress().borrow().last_pass.clone().expect("a pass");
        starts.push(last.started);
    }
    let status = running.status();
    let reconciling = status.condition(crate::model::ConditionType::Reconciling).expect("reconciling");
    assert_eq!(
        (reconciling.status, reconciling.reason),
        (crate::model::ConditionStatus::True, crate::model::ConditionReason::ProviderUnavailable),
        "{status:#?}"
    );
    assert!(reconciling.message.contains("127.0.0.1:9"), "names the DC: {}", reconciling.message);
    assert_eq!(running.passes(Trigger::Retry), 8, "every pass after the first is a retry");
    // Retry n waits base·2^(n-1), capped at 30 s, times a jitter in [0.5, 1], after the pass
    // before it ended (a pass takes at most the connect timeout here).
    let gaps: Vec<i64> = starts.windows(2).map(|w| (w[1] - w[0]).num_milliseconds()).collect();
    for (i, gap) in gaps.iter().enumerate() {
        let nominal = (2_000i64 << i).min(30_000);
        assert!(*gap >= nominal / 2, "retry {} after {gap} ms, less than half of {nominal} ms: {gaps:?}", i + 1);
        assert!(*gap <= nominal + 2_000, "retry {} after {gap} ms, more than {nominal} ms: {gaps:?}", i + 1);
    }
    assert!(gaps[7] <= 32_000, "capped: {gaps:?}");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn resyncs_fire_on_the_cron_schedule_in_utc() {
    // 2026-10-25 01:00 UTC: Europe leaves summer time (02:59:59 CEST is followed by 02:00:00 CET).
    // The schedule is UTC, so a resync every five minutes stays five minutes apart across it.
    let config = NO_PROVIDERS.replace("0 0 0 * * *", "0 */5 * * * *");
    let manifest = "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-1\nspec:\n  reason: r\n  \
                    target:\n    samAccountName: alice\n  activeDirectory:\n    disabled: true\n";
    let before_change = DateTime::parse_from_rfc3339("2026-10-25T00:52:30Z").expect("time").with_timezone(&Utc);
    let running = start_at(before_change, &config, manifest).await;
    assert!(running.handle.wait_for(|p| p.passes == 1).await);
    let mut fired = Vec::new();
    for n in 1..=4u64 {
        assert!(running.handle.wait_for(|p| p.passes_by_trigger.get(&Trigger::Resync) >= Some(&n)).await);
        let started = running.handle.progress().borrow().last_pass.as_ref().map(|p| p.started).expect("a pass");
        fired.push(started);
    }
    let first = DateTime::parse_from_rfc3339("2026-10-25T00:55:00Z").expect("time").with_timezone(&Utc);
    let expected: Vec<DateTime<Utc>> = (0..4).map(|n| first + chrono::Duration::minutes(5 * n)).collect();
    for (at, want) in fired.iter().zip(&expected) {
        assert!(*at >= *want && *at < *want + chrono::Duration::seconds(1), "fired at {at}, due at {want}");
    }
    assert_eq!(running.passes(Trigger::Resync), 4, "one pass per firing");
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_empty_manifest_directory_releases_nothing() {
    let manifest = "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-1\nspec:\n  reason: r\n  \
                    target:\n    samAccountName: alice\n  activeDirectory:\n    disabled: true\n  onRelease: restore\n";
    let running = start(NO_PROVIDERS, manifest).await;
    assert!(running.handle.wait_for(|p| p.passes == 1).await);
    // The volume goes away: the directory is there and holds nothing, not even a .git.
    running.events.send(WatchEvent::Changed(ManifestSet::default())).await.expect("sent");
    assert!(running.handle.wait_for(|p| p.load_error.is_some()).await);
    let error = running.handle.progress().borrow().load_error.clone().expect("an error");
    assert!(error.contains("is empty") && error.contains("unmounted"), "{error}");
    assert_eq!(running.passes(Trigger::ManifestsChanged), 1, "no pass for the empty set");
    assert!(running.status().condition(crate::model::ConditionType::Ready).is_some(), "inc-1 is still in force");
    assert!(running.store.known_manifest(&ManifestName::new("inc-1").expect("name")).expect("read").is_some());
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_duplicate_does_not_take_a_name_whose_own_file_became_unreadable() {
    let doc = |target: &str| {
        format!(
            "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-1\nspec:\n  reason: r\n  target:\n    \
             samAccountName: {target}\n  activeDirectory:\n    disabled: true\n"
        )
    };
    // inc-1 and a duplicate of it arrive together: both rejected, nothing in force.
    let dir = tempfile::tempdir().expect("temporary directory");
    let config = Config::from_yaml("remedy.yaml", NO_PROVIDERS).expect("valid configuration");
    let (store, _) = Store::open(dir.path().join("store")).expect("store");
    let settings = Settings {
        guardrails: config.guardrails.clone(),
        resync: ResyncSchedule::parse(&config.resync).expect("schedule"),
        manifest_dir: dir.path().to_path_buf(),
        backoff: Backoff::default(),
        store_moved_aside: None,
        contest: Default::default(),
    };
    let providers = Providers::new(&config, dir.path()).expect("providers");
    let (controller, handle) = Controller::new(settings, store.clone(), providers, Clock::following_tokio(anchor()));
    let (events, receiver) = mpsc::channel(4);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(async move { controller.run(receiver, || {}, shutdown).await.expect("stops") });
    let both = assemble([load_file("inc-1.yaml", &doc("alice")), load_file("dup.yaml", &doc("bait"))]);
    assert_eq!(both.manifests.len(), 0, "duplicates are rejected");
    events.send(WatchEvent::Changed(both)).await.expect("sent");
    assert!(handle.wait_for(|p| p.passes == 1).await);

    // inc-1.yaml gets a syntax error before its name: the duplicate is the only document named
    // inc-1 now, but inc-1.yaml may still mean it.
    let broken = assemble([
        load_file("inc-1.yaml", "apiVersion: \"remedy.dev/v1\n  kind: [\n"),
        load_file("dup.yaml", &doc("bait")),
    ]);
    assert_eq!(broken.manifests.len(), 1, "the loader alone would take the duplicate");
    events.send(WatchEvent::Changed(broken)).await.expect("sent");
    assert!(handle.wait_for(|p| p.passes == 2).await);
    let status = store.get_status(&ManifestName::new("inc-1").expect("name")).expect("read").expect("a status");
    let stalled = status.condition(crate::model::ConditionType::Stalled).expect("stalled");
    assert_eq!(stalled.reason, crate::model::ConditionReason::Invalid, "{status:#?}");
    assert!(stalled.message.contains("inc-1.yaml") && stalled.message.contains("waits"), "{}", stalled.message);
    assert!(status.identities.is_empty(), "bait is not planned: {status:#?}");

    // The duplicate is deleted and inc-1.yaml fixed: inc-1 is in force, aimed at alice.
    let fixed = assemble([load_file("inc-1.yaml", &doc("alice"))]);
    events.send(WatchEvent::Changed(fixed)).await.expect("sent");
    assert!(handle.wait_for(|p| p.passes == 3).await);
    let status = store.get_status(&ManifestName::new("inc-1").expect("name")).expect("read").expect("a status");
    assert_eq!(status.identities.iter().map(|i| i.identity.to_string()).collect::<Vec<_>>(), ["sam:alice"]);
    let _ = stop.send(true);
    task.await.expect("no panic");
}
