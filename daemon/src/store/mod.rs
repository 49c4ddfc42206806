//! The daemon's store: history (the action center), per-manifest status, first-seen times and last
//! known content of manifests, and the journal of intents that makes actions crash-safe.
//!
//! One sled database in one directory, one tree per kind of value, values as JSON (readable with
//! any sled tool, and the same JSON the HTTP API returns). Every method blocks (sled does file I/O
//! and `flush` waits for fsync): async callers use `tokio::task::spawn_blocking`.
//!
//! # Opening
//! [`Store::open`] takes remedy's own lock on the directory first (a second daemon gets
//! [`StoreError::Locked`] before sled reads anything), then opens sled, then checks the format
//! version in the `meta` tree. A store written by a newer remedy is refused
//! ([`StoreError::NewerFormat`]). A store that cannot be read (sled reports corruption or panics
//! while recovering, the meta or a journal entry does not decode) is renamed to
//! `<path>.corrupt-<UTC time>` with a loud `tracing::error!`, and a fresh store is opened in its
//! place, so that the daemon does not crash-loop; [`OpenReport::moved_aside`] says so, for the
//! status page. The history in it is kept for an operator, not read again.
//!
//! # sled 0.34: what this module relies on and works around
//! - Writes are durable only after `flush` (sled's background flush runs every 500 ms): every
//!   method that records something flushes before it returns.
//! - A multi-tree transaction is recovered atomically after a crash (sled seals its writes as one
//!   batch in the log). The closure may run more than once on conflict: it touches only the
//!   transactional trees (sled's own `generate_id` blocks inside a transaction, and ids from it are
//!   not contiguous, so record and intent ids are counters in `meta`, bumped in the same
//!   transaction).
//! - Transactions cannot iterate: the chain head (last id and hash) is kept in `meta` so that an
//!   append reads one key.
//! - `Db::open` on a damaged directory may panic instead of returning `Error::Corruption`: the open
//!   is run under `catch_unwind` and a panic counts as corruption.
//! - sled reads a damaged stretch of its log as the end of the log and drops everything after it
//!   without an error (a wholly damaged log opens as an empty database); what is left is a
//!   consistent prefix that even the hash chain accepts. The `watermark` module notices.
//! - A `conf` file of garbage is reported as `Unsupported` ("created using a sled version earlier
//!   than 0.29"), not as corruption: mapped to corruption here.
//! - sled's own lock is taken after it has read its `conf` file, and a corrupt `conf` is reported
//!   before the lock is tried: without remedy's lock, a second process could move aside a store that
//!   is in use. remedy's lock (`remedy.lock`, flock) is taken first, and held as long as any clone
//!   of the [`Store`] lives.
//! - A lock outlives its holder for a moment (sled's threads close its file after the last handle
//!   is dropped; a child process between fork and exec holds copies of the descriptors): both locks
//!   are waited for a little ([`LOCK_PATIENCE`]) before the store counts as in use.
//! - The default page cache is 1 GiB: capped here, the store is small.

mod error;
mod history;
mod journal;
mod manifests;
mod outbox;
mod replica;
mod status;
mod watermark;

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use error::{ChainBroken, ChainFault, StoreError};
pub use history::{HistoryPage, HistoryQuery, VerifyReport};
pub use manifests::KnownManifest;
pub use outbox::{FedRecords, OutboxEntry};
pub use replica::{LogRefusal, StoreOp, WriteLog};

use crate::model::{HistoryRecord, Intent};

/// The value format this remedy writes (`meta` tree, key `format_version`).
pub const FORMAT_VERSION: u64 = 1;

/// The on-disk layout: tree names and `meta` keys. Public for tests and recovery tools that open
/// the sled directory directly; remedy itself goes through [`Store`].
pub mod layout {
    /// Small values about the store itself: format version, chain head, counters.
    pub const META: &str = "meta";
    /// History records by id (u64, big-endian): the hash chain.
    pub const HISTORY: &str = "history";
    /// remedy's own changes by identity (`<identity>\0<record id>`): `RecordedChange`s.
    pub const CHANGES_BY_IDENTITY: &str = "changes_by_identity";
    /// Intents not settled yet, by intent id (u64, big-endian).
    pub const JOURNAL: &str = "journal";
    /// `ManifestStatus` by manifest name.
    pub const STATUS: &str = "status";
    /// First-seen time by `<manifest name>\0<generation>`.
    pub const FIRST_SEEN: &str = "first_seen";
    /// Last known content by manifest name.
    pub const KNOWN_MANIFESTS: &str = "known_manifests";
    /// Notifications not yet delivered to every sink, by sequence number (u64, big-endian).
    pub const OUTBOX: &str = "outbox";
    /// Per sink (by name): the sequence number of the last outbox entry it is done with.
    pub const NOTIFY_CURSORS: &str = "notify_cursors";

    pub const FORMAT_VERSION_KEY: &str = "format_version";
    pub const HISTORY_HEAD_KEY: &str = "history_head";
    pub const NEXT_INTENT_ID_KEY: &str = "next_intent_id";
    /// The denied, held and blocked actions already recorded while they last (see
    /// `Store::open_notices`).
    pub const OPEN_NOTICES_KEY: &str = "open_notices";
    /// The Graph delta link the next round of `/users/delta` starts from.
    pub const ENTRA_DELTA_LINK_KEY: &str = "entra_delta_link";
    /// The held plans approved and not yet done with (see `Store::approvals`).
    pub const APPROVALS_KEY: &str = "approvals";
    /// The newest history record whose notifications are in the outbox (absent: notifications
    /// are not configured).
    pub const OUTBOX_FED_THROUGH_KEY: &str = "outbox_fed_through";
    /// The next outbox sequence number.
    pub const OUTBOX_NEXT_SEQ_KEY: &str = "outbox_next_seq";
    /// The last entry of the shared write log applied to this store (several instances).
    pub const REPLICA_APPLIED_KEY: &str = "replica_applied";
    /// The log entry being applied: present only between its start and its end.
    pub const REPLICA_APPLYING_KEY: &str = "replica_applying";

    /// remedy's lock file inside the store directory.
    pub const LOCK_FILE: &str = "remedy.lock";
    /// The newest history id and intent id known durable (see `store::watermark`).
    pub const WATERMARK_FILE: &str = "remedy.watermark";

    /// Every tree remedy writes.
    pub const TREES: [&str; 9] =
        [META, HISTORY, CHANGES_BY_IDENTITY, JOURNAL, STATUS, FIRST_SEEN, KNOWN_MANIFESTS, OUTBOX, NOTIFY_CURSORS];
}

/// sled's page cache: the store holds thousands of small records, not gigabytes.
const CACHE_CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

/// The most values one sled transaction or batch writes; the store's methods that take many values
/// write them in chunks of this size, each chunk atomic on its own (`append_all` is one
/// transaction: its caller chunks it).
///
/// sled 0.34 applies a transaction's (or a batch's) writes under one epoch guard, and what they
/// replace (tree nodes, page-cache links, log buffers) is freed only once that guard is dropped:
/// one transaction holds everything it replaced until it commits. Journaling and settling 10,000
/// actions peaked at 155 MiB of RSS as one transaction each, at 36 MiB in chunks of this size
/// (`cargo bench -p remedy --bench store_memory`, 2026-11-30, `docs/performance.md`).
pub const WRITE_CHUNK: usize = 256;

/// The open store. Cloning is cheap (sled's handles are reference-counted) and every clone shares
/// the one lock on the directory.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    meta: sled::Tree,
    history: sled::Tree,
    changes: sled::Tree,
    journal: sled::Tree,
    status: sled::Tree,
    first_seen: sled::Tree,
    known: sled::Tree,
    outbox: sled::Tree,
    cursors: sled::Tree,
    path: PathBuf,
    watermark: watermark::Shared,
    replication: Option<replica::Replication>,
    _lock: Arc<DirLock>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish_non_exhaustive()
    }
}

/// What [`Store::open`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Where an unreadable store was moved to before a fresh one was made: show it in the status.
    pub moved_aside: Option<PathBuf>,
    /// The store did not exist (or was just moved aside) and was created empty.
    pub created: bool,
    /// Intents journaled before a crash and not settled: the controller must re-check them (see
    /// the `journal` protocol) before it plans.
    pub unsettled_intents: usize,
}

/// Why one attempt to open failed: corruption is handled by moving the store aside.
enum OpenFailure {
    Corrupt { lock: DirLock, detail: String },
    Error(StoreError),
}

impl From<StoreError> for OpenFailure {
    fn from(error: StoreError) -> Self {
        OpenFailure::Error(error)
    }
}

impl Store {
    /// Opens (or creates) the store in directory `path`. See the module documentation.
    pub fn open(path: impl AsRef<Path>) -> Result<(Store, OpenReport), StoreError> {
        let path = path.as_ref().to_path_buf();
        match Store::open_once(&path) {
            Ok((store, created)) => {
                let unsettled_intents = store.journal.len();
                Ok((store, OpenReport { moved_aside: None, created, unsettled_intents }))
            }
            Err(OpenFailure::Error(error)) => Err(error),
            Err(OpenFailure::Corrupt { lock, detail }) => {
                let moved_to = move_aside(&path)?;
                tracing::error!(
                    store = %path.display(),
                    moved_to = %moved_to.display(),
                    problem = %detail,
                    "THE STORE IS CORRUPT: it was moved aside and a fresh, EMPTY store is used; history, status \
                     and unsettled intents are in the moved directory (restore a backup or inspect it)"
                );
                drop(lock);
                match Store::open_once(&path) {
                    Ok((store, created)) => {
                        Ok((store, OpenReport { moved_aside: Some(moved_to), created, unsettled_intents: 0 }))
                    }
                    Err(OpenFailure::Error(error)) => Err(error),
                    Err(OpenFailure::Corrupt { detail, .. }) => Err(StoreError::Corrupt { path, detail }),
                }
            }
        }
    }

    fn open_once(path: &Path) -> Result<(Store, bool), OpenFailure> {
        std::fs::create_dir_all(path).map_err(|source| StoreError::Io {
            what: "cannot create the store directory",
            path: path.to_path_buf(),
            source,
        })?;
        let lock = DirLock::acquire(path)?;
        let db = match open_sled_retrying_its_lock(path) {
            Ok(db) => db,
            Err(SledOpen::Corrupt(detail)) => return Err(OpenFailure::Corrupt { lock, detail }),
            Err(SledOpen::Locked) => return Err(StoreError::Locked { path: path.to_path_buf() }.into()),
            Err(SledOpen::Failed(source)) => return Err(StoreError::Open { path: path.to_path_buf(), source }.into()),
        };
        let tree = |name: &str| db.open_tree(name).map_err(StoreError::Db);
        let store = Store {
            meta: tree(layout::META)?,
            history: tree(layout::HISTORY)?,
            changes: tree(layout::CHANGES_BY_IDENTITY)?,
            journal: tree(layout::JOURNAL)?,
            status: tree(layout::STATUS)?,
            first_seen: tree(layout::FIRST_SEEN)?,
            known: tree(layout::KNOWN_MANIFESTS)?,
            outbox: tree(layout::OUTBOX)?,
            cursors: tree(layout::NOTIFY_CURSORS)?,
            path: path.to_path_buf(),
            db,
            watermark: Default::default(),
            replication: None,
            _lock: Arc::new(lock),
        };
        match store.check_format() {
            Ok(created) => Ok((store, created)),
            Err(error) => {
                let corrupt = match &error {
                    StoreError::Corrupt { detail, .. } => Some(detail.clone()),
                    StoreError::Decode { tree, key, source } => {
                        Some(format!("tree {tree:?}, key {key}: cannot decode: {source}"))
                    }
                    _ => None,
                };
                // Close sled (every tree handle) before the directory is moved; keep the lock.
                let lock = Arc::clone(&store._lock);
                drop(store);
                match (corrupt, Arc::try_unwrap(lock)) {
                    (Some(detail), Ok(lock)) => Err(OpenFailure::Corrupt { lock, detail }),
                    _ => Err(OpenFailure::Error(error)),
                }
            }
        }
    }

    /// Reads (or, in an empty store, writes) the format version, checks sled kept everything the
    /// watermark says was written, and decodes the values that must be readable for the daemon to
    /// start: the chain head, the newest history record, the journal. Returns whether the store was
    /// created.
    fn check_format(&self) -> Result<bool, StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt { path: self.path.clone(), detail };
        let marker = watermark::read(&self.path);
        let Some(bytes) = self.meta.get(layout::FORMAT_VERSION_KEY)? else {
            if !self.meta.is_empty() || !self.data_trees().iter().all(|tree| tree.is_empty()) {
                return Err(corrupt("the meta tree has no format_version but the store holds data".to_owned()));
            }
            if !matches!(marker, watermark::Marker::Absent) {
                return Err(corrupt(format!(
                    "sled found no data, but remedy had written to this store ({} exists): sled's log is damaged \
                     and was read as empty",
                    layout::WATERMARK_FILE
                )));
            }
            self.meta.insert(layout::FORMAT_VERSION_KEY, encode(layout::META, &FORMAT_VERSION)?)?;
            self.db.flush()?;
            let initial = watermark::Watermark { history_last_id: 0, next_intent_id: 1 };
            watermark::write(&self.path, initial, true)?;
            *self.watermark.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = initial;
            return Ok(true);
        };
        let version: u64 = serde_json::from_slice(&bytes).map_err(|e| {
            corrupt(format!("meta format_version {:?} is unreadable: {e}", String::from_utf8_lossy(&bytes)))
        })?;
        if version > FORMAT_VERSION {
            return Err(StoreError::NewerFormat { path: self.path.clone(), found: version, supported: FORMAT_VERSION });
        }
        if version == 0 {
            return Err(corrupt("meta format_version is 0, which no remedy writes".to_owned()));
        }
        let history_last_id = self.history_head()?.map_or(0, |head| head.last_id.0);
        let next_intent_id = self.next_intent_id()?.0;
        match marker {
            watermark::Marker::Known(known) if known.history_last_id > history_last_id => {
                return Err(corrupt(format!(
                    "sled recovered the history up to record {history_last_id}, but record {} had been written: \
                     sled's log is damaged and the newest records were lost",
                    known.history_last_id
                )));
            }
            watermark::Marker::Known(known) if known.next_intent_id > next_intent_id => {
                return Err(corrupt(format!(
                    "sled recovered intents up to {}, but intent {} had been journaled: sled's log is damaged \
                     and the newest writes were lost",
                    next_intent_id.saturating_sub(1),
                    known.next_intent_id - 1
                )));
            }
            watermark::Marker::Known(_) => {}
            watermark::Marker::Absent => {
                tracing::warn!(store = %self.path.display(), "the store had no watermark file: it is written anew");
            }
            watermark::Marker::Unreadable(problem) => {
                tracing::warn!(store = %self.path.display(), %problem, "the store's watermark is unreadable: it is written anew");
            }
        }
        self.raise_watermark(Some(history_last_id), Some(next_intent_id));
        if let Some((key, value)) = self.history.last()? {
            decode::<HistoryRecord>(layout::HISTORY, &show_id_key(&key), &value)?;
        }
        for entry in self.journal.iter() {
            let (key, value) = entry?;
            decode::<Intent>(layout::JOURNAL, &show_id_key(&key), &value)?;
        }
        Ok(false)
    }

    /// The keys of the denied, held and blocked actions recorded while they last: each is
    /// recorded once when it begins, also across a restart.
    pub fn open_notices(&self) -> Result<BTreeSet<String>, StoreError> {
        match self.meta.get(layout::OPEN_NOTICES_KEY)? {
            Some(bytes) => decode(layout::META, layout::OPEN_NOTICES_KEY, &bytes),
            None => Ok(BTreeSet::new()),
        }
    }

    /// Replaces the set of [`Store::open_notices`] (durably).
    pub fn set_open_notices(&self, keys: &BTreeSet<String>) -> Result<(), StoreError> {
        self.logged(|| StoreOp::SetOpenNotices { keys: keys.clone() }, |store| store.set_open_notices_applied(keys))
    }

    fn set_open_notices_applied(&self, keys: &BTreeSet<String>) -> Result<(), StoreError> {
        self.meta.insert(layout::OPEN_NOTICES_KEY, encode(layout::META, keys)?)?;
        self.db.flush()?;
        Ok(())
    }

    /// The `@odata.deltaLink` the next delta round starts from, if one was kept.
    pub fn entra_delta_link(&self) -> Result<Option<String>, StoreError> {
        self.meta
            .get(layout::ENTRA_DELTA_LINK_KEY)?
            .map(|bytes| decode(layout::META, layout::ENTRA_DELTA_LINK_KEY, &bytes))
            .transpose()
    }

    /// Keeps the delta link (`None`: forgets it, after a token expired). Local to this store, not
    /// replicated: it is where this instance's change watcher is, not part of the history.
    pub fn set_entra_delta_link(&self, link: Option<&str>) -> Result<(), StoreError> {
        match link {
            Some(link) => self.meta.insert(layout::ENTRA_DELTA_LINK_KEY, encode(layout::META, &link)?)?,
            None => self.meta.remove(layout::ENTRA_DELTA_LINK_KEY)?,
        };
        Ok(())
    }

    /// Every tree but `meta` (in `layout::TREES` order).
    fn data_trees(&self) -> [&sled::Tree; 8] {
        [
            &self.history,
            &self.changes,
            &self.journal,
            &self.status,
            &self.first_seen,
            &self.known,
            &self.outbox,
            &self.cursors,
        ]
    }

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes everything written so far durable (fsync). The recording methods do this themselves.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

enum SledOpen {
    Corrupt(String),
    Locked,
    Failed(sled::Error),
}

/// How long a lock (remedy's, then sled's) is waited for before the store counts as in use. A lock
/// outlives its holder for a moment: a process that is exiting (a restart that overlaps), a child
/// process between `fork` and `exec` (it holds copies of the parent's descriptors, and with them
/// the locks), sled's background threads closing its file after the last `Db` handle was dropped.
const LOCK_PATIENCE: Duration = Duration::from_secs(2);

/// Opens sled, waiting a little for its lock (see [`LOCK_PATIENCE`]); remedy's lock is held, so
/// no other remedy process is in the directory.
fn open_sled_retrying_its_lock(path: &Path) -> Result<sled::Db, SledOpen> {
    let deadline = Instant::now() + LOCK_PATIENCE;
    let mut pause = Duration::from_millis(5);
    loop {
        match open_sled(path) {
            Err(SledOpen::Locked) if Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// The sled settings remedy opens its store with. Public for tools that open a sled directory
/// the way remedy does (the `store_memory` bench's baseline).
pub fn sled_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(CACHE_CAPACITY_BYTES)
        .mode(sled::Mode::LowSpace)
        .flush_every_ms(Some(500))
}

fn open_sled(path: &Path) -> Result<sled::Db, SledOpen> {
    let config = sled_config(path);
    match catch_unwind(AssertUnwindSafe(|| config.open())) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(error @ (sled::Error::Corruption { .. } | sled::Error::ReportableBug(_)))) => {
            Err(SledOpen::Corrupt(format!("sled cannot recover it: {error}")))
        }
        // sled's own lock, should another program hold it (remedy's lock is taken first).
        Ok(Err(sled::Error::Io(error))) if error.to_string().contains("could not acquire lock") => {
            Err(SledOpen::Locked)
        }
        // A `conf` that is not UTF-8 (garbage: remedy never used a sled older than 0.29).
        Ok(Err(sled::Error::Unsupported(message))) if message.contains("earlier than 0.29") => {
            Err(SledOpen::Corrupt(format!("sled cannot read its conf file: {message}")))
        }
        // A data file cut short or full of garbage reads as an unexpected end of file.
        Ok(Err(sled::Error::Io(error)))
            if matches!(error.kind(), std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData) =>
        {
            Err(SledOpen::Corrupt(format!("sled cannot read it: {error}")))
        }
        Ok(Err(error)) => Err(SledOpen::Failed(error)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(SledOpen::Corrupt(format!("sled panicked while recovering it: {message}")))
        }
    }
}

/// remedy's exclusive lock on a store directory (flock on `remedy.lock`), released when dropped
/// (or when the process dies, however it dies).
struct DirLock {
    _file: File,
}

impl DirLock {
    fn acquire(dir: &Path) -> Result<DirLock, StoreError> {
        use fs2::FileExt;
        let lock_path = dir.join(layout::LOCK_FILE);
        let io = |what, source| StoreError::Io { what, path: lock_path.clone(), source };
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("cannot open the store's lock file", e))?;
        let contended = fs2::lock_contended_error();
        let deadline = Instant::now() + LOCK_PATIENCE;
        let mut pause = Duration::from_millis(5);
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => break,
                Err(error) if error.kind() == contended.kind() || error.raw_os_error() == contended.raw_os_error() => {
                    if Instant::now() < deadline {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(200));
                        continue;
                    }
                    let mut holder = String::new();
                    let _ = file.read_to_string(&mut holder);
                    tracing::error!(
                        store = %dir.display(),
                        holder_pid = %holder.trim(),
                        "the store is locked by another process"
                    );
                    return Err(StoreError::Locked { path: dir.to_path_buf() });
                }
                Err(error) => return Err(io("cannot lock the store's lock file", error)),
            }
        }
        // The holder's pid, for an operator who wonders which process has it.
        file.set_len(0).map_err(|e| io("cannot write the store's lock file", e))?;
        write!(file, "{}", std::process::id()).map_err(|e| io("cannot write the store's lock file", e))?;
        Ok(DirLock { _file: file })
    }
}

/// Renames the store directory to `<path>.corrupt-<UTC time>` (a suffix added if that exists).
fn move_aside(path: &Path) -> Result<PathBuf, StoreError> {
    let stamp = Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    let mut target = sibling(path, &format!(".corrupt-{stamp}"));
    let mut n = 1;
    while target.exists() {
        target = sibling(path, &format!(".corrupt-{stamp}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|source| StoreError::Io {
        what: "cannot move the corrupt store aside",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(target)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn encode<T: Serialize + ?Sized>(tree: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode { tree, source })
}

fn decode<T: DeserializeOwned>(tree: &'static str, key: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { tree, key: key.to_owned(), source })
}

/// A u64 id as a key: big-endian, so that sled's byte order is numeric order.
fn id_key(id: u64) -> [u8; 8] {
    id.to_be_bytes()
}

fn key_id(key: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(key).ok().map(u64::from_be_bytes)
}

fn show_id_key(key: &[u8]) -> String {
    key_id(key).map_or_else(|| format!("{key:?}"), |id| id.to_string())
}

/// Maps a finished sled transaction to the store's error.
fn transaction_result<T>(result: sled::transaction::TransactionResult<T, StoreError>) -> Result<T, StoreError> {
    result.map_err(|error| match error {
        sled::transaction::TransactionError::Abort(error) => error,
        sled::transaction::TransactionError::Storage(error) => StoreError::Db(error),
    })
}
