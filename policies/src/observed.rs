//! Observed account state: what the providers saw in Active Directory and Entra ID.
//!
//! Plain data, filled by the daemon's providers (or read from a snapshot file by `remedy plan
//! --observed`), so the plan engine can be exercised without a directory.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::identity::Identity;
pub use crate::privilege::AdGroup;

/// userAccountControl bits remedy reads or writes.
pub mod uac {
    /// ACCOUNTDISABLE: the account cannot log on.
    pub const ACCOUNT_DISABLE: u32 = 0x2;
    /// NORMAL_ACCOUNT.
    pub const NORMAL_ACCOUNT: u32 = 0x200;
    /// DONT_EXPIRE_PASSWORD ("Password never expires"): a forced change does not take effect.
    pub const DONT_EXPIRE_PASSWORD: u32 = 0x1_0000;
    /// UF_LOCKOUT, in msDS-User-Account-Control-Computed.
    pub const LOCKOUT: u32 = 0x10;
    /// UF_PASSWORD_EXPIRED, in msDS-User-Account-Control-Computed: the only proof that a forced
    /// password change is really pending.
    pub const PASSWORD_EXPIRED: u32 = 0x80_0000;
}

/// `pwdLastSet` as the plan needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PasswordLastSet {
    /// `pwdLastSet=0`: a change at next logon was requested (effective only without
    /// DONT_EXPIRE_PASSWORD, see [`AdAccount::password_change_pending`]).
    Zero,
    /// The time the password was last set.
    At(DateTime<Utc>),
}

/// Seconds between 1601-01-01 (the FILETIME epoch) and 1970-01-01.
const FILETIME_UNIX_OFFSET_SECS: i64 = 11_644_473_600;

impl PasswordLastSet {
    /// Converts AD's FILETIME integer (100 ns intervals since 1601-01-01 UTC).
    pub fn from_filetime(value: i64) -> Self {
        if value <= 0 {
            return PasswordLastSet::Zero;
        }
        let secs = value / 10_000_000 - FILETIME_UNIX_OFFSET_SECS;
        let nanos = (value % 10_000_000) * 100;
        match Utc.timestamp_opt(secs, nanos as u32).single() {
            Some(at) => PasswordLastSet::At(at),
            None => PasswordLastSet::Zero,
        }
    }

    /// The FILETIME integer AD stores.
    pub fn to_filetime(self) -> i64 {
        match self {
            PasswordLastSet::Zero => 0,
            PasswordLastSet::At(at) => {
                (at.timestamp() + FILETIME_UNIX_OFFSET_SECS) * 10_000_000 + i64::from(at.timestamp_subsec_nanos() / 100)
            }
        }
    }
}

impl Serialize for PasswordLastSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            PasswordLastSet::Zero => serializer.serialize_i64(0),
            PasswordLastSet::At(at) => serializer.collect_str(&at.to_rfc3339()),
        }
    }
}

impl<'de> Deserialize<'de> for PasswordLastSet {
    /// Accepts `0`, a FILETIME integer, or an RFC 3339 time.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Int(v) => Ok(PasswordLastSet::from_filetime(v)),
            Raw::Text(t) => DateTime::parse_from_rfc3339(&t)
                .map(|at| PasswordLastSet::At(at.with_timezone(&Utc)))
                .map_err(|e| serde::de::Error::custom(format!("pwdLastSet {t:?}: {e}"))),
        }
    }
}

/// An Active Directory user as observed over LDAP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdAccount {
    pub dn: String,
    pub object_guid: Uuid,
    pub object_sid: String,
    pub sam_account_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_principal_name: Option<String>,
    pub user_account_control: u32,
    pub pwd_last_set: PasswordLastSet,
    /// msDS-User-Account-Control-Computed (constructed: must be asked for by name).
    #[serde(default)]
    pub user_account_control_computed: u32,
    /// Group DNs the account belongs to (direct, and transitive where the provider resolved them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
    /// primaryGroupID: the RID of the account's primary group (513, Domain Users, as a rule), a
    /// membership that `memberOf` does not show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_group_id: Option<u32>,
    /// adminCount=1: the account is, or was, protected by AdminSDHolder.
    #[serde(default)]
    pub admin_count: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_changed: Option<DateTime<Utc>>,
    /// uSNChanged, for change tracking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usn_changed: Option<i64>,
}

impl AdAccount {
    pub fn is_disabled(&self) -> bool {
        self.user_account_control & uac::ACCOUNT_DISABLE != 0
    }

    pub fn password_never_expires(&self) -> bool {
        self.user_account_control & uac::DONT_EXPIRE_PASSWORD != 0
    }

    /// A forced change is pending only when the DC itself says the password is expired: a DC
    /// accepts `pwdLastSet=0` on a never-expires account and ignores it.
    pub fn password_change_pending(&self) -> bool {
        self.pwd_last_set == PasswordLastSet::Zero && self.user_account_control_computed & uac::PASSWORD_EXPIRED != 0
    }

    /// The relative id (last SID component): 500 is the built-in Administrator, 502 krbtgt.
    pub fn rid(&self) -> Option<u32> {
        self.object_sid.rsplit('-').next()?.parse().ok()
    }
}

/// Identity Protection's riskState of a user (`riskyUser.riskState`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RiskState {
    #[default]
    None,
    ConfirmedSafe,
    Remediated,
    Dismissed,
    AtRisk,
    ConfirmedCompromised,
    #[serde(other)]
    UnknownFutureValue,
}

impl fmt::Display for RiskState {
    /// As Graph spells it (the serde name).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RiskState::None => "none",
            RiskState::ConfirmedSafe => "confirmedSafe",
            RiskState::Remediated => "remediated",
            RiskState::Dismissed => "dismissed",
            RiskState::AtRisk => "atRisk",
            RiskState::ConfirmedCompromised => "confirmedCompromised",
            RiskState::UnknownFutureValue => "unknownFutureValue",
        })
    }
}

/// An Entra ID user as observed over Microsoft Graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntraUser {
    pub id: String,
    pub user_principal_name: String,
    pub account_enabled: bool,
    /// Synced from on-premises AD: AD is the source of authority and directory sync reverts a
    /// cloud-only `accountEnabled` change while AD says enabled.
    #[serde(default)]
    pub on_premises_sync_enabled: bool,
    #[serde(default, rename = "signInSessionsValidFromDateTime", skip_serializing_if = "Option::is_none")]
    pub sign_in_sessions_valid_from: Option<DateTime<Utc>>,
    #[serde(default, rename = "lastPasswordChangeDateTime", skip_serializing_if = "Option::is_none")]
    pub last_password_change: Option<DateTime<Utc>>,
    #[serde(default)]
    pub risk_state: RiskState,
    #[serde(default, rename = "riskLastUpdatedDateTime", skip_serializing_if = "Option::is_none")]
    pub risk_last_updated: Option<DateTime<Utc>>,
    /// A guest (`userType: Guest`): an external user who signs in at its home tenant, so revoking
    /// its sessions in this tenant does not apply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guest: bool,
}

/// What one provider could say about one identity.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ProviderView<T> {
    Found(T),
    /// The provider answered and no account matches.
    NotFound,
    /// The identity named more than one account: never guessed.
    Ambiguous {
        candidates: Vec<String>,
    },
    /// The provider is not configured: nothing is planned for it.
    #[default]
    NotConfigured,
    /// The provider could not be asked (down, timing out): nothing is planned, status says why.
    Unavailable {
        error: String,
    },
}

impl<T> ProviderView<T> {
    pub fn found(&self) -> Option<&T> {
        match self {
            ProviderView::Found(t) => Some(t),
            _ => None,
        }
    }
}

/// Snapshot form: absent = not configured; `notFound: true`; `unavailable: "text"`;
/// `ambiguous: [dn, ...]`; otherwise the account itself.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RawView<T> {
    NotFound {
        #[serde(rename = "notFound")]
        not_found: bool,
    },
    Unavailable {
        unavailable: String,
    },
    Ambiguous {
        ambiguous: Vec<String>,
    },
    Found(T),
}

impl<T: Serialize + Clone> Serialize for ProviderView<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ProviderView::Found(t) => RawView::Found(t.clone()).serialize(serializer),
            ProviderView::NotFound => RawView::<T>::NotFound { not_found: true }.serialize(serializer),
            ProviderView::Ambiguous { candidates } => {
                RawView::<T>::Ambiguous { ambiguous: candidates.clone() }.serialize(serializer)
            }
            ProviderView::Unavailable { error } => {
                RawView::<T>::Unavailable { unavailable: error.clone() }.serialize(serializer)
            }
            ProviderView::NotConfigured => serializer.serialize_none(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ProviderView<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match Option::<RawView<T>>::deserialize(deserializer)? {
            None => ProviderView::NotConfigured,
            Some(RawView::NotFound { not_found: true }) => ProviderView::NotFound,
            Some(RawView::NotFound { not_found: false }) => ProviderView::NotConfigured,
            Some(RawView::Unavailable { unavailable }) => ProviderView::Unavailable { error: unavailable },
            Some(RawView::Ambiguous { ambiguous }) => ProviderView::Ambiguous { candidates: ambiguous },
            Some(RawView::Found(t)) => ProviderView::Found(t),
        })
    }
}

/// Everything observed about one declared identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Observation {
    #[serde(default, skip_serializing_if = "is_not_configured")]
    pub active_directory: ProviderView<AdAccount>,
    #[serde(default, skip_serializing_if = "is_not_configured")]
    pub entra_id: ProviderView<EntraUser>,
}

fn is_not_configured<T>(view: &ProviderView<T>) -> bool {
    matches!(view, ProviderView::NotConfigured)
}

/// The observed state of every identity a plan is about, keyed by the identity as declared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObservedState {
    #[serde(default)]
    pub accounts: BTreeMap<Identity, Observation>,
    /// The protected groups and every group nested in them, as read from the DC (see
    /// [`crate::privilege`]). `None` when they were not read (an offline snapshot without them):
    /// protection is then judged from each account's own `memberOf` and `primaryGroupID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privileged_groups: Option<Vec<AdGroup>>,
}

impl ObservedState {
    pub fn get(&self, identity: &Identity) -> Option<&Observation> {
        self.accounts.get(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetime_round_trips() {
        let at = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
        let ft = PasswordLastSet::At(at).to_filetime();
        assert_eq!(ft, 134_396_424_000_000_000);
        assert_eq!(PasswordLastSet::from_filetime(ft), PasswordLastSet::At(at));
        assert_eq!(PasswordLastSet::from_filetime(0), PasswordLastSet::Zero);
    }

    #[test]
    fn snapshot_views_parse() {
        let text = r#"
accounts:
  "sam:alice":
    activeDirectory:
      dn: CN=alice,OU=Staff,DC=remedy,DC=test
      objectGuid: 6f9619ff-8b86-d011-b42d-00c04fc964ff
      objectSid: S-1-5-21-1-2-3-1104
      samAccountName: alice
      userAccountControl: 512
      pwdLastSet: 2026-11-01T00:00:00Z
    entraId:
      notFound: true
  "sam:bob":
    activeDirectory:
      unavailable: "connection refused"
"#;
        let state: ObservedState = serde_yaml::from_str(text).unwrap();
        let alice = state.get(&"sam:alice".parse().unwrap()).unwrap();
        assert!(matches!(alice.active_directory, ProviderView::Found(ref a) if !a.is_disabled()));
        assert_eq!(alice.entra_id, ProviderView::NotFound);
        let bob = state.get(&"sam:bob".parse().unwrap()).unwrap();
        assert!(matches!(bob.active_directory, ProviderView::Unavailable { .. }));
        assert_eq!(bob.entra_id, ProviderView::NotConfigured);
    }

    #[test]
    fn risk_state_displays_as_graph_spells_it() {
        for state in [
            RiskState::None,
            RiskState::ConfirmedSafe,
            RiskState::Remediated,
            RiskState::Dismissed,
            RiskState::AtRisk,
            RiskState::ConfirmedCompromised,
            RiskState::UnknownFutureValue,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.to_string(), "{state:?}");
        }
    }

    #[test]
    fn pending_change_needs_the_computed_flag() {
        let mut account = AdAccount {
            dn: "CN=a".into(),
            object_guid: Uuid::nil(),
            object_sid: "S-1-5-21-1-2-3-500".into(),
            sam_account_name: "a".into(),
            user_principal_name: None,
            user_account_control: 0x200 | uac::DONT_EXPIRE_PASSWORD,
            pwd_last_set: PasswordLastSet::Zero,
            user_account_control_computed: 0,
            member_of: vec![],
            primary_group_id: None,
            admin_count: false,
            when_changed: None,
            usn_changed: None,
        };
        assert!(!account.password_change_pending());
        account.user_account_control_computed = uac::PASSWORD_EXPIRED;
        assert!(account.password_change_pending());
        assert_eq!(account.rid(), Some(500));
    }
}
