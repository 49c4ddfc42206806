//! `remedy apply`: observe, plan and carry out the allowed actions once, printing what was done.
//! (The daemon, `remedy serve`, does the same continuously and records history.)

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use chrono::Utc;
use remedy_policies::plan::{plan, PlanInput};
use serde::Serialize;

use super::output::{print_structured, Format};
use super::plan::{print_plan, read_inputs};
use crate::execute::{execute, ActionReport, Outcome};

#[derive(Debug, clap::Args)]
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
        let ad = super::live::connect_ad(&inputs).await?;
        let entra = super::live::connect_entra(&inputs)?;
        let now = Utc::now();
        let observed =
            crate::observe::observe(&inputs.targets(&[]), &inputs.risk_for(), ad.as_ref(), entra.as_ref()).await;
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
        let concurrency = inputs.config.active_directory.as_ref().map_or(1, |c| c.connections);
        let reports = execute(&plan, &observed, ad.as_ref(), entra.as_ref(), concurrency, now, &Utc::now).await;
        anyhow::Ok((plan, reports))
    })?;
    if !print_structured(args.format, &Report { plan: &plan, actions: &reports })? {
        print_plan(&plan);
        println!();
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
            println!("{} {}: {outcome}", report.identity, report.action);
        }
        let failed = reports.iter().filter(|r| r.outcome != Outcome::Succeeded).count();
        println!("{} action(s) applied, {failed} not", reports.len() - failed);
    }
    let all_done = reports.iter().all(|r| r.outcome == Outcome::Succeeded) && inputs.set.is_valid();
    Ok(if all_done { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
