//! Output formats shared by the subcommands: a readable table or text by default, stable JSON and
//! YAML for pipelines.

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
    Table,
    Json,
    Yaml,
}

impl From<ListFormat> for Format {
    fn from(format: ListFormat) -> Format {
        match format {
            ListFormat::Table => Format::Text,
            ListFormat::Json => Format::Json,
            ListFormat::Yaml => Format::Yaml,
        }
    }
}

/// Prints `value` as JSON or YAML; returns false for `Text` (the caller prints its own text).
pub fn print_structured<T: Serialize>(format: Format, value: &T) -> Result<bool> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(value)?),
        Format::Text => return Ok(false),
    }
    Ok(true)
}

/// Columns as `kubectl get` and `flux get` print them: a header, left-aligned cells three spaces
/// apart. On a terminal the last column is cut to the terminal's width; in a pipe nothing is cut.
#[derive(Debug)]
pub struct Table {
    header: Vec<&'static str>,
    /// Each column at least this wide: rows printed batch by batch (`--follow`) then stay aligned.
    min_widths: Vec<usize>,
    /// The column that is cut on a terminal so that the line fits (a message); default: the last.
    flexible: usize,
    rows: Vec<Vec<String>>,
}

const GAP: &str = "   ";

impl Table {
    pub fn new(header: Vec<&'static str>) -> Table {
        let min_widths = vec![0; header.len()];
        let flexible = header.len().saturating_sub(1);
        Table { header, min_widths, flexible, rows: Vec::new() }
    }

    /// Cut this column (instead of the last) on a terminal.
    pub fn flexible(mut self, column: usize) -> Table {
        self.flexible = column;
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

    /// Prints the header and the rows to stdout.
    pub fn print(&self) -> std::io::Result<()> {
        self.print_to(&mut std::io::stdout().lock(), true, terminal_width())
    }

    /// Prints the rows only (the next batch of a table whose header is out already).
    pub fn print_rows(&self) -> std::io::Result<()> {
        self.print_to(&mut std::io::stdout().lock(), false, terminal_width())
    }

    fn print_to(&self, out: &mut impl Write, header: bool, terminal: Option<usize>) -> std::io::Result<()> {
        let columns = self.header.len();
        let mut widths: Vec<usize> =
            self.header.iter().zip(&self.min_widths).map(|(h, min)| h.chars().count().max(*min)).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        if let Some(terminal) = terminal {
            let others: usize = widths.iter().enumerate().filter(|(i, _)| *i != self.flexible).map(|(_, w)| w).sum();
            let room = terminal.saturating_sub(others + GAP.len() * columns.saturating_sub(1));
            if let Some(width) = widths.get_mut(self.flexible) {
                *width = (*width).min(room.max(MIN_FLEXIBLE));
            }
        }
        let header_row: Vec<String> = self.header.iter().map(|h| (*h).to_owned()).collect();
        let rows = header.then_some(&header_row).into_iter().chain(&self.rows);
        for row in rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                let width = widths.get(i).copied().unwrap_or(0);
                let cell = if terminal.is_some() && i == self.flexible { shorten(cell, width) } else { cell.clone() };
                if i + 1 == columns {
                    line.push_str(&cell);
                } else {
                    line.push_str(&format!("{cell:<width$}{GAP}"));
                }
            }
            let line = line.trim_end();
            match terminal {
                Some(terminal) => writeln!(out, "{}", shorten(line, terminal))?,
                None => writeln!(out, "{line}")?,
            }
        }
        out.flush()
    }
}

/// The flexible column keeps at least this much of its text, even if the line is then cut.
const MIN_FLEXIBLE: usize = 12;

/// The width of the terminal stdout is, if it is one.
pub fn terminal_width() -> Option<usize> {
    let stdout = std::io::stdout();
    if !stdout.is_terminal() {
        return None;
    }
    terminal_size::terminal_size_of(&stdout).map(|(w, _)| usize::from(w.0)).filter(|w| *w > 20)
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

    #[test]
    fn columns_align_and_only_a_terminal_cuts_the_last_one() {
        let mut table = Table::new(vec!["NAME", "READY", "MESSAGE"]);
        table.row(vec!["inc-1".into(), "True".into(), "all\ngood".into()]);
        table.row(vec!["inc-22-long".into(), "False".into(), "x".repeat(40)]);
        let mut out = Vec::new();
        table.print_to(&mut out, true, None).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            format!(
                "NAME          READY   MESSAGE\ninc-1         True    all good\ninc-22-long   False   {}\n",
                "x".repeat(40)
            )
        );
        let mut out = Vec::new();
        table.print_to(&mut out, false, Some(30)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "inc-1         True    all good\ninc-22-long   False   xxxxxxx…\n");
    }

    #[test]
    fn a_flexible_middle_column_is_cut_so_that_the_last_one_stays() {
        let mut table = Table::new(vec!["NAME", "MESSAGE", "AGE"]).flexible(1);
        table.row(vec!["inc-1".into(), "m".repeat(30), "5m".into()]);
        let mut out = Vec::new();
        table.print_to(&mut out, true, Some(30)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, "NAME    MESSAGE            AGE\ninc-1   mmmmmmmmmmmmmmm…   5m\n");
    }
}
