//! `remedy history`: the daemon's hash-chained history (actions, approvals, reconcile requests),
//! filtered and paged through `GET /v1/history`; `--follow` keeps printing new records.
//! `remedy history verify`: checks the chain (`GET /v1/history/verify`).

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use chrono::{DateTime, Utc};
use remedy_policies::Action;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::client::{block_on, Client, ClientArgs, ClientError};
use super::output::{print_structured, Layout, ListFormat, Render, Table};
use super::status::word;
use crate::model::{ActionOutcome, Event, HistoryRecord, ManifestRef, RecordId};

#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct HistoryArgs {
    #[command(subcommand)]
    command: Option<HistoryCommand>,
    #[command(flatten)]
    list: ListArgs,
}

#[derive(Debug, clap::Subcommand)]
enum HistoryCommand {
    /// Check the history's hash chain: exit 0 if it is whole, 1 with where it breaks.
    Verify(VerifyArgs),
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Actions on this account: upn:alice@contoso.com, sam:alice, guid:..., sid:... (a bare name
    /// with an @ is taken as a UPN).
    #[arg(long)]
    identity: Option<String>,
    /// Actions a manifest asked for, and reconcile requests for it.
    #[arg(long)]
    manifest: Option<String>,
    /// Actions of one kind (suspend-user, disable-account, ...).
    #[arg(long, value_parser = parse_kebab::<Action>)]
    action: Option<Action>,
    /// Actions with one outcome (succeeded, failed, skipped, blocked, denied, held, drift-corrected,
    /// restored, not-applied, awaiting-confirmation).
    #[arg(long, value_parser = parse_kebab::<ActionOutcome>)]
    outcome: Option<ActionOutcome>,
    /// At or after: a time (RFC 3339, 2026-11-30T10:00:00Z) or an age (30m, 24h, 7d).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Before: a time (RFC 3339) or an age (30m, 24h, 7d).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// At most N records, oldest first (default: every record that matches).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "follow")]
    limit: Option<u64>,
    /// A table fitted to the width (BY/ERROR whole below each row), a wide table (every column
    /// whole on one line), or the records as the API returns them (with --follow: JSON one record
    /// a line, YAML one document a record).
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    format: ListFormat,
    /// After the records so far, print new ones as they are recorded (read every 2 s) until
    /// interrupted.
    #[arg(short = 'f', long)]
    follow: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: &HistoryArgs) -> Result<ExitCode> {
    match &args.command {
        Some(HistoryCommand::Verify(verify)) => run_verify(verify),
        None => run_list(&args.list),
    }
}

/// Records read per request.
const PAGE: u64 = 500;
/// How often `--follow` asks for new records.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Page {
    records: Vec<HistoryRecord>,
    #[serde(default)]
    next_after: Option<RecordId>,
}

fn run_list(args: &ListArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    let filters = filters(args);
    block_on(async {
        let (records, last) = read(&client, &filters, None, args.limit).await?;
        let mut printer = Printer::new(args.format, args.follow);
        printer.print(&records)?;
        if !args.follow {
            return Ok(ExitCode::SUCCESS);
        }
        let mut cursor = last;
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            let (records, last) = read(&client, &filters, cursor, None).await?;
            printer.print(&records)?;
            cursor = last.or(cursor);
        }
    })?
}

/// The query parameters of the filters (times in RFC 3339, UTC).
fn filters(args: &ListArgs) -> Vec<(&'static str, String)> {
    let mut query = Vec::new();
    if let Some(identity) = &args.identity {
        let identity = if !identity.contains(':') && identity.contains('@') {
            format!("upn:{identity}")
        } else {
            identity.clone()
        };
        query.push(("identity", identity));
    }
    if let Some(manifest) = &args.manifest {
        query.push(("manifest", manifest.clone()));
    }
    if let Some(action) = args.action {
        query.push(("action", action.to_string()));
    }
    if let Some(outcome) = args.outcome {
        query.push(("outcome", word(&outcome)));
    }
    for (name, time) in [("since", args.since), ("until", args.until)] {
        if let Some(time) = time {
            query.push((name, time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)));
        }
    }
    query
}

/// Every matching record after `after` (at most `limit`), page by page; and the id to continue
/// after (the last record read).
async fn read(
    client: &Client,
    filters: &[(&'static str, String)],
    after: Option<RecordId>,
    limit: Option<u64>,
) -> Result<(Vec<HistoryRecord>, Option<RecordId>), ClientError> {
    let mut records: Vec<HistoryRecord> = Vec::new();
    let mut cursor = after;
    loop {
        let remaining = limit.map_or(PAGE, |l| l.saturating_sub(records.len() as u64));
        if remaining == 0 {
            break;
        }
        let mut query = filters.to_vec();
        query.push(("limit", remaining.min(PAGE).to_string()));
        if let Some(after) = cursor {
            query.push(("after", after.to_string()));
        }
        let page: Page = client.get(&["v1", "history"], &query).await?;
        records.extend(page.records);
        match page.next_after {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    let last = records.last().map(|r| r.id);
    Ok((records, last))
}

/// Prints records as they come: the whole answer, or (`--follow`) batch after batch, in the column
/// widths of the first batch.
struct Printer {
    format: ListFormat,
    follow: bool,
    /// The table's layout, once its header is out.
    layout: Option<Layout>,
}

impl Printer {
    fn new(format: ListFormat, follow: bool) -> Printer {
        Printer { format, follow, layout: None }
    }

    fn print(&mut self, records: &[HistoryRecord]) -> Result<()> {
        let mut out = std::io::stdout().lock();
        if let Some(render) = self.format.render() {
            if records.is_empty() && (self.layout.is_some() || !self.follow) {
                if !self.follow {
                    eprintln!("no history record matches");
                }
                return Ok(());
            }
            self.print_table(&mut out, records, &render)?;
            return Ok(());
        }
        match (self.format, self.follow) {
            (ListFormat::Json, true) => {
                for record in records {
                    writeln!(out, "{}", serde_json::to_string(record)?)?;
                }
                out.flush()?;
            }
            (ListFormat::Yaml, true) => {
                for record in records {
                    write!(out, "---\n{}", serde_yaml::to_string(record)?)?;
                }
                out.flush()?;
            }
            (format, _) => {
                drop(out);
                print_structured(format.into(), &records)?;
            }
        }
        Ok(())
    }

    /// The first batch decides the columns' widths (and prints the header); later ones keep them.
    fn print_table(&mut self, out: &mut impl Write, records: &[HistoryRecord], render: &Render) -> io::Result<()> {
        let mut table = table();
        for record in records {
            table.row(row(record));
        }
        match &self.layout {
            Some(layout) => table.write(out, layout, render, false),
            None => {
                let layout = table.layout(render);
                table.write(out, &layout, render, true)?;
                self.layout = Some(layout);
                Ok(())
            }
        }
    }
}

/// Columns that are shortened to fit: the account, the action, before→after and the manifests.
/// BY/ERROR (the reason a record matters) is printed whole below its row.
fn table() -> Table {
    Table::new(vec!["ID", "TIME", "IDENTITY", "ACTION", "OUTCOME", "BEFORE→AFTER", "MANIFEST(S)", "BY/ERROR"])
        .min_widths(&[3, 20, 20, 12, 9, 12, 11])
        .flexible(&[2, 3, 5, 6])
        .detail(7)
}

/// One record as a table row; approvals and reconcile requests say who asked.
fn row(record: &HistoryRecord) -> Vec<String> {
    let id = record.id.to_string();
    let time = record.at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    match &record.event {
        Event::Action(action) => vec![
            id,
            time,
            action.identity.to_string(),
            action.action.to_string(),
            word(&action.outcome),
            format!("{}→{}", action.before, action.after),
            names(&action.manifests),
            action.error.clone().or_else(|| action.note.clone()).unwrap_or_else(|| "-".to_owned()),
        ],
        Event::Approval(approval) => vec![
            id,
            time,
            "-".to_owned(),
            "approve".to_owned(),
            "approved".to_owned(),
            format!("plan {}", approval.plan_id),
            "-".to_owned(),
            // The plan id again: BEFORE→AFTER may be shortened to fit, the detail never is.
            match &approval.comment {
                Some(comment) => format!("by {} of plan {}: {comment}", approval.by, approval.plan_id),
                None => format!("by {} of plan {}", approval.by, approval.plan_id),
            },
        ],
        Event::ReconcileRequest(request) => vec![
            id,
            time,
            "-".to_owned(),
            "reconcile".to_owned(),
            "requested".to_owned(),
            "-".to_owned(),
            request.manifest.as_ref().map_or_else(|| "(all)".to_owned(), ToString::to_string),
            format!("by {}", request.by),
        ],
        Event::Contested(contest) => vec![
            id,
            time,
            contest.identity.to_string(),
            "-".to_owned(),
            "contested".to_owned(),
            "-".to_owned(),
            {
                let names: Vec<&str> = contest.manifests.iter().map(|m| m.as_str()).collect();
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.join(",")
                }
            },
            format!(
                "{} corrections in {} min; the account keeps being changed back{}",
                contest.corrections,
                contest.window_seconds / 60,
                contest
                    .when_changed
                    .map(|at| format!(" (last whenChanged {})", at.format("%Y-%m-%dT%H:%M:%SZ")))
                    .unwrap_or_default()
            ),
        ],
    }
}

fn names(manifests: &[ManifestRef]) -> String {
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    if names.is_empty() {
        "-".to_owned()
    } else {
        names.join(",")
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Verified {
    records: u64,
    head_hash: String,
}

fn run_verify(args: &VerifyArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    // A broken chain is the API's 409 chain-broken: an error with exit code 1.
    let verified: Verified = block_on(client.get(&["v1", "history", "verify"], &[]))??;
    writeln!(io::stdout(), "verified {} records, head {}", verified.records, verified.head_hash)?;
    Ok(ExitCode::SUCCESS)
}

/// A time: RFC 3339, or an age before now (`30m`, `24h`, `7d`).
pub fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(time.with_timezone(&Utc));
    }
    let age = parse_age(text).map_err(|_| {
        format!("{text:?} is neither an RFC 3339 time (2026-11-30T10:00:00Z) nor an age (30m, 24h, 7d)")
    })?;
    let age = chrono::Duration::from_std(age).map_err(|e| e.to_string())?;
    Utc::now().checked_sub_signed(age).ok_or_else(|| format!("{text:?} is too long ago"))
}

/// `500ms`, `30s`, `30m`, `24h` or `7d`.
fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    match text.strip_suffix('d') {
        Some(days) if !days.is_empty() && days.chars().all(|c| c.is_ascii_digit()) => {
            let days: u64 = days.parse().map_err(|_| format!("{text:?} is not a number of days"))?;
            Ok(Duration::from_secs(days.saturating_mul(86_400)))
        }
        _ => remedy_policies::config::duration_text::parse(text),
    }
}

/// A kebab-case enum value as the API spells it (`suspend-user`, `drift-corrected`).
fn parse_kebab<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(text.trim().to_owned()))
        .map_err(|_| format!("{text:?} is not one of the values the history records (see --help)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_ages() {
        let exact = parse_time("2026-11-30T11:00:00+01:00").unwrap();
        assert_eq!(exact.to_rfc3339(), "2026-11-30T10:00:00+00:00");
        let before = Utc::now();
        let day = parse_time("24h").unwrap();
        let week = parse_time("7d").unwrap();
        assert!((before - day).num_seconds() >= 86_399 && (before - day).num_seconds() <= 86_401);
        assert!((before - week).num_days() == 7 || (before - week).num_days() == 6);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("d").is_err());
    }

    #[test]
    fn filters_become_query_parameters() {
        let args = ListArgs {
            identity: Some("alice@contoso.com".into()),
            manifest: Some("inc-1".into()),
            action: Some(Action::SuspendUser),
            outcome: Some(ActionOutcome::DriftCorrected),
            since: DateTime::from_timestamp(0, 0),
            until: None,
            limit: None,
            format: ListFormat::Table,
            follow: false,
            client: ClientArgs { server: String::new(), token_file: None, ca_file: None },
        };
        assert_eq!(
            filters(&args),
            vec![
                ("identity", "upn:alice@contoso.com".to_owned()),
                ("manifest", "inc-1".to_owned()),
                ("action", "suspend-user".to_owned()),
                ("outcome", "drift-corrected".to_owned()),
                ("since", "1970-01-01T00:00:00Z".to_owned()),
            ]
        );
        assert!(parse_kebab::<Action>("nuke-everything").is_err());
    }

    /// A failed action record with this account and error, as the API returns it.
    fn failed(id: u64, upn: &str, error: &str) -> HistoryRecord {
        serde_json::from_value(serde_json::json!({
            "id": id,
            "at": "2026-11-30T10:00:00Z",
            "event": {
                "kind": "action",
                "manifests": [{"name": "inc-4711-alice", "generation": "0".repeat(64)}],
                "reason": "INC-4711",
                "identity": format!("upn:{upn}"),
                "provider": "entra-id",
                "action": "suspend-user",
                "cause": {"kind": "desired"},
                "before": "enabled",
                "after": "disabled",
                "outcome": "failed",
                "error": error,
                "durationMs": 12
            },
            "prevHash": "0".repeat(64),
            "hash": "1".repeat(64)
        }))
        .expect("a history record")
    }

    const ERROR: &str = "Graph 403 Authorization_RequestDenied: Insufficient privileges to complete the \
                         operation; the application needs User.EnableDisableAccount.All (request id \
                         5f1c0e0a-1b2c-4d5e-8f90-a1b2c3d4e5f6)";

    fn printed(printer: &mut Printer, records: &[HistoryRecord], render: &Render) -> String {
        let mut out = Vec::new();
        printer.print_table(&mut out, records, render).expect("printed");
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn the_error_of_a_row_is_whole_at_80_and_120_columns() {
        for width in [80, 120] {
            let render = Render { width, wide: false, colour: false };
            let mut printer = Printer::new(ListFormat::Table, false);
            let text = printed(&mut printer, &[failed(1, "alice.longname@contoso.example.com", ERROR)], &render);
            for line in text.lines() {
                assert!(line.chars().count() <= width, "{width} columns: {line:?} is wider");
            }
            let below: Vec<&str> = text.lines().skip(3).flat_map(str::split_whitespace).collect();
            assert_eq!(below.join(" "), ERROR, "{width} columns:\n{text}");
            assert!(text.lines().nth(2).expect("the row").contains("failed"), "{text}");
        }
        let wide = Render { width: 80, wide: true, colour: false };
        let text = printed(&mut Printer::new(ListFormat::Wide, false), &[failed(1, "a@contoso.com", ERROR)], &wide);
        assert_eq!(text.lines().count(), 2, "one line a record:\n{text}");
        assert!(text.contains(ERROR) && text.contains("upn:a@contoso.com") && text.contains("inc-4711-alice"));
    }

    #[test]
    fn follow_keeps_the_first_batch_column_widths() {
        let render = Render { width: 120, wide: false, colour: false };
        let mut printer = Printer::new(ListFormat::Table, true);
        let first = printed(&mut printer, &[failed(1, "a@contoso.com", "x")], &render);
        let second =
            printed(&mut printer, &[failed(2, "a-much-longer-name.of.someone@contoso.example.com", "x")], &render);
        let column = |line: &str, word: &str| {
            let byte = line.find(word).unwrap_or_else(|| panic!("{word} in {line:?}"));
            line[..byte].chars().count()
        };
        let header = first.lines().next().expect("header");
        let row = second.lines().next().expect("row");
        assert!(!second.contains("IDENTITY"), "no second header:\n{second}");
        for (title, cell) in [("ACTION", "suspend-user"), ("OUTCOME", "failed"), ("MANIFEST(S)", "inc-4711")] {
            assert_eq!(column(header, title), column(row, cell), "{title} moved:\n{first}{second}");
        }
    }
}
