//! The one-shot commands as a user runs them: `remedy validate`, `remedy plan --observed`, and
//! `remedy apply` against the DC.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

use crate::support::dc::Dc;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn remedy() -> Command {
    let mut command = Command::cargo_bin("remedy").expect("the remedy binary");
    command.current_dir(repo());
    command
}

const VALID: &str = "apiVersion: remedy.dev/v1
kind: Remediation
metadata:
  name: inc-1-alice
spec:
  reason: INC-1
  target:
    samAccountName: alice
  activeDirectory:
    disabled: true
";

#[test]
fn validate_accepts_the_examples() {
    remedy()
        .args(["validate", "examples/manifests"])
        .assert()
        .success()
        .stdout(predicate::str::contains("4 valid manifest(s), 0 rejected document(s)"));
}

#[test]
fn validate_names_file_line_and_column_and_keeps_the_valid_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("good.yaml"), VALID).expect("write");
    let bad = VALID.replace("name: inc-1-alice", "name: inc-2-bob").replace("disabled: true", "disabled: yes please");
    fs::create_dir(dir.path().join("team")).expect("mkdir");
    fs::write(dir.path().join("team/bad.yml"), bad).expect("write");
    fs::write(dir.path().join("notes.txt"), "not a manifest: ignored").expect("write");
    remedy()
        .arg("validate")
        .arg(dir.path())
        .assert()
        .code(1)
        .stdout(predicate::str::contains("team/bad.yml:10:15: error: spec.activeDirectory.disabled:"))
        .stdout(predicate::str::contains("1 valid manifest(s), 1 rejected document(s)"));
}

#[test]
fn validate_json_is_machine_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("a.yaml"), VALID.replace("samAccountName: alice", "objectGuid: nope")).expect("write");
    let output = remedy().arg("validate").arg(dir.path()).args(["-o", "json"]).output().expect("run");
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let diagnostic = &report["diagnostics"][0];
    assert_eq!(diagnostic["file"], "a.yaml");
    assert_eq!(diagnostic["line"], 8);
    assert_eq!(diagnostic["path"], "spec.target.objectGuid");
}

#[test]
fn validate_of_a_missing_path_is_a_usage_error() {
    remedy().args(["validate", "no/such/dir"]).assert().code(2).stderr(predicate::str::contains("no/such/dir"));
}

fn plan_args() -> Vec<&'static str> {
    vec![
        "plan",
        "--config",
        "examples/remedy.yaml",
        "--manifests",
        "examples/manifests",
        "--observed",
        "examples/observed.yaml",
        "--now",
        "2026-11-25T09:00:00Z",
    ]
}

#[test]
fn plan_against_a_snapshot_shows_what_would_change() {
    remedy()
        .args(plan_args())
        .assert()
        .success()
        .stdout(predicate::str::contains("disable-account"))
        .stdout(predicate::str::contains("clear-password-never-expires"))
        .stdout(predicate::str::contains("sam:staff0101  converged"));
}

#[test]
fn plan_json_is_deterministic() {
    let run = || {
        let output = remedy().args(plan_args()).args(["-o", "json"]).output().expect("run");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<serde_json::Value>(&output.stdout).expect("JSON plan")
    };
    let first = run();
    assert_eq!(first, run());
    let staff0007 = first["identities"]
        .as_array()
        .expect("identities")
        .iter()
        .find(|i| i["identity"] == "sam:staff0007")
        .expect("staff0007 planned");
    let actions: Vec<&str> = staff0007["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .map(|a| a["action"].as_str().expect("action name"))
        .collect();
    assert_eq!(actions[..2], ["clear-password-never-expires", "force-password-change"]);
}

#[test]
fn plan_reports_an_invalid_config_with_its_location() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("remedy.yaml");
    fs::write(&config, "manifests: {path: m}\nguardrails:\n  allowedScopes: [x]\n  maxChanges: 3\n").expect("write");
    remedy()
        .arg("plan")
        .arg("--config")
        .arg(&config)
        .args(["--observed", "examples/observed.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("remedy.yaml:4:3"))
        .stderr(predicate::str::contains("maxChanges"));
}

/// Runs `remedy ARGS` with stdout a pipe whose reader takes `lines` lines and then closes it
/// (`remedy ARGS | head -n LINES`); returns the exit code and stderr.
fn into_closed_pipe(args: &[&std::ffi::OsStr], lines: usize) -> (Option<i32>, String) {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("remedy runs");
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    for _ in 0..lines {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a line");
    }
    drop(reader);
    let output = child.wait_with_output().expect("remedy ends");
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn a_closed_pipe_ends_validate_and_plan_quietly_with_0() {
    // Far more than a pipe holds (64 KiB): remedy is still writing when the reader goes.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = VALID.replace("disabled: true", "disabled: yes please");
    for n in 0..1500 {
        fs::write(dir.path().join(format!("inc-{n:04}.yaml")), bad.replace("inc-1-alice", &format!("inc-{n}")))
            .expect("write");
    }
    let validate = [std::ffi::OsStr::new("validate"), dir.path().as_os_str()];
    let (code, stderr) = into_closed_pipe(&validate, 1);
    assert_eq!((code, stderr.as_str()), (Some(0), ""), "remedy validate | head -n 1");
    let plan: Vec<&std::ffi::OsStr> = plan_args().into_iter().map(std::ffi::OsStr::new).collect();
    for lines in [0, 1] {
        let (code, stderr) = into_closed_pipe(&plan, lines);
        assert_eq!((code, stderr.as_str()), (Some(0), ""), "remedy plan | head -n {lines}");
    }
}

/// A manifest disabling the AD account `target` names (`objectGuid: ...`, `samAccountName: ...`).
fn disable(name: &str, target: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: {name}\n  target:\n    \
         {target}\n  activeDirectory:\n    disabled: true\n"
    )
}

fn ad_account(cn: &str, ou: &str, rid: u32, guid: &str) -> String {
    format!(
        "    activeDirectory:\n      dn: CN={cn},{ou},OU=Remedy,DC=remedy,DC=test\n      objectGuid: {guid}\n      \
         objectSid: S-1-5-21-1111111111-2222222222-3333333333-{rid}\n      samAccountName: {cn}\n      \
         userAccountControl: 512\n      pwdLastSet: 2026-10-01T08:00:00Z\n"
    )
}

#[test]
fn the_text_plan_names_guid_targets_and_counts_denied_and_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    fs::create_dir(&manifests).expect("mkdir");
    let guid = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";
    for (name, target) in [
        ("inc-1-by-guid", format!("objectGuid: {guid}")),
        ("inc-2-ghost", "samAccountName: ghost".to_owned()),
        ("inc-3-outsider", "samAccountName: outsider".to_owned()),
    ] {
        fs::write(manifests.join(format!("{name}.yaml")), disable(name, &target)).expect("write");
    }
    let observed = dir.path().join("observed.yaml");
    let accounts = format!(
        "accounts:\n  \"guid:{guid}\":\n{}  \"sam:ghost\":\n    activeDirectory: {{notFound: true}}\n  \"sam:outsider\":\n{}",
        ad_account("staff0007", "OU=Staff", 1107, guid),
        ad_account("outsider", "OU=Elsewhere", 1300, "2c3d4e5f-6071-4283-94a5-b6c7d8e9f0a1"),
    );
    fs::write(&observed, accounts).expect("write");
    let output = remedy()
        .args(["plan", "--config", "examples/remedy.yaml", "--now", "2026-11-25T09:00:00Z", "--manifests"])
        .arg(&manifests)
        .arg("--observed")
        .arg(&observed)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let header = stdout.lines().next().expect("a header");
    assert!(
        header.ends_with(": 3 identities, 1 action(s) to apply, 0 held, 1 denied, 0 blocked, 1 not found"),
        "{stdout}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    let at = lines.iter().position(|l| l.starts_with(&format!("guid:{guid}"))).expect("the GUID's block");
    assert_eq!(lines[at + 1], "  account: CN=staff0007,OU=Staff,OU=Remedy,DC=remedy,DC=test", "{stdout}");
}

/// `remedy apply` against the DC with nothing it can do: one account that does not exist, one the
/// guardrails protect. Nothing is written; the run is not a success.
#[tokio::test]
async fn apply_exits_1_when_something_is_denied_or_not_found() {
    let dc = Dc::shared().await;
    let env = dc.env();
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    fs::create_dir(&manifests).expect("mkdir");
    fs::write(manifests.join("inc-1-ghost.yaml"), disable("inc-1-ghost", "samAccountName: no-such-user-7q"))
        .expect("write");
    fs::write(manifests.join("inc-2-admin.yaml"), disable("inc-2-admin", "samAccountName: Administrator"))
        .expect("write");
    let config = dir.path().join("remedy.yaml");
    fs::write(
        &config,
        format!(
            "manifests:\n  path: manifests\nguardrails:\n  allowedScopes: [\"{staff}\"]\n  protectedAccounts: [Administrator]\n  \
             maxChangesPerReconcile: 25\nstore:\n  path: store\n{ad}",
            staff = env.staff_ou,
            ad = dc.active_directory_yaml(&env.action_password_file, 2),
        ),
    )
    .expect("write");
    let output = remedy().arg("apply").arg("--config").arg(&config).output().expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        stdout
            .lines()
            .next()
            .expect("a header")
            .ends_with(": 2 identities, 0 action(s) to apply, 0 held, 1 denied, 0 blocked, 1 not found"),
        "{stdout}"
    );
    assert!(stdout.contains("0 action(s) applied, 0 not\nnot done: 1 denied, 1 not found\n"), "{stdout}");
}

/// `remedy apply` is one of the daemon's passes: each action journaled before it is sent and
/// settled with its history record in the store, nothing left unsettled; and it refuses to run
/// while something else (the daemon) holds the store, saying what to do instead.
#[tokio::test]
async fn apply_journals_and_records_its_actions_and_refuses_a_store_in_use() {
    use remedy::model::{ActionOutcome, Event};
    use remedy::store::{HistoryQuery, Store};
    use remedy_policies::{Action, Identity};

    let dc = Dc::shared().await;
    let env = dc.env();
    let ou = dc.ou("cli-apply").await;
    let user = ou.add_user("apply", 0x200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let manifests = dir.path().join("manifests");
    fs::create_dir(&manifests).expect("mkdir");
    let target = format!("samAccountName: {}", user.sam);
    fs::write(manifests.join("inc-apply.yaml"), disable("inc-apply", &target)).expect("write");
    let config = dir.path().join("remedy.yaml");
    fs::write(
        &config,
        format!(
            "manifests:\n  path: manifests\nguardrails:\n  allowedScopes: [\"{scope}\"]\nstore:\n  path: store\n{ad}",
            scope = ou.dn,
            ad = dc.active_directory_yaml(&env.action_password_file, 2),
        ),
    )
    .expect("write");

    let output = remedy().arg("apply").arg("--config").arg(&config).output().expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("disable-account: done"), "{stdout}");
    let mut ldap = dc.admin().await;
    let uac = crate::support::dc::read_user(&mut ldap, &user.dn).await.user_account_control;
    assert_eq!(uac & 0x2, 0x2, "the DC shows the account disabled: {uac:#x}");

    let (store, _) = Store::open(dir.path().join("store")).expect("the store apply wrote");
    let identity = Identity::sam_account_name(&user.sam).expect("identity");
    let query = HistoryQuery { identity: Some(identity), limit: 100, ..HistoryQuery::default() };
    let records = store.query_history(&query).expect("history").records;
    let actions: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Action(action) => Some(action),
            _ => None,
        })
        .collect();
    assert_eq!(actions.len(), 1, "one record of the disable: {records:#?}");
    assert_eq!((actions[0].action, actions[0].outcome), (Action::DisableAccount, ActionOutcome::Succeeded));
    assert!(actions[0].intent.is_some(), "the record settled a journaled intent: {:#?}", actions[0]);
    assert_eq!(actions[0].manifests.first().map(|m| m.name.to_string()).as_deref(), Some("inc-apply"));
    assert!(store.unsettled().expect("journal").is_empty(), "nothing left unsettled");
    assert!(
        store.known_manifests().expect("manifests").is_empty(),
        "apply leaves the daemon's knowledge of the set alone: a later `remedy serve` without inc-apply must not \
         release (re-enable) what apply did"
    );

    // The store is held (as `remedy serve` holds it): apply does not act beside it.
    let output = remedy().arg("apply").arg("--config").arg(&config).output().expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("remedy reconcile"), "says what to do instead: {stderr}");
    drop(store);
}

#[test]
fn plan_help_says_offline_only_of_observed() {
    for args in [&["plan", "--help"][..], &["--help"]] {
        let output = remedy().args(args).output().expect("run");
        let help = String::from_utf8_lossy(&output.stdout);
        let offline: Vec<&str> = help.lines().filter(|l| l.contains("offline")).collect();
        assert!(!offline.is_empty(), "{help}");
        for line in offline {
            assert!(line.contains("--observed") || !line.contains("plan"), "{line:?} in remedy {}", args.join(" "));
        }
    }
}
