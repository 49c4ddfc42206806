//! Watching the manifest directory: a file event is only a hint that something changed.
//!
//! Nothing an event says is trusted: not its path, not its kind beyond "something was written,
//! created, removed or renamed". After a quiet period (the debounce) the whole set is read and
//! validated again with [`manifest_dir::load_set`], and reported only when it differs from what was
//! reported last. So a burst of events — an editor's atomic save, a `git pull` or `git checkout`,
//! a git-sync style swap of a symlink to a new checkout — makes one reload, and a reload that
//! finds the same set (same names, generations and rejections) reports nothing.
//!
//! What is watched, re-resolved before every reload:
//! - the directory's parent, not recursively: the directory itself being created, removed,
//!   renamed or (when it is a symlink) swapped to a new target shows up there;
//! - the directory's resolved target (the symlink's target, or the directory itself), recursively,
//!   without following symlinks below it (the loader does not follow them either). Its watch is
//!   armed again on every reload, so after a swap the new target is watched, and the old one no
//!   longer is.
//!
//! The parent is not watched recursively: what else lies below it (siblings, the `.git` of a
//! repository the directory is part of, everything when the directory sits at `/`) cannot change
//! the set, and would cost an inotify watch per directory.
//!
//! Events are ignored when they concern neither the directory's entry in the parent (nor an
//! ancestor of it) nor something below the directory or its target; when every path they name
//! goes through a hidden entry below it (`.git/...`, editors' `.x.swp`: the loader skips hidden
//! entries, so they cannot change the set); and when they only report reading (which the reload
//! itself causes). An event without a path (inotify's queue overflowed) or a watch error counts
//! as a hint.
//!
//! Events get lost anyway (overflow, a watch that could not be armed in time), so the daemon
//! resyncs on a schedule too ([`crate::schedule`]) and can ask for a re-read with
//! [`ManifestWatcher::rescan`].

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use remedy_policies::load::{ManifestSet, Rejected};
use remedy_policies::manifest::{Generation, ManifestName};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::manifest_dir;

/// The quiet period the daemon waits for by default after the last event before reloading.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);

/// The longest a reload waits after the first event of a burst, however long events keep coming,
/// unless the debounce itself is longer (then twice the debounce).
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);

/// How long after a failed attempt to arm the watches they are armed again.
const REARM_RETRY: Duration = Duration::from_secs(5);

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The set as just read, which differs from the last one reported (the first event after
    /// [`ManifestWatcher::start`] is always the set as found then, or why it could not be read).
    Changed(ManifestSet),
    /// The set could not be read at all (e.g. the directory is missing); reported once per
    /// distinct reason. Keep running the last good set.
    LoadFailed(String),
}

/// Why the watcher could not start.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("the manifest watcher must be started inside a Tokio runtime")]
    NoRuntime,
    #[error("cannot watch {}: the manifest path must name an entry of a directory", .0.display())]
    NoParent(PathBuf),
    #[error("cannot watch {}: {source}", path.display())]
    Resolve {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
}

/// Turns a stream of hints into reloads: one after a quiet period following the last hint, or
/// at the latest a maximum wait after the first, so that a steady trickle still reloads.
///
/// Pure: the caller passes the time in, and sleeps until [`due`](Self::due) itself.
#[derive(Debug, Clone)]
pub struct Debouncer {
    quiet: Duration,
    max_wait: Duration,
    first: Option<Instant>,
    last: Option<Instant>,
}

impl Debouncer {
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Debouncer { quiet, max_wait, first: None, last: None }
    }

    /// Something may have changed at `now`.
    pub fn hint(&mut self, now: Instant) {
        self.first.get_or_insert(now);
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
    }

    /// When the pending hints are due to be acted on; `None` when there are none.
    pub fn due(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.quiet).min(first + self.max_wait))
    }

    /// Whether to reload at `now`: true (once) when hints are pending and due, which clears them.
    pub fn fire(&mut self, now: Instant) -> bool {
        match self.due() {
            Some(due) if now >= due => {
                self.first = None;
                self.last = None;
                true
            }
            _ => false,
        }
    }
}

/// Watches a manifest directory and reports its set whenever it changes; see the
/// [module documentation](self). Dropping it stops the watch (the receiver then yields `None`).
pub struct ManifestWatcher {
    dir: PathBuf,
    hints: Arc<Notify>,
    reloads: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl ManifestWatcher {
    /// Starts watching `dir` (which need not exist yet; its parent must) and reads the set at
    /// once: the first event received is that set, or why it could not be read. Bursts of events
    /// are acted on `debounce` after the last of them, or [`DEFAULT_MAX_WAIT`] after the first.
    ///
    /// Must be called inside a Tokio runtime, on which the watcher runs a task.
    pub fn start(
        dir: PathBuf,
        debounce: Duration,
    ) -> Result<(ManifestWatcher, mpsc::Receiver<WatchEvent>), WatchError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
        let dir = std::path::absolute(&dir).map_err(|source| WatchError::Resolve { path: dir.clone(), source })?;
        let initial = Scope::resolve(&dir)?;
        let scope = Arc::new(Mutex::new(initial.clone()));
        let hints = Arc::new(Notify::new());
        let handler = {
            let (scope, hints) = (Arc::clone(&scope), Arc::clone(&hints));
            move |event: notify::Result<Event>| {
                let relevant = match &event {
                    Ok(event) => scope.lock().unwrap_or_else(PoisonError::into_inner).is_relevant(event),
                    Err(error) => {
                        tracing::warn!(%error, "manifest directory watch error: re-reading the directory");
                        true
                    }
                };
                if relevant {
                    tracing::trace!(?event, "manifest directory event");
                    hints.notify_one();
                }
            }
        };
        // Symlinks below the target are not followed (nor loaded); the target itself is resolved
        // here, so that a swapped link is noticed.
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = RecommendedWatcher::new(handler, config)
            .map_err(|source| WatchError::Watch { path: dir.clone(), source })?;
        let mut watches = Watches { watcher, armed: Vec::new() };
        watches.arm(&initial).map_err(|(path, source)| WatchError::Watch { path, source })?;

        let (events, receiver) = mpsc::channel(8);
        let reloads = Arc::new(AtomicU64::new(0));
        let debounce = debounce.max(Duration::from_millis(1));
        let max_wait = DEFAULT_MAX_WAIT.max(debounce * 2);
        let run = Run {
            dir: dir.clone(),
            scope,
            watches: Some(watches),
            hints: Arc::clone(&hints),
            debouncer: Debouncer::new(debounce, max_wait),
            reloads: Arc::clone(&reloads),
            reported: None,
            rearm_at: None,
            arm_error: None,
            events,
        };
        let task = runtime.spawn(run.run());
        Ok((ManifestWatcher { dir, hints, reloads, task }, receiver))
    }

    /// The watched directory (made absolute).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Asks for a re-read (debounced like an event), e.g. on the resync schedule: it also arms
    /// the watches again, in case they were lost.
    pub fn rescan(&self) {
        self.hints.notify_one();
    }

    /// How many times the set has been read so far (reported or not).
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }
}

impl Drop for ManifestWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for ManifestWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManifestWatcher").field("dir", &self.dir).field("reloads", &self.reloads()).finish()
    }
}

/// Where the manifest directory is, as the watches see it: all paths resolved, as notify reports
/// events under the paths it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Scope {
    /// The resolved parent directory.
    parent: PathBuf,
    /// The directory's entry in the parent: the directory itself, or the symlink to it.
    entry: PathBuf,
    /// What `entry` resolves to, when it exists.
    target: Option<PathBuf>,
}

impl Scope {
    fn resolve(dir: &Path) -> Result<Scope, WatchError> {
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(WatchError::NoParent(dir.to_path_buf()));
        };
        let parent =
            parent.canonicalize().map_err(|source| WatchError::Resolve { path: parent.to_path_buf(), source })?;
        let entry = parent.join(name);
        let target = entry.canonicalize().ok();
        Ok(Scope { parent, entry, target })
    }

    /// Whether an event may concern the set.
    fn is_relevant(&self, event: &Event) -> bool {
        match event.kind {
            // Reading (the reload's own opens among them) changes nothing.
            EventKind::Access(kind) if kind != AccessKind::Close(AccessMode::Write) => return false,
            _ => {}
        }
        // An overflow, or an event that does not say where: anything may have changed.
        if event.paths.is_empty() || event.need_rescan() {
            return true;
        }
        event.paths.iter().any(|path| self.concerns(path))
    }

    fn concerns(&self, path: &Path) -> bool {
        // The directory's entry itself or an ancestor: created, removed, renamed, swapped.
        if self.entry.starts_with(path) {
            return true;
        }
        [Some(&self.entry), self.target.as_ref()].into_iter().flatten().any(|root| match path.strip_prefix(root) {
            Ok(below) => !below.components().any(|part| part.as_os_str().to_string_lossy().starts_with('.')),
            Err(_) => false,
        })
    }
}

/// The notify watcher and the paths it was told to watch.
struct Watches {
    watcher: RecommendedWatcher,
    armed: Vec<PathBuf>,
}

impl Watches {
    /// Drops every watch and sets them up again for `scope`. Always from scratch: a watch can die
    /// without a word (its directory replaced by another under the same name), notify keeps
    /// reporting a renamed directory's events under its old path, and a recursive watch set up
    /// while a tree was changing may have missed part of it.
    fn arm(&mut self, scope: &Scope) -> Result<(), (PathBuf, notify::Error)> {
        for path in self.armed.drain(..) {
            // Fails when notify already dropped the watch (its directory went away): fine.
            let _ = self.watcher.unwatch(&path);
        }
        let mut watch = |path: &Path, mode: RecursiveMode| match self.watcher.watch(path, mode) {
            Ok(()) => {
                self.armed.push(path.to_path_buf());
                Ok(())
            }
            Err(error) => Err((path.to_path_buf(), error)),
        };
        match &scope.target {
            // A link to the parent or above it: the recursive watch covers the parent too.
            Some(target) if scope.parent.starts_with(target) => watch(target, RecursiveMode::Recursive),
            Some(target) => {
                watch(&scope.parent, RecursiveMode::NonRecursive)?;
                watch(target, RecursiveMode::Recursive)
            }
            None => watch(&scope.parent, RecursiveMode::NonRecursive),
        }
    }
}

/// What a reload found, as far as the daemon cares: the manifests by name and generation (not by
/// file: moving a manifest changes nothing), and the rejections with their reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Loaded { manifests: Vec<(ManifestName, Generation)>, rejected: Vec<Rejected> },
    Failed(String),
}

impl Outcome {
    fn of(loaded: &Result<ManifestSet, String>) -> Outcome {
        match loaded {
            Ok(set) => Outcome::Loaded {
                manifests: set.manifests.iter().map(|m| (m.name.clone(), m.generation.clone())).collect(),
                rejected: set.rejected.clone(),
            },
            Err(why) => Outcome::Failed(why.clone()),
        }
    }
}

/// The watcher's task.
struct Run {
    dir: PathBuf,
    scope: Arc<Mutex<Scope>>,
    /// Lent to the blocking thread during a reload.
    watches: Option<Watches>,
    hints: Arc<Notify>,
    debouncer: Debouncer,
    reloads: Arc<AtomicU64>,
    reported: Option<Outcome>,
    /// When to arm the watches again after a failure.
    rearm_at: Option<Instant>,
    /// Why arming failed last time (logged when it changes).
    arm_error: Option<String>,
    events: mpsc::Sender<WatchEvent>,
}

impl Run {
    async fn run(mut self) {
        if !self.reload().await {
            return;
        }
        loop {
            let due = self.debouncer.due();
            let rearm_at = self.rearm_at;
            tokio::select! {
                () = self.hints.notified() => self.debouncer.hint(Instant::now()),
                () = sleep_until(due) => {
                    if self.debouncer.fire(Instant::now()) && !self.reload().await {
                        return;
                    }
                }
                () = sleep_until(rearm_at) => {
                    self.rearm_at = None;
                    self.debouncer.hint(Instant::now());
                }
                () = self.events.closed() => return,
            }
        }
    }

    /// Re-resolves the directory, arms the watches again, reads the set and reports it if it
    /// changed. False when nobody listens any more.
    async fn reload(&mut self) -> bool {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let Some(mut watches) = self.watches.take() else {
            return false;
        };
        let (dir, scope) = (self.dir.clone(), Arc::clone(&self.scope));
        // Resolving, arming and reading all touch the file system: off the runtime's threads.
        // Arming comes first, so that whatever changes after the read is seen by a watch.
        let blocking = tokio::task::spawn_blocking(move || {
            let armed = match Scope::resolve(&dir) {
                Ok(resolved) => {
                    let mut current = scope.lock().unwrap_or_else(PoisonError::into_inner);
                    if current.target != resolved.target {
                        tracing::info!(dir = %dir.display(), target = ?resolved.target, "manifest directory now resolves elsewhere");
                    }
                    *current = resolved.clone();
                    drop(current);
                    watches.arm(&resolved).map_err(|(path, error)| format!("cannot watch {}: {error}", path.display()))
                }
                Err(error) => Err(error.to_string()),
            };
            let loaded = manifest_dir::load_set(std::slice::from_ref(&dir)).map_err(|error| format!("{error:#}"));
            (watches, armed, loaded)
        });
        let (watches, armed, loaded) = match blocking.await {
            Ok(done) => done,
            Err(error) => match error.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(_) => return false,
            },
        };
        self.watches = Some(watches);
        match armed {
            Ok(()) => {
                if self.arm_error.take().is_some() {
                    tracing::info!(dir = %self.dir.display(), "manifest directory watched again");
                }
                self.rearm_at = None;
            }
            Err(why) => {
                if self.arm_error.as_ref() != Some(&why) {
                    tracing::warn!(dir = %self.dir.display(), "{why}; trying again every {REARM_RETRY:?}");
                }
                self.arm_error = Some(why);
                self.rearm_at = Some(Instant::now() + REARM_RETRY);
            }
        }
        let outcome = Outcome::of(&loaded);
        if self.reported.as_ref() == Some(&outcome) {
            tracing::debug!(dir = %self.dir.display(), "manifest set re-read: unchanged");
            return true;
        }
        self.reported = Some(outcome);
        let event = match loaded {
            Ok(set) => WatchEvent::Changed(set),
            Err(why) => WatchEvent::LoadFailed(why),
        };
        self.events.send(event).await.is_ok()
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
