//! The Active Directory provider: observes accounts and applies actions over LDAP.
//!
//! - [`AdDirectory`] is what the controller uses; [`LdapDirectory`] implements it against a DC.
//! - Observation resolves many identities per request (chunked OR filters; paged results when a
//!   chunk can outgrow one page) and never guesses: an identity naming two accounts is
//!   `Ambiguous`.
//! - Every write is conditioned on the value observed and verified by reading the account back
//!   (read-backs of concurrent writes are coalesced into one search); a change the DC accepts but
//!   ignores is an error ([`AdError::NotEffective`]), not a success.
//! - The action account binds with its password (a simple bind: the password travels only in the
//!   bind request and is never formatted, see [`crate::secret::Secret`]) or with Kerberos from a
//!   keytab ([`kerberos`]).

pub mod changes;
mod codec;
mod directory;
mod entry;
pub mod error;
pub mod kerberos;
mod pool;
pub mod preflight;
pub mod resolve;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Utc};
use remedy_policies::observed::{AdAccount, AdGroup, ProviderView};
use remedy_policies::{Action, Identity};

pub use changes::{ChangeWatcher, ChangeWatcherStats, WatchedAccount};
pub use codec::{escape_filter_bytes, escape_filter_value, guid_to_bytes, sid_from_bytes, sid_to_bytes};
pub use directory::{verify, AdStats, LdapDirectory};
pub use entry::ATTRIBUTES;
pub use error::AdError;

/// An account before and after one applied action (the "after" as read back from the DC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdChange {
    pub before: AdAccount,
    pub after: AdAccount,
    /// The URL of the DC the write went to (and was read back from).
    pub dc: String,
}

/// Active Directory as the controller sees it.
pub trait AdDirectory {
    /// One view per distinct identity: found, not found, or ambiguous. An error means the
    /// directory could not be asked at all (see [`AdError::is_transient`]).
    fn observe(
        &self,
        identities: &[Identity],
    ) -> impl Future<Output = Result<BTreeMap<Identity, ProviderView<AdAccount>>, AdError>> + Send;

    /// The protected groups of the accounts' domains and every group nested in them (see
    /// [`remedy_policies::privilege`]). An error means protection cannot be decided: nothing may
    /// be done to these accounts.
    fn privileged_groups(&self, accounts: &[&AdAccount]) -> impl Future<Output = Result<Vec<AdGroup>, AdError>> + Send;

    /// Applies one AD action to an account as observed, conditioned on that observation, and
    /// returns the account as read back once the effect is verified.
    fn apply(
        &self,
        account: &AdAccount,
        action: Action,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<AdChange, AdError>> + Send;
}
