//! `remedy serve` end to end: the controller in this process, watching a real manifest directory
//! (real notify), acting on the real Samba DC as the scoped action account and on graph-sim over
//! loopback HTTP, recording in a real store. Each test has its own OU, directory and store. The
//! daemon (Daemon, Options, manifests) is in `support/daemon.rs`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use remedy::controller::Trigger;
use remedy::model::{ActionOutcome, ConditionReason, ConditionStatus, ConditionType, Event};
use remedy::store::HistoryQuery;
use remedy_graph_sim::SimUser;
use remedy_policies::{Action, ManifestName};

use crate::support::daemon::{
    actions, condition, is_ready, manifest, sam, save_atomically, Daemon, Options, DISABLE, DISABLE_AND_SUSPEND,
    FAST_RESYNC,
};
use crate::support::dc::{self, Dc};
use crate::support::git;

#[tokio::test]
async fn a_new_manifest_disables_in_ad_and_suspends_in_entra_within_seconds() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-new").await;
    let user = ou.add_user("new", 0x200).await;
    let options = Options { entra_users: vec![SimUser::new(&user.upn)], ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;

    daemon.save("inc-1.yaml", &manifest("inc-1", &user.sam, DISABLE_AND_SUSPEND));
    let status = daemon.wait_status("inc-1", Duration::from_secs(15), is_ready).await;

    let mut ldap = dc.admin().await;
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
    // Each record is dated at its attempt, after the pass began observing, not at the pass's start.
    let pass_started = status.last_reconcile_time.expect("the pass's start");
    for record in daemon.history(&sam(&user)) {
        assert!(
            record.at > pass_started,
            "record {} at {} is not after the pass start {pass_started}",
            record.id,
            record.at
        );
    }

    // What it cost, as /metrics shows it: connections bound, searches (observation and
    // read-back), one modify for the one disable.
    // (The status is stored before the pass's counters are: wait for them.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let metrics = loop {
        let metrics = daemon.handle.metrics().render();
        if metrics.contains("remedy_ldap_operations_total{operation=\"modify\"} 1") {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "no modify counted within 5 s:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let sample = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in\n{metrics}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    assert!(sample("remedy_ldap_operations_total{operation=\"connect\"}") >= 1, "{metrics}");
    assert!(sample("remedy_ldap_operations_total{operation=\"search\"}") >= 2, "{metrics}");
    assert!(sample("remedy_ldap_entries_total") >= 2, "{metrics}");
    daemon.stop().await;
}

#[tokio::test]
async fn an_account_re_enabled_behind_remedys_back_is_disabled_again_with_a_drift_record() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-drift").await;
    let user = ou.add_user("drift", 0x200).await;
    let options = Options { resync: FAST_RESYNC, with_entra: false, ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
    daemon.save("inc-2.yaml", &manifest("inc-2", &user.sam, DISABLE));
    daemon.wait_status("inc-2", Duration::from_secs(15), is_ready).await;

    // Someone re-enables the account with ldapmodify, as an administrator.
    let env = dc.env();
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
    let mut ldap = dc.admin().await;
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x202, "disabled again");
    daemon.stop().await;
}

#[tokio::test]
async fn an_invalid_manifest_takes_only_itself_out() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-invalid").await;
    let good = ou.add_user("good", 0x200).await;
    let bad = ou.add_user("bad", 0x200).await;
    let options = Options { with_entra: false, ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
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

    let mut ldap = dc.admin().await;
    assert_eq!(dc::read_user(&mut ldap, &good.dn).await.user_account_control, 0x202, "the valid one converged");
    assert_eq!(dc::read_user(&mut ldap, &bad.dn).await.user_account_control, 0x200, "the invalid one did nothing");
    daemon.stop().await;
}

#[tokio::test]
async fn a_commit_larger_than_the_blast_radius_applies_nothing_until_approved() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-blast").await;
    let mut ldap = dc.admin().await;
    let mut users = Vec::new();
    for i in 0..40 {
        users.push(ou.add_user_with(&mut ldap, &format!("b{i:02}"), 0x200, false).await);
    }
    let options = Options { with_entra: false, max_changes: 25, ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
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
    let held = status.held_plan_id.clone().expect("the status names the plan to approve");
    daemon.wait("the pass to finish", Duration::from_secs(5), |p| p.held_plan.as_ref() == Some(&held)).await;
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
    let dc = Dc::shared().await;
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
    let daemon = Daemon::start_on(&dc, root, live.clone(), options).await;
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

#[tokio::test]
async fn a_deleted_manifest_with_restore_gives_the_account_back_and_records_it() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-release").await;
    let user = ou.add_user("rel", 0x200).await;
    let options = Options { with_entra: false, ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
    // The manifest directory is a git checkout: records name the commit.
    git(&daemon.manifests, &["init", "-q"]);
    let text = manifest("inc-rel", &user.sam, &format!("{DISABLE}  onRelease: restore\n"));
    std::fs::write(daemon.manifests.join("inc-rel.yaml"), text).expect("write");
    git(&daemon.manifests, &["add", "."]);
    git(&daemon.manifests, &["commit", "-q", "-m", "inc-rel"]);
    daemon.wait_status("inc-rel", Duration::from_secs(15), is_ready).await;
    let mut ldap = dc.admin().await;
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x202);
    let head = String::from_utf8(
        Command::new("git").arg("-C").arg(&daemon.manifests).args(["rev-parse", "HEAD"]).output().expect("git").stdout,
    )
    .expect("utf-8");

    git(&daemon.manifests, &["rm", "-q", "inc-rel.yaml"]);
    git(&daemon.manifests, &["commit", "-q", "-m", "incident closed"]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while daemon.store.get_status(&ManifestName::new("inc-rel").expect("name")).expect("status").is_some() {
        assert!(tokio::time::Instant::now() < deadline, "the released manifest is never forgotten");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x200, "enabled again");
    let records = daemon.history(&sam(&user));
    assert_eq!(
        actions(&records),
        vec![
            (Action::DisableAccount, ActionOutcome::Succeeded, "0x200".into(), "0x202".into()),
            (Action::EnableAccount, ActionOutcome::Restored, "0x202".into(), "0x200".into()),
        ]
    );
    let Event::Action(first) = &records[0].event else { panic!("an action record") };
    assert_eq!(first.manifests[0].commit.as_deref(), Some(head.trim()), "the record names the commit");
    assert_eq!(first.acting_account.as_deref(), Some(dc.env().action_bind.as_str()));
    assert!(first.resolved.ad_dn.as_deref().is_some_and(|dn| dn.eq_ignore_ascii_case(&user.dn)), "{first:?}");
    daemon.stop().await;
}

#[tokio::test]
async fn a_manifest_pointed_at_another_account_releases_the_first() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-retarget").await;
    let bob = ou.add_user("bob", 0x200).await;
    let carol = ou.add_user("carol", 0x200).await;
    let options = Options { with_entra: false, ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
    let spec = format!("{DISABLE}  onRelease: restore\n");
    daemon.save("inc-7.yaml", &manifest("inc-7", &bob.sam, &spec));
    daemon.wait_status("inc-7", Duration::from_secs(15), is_ready).await;
    let mut ldap = dc.admin().await;
    assert_eq!(dc::read_user(&mut ldap, &bob.dn).await.user_account_control, 0x202);

    // The wrong account: the operator points the manifest at carol.
    daemon.save("inc-7.yaml", &manifest("inc-7", &carol.sam, &spec));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while dc::read_user(&mut ldap, &bob.dn).await.user_account_control != 0x200 {
        assert!(tokio::time::Instant::now() < deadline, "bob is never given back");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    daemon.wait_status("inc-7", Duration::from_secs(15), is_ready).await;
    assert_eq!(dc::read_user(&mut ldap, &carol.dn).await.user_account_control, 0x202, "carol is disabled");
    assert_eq!(
        actions(&daemon.history(&sam(&bob))),
        vec![
            (Action::DisableAccount, ActionOutcome::Succeeded, "0x200".into(), "0x202".into()),
            (Action::EnableAccount, ActionOutcome::Restored, "0x202".into(), "0x200".into()),
        ]
    );
    // Released once: a later pass does not enable bob again or record anything more.
    daemon.handle.reconcile("test", None, None).await.expect("requested");
    daemon
        .wait("another pass", Duration::from_secs(10), |p| p.passes_by_trigger.contains_key(&Trigger::Requested))
        .await;
    assert_eq!(daemon.history(&sam(&bob)).len(), 2);
    let known = daemon.store.known_manifest(&ManifestName::new("inc-7").expect("name")).expect("read").expect("known");
    assert!(known.retired.is_empty(), "the old target is forgotten once released: {known:?}");
    daemon.stop().await;
}

/// Privilege however it was got, decided by the DC's own groups: two levels of nesting into
/// Domain Admins (renamed for the test: matched by RID 512, not by name), Domain Admins as the
/// primary group, and a group nested in a `protectedGroups` entry given by SID and renamed since.
/// The scoped action account could disable all three here (Samba runs no SDProp); each is denied
/// with the chain, and the DC shows nothing written. A plain user of the same OU is disabled.
#[tokio::test]
async fn nested_primary_group_and_renamed_admins_are_denied_with_the_chain_and_nothing_is_written() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-priv").await;
    let mut ldap = dc.admin().await;
    let env = dc.env();
    let domain_admins = format!("CN=Domain Admins,CN=Users,{}", env.base_dn);
    let ops = ou.add_group(&mut ldap, "t0ops").await;
    let leads = ou.add_group(&mut ldap, "leads").await;
    let vault = ou.add_group(&mut ldap, "vault").await;
    let readers = ou.add_group(&mut ldap, "vaultrd").await;
    dc::add_member(&mut ldap, &domain_admins, &ops).await;
    dc::add_member(&mut ldap, &ops, &leads).await;
    dc::add_member(&mut ldap, &vault, &readers).await;
    let nested = ou.add_user("nested", 0x200).await;
    let primary = ou.add_user("primary", 0x200).await;
    let vaulted = ou.add_user("vaulted", 0x200).await;
    let plain = ou.add_user("plain", 0x200).await;
    dc::add_member(&mut ldap, &leads, &nested.dn).await;
    dc::add_member(&mut ldap, &domain_admins, &primary.dn).await;
    dc::replace(&mut ldap, &primary.dn, "primaryGroupID", "512").await;
    dc::add_member(&mut ldap, &readers, &vaulted.dn).await;
    let vault_sid = dc::read_user(&mut ldap, &vault).await.sid;
    // Renamed after it was configured: only its SID still names it.
    dc::replace(&mut ldap, &vault, "sAMAccountName", &format!("strongroom-{}", ou.suffix)).await;
    // Domain Admins under another name (as on a localized or hardened domain), for this test only.
    let renamed_admins = format!("Tier Zero {}", ou.suffix);
    let revert = dc::Revert::set(&mut ldap, &domain_admins, "sAMAccountName", "Domain Admins", &renamed_admins).await;

    let options = Options { with_entra: false, protected_groups: vec![vault_sid.clone()], ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
    for user in [&nested, &primary, &vaulted, &plain] {
        let name = format!("inc-{}", user.sam);
        daemon.save(&format!("{name}.yaml"), &manifest(&name, &user.sam, DISABLE));
    }
    let denied = |status: &remedy::model::ManifestStatus| {
        status.condition(ConditionType::Ready).is_some_and(|c| c.reason == ConditionReason::Denied)
    };
    let mut messages = Vec::new();
    for user in [&nested, &primary, &vaulted] {
        let status = daemon.wait_status(&format!("inc-{}", user.sam), Duration::from_secs(20), denied).await;
        messages.push(condition(&status, ConditionType::Ready).2);
    }
    daemon.wait_status(&format!("inc-{}", plain.sam), Duration::from_secs(20), is_ready).await;
    drop(revert);

    let chains = [
        format!(
            "member of {renamed_admins} (RID 512: Domain Admins, renamed) via t0ops-{s} via leads-{s}",
            s = ou.suffix
        ),
        format!(
            "member of {renamed_admins} (RID 512: Domain Admins, renamed) as its primary group (primaryGroupID 512)"
        ),
        format!("member of strongroom-{s} (protectedGroups names {vault_sid:?}) via vaultrd-{s}", s = ou.suffix),
    ];
    for ((user, message), chain) in [&nested, &primary, &vaulted].iter().zip(&messages).zip(&chains) {
        assert!(message.contains(chain.as_str()), "{}: the status must name the chain {chain:?}: {message}", user.sam);
        let history = daemon.history(&sam(user));
        let denials: Vec<_> = history
            .iter()
            .filter_map(|r| match &r.event {
                Event::Action(a) if a.outcome == ActionOutcome::Denied => a.error.clone(),
                _ => None,
            })
            .collect();
        assert!(
            denials.len() == 1 && denials[0].contains(chain.as_str()),
            "{}: one denied record naming the chain: {denials:?}",
            user.sam
        );
        assert_eq!(
            dc::read_user(&mut ldap, &user.dn).await.user_account_control,
            0x200,
            "{}: nothing written",
            user.sam
        );
    }
    assert_eq!(dc::read_user(&mut ldap, &plain.dn).await.user_account_control, 0x202, "the plain user is disabled");
    daemon.stop().await;
}

/// The pass that releases an expired manifest says so at once: `Released`, not "Succeeded / 1
/// account as declared" until the next resync while the account is already enabled again.
#[tokio::test]
async fn an_expired_manifest_is_released_in_the_pass_that_restores_the_account() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-expiry").await;
    let user = ou.add_user("exp", 0x200).await;
    let options = Options { with_entra: false, ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
    let expires =
        (chrono::Utc::now() + chrono::Duration::seconds(4)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let spec = format!("  expires: {expires}\n{DISABLE}  onRelease: restore\n");
    daemon.save("inc-exp.yaml", &manifest("inc-exp", &user.sam, &spec));
    daemon.wait_status("inc-exp", Duration::from_secs(15), is_ready).await;
    let mut ldap = dc.admin().await;
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x202, "disabled until it expires");

    let expiry = chrono::DateTime::parse_from_rfc3339(&expires).expect("time");
    let status = daemon
        .wait_status("inc-exp", Duration::from_secs(20), |s| s.last_reconcile_time.is_some_and(|at| at >= expiry))
        .await;
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x200, "restored by the expiry pass");
    let (ready, reason, message) = condition(&status, ConditionType::Ready);
    assert_eq!((ready, reason), (ConditionStatus::True, ConditionReason::Released), "{message}");
    daemon.stop().await;
}

/// A block ("password never expires") is recorded once when it begins, with the manifest's reason
/// and the value before and after, and not again on an unrelated reconcile or after a restart.
#[tokio::test]
async fn a_blocked_change_is_recorded_once_with_its_reason_and_values() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-blocked").await;
    let user = ou.add_user("nevexp", 0x10200).await;
    let options = || Options { with_entra: false, ..Options::default() };
    let daemon = Daemon::start(&dc, options()).await;
    daemon.save("inc-nx.yaml", &manifest("inc-nx", &user.sam, "  activeDirectory:\n    mustChangePassword: true\n"));
    let blocked = |s: &remedy::model::ManifestStatus| {
        s.condition(ConditionType::Ready).is_some_and(|c| c.reason == ConditionReason::Blocked)
    };
    daemon.wait_status("inc-nx", Duration::from_secs(15), blocked).await;
    let blocked_records = |daemon: &Daemon| -> Vec<remedy::model::ActionRecord> {
        daemon
            .history(&sam(&user))
            .into_iter()
            .filter_map(|r| match r.event {
                Event::Action(a) if a.outcome == ActionOutcome::Blocked => Some(a),
                _ => None,
            })
            .collect()
    };
    let first = blocked_records(&daemon);
    assert_eq!(first.len(), 1, "one blocked record: {first:#?}");
    let record = &first[0];
    assert_eq!(record.reason, "inc-nx: test", "the manifest's reason");
    assert!(record.before.starts_with("20") && record.after == "0", "pwdLastSet before and after: {record:#?}");
    assert!(record.error.as_deref().unwrap_or("").contains("password never expires"), "{record:#?}");

    // An unrelated reconcile, then a restart: the block goes on, and nothing more is recorded.
    let passes = daemon.progress().passes;
    daemon.handle.reconcile("test", None, None).await.expect("reconcile requested");
    daemon.wait("the requested pass", Duration::from_secs(15), |p| p.passes > passes).await;
    let daemon = daemon.restart(options()).await;
    daemon.wait("the first pass after the restart", Duration::from_secs(15), |p| p.passes >= 1).await;
    assert_eq!(blocked_records(&daemon).len(), 1, "still one blocked record: {:#?}", blocked_records(&daemon));
    daemon.stop().await;
}

/// A record's `before` comes from the plan and its `after` from the directory's read-back: both
/// are written alike for each attribute, as `remedy plan` writes them (pwdLastSet and
/// signInSessionsValidFromDateTime were once read back as `0` and `...T10:41:47.123+00:00`
/// against the plan's `0 (change pending)` and `...T10:41:47Z`).
#[tokio::test]
async fn a_records_before_and_after_are_written_as_the_plan_writes_them() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-values").await;
    let user = ou.add_user("values", 0x200).await;
    let options = Options { entra_users: vec![SimUser::new(&user.upn)], ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
    let spec = "  activeDirectory:\n    mustChangePassword: true\n  entraId:\n    revokeSessions: true\n";
    daemon.save("inc-values.yaml", &manifest("inc-values", &user.sam, spec));
    daemon.wait_status("inc-values", Duration::from_secs(15), is_ready).await;

    // UTC, whole seconds: 2026-11-30T10:41:47Z.
    let plan_time = |value: &str| {
        chrono::DateTime::parse_from_rfc3339(value).is_ok() && value.len() == "2026-11-30T10:41:47Z".len()
    };
    let history = actions(&daemon.history(&sam(&user)));
    match history.as_slice() {
        [(Action::ForcePasswordChange, ActionOutcome::Succeeded, pwd_before, pwd_after), (Action::RevokeSessions, ActionOutcome::Succeeded, sessions_before, sessions_after)] =>
        {
            assert!(plan_time(pwd_before), "pwdLastSet before: {pwd_before}");
            assert_eq!(pwd_after, "0 (change pending)");
            assert_eq!(sessions_before, "(not set)");
            assert!(plan_time(sessions_after), "signInSessionsValidFromDateTime after: {sessions_after}");
        }
        other => panic!("a forced password change and a revocation, each recorded once: {other:#?}"),
    }
    daemon.stop().await;
}

#[tokio::test]
async fn a_token_endpoint_outage_holds_only_the_entra_actions_and_they_are_sent_once_it_is_back() {
    let dc = Dc::shared().await;
    let ou = dc.ou("serve-token-outage").await;
    let user = ou.add_user("outage", 0x200).await;
    let options = Options { entra_users: vec![SimUser::new(&user.upn)], ..Options::default() };
    let daemon = Daemon::start(&dc, options).await;
    let sim = daemon.sim.as_ref().expect("graph-sim");
    // Longer than one pass's token retries (4 attempts within 6 s), so that a pass meets it.
    sim.inject(remedy_graph_sim::Fault::TokenOutage { status: 503, duration: Duration::from_secs(9) });

    daemon.save("inc-1.yaml", &manifest("inc-1", &user.sam, DISABLE_AND_SUSPEND));
    let waiting = daemon
        .wait_status("inc-1", Duration::from_secs(20), |status| {
            status.conditions.iter().any(|c| c.reason == ConditionReason::ProviderUnavailable)
        })
        .await;
    let (state, _, message) = condition(&waiting, ConditionType::Reconciling);
    assert_eq!(state, ConditionStatus::True, "{waiting:#?}");
    assert!(message.contains("token request") && message.contains("503"), "the status says why: {message}");
    let mut ldap = dc.admin().await;
    assert_eq!(dc::read_user(&mut ldap, &user.dn).await.user_account_control, 0x202, "AD did not wait");
    assert!(sim.user(&user.upn).expect("in Entra").account_enabled, "nothing sent to Entra ID without a token");

    // The error policy retries; once the endpoint answers, the suspension goes out, once.
    daemon.wait_status("inc-1", Duration::from_secs(45), is_ready).await;
    assert!(!sim.user(&user.upn).expect("in Entra").account_enabled, "suspended in Entra ID");
    let suspensions: Vec<_> = actions(&daemon.history(&sam(&user)))
        .into_iter()
        .filter(|(action, _, _, _)| *action == Action::SuspendUser)
        .collect();
    assert_eq!(suspensions, vec![(Action::SuspendUser, ActionOutcome::Succeeded, "true".into(), "false".into())]);
    let patches = sim.log().iter().filter(|e| e.method == "PATCH").count();
    assert_eq!(patches, 1, "sent once");
    daemon.stop().await;
}
