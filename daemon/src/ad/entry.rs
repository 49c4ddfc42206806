//! Turning an LDAP search entry into the [`AdAccount`] the plan engine reads.

use ldap3::SearchEntry;
use remedy_policies::observed::{AdAccount, PasswordLastSet};

use super::codec;
use super::error::AdError;

/// Every attribute an observation asks for. `msDS-User-Account-Control-Computed` is constructed:
/// a DC returns it only when it is named.
pub const ATTRIBUTES: [&str; 12] = [
    "objectGUID",
    "objectSid",
    "sAMAccountName",
    "userPrincipalName",
    "userAccountControl",
    "msDS-User-Account-Control-Computed",
    "pwdLastSet",
    "memberOf",
    "primaryGroupID",
    "adminCount",
    "whenChanged",
    "uSNChanged",
];

/// Values of one attribute, by case-insensitive name. ldap3 files a value under `attrs` when it is
/// valid UTF-8 and under `bin_attrs` otherwise, so a binary attribute (objectGUID) can land in
/// either map depending on its bytes: both are looked at.
pub(super) fn raw_values(entry: &SearchEntry, name: &str) -> Vec<Vec<u8>> {
    let mut values = Vec::new();
    for (key, texts) in &entry.attrs {
        if key.eq_ignore_ascii_case(name) {
            values.extend(texts.iter().map(|t| t.as_bytes().to_vec()));
        }
    }
    for (key, bytes) in &entry.bin_attrs {
        if key.eq_ignore_ascii_case(name) {
            values.extend(bytes.iter().cloned());
        }
    }
    values
}

pub(super) fn texts(entry: &SearchEntry, name: &str) -> Vec<String> {
    let mut values = Vec::new();
    for (key, texts) in &entry.attrs {
        // `memberOf;range=0-1499`: a DC hands out very long multi-valued attributes in ranges.
        let base = key.split(';').next().unwrap_or(key);
        if base.eq_ignore_ascii_case(name) {
            if key.len() != base.len() {
                tracing::warn!(dn = %entry.dn, attribute = %key, "ranged attribute: only the first range is read");
            }
            values.extend(texts.iter().cloned());
        }
    }
    values
}

fn single_text(entry: &SearchEntry, name: &str) -> Option<String> {
    texts(entry, name).into_iter().next()
}

fn decode_error(entry: &SearchEntry, attribute: &'static str, message: impl Into<String>) -> AdError {
    AdError::Decode { dn: entry.dn.clone(), attribute, message: message.into() }
}

fn required_number<T: std::str::FromStr>(entry: &SearchEntry, attribute: &'static str) -> Result<T, AdError> {
    let text = single_text(entry, attribute).ok_or_else(|| decode_error(entry, attribute, "missing"))?;
    text.parse().map_err(|_| decode_error(entry, attribute, format!("{text:?} is not a number")))
}

/// Decodes an entry read with [`ATTRIBUTES`].
pub fn account_from_entry(entry: &SearchEntry) -> Result<AdAccount, AdError> {
    let guid_bytes = raw_values(entry, "objectGUID");
    let object_guid = guid_bytes
        .first()
        .and_then(|b| codec::guid_from_bytes(b))
        .ok_or_else(|| decode_error(entry, "objectGUID", "missing or not 16 bytes"))?;
    let sid_bytes = raw_values(entry, "objectSid");
    let object_sid = sid_bytes
        .first()
        .and_then(|b| codec::sid_from_bytes(b))
        .ok_or_else(|| decode_error(entry, "objectSid", "missing or not a binary SID"))?;
    let sam_account_name =
        single_text(entry, "sAMAccountName").ok_or_else(|| decode_error(entry, "sAMAccountName", "missing"))?;
    // userAccountControl is a signed 32-bit integer on the wire: read it as i64 and keep the bits.
    let user_account_control = required_number::<i64>(entry, "userAccountControl")? as u32;
    let user_account_control_computed = match single_text(entry, "msDS-User-Account-Control-Computed") {
        Some(text) => text.parse::<i64>().map_err(|_| {
            decode_error(entry, "msDS-User-Account-Control-Computed", format!("{text:?} is not a number"))
        })? as u32,
        None => 0,
    };
    // Absent on an account that never had a password: the same as 0 for the DC.
    let pwd_last_set = match single_text(entry, "pwdLastSet") {
        Some(text) => PasswordLastSet::from_filetime(
            text.parse().map_err(|_| decode_error(entry, "pwdLastSet", format!("{text:?} is not a FILETIME")))?,
        ),
        None => PasswordLastSet::Zero,
    };
    let when_changed = match single_text(entry, "whenChanged") {
        Some(text) => Some(
            codec::parse_generalized_time(&text)
                .ok_or_else(|| decode_error(entry, "whenChanged", format!("{text:?} is not a generalized time")))?,
        ),
        None => None,
    };
    let usn_changed = match single_text(entry, "uSNChanged") {
        Some(text) => {
            Some(text.parse().map_err(|_| decode_error(entry, "uSNChanged", format!("{text:?} is not a number")))?)
        }
        None => None,
    };
    let mut member_of = texts(entry, "memberOf");
    member_of.sort();
    Ok(AdAccount {
        dn: entry.dn.clone(),
        object_guid,
        object_sid,
        sam_account_name,
        user_principal_name: single_text(entry, "userPrincipalName"),
        user_account_control,
        pwd_last_set,
        user_account_control_computed,
        member_of,
        primary_group_id: match single_text(entry, "primaryGroupID") {
            Some(text) => Some(
                text.parse().map_err(|_| decode_error(entry, "primaryGroupID", format!("{text:?} is not a RID")))?,
            ),
            None => None,
        },
        admin_count: single_text(entry, "adminCount").is_some_and(|v| v.trim() != "0"),
        when_changed,
        usn_changed,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn entry() -> SearchEntry {
        let text = |pairs: &[(&str, &[&str])]| -> HashMap<String, Vec<String>> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
        };
        SearchEntry {
            dn: "CN=staff0007,OU=Staff,DC=remedy,DC=test".into(),
            attrs: text(&[
                ("sAMAccountName", &["staff0007"]),
                ("userPrincipalName", &["staff0007@remedy.test"]),
                ("userAccountControl", &["66048"]),
                ("msDS-User-Account-Control-Computed", &["8388608"]),
                ("pwdLastSet", &["0"]),
                ("memberOf", &["CN=b,DC=x", "CN=a,DC=x"]),
                ("adminCount", &["1"]),
                ("whenChanged", &["20261125024920.0Z"]),
                ("uSNChanged", &["4004"]),
            ]),
            bin_attrs: HashMap::from([
                (
                    "objectGUID".to_string(),
                    vec![vec![
                        0x59, 0x0b, 0x2c, 0x77, 0x93, 0x1d, 0x56, 0x4e, 0xa9, 0x28, 0x25, 0xe5, 0x79, 0x0d, 0xf1, 0xbd,
                    ]],
                ),
                ("objectSid".to_string(), vec![codec::sid_to_bytes("S-1-5-21-1-2-3-1108").unwrap()]),
            ]),
        }
    }

    #[test]
    fn decodes_every_field() {
        let account = account_from_entry(&entry()).unwrap();
        assert_eq!(account.object_guid.to_string(), "772c0b59-1d93-4e56-a928-25e5790df1bd");
        assert_eq!(account.object_sid, "S-1-5-21-1-2-3-1108");
        assert_eq!(account.user_account_control, 66048);
        assert_eq!(account.user_account_control_computed, 0x80_0000);
        assert_eq!(account.pwd_last_set, PasswordLastSet::Zero);
        assert_eq!(account.member_of, ["CN=a,DC=x", "CN=b,DC=x"]);
        assert!(account.admin_count);
        assert_eq!(account.usn_changed, Some(4004));
        assert_eq!(account.when_changed.unwrap().to_rfc3339(), "2026-11-25T02:49:20+00:00");
    }

    #[test]
    fn a_guid_that_happens_to_be_utf8_is_found_too() {
        let mut entry = entry();
        entry.bin_attrs.remove("objectGUID");
        entry.attrs.insert("objectguid".into(), vec!["ABCDEFGHIJKLMNOP".into()]);
        let account = account_from_entry(&entry).unwrap();
        assert_eq!(account.object_guid, uuid::Uuid::from_bytes_le(*b"ABCDEFGHIJKLMNOP"));
    }

    #[test]
    fn negative_user_account_control_keeps_its_bits() {
        let mut entry = entry();
        entry.attrs.insert("userAccountControl".into(), vec!["-2147483136".into()]);
        assert_eq!(account_from_entry(&entry).unwrap().user_account_control, 0x8000_0200);
    }

    #[test]
    fn malformed_values_name_the_attribute() {
        let mut entry = entry();
        entry.attrs.insert("whenChanged".into(), vec!["yesterday".into()]);
        let error = account_from_entry(&entry).unwrap_err();
        assert!(error.to_string().contains("whenChanged"), "{error}");
        entry.bin_attrs.remove("objectSid");
        assert!(account_from_entry(&entry).unwrap_err().to_string().contains("objectSid"));
    }
}
