//! What the fuzz targets check besides "no panic": the promises the loaders make to a person
//! reading their diagnostics. Each check panics with what it found, so that libFuzzer keeps the
//! input as a crash.

use remedy_policies::load::MAX_FILE_BYTES;
use remedy_policies::{Diagnostic, Severity};

/// No message is longer than this many characters: the loaders cut longer ones to 1,000 and add `…`.
pub const LONGEST_MESSAGE: usize = 1_001;

/// The text the loaders count positions in: without the byte order mark they skip.
fn counted(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// The number of characters on each line of `text` (YAML's line breaks: `\n`, `\r\n`, `\r`).
pub fn line_lengths(text: &str) -> Vec<usize> {
    let mut lengths = vec![0];
    let mut chars = counted(text).chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' => {
                chars.next_if_eq(&'\n');
                lengths.push(0);
            }
            '\n' => lengths.push(0),
            _ => *lengths.last_mut().expect("one line at least") += 1,
        }
    }
    lengths
}

/// A diagnostic a person can act on: an error, in the file the loader was given, with a message
/// of bounded length, at a line and column of the text (both 1-based; the character after the
/// last one of a line counts, as it is where a missing thing was expected). 0:0 only for a file
/// too large to be read, which has no position.
pub fn check_diagnostic(file: &str, text: &str, lines: &[usize], diagnostic: &Diagnostic) {
    let shown = diagnostic.to_string();
    assert_eq!(diagnostic.file, file, "a diagnostic names another file: {shown}");
    assert_eq!(diagnostic.severity, Severity::Error, "the loaders report errors only: {shown}");
    assert!(!diagnostic.message.trim().is_empty(), "an empty message: {shown}");
    let length = diagnostic.message.chars().count();
    assert!(length <= LONGEST_MESSAGE, "a message of {length} characters: {}…", shorten(&shown));
    let position = (diagnostic.line, diagnostic.column);
    if text.len() > MAX_FILE_BYTES {
        assert_eq!(position, (0, 0), "a file too large to read has no position: {shown}");
        return;
    }
    assert!(diagnostic.line >= 1 && diagnostic.column >= 1, "no position: {shown}");
    let Some(&characters) = lines.get(diagnostic.line - 1) else {
        panic!("line {} of a text of {} lines: {shown}", diagnostic.line, lines.len());
    };
    assert!(
        diagnostic.column <= characters + 1,
        "column {} of line {}, which has {characters} characters: {shown}",
        diagnostic.column,
        diagnostic.line
    );
}

fn shorten(text: &str) -> &str {
    text.char_indices().nth(200).map_or(text, |(cut, _)| &text[..cut])
}
