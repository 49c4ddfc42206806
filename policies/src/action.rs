//! The closed set of changes remedy can make, and what each one does to observed state.

use std::fmt;

use chrono::{DateTime, Utc};
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

    /// Whether the observed AD account shows this action's effect (false for Entra ID actions). A
    /// forced password change shows while it is pending (pwdLastSet=0).
    pub fn shows_on_ad(self, account: &AdAccount) -> bool {
        match self {
            Action::DisableAccount => account.is_disabled(),
            Action::EnableAccount => !account.is_disabled(),
            Action::ClearPasswordNeverExpires => !account.password_never_expires(),
            Action::SetPasswordNeverExpires => account.password_never_expires(),
            Action::ForcePasswordChange => account.pwd_last_set == PasswordLastSet::Zero,
            Action::CancelForcedPasswordChange => account.pwd_last_set != PasswordLastSet::Zero,
            _ => false,
        }
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

    #[test]
    fn display_is_kebab_case() {
        assert_eq!(Action::ForcePasswordChange.to_string(), "force-password-change");
        assert_eq!(Provider::EntraId.to_string(), "entra-id");
    }
}
