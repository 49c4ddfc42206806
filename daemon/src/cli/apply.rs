//! `remedy apply`: one pass of the daemon's, once ([`crate::controller::apply_once`]): observe,
//! settle what an interrupted run left, plan, and carry out the allowed actions, each journaled
//! before it is sent and recorded in the store's history; then print what was done. The daemon,
//! `remedy serve`, does the same continuously; while it runs it holds the store, and `apply`
//! refuses to run beside it.
//!
//! Exit 0 only when everything the manifests ask for is done: anything denied, held, blocked, not
//! found (or ambiguous, or on a provider that cannot be reached), failed or skipped, or an invalid
//! manifest, makes it 1.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use remedy_policies::plan::Plan;
use serde::Serialize;

use super::inputs::{config_relative, prepare_kerberos, read_inputs};
use super::output::{print_structured, Format};
use super::plan::print_plan;
use crate::controller::{apply_once, Sent};
use crate::execute::Outcome;
use crate::store::Store;

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
    actions: &'a [Sent],
}

pub fn run(args: &ApplyArgs) -> Result<ExitCode> {
    let inputs = read_inputs(&args.config, args.manifests.as_deref())?;
    prepare_kerberos(&inputs.config, &args.config)?;
    let approvals = args.approve.iter().cloned().collect();
    let store_path = config_relative(&args.config, &inputs.config.store.path);
    let (store, opened) = Store::open(&store_path).with_context(|| {
        format!(
            "cannot open the store {} (while `remedy serve` runs, it holds the store: ask it with `remedy \
             reconcile` instead)",
            store_path.display()
        )
    })?;
    if let Some(aside) = &opened.moved_aside {
        eprintln!(
            "warning: the store {} could not be read; it was moved to {} and an empty one made",
            store_path.display(),
            aside.display()
        );
    }
    let pass = super::live::runtime()?.block_on(async {
        let mut providers = super::live::connect(&inputs).await?;
        let guardrails = &inputs.config.guardrails;
        let active = inputs.active(&Default::default(), chrono::Utc::now());
        let pass =
            apply_once(&inputs.set, &active, guardrails, &approvals, &inputs.manifest_dir, store, &mut providers)
                .await
                .with_context(|| format!("the store {} failed", store_path.display()))?;
        anyhow::Ok(pass)
    })?;
    let (plan, sent) = (&pass.plan, &pass.sent);
    let unfinished = unfinished(plan, sent);
    if !print_structured(args.format, &Report { plan, actions: sent })? {
        let mut out = io::stdout().lock();
        print_plan(&mut out, plan)?;
        writeln!(out)?;
        if pass.recovered > 0 {
            writeln!(
                out,
                "{} action(s) interrupted by an earlier run settled from what the directory shows",
                pass.recovered
            )?;
        }
        for action in sent {
            let outcome = match action.outcome {
                Outcome::Succeeded => format!("done ({} ms), now {}", action.duration_ms, action.after),
                Outcome::Failed => format!(
                    "FAILED ({}): {}",
                    if action.transient { "transient" } else { "permanent" },
                    action.error.as_deref().unwrap_or("")
                ),
                Outcome::Skipped => format!("skipped: {}", action.error.as_deref().unwrap_or("")),
                Outcome::AwaitingConfirmation => {
                    format!("sent, awaiting confirmation: {}", action.error.as_deref().unwrap_or(""))
                }
            };
            writeln!(out, "{} {}: {outcome}", action.identity, action.action)?;
        }
        let failed = sent.iter().filter(|s| s.outcome != Outcome::Succeeded).count();
        writeln!(out, "{} action(s) applied, {failed} not", sent.len() - failed)?;
        if sent.iter().any(|s| s.outcome == Outcome::AwaitingConfirmation) {
            writeln!(
                out,
                "an action awaiting confirmation is re-read by the next `remedy apply` or by `remedy serve`, never sent again before its confirmation deadline"
            )?;
        }
        if !unfinished.is_empty() {
            writeln!(out, "not done: {}", unfinished.join(", "))?;
        }
    }
    Ok(if unfinished.is_empty() && inputs.set.is_valid() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// What keeps the manifests from being in force after this run, counted (`1 denied`, `2 failed`):
/// empty when everything planned was done. Any of it makes the exit code 1.
fn unfinished(plan: &Plan, sent: &[Sent]) -> Vec<String> {
    let tally = plan.tally();
    let outcomes = |outcome: Outcome| sent.iter().filter(|s| s.outcome == outcome).count();
    [
        (tally.denied, "denied"),
        (tally.held, "held for approval"),
        (tally.blocked, "blocked"),
        (tally.not_found, "not found"),
        (tally.ambiguous, "ambiguous"),
        (tally.unavailable, "provider unavailable"),
        (outcomes(Outcome::Failed), "failed"),
        (outcomes(Outcome::Skipped), "skipped"),
        (outcomes(Outcome::AwaitingConfirmation), "awaiting confirmation"),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}"))
    .collect()
}
