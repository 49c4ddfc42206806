//! Reading a manifest directory from disk into a [`ManifestSet`].
//!
//! The walk is deterministic (sorted), follows the directory itself even when it is a symlink
//! (git-sync swaps a link to a new checkout), skips hidden entries such as `.git`, and never
//! follows symlinks below the root (a link out of the repository must not pull files in).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use remedy_policies::load::{self, FileLoad, ManifestSet};

/// Every manifest file below `root` (or `root` itself when it is a file), sorted.
pub fn manifest_files(root: &Path) -> Result<Vec<PathBuf>> {
    let metadata = fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if metadata.is_file() {
        return Ok(vec![root.to_path_buf()]);
    }
    let mut files = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let file_type = entry.file_type().with_context(|| format!("cannot stat {}", entry.path().display()))?;
            let path = entry.path();
            if file_type.is_dir() {
                pending.push(path);
            } else if file_type.is_file() && load::is_manifest_file(&name.to_string_lossy()) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// The name a file is reported under: relative to the root where possible.
fn display_name(root: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(root).ok().filter(|p| !p.as_os_str().is_empty());
    match relative {
        Some(p) => p.display().to_string(),
        None => file.display().to_string(),
    }
}

/// Reads and loads one file; an unreadable file becomes a rejected document, not an abort.
pub fn load_path(root: &Path, file: &Path) -> FileLoad {
    let name = display_name(root, file);
    match read_bounded(file, load::MAX_FILE_BYTES) {
        Ok(text) => load::load_file(&name, &text),
        Err(message) => FileLoad {
            file: name.clone(),
            manifests: Vec::new(),
            rejected: vec![load::Rejected {
                file: name.clone(),
                document: 0,
                name: None,
                diagnostics: vec![remedy_policies::Diagnostic {
                    file: name,
                    line: 0,
                    column: 0,
                    path: String::new(),
                    severity: remedy_policies::Severity::Error,
                    message,
                }],
            }],
        },
    }
}

/// Reads a UTF-8 text file of at most `limit` bytes, never holding more than `limit + 1` of them:
/// a file that grew after it was listed, or one that never ends (a device, a pipe), is refused as
/// surely as one that was too large from the start. Manifests and `remedy.yaml` are read with it.
pub fn read_bounded(file: &Path, limit: usize) -> Result<String, String> {
    let opened = fs::File::open(file).map_err(|e| format!("cannot read: {e}"))?;
    let mut bytes = Vec::new();
    opened.take(limit as u64 + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() > limit {
        let size = match fs::metadata(file) {
            Ok(metadata) if metadata.len() > limit as u64 => format!("{} bytes", metadata.len()),
            _ => format!("more than {limit} bytes"),
        };
        return Err(format!("file is {size}, more than the {limit} bytes remedy reads from one file"));
    }
    String::from_utf8(bytes).map_err(|e| format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()))
}

/// Loads every manifest below each root into one set.
pub fn load_set(roots: &[PathBuf]) -> Result<ManifestSet> {
    let mut loads = Vec::new();
    for root in roots {
        for file in manifest_files(root)? {
            loads.push(load_path(root, &file));
        }
    }
    Ok(load::assemble(loads))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_over_the_limit_is_refused_and_one_at_it_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("remedy.yaml");
        fs::write(&file, "a".repeat(65)).expect("write");
        let refused = read_bounded(&file, 64).expect_err("65 bytes over a limit of 64");
        assert_eq!(refused, "file is 65 bytes, more than the 64 bytes remedy reads from one file");
        fs::write(&file, "a".repeat(64)).expect("write");
        assert_eq!(read_bounded(&file, 64).expect("64 bytes").len(), 64);
    }

    #[test]
    fn a_file_that_never_ends_is_refused_after_the_limit() {
        // /dev/zero has no size to check first and never ends: only the bounded read stops it.
        let refused = read_bounded(Path::new("/dev/zero"), 1024 * 1024).expect_err("endless");
        assert!(refused.contains("more than 1048576 bytes"), "{refused}");
    }

    #[test]
    fn text_that_is_not_utf8_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("m.yaml");
        fs::write(&file, b"a: \xff\n").expect("write");
        assert_eq!(read_bounded(&file, 64), Err("not UTF-8 text (byte 3)".to_owned()));
    }
}
