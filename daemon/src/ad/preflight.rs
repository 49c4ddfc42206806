//! What `remedy doctor` reads of a DC beyond what the provider needs: the rootDSE's clock and
//! host name, the domain's SID, and what the bound account may write on user accounts (the
//! constructed `allowedAttributesEffective`, which the DC computes from the ACLs for the account
//! that asks; Samba 4.17 computes it too). Read only: nothing here writes.

use chrono::{DateTime, Utc};
use ldap3::{Scope, SearchEntry, SearchResult};
use remedy_policies::config::Guardrails;
use remedy_policies::observed::{AdAccount, AdGroup};

use super::codec::{escape_filter_bytes, escape_filter_value, parse_generalized_time, sid_from_bytes, sid_to_bytes};
use super::directory::IN_CHAIN;
use super::entry::{account_from_entry, raw_values, texts, ATTRIBUTES};
use super::error::AdError;
use super::LdapDirectory;

/// The constructed attribute naming the attributes the bound account may write on an object.
const ALLOWED_ATTRIBUTES_EFFECTIVE: &str = "allowedAttributesEffective";

/// User accounts (not computers, which are `user` objects too).
const USERS: &str = "(&(objectCategory=person)(objectClass=user))";

/// What the rootDSE says of the DC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDse {
    /// `currentTime`: the DC's clock.
    pub current_time: Option<DateTime<Utc>>,
    pub dns_host_name: Option<String>,
    pub default_naming_context: Option<String>,
}

/// A user account and what the bound account may write on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WritableAccount {
    pub account: AdAccount,
    pub writable: Vec<String>,
}

impl LdapDirectory {
    /// Reads the rootDSE (anonymous-readable, but read on the bound connection).
    pub async fn root_dse(&self) -> Result<RootDse, AdError> {
        let entry =
            self.read_base("", &["currentTime", "dnsHostName", "defaultNamingContext"]).await?.ok_or_else(|| {
                AdError::Decode { dn: String::new(), attribute: "currentTime", message: "no rootDSE".into() }
            })?;
        let first = |name: &str| texts(&entry, name).into_iter().next();
        let current_time = match first("currentTime") {
            Some(text) => Some(parse_generalized_time(&text).ok_or_else(|| AdError::Decode {
                dn: String::new(),
                attribute: "currentTime",
                message: format!("{text:?} is not a generalized time"),
            })?),
            None => None,
        };
        Ok(RootDse {
            current_time,
            dns_host_name: first("dnsHostName"),
            default_naming_context: first("defaultNamingContext"),
        })
    }

    /// The domain's naming context and SID (the `objectSid` of the naming context's head).
    pub async fn domain(&self) -> Result<(String, String), AdError> {
        let base = self.inner().naming_context().await?.to_owned();
        let entry = self.read_base(&base, &["objectSid"]).await?;
        let sid = entry
            .as_ref()
            .and_then(|e| raw_values(e, "objectSid").first().and_then(|b| sid_from_bytes(b)))
            .ok_or_else(|| AdError::Decode {
                dn: base.clone(),
                attribute: "objectSid",
                message: "the naming context's head has no domain SID".into(),
            })?;
        Ok((base, sid))
    }

    /// The domain's protected groups (the AdminSDHolder set by SID, `protectedGroups`) and the
    /// groups nested in them: the provider's own lookup ([`crate::ad::AdDirectory::privileged_groups`]).
    pub async fn privileged_groups_of_domain(&self, domain_sid: &str) -> Result<Vec<AdGroup>, AdError> {
        self.inner().privileged_groups_of(&[domain_sid], self.configured_protected_groups()).await
    }

    /// The user accounts below `base` (narrowed by `filter`, if given) with what the bound
    /// account may write on each. `None` when `base` does not exist.
    pub async fn writable_users(
        &self,
        base: &str,
        filter: Option<&str>,
    ) -> Result<Option<Vec<WritableAccount>>, AdError> {
        let filter = match filter {
            Some(narrower) => format!("(&{USERS}{narrower})"),
            None => USERS.to_owned(),
        };
        let mut attributes = ATTRIBUTES.to_vec();
        attributes.push(ALLOWED_ATTRIBUTES_EFFECTIVE);
        let entries = match self.inner().search_paged(base, &filter, &attributes).await {
            Err(AdError::Ldap { code: 32, .. }) => return Ok(None),
            other => other?,
        };
        let mut accounts = entries
            .iter()
            .map(|entry| {
                let mut writable = texts(entry, ALLOWED_ATTRIBUTES_EFFECTIVE);
                writable.sort();
                account_from_entry(entry).map(|account| WritableAccount { account, writable })
            })
            .collect::<Result<Vec<_>, _>>()?;
        accounts.sort_by(|a, b| a.account.dn.cmp(&b.account.dn));
        Ok(Some(accounts))
    }

    async fn read_base(&self, dn: &str, attributes: &[&str]) -> Result<Option<SearchEntry>, AdError> {
        let inner = self.inner();
        let timeout = inner.pool.target.operation_timeout;
        let mut lease = inner.pool.lease().await?;
        inner.count_search();
        let attributes = attributes.to_vec();
        let entries = lease
            .run("read", Some(dn), |mut ldap| async move {
                let SearchResult(entries, result) =
                    ldap.with_timeout(timeout).search(dn, Scope::Base, "(objectClass=*)", attributes).await?;
                result.success().map(|_| entries)
            })
            .await?;
        Ok(entries.into_iter().map(SearchEntry::construct).next())
    }
}

/// Every account that may be protected, as one filter for [`LdapDirectory::writable_users`]
/// over the whole domain: members (at any depth) of the protected groups and those whose primary
/// group is one, adminCount=1, RID 500 and 502, and the accounts `protectedAccounts` and the
/// action account name. It may match more than the protected ones (a UPN is also tried as a
/// sAMAccountName): the plan's rule ([`remedy_policies::plan::protection_of`]) decides.
pub fn protected_accounts_filter(domain_sid: &str, groups: &[AdGroup], guardrails: &Guardrails) -> String {
    let mut clauses: Vec<String> = vec!["(adminCount=1)".to_owned()];
    for rid in [500, 502] {
        if let Some(bytes) = sid_to_bytes(&format!("{domain_sid}-{rid}")) {
            clauses.push(format!("(objectSid={})", escape_filter_bytes(&bytes)));
        }
    }
    for group in groups {
        clauses.push(format!("(memberOf:{IN_CHAIN}:={})", escape_filter_value(&group.dn)));
        if let Some(rid) = group.object_sid.strip_prefix(domain_sid).and_then(|rest| rest.strip_prefix('-')) {
            clauses.push(format!("(primaryGroupID={})", escape_filter_value(rid)));
        }
    }
    for name in guardrails.protected_accounts.iter().chain(&guardrails.action_account) {
        let name = name.trim();
        if let Some((_, sam)) = name.rsplit_once('\\') {
            clauses.push(format!("(sAMAccountName={})", escape_filter_value(sam.trim())));
        } else if name.contains('=') {
            clauses.push(format!("(distinguishedName={})", escape_filter_value(name)));
        } else if let Some((local, _)) = name.split_once('@') {
            clauses.push(format!("(userPrincipalName={})", escape_filter_value(name)));
            clauses.push(format!("(sAMAccountName={})", escape_filter_value(local)));
        } else {
            clauses.push(format!("(sAMAccountName={})", escape_filter_value(name)));
        }
    }
    format!("(|{})", clauses.concat())
}
