//! Data-driven plan cases: every folder under `tests/it/cases/` is one case.
//!
//! - `manifests.yaml`: real manifest YAML (one or more documents), loaded with the crate's loader.
//! - `observed.yaml`: the observed state, in [`ObservedState`]'s snapshot form.
//! - `input.yaml` (optional): see [`CaseInput`].
//!
//! The plan is snapshotted as YAML (`snapshots/it__plan_cases__<case>.snap`). Run one case with
//! `CASE=<name> cargo test -p remedy-policies --test it plan_cases`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Duration, TimeZone, Utc};
use remedy_policies::config::Guardrails;
use remedy_policies::load::{assemble, load_file};
use remedy_policies::observed::ObservedState;
use remedy_policies::plan::{plan, ActiveManifest, DepartedManifest, Plan, PlanId, PlanInput, RecordedChange};
use serde::Deserialize;

use crate::support::read;

/// Everything a case may set besides manifests and observed state; all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CaseInput {
    /// What the case shows; goes into the snapshot's header.
    #[serde(default)]
    description: Option<String>,
    /// Default: 2026-11-20T10:00:00Z.
    #[serde(default)]
    now: Option<DateTime<Utc>>,
    /// Per manifest name; default `now` minus one hour.
    #[serde(default)]
    effective_since: BTreeMap<String, DateTime<Utc>>,
    #[serde(default)]
    departed: Vec<DepartedManifest>,
    #[serde(default)]
    remedy_changes: Vec<RecordedChange>,
    #[serde(default)]
    approvals: BTreeSet<PlanId>,
    /// Replaces the default guardrails (scope `OU=Staff,DC=remedy,DC=test`, the documented
    /// defaults, action account `svc-remedy@remedy.test`).
    #[serde(default)]
    guardrails: Option<Guardrails>,
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/cases")
}

fn default_guardrails() -> Guardrails {
    let mut guardrails = Guardrails::with_scopes(&["OU=Staff,DC=remedy,DC=test"]);
    guardrails.action_account = Some("svc-remedy@remedy.test".to_owned());
    guardrails
}

fn run_case(dir: &Path) -> (Plan, Option<String>) {
    let manifests_text = read(&dir.join("manifests.yaml"));
    let set = assemble([load_file("manifests.yaml", &manifests_text)]);
    let problems: Vec<String> = set.diagnostics().map(ToString::to_string).collect();
    assert!(problems.is_empty(), "manifests.yaml does not load:\n{}", problems.join("\n"));

    let observed: ObservedState =
        serde_yaml::from_str(&read(&dir.join("observed.yaml"))).unwrap_or_else(|e| panic!("observed.yaml: {e}"));
    let input_path = dir.join("input.yaml");
    let input: CaseInput = if input_path.exists() {
        serde_yaml::from_str(&read(&input_path)).unwrap_or_else(|e| panic!("input.yaml: {e}"))
    } else {
        CaseInput::default()
    };

    let now = input.now.unwrap_or_else(|| Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).single().expect("a valid time"));
    let names: BTreeSet<&str> = set.manifests.iter().map(|m| m.name.as_str()).collect();
    for name in input.effective_since.keys() {
        assert!(
            names.contains(name.as_str()),
            "input.yaml: effectiveSince names {name}, which is not in manifests.yaml"
        );
    }
    let manifests: Vec<ActiveManifest> = set
        .manifests
        .iter()
        .map(|manifest| ActiveManifest {
            manifest: manifest.clone(),
            effective_since: input
                .effective_since
                .get(manifest.name.as_str())
                .copied()
                .unwrap_or(now - Duration::hours(1)),
        })
        .collect();
    let guardrails = input.guardrails.clone().unwrap_or_else(default_guardrails);
    let plan = plan(&PlanInput {
        manifests: &manifests,
        departed: &input.departed,
        remedy_changes: &input.remedy_changes,
        observed: &observed,
        guardrails: &guardrails,
        approvals: &input.approvals,
        now,
    });
    (plan, input.description)
}

#[test]
fn plan_cases() {
    let only = std::env::var("CASE").ok();
    let mut cases: Vec<PathBuf> = fs::read_dir(cases_dir())
        .expect("tests/it/cases exists")
        .map(|entry| entry.expect("readable entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases found under tests/it/cases");

    let mut failed = Vec::new();
    let mut names = BTreeSet::new();
    for dir in &cases {
        let name = dir.file_name().and_then(|n| n.to_str()).expect("case folder names are UTF-8").to_owned();
        names.insert(name.clone());
        if only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let outcome = std::panic::catch_unwind(|| {
            let (plan, description) = run_case(dir);
            let mut settings = insta::Settings::clone_current();
            settings.set_omit_expression(true);
            settings.set_description(description.unwrap_or_default());
            settings.bind(|| insta::assert_yaml_snapshot!(name.as_str(), plan));
        });
        if outcome.is_err() {
            failed.push(name);
        }
    }

    // A snapshot without its case is a case that was renamed or deleted: it must go too.
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/snapshots");
    let orphans: Vec<String> = fs::read_dir(&snapshots)
        .map(|entries| {
            entries
                .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
                .filter_map(|file| file.strip_prefix("it__plan_cases__")?.strip_suffix(".snap").map(str::to_owned))
                .filter(|case| !names.contains(case))
                .collect()
        })
        .unwrap_or_default();
    assert!(orphans.is_empty(), "snapshots without a case folder: {orphans:?}");
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
