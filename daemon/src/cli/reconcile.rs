//! `remedy reconcile NAME`: asks the daemon for a reconcile now (`POST /v1/manifests/{NAME}/reconcile`),
//! which also retries the manifest's accounts whose actions failed for good. With `--wait`, waits
//! for a reconcile that ended after the request, then as `remedy status NAME --wait` does.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::client::{block_on, Answer, Client, ClientArgs, ClientError};
use super::output::ListFormat;
use super::status::{self, parse_timeout, Wanted};
use crate::store::{Event, HistoryRecord};

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
}

pub fn run(args: &ReconcileArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    block_on(async {
        let answer: Answer<Accepted> = client.post(&["v1", "manifests", &args.name, "reconcile"], None).await?;
        println!("reconcile of {} requested by {}", args.name, answer.body.by);
        if !args.wait {
            return Ok(ExitCode::SUCCESS);
        }
        let requested_at = request_time(&client, &args.name, &answer).await?;
        let wanted = Wanted { name: Some(&args.name), reconciled_after: Some(requested_at) };
        let waited = status::wait(&client, &wanted, args.timeout).await?;
        status::print(ListFormat::Table, &waited.statuses, true)?;
        anyhow::Ok(waited.report())
    })?
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    records: Vec<HistoryRecord>,
}

/// When the daemon took the request, by its own clock: the time of its reconcile-request record
/// (the daemon records it between two reconciles, so any reconcile ending later began later). The
/// answer's `Date` (whole seconds) finds it; without one, this machine's clock stands in.
async fn request_time(client: &Client, name: &str, answer: &Answer<Accepted>) -> Result<DateTime<Utc>, ClientError> {
    let Some(date) = answer.server_time else {
        return Ok(Utc::now());
    };
    let since = date - chrono::Duration::seconds(2);
    let query = [
        ("manifest", name.to_owned()),
        ("since", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
        ("limit", "1000".to_owned()),
    ];
    let page: Page = client.get(&["v1", "history"], &query).await?;
    let recorded = page.records.iter().rev().find_map(|record| match &record.event {
        Event::ReconcileRequest(request)
            if request.by == answer.body.by && request.manifest.as_ref().is_some_and(|m| m.as_str() == name) =>
        {
            Some(record.at)
        }
        _ => None,
    });
    Ok(recorded.unwrap_or(date))
}
