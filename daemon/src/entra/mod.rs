//! The Entra ID provider: observes users and applies actions over Microsoft Graph v1.0.
//!
//! - [`EntraDirectory`] is what the controller uses; [`GraphDirectory`] implements it against
//!   Graph as an app registration (client credentials grant with a client secret, a certificate
//!   or a federated token; one shared token, refreshed ahead of expiry and once after a 401).
//! - Observation reads many users per request: `$batch` of 20 `GET /users/{id|upn}?$select=...`,
//!   several batches in flight. Risk state (`GET /identityProtection/riskyUsers/{id}`) is read
//!   only for the identities the caller names ([`RiskReads`]): Identity Protection allows one
//!   request per second per tenant, for reads as for writes, so those reads are paced.
//! - Writes (suspend, unsuspend, revoke sessions) go 20 per `$batch`; confirmations of compromise
//!   go through the same paced Identity Protection lane, many users per request. Every write is
//!   read back and verified (a few reads, `verify_reads` apart by `verify_delay`); a write Graph
//!   accepted (2xx) whose effect the reads do not show yet is [`EntraError::NotVisibleYet`]:
//!   Entra ID is eventually consistent, so it is neither a success nor a failure but awaits
//!   confirmation by later reads (the controller's confirmation deadline decides when it is not
//!   effective). Revoking a guest's sessions is [`EntraError::NotApplicable`], never sent.
//! - Throttling: `Retry-After` honoured (seconds or HTTP date, top-level and per sub-request),
//!   exponential backoff with jitter otherwise, a retry budget, and only the failed part of a
//!   batch is sent again.
//! - The client secret, client assertions, federated tokens and access tokens are
//!   [`crate::secret::Secret`]s: never formatted; the certificate's private key is never shown.
//! - Change tracking: [`GraphDirectory::delta`] reads one round of Graph's delta query of users
//!   (every nextLink followed, only on the configured Graph host); an expired or unknown delta
//!   link is [`EntraError::DeltaExpired`], which asks for a full resync.
//! - Synced users: the cloud suspension is immediate but directory sync undoes it while AD says
//!   enabled; [`sync_reverted`] tells the controller when that happened.

mod credential;
mod delta;
mod directory;
pub mod error;
mod graph;
mod http;
mod lane;
pub mod retry;
mod token;
mod user;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};
use remedy_policies::manifest::Target;
use remedy_policies::observed::{EntraUser, ProviderView};
use remedy_policies::{Action, Identity};

pub use credential::CredentialKind;
pub use delta::{DeltaFrom, DeltaRound, DeltaUser, DELTA_SELECT};
pub use directory::{GraphDirectory, GraphOptions};
pub use error::EntraError;
pub use graph::{GraphRequest, GraphResponse, GraphStats, BATCH_LIMIT};
pub use http::{user_path, Endpoints};
pub use lane::CONFIRM_PATH;
pub use retry::RetryPolicy;
pub use token::AccessToken;
pub use user::risky_user_path;
pub use user::{verify, USER_SELECT};

/// How one identity is looked up in Entra ID.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntraLookup {
    /// The user's object id (the manifest's `entraObjectId`).
    Id(String),
    /// The userPrincipalName.
    Upn(String),
}

impl EntraLookup {
    /// The lookup for a manifest target: its `entraObjectId` when given, else its UPN, else the
    /// UPN of the AD account the target names (`ad_upn`, from observation). `None` when there is
    /// nothing to look up by.
    pub fn for_target(target: &Target, ad_upn: Option<&str>) -> Option<EntraLookup> {
        if let Some(id) = target.entra_object_id {
            return Some(EntraLookup::Id(id.hyphenated().to_string()));
        }
        match &target.identity {
            Identity::UserPrincipalName(upn) => Some(EntraLookup::Upn(upn.clone())),
            _ => ad_upn.filter(|upn| !upn.is_empty()).map(|upn| EntraLookup::Upn(upn.to_owned())),
        }
    }

    /// The id or UPN, as sent.
    pub fn value(&self) -> &str {
        match self {
            EntraLookup::Id(v) | EntraLookup::Upn(v) => v,
        }
    }

    /// Lower-case (Graph compares both case-insensitively), so that duplicates collapse.
    fn normalized(&self) -> EntraLookup {
        match self {
            EntraLookup::Id(v) => EntraLookup::Id(v.trim().to_lowercase()),
            EntraLookup::Upn(v) => EntraLookup::Upn(v.trim().to_lowercase()),
        }
    }
}

impl fmt::Display for EntraLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntraLookup::Id(v) => write!(f, "id:{v}"),
            EntraLookup::Upn(v) => write!(f, "upn:{v}"),
        }
    }
}

/// Whose Identity Protection risk state an observation reads.
///
/// Identity Protection allows one request per second per tenant, so each risk read costs a second:
/// read it where the plan needs it (identities whose manifests ask for `confirmCompromised`). A
/// user whose risk was not read, or could not be (no Entra ID P2 licence, no
/// `IdentityRiskyUser.Read.All`, throttled past the retry budget), comes back with
/// `riskState: unknownFutureValue`: never mistaken for a confirmed compromise nor for "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RiskReads<'a> {
    /// No risk state is read.
    None,
    /// Every observed user's.
    All,
    /// Only these identities'.
    For(&'a BTreeSet<Identity>),
}

impl RiskReads<'_> {
    pub fn wants(&self, identity: &Identity) -> bool {
        match self {
            RiskReads::None => false,
            RiskReads::All => true,
            RiskReads::For(set) => set.contains(identity),
        }
    }
}

/// A user before and after one applied action (the "after" as read back from Graph).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraChange {
    pub before: EntraUser,
    pub after: EntraUser,
}

/// Entra ID as the controller sees it.
pub trait EntraDirectory {
    /// One view per identity: found, not found, or unavailable (that user could not be read),
    /// with every found user's risk state: [`Self::observe_with_risk`] with [`RiskReads::All`].
    /// Each risk read costs a second (Identity Protection's limit): prefer `observe_with_risk`.
    fn observe(
        &self,
        lookups: &[(Identity, EntraLookup)],
    ) -> impl Future<Output = Result<BTreeMap<Identity, ProviderView<EntraUser>>, EntraError>> + Send {
        self.observe_with_risk(lookups, RiskReads::All)
    }

    /// One view per identity: found, not found, or unavailable (that user could not be read),
    /// with the risk state of the identities `risk` names. An error means Graph could not be
    /// asked at all (see [`EntraError::is_transient`]).
    fn observe_with_risk(
        &self,
        lookups: &[(Identity, EntraLookup)],
        risk: RiskReads<'_>,
    ) -> impl Future<Output = Result<BTreeMap<Identity, ProviderView<EntraUser>>, EntraError>> + Send;

    /// Applies one Entra action to a user as observed and returns the user as read back once the
    /// effect is verified.
    fn apply(
        &self,
        user: &EntraUser,
        action: Action,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<EntraChange, EntraError>> + Send;

    /// The batched path: applies every `(user, action)` (batches of 20, several in flight,
    /// confirmations through their paced lane) and returns one result per item, in order.
    fn apply_many(
        &self,
        items: &[(EntraUser, Action)],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Vec<Result<EntraChange, EntraError>>> + Send;
}

/// A cloud suspension that directory sync has undone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRevert {
    pub id: String,
    pub user_principal_name: String,
    /// When remedy's suspension was applied.
    pub suspended_at: DateTime<Utc>,
}

impl fmt::Display for SyncRevert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): reverted by directory sync: remedy suspended this user at {} and accountEnabled is true again; \
             the user is synced from on-premises AD (onPremisesSyncEnabled), which is the source of authority: \
             the durable disable is the AD one",
            self.user_principal_name,
            self.id,
            self.suspended_at.to_rfc3339()
        )
    }
}

/// Whether the observed `user` is a synced user that remedy suspended (at `suspended_at`, from
/// remedy's history, `None` when it never did or since unsuspended it) and that is enabled again:
/// drift caused by directory sync, to be reported as such and never as a success.
pub fn sync_reverted(user: &EntraUser, suspended_at: Option<DateTime<Utc>>) -> Option<SyncRevert> {
    let suspended_at = suspended_at?;
    (user.on_premises_sync_enabled && user.account_enabled).then(|| SyncRevert {
        id: user.id.clone(),
        user_principal_name: user.user_principal_name.clone(),
        suspended_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use remedy_policies::observed::RiskState;

    fn user(synced: bool, enabled: bool) -> EntraUser {
        EntraUser {
            id: "1".into(),
            user_principal_name: "alice@contoso.com".into(),
            account_enabled: enabled,
            on_premises_sync_enabled: synced,
            sign_in_sessions_valid_from: None,
            last_password_change: None,
            risk_state: RiskState::None,
            risk_last_updated: None,
            guest: false,
        }
    }

    #[test]
    fn sync_revert_needs_a_synced_user_enabled_after_remedy_suspended_it() {
        let at = Utc::now();
        let revert = sync_reverted(&user(true, true), Some(at)).unwrap();
        assert!(revert.to_string().contains("reverted by directory sync"), "{revert}");
        assert_eq!(sync_reverted(&user(true, false), Some(at)), None, "still suspended");
        assert_eq!(sync_reverted(&user(false, true), Some(at)), None, "cloud-only: someone else unsuspended it");
        assert_eq!(sync_reverted(&user(true, true), None), None, "remedy never suspended it");
    }

    #[test]
    fn lookups_prefer_the_object_id() {
        let id = uuid::Uuid::parse_str("4fb72b9b-d0b0-4a35-8bc1-83f9a6488c48").unwrap();
        let upn =
            Target { identity: Identity::user_principal_name("Alice@Contoso.com").unwrap(), entra_object_id: None };
        assert_eq!(EntraLookup::for_target(&upn, None), Some(EntraLookup::Upn("alice@contoso.com".into())));
        let by_id = Target { entra_object_id: Some(id), ..upn.clone() };
        assert_eq!(
            EntraLookup::for_target(&by_id, None),
            Some(EntraLookup::Id("4fb72b9b-d0b0-4a35-8bc1-83f9a6488c48".into()))
        );
        let sam = Target { identity: Identity::sam_account_name("alice").unwrap(), entra_object_id: None };
        assert_eq!(
            EntraLookup::for_target(&sam, Some("alice@contoso.com")),
            Some(EntraLookup::Upn("alice@contoso.com".into()))
        );
        assert_eq!(EntraLookup::for_target(&sam, None), None);
    }
}
