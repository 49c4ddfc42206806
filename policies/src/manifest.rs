//! The validated manifest model (`apiVersion: remedy.dev/v1`, `kind: Remediation`).
//!
//! Values of these types are only made by the loader (`crate::load`) after every field was checked,
//! so code that holds a [`Manifest`] may rely on its invariants: a valid name, exactly one target,
//! at least one remediation declared.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::identity::Identity;

pub const API_VERSION: &str = "remedy.dev/v1";
pub const KIND_REMEDIATION: &str = "Remediation";

/// A manifest name: a DNS label (1 to 63 of `a-z`, `0-9`, `-`, starting and ending alphanumeric).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ManifestName(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid name: use 1 to 63 lower-case letters, digits and '-', starting and ending with a letter or digit")]
pub struct ManifestNameError(pub String);

impl ManifestName {
    pub fn new(text: &str) -> Result<Self, ManifestNameError> {
        let valid = (1..=63).contains(&text.len())
            && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !text.starts_with('-')
            && !text.ends_with('-');
        if valid {
            Ok(ManifestName(text.to_owned()))
        } else {
            Err(ManifestNameError(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ManifestName {
    type Error = ManifestNameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ManifestName::new(&value)
    }
}

impl From<ManifestName> for String {
    fn from(name: ManifestName) -> String {
        name.0
    }
}

impl fmt::Display for ManifestName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// By hand: the JSON form is the string `ManifestName::new` accepts.
#[cfg(feature = "openapi")]
crate::openapi::string_schema!(
    ManifestName,
    "A manifest's name: a DNS label (1 to 63 of a-z, 0-9 and '-', starting and ending with a letter or digit).",
    "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$",
    "inc-4801-staff0007"
);

/// The account a manifest is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub identity: Identity,
    /// The Entra ID object id, when the cloud identity cannot be found through the UPN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_object_id: Option<Uuid>,
}

/// What must hold for the account in Active Directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActiveDirectoryIntent {
    /// `Some(true)`: held disabled (ACCOUNTDISABLE); `Some(false)`: held enabled; `None`: not managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<bool>,
    /// One-shot: the user must change the password at next logon (`pwdLastSet=0`).
    #[serde(default)]
    pub must_change_password: bool,
    /// Allows remedy to clear DONT_EXPIRE_PASSWORD so that a forced change takes effect.
    #[serde(default)]
    pub clear_password_never_expires: bool,
}

impl ActiveDirectoryIntent {
    pub fn is_empty(&self) -> bool {
        self.disabled.is_none() && !self.must_change_password && !self.clear_password_never_expires
    }
}

/// What must hold for the account in Entra ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntraIntent {
    /// `Some(true)`: held suspended (`accountEnabled=false`); `Some(false)`: held enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended: Option<bool>,
    /// One-shot: sign-in sessions revoked after the manifest took effect.
    #[serde(default)]
    pub revoke_sessions: bool,
    /// One-shot: the user confirmed compromised in Identity Protection (user risk high).
    #[serde(default)]
    pub confirm_compromised: bool,
}

impl EntraIntent {
    pub fn is_empty(&self) -> bool {
        self.suspended.is_none() && !self.revoke_sessions && !self.confirm_compromised
    }
}

/// What happens to an account when its manifest is deleted or expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OnRelease {
    /// The account stays as it is.
    #[default]
    Leave,
    /// remedy puts back what it changed itself, where nobody changed it since.
    Restore,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemediationSpec {
    /// Incident or alert reference: carried into every history record.
    pub reason: String,
    pub target: Target,
    #[serde(default)]
    pub active_directory: ActiveDirectoryIntent,
    #[serde(default)]
    pub entra_id: EntraIntent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<DateTime<Utc>>,
    #[serde(default)]
    pub on_release: OnRelease,
    /// Stop reconciling without deleting: the account is left as it is, nothing is released.
    #[serde(default)]
    pub suspend: bool,
}

/// Where a manifest was read from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The file as the loader was told its name (relative to the manifest directory).
    pub file: String,
    /// 0-based index of the document in a multi-document file.
    pub document: usize,
    /// 1-based line and column of the document's start.
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The content hash of a manifest's metadata and spec: it changes exactly when what the manifest
/// says changes (not when it moves to another file).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Generation(String);

impl Generation {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

// By hand: the JSON form is the hex digest `generation` makes.
#[cfg(feature = "openapi")]
crate::openapi::string_schema!(
    Generation,
    "A manifest's content hash (16 hexadecimal digits): it changes exactly when what the manifest says changes.",
    "^[0-9a-f]{16}$",
    "4e24a8230d6e3862"
);

/// A validated `Remediation` manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub name: ManifestName,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    pub spec: RemediationSpec,
    pub origin: Origin,
    pub generation: Generation,
}

/// Why a set of checked parts does not make a manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("spec declares no remediation: set at least one of activeDirectory.disabled, activeDirectory.mustChangePassword, entraId.suspended, entraId.revokeSessions, entraId.confirmCompromised")]
    NothingDeclared,
    #[error(
        "activeDirectory.clearPasswordNeverExpires only makes sense with activeDirectory.mustChangePassword: true"
    )]
    ClearWithoutPasswordChange,
    #[error("spec.reason must not be empty: name the incident or alert this remediation answers")]
    EmptyReason,
}

impl Manifest {
    /// Builds a manifest from parts that were each validated, enforcing the rules between them.
    pub fn new(
        name: ManifestName,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
        spec: RemediationSpec,
        origin: Origin,
    ) -> Result<Self, ManifestError> {
        if spec.reason.trim().is_empty() {
            return Err(ManifestError::EmptyReason);
        }
        let ad = &spec.active_directory;
        if ad.clear_password_never_expires && !ad.must_change_password {
            return Err(ManifestError::ClearWithoutPasswordChange);
        }
        if ad.disabled.is_none() && !ad.must_change_password && spec.entra_id.is_empty() {
            return Err(ManifestError::NothingDeclared);
        }
        let generation = generation_of(&name, &labels, &annotations, &spec);
        Ok(Manifest { name, labels, annotations, spec, origin, generation })
    }

    pub fn target(&self) -> &Target {
        &self.spec.target
    }

    /// Whether the manifest's `expires` time has passed at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.spec.expires.is_some_and(|at| at <= now)
    }
}

fn generation_of(
    name: &ManifestName,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    spec: &RemediationSpec,
) -> Generation {
    // serde_json with BTreeMaps and structs serialises deterministically.
    let canonical = serde_json::json!({
        "name": name, "labels": labels, "annotations": annotations, "spec": spec,
    });
    let digest = Sha256::digest(canonical.to_string().as_bytes());
    Generation(hex::encode(&digest[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RemediationSpec {
        RemediationSpec {
            reason: "INC-1".into(),
            target: Target { identity: Identity::sam_account_name("alice").unwrap(), entra_object_id: None },
            active_directory: ActiveDirectoryIntent { disabled: Some(true), ..Default::default() },
            entra_id: EntraIntent::default(),
            expires: None,
            on_release: OnRelease::Leave,
            suspend: false,
        }
    }

    fn origin(file: &str) -> Origin {
        Origin { file: file.into(), document: 0, line: 1, column: 1 }
    }

    #[test]
    fn names_follow_dns_label_rules() {
        assert!(ManifestName::new("inc-4711-alice").is_ok());
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(ManifestName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn generation_ignores_origin_but_follows_content() {
        let name = ManifestName::new("a").unwrap();
        let one =
            Manifest::new(name.clone(), Default::default(), Default::default(), spec(), origin("x.yaml")).unwrap();
        let moved =
            Manifest::new(name.clone(), Default::default(), Default::default(), spec(), origin("y.yaml")).unwrap();
        assert_eq!(one.generation, moved.generation);
        let mut changed_spec = spec();
        changed_spec.reason = "INC-2".into();
        let changed =
            Manifest::new(name, Default::default(), Default::default(), changed_spec, origin("x.yaml")).unwrap();
        assert_ne!(one.generation, changed.generation);
    }

    #[test]
    fn rules_between_fields() {
        let name = ManifestName::new("a").unwrap();
        let mut nothing = spec();
        nothing.active_directory = ActiveDirectoryIntent::default();
        assert_eq!(
            Manifest::new(name.clone(), Default::default(), Default::default(), nothing, origin("x")).unwrap_err(),
            ManifestError::NothingDeclared
        );
        let mut clear_only = spec();
        clear_only.active_directory.clear_password_never_expires = true;
        assert_eq!(
            Manifest::new(name.clone(), Default::default(), Default::default(), clear_only, origin("x")).unwrap_err(),
            ManifestError::ClearWithoutPasswordChange
        );
        let mut no_reason = spec();
        no_reason.reason = "  ".into();
        assert_eq!(
            Manifest::new(name, Default::default(), Default::default(), no_reason, origin("x")).unwrap_err(),
            ManifestError::EmptyReason
        );
    }
}
