//! Output formats shared by the subcommands: a readable table or text by default, stable JSON and
//! YAML for pipelines.
//!
//! The tables are drawn here, not by a table crate: comfy-table (7.x; 8.x needs a newer Rust) and
//! tabled fit a table to a width by wrapping cells onto more lines or by sharing the width among
//! all columns, while these tables cut only their flexible columns, widest first, to a `…`, keep
//! every row on one line, print a record's BY/ERROR whole on indented lines below it, and keep
//! the first batch's widths for `--follow` (docs/quickstart.md, the tests below). With fixed
//! widths forced on them the crates would only pad cells: the layout, the detail lines and the
//! colour rules would stay here.

use std::io::{IsTerminal, Write};

use anyhow::Result;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
    Yaml,
}

/// `-o` of the commands that list things read from the daemon (`status`, `history`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    /// Fitted to the width (COLUMNS, else the terminal's, else 120): long cells shortened,
    /// history's BY/ERROR whole on its own lines below the row.
    Table,
    /// Every column whole on one line, whatever the width.
    Wide,
    Json,
    Yaml,
}

impl ListFormat {
    /// The table's layout for standard output, or None for JSON and YAML.
    pub fn render(self) -> Option<Render> {
        match self {
            ListFormat::Table => Some(Render::stdout(false)),
            ListFormat::Wide => Some(Render::stdout(true)),
            ListFormat::Json | ListFormat::Yaml => None,
        }
    }
}

impl From<ListFormat> for Format {
    fn from(format: ListFormat) -> Format {
        match format {
            ListFormat::Table | ListFormat::Wide => Format::Text,
            ListFormat::Json => Format::Json,
            ListFormat::Yaml => Format::Yaml,
        }
    }
}

/// Prints `value` as JSON or YAML; returns false for `Text` (the caller prints its own text).
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(value)?)?,
        Format::Yaml => write!(out, "{}", serde_yaml::to_string(value)?)?,
        Format::Text => return Ok(false),
    }
    out.flush()?;
    Ok(true)
}

/// How a table is laid out for where it goes: the width it must fit, `-o wide`, colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Render {
    /// No line is longer than this (but for a single word that cannot be broken), except with `wide`.
    pub width: usize,
    /// `-o wide`: every column whole, on one line, whatever the width.
    pub wide: bool,
    /// Highlight the words that need attention (Blocked, Denied, Failed, False) with ANSI colours.
    pub colour: bool,
}

impl Render {
    /// For standard output: its width (see [`width`]) and colour only on a terminal without
    /// `NO_COLOR`.
    pub fn stdout(wide: bool) -> Render {
        let stdout = std::io::stdout();
        let terminal = stdout.is_terminal();
        let columns = std::env::var("COLUMNS").ok();
        let size = terminal.then(|| terminal_size::terminal_size_of(&stdout).map(|(w, _)| usize::from(w.0))).flatten();
        Render {
            width: width(columns.as_deref(), size),
            wide,
            colour: colour(terminal, std::env::var_os("NO_COLOR").as_deref()),
        }
    }
}

/// The width to fit: `COLUMNS` when it is set to a number, else the terminal's (when stdout is
/// one), else 120. Never less than 20.
pub fn width(columns: Option<&str>, terminal: Option<usize>) -> usize {
    columns.and_then(|c| c.trim().parse::<usize>().ok()).filter(|w| *w > 0).or(terminal).unwrap_or(120).max(20)
}

/// Colour only on a terminal, and not when `NO_COLOR` is set to anything but the empty string
/// (no-color.org).
pub fn colour(terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    terminal && no_color.is_none_or(|value| value.is_empty())
}

/// The ANSI colour of a cell that needs attention, by its whole text.
fn highlight(cell: &str) -> Option<&'static str> {
    match cell.to_ascii_lowercase().as_str() {
        "failed" | "denied" | "false" | "stalled" => Some("\x1b[1;31m"),
        "blocked" | "held" => Some("\x1b[1;33m"),
        _ => None,
    }
}

const RESET: &str = "\x1b[0m";

/// Columns as `kubectl get` and `flux get` print them: a header, left-aligned cells three spaces
/// apart, fitted to a width: the flexible columns are shortened (ending in `…`) until the row
/// fits, and the detail column (a reason, an error) is printed whole on its own indented lines
/// below its row, wrapped. `-o wide` prints every column whole on one line.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    /// Each column at least this wide: rows printed batch by batch (`--follow`) then stay aligned.
    min_widths: Vec<usize>,
    /// The columns that may be shortened to fit (messages, names); default: the last.
    flexible: Vec<usize>,
    /// The column printed below its row rather than in it (but with `-o wide`).
    detail: Option<usize>,
    rows: Vec<Vec<String>>,
}

/// The widths of a table's columns, decided once: the batches of `--follow` keep them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    widths: Vec<usize>,
}

const GAP: &str = "   ";
/// The indentation of a row's detail lines.
const DETAIL_INDENT: &str = "    ";

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        let min_widths = vec![0; header.len()];
        let flexible = vec![header.len().saturating_sub(1)];
        Table { header, min_widths, flexible, detail: None, rows: Vec::new() }
    }

    /// These columns (instead of the last) are shortened to fit.
    pub fn flexible(mut self, columns: &[usize]) -> Table {
        self.flexible = columns.to_vec();
        self
    }

    /// This column goes on its own lines below the row, whole (but with `-o wide`).
    pub fn detail(mut self, column: usize) -> Table {
        self.detail = Some(column);
        self
    }

    pub fn min_widths(mut self, widths: &[usize]) -> Table {
        for (min, width) in self.min_widths.iter_mut().zip(widths) {
            *min = *width;
        }
        self
    }

    /// Adds a row; line breaks in a cell become spaces (one row, one line).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells.into_iter().map(|c| c.split_whitespace().collect::<Vec<_>>().join(" ")).collect());
    }

    /// Whether column `i` is printed in the row.
    fn inline(&self, i: usize, render: &Render) -> bool {
        render.wide || self.detail != Some(i)
    }

    /// The columns' widths for these rows: as wide as their widest cell, then (but with `-o wide`)
    /// the flexible ones narrowed, widest first, until the row fits `render.width`.
    pub fn layout(&self, render: &Render) -> Layout {
        let mut widths: Vec<usize> =
            self.header.iter().zip(&self.min_widths).map(|(h, min)| h.chars().count().max(*min)).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        if render.wide {
            return Layout { widths };
        }
        let shown: Vec<usize> = (0..widths.len()).filter(|i| self.inline(*i, render)).collect();
        let total = |widths: &[usize]| -> usize {
            shown.iter().map(|i| widths[*i]).sum::<usize>() + GAP.len() * shown.len().saturating_sub(1)
        };
        while total(&widths) > render.width {
            let widest = self
                .flexible
                .iter()
                .copied()
                .filter(|i| shown.contains(i) && widths[*i] > MIN_FLEXIBLE)
                .max_by_key(|i| (widths[*i], std::cmp::Reverse(*i)));
            match widest {
                Some(i) => widths[i] -= 1,
                None => break,
            }
        }
        Layout { widths }
    }

    /// Prints the header and the rows to stdout, laid out for them.
    pub fn print(&self, render: &Render) -> std::io::Result<()> {
        let layout = self.layout(render);
        self.write(&mut std::io::stdout().lock(), &layout, render, true)
    }

    /// Writes the rows (and the header if asked) in `layout`: cells longer than their column are
    /// shortened, but with `-o wide`, where they are whole and push the rest of their line.
    pub fn write(&self, out: &mut impl Write, layout: &Layout, render: &Render, header: bool) -> std::io::Result<()> {
        let header_row: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let shown: Vec<usize> = (0..self.header.len()).filter(|i| self.inline(*i, render)).collect();
        let rows = header.then_some(&header_row).into_iter().chain(&self.rows);
        for (n, row) in rows.enumerate() {
            let is_header = header && n == 0;
            let mut plain = String::new();
            let mut coloured = String::new();
            for (k, &i) in shown.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                let width = layout.widths.get(i).copied().unwrap_or(0);
                let cell = if render.wide { cell.to_owned() } else { shorten(cell, width) };
                plain.push_str(&cell);
                match highlight(&cell).filter(|_| render.colour && !is_header) {
                    Some(colour) => coloured.push_str(&format!("{colour}{cell}{RESET}")),
                    None => coloured.push_str(&cell),
                }
                if k + 1 < shown.len() {
                    let pad = format!("{}{GAP}", " ".repeat(width.saturating_sub(cell.chars().count())));
                    plain.push_str(&pad);
                    coloured.push_str(&pad);
                }
            }
            let (plain, coloured) = (plain.trim_end(), coloured.trim_end());
            if !render.wide && plain.chars().count() > render.width {
                // Wider than the width even with its flexible columns at their narrowest: cut.
                writeln!(out, "{}", shorten(plain, render.width))?;
            } else {
                writeln!(out, "{}", if render.colour { coloured } else { plain })?;
            }
            if let Some(detail) = self.detail.filter(|_| !render.wide) {
                let text = row.get(detail).map_or("", String::as_str);
                if is_header {
                    // The detail column's title where its cells go: below, indented.
                    writeln!(out, "{DETAIL_INDENT}{text}")?;
                    continue;
                }
                if !text.is_empty() && text != "-" {
                    for piece in wrap(text, render.width.saturating_sub(DETAIL_INDENT.len())) {
                        writeln!(out, "{DETAIL_INDENT}{piece}")?;
                    }
                }
            }
        }
        out.flush()
    }
}

/// `text` in lines of at most `width` characters, broken between words; a word longer than that
/// has a line of its own.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// A flexible column keeps at least this much of its text, even if the line is then cut.
const MIN_FLEXIBLE: usize = 8;

/// Whether an error is standard output closed under us (`remedy history | head`): the reader has
/// all it wanted, so the command ends quietly and successfully, as ripgrep does.
pub fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().filter_map(|e| e.downcast_ref::<std::io::Error>()).any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}

/// A single line on stderr that says what a command is waiting for, rewritten in place; only on a
/// terminal (in a pipe or a log it stays quiet).
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    shown: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { enabled: std::io::stderr().is_terminal(), shown: false }
    }

    pub fn show(&mut self, text: &str) {
        if !self.enabled {
            return;
        }
        let stderr = std::io::stderr();
        let width = terminal_size::terminal_size_of(&stderr).map_or(80, |(w, _)| usize::from(w.0));
        let mut stderr = stderr.lock();
        let _ = write!(stderr, "\r\x1b[2K{}", shorten(text, width.saturating_sub(1)));
        let _ = stderr.flush();
        self.shown = true;
    }

    /// Removes the line (before the command prints its result).
    pub fn clear(&mut self) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.shown = false;
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

/// `text` cut to `width` characters, ending in `…` when cut.
pub fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(width: usize) -> Render {
        Render { width, wide: false, colour: false }
    }

    fn text(table: &Table, render: &Render, header: bool) -> String {
        let mut out = Vec::new();
        table.write(&mut out, &table.layout(render), render, header).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_align_and_the_last_one_is_cut_to_the_width() {
        let mut table = Table::new(vec!["NAME", "READY", "MESSAGE"]);
        table.row(vec!["inc-1".into(), "True".into(), "all\ngood".into()]);
        table.row(vec!["inc-22-long".into(), "False".into(), "x".repeat(40)]);
        assert_eq!(
            text(&table, &render(120), true),
            format!(
                "NAME          READY   MESSAGE\ninc-1         True    all good\ninc-22-long   False   {}\n",
                "x".repeat(40)
            )
        );
        assert_eq!(
            text(&table, &render(30), false),
            "inc-1         True    all good\ninc-22-long   False   xxxxxxx…\n"
        );
        let wide = Render { wide: true, ..render(30) };
        assert!(text(&table, &wide, false).contains(&"x".repeat(40)));
    }

    #[test]
    fn a_flexible_middle_column_is_cut_so_that_the_last_one_stays() {
        let mut table = Table::new(vec!["NAME", "MESSAGE", "AGE"]).flexible(&[1]);
        table.row(vec!["inc-1".into(), "m".repeat(30), "5m".into()]);
        assert_eq!(text(&table, &render(30), true), "NAME    MESSAGE            AGE\ninc-1   mmmmmmmmmmmmmmm…   5m\n");
    }

    #[test]
    fn the_detail_column_is_wrapped_whole_below_its_row() {
        let reason = "Graph 403 Authorization_RequestDenied: Insufficient privileges to complete the operation \
                      on user alice@contoso.com (request id 5f1c0e0a-1b2c-4d5e-8f90-a1b2c3d4e5f6)";
        let mut table = Table::new(vec!["ID", "IDENTITY", "OUTCOME", "ERROR"]).flexible(&[1]).detail(3);
        table.row(vec![
            "7".into(),
            "upn:alice.with.a.long.name@contoso.example.com".into(),
            "failed".into(),
            reason.into(),
        ]);
        for width in [80, 120] {
            let printed = text(&table, &render(width), true);
            for line in printed.lines() {
                assert!(line.chars().count() <= width, "{width}: {line:?} is too long");
            }
            assert_eq!(printed.lines().nth(1), Some("    ERROR"), "{printed}");
            let words: Vec<&str> = printed.lines().skip(3).flat_map(str::split_whitespace).collect();
            assert_eq!(words.join(" "), reason, "{width}: the reason is whole below the row:\n{printed}");
            assert!(printed.lines().nth(2).unwrap().contains("failed"), "{printed}");
        }
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color_and_it_marks_failures() {
        use std::ffi::OsStr;
        assert!(colour(true, None));
        assert!(colour(true, Some(OsStr::new(""))));
        assert!(!colour(true, Some(OsStr::new("1"))));
        assert!(!colour(false, None));
        let mut table = Table::new(vec!["ID", "OUTCOME", "NOTE"]);
        table.row(vec!["1".into(), "succeeded".into(), "-".into()]);
        table.row(vec!["2".into(), "failed".into(), "-".into()]);
        assert!(!text(&table, &render(80), true).contains('\x1b'));
        let printed = text(&table, &Render { colour: true, ..render(80) }, true);
        assert!(printed.contains("\x1b[1;31mfailed\x1b[0m"), "{printed:?}");
        assert!(!printed.contains("\x1b[1;31msucceeded"), "{printed:?}");
    }

    #[test]
    fn the_width_is_columns_else_the_terminal_else_120() {
        assert_eq!(width(Some("100"), Some(80)), 100);
        assert_eq!(width(Some("junk"), Some(80)), 80);
        assert_eq!(width(None, None), 120);
    }
}
