//! `diff`: what a change to the manifest repository would do, table-tested from real manifest
//! YAML at two revisions, offline and against a plan of observed state; and its Markdown, as
//! snapshots (`snapshots/it__plan_diff__*.snap`).

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use remedy_policies::config::Guardrails;
use remedy_policies::diff::markdown::{escape, render_diff, render_plan, Revisions, COMMENT_LIMIT, MARKER};
use remedy_policies::diff::{diff, BlastRadius, DiffInput, PlanDiff, Verdict};
use remedy_policies::load::{assemble, load_file, ManifestSet};
use remedy_policies::observed::ObservedState;
use remedy_policies::plan::{plan, ActiveManifest, DepartedManifest, Plan, RecordedChange};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).single().expect("a valid time")
}

fn guardrails() -> Guardrails {
    let mut guardrails = Guardrails::with_scopes(&["OU=Staff,DC=remedy,DC=test"]);
    guardrails.action_account = Some("svc-remedy@remedy.test".to_owned());
    guardrails
}

/// A manifest file: `name`, its target (`userPrincipalName: x`), and the rest of its spec.
fn manifest(name: &str, target: &str, spec: &str) -> (String, String) {
    let mut text = format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"INC: {name}\"\n  \
         target:\n    {target}\n"
    );
    for line in spec.lines().filter(|l| !l.trim().is_empty()) {
        text.push_str("  ");
        text.push_str(line);
        text.push('\n');
    }
    (format!("{name}.yaml"), text)
}

/// Manifest files: (file name, text).
type Files = Vec<(String, String)>;

/// A case of the table: what it shows, the base's files, the head's, and the expected lines.
type Case = (&'static str, Files, Files, Vec<&'static str>);

/// An enum's serialised name: the string itself, or its `kind` tag.
fn name_of<T: serde::Serialize>(value: &T) -> String {
    let value = serde_json::to_value(value).expect("serialises");
    let text = value.as_str().or_else(|| value["kind"].as_str()).expect("a name or a kind");
    text.to_owned()
}

fn set(files: &[(String, String)]) -> ManifestSet {
    assemble(files.iter().map(|(file, text)| load_file(file, text)))
}

const DISABLE_AND_RESET: &str = "activeDirectory:\n  disabled: true\n  mustChangePassword: true\n";
const RESTORE_ALL: &str =
    "activeDirectory:\n  disabled: true\n  mustChangePassword: true\nentraId:\n  suspended: true\n  \
                           revokeSessions: true\nonRelease: restore\n";

/// The diff as lines a reader can check: the summary, then one line per row
/// (`manifest change: kind action verdict`), one per rejected document and the blast radius.
fn describe(diff: &PlanDiff) -> Vec<String> {
    let s = &diff.summary;
    let mut lines = vec![format!(
        "add={} change={} release={} restore={} held={} denied={} rejected={}",
        s.add, s.change, s.release, s.restore, s.held, s.denied, s.rejected
    )];
    for manifest in &diff.manifests {
        let change = name_of(&manifest.change);
        if manifest.rows.is_empty() {
            lines.push(format!("{} {change}: no rows", manifest.name));
        }
        for row in &manifest.rows {
            let kind = name_of(&row.kind);
            let verdict = match &row.verdict {
                Verdict::Denied { guardrail, .. } => {
                    format!("denied:{}", name_of(guardrail))
                }
                other => name_of(other),
            };
            lines.push(format!("{} {change}: {kind} {} {verdict}", manifest.name, row.action));
        }
    }
    for rejected in &diff.rejected {
        lines.push(format!(
            "rejected {}{}",
            rejected.file,
            rejected.keeps.as_ref().map(|k| format!(" keeps {k}")).unwrap_or_default()
        ));
    }
    lines.push(match &diff.blast_radius {
        BlastRadius::Within { changes, limit, exact } => format!("within {changes}/{limit} exact={exact}"),
        BlastRadius::Held { changes, limit, exact, .. } => format!("held {changes}/{limit} exact={exact}"),
        BlastRadius::Approved { .. } => "approved".to_owned(),
    });
    lines
}

fn offline(base: &[(String, String)], head: &[(String, String)], guardrails: &Guardrails) -> PlanDiff {
    let base = set(base);
    let head = set(head);
    diff(&DiffInput { base: &base.manifests, head: &head, guardrails, head_plan: None, recorded: &[], now: now() })
}

#[test]
fn offline_diffs_say_what_a_change_adds_changes_releases_and_restores() {
    let alice = || manifest("inc-1", "userPrincipalName: alice@remedy.test", DISABLE_AND_RESET);
    let bob = || manifest("inc-2", "samAccountName: bob", "entraId:\n  suspended: true\n");
    let cases: Vec<Case> = vec![
        (
            "add: a new manifest's intents, not judgeable offline",
            vec![],
            vec![alice()],
            vec![
                "add=2 change=0 release=0 restore=0 held=0 denied=0 rejected=0",
                "inc-1 added: add disable-account unknown",
                "inc-1 added: add force-password-change unknown",
                "within 2/25 exact=false",
            ],
        ),
        (
            "unchanged: nothing to say",
            vec![alice(), bob()],
            vec![alice(), bob()],
            vec!["add=0 change=0 release=0 restore=0 held=0 denied=0 rejected=0", "within 0/25 exact=false"],
        ),
        (
            "change: a state flipped, a one-shot asked again by the new version, an intent withdrawn, one added",
            vec![manifest(
                "inc-1",
                "userPrincipalName: alice@remedy.test",
                "activeDirectory:\n  disabled: true\n  mustChangePassword: true\nentraId:\n  revokeSessions: true\n",
            )],
            vec![manifest(
                "inc-1",
                "userPrincipalName: alice@remedy.test",
                "activeDirectory:\n  disabled: false\n  mustChangePassword: true\nentraId:\n  suspended: true\n",
            )],
            vec![
                "add=1 change=2 release=0 restore=0 held=0 denied=0 rejected=0",
                "inc-1 changed: change enable-account unknown",
                "inc-1 changed: change force-password-change unknown",
                "inc-1 changed: add suspend-user unknown",
                "inc-1 changed: withdraw revoke-sessions nothing-to-do",
                "within 3/25 exact=false",
            ],
        ),
        (
            "release: a removed manifest with onRelease restore puts back what it asked for (not sessions)",
            vec![manifest("inc-3", "userPrincipalName: carol@remedy.test", RESTORE_ALL), bob()],
            vec![bob()],
            vec![
                "add=0 change=0 release=1 restore=3 held=0 denied=0 rejected=0",
                "inc-3 removed: restore enable-account unknown",
                "inc-3 removed: restore cancel-forced-password-change unknown",
                "inc-3 removed: restore unsuspend-user unknown",
                "within 3/25 exact=false",
            ],
        ),
        (
            "release with onRelease leave: released, nothing restored",
            vec![alice()],
            vec![],
            vec![
                "add=0 change=0 release=1 restore=0 held=0 denied=0 rejected=0",
                "inc-1 removed: no rows",
                "within 0/25 exact=false",
            ],
        ),
        (
            "restore: another manifest naming the account still asks for the state",
            vec![
                manifest(
                    "inc-3",
                    "userPrincipalName: carol@remedy.test",
                    "activeDirectory:\n  disabled: true\nonRelease: restore\n",
                ),
                manifest("inc-4", "userPrincipalName: carol@remedy.test", "activeDirectory:\n  disabled: true\n"),
            ],
            vec![manifest("inc-4", "userPrincipalName: carol@remedy.test", "activeDirectory:\n  disabled: true\n")],
            vec![
                "add=0 change=0 release=1 restore=1 held=0 denied=0 rejected=0",
                "inc-3 removed: restore enable-account nothing-to-do",
                "within 0/25 exact=false",
            ],
        ),
        (
            "rejected at head: an invalid edit keeps the base version, nothing is released",
            vec![alice(), bob()],
            vec![
                alice(),
                (
                    "inc-2.yaml".to_owned(),
                    "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-2\nspec:\n  reason: x\n"
                        .to_owned(),
                ),
                (
                    "new.yaml".to_owned(),
                    "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-9\nspec: {}\n".to_owned(),
                ),
            ],
            vec![
                "add=0 change=0 release=0 restore=0 held=0 denied=0 rejected=2",
                "rejected inc-2.yaml keeps inc-2",
                "rejected new.yaml",
                "within 0/25 exact=false",
            ],
        ),
        (
            "rejected document without a name: a removal waits",
            vec![manifest("inc-3", "userPrincipalName: carol@remedy.test", RESTORE_ALL)],
            vec![("broken.yaml".to_owned(), "{ this is not: [yaml".to_owned())],
            vec![
                "add=0 change=0 release=1 restore=3 held=0 denied=0 rejected=1",
                "inc-3 removed: restore enable-account nothing-to-do",
                "inc-3 removed: restore cancel-forced-password-change nothing-to-do",
                "inc-3 removed: restore unsuspend-user nothing-to-do",
                "rejected broken.yaml",
                "within 0/25 exact=false",
            ],
        ),
        (
            "a new target: every intent is new for that account",
            vec![alice()],
            vec![manifest("inc-1", "samAccountName: erin", DISABLE_AND_RESET)],
            vec![
                "add=2 change=0 release=0 restore=0 held=0 denied=0 rejected=0",
                "inc-1 changed: add disable-account unknown",
                "inc-1 changed: add force-password-change unknown",
                "within 2/25 exact=false",
            ],
        ),
        (
            "expired by the change: released as if deleted, with the head's onRelease",
            vec![manifest("inc-3", "userPrincipalName: carol@remedy.test", "activeDirectory:\n  disabled: true\n")],
            vec![manifest(
                "inc-3",
                "userPrincipalName: carol@remedy.test",
                "activeDirectory:\n  disabled: true\nexpires: 2026-11-01T00:00:00Z\nonRelease: restore\n",
            )],
            vec![
                "add=0 change=0 release=1 restore=1 held=0 denied=0 rejected=0",
                "inc-3 expired: restore enable-account unknown",
                "within 1/25 exact=false",
            ],
        ),
        (
            "guardrails judgeable offline: protected by name, RID 500 by SID, the action account",
            vec![],
            vec![
                manifest("adm", "samAccountName: Administrator", "activeDirectory:\n  disabled: true\n"),
                manifest("rid", "objectSid: S-1-5-21-1-2-3-500", "entraId:\n  suspended: true\n"),
                manifest("svc", "userPrincipalName: SVC-remedy@remedy.test", "activeDirectory:\n  disabled: true\n"),
                manifest("tgt", "objectSid: S-1-5-21-1-2-3-502", "activeDirectory:\n  disabled: true\n"),
            ],
            vec![
                "add=4 change=0 release=0 restore=0 held=0 denied=4 rejected=0",
                "adm added: add disable-account denied:protected-account",
                "rid added: add suspend-user denied:builtin-account",
                "svc added: add disable-account denied:action-account",
                "tgt added: add disable-account denied:builtin-account",
                "within 0/25 exact=false",
            ],
        ),
    ];
    for (case, base, head, expected) in cases {
        assert_eq!(describe(&offline(&base, &head, &guardrails())), expected, "{case}");
    }
}

#[test]
fn allow_protected_exempts_by_name_but_never_the_action_account() {
    let mut guardrails = guardrails();
    guardrails.allow_protected = vec!["administrator".to_owned(), "svc-remedy@remedy.test".to_owned()];
    let head = [
        manifest("adm", "samAccountName: Administrator", "activeDirectory:\n  disabled: true\n"),
        manifest("svc", "userPrincipalName: svc-remedy@remedy.test", "activeDirectory:\n  disabled: true\n"),
    ];
    assert_eq!(
        describe(&offline(&[], &head, &guardrails))[1..3],
        ["adm added: add disable-account unknown", "svc added: add disable-account denied:action-account"]
    );
}

#[test]
fn offline_blast_radius_holds_every_new_change_over_the_limit_but_not_the_denied_ones() {
    let mut guardrails = guardrails();
    guardrails.max_changes_per_reconcile = 2;
    let head = [
        manifest("inc-1", "userPrincipalName: alice@remedy.test", DISABLE_AND_RESET),
        manifest("inc-2", "samAccountName: bob", "entraId:\n  suspended: true\n"),
        manifest("adm", "samAccountName: krbtgt", "activeDirectory:\n  disabled: true\n"),
    ];
    assert_eq!(
        describe(&offline(&[], &head, &guardrails)),
        [
            "add=4 change=0 release=0 restore=0 held=3 denied=1 rejected=0",
            "adm added: add disable-account denied:protected-account",
            "inc-1 added: add disable-account held",
            "inc-1 added: add force-password-change held",
            "inc-2 added: add suspend-user held",
            "held 3/2 exact=false",
        ]
    );
}

const OBSERVED: &str = r#"
accounts:
  "upn:alice@remedy.test":
    activeDirectory:
      dn: CN=alice,OU=Staff,DC=remedy,DC=test
      objectGuid: 3f1c2a9e-8d4b-4c7a-9e21-5b6d7f8a9c01
      objectSid: S-1-5-21-1-2-3-1142
      samAccountName: alice
      userPrincipalName: alice@remedy.test
      userAccountControl: 514
      pwdLastSet: 2026-10-01T08:00:00Z
  "sam:bob":
    activeDirectory:
      dn: CN=bob,OU=Elsewhere,DC=remedy,DC=test
      objectGuid: 9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d
      objectSid: S-1-5-21-1-2-3-1107
      samAccountName: bob
      userAccountControl: 512
      pwdLastSet: 2025-03-14T09:30:00Z
  "upn:carol@remedy.test":
    activeDirectory:
      dn: CN=carol,OU=Staff,DC=remedy,DC=test
      objectGuid: 1b2c3d4e-5f60-4172-8394-a5b6c7d8e9f0
      objectSid: S-1-5-21-1-2-3-1201
      samAccountName: carol
      userPrincipalName: carol@remedy.test
      userAccountControl: 514
      pwdLastSet: 2026-09-01T12:00:00Z
"#;

/// The head plan as `remedy plan --base --observed` makes it: the head's manifests, effective an
/// hour ago, and the base's removed ones departed.
fn observed_diff(
    base: &[(String, String)],
    head: &[(String, String)],
    recorded: &[RecordedChange],
) -> (PlanDiff, Plan) {
    let base = set(base);
    let head = set(head);
    let observed: ObservedState = serde_yaml::from_str(OBSERVED).expect("observed state");
    let active: Vec<ActiveManifest> = head
        .manifests
        .iter()
        .map(|m| ActiveManifest { manifest: m.clone(), effective_since: now() - Duration::hours(1) })
        .collect();
    let departed: Vec<DepartedManifest> = base
        .manifests
        .iter()
        .filter(|m| !head.manifests.iter().any(|h| h.name == m.name))
        .map(|m| DepartedManifest {
            name: m.name.clone(),
            target: m.spec.target.clone(),
            on_release: m.spec.on_release,
            reason: "removed".to_owned(),
        })
        .collect();
    let guardrails = guardrails();
    let head_plan = plan(&remedy_policies::plan::PlanInput {
        manifests: &active,
        departed: &departed,
        remedy_changes: recorded,
        observed: &observed,
        guardrails: &guardrails,
        approvals: &BTreeSet::new(),
        now: now(),
    });
    let diff = diff(&DiffInput {
        base: &base.manifests,
        head: &head,
        guardrails: &guardrails,
        head_plan: Some(&head_plan),
        recorded,
        now: now(),
    });
    (diff, head_plan)
}

#[test]
fn observed_diffs_take_the_plans_verdicts() {
    let carol_disabled_by_remedy = RecordedChange {
        manifest: remedy_policies::ManifestName::new("inc-3").expect("a name"),
        identity: "upn:carol@remedy.test".parse().expect("an identity"),
        action: remedy_policies::Action::DisableAccount,
        at: now() - Duration::days(2),
        dc: None,
    };
    let (diff, _) = observed_diff(
        &[manifest(
            "inc-3",
            "userPrincipalName: carol@remedy.test",
            "activeDirectory:\n  disabled: true\nonRelease: restore\n",
        )],
        &[
            manifest("inc-1", "userPrincipalName: alice@remedy.test", DISABLE_AND_RESET),
            manifest("inc-2", "samAccountName: bob", "activeDirectory:\n  disabled: true\n"),
        ],
        &[carol_disabled_by_remedy],
    );
    assert_eq!(
        describe(&diff),
        [
            "add=3 change=0 release=1 restore=1 held=0 denied=1 rejected=0",
            "inc-1 added: add disable-account nothing-to-do",
            "inc-1 added: add force-password-change allowed",
            "inc-2 added: add disable-account denied:out-of-scope",
            "inc-3 removed: restore enable-account allowed",
            "within 2/25 exact=true",
        ]
    );
    let restore = &diff.manifests[2].rows[0];
    assert_eq!((restore.current.as_deref(), restore.wanted.as_str()), (Some("0x202"), "0x200"));

    let (unrecorded, _) = observed_diff(
        &[manifest(
            "inc-3",
            "userPrincipalName: carol@remedy.test",
            "activeDirectory:\n  disabled: true\nonRelease: restore\n",
        )],
        &[],
        &[],
    );
    assert_eq!(describe(&unrecorded)[1], "inc-3 removed: restore enable-account unknown", "no history: not known");
}

// --- Markdown -------------------------------------------------------------------------------------

/// A change with something of everything, and a reason that tries to break the table.
fn showcase() -> PlanDiff {
    let mut hostile = manifest(
        "inc-7",
        "userPrincipalName: dave@remedy.test",
        "activeDirectory:\n  disabled: true\nentraId:\n  revokeSessions: true\n",
    );
    hostile.1 = hostile.1.replace(
        "reason: \"INC: inc-7\"",
        "reason: \"a|b <img src=x onerror=alert(1)> `code` @security-team **bold** [link](http://x)\"",
    );
    offline(
        &[
            manifest("inc-1", "userPrincipalName: alice@remedy.test", "activeDirectory:\n  disabled: true\n"),
            manifest("inc-3", "userPrincipalName: carol@remedy.test", RESTORE_ALL),
        ],
        &[
            manifest("inc-1", "userPrincipalName: alice@remedy.test", DISABLE_AND_RESET),
            hostile,
            manifest("adm", "samAccountName: Administrator", "activeDirectory:\n  disabled: true\n"),
            (
                "bad.yaml".to_owned(),
                "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: inc-8\nspec:\n  reason: \"```\"\n"
                    .to_owned(),
            ),
        ],
        &guardrails(),
    )
}

const REVISIONS: Revisions<'static> = Revisions { base: "origin/main (3f2a1c0)", head: "working tree" };

#[test]
fn markdown_of_an_offline_diff() {
    let text = render_diff(&showcase(), REVISIONS, COMMENT_LIMIT);
    assert!(text.starts_with(MARKER), "the marker comes first");
    for line in text.lines().filter(|l| l.starts_with('|')) {
        // Every table row has exactly its five cells: nothing a manifest says adds a column.
        assert_eq!(line.matches('|').count(), 6, "{line}");
    }
    assert!(!text.contains("<img"), "HTML from a manifest is escaped");
    assert!(!text.contains("@security-team"), "no mention from a manifest");
    insta::assert_snapshot!("offline_diff", text);
}

#[test]
fn markdown_of_an_observed_diff() {
    let (diff, _) = observed_diff(
        &[manifest(
            "inc-3",
            "userPrincipalName: carol@remedy.test",
            "activeDirectory:\n  disabled: true\nonRelease: restore\n",
        )],
        &[
            manifest("inc-1", "userPrincipalName: alice@remedy.test", DISABLE_AND_RESET),
            manifest("inc-2", "samAccountName: bob", "activeDirectory:\n  disabled: true\n"),
        ],
        &[],
    );
    insta::assert_snapshot!("observed_diff", render_diff(&diff, REVISIONS, COMMENT_LIMIT));
}

#[test]
fn markdown_of_a_plan() {
    let (_, head_plan) =
        observed_diff(&[], &[manifest("inc-1", "userPrincipalName: alice@remedy.test", DISABLE_AND_RESET)], &[]);
    insta::assert_snapshot!("plan", render_plan(&head_plan, COMMENT_LIMIT));
}

#[test]
fn a_long_diff_is_folded_and_capped_and_says_what_was_cut() {
    let head: Vec<(String, String)> = (0..2000)
        .map(|i| manifest(&format!("inc-{i:04}"), &format!("samAccountName: user{i:04}"), DISABLE_AND_RESET))
        .collect();
    let diff = offline(&[], &head, &guardrails());
    let text = render_diff(&diff, REVISIONS, COMMENT_LIMIT);
    assert!(text.chars().count() <= COMMENT_LIMIT, "{} characters", text.chars().count());
    assert!(text.contains("<details><summary>2000 manifest(s) changed, 4000 row(s)</summary>"), "folded");
    assert!(text.contains("</details>"));
    let shown = text.matches("#### inc-").count();
    assert!(shown > 50 && shown < 2000, "{shown} shown");
    assert!(
        text.contains(&format!("**Cut:** {} manifest(s) ({} row(s)) are not shown", 2000 - shown, 2 * (2000 - shown))),
        "{}",
        &text[text.len() - 400..]
    );
    assert!(text.contains("**⏸ Held for approval:** up to 4000 new change(s)"), "the summary stays whole");

    // The same cut at a small limit, whole in a snapshot.
    insta::assert_snapshot!("capped", render_diff(&offline(&[], &head[..3], &guardrails()), REVISIONS, 2300));
}

#[test]
fn escaping_covers_what_breaks_tables_or_injects_html() {
    for (hostile, expected) in [
        ("a|b", "a&#124;b"),
        ("<b>x</b>", "&lt;b&gt;x&lt;/b&gt;"),
        ("`x`", "&#96;x&#96;"),
        ("@org/team", "&#64;org/team"),
        ("line\nbreak", "line break"),
        (
            "**b** _i_ [l](u) ~s~ #1 ![i](u) $x$ \\",
            "\\*\\*b\\*\\* \\_i\\_ \\[l\\](u) \\~s\\~ \\#1 \\!\\[i\\](u) \\$x\\$ \\\\",
        ),
    ] {
        assert_eq!(escape(hostile), expected, "{hostile:?}");
    }
}
