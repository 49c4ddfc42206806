//! The manifest directory as it is at a git revision (`remedy plan --base REF`, `--head REF`):
//! the repository that holds the directory, the directory's path in it, and its files at REF,
//! read with `git ls-tree` and `git cat-file --batch` into a temporary directory. Nothing in the
//! repository changes (no checkout, no index write); `.gitattributes` export rules do not apply
//! (the files are read as committed).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Why a revision of the manifest directory cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error("cannot read the manifest directory {path}: {source}")]
    ManifestDir { path: PathBuf, source: std::io::Error },
    #[error("the manifest directory {path} is not in a git repository (git: {message})")]
    NotARepository { path: PathBuf, message: String },
    #[error("the manifest directory {path} is outside the git repository {root}")]
    OutsideRepository { path: PathBuf, root: PathBuf },
    #[error("unknown revision {rev:?} in the git repository {root} (fetch it first: a shallow CI checkout lacks the base; use fetch-depth: 0)")]
    UnknownRevision { rev: String, root: PathBuf },
    #[error("cannot run git ({command}): {source}")]
    Spawn { command: String, source: std::io::Error },
    #[error("git {command} failed in {root}: {message}")]
    Git { command: String, root: PathBuf, message: String },
    #[error("cannot write the manifests of {rev} to {path}: {source}")]
    Write { rev: String, path: PathBuf, source: std::io::Error },
}

/// The manifest directory at one revision, in a temporary directory removed on drop.
#[derive(Debug)]
pub struct ManifestsAt {
    dir: tempfile::TempDir,
    /// `REF (abbreviated commit)`.
    pub label: String,
    /// Whether the manifest directory existed at that revision.
    pub existed: bool,
}

impl ManifestsAt {
    /// The manifest directory's files as they are at the revision (the same relative paths).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Where the manifest directory lives in its repository.
#[derive(Debug, Clone)]
pub struct Repository {
    pub root: PathBuf,
    /// The manifest directory relative to the root (empty: the root itself), `/`-separated.
    pub relative: String,
}

/// The repository holding `manifest_dir`, and the directory's path in it.
pub fn repository_of(manifest_dir: &Path) -> Result<Repository, RevisionError> {
    let path = manifest_dir
        .canonicalize()
        .map_err(|source| RevisionError::ManifestDir { path: manifest_dir.to_path_buf(), source })?;
    let top = git(&path, &["rev-parse", "--show-toplevel"]).map_err(|error| match error {
        RevisionError::Git { message, .. } => RevisionError::NotARepository { path: path.clone(), message },
        other => other,
    })?;
    let root = PathBuf::from(top.trim())
        .canonicalize()
        .map_err(|source| RevisionError::ManifestDir { path: PathBuf::from(top.trim()), source })?;
    let relative = path
        .strip_prefix(&root)
        .map_err(|_| RevisionError::OutsideRepository { path: path.clone(), root: root.clone() })?;
    let relative = relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>();
    Ok(Repository { root, relative: relative.join("/") })
}

impl Repository {
    /// The manifest directory's files at `rev`.
    pub fn manifests_at(&self, rev: &str) -> Result<ManifestsAt, RevisionError> {
        let commit = self.resolve(rev)?;
        let short = git(&self.root, &["rev-parse", "--short", &commit])?;
        let label = format!("{rev} ({})", short.trim());
        let dir = tempfile::Builder::new().prefix("remedy-plan-").tempdir().map_err(|source| RevisionError::Write {
            rev: rev.to_owned(),
            path: std::env::temp_dir(),
            source,
        })?;
        // `git ls-tree -r -z COMMIT -- DIR`: `mode type object\tpath` records, NUL-terminated.
        let mut args = vec!["ls-tree", "-r", "-z", "--full-tree", &commit, "--"];
        if !self.relative.is_empty() {
            args.push(&self.relative);
        }
        let listing = git(&self.root, &args)?;
        let prefix = if self.relative.is_empty() { String::new() } else { format!("{}/", self.relative) };
        let mut blobs = Vec::new();
        for record in listing.split('\0').filter(|r| !r.is_empty()) {
            let Some((meta, path)) = record.split_once('\t') else { continue };
            let mut fields = meta.split(' ');
            let (mode, kind, object) = (fields.next(), fields.next(), fields.next());
            // Regular files only: symbolic links (120000) and submodules are not manifests.
            if kind != Some("blob") || !matches!(mode, Some("100644" | "100755")) {
                continue;
            }
            let Some(inside) = path.strip_prefix(&prefix) else { continue };
            if let Some(object) = object {
                blobs.push((object.to_owned(), inside.to_owned()));
            }
        }
        let existed = !blobs.is_empty();
        let contents = self.cat_blobs(&blobs)?;
        for ((_, inside), content) in blobs.iter().zip(contents) {
            let target = dir.path().join(inside);
            let written =
                target.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&target, content));
            written.map_err(|source| RevisionError::Write { rev: rev.to_owned(), path: target.clone(), source })?;
        }
        Ok(ManifestsAt { dir, label, existed })
    }

    /// The commit `rev` names, or [`RevisionError::UnknownRevision`].
    fn resolve(&self, rev: &str) -> Result<String, RevisionError> {
        if rev.starts_with('-') {
            return Err(RevisionError::UnknownRevision { rev: rev.to_owned(), root: self.root.clone() });
        }
        let spec = format!("{rev}^{{commit}}");
        match git(&self.root, &["rev-parse", "--verify", "--quiet", &spec]) {
            Ok(commit) if !commit.trim().is_empty() => Ok(commit.trim().to_owned()),
            Ok(_) | Err(RevisionError::Git { .. }) => {
                Err(RevisionError::UnknownRevision { rev: rev.to_owned(), root: self.root.clone() })
            }
            Err(other) => Err(other),
        }
    }

    /// The blobs' contents, by one `git cat-file --batch` (the ids written from a thread, so that a
    /// full pipe cannot stall it).
    fn cat_blobs(&self, blobs: &[(String, String)]) -> Result<Vec<Vec<u8>>, RevisionError> {
        if blobs.is_empty() {
            return Ok(Vec::new());
        }
        let command = "cat-file --batch".to_owned();
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.root)
            .args(["cat-file", "--batch"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| RevisionError::Spawn { command: command.clone(), source })?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        let ids: Vec<String> = blobs.iter().map(|(id, _)| id.clone()).collect();
        let writer = std::thread::spawn(move || -> std::io::Result<()> {
            for id in ids {
                writeln!(stdin, "{id}")?;
            }
            Ok(())
        });
        let mut out = BufReader::new(child.stdout.take().expect("piped stdout"));
        let failed =
            |message: String| RevisionError::Git { command: command.clone(), root: self.root.clone(), message };
        let mut contents = Vec::with_capacity(blobs.len());
        for (id, path) in blobs {
            let mut header = String::new();
            out.read_line(&mut header).map_err(|e| failed(e.to_string()))?;
            // `<object> blob <size>`
            let size = header
                .trim_end()
                .strip_prefix(id.as_str())
                .and_then(|rest| rest.strip_prefix(" blob "))
                .and_then(|size| size.parse::<usize>().ok())
                .ok_or_else(|| failed(format!("unexpected answer for {path}: {:?}", header.trim_end())))?;
            let mut content = vec![0; size];
            out.read_exact(&mut content).map_err(|e| failed(e.to_string()))?;
            let mut newline = [0u8; 1];
            out.read_exact(&mut newline).map_err(|e| failed(e.to_string()))?;
            contents.push(content);
        }
        writer
            .join()
            .map_err(|_| failed("the writer thread panicked".to_owned()))?
            .map_err(|e| failed(e.to_string()))?;
        let status = child.wait().map_err(|e| failed(e.to_string()))?;
        if !status.success() {
            return Err(failed(format!("exited with {status}")));
        }
        Ok(contents)
    }
}

/// Runs `git -C dir ARGS`; its standard output, or its error message.
fn git(dir: &Path, args: &[&str]) -> Result<String, RevisionError> {
    let command = args.join(" ");
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RevisionError::Spawn { command: command.clone(), source })?;
    if !output.status.success() {
        let message = String::from_utf8_lossy(&output.stderr).trim().to_owned();
        let message = if message.is_empty() { format!("exited with {}", output.status) } else { message };
        return Err(RevisionError::Git { command, root: dir.to_path_buf(), message });
    }
    String::from_utf8(output.stdout).map_err(|_| RevisionError::Git {
        command,
        root: dir.to_path_buf(),
        message: "its output is not UTF-8".to_owned(),
    })
}
