//! The first pass over a manifest file: its YAML event stream, read with saphyr-parser.
//!
//! This pass runs before any value is built. It refuses what no manifest needs and what hostile
//! input relies on (anchors and aliases, deep nesting, thousands of documents, duplicate keys),
//! splits the file into documents, and records where each field is written (the [`SpanIndex`]),
//! so that the decoder, which only sees values, can point at the right line and column.
//!
//! saphyr-parser is an iterative state machine (no recursion per nesting level, and its own
//! flow-nesting limit turns extreme input into an error), so this pass is safe on any input of
//! bounded size; memory stays proportional to the input because deep subtrees are skipped, not
//! recorded.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::ops::Range;

use saphyr_parser::{Event, Marker, Parser, ScalarStyle, ScanError, Span};

use super::{display_path, shorten, within, Problem, Problems, Subject, MAX_DEPTH};

/// Paths longer than this are not indexed: no manifest field is deeper, and it bounds the index.
/// Nor are list items and what is below them: the manifest language has no lists, so a list is
/// only ever reported as a whole (and a long one would make a large index for nothing).
const INDEXED_DEPTH: usize = 4;

/// The segment that stands for a key which is not a scalar (refused, but the walk goes on).
const NON_SCALAR_KEY: &str = "\u{0}non-scalar key";

/// A 1-based line and column (columns count characters, as editors do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(marker: Marker) -> Self {
        Position { line: marker.line(), column: marker.col() + 1 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where one node is written: its key (absent for the document's root and for list items) and the
/// start of its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NodeSpan {
    pub key: Option<Position>,
    pub value: Position,
}

/// YAML path (mapping keys as written; list items as `[0]`, `[1]`...) to where the node is.
#[derive(Debug, Default)]
pub(super) struct SpanIndex {
    nodes: BTreeMap<Vec<String>, NodeSpan>,
}

impl SpanIndex {
    pub fn get(&self, path: &[String]) -> Option<NodeSpan> {
        self.nodes.get(path).copied()
    }
}

/// One document of the file as the first pass saw it.
#[derive(Debug)]
pub(super) struct ScannedDocument {
    /// 0-based index in the file, empty documents included.
    pub number: usize,
    /// Where the document's content starts (its root node), or its `---` when it has none.
    pub position: Position,
    /// Nothing but comments, or an explicit null: skipped without a word.
    pub empty: bool,
    /// `metadata.name` as written, when it is a scalar: kept even when the document is refused.
    pub name: Option<(String, Position)>,
    /// Refusals found by this pass: the document must not reach the YAML deserialiser.
    pub problems: Vec<Problem>,
    pub index: SpanIndex,
    /// The bytes of the file that hold this document (for the deserialiser), and where they start.
    pub text: Range<usize>,
    pub text_start: Position,
    start: Marker,
    end: Marker,
}

/// What the first pass found in a whole file.
#[derive(Debug)]
pub(super) struct FileScan {
    pub documents: Vec<ScannedDocument>,
    /// A problem that condemns the whole file, and the number of the document it was found in.
    pub failure: Option<(usize, Problem)>,
}

/// Reads the event stream of `text` to its end or to the first error that condemns the file.
/// `subject` is what the file holds, for the words of the refusals.
pub(super) fn scan(text: &str, subject: Subject) -> FileScan {
    let mut parser = Parser::new_from_str(text);
    let mut documents: Vec<ScannedDocument> = Vec::new();
    let mut current: Option<DocumentScanner> = None;
    let mut failure = None;
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(event) => event,
            Err(error) => {
                let open = current.as_ref().and_then(DocumentScanner::innermost_flow_collection);
                let mut problem = syntax_failure(&error, open, subject);
                problem.position = within(text, problem.position);
                failure = Some(problem);
                break;
            }
        };
        match event {
            Event::DocumentStart(_) => {
                if documents.len() == subject.most_documents() {
                    let message = subject.one_document_too_many();
                    failure = Some(Problem::new(Position::of(span.start), String::new(), message));
                    break;
                }
                current = Some(DocumentScanner::new(documents.len(), span.start, subject));
            }
            Event::DocumentEnd => {
                if let Some(document) = current.take() {
                    documents.push(document.finish(span.end));
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::Nothing => {}
            node => {
                if let Some(document) = current.as_mut() {
                    document.node(node, span);
                }
            }
        }
    }
    let failure = failure.map(|problem| {
        // The document being read when the file failed: kept for the name it may already show.
        let number = documents.len();
        if let Some(document) = current.take() {
            let end = document.start;
            documents.push(document.finish(end));
        }
        (number, problem)
    });
    if failure.is_none() {
        locate_texts(text, &mut documents);
    }
    FileScan { documents, failure }
}

/// `open`: where the innermost `[...]` or `{...}` still open at the error starts, if any (an
/// unclosed bracket is reported where the parser gave up, often lines below the bracket).
fn syntax_failure(error: &ScanError, open: Option<Position>, subject: Subject) -> Problem {
    let position = Position::of(*error.marker());
    let message = if error.info().contains("recursion limit exceeded") {
        format!(
            "nesting deeper than {MAX_DEPTH} levels is not allowed in {} (the YAML parser stopped at its own limit)",
            subject.plural()
        )
    } else {
        let mut message = format!("YAML syntax error: {}", error.info());
        if let Some(open) = open {
            message.push_str(&format!(" (inside the bracket opened at {open}: is it closed?)"));
        }
        message.push_str("; the whole file is rejected");
        message
    };
    Problem::new(position, String::new(), message)
}

/// Gives each document the byte range of the file that holds it.
///
/// Documents tile the file: each one runs from the end of the previous one (so directives and
/// comments before its `---` come along) to its own end, or to the next `---` where its end
/// event reaches over that (saphyr puts an implicit end after the next `---`). saphyr counts
/// positions in characters, so they are turned into byte offsets in one walk over the text.
fn locate_texts(text: &str, documents: &mut [ScannedDocument]) {
    let earlier = |a: Marker, b: Marker| if a.index() <= b.index() { a } else { b };
    let mut start = Marker::new(0, 1, 0);
    let mut bounds = Vec::with_capacity(documents.len());
    for (number, document) in documents.iter().enumerate() {
        let start_here = earlier(start, document.start);
        let end = match documents.get(number + 1) {
            Some(next) => earlier(document.end, next.start),
            None => document.end,
        };
        let end = if end.index() < start_here.index() { start_here } else { end };
        bounds.push((start_here, end));
        start = end;
    }
    let mut wanted: Vec<usize> = bounds.iter().flat_map(|(from, to)| [from.index(), to.index()]).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let bytes = byte_offsets(text, &wanted);
    let byte_of = |char_index: usize| match wanted.binary_search(&char_index) {
        Ok(found) => bytes[found],
        Err(_) => text.len(),
    };
    for (document, (from, to)) in documents.iter_mut().zip(bounds) {
        document.text = byte_of(from.index())..byte_of(to.index());
        document.text_start = Position::of(from);
    }
}

/// The byte offset of each character index in `sorted_chars` (past the end: the text's length).
fn byte_offsets(text: &str, sorted_chars: &[usize]) -> Vec<usize> {
    if text.is_ascii() {
        return sorted_chars.iter().map(|&c| c.min(text.len())).collect();
    }
    let mut offsets = text.char_indices().map(|(byte, _)| byte).chain(std::iter::once(text.len()));
    let mut consumed = 0;
    let mut last = 0;
    sorted_chars
        .iter()
        .map(|&wanted| {
            if wanted >= consumed {
                last = offsets.nth(wanted - consumed).unwrap_or(text.len());
                consumed = wanted + 1;
            }
            last
        })
        .collect()
}

/// What a node is to the collection it is in.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// A mapping key.
    Key,
    /// The document's root, a mapping value or a list item; `nested` when a path segment was
    /// pushed for it.
    Value { key: Option<Position>, nested: bool },
}

#[derive(Debug)]
enum Collection {
    Mapping { seen: HashMap<String, Position>, pending_key: Option<(String, Position)> },
    Sequence { next: usize },
}

#[derive(Debug)]
struct Frame {
    collection: Collection,
    role: Role,
    opened: Position,
    /// Written in flow style, `[...]` or `{...}`.
    flow: bool,
}

/// A refused subtree being stepped over: only its depth is followed.
#[derive(Debug)]
struct Skip {
    depth: usize,
    role: Role,
}

#[derive(Debug)]
struct DocumentScanner {
    subject: Subject,
    number: usize,
    start: Marker,
    root: Option<Position>,
    empty: bool,
    name: Option<(String, Position)>,
    frames: Vec<Frame>,
    path: Vec<String>,
    skip: Option<Skip>,
    index: SpanIndex,
    problems: Problems,
}

impl DocumentScanner {
    fn new(number: usize, start: Marker, subject: Subject) -> Self {
        DocumentScanner {
            subject,
            number,
            start,
            root: None,
            empty: false,
            name: None,
            frames: Vec::new(),
            path: Vec::new(),
            skip: None,
            index: SpanIndex::default(),
            problems: Problems::default(),
        }
    }

    fn finish(self, end: Marker) -> ScannedDocument {
        let position = self.root.unwrap_or_else(|| Position::of(self.start));
        ScannedDocument {
            number: self.number,
            position,
            empty: self.root.is_none() || self.empty,
            name: self.name,
            problems: self.problems.into_vec(),
            index: self.index,
            text: 0..0,
            text_start: position,
            start: self.start,
            end,
        }
    }

    fn node(&mut self, event: Event<'_>, span: Span) {
        let position = Position::of(span.start);
        if let Some(skip) = self.skip.as_mut() {
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => skip.depth += 1,
                Event::MappingEnd | Event::SequenceEnd => {
                    skip.depth -= 1;
                    if skip.depth == 0 {
                        let role = skip.role;
                        self.skip = None;
                        self.leave(role, position);
                    }
                }
                _ => {}
            }
            return;
        }
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                let at_root = self.frames.is_empty();
                let role = self.enter(position);
                self.refuse_anchor(anchor, position);
                match role {
                    Role::Key => self.key(text.into_owned(), position),
                    Role::Value { .. } => {
                        self.record(role, position);
                        if at_root {
                            self.empty = style == ScalarStyle::Plain
                                && tag.is_none()
                                && anchor == 0
                                && matches!(text.as_ref(), "" | "~" | "null" | "Null" | "NULL");
                        }
                        if self.path == ["metadata", "name"] {
                            self.name = Some((text.into_owned(), position));
                        }
                        self.leave(role, position);
                    }
                }
            }
            Event::Alias(_) => {
                let role = self.enter(position);
                self.refuse_aliases(position);
                self.record(role, position);
                self.leave(role, position);
            }
            Event::MappingStart(anchor, _) | Event::SequenceStart(anchor, _) => {
                let is_mapping = matches!(event, Event::MappingStart(..));
                let role = self.enter(position);
                self.refuse_anchor(anchor, position);
                if matches!(role, Role::Key) {
                    let what = if is_mapping { "a mapping" } else { "a list" };
                    let subject = self.subject;
                    self.refuse(position, || {
                        format!("{what} cannot be a key: keys in {} are plain field names", subject.plural())
                    });
                    self.skip = Some(Skip { depth: 1, role });
                    return;
                }
                if self.frames.len() >= MAX_DEPTH {
                    let subject = self.subject;
                    self.refuse(position, || {
                        format!("nesting deeper than {MAX_DEPTH} levels is not allowed in {}", subject.plural())
                    });
                    self.skip = Some(Skip { depth: 1, role });
                    return;
                }
                self.record(role, position);
                let collection = if is_mapping {
                    Collection::Mapping { seen: HashMap::new(), pending_key: None }
                } else {
                    Collection::Sequence { next: 0 }
                };
                // A block collection starts at its first entry, with an empty span.
                let flow = span.end.index() > span.start.index();
                self.frames.push(Frame { collection, role, opened: position, flow });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                if let Some(frame) = self.frames.pop() {
                    self.leave(frame.role, position);
                }
            }
            Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) | Event::DocumentEnd | Event::Nothing => {}
        }
    }

    fn innermost_flow_collection(&self) -> Option<Position> {
        self.frames.iter().rev().find(|frame| frame.flow).map(|frame| frame.opened)
    }

    /// Works out what the node starting at `position` is, and extends the path for a value.
    fn enter(&mut self, position: Position) -> Role {
        match self.frames.last_mut() {
            None => {
                self.root.get_or_insert(position);
                Role::Value { key: None, nested: false }
            }
            Some(Frame { collection: Collection::Sequence { next }, .. }) => {
                self.path.push(format!("[{next}]"));
                *next += 1;
                Role::Value { key: None, nested: true }
            }
            Some(Frame { collection: Collection::Mapping { pending_key, .. }, .. }) => match pending_key.take() {
                None => Role::Key,
                Some((key, at)) => {
                    self.path.push(key);
                    Role::Value { key: Some(at), nested: true }
                }
            },
        }
    }

    /// Closes the node opened by [`enter`](Self::enter).
    fn leave(&mut self, role: Role, position: Position) {
        match role {
            // Only keys that are not scalars get here: stand in for them so the walk stays in step.
            Role::Key => self.set_pending_key(NON_SCALAR_KEY.to_owned(), position),
            Role::Value { nested: true, .. } => {
                self.path.pop();
            }
            Role::Value { nested: false, .. } => {}
        }
    }

    fn key(&mut self, key: String, position: Position) {
        let first = match self.frames.last_mut() {
            Some(Frame { collection: Collection::Mapping { seen, .. }, .. }) => match seen.get(&key) {
                Some(first) => Some(*first),
                None => {
                    seen.insert(key.clone(), position);
                    None
                }
            },
            _ => None,
        };
        if let Some(first) = first {
            let path = &self.path;
            self.problems.push_with(|| {
                let mut path = path.clone();
                path.push(key.clone());
                let message = format!(
                    "duplicate key {:?}: it is already given at {first} in this mapping; keep one",
                    shorten(&key)
                );
                Problem::new(position, display_path(&path), message)
            });
        }
        self.set_pending_key(key, position);
    }

    fn set_pending_key(&mut self, key: String, position: Position) {
        if let Some(Frame { collection: Collection::Mapping { pending_key, .. }, .. }) = self.frames.last_mut() {
            *pending_key = Some((key, position));
        }
    }

    fn record(&mut self, role: Role, position: Position) {
        if let Role::Value { key, .. } = role {
            let in_list = self.frames.iter().any(|frame| matches!(frame.collection, Collection::Sequence { .. }));
            if self.path.len() <= INDEXED_DEPTH && !in_list {
                self.index.nodes.insert(self.path.clone(), NodeSpan { key, value: position });
            }
        }
    }

    fn refuse_anchor(&mut self, anchor: usize, position: Position) {
        if anchor != 0 {
            self.refuse_aliases(position);
        }
    }

    fn refuse_aliases(&mut self, position: Position) {
        let subject = self.subject;
        self.refuse(position, || {
            format!("anchors and aliases are not allowed in {}: write the value out in full", subject.plural())
        });
    }

    /// `message` is only made when the problem is kept: hostile input can repeat one a million times.
    fn refuse(&mut self, position: Position, message: impl FnOnce() -> String) {
        let path = &self.path;
        self.problems.push_with(|| Problem::new(position, display_path(path), message()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::MAX_DOCUMENTS;

    fn scan(text: &str) -> FileScan {
        super::scan(text, Subject::Manifests)
    }

    fn path(text: &str) -> Vec<String> {
        if text.is_empty() {
            return Vec::new();
        }
        text.split('.').map(str::to_owned).collect()
    }

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    fn only_document(text: &str) -> ScannedDocument {
        let scan = scan(text);
        assert!(scan.failure.is_none(), "{:?}", scan.failure);
        let mut documents = scan.documents;
        assert_eq!(documents.len(), 1);
        documents.remove(0)
    }

    #[test]
    fn index_has_key_and_value_positions() {
        let doc = only_document("apiVersion: v\nspec:\n  target:\n    objectGuid:   abc\n  tags: [x, {k: v}]\n");
        let index = &doc.index;
        assert_eq!(index.get(&path("")), Some(NodeSpan { key: None, value: at(1, 1) }));
        assert_eq!(index.get(&path("apiVersion")), Some(NodeSpan { key: Some(at(1, 1)), value: at(1, 13) }));
        // A block mapping starts at its first key.
        assert_eq!(index.get(&path("spec")), Some(NodeSpan { key: Some(at(2, 1)), value: at(3, 3) }));
        assert_eq!(
            index.get(&path("spec.target.objectGuid")),
            Some(NodeSpan { key: Some(at(4, 5)), value: at(4, 19) })
        );
        assert_eq!(index.get(&path("spec.tags")), Some(NodeSpan { key: Some(at(5, 3)), value: at(5, 9) }));
        // The language has no lists: their items are not indexed.
        assert_eq!(index.get(&path("spec.tags.[1]")), None);
        assert_eq!(index.get(&path("spec.nothing")), None);
        assert!(doc.problems.is_empty());
    }

    #[test]
    fn keys_with_dots_are_one_segment() {
        let doc = only_document("labels:\n  app.kubernetes.io/name: x\n");
        let key = vec!["labels".to_owned(), "app.kubernetes.io/name".to_owned()];
        assert_eq!(doc.index.get(&key), Some(NodeSpan { key: Some(at(2, 3)), value: at(2, 27) }));
    }

    #[test]
    fn columns_count_characters_and_documents_slice_on_char_boundaries() {
        let text = "a: \"é→\"\nb: 1\n---\nc: \"ü\"\n";
        let scan = scan(text);
        assert_eq!(scan.documents.len(), 2);
        let first = &scan.documents[0];
        assert_eq!(first.index.get(&path("b")).map(|s| s.value), Some(at(2, 4)));
        let second = &scan.documents[1];
        assert_eq!(&text[second.text.clone()], "---\nc: \"ü\"\n");
        assert_eq!(second.text_start, at(3, 1));
        assert_eq!(second.position, at(4, 1));
        assert_eq!(&text[first.text.clone()], "a: \"é→\"\nb: 1\n");
    }

    #[test]
    fn names_are_read_and_empty_documents_recognised() {
        let scan = scan("# a comment\n---\nmetadata:\n  name: inc-1\n---\n~\n---\n# only a comment\n---\n");
        let names: Vec<_> = scan.documents.iter().map(|d| d.name.as_ref().map(|n| n.0.as_str())).collect();
        let empty: Vec<_> = scan.documents.iter().map(|d| d.empty).collect();
        assert_eq!(names, [Some("inc-1"), None, None, None]);
        assert_eq!(empty, [false, true, true, true]);
        assert_eq!(scan.documents[0].name.as_ref().map(|n| n.1), Some(at(4, 9)));
    }

    #[test]
    fn anchors_aliases_and_duplicates_are_refused_where_written() {
        let doc = only_document("a: &x 1\nb: *x\nb: 2\n");
        let found: Vec<_> = doc.problems.iter().map(|p| (p.position, p.path.as_str())).collect();
        assert_eq!(found, [(at(1, 4), "a"), (at(2, 4), "b"), (at(3, 1), "b")]);
        assert!(doc.problems[2].message.contains("already given at 2:1"));
    }

    #[test]
    fn depth_is_limited_and_the_walk_stays_in_step() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let doc = only_document(&format!("a: {deep}\nb: 1\n"));
        assert_eq!(doc.problems.len(), 1);
        assert_eq!(doc.problems[0].position, at(1, 4 + MAX_DEPTH - 1));
        assert_eq!(doc.index.get(&path("b")), Some(NodeSpan { key: Some(at(2, 1)), value: at(2, 4) }));
        let fine = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(only_document(&fine).problems.is_empty());
    }

    #[test]
    fn non_scalar_keys_are_refused_and_skipped() {
        let doc = only_document("? [a, b]\n: 1\nc: 2\n");
        assert_eq!(doc.problems.len(), 1);
        assert_eq!(doc.problems[0].position, at(1, 3));
        assert_eq!(doc.index.get(&path("c")).map(|s| s.value), Some(at(3, 4)));
    }

    #[test]
    fn syntax_errors_fail_the_file_and_keep_names_read_so_far() {
        let scan = scan("metadata: {name: a}\n---\nmetadata:\n  name: b\n  x: [1,\n");
        let (number, problem) = scan.failure.expect("a syntax error");
        assert_eq!(number, 1);
        assert!(problem.message.starts_with("YAML syntax error"), "{}", problem.message);
        let names: Vec<_> = scan.documents.iter().filter_map(|d| d.name.as_ref().map(|n| n.0.as_str())).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn too_many_documents_fail_the_file() {
        let text = "a: 1\n---\n".repeat(MAX_DOCUMENTS + 1);
        let (number, problem) = scan(&text).failure.expect("too many documents");
        assert_eq!(number, MAX_DOCUMENTS);
        // Document n > 0 starts at its `---`, on line 2n.
        assert_eq!(problem.position, at(2 * MAX_DOCUMENTS, 1));
    }

    #[test]
    fn documents_tile_the_file() {
        let text = "%YAML 1.2\n---\na: 1\n...\n# between\n--- {b: 2}\n--- |\n  text\n";
        let scan = scan(text);
        let pieces: Vec<&str> = scan.documents.iter().map(|d| &text[d.text.clone()]).collect();
        assert_eq!(pieces, ["%YAML 1.2\n---\na: 1\n...", "\n# between\n--- {b: 2}\n", "--- |\n  text\n"]);
        for (document, piece) in scan.documents.iter().zip(pieces) {
            let value: Result<serde_yaml::Value, _> = serde_yaml::from_str(piece);
            assert!(value.is_ok(), "document {} does not parse alone: {piece:?}", document.number);
        }
    }
}
