//! `remedy`: the daemon and its command line.
//!
//! This file maps subcommands to their modules and outcomes to exit codes; the work lives in the
//! modules. Exit codes: 0 success, 1 the command's answer is "no" (invalid manifests, ...),
//! 2 usage or environment error (unreadable file, bad flag).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use remedy::cli;

#[derive(Debug, Parser)]
#[command(name = "remedy", version, about = "Takes compromised identities away from attackers, the GitOps way")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifest files or directories; exit 0 when every document is valid, 1 otherwise.
    Validate(cli::validate::ValidateArgs),
    /// Print the plan for the manifests against an observed-state snapshot (offline).
    Plan(cli::plan::PlanArgs),
    /// Observe, plan and apply the allowed actions once, printing what was done.
    Apply(cli::apply::ApplyArgs),
    /// Run the daemon: watch the manifests, reconcile continuously, record every action.
    Serve(cli::serve::ServeArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The daemon says what it does; one-shot commands print their answer and only warn.
    let default_level = if matches!(args.command, Command::Serve(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REMEDY_LOG").unwrap_or_else(|_| default_level.into()),
        )
        .init();
    let outcome = match args.command {
        Command::Validate(a) => cli::validate::run(&a),
        Command::Plan(a) => cli::plan::run(&a),
        Command::Apply(a) => cli::apply::run(&a),
        Command::Serve(a) => cli::serve::run(&a),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(2)
        }
    }
}
