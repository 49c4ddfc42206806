//! Users and risky users as Graph sends them, turned into [`EntraUser`]; and the check that a
//! write took effect.

use chrono::{DateTime, Utc};
use remedy_policies::observed::{EntraUser, RiskState};
use remedy_policies::{Action, Provider};
use serde::Deserialize;
use serde_json::Value;

use super::error::EntraError;
use super::http::{encode_segment, user_path};

/// The user properties the plan needs, and no others (`$select`).
pub const USER_SELECT: &str =
    "id,userPrincipalName,accountEnabled,onPremisesSyncEnabled,signInSessionsValidFromDateTime,lastPasswordChangeDateTime,userType";

/// `GET /users/{id or UPN}?$select=...`.
pub fn user_request_path(key: &str) -> String {
    format!("{}?$select={USER_SELECT}", user_path(key))
}

/// `GET /identityProtection/riskyUsers/{id}` (object id only: risky users are not addressable by
/// UPN).
pub fn risky_user_path(id: &str) -> String {
    format!("/identityProtection/riskyUsers/{}", encode_segment(id))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphUser {
    id: String,
    #[serde(default)]
    user_principal_name: Option<String>,
    #[serde(default)]
    account_enabled: Option<bool>,
    #[serde(default)]
    on_premises_sync_enabled: Option<bool>,
    #[serde(default)]
    sign_in_sessions_valid_from_date_time: Option<DateTime<Utc>>,
    #[serde(default)]
    last_password_change_date_time: Option<DateTime<Utc>>,
    #[serde(default)]
    user_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphRiskyUser {
    #[serde(default)]
    risk_state: Option<RiskState>,
    /// Identity Protection is still working on the user's risk: what it shows may not include the
    /// latest confirmation yet.
    #[serde(default)]
    is_processing: bool,
    #[serde(default)]
    risk_last_updated_date_time: Option<DateTime<Utc>>,
}

/// Reads a user resource. Risk fields are left at "none": they come from another resource.
pub fn user_from_json(operation: &str, body: &Value) -> Result<EntraUser, EntraError> {
    let user = GraphUser::deserialize(body)
        .map_err(|e| EntraError::Decode { operation: operation.to_owned(), message: format!("not a user: {e}") })?;
    Ok(EntraUser {
        id: user.id,
        user_principal_name: user.user_principal_name.unwrap_or_default(),
        // Graph returns a boolean; a null would be a user whose sign-in was never blocked.
        account_enabled: user.account_enabled.unwrap_or(true),
        // null: never synced; false: synced once, now cloud-managed.
        on_premises_sync_enabled: user.on_premises_sync_enabled.unwrap_or(false),
        sign_in_sessions_valid_from: user.sign_in_sessions_valid_from_date_time,
        last_password_change: user.last_password_change_date_time,
        risk_state: RiskState::None,
        risk_last_updated: None,
        // "Member" or "Guest"; null on users created before the property existed (members).
        guest: user.user_type.is_some_and(|t| t.eq_ignore_ascii_case("Guest")),
    })
}

/// Copies the risk of a riskyUser resource onto `user`.
pub fn apply_risk(operation: &str, user: &mut EntraUser, body: &Value) -> Result<(), EntraError> {
    let risk = GraphRiskyUser::deserialize(body).map_err(|e| EntraError::Decode {
        operation: operation.to_owned(),
        message: format!("not a riskyUser: {e}"),
    })?;
    user.risk_state = risk.risk_state.unwrap_or_default();
    user.risk_last_updated = risk.risk_last_updated_date_time;
    if risk.is_processing {
        tracing::debug!(id = %user.id, risk_state = ?user.risk_state, "riskyUser isProcessing: its risk state may not be final yet");
    }
    Ok(())
}

/// Whether `after` shows the effect of `action`. `sent_at` is when the write that Graph accepted
/// was sent (remedy's clock); `clock_skew` is how far Graph's clock may be behind it. A read that
/// does not show it is [`EntraError::NotVisibleYet`]: Entra ID is eventually consistent, and the
/// read may have reached a replica that has not seen the write.
pub fn verify(
    action: Action,
    after: &EntraUser,
    sent_at: DateTime<Utc>,
    clock_skew: chrono::Duration,
) -> Result<(), EntraError> {
    if action.provider() != Provider::EntraId || action.shows_on_entra(after, sent_at - clock_skew) {
        return Ok(());
    }
    let shown = action.value_on_entra(after);
    let reason = match action {
        Action::RevokeSessions => format!(
            "signInSessionsValidFromDateTime reads back {shown}, not at or after the revocation sent at {} (allowing {}s of clock skew)",
            sent_at.to_rfc3339(),
            clock_skew.num_seconds()
        ),
        _ => {
            let mut expected = after.clone();
            action.apply_to_entra(&mut expected, sent_at);
            format!("{} reads back {shown}, expected {}", action.attribute(), action.value_on_entra(&expected))
        }
    };
    Err(EntraError::NotVisibleYet {
        id: after.id.clone(),
        upn: after.user_principal_name.clone(),
        action,
        reason,
        sent_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn reads_a_selected_user_and_its_risk() {
        let body = json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id,...)/$entity",
            "id": "4fb72b9b-d0b0-4a35-8bc1-83f9a6488c48",
            "userPrincipalName": "Alice@contoso.com",
            "accountEnabled": false,
            "onPremisesSyncEnabled": null,
            "signInSessionsValidFromDateTime": "2026-11-20T10:00:00Z",
            "lastPasswordChangeDateTime": "2026-01-02T03:04:05Z"
        });
        let mut user = user_from_json("GET /users/x", &body).unwrap();
        assert!(!user.account_enabled);
        assert!(!user.on_premises_sync_enabled);
        assert_eq!(user.sign_in_sessions_valid_from, Some(Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap()));
        let risk = json!({"id": user.id, "riskState": "confirmedCompromised", "riskLevel": "high", "riskLastUpdatedDateTime": "2026-11-20T10:01:00Z"});
        apply_risk("GET /identityProtection/riskyUsers/x", &mut user, &risk).unwrap();
        assert_eq!(user.risk_state, RiskState::ConfirmedCompromised);
        let future = json!({"riskState": "somethingNew"});
        apply_risk("GET", &mut user, &future).unwrap();
        assert_eq!(user.risk_state, RiskState::UnknownFutureValue);
        assert!(user_from_json("GET", &json!({"error": {}})).is_err());
    }

    #[test]
    fn verification_needs_the_effect() {
        let sent = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
        let skew = chrono::Duration::minutes(2);
        let mut user =
            user_from_json("GET", &json!({"id": "1", "userPrincipalName": "a@x.com", "accountEnabled": true})).unwrap();
        let error = verify(Action::SuspendUser, &user, sent, skew).unwrap_err();
        assert!(error.to_string().contains("accountEnabled reads back true"), "{error}");
        assert!(matches!(error, EntraError::NotVisibleYet { .. }), "{error:?}");
        assert!(verify(Action::UnsuspendUser, &user, sent, skew).is_ok());
        assert!(verify(Action::RevokeSessions, &user, sent, skew).is_err());
        user.sign_in_sessions_valid_from = Some(sent - chrono::Duration::minutes(10));
        assert!(verify(Action::RevokeSessions, &user, sent, skew).is_err(), "an old revocation is not this one");
        user.sign_in_sessions_valid_from = Some(sent - chrono::Duration::seconds(30));
        assert!(verify(Action::RevokeSessions, &user, sent, skew).is_ok(), "within the clock skew");
        let error = verify(Action::ConfirmCompromised, &user, sent, skew).unwrap_err();
        assert!(error.to_string().contains("riskState reads back none, expected confirmedCompromised"), "{error}");
    }
}
