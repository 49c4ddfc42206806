//! Step 4: what remedy may touch, decided by the daemon's configuration, never by manifests.
//!
//! A protected account (RID 500, RID 502, the action account, `protectedAccounts`, members of
//! `protectedGroups` or `adminCount=1`) is denied on both providers: the Entra user is the same
//! person. Scope only concerns AD. When several guardrails apply, the first of [`Guardrail`]'s
//! declaration order is reported.

use std::collections::BTreeSet;

use super::engine::Work;
use super::merge::Group;
use super::{Disposition, Guardrail};
use crate::action::Provider;
use crate::config::Guardrails;
use crate::dn::{in_scope, rdns};
use crate::identity::Identity;
use crate::observed::{AdAccount, AdGroup, ObservedState, ProviderView};
use crate::privilege;

const RID_ADMINISTRATOR: u32 = 500;
const RID_KRBTGT: u32 = 502;

#[derive(Debug, Clone)]
struct Denial {
    guardrail: Guardrail,
    detail: String,
}

pub(super) fn judge(group: &Group<'_>, guardrails: &Guardrails, observed: &ObservedState, work: &mut Work) {
    let names = Names::of(group);
    let protections = protections(group.ad_account(), guardrails, observed.privileged_groups.as_deref(), &names);
    let exemption = exemption(guardrails, &names, &protections);
    let mut protection = None;
    for (denial, _) in protections {
        match exemption {
            Some(entry) => work.notes.push(format!(
                "allowProtected names {entry:?}, so the {} guardrail does not apply: {}",
                denial.guardrail.config_name(),
                denial.detail
            )),
            None => {
                protection.get_or_insert(denial);
            }
        }
    }
    let out_of_scope =
        group.ad_account().filter(|account| !in_scope(&account.dn, &guardrails.allowed_scopes)).map(|account| Denial {
            guardrail: Guardrail::OutOfScope,
            detail: format!(
                "{} is outside every allowedScopes base DN ({})",
                account.dn,
                guardrails.allowed_scopes.join("; ")
            ),
        });
    let ad = protection.clone().or(out_of_scope);
    hold_entra_while_ad_is_unavailable(group, work);
    for planned in &mut work.actions {
        let denial = match planned.provider {
            Provider::ActiveDirectory => ad.as_ref(),
            Provider::EntraId => protection.as_ref(),
        };
        if let Some(denial) = denial {
            planned.disposition = Disposition::Denied { guardrail: denial.guardrail, detail: denial.detail.clone() };
        }
    }
}

/// The `allowProtected` entry that exempts the account from its protections, if one does. krbtgt
/// and the action account cannot be exempted; naming them in allowProtected changes nothing, and
/// saying "exempt from ..." about them would mislead.
fn exemption<'g>(guardrails: &'g Guardrails, names: &Names, protections: &[(Denial, bool)]) -> Option<&'g String> {
    guardrails
        .allow_protected
        .iter()
        .find(|entry| names.matches(entry))
        .filter(|_| protections.iter().all(|(_, exemptable)| *exemptable))
}

/// Why an AD account is protected from remedy, as the plan's guardrails would say it (RID 500 or
/// 502, the action account, `protectedAccounts`, `protectedGroups` and the AdminSDHolder set given
/// the groups read, adminCount=1); `None` when it is not, or `allowProtected` exempts it. For
/// `remedy doctor`, which looks for the action account's rights on protected accounts.
pub fn protection_of(account: &AdAccount, guardrails: &Guardrails, privileged_groups: &[AdGroup]) -> Option<String> {
    let names = Names::of_account(account);
    let protections = protections(Some(account), guardrails, Some(privileged_groups), &names);
    if exemption(guardrails, &names, &protections).is_some() {
        return None;
    }
    protections.into_iter().next().map(|(denial, _)| denial.detail)
}

/// The protection that applies to an account known only by the name a manifest declares (a
/// preview without a directory, `remedy plan --base`): RID 500 or 502 of a declared objectSid, the
/// action account and `protectedAccounts` by sAMAccountName or userPrincipalName, and
/// `allowProtected` as the plan applies it. Group membership, adminCount and the account's other
/// names need the directory: `None` says only that the declared name protects nothing.
pub fn protection_by_name(identity: &Identity, guardrails: &Guardrails) -> Option<(Guardrail, String)> {
    let mut names = Names::default();
    let mut rid = None;
    match identity {
        Identity::SamAccountName(sam) => {
            names.sams.insert(sam.to_lowercase());
        }
        Identity::UserPrincipalName(upn) => {
            names.upns.insert(upn.to_lowercase());
        }
        Identity::ObjectSid(sid) => rid = sid.rsplit('-').next().and_then(|r| r.parse::<u32>().ok()),
        Identity::ObjectGuid(_) => {}
    }
    let mut protections = Vec::new();
    match rid {
        Some(RID_KRBTGT) => protections.push((
            Denial {
                guardrail: Guardrail::BuiltinAccount,
                detail: "krbtgt (RID 502) is never touched; allowProtected cannot exempt it".to_owned(),
            },
            false,
        )),
        Some(RID_ADMINISTRATOR) => protections.push((
            Denial {
                guardrail: Guardrail::BuiltinAccount,
                detail: "the built-in Administrator (RID 500, whatever its name) is protected".to_owned(),
            },
            true,
        )),
        _ => {}
    }
    protections.extend(self::protections(None, guardrails, None, &names));
    if exemption(guardrails, &names, &protections).is_some() {
        return None;
    }
    protections.into_iter().next().map(|(denial, _)| (denial.guardrail, denial.detail))
}

/// While Active Directory cannot be asked, whether the person is protected there (an
/// administrator, a member of a privileged group) cannot be decided: their Entra ID actions are
/// not planned, never guessed to be allowed. The pass is retried like any provider outage.
fn hold_entra_while_ad_is_unavailable(group: &Group<'_>, work: &mut Work) {
    let ProviderView::Unavailable { error } = &group.ad else {
        return;
    };
    let planned = work.actions.len();
    work.actions.retain(|action| action.provider != Provider::EntraId);
    if work.actions.len() != planned {
        work.unavailable = true;
        work.notes.push(format!(
            "Entra ID actions are held while Active Directory is unavailable ({error}): whether the account \
             is protected there cannot be decided"
        ));
    }
}

/// Every protection that applies, in precedence order, each with whether allowProtected may
/// exempt it.
fn protections(
    account: Option<&AdAccount>,
    guardrails: &Guardrails,
    privileged_groups: Option<&[AdGroup]>,
    names: &Names,
) -> Vec<(Denial, bool)> {
    let mut found = Vec::new();
    match account.and_then(|a| a.rid()) {
        Some(RID_KRBTGT) => found.push((
            Denial {
                guardrail: Guardrail::BuiltinAccount,
                detail: "krbtgt (RID 502) is never touched; allowProtected cannot exempt it".to_owned(),
            },
            false,
        )),
        Some(RID_ADMINISTRATOR) => found.push((
            Denial {
                guardrail: Guardrail::BuiltinAccount,
                detail: "the built-in Administrator (RID 500, whatever its name) is protected".to_owned(),
            },
            true,
        )),
        _ => {}
    }
    if let Some(action_account) = guardrails.action_account.as_deref().filter(|a| names.matches(a)) {
        found.push((
            Denial {
                guardrail: Guardrail::ActionAccount,
                detail: format!(
                    "remedy's own action account ({action_account}) is never touched; \
                     allowProtected cannot exempt it"
                ),
            },
            false,
        ));
    }
    if let Some(entry) = guardrails.protected_accounts.iter().find(|entry| names.matches(entry)) {
        found.push((
            Denial { guardrail: Guardrail::ProtectedAccount, detail: format!("protectedAccounts names {entry:?}") },
            true,
        ));
    }
    if let Some(account) = account {
        if let Some(chain) = privilege::protecting_chain(account, privileged_groups, &guardrails.protected_groups) {
            found.push((Denial { guardrail: Guardrail::ProtectedGroup, detail: chain }, true));
        } else if account.admin_count {
            found.push((
                Denial {
                    guardrail: Guardrail::ProtectedGroup,
                    detail: "adminCount=1: the account is, or was, a member of a privileged group \
                             (AdminSDHolder)"
                        .to_owned(),
                },
                true,
            ));
        }
    }
    found
}

/// The names an account is known by, normalised for case-insensitive comparison.
#[derive(Debug, Default)]
struct Names {
    sams: BTreeSet<String>,
    upns: BTreeSet<String>,
    dns: BTreeSet<Vec<String>>,
}

impl Names {
    fn of(group: &Group<'_>) -> Names {
        let mut names = group.ad_account().map(Names::of_account).unwrap_or_default();
        if let Some(user) = group.entra_user() {
            names.upns.insert(user.user_principal_name.to_lowercase());
        }
        for identity in std::iter::once(&group.identity).chain(&group.also_declared_as) {
            match identity {
                Identity::SamAccountName(sam) => names.sams.insert(sam.to_lowercase()),
                Identity::UserPrincipalName(upn) => names.upns.insert(upn.to_lowercase()),
                Identity::ObjectGuid(_) | Identity::ObjectSid(_) => false,
            };
        }
        names
    }

    /// The names an AD account goes by: sAMAccountName, DN, userPrincipalName and the implicit
    /// UPN.
    fn of_account(account: &AdAccount) -> Names {
        let mut names = Names::default();
        let sam = account.sam_account_name.to_lowercase();
        let rdns = rdns(&account.dn);
        // An account without userPrincipalName still binds as sam@dns-domain (implicit UPN).
        let domain: Vec<&str> = rdns.iter().filter_map(|rdn| rdn.strip_prefix("dc=")).collect();
        if !domain.is_empty() {
            names.upns.insert(format!("{sam}@{}", domain.join(".")));
        }
        names.upns.extend(account.user_principal_name.as_deref().map(str::to_lowercase));
        names.sams.insert(sam);
        names.dns.insert(rdns);
        names
    }

    /// Whether a configured name (sAMAccountName, UPN, DN or `DOMAIN\sam`) is one of these.
    fn matches(&self, entry: &str) -> bool {
        let entry = entry.trim();
        if let Some((_, sam)) = entry.rsplit_once('\\') {
            return self.sams.contains(&sam.trim().to_lowercase());
        }
        if entry.contains('=') {
            return self.dns.contains(&rdns(entry));
        }
        let entry = entry.to_lowercase();
        self.sams.contains(&entry) || self.upns.contains(&entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group_of(account: crate::observed::AdAccount) -> Group<'static> {
        Group {
            identity: Identity::ObjectGuid(account.object_guid),
            also_declared_as: Vec::new(),
            active: Vec::new(),
            suspended: Vec::new(),
            released: Vec::new(),
            ad: crate::observed::ProviderView::Found(account),
            entra: crate::observed::ProviderView::NotConfigured,
        }
    }

    fn account() -> crate::observed::AdAccount {
        crate::observed::AdAccount {
            dn: "CN=Remedy Service,OU=Service Accounts,DC=remedy,DC=test".into(),
            object_guid: uuid::Uuid::from_u128(7),
            object_sid: "S-1-5-21-1-2-3-1150".into(),
            sam_account_name: "svc-remedy".into(),
            user_principal_name: None,
            user_account_control: 0x200,
            pwd_last_set: crate::observed::PasswordLastSet::Zero,
            user_account_control_computed: 0,
            member_of: vec![],
            primary_group_id: None,
            admin_count: false,
            when_changed: None,
            usn_changed: None,
        }
    }

    /// `protection_of` (for `remedy doctor`) says what the plan's guardrails say of an account
    /// alone: the action account by its implicit UPN, RID 500, a protected group by SID; and an
    /// `allowProtected` exemption makes it unprotected, except for the action account.
    #[test]
    fn protection_of_an_account_is_the_guardrails_verdict() {
        let mut guardrails = Guardrails::with_scopes(&["DC=remedy,DC=test"]);
        guardrails.action_account = Some("SVC-remedy@remedy.test".into());
        let action = protection_of(&account(), &guardrails, &[]).expect("the action account");
        assert!(action.contains("remedy's own action account"), "{action}");
        guardrails.allow_protected = vec!["svc-remedy".into()];
        assert!(protection_of(&account(), &guardrails, &[]).is_some(), "the action account cannot be exempted");

        let admins = AdGroup {
            dn: "CN=Domain Admins,CN=Users,DC=remedy,DC=test".into(),
            object_sid: "S-1-5-21-1-2-3-512".into(),
            sam_account_name: "Domain Admins".into(),
            member_of: vec![],
        };
        let alice = crate::observed::AdAccount {
            dn: "CN=alice,OU=Staff,DC=remedy,DC=test".into(),
            sam_account_name: "alice".into(),
            object_sid: "S-1-5-21-1-2-3-1200".into(),
            member_of: vec![admins.dn.clone()],
            ..account()
        };
        let why = protection_of(&alice, &guardrails, std::slice::from_ref(&admins)).expect("a Domain Admin");
        assert_eq!(why, "member of Domain Admins (RID 512)");
        guardrails.allow_protected = vec!["alice".into()];
        assert_eq!(protection_of(&alice, &guardrails, &[admins]), None, "exempted by allowProtected");
        let administrator = crate::observed::AdAccount { object_sid: "S-1-5-21-1-2-3-500".into(), ..alice };
        assert!(protection_of(&administrator, &Guardrails::with_scopes(&[]), &[]).unwrap().contains("RID 500"));
        let plain = crate::observed::AdAccount { object_sid: "S-1-5-21-1-2-3-1300".into(), ..administrator };
        assert_eq!(protection_of(&plain, &Guardrails::with_scopes(&[]), &[]), None);
    }

    #[test]
    fn an_account_is_known_by_every_name_it_binds_with() {
        let names = Names::of(&group_of(account()));
        for name in [
            "svc-remedy@remedy.test",
            "SVC-REMEDY@Remedy.Test",
            "svc-remedy",
            "REMEDY\\svc-remedy",
            "cn=remedy service, ou=service accounts, dc=remedy, dc=test",
        ] {
            assert!(names.matches(name), "{name} does not match");
        }
        for name in ["svc-remedy2", "svc-remedy@other.test", "REMEDY\\svc", "CN=svc-remedy,DC=remedy,DC=test"] {
            assert!(!names.matches(name), "{name} matches");
        }
        let mut with_upn = account();
        with_upn.user_principal_name = Some("remedy.bot@corp.example".into());
        let names = Names::of(&group_of(with_upn));
        assert!(names.matches("remedy.bot@corp.example") && names.matches("svc-remedy@remedy.test"));
    }
}
