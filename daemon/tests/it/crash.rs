//! `remedy serve` killed with SIGKILL in the middle of a reconcile, then started again: the real
//! binary as a child process, the real Samba DC, the real store on disk (see the recovery
//! protocol of `store::journal`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ldap3::{Ldap, Scope, SearchEntry};
use remedy::model::{ActionOutcome, Event};
use remedy::store::Store;
use remedy_policies::{Action, Identity};

use crate::support::daemon::{all_history, config_yaml, manifest, Options, DISABLE, HOURLY};
use crate::support::dc::Dc;
use crate::support::serve::Serve;

const USERS: usize = 500;
/// Run 1 is killed once this many accounts show disabled: a fifth of the way, so that recovery has
/// many of both kinds to settle (applied, and not). Samba writes at most ~1,000 modifies/s, so the
/// rest cannot all land between two polls 20 ms apart.
const KILL_AT: usize = 100;

/// What the error text of a record settled by recovery starts with.
const INTERRUPTED: &str = "interrupted by a restart";
const CONFIRMED: &str = "confirmed when read again";

/// The users of the OU that are disabled (their sAMAccountNames), as the administrator reads it.
async fn disabled(ldap: &mut Ldap, ou: &str) -> BTreeSet<String> {
    let filter = "(&(objectClass=user)(userAccountControl:1.2.840.113556.1.4.803:=2))";
    let (entries, _) = ldap
        .search(ou, Scope::OneLevel, filter, vec!["sAMAccountName"])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("admin search of {ou}: {e}"));
    entries
        .into_iter()
        .map(|entry| {
            let entry = SearchEntry::construct(entry);
            entry.attrs.get("sAMAccountName").and_then(|v| v.first()).expect("sAMAccountName").to_lowercase()
        })
        .collect()
}

/// The value of `name=<number>` in a log line.
fn field(line: &str, name: &str) -> Option<usize> {
    let start = line.find(&format!("{name}="))? + name.len() + 1;
    line[start..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[tokio::test]
async fn kill_9_during_a_500_identity_reconcile_then_restart_converges_with_one_success_per_change() {
    let dc = Dc::shared().await;
    let started = Instant::now();
    let ou = dc.ou("crash").await;
    let mut ldap = dc.admin().await;
    let mut users = Vec::with_capacity(USERS);
    for i in 0..USERS {
        users.push(ou.add_user_with(&mut ldap, &format!("k{i:03}"), 512, false).await);
    }
    let created = started.elapsed();

    let dir = tempfile::tempdir().expect("temporary directory");
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifest directory");
    let options = Options { resync: HOURLY, max_changes: 1000, with_entra: false, ..Options::default() };
    let config = dir.path().join("remedy.yaml");
    std::fs::write(&config, config_yaml(&dc, dir.path(), &manifests, &options, None)).expect("remedy.yaml");
    let staging = dir.path().join("staging");
    std::fs::create_dir(&staging).expect("staging");
    for (i, user) in users.iter().enumerate() {
        let name = format!("inc-crash-{i:03}");
        std::fs::write(staging.join(format!("{name}.yaml")), manifest(&name, &user.sam, DISABLE)).expect("write");
    }

    // Run 1: the 500 manifests arrive at once; SIGKILL once KILL_AT accounts show disabled.
    let mut first = Serve::start(&config, dir.path().join("run-1.log"), "info", false);
    std::fs::rename(&staging, manifests.join("incident")).expect("one commit's worth, at once");
    let deadline = Instant::now() + Duration::from_secs(60);
    let at_kill = loop {
        let seen = disabled(&mut ldap, &ou.dn).await.len();
        if seen >= KILL_AT {
            first.kill_9();
            break seen;
        }
        first.assert_running();
        assert!(Instant::now() < deadline, "not {KILL_AT} accounts disabled within 60 s; log:\n{}", first.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_after = started.elapsed();
    let disabled_by_run_1 = disabled(&mut ldap, &ou.dn).await;
    let after_kill = disabled_by_run_1.len();
    assert!(
        at_kill < USERS && after_kill < USERS,
        "the first run disabled all {USERS} accounts before it was killed (seen {at_kill}, then {after_kill}): \
         this run proves nothing about a kill mid-reconcile"
    );

    // Run 2: the same command, on the same store.
    let mut second = Serve::start(&config, dir.path().join("run-2.log"), "info", false);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if disabled(&mut ldap, &ou.dn).await.len() == USERS {
            break;
        }
        second.assert_running();
        assert!(Instant::now() < deadline, "not every account disabled within 120 s; log:\n{}", second.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The pass that disabled the last ones settles their intents before it says "reconciled" (a
    // pass with a failure, if any, is followed by a retry pass that has none).
    second.wait_for_log(" failed=0 ", Duration::from_secs(30)).await;
    let status = second.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "remedy serve exits 0 on SIGTERM ({status}); log:\n{}", second.log());
    let converged_after = started.elapsed();

    let log = second.log();
    let interrupted_line = log
        .lines()
        .find(|l| l.contains("actions were interrupted by the last stop"))
        .unwrap_or_else(|| panic!("the second run does not say it found interrupted actions; log:\n{log}"));
    let unsettled_at_restart = field(interrupted_line, "intents").expect("intents=N");
    let settled_lines = log.lines().filter(|l| l.contains("settled an interrupted action")).count();
    let reconciled: Vec<&str> = log.lines().filter(|l| l.contains("reconciled")).collect();

    // The store, as the daemon left it.
    let (store, _) = Store::open(dir.path().join("store")).expect("store opens");
    let unsettled = store.unsettled().expect("journal readable");
    assert!(unsettled.is_empty(), "intents left unsettled: {unsettled:#?}");
    let verified = store.verify_history();
    assert!(verified.is_ok(), "the chain verifies: {verified:?}");
    let history = all_history(&store);

    // Each account's records: (record id, outcome, error).
    let mut by_identity: BTreeMap<Identity, Vec<(u64, ActionOutcome, String)>> = BTreeMap::new();
    let (mut confirmed_by_recovery, mut failed_by_recovery, mut sent_again) = (0, 0, 0);
    let mut other_failures = Vec::new();
    for record in &history {
        let Event::Action(action) = &record.event else { continue };
        assert_eq!(action.action, Action::DisableAccount, "only disables were planned: {record:#?}");
        let error = action.error.clone().unwrap_or_default();
        by_identity.entry(action.identity.clone()).or_default().push((record.id.0, action.outcome, error.clone()));
        if action.outcome.changed_account() {
            assert_eq!(action.outcome, ActionOutcome::Succeeded, "a first disable, not a drift: {record:#?}");
            let by_run_1 = disabled_by_run_1.contains(&action.identity.value());
            if error.contains(CONFIRMED) {
                confirmed_by_recovery += 1;
            } else {
                assert!(!error.contains(INTERRUPTED), "{record:#?}");
                assert!(!by_run_1, "disabled before the restart, yet sent again: {record:#?}");
                sent_again += 1;
            }
        } else if action.outcome == ActionOutcome::NotApplied {
            // A crash is not a failure: an interrupted disable the DC does not show is settled as
            // not applied, with the value as the DC shows it before and after, and no error.
            let note = action.note.clone().unwrap_or_default();
            assert!(note.contains(INTERRUPTED) && action.error.is_none(), "{record:#?}");
            assert_eq!(action.before, action.after, "nothing changed: {record:#?}");
            failed_by_recovery += 1;
        } else {
            assert_eq!(action.outcome, ActionOutcome::Failed, "{record:#?}");
            assert!(!error.contains(INTERRUPTED), "an interrupted change settled as a failure: {record:#?}");
            other_failures.push(format!("{}: {error}", action.identity));
        }
    }
    for user in &users {
        let identity = Identity::sam_account_name(&user.sam).expect("sAMAccountName");
        let records = by_identity.remove(&identity).unwrap_or_default();
        let successes = records.iter().filter(|(_, outcome, _)| outcome.changed_account()).count();
        assert_eq!(successes, 1, "{identity}: exactly one success: {records:#?}");
    }
    assert!(by_identity.is_empty(), "records about accounts not in the test: {by_identity:#?}");

    println!(
        "users created in {:.1} s; run 1 killed (SIGKILL) {:.1} s later with {at_kill} of {USERS} disabled \
         ({after_kill} once it was dead); run 2 found {unsettled_at_restart} unsettled intents, settled \
         {settled_lines} ({confirmed_by_recovery} confirmed as succeeded, {failed_by_recovery} as not applied), \
         sent {sent_again} disables again ({} other failures); all converged {:.1} s in; history: {} records, \
         chain verified",
        created.as_secs_f64(),
        (killed_after - created).as_secs_f64(),
        other_failures.len(),
        converged_after.as_secs_f64(),
        history.len(),
    );
    for line in reconciled {
        println!("run 2: {line}");
    }
    for failure in other_failures.iter().take(5) {
        println!("failed, then retried: {failure}");
    }

    // It was a kill mid-reconcile: every intent of the pass was journaled and none settled.
    assert_eq!(unsettled_at_restart, USERS, "the kill came after the intents were journaled, before they settled");
    assert_eq!(settled_lines, USERS, "recovery settled each interrupted intent");
    assert_eq!(confirmed_by_recovery + failed_by_recovery, USERS, "one recovery record per interrupted intent");
    assert!(confirmed_by_recovery >= at_kill, "the disables seen before the kill are confirmed by recovery");
    assert_eq!(sent_again, failed_by_recovery, "what recovery found not applied was sent again, once");
    drop(store);
    drop(ldap);
    let cleanup = Instant::now();
    drop(ou);
    println!("test OU deleted in {:.1} s", cleanup.elapsed().as_secs_f64());
}
