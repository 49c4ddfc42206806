//! The second pass: one document's value, checked field by field against the manifest language.
//!
//! Hand-written rather than derived so that one pass reports every problem (serde stops at the
//! first), each at the key or value it is about, in words an operator can act on.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_yaml::Value;

use super::scan::{NodeSpan, Position, ScannedDocument};
use super::suggest::closest;
use super::{display_path, shorten, Problem, Problems};
use crate::identity::{parse_guid, Identity};
use crate::manifest::{
    ActiveDirectoryIntent, EntraIntent, Manifest, ManifestError, ManifestName, OnRelease, Origin, RemediationSpec,
    Target, API_VERSION, KIND_REMEDIATION,
};

const TOP: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA: &[&str] = &["name", "labels", "annotations"];
const SPEC: &[&str] = &["reason", "target", "activeDirectory", "entraId", "expires", "onRelease", "suspend"];
const IDENTITIES: &[&str] = &["userPrincipalName", "samAccountName", "objectGuid", "objectSid"];
const TARGET: &[&str] = &["userPrincipalName", "samAccountName", "objectGuid", "objectSid", "entraObjectId"];
const ACTIVE_DIRECTORY: &[&str] = &["disabled", "mustChangePassword", "clearPasswordNeverExpires"];
const ENTRA_ID: &[&str] = &["suspended", "revokeSessions", "confirmCompromised"];

/// Every mapping of the language and its fields: lets a misplaced field be sent where it belongs.
const SECTIONS: &[(&str, &[&str])] = &[
    ("the top level", TOP),
    ("metadata", METADATA),
    ("spec", SPEC),
    ("spec.target", TARGET),
    ("spec.activeDirectory", ACTIVE_DIRECTORY),
    ("spec.entraId", ENTRA_ID),
];

const TIME_EXAMPLES: &str = "2026-12-31T00:00:00Z or 2026-12-31T01:00:00+01:00";

/// Checks one document's value; on success the manifest, otherwise every problem found.
pub(super) fn decode(document: &ScannedDocument, value: &Value, origin: Origin) -> Result<Manifest, Vec<Problem>> {
    let mut decoder = Decoder { document, problems: Problems::default() };
    match decoder.manifest(value, origin) {
        Some(manifest) if decoder.problems.is_empty() => Ok(manifest),
        _ => Err(decoder.problems.into_vec()),
    }
}

type Path = Vec<String>;

fn child(path: &[String], key: &str) -> Path {
    let mut child = path.to_vec();
    child.push(key.to_owned());
    child
}

/// The language's fields of one mapping, by name (unknown ones were reported and left out).
struct Fields<'v> {
    path: Path,
    values: Vec<(&'static str, &'v Value)>,
}

impl<'v> Fields<'v> {
    fn get(&self, name: &str) -> Option<&'v Value> {
        self.values.iter().find(|(field, _)| *field == name).map(|(_, value)| *value)
    }
}

struct Metadata {
    name: ManifestName,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

struct Decoder<'a> {
    document: &'a ScannedDocument,
    problems: Problems,
}

/// Each decoding step reports its own problems and returns `None` when it found any; sibling
/// fields are all decoded before the results are combined, so that nothing goes unreported.
impl Decoder<'_> {
    fn manifest(&mut self, value: &Value, origin: Origin) -> Option<Manifest> {
        let top = self.fields(&[], value, TOP)?;
        self.required(&top, "apiVersion", &format!("set it to {API_VERSION}"), Self::api_version);
        self.required(&top, "kind", &format!("set it to {KIND_REMEDIATION}"), Self::kind);
        let metadata = self.required(&top, "metadata", "it holds the manifest's name", Self::metadata);
        let spec = self.required(&top, "spec", "it holds the reason, the target and the remediation", Self::spec);
        let (metadata, spec) = (metadata?, spec?);
        if !self.problems.is_empty() {
            return None;
        }
        self.apply_rules(metadata, spec, origin)
    }

    fn api_version(&mut self, path: &[String], value: &Value) -> Option<()> {
        let text = self.string(path, value)?;
        if text != API_VERSION {
            let message = format!("unknown apiVersion {:?}: expected {API_VERSION}", shorten(&text));
            self.error_at_value(path, message);
        }
        Some(())
    }

    fn kind(&mut self, path: &[String], value: &Value) -> Option<()> {
        let text = self.string(path, value)?;
        if text != KIND_REMEDIATION {
            let message = format!("unknown kind {:?}: expected {KIND_REMEDIATION}", shorten(&text));
            self.error_at_value(path, message);
        }
        Some(())
    }

    fn metadata(&mut self, path: &[String], value: &Value) -> Option<Metadata> {
        let fields = self.fields(path, value, METADATA)?;
        let name = self.required(
            &fields,
            "name",
            "a DNS label such as inc-4711-alice, unique across all manifests",
            Self::manifest_name,
        );
        let labels = self.optional(&fields, "labels", BTreeMap::new(), Self::string_map);
        let annotations = self.optional(&fields, "annotations", BTreeMap::new(), Self::string_map);
        Some(Metadata { name: name?, labels: labels?, annotations: annotations? })
    }

    fn manifest_name(&mut self, path: &[String], value: &Value) -> Option<ManifestName> {
        let text = self.string(path, value)?;
        ManifestName::new(&text).map_err(|error| self.error_at_value(path, error.to_string())).ok()
    }

    fn spec(&mut self, path: &[String], value: &Value) -> Option<RemediationSpec> {
        let fields = self.fields(path, value, SPEC)?;
        let reason = self.required(
            &fields,
            "reason",
            "name the incident or alert this remediation answers, e.g. \"INC-4711: impossible travel\"",
            Self::string,
        );
        let target = self.required(
            &fields,
            "target",
            &format!("the account to remediate, named by one of {}", IDENTITIES.join(", ")),
            Self::target,
        );
        let active_directory =
            self.optional(&fields, "activeDirectory", ActiveDirectoryIntent::default(), Self::active_directory);
        let entra_id = self.optional(&fields, "entraId", EntraIntent::default(), Self::entra_id);
        let expires = self.optional(&fields, "expires", None, |d, path, value| d.time(path, value).map(Some));
        let on_release = self.optional(&fields, "onRelease", OnRelease::default(), Self::on_release);
        let suspend = self.optional(&fields, "suspend", false, Self::boolean);
        Some(RemediationSpec {
            reason: reason?,
            target: target?,
            active_directory: active_directory?,
            entra_id: entra_id?,
            expires: expires?,
            on_release: on_release?,
            suspend: suspend?,
        })
    }

    fn target(&mut self, path: &[String], value: &Value) -> Option<Target> {
        let fields = self.fields(path, value, TARGET)?;
        let mut given = Vec::new();
        let mut identities = Vec::new();
        for &kind in IDENTITIES {
            if let Some(value) = fields.get(kind) {
                let field = child(path, kind);
                given.push((self.key_position(&field), kind));
                identities.extend(self.identity(&field, kind, value));
            }
        }
        let entra_object_id =
            self.optional(&fields, "entraObjectId", None, |d, path, value| d.guid(path, value).map(Some));
        given.sort();
        match given.as_slice() {
            [] => {
                let message = format!("no account named: give exactly one of {}", IDENTITIES.join(", "));
                self.error(self.key_position(path), path, message);
            }
            [_] => {}
            [(first, _), ..] => {
                let places: Vec<String> = given.iter().map(|(at, kind)| format!("{kind} ({at})")).collect();
                let message =
                    format!("exactly one of {} may be given, found {}", IDENTITIES.join(", "), join_with_and(&places));
                self.error(*first, path, message);
            }
        }
        match identities.as_slice() {
            [identity] if given.len() == 1 => {
                Some(Target { identity: identity.clone(), entra_object_id: entra_object_id? })
            }
            _ => None,
        }
    }

    fn identity(&mut self, path: &[String], kind: &str, value: &Value) -> Option<Identity> {
        let text = self.string(path, value)?;
        let parsed = match kind {
            "userPrincipalName" => Identity::user_principal_name(&text),
            "samAccountName" => Identity::sam_account_name(&text),
            "objectGuid" => Identity::object_guid(&text),
            _ => Identity::object_sid(&text),
        };
        parsed.map_err(|error| self.error_at_value(path, error.to_string())).ok()
    }

    fn guid(&mut self, path: &[String], value: &Value) -> Option<uuid::Uuid> {
        let text = self.string(path, value)?;
        let guid = parse_guid(&text);
        if guid.is_none() {
            let message = format!(
                "{:?} is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx, braces allowed)",
                shorten(&text)
            );
            self.error_at_value(path, message);
        }
        guid
    }

    fn active_directory(&mut self, path: &[String], value: &Value) -> Option<ActiveDirectoryIntent> {
        let fields = self.fields(path, value, ACTIVE_DIRECTORY)?;
        let disabled = self.optional(&fields, "disabled", None, |d, path, value| d.boolean(path, value).map(Some));
        let must_change_password = self.optional(&fields, "mustChangePassword", false, Self::boolean);
        let clear_password_never_expires = self.optional(&fields, "clearPasswordNeverExpires", false, Self::boolean);
        Some(ActiveDirectoryIntent {
            disabled: disabled?,
            must_change_password: must_change_password?,
            clear_password_never_expires: clear_password_never_expires?,
        })
    }

    fn entra_id(&mut self, path: &[String], value: &Value) -> Option<EntraIntent> {
        let fields = self.fields(path, value, ENTRA_ID)?;
        let suspended = self.optional(&fields, "suspended", None, |d, path, value| d.boolean(path, value).map(Some));
        let revoke_sessions = self.optional(&fields, "revokeSessions", false, Self::boolean);
        let confirm_compromised = self.optional(&fields, "confirmCompromised", false, Self::boolean);
        Some(EntraIntent {
            suspended: suspended?,
            revoke_sessions: revoke_sessions?,
            confirm_compromised: confirm_compromised?,
        })
    }

    fn time(&mut self, path: &[String], value: &Value) -> Option<DateTime<Utc>> {
        let Value::String(text) = value else {
            let message = format!("expected an RFC 3339 time such as {TIME_EXAMPLES}, found {}", describe(value));
            self.error_at_found(path, value, message);
            return None;
        };
        if let Ok(time) = DateTime::parse_from_rfc3339(text) {
            return Some(time.with_timezone(&Utc));
        }
        let shown = shorten(text);
        let message = if NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
            format!("{shown:?} has no UTC offset, so it is ambiguous: write {shown}Z for UTC, or give the offset (e.g. {shown}+01:00)")
        } else if NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok() {
            format!(
                "{shown:?} is a date without a time: write e.g. {shown}T00:00:00Z (an RFC 3339 time with an offset)"
            )
        } else {
            format!("{shown:?} is not an RFC 3339 time: expected e.g. {TIME_EXAMPLES}")
        };
        self.error_at_value(path, message);
        None
    }

    fn on_release(&mut self, path: &[String], value: &Value) -> Option<OnRelease> {
        match self.string(path, value)?.as_str() {
            "leave" => Some(OnRelease::Leave),
            "restore" => Some(OnRelease::Restore),
            other => {
                let message = format!(
                    "unknown onRelease {:?}: expected leave (keep the account as it is, the default) or restore (undo remedy's own changes)",
                    shorten(other)
                );
                self.error_at_value(path, message);
                None
            }
        }
    }

    /// The rules between fields live in [`Manifest::new`]; it reports one broken rule at a time,
    /// so each broken rule is reported, set aside, and the constructor asked again.
    fn apply_rules(&mut self, metadata: Metadata, mut spec: RemediationSpec, origin: Origin) -> Option<Manifest> {
        let Metadata { name, labels, annotations } = metadata;
        let mut broken = false;
        loop {
            let error =
                match Manifest::new(name.clone(), labels.clone(), annotations.clone(), spec.clone(), origin.clone()) {
                    Ok(manifest) => return (!broken).then_some(manifest),
                    Err(error) => error,
                };
            broken = true;
            let spec_path = vec!["spec".to_owned()];
            let message = error.to_string();
            match error {
                ManifestError::EmptyReason => {
                    let path = child(&spec_path, "reason");
                    self.error_at_value(&path, message);
                    spec.reason = "(set aside)".to_owned();
                }
                ManifestError::ClearWithoutPasswordChange => {
                    let path = child(&child(&spec_path, "activeDirectory"), "clearPasswordNeverExpires");
                    self.error(self.key_position(&path), &path, message);
                    spec.active_directory.clear_password_never_expires = false;
                }
                ManifestError::NothingDeclared => {
                    self.error(self.key_position(&spec_path), &spec_path, message);
                    return None;
                }
            }
        }
    }

    // ---- the building blocks ----

    /// `value` as a mapping of the fields in `allowed`; every other key is reported.
    fn fields<'v>(&mut self, path: &[String], value: &'v Value, allowed: &[&'static str]) -> Option<Fields<'v>> {
        let Value::Mapping(mapping) = value else {
            let message = if path.is_empty() {
                format!("a manifest must be a mapping of {}; found {}", allowed.join(", "), describe(value))
            } else {
                format!("expected a mapping of {}; found {}", allowed.join(", "), describe(value))
            };
            self.error_at_found(path, value, message);
            return None;
        };
        let mut values = Vec::new();
        for (key, field_value) in mapping {
            let key = key_text(key);
            match allowed.iter().find(|field| **field == key) {
                Some(field) => values.push((*field, field_value)),
                None => self.unknown_field(path, &key, allowed),
            }
        }
        Some(Fields { path: path.to_vec(), values })
    }

    fn unknown_field(&mut self, path: &[String], key: &str, allowed: &[&str]) {
        let document = self.document;
        // Made only if shown: a hostile mapping can have a hundred thousand unknown keys.
        self.problems.push_with(|| {
            let section = if path.is_empty() { "the top level".to_owned() } else { display_path(path) };
            let mut message = format!("unknown field {:?}", shorten(key));
            if let Some(near) = closest(key, allowed) {
                message.push_str(&format!(": did you mean {near:?}?"));
            } else if let Some((home, _)) =
                SECTIONS.iter().find(|(name, fields)| *name != section && fields.contains(&key))
            {
                message.push_str(&format!(": it belongs in {home}"));
            }
            message.push_str(&format!(" ({section} takes {})", allowed.join(", ")));
            let field = child(path, key);
            Problem::new(key_position(document, &field), display_path(&field), message)
        });
    }

    fn required<'v, T>(
        &mut self,
        fields: &Fields<'v>,
        name: &str,
        hint: &str,
        decode: impl FnOnce(&mut Self, &[String], &'v Value) -> Option<T>,
    ) -> Option<T> {
        let path = child(&fields.path, name);
        match fields.get(name) {
            Some(value) => decode(self, &path, value),
            None => {
                let parent =
                    if fields.path.is_empty() { String::new() } else { format!(" in {}", display_path(&fields.path)) };
                let message = format!("missing required field {name:?}{parent}: {hint}");
                self.error(self.key_position(&fields.path), &path, message);
                None
            }
        }
    }

    fn optional<'v, T>(
        &mut self,
        fields: &Fields<'v>,
        name: &str,
        default: T,
        decode: impl FnOnce(&mut Self, &[String], &'v Value) -> Option<T>,
    ) -> Option<T> {
        match fields.get(name) {
            Some(value) => decode(self, &child(&fields.path, name), value),
            None => Some(default),
        }
    }

    fn string(&mut self, path: &[String], value: &Value) -> Option<String> {
        match value {
            Value::String(text) => Some(text.clone()),
            other => {
                let message = format!("expected a string, found {}{}", describe(other), quoting_hint(other));
                self.error_at_found(path, other, message);
                None
            }
        }
    }

    fn boolean(&mut self, path: &[String], value: &Value) -> Option<bool> {
        match value {
            Value::Bool(flag) => Some(*flag),
            other => {
                let message = format!("expected a boolean (true or false), found {}", describe(other));
                self.error_at_found(path, other, message);
                None
            }
        }
    }

    /// Labels and annotations: any keys, every key and value a string.
    fn string_map(&mut self, path: &[String], value: &Value) -> Option<BTreeMap<String, String>> {
        let section = path.last().map_or("", String::as_str).to_owned();
        let Value::Mapping(mapping) = value else {
            let message = format!("expected a mapping of strings to strings, found {}", describe(value));
            self.error_at_found(path, value, message);
            return None;
        };
        let mut map = BTreeMap::new();
        let mut valid = true;
        for (key, entry) in mapping {
            let entry_path = child(path, &key_text(key));
            let Value::String(key) = key else {
                let message =
                    format!("keys of {section} must be strings, found {}{}", describe(key), quoting_hint(key));
                self.error(self.key_position(&entry_path), &entry_path, message);
                valid = false;
                continue;
            };
            match entry {
                Value::String(text) => {
                    map.insert(key.clone(), text.clone());
                }
                other => {
                    let message = format!(
                        "expected a string, found {}: values of {section} must be strings{}",
                        describe(other),
                        quoting_hint(other)
                    );
                    self.error_at_found(&entry_path, other, message);
                    valid = false;
                }
            }
        }
        valid.then_some(map)
    }

    // ---- positions and reporting ----

    fn key_position(&self, path: &[String]) -> Position {
        key_position(self.document, path)
    }

    fn value_position(&self, path: &[String]) -> Position {
        match span(self.document, path) {
            Some((span, true)) => span.value,
            Some((span, false)) => span.key.unwrap_or(span.value),
            None => self.document.position,
        }
    }

    fn error_at_value(&mut self, path: &[String], message: String) {
        self.error(self.value_position(path), path, message);
    }

    /// For "expected X, found `found`": at the value, or at the key when the value is empty
    /// (YAML places an empty value oddly: right after the colon, or on the next line).
    fn error_at_found(&mut self, path: &[String], found: &Value, message: String) {
        let position = if found.is_null() { self.key_position(path) } else { self.value_position(path) };
        self.error(position, path, message);
    }

    fn error(&mut self, position: Position, path: &[String], message: String) {
        self.problems.push(Problem::new(position, display_path(path), message));
    }
}

/// The span of `path`, or of its closest ancestor that was indexed (with `exact` false).
fn span(document: &ScannedDocument, path: &[String]) -> Option<(NodeSpan, bool)> {
    (0..=path.len()).rev().find_map(|len| document.index.get(&path[..len]).map(|span| (span, len == path.len())))
}

/// Where the key of `path` is written (for the document's root: where its content starts).
fn key_position(document: &ScannedDocument, path: &[String]) -> Position {
    match span(document, path) {
        Some((span, _)) => span.key.unwrap_or(span.value),
        None => document.position,
    }
}

/// A mapping key as text; keys that are not strings (`1:`, `true:`) in their YAML spelling.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(text) => text.clone(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::Null => "null".to_owned(),
        other => describe(other),
    }
}

/// What a value is, for "expected X, found Y".
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "nothing (an empty value)".to_owned(),
        Value::Bool(flag) => format!("boolean {flag}"),
        Value::Number(number) => format!("number {number}"),
        Value::String(text) => format!("string {:?}", shorten(text)),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(tagged) => format!("a value tagged {}", tagged.tag),
    }
}

/// For a number or boolean where text was expected: YAML read the bare word as something else.
fn quoting_hint(value: &Value) -> String {
    match value {
        Value::Bool(_) | Value::Number(_) => {
            format!(" (put it in quotes, \"{}\", if it is meant as text)", key_text(value))
        }
        _ => String::new(),
    }
}

fn join_with_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
