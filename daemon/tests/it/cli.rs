//! The offline commands as a user runs them: `remedy validate` and `remedy plan --observed`.

use std::fs;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

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
