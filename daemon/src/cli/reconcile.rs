//! `remedy reconcile NAME`: asks the daemon for a reconcile now (`POST /v1/manifests/{NAME}/reconcile`),
//! which also retries the manifest's accounts whose actions failed for good. With `--wait`, waits
//! for a reconcile that ended after the request, then as `remedy status NAME --wait` does.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

use super::client::{block_on, Answer, Client, ClientArgs};
use super::output::ListFormat;
use super::status::{self, parse_timeout, Wanted};
use crate::model::Event;

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    /// The manifest.
    name: String,
    /// Wait for a reconcile after this request, then until the manifest is Ready; exit 1 if it is
    /// Stalled or at the timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, from the request (e.g. 30s, 2m).
    #[arg(long, default_value = "2m", value_parser = parse_timeout, requires = "wait")]
    timeout: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

/// The API's answer to a reconcile request or an approval.
#[derive(Debug, Deserialize)]
pub struct Accepted {
    pub by: String,
    /// Made on a standby of several instances: queued for the leader, which records it.
    #[serde(default)]
    pub queued: bool,
    #[serde(default)]
    pub leader: Option<String>,
}

impl Accepted {
    /// ` (queued for the leader remedy-a)` when a standby queued it, else nothing.
    pub fn queued_note(&self) -> String {
        match (self.queued, &self.leader) {
            (false, _) => String::new(),
            (true, Some(leader)) => format!(" (queued for the leader {leader})"),
            (true, None) => " (queued for the leader: no instance leads now)".to_owned(),
        }
    }
}

pub fn run(args: &ReconcileArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    block_on(async {
        let answer: Answer<Accepted> = client.post(&["v1", "manifests", &args.name, "reconcile"], None).await?;
        writeln!(
            std::io::stdout(),
            "reconcile of {} requested by {}{}",
            args.name,
            answer.body.by,
            answer.body.queued_note()
        )?;
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        let by = answer.body.by.as_str();
        let requested_at = status::recorded_at(&client, answer.server_time, |event| {
            matches!(event, Event::ReconcileRequest(request)
                if request.by == by && request.manifest.as_ref().is_some_and(|m| m.as_str() == args.name))
        })
        .await?;
        let wanted = Wanted { name: Some(&args.name), reconciled_after: Some(requested_at) };
        let waited = status::wait(&client, &wanted, args.timeout).await?;
        status::print(ListFormat::Table, &waited.statuses, true)?;
        anyhow::Ok(waited.report())
    })?
}
