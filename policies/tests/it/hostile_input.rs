//! Hostile and odd input. The configuration file has the limits of a manifest file: YAML bombs
//! (aliases expanding a billion times, nesting ten thousand levels deep, a file of 10 MiB) are
//! refused before serde builds anything, each with a diagnostic naming the file, the line and the
//! column. Below them, the inputs that the fuzz targets (fuzz/, scripts/fuzz) found, kept as
//! regressions under the name of the issue that asked for the fuzzing (6: "fuzz the loaders").

use remedy_policies::config::Config;
use remedy_policies::load::{load_file, MAX_DEPTH, MAX_FILE_BYTES};
use remedy_policies::Diagnostic;

const FILE: &str = "etc/remedy.yaml";

/// A valid configuration of three lines.
const MINIMAL: &str = "manifests: {path: m}\nguardrails:\n  allowedScopes: [\"OU=Staff,DC=x\"]\n";

fn refused(text: &str) -> Vec<Diagnostic> {
    match Config::from_yaml(FILE, text) {
        Ok(config) => panic!("accepted: {config:#?}"),
        Err(diagnostics) => diagnostics,
    }
}

/// The first diagnostic is an error in [`FILE`] at `line:column` whose text holds `expected`; there
/// are at most 51 in all (50 problems and the count of the others).
fn first_at(diagnostics: &[Diagnostic], line: usize, column: usize, expected: &str) {
    let shown: String = diagnostics.iter().take(5).map(|d| format!("\n    {d}")).collect();
    let first = diagnostics.first().unwrap_or_else(|| panic!("no diagnostic"));
    assert!(first.is_error() && first.file == FILE, "{shown}");
    assert_eq!((first.line, first.column), (line, column), "{shown}");
    assert!(first.to_string().contains(expected), "expected {expected:?} in{shown}");
    assert!(diagnostics.len() <= 51, "{} diagnostics", diagnostics.len());
}

// ---- the configuration: YAML bombs ----

#[test]
fn config_alias_expansion_is_refused_at_the_first_anchor() {
    // Billion laughs: each level is nine aliases of the one above; expanded, `i` is 9^9 strings.
    let mut text = format!("{MINIMAL}a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for (level, name) in "bcdefghi".chars().enumerate() {
        let above = char::from(b'a' + level as u8);
        text.push_str(&format!("{name}: &{name} [{}]\n", vec![format!("*{above}"); 9].join(", ")));
    }
    let diagnostics = refused(&text);
    first_at(&diagnostics, 4, 4, "a: anchors and aliases are not allowed in the configuration");
    assert!(diagnostics.last().is_some_and(|d| d.message.ends_with("more problems in this document are not shown")));
}

#[test]
fn config_anchors_are_refused_even_where_they_would_be_harmless() {
    let text = "manifests: {path: m}\nguardrails:\n  allowedScopes: &s [\"OU=Staff,DC=x\"]\n  protectedGroups: *s\n";
    let diagnostics = refused(text);
    first_at(&diagnostics, 3, 18, "guardrails.allowedScopes: anchors and aliases are not allowed");
    assert_eq!(
        (diagnostics[1].line, diagnostics[1].column, diagnostics[1].path.as_str()),
        (4, 20, "guardrails.protectedGroups")
    );
}

#[test]
fn config_nesting_ten_thousand_deep_is_refused_where_the_parser_stops() {
    // saphyr-parser gives up after 255 open brackets; the first is in column 8.
    for deep in ["[".repeat(10_000), format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)), "{a: ".repeat(10_000)] {
        let diagnostics = refused(&format!("{MINIMAL}extra: {deep}\n"));
        let expected = "nesting deeper than 32 levels is not allowed in the configuration";
        assert_eq!(diagnostics.len(), 1, "{diagnostics:#?}");
        assert_eq!(diagnostics[0].line, 4);
        assert!(diagnostics[0].column > 8 + MAX_DEPTH, "{}", diagnostics[0]);
        first_at(&diagnostics, 4, diagnostics[0].column, expected);
    }
    let diagnostics = refused(&format!("{MINIMAL}extra: {}\n", "[".repeat(10_000)));
    first_at(&diagnostics, 4, 8 + 255, "(the YAML parser stopped at its own limit)");
}

#[test]
fn config_nesting_just_past_the_limit_is_refused_at_the_first_level_too_deep() {
    // The root mapping is level 1: `extra`'s list is level 2, so its 32nd bracket opens level 33.
    let depth = MAX_DEPTH;
    let text = format!("{MINIMAL}extra: {}x{}\n", "[".repeat(depth), "]".repeat(depth));
    first_at(&refused(&text), 4, 8 + depth - 1, "extra");
    let fine = format!("{MINIMAL}extra: {}x{}\n", "[".repeat(depth - 1), "]".repeat(depth - 1));
    let diagnostics = refused(&fine);
    assert!(!diagnostics[0].message.contains("nesting"), "{}", diagnostics[0]);
}

#[test]
fn config_deep_block_mappings_are_refused_at_the_first_level_too_deep() {
    // Line n holds the key of the mapping of level n + 1, indented by two spaces a level.
    // (Ten thousand levels would be 100 MB of indentation: deep enough is refused as surely.)
    let text: String = (0..1_000).map(|level| format!("{}a:\n", "  ".repeat(level))).collect();
    let diagnostics = refused(&text);
    first_at(&diagnostics, MAX_DEPTH + 1, 2 * MAX_DEPTH + 1, "nesting deeper than 32 levels");
    assert_eq!(diagnostics[0].path, vec!["a"; MAX_DEPTH].join("."));
}

#[test]
fn config_of_ten_mebibytes_is_refused_whole() {
    let text = format!("{MINIMAL}# {}\n", "x".repeat(10 << 20));
    let diagnostics = refused(&text);
    // The whole file is refused before it is parsed: no line or column is about it.
    first_at(&diagnostics, 0, 0, &format!("file is {} bytes", text.len()));
    assert!(diagnostics[0].message.contains("more than the 1048576 bytes (1 MiB) the configuration may have"));
    assert_eq!(diagnostics.len(), 1);
}

#[test]
fn config_of_exactly_the_limit_is_read() {
    let mut text = MINIMAL.to_owned();
    text.push('#');
    text.push_str(&" ".repeat(MAX_FILE_BYTES - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), MAX_FILE_BYTES);
    Config::from_yaml(FILE, &text).unwrap_or_else(|e| panic!("{e:#?}"));
}

#[test]
fn config_duplicate_keys_are_refused_at_the_second() {
    let text = format!("{MINIMAL}guardrails:\n  allowedScopes: [y]\n");
    first_at(&refused(&text), 4, 1, "guardrails: duplicate key \"guardrails\": it is already given at 2:1");
    let inner = "manifests: {path: m}\nguardrails:\n  allowedScopes: [y]\n  allowedScopes: [z]\n";
    first_at(
        &refused(inner),
        4,
        3,
        "guardrails.allowedScopes: duplicate key \"allowedScopes\": it is already given at 3:3",
    );
}

#[test]
fn config_of_two_documents_is_refused_at_the_second() {
    for second in [MINIMAL, "", "# nothing\n"] {
        let text = format!("{MINIMAL}---\n{second}");
        first_at(&refused(&text), 4, 1, "a second YAML document starts here: the configuration is one document");
    }
    let explicit = format!("%YAML 1.2\n---\n{MINIMAL}...\n");
    Config::from_yaml(FILE, &explicit).unwrap_or_else(|e| panic!("{e:#?}"));
}

#[test]
fn config_problems_found_after_parsing_point_at_their_field() {
    let text = "manifests: {path: m}\nguardrails: {allowedScopes: [], maxChangesPerReconcile: 0}\n";
    let at: Vec<(usize, usize, String)> = refused(text).into_iter().map(|d| (d.line, d.column, d.path)).collect();
    let expected = [(2, 29, "guardrails.allowedScopes"), (2, 57, "guardrails.maxChangesPerReconcile")];
    assert_eq!(at, expected.map(|(line, column, path)| (line, column, path.to_owned())));

    // A field inside a list is shown by the list's key; a field with its value, at the value.
    let text = format!(
        "{MINIMAL}api:\n  listen: 0.0.0.0:8470\n  tokens:\n    - {{name: a, role: security-reader, sha256: x}}\n\
         activeDirectory:\n  url: ldap://dc\n  bindUser: svc@x\n  passwordFile: p\n  baseDn: DC=x\n  pageSize: 0\n"
    );
    let at: Vec<(usize, usize, String)> = refused(&text).into_iter().map(|d| (d.line, d.column, d.path)).collect();
    let expected = [
        (5, 11, "api.listen"),
        (6, 3, "api.tokens.sha256"),
        (9, 8, "activeDirectory.url"),
        (13, 13, "activeDirectory.pageSize"),
    ];
    assert_eq!(at, expected.map(|(line, column, path)| (line, column, path.to_owned())));
}

// ---- found while fuzzing the loaders (issue 6) ----

/// A position is on a line of the text and at most one past that line's last character.
fn assert_points_into(text: &str, diagnostic: &Diagnostic) {
    let line = text.split('\n').nth(diagnostic.line - 1).unwrap_or_else(|| panic!("past the last line: {diagnostic}"));
    assert!(diagnostic.column <= line.chars().count() + 1, "past the end of {line:?}: {diagnostic}");
}

#[test]
fn issue_6_fuzz_a_syntax_error_at_the_end_of_a_file_is_on_its_last_line() {
    // Without a final line break, the parsers place the end of the text at the start of a line
    // after the last one (`3:1` here), which an editor cannot go to.
    let load = load_file("m.yaml", "a: b\nc");
    let error = &load.rejected[0].diagnostics[0];
    assert_eq!((error.line, error.column), (2, 2), "{error}");
    assert!(error.message.starts_with("YAML syntax error"), "{error}");

    let load = load_file("m.yaml", "apiVersion: remedy.dev/v1\nkind: Remediation\nspec:\n  reason: [x");
    let error = &load.rejected[0].diagnostics[0];
    assert_eq!((error.line, error.column), (4, 13), "{error}");

    let error = &refused("manifests: [m")[0];
    assert_eq!((error.file.as_str(), error.line, error.column), (FILE, 1, 14), "{error}");
}

#[test]
fn issue_6_fuzz_an_empty_key_at_the_end_of_a_file_is_on_its_last_line() {
    // Two empty keys; the second one's position was reported on line 3, of a text of two lines.
    for text in ["?\n? ", "? \n? "] {
        let load = load_file("m.yaml", text);
        let duplicate = &load.rejected[0].diagnostics[0];
        assert!(duplicate.message.starts_with("duplicate key \"\""), "{duplicate}");
        assert_eq!(duplicate.line, 2, "{duplicate}");
        assert_points_into(text, duplicate);
        let duplicate = &refused(text)[0];
        assert!(duplicate.message.starts_with("duplicate key \"\""), "{duplicate}");
        assert_points_into(text, duplicate);
    }
}

#[test]
fn issue_6_fuzz_an_error_on_a_directive_with_non_ascii_letters_stays_on_its_line() {
    // saphyr-parser 0.3.4 counts a directive name's bytes as columns (`é` is two): the column it
    // reports for the NUL character (the 3rd, or 4th) lies past the end of the line.
    for text in ["%éé\0\n", "%\u{fffd}\0\n"] {
        let load = load_file("m.yaml", text);
        let error = &load.rejected[0].diagnostics[0];
        assert!(error.message.contains("unprintable character"), "{error}");
        assert_eq!(error.line, 1);
        assert_points_into(text, error);
        assert_points_into(text, &refused(text)[0]);
    }
}

#[test]
fn issue_6_a_duration_too_long_to_count_is_refused_not_a_panic() {
    // `99999999999999999h` in milliseconds overflows 64 bits: it was multiplied unchecked (a panic
    // with overflow checks, a wrong debounce without). Seen while writing the config_loader
    // target, which panics on it; the fuzzer itself did not reach it in 17 minutes of runs. (serde places
    // the error at the mapping that holds the field.)
    let text = "manifests: {path: m, debounce: 99999999999999999h}\nguardrails: {allowedScopes: [x]}\n";
    first_at(&refused(text), 1, 12, "\"99999999999999999h\" is longer than remedy can wait");
}
