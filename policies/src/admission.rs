//! Which manifests are in force after a load of the manifest directory: the daemon's most delicate
//! safety rule, kept here, pure, so that it can be tested case by case.
//!
//! - A set that loads cleanly is in force as it is.
//! - A single invalid manifest takes only itself out: its **last valid version stays in force**
//!   (an invalid edit must never release an account), and it is reported invalid with the
//!   diagnostics. The version is kept by name (the rejected document's `metadata.name` could be
//!   read) or by file (the document that held it cannot be read at all).
//! - Files claim names: a name another file held while that file is now rejected may still be
//!   that file's (its name just cannot be read now). A manifest in force keeps its version; one new
//!   to the daemon waits until the other file is fixed or deleted. A duplicate of `inc-9` elsewhere
//!   must not become "the" `inc-9` because `inc-9`'s own file got a syntax error.
//! - A manifest that left the set may be released only when every rejected document names a
//!   manifest: one that names none (a file that is not YAML) might be the manifest that seems to
//!   be gone ([`Admission::may_release`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::load::{ManifestSet, Rejected};
use crate::manifest::{Manifest, ManifestName};

/// The manifests admitted so far, and what the latest load rejected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Admission {
    /// The manifests in force: the valid ones, and the last valid version of those now invalid.
    in_force: BTreeMap<ManifestName, Manifest>,
    /// Manifests rejected by the latest load, with their diagnostics.
    invalid: BTreeMap<ManifestName, Vec<String>>,
    /// The files that named each manifest in the latest load (valid or rejected), and rejected
    /// files that named it before and cannot be read now.
    claims: BTreeMap<ManifestName, BTreeSet<String>>,
    /// Rejected documents that name no manifest, with their diagnostics.
    unattributed: Vec<String>,
    /// A set has been admitted (before the first, nothing may be released).
    loaded: bool,
}

impl Admission {
    /// The manifests in force.
    pub fn in_force(&self) -> &BTreeMap<ManifestName, Manifest> {
        &self.in_force
    }

    /// The manifests the latest load rejected, with their diagnostics (a rejected manifest may
    /// also be in force: its last valid version).
    pub fn invalid(&self) -> &BTreeMap<ManifestName, Vec<String>> {
        &self.invalid
    }

    /// Rejected documents of the latest load that name no manifest.
    pub fn unattributed(&self) -> &[String] {
        &self.unattributed
    }

    /// Whether a manifest that left the set may be released: a set was loaded and every rejected
    /// document of it names a manifest.
    pub fn may_release(&self) -> bool {
        self.loaded && self.unattributed.is_empty()
    }

    /// Every manifest known to the latest load: in force or rejected.
    pub fn names(&self) -> BTreeSet<ManifestName> {
        self.in_force.keys().chain(self.invalid.keys()).cloned().collect()
    }

    /// Takes in a newly loaded set; returns whether the manifests in force, or the rejected ones,
    /// changed.
    pub fn admit(&mut self, set: ManifestSet) -> bool {
        let ManifestSet { manifests, rejected } = set;
        let mut next: BTreeMap<ManifestName, Manifest> = manifests.into_iter().map(|m| (m.name.clone(), m)).collect();
        let rejected_files: BTreeSet<&str> = rejected.iter().map(|r| r.file.as_str()).collect();
        let mut invalid: BTreeMap<ManifestName, Vec<String>> = BTreeMap::new();
        let mut unattributed = Vec::new();
        for rejection in &rejected {
            let diagnostics: Vec<String> = rejection.diagnostics.iter().map(ToString::to_string).collect();
            match name_of(rejection) {
                Some(name) => invalid.entry(name).or_default().extend(diagnostics),
                None => unattributed.push(diagnostics.join("; ")),
            }
        }
        // Keep the last valid version of a manifest that is now rejected, by name or by file.
        for (name, previous) in &self.in_force {
            let previous_file_rejected = rejected_files.contains(previous.origin.file.as_str());
            if let Some(current) = next.get(name) {
                // Another file now holds the name while the manifest's own file is rejected: the
                // rejected file may still mean the manifest, so the last valid version stays.
                if previous_file_rejected && current.origin.file != previous.origin.file {
                    let mut diagnostics = diagnostics_of(&rejected, &previous.origin.file);
                    diagnostics.push(format!(
                        "{} now also names {name}; the version from {} stays in force until {} is fixed",
                        current.origin.file, previous.origin.file, previous.origin.file
                    ));
                    invalid.insert(name.clone(), diagnostics);
                    next.insert(name.clone(), previous.clone());
                }
                continue;
            }
            if invalid.contains_key(name) {
                next.insert(name.clone(), previous.clone());
            } else if previous_file_rejected {
                invalid.insert(name.clone(), diagnostics_of(&rejected, &previous.origin.file));
                next.insert(name.clone(), previous.clone());
            }
        }
        // A name new to the daemon that a now-rejected file claimed before waits.
        let mut claims: BTreeMap<ManifestName, BTreeSet<String>> = BTreeMap::new();
        let waiting: Vec<(ManifestName, String, String)> = next
            .iter()
            .filter(|(name, _)| !self.in_force.contains_key(*name))
            .filter_map(|(name, current)| {
                let files = self.claims.get(name)?;
                let other = files.iter().find(|f| **f != current.origin.file && rejected_files.contains(f.as_str()))?;
                Some((name.clone(), current.origin.file.clone(), other.clone()))
            })
            .collect();
        for (name, current, other) in waiting {
            next.remove(&name);
            invalid.entry(name.clone()).or_default().push(format!(
                "{other}, which named {name} before, cannot be read now; {current}'s {name} waits until {other} is \
                 fixed or deleted"
            ));
            claims.entry(name).or_default().insert(current);
        }
        for manifest in next.values() {
            claims.entry(manifest.name.clone()).or_default().insert(manifest.origin.file.clone());
        }
        for rejection in &rejected {
            if let Some(name) = name_of(rejection) {
                claims.entry(name).or_default().insert(rejection.file.clone());
            }
        }
        for (name, files) in &self.claims {
            for file in files.iter().filter(|f| rejected_files.contains(f.as_str())) {
                claims.entry(name.clone()).or_default().insert(file.clone());
            }
        }
        let changed = next != self.in_force || invalid != self.invalid;
        *self = Admission { in_force: next, invalid, claims, unattributed, loaded: true };
        changed
    }
}

fn name_of(rejection: &Rejected) -> Option<ManifestName> {
    rejection.name.as_deref().and_then(|n| ManifestName::new(n).ok())
}

/// The diagnostics of every rejected document of `file`.
fn diagnostics_of(rejected: &[Rejected], file: &str) -> Vec<String> {
    rejected.iter().filter(|r| r.file == file).flat_map(|r| r.diagnostics.iter().map(ToString::to_string)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{assemble, load_file};

    /// A manifest document named `name`, disabling `user`.
    fn doc(name: &str, user: &str) -> String {
        format!(
            "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: test\n  \
             target:\n    samAccountName: {user}\n  activeDirectory:\n    disabled: true\n"
        )
    }

    /// The same document with a schema error, its name still readable.
    fn broken(name: &str) -> String {
        format!("apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: [\n")
    }

    /// A file that is not YAML at all: no name can be read from it.
    const GARBAGE: &str = "{{{ not: yaml\n";

    /// One load: (file, text) pairs.
    fn load(files: &[(&str, &str)]) -> ManifestSet {
        assemble(files.iter().map(|(file, text)| load_file(file, text)))
    }

    struct Case {
        what: &'static str,
        /// Loads admitted in order; the expectations are about the state after the last.
        loads: Vec<Vec<(&'static str, String)>>,
        /// name → the file whose version is in force.
        in_force: &'static [(&'static str, &'static str)],
        invalid: &'static [&'static str],
        may_release: bool,
        /// Whether the last load changed what is in force or rejected.
        changed: bool,
    }

    fn cases() -> Vec<Case> {
        let inc1 = doc("inc-1", "alice");
        let inc1_bob = doc("inc-1", "bob");
        let inc2 = doc("inc-2", "carol");
        vec![
            Case {
                what: "a clean set is in force as it is",
                loads: vec![vec![("a.yaml", inc1.clone()), ("b.yaml", inc2.clone())]],
                in_force: &[("inc-1", "a.yaml"), ("inc-2", "b.yaml")],
                invalid: &[],
                may_release: true,
                changed: true,
            },
            Case {
                what: "the same set again changes nothing",
                loads: vec![vec![("a.yaml", inc1.clone())], vec![("a.yaml", inc1.clone())]],
                in_force: &[("inc-1", "a.yaml")],
                invalid: &[],
                may_release: true,
                changed: false,
            },
            Case {
                what: "an invalid edit keeps the last valid version (by name)",
                loads: vec![vec![("a.yaml", inc1.clone())], vec![("a.yaml", broken("inc-1"))]],
                in_force: &[("inc-1", "a.yaml")],
                invalid: &["inc-1"],
                may_release: true,
                changed: true,
            },
            Case {
                what: "a file that is no longer YAML keeps its manifest (by file) and blocks every release",
                loads: vec![
                    vec![("a.yaml", inc1.clone()), ("b.yaml", inc2.clone())],
                    vec![("a.yaml", GARBAGE.to_owned()), ("b.yaml", inc2.clone())],
                ],
                in_force: &[("inc-1", "a.yaml"), ("inc-2", "b.yaml")],
                invalid: &["inc-1"],
                may_release: false,
                changed: true,
            },
            Case {
                what: "a deleted manifest leaves the set and may be released",
                loads: vec![vec![("a.yaml", inc1.clone()), ("b.yaml", inc2.clone())], vec![("b.yaml", inc2.clone())]],
                in_force: &[("inc-2", "b.yaml")],
                invalid: &[],
                may_release: true,
                changed: true,
            },
            Case {
                what: "a deleted manifest while another file names nothing: nothing may be released",
                loads: vec![
                    vec![("a.yaml", inc1.clone()), ("b.yaml", inc2.clone())],
                    vec![("b.yaml", inc2.clone()), ("c.yaml", GARBAGE.to_owned())],
                ],
                in_force: &[("inc-2", "b.yaml")],
                invalid: &[],
                may_release: false,
                changed: true,
            },
            Case {
                what: "another file taking the name while the manifest's own file is rejected: the old version stays",
                loads: vec![
                    vec![("a.yaml", inc1.clone())],
                    vec![("a.yaml", GARBAGE.to_owned()), ("z.yaml", inc1_bob.clone())],
                ],
                in_force: &[("inc-1", "a.yaml")],
                invalid: &["inc-1"],
                may_release: false,
                changed: true,
            },
            Case {
                what: "a new manifest whose name a now-unreadable file claimed before waits",
                loads: vec![
                    vec![("a.yaml", broken("inc-1"))],
                    vec![("a.yaml", GARBAGE.to_owned()), ("z.yaml", inc1_bob.clone())],
                ],
                in_force: &[],
                invalid: &["inc-1"],
                may_release: false,
                changed: true,
            },
            Case {
                what: "the claim lasts while the file stays unreadable",
                loads: vec![
                    vec![("a.yaml", broken("inc-1"))],
                    vec![("a.yaml", GARBAGE.to_owned())],
                    vec![("a.yaml", GARBAGE.to_owned()), ("z.yaml", inc1_bob.clone())],
                ],
                in_force: &[],
                invalid: &["inc-1"],
                may_release: false,
                changed: true,
            },
            Case {
                what: "the claim ends when the unreadable file is deleted",
                loads: vec![
                    vec![("a.yaml", broken("inc-1"))],
                    vec![("a.yaml", GARBAGE.to_owned()), ("z.yaml", inc1_bob.clone())],
                    vec![("z.yaml", inc1_bob.clone())],
                ],
                in_force: &[("inc-1", "z.yaml")],
                invalid: &[],
                may_release: true,
                changed: true,
            },
            Case {
                what: "a manifest that was never valid is rejected and not in force",
                loads: vec![vec![("a.yaml", broken("inc-1")), ("b.yaml", inc2.clone())]],
                in_force: &[("inc-2", "b.yaml")],
                invalid: &["inc-1"],
                may_release: true,
                changed: true,
            },
            Case {
                what: "a fixed manifest takes effect and is no longer invalid",
                loads: vec![
                    vec![("a.yaml", inc1.clone())],
                    vec![("a.yaml", broken("inc-1"))],
                    vec![("a.yaml", inc1_bob.clone())],
                ],
                in_force: &[("inc-1", "a.yaml")],
                invalid: &[],
                may_release: true,
                changed: true,
            },
            Case {
                what: "duplicates are both rejected, nothing in force under the name",
                loads: vec![vec![("a.yaml", inc1.clone()), ("b.yaml", inc1_bob.clone())]],
                in_force: &[],
                invalid: &["inc-1"],
                may_release: true,
                changed: true,
            },
        ]
    }

    #[test]
    fn admission_cases() {
        for case in cases() {
            let mut admission = Admission::default();
            let mut changed = false;
            for files in &case.loads {
                let files: Vec<(&str, &str)> = files.iter().map(|(f, t)| (*f, t.as_str())).collect();
                changed = admission.admit(load(&files));
            }
            let in_force: Vec<(String, String)> = admission
                .in_force()
                .iter()
                .map(|(name, manifest)| (name.to_string(), manifest.origin.file.clone()))
                .collect();
            let expected: Vec<(String, String)> =
                case.in_force.iter().map(|(n, f)| ((*n).to_owned(), (*f).to_owned())).collect();
            assert_eq!(in_force, expected, "{}: in force", case.what);
            let invalid: Vec<String> = admission.invalid().keys().map(ToString::to_string).collect();
            assert_eq!(invalid, case.invalid, "{}: invalid", case.what);
            assert_eq!(admission.may_release(), case.may_release, "{}: may release", case.what);
            assert_eq!(changed, case.changed, "{}: changed", case.what);
        }
    }

    #[test]
    fn the_kept_version_is_the_last_valid_one_not_the_new_claimant() {
        let mut admission = Admission::default();
        admission.admit(load(&[("a.yaml", &doc("inc-1", "alice"))]));
        admission.admit(load(&[("a.yaml", GARBAGE), ("z.yaml", &doc("inc-1", "bob"))]));
        let kept = &admission.in_force()[&ManifestName::new("inc-1").unwrap()];
        assert_eq!(kept.spec.target.identity.to_string(), "sam:alice");
        let why = admission.invalid()[&ManifestName::new("inc-1").unwrap()].join("; ");
        assert!(why.contains("z.yaml now also names inc-1"), "{why}");
    }

    #[test]
    fn a_waiting_manifest_says_which_file_it_waits_for() {
        let mut admission = Admission::default();
        admission.admit(load(&[("a.yaml", &broken("inc-1"))]));
        admission.admit(load(&[("a.yaml", GARBAGE), ("z.yaml", &doc("inc-1", "bob"))]));
        let why = admission.invalid()[&ManifestName::new("inc-1").unwrap()].join("; ");
        assert!(why.contains("a.yaml, which named inc-1 before, cannot be read now"), "{why}");
        assert!(why.contains("z.yaml's inc-1 waits"), "{why}");
    }

    #[test]
    fn nothing_may_be_released_before_the_first_load() {
        assert!(!Admission::default().may_release());
        assert!(Admission::default().names().is_empty());
    }

    #[test]
    fn names_cover_manifests_in_force_and_rejected() {
        let mut admission = Admission::default();
        admission.admit(load(&[("a.yaml", &broken("inc-1")), ("b.yaml", &doc("inc-2", "carol"))]));
        let names: Vec<String> = admission.names().iter().map(ToString::to_string).collect();
        assert_eq!(names, ["inc-1", "inc-2"]);
        assert_eq!(admission.unattributed().len(), 0);
    }
}
