//! Step 2: the merged desired state against what was observed.
//!
//! State items (`disabled`, `suspended`) are held: any difference is planned, every time.
//! One-shot items (`mustChangePassword`, `revokeSessions`, `confirmCompromised`) are events after
//! the effective time: once the observed account shows such an event they are satisfied for good,
//! so a user who complied is never forced again.

use chrono::{DateTime, SubsecRound, Utc};

use super::merge::{time, Desired, Group, OneShot, StateWant};
use super::{
    BlockReason, BlockedItem, Cause, Disposition, IdentityPlan, IdentityStatus, PlanInput, PlannedAction, Resolved,
};
use crate::action::{Action, Provider};
use crate::manifest::ManifestName;
use crate::observed::{AdAccount, EntraUser, PasswordLastSet, ProviderView, RiskState};

/// One identity's plan while it is being worked out.
#[derive(Debug, Default)]
pub(super) struct Work {
    pub actions: Vec<PlannedAction>,
    pub blocked: Vec<BlockedItem>,
    pub notes: Vec<String>,
    pub ambiguous: bool,
    pub not_found: bool,
    pub unavailable: bool,
}

impl Work {
    pub fn add(&mut self, action: Action, provenance: Vec<ManifestName>, reason: String, cause: Cause) {
        self.actions.push(PlannedAction {
            action,
            provider: action.provider(),
            provenance,
            reason,
            cause,
            before: String::new(),
            after: String::new(),
            disposition: Disposition::Allowed,
        });
    }

    /// Records what a provider view that is not `Found` means for items that need it.
    pub fn provider_trouble<T>(&mut self, provider: Provider, group: &Group<'_>, view: &ProviderView<T>, what: &str) {
        match view {
            ProviderView::Found(_) | ProviderView::NotConfigured => {}
            ProviderView::NotFound => {
                self.not_found = true;
                self.notes.push(format!("{provider}: no account matches {}: {what}", declared(group)));
            }
            ProviderView::Ambiguous { candidates } => {
                self.ambiguous = true;
                self.notes.push(format!(
                    "{provider}: {} matches more than one account ({}): remedy never guesses, \
                     name the account by objectGuid; {what}",
                    declared(group),
                    candidates.join("; ")
                ));
            }
            ProviderView::Unavailable { error } => {
                self.unavailable = true;
                self.notes.push(format!("{provider} unavailable ({error}): {what}"));
            }
        }
    }

    /// Sorts the actions into execution order, fills in their before/after values by simulating
    /// them one after the other, and sums up the status.
    pub fn finish(mut self, group: &Group<'_>, now: DateTime<Utc>) -> IdentityPlan {
        self.actions.sort_by_key(|a| a.action);
        let mut ad = group.ad_account().cloned();
        let mut entra = group.entra_user().cloned();
        for planned in &mut self.actions {
            planned.before = planned.action.value_on(ad.as_ref(), entra.as_ref());
            simulate(planned.action, &mut ad, &mut entra, now);
            planned.after = planned.action.value_on(ad.as_ref(), entra.as_ref());
        }
        // A blocked item against the account as the planned actions leave it.
        for blocked in &mut self.blocked {
            let (mut ad_then, mut entra_then) = (ad.clone(), entra.clone());
            simulate(blocked.action, &mut ad_then, &mut entra_then, now);
            blocked.before = blocked.action.value_on(ad.as_ref(), entra.as_ref());
            blocked.after = blocked.action.value_on(ad_then.as_ref(), entra_then.as_ref());
        }
        let status = self.status(group);
        IdentityPlan {
            identity: group.identity.clone(),
            also_declared_as: group.also_declared_as.clone(),
            resolved: Resolved {
                ad_dn: group.ad_account().map(|a| a.dn.clone()),
                ad_object_guid: group.ad_account().map(|a| a.object_guid),
                entra_id: group.entra_user().map(|u| u.id.clone()),
            },
            manifests: group.manifest_names(),
            status,
            actions: self.actions,
            blocked: self.blocked,
            notes: self.notes,
        }
    }

    /// See [`IdentityStatus`] for the precedence.
    fn status(&self, group: &Group<'_>) -> IdentityStatus {
        let any = |pick: fn(&Disposition) -> bool| self.actions.iter().any(|a| pick(&a.disposition));
        if self.ambiguous {
            IdentityStatus::Ambiguous
        } else if self.not_found {
            IdentityStatus::NotFound
        } else if any(|d| matches!(d, Disposition::Denied { .. })) {
            IdentityStatus::Denied
        } else if self.unavailable {
            IdentityStatus::ProviderUnavailable
        } else if any(|d| matches!(d, Disposition::Held { .. })) {
            IdentityStatus::Held
        } else if !self.blocked.is_empty() {
            IdentityStatus::Blocked
        } else if any(|d| *d == Disposition::Allowed) {
            IdentityStatus::Pending
        } else if group.active.is_empty() && !group.suspended.is_empty() {
            IdentityStatus::Suspended
        } else if group.active.is_empty() && !group.released.is_empty() {
            IdentityStatus::Released
        } else {
            IdentityStatus::Converged
        }
    }
}

fn declared(group: &Group<'_>) -> String {
    std::iter::once(&group.identity)
        .chain(&group.also_declared_as)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `action` does to the observed accounts, as the directory would do it.
fn simulate(action: Action, ad: &mut Option<AdAccount>, entra: &mut Option<EntraUser>, now: DateTime<Utc>) {
    if let Some(account) = ad {
        action.apply_to_ad(account, now);
    }
    if let Some(user) = entra {
        action.apply_to_entra(user, now);
    }
}

/// Plans what the group's active manifests want. Suspended manifests only get a note.
pub(super) fn plan_group(
    group: &Group<'_>,
    desired: &Desired,
    input: &PlanInput<'_>,
    warnings: &mut Vec<String>,
) -> Work {
    let mut work = Work::default();
    for suspended in &group.suspended {
        work.notes.push(format!(
            "{} is suspended (spec.suspend: true): nothing is planned for it and it is not released",
            suspended.manifest.name
        ));
    }
    if desired.has_ad_items() {
        match &group.ad {
            ProviderView::Found(account) => plan_ad(account, desired, input.now, &mut work),
            ProviderView::NotConfigured => {
                not_configured(Provider::ActiveDirectory, ad_items(desired), desired, &mut work)
            }
            view => work.provider_trouble(
                Provider::ActiveDirectory,
                group,
                view,
                "the activeDirectory items are not planned",
            ),
        }
    }
    if desired.has_entra_items() {
        match &group.entra {
            ProviderView::Found(user) => plan_entra(group, user, desired, input, &mut work),
            ProviderView::NotConfigured => not_configured(Provider::EntraId, entra_items(desired), desired, &mut work),
            view => work.provider_trouble(Provider::EntraId, group, view, "the entraId items are not planned"),
        }
    }
    synced_user_warning(group, desired, warnings, &mut work);
    work
}

/// (field, the action it would take, who asks) for every declared AD item.
fn ad_items(desired: &Desired) -> Vec<(&'static str, Action, Vec<ManifestName>)> {
    let mut items = Vec::new();
    if let Some(want) = &desired.disabled {
        let action = if want.value { Action::DisableAccount } else { Action::EnableAccount };
        items.push(("activeDirectory.disabled", action, want.provenance.clone()));
    }
    if let Some(shot) = &desired.must_change_password {
        items.push(("activeDirectory.mustChangePassword", Action::ForcePasswordChange, shot.provenance.clone()));
    }
    items
}

fn entra_items(desired: &Desired) -> Vec<(&'static str, Action, Vec<ManifestName>)> {
    let mut items = Vec::new();
    if let Some(want) = &desired.suspended {
        let action = if want.value { Action::SuspendUser } else { Action::UnsuspendUser };
        items.push(("entraId.suspended", action, want.provenance.clone()));
    }
    if let Some(shot) = &desired.revoke_sessions {
        items.push(("entraId.revokeSessions", Action::RevokeSessions, shot.provenance.clone()));
    }
    if let Some(shot) = &desired.confirm_compromised {
        items.push(("entraId.confirmCompromised", Action::ConfirmCompromised, shot.provenance.clone()));
    }
    items
}

fn not_configured(
    provider: Provider,
    items: Vec<(&'static str, Action, Vec<ManifestName>)>,
    desired: &Desired,
    work: &mut Work,
) {
    for (field, action, provenance) in items {
        work.blocked.push(BlockedItem {
            action,
            reason: BlockReason::ProviderNotConfigured,
            spec_reason: desired.reason(&provenance),
            provenance,
            message: format!(
                "{field}: provider not configured: {provider} is not configured in remedy.yaml, \
                 so this item is neither checked nor applied"
            ),
            before: String::new(),
            after: String::new(),
        });
    }
}

fn state_action(want: &StateWant, is_set: bool, set: Action, unset: Action) -> Option<Action> {
    match (want.value, is_set) {
        (true, false) => Some(set),
        (false, true) => Some(unset),
        _ => None,
    }
}

fn plan_ad(account: &AdAccount, desired: &Desired, now: DateTime<Utc>, work: &mut Work) {
    if let Some(want) = &desired.disabled {
        if let Some(action) = state_action(want, account.is_disabled(), Action::DisableAccount, Action::EnableAccount) {
            work.add(action, want.provenance.clone(), desired.reason(&want.provenance), Cause::Desired);
        }
    }
    let Some(shot) = &desired.must_change_password else {
        return;
    };
    if let Some(why) = password_changed(account, shot) {
        work.notes.push(format!("mustChangePassword is satisfied: {why}"));
        return;
    }
    if !account.password_never_expires() {
        work.add(
            Action::ForcePasswordChange,
            shot.provenance.clone(),
            desired.reason(&shot.provenance),
            Cause::Desired,
        );
        return;
    }
    let already_zero = account.pwd_last_set == PasswordLastSet::Zero;
    if desired.clear_never_expires.is_empty() {
        let hint = if already_zero {
            " pwdLastSet is already 0: clearing the flag alone would make that change take effect."
        } else {
            ""
        };
        work.blocked.push(BlockedItem {
            action: Action::ForcePasswordChange,
            reason: BlockReason::PasswordNeverExpires,
            provenance: shot.provenance.clone(),
            spec_reason: desired.reason(&shot.provenance),
            before: String::new(),
            after: String::new(),
            message: format!(
                "the account has \"password never expires\" (userAccountControl 0x{:x} includes \
                 DONT_EXPIRE_PASSWORD 0x10000): a DC accepts pwdLastSet=0 and ignores it, so the user \
                 would not be asked to change anything.{hint} Set \
                 activeDirectory.clearPasswordNeverExpires: true to let remedy clear the flag first, \
                 or clear it by hand.",
                account.user_account_control
            ),
        });
        return;
    }
    let clear_by = desired.clear_never_expires.clone();
    work.add(Action::ClearPasswordNeverExpires, clear_by.clone(), desired.reason(&clear_by), Cause::Desired);
    // Decide on the account as it will be once the flag is cleared: a pwdLastSet=0 set earlier
    // takes effect by itself then.
    let mut cleared = account.clone();
    Action::ClearPasswordNeverExpires.apply_to_ad(&mut cleared, now);
    if cleared.password_change_pending() {
        work.notes.push(
            "pwdLastSet is already 0: clearing \"password never expires\" makes that forced change \
             take effect, no new force is needed"
                .to_owned(),
        );
    } else {
        work.add(
            Action::ForcePasswordChange,
            shot.provenance.clone(),
            desired.reason(&shot.provenance),
            Cause::Desired,
        );
    }
}

/// Why a forced password change is not (or no longer) needed, if it is not.
fn password_changed(account: &AdAccount, shot: &OneShot) -> Option<String> {
    if account.password_change_pending() {
        return Some("a forced change is pending (pwdLastSet=0 and the DC reports the password expired)".to_owned());
    }
    match account.pwd_last_set {
        PasswordLastSet::At(at) if at >= shot.since => Some(format!(
            "the password was changed at {}, after the manifest took effect at {}",
            time(at),
            time(shot.since)
        )),
        _ => None,
    }
}

fn plan_entra(group: &Group<'_>, user: &EntraUser, desired: &Desired, input: &PlanInput<'_>, work: &mut Work) {
    if let Some(want) = &desired.suspended {
        if let Some(action) = state_action(want, !user.account_enabled, Action::SuspendUser, Action::UnsuspendUser) {
            work.add(action, want.provenance.clone(), desired.reason(&want.provenance), Cause::Desired);
        }
    }
    if let Some(shot) = &desired.revoke_sessions {
        if user.guest {
            // Source: https://learn.microsoft.com/en-us/graph/api/user-revokesigninsessions
            // (external users sign in at their home tenant).
            work.blocked.push(BlockedItem {
                action: Action::RevokeSessions,
                reason: BlockReason::GuestUser,
                provenance: shot.provenance.clone(),
                spec_reason: desired.reason(&shot.provenance),
                before: String::new(),
                after: String::new(),
                message: "entraId.revokeSessions: not applicable: the user is a guest (userType Guest), who signs \
                          in at its home tenant, so revoking its sessions in this tenant would not end them. \
                          Suspend the guest here (entraId.suspended: true), or ask its home tenant to revoke them."
                    .to_owned(),
            });
        } else if Action::RevokeSessions.shows_on_entra(user, graph_precision(shot.since)) {
            work.notes.push(format!(
                "revokeSessions is satisfied: sessions were revoked at {}, after the manifest took effect at {}",
                Action::RevokeSessions.value_on_entra(user),
                time(shot.since)
            ));
        } else {
            work.add(Action::RevokeSessions, shot.provenance.clone(), desired.reason(&shot.provenance), Cause::Desired);
        }
    }
    if let Some(shot) = &desired.confirm_compromised {
        match compromise_confirmed(group, user, shot, input) {
            Some(why) => work.notes.push(format!("confirmCompromised is satisfied: {why}")),
            None => work.add(
                Action::ConfirmCompromised,
                shot.provenance.clone(),
                desired.reason(&shot.provenance),
                Cause::Desired,
            ),
        }
    }
}

/// An effective time as Microsoft Graph would write it: Graph reads times such as
/// signInSessionsValidFromDateTime back in whole seconds, so a revocation sent 0.2 s after a
/// manifest took effect at 10:20:36.81 reads back as 10:20:36, and must still count. AD's
/// pwdLastSet is a FILETIME (100 ns) and is compared as it is: a password set in the same second
/// but before the manifest took effect does not satisfy it.
fn graph_precision(since: DateTime<Utc>) -> DateTime<Utc> {
    since.trunc_subsecs(0)
}

/// Why confirming the compromise is not (or no longer) needed, if it is not.
fn compromise_confirmed(group: &Group<'_>, user: &EntraUser, shot: &OneShot, input: &PlanInput<'_>) -> Option<String> {
    let updated = user.risk_last_updated;
    if Action::ConfirmCompromised.shows_on_entra(user, shot.since) {
        return Some("the user is confirmed compromised".to_owned());
    }
    if matches!(user.risk_state, RiskState::Remediated | RiskState::Dismissed) {
        if let Some(at) = updated.filter(|at| *at >= graph_precision(shot.since)) {
            return Some(format!(
                "the risk was {} at {}, after the manifest took effect at {}: the user complied",
                user.risk_state,
                time(at),
                time(shot.since)
            ));
        }
    }
    // remedy confirmed it for this generation already and Identity Protection has moved on since
    // (a new detection, or an administrator's verdict): confirming is one-shot, not a state.
    let confirmed_at = input
        .remedy_changes
        .iter()
        .filter(|c| {
            c.action == Action::ConfirmCompromised
                && group.is_about(&c.identity, input.observed)
                && shot.provenance.contains(&c.manifest)
                && c.at >= shot.since
        })
        .map(|c| c.at)
        .max()?;
    let moved_at = updated.filter(|at| *at > confirmed_at)?;
    Some(format!(
        "remedy confirmed the compromise at {} and the risk state changed since ({} at {}): it is not confirmed again",
        time(confirmed_at),
        user.risk_state,
        time(moved_at)
    ))
}

/// AD is the source of authority for synced users: a cloud-only suspension lasts until the next
/// sync cycle puts `accountEnabled` back to AD's value.
fn synced_user_warning(group: &Group<'_>, desired: &Desired, warnings: &mut Vec<String>, work: &mut Work) {
    let Some(user) = group.entra_user() else {
        return;
    };
    let suspends = desired.suspended.as_ref().is_some_and(|want| want.value);
    let disables = desired.disabled.as_ref().is_some_and(|want| want.value);
    if user.on_premises_sync_enabled && suspends && !disables {
        let text = "directory sync will re-enable the cloud account while AD says enabled: the user \
                    is synced from AD (onPremisesSyncEnabled) and is suspended in Entra ID without \
                    activeDirectory.disabled: true";
        warnings.push(format!("{}: {text}", group.identity));
        work.notes.push(text.to_owned());
    }
}

/// Marks the `Desired` actions that redo a change remedy already made, for a manifest that still
/// asks for it, as drift corrections: they are not new changes and are never held. For items that
/// serve a one-shot, only a change made for the current generation (at or after its effective
/// time) counts.
pub(super) fn classify_drift(group: &Group<'_>, desired: &Desired, input: &PlanInput<'_>, work: &mut Work) {
    for planned in &mut work.actions {
        if planned.cause != Cause::Desired {
            continue;
        }
        let one_shot = matches!(
            planned.action,
            Action::ClearPasswordNeverExpires
                | Action::ForcePasswordChange
                | Action::RevokeSessions
                | Action::ConfirmCompromised
        );
        // Drift only when remedy's latest change to this attribute of the account is this very
        // action, for a manifest that asks for it: then someone else undid it. When remedy itself
        // changed it back since (a manifest toggled, a restore), doing it again is new.
        let attribute = |action: Action| action.inverse().map_or(action, |inverse| inverse.min(action));
        let latest = input
            .remedy_changes
            .iter()
            .filter(|change| {
                attribute(change.action) == attribute(planned.action)
                    && group.is_about(&change.identity, input.observed)
            })
            .max_by(|a, b| (a.at, a.action, &a.manifest).cmp(&(b.at, b.action, &b.manifest)));
        let done_before = latest.is_some_and(|change| {
            change.action == planned.action
                && planned.provenance.contains(&change.manifest)
                && (!one_shot || desired.effective_since(&change.manifest).is_some_and(|since| change.at >= since))
        });
        if done_before {
            planned.cause = Cause::DriftCorrection;
        }
    }
    let sync_reverted =
        work.actions.iter().any(|a| a.action == Action::SuspendUser && a.cause == Cause::DriftCorrection)
            && group.entra_user().is_some_and(|u| u.on_premises_sync_enabled)
            && group.ad_account().is_some_and(|a| !a.is_disabled());
    if sync_reverted {
        work.notes.push(
            "reverted by directory sync: remedy suspended this synced user before and \
             accountEnabled is true again while the AD account is still enabled; suspended again \
             until AD's disable syncs"
                .to_owned(),
        );
    }
}
