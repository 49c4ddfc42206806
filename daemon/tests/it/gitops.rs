//! docs/gitops.md kept true: its CI jobs parse as YAML and say what the page says, and the very
//! `remedy plan` lines they run preview a scripted git history of a manifest repository (base on
//! `main`, a branch that adds, edits, deletes and breaks manifests) as the page promises. Offline:
//! no directory is needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_yaml::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// The YAML block that follows `<!-- gitops: NAME -->` in docs/gitops.md.
fn doc_block(name: &str) -> String {
    let page = fs::read_to_string(repo().join("docs/gitops.md")).expect("docs/gitops.md");
    let marker = format!("<!-- gitops: {name} -->\n```yaml\n");
    let start = page.find(&marker).unwrap_or_else(|| panic!("docs/gitops.md has no {marker:?}")) + marker.len();
    let end = page[start..].find("\n```\n").expect("the block ends") + start;
    page[start..=end].to_owned()
}

fn yaml(name: &str) -> Value {
    serde_yaml::from_str(&doc_block(name)).unwrap_or_else(|e| panic!("the {name} block of docs/gitops.md: {e}"))
}

/// `git` in `dir`, with no user or system configuration (no signing, no hooks of the machine's).
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", "user.name=CI", "-c", "user.email=ci@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .output()
        .expect("git runs");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("UTF-8").trim().to_owned()
}

fn manifest(name: &str, target: &str, spec: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"INC: {name}\"\n  \
         target:\n    {target}\n{spec}"
    )
}

/// A manifest repository: `main` with three manifests, and the branch `change` checked out, which
/// adds inc-4, edits inc-3, deletes inc-2 (`onRelease: restore`) and adds an invalid document.
/// Returns the repository and the base commit.
fn scripted_history(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("manifest-repo");
    fs::create_dir_all(root.join("manifests")).expect("mkdir");
    fs::create_dir_all(root.join("ci")).expect("mkdir");
    git(&root, &["init", "-q", "-b", "main"]);
    fs::write(root.join("ci/remedy.yaml"), doc_block("ci-config")).expect("write");
    let write = |file: &str, text: &str| fs::write(root.join("manifests").join(file), text).expect("write");
    write(
        "inc-1.yaml",
        &manifest("inc-1", "userPrincipalName: alice@remedy.test", "  activeDirectory:\n    disabled: true\n"),
    );
    write(
        "inc-2.yaml",
        &manifest(
            "inc-2",
            "samAccountName: bob",
            "  activeDirectory:\n    disabled: true\n  entraId:\n    suspended: true\n  onRelease: restore\n",
        ),
    );
    write("inc-3.yaml", &manifest("inc-3", "samAccountName: carol", "  activeDirectory:\n    disabled: true\n"));
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "base manifests"]);
    let base = git(&root, &["rev-parse", "HEAD"]);
    // As a CI checkout has it: the base branch fetched as origin/main.
    git(&root, &["update-ref", "refs/remotes/origin/main", &base]);

    git(&root, &["checkout", "-q", "-b", "change"]);
    write(
        "inc-4.yaml",
        &manifest(
            "inc-4",
            "userPrincipalName: dave@remedy.test",
            "  activeDirectory:\n    disabled: true\n    mustChangePassword: true\n",
        ),
    );
    write(
        "inc-3.yaml",
        &manifest(
            "inc-3",
            "samAccountName: carol",
            "  activeDirectory:\n    disabled: false\n  entraId:\n    suspended: true\n",
        ),
    );
    fs::remove_file(root.join("manifests/inc-2.yaml")).expect("delete");
    write(
        "broken.yaml",
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-5\nspec:\n  reason: no target\n",
    );
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "the change under review"]);
    (root, base)
}

/// `script` run by bash in `dir` as a CI runner runs it, with `remedy` on the PATH.
fn run_ci(dir: &Path, script: &str, env: &[(&str, &str)]) -> Output {
    let binary = assert_cmd::cargo::cargo_bin("remedy");
    let path = format!("{}:{}", binary.parent().expect("bin dir").display(), std::env::var("PATH").unwrap_or_default());
    let mut command = Command::new("bash");
    command
        .current_dir(dir)
        .env("PATH", path)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-eo", "pipefail", "-c", script]);
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().expect("bash runs")
}

/// What the Markdown must say about the scripted change.
fn assert_says_what_the_change_does(markdown: &str) {
    let expected = [
        "<!-- remedy-plan -->",
        "**3 to add, 1 to change, 1 to release, 2 to restore · 0 held · 0 denied** · ❌ 1 rejected · 1 unchanged manifest(s)",
        "#### ❌ Rejected manifests",
        "manifests/broken.yaml:5:1: error: spec.target:",
        "Blast radius: at most 6 new change(s) from this change, within `maxChangesPerReconcile` (25).",
        "#### inc-2 · removed: released (onRelease: restore) · manifests/inc-2.yaml",
        "| restore | sam:bob | enable-account (activeDirectory.disabled) | ? → enabled again (was: disabled) |",
        "| restore | sam:bob | unsuspend-user (entraId.suspended) | ? → sign-in allowed again (was: sign-in blocked) |",
        "#### inc-3 · changed · manifests/inc-3.yaml",
        "| change | sam:carol | enable-account (activeDirectory.disabled) | ? → enabled (was: disabled) | ❔ not known offline |",
        "| add | sam:carol | suspend-user (entraId.suspended) | ? → sign-in blocked | ❔ not known offline |",
        "#### inc-4 · added · manifests/inc-4.yaml",
        "| add | upn:dave&#64;remedy.test | force-password-change (activeDirectory.mustChangePassword) |",
    ];
    for line in expected {
        assert!(markdown.contains(line), "the preview does not say {line:?}:\n{markdown}");
    }
    assert!(!markdown.contains("inc-1"), "inc-1 is unchanged and not shown:\n{markdown}");
}

#[test]
fn gitops_github_actions_job_is_yaml_and_its_plan_step_previews_a_scripted_change() {
    let workflow = yaml("github-actions");
    assert!(workflow["on"]["pull_request"].is_mapping(), "runs on pull_request");
    assert_eq!(workflow["permissions"]["pull-requests"].as_str(), Some("write"));
    let steps = workflow["jobs"]["plan"]["steps"].as_sequence().expect("steps");
    let checkout = steps.iter().find(|s| s["uses"].as_str().is_some_and(|u| u.starts_with("actions/checkout@")));
    assert_eq!(checkout.expect("a checkout step")["with"]["fetch-depth"].as_i64(), Some(0));
    let plan = steps.iter().find(|s| s["id"].as_str() == Some("plan")).expect("the plan step");
    let script = plan["run"].as_str().expect("its run");
    assert!(script.contains("remedy plan") && script.contains("--base") && script.contains("-o markdown"), "{script}");
    let comment = steps.iter().find(|s| s["name"].as_str() == Some("Comment")).expect("the comment step");
    assert!(comment["run"].as_str().expect("run").contains("<!-- remedy-plan -->"), "finds its comment by the marker");

    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = scripted_history(dir.path());
    let outputs = dir.path().join("github-output");
    let script = script.replace("${{ github.base_ref }}", "main");
    let run = run_ci(&root, &script, &[("GITHUB_OUTPUT", outputs.to_str().expect("UTF-8"))]);
    assert!(run.status.success(), "the step itself succeeds: {}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(fs::read_to_string(&outputs).expect("GITHUB_OUTPUT"), "status=1\n", "1: a manifest is invalid");
    let markdown = fs::read_to_string(root.join("plan.md")).expect("plan.md");
    assert!(markdown.starts_with("<!-- remedy-plan -->\n### remedy plan: origin/main ("), "{markdown}");
    assert!(markdown.contains(") → working tree\n"), "{markdown}");
    assert_says_what_the_change_does(&markdown);
}

#[test]
fn gitops_gitlab_job_is_yaml_and_its_plan_line_previews_a_scripted_change() {
    let job = &yaml("gitlab-ci")["remedy-plan"];
    let rule = job["rules"][0]["if"].as_str().expect("a rule");
    assert!(rule.contains("merge_request_event"), "{rule}");
    assert_eq!(job["variables"]["GIT_DEPTH"].as_str(), Some("0"));
    let script = job["script"].as_sequence().expect("script");
    let line = script.iter().filter_map(Value::as_str).find(|l| l.contains("remedy plan")).expect("a remedy plan line");
    assert!(line.contains("--base \"$CI_MERGE_REQUEST_DIFF_BASE_SHA\"") && line.contains("-o markdown"), "{line}");
    assert!(script.iter().filter_map(Value::as_str).any(|l| l.contains("<!-- remedy-plan -->")), "finds its note");

    let dir = tempfile::tempdir().expect("tempdir");
    let (root, base) = scripted_history(dir.path());
    let run = run_ci(&root, &format!("{line}\necho \"status=$status\""), &[("CI_MERGE_REQUEST_DIFF_BASE_SHA", &base)]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(String::from_utf8_lossy(&run.stdout), "status=1\n");
    let markdown = fs::read_to_string(root.join("plan.md")).expect("plan.md");
    assert!(markdown.contains(&format!("### remedy plan: {base} ({}) → working tree", &base[..7])), "{markdown}");
    assert_says_what_the_change_does(&markdown);
}

#[test]
fn gitops_errors_name_the_revision_and_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = scripted_history(dir.path());
    let run = run_ci(&root, "remedy plan --config ci/remedy.yaml --base origin/nope", &[]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("unknown revision \"origin/nope\" in the git repository"), "{stderr}");

    let elsewhere = dir.path().join("not-a-repo");
    fs::create_dir(&elsewhere).expect("mkdir");
    let script = format!("remedy plan --config ci/remedy.yaml --manifests {} --base main", elsewhere.display());
    let run = run_ci(&root, &script, &[]);
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("not-a-repo is not in a git repository"), "{stderr}");

    // Without a change: nothing to say, and exit 0.
    let run = run_ci(&root, "remedy plan --config ci/remedy.yaml --base origin/main --head main -o markdown", &[]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("**No change to what remedy does** (3 manifest(s) unchanged)."),
        "{run:?}"
    );
}

/// `--observed`: the head's plan against a snapshot decides each row (current values, allowed,
/// already so) and the exact blast radius; `--live` is only for a preview, and not with a snapshot.
#[test]
fn gitops_a_preview_against_a_snapshot_takes_the_plans_verdicts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = scripted_history(dir.path());
    fs::remove_file(root.join("manifests/broken.yaml")).expect("delete");
    fs::copy(repo().join("examples/manifests/inc-4711-staff0042.yaml"), root.join("manifests/inc-4711-staff0042.yaml"))
        .expect("copy");
    let observed = repo().join("examples/observed.yaml");
    let script = format!(
        "remedy plan --config ci/remedy.yaml --base origin/main --observed {} --now 2026-11-25T09:00:00Z -o markdown",
        observed.display()
    );
    let run = run_ci(&root, &script, &[]);
    let markdown = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{}{markdown}", String::from_utf8_lossy(&run.stderr));
    for line in [
        "Judged against the directories' state as read",
        "| add | upn:staff0042&#64;remedy.test | disable-account (activeDirectory.disabled) | 0x200 → 0x202 | ✅ allowed |",
        "| add | upn:staff0042&#64;remedy.test | suspend-user (entraId.suspended) | true → false | ✅ allowed |",
        // bob and carol are not in the snapshot: nothing is known of them but that.
        "| restore | sam:bob | enable-account (activeDirectory.disabled) | ? → enabled again (was: disabled) | ❔ restored only where remedy's history records the change",
    ] {
        assert!(markdown.contains(line), "the preview does not say {line:?}:\n{markdown}");
    }
    assert!(markdown.contains("Blast radius: "), "{markdown}");
    assert!(!markdown.contains("at most"), "the blast radius is exact with a plan:\n{markdown}");

    for refused in [
        "remedy plan --config ci/remedy.yaml --live",
        "remedy plan --config ci/remedy.yaml --base main --live --observed x.yaml",
    ] {
        let run = run_ci(&root, refused, &[]);
        assert_eq!(run.status.code(), Some(2), "{refused}: {run:?}");
    }
}

/// `--live`: the head's plan reads the real DC (read only): the current value of a real account,
/// a protected one denied, and the blast radius exact.
#[tokio::test]
async fn gitops_a_live_preview_reads_the_directory() {
    let dc = crate::support::dc::Dc::shared().await;
    let env = dc.env();
    let ou = dc.ou("gitops-live").await;
    let user = ou.add_user("live", 0x200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("repo");
    fs::create_dir_all(root.join("manifests")).expect("mkdir");
    git(&root, &["init", "-q", "-b", "main"]);
    fs::write(
        root.join("remedy.yaml"),
        format!(
            "manifests:\n  path: manifests\nguardrails:\n  allowedScopes: [\"{scope}\"]\n{ad}",
            scope = ou.dn,
            ad = dc.active_directory_yaml(&env.action_password_file, 2),
        ),
    )
    .expect("write");
    git(&root, &["add", "-A"]);
    git(&root, &["commit", "-q", "-m", "no manifest yet"]);
    let disable = |name: &str, target: &str| manifest(name, target, "  activeDirectory:\n    disabled: true\n");
    fs::write(root.join("manifests/inc-live.yaml"), disable("inc-live", &format!("samAccountName: {}", user.sam)))
        .expect("write");
    fs::write(root.join("manifests/inc-admin.yaml"), disable("inc-admin", "samAccountName: Administrator"))
        .expect("write");

    let run = run_ci(&root, "remedy plan --base main --live -o markdown", &[]);
    let markdown = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{}{markdown}", String::from_utf8_lossy(&run.stderr));
    let sam = user.sam.to_lowercase();
    for line in [
        "**2 to add, 0 to change, 0 to release, 0 to restore · 0 held · 1 denied**".to_owned(),
        "Judged against the directories' state as read".to_owned(),
        format!("| add | sam:{sam} | disable-account (activeDirectory.disabled) | 0x200 → 0x202 | ✅ allowed |"),
        "| add | sam:administrator | disable-account (activeDirectory.disabled) | 0x".to_owned(),
        "Blast radius: 1 new change(s) in the whole plan".to_owned(),
    ] {
        assert!(markdown.contains(&line), "the preview does not say {line:?}:\n{markdown}");
    }
    assert!(
        markdown.contains("⛔ **denied** (built-in account)") || markdown.contains("⛔ **denied** (protectedAccounts)"),
        "{markdown}"
    );
    let mut admin = dc.admin().await;
    let after = crate::support::dc::read_user(&mut admin, &user.dn).await;
    assert_eq!(after.user_account_control, 0x200, "a preview changes nothing");
}

/// The other forms: the preview as text and as JSON, and `remedy plan -o markdown` without
/// `--base` (the plan itself, for a comment).
#[test]
fn gitops_the_preview_as_text_and_json_and_the_plan_as_markdown() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (root, _) = scripted_history(dir.path());
    let run = run_ci(&root, "remedy plan --config ci/remedy.yaml --base origin/main", &[]);
    let text = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(1), "{text}");
    let first = text.lines().next().expect("a summary");
    assert!(first.starts_with("origin/main ("), "{first}");
    assert!(
        first.ends_with(
            ") -> working tree: 3 to add, 1 to change, 1 to release, 2 to restore; 0 held; 0 denied; 1 rejected; 1 \
             unchanged (offline)"
        ),
        "{first}"
    );
    assert!(text.contains("\ninc-2  removed  sam:bob  manifests/inc-2.yaml\n"), "{text}");

    let run = run_ci(&root, "remedy plan --config ci/remedy.yaml --base origin/main -o json", &[]);
    let json: serde_json::Value = serde_json::from_slice(&run.stdout).expect("JSON");
    assert_eq!(json["summary"]["restore"], 2, "{json}");
    assert_eq!(json["judged"], "offline");
    assert_eq!(json["rejected"][0]["file"], "manifests/broken.yaml", "named as in the repository");

    let observed = repo().join("examples/observed.yaml");
    let manifests = repo().join("examples/manifests");
    let config = repo().join("examples/remedy.yaml");
    let script = format!(
        "remedy plan --config {} --manifests {} --observed {} --now 2026-11-25T09:00:00Z -o markdown",
        config.display(),
        manifests.display(),
        observed.display()
    );
    let run = run_ci(dir.path(), &script, &[]);
    let markdown = String::from_utf8_lossy(&run.stdout);
    assert_eq!(run.status.code(), Some(0), "{markdown}");
    assert!(markdown.starts_with("<!-- remedy-plan -->\n### remedy plan "), "{markdown}");
    assert!(
        markdown.contains("| disable-account | 0x200 → 0x202 | ✅ allowed | INC-4711: pass-the-ticket from WS-0193 (MDI alert da637f1c) |"),
        "{markdown}"
    );
}
