//! Who is privileged in Active Directory: the chain by which an account belongs to a protected
//! group, however it got there.
//!
//! Membership counts **transitively** (a group inside a protected group) and through the
//! account's **primary group** (`primaryGroupID`, which appears neither in the account's
//! `memberOf` nor in the group's `member`). Protected groups are recognised by **SID**: the
//! AdminSDHolder set by well-known RID, whatever the group is called now (names are localized and
//! renamable), plus the groups `protectedGroups` names by SID, DN or name.
//!
//! The daemon reads the protected groups and every group nested in them ([`AdGroup`], each with
//! its direct `memberOf`); this module walks that graph. Pure: no I/O.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::dn::rdns;
use crate::observed::AdAccount;

/// The domain-relative RIDs of the groups AdminSDHolder protects (SDProp restamps their members),
/// with their English names.
pub const PROTECTED_DOMAIN_RIDS: [(u32, &str); 8] = [
    (512, "Domain Admins"),
    (516, "Domain Controllers"),
    (518, "Schema Admins"),
    (519, "Enterprise Admins"),
    (520, "Group Policy Creator Owners"),
    (521, "Read-only Domain Controllers"),
    (526, "Key Admins"),
    (527, "Enterprise Key Admins"),
];

/// The builtin domain (`S-1-5-32`) groups AdminSDHolder protects, by RID, with their English names.
pub const PROTECTED_BUILTIN_RIDS: [(u32, &str); 5] = [
    (544, "Administrators"),
    (548, "Account Operators"),
    (549, "Server Operators"),
    (550, "Print Operators"),
    (551, "Backup Operators"),
];

/// The builtin domain's SID: its groups' SIDs are `S-1-5-32-<RID>` in every domain.
pub const BUILTIN_DOMAIN_SID: &str = "S-1-5-32";

/// An Active Directory group as the AD provider read it: a protected group, or a group nested
/// (at any depth) in one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdGroup {
    pub dn: String,
    pub object_sid: String,
    pub sam_account_name: String,
    /// The groups this group is a direct member of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub member_of: Vec<String>,
}

/// A configured `protectedGroups` entry: how the daemon finds the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupName<'a> {
    Sid(&'a str),
    Dn(&'a str),
    /// A sAMAccountName or CN.
    Name(&'a str),
}

impl<'a> GroupName<'a> {
    pub fn parse(entry: &'a str) -> GroupName<'a> {
        let entry = entry.trim();
        if is_sid(entry) {
            GroupName::Sid(entry)
        } else if entry.contains('=') {
            GroupName::Dn(entry)
        } else {
            GroupName::Name(entry)
        }
    }
}

fn is_sid(text: &str) -> bool {
    text.len() > 4 && text[..4].eq_ignore_ascii_case("S-1-") && text[4..].split('-').all(|p| p.parse::<u64>().is_ok())
}

/// The domain part of an account's or group's SID (everything before the RID).
pub fn domain_sid(sid: &str) -> Option<&str> {
    let (domain, rid) = sid.rsplit_once('-')?;
    rid.parse::<u32>().ok().map(|_| domain)
}

fn rid(sid: &str) -> Option<u32> {
    sid.rsplit_once('-')?.1.parse().ok()
}

/// Why a group is protected in its own right, or `None` when it is protected only by nesting.
fn protected_in_own_right(group: &AdGroup, configured: &[String]) -> Option<String> {
    let (domain, group_rid) = (domain_sid(&group.object_sid)?, rid(&group.object_sid)?);
    let table: &[(u32, &str)] = if domain == BUILTIN_DOMAIN_SID {
        &PROTECTED_BUILTIN_RIDS
    } else if domain.starts_with("S-1-5-21-") {
        &PROTECTED_DOMAIN_RIDS
    } else {
        &[]
    };
    if let Some((_, well_known)) = table.iter().find(|(r, _)| *r == group_rid) {
        return Some(if group.sam_account_name.eq_ignore_ascii_case(well_known) {
            format!("{} (RID {group_rid})", group.sam_account_name)
        } else {
            format!("{} (RID {group_rid}: {well_known}, renamed)", group.sam_account_name)
        });
    }
    configured
        .iter()
        .find(|entry| names_group(entry, group))
        .map(|entry| format!("{} (protectedGroups names {entry:?})", group.sam_account_name))
}

/// Whether a `protectedGroups` entry (SID, DN, sAMAccountName or CN) names this group.
pub fn names_group(entry: &str, group: &AdGroup) -> bool {
    match GroupName::parse(entry) {
        GroupName::Sid(sid) => sid.eq_ignore_ascii_case(&group.object_sid),
        GroupName::Dn(dn) => rdns(dn) == rdns(&group.dn),
        GroupName::Name(name) => {
            let name = collapse(name);
            name == collapse(&group.sam_account_name) || first_cn(&group.dn).is_some_and(|cn| cn == name)
        }
    }
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase()
}

fn first_cn(dn: &str) -> Option<String> {
    rdns(dn).first().and_then(|rdn| rdn.strip_prefix("cn=").map(str::to_owned))
}

/// The chain by which `account` belongs to a protected group, as the denial's detail
/// ("member of Domain Admins (RID 512) via Tier0 Ops via Helpdesk"), or `None` when it belongs to
/// none. `groups` are the protected groups and every group nested in them, as read from the DC;
/// `None` (an offline snapshot that carries no groups) falls back to what the account alone
/// shows: its direct `memberOf` by configured or well-known name, and its primary group's RID.
pub fn protecting_chain(account: &AdAccount, groups: Option<&[AdGroup]>, configured: &[String]) -> Option<String> {
    match groups {
        Some(groups) => walk(account, groups, configured),
        None => without_groups(account, configured),
    }
}

fn walk(account: &AdAccount, groups: &[AdGroup], configured: &[String]) -> Option<String> {
    let by_dn: BTreeMap<Vec<String>, usize> = groups.iter().enumerate().map(|(i, g)| (rdns(&g.dn), i)).collect();
    let by_sid: BTreeMap<String, usize> =
        groups.iter().enumerate().map(|(i, g)| (g.object_sid.to_ascii_uppercase(), i)).collect();
    let primary = primary_group_sid(account).and_then(|sid| by_sid.get(&sid.to_ascii_uppercase()).copied());
    let mut starts: Vec<usize> = primary.into_iter().collect();
    let mut direct: Vec<usize> = account.member_of.iter().filter_map(|dn| by_dn.get(&rdns(dn)).copied()).collect();
    direct.sort_by(|a, b| groups[*a].dn.cmp(&groups[*b].dn));
    starts.extend(direct);

    // Breadth first: the shortest chain is the one reported, and the same graph gives the same one.
    // Each group reached, with the group it was reached from (`None`: the account's own).
    let mut reached: BTreeMap<usize, Option<usize>> = BTreeMap::new();
    let mut queue = VecDeque::new();
    for group in starts {
        if let std::collections::btree_map::Entry::Vacant(slot) = reached.entry(group) {
            slot.insert(None);
            queue.push_back(group);
        }
    }
    while let Some(index) = queue.pop_front() {
        let group = &groups[index];
        if let Some(why) = protected_in_own_right(group, configured) {
            return Some(describe(account, groups, &reached, index, primary, why));
        }
        let mut parents: Vec<usize> = group.member_of.iter().filter_map(|dn| by_dn.get(&rdns(dn)).copied()).collect();
        parents.sort_by(|a, b| groups[*a].dn.cmp(&groups[*b].dn));
        for parent in parents {
            if let std::collections::btree_map::Entry::Vacant(slot) = reached.entry(parent) {
                slot.insert(Some(index));
                queue.push_back(parent);
            }
        }
    }
    None
}

/// "member of ROOT via PARENT via ... via DIRECT", marking the primary group.
fn describe(
    account: &AdAccount,
    groups: &[AdGroup],
    reached: &BTreeMap<usize, Option<usize>>,
    root: usize,
    primary: Option<usize>,
    why: String,
) -> String {
    let mut path = Vec::new();
    let mut at = reached[&root];
    let mut first = root;
    while let Some(index) = at {
        path.push(index);
        first = index;
        at = reached[&index];
    }
    let primary_group_id = account.primary_group_id.unwrap_or_default();
    let mut text = format!("member of {why}");
    if path.is_empty() {
        if primary == Some(root) {
            text.push_str(&format!(" as its primary group (primaryGroupID {primary_group_id})"));
        }
        return text;
    }
    for index in &path {
        text.push_str(" via ");
        text.push_str(&groups[*index].sam_account_name);
    }
    if primary == Some(first) {
        text.push_str(&format!(" (its primary group, primaryGroupID {primary_group_id})"));
    }
    text
}

/// The SID of the account's primary group: its domain's SID and `primaryGroupID`.
fn primary_group_sid(account: &AdAccount) -> Option<String> {
    let id = account.primary_group_id?;
    Some(format!("{}-{id}", domain_sid(&account.object_sid)?))
}

fn without_groups(account: &AdAccount, configured: &[String]) -> Option<String> {
    if let Some(id) = account.primary_group_id {
        if let Some((_, name)) = PROTECTED_DOMAIN_RIDS.iter().find(|(r, _)| *r == id) {
            return Some(format!("member of {name} (RID {id}) as its primary group (primaryGroupID {id})"));
        }
    }
    let well_known = PROTECTED_DOMAIN_RIDS.iter().chain(&PROTECTED_BUILTIN_RIDS).map(|(_, name)| *name);
    account.member_of.iter().find_map(|dn| {
        let cn = first_cn(dn)?;
        if let Some(entry) = configured.iter().find(|entry| match GroupName::parse(entry) {
            GroupName::Dn(configured_dn) => rdns(configured_dn) == rdns(dn),
            GroupName::Name(name) => collapse(name) == cn,
            GroupName::Sid(_) => false,
        }) {
            return Some(format!("member of {dn} (protectedGroups names {entry:?})"));
        }
        well_known
            .clone()
            .find(|name| collapse(name) == cn)
            .map(|name| format!("member of {dn} (by name: {name}; the snapshot has no group SIDs)"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observed::PasswordLastSet;

    const DOMAIN: &str = "S-1-5-21-1-2-3";

    fn group(cn: &str, rid: u32, member_of: &[&str]) -> AdGroup {
        AdGroup {
            dn: format!("CN={cn},CN=Users,DC=remedy,DC=test"),
            object_sid: format!("{DOMAIN}-{rid}"),
            sam_account_name: cn.to_owned(),
            member_of: member_of.iter().map(|cn| format!("CN={cn},CN=Users,DC=remedy,DC=test")).collect(),
        }
    }

    fn user(member_of: &[&str], primary: u32) -> AdAccount {
        AdAccount {
            dn: "CN=eve,OU=Staff,DC=remedy,DC=test".into(),
            object_guid: uuid::Uuid::from_u128(1),
            object_sid: format!("{DOMAIN}-1600"),
            sam_account_name: "eve".into(),
            user_principal_name: None,
            user_account_control: 0x200,
            pwd_last_set: PasswordLastSet::Zero,
            user_account_control_computed: 0,
            member_of: member_of.iter().map(|cn| format!("CN={cn},CN=Users,DC=remedy,DC=test")).collect(),
            primary_group_id: Some(primary),
            admin_count: false,
            when_changed: None,
            usn_changed: None,
        }
    }

    fn graph() -> Vec<AdGroup> {
        vec![
            group("Domain Admins", 512, &[]),
            group("Tier0 Ops", 1700, &["Domain Admins"]),
            group("Helpdesk Leads", 1701, &["Tier0 Ops"]),
            group("Backup Crew", 1702, &[]),
            group("Custom Vault", 1703, &[]),
            group("Vault Readers", 1704, &["Custom Vault"]),
        ]
    }

    #[test]
    fn each_way_into_a_protected_group_is_found_and_named() {
        let groups = graph();
        let chain = |account: &AdAccount, configured: &[&str]| {
            let configured: Vec<String> = configured.iter().map(|s| (*s).to_owned()).collect();
            protecting_chain(account, Some(&groups), &configured)
        };
        let cases: Vec<(&str, AdAccount, &[&str], Option<&str>)> = vec![
            ("direct", user(&["Domain Admins"], 513), &[], Some("member of Domain Admins (RID 512)")),
            ("one level", user(&["Tier0 Ops"], 513), &[], Some("member of Domain Admins (RID 512) via Tier0 Ops")),
            (
                "two levels",
                user(&["Helpdesk Leads"], 513),
                &[],
                Some("member of Domain Admins (RID 512) via Tier0 Ops via Helpdesk Leads"),
            ),
            (
                "primary group",
                user(&[], 512),
                &[],
                Some("member of Domain Admins (RID 512) as its primary group (primaryGroupID 512)"),
            ),
            (
                "nested primary group",
                user(&[], 1701),
                &[],
                Some(
                    "member of Domain Admins (RID 512) via Tier0 Ops via Helpdesk Leads (its primary group, \
                     primaryGroupID 1701)",
                ),
            ),
            ("unprotected", user(&["Backup Crew"], 513), &[], None),
            (
                "configured by name, nested",
                user(&["Vault Readers"], 513),
                &["custom  VAULT"],
                Some("member of Custom Vault (protectedGroups names \"custom  VAULT\") via Vault Readers"),
            ),
            (
                "configured by SID",
                user(&["Custom Vault"], 513),
                &["S-1-5-21-1-2-3-1703"],
                Some("member of Custom Vault (protectedGroups names \"S-1-5-21-1-2-3-1703\")"),
            ),
            (
                "configured by DN",
                user(&["Custom Vault"], 513),
                &["cn=custom vault, cn=users, dc=remedy, dc=test"],
                Some(
                    "member of Custom Vault (protectedGroups names \"cn=custom vault, cn=users, dc=remedy, dc=test\")",
                ),
            ),
        ];
        for (name, account, configured, expected) in cases {
            assert_eq!(chain(&account, configured).as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn a_renamed_well_known_group_is_still_protected_by_its_rid() {
        let mut groups = graph();
        groups[0].sam_account_name = "Tier Zero".into();
        groups[0].dn = "CN=Tier Zero,CN=Users,DC=remedy,DC=test".into();
        groups[1].member_of = vec![groups[0].dn.clone()];
        let account = user(&["Tier0 Ops"], 513);
        assert_eq!(
            protecting_chain(&account, Some(&groups), &[]).as_deref(),
            Some("member of Tier Zero (RID 512: Domain Admins, renamed) via Tier0 Ops")
        );
    }

    #[test]
    fn builtin_groups_count_and_other_domains_rids_do_not() {
        let administrators = AdGroup {
            dn: "CN=Administrators,CN=Builtin,DC=remedy,DC=test".into(),
            object_sid: "S-1-5-32-544".into(),
            sam_account_name: "Administrators".into(),
            member_of: vec![],
        };
        let mut account = user(&[], 513);
        account.member_of = vec![administrators.dn.clone()];
        assert_eq!(
            protecting_chain(&account, Some(&[administrators]), &[]).as_deref(),
            Some("member of Administrators (RID 544)")
        );
        // RID 512 of a non-domain authority is not Domain Admins.
        let odd = AdGroup {
            dn: "CN=Odd,CN=Users,DC=remedy,DC=test".into(),
            object_sid: "S-1-5-80-512".into(),
            sam_account_name: "Odd".into(),
            member_of: vec![],
        };
        account.member_of = vec![odd.dn.clone()];
        assert_eq!(protecting_chain(&account, Some(&[odd]), &[]), None);
    }

    #[test]
    fn a_membership_cycle_ends() {
        let groups = vec![group("A", 1800, &["B"]), group("B", 1801, &["A"])];
        assert_eq!(protecting_chain(&user(&["A"], 513), Some(&groups), &[]), None);
    }

    #[test]
    fn without_groups_the_account_alone_is_judged() {
        assert_eq!(
            protecting_chain(&user(&[], 512), None, &[]).as_deref(),
            Some("member of Domain Admins (RID 512) as its primary group (primaryGroupID 512)")
        );
        assert!(protecting_chain(&user(&["Domain Admins"], 513), None, &[]).is_some());
        assert!(protecting_chain(&user(&["Custom Vault"], 513), None, &["Custom Vault".into()]).is_some());
        assert_eq!(protecting_chain(&user(&["Tier0 Ops"], 513), None, &[]), None);
    }

    #[test]
    fn configured_entries_parse_by_form() {
        assert_eq!(GroupName::parse(" S-1-5-21-1-2-3-512 "), GroupName::Sid("S-1-5-21-1-2-3-512"));
        assert_eq!(GroupName::parse("CN=x,DC=y"), GroupName::Dn("CN=x,DC=y"));
        assert_eq!(GroupName::parse("S-1-x"), GroupName::Name("S-1-x"));
        assert_eq!(GroupName::parse("Tier0"), GroupName::Name("Tier0"));
    }
}
