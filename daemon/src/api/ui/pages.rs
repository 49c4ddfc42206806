//! The pages, rendered from what the store and the controller say: pure functions from data to
//! HTML (no I/O here). Every value from outside is escaped by [`Html`].

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use remedy_policies::config::Role;
use remedy_policies::plan::PlanId;
use remedy_policies::Action;
use serde::Serialize;

use super::html::Html;
use super::session::Session;
use crate::api::auth::role_name;
use crate::controller::Progress;
use crate::ha::{HaState, Role as HaRole};
use crate::model::{
    ActionOutcome, ConditionReason, ConditionStatus, ConditionType, Event, HistoryRecord, ManifestStatus,
    ProviderHealth,
};
use crate::notify::SinkStatus;

/// The page a navigation link leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Manifests,
    Approvals,
    History,
    Health,
    None,
}

/// How a state looks: a colour, always with its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Good,
    Info,
    Warn,
    Bad,
    Neutral,
}

impl Tone {
    fn class(self) -> &'static str {
        match self {
            Tone::Good => "badge good",
            Tone::Info => "badge info",
            Tone::Warn => "badge warn",
            Tone::Bad => "badge bad",
            Tone::Neutral => "badge neutral",
        }
    }
}

fn badge(html: &mut Html, tone: Tone, label: &str) {
    html.raw("<span").attr("class", tone.class()).raw(">").text(label).raw("</span>");
}

/// The kebab-case name serde gives a value (`disable-account`, `security-reader`).
pub fn kebab<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

fn time(at: &DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A manifest's state at a glance: the label and colour of its list row.
pub fn summary(status: &ManifestStatus) -> (Tone, &'static str) {
    let is_true = |kind| status.condition(kind).is_some_and(|c| c.status == ConditionStatus::True);
    if is_true(ConditionType::Contested) {
        return (Tone::Bad, "Contested");
    }
    let Some(ready) = status.condition(ConditionType::Ready) else { return (Tone::Neutral, "Unknown") };
    match (ready.status, ready.reason) {
        (ConditionStatus::True, ConditionReason::Released) => (Tone::Neutral, "Released"),
        (ConditionStatus::True, ConditionReason::Suspended) => (Tone::Neutral, "Suspended"),
        (ConditionStatus::True, _) => (Tone::Good, "Ready"),
        (_, ConditionReason::NeedsApproval) => (Tone::Warn, "Held"),
        (_, ConditionReason::ProviderUnavailable) => (Tone::Bad, "Provider unavailable"),
        (_, ConditionReason::Blocked) => (Tone::Warn, "Blocked"),
        (_, ConditionReason::Denied) => (Tone::Bad, "Denied"),
        (_, ConditionReason::Failed) => (Tone::Bad, "Failed"),
        (_, ConditionReason::Invalid) => (Tone::Bad, "Invalid"),
        (_, ConditionReason::NotFound) => (Tone::Bad, "Not found"),
        (_, ConditionReason::Ambiguous) => (Tone::Bad, "Ambiguous"),
        (_, ConditionReason::Conflict) => (Tone::Bad, "Conflict"),
        (_, ConditionReason::AwaitingConfirmation) => (Tone::Info, "Awaiting confirmation"),
        (_, ConditionReason::RepeatedDrift) => (Tone::Bad, "Contested"),
        (_, ConditionReason::Progressing) => (Tone::Info, "Reconciling"),
        (_, ConditionReason::Succeeded | ConditionReason::Released | ConditionReason::Suspended) => {
            (Tone::Info, "Reconciling")
        }
    }
}

fn outcome_tone(outcome: ActionOutcome) -> Tone {
    match outcome {
        ActionOutcome::Succeeded | ActionOutcome::DriftCorrected | ActionOutcome::Restored => Tone::Good,
        ActionOutcome::Failed | ActionOutcome::Denied => Tone::Bad,
        ActionOutcome::Held | ActionOutcome::Blocked | ActionOutcome::Skipped => Tone::Warn,
        ActionOutcome::AwaitingConfirmation => Tone::Info,
        ActionOutcome::NotApplied => Tone::Neutral,
    }
}

/// Every outcome, in the order the history filter offers them.
pub const OUTCOMES: [ActionOutcome; 10] = [
    ActionOutcome::Succeeded,
    ActionOutcome::Failed,
    ActionOutcome::Skipped,
    ActionOutcome::Blocked,
    ActionOutcome::Denied,
    ActionOutcome::Held,
    ActionOutcome::DriftCorrected,
    ActionOutcome::Restored,
    ActionOutcome::NotApplied,
    ActionOutcome::AwaitingConfirmation,
];

/// The page's frame: head, skip link, navigation (when signed in), `<main>`.
pub fn page(title: &str, session: Option<&Session>, nav: Nav, body: impl FnOnce(&mut Html)) -> String {
    let mut html = Html::new();
    html.raw("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">")
        .raw("<title>")
        .text(title)
        .raw(" · remedy</title><link rel=\"stylesheet\" href=\"/ui/static/style.css\">")
        .raw("<link rel=\"icon\" href=\"/ui/static/icon.svg\" type=\"image/svg+xml\">")
        .raw("<script src=\"/ui/static/live.js\" defer></script></head><body>")
        .raw("<a class=\"skip\" href=\"#main\">Skip to content</a><header class=\"top\"><span class=\"brand\">remedy</span>");
    if let Some(session) = session {
        html.raw("<nav aria-label=\"Main\"><ul>");
        for (item, href, label) in [
            (Nav::Manifests, "/ui/", "Manifests"),
            (Nav::Approvals, "/ui/approvals", "Held plans"),
            (Nav::History, "/ui/history", "History"),
            (Nav::Health, "/ui/health", "Health"),
        ] {
            html.raw("<li><a").attr("href", href);
            if item == nav {
                html.raw(" aria-current=\"page\"");
            }
            html.raw(">").text(label).raw("</a></li>");
        }
        html.raw("</ul></nav><form class=\"signout\" method=\"post\" action=\"/ui/sign-out\">");
        csrf_field(&mut html, session);
        html.raw("<span class=\"who\">")
            .text(&session.caller.name)
            .raw(" (")
            .text(&role_name(session.caller.role))
            .raw(")</span> <button type=\"submit\">Sign out</button></form>");
    }
    html.raw("</header><main id=\"main\" tabindex=\"-1\"><h1>").text(title).raw("</h1>");
    body(&mut html);
    html.raw("</main></body></html>\n");
    html.into_string()
}

fn csrf_field(html: &mut Html, session: &Session) {
    html.raw("<input type=\"hidden\" name=\"csrf\"").attr("value", &session.csrf).raw(">");
}

/// A message box (`role="status"` or `role="alert"`).
fn notice(html: &mut Html, tone: Tone, text: &str) {
    let (class, role) = match tone {
        Tone::Bad => ("notice bad", "alert"),
        Tone::Warn => ("notice warn", "status"),
        Tone::Good => ("notice good", "status"),
        Tone::Info | Tone::Neutral => ("notice info", "status"),
    };
    html.raw("<p").attr("class", class).attr("role", role).raw(">").text(text).raw("</p>");
}

/// The sign-in page; `problem` is why the last attempt failed.
pub fn sign_in(problem: Option<&str>) -> String {
    page("Sign in", None, Nav::None, |html| {
        if let Some(problem) = problem {
            notice(html, Tone::Bad, problem);
        }
        html.raw(
            "<p>Paste an API token from <code>api.tokens</code> once: you get a session for this browser \
             that lasts 8 hours or until you sign out. The token is not kept in the browser.</p>\
             <form class=\"signin\" method=\"post\" action=\"/ui/sign-in\">\
             <label for=\"token\">API token</label>\
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required autofocus>\
             <button type=\"submit\">Sign in</button></form>",
        );
    })
}

/// An error page's body: what went wrong and where to go.
pub fn error_page(title: &str, session: Option<&Session>, message: &str) -> String {
    page(title, session, Nav::None, |html| {
        notice(html, Tone::Bad, message);
        html.raw("<p><a href=\"/ui/\">Back to the manifests</a></p>");
    })
}

fn table_start(html: &mut Html, caption: &str, headers: &[&'static str]) {
    html.raw("<div class=\"scroll\" tabindex=\"0\" role=\"region\"")
        .attr("aria-label", caption)
        .raw("><table><caption>");
    html.text(caption).raw("</caption><thead><tr>");
    for header in headers {
        html.raw("<th scope=\"col\">").raw(header).raw("</th>");
    }
    html.raw("</tr></thead><tbody>");
}

fn table_end(html: &mut Html) {
    html.raw("</tbody></table></div>");
}

/// The manifests list.
pub fn manifests(session: &Session, statuses: &[ManifestStatus], progress: &Progress) -> String {
    page("Manifests", Some(session), Nav::Manifests, |html| {
        if let Some(error) = &progress.load_error {
            notice(
                html,
                Tone::Bad,
                &format!("The latest load of the manifests failed (the last good set runs): {error}"),
            );
        }
        if let Some(plan) = &progress.held_plan {
            html.raw(
                "<p class=\"notice warn\" role=\"status\">A plan is held for approval: <a href=\"/ui/approvals\">plan ",
            )
            .text(&plan.to_string())
            .raw("</a>.</p>");
        }
        if statuses.is_empty() {
            html.raw("<p>No manifest has a status yet.</p>");
            return;
        }
        let counts = statuses.iter().fold(BTreeMap::<&str, usize>::new(), |mut acc, s| {
            *acc.entry(summary(s).1).or_default() += 1;
            acc
        });
        html.raw("<p class=\"counts\">");
        for (label, count) in &counts {
            html.show(count).raw(" ").text(label).raw(" · ");
        }
        html.show(statuses.len()).raw(" in all</p>");
        table_start(html, "Every manifest's state", &["Manifest", "State", "Why", "Accounts", "Last reconcile"]);
        for status in statuses {
            let (tone, label) = summary(status);
            let name = status.name.to_string();
            html.raw("<tr><td><a")
                .attr("href", &format!("/ui/manifests/{name}"))
                .raw(">")
                .text(&name)
                .raw("</a></td><td>");
            badge(html, tone, label);
            let why = status.condition(ConditionType::Ready).map(|c| c.message.as_str()).unwrap_or("");
            html.raw("</td>").td(why).td(&status.identities.len().to_string());
            html.td(&status.last_reconcile_time.as_ref().map(time).unwrap_or_else(|| "never".into())).raw("</tr>");
        }
        table_end(html);
    })
}

/// One manifest: conditions, accounts, providers, what was done and the last errors.
pub fn manifest(
    session: &Session,
    status: &ManifestStatus,
    done: &[HistoryRecord],
    errors: &[HistoryRecord],
) -> String {
    let title = format!("Manifest {}", status.name);
    page(&title, Some(session), Nav::Manifests, |html| {
        let (tone, label) = summary(status);
        html.raw("<p class=\"lead\">");
        badge(html, tone, label);
        html.raw(" Generation <code>")
            .text(&status.observed_generation.as_ref().map(|g| g.to_string()).unwrap_or_else(|| "none yet".into()))
            .raw("</code>, last reconciled ")
            .text(&status.last_reconcile_time.as_ref().map(time).unwrap_or_else(|| "never".into()))
            .raw(".</p>");
        if let Some(plan) = &status.held_plan_id {
            html.raw("<p class=\"notice warn\" role=\"status\">Held for approval: <a href=\"/ui/approvals\">plan ")
                .text(&plan.to_string())
                .raw("</a>.</p>");
        }
        table_start(html, "Conditions", &["Type", "Status", "Reason", "Message", "Since"]);
        for condition in &status.conditions {
            html.raw("<tr>").td(&format!("{:?}", condition.kind)).td(&format!("{:?}", condition.status));
            html.td(&format!("{:?}", condition.reason))
                .td(&condition.message)
                .td(&time(&condition.last_transition_time));
            html.raw("</tr>");
        }
        table_end(html);

        table_start(
            html,
            "Accounts, as the directories showed them",
            &["Account", "State", "Active Directory", "Entra ID", "Notes"],
        );
        for identity in &status.identities {
            html.raw("<tr>").td(&identity.identity.to_string()).raw("<td>");
            let state = kebab(&identity.status);
            let tone = match state.as_str() {
                "converged" => Tone::Good,
                "pending" => Tone::Info,
                "held" | "blocked" => Tone::Warn,
                "suspended" | "released" => Tone::Neutral,
                _ => Tone::Bad,
            };
            badge(html, tone, &state);
            html.raw("</td><td>");
            match (&identity.resolved.ad_dn, &identity.resolved.ad_object_guid) {
                (None, None) => {
                    html.text("not resolved");
                }
                (dn, guid) => {
                    html.text(dn.as_deref().unwrap_or(""));
                    if let Some(guid) = guid {
                        html.raw("<br><small>objectGUID ").show(guid).raw("</small>");
                    }
                }
            }
            html.raw("</td>").td(identity.resolved.entra_id.as_deref().unwrap_or("not resolved"));
            html.td(&identity.notes.join("; ")).raw("</tr>");
        }
        table_end(html);

        if !status.providers.is_empty() {
            table_start(html, "Providers", &["Provider", "Health", "Message"]);
            for provider in &status.providers {
                html.raw("<tr>").td(&provider.provider.to_string()).raw("<td>");
                provider_badge(html, provider.health);
                html.raw("</td>").td(provider.message.as_deref().unwrap_or("")).raw("</tr>");
            }
            table_end(html);
        }

        html.raw("<h2>Last errors</h2>");
        if errors.is_empty() {
            html.raw("<p>No failed action.</p>");
        } else {
            records_table(html, "The latest failed actions, newest first", errors, Some(&status.name.to_string()));
        }
        html.raw("<h2>What was done</h2>");
        if done.is_empty() {
            html.raw("<p>Nothing recorded for this manifest yet.</p>");
        } else {
            records_table(
                html,
                "The latest records of this manifest, newest first",
                done,
                Some(&status.name.to_string()),
            );
        }
        html.raw("<p><a")
            .attr("href", &format!("/ui/history?manifest={}", status.name))
            .raw(">All of its history</a></p>");
    })
}

fn provider_badge(html: &mut Html, health: ProviderHealth) {
    let tone = match health {
        ProviderHealth::Available => Tone::Good,
        ProviderHealth::Unavailable => Tone::Bad,
        ProviderHealth::NotConfigured => Tone::Neutral,
    };
    badge(html, tone, &kebab(&health));
}

/// A history record as a table row's cells: what the history page and its live feed show.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub id: u64,
    pub at: String,
    pub event: String,
    pub manifests: String,
    pub account: String,
    pub action: String,
    pub outcome: String,
    /// `good`, `info`, `warn`, `bad` or `neutral`: the outcome's colour.
    pub tone: &'static str,
    pub detail: String,
    /// The commit of the manifest directory (of the manifest the page is about, or the first).
    pub commit: String,
}

pub fn row(record: &HistoryRecord, manifest: Option<&str>) -> Row {
    let mut row = Row {
        id: record.id.0,
        at: time(&record.at),
        event: kebab(&event_kind(&record.event)),
        manifests: String::new(),
        account: String::new(),
        action: String::new(),
        outcome: String::new(),
        tone: "neutral",
        detail: String::new(),
        commit: String::new(),
    };
    match &record.event {
        Event::Action(action) => {
            row.manifests = action.manifests.iter().map(|m| m.name.to_string()).collect::<Vec<_>>().join(", ");
            let source =
                action.manifests.iter().find(|m| Some(m.name.as_str()) == manifest).or(action.manifests.first());
            row.commit = source.and_then(|m| m.commit.clone()).unwrap_or_default();
            row.account = format!("{} ({})", action.identity, action.provider);
            row.action = format!("{} {} → {}", kebab(&action.action), action.before, action.after);
            row.outcome = kebab(&action.outcome);
            row.tone = tone_name(outcome_tone(action.outcome));
            let mut detail = vec![action.reason.clone()];
            detail.extend(action.error.iter().cloned());
            detail.extend(action.note.iter().cloned());
            row.detail = detail.into_iter().filter(|d| !d.is_empty()).collect::<Vec<_>>().join(" — ");
        }
        Event::Approval(approval) => {
            row.detail = format!("plan {} approved by {}", approval.plan_id, approval.by);
            if let Some(comment) = &approval.comment {
                row.detail.push_str(&format!(": {comment}"));
            }
        }
        Event::ReconcileRequest(request) => {
            row.manifests = request.manifest.as_ref().map(|m| m.to_string()).unwrap_or_else(|| "all".into());
            row.detail = format!("reconcile asked by {}", request.by);
            if let Some(comment) = &request.comment {
                row.detail.push_str(&format!(": {comment}"));
            }
        }
        Event::Contested(contest) => {
            row.manifests = contest.manifests.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ");
            row.account = contest.identity.to_string();
            row.tone = "bad";
            row.outcome = "contested".into();
            row.detail = format!("{} corrections within {} s", contest.corrections, contest.window_seconds);
        }
    }
    row
}

#[derive(Serialize)]
#[serde(rename_all = "kebab-case")]
enum EventKind {
    Action,
    Approval,
    ReconcileRequest,
    Contested,
}

fn event_kind(event: &Event) -> EventKind {
    match event {
        Event::Action(_) => EventKind::Action,
        Event::Approval(_) => EventKind::Approval,
        Event::ReconcileRequest(_) => EventKind::ReconcileRequest,
        Event::Contested(_) => EventKind::Contested,
    }
}

fn tone_name(tone: Tone) -> &'static str {
    match tone {
        Tone::Good => "good",
        Tone::Info => "info",
        Tone::Warn => "warn",
        Tone::Bad => "bad",
        Tone::Neutral => "neutral",
    }
}

const RECORD_HEADERS: [&str; 8] = ["#", "When", "Event", "Manifests", "Account", "Action", "Outcome", "Detail"];

fn records_table(html: &mut Html, caption: &str, records: &[HistoryRecord], manifest: Option<&str>) {
    let mut headers = RECORD_HEADERS.to_vec();
    headers.push("Commit");
    table_start(html, caption, &headers);
    for record in records {
        row_html(html, &row(record, manifest));
    }
    table_end(html);
}

fn row_html(html: &mut Html, row: &Row) {
    html.raw("<tr><td class=\"nowrap\">").show(row.id).raw("</td><td class=\"nowrap\">").text(&row.at);
    html.raw("</td><td class=\"nowrap\">").text(&row.event).raw("</td>").td(&row.manifests).td(&row.account);
    html.td(&row.action).raw("<td>");
    if !row.outcome.is_empty() {
        let tone = match row.tone {
            "good" => Tone::Good,
            "info" => Tone::Info,
            "warn" => Tone::Warn,
            "bad" => Tone::Bad,
            _ => Tone::Neutral,
        };
        badge(html, tone, &row.outcome);
    }
    html.raw("</td>").td(&row.detail).raw("<td class=\"nowrap\"><code>");
    html.text(&row.commit.chars().take(12).collect::<String>());
    html.raw("</code></td></tr>");
}

/// The history filters as the form holds them.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    pub manifest: String,
    pub identity: String,
    pub outcome: String,
    pub action: String,
}

impl Filters {
    /// The query string of these filters (`manifest=...&...`), for the live feed.
    pub fn query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = Vec::new();
        for (name, value) in [
            ("manifest", &self.manifest),
            ("identity", &self.identity),
            ("outcome", &self.outcome),
            ("action", &self.action),
        ] {
            if !value.is_empty() {
                pairs.push((name, value.clone()));
            }
        }
        pairs.iter().map(|(n, v)| format!("{n}={}", percent(v))).collect::<Vec<_>>().join("&")
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn percent(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The history page: filters, the newest records, live follow.
pub fn history(session: &Session, filters: &Filters, problem: Option<&str>, records: &[HistoryRecord]) -> String {
    page("History", Some(session), Nav::History, |html| {
        html.raw("<form class=\"filters\" method=\"get\" action=\"/ui/history\">");
        html.raw("<div><label for=\"f-manifest\">Manifest</label><input id=\"f-manifest\" name=\"manifest\"")
            .attr("value", &filters.manifest)
            .raw("></div><div><label for=\"f-identity\">Account</label><input id=\"f-identity\" name=\"identity\" placeholder=\"sam:alice\"")
            .attr("value", &filters.identity)
            .raw("></div><div><label for=\"f-outcome\">Outcome</label><select id=\"f-outcome\" name=\"outcome\"><option value=\"\">any</option>");
        for outcome in OUTCOMES {
            option(html, &kebab(&outcome), &filters.outcome);
        }
        html.raw("</select></div><div><label for=\"f-action\">Action</label><select id=\"f-action\" name=\"action\"><option value=\"\">any</option>");
        for action in Action::ALL {
            option(html, &kebab(&action), &filters.action);
        }
        html.raw("</select></div><div class=\"buttons\"><button type=\"submit\">Filter</button> <a href=\"/ui/history\">Clear</a></div></form>");
        if let Some(problem) = problem {
            notice(html, Tone::Bad, problem);
            return;
        }
        let newest = records.first().map_or(0, |r| r.id.0);
        html.raw("<p class=\"live\"><label><input type=\"checkbox\" id=\"follow\" checked> Follow live (new records appear at the top)</label> <span id=\"live-state\" role=\"status\"></span></p>");
        let feed = format!("/ui/history/feed?{}", filters.query());
        html.raw(
            "<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"History records\"><table id=\"history\"",
        )
        .attr("data-feed", &feed)
        .attr("data-after", &newest.to_string())
        .raw("><caption>The newest records, newest first</caption><thead><tr>");
        for header in RECORD_HEADERS {
            html.raw("<th scope=\"col\">").raw(header).raw("</th>");
        }
        html.raw("<th scope=\"col\">Commit</th></tr></thead><tbody>");
        for record in records {
            row_html(html, &row(record, None));
        }
        html.raw("</tbody></table></div>");
        if records.is_empty() {
            html.raw("<p id=\"empty\">No record matches.</p>");
        }
    })
}

fn option(html: &mut Html, value: &str, selected: &str) {
    html.raw("<option").attr("value", value);
    if value == selected {
        html.raw(" selected");
    }
    html.raw(">").text(value).raw("</option>");
}

/// A plan held for approval, with what it holds.
#[derive(Debug, Clone)]
pub struct HeldPlan {
    pub plan_id: PlanId,
    /// Whether it is the plan the controller holds now (the one an approval applies to).
    pub current: bool,
    pub manifests: Vec<ManifestStatus>,
    /// The held actions recorded for it, newest first.
    pub held: Vec<HistoryRecord>,
}

/// The held plans, each with an Approve button for those whose role may act.
/// What the approvals page confirms after an Approve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Recorded by this instance (the only one, or the leader).
    Recorded(String),
    /// Queued on this standby for the leader (`None`: no instance leads now).
    Queued { plan: String, leader: Option<String> },
}

pub fn approvals(session: &Session, plans: &[HeldPlan], done: Option<&Approval>) -> String {
    page("Held plans", Some(session), Nav::Approvals, |html| {
        match done {
            Some(Approval::Recorded(plan)) => notice(
                html,
                Tone::Good,
                &format!("Your approval of plan {plan} is recorded: the next reconcile applies it."),
            ),
            Some(Approval::Queued { plan, leader: Some(leader) }) => notice(
                html,
                Tone::Good,
                &format!(
                    "Your approval of plan {plan} is queued for the leader {leader}: it records the approval and its \
                     next reconcile applies the plan."
                ),
            ),
            Some(Approval::Queued { plan, leader: None }) => notice(
                html,
                Tone::Warn,
                &format!(
                    "Your approval of plan {plan} is queued for the leader, but no instance leads now: the next \
                     leader records it."
                ),
            ),
            None => {}
        }
        html.raw(
            "<p>remedy holds a plan that would make more new changes at once than \
             <code>guardrails.maxChangesPerReconcile</code> allows, until someone approves it.</p>",
        );
        if plans.is_empty() {
            html.raw("<p>No plan is held.</p>");
            return;
        }
        let may_act = session.caller.role.may_act();
        for plan in plans {
            let id = plan.plan_id.to_string();
            html.raw("<section class=\"plan\"").attr("aria-labelledby", &format!("plan-{id}")).raw("><h2");
            html.attr("id", &format!("plan-{id}")).raw(">Plan <code>").text(&id).raw("</code></h2>");
            html.raw("<p>Manifests: ");
            for (index, status) in plan.manifests.iter().enumerate() {
                if index > 0 {
                    html.raw(", ");
                }
                let name = status.name.to_string();
                html.raw("<a").attr("href", &format!("/ui/manifests/{name}")).raw(">").text(&name).raw("</a>");
            }
            html.raw("</p>");
            if !plan.held.is_empty() {
                records_table(html, "Actions held in this plan", &plan.held, None);
            }
            if !plan.current {
                html.raw("<p>This plan is not the one held now (a newer pass replaced it).</p>");
            } else if may_act {
                html.raw("<form class=\"approve\" method=\"post\"")
                    .attr("action", &format!("/ui/approvals/{id}"))
                    .raw(">");
                csrf_field(html, session);
                html.raw("<label")
                    .attr("for", &format!("comment-{id}"))
                    .raw(">Comment (recorded with the approval)</label>");
                html.raw("<input name=\"comment\" maxlength=\"500\"").attr("id", &format!("comment-{id}")).raw(">");
                html.raw("<button type=\"submit\" class=\"primary\">Approve plan ")
                    .text(&id[..8])
                    .raw("…</button></form>");
            } else {
                html.raw("<p class=\"notice info\">Your role, ")
                    .text(&role_name(session.caller.role))
                    .raw(", may read but not approve: a security operator or administrator approves.</p>");
            }
            html.raw("</section>");
        }
    })
}

/// What the health page shows about the history chain.
#[derive(Debug, Clone)]
pub enum Chain {
    Verified { records: u64, head_hash: String },
    Broken { at_id: u64, message: String },
    Unreadable(String),
}

/// Provider health, readiness, the last pass and the history chain.
pub fn health(
    session: &Session,
    progress: &Progress,
    ha: Option<&HaState>,
    statuses: &[ManifestStatus],
    chain: &Chain,
    sinks: &BTreeMap<String, SinkStatus>,
    role: Role,
) -> String {
    page("Health", Some(session), Nav::Health, |html| {
        html.raw("<p class=\"lead\">");
        if crate::api::ready(progress, ha) {
            badge(html, Tone::Good, "Ready");
        } else {
            badge(html, Tone::Bad, "Not ready");
        }
        html.raw(" as <code>/readyz</code> says.</p>");
        if let Some(ha) = ha {
            instances(html, ha);
        }
        table_start(html, "Providers", &["Provider", "Health", "Why"]);
        let mut seen = std::collections::BTreeMap::new();
        for status in statuses {
            for provider in &status.providers {
                let entry = seen.entry(provider.provider.to_string()).or_insert((provider.health, String::new()));
                if provider.health == ProviderHealth::Unavailable {
                    *entry = (ProviderHealth::Unavailable, provider.message.clone().unwrap_or_default());
                }
            }
        }
        for (name, why) in &progress.unavailable_providers {
            seen.insert(name.clone(), (ProviderHealth::Unavailable, why.clone()));
        }
        if seen.is_empty() {
            html.raw("<tr><td colspan=\"3\">No provider asked yet.</td></tr>");
        }
        for (name, (health, why)) in &seen {
            html.raw("<tr>").td(name).raw("<td>");
            provider_badge(html, *health);
            html.raw("</td>").td(why).raw("</tr>");
        }
        table_end(html);

        if !sinks.is_empty() {
            table_start(
                html,
                "Notifications",
                &["Sink", "Kind", "Delivery", "Pending", "Delivered", "Failed attempts", "Expired"],
            );
            for (name, sink) in sinks {
                html.raw("<tr>").td(name).td(&sink.kind).raw("<td>");
                match &sink.last_error {
                    None => badge(html, Tone::Good, "delivering"),
                    Some(error) => {
                        badge(html, Tone::Bad, "retrying");
                        html.raw(" ").text(error);
                    }
                }
                html.raw("</td>")
                    .td(&sink.pending.to_string())
                    .td(&sink.delivered.to_string())
                    .td(&sink.failed_attempts.to_string())
                    .td(&sink.expired.to_string())
                    .raw("</tr>");
            }
            table_end(html);
        }

        html.raw("<h2>History chain</h2>");
        match chain {
            Chain::Verified { records, head_hash } => {
                html.raw("<p>");
                badge(html, Tone::Good, "Verified");
                html.raw(" ")
                    .show(records)
                    .raw(" records, every hash and link checked; head <code>")
                    .text(head_hash)
                    .raw("</code>.</p>");
            }
            Chain::Broken { at_id, message } => {
                html.raw("<p>");
                badge(html, Tone::Bad, "Broken");
                html.raw(" at record ").show(at_id).raw(": ").text(message).raw("</p>");
            }
            Chain::Unreadable(message) => {
                html.raw("<p>");
                badge(html, Tone::Bad, "Not checked");
                html.raw(" ").text(message).raw("</p>");
            }
        }

        html.raw("<h2>Controller</h2><dl class=\"facts\">");
        let fact = |html: &mut Html, term: &'static str, value: &str| {
            html.raw("<dt>").raw(term).raw("</dt><dd>").text(value).raw("</dd>");
        };
        fact(html, "Manifests loaded", if progress.loaded { "yes" } else { "no" });
        if let Some(error) = &progress.load_error {
            fact(html, "Load error", error);
        }
        for rejection in &progress.unattributed_rejections {
            fact(html, "Rejected document", rejection);
        }
        fact(html, "Passes", &progress.passes.to_string());
        if let Some(pass) = &progress.last_pass {
            fact(
                html,
                "Last pass",
                &format!(
                    "{} ({:?}), {} ms: {} sent, {} failed, {}",
                    time(&pass.started),
                    pass.trigger,
                    pass.duration_ms,
                    pass.actions_sent,
                    pass.actions_failed,
                    if pass.converged { "converged" } else { "not converged" }
                ),
            );
        }
        fact(html, "Accounts waiting for a retry", &progress.queue_depth.to_string());
        fact(html, "Held plan", &progress.held_plan.as_ref().map(|p| p.to_string()).unwrap_or_else(|| "none".into()));
        fact(html, "Store", progress.store_error.as_deref().unwrap_or("works"));
        if let Some(path) = &progress.store_moved_aside {
            fact(html, "Corrupt store moved aside to", &path.display().to_string());
        }
        fact(html, "Your role", &role_name(role));
        html.raw("</dl>");
    })
}

/// This instance's part among several: its role as a word and a colour, then the facts.
fn instances(html: &mut Html, ha: &HaState) {
    html.raw("<h2>Instances</h2><p>");
    match ha.role {
        HaRole::Leader => {
            badge(html, Tone::Good, "Leader");
            html.raw(" This instance, <code>").text(&ha.instance_id).raw("</code>, leads");
            if let Some(since) = &ha.leading_since {
                html.raw(" since ").text(&time(since));
            }
            if let Some(left) = ha.lease_remaining_seconds {
                html.raw(" (lease ").text(&format!("{left:.1} s of {} s left", ha.lease_ttl_seconds)).raw(")");
            }
            html.raw(": it acts.</p>");
        }
        HaRole::Standby => {
            badge(html, Tone::Info, "Standby");
            html.raw(" This instance, <code>").text(&ha.instance_id).raw("</code>, stands by: ");
            match &ha.leader {
                Some(leader) => {
                    html.raw("the leader is <code>").text(&leader.instance_id).raw("</code>");
                    if let Some(since) = &leader.since {
                        html.raw(" (since ").text(&time(since)).raw(")");
                    }
                    html.raw(". Reconcile requests and approvals made here are queued for it.</p>");
                }
                None => {
                    html.raw("no instance leads now. Requests made here wait in etcd for the next leader.</p>");
                }
            }
        }
        HaRole::EtcdUnavailable => {
            badge(html, Tone::Bad, "etcd unavailable");
            html.raw(" This instance, <code>")
                .text(&ha.instance_id)
                .raw("</code>, cannot reach etcd's quorum: it does not act, and requests cannot be queued.</p>");
        }
    }
    html.raw("<dl class=\"facts\">");
    html.raw("<dt>Replicated through</dt><dd>")
        .text(&format!(
            "log entry {}{}",
            ha.replicated_through,
            if ha.caught_up { " (caught up)" } else { " (catching up)" }
        ))
        .raw("</dd>");
    html.raw("<dt>Terms led</dt><dd>").show(ha.terms).raw("</dd>");
    if let Some(error) = &ha.etcd_error {
        html.raw("<dt>etcd</dt><dd>").text(error).raw("</dd>");
    }
    html.raw("</dl>");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader's session, as the pages get it.
    fn reader_session() -> Session {
        use super::super::session::Sessions;
        let sessions = Sessions::new(std::time::Duration::from_secs(60));
        let caller = crate::api::Caller { name: "reader".into(), role: Role::SecurityReader };
        let new = sessions.start(caller).expect("a session");
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, format!("remedy_session={}", new.id).parse().expect("header"));
        sessions.find(&headers).expect("found")
    }

    #[test]
    fn the_health_page_shows_each_notification_sink_and_why_it_retries() {
        let session = reader_session();
        let sink = |last_error: Option<&str>| SinkStatus {
            kind: "webhook".into(),
            pending: 3,
            delivered: 7,
            failed_attempts: 2,
            expired: 0,
            last_error: last_error.map(str::to_owned),
        };
        let sinks = BTreeMap::from([
            ("soc-<chat>".to_owned(), sink(Some("the receiver answered 503"))),
            ("siem".to_owned(), sink(None)),
        ]);
        let chain = Chain::Verified { records: 1, head_hash: "ab".into() };
        let page = health(&session, &Progress::default(), None, &[], &chain, &sinks, Role::SecurityReader);
        assert!(page.contains("<h2>Notifications</h2>") || page.contains(">Notifications<"), "{page}");
        assert!(page.contains("soc-&lt;chat&gt;"), "the sink's name escaped: {page}");
        assert!(page.contains("retrying") && page.contains("the receiver answered 503"), "{page}");
        assert!(page.contains("delivering"), "{page}");
        let without = health(&session, &Progress::default(), None, &[], &chain, &BTreeMap::new(), Role::SecurityReader);
        assert!(!without.contains("Notifications"), "no table without sinks");
    }

    #[test]
    fn the_health_page_says_this_instances_role_in_words_and_colour() {
        use crate::ha::LeaderView;
        let session = reader_session();
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-05T11:00:00Z").expect("time").to_utc();
        let leader = LeaderView { instance_id: "remedy-a".into(), since: Some(since) };
        let ha = |role, etcd_error: Option<&str>| HaState {
            instance_id: "remedy-<b>".into(),
            role,
            leader: Some(leader.clone()),
            leading_since: (role == HaRole::Leader).then_some(since),
            lease_remaining_seconds: (role == HaRole::Leader).then_some(6.24),
            lease_ttl_seconds: 8,
            replicated_through: 1234,
            caught_up: true,
            etcd_error: etcd_error.map(str::to_owned),
            terms: 2,
        };
        let chain = Chain::Verified { records: 1, head_hash: "ab".into() };
        let render = |state: &HaState, progress: &Progress| {
            health(&session, progress, Some(state), &[], &chain, &BTreeMap::new(), Role::SecurityReader)
        };
        let loaded = Progress { loaded: true, ..Progress::default() };

        let page = render(&ha(HaRole::Leader, None), &loaded);
        assert!(page.contains(r#"<span class="badge good">Leader</span>"#), "{page}");
        assert!(page.contains("leads since 2026-12-05T11:00:00Z (lease 6.2 s of 8 s left)"), "{page}");
        assert!(page.contains("remedy-&lt;b&gt;"), "the instance id escaped: {page}");
        assert!(page.contains(r#"<span class="badge good">Ready</span>"#), "{page}");

        let page = render(&ha(HaRole::Standby, None), &Progress::default());
        assert!(page.contains(r#"<span class="badge info">Standby</span>"#), "{page}");
        assert!(page.contains("the leader is <code>remedy-a</code> (since 2026-12-05T11:00:00Z)"), "{page}");
        assert!(page.contains(r#"<span class="badge good">Ready</span>"#), "a caught-up standby is ready: {page}");
        assert!(page.contains("log entry 1234 (caught up)"), "{page}");

        let page = render(&ha(HaRole::EtcdUnavailable, Some("etcd: no leader <x>")), &loaded);
        assert!(page.contains(r#"<span class="badge bad">etcd unavailable</span>"#), "{page}");
        assert!(page.contains("etcd: no leader &lt;x&gt;"), "{page}");
        assert!(page.contains(r#"<span class="badge bad">Not ready</span>"#), "{page}");

        let single = health(&session, &loaded, None, &[], &chain, &BTreeMap::new(), Role::SecurityReader);
        assert!(!single.contains("Instances"), "nothing about instances with one: {single}");
    }

    #[test]
    fn filters_are_percent_encoded_in_the_feed_query() {
        let filters = Filters { identity: "upn:a&b=c@x.test".into(), outcome: "held".into(), ..Filters::default() };
        assert_eq!(filters.query(), "identity=upn%3Aa%26b%3Dc%40x.test&outcome=held");
    }

    #[test]
    fn a_manifest_state_reads_at_a_glance_from_its_conditions() {
        use remedy_policies::ManifestName;
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-05T08:00:00Z").expect("time").to_utc();
        let status = |conditions: &[(ConditionType, ConditionStatus, ConditionReason)]| {
            let mut status = ManifestStatus::new(ManifestName::new("inc-1").expect("name"));
            for (kind, state, reason) in conditions {
                status.set_condition(*kind, *state, *reason, "", now);
            }
            status
        };
        use ConditionReason as R;
        use ConditionStatus as S;
        use ConditionType as T;
        let cases = [
            (vec![], (Tone::Neutral, "Unknown")),
            (vec![(T::Ready, S::True, R::Succeeded)], (Tone::Good, "Ready")),
            (
                vec![(T::Ready, S::False, R::NeedsApproval), (T::Stalled, S::True, R::NeedsApproval)],
                (Tone::Warn, "Held"),
            ),
            (vec![(T::Ready, S::False, R::ProviderUnavailable)], (Tone::Bad, "Provider unavailable")),
            (vec![(T::Ready, S::Unknown, R::Progressing)], (Tone::Info, "Reconciling")),
            (
                vec![(T::Ready, S::True, R::Succeeded), (T::Contested, S::True, R::RepeatedDrift)],
                (Tone::Bad, "Contested"),
            ),
            (vec![(T::Ready, S::True, R::Released)], (Tone::Neutral, "Released")),
        ];
        for (conditions, expected) in cases {
            assert_eq!(summary(&status(&conditions)), expected, "{conditions:?}");
        }
    }

    #[test]
    fn every_outcome_is_offered_once() {
        let names: std::collections::BTreeSet<String> = OUTCOMES.iter().map(kebab).collect();
        assert_eq!(names.len(), OUTCOMES.len());
        assert!(names.iter().all(|n| !n.is_empty()));
    }
}
