//! `remedy approve PLAN-ID`: approves a plan the daemon holds because it would change more
//! accounts than `maxChangesPerReconcile` (`POST /v1/approvals/{id}`). The daemon answers 409 when
//! that plan is not the one it holds (the set of changes differs now, or nothing is held). With
//! `--wait`, waits for the reconcile the approval starts, then as `remedy status --wait` does for
//! the manifests that held the plan.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::client::{block_on, Answer, Client, ClientArgs};
use super::output::ListFormat;
use super::reconcile::Accepted;
use super::status::{self, parse_timeout, WaitEnd, Waited, Wanted};
use crate::model::Event;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The plan id, as `remedy status` shows it (32 hexadecimal digits).
    plan_id: String,
    /// Why it is approved (recorded in the history with the approval).
    #[arg(long)]
    comment: Option<String>,
    /// Wait for the reconcile the approval starts, then until every manifest that held the plan
    /// is Ready; exit 1 if one is Stalled or at the timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits, from the approval (e.g. 30s, 2m).
    #[arg(long, default_value = "2m", value_parser = parse_timeout, requires = "wait")]
    timeout: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: &ApproveArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let plan_id = args.plan_id.trim();
    let body = args.comment.as_ref().map(|comment| serde_json::json!({ "comment": comment }));
    block_on(async {
        // Which manifests hold the plan, read before the approval changes them.
        let holding: Vec<String> = if args.wait {
            status::fetch(&client, None)
                .await?
                .into_iter()
                .filter(|s| s.held_plan_id.as_ref().is_some_and(|id| id.as_str() == plan_id))
                .map(|s| s.name.to_string())
                .collect()
        } else {
            Vec::new()
        };
        let started = Instant::now();
        let answer: Answer<Accepted> = client.post(&["v1", "approvals", plan_id], body).await?;
        writeln!(std::io::stdout(), "plan {plan_id} approved by {}{}", answer.body.by, answer.body.queued_note())?;
        if !args.wait {
            return anyhow::Ok(ExitCode::SUCCESS);
        }
        let by = answer.body.by.as_str();
        let approved_at = status::recorded_at(&client, answer.server_time, |event| {
            matches!(event, Event::Approval(approval) if approval.by == by && approval.plan_id.as_str() == plan_id)
        })
        .await?;
        let mut statuses = Vec::new();
        let mut ends = Vec::new();
        for name in &holding {
            let left = args.timeout.saturating_sub(started.elapsed());
            let waited =
                status::wait(&client, &Wanted { name: Some(name), reconciled_after: Some(approved_at) }, left).await?;
            statuses.extend(waited.statuses);
            ends.push(waited.end);
        }
        status::print(ListFormat::Table, &statuses, false)?;
        let end = ends.into_iter().find(|end| *end != WaitEnd::Ready).unwrap_or(WaitEnd::Ready);
        anyhow::Ok(Waited { statuses, end }.report())
    })?
}
