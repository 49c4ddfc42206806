//! The closed set of changes remedy can make, and what each one does to observed state.

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::observed::{uac, AdAccount, EntraUser, PasswordLastSet, RiskState};

/// Which directory an action is sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    ActiveDirectory,
    EntraId,
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Provider::ActiveDirectory => "active-directory",
            Provider::EntraId => "entra-id",
        })
    }
}

/// One change to one account. The declaration order is the order in which a plan runs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// AD: set ACCOUNTDISABLE.
    DisableAccount,
    /// AD: clear ACCOUNTDISABLE.
    EnableAccount,
    /// AD: clear DONT_EXPIRE_PASSWORD so that a forced change can take effect.
    ClearPasswordNeverExpires,
    /// AD: set DONT_EXPIRE_PASSWORD again (restore only).
    SetPasswordNeverExpires,
    /// AD: `pwdLastSet=0`, the user must change the password at next logon.
    ForcePasswordChange,
    /// AD: `pwdLastSet=-1`, withdraw a still-pending forced change (restore only).
    CancelForcedPasswordChange,
    /// Entra: `accountEnabled=false`.
    SuspendUser,
    /// Entra: `accountEnabled=true`.
    UnsuspendUser,
    /// Entra: revokeSignInSessions.
    RevokeSessions,
    /// Entra: Identity Protection confirmCompromised.
    ConfirmCompromised,
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::DisableAccount,
        Action::EnableAccount,
        Action::ClearPasswordNeverExpires,
        Action::SetPasswordNeverExpires,
        Action::ForcePasswordChange,
        Action::CancelForcedPasswordChange,
        Action::SuspendUser,
        Action::UnsuspendUser,
        Action::RevokeSessions,
        Action::ConfirmCompromised,
    ];

    pub fn provider(self) -> Provider {
        match self {
            Action::DisableAccount
            | Action::EnableAccount
            | Action::ClearPasswordNeverExpires
            | Action::SetPasswordNeverExpires
            | Action::ForcePasswordChange
            | Action::CancelForcedPasswordChange => Provider::ActiveDirectory,
            Action::SuspendUser | Action::UnsuspendUser | Action::RevokeSessions | Action::ConfirmCompromised => {
                Provider::EntraId
            }
        }
    }

    /// The action that undoes this one on release, where one exists. Revoked sessions and a
    /// confirmed compromise cannot be taken back.
    pub fn inverse(self) -> Option<Action> {
        match self {
            Action::DisableAccount => Some(Action::EnableAccount),
            Action::EnableAccount => Some(Action::DisableAccount),
            Action::ClearPasswordNeverExpires => Some(Action::SetPasswordNeverExpires),
            Action::SetPasswordNeverExpires => Some(Action::ClearPasswordNeverExpires),
            Action::ForcePasswordChange => Some(Action::CancelForcedPasswordChange),
            Action::CancelForcedPasswordChange => Some(Action::ForcePasswordChange),
            Action::SuspendUser => Some(Action::UnsuspendUser),
            Action::UnsuspendUser => Some(Action::SuspendUser),
            Action::RevokeSessions | Action::ConfirmCompromised => None,
        }
    }

    /// The attribute the action writes, for history and display.
    pub fn attribute(self) -> &'static str {
        match self {
            Action::DisableAccount
            | Action::EnableAccount
            | Action::ClearPasswordNeverExpires
            | Action::SetPasswordNeverExpires => "userAccountControl",
            Action::ForcePasswordChange | Action::CancelForcedPasswordChange => "pwdLastSet",
            Action::SuspendUser | Action::UnsuspendUser => "accountEnabled",
            Action::RevokeSessions => "signInSessionsValidFromDateTime",
            Action::ConfirmCompromised => "riskState",
        }
    }

    /// Applies the action's intended effect to an observed AD account, as a DC would.
    /// Returns false for Entra actions (nothing to do here).
    pub fn apply_to_ad(self, account: &mut AdAccount, now: DateTime<Utc>) -> bool {
        let uac = &mut account.user_account_control;
        match self {
            Action::DisableAccount => *uac |= uac::ACCOUNT_DISABLE,
            Action::EnableAccount => *uac &= !uac::ACCOUNT_DISABLE,
            Action::ClearPasswordNeverExpires => *uac &= !uac::DONT_EXPIRE_PASSWORD,
            Action::SetPasswordNeverExpires => *uac |= uac::DONT_EXPIRE_PASSWORD,
            Action::ForcePasswordChange => account.pwd_last_set = PasswordLastSet::Zero,
            Action::CancelForcedPasswordChange => account.pwd_last_set = PasswordLastSet::At(now),
            _ => return false,
        }
        // The DC derives UF_PASSWORD_EXPIRED: pwdLastSet=0 counts only without never-expires.
        let expired = account.pwd_last_set == PasswordLastSet::Zero && !account.password_never_expires();
        if expired {
            account.user_account_control_computed |= uac::PASSWORD_EXPIRED;
        } else {
            account.user_account_control_computed &= !uac::PASSWORD_EXPIRED;
        }
        true
    }

    /// Applies the action's intended effect to an observed Entra user, as Graph would.
    /// Returns false for AD actions.
    pub fn apply_to_entra(self, user: &mut EntraUser, now: DateTime<Utc>) -> bool {
        match self {
            Action::SuspendUser => user.account_enabled = false,
            Action::UnsuspendUser => user.account_enabled = true,
            Action::RevokeSessions => user.sign_in_sessions_valid_from = Some(now),
            Action::ConfirmCompromised => {
                user.risk_state = RiskState::ConfirmedCompromised;
                user.risk_last_updated = Some(now);
            }
            _ => return false,
        }
        true
    }
}

/// What the directory shows for an action: the value of the attribute it writes, and whether the
/// account shows its effect. The one place these are read, so that a plan's before/after, an action
/// report's read-back, a history record and a recovery all say the same thing for the same account.
///
/// One notation per attribute: userAccountControl in hex (`0x202`); pwdLastSet as `0` or a time in
/// whole seconds (`2026-11-20T10:00:00Z`), followed by ` (change pending)` while the DC reports the
/// password expired; accountEnabled `true`/`false`; signInSessionsValidFromDateTime a time in whole
/// seconds, or `(not set)`; riskState as Graph spells it (`confirmedCompromised`).
impl Action {
    /// The attribute this action writes, as its provider's account shows it; `?` when that account
    /// was not observed.
    pub fn value_on(self, ad: Option<&AdAccount>, entra: Option<&EntraUser>) -> String {
        match (self.provider(), ad, entra) {
            (Provider::ActiveDirectory, Some(account), _) => self.value_on_ad(account),
            (Provider::EntraId, _, Some(user)) => self.value_on_entra(user),
            _ => UNKNOWN.to_owned(),
        }
    }

    /// The attribute this action writes, as `account` shows it. `?` for an Entra ID action.
    pub fn value_on_ad(self, account: &AdAccount) -> String {
        match self {
            Action::DisableAccount
            | Action::EnableAccount
            | Action::ClearPasswordNeverExpires
            | Action::SetPasswordNeverExpires => format!("{:#x}", account.user_account_control),
            Action::ForcePasswordChange | Action::CancelForcedPasswordChange => {
                let value = match account.pwd_last_set {
                    PasswordLastSet::Zero => "0".to_owned(),
                    PasswordLastSet::At(at) => shown_time(at),
                };
                if account.password_change_pending() {
                    format!("{value} (change pending)")
                } else {
                    value
                }
            }
            Action::SuspendUser | Action::UnsuspendUser | Action::RevokeSessions | Action::ConfirmCompromised => {
                UNKNOWN.to_owned()
            }
        }
    }

    /// The attribute this action writes, as `user` shows it. `?` for an AD action.
    pub fn value_on_entra(self, user: &EntraUser) -> String {
        match self {
            Action::SuspendUser | Action::UnsuspendUser => user.account_enabled.to_string(),
            Action::RevokeSessions => {
                user.sign_in_sessions_valid_from.map_or_else(|| "(not set)".to_owned(), shown_time)
            }
            Action::ConfirmCompromised => user.risk_state.to_string(),
            Action::DisableAccount
            | Action::EnableAccount
            | Action::ClearPasswordNeverExpires
            | Action::SetPasswordNeverExpires
            | Action::ForcePasswordChange
            | Action::CancelForcedPasswordChange => UNKNOWN.to_owned(),
        }
    }

    /// Whether `account` shows this action's effect (false for an Entra ID action). A forced
    /// password change shows while it is requested (pwdLastSet=0), whether or not the DC lets it
    /// take effect.
    pub fn shows_on_ad(self, account: &AdAccount) -> bool {
        match self {
            Action::DisableAccount => account.is_disabled(),
            Action::EnableAccount => !account.is_disabled(),
            Action::ClearPasswordNeverExpires => !account.password_never_expires(),
            Action::SetPasswordNeverExpires => account.password_never_expires(),
            Action::ForcePasswordChange => account.pwd_last_set == PasswordLastSet::Zero,
            Action::CancelForcedPasswordChange => account.pwd_last_set != PasswordLastSet::Zero,
            Action::SuspendUser | Action::UnsuspendUser | Action::RevokeSessions | Action::ConfirmCompromised => false,
        }
    }

    /// Whether `user` shows this action's effect (false for an AD action). Revoked sessions show
    /// only as a revocation at or after `since` (an older one is not this one); the caller says how
    /// much earlier than its own time that may be (Graph's clock and precision). The other actions
    /// leave a state, and `since` does not matter to them.
    pub fn shows_on_entra(self, user: &EntraUser, since: DateTime<Utc>) -> bool {
        match self {
            Action::SuspendUser => !user.account_enabled,
            Action::UnsuspendUser => user.account_enabled,
            Action::RevokeSessions => user.sign_in_sessions_valid_from.is_some_and(|at| at >= since),
            Action::ConfirmCompromised => user.risk_state == RiskState::ConfirmedCompromised,
            Action::DisableAccount
            | Action::EnableAccount
            | Action::ClearPasswordNeverExpires
            | Action::SetPasswordNeverExpires
            | Action::ForcePasswordChange
            | Action::CancelForcedPasswordChange => false,
        }
    }
}

/// The value shown for an account that was not observed, or an attribute of the other provider.
const UNKNOWN: &str = "?";

/// A time as values show it: UTC, whole seconds (Graph's precision; pwdLastSet's 100 ns add nothing
/// a reader needs).
fn shown_time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_value(self).ok().and_then(|v| v.as_str().map(str::to_owned));
        f.write_str(text.as_deref().unwrap_or("?"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverses_are_involutions() {
        for action in Action::ALL {
            if let Some(inverse) = action.inverse() {
                assert_eq!(inverse.inverse(), Some(action));
                assert_eq!(inverse.provider(), action.provider());
            }
        }
    }

    use chrono::TimeZone;
    use uuid::Uuid;

    fn at(secs: i64, millis: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()
            + chrono::Duration::seconds(secs)
            + chrono::Duration::milliseconds(i64::from(millis))
    }

    fn ad_account(user_account_control: u32, pwd_last_set: PasswordLastSet, computed: u32) -> AdAccount {
        AdAccount {
            dn: "CN=alice,OU=Staff,DC=remedy,DC=test".into(),
            object_guid: Uuid::nil(),
            object_sid: "S-1-5-21-1-2-3-1104".into(),
            sam_account_name: "alice".into(),
            user_principal_name: None,
            user_account_control,
            pwd_last_set,
            user_account_control_computed: computed,
            member_of: vec![],
            primary_group_id: None,
            admin_count: false,
            when_changed: None,
            usn_changed: None,
        }
    }

    fn entra_user(account_enabled: bool, sessions_from: Option<DateTime<Utc>>, risk_state: RiskState) -> EntraUser {
        EntraUser {
            id: "4f0a0007-5c1e-4b8a-9d2e-00000000a007".into(),
            user_principal_name: "alice@contoso.com".into(),
            account_enabled,
            on_premises_sync_enabled: false,
            sign_in_sessions_valid_from: sessions_from,
            last_password_change: None,
            risk_state,
            risk_last_updated: None,
            guest: false,
        }
    }

    /// One AD account state: the values shown for userAccountControl and pwdLastSet, and whether
    /// it shows each AD action, in [`Action::ALL`]'s order.
    struct AdCase {
        state: &'static str,
        account: AdAccount,
        user_account_control: &'static str,
        pwd_last_set: &'static str,
        shows: [bool; 6],
    }

    fn ad_cases() -> Vec<AdCase> {
        let set = PasswordLastSet::At(at(-3600, 123));
        let zero = PasswordLastSet::Zero;
        #[rustfmt::skip]
        let cases = vec![
            //                                                                                 disable enable  clearNE setNE   force   cancel
            AdCase { state: "enabled", account: ad_account(0x200, set, 0),
                user_account_control: "0x200", pwd_last_set: "2026-11-20T09:00:00Z", shows: [false, true,  true,  false, false, true ] },
            AdCase { state: "disabled", account: ad_account(0x202, set, 0),
                user_account_control: "0x202", pwd_last_set: "2026-11-20T09:00:00Z", shows: [true,  false, true,  false, false, true ] },
            AdCase { state: "password never expires", account: ad_account(0x1_0200, set, 0),
                user_account_control: "0x10200", pwd_last_set: "2026-11-20T09:00:00Z", shows: [false, true,  false, true,  false, true ] },
            AdCase { state: "forced change pending", account: ad_account(0x200, zero, uac::PASSWORD_EXPIRED),
                user_account_control: "0x200", pwd_last_set: "0 (change pending)", shows: [false, true,  true,  false, true,  false] },
            AdCase { state: "pwdLastSet=0 ignored: disabled, never expires", account: ad_account(0x1_0202, zero, 0),
                user_account_control: "0x10202", pwd_last_set: "0", shows: [true,  false, false, true,  true,  false] },
            AdCase { state: "no flags at all", account: ad_account(0, set, 0),
                user_account_control: "0x0", pwd_last_set: "2026-11-20T09:00:00Z", shows: [false, true,  true,  false, false, true ] },
        ];
        cases
    }

    /// One Entra user state: the values shown for accountEnabled, signInSessionsValidFromDateTime
    /// and riskState, and whether it shows each Entra action (revocations counted from `at(0, 0)`),
    /// in [`Action::ALL`]'s order.
    struct EntraCase {
        state: &'static str,
        user: EntraUser,
        account_enabled: &'static str,
        sessions: &'static str,
        risk: &'static str,
        shows: [bool; 4],
    }

    fn entra_cases() -> Vec<EntraCase> {
        #[rustfmt::skip]
        let cases = vec![
            //                                                                                   suspend unsusp. revoke  confirm
            EntraCase { state: "enabled, never revoked, no risk", user: entra_user(true, None, RiskState::None),
                account_enabled: "true", sessions: "(not set)", risk: "none", shows: [false, true,  false, false] },
            EntraCase { state: "suspended, revoked since, at risk", user: entra_user(false, Some(at(0, 500)), RiskState::AtRisk),
                account_enabled: "false", sessions: "2026-11-20T10:00:00Z", risk: "atRisk", shows: [true,  false, true,  false] },
            EntraCase { state: "revoked just before, confirmed compromised", user: entra_user(true, Some(at(-1, 0)), RiskState::ConfirmedCompromised),
                account_enabled: "true", sessions: "2026-11-20T09:59:59Z", risk: "confirmedCompromised", shows: [false, true,  false, true ] },
            EntraCase { state: "suspended, revoked at that very time, remediated", user: entra_user(false, Some(at(0, 0)), RiskState::Remediated),
                account_enabled: "false", sessions: "2026-11-20T10:00:00Z", risk: "remediated", shows: [true,  false, true,  false] },
            EntraCase { state: "a risk state Graph added later", user: entra_user(true, None, RiskState::UnknownFutureValue),
                account_enabled: "true", sessions: "(not set)", risk: "unknownFutureValue", shows: [false, true,  false, false] },
        ];
        cases
    }

    #[test]
    fn what_an_ad_account_shows_for_each_action() {
        let someone_in_entra = entra_user(false, Some(at(0, 0)), RiskState::ConfirmedCompromised);
        for case in ad_cases() {
            let account = &case.account;
            for (i, action) in Action::ALL.into_iter().enumerate() {
                let about = format!("{}: {action}", case.state);
                if action.provider() == Provider::EntraId {
                    assert_eq!(action.value_on_ad(account), "?", "{about}");
                    assert!(!action.shows_on_ad(account), "{about}");
                    continue;
                }
                let expected = match action.attribute() {
                    "pwdLastSet" => case.pwd_last_set,
                    _ => case.user_account_control,
                };
                assert_eq!(action.value_on_ad(account), expected, "{about}");
                assert_eq!(action.value_on(Some(account), Some(&someone_in_entra)), expected, "{about}");
                assert_eq!(action.value_on(None, Some(&someone_in_entra)), "?", "{about}: AD not observed");
                assert_eq!(action.shows_on_ad(account), case.shows[i], "{about}");
                assert!(!action.shows_on_entra(&someone_in_entra, at(0, 0)), "{about}");
            }
        }
    }

    #[test]
    fn what_an_entra_user_shows_for_each_action() {
        let since = at(0, 0);
        let someone_in_ad = ad_account(0x1_0202, PasswordLastSet::Zero, 0);
        for case in entra_cases() {
            let user = &case.user;
            for (i, action) in Action::ALL.into_iter().enumerate() {
                let about = format!("{}: {action}", case.state);
                if action.provider() == Provider::ActiveDirectory {
                    assert_eq!(action.value_on_entra(user), "?", "{about}");
                    assert!(!action.shows_on_entra(user, since), "{about}");
                    continue;
                }
                let expected = match action {
                    Action::SuspendUser | Action::UnsuspendUser => case.account_enabled,
                    Action::RevokeSessions => case.sessions,
                    _ => case.risk,
                };
                assert_eq!(action.value_on_entra(user), expected, "{about}");
                assert_eq!(action.value_on(Some(&someone_in_ad), Some(user)), expected, "{about}");
                assert_eq!(action.value_on(Some(&someone_in_ad), None), "?", "{about}: Entra ID not observed");
                assert_eq!(action.shows_on_entra(user, since), case.shows[i - 6], "{about}");
                assert!(!action.shows_on_ad(&someone_in_ad), "{about}");
            }
        }
    }

    /// What the simulation of an action leaves is what the directory shows for it, from every state;
    /// its inverse, applied after it, no longer shows it.
    #[test]
    fn an_applied_action_shows() {
        let now = at(60, 250);
        for case in ad_cases() {
            for action in Action::ALL.into_iter().filter(|a| a.provider() == Provider::ActiveDirectory) {
                let mut account = case.account.clone();
                action.apply_to_ad(&mut account, now);
                assert!(action.shows_on_ad(&account), "{}: {action}: {account:?}", case.state);
                let inverse = action.inverse().expect("every AD action has an inverse");
                inverse.apply_to_ad(&mut account, now);
                assert!(!action.shows_on_ad(&account), "{}: {action} then {inverse}", case.state);
            }
        }
        for case in entra_cases() {
            for action in Action::ALL.into_iter().filter(|a| a.provider() == Provider::EntraId) {
                let mut user = case.user.clone();
                action.apply_to_entra(&mut user, now);
                assert!(action.shows_on_entra(&user, now), "{}: {action}: {user:?}", case.state);
                if let Some(inverse) = action.inverse() {
                    inverse.apply_to_entra(&mut user, now);
                    assert!(!action.shows_on_entra(&user, now), "{}: {action} then {inverse}", case.state);
                }
            }
        }
    }

    #[test]
    fn display_is_kebab_case() {
        assert_eq!(Action::ForcePasswordChange.to_string(), "force-password-change");
        assert_eq!(Provider::EntraId.to_string(), "entra-id");
    }
}
