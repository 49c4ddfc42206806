//! What a change to the manifest repository would do: the manifest set at a base revision and at a
//! head revision (and, where the directories or a snapshot of them were read, the plan at the
//! head) → a [`PlanDiff`]: the intents the change adds, changes and withdraws, the manifests it
//! releases and what their `onRelease: restore` would put back, each judged by the guardrails,
//! and the blast-radius hold.
//!
//! Pure: the daemon reads the two revisions with git and renders the diff (`remedy plan --base`,
//! [`markdown`] for a pull request's comment).
//!
//! Without the directories ([`Judged::Offline`]) only what the manifests and `remedy.yaml` say
//! can be judged: protection by the declared name ([`protection_by_name`]: a declared objectSid's
//! RID 500 or 502, the action account, `protectedAccounts`, `allowProtected`) and the blast
//! radius as an upper bound (every new intent counted as a change). Whether the account exists,
//! what it shows now, its group memberships and adminCount, and its DN against `allowedScopes`
//! are not known, and every verdict that depends on them says so.
//!
//! With the plan at the head ([`Judged::Observed`]) each row takes the plan's own verdict for its
//! action: allowed, denied, held, blocked, or nothing to do because the account is already so.

pub mod markdown;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::action::Action;
use crate::config::Guardrails;
use crate::identity::Identity;
use crate::load::ManifestSet;
use crate::manifest::{Manifest, ManifestName, OnRelease};
use crate::plan::{
    protection_by_name, Approval, Cause, Disposition, Guardrail, IdentityPlan, IdentityStatus, Plan, PlanId,
    RecordedChange,
};

/// Everything [`diff`] compares and judges.
#[derive(Debug, Clone, Copy)]
pub struct DiffInput<'a> {
    /// The valid manifests at the base revision (what is in force before the change).
    pub base: &'a [Manifest],
    /// The manifest set at the head revision, rejected documents included.
    pub head: &'a ManifestSet,
    pub guardrails: &'a Guardrails,
    /// The plan of the head's manifests (with the manifests the change removes as departed),
    /// made against observed state; `None` offline.
    pub head_plan: Option<&'a Plan>,
    /// The changes remedy recorded earlier, as given to the head plan (they decide what a release
    /// restores); empty when remedy's history was not read.
    pub recorded: &'a [RecordedChange],
    /// Manifests that have expired by now are released, not reconciled.
    pub now: DateTime<Utc>,
}

/// What a change to the manifests would do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanDiff {
    pub judged: Judged,
    pub summary: Summary,
    /// The manifests the change adds, changes or removes, by name.
    pub manifests: Vec<ManifestDiff>,
    /// Manifests in force at both revisions, unchanged.
    pub unchanged: Vec<ManifestName>,
    /// The head's rejected documents.
    pub rejected: Vec<RejectedDocument>,
    pub blast_radius: BlastRadius,
}

/// What the verdicts were judged from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Judged {
    /// The manifests and `remedy.yaml` alone.
    Offline,
    /// A plan against observed state (the live directories or a snapshot).
    Observed,
}

/// The diff counted: actions to add and change, manifests released, actions restored, and how
/// many of the rows are held or denied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub add: usize,
    pub change: usize,
    pub release: usize,
    pub restore: usize,
    pub held: usize,
    pub denied: usize,
    pub rejected: usize,
}

impl Summary {
    /// Whether the change does nothing: no row, no release, no rejected document.
    pub fn is_empty(&self) -> bool {
        self.add + self.change + self.release + self.restore + self.rejected == 0
    }
}

/// One manifest the change touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDiff {
    pub name: ManifestName,
    /// Its file (at the head; at the base for a removed manifest), relative to the manifest
    /// directory.
    pub file: String,
    pub change: ManifestChange,
    /// The account it names (at the head; at the base for a removed manifest).
    pub identity: Identity,
    pub reason: String,
    pub rows: Vec<DiffRow>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum ManifestChange {
    Added,
    Changed,
    /// Gone from the head: released. `waits` while a rejected document of the head names no
    /// manifest (it may be this one: remedy releases nothing then).
    Removed {
        on_release: OnRelease,
        waits: bool,
    },
    /// Still in the head, with an `expires` the change puts in the past: released as if removed,
    /// with the head's `onRelease`.
    Expired {
        on_release: OnRelease,
    },
}

/// One action the change brings about, or one intent it withdraws.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffRow {
    pub kind: RowKind,
    /// The manifest field that asks for it (`activeDirectory.disabled`).
    pub field: &'static str,
    pub action: Action,
    /// What the base version of the manifest declared for this field, for a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub was: Option<String>,
    /// The attribute's value now, as the plan read it; `None` when not known (offline, or nothing
    /// to do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// What the action makes of it.
    pub wanted: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowKind {
    /// A new manifest's intent, or an intent a changed manifest adds.
    Add,
    /// An intent whose value changed, or a one-shot asked again by a new version of its manifest
    /// (one-shots are judged from the time remedy first sees a version).
    Change,
    /// An intent a changed manifest no longer declares: no longer enforced, not undone.
    Withdraw,
    /// What a released manifest's `onRelease: restore` puts back.
    Restore,
}

/// The verdict on one row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Verdict {
    /// It would be applied.
    Allowed,
    Denied {
        guardrail: Guardrail,
        detail: String,
    },
    /// Held for approval by the blast radius (the plan id is known only from a plan).
    Held {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan_id: Option<PlanId>,
    },
    /// It cannot take effect as things are (never-expires, no account, provider not configured).
    Blocked {
        message: String,
    },
    /// Nothing would be done, and why.
    NothingToDo {
        why: String,
    },
    /// Not decidable from what was read; `why` says what is not known.
    Unknown {
        why: String,
    },
}

/// The blast radius of the head: whether its new changes would be held for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum BlastRadius {
    /// `changes` new changes, within `limit`. Offline `changes` is an upper bound (`exact` false).
    Within { changes: usize, limit: usize, exact: bool },
    /// More new changes than `limit`: every new change waits for an operator's approval.
    Held {
        changes: usize,
        limit: usize,
        exact: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan_id: Option<PlanId>,
    },
    /// More than the limit, and this plan id was approved already.
    Approved { plan_id: PlanId },
}

impl std::fmt::Display for BlastRadius {
    /// One line of plain text: `at most 6 new change(s) from this change, within
    /// maxChangesPerReconcile (25)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlastRadius::Within { changes, limit, exact: true } => write!(
                f,
                "{changes} new change(s) in the whole plan (this change's and any already pending), within \
                 maxChangesPerReconcile ({limit})"
            ),
            BlastRadius::Within { changes, limit, exact: false } => {
                write!(f, "at most {changes} new change(s) from this change, within maxChangesPerReconcile ({limit})")
            }
            BlastRadius::Held { changes, limit, exact, plan_id } => {
                write!(
                    f,
                    "held for approval: {}{changes} new change(s), more than maxChangesPerReconcile ({limit})",
                    if *exact { "" } else { "up to " }
                )?;
                match plan_id {
                    Some(id) => write!(f, "; approve plan {id}"),
                    None => Ok(()),
                }
            }
            BlastRadius::Approved { plan_id } => {
                write!(f, "more new changes than maxChangesPerReconcile, and plan {plan_id} is approved")
            }
        }
    }
}

/// A document of the head that remedy would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedDocument {
    pub file: String,
    /// `metadata.name`, when it could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `file:line:col: severity: path: message`, one per problem.
    pub diagnostics: Vec<String>,
    /// The base's manifest that stays in force instead (an invalid edit never releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keeps: Option<ManifestName>,
}

/// What offline verdicts cannot know; said once per row it concerns.
pub const NOT_KNOWN_OFFLINE: &str = "not known offline: whether the account exists, what it shows now, \
                                     its groups and adminCount, and its DN against allowedScopes";

/// One intent of a manifest: the field, the action it asks for and what that makes of the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Intent {
    field: &'static str,
    action: Action,
    wanted: &'static str,
    one_shot: bool,
}

/// A manifest's intents in execution order; none for a suspended or expired manifest.
fn intents(manifest: &Manifest, now: DateTime<Utc>) -> Vec<Intent> {
    if manifest.spec.suspend || manifest.is_expired(now) {
        return Vec::new();
    }
    let ad = &manifest.spec.active_directory;
    let entra = &manifest.spec.entra_id;
    let mut found = Vec::new();
    let state = |field, action, wanted| Intent { field, action, wanted, one_shot: false };
    let shot = |field, action, wanted| Intent { field, action, wanted, one_shot: true };
    match ad.disabled {
        Some(true) => found.push(state("activeDirectory.disabled", Action::DisableAccount, "disabled")),
        Some(false) => found.push(state("activeDirectory.disabled", Action::EnableAccount, "enabled")),
        None => {}
    }
    if ad.must_change_password && ad.clear_password_never_expires {
        found.push(shot(
            "activeDirectory.clearPasswordNeverExpires",
            Action::ClearPasswordNeverExpires,
            "password may expire (if it is set never to)",
        ));
    }
    if ad.must_change_password {
        found.push(shot("activeDirectory.mustChangePassword", Action::ForcePasswordChange, "change at next logon"));
    }
    match entra.suspended {
        Some(true) => found.push(state("entraId.suspended", Action::SuspendUser, "sign-in blocked")),
        Some(false) => found.push(state("entraId.suspended", Action::UnsuspendUser, "sign-in allowed")),
        None => {}
    }
    if entra.revoke_sessions {
        found.push(shot("entraId.revokeSessions", Action::RevokeSessions, "sessions revoked"));
    }
    if entra.confirm_compromised {
        found.push(shot("entraId.confirmCompromised", Action::ConfirmCompromised, "confirmed compromised"));
    }
    found
}

/// Why a manifest has no intents at `now`, if that is so.
fn idle(manifest: &Manifest, now: DateTime<Utc>) -> Option<String> {
    if manifest.spec.suspend {
        return Some("suspended (spec.suspend): remedy reconciles nothing for it".to_owned());
    }
    manifest.spec.expires.filter(|_| manifest.is_expired(now)).map(|at| {
        format!("expired at {}: remedy releases it rather than reconciling it", at.format("%Y-%m-%dT%H:%M:%SZ"))
    })
}

/// Compares the two revisions and judges what the change would do. Pure: the same input gives the
/// same diff.
pub fn diff(input: &DiffInput<'_>) -> PlanDiff {
    let base: BTreeMap<&ManifestName, &Manifest> = input.base.iter().map(|m| (&m.name, m)).collect();
    let head: BTreeMap<&ManifestName, &Manifest> = input.head.manifests.iter().map(|m| (&m.name, m)).collect();
    let may_release = input.head.rejected.iter().all(|r| r.name.is_some());
    let judge = Judge { input };

    let mut manifests = Vec::new();
    let mut unchanged = Vec::new();
    for (name, manifest) in &head {
        match base.get(name) {
            None => manifests.push(judge.added(manifest)),
            Some(before) if before.generation == manifest.generation => unchanged.push((*name).clone()),
            Some(before) => manifests.push(judge.changed(before, manifest)),
        }
    }
    let mut rejected: Vec<RejectedDocument> = input
        .head
        .rejected
        .iter()
        .map(|r| RejectedDocument {
            file: r.file.clone(),
            name: r.name.clone(),
            diagnostics: r.diagnostics.iter().map(ToString::to_string).collect(),
            keeps: None,
        })
        .collect();
    for (name, before) in &base {
        if head.contains_key(name) {
            continue;
        }
        // An invalid edit keeps the base's version in force: by the rejected document's name, or by
        // its file when the name cannot be read (as `admission` decides).
        let keeper = rejected
            .iter()
            .position(|r| r.name.as_deref() == Some(name.as_str()))
            .or_else(|| rejected.iter().position(|r| r.name.is_none() && r.file == before.origin.file));
        match keeper {
            Some(i) => rejected[i].keeps = Some((*name).clone()),
            None => manifests.push(judge.removed(before, !may_release)),
        }
    }
    manifests.sort_by(|a, b| a.name.cmp(&b.name));

    let blast_radius = judge.blast_radius(&mut manifests);
    let mut summary = Summary { rejected: rejected.len(), ..Summary::default() };
    for manifest in &manifests {
        if matches!(manifest.change, ManifestChange::Removed { .. } | ManifestChange::Expired { .. }) {
            summary.release += 1;
        }
        for row in &manifest.rows {
            match row.kind {
                RowKind::Add => summary.add += 1,
                RowKind::Change => summary.change += 1,
                RowKind::Restore => summary.restore += 1,
                RowKind::Withdraw => {}
            }
            match row.verdict {
                Verdict::Held { .. } => summary.held += 1,
                Verdict::Denied { .. } => summary.denied += 1,
                _ => {}
            }
        }
    }
    PlanDiff {
        judged: if input.head_plan.is_some() { Judged::Observed } else { Judged::Offline },
        summary,
        manifests,
        unchanged,
        rejected,
        blast_radius,
    }
}

struct Judge<'i, 'a> {
    input: &'i DiffInput<'a>,
}

impl Judge<'_, '_> {
    fn shell(&self, manifest: &Manifest, change: ManifestChange) -> ManifestDiff {
        ManifestDiff {
            name: manifest.name.clone(),
            file: manifest.origin.file.clone(),
            change,
            identity: manifest.spec.target.identity.clone(),
            reason: manifest.spec.reason.clone(),
            rows: Vec::new(),
            notes: idle(manifest, self.input.now).into_iter().collect(),
        }
    }

    fn added(&self, manifest: &Manifest) -> ManifestDiff {
        let mut diff = self.shell(manifest, ManifestChange::Added);
        for intent in intents(manifest, self.input.now) {
            diff.rows.push(self.row(manifest, RowKind::Add, intent, None));
        }
        diff
    }

    fn changed(&self, before: &Manifest, manifest: &Manifest) -> ManifestDiff {
        let mut diff = self.shell(manifest, ManifestChange::Changed);
        if before.spec.target.identity != manifest.spec.target.identity {
            diff.notes.push(format!(
                "the target changed from {} to {}: the intents below concern the new account; the old \
                 one keeps what was done to it",
                before.spec.target.identity, manifest.spec.target.identity
            ));
        }
        if manifest.is_expired(self.input.now) && !before.is_expired(self.input.now) {
            // Released on expiry, as if deleted, with the head's onRelease.
            let on_release = manifest.spec.on_release;
            diff.change = ManifestChange::Expired { on_release };
            diff.rows = self.release_rows(before, on_release, false);
            return diff;
        }
        let retargeted = before.spec.target.identity != manifest.spec.target.identity;
        // A new account gets every intent anew.
        let was = if retargeted { Vec::new() } else { intents(before, self.input.now) };
        let now = intents(manifest, self.input.now);
        for intent in &now {
            match was.iter().find(|w| w.field == intent.field) {
                None => diff.rows.push(self.row(manifest, RowKind::Add, *intent, None)),
                Some(old) if old.action != intent.action => {
                    diff.rows.push(self.row(manifest, RowKind::Change, *intent, Some(old.wanted.to_owned())))
                }
                // A one-shot is judged from the time remedy first sees this version: asked again.
                Some(_) if intent.one_shot => diff.rows.push(self.row(
                    manifest,
                    RowKind::Change,
                    *intent,
                    Some("the same: a new version of the manifest asks again".to_owned()),
                )),
                Some(_) => {}
            }
        }
        for old in was.iter().filter(|w| !now.iter().any(|n| n.field == w.field)) {
            diff.rows.push(DiffRow {
                kind: RowKind::Withdraw,
                field: old.field,
                action: old.action,
                was: Some(old.wanted.to_owned()),
                current: None,
                wanted: "no longer asked".to_owned(),
                verdict: Verdict::NothingToDo {
                    why: "no longer enforced; what was done is not undone (only a release restores)".to_owned(),
                },
            });
        }
        diff
    }

    fn removed(&self, before: &Manifest, waits: bool) -> ManifestDiff {
        let on_release = before.spec.on_release;
        let mut diff = self.shell(before, ManifestChange::Removed { on_release, waits });
        diff.notes.clear();
        if waits {
            diff.notes.push(
                "the release waits: a rejected document of the head names no manifest (it may be this one)".to_owned(),
            );
        }
        if on_release == OnRelease::Leave {
            diff.notes.push("onRelease: leave — the account stays as it is".to_owned());
        }
        diff.rows = self.release_rows(before, on_release, waits);
        diff
    }

    /// What releasing `before` puts back: with `onRelease: restore`, the inverse of each of its
    /// intents that has one.
    fn release_rows(&self, before: &Manifest, on_release: OnRelease, waits: bool) -> Vec<DiffRow> {
        if on_release == OnRelease::Leave {
            return Vec::new();
        }
        let mut rows = Vec::new();
        for intent in intents(before, self.input.now) {
            let Some(inverse) = intent.action.inverse() else { continue };
            let (current, after, verdict) = if waits {
                let why = "the release waits for the rejected documents to be fixed".to_owned();
                (None, None, Verdict::NothingToDo { why })
            } else {
                self.restore_verdict(before, intent.action, inverse)
            };
            rows.push(DiffRow {
                kind: RowKind::Restore,
                field: intent.field,
                action: inverse,
                was: Some(intent.wanted.to_owned()),
                current,
                wanted: after.unwrap_or_else(|| restored(inverse).to_owned()),
                verdict,
            });
        }
        rows
    }

    /// A row for an intent of an active manifest.
    fn row(&self, manifest: &Manifest, kind: RowKind, intent: Intent, was: Option<String>) -> DiffRow {
        let (current, wanted, verdict) = match self.input.head_plan {
            Some(plan) => {
                let (current, after, verdict) = observed_verdict(plan, &manifest.name, intent.action, None);
                (current, after.unwrap_or_else(|| intent.wanted.to_owned()), verdict)
            }
            None => (None, intent.wanted.to_owned(), self.offline_verdict(&manifest.spec.target.identity)),
        };
        DiffRow { kind, field: intent.field, action: intent.action, was, current, wanted, verdict }
    }

    fn offline_verdict(&self, identity: &Identity) -> Verdict {
        match protection_by_name(identity, self.input.guardrails) {
            Some((guardrail, detail)) => Verdict::Denied { guardrail, detail },
            None => Verdict::Unknown { why: NOT_KNOWN_OFFLINE.to_owned() },
        }
    }

    /// What restoring `inverse` (undoing `done`) for the released manifest `before` would do.
    fn restore_verdict(
        &self,
        before: &Manifest,
        done: Action,
        inverse: Action,
    ) -> (Option<String>, Option<String>, Verdict) {
        let identity = &before.spec.target.identity;
        // The safer state wins: another manifest of the head that asks for it keeps it.
        let still_asked: Vec<&str> = self
            .input
            .head
            .manifests
            .iter()
            .filter(|m| &m.spec.target.identity == identity)
            .filter(|m| intents(m, self.input.now).iter().any(|i| i.action == done))
            .map(|m| m.name.as_str())
            .collect();
        if !still_asked.is_empty() {
            let why = format!("{} still asks for it", still_asked.join(", "));
            return (None, None, Verdict::NothingToDo { why });
        }
        match self.input.head_plan {
            Some(plan) => {
                let (current, after, verdict) = observed_verdict(plan, &before.name, inverse, Some(&before.name));
                let recorded = self.input.recorded.iter().any(|c| c.manifest == before.name && c.action == done);
                let verdict = match verdict {
                    Verdict::NothingToDo { .. } if !recorded => Verdict::Unknown {
                        why: "restored only where remedy's history records the change; the history was not \
                              given (see --observed's remedyChanges)"
                            .to_owned(),
                    },
                    Verdict::NothingToDo { .. } => Verdict::NothingToDo {
                        why: "the account no longer shows remedy's change (someone changed it since)".to_owned(),
                    },
                    other => other,
                };
                (current, after, verdict)
            }
            None => match protection_by_name(identity, self.input.guardrails) {
                Some((guardrail, detail)) => (None, None, Verdict::Denied { guardrail, detail }),
                None => (
                    None,
                    None,
                    Verdict::Unknown {
                        why: format!(
                            "only if remedy made this change and the account still shows it; {NOT_KNOWN_OFFLINE}"
                        ),
                    },
                ),
            },
        }
    }

    /// The blast radius: the head plan's, or offline an upper bound (every add, change and restore
    /// row that is not denied or a no-op counts), which then marks those rows held.
    fn blast_radius(&self, manifests: &mut [ManifestDiff]) -> BlastRadius {
        let limit = self.input.guardrails.max_changes_per_reconcile;
        if let Some(plan) = self.input.head_plan {
            return match &plan.approval {
                Approval::Required { plan_id, changes, limit } => {
                    BlastRadius::Held { changes: *changes, limit: *limit, exact: true, plan_id: Some(plan_id.clone()) }
                }
                Approval::Granted { plan_id } => BlastRadius::Approved { plan_id: plan_id.clone() },
                Approval::NotNeeded => {
                    let changes =
                        plan.allowed_actions().filter(|(_, action)| action.cause != Cause::DriftCorrection).count();
                    BlastRadius::Within { changes, limit, exact: true }
                }
            };
        }
        let counts = |row: &DiffRow| row.kind != RowKind::Withdraw && matches!(row.verdict, Verdict::Unknown { .. });
        let changes = manifests.iter().flat_map(|m| &m.rows).filter(|row| counts(row)).count();
        if changes <= limit {
            return BlastRadius::Within { changes, limit, exact: false };
        }
        for row in manifests.iter_mut().flat_map(|m| m.rows.iter_mut()).filter(|row| counts(row)) {
            row.verdict = Verdict::Held { plan_id: None };
        }
        BlastRadius::Held { changes, limit, exact: false, plan_id: None }
    }
}

/// What a restore makes of the account.
fn restored(inverse: Action) -> &'static str {
    match inverse {
        Action::EnableAccount => "enabled again",
        Action::DisableAccount => "disabled again",
        Action::SetPasswordNeverExpires => "password never expires again",
        Action::ClearPasswordNeverExpires => "password may expire again",
        Action::CancelForcedPasswordChange => "forced change withdrawn (if still pending)",
        Action::ForcePasswordChange => "change at next logon again",
        Action::UnsuspendUser => "sign-in allowed again",
        Action::SuspendUser => "sign-in blocked again",
        Action::RevokeSessions | Action::ConfirmCompromised => "-",
    }
}

/// The head plan's verdict on `action` for the manifest `name` (a restore when `released` names
/// the released manifest): the value now, the value after, the verdict.
fn observed_verdict(
    plan: &Plan,
    name: &ManifestName,
    action: Action,
    released: Option<&ManifestName>,
) -> (Option<String>, Option<String>, Verdict) {
    let Some(identity) = plan.identities.iter().find(|i| i.manifests.contains(name)) else {
        return (None, None, Verdict::Unknown { why: "the plan does not name this manifest's account".to_owned() });
    };
    let planned = identity.actions.iter().find(|a| {
        a.action == action
            && match released {
                Some(manifest) => a.cause == Cause::Release { manifest: manifest.clone() },
                None => a.provenance.contains(name),
            }
    });
    if let Some(planned) = planned {
        let verdict = match &planned.disposition {
            Disposition::Allowed => Verdict::Allowed,
            Disposition::Denied { guardrail, detail } => {
                Verdict::Denied { guardrail: *guardrail, detail: detail.clone() }
            }
            Disposition::Held { plan_id } => Verdict::Held { plan_id: Some(plan_id.clone()) },
        };
        return (Some(planned.before.clone()), Some(planned.after.clone()), verdict);
    }
    if let Some(blocked) = identity.blocked.iter().find(|b| b.action == action) {
        return (
            Some(blocked.before.clone()),
            Some(blocked.after.clone()),
            Verdict::Blocked { message: blocked.message.clone() },
        );
    }
    (None, None, status_verdict(identity))
}

/// The verdict of an action the plan does not hold, from its identity's status.
fn status_verdict(identity: &IdentityPlan) -> Verdict {
    let why = identity.notes.first().cloned();
    match identity.status {
        IdentityStatus::NotFound => {
            Verdict::Blocked { message: why.unwrap_or_else(|| "no account found by that name".to_owned()) }
        }
        IdentityStatus::Ambiguous => {
            Verdict::Blocked { message: why.unwrap_or_else(|| "the name matches several accounts".to_owned()) }
        }
        IdentityStatus::ProviderUnavailable => {
            Verdict::Unknown { why: why.unwrap_or_else(|| "a provider could not be asked".to_owned()) }
        }
        _ => Verdict::NothingToDo { why: "the account is already so".to_owned() },
    }
}
