//! Secrets read from files (the AD action account's password, Entra's client secret).
//!
//! A [`Secret`] never prints itself: `Debug` and `Display` show `[redacted]`, so it can sit in
//! structs that derive `Debug` and in error chains without leaking. Its memory is wiped on drop.
//! The only way to the value is [`Secret::expose`], which callers use at the one place the value
//! goes on the wire.

use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// A secret value; see the module documentation.
#[derive(Clone)]
pub struct Secret(Zeroizing<String>);

/// Why a secret file could not be used. Never contains the file's content.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("secret file {} is not UTF-8 text", path.display())]
    NotText { path: PathBuf },
}

impl Secret {
    /// Wraps a value that is already in memory (tests, or a value from another secret store).
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// Reads a secret file. One trailing line break (`\n` or `\r\n`) is removed, because editors
    /// add one; any other whitespace is part of the secret. A file readable by group or others
    /// is used, with a warning.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let bytes =
            Zeroizing::new(std::fs::read(path).map_err(|source| SecretError::Read { path: path.to_owned(), source })?);
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretError::NotText { path: path.to_owned() })?;
        let text = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(text);
        if text.is_empty() {
            return Err(SecretError::Empty { path: path.to_owned() });
        }
        warn_if_readable_by_others(path);
        Ok(Secret(Zeroizing::new(text.to_owned())))
    }

    /// The secret itself, for the one call that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn warn_if_readable_by_others(path: &Path) {
    if let Some(mode) = readable_by_others(path) {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "secret file is readable by group or others; chmod 600 it");
    }
}

/// The file's permission bits (`0o644`, ...) when group or others may do anything with it; `None`
/// when only its owner may (or on a system without Unix modes, or when it cannot be read).
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> Option<u32> {
    None
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_value() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(&secret)), "Some([redacted])");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn reads_a_file_without_its_final_line_break() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        for (content, expected) in
            [("s3cret", "s3cret"), ("s3cret\n", "s3cret"), ("s3cret\r\n", "s3cret"), (" s3 \n\n", " s3 \n")]
        {
            std::fs::write(&path, content).unwrap();
            assert_eq!(Secret::from_file(&path).unwrap().expose(), expected, "{content:?}");
        }
    }

    #[test]
    fn errors_name_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(Secret::from_file(&path), Err(SecretError::Empty { .. })));
        std::fs::write(&path, [0xff, 0xfe, b'x']).unwrap();
        let error = Secret::from_file(&path).unwrap_err();
        assert!(error.to_string().contains("not UTF-8"), "{error}");
        let missing = Secret::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(missing.to_string().contains("missing"), "{missing}");
    }
}
