//! The manifest loader on arbitrary input: `load_file`, the one entry point the daemon reads a
//! manifest file through (daemon/src/manifest_dir.rs). Bytes that are not UTF-8 are read lossily
//! (the daemon refuses them before the loader; the loader itself only ever sees text).
//!
//! Besides not panicking, the loader must keep the promises its callers rely on: every diagnostic
//! names the file and points into it (fuzz/src/lib.rs); each document is either loaded or
//! rejected, never both; a rejected document says why, in at most 51 diagnostics; a file with a
//! YAML syntax error loads nothing; loading the same text twice gives the same result; and a
//! manifest that loaded, written out again as YAML, loads as the same manifest.

#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;
use remedy_fuzz::{check_diagnostic, line_lengths};
use remedy_policies::load::{assemble, load_file, FileLoad};
use remedy_policies::Manifest;
use serde_yaml::{Mapping, Value};

const FILE: &str = "manifests/fuzzed.yaml";

/// The most diagnostics one rejected document has: 50 problems and the count of those not shown.
const MOST_DIAGNOSTICS: usize = 51;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let load = load_file(FILE, &text);
    check(&text, &load);
    assert_eq!(load, load_file(FILE, &text), "the same text loaded twice gave two results");
    for manifest in &load.manifests {
        written_out_loads_the_same(manifest);
    }
    // A file alone: the set holds its manifests, unless a name is used twice.
    let set = assemble([load.clone()]);
    assert!(set.manifests.len() <= load.manifests.len());
    let names: BTreeSet<_> = set.manifests.iter().map(|m| &m.name).collect();
    assert_eq!(names.len(), set.manifests.len(), "a name twice in the set");
});

fn check(text: &str, load: &FileLoad) {
    assert_eq!(load.file, FILE);
    let lines = line_lengths(text);
    let mut documents = BTreeSet::new();
    for manifest in &load.manifests {
        let origin = &manifest.origin;
        assert_eq!(origin.file, FILE);
        assert!(documents.insert(origin.document), "document {} loaded twice", origin.document);
        assert!(origin.line >= 1 && origin.column >= 1, "manifest at {origin}");
        assert!(origin.line <= lines.len(), "manifest at {origin}, past the last line");
    }
    let loaded = documents.clone();
    let mut previous = None;
    for rejected in &load.rejected {
        assert_eq!(rejected.file, FILE);
        assert!(previous < Some(rejected.document), "rejected documents out of order or twice");
        previous = Some(rejected.document);
        assert!(!loaded.contains(&rejected.document), "document {} both loaded and rejected", rejected.document);
        let count = rejected.diagnostics.len();
        assert!(
            (1..=MOST_DIAGNOSTICS).contains(&count),
            "document {} rejected with {count} diagnostics",
            rejected.document
        );
        for diagnostic in &rejected.diagnostics {
            check_diagnostic(FILE, text, &lines, diagnostic);
            if diagnostic.message.starts_with("YAML syntax error") {
                assert!(load.manifests.is_empty(), "a file with a syntax error loaded manifests: {diagnostic}");
            }
        }
    }
}

/// Writes `manifest` out as the manifest language and loads it again: the same manifest must come
/// back (what the loader accepted, it read as meaning what it says).
fn written_out_loads_the_same(manifest: &Manifest) {
    let text = serde_yaml::to_string(&manifest_value(manifest)).expect("a manifest can be written as YAML");
    let again = load_file("written-out.yaml", &text);
    let problems: Vec<String> = again.rejected.iter().flat_map(|r| &r.diagnostics).map(ToString::to_string).collect();
    assert!(problems.is_empty(), "{manifest:#?}\nwritten out as\n{text}\nis rejected: {problems:#?}");
    assert_eq!(again.manifests.len(), 1, "{text}");
    let back = &again.manifests[0];
    assert_eq!(
        (&back.name, &back.labels, &back.annotations, &back.spec, &back.generation),
        (&manifest.name, &manifest.labels, &manifest.annotations, &manifest.spec, &manifest.generation),
        "written out as\n{text}\nit loads as another manifest"
    );
}

fn manifest_value(manifest: &Manifest) -> Value {
    let spec = &manifest.spec;
    let mut metadata = mapping([("name", Value::from(manifest.name.as_str()))]);
    for (field, entries) in [("labels", &manifest.labels), ("annotations", &manifest.annotations)] {
        if !entries.is_empty() {
            let values = entries.iter().map(|(k, v)| (Value::from(k.as_str()), Value::from(v.as_str()))).collect();
            metadata.insert(field.into(), Value::Mapping(values));
        }
    }
    let identity = &spec.target.identity;
    let mut target = mapping([(identity.field_name(), Value::from(identity.value()))]);
    if let Some(id) = spec.target.entra_object_id {
        target.insert("entraObjectId".into(), id.hyphenated().to_string().into());
    }
    let ad = &spec.active_directory;
    let mut active_directory = mapping([
        ("mustChangePassword", Value::from(ad.must_change_password)),
        ("clearPasswordNeverExpires", Value::from(ad.clear_password_never_expires)),
    ]);
    if let Some(disabled) = ad.disabled {
        active_directory.insert("disabled".into(), disabled.into());
    }
    let entra = &spec.entra_id;
    let mut entra_id = mapping([
        ("revokeSessions", Value::from(entra.revoke_sessions)),
        ("confirmCompromised", Value::from(entra.confirm_compromised)),
    ]);
    if let Some(suspended) = entra.suspended {
        entra_id.insert("suspended".into(), suspended.into());
    }
    let on_release = serde_yaml::to_value(spec.on_release).expect("onRelease as YAML");
    let mut spec_value = mapping([
        ("reason", Value::from(spec.reason.as_str())),
        ("target", Value::Mapping(target)),
        ("activeDirectory", Value::Mapping(active_directory)),
        ("entraId", Value::Mapping(entra_id)),
        ("onRelease", on_release),
        ("suspend", Value::from(spec.suspend)),
    ]);
    if let Some(expires) = spec.expires {
        spec_value.insert("expires".into(), expires.to_rfc3339().into());
    }
    Value::Mapping(mapping([
        ("apiVersion", Value::from("remedy.dev/v1")),
        ("kind", Value::from("Remediation")),
        ("metadata", Value::Mapping(metadata)),
        ("spec", Value::Mapping(spec_value)),
    ]))
}

fn mapping<const N: usize>(entries: [(&str, Value); N]) -> Mapping {
    entries.into_iter().map(|(key, value)| (Value::from(key), value)).collect()
}
