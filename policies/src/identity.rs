//! The ways a manifest may name one account, each checked for syntax.
//!
//! An [`Identity`] is what an operator wrote; the directory decides which account (if any) it
//! denotes. Two identities of different kinds may denote the same account: that is only known after
//! observation, so equality here is equality of the written name (normalised: case-insensitive for
//! names, canonical form for GUIDs and SIDs).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// How a manifest names the account it remediates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Identity {
    /// `alice@contoso.com`, stored lower-case (AD and Entra compare UPNs case-insensitively).
    UserPrincipalName(String),
    /// The pre-Windows 2000 logon name, stored lower-case.
    SamAccountName(String),
    /// The immutable objectGUID of the AD account.
    ObjectGuid(Uuid),
    /// The objectSid of the AD account in its `S-1-...` string form.
    ObjectSid(String),
}

/// Why a written identity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("userPrincipalName {0:?} is not of the form name@domain (one '@', no spaces, a DNS-style domain)")]
    UserPrincipalName(String),
    #[error(
        "samAccountName {0:?} must be 1 to 20 characters, none of \" / \\ [ ] : ; | = , + * ? < > @, not ending in '.'"
    )]
    SamAccountName(String),
    #[error("objectGuid {0:?} is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)")]
    ObjectGuid(String),
    #[error("objectSid {0:?} is not a SID (expected S-1-<authority>-<sub-authority>..., e.g. S-1-5-21-1-2-3-1104)")]
    ObjectSid(String),
    #[error("{0:?} is not an identity: expected upn:, sam:, guid: or sid: followed by the value")]
    UnknownKind(String),
}

const SAM_FORBIDDEN: &[char] = &['"', '/', '\\', '[', ']', ':', ';', '|', '=', ',', '+', '*', '?', '<', '>', '@'];

impl Identity {
    pub fn user_principal_name(text: &str) -> Result<Self, IdentityError> {
        parse_upn(text).map(Identity::UserPrincipalName)
    }

    pub fn sam_account_name(text: &str) -> Result<Self, IdentityError> {
        let chars = text.chars().count();
        let valid = (1..=20).contains(&chars)
            && !text.ends_with('.')
            && !text.chars().any(|c| c.is_control() || SAM_FORBIDDEN.contains(&c))
            && !text.trim().is_empty();
        if valid {
            Ok(Identity::SamAccountName(text.to_lowercase()))
        } else {
            Err(IdentityError::SamAccountName(text.to_owned()))
        }
    }

    pub fn object_guid(text: &str) -> Result<Self, IdentityError> {
        parse_guid(text).map(Identity::ObjectGuid).ok_or_else(|| IdentityError::ObjectGuid(text.to_owned()))
    }

    pub fn object_sid(text: &str) -> Result<Self, IdentityError> {
        parse_sid(text).map(Identity::ObjectSid).ok_or_else(|| IdentityError::ObjectSid(text.to_owned()))
    }

    /// The manifest field that names this kind of identity.
    pub fn field_name(&self) -> &'static str {
        match self {
            Identity::UserPrincipalName(_) => "userPrincipalName",
            Identity::SamAccountName(_) => "samAccountName",
            Identity::ObjectGuid(_) => "objectGuid",
            Identity::ObjectSid(_) => "objectSid",
        }
    }

    /// The value without its kind prefix.
    pub fn value(&self) -> String {
        match self {
            Identity::UserPrincipalName(v) | Identity::SamAccountName(v) | Identity::ObjectSid(v) => v.clone(),
            Identity::ObjectGuid(g) => g.hyphenated().to_string(),
        }
    }
}

/// Parses a GUID with or without braces, in any case.
pub fn parse_guid(text: &str) -> Option<Uuid> {
    let trimmed = text.strip_prefix('{').and_then(|t| t.strip_suffix('}')).unwrap_or(text);
    // Only the hyphenated 36-character form: a bare 32-digit hex string is too easy to confuse
    // with other binary attributes pasted by mistake.
    if trimmed.len() != 36 {
        return None;
    }
    Uuid::parse_str(trimmed).ok()
}

fn parse_upn(text: &str) -> Result<String, IdentityError> {
    let err = || IdentityError::UserPrincipalName(text.to_owned());
    let (local, domain) = text.split_once('@').ok_or_else(err)?;
    let local_ok = !local.is_empty()
        && local.len() <= 256
        && !local.chars().any(|c| c.is_whitespace() || c.is_control() || c == '@');
    let domain_ok = !domain.is_empty()
        && domain.len() <= 255
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(text.to_lowercase())
    } else {
        Err(err())
    }
}

/// The parts of a SID's string form `S-1-<authority>-<sub>...`: the 48-bit identifier authority
/// and 1 to 15 sub-authorities, each a u32. `None` when the text is not a SID.
pub fn sid_parts(text: &str) -> Option<(u64, Vec<u32>)> {
    let upper = text.to_ascii_uppercase();
    let rest = upper.strip_prefix("S-1-")?;
    let mut parts = rest.split('-');
    let authority: u64 = parts.next()?.parse().ok()?;
    if authority >= 1 << 48 {
        return None;
    }
    let subs: Vec<u32> = parts.map(|p| p.parse().ok()).collect::<Option<_>>()?;
    if subs.is_empty() || subs.len() > 15 {
        return None;
    }
    Some((authority, subs))
}

/// Parses a SID into its canonical string form.
fn parse_sid(text: &str) -> Option<String> {
    let (authority, subs) = sid_parts(text)?;
    let mut canonical = format!("S-1-{authority}");
    for sub in subs {
        canonical.push('-');
        canonical.push_str(&sub.to_string());
    }
    Some(canonical)
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self {
            Identity::UserPrincipalName(_) => "upn",
            Identity::SamAccountName(_) => "sam",
            Identity::ObjectGuid(_) => "guid",
            Identity::ObjectSid(_) => "sid",
        };
        write!(f, "{prefix}:{}", self.value())
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    /// Parses the `kind:value` form used on the command line, in snapshots and in the store.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.split_once(':') {
            Some(("upn", v)) => Identity::user_principal_name(v),
            Some(("sam", v)) => Identity::sam_account_name(v),
            Some(("guid", v)) => Identity::object_guid(v),
            Some(("sid", v)) => Identity::object_sid(v),
            _ => Err(IdentityError::UnknownKind(text.to_owned())),
        }
    }
}

impl Serialize for Identity {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Identity {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

// By hand, as the serde impls above: the `kind:value` text. The pattern checks the kind only; the
// value's own rules are `FromStr`'s.
#[cfg(feature = "openapi")]
crate::openapi::string_schema!(
    Identity,
    "An account as declared, `kind:value`: `upn:` a userPrincipalName, `sam:` a samAccountName, `guid:` an \
     objectGuid, `sid:` an objectSid.",
    "^(upn|sam|guid|sid):.+$",
    "upn:alice@contoso.com"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upn_is_case_insensitive_and_checked() {
        assert_eq!(
            Identity::user_principal_name("Alice@Contoso.COM").unwrap(),
            Identity::UserPrincipalName("alice@contoso.com".into())
        );
        for bad in
            ["alice", "@contoso.com", "alice@", "a b@contoso.com", "alice@contoso..com", "alice@-x.com", "a@b@c.com"]
        {
            assert!(Identity::user_principal_name(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sam_account_name_rules() {
        assert!(Identity::sam_account_name("svc-remedy").is_ok());
        for bad in ["", "a/b", "name.", "abcdefghijklmnopqrstu", "x@y", "   "] {
            assert!(Identity::sam_account_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn guid_forms() {
        let a = Identity::object_guid("{6F9619FF-8B86-D011-B42D-00C04FC964FF}").unwrap();
        let b = Identity::object_guid("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap();
        assert_eq!(a, b);
        for bad in ["6f9619ff8b86d011b42d00c04fc964ff", "6f9619ff-8b86-d011-b42d-00c04fc964f", "not-a-guid"] {
            assert!(Identity::object_guid(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn sid_forms() {
        assert_eq!(
            Identity::object_sid("s-1-5-21-1004336348-1177238915-682003330-512").unwrap().value(),
            "S-1-5-21-1004336348-1177238915-682003330-512"
        );
        for bad in ["S-1-5", "S-2-5-21", "S-1-5-x", "S-1-5-21-4294967296", "1-5-21"] {
            assert!(Identity::object_sid(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "upn:alice@contoso.com",
            "sam:alice",
            "guid:6f9619ff-8b86-d011-b42d-00c04fc964ff",
            "sid:S-1-5-21-1-2-3-1104",
        ] {
            let id: Identity = text.parse().unwrap();
            assert_eq!(id.to_string(), text);
        }
        assert!("alice".parse::<Identity>().is_err());
    }
}
