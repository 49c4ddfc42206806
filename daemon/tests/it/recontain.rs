//! Re-containment between resyncs (issue 3 of 6), against the real Samba DC: an account re-enabled
//! behind remedy's back is disabled again without waiting for a resync (the resync is hourly in
//! these tests), by change notification, by `uSNChanged` polling where notification is off, and
//! after a dropped connection by catching up from the last USN; and a fight over an account is
//! reported (`Contested`) while remedy keeps the declared state with its corrections spaced.

use std::time::Duration;

use remedy::controller::Trigger;
use remedy::model::{ActionOutcome, ConditionType, Event};

use remedy_graph_sim::SimUser;
use remedy_policies::ManifestName;

use crate::support::daemon::{is_ready, manifest, sam, Daemon, Options, DISABLE, SUSPEND};
use crate::support::dc::{self, Dc, TestUser};
use crate::support::proxy::Proxy;

/// How long a correction may take here: far below the hourly resync, far above what it needs.
const CORRECTED_WITHIN: Duration = Duration::from_secs(30);

/// Re-enables the account as the DC's administrator (what an attacker or a helpdesk script does).
async fn re_enable(dc: &Dc, user: &TestUser) {
    let mut ldap = dc.admin().await;
    dc::set_uac(&mut ldap, &user.dn, 0x200).await;
}

async fn uac(dc: &Dc, user: &TestUser) -> u32 {
    let mut ldap = dc.admin().await;
    dc::read_user(&mut ldap, &user.dn).await.user_account_control
}

/// Waits until the DC shows the account disabled.
async fn wait_disabled(dc: &Dc, user: &TestUser, daemon: &Daemon) {
    let deadline = tokio::time::Instant::now() + CORRECTED_WITHIN;
    while uac(dc, user).await & 0x2 == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still enabled {CORRECTED_WITHIN:?} after the re-enable; progress: {:#?}",
            daemon.progress()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `remedy_recontainment_seconds_count` for `source`, once it reaches `expected` (the metric is
/// recorded when the pass ends, just after the DC shows the correction); more would show too.
async fn recontained(daemon: &Daemon, source: &str, expected: u64) -> u64 {
    let prefix = format!("remedy_recontainment_seconds_count{{source=\"{source}\"}} ");
    let count = || {
        let text = daemon.handle.metrics().render();
        text.lines().find_map(|line| line.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().expect("a count"))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count() < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count()
}

/// The drift corrections recorded for the account, once there are `expected` of them (the record
/// is settled just after the DC shows the change); more would show too.
async fn drift_records(daemon: &Daemon, user: &TestUser, expected: usize) -> usize {
    let count = || {
        daemon
            .history(&sam(user))
            .iter()
            .filter(|r| matches!(&r.event, Event::Action(a) if a.outcome == ActionOutcome::DriftCorrected))
            .count()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while count() < expected && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    count()
}

async fn contained(dc: &Dc, test: &str, options: Options) -> (crate::support::dc::TestOu, TestUser, Daemon) {
    let ou = dc.ou(test).await;
    let user = ou.add_user("target", 0x200).await;
    let daemon = Daemon::start(dc, Options { with_entra: false, ..options }).await;
    daemon.save("inc.yaml", &manifest("inc", &user.sam, DISABLE));
    daemon.wait_status("inc", Duration::from_secs(20), is_ready).await;
    assert_eq!(uac(dc, &user).await, 0x202, "contained first");
    (ou, user, daemon)
}

#[tokio::test]
async fn recontain_a_re_enable_is_undone_by_change_notification_without_a_resync() {
    let dc = Dc::shared().await;
    let options = Options { ad_watch: "    notification: true\n    pollInterval: 0s\n".into(), ..Options::default() };
    let (_ou, user, daemon) = contained(&dc, "recontain-notify", options).await;
    // A manifest that never loaded keeps its status through targeted passes.
    daemon.save("broken.yaml", &manifest("inc-broken", &user.sam, "  activeDirectory:\n    disabled: sometimes\n"));
    daemon.wait_status("inc-broken", Duration::from_secs(10), |_| true).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(daemon.passes_by(Trigger::Drift), 0, "remedy's own write is not taken for a change to undo");

    re_enable(&dc, &user).await;
    wait_disabled(&dc, &user, &daemon).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    assert_eq!(daemon.passes_by(Trigger::Resync), 0, "no resync did it");
    assert_eq!(
        daemon.passes_by(Trigger::Drift),
        1,
        "one targeted pass, and none for the echo of its own correction: {:#?}",
        daemon.progress()
    );
    assert_eq!(drift_records(&daemon, &user, 1).await, 1, "one drift correction recorded");
    let broken = ManifestName::new("inc-broken").expect("name");
    assert!(daemon.store.get_status(&broken).expect("store").is_some(), "the targeted pass left other statuses alone");
    assert_eq!(recontained(&daemon, "notification", 1).await, 1, "timed as noticed by notification");
    assert_eq!(recontained(&daemon, "poll", 0).await, 0);
    daemon.stop().await;
}

#[tokio::test]
async fn recontain_without_notification_usn_polling_undoes_a_re_enable() {
    let dc = Dc::shared().await;
    let options =
        Options { ad_watch: "    notification: false\n    pollInterval: 500ms\n".into(), ..Options::default() };
    let (_ou, user, daemon) = contained(&dc, "recontain-poll", options).await;

    re_enable(&dc, &user).await;
    wait_disabled(&dc, &user, &daemon).await;

    assert_eq!(daemon.passes_by(Trigger::Resync), 0, "no resync did it");
    assert_eq!(drift_records(&daemon, &user, 1).await, 1);
    assert_eq!(recontained(&daemon, "poll", 1).await, 1, "noticed by a uSNChanged poll");
    assert_eq!(recontained(&daemon, "notification", 0).await, 0, "notification is off");
    daemon.stop().await;
}

#[tokio::test]
async fn recontain_a_re_enable_while_remedy_was_cut_off_is_undone_after_it_reconnects() {
    let dc = Dc::shared().await;
    let dc_address = dc.env().ldaps_url.trim_start_matches("ldaps://").parse().expect("the DC's host:port");
    let proxy = Proxy::start(dc_address).await;
    let options = Options {
        ldaps_url: Some(format!("ldaps://127.0.0.1:{}", proxy.port)),
        // Notification only: nothing but the catch-up after reconnecting can see the change.
        ad_watch: "    notification: true\n    pollInterval: 0s\n".into(),
        ..Options::default()
    };
    let (_ou, user, daemon) = contained(&dc, "recontain-reconnect", options).await;

    proxy.cut();
    tokio::time::sleep(Duration::from_secs(1)).await;
    re_enable(&dc, &user).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(uac(&dc, &user).await, 0x200, "remedy cannot reach the DC while the network is cut");
    proxy.restore();

    wait_disabled(&dc, &user, &daemon).await;
    assert_eq!(daemon.passes_by(Trigger::Resync), 0, "no resync did it");
    assert_eq!(drift_records(&daemon, &user, 1).await, 1);
    assert_eq!(
        recontained(&daemon, "poll", 1).await,
        1,
        "caught up by uSNChanged after registering again: {:#?}\n{}",
        daemon.progress(),
        daemon.handle.metrics().render()
    );
    daemon.stop().await;
}

#[tokio::test]
async fn recontain_a_fight_is_contested_and_corrections_are_spaced() {
    let dc = Dc::shared().await;
    let options = Options {
        extra_yaml: "contest:\n  corrections: 2\n  window: 10m\n  firstWait: 10s\n  maxWait: 10s\n".into(),
        ..Options::default()
    };
    let (_ou, user, daemon) = contained(&dc, "recontain-fight", options).await;

    for _ in 0..2 {
        re_enable(&dc, &user).await;
        wait_disabled(&dc, &user, &daemon).await;
    }
    let status = daemon
        .wait_status("inc", Duration::from_secs(10), |s| {
            s.conditions.iter().any(|c| c.kind == ConditionType::Contested)
        })
        .await;
    let contested = status.conditions.iter().find(|c| c.kind == ConditionType::Contested).expect("Contested");
    assert!(contested.message.contains("corrected 2 times"), "{}", contested.message);
    let fights: Vec<_> = daemon
        .history(&sam(&user))
        .into_iter()
        .filter_map(|r| match r.event {
            Event::Contested(fight) => Some(fight),
            _ => None,
        })
        .collect();
    assert_eq!(fights.len(), 1, "one record when the fight begins");
    assert_eq!((fights[0].corrections, fights[0].window_seconds), (2, 600));
    assert!(fights[0].when_changed.is_some(), "what is known of the other side's change");
    assert!(daemon.handle.metrics().render().contains("remedy_contested_accounts 1\n"));

    // The third re-enable waits for the spaced correction (10 s after the last), then is undone.
    re_enable(&dc, &user).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(uac(&dc, &user).await, 0x200, "no tight loop: the correction waits");
    wait_disabled(&dc, &user, &daemon).await;
    assert_eq!(drift_records(&daemon, &user, 3).await, 3, "remedy keeps the declared state");
    daemon.stop().await;
}

/// Waits until graph-sim shows the user suspended.
async fn wait_suspended(daemon: &Daemon, upn: &str) {
    let sim = daemon.sim.as_ref().expect("graph-sim");
    let deadline = tokio::time::Instant::now() + CORRECTED_WITHIN;
    while sim.user(upn).expect("in Entra ID").account_enabled {
        assert!(tokio::time::Instant::now() < deadline, "still enabled in Entra ID: {:#?}", daemon.progress());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn recontain_a_user_re_enabled_in_entra_id_is_suspended_again_after_one_delta_round() {
    let dc = Dc::shared().await;
    let ou = dc.ou("recontain-entra").await;
    let user = ou.add_user("cloud", 0x200).await;
    let options = Options {
        entra_users: vec![SimUser::new(&user.upn)],
        delta_interval: Some("1s"),
        ad_watch: "    notification: false\n    pollInterval: 0s\n".into(),
        ..Options::default()
    };
    let daemon = Daemon::start(&dc, options).await;
    daemon.save("inc.yaml", &manifest("inc", &user.sam, SUSPEND));
    daemon.wait_status("inc", Duration::from_secs(20), is_ready).await;
    let sim = daemon.sim.as_ref().expect("graph-sim");
    assert!(!sim.user(&user.upn).expect("in Entra ID").account_enabled, "suspended first");

    // Someone enables the user again in the portal.
    assert!(sim.set_account_enabled(&user.upn, true));
    wait_suspended(&daemon, &user.upn).await;
    assert_eq!(daemon.passes_by(Trigger::Resync), 0, "no resync did it");
    assert_eq!(drift_records(&daemon, &user, 1).await, 1);
    assert_eq!(recontained(&daemon, "delta", 1).await, 1, "noticed by a delta round");
    daemon.stop().await;
}

#[tokio::test]
async fn recontain_a_synced_users_suspension_reverted_by_directory_sync_is_noticed_within_one_round() {
    let dc = Dc::shared().await;
    let ou = dc.ou("recontain-sync").await;
    let user = ou.add_user("synced", 0x200).await;
    let options = Options {
        entra_users: vec![SimUser::new(&user.upn).synced()],
        delta_interval: Some("1s"),
        ad_watch: "    notification: false\n    pollInterval: 0s\n".into(),
        ..Options::default()
    };
    let daemon = Daemon::start(&dc, options).await;
    // Suspended in the cloud only, while AD (the source of authority) says enabled.
    daemon.save("inc.yaml", &manifest("inc", &user.sam, SUSPEND));
    daemon.wait_status("inc", Duration::from_secs(20), is_ready).await;
    let sim = daemon.sim.as_ref().expect("graph-sim");

    sim.run_directory_sync();
    assert!(sim.user(&user.upn).expect("in Entra ID").account_enabled, "the sync reverted the suspension");
    wait_suspended(&daemon, &user.upn).await;
    assert_eq!(daemon.passes_by(Trigger::Resync), 0, "no resync did it");
    assert_eq!(recontained(&daemon, "delta", 1).await, 1, "noticed by the next delta round");
    daemon.stop().await;
}

#[tokio::test]
async fn recontain_an_expired_delta_token_makes_a_full_pass_and_delta_starts_again_from_now() {
    let dc = Dc::shared().await;
    let ou = dc.ou("recontain-expired").await;
    let user = ou.add_user("expired", 0x200).await;
    let options = Options {
        entra_users: vec![SimUser::new(&user.upn)],
        delta_interval: Some("1s"),
        ad_watch: "    notification: false\n    pollInterval: 0s\n".into(),
        ..Options::default()
    };
    let daemon = Daemon::start(&dc, options).await;
    daemon.save("inc.yaml", &manifest("inc", &user.sam, SUSPEND));
    daemon.wait_status("inc", Duration::from_secs(20), is_ready).await;
    let kept = daemon.store.entra_delta_link().expect("store readable");
    assert!(kept.is_some(), "the delta link is kept in the store");

    let sim = daemon.sim.as_ref().expect("graph-sim");
    sim.inject(remedy_graph_sim::Fault::ExpireDeltaTokens);
    daemon
        .wait("a full pass after the token expired", Duration::from_secs(15), |p| {
            p.passes_by_trigger.get(&Trigger::Resync).copied().unwrap_or(0) >= 1
        })
        .await;

    // Delta goes on from a fresh link: a re-enable is still noticed.
    assert!(sim.set_account_enabled(&user.upn, true));
    wait_suspended(&daemon, &user.upn).await;
    assert_eq!(recontained(&daemon, "delta", 1).await, 1, "noticed by delta after starting again");
    assert_ne!(daemon.store.entra_delta_link().expect("store readable"), kept, "a new link is kept");
    daemon.stop().await;
}
