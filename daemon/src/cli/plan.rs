//! `remedy plan`: what remedy would do, without doing it.
//!
//! Against the live directories (read only), or offline against an observed-state snapshot file
//! (`--observed`), which may also carry the other inputs the daemon normally takes from its store:
//! when each manifest was first seen, departed manifests, remedy's earlier changes, and approvals.
//!
//! With `--base REF` it previews a change to the manifest repository instead (docs/gitops.md):
//! the manifest directory at REF against the working tree (or `--head REF`), as a
//! [`remedy_policies::diff::PlanDiff`]. Offline by default, from the manifests and `remedy.yaml`
//! alone (a CI runner usually reaches no directory); against a snapshot with `--observed`, or the
//! live directories with `--live`. `-o markdown` renders either for a pull request's comment.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use remedy_policies::identity::Identity;
use remedy_policies::manifest::ManifestName;
use remedy_policies::observed::{AdGroup, Observation, ObservedState};
use remedy_policies::plan::{plan, DepartedManifest, Disposition, Plan, PlanId, PlanInput, RecordedChange};
use serde::Deserialize;

use remedy_policies::admission::Admission;
use remedy_policies::diff::markdown::{render_diff, render_plan, Revisions, COMMENT_LIMIT};
use remedy_policies::diff::{diff, DiffInput, PlanDiff};
use remedy_policies::load::ManifestSet;
use remedy_policies::plan::ActiveManifest;

use super::inputs::{config_relative, read_config, read_inputs, Inputs};
use super::output::{print_structured, Format};
use super::revision::repository_of;
use crate::manifest_dir;

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// The daemon configuration (guardrails, providers).
    #[arg(long, default_value = "remedy.yaml")]
    config: PathBuf,
    /// The manifest directory; default: `manifests.path` from the configuration.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// An observed-state snapshot (YAML) to plan against offline, instead of reading the live
    /// directories.
    #[arg(long, conflicts_with = "live")]
    observed: Option<PathBuf>,
    /// Preview a change to the manifest repository: compare the manifest directory as it is at
    /// this git revision (a branch, tag or commit of the repository that holds the directory)
    /// with the working tree (or --head). Judged offline from the manifests and the configuration
    /// alone, unless --observed or --live is given. Exits 0 whatever the change does; 1 when the
    /// head has invalid manifests.
    #[arg(long, value_name = "REF")]
    base: Option<String>,
    /// With --base: compare with this revision instead of the working tree.
    #[arg(long, value_name = "REF", requires = "base")]
    head: Option<String>,
    /// With --base: judge the head against the live directories (read only), as `remedy plan`
    /// does without --base.
    #[arg(long, requires = "base")]
    live: bool,
    /// The time to plan at (RFC 3339); default: now.
    #[arg(long)]
    now: Option<DateTime<Utc>>,
    /// text, json, yaml, or markdown (for a pull request's comment: a hidden `<!-- remedy-plan -->`
    /// marker first, at most 65,536 characters).
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    format: PlanFormat,
}

/// `remedy plan -o`: the shared formats, and Markdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Yaml,
    Markdown,
}

impl PlanFormat {
    /// The shared format this one is, if it is one.
    fn structured(self) -> Format {
        match self {
            PlanFormat::Json => Format::Json,
            PlanFormat::Yaml => Format::Yaml,
            PlanFormat::Text | PlanFormat::Markdown => Format::Text,
        }
    }
}

/// The `--observed` file: observed accounts plus the store-held inputs of a plan.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Snapshot {
    #[serde(default)]
    pub accounts: BTreeMap<Identity, Observation>,
    /// The protected groups and the groups nested in them (see `ObservedState`); without them the
    /// plan judges protection from each account's own memberOf and primaryGroupID.
    #[serde(default)]
    pub privileged_groups: Option<Vec<AdGroup>>,
    /// When remedy first saw each manifest's current generation; default: when its file was
    /// last modified.
    #[serde(default)]
    pub effective_since: BTreeMap<ManifestName, DateTime<Utc>>,
    #[serde(default)]
    pub departed: Vec<DepartedManifest>,
    #[serde(default)]
    pub remedy_changes: Vec<RecordedChange>,
    #[serde(default)]
    pub approvals: BTreeSet<PlanId>,
}

pub fn run(args: &PlanArgs) -> Result<ExitCode> {
    if let Some(base) = &args.base {
        return run_diff(args, base);
    }
    let inputs = read_inputs(&args.config, args.manifests.as_deref())?;
    let now = args.now.unwrap_or_else(Utc::now);
    let snapshot = match &args.observed {
        Some(path) => read_snapshot(path, &inputs)?,
        None => live_snapshot(&inputs, &[])?,
    };
    let active = inputs.active(&snapshot.effective_since, now);
    let plan = plan_of(&inputs, &active, &snapshot, &snapshot.departed, now);
    match args.format {
        PlanFormat::Markdown => print!("{}", render_plan(&plan, COMMENT_LIMIT)),
        format => {
            if !print_structured(format.structured(), &plan)? {
                print_plan(&mut io::stdout().lock(), &plan)?;
            }
        }
    }
    Ok(if inputs.set.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The live directories' view of the set's targets (and of `departed`'s).
fn live_snapshot(inputs: &Inputs, departed: &[DepartedManifest]) -> Result<Snapshot> {
    let observed = crate::cli::live::observe(inputs, &inputs.targets(departed), &inputs.risk_for())?;
    Ok(Snapshot { accounts: observed.accounts, privileged_groups: observed.privileged_groups, ..Snapshot::default() })
}

fn plan_of(
    inputs: &Inputs,
    active: &[ActiveManifest],
    snapshot: &Snapshot,
    departed: &[DepartedManifest],
    now: DateTime<Utc>,
) -> Plan {
    let observed =
        ObservedState { accounts: snapshot.accounts.clone(), privileged_groups: snapshot.privileged_groups.clone() };
    plan(&PlanInput {
        manifests: active,
        departed,
        remedy_changes: &snapshot.remedy_changes,
        observed: &observed,
        guardrails: &inputs.config.guardrails,
        approvals: &snapshot.approvals,
        now,
    })
}

/// `remedy plan --base REF`: what the change from REF to the head would do.
fn run_diff(args: &PlanArgs, base_ref: &str) -> Result<ExitCode> {
    let config = read_config(&args.config)?;
    let manifest_dir = args.manifests.clone().unwrap_or_else(|| config_relative(&args.config, &config.manifests.path));
    let repository = repository_of(&manifest_dir)?;
    let base = repository.manifests_at(base_ref)?;
    if !base.existed {
        eprintln!(
            "note: the manifest directory {:?} holds no file at {}: every manifest of the head is new",
            repository.relative, base.label
        );
    }
    let base_set = manifest_dir::load_set(&[base.path().to_path_buf()])?;
    let head = args.head.as_deref().map(|rev| repository.manifests_at(rev)).transpose()?;
    let (head_dir, head_label) = match &head {
        Some(head) => (head.path().to_path_buf(), head.label.clone()),
        None => (manifest_dir.clone(), "working tree".to_owned()),
    };
    let head_set = manifest_dir::load_set(std::slice::from_ref(&head_dir))?;
    for diagnostic in head_set.diagnostics() {
        eprintln!("{diagnostic}");
    }
    let valid = head_set.is_valid();
    let now = args.now.unwrap_or_else(Utc::now);
    let inputs = Inputs { config, config_path: args.config.clone(), set: head_set, manifest_dir: head_dir };

    let judged =
        if args.live || args.observed.is_some() { Some(head_plan(args, &inputs, &base_set, now)?) } else { None };
    let (head_plan, recorded) = match &judged {
        Some((plan, snapshot)) => (Some(plan), snapshot.remedy_changes.as_slice()),
        None => (None, &[][..]),
    };
    let mut preview = diff(&DiffInput {
        base: &base_set.manifests,
        head: &inputs.set,
        guardrails: &inputs.config.guardrails,
        head_plan,
        recorded,
        now,
    });
    in_repository(&mut preview, &repository.relative);
    match args.format {
        PlanFormat::Markdown => {
            let revisions = Revisions { base: &base.label, head: &head_label };
            print!("{}", render_diff(&preview, revisions, COMMENT_LIMIT));
        }
        format => {
            if !print_structured(format.structured(), &preview)? {
                print_diff(&mut io::stdout().lock(), &preview, &base.label, &head_label)?;
            }
        }
    }
    Ok(if valid { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Names the preview's files as the pull request shows them: relative to the repository's root
/// (`manifests/inc-1.yaml:7:5: ...`), not to the manifest directory.
fn in_repository(preview: &mut PlanDiff, relative: &str) {
    if relative.is_empty() {
        return;
    }
    let prefix = |file: &str| format!("{relative}/{file}");
    for manifest in &mut preview.manifests {
        manifest.file = prefix(&manifest.file);
    }
    for rejected in &mut preview.rejected {
        rejected.file = prefix(&rejected.file);
        for diagnostic in &mut rejected.diagnostics {
            *diagnostic = prefix(diagnostic);
        }
    }
}

/// The head's plan, as the daemon would make it after the change: the manifests in force by the
/// daemon's own admission rule (an invalid edit keeps the base's version), the base's manifests
/// gone from it departed. A manifest the change adds or edits takes effect now; an unchanged one
/// is taken as in force long before (the snapshot's `effectiveSince` when it says otherwise), so
/// its one-shot items count as done where the account shows them done at any time.
fn head_plan(args: &PlanArgs, inputs: &Inputs, base: &ManifestSet, now: DateTime<Utc>) -> Result<(Plan, Snapshot)> {
    let mut admission = Admission::default();
    admission.admit(base.clone());
    admission.admit(inputs.set.clone());
    let in_force: Vec<_> = admission.in_force().values().cloned().collect();
    let mut departed: Vec<DepartedManifest> = if admission.may_release() {
        base.manifests
            .iter()
            .filter(|m| !admission.in_force().contains_key(&m.name))
            .map(|m| DepartedManifest {
                name: m.name.clone(),
                target: m.spec.target.clone(),
                on_release: m.spec.on_release,
                reason: "removed by the change under review".to_owned(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut snapshot = match &args.observed {
        Some(path) => read_snapshot(path, inputs)?,
        None => {
            let targets = Inputs {
                config: inputs.config.clone(),
                config_path: inputs.config_path.clone(),
                set: ManifestSet { manifests: in_force.clone(), rejected: Vec::new() },
                manifest_dir: inputs.manifest_dir.clone(),
            };
            live_snapshot(&targets, &departed)?
        }
    };
    departed.append(&mut snapshot.departed);
    let long_ago = DateTime::<Utc>::UNIX_EPOCH;
    let active: Vec<ActiveManifest> = in_force
        .into_iter()
        .map(|manifest| {
            let unchanged =
                base.manifests.iter().any(|b| b.name == manifest.name && b.generation == manifest.generation);
            let since =
                snapshot.effective_since.get(&manifest.name).copied().unwrap_or(if unchanged { long_ago } else { now });
            ActiveManifest { manifest, effective_since: since }
        })
        .collect();
    let plan = plan_of(inputs, &active, &snapshot, &departed, now);
    Ok((plan, snapshot))
}

/// The text form of a preview: the summary, the rejected documents, the blast radius, then one
/// block per manifest, one line per row.
pub fn print_diff(out: &mut impl Write, preview: &PlanDiff, base: &str, head: &str) -> io::Result<()> {
    let s = &preview.summary;
    writeln!(
        out,
        "{base} -> {head}: {} to add, {} to change, {} to release, {} to restore; {} held; {} denied; {} rejected; {} unchanged ({})",
        s.add,
        s.change,
        s.release,
        s.restore,
        s.held,
        s.denied,
        s.rejected,
        preview.unchanged.len(),
        kebab(&preview.judged)
    )?;
    for rejected in &preview.rejected {
        for diagnostic in &rejected.diagnostics {
            writeln!(out, "rejected: {diagnostic}")?;
        }
        if let Some(keeps) = &rejected.keeps {
            writeln!(out, "rejected: {keeps} stays in force as it is at the base")?;
        }
    }
    writeln!(out, "blast radius: {}", preview.blast_radius)?;
    for manifest in &preview.manifests {
        writeln!(out)?;
        let change = serde_json::to_value(manifest.change).ok().and_then(|v| v["kind"].as_str().map(str::to_owned));
        writeln!(out, "{}  {}  {}  {}", manifest.name, change.unwrap_or_default(), manifest.identity, manifest.file)?;
        for note in &manifest.notes {
            writeln!(out, "  note: {note}")?;
        }
        for row in &manifest.rows {
            let verdict = serde_json::to_value(&row.verdict).unwrap_or_default();
            let detail = ["detail", "message", "why"].iter().find_map(|k| verdict[k].as_str()).unwrap_or("");
            writeln!(
                out,
                "  {:<8} {:<30} {} -> {}  {}{}{}",
                kebab(&row.kind),
                row.action.to_string(),
                row.current.as_deref().unwrap_or("?"),
                row.wanted,
                verdict["kind"].as_str().unwrap_or(""),
                if detail.is_empty() { "" } else { ": " },
                detail
            )?;
        }
    }
    out.flush()
}

fn read_snapshot(path: &Path, inputs: &Inputs) -> Result<Snapshot> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read the snapshot {}", path.display()))?;
    let snapshot: Snapshot =
        serde_yaml::from_str(&text).with_context(|| format!("invalid snapshot {}", path.display()))?;
    let unknown: Vec<&str> = snapshot
        .effective_since
        .keys()
        .filter(|name| !inputs.set.manifests.iter().any(|m| &m.name == *name))
        .map(ManifestName::as_str)
        .collect();
    if !unknown.is_empty() {
        bail!("the snapshot's effectiveSince names manifests that are not in the set: {}", unknown.join(", "));
    }
    Ok(snapshot)
}

/// The human-readable form: a header counting what is to be done and what stands in the way, then
/// one block per identity, one line per action.
pub fn print_plan(out: &mut impl Write, plan: &Plan) -> io::Result<()> {
    writeln!(out, "{}", header(plan))?;
    for conflict in &plan.conflicts {
        writeln!(out, "conflict: {conflict}")?;
    }
    for warning in &plan.warnings {
        writeln!(out, "warning: {warning}")?;
    }
    for identity in &plan.identities {
        let names: Vec<&str> = identity.manifests.iter().map(ManifestName::as_str).collect();
        writeln!(out)?;
        writeln!(out, "{}  {}  [{}]", identity.identity, kebab(&identity.status), names.join(", "))?;
        // A GUID or a SID says nothing to a reader: name the account it resolved to.
        if matches!(identity.identity, Identity::ObjectGuid(_) | Identity::ObjectSid(_)) {
            match &identity.resolved.ad_dn {
                Some(dn) => writeln!(out, "  account: {dn}")?,
                None => writeln!(out, "  account: none resolved")?,
            }
        }
        for action in &identity.actions {
            let disposition = match &action.disposition {
                Disposition::Allowed => "allowed".to_owned(),
                Disposition::Denied { guardrail, detail } => format!("DENIED ({}: {detail})", kebab(guardrail)),
                Disposition::Held { plan_id } => format!("held (approve plan {plan_id})"),
            };
            writeln!(
                out,
                "  {:<30} {} {} -> {}  {}",
                action.action.to_string(),
                action.action.attribute(),
                action.before,
                action.after,
                disposition
            )?;
        }
        for item in &identity.blocked {
            writeln!(out, "  blocked {}: {}: {}", item.action, kebab(&item.reason), item.message)?;
        }
        for note in &identity.notes {
            writeln!(out, "  note: {note}")?;
        }
    }
    out.flush()
}

/// What a plan holds, counted: `plan ID: 4 identities, 2 action(s) to apply, 1 held, 1 denied,
/// 1 blocked, 1 not found` (and ambiguous or unavailable identities when there are any).
fn header(plan: &Plan) -> String {
    let tally = plan.tally();
    let mut text = format!(
        "plan {}: {} identities, {} action(s) to apply, {} held, {} denied, {} blocked, {} not found",
        plan.id,
        plan.identities.len(),
        tally.allowed,
        tally.held,
        tally.denied,
        tally.blocked,
        tally.not_found,
    );
    for (count, word) in [(tally.ambiguous, "ambiguous"), (tally.unavailable, "unavailable")] {
        if count > 0 {
            text.push_str(&format!(", {count} {word}"));
        }
    }
    text
}

/// An enum's serialised (kebab-case) name, as the JSON output spells it.
fn kebab<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}
