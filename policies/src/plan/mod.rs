//! The plan: declared intent + observed state + history + guardrails → ordered, judged actions.
//!
//! [`plan`] is a pure function of its [`PlanInput`]: the same input gives the same [`Plan`] (and
//! the same [`PlanId`]), whatever the order of the manifests in it. It runs in five steps, one
//! module each:
//!
//! 1. `merge`: manifests are sorted into active, suspended and released ones, grouped by the
//!    account they resolve to, and the active ones' desired states merged (safer state wins).
//! 2. `engine`: the merged desired state is compared with what was observed: state items
//!    (`disabled`, `suspended`) are held; one-shot items are judged against the effective time.
//! 3. `release`: released manifests with `onRelease: restore` undo what remedy recorded.
//! 4. `guardrails`: every action is allowed or denied by the daemon's guardrails.
//! 5. `blast_radius`: too many new changes hold the whole plan for approval.

mod blast_radius;
mod engine;
mod guardrails;
mod merge;
mod release;

pub use guardrails::{protection_by_name, protection_of};

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::action::{Action, Provider};
use crate::config::Guardrails;
use crate::identity::Identity;
use crate::manifest::{Manifest, ManifestName, OnRelease, Target};
use crate::observed::ObservedState;

/// A manifest of the current set, with the time remedy first saw this generation of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveManifest {
    pub manifest: Manifest,
    /// When remedy first saw this generation: one-shot items are judged relative to it.
    pub effective_since: DateTime<Utc>,
}

/// A manifest that left the set (deleted from the repository) and is to be released.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DepartedManifest {
    pub name: ManifestName,
    pub target: Target,
    #[serde(default)]
    pub on_release: OnRelease,
    /// Why it departed, for the history (e.g. "deleted in commit 3f2a1c").
    pub reason: String,
}

/// A change remedy made earlier, from its history: the input for drift and restore decisions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedChange {
    /// Record one change per manifest of the action's provenance (or the released manifest).
    pub manifest: ManifestName,
    /// The account, by a name that [`plan`] can match later: best the manifest's own
    /// `spec.target`; any other name of the account matches too while it is in the observed state.
    pub identity: Identity,
    pub action: Action,
    pub at: DateTime<Utc>,
    /// The DC an Active Directory change was made on (its URL), when known: another DC may not
    /// show it until replication brings it (see [`crate::replication`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    pub manifests: &'a [ActiveManifest],
    pub departed: &'a [DepartedManifest],
    pub remedy_changes: &'a [RecordedChange],
    pub observed: &'a ObservedState,
    pub guardrails: &'a Guardrails,
    pub approvals: &'a BTreeSet<PlanId>,
    pub now: DateTime<Utc>,
}

/// Identifies the set of new changes of a plan: an operator approves a held plan by this id, and
/// the approval stops counting as soon as the set of changes is a different one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PlanId(String);

/// Length of a plan id in hex digits (128 bits of SHA-256).
const PLAN_ID_HEX_DIGITS: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a plan id: expected {PLAN_ID_HEX_DIGITS} hexadecimal digits")]
pub struct PlanIdError(pub String);

impl PlanId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PlanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for PlanId {
    type Err = PlanIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.len() == PLAN_ID_HEX_DIGITS && text.chars().all(|c| c.is_ascii_hexdigit()) {
            Ok(PlanId(text.to_ascii_lowercase()))
        } else {
            Err(PlanIdError(text.to_owned()))
        }
    }
}

impl TryFrom<String> for PlanId {
    type Error = PlanIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<PlanId> for String {
    fn from(id: PlanId) -> String {
        id.0
    }
}

// By hand: the JSON form is the string the `TryFrom<String>` above accepts (in lower case).
#[cfg(feature = "openapi")]
crate::openapi::string_schema!(
    PlanId,
    "A plan's id: 32 hexadecimal digits (128 bits of SHA-256 over its new changes).",
    "^[0-9a-f]{32}$",
    "f892516a36e3b7d86f70055690fa467d"
);

/// The result of planning: per identity, what to do, what may not be done, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The id of this plan's new changes (see [`PlanId`]).
    pub id: PlanId,
    pub computed_at: DateTime<Utc>,
    /// Sorted by declared identity.
    pub identities: Vec<IdentityPlan>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    pub approval: Approval,
}

/// Whether the plan's new changes may be applied without an operator's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Approval {
    /// Within `maxChangesPerReconcile`.
    NotNeeded,
    /// More new changes than `limit`: every new change is held until `plan_id` is approved.
    Required { plan_id: PlanId, changes: usize, limit: usize },
    /// More new changes than the limit, and this plan id was approved.
    Granted { plan_id: PlanId },
}

impl Plan {
    /// Every planned action, whatever its disposition, with the identity it is for.
    pub fn actions(&self) -> impl Iterator<Item = (&IdentityPlan, &PlannedAction)> {
        self.identities.iter().flat_map(|identity| identity.actions.iter().map(move |action| (identity, action)))
    }

    /// The actions that may be applied now.
    pub fn allowed_actions(&self) -> impl Iterator<Item = (&IdentityPlan, &PlannedAction)> {
        self.actions().filter(|(_, action)| action.disposition == Disposition::Allowed)
    }

    /// Nothing is left to do and nothing stands in the way: no action of any disposition and no
    /// blocked item.
    pub fn is_converged(&self) -> bool {
        self.identities.iter().all(|identity| identity.actions.is_empty() && identity.blocked.is_empty())
    }

    /// The plan counted: what is to be done and what stands in the way.
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for identity in &self.identities {
            tally.blocked += identity.blocked.len();
            match identity.status {
                IdentityStatus::NotFound => tally.not_found += 1,
                IdentityStatus::Ambiguous => tally.ambiguous += 1,
                IdentityStatus::ProviderUnavailable => tally.unavailable += 1,
                _ => {}
            }
            for action in &identity.actions {
                match action.disposition {
                    Disposition::Allowed => tally.allowed += 1,
                    Disposition::Held { .. } => tally.held += 1,
                    Disposition::Denied { .. } => tally.denied += 1,
                }
            }
        }
        tally
    }
}

/// [`Plan::tally`]: actions by disposition, blocked items, and identities by the statuses that
/// keep them from being planned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub allowed: usize,
    pub held: usize,
    pub denied: usize,
    pub blocked: usize,
    pub not_found: usize,
    pub ambiguous: usize,
    pub unavailable: usize,
}

/// What the providers resolved the declared identity to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_dn: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad_object_guid: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<String>,
}

/// The plan for one account (all manifests that name it, merged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityPlan {
    /// As declared; the first by sort order when several declared identities denote one account.
    pub identity: Identity,
    /// The other declared identities that resolved to the same account.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also_declared_as: Vec<Identity>,
    pub resolved: Resolved,
    /// Every manifest about this account: active, suspended and released ones. Sorted.
    pub manifests: Vec<ManifestName>,
    pub status: IdentityStatus,
    /// In execution order ([`Action`]'s declaration order).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<PlannedAction>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked: Vec<BlockedItem>,
    /// Why things are as they are: satisfied one-shots, releases, exemptions, provider trouble.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The one word for an identity. When several apply, the first in this list wins:
///
/// 1. `Ambiguous`: a declared identity named several accounts (the manifest must be fixed).
/// 2. `NotFound`: a provider that has something to do found no account (permanent).
/// 3. `Denied`: a guardrail denied at least one action.
/// 4. `ProviderUnavailable`: a provider that has something to do could not be asked.
/// 5. `Held`: the plan waits for approval (blast radius).
/// 6. `Blocked`: an item cannot take effect as things are (never-expires, provider not configured).
/// 7. `Pending`: allowed actions are to be applied.
/// 8. `Suspended`: only suspended manifests name the account; nothing is reconciled.
/// 9. `Released`: only released manifests name the account and nothing is left to restore.
/// 10. `Converged`: the account is as the manifests declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum IdentityStatus {
    Converged,
    Pending,
    Blocked,
    Denied,
    Held,
    NotFound,
    Ambiguous,
    ProviderUnavailable,
    Suspended,
    Released,
}

/// One action of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlannedAction {
    pub action: Action,
    pub provider: Provider,
    /// The manifests that asked for it, sorted.
    pub provenance: Vec<ManifestName>,
    /// The manifests' `spec.reason`s, joined with "; ".
    pub reason: String,
    pub cause: Cause,
    /// The attribute's value before and after, as a human reads it (`0x200` → `0x202`).
    pub before: String,
    pub after: String,
    pub disposition: Disposition,
}

/// Why an action is planned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Cause {
    /// Active manifests declare a state the account is not in (for the first time).
    Desired,
    /// remedy made this change before, for a manifest that still asks for it, and it was undone.
    /// Never held by the blast-radius rule.
    DriftCorrection,
    /// A released manifest's `onRelease: restore` undoes what remedy did.
    Release { manifest: ManifestName },
}

/// Whether an action may be applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", rename_all_fields = "camelCase")]
pub enum Disposition {
    Allowed,
    Denied { guardrail: Guardrail, detail: String },
    Held { plan_id: PlanId },
}

/// The guardrail that denied an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Guardrail {
    /// RID 500 (the built-in Administrator, whatever its name) or RID 502 (krbtgt).
    BuiltinAccount,
    /// remedy's own bind user.
    ActionAccount,
    /// Named in `protectedAccounts`.
    ProtectedAccount,
    /// Member of a `protectedGroups` group, or `adminCount=1`.
    ProtectedGroup,
    /// AD account outside every `allowedScopes` base DN (AD actions only).
    OutOfScope,
}

impl Guardrail {
    /// The guardrail as `remedy.yaml` names it (its key, or what it protects).
    pub fn config_name(self) -> &'static str {
        match self {
            Guardrail::BuiltinAccount => "built-in account",
            Guardrail::ActionAccount => "action account",
            Guardrail::ProtectedAccount => "protectedAccounts",
            Guardrail::ProtectedGroup => "protectedGroups",
            Guardrail::OutOfScope => "allowedScopes",
        }
    }
}

/// An item that cannot take effect as things are; it stays pending and is judged again at every
/// reconcile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockedItem {
    pub action: Action,
    pub reason: BlockReason,
    pub provenance: Vec<ManifestName>,
    /// The manifests' `spec.reason`s, joined with "; " (as a planned action's `reason`).
    pub spec_reason: String,
    pub message: String,
    /// The attribute's value now and what the action would write, as a human reads it (as a
    /// planned action's); `?` where the account was not observed.
    pub before: String,
    pub after: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BlockReason {
    /// DONT_EXPIRE_PASSWORD is set and the manifest does not allow clearing it: a forced change
    /// would be accepted by the DC and ignored.
    PasswordNeverExpires,
    /// The provider the item needs is not configured in `remedy.yaml`.
    ProviderNotConfigured,
    /// The Entra ID user is a guest (`userType` Guest): it signs in at its home tenant, so
    /// revoking its sessions in this tenant does not apply.
    GuestUser,
}

/// Manifests that disagree about a state item of one account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conflict {
    pub identity: Identity,
    /// The manifest field, e.g. `activeDirectory.disabled`.
    pub field: String,
    /// The side that wins (disabled, suspended).
    pub safer: ConflictSide,
    pub overruled: ConflictSide,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConflictSide {
    pub manifests: Vec<ManifestName>,
    pub value: bool,
}

impl Conflict {
    /// The conflict without the identity: "activeDirectory.disabled: true (a) overrules false (b)".
    pub fn describe(&self) -> String {
        let names =
            |side: &ConflictSide| side.manifests.iter().map(ManifestName::as_str).collect::<Vec<_>>().join(", ");
        format!(
            "{}: {} ({}) overrules {} ({}): the safer state wins",
            self.field,
            self.safer.value,
            names(&self.safer),
            self.overruled.value,
            names(&self.overruled),
        )
    }
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: conflict on {}", self.identity, self.describe())
    }
}

/// Computes the plan. Pure: no I/O, no clock; `input.now` is the only time.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let mut warnings = Vec::new();
    let groups = merge::group(input, &mut warnings);
    let mut conflicts = Vec::new();
    let mut identities = Vec::with_capacity(groups.len());
    for group in &groups {
        let known_conflicts = conflicts.len();
        let desired = merge::desired(group, input.now, &mut conflicts);
        let mut work = engine::plan_group(group, &desired, input, &mut warnings);
        work.notes.splice(0..0, conflicts[known_conflicts..].iter().map(|c| format!("conflict on {}", c.describe())));
        release::plan_releases(group, input, &mut work);
        guardrails::judge(group, input.guardrails, input.observed, &mut work);
        engine::classify_drift(group, &desired, input, &mut work);
        identities.push((group, work));
    }
    let (id, approval) = blast_radius::apply(&mut identities, input);
    let identities = identities.into_iter().map(|(group, work)| work.finish(group, input.now)).collect();
    Plan { id, computed_at: input.now, identities, conflicts, warnings, approval }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_ids_parse_in_any_case_and_print_lower_case() {
        let id: PlanId = " 3C4870C969751EF083340AB9D7C97FD0 ".parse().expect("a plan id");
        assert_eq!(id.to_string(), "3c4870c969751ef083340ab9d7c97fd0");
        assert_eq!(serde_json::to_string(&id).expect("serialises"), "\"3c4870c969751ef083340ab9d7c97fd0\"");
        for bad in ["", "3c4870c9", "3c4870c969751ef083340ab9d7c97fdz", "3c4870c969751ef083340ab9d7c97fd0aa"] {
            assert!(bad.parse::<PlanId>().is_err(), "{bad:?} accepted");
            assert!(serde_json::from_str::<PlanId>(&format!("{bad:?}")).is_err());
        }
    }

    #[test]
    fn dispositions_serialise_with_a_kind() {
        let denied = Disposition::Denied { guardrail: Guardrail::OutOfScope, detail: "x".into() };
        assert_eq!(
            serde_json::to_value(&denied).expect("serialises"),
            serde_json::json!({"kind": "denied", "guardrail": "out-of-scope", "detail": "x"})
        );
        let back: Disposition = serde_json::from_value(serde_json::json!({"kind": "allowed"})).expect("parses");
        assert_eq!(back, Disposition::Allowed);
    }
}
