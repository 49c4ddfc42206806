//! `remedy status [NAME]`: the manifests' status as the daemon last left it, like `flux get`; with
//! `--wait`, until they are Ready.
//!
//! Waiting ends at the first of: every manifest waited for is `Ready=True` (exit 0); one is
//! `Stalled=True`, which no waiting will change (exit 1 at once, with its reason and message); the
//! timeout (exit 1, naming what it was still waiting for). A manifest without a status yet is
//! waited for: it may have just been committed.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::client::{block_on, Client, ClientArgs, ClientError};
use super::output::{print_structured, ListFormat, Progress, Render, Table};
use crate::model::{ConditionStatus, ConditionType, Event, HistoryRecord, ManifestStatus};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// One manifest (default: all).
    name: Option<String>,
    /// A table fitted to the width (COLUMNS, else the terminal's, else 120: MESSAGE is shortened), a
    /// wide table (every column whole), or the status as the API returns it (one object for NAME,
    /// else an array).
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    format: ListFormat,
    /// Wait until the manifest (or every manifest) is Ready; exit 1 if one is Stalled or at the timeout.
    #[arg(long)]
    wait: bool,
    /// How long --wait waits (e.g. 30s, 2m, 1h).
    #[arg(long, default_value = "2m", value_parser = parse_timeout, requires = "wait")]
    timeout: Duration,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: &StatusArgs) -> Result<ExitCode> {
    let client = Client::new(&args.client)?;
    block_on(async {
        let name = args.name.as_deref();
        if args.wait {
            let waited = wait(&client, &Wanted { name, reconciled_after: None }, args.timeout).await?;
            print_instance(&client, args.format).await?;
            print(args.format, &waited.statuses, name.is_some())?;
            return Ok(waited.report());
        }
        let statuses = fetch(&client, name).await?;
        print_instance(&client, args.format).await?;
        print(args.format, &statuses, name.is_some())?;
        Ok(ExitCode::SUCCESS)
    })?
}

pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    remedy_policies::config::duration_text::parse(text)
}

/// What `/readyz` says of the instance's part among several (`ha`; absent with one instance).
#[derive(Debug, Deserialize)]
struct Readiness {
    #[serde(default)]
    ha: Option<Instance>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Instance {
    instance_id: String,
    role: String,
    #[serde(default)]
    leader: Option<LeaderShown>,
    #[serde(default)]
    leading_since: Option<DateTime<Utc>>,
    #[serde(default)]
    lease_remaining_seconds: Option<f64>,
    #[serde(default)]
    replicated_through: u64,
    #[serde(default = "yes")]
    caught_up: bool,
    #[serde(default)]
    etcd_error: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeaderShown {
    instance_id: String,
}

/// With several instances, in a table: one line above it saying which part the instance answering
/// plays (from `/readyz`). A `/readyz` that cannot be read is said on stderr: the statuses still show.
async fn print_instance(client: &Client, format: ListFormat) -> Result<()> {
    if format.render().is_none() {
        return Ok(());
    }
    match client.probe::<Readiness>(&["readyz"]).await {
        Ok(Readiness { ha: Some(instance) }) => writeln!(std::io::stdout(), "{}", instance_line(&instance))?,
        Ok(Readiness { ha: None }) => {}
        Err(error) => eprintln!("warning: cannot tell which instance answers (GET /readyz): {error}"),
    }
    Ok(())
}

/// `instance remedy-a: leader since … (lease 6.2 s left)`, `instance remedy-b: standby, leader
/// remedy-a`, `instance remedy-b: etcd unavailable: …`.
fn instance_line(instance: &Instance) -> String {
    let id = &instance.instance_id;
    let mut line = match instance.role.as_str() {
        "leader" => {
            let mut line = format!("instance {id}: leader");
            if let Some(since) = instance.leading_since {
                line.push_str(&format!(" since {}", since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
            }
            if let Some(left) = instance.lease_remaining_seconds {
                line.push_str(&format!(" (lease {left:.1} s left)"));
            }
            line
        }
        "standby" => match &instance.leader {
            Some(leader) => format!("instance {id}: standby, leader {}", leader.instance_id),
            None => format!("instance {id}: standby, no instance leads now"),
        },
        "etcd-unavailable" => format!(
            "instance {id}: etcd unavailable: {}",
            instance.etcd_error.as_deref().unwrap_or("no answer from etcd's quorum")
        ),
        other => format!("instance {id}: {other}"),
    };
    if !instance.caught_up {
        line.push_str(&format!(", catching up with the log (applied through entry {})", instance.replicated_through));
    }
    line
}

#[derive(Debug, Deserialize)]
struct ManifestList {
    manifests: Vec<ManifestStatus>,
}

/// One manifest's status (an error if it has none), or every manifest's.
pub async fn fetch(client: &Client, name: Option<&str>) -> Result<Vec<ManifestStatus>, ClientError> {
    match name {
        Some(name) => Ok(vec![client.get::<ManifestStatus>(&["v1", "manifests", name], &[]).await?]),
        None => Ok(client.get::<ManifestList>(&["v1", "manifests"], &[]).await?.manifests),
    }
}

/// Prints one status (`name_given`: as an object in JSON/YAML, nothing if it has none) or a list
/// (as an array).
pub fn print(format: ListFormat, statuses: &[ManifestStatus], name_given: bool) -> Result<()> {
    if name_given && statuses.is_empty() {
        return Ok(());
    }
    let printed = match (name_given, statuses) {
        (true, [one]) => print_structured(format.into(), one)?,
        _ => print_structured(format.into(), &statuses)?,
    };
    if printed {
        return Ok(());
    }
    if statuses.is_empty() {
        eprintln!("no manifest has a status yet");
        return Ok(());
    }
    let now = Utc::now();
    let mut table = Table::new(vec!["NAME", "READY", "REASON", "MESSAGE", "AGE"]).flexible(&[3]);
    for status in statuses {
        let ready = status.condition(ConditionType::Ready);
        table.row(vec![
            status.name.to_string(),
            ready.map_or_else(|| "Unknown".to_owned(), |c| word(&c.status)),
            ready.map_or_else(|| "-".to_owned(), |c| word(&c.reason)),
            ready.map_or_else(String::new, |c| c.message.clone()),
            status.last_reconcile_time.map_or_else(|| "-".to_owned(), |t| age(now, t)),
        ]);
    }
    table.print(&format.render().unwrap_or_else(|| Render::stdout(false)))?;
    Ok(())
}

/// What to wait for.
#[derive(Debug)]
pub struct Wanted<'a> {
    /// One manifest, or every manifest with a status.
    pub name: Option<&'a str>,
    /// Only a status from a reconcile that ended after this time (the daemon's clock) counts.
    pub reconciled_after: Option<DateTime<Utc>>,
}

/// How waiting ended, and the statuses it ended with.
#[derive(Debug)]
pub struct Waited {
    pub statuses: Vec<ManifestStatus>,
    pub end: WaitEnd,
}

#[derive(Debug, PartialEq, Eq)]
pub enum WaitEnd {
    Ready,
    /// What is stalled and why, one line per manifest.
    Stalled(Vec<String>),
    /// What it was still waiting for.
    TimedOut {
        after: Duration,
        waiting_for: Vec<String>,
    },
}

impl Waited {
    /// Says why waiting failed (stderr), and the exit code.
    pub fn report(&self) -> ExitCode {
        match &self.end {
            WaitEnd::Ready => ExitCode::SUCCESS,
            WaitEnd::Stalled(lines) => {
                for line in lines {
                    eprintln!("error: {line}");
                }
                ExitCode::FAILURE
            }
            WaitEnd::TimedOut { after, waiting_for } => {
                eprintln!(
                    "error: timed out after {} still waiting for {}",
                    remedy_policies::config::duration_text::format(after),
                    waiting_for.join(", ")
                );
                ExitCode::FAILURE
            }
        }
    }
}

/// How often the status is read while waiting.
const POLL: Duration = Duration::from_millis(500);

/// Reads the status until what is wanted is Ready, Stalled, or `timeout` has passed.
pub async fn wait(client: &Client, wanted: &Wanted<'_>, timeout: Duration) -> Result<Waited, ClientError> {
    let started = Instant::now();
    let mut progress = Progress::new();
    loop {
        let statuses = match fetch(client, wanted.name).await {
            Ok(statuses) => statuses,
            Err(error) if error.is_not_found() && wanted.name.is_some() => Vec::new(),
            Err(error) => return Err(error),
        };
        // A Stalled status older than an operator's request (an approval, a reconcile request)
        // is not the answer: the reconcile the request starts has not ended yet.
        let requests = match statuses.iter().filter(|s| is_stalled(s)).filter_map(|s| s.last_reconcile_time).min() {
            Some(oldest) => requests_since(client, oldest).await?,
            None => Vec::new(),
        };
        let mut stalled = Vec::new();
        let mut pending = Vec::new();
        if statuses.is_empty() {
            pending.push(match wanted.name {
                Some(name) => format!("{name} (no status yet)"),
                None => "the first status (no manifest has one yet)".to_owned(),
            });
        }
        for status in &statuses {
            let state = match superseded_by(status, &requests) {
                Some(request) => State::Pending(format!("{request} is not reconciled yet")),
                None => state_of(status, wanted.reconciled_after),
            };
            match state {
                State::Ready => {}
                State::Stalled(why) => stalled.push(format!("{} is stalled: {why}", status.name)),
                State::Pending(why) => pending.push(format!("{} ({why})", status.name)),
            }
        }
        let elapsed = started.elapsed();
        let end = if !stalled.is_empty() {
            Some(WaitEnd::Stalled(stalled))
        } else if pending.is_empty() {
            Some(WaitEnd::Ready)
        } else if elapsed >= timeout {
            Some(WaitEnd::TimedOut { after: timeout, waiting_for: pending.clone() })
        } else {
            None
        };
        if let Some(end) = end {
            progress.clear();
            return Ok(Waited { statuses, end });
        }
        progress.show(&format!("{}s/{}s: waiting for {}", elapsed.as_secs(), timeout.as_secs(), pending.join(", ")));
        tokio::time::sleep(POLL.min(timeout.saturating_sub(elapsed))).await;
    }
}

fn is_stalled(status: &ManifestStatus) -> bool {
    status.condition(ConditionType::Stalled).is_some_and(|c| c.status == ConditionStatus::True)
}

#[derive(Debug, Deserialize)]
struct Page {
    records: Vec<HistoryRecord>,
}

/// When the daemon recorded the request it just answered, by its own clock: the time of the
/// newest history record `is_it` picks out (the daemon records a request between two reconciles,
/// so any reconcile ending later began later). The answer's `Date` (whole seconds) finds it;
/// without one, this machine's clock stands in.
pub async fn recorded_at(
    client: &Client,
    answered_at: Option<DateTime<Utc>>,
    is_it: impl Fn(&Event) -> bool,
) -> Result<DateTime<Utc>, ClientError> {
    let Some(date) = answered_at else {
        return Ok(Utc::now());
    };
    let records = requests_since(client, date - chrono::Duration::seconds(2)).await?;
    Ok(records.iter().rev().find(|record| is_it(&record.event)).map_or(date, |record| record.at))
}

/// The history records from `since` on (the daemon's clock): where operators' requests are.
async fn requests_since(client: &Client, since: DateTime<Utc>) -> Result<Vec<HistoryRecord>, ClientError> {
    let query = [("since", since.to_rfc3339()), ("limit", "1000".to_owned())];
    let page: Page = client.get(&["v1", "history"], &query).await?;
    Ok(page.records)
}

/// An operator's request recorded after `status` was written that the status does not answer yet:
/// the approval of the plan it holds, or a reconcile request for it or for everything.
fn superseded_by(status: &ManifestStatus, records: &[HistoryRecord]) -> Option<String> {
    let written = status.last_reconcile_time?;
    records.iter().filter(|record| record.at > written).find_map(|record| match &record.event {
        Event::Approval(approval) if status.held_plan_id.as_ref() == Some(&approval.plan_id) => {
            Some(format!("the approval of plan {} by {}", approval.plan_id, approval.by))
        }
        Event::ReconcileRequest(request)
            if request.manifest.as_ref().is_none_or(|name| name.as_str() == status.name.as_str()) =>
        {
            Some(format!("the reconcile requested by {}", request.by))
        }
        _ => None,
    })
}

enum State {
    Ready,
    Stalled(String),
    Pending(String),
}

fn state_of(status: &ManifestStatus, reconciled_after: Option<DateTime<Utc>>) -> State {
    if let Some(after) = reconciled_after {
        if status.last_reconcile_time.is_none_or(|t| t <= after) {
            return State::Pending("not reconciled since the request yet".to_owned());
        }
    }
    if let Some(stalled) = status.condition(ConditionType::Stalled).filter(|c| c.status == ConditionStatus::True) {
        return State::Stalled(format!("{}: {}", word(&stalled.reason), stalled.message));
    }
    match status.condition(ConditionType::Ready) {
        Some(ready) if ready.status == ConditionStatus::True => State::Ready,
        Some(ready) => {
            State::Pending(format!("Ready={} {}: {}", word(&ready.status), word(&ready.reason), ready.message))
        }
        None => State::Pending("no conditions yet".to_owned()),
    }
}

/// An enum's name as the API spells it.
pub fn word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_else(|| "?".to_owned())
}

/// How long ago `then` was, in its largest unit: `45s`, `12m`, `5h`, `3d`.
pub fn age(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let seconds = (now - then).num_seconds().max(0);
    match seconds {
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConditionReason;
    use remedy_policies::ManifestName;

    fn record(at: i64, event: Event) -> HistoryRecord {
        HistoryRecord {
            id: crate::model::RecordId(1),
            at: DateTime::from_timestamp(at, 0).unwrap(),
            event,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn a_stalled_status_older_than_an_operators_request_is_not_the_answer() {
        let plan: remedy_policies::plan::PlanId = "0123456789abcdef0123456789abcdef".parse().unwrap();
        let mut held = status(ConditionStatus::False, ConditionStatus::True, ConditionReason::NeedsApproval, 100);
        held.held_plan_id = Some(plan.clone());
        let approval = |at| {
            record(
                at,
                Event::Approval(crate::model::ApprovalEvent { plan_id: plan.clone(), by: "op".into(), comment: None }),
            )
        };
        let request = |at, manifest: Option<&str>| {
            record(
                at,
                Event::ReconcileRequest(crate::model::ReconcileRequestEvent {
                    by: "op".into(),
                    manifest: manifest.map(|m| ManifestName::new(m).unwrap()),
                    comment: None,
                }),
            )
        };
        assert_eq!(
            superseded_by(&held, &[approval(101)]).as_deref(),
            Some("the approval of plan 0123456789abcdef0123456789abcdef by op")
        );
        assert_eq!(superseded_by(&held, &[approval(99)]), None, "an approval the status already answers");
        assert!(superseded_by(&held, &[request(101, None)]).is_some());
        assert!(superseded_by(&held, &[request(101, Some("inc-1"))]).is_some());
        assert_eq!(superseded_by(&held, &[request(101, Some("inc-2"))]), None, "another manifest's request");
        held.held_plan_id = None;
        assert_eq!(superseded_by(&held, &[approval(101)]), None, "the approval of a plan it does not hold");
    }

    fn status(ready: ConditionStatus, stalled: ConditionStatus, reason: ConditionReason, at: i64) -> ManifestStatus {
        let now = DateTime::from_timestamp(at, 0).unwrap();
        let mut status = ManifestStatus::new(ManifestName::new("inc-1").unwrap());
        status.last_reconcile_time = Some(now);
        status.set_condition(ConditionType::Ready, ready, reason, "why", now);
        status.set_condition(ConditionType::Stalled, stalled, reason, "why", now);
        status
    }

    #[test]
    fn ready_stalled_and_stale_statuses() {
        use ConditionStatus::{False, True};
        assert!(matches!(state_of(&status(True, False, ConditionReason::Succeeded, 100), None), State::Ready));
        match state_of(&status(False, True, ConditionReason::NotFound, 100), None) {
            State::Stalled(why) => assert_eq!(why, "NotFound: why"),
            _ => panic!("stalled"),
        }
        let requested = DateTime::from_timestamp(100, 0);
        assert!(matches!(state_of(&status(False, True, ConditionReason::NotFound, 100), requested), State::Pending(_)));
        assert!(matches!(state_of(&status(True, False, ConditionReason::Succeeded, 101), requested), State::Ready));
    }

    #[test]
    fn the_instance_line_says_its_role_and_the_leader() {
        let readyz = |json: &str| -> Instance {
            let readiness: Readiness = serde_json::from_str(json).expect("a /readyz body");
            readiness.ha.expect("ha")
        };
        let leader = readyz(
            r#"{"ready":true,"ha":{"instanceId":"remedy-a","role":"leader","leader":{"instanceId":"remedy-a","since":"2026-12-05T11:00:00Z"},
            "leadingSince":"2026-12-05T11:00:00.5Z","leaseRemainingSeconds":6.24,"leaseTtlSeconds":8,"replicatedThrough":9,"caughtUp":true,"etcdError":null,"terms":1}}"#,
        );
        assert_eq!(instance_line(&leader), "instance remedy-a: leader since 2026-12-05T11:00:00Z (lease 6.2 s left)");
        let standby = readyz(
            r#"{"ha":{"instanceId":"remedy-b","role":"standby","leader":{"instanceId":"remedy-a","since":null},
            "leadingSince":null,"leaseRemainingSeconds":null,"leaseTtlSeconds":8,"replicatedThrough":9,"caughtUp":false,"etcdError":null,"terms":0}}"#,
        );
        assert_eq!(
            instance_line(&standby),
            "instance remedy-b: standby, leader remedy-a, catching up with the log (applied through entry 9)"
        );
        let lost = readyz(
            r#"{"ha":{"instanceId":"remedy-b","role":"etcd-unavailable","leader":null,"replicatedThrough":9,"caughtUp":true,
            "etcdError":"etcd unavailable at http://127.0.0.1:2379: etcdserver: no leader"}}"#,
        );
        assert_eq!(
            instance_line(&lost),
            "instance remedy-b: etcd unavailable: etcd unavailable at http://127.0.0.1:2379: etcdserver: no leader"
        );
        let single: Readiness = serde_json::from_str(r#"{"ready":true,"store":"open"}"#).expect("one instance");
        assert!(single.ha.is_none());
    }

    #[test]
    fn ages_in_their_largest_unit() {
        let now = DateTime::from_timestamp(1_000_000, 0).unwrap();
        let ago = |s| age(now, now - chrono::Duration::seconds(s));
        assert_eq!(
            [ago(-5), ago(59), ago(60), ago(7_199), ago(172_799), ago(172_800)],
            ["0s", "59s", "1m", "1h", "47h", "2d"]
        );
    }
}
