//! How the managed accounts are watched for changes on a DC (issue 3 of 6, re-containment): which
//! change-notification searches to register, on how many connections, and which accounts are left
//! to USN polling.
//!
//! Windows' rules for `LDAP_SERVER_NOTIFICATION_OID` (MS-ADTS; see
//! `../shared/notes/directory-facts.md`): the filter is `(objectClass=*)`; the scope is the base
//! object or one level below it, or a subtree only when the base is a naming-context root (every
//! change in the domain then arrives); at most five notification searches per connection.
//!
//! The choice, and why: an account changes as a child of its container, so a **one-level search on
//! each container that holds managed accounts** hears exactly the changes that can concern them
//! (and their siblings', which are dropped by objectGUID), at one registration per container
//! whatever the number of accounts in it. Containers are packed five to a connection. When the
//! containers need more connections than allowed, one **subtree search at the naming-context
//! root** hears everything with a single registration, at the cost of every change in the domain
//! crossing the wire; where that is not allowed, the containers holding the most managed accounts
//! get the one-level searches and the rest are polled by `uSNChanged`. Accounts outside the naming
//! context are polled too.

use std::collections::BTreeMap;

use crate::dn::rdns;

/// Windows' limit of notification searches on one connection.
pub const SEARCHES_PER_CONNECTION: usize = 5;

/// What the watcher may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections that may carry notification searches (each a long-lived connection to the DC).
    pub connections: usize,
    /// Whether one subtree search at the naming-context root may replace per-container searches
    /// that do not fit (every change in the domain is then sent to remedy).
    pub domain_wide: bool,
}

/// One notification search.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Registration {
    /// The container's direct children (the managed accounts among them).
    OneLevel { base: String },
    /// Everything below the naming-context root.
    Subtree { base: String },
}

/// The searches to register, by connection, and the accounts left to USN polling.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Each inner list goes on one connection (at most [`SEARCHES_PER_CONNECTION`]).
    pub connections: Vec<Vec<Registration>>,
    /// Accounts (DNs, as given) no notification search covers: polled by `uSNChanged`.
    pub polled: Vec<String>,
}

/// Covers `accounts` (DNs) within the naming context `root` under `limits` (see the module
/// documentation). Deterministic: the same accounts, in any order, give the same coverage (a
/// container written two ways is registered as it is first written).
pub fn cover(accounts: &[String], root: &str, limits: Limits) -> Coverage {
    let root_rdns = rdns(root);
    let mut polled = Vec::new();
    // Containers by their normalised RDNs: the DN as first written, and how many accounts.
    let mut containers: BTreeMap<Vec<String>, (String, usize)> = BTreeMap::new();
    for account in accounts {
        let account_rdns = rdns(account);
        let inside =
            !root_rdns.is_empty() && account_rdns.len() > root_rdns.len() && account_rdns.ends_with(&root_rdns);
        if !inside {
            polled.push(account.clone());
            continue;
        }
        let parent_rdns = account_rdns[1..].to_vec();
        let parent = parent_dn(account);
        containers.entry(parent_rdns).or_insert((parent, 0)).1 += 1;
    }
    let capacity = limits.connections * SEARCHES_PER_CONNECTION;
    let mut registrations: Vec<Registration> = Vec::new();
    if containers.len() <= capacity {
        registrations.extend(containers.into_values().map(|(base, _)| Registration::OneLevel { base }));
    } else if limits.domain_wide && limits.connections > 0 {
        registrations.push(Registration::Subtree { base: root.to_owned() });
    } else {
        // The containers with the most managed accounts are heard; the rest are polled.
        let mut by_size: Vec<(Vec<String>, (String, usize))> = containers.into_iter().collect();
        by_size.sort_by(|(a_key, (_, a)), (b_key, (_, b))| b.cmp(a).then_with(|| a_key.cmp(b_key)));
        let (heard, unheard) = by_size.split_at(capacity);
        let unheard: Vec<&Vec<String>> = unheard.iter().map(|(key, _)| key).collect();
        let is_unheard = |account: &String| {
            rdns(account).get(1..).is_some_and(|parent| unheard.iter().any(|key| parent == &key[..]))
        };
        polled.extend(accounts.iter().filter(|a| is_unheard(a)).cloned());
        let mut heard: Vec<Registration> =
            heard.iter().map(|(_, (base, _))| Registration::OneLevel { base: base.clone() }).collect();
        heard.sort();
        registrations = heard;
    }
    let connections = registrations.chunks(SEARCHES_PER_CONNECTION).map(<[Registration]>::to_vec).collect();
    polled.sort();
    polled.dedup();
    Coverage { connections, polled }
}

/// The DN of the container holding `dn`: everything after the first unescaped comma.
fn parent_dn(dn: &str) -> String {
    let mut escaped = false;
    for (index, c) in dn.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ',' => return dn[index + 1..].trim_start().to_owned(),
            _ => {}
        }
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: &str = "DC=remedy,DC=test";

    fn users(container: &str, count: usize) -> Vec<String> {
        (0..count).map(|n| format!("CN=u{n},{container}")).collect()
    }

    fn ou(n: usize) -> String {
        format!("OU=team{n:02},OU=Staff,{ROOT}")
    }

    fn one_level(base: &str) -> Registration {
        Registration::OneLevel { base: base.to_owned() }
    }

    const TWO: Limits = Limits { connections: 2, domain_wide: true };

    #[test]
    fn one_container_is_one_search_whatever_the_number_of_accounts() {
        let coverage = cover(&users(&ou(1), 10_000), ROOT, TWO);
        assert_eq!(coverage.connections, [vec![one_level(&ou(1))]]);
        assert!(coverage.polled.is_empty());
    }

    #[test]
    fn containers_are_packed_five_to_a_connection() {
        let accounts: Vec<String> = (0..7).flat_map(|n| users(&ou(n), 2)).collect();
        let coverage = cover(&accounts, ROOT, TWO);
        let sizes: Vec<usize> = coverage.connections.iter().map(Vec::len).collect();
        assert_eq!(sizes, [5, 2]);
        assert!(coverage.connections.iter().flatten().all(|r| matches!(r, Registration::OneLevel { .. })));
        assert!(coverage.polled.is_empty());
    }

    #[test]
    fn too_many_containers_take_one_subtree_search_at_the_root_where_allowed() {
        let accounts: Vec<String> = (0..11).flat_map(|n| users(&ou(n), 1)).collect();
        let coverage = cover(&accounts, ROOT, TWO);
        assert_eq!(coverage.connections, [vec![Registration::Subtree { base: ROOT.to_owned() }]]);
        assert!(coverage.polled.is_empty());
    }

    #[test]
    fn without_domain_wide_the_biggest_containers_are_heard_and_the_rest_polled() {
        let mut accounts: Vec<String> = (0..11).flat_map(|n| users(&ou(n), 1)).collect();
        accounts.extend(users(&ou(10), 5));
        let limits = Limits { connections: 2, domain_wide: false };
        let coverage = cover(&accounts, ROOT, limits);
        let heard: Vec<&Registration> = coverage.connections.iter().flatten().collect();
        assert_eq!(heard.len(), 10, "two connections of five");
        assert!(heard.contains(&&one_level(&ou(10))), "the container with the most accounts is heard");
        assert_eq!(coverage.polled, [format!("CN=u0,{}", ou(9))], "the one left over is polled");
    }

    #[test]
    fn no_connection_means_everything_is_polled() {
        let accounts = users(&ou(1), 3);
        for domain_wide in [true, false] {
            let coverage = cover(&accounts, ROOT, Limits { connections: 0, domain_wide });
            assert!(coverage.connections.is_empty());
            assert_eq!(coverage.polled.len(), 3);
        }
    }

    #[test]
    fn accounts_outside_the_naming_context_are_polled() {
        let mut accounts = users(&ou(1), 1);
        accounts.push("CN=x,OU=Staff,DC=other,DC=test".to_owned());
        accounts.push(ROOT.to_owned());
        let coverage = cover(&accounts, ROOT, TWO);
        assert_eq!(coverage.connections, [vec![one_level(&ou(1))]]);
        assert_eq!(coverage.polled, ["CN=x,OU=Staff,DC=other,DC=test", ROOT]);
    }

    #[test]
    fn one_container_however_its_dn_is_written() {
        let accounts = vec![
            format!("CN=a,{}", ou(1)),
            "cn=b, ou=TEAM01 ,ou=staff,dc=remedy,dc=test".to_owned(),
            "CN=c\\, the third,OU=team01,OU=Staff,DC=remedy,DC=test".to_owned(),
        ];
        let coverage = cover(&accounts, ROOT, TWO);
        assert_eq!(coverage.connections, [vec![one_level(&ou(1))]], "the DN as first written");
    }

    #[test]
    fn an_account_at_the_root_is_heard_by_a_one_level_search_on_the_root() {
        let coverage = cover(&[format!("CN=Administrator,{ROOT}")], ROOT, TWO);
        assert_eq!(coverage.connections, [vec![one_level(ROOT)]]);
    }

    #[test]
    fn the_same_accounts_in_any_order_give_the_same_coverage() {
        let mut accounts: Vec<String> = (0..7).flat_map(|n| users(&ou(n), 3)).collect();
        let first = cover(&accounts, ROOT, TWO);
        accounts.reverse();
        assert_eq!(cover(&accounts, ROOT, TWO), first);
    }
}
