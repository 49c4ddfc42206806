//! A [`PlanDiff`] or a [`Plan`] as Markdown for a pull (merge) request's comment, GitHub and
//! GitLab flavoured: a hidden marker first (a CI job finds its own comment by it and edits it),
//! a one-line summary, the rejected documents with their diagnostics, the blast radius, then a
//! table per manifest. Long comments fold the tables into `<details>`, and no comment is longer
//! than the limit it is given (GitHub refuses a comment over [`COMMENT_LIMIT`] characters): what
//! does not fit is left out, and the comment says how much.
//!
//! Every text that comes from a manifest or a directory is escaped ([`escape`]): a `reason` with
//! `|`, `<`, backticks or `@` cannot break a table, inject HTML or mention anyone.

use std::fmt::Write as _;

use super::{
    BlastRadius, DiffRow, Judged, ManifestChange, ManifestDiff, PlanDiff, RowKind, Verdict, NOT_KNOWN_OFFLINE,
};
use crate::manifest::OnRelease;
use crate::plan::{Approval, Disposition, Guardrail, IdentityPlan, Plan};

/// The first line of every comment: the CI jobs of docs/gitops.md look for it to edit their own
/// comment instead of adding one per push.
pub const MARKER: &str = "<!-- remedy-plan -->";

/// The longest comment GitHub accepts, in characters (GitLab's notes take more).
pub const COMMENT_LIMIT: usize = 65_536;

/// More manifests than this, or more rows than [`FOLD_ROWS`], fold the tables into `<details>`.
const FOLD_MANIFESTS: usize = 5;
const FOLD_ROWS: usize = 20;

/// Kept free for the closing lines (the fold's end, the note of what was left out).
const RESERVE: usize = 600;

/// How the two revisions are named in the title (`origin/main (3f2a1c0)`, `working tree`).
#[derive(Debug, Clone, Copy)]
pub struct Revisions<'a> {
    pub base: &'a str,
    pub head: &'a str,
}

/// `text` safe in a Markdown paragraph or table cell: line breaks become spaces; `&`, `<`, `>`,
/// `|`, backticks and `@` become character references; the other characters Markdown gives a
/// meaning to (`\ * _ [ ] ~ # ! $`) are backslash-escaped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("&#124;"),
            '`' => out.push_str("&#96;"),
            '@' => out.push_str("&#64;"),
            '\\' | '*' | '_' | '[' | ']' | '~' | '#' | '!' | '$' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `lines` as a fenced code block whose fence no line can close (longer than any run of
/// backticks in them).
fn code_block(lines: &[String]) -> String {
    let longest = lines.iter().flat_map(|line| line.split(|c| c != '`').map(str::len)).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    let mut out = format!("{fence}text\n");
    for line in lines {
        out.push_str(line);
        out.push('\n');
    }
    out.push_str(&fence);
    out.push('\n');
    out
}

/// A comment built section by section within a limit of characters.
struct Comment {
    text: String,
    chars: usize,
    limit: usize,
}

impl Comment {
    fn new(limit: usize) -> Comment {
        Comment { text: String::new(), chars: 0, limit }
    }

    /// Appends `part` unconditionally (headers, closing lines).
    fn push(&mut self, part: &str) {
        self.text.push_str(part);
        self.chars += part.chars().count();
    }

    /// Appends `part` if it fits with room left for the closing lines; false when it does not.
    fn try_push(&mut self, part: &str) -> bool {
        let count = part.chars().count();
        if self.chars + count + RESERVE > self.limit {
            return false;
        }
        self.push(part);
        true
    }

    /// The comment, cut at the limit in the unlikely case the unconditional parts exceed it.
    fn finish(self) -> String {
        if self.chars <= self.limit {
            return self.text;
        }
        self.text.chars().take(self.limit).collect()
    }
}

/// The comment for what a change to the manifests would do, at most `limit` characters long.
pub fn render_diff(diff: &PlanDiff, revisions: Revisions<'_>, limit: usize) -> String {
    let mut out = Comment::new(limit);
    out.push(&format!("{MARKER}\n### remedy plan: {} → {}\n\n", escape(revisions.base), escape(revisions.head)));
    out.push(&summary_line(diff));
    out.push(&judged_note(diff.judged));

    if !diff.rejected.is_empty() {
        out.push(
            "\n#### ❌ Rejected manifests\n\nremedy refuses these documents (an invalid edit keeps the manifest's \
             last valid version in force, and nothing is released while a rejected document names no \
             manifest). Fix them before merging.\n\n",
        );
        let mut left_out = 0;
        for document in &diff.rejected {
            let mut part = format!("**{}**", escape(&document.file));
            if let Some(name) = &document.name {
                let _ = write!(part, " ({})", escape(name));
            }
            if let Some(keeps) = &document.keeps {
                let _ = write!(part, ": {} stays in force as it is at the base", escape(keeps.as_str()));
            }
            part.push_str("\n\n");
            part.push_str(&code_block(&document.diagnostics));
            part.push('\n');
            if !out.try_push(&part) {
                left_out += 1;
            }
        }
        if left_out > 0 {
            out.push(&format!("… and {left_out} more rejected document(s), left out to fit the comment.\n\n"));
        }
    }

    out.push(&format!("\n{}\n", blast_radius_line(&diff.blast_radius)));

    if diff.manifests.is_empty() {
        return out.finish();
    }
    let rows: usize = diff.manifests.iter().map(|m| m.rows.len()).sum();
    let fold = diff.manifests.len() > FOLD_MANIFESTS || rows > FOLD_ROWS;
    if fold {
        out.push(&format!(
            "\n<details><summary>{} manifest(s) changed, {rows} row(s)</summary>\n\n",
            diff.manifests.len()
        ));
    } else {
        out.push("\n");
    }
    let (mut left_manifests, mut left_rows) = (0, 0);
    for manifest in &diff.manifests {
        if left_manifests > 0 || !out.try_push(&manifest_section(manifest)) {
            left_manifests += 1;
            left_rows += manifest.rows.len();
        }
    }
    if fold {
        out.push("</details>\n");
    }
    if left_manifests > 0 {
        out.push(&format!(
            "\n**Cut:** {left_manifests} manifest(s) ({left_rows} row(s)) are not shown: a comment holds at \
             most {limit} characters. Run `remedy plan --base` locally, or with `-o json`, for the whole \
             diff.\n"
        ));
    }
    out.finish()
}

fn summary_line(diff: &PlanDiff) -> String {
    let s = &diff.summary;
    if s.is_empty() {
        return format!("**No change to what remedy does** ({} manifest(s) unchanged).\n\n", diff.unchanged.len());
    }
    let mut line = format!(
        "**{} to add, {} to change, {} to release, {} to restore · {} held · {} denied**",
        s.add, s.change, s.release, s.restore, s.held, s.denied
    );
    if s.rejected > 0 {
        let _ = write!(line, " · ❌ {} rejected", s.rejected);
    }
    let _ = write!(line, " · {} unchanged manifest(s)\n\n", diff.unchanged.len());
    line
}

fn judged_note(judged: Judged) -> String {
    match judged {
        Judged::Offline => "Judged offline, from the manifests and remedy.yaml alone: a row is denied here when \
                            the account's declared name is protected (built-in RID 500/502, the action account, \
                            `protectedAccounts`). Not known without the directories: whether each account exists, \
                            what it shows now, its groups and adminCount, and its DN against `allowedScopes`; \
                            they may still deny an action, or make it unnecessary, when remedy runs.\n"
            .to_owned(),
        Judged::Observed => {
            "Judged against the directories' state as read: current values and verdicts are the plan's.\n".to_owned()
        }
    }
}

fn blast_radius_line(blast: &BlastRadius) -> String {
    match blast {
        BlastRadius::Within { changes, limit, exact: true } => format!(
            "Blast radius: {changes} new change(s) in the whole plan (this change's and any already pending), \
             within `maxChangesPerReconcile` ({limit})."
        ),
        BlastRadius::Within { changes, limit, exact: false } => format!(
            "Blast radius: at most {changes} new change(s) from this change, within `maxChangesPerReconcile` \
             ({limit})."
        ),
        BlastRadius::Held { changes, limit, exact, plan_id } => {
            let approve = match plan_id {
                Some(id) => format!("`remedy approve {id}`"),
                None => "`remedy approve` with the plan id `remedy status` shows once it is merged".to_owned(),
            };
            format!(
                "**⏸ Held for approval:** {}{changes} new change(s), more than `maxChangesPerReconcile` \
                 ({limit}): remedy applies none of them until an operator approves the plan ({approve}).",
                if *exact { "" } else { "up to " }
            )
        }
        BlastRadius::Approved { plan_id } => {
            format!("Blast radius: more new changes than `maxChangesPerReconcile`, and plan {plan_id} is approved.")
        }
    }
}

fn manifest_section(manifest: &ManifestDiff) -> String {
    let change = match manifest.change {
        ManifestChange::Added => "added".to_owned(),
        ManifestChange::Changed => "changed".to_owned(),
        ManifestChange::Removed { on_release, .. } => format!("removed: released (onRelease: {})", word(on_release)),
        ManifestChange::Expired { on_release } => format!("expired: released (onRelease: {})", word(on_release)),
    };
    let mut out = format!(
        "#### {} · {change} · {}\n\n{}: {}\n\n",
        escape(manifest.name.as_str()),
        escape(&manifest.file),
        escape(&manifest.identity.to_string()),
        escape(&manifest.reason)
    );
    for note in &manifest.notes {
        let _ = writeln!(out, "- {}", escape(note));
    }
    if !manifest.notes.is_empty() {
        out.push('\n');
    }
    if manifest.rows.is_empty() {
        return out;
    }
    out.push_str("| | identity | action | current → wanted | verdict |\n|---|---|---|---|---|\n");
    for row in &manifest.rows {
        out.push_str(&table_row(&manifest.identity.to_string(), row));
    }
    out.push('\n');
    out
}

fn word(on_release: OnRelease) -> &'static str {
    match on_release {
        OnRelease::Leave => "leave",
        OnRelease::Restore => "restore",
    }
}

fn table_row(identity: &str, row: &DiffRow) -> String {
    let kind = match row.kind {
        RowKind::Add => "add",
        RowKind::Change => "change",
        RowKind::Withdraw => "withdraw",
        RowKind::Restore => "restore",
    };
    let mut values = format!("{} → {}", escape(row.current.as_deref().unwrap_or("?")), escape(&row.wanted));
    if let Some(was) = &row.was {
        let _ = write!(values, " (was: {})", escape(was));
    }
    format!(
        "| {kind} | {} | {} ({}) | {values} | {} |\n",
        escape(identity),
        row.action,
        row.field,
        verdict_text(&row.verdict)
    )
}

fn verdict_text(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allowed => "✅ allowed".to_owned(),
        Verdict::Denied { guardrail, detail } => {
            format!("⛔ **denied** ({}): {}", guardrail_name(*guardrail), escape(detail))
        }
        Verdict::Held { plan_id: Some(id) } => format!("⏸ held for approval (plan {id})"),
        Verdict::Held { plan_id: None } => "⏸ held for approval (blast radius)".to_owned(),
        Verdict::Blocked { message } => format!("🚫 blocked: {}", escape(message)),
        Verdict::NothingToDo { why } => format!("➖ nothing to do: {}", escape(why)),
        Verdict::Unknown { why } if why == NOT_KNOWN_OFFLINE => "❔ not known offline".to_owned(),
        Verdict::Unknown { why } => {
            format!("❔ {}", escape(why.trim_end_matches(NOT_KNOWN_OFFLINE).trim_end_matches("; ")))
        }
    }
}

/// The guardrail as `remedy.yaml` or the architecture names it.
fn guardrail_name(guardrail: Guardrail) -> &'static str {
    match guardrail {
        Guardrail::OutOfScope => "outside allowedScopes",
        other => other.config_name(),
    }
}

/// The comment for a plan (`remedy plan -o markdown` without `--base`): what remedy would do now
/// to each account, at most `limit` characters long.
pub fn render_plan(plan: &Plan, limit: usize) -> String {
    let tally = plan.tally();
    let mut out = Comment::new(limit);
    out.push(&format!("{MARKER}\n### remedy plan {}\n\n", plan.id));
    if plan.is_converged() {
        out.push(&format!("**Nothing to do**: {} account(s), all as the manifests declare.\n", plan.identities.len()));
        return out.finish();
    }
    out.push(&format!(
        "**{} to apply · {} held · {} denied · {} blocked · {} not found** · {} account(s)\n\n",
        tally.allowed,
        tally.held,
        tally.denied,
        tally.blocked,
        tally.not_found,
        plan.identities.len()
    ));
    let blast = match &plan.approval {
        Approval::NotNeeded => None,
        Approval::Required { plan_id, changes, limit } => {
            Some(BlastRadius::Held { changes: *changes, limit: *limit, exact: true, plan_id: Some(plan_id.clone()) })
        }
        Approval::Granted { plan_id } => Some(BlastRadius::Approved { plan_id: plan_id.clone() }),
    };
    if let Some(blast) = blast {
        out.push(&format!("{}\n\n", blast_radius_line(&blast)));
    }
    for conflict in &plan.conflicts {
        out.push(&format!("- conflict: {}\n", escape(&conflict.to_string())));
    }
    for warning in &plan.warnings {
        out.push(&format!("- warning: {}\n", escape(warning)));
    }
    let busy: Vec<&IdentityPlan> =
        plan.identities.iter().filter(|i| !i.actions.is_empty() || !i.blocked.is_empty()).collect();
    let rows: usize = busy.iter().map(|i| i.actions.len() + i.blocked.len()).sum();
    let fold = busy.len() > FOLD_MANIFESTS || rows > FOLD_ROWS;
    out.push(&if fold {
        format!("\n<details><summary>{} account(s) with something to do, {rows} row(s)</summary>\n\n", busy.len())
    } else {
        "\n".to_owned()
    });
    let mut left_out = 0;
    for identity in &busy {
        if left_out > 0 || !out.try_push(&identity_section(identity)) {
            left_out += 1;
        }
    }
    if fold {
        out.push("</details>\n");
    }
    if left_out > 0 {
        out.push(&format!(
            "\n**Cut:** {left_out} account(s) are not shown: a comment holds at most {limit} characters. Run \
             `remedy plan` locally, or with `-o json`, for the whole plan.\n"
        ));
    }
    out.finish()
}

fn identity_section(identity: &IdentityPlan) -> String {
    let names: Vec<&str> = identity.manifests.iter().map(|m| m.as_str()).collect();
    let mut out = format!("#### {} · {}\n\n", escape(&identity.identity.to_string()), escape(&names.join(", ")));
    out.push_str("| action | current → wanted | verdict | reason |\n|---|---|---|---|\n");
    for action in &identity.actions {
        let verdict = match &action.disposition {
            Disposition::Allowed => Verdict::Allowed,
            Disposition::Denied { guardrail, detail } => {
                Verdict::Denied { guardrail: *guardrail, detail: detail.clone() }
            }
            Disposition::Held { plan_id } => Verdict::Held { plan_id: Some(plan_id.clone()) },
        };
        let _ = writeln!(
            out,
            "| {} | {} → {} | {} | {} |",
            action.action,
            escape(&action.before),
            escape(&action.after),
            verdict_text(&verdict),
            escape(&action.reason)
        );
    }
    for blocked in &identity.blocked {
        let _ = writeln!(
            out,
            "| {} | {} → {} | {} | {} |",
            blocked.action,
            escape(&blocked.before),
            escape(&blocked.after),
            verdict_text(&Verdict::Blocked { message: blocked.message.clone() }),
            escape(&blocked.spec_reason)
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_a_cell_one_cell_and_no_html_gets_through() {
        assert_eq!(
            escape("a|b <script>`x` @team *bold* [l](u)\nnext"),
            "a&#124;b &lt;script&gt;&#96;x&#96; &#64;team \\*bold\\* \\[l\\](u) next"
        );
    }

    #[test]
    fn a_code_block_cannot_be_closed_by_its_lines() {
        let block = code_block(&["```".to_owned(), "a ```` b".to_owned()]);
        assert!(block.starts_with("`````text\n"), "{block}");
        assert!(block.ends_with("\n`````\n"), "{block}");
    }
}
