//! `remedy approve PLAN-ID`: approves a plan the daemon holds because it would change more
//! accounts than `maxChangesPerReconcile` (`POST /v1/approvals/{id}`). The daemon answers 409 when
//! that plan is not the one it holds (the set of changes differs now, or nothing is held).

use std::process::ExitCode;

use anyhow::Result;

use super::client::{block_on, Answer, Client, ClientArgs};
use super::reconcile::Accepted;

#[derive(Debug, clap::Args)]
pub struct ApproveArgs {
    /// The plan id, as `remedy status` shows it (32 hexadecimal digits).
    plan_id: String,
    /// Why it is approved (recorded in the history with the approval).
    #[arg(long)]
    comment: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: &ApproveArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let body = args.comment.as_ref().map(|comment| serde_json::json!({ "comment": comment }));
    let answer: Answer<Accepted> = block_on(client.post(&["v1", "approvals", args.plan_id.trim()], body))??;
    println!("plan {} approved by {}", args.plan_id.trim(), answer.body.by);
    Ok(ExitCode::SUCCESS)
}
