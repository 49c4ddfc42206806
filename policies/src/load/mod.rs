//! Loading manifests from text: parse, validate, report every problem with its location.
//!
//! PROVISIONAL implementation (first error per document, no field positions): it fixes the API
//! that the rest of the crate uses and is being replaced by the span-aware loader.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::diagnostic::{Diagnostic, Severity};
use crate::manifest::{Manifest, ManifestName, Origin, RemediationSpec, API_VERSION, KIND_REMEDIATION};

/// What one file yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLoad {
    pub file: String,
    pub manifests: Vec<Manifest>,
    pub rejected: Vec<Rejected>,
}

/// A document that did not make a manifest, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub file: String,
    /// 0-based document index within the file.
    pub document: usize,
    /// `metadata.name`, when it could be read: lets the daemon keep that manifest's last good
    /// version instead of treating it as deleted.
    pub name: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The whole manifest set: every valid manifest, and every rejected document with its reasons.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestSet {
    /// Sorted by name; names are unique.
    pub manifests: Vec<Manifest>,
    pub rejected: Vec<Rejected>,
}

impl ManifestSet {
    pub fn diagnostics(&self) -> impl Iterator<Item = &Diagnostic> {
        self.rejected.iter().flat_map(|r| r.diagnostics.iter())
    }

    pub fn is_valid(&self) -> bool {
        self.rejected.is_empty()
    }
}

/// Whether a path names a manifest file (`*.yaml` or `*.yml`).
pub fn is_manifest_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Parses and validates every document in one file.
pub fn load_file(file: &str, text: &str) -> FileLoad {
    let mut load = FileLoad { file: file.to_owned(), manifests: Vec::new(), rejected: Vec::new() };
    for (index, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(value) => value,
            Err(e) => {
                load.rejected.push(reject(file, index, None, &e));
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match build(file, index, value) {
            Ok(manifest) => load.manifests.push(manifest),
            Err(rejected) => load.rejected.push(*rejected),
        }
    }
    load
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDocument {
    api_version: String,
    kind: String,
    metadata: RawMetadata,
    spec: RemediationSpec,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

fn build(file: &str, index: usize, value: serde_yaml::Value) -> Result<Manifest, Box<Rejected>> {
    let name = value.get("metadata").and_then(|m| m.get("name")).and_then(|n| n.as_str()).map(str::to_owned);
    let raw: RawDocument =
        serde_yaml::from_value(value).map_err(|e| Box::new(reject(file, index, name.clone(), &e)))?;
    let fail = |message: String| {
        Box::new(Rejected {
            file: file.to_owned(),
            document: index,
            name: name.clone(),
            diagnostics: vec![diagnostic(file, 0, 0, message)],
        })
    };
    if raw.api_version != API_VERSION {
        return Err(fail(format!("unknown apiVersion {:?}: expected {API_VERSION}", raw.api_version)));
    }
    if raw.kind != KIND_REMEDIATION {
        return Err(fail(format!("unknown kind {:?}: expected {KIND_REMEDIATION}", raw.kind)));
    }
    let manifest_name = ManifestName::new(&raw.metadata.name).map_err(|e| fail(e.to_string()))?;
    let origin = Origin { file: file.to_owned(), document: index, line: 0, column: 0 };
    Manifest::new(manifest_name, raw.metadata.labels, raw.metadata.annotations, raw.spec, origin)
        .map_err(|e| fail(e.to_string()))
}

fn reject(file: &str, index: usize, name: Option<String>, error: &serde_yaml::Error) -> Rejected {
    let (line, column) = error.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
    Rejected { file: file.to_owned(), document: index, name, diagnostics: vec![diagnostic(file, line, column, error.to_string())] }
}

fn diagnostic(file: &str, line: usize, column: usize, message: String) -> Diagnostic {
    Diagnostic { file: file.to_owned(), line, column, path: String::new(), severity: Severity::Error, message }
}

/// Puts the files' results together, rejecting every document whose name is used more than once.
pub fn assemble(files: impl IntoIterator<Item = FileLoad>) -> ManifestSet {
    let mut set = ManifestSet::default();
    let mut by_name: BTreeMap<ManifestName, Vec<Manifest>> = BTreeMap::new();
    for load in files {
        set.rejected.extend(load.rejected);
        for manifest in load.manifests {
            by_name.entry(manifest.name.clone()).or_default().push(manifest);
        }
    }
    for (name, mut group) in by_name {
        if group.len() == 1 {
            set.manifests.extend(group.pop());
            continue;
        }
        let places: Vec<String> = group.iter().map(|m| m.origin.to_string()).collect();
        for manifest in group {
            let o = &manifest.origin;
            set.rejected.push(Rejected {
                file: o.file.clone(),
                document: o.document,
                name: Some(name.to_string()),
                diagnostics: vec![Diagnostic {
                    file: o.file.clone(),
                    line: o.line,
                    column: o.column,
                    path: "metadata.name".into(),
                    severity: Severity::Error,
                    message: format!("name {name:?} is used by more than one manifest ({}): names must be unique", places.join(", ")),
                }],
            });
        }
    }
    set
}
