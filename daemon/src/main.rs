//! `remedy`: the daemon and its command line.
//!
//! This file maps subcommands to their modules and outcomes to exit codes; the work lives in the
//! modules. Exit codes, for every command:
//!
//! - 0: success (valid manifests, a plan applied, the status is Ready, the chain verifies...).
//! - 1: the command's answer is "no": invalid manifests; a manifest that is Stalled or not Ready
//!   before `--timeout`; and the daemon API's refusals: 403 (the token's role may not do that),
//!   404 (no such manifest), 409 (the plan is not held, the history chain is broken).
//! - 2: the command could not get an answer: usage or environment error (bad flag, unreadable
//!   file, no token), the API unreachable, 401 (unknown token), any other 4xx (a request the
//!   daemon cannot read) and 5xx.
//!
//! `remedy plan` exits 1 when a manifest is invalid, whatever the plan; with `--base` too, and 0
//! whatever the change does (a pull request's check does not fail because it changes something).
//!
//! `remedy doctor` exits 1 when a check fails (warnings do not), 2 when the configuration does not
//! load.
//!
//! `remedy apply` exits 1 when anything it was asked for is not done (denied, held, blocked, not
//! found, failed...; see `remedy apply --help`).
//!
//! Standard output closed before the command is done (`remedy history | head`) ends it quietly
//! with 0, as ripgrep does: the reader took what it wanted.
//!
//! Errors from the API are printed as `error: <HTTP status> <code>: <message>`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use remedy::cli;

#[derive(Debug, Parser)]
#[command(name = "remedy", version, about = "Takes compromised identities away from attackers, the GitOps way")]
struct Args {
    /// How log lines on stderr are written: text, or one JSON object a line (REMEDY_LOG sets the
    /// level).
    #[arg(long, global = true, value_enum, env = "REMEDY_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifest files or directories; exit 0 when every document is valid, 1 otherwise.
    Validate(cli::validate::ValidateArgs),
    /// Print the plan for the manifests against the live directories (read only), or offline
    /// against an observed-state snapshot (--observed); or, with --base REF, preview what a change
    /// to the manifest repository would do (docs/gitops.md).
    Plan(cli::plan::PlanArgs),
    /// Observe, plan and apply the allowed actions once, journaled and recorded in the store like the
    /// daemon's (refused while `remedy serve` holds the store), printing what was done.
    Apply(cli::apply::ApplyArgs),
    /// Check a configuration against the live estate before starting: each DC (reachable,
    /// certificate, bind, clock), the action account's rights on the allowed scopes and on the
    /// protected accounts, the protected groups, the Graph token and its permissions. Exit 0 when
    /// no check fails (warnings do not), 1 when one does, 2 when the configuration does not load.
    Doctor(cli::doctor::DoctorArgs),
    /// Run the daemon: watch the manifests, reconcile continuously, record every action.
    Serve(cli::serve::ServeArgs),
    /// Show the manifests' status as the daemon has it (or wait until they are Ready).
    Status(cli::status::StatusArgs),
    /// Show the daemon's history of actions, approvals and reconcile requests, or verify it.
    History(cli::history::HistoryArgs),
    /// Ask the daemon to reconcile a manifest now (and retry its failed actions).
    Reconcile(cli::reconcile::ReconcileArgs),
    /// Approve a plan the daemon holds for exceeding maxChangesPerReconcile.
    Approve(cli::approve::ApproveArgs),
    /// Print the HTTP API's OpenAPI document (as `GET /openapi.json` serves it), offline.
    Openapi(cli::openapi::OpenapiArgs),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The daemon says what it does; one-shot commands print their answer and only warn; doctor's
    // answer is every failure already, each with its fix, so the providers' warnings would only
    // repeat its lines.
    let default_level = match args.command {
        Command::Serve(_) => "info",
        Command::Doctor(_) => "error",
        _ => "warn",
    };
    let requested = std::env::var("REMEDY_LOG").unwrap_or_default();
    let mut filter = tracing_subscriber::EnvFilter::try_new(&requested).unwrap_or_else(|_| default_level.into());
    if requested.trim().is_empty() {
        filter = default_level.into();
    }
    // notify traces every file event it sees: with REMEDY_LOG=trace and the log file next to the
    // manifest directory, each log line would be an event to trace, without end. Asked for by
    // name, it is given.
    if !requested.contains("notify") {
        filter = filter.add_directive("notify=info".parse().expect("a valid directive"));
    }
    // sled logs its debug and trace records from work it defers to whichever thread next
    // touches its epoch, which can be a thread's exit, after the log writer's per-thread buffer
    // is gone: the write then panics inside a thread-local destructor, which aborts the process
    // (seen as `remedy serve` killed by SIGABRT on SIGTERM under REMEDY_LOG=trace). So sled
    // never gets more than info, even when asked for by name.
    filter = filter.add_directive("sled=info".parse().expect("a valid directive"));
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(filter);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let outcome = match args.command {
        Command::Validate(a) => cli::validate::run(&a),
        Command::Plan(a) => cli::plan::run(&a),
        Command::Apply(a) => cli::apply::run(&a),
        Command::Doctor(a) => cli::doctor::run(&a),
        Command::Serve(a) => cli::serve::run(&a),
        Command::Status(a) => cli::status::run(&a),
        Command::History(a) => cli::history::run(&a),
        Command::Reconcile(a) => cli::reconcile::run(&a),
        Command::Approve(a) => cli::approve::run(&a),
        Command::Openapi(a) => cli::openapi::run(&a),
    };
    match outcome {
        Ok(code) => code,
        Err(error) if cli::output::is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    }
}

/// 1 for the API's refusals, 2 for everything else that went wrong (see the header).
fn exit_code(error: &anyhow::Error) -> u8 {
    error.chain().find_map(|e| e.downcast_ref::<cli::client::ClientError>()).map_or(2, |e| e.exit_code())
}
