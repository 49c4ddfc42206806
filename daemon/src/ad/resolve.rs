//! From declared identities to LDAP filters, and from search results back to one view per
//! identity. Pure: the directory module does the searching.

use std::collections::BTreeMap;

use remedy_policies::observed::{AdAccount, ProviderView};
use remedy_policies::Identity;
use uuid::Uuid;

use super::codec;

/// Identities per OR filter. Well under what a DC accepts in one request (AD's MaxReceiveBuffer
/// is 10 MB; a clause is under 100 bytes), and small enough that one slow chunk does not hold
/// everything up, while a batch of thousands still needs only a handful of searches.
pub const CHUNK_SIZE: usize = 200;

/// Only user objects: `objectCategory=person` alone also matches contacts, `objectClass=user`
/// alone also matches computers.
const USER_OBJECTS: &str = "(objectCategory=person)(objectClass=user)";

/// The filter clause that selects the account an identity names.
pub fn identity_clause(identity: &Identity) -> String {
    match identity {
        Identity::UserPrincipalName(upn) => format!("(userPrincipalName={})", codec::escape_filter_value(upn)),
        Identity::SamAccountName(sam) => format!("(sAMAccountName={})", codec::escape_filter_value(sam)),
        Identity::ObjectGuid(guid) => {
            format!("(objectGUID={})", codec::escape_filter_bytes(&codec::guid_to_bytes(guid)))
        }
        Identity::ObjectSid(sid) => match codec::sid_to_bytes(sid) {
            Some(bytes) => format!("(objectSid={})", codec::escape_filter_bytes(&bytes)),
            // Identity parsing guarantees the form; a filter that matches nothing is the safe answer.
            None => "(!(objectClass=*))".to_owned(),
        },
    }
}

/// One search filter for a chunk of identities: user objects matching any of them.
pub fn users_filter(identities: &[Identity]) -> String {
    let mut filter = String::from("(&");
    filter.push_str(USER_OBJECTS);
    filter.push_str("(|");
    for identity in identities {
        filter.push_str(&identity_clause(identity));
    }
    filter.push_str("))");
    filter
}

/// User objects with any of these objectGUIDs (reading accounts back after writes).
pub fn guids_filter<'a>(guids: impl IntoIterator<Item = &'a Uuid>) -> String {
    let mut filter = format!("(&{USER_OBJECTS}(|");
    for guid in guids {
        filter.push_str(&format!("(objectGUID={})", codec::escape_filter_bytes(&codec::guid_to_bytes(guid))));
    }
    filter.push_str("))");
    filter
}

/// Whether an account is one the identity names, compared the way the DC compares: names
/// case-insensitively, GUIDs and SIDs exactly. Identities store names lower-cased.
pub fn matches(identity: &Identity, account: &AdAccount) -> bool {
    match identity {
        Identity::UserPrincipalName(upn) => {
            account.user_principal_name.as_deref().is_some_and(|u| u.to_lowercase() == *upn)
        }
        Identity::SamAccountName(sam) => account.sam_account_name.to_lowercase() == *sam,
        Identity::ObjectGuid(guid) => account.object_guid == *guid,
        Identity::ObjectSid(sid) => account.object_sid.eq_ignore_ascii_case(sid),
    }
}

/// One view per identity: the single account it names, `NotFound`, or `Ambiguous` with every
/// candidate's DN when it names more than one. Never a guess.
pub fn resolve(identities: &[Identity], accounts: &[AdAccount]) -> BTreeMap<Identity, ProviderView<AdAccount>> {
    let mut views = BTreeMap::new();
    for identity in identities {
        let mut found: Vec<&AdAccount> = accounts.iter().filter(|a| matches(identity, a)).collect();
        found.sort_by(|a, b| a.dn.cmp(&b.dn));
        found.dedup_by(|a, b| a.object_guid == b.object_guid);
        let view = match found.as_slice() {
            [] => ProviderView::NotFound,
            [one] => ProviderView::Found((*one).clone()),
            many => ProviderView::Ambiguous { candidates: many.iter().map(|a| a.dn.clone()).collect() },
        };
        views.insert(identity.clone(), view);
    }
    views
}

#[cfg(test)]
mod tests {
    use remedy_policies::observed::PasswordLastSet;

    use super::*;

    fn account(dn: &str, sam: &str, upn: Option<&str>, guid: u128, sid: &str) -> AdAccount {
        AdAccount {
            dn: dn.into(),
            object_guid: Uuid::from_u128(guid),
            object_sid: sid.into(),
            sam_account_name: sam.into(),
            user_principal_name: upn.map(str::to_owned),
            user_account_control: 512,
            pwd_last_set: PasswordLastSet::Zero,
            user_account_control_computed: 0,
            member_of: vec![],
            primary_group_id: None,
            admin_count: false,
            when_changed: None,
            usn_changed: None,
        }
    }

    fn id(text: &str) -> Identity {
        text.parse().unwrap()
    }

    #[test]
    fn filters_escape_every_value() {
        let guid = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        let filter = users_filter(&[
            id("upn:a*(b)\\c@x.com"),
            id("sam:a(l)ice"),
            id(&format!("guid:{guid}")),
            id("sid:S-1-5-21-1-2-3-1104"),
        ]);
        assert_eq!(
            filter,
            "(&(objectCategory=person)(objectClass=user)(|\
             (userPrincipalName=a\\2a\\28b\\29\\5cc@x.com)\
             (sAMAccountName=a\\28l\\29ice)\
             (objectGUID=\\ff\\19\\96\\6f\\86\\8b\\11\\d0\\b4\\2d\\00\\c0\\4f\\c9\\64\\ff)\
             (objectSid=\\01\\05\\00\\00\\00\\00\\00\\05\\15\\00\\00\\00\\01\\00\\00\\00\\02\\00\\00\\00\\03\\00\\00\\00\\50\\04\\00\\00)))"
        );
        assert!(ldap3::parse_filter(&filter).is_ok());
    }

    #[test]
    fn one_match_is_found_none_is_not_found() {
        let alice = account("CN=alice,DC=x", "Alice", Some("Alice@X.com"), 1, "S-1-5-21-1-2-3-1104");
        let views = resolve(
            &[
                id("sam:alice"),
                id("upn:alice@x.com"),
                id("guid:00000000-0000-0000-0000-000000000001"),
                id("sid:S-1-5-21-1-2-3-1104"),
                id("sam:bob"),
            ],
            std::slice::from_ref(&alice),
        );
        assert_eq!(views.values().filter(|v| v.found() == Some(&alice)).count(), 4);
        assert_eq!(views[&id("sam:bob")], ProviderView::NotFound);
    }

    /// A real DC refuses two accounts with one UPN or one sAMAccountName (Samba answers 19,
    /// `0000202F: samldb: userPrincipalName ... is already in use`; the integration tests check
    /// that), so ambiguity is exercised here, on what a directory that allowed it would return.
    #[test]
    fn two_matches_are_ambiguous_never_a_guess() {
        let one = account("CN=one,DC=x", "one", Some("dup@x.com"), 1, "S-1-5-21-1-2-3-1");
        let two = account("CN=two,DC=x", "two", Some("DUP@x.com"), 2, "S-1-5-21-1-2-3-2");
        let views = resolve(&[id("upn:dup@x.com"), id("sam:two")], &[two.clone(), one]);
        assert_eq!(
            views[&id("upn:dup@x.com")],
            ProviderView::Ambiguous { candidates: vec!["CN=one,DC=x".into(), "CN=two,DC=x".into()] }
        );
        assert_eq!(views[&id("sam:two")], ProviderView::Found(two));
    }

    #[test]
    fn the_same_entry_twice_is_not_ambiguous() {
        let alice = account("CN=alice,DC=x", "alice", None, 1, "S-1-5-21-1-2-3-1104");
        let views = resolve(&[id("sam:alice")], &[alice.clone(), alice.clone()]);
        assert_eq!(views[&id("sam:alice")], ProviderView::Found(alice));
    }
}
