//! `remedy apply`: observe, plan and carry out the allowed actions once, printing what was done.
//! (The daemon, `remedy serve`, does the same continuously and records history.)
//!
//! Exit 0 only when everything the manifests ask for is done: anything denied, held, blocked, not
//! found (or ambiguous, or on a provider that cannot be reached), failed or skipped, or an invalid
//! manifest, makes it 1.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use remedy_policies::plan::{plan, Plan, PlanInput};
use serde::Serialize;

use super::inputs::read_inputs;
use super::output::{print_structured, Format};
use super::plan::print_plan;
use crate::execute::{execute, ActionReport, Outcome};

#[derive(Debug, clap::Args)]
#[command(after_help = "Exit status: 0 when every action the manifests ask for was done; 1 when anything \
was denied, held for approval, blocked, not found (or ambiguous, or its provider unreachable), failed or \
skipped, or a manifest is invalid; 2 when the command could not run (configuration, directory unreachable).")]
pub struct ApplyArgs {
    #[arg(long, default_value = "remedy.yaml")]
    config: PathBuf,
    /// The manifest directory; default: `manifests.path` from the configuration.
    #[arg(long)]
    manifests: Option<PathBuf>,
    /// Approve a plan held by the blast-radius limit, by its id (as printed by `remedy plan`).
    #[arg(long)]
    approve: Option<remedy_policies::plan::PlanId>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    format: Format,
}

#[derive(Serialize)]
struct Report<'a> {
    plan: &'a remedy_policies::plan::Plan,
    actions: &'a [ActionReport],
}

pub fn run(args: &ApplyArgs) -> Result<ExitCode> {
    let inputs = read_inputs(&args.config, args.manifests.as_deref())?;
    let approvals = args.approve.iter().cloned().collect();
    let (plan, reports) = super::live::runtime()?.block_on(async {
        let mut providers = super::live::connect(&inputs).await?;
        let now = Utc::now();
        let observed = providers.observe(&inputs.targets(&[]), &inputs.risk_for()).await;
        let active = inputs.active(&BTreeMap::new(), now);
        let input = PlanInput {
            manifests: &active,
            departed: &[],
            remedy_changes: &[],
            observed: &observed,
            guardrails: &inputs.config.guardrails,
            approvals: &approvals,
            now,
        };
        let plan = plan(&input);
        let reports =
            execute(&plan, &observed, providers.ad(), providers.entra(), providers.concurrency(), now, &Utc::now).await;
        anyhow::Ok((plan, reports))
    })?;
    let unfinished = unfinished(&plan, &reports);
    if !print_structured(args.format, &Report { plan: &plan, actions: &reports })? {
        let mut out = io::stdout().lock();
        print_plan(&mut out, &plan)?;
        writeln!(out)?;
        for report in &reports {
            let outcome = match report.outcome {
                Outcome::Succeeded => format!(
                    "done ({} ms), now {}",
                    report.duration.as_millis(),
                    report.observed_after.as_deref().unwrap_or("?")
                ),
                Outcome::Failed => format!(
                    "FAILED ({}): {}",
                    if report.transient { "transient" } else { "permanent" },
                    report.error.as_deref().unwrap_or("")
                ),
                Outcome::Skipped => format!("skipped: {}", report.error.as_deref().unwrap_or("")),
            };
            writeln!(out, "{} {}: {outcome}", report.identity, report.action)?;
        }
        let failed = reports.iter().filter(|r| r.outcome != Outcome::Succeeded).count();
        writeln!(out, "{} action(s) applied, {failed} not", reports.len() - failed)?;
        if !unfinished.is_empty() {
            writeln!(out, "not done: {}", unfinished.join(", "))?;
        }
    }
    Ok(if unfinished.is_empty() && inputs.set.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What keeps the manifests from being in force after this run, counted (`1 denied`, `2 failed`):
/// empty when everything planned was done. Any of it makes the exit code 1.
fn unfinished(plan: &Plan, reports: &[ActionReport]) -> Vec<String> {
    let tally = plan.tally();
    let outcomes = |outcome: Outcome| reports.iter().filter(|r| r.outcome == outcome).count();
    [
        (tally.denied, "denied"),
        (tally.held, "held for approval"),
        (tally.blocked, "blocked"),
        (tally.not_found, "not found"),
        (tally.ambiguous, "ambiguous"),
        (tally.unavailable, "provider unavailable"),
        (outcomes(Outcome::Failed), "failed"),
        (outcomes(Outcome::Skipped), "skipped"),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}"))
    .collect()
}
