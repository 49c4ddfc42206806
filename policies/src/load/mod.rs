//! Loading manifests from text: parse, validate, report every problem with its location.
//!
//! A file goes through two passes. [`scan`] reads the YAML event stream with saphyr-parser: it
//! refuses hostile or needless constructs (anchors, aliases, deep nesting, too many documents,
//! duplicate keys) before any value exists, splits the file into documents, and indexes where
//! every field is written. Then each document that passed is deserialised on its own into a
//! `serde_yaml::Value`, and [`decode`] checks it field by field, pointing each problem at its key
//! or value through the index. Nothing of either pass leaves this module: callers get validated
//! [`Manifest`]s and [`Diagnostic`]s.
//!
//! A file that cannot be read as YAML as a whole (syntax error, too large, too many documents) is
//! rejected as a whole: a broken file cannot be trusted to have been split right.
//!
//! The configuration file goes through the same first pass ([`screen`]), so that it has the same
//! limits, before serde reads it whole.

mod decode;
mod scan;
mod suggest;

use std::collections::BTreeMap;

use crate::diagnostic::{Diagnostic, Severity};
use crate::manifest::{Manifest, ManifestName, Origin};

use scan::{Position, ScannedDocument, SpanIndex};

/// The largest manifest file accepted, in bytes (1 MiB).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;

/// The most documents one file may hold (empty ones included).
pub const MAX_DOCUMENTS: usize = 1000;

/// The deepest nesting of mappings and lists accepted (the document's root mapping is level 1).
pub const MAX_DEPTH: usize = 32;

/// At most this many problems are reported per document; the rest are counted.
const MAX_PROBLEMS_PER_DOCUMENT: usize = 50;

/// Messages quote what they found; a quote longer than this is cut.
const LONGEST_QUOTE: usize = 60;

/// No message is longer than this (in characters), whatever it quotes.
const LONGEST_MESSAGE: usize = 1000;

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
    /// Sorted by file, then document.
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

/// What a file holds: the words its refusals use for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subject {
    Manifests,
    /// `remedy.yaml`.
    Configuration,
}

impl Subject {
    /// As in "not allowed in manifests".
    fn plural(self) -> &'static str {
        match self {
            Subject::Manifests => "manifests",
            Subject::Configuration => "the configuration",
        }
    }

    /// The most documents one file may hold (empty ones included).
    fn most_documents(self) -> usize {
        match self {
            Subject::Manifests => MAX_DOCUMENTS,
            Subject::Configuration => 1,
        }
    }

    /// The refusal of the document after the most a file may hold.
    fn one_document_too_many(self) -> String {
        match self {
            Subject::Manifests => {
                format!("the file holds more than {MAX_DOCUMENTS} documents: split it into several files")
            }
            Subject::Configuration => {
                "a second YAML document starts here: the configuration is one document".to_owned()
            }
        }
    }
}

/// The refusal of a file over [`MAX_FILE_BYTES`], made before anything of it is parsed. It is
/// about the whole file, so it has no position (0:0).
fn too_large(text: &str, subject: Subject) -> Option<Problem> {
    (text.len() > MAX_FILE_BYTES).then(|| {
        let size = text.len();
        let message = match subject {
            Subject::Manifests => {
                format!("file is {size} bytes, more than the {MAX_FILE_BYTES} bytes (1 MiB) a manifest file may have: split it")
            }
            Subject::Configuration => {
                format!("file is {size} bytes, more than the {MAX_FILE_BYTES} bytes (1 MiB) the configuration may have")
            }
        };
        Problem::new(Position { line: 0, column: 0 }, String::new(), message)
    })
}

/// `position`, moved back into `text` where a parser put it past the end of its line or of the
/// text, so that an editor can go to it. At the end of a text without a final line break the YAML
/// parsers report the start of a line after the last one; and saphyr-parser 0.3.4 counts the
/// bytes, not the characters, of a directive's name and parameters (`%FOOé`), so that a column on
/// such a line can lie past its end. Lines end as YAML ends them: at `\r\n`, `\r` or `\n`.
fn within(text: &str, position: Position) -> Position {
    let (mut line, mut column) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\n' && c != '\r' {
            column += 1;
            continue;
        }
        if line == position.line {
            break;
        }
        if c == '\r' {
            chars.next_if_eq(&'\n');
        }
        line += 1;
        column = 1;
    }
    // `line:column` is now the end of the position's line, or of the text when it has fewer lines.
    position.min(Position { line, column })
}

/// The position just after the last character of `text`.
fn end_of(text: &str) -> Position {
    within(text, Position { line: usize::MAX, column: usize::MAX })
}

/// The text both parsers read: without a byte order mark, so that they count positions from the
/// same first character.
fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Whether a path names a manifest file (`*.yaml` or `*.yml`).
pub fn is_manifest_file(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.ends_with(".yaml") || lower.ends_with(".yml")
}

/// Parses and validates every document in one file.
///
/// `manifests` keep the file's order; `rejected` is sorted by document. Empty documents (nothing
/// but comments, a trailing `---`) are skipped silently.
pub fn load_file(file: &str, text: &str) -> FileLoad {
    if let Some(problem) = too_large(text, Subject::Manifests) {
        let diagnostics = vec![problem.into_diagnostic(file)];
        let rejected = Rejected { file: file.to_owned(), document: 0, name: None, diagnostics };
        return FileLoad { file: file.to_owned(), manifests: Vec::new(), rejected: vec![rejected] };
    }
    let text = without_bom(text);
    let mut load = load_text(file, text);
    keep_within(text, load.rejected.iter_mut().flat_map(|rejected| rejected.diagnostics.iter_mut()));
    load
}

fn load_text(file: &str, text: &str) -> FileLoad {
    let mut load = FileLoad { file: file.to_owned(), manifests: Vec::new(), rejected: Vec::new() };
    let scan = scan::scan(text, Subject::Manifests);
    if let Some((number, failure)) = scan.failure {
        return reject_file(load, &scan.documents, number, failure);
    }
    for document in &scan.documents {
        if document.empty {
            continue;
        }
        if !document.problems.is_empty() {
            load.rejected.push(rejected(file, document, document.problems.clone()));
            continue;
        }
        let value = match deserialize(text, document) {
            Ok(value) => value,
            Err(failure) => return reject_file(load, &scan.documents, document.number, failure),
        };
        if value.is_null() {
            continue;
        }
        let origin = Origin {
            file: file.to_owned(),
            document: document.number,
            line: document.position.line,
            column: document.position.column,
        };
        match decode::decode(document, &value, origin) {
            Ok(manifest) => load.manifests.push(manifest),
            Err(problems) => load.rejected.push(rejected(file, document, problems)),
        }
    }
    load
}

/// Moves diagnostics placed past the end of `text` to its end: the YAML parsers place a node that
/// ends a text without a final line break (an empty key, a missing value) on a line after the last.
fn keep_within<'d>(text: &str, diagnostics: impl IntoIterator<Item = &'d mut Diagnostic>) {
    let mut end = None;
    for diagnostic in diagnostics {
        let end = *end.get_or_insert_with(|| end_of(text));
        if (diagnostic.line, diagnostic.column) > (end.line, end.column) {
            (diagnostic.line, diagnostic.column) = (end.line, end.column);
        }
    }
}

/// A file that passed [`screen`]: its text as the deserialiser must read it, and where its fields
/// are written.
#[derive(Debug)]
pub(crate) struct Screened<'t> {
    /// The file's text without a byte order mark.
    pub text: &'t str,
    /// The first document that is not empty (its index and start); `None` when there is none.
    fields: Option<(SpanIndex, Position)>,
    end: Position,
}

impl Screened<'_> {
    /// Where the field at `path` (`api.listen`, YAML keys joined with `.`) is written: its value;
    /// else the key of its nearest ancestor that is written (a field inside a list is shown by
    /// the list's key); else the start of the document, or 1:1 in a file with none.
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let Some((index, root)) = &self.fields else {
            return (1, 1);
        };
        let mut segments: Vec<String> = path.split('.').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        let exact = index.get(&segments).map(|span| span.value);
        let at = exact.or_else(|| {
            while segments.pop().is_some() {
                if let Some(span) = index.get(&segments) {
                    return Some(span.key.unwrap_or(span.value));
                }
            }
            None
        });
        let at = at.unwrap_or(*root).min(self.end);
        (at.line, at.column)
    }

    /// Where serde's error is: its location within the text, else the start of the document.
    pub fn locate_error(&self, error: &serde_yaml::Error) -> (usize, usize) {
        match error.location() {
            Some(at) => {
                let at = within(self.text, Position { line: at.line(), column: at.column() });
                (at.line, at.column)
            }
            None => self.locate(""),
        }
    }
}

/// The first pass alone, for a file that serde then reads whole (the configuration): the limits
/// that manifests have (size, nesting, anchors and aliases, duplicate keys, number of documents),
/// each refusal a located diagnostic, before any value is built.
pub(crate) fn screen<'t>(file: &str, text: &'t str, subject: Subject) -> Result<Screened<'t>, Vec<Diagnostic>> {
    if let Some(problem) = too_large(text, subject) {
        return Err(vec![problem.into_diagnostic(file)]);
    }
    let text = without_bom(text);
    let scan = scan::scan(text, subject);
    if let Some((_, failure)) = scan.failure {
        return Err(vec![failure.into_diagnostic(file)]);
    }
    let mut refusals: Vec<Diagnostic> = scan
        .documents
        .iter()
        .flat_map(|document| document.problems.iter().cloned().map(|problem| problem.into_diagnostic(file)))
        .collect();
    if !refusals.is_empty() {
        keep_within(text, &mut refusals);
        return Err(refusals);
    }
    let fields = scan.documents.into_iter().find(|document| !document.empty).map(|d| (d.index, d.position));
    Ok(Screened { text, fields, end: end_of(text) })
}

/// A problem found after [`screen`] (by serde, or by a check of the values), as a diagnostic:
/// its message cut to the length every message has at most.
pub(crate) fn diagnostic(file: &str, (line, column): (usize, usize), path: &str, message: String) -> Diagnostic {
    Problem::new(Position { line, column }, path.to_owned(), message).into_diagnostic(file)
}

/// The document's own text as a value. The first pass already accepted the whole file, so an
/// error here means the two parsers disagree: it is treated as the syntax error it is to one of
/// them.
fn deserialize(text: &str, document: &ScannedDocument) -> Result<serde_yaml::Value, Problem> {
    let own_text = &text[document.text.clone()];
    serde_yaml::from_str(own_text).map_err(|_| {
        // Parse again behind padding that puts the text where it is in the file, so that the
        // error's position and the positions quoted in its message are the file's. Only done on
        // failure: the padding costs as much as the text before the document.
        let start = document.text_start;
        let padded = format!(
            "{}{}{own_text}",
            "\n".repeat(start.line.saturating_sub(1)),
            " ".repeat(start.column.saturating_sub(1))
        );
        let error = serde_yaml::from_str::<serde_yaml::Value>(&padded).err();
        let position = error
            .as_ref()
            .and_then(serde_yaml::Error::location)
            .map_or(document.position, |at| within(text, Position { line: at.line(), column: at.column() }));
        let detail = error.map_or_else(|| "the document could not be read".to_owned(), |e| e.to_string());
        Problem::new(position, String::new(), format!("YAML syntax error: {detail}"))
    })
}

/// Rejects every document of a file for one problem found in document `failed`, keeping each
/// name that could be read so that the daemon can hold those manifests' last good versions.
fn reject_file(mut load: FileLoad, documents: &[ScannedDocument], failed: usize, failure: Problem) -> FileLoad {
    let file = load.file.clone();
    let named_at = |number: usize| documents.iter().find(|d| d.number == number).and_then(|d| d.name.clone());
    load.manifests.clear();
    load.rejected.clear();
    for document in documents.iter().filter(|d| d.number != failed) {
        let Some((name, at)) = &document.name else {
            continue;
        };
        let message = format!(
            "manifest {:?} not loaded: the whole file is rejected because of the error at {}",
            shorten(name),
            failure.position
        );
        load.rejected.push(rejected(
            file.as_str(),
            document,
            vec![Problem::new(*at, "metadata.name".to_owned(), message)],
        ));
    }
    load.rejected.push(Rejected {
        file: file.clone(),
        document: failed,
        name: named_at(failed).map(|(name, _)| name),
        diagnostics: vec![failure.into_diagnostic(&file)],
    });
    load.rejected.sort_by_key(|r| r.document);
    load
}

fn rejected(file: &str, document: &ScannedDocument, problems: Vec<Problem>) -> Rejected {
    Rejected {
        file: file.to_owned(),
        document: document.number,
        name: document.name.as_ref().map(|(name, _)| name.clone()),
        diagnostics: problems.into_iter().map(|p| p.into_diagnostic(file)).collect(),
    }
}

/// Puts the files' results together, rejecting every document whose name is used more than once.
///
/// A name is used by a rejected document too when its `metadata.name` could be read: such a name
/// is just as ambiguous (which of the two was meant?), and rejecting at once avoids a valid
/// manifest turning invalid later, when the other document's unrelated mistake is fixed.
pub fn assemble(files: impl IntoIterator<Item = FileLoad>) -> ManifestSet {
    let mut set = ManifestSet::default();
    let mut by_name: BTreeMap<ManifestName, Vec<Manifest>> = BTreeMap::new();
    for load in files {
        set.rejected.extend(load.rejected);
        for manifest in load.manifests {
            by_name.entry(manifest.name.clone()).or_default().push(manifest);
        }
    }
    let mut rejected_places: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for rejected in &set.rejected {
        if let Some(name) = &rejected.name {
            let place =
                format!("the {} document of {} (itself rejected)", ordinal(rejected.document + 1), rejected.file);
            rejected_places.entry(name.clone()).or_default().push(place);
        }
    }
    for (name, mut group) in by_name {
        let also_rejected = rejected_places.get(name.as_str()).map_or(&[][..], Vec::as_slice);
        if group.len() == 1 && also_rejected.is_empty() {
            set.manifests.extend(group.pop());
            continue;
        }
        group.sort_by(|a, b| a.origin.cmp(&b.origin));
        for (this, manifest) in group.iter().enumerate() {
            let others: Vec<String> = group
                .iter()
                .enumerate()
                .filter(|(other, _)| *other != this)
                .map(|(_, m)| m.origin.to_string())
                .chain(also_rejected.iter().cloned())
                .collect();
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
                    message: format!(
                        "name {:?} is also used at {}: names must be unique, so every document using it is rejected",
                        name.as_str(),
                        others.join(", ")
                    ),
                }],
            });
        }
    }
    set.rejected.sort_by(|a, b| (&a.file, a.document).cmp(&(&b.file, b.document)));
    set
}

/// `1st`, `2nd`, `3rd`, `4th`... `11th`, `12th`, `13th`, `21st`...
fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// One problem found by either pass, before it is tied to its file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Problem {
    position: Position,
    /// The YAML path in display form (`spec.target.objectGuid`).
    path: String,
    message: String,
}

impl Problem {
    fn new(position: Position, path: String, mut message: String) -> Self {
        if let Some((cut, _)) = message.char_indices().nth(LONGEST_MESSAGE) {
            message.truncate(cut);
            message.push('…');
        }
        Problem { position, path, message }
    }

    fn into_diagnostic(self, file: &str) -> Diagnostic {
        Diagnostic {
            file: file.to_owned(),
            line: self.position.line,
            column: self.position.column,
            path: self.path,
            severity: Severity::Error,
            message: self.message,
        }
    }
}

/// The problems of one document, in the order of the text, at most
/// [`MAX_PROBLEMS_PER_DOCUMENT`] of them (hostile input must not make a report of unbounded size).
#[derive(Debug, Default)]
struct Problems {
    kept: Vec<Problem>,
    dropped: usize,
}

impl Problems {
    fn push(&mut self, problem: Problem) {
        self.push_with(|| problem);
    }

    /// Like [`push`](Self::push), but the problem (its message) is only made if it will be kept:
    /// hostile input can hold hundreds of thousands of the same mistake.
    fn push_with(&mut self, problem: impl FnOnce() -> Problem) {
        if self.is_full() {
            self.dropped += 1;
        } else {
            self.kept.push(problem());
        }
    }

    fn is_full(&self) -> bool {
        self.kept.len() >= MAX_PROBLEMS_PER_DOCUMENT
    }

    fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn into_vec(mut self) -> Vec<Problem> {
        self.kept.sort_by_key(|p| p.position);
        if let Some(last) = self.kept.last().map(|p| p.position) {
            if self.dropped > 0 {
                let message = format!("{} more problems in this document are not shown", self.dropped);
                self.kept.push(Problem::new(last, String::new(), message));
            }
        }
        self.kept
    }
}

/// A YAML path for people: keys joined with `.`, keys that would read ambiguously quoted
/// (`metadata.labels["app.kubernetes.io/name"]`), list items as `[0]`.
fn display_path(path: &[String]) -> String {
    let mut shown = String::new();
    for segment in path {
        let plain = !segment.is_empty() && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let index = segment.len() > 2
            && segment.starts_with('[')
            && segment.ends_with(']')
            && segment[1..segment.len() - 1].chars().all(|c| c.is_ascii_digit());
        if plain || index {
            if !shown.is_empty() && !index {
                shown.push('.');
            }
            shown.push_str(segment);
        } else {
            shown.push_str(&format!("[{:?}]", shorten(segment)));
        }
    }
    shown
}

/// `text`, cut to [`LONGEST_QUOTE`] characters.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(LONGEST_QUOTE) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_unambiguously() {
        let path = |segments: &[&str]| display_path(&segments.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(path(&[]), "");
        assert_eq!(path(&["spec", "target", "objectGuid"]), "spec.target.objectGuid");
        assert_eq!(
            path(&["metadata", "labels", "app.kubernetes.io/name"]),
            r#"metadata.labels["app.kubernetes.io/name"]"#
        );
        assert_eq!(path(&["spec", "tags", "[0]"]), "spec.tags[0]");
    }

    #[test]
    fn ordinals() {
        let shown: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111].map(ordinal).to_vec();
        assert_eq!(shown, ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st", "111th"]);
    }

    #[test]
    fn quotes_are_cut() {
        assert_eq!(shorten("short"), "short");
        let long = "é".repeat(100);
        assert_eq!(shorten(&long).chars().count(), LONGEST_QUOTE + 1);
    }
}
