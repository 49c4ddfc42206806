//! `remedy plan`: what remedy would do, without doing it.
//!
//! Against the live directories (read only), or offline against an observed-state snapshot file
//! (`--observed`), which may also carry the other inputs the daemon normally takes from its store:
//! when each manifest was first seen, departed manifests, remedy's earlier changes, and approvals.

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

use super::inputs::{read_inputs, Inputs};
use super::output::{print_structured, Format};

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
    #[arg(long)]
    observed: Option<PathBuf>,
    /// The time to plan at (RFC 3339); default: now.
    #[arg(long)]
    now: Option<DateTime<Utc>>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    format: Format,
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
    let inputs = read_inputs(&args.config, args.manifests.as_deref())?;
    let now = args.now.unwrap_or_else(Utc::now);
    let snapshot = match &args.observed {
        Some(path) => read_snapshot(path, &inputs)?,
        None => {
            let observed = crate::cli::live::observe(&inputs, &inputs.targets(&[]), &inputs.risk_for())?;
            Snapshot {
                accounts: observed.accounts,
                privileged_groups: observed.privileged_groups,
                ..Snapshot::default()
            }
        }
    };
    let active = inputs.active(&snapshot.effective_since, now);
    let observed = ObservedState { accounts: snapshot.accounts, privileged_groups: snapshot.privileged_groups };
    let input = PlanInput {
        manifests: &active,
        departed: &snapshot.departed,
        remedy_changes: &snapshot.remedy_changes,
        observed: &observed,
        guardrails: &inputs.config.guardrails,
        approvals: &snapshot.approvals,
        now,
    };
    let plan = plan(&input);
    if !print_structured(args.format, &plan)? {
        print_plan(&mut io::stdout().lock(), &plan)?;
    }
    Ok(if inputs.set.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
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
