//! Malformed manifests: each is rejected with a diagnostic at the exact line and column, naming
//! the field (YAML path) it is about. One table, one helper; a few cases that need more than one
//! expectation follow it.

use remedy_policies::load::{assemble, load_file, FileLoad, ManifestSet, MAX_DEPTH, MAX_DOCUMENTS, MAX_FILE_BYTES};
use remedy_policies::Diagnostic;

/// Lines joined into a file, so that a case's line numbers can be read off its index.
fn doc(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// A valid manifest, one line per entry (line 1 is `apiVersion`).
const VALID: &[&str] = &[
    "apiVersion: remedy.dev/v1", // 1
    "kind: Remediation",         // 2
    "metadata:",                 // 3
    "  name: inc-1",             // 4
    "spec:",                     // 5
    "  reason: \"INC-1: test\"", // 6
    "  target:",                 // 7
    "    samAccountName: alice", // 8
    "  activeDirectory:",        // 9
    "    disabled: true",        // 10
];

/// [`VALID`] with line `number` (1-based) replaced by `line`.
fn valid_with(number: usize, line: &str) -> String {
    let mut lines = VALID.to_vec();
    lines[number - 1] = line;
    doc(&lines)
}

/// [`VALID`] with `extra` inserted after line `number`.
fn valid_plus(number: usize, extra: &[&str]) -> String {
    let mut lines = VALID.to_vec();
    lines.splice(number..number, extra.iter().copied());
    doc(&lines)
}

/// The first lines of [`VALID`], up to and including `spec:` and its reason (lines 1-6).
fn head() -> Vec<&'static str> {
    VALID[..6].to_vec()
}

fn head_with(rest: &[&'static str]) -> String {
    let mut lines = head();
    lines.extend_from_slice(rest);
    doc(&lines)
}

struct Case {
    name: &'static str,
    files: Vec<(&'static str, String)>,
    /// The file the expected diagnostic is in.
    file: &'static str,
    line: usize,
    column: usize,
    /// Found in the diagnostic's `path: message` text.
    expected: &'static str,
}

fn case(name: &'static str, yaml: String, line: usize, column: usize, expected: &'static str) -> Case {
    Case { name, files: vec![("case.yaml", yaml)], file: "case.yaml", line, column, expected }
}

fn load_all(files: &[(&str, String)]) -> (Vec<FileLoad>, ManifestSet) {
    let loads: Vec<FileLoad> = files.iter().map(|(name, text)| load_file(name, text)).collect();
    let set = assemble(loads.clone());
    (loads, set)
}

fn shown(diagnostics: &[&Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("\n    {d}")).collect()
}

/// The one helper: the case must yield an error at exactly `file:line:column` whose text holds
/// `expected`, and the document it is about must not load.
fn check(case: &Case) -> Result<(), String> {
    let (_, set) = load_all(&case.files);
    let diagnostics: Vec<&Diagnostic> = set.diagnostics().collect();
    let hit = diagnostics.iter().any(|d| {
        d.is_error()
            && d.file == case.file
            && (d.line, d.column) == (case.line, case.column)
            && format!("{}: {}", d.path, d.message).contains(case.expected)
    });
    if !hit {
        return Err(format!(
            "{}: no error at {}:{}:{} containing {:?}; got:{}",
            case.name,
            case.file,
            case.line,
            case.column,
            case.expected,
            shown(&diagnostics)
        ));
    }
    if !set.manifests.is_empty() {
        let names: Vec<&str> = set.manifests.iter().map(|m| m.name.as_str()).collect();
        return Err(format!("{}: loaded {names:?} anyway", case.name));
    }
    Ok(())
}

fn cases() -> Vec<Case> {
    let two_files = vec![("a.yaml", doc(VALID)), ("b.yaml", doc(&[&["# the same name again"], VALID].concat()))];
    vec![
        // ---- unknown fields ----
        case("unknown top-level field", valid_plus(2, &["colour: blue"]), 3, 1, "colour: unknown field \"colour\""),
        case(
            "unknown spec field, with a suggestion",
            valid_plus(6, &["  suspnd: true"]),
            7,
            3,
            "spec.suspnd: unknown field \"suspnd\": did you mean \"suspend\"?",
        ),
        case(
            "unknown activeDirectory field, with a suggestion",
            valid_with(10, "    disable: true"),
            10,
            5,
            "spec.activeDirectory.disable: unknown field \"disable\": did you mean \"disabled\"?",
        ),
        case(
            "a field in the wrong section",
            valid_plus(6, &["  name: inc-1"]),
            7,
            3,
            "spec.name: unknown field \"name\": it belongs in metadata",
        ),
        case(
            "unknown metadata field",
            valid_plus(4, &["  namespace: soc"]),
            5,
            3,
            "metadata.namespace: unknown field \"namespace\"",
        ),
        // ---- the target ----
        case(
            "two targets",
            valid_plus(8, &["    objectSid: S-1-5-21-1-2-3-1104"]),
            8,
            5,
            "spec.target: exactly one of userPrincipalName, samAccountName, objectGuid, objectSid may be given, found samAccountName (8:5) and objectSid (9:5)",
        ),
        case("no target", valid_with(7, "  target: {}").replace("    samAccountName: alice\n", ""), 7, 3, "spec.target: no account named"),
        case(
            "target missing",
            head_with(&["  entraId:", "    suspended: true"]),
            5,
            1,
            "spec.target: missing required field \"target\" in spec",
        ),
        case(
            "bad GUID",
            valid_with(8, "    objectGuid: 6f9619ff-8b86-d011-b42d"),
            8,
            17,
            "spec.target.objectGuid: objectGuid \"6f9619ff-8b86-d011-b42d\" is not a GUID",
        ),
        case(
            "bad SID",
            valid_with(8, "    objectSid: S-1-5"),
            8,
            16,
            "spec.target.objectSid: objectSid \"S-1-5\" is not a SID",
        ),
        case(
            "bad UPN",
            valid_with(8, "    userPrincipalName: alice@"),
            8,
            24,
            "spec.target.userPrincipalName: userPrincipalName \"alice@\" is not of the form name@domain",
        ),
        case(
            "bad samAccountName",
            valid_with(8, "    samAccountName: \"a/b\""),
            8,
            21,
            "spec.target.samAccountName: samAccountName \"a/b\" must be 1 to 20 characters",
        ),
        case(
            "bad entraObjectId",
            valid_plus(8, &["    entraObjectId: 8d5f"]),
            9,
            20,
            "spec.target.entraObjectId: \"8d5f\" is not a GUID",
        ),
        case(
            "a number where a name is expected",
            valid_with(8, "    samAccountName: 4711"),
            8,
            21,
            "spec.target.samAccountName: expected a string, found number 4711 (put it in quotes",
        ),
        // ---- field values ----
        case(
            "expires without an offset",
            valid_plus(10, &["  expires: 2026-12-01T00:00:00"]),
            11,
            12,
            "spec.expires: \"2026-12-01T00:00:00\" has no UTC offset",
        ),
        case(
            "expires garbage",
            valid_plus(10, &["  expires: next tuesday"]),
            11,
            12,
            "spec.expires: \"next tuesday\" is not an RFC 3339 time",
        ),
        case(
            "expires a bare date",
            valid_plus(10, &["  expires: 2026-12-01"]),
            11,
            12,
            "spec.expires: \"2026-12-01\" is a date without a time",
        ),
        case(
            "onRelease bogus",
            valid_plus(10, &["  onRelease: undo"]),
            11,
            14,
            "spec.onRelease: unknown onRelease \"undo\": expected leave",
        ),
        case(
            "disabled: \"yes\"",
            valid_with(10, "    disabled: yes"),
            10,
            15,
            "spec.activeDirectory.disabled: expected a boolean (true or false), found string \"yes\"",
        ),
        case(
            "an empty boolean",
            valid_plus(10, &["  suspend:"]),
            11,
            3,
            "spec.suspend: expected a boolean (true or false), found nothing",
        ),
        case(
            "a section that is not a mapping",
            valid_plus(10, &["  entraId: yes"]),
            11,
            12,
            "spec.entraId: expected a mapping of suspended, revokeSessions, confirmCompromised; found string \"yes\"",
        ),
        case(
            "a label value that is a list",
            valid_plus(4, &["  labels:", "    team: [soc, ir]"]),
            6,
            11,
            "metadata.labels.team: expected a string, found a list: values of labels must be strings",
        ),
        case(
            "a label key with dots, value a number",
            valid_plus(4, &["  labels: {app.example.com/tier: 1}"]),
            5,
            34,
            "metadata.labels[\"app.example.com/tier\"]: expected a string, found number 1",
        ),
        // ---- metadata ----
        case("name invalid", valid_with(4, "  name: INC_4711"), 4, 9, "metadata.name: \"INC_4711\" is not a valid name"),
        case(
            "name missing",
            valid_with(4, "  labels: {team: soc}"),
            3,
            1,
            "metadata.name: missing required field \"name\" in metadata",
        ),
        case(
            "metadata not a mapping",
            valid_with(4, "").replace("metadata:\n\n", "metadata: inc-1\n"),
            3,
            11,
            "metadata: expected a mapping of name, labels, annotations; found string \"inc-1\"",
        ),
        // ---- spec ----
        case(
            "reason missing",
            valid_with(6, "  suspend: false"),
            5,
            1,
            "spec.reason: missing required field \"reason\" in spec",
        ),
        case("reason empty", valid_with(6, "  reason: \" \""), 6, 11, "spec.reason: spec.reason must not be empty"),
        case(
            "clearPasswordNeverExpires without mustChangePassword",
            valid_plus(10, &["    clearPasswordNeverExpires: true"]),
            11,
            5,
            "spec.activeDirectory.clearPasswordNeverExpires: activeDirectory.clearPasswordNeverExpires only makes sense with activeDirectory.mustChangePassword: true",
        ),
        case(
            "nothing declared",
            valid_with(10, "    mustChangePassword: false"),
            5,
            1,
            "spec: spec declares no remediation",
        ),
        // ---- the document ----
        case("apiVersion wrong", valid_with(1, "apiVersion: v1"), 1, 13, "apiVersion: unknown apiVersion \"v1\": expected remedy.dev/v1"),
        case(
            "apiVersion missing",
            valid_with(1, "# no apiVersion"),
            2,
            1,
            "apiVersion: missing required field \"apiVersion\"",
        ),
        case("kind wrong", valid_with(2, "kind: Remediations"), 2, 7, "kind: unknown kind \"Remediations\": expected Remediation"),
        case("document a list", doc(&["- apiVersion: remedy.dev/v1", "- kind: Remediation"]), 1, 1, "a manifest must be a mapping of apiVersion, kind, metadata, spec; found a list"),
        case("document a scalar", doc(&["---", "just some text"]), 2, 1, "a manifest must be a mapping"),
        // ---- syntax: the whole file is rejected ----
        case(
            "unclosed bracket",
            valid_with(8, "    samAccountName: [alice"),
            // Where the parser gave up: the next key, read as part of the list.
            9,
            18,
            "YAML syntax error: illegal placement of ':' indicator (inside the bracket opened at 8:21: is it closed?)",
        ),
        case(
            "bad indentation",
            valid_with(6, "   reason: x"),
            7,
            3,
            "YAML syntax error: while parsing a block mapping, did not find expected key",
        ),
        case("tab indentation", valid_with(10, "\tdisabled: true"), 10, 2, "YAML syntax error: tabs disallowed"),
        case(
            "unterminated quote",
            valid_with(6, "  reason: \"INC-1"),
            6,
            11,
            "YAML syntax error: invalid indentation in quoted scalar",
        ),
        case("alias to an undefined anchor", valid_with(6, "  reason: *why"), 6, 11, "YAML syntax error"),
        // ---- hostile input ----
        case(
            "anchor and alias",
            valid_plus(6, &["  suspend: &no false", "  onRelease: *no"]),
            7,
            12,
            "spec.suspend: anchors and aliases are not allowed in manifests",
        ),
        case(
            "alias bomb",
            doc(&[
                "a: &a [x, x, x, x, x, x, x, x, x]",
                "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]",
                "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]",
                "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c]",
            ]),
            2,
            8,
            "b[0]: anchors and aliases are not allowed in manifests",
        ),
        case(
            "deep nesting",
            valid_plus(10, &[&format!("  deep: {}x{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH))]),
            11,
            9 + MAX_DEPTH - 2,
            "nesting deeper than 32 levels is not allowed in manifests",
        ),
        case(
            "nesting beyond the parser's own limit",
            valid_plus(10, &[&format!("  deep: {}", "[".repeat(10_000))]),
            // saphyr-parser gives up after 255 open brackets (the first is in column 9).
            11,
            9 + 255,
            "nesting deeper than 32 levels is not allowed",
        ),
        case(
            "deep block mappings",
            valid_plus(10, &[&(0..MAX_DEPTH).map(|level| format!("  {}a:", "  ".repeat(level))).collect::<Vec<_>>().join("\n")]),
            // `spec` is level 2: the value of the 31st `a:`, a mapping from line 11 + 31 on, is level 33.
            11 + 31,
            3 + 2 * 31,
            "nesting deeper than 32 levels is not allowed in manifests",
        ),
        case(
            "flow mappings ten thousand deep",
            valid_plus(10, &[&format!("  deep: {}", "{a: ".repeat(10_000))]),
            11,
            // saphyr-parser gives up at its 256th open mapping, each four characters on from the last.
            9 + 4 * 255,
            "nesting deeper than 32 levels is not allowed in manifests (the YAML parser stopped at its own limit)",
        ),
        case(
            "a mapping as a key",
            valid_plus(10, &["  ? {a: b}", "  : c"]),
            11,
            5,
            "a mapping cannot be a key",
        ),
        case(
            "duplicate key",
            valid_plus(10, &["    disabled: false"]),
            11,
            5,
            "spec.activeDirectory.disabled: duplicate key \"disabled\": it is already given at 10:5",
        ),
        case(
            "a file over 1 MiB",
            format!("{}# {}\n", doc(VALID), "x".repeat(MAX_FILE_BYTES)),
            0,
            0,
            "bytes (1 MiB) a manifest file may have",
        ),
        case(
            "a file of 10 MiB",
            format!("{}# {}\n", doc(VALID), "x".repeat(10 << 20)),
            0,
            0,
            "bytes, more than the 1048576 bytes (1 MiB) a manifest file may have",
        ),
        case(
            "too many documents",
            doc(VALID).replace("inc-1", "inc-0") + &"---\n# empty\n".repeat(MAX_DOCUMENTS),
            // The 1001st document's `---`: the first is on line 11, then one every other line.
            2 * MAX_DOCUMENTS + 9,
            1,
            "the file holds more than 1000 documents",
        ),
        // ---- across the set ----
        Case {
            name: "duplicate names across two files",
            files: two_files.clone(),
            file: "b.yaml",
            line: 2,
            column: 1,
            expected: "metadata.name: name \"inc-1\" is also used at a.yaml:1:1",
        },
        Case {
            name: "duplicate names across two files, the other side",
            files: two_files,
            file: "a.yaml",
            line: 1,
            column: 1,
            expected: "metadata.name: name \"inc-1\" is also used at b.yaml:2:1",
        },
        Case {
            name: "a valid manifest whose name a rejected document also uses",
            files: vec![
                ("a.yaml", doc(VALID)),
                ("b.yaml", format!("# a draft\n---\n{}", valid_with(1, "apiVersion: v2"))),
            ],
            file: "a.yaml",
            line: 1,
            column: 1,
            expected: "metadata.name: name \"inc-1\" is also used at the 1st document of b.yaml (itself rejected)",
        },
        Case {
            name: "duplicate names in one file",
            files: vec![("one.yaml", format!("{}---\n{}", doc(VALID), doc(VALID)))],
            file: "one.yaml",
            line: 12,
            column: 1,
            expected: "name \"inc-1\" is also used at one.yaml:1:1",
        },
    ]
}

#[test]
fn every_malformed_document_is_rejected_at_the_right_place() {
    let cases = cases();
    assert!(cases.len() >= 35, "only {} cases", cases.len());
    let failures: Vec<String> = cases.iter().filter_map(|c| check(c).err()).collect();
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

#[test]
fn the_valid_manifest_used_above_is_valid() {
    let load = load_file("valid.yaml", &doc(VALID));
    assert!(load.rejected.is_empty(), "{:#?}", load.rejected);
    assert_eq!(load.manifests.len(), 1);
    let origin = &load.manifests[0].origin;
    assert_eq!((origin.document, origin.line, origin.column), (0, 1, 1));
}

#[test]
fn several_errors_in_one_document_are_all_reported() {
    let text = doc(&[
        "apiVersion: remedy.dev/v1",       // 1
        "kind: Remediation",               // 2
        "metadata:",                       // 3
        "  name: inc-1",                   // 4
        "  colour: blue",                  // 5 unknown field
        "spec:",                           // 6
        "  reason: INC-1",                 // 7
        "  target:",                       // 8
        "    userPrincipalName: alice",    // 9 bad UPN
        "  activeDirectory:",              // 10
        "    disabled: yes",               // 11 not a boolean
        "  onRelease: forget",             // 12 unknown value
        "  expires: 2026-13-45T00:00:00Z", // 13 not a time
    ]);
    let load = load_file("many.yaml", &text);
    assert!(load.manifests.is_empty());
    assert_eq!(load.rejected.len(), 1);
    let rejected = &load.rejected[0];
    assert_eq!(rejected.name.as_deref(), Some("inc-1"));
    let found: Vec<(usize, usize, &str)> =
        rejected.diagnostics.iter().map(|d| (d.line, d.column, d.path.as_str())).collect();
    assert_eq!(
        found,
        [
            (5, 3, "metadata.colour"),
            (9, 24, "spec.target.userPrincipalName"),
            (11, 15, "spec.activeDirectory.disabled"),
            (12, 14, "spec.onRelease"),
            (13, 12, "spec.expires"),
        ],
        "{}",
        rejected.diagnostics.iter().map(|d| format!("\n{d}")).collect::<String>()
    );
}

#[test]
fn a_valid_document_beside_an_invalid_one_loads() {
    let text = format!("{}---\n{}", valid_with(4, "  name: bad_name"), doc(VALID).replace("inc-1", "inc-2"));
    let load = load_file("pair.yaml", &text);
    assert_eq!(load.manifests.len(), 1, "{:#?}", load.rejected);
    let manifest = &load.manifests[0];
    assert_eq!(manifest.name.as_str(), "inc-2");
    // The second document's content starts after the first document's 10 lines and `---`.
    assert_eq!((manifest.origin.document, manifest.origin.line, manifest.origin.column), (1, 12, 1));
    assert_eq!(load.rejected.len(), 1);
    assert_eq!((load.rejected[0].document, load.rejected[0].name.as_deref()), (0, Some("bad_name")));
}

#[test]
fn a_syntax_error_rejects_the_whole_file_and_keeps_the_names_it_could_read() {
    let text = format!("{}---\n{}", doc(VALID), valid_with(8, "    samAccountName: [alice"));
    let load = load_file("broken.yaml", &text);
    assert!(load.manifests.is_empty());
    let summary: Vec<(usize, Option<&str>, usize, usize)> = load
        .rejected
        .iter()
        .map(|r| (r.document, r.name.as_deref(), r.diagnostics[0].line, r.diagnostics[0].column))
        .collect();
    // The good first document is held by its name, at its name; the broken one carries the error.
    assert_eq!(summary, [(0, Some("inc-1"), 4, 9), (1, Some("inc-1"), 20, 18)]);
    assert!(load.rejected[0].diagnostics[0]
        .message
        .contains("the whole file is rejected because of the error at 20:18"));

    let nameless = load_file("nameless.yaml", "a: [\n");
    assert_eq!(nameless.rejected.len(), 1);
    assert_eq!(nameless.rejected[0].name, None);
}

#[test]
fn empty_documents_are_skipped_silently() {
    for text in ["", "\n\n", "# only a comment\n", "---\n", "---\n...\n", "~\n"] {
        let load = load_file("empty.yaml", text);
        assert_eq!((load.manifests.len(), load.rejected.len()), (0, 0), "{text:?}: {:#?}", load.rejected);
    }
    let text = format!("# leading comment\n---\n{}---\n# nothing here\n---\n", doc(VALID));
    let load = load_file("trailing.yaml", &text);
    assert!(load.rejected.is_empty(), "{:#?}", load.rejected);
    assert_eq!(load.manifests.len(), 1);
    assert_eq!((load.manifests[0].origin.line, load.manifests[0].origin.column), (3, 1));
}

#[test]
fn a_file_of_exactly_the_limit_is_read() {
    let mut text = doc(VALID);
    text.push('#');
    text.push_str(&" ".repeat(MAX_FILE_BYTES - text.len() - 1));
    text.push('\n');
    assert_eq!(text.len(), MAX_FILE_BYTES);
    assert_eq!(load_file("full.yaml", &text).manifests.len(), 1);
}

#[test]
fn hostile_input_is_refused_quickly_and_without_overflowing_the_stack() {
    let budget = MAX_FILE_BYTES - 16;
    let inputs = [
        "[".repeat(budget),
        "{a: ".repeat(budget / 4),
        "- ".repeat(budget / 2),
        format!("{}x{}", "[".repeat(budget / 2), "]".repeat(budget / 2)),
        "a: &a [x]\nb: *a\n".repeat(budget / 16),
        "a: 1\n".repeat(budget / 5),
        "---\n".repeat(budget / 4),
        "[*a, ".repeat(budget / 5),
        "\"\\u".repeat(budget / 3),
    ];
    for input in inputs {
        // Test threads have small stacks (2 MiB), like the daemon's worker threads.
        let load = load_file("hostile.yaml", &input);
        assert!(load.manifests.is_empty());
        assert!(!load.rejected.is_empty(), "{:?}... accepted", &input[..20]);
        let diagnostics: usize = load.rejected.iter().map(|r| r.diagnostics.len()).sum();
        assert!(diagnostics <= 1_001 + 51, "{diagnostics} diagnostics for {:?}...", &input[..20]);
    }
}

#[test]
fn assembling_is_deterministic() {
    let files = vec![
        ("b.yaml", doc(VALID).replace("inc-1", "zeta")),
        ("a.yaml", format!("{}---\n{}", valid_with(1, "apiVersion: v9"), doc(VALID).replace("inc-1", "alpha"))),
        ("c.yaml", doc(VALID).replace("inc-1", "mid")),
        ("0.yaml", "a: [\n".to_owned()),
    ];
    let (_, forward) = load_all(&files);
    let mut reversed = files.clone();
    reversed.reverse();
    let (_, backward) = load_all(&reversed);
    assert_eq!(forward, backward);
    let names: Vec<&str> = forward.manifests.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
    let rejected: Vec<(&str, usize)> = forward.rejected.iter().map(|r| (r.file.as_str(), r.document)).collect();
    assert_eq!(rejected, [("0.yaml", 0), ("a.yaml", 0)]);
}

#[test]
fn windows_line_endings_a_byte_order_mark_and_non_ascii_text_are_read() {
    let text = doc(VALID).replace("INC-1: test", "INC-1: Anmeldung aus Köln → «MFA»");
    let crlf = format!(
        "\u{feff}{}---\r\n{}",
        text.replace('\n', "\r\n"),
        text.replace("inc-1", "inc-2").replace('\n', "\r\n")
    );
    let load = load_file("windows.yaml", &crlf);
    assert!(load.rejected.is_empty(), "{:#?}", load.rejected);
    let origins: Vec<(usize, usize)> = load.manifests.iter().map(|m| (m.origin.line, m.origin.column)).collect();
    assert_eq!(origins, [(1, 1), (12, 1)]);
    assert_eq!(load.manifests[0].spec.reason, "INC-1: Anmeldung aus Köln → «MFA»");

    // Columns count characters, not bytes.
    let bad = valid_with(6, "  reason: «x»").replace("    disabled: true", "    disabled: «ja»");
    let load = load_file("umlaut.yaml", &bad);
    let at: Vec<(usize, usize)> = load.rejected[0].diagnostics.iter().map(|d| (d.line, d.column)).collect();
    assert_eq!(at, [(10, 15)]);
}
