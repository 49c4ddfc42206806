//! The manifest directory watcher on real directories with real notify (atomic saves, bursts, git
//! checkouts, symlink swaps, deletions), its debouncer and the resync schedule on tokio's paused
//! clock.
//!
//! "Exactly one" is proven by waiting, after the expected event, twice the debounce and a second
//! more for a second event that must not come.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, Datelike, FixedOffset, TimeZone, Utc, Weekday};
use remedy::schedule::ResyncSchedule;
use remedy::watch::{Debouncer, ManifestWatcher, WatchEvent};
use remedy_policies::load::ManifestSet;
use tokio::sync::mpsc::Receiver;
use tokio::time::{advance, Instant};

use crate::support::git;

const DEBOUNCE: Duration = Duration::from_millis(250);
/// Long enough for a second reload to have happened and been reported, were there one.
const QUIET: Duration = Duration::from_millis(2 * 250 + 1000);
/// How long an expected event may take (generous: the machine is shared with other builds).
const EXPECTED_WITHIN: Duration = Duration::from_secs(8);

fn manifest(name: &str, reason: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"{reason}\"\n  \
         target:\n    samAccountName: {name}\n  activeDirectory:\n    disabled: true\n"
    )
}

fn write_manifest(dir: &Path, file: &str, name: &str, reason: &str) {
    fs::write(dir.join(file), manifest(name, reason)).expect("write a manifest");
}

/// `(name, reason)` of every manifest of a set, in the set's order (by name).
fn contents(set: &ManifestSet) -> Vec<(String, String)> {
    set.manifests.iter().map(|m| (m.name.as_str().to_owned(), m.spec.reason.clone())).collect()
}

fn pairs(expected: &[(&str, &str)]) -> Vec<(String, String)> {
    expected.iter().map(|(name, reason)| ((*name).to_owned(), (*reason).to_owned())).collect()
}

async fn next_event(events: &mut Receiver<WatchEvent>) -> WatchEvent {
    match tokio::time::timeout(EXPECTED_WITHIN, events.recv()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the watcher stopped"),
        Err(_) => panic!("no event within {EXPECTED_WITHIN:?}"),
    }
}

async fn next_change(events: &mut Receiver<WatchEvent>) -> ManifestSet {
    match next_event(events).await {
        WatchEvent::Changed(set) => set,
        other => panic!("expected a changed set, got {other:?}"),
    }
}

async fn assert_quiet(events: &mut Receiver<WatchEvent>) {
    if let Ok(event) = tokio::time::timeout(QUIET, events.recv()).await {
        panic!("expected no further event, got {event:?}");
    }
}

/// Starts a watcher on `dir` and takes its first event, the set as found.
async fn watch(dir: &Path) -> (ManifestWatcher, Receiver<WatchEvent>, ManifestSet) {
    let (watcher, mut events) = ManifestWatcher::start(dir.to_path_buf(), DEBOUNCE).expect("start the watcher");
    let initial = next_change(&mut events).await;
    (watcher, events, initial)
}

/// Points the symlink `link` at `target` atomically, as git-sync does: a new link beside it,
/// renamed over it (`ln -s target tmp && mv -T tmp link`).
fn swap_link(link: &Path, target: &Path) {
    let tmp = link.with_file_name("tmp-link");
    std::os::unix::fs::symlink(target, &tmp).expect("make the new link");
    fs::rename(&tmp, link).expect("rename the new link over the old");
}

#[tokio::test]
async fn an_atomic_save_reports_one_change_with_the_new_generation() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    write_manifest(&dir, "x.yaml", "inc-1", "first");
    let (_watcher, mut events, initial) = watch(&dir).await;
    assert_eq!(contents(&initial), pairs(&[("inc-1", "first")]));

    fs::write(dir.join("x.yaml.tmp"), manifest("inc-1", "second")).unwrap();
    fs::rename(dir.join("x.yaml.tmp"), dir.join("x.yaml")).unwrap();

    let changed = next_change(&mut events).await;
    assert_eq!(contents(&changed), pairs(&[("inc-1", "second")]));
    assert_ne!(changed.manifests[0].generation, initial.manifests[0].generation);
    assert_quiet(&mut events).await;
}

#[tokio::test]
async fn a_burst_of_fifty_writes_reports_one_change() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    let (_watcher, mut events, initial) = watch(&dir).await;
    assert!(initial.manifests.is_empty() && initial.rejected.is_empty());

    // Spread over ~100 ms (well within the debounce), the watcher's task running meanwhile.
    for n in 0..50 {
        write_manifest(&dir, &format!("m-{n:02}.yaml"), &format!("inc-{n:02}"), "burst");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }

    let changed = next_change(&mut events).await;
    assert_eq!(changed.manifests.len(), 50, "{:?}", changed.rejected);
    assert_quiet(&mut events).await;
}

#[tokio::test]
async fn a_git_checkout_reports_one_change_and_git_churn_none() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("manifests");
    fs::create_dir(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    for name in ["a", "b", "c", "d"] {
        write_manifest(&repo, &format!("{name}.yaml"), &format!("inc-{name}"), "v1");
    }
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "v1"]);
    let v1 = git(&repo, &["rev-parse", "HEAD"]);
    for name in ["a", "b", "c"] {
        write_manifest(&repo, &format!("{name}.yaml"), &format!("inc-{name}"), "v2");
    }
    git(&repo, &["commit", "-q", "-a", "-m", "v2"]);
    let (watcher, mut events, initial) = watch(&repo).await;
    assert_eq!(contents(&initial), pairs(&[("inc-a", "v2"), ("inc-b", "v2"), ("inc-c", "v2"), ("inc-d", "v1")]));

    git(&repo, &["checkout", "-q", &v1]);

    let changed = next_change(&mut events).await;
    assert_eq!(contents(&changed), pairs(&[("inc-a", "v1"), ("inc-b", "v1"), ("inc-c", "v1"), ("inc-d", "v1")]));
    assert_quiet(&mut events).await;

    // Only .git changes: not even a reload.
    let reloads = watcher.reloads();
    git(&repo, &["tag", "checked-out"]);
    git(&repo, &["branch", "elsewhere"]);
    git(&repo, &["commit", "-q", "--allow-empty", "-m", "empty"]);
    git(&repo, &["gc", "-q"]);
    assert_quiet(&mut events).await;
    assert_eq!(watcher.reloads(), reloads);
}

/// A symlink swapped to a new target (layout: where the targets live, relative to the root).
async fn symlink_swap(targets: &str) {
    let root = tempfile::tempdir().expect("make a temporary directory");
    let parent = root.path().join("sync");
    let (rev1, rev2) = (root.path().join(targets).join("rev-1"), root.path().join(targets).join("rev-2"));
    for dir in [&parent, &rev1, &rev2] {
        fs::create_dir_all(dir).expect("make a directory");
    }
    write_manifest(&rev1, "a.yaml", "inc-a", "rev-1");
    write_manifest(&rev2, "a.yaml", "inc-a", "rev-2");
    write_manifest(&rev2, "b.yaml", "inc-b", "rev-2");
    let link = parent.join("manifests");
    std::os::unix::fs::symlink(&rev1, &link).expect("make the link");
    let (watcher, mut events, initial) = watch(&link).await;
    assert_eq!(contents(&initial), pairs(&[("inc-a", "rev-1")]));

    swap_link(&link, &rev2);
    let changed = next_change(&mut events).await;
    assert_eq!(contents(&changed), pairs(&[("inc-a", "rev-2"), ("inc-b", "rev-2")]));
    assert_quiet(&mut events).await;

    // The new target is watched...
    write_manifest(&rev2, "c.yaml", "inc-c", "rev-2 edited");
    let changed = next_change(&mut events).await;
    assert_eq!(contents(&changed), pairs(&[("inc-a", "rev-2"), ("inc-b", "rev-2"), ("inc-c", "rev-2 edited")]));
    assert_quiet(&mut events).await;

    // ...and the old one no longer is, nor is its removal (git-sync cleans old worktrees up).
    let reloads = watcher.reloads();
    write_manifest(&rev1, "a.yaml", "inc-a", "rev-1 edited");
    fs::remove_dir_all(&rev1).expect("remove the old target");
    assert_quiet(&mut events).await;
    assert_eq!(watcher.reloads(), reloads);
}

#[tokio::test]
async fn a_symlink_swap_to_a_sibling_reports_the_new_target_and_watches_it() {
    symlink_swap("sync").await;
}

#[tokio::test]
async fn a_symlink_swap_to_a_hidden_worktree_reports_the_new_target_and_watches_it() {
    // git-sync v4: root/.worktrees/<hash>, root/<link> -> .worktrees/<hash>.
    symlink_swap("sync/.worktrees").await;
}

#[tokio::test]
async fn a_symlink_swap_to_another_tree_reports_the_new_target_and_watches_it() {
    symlink_swap("elsewhere").await;
}

#[tokio::test]
async fn an_edit_that_changes_nothing_reports_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    write_manifest(&dir, "x.yaml", "inc-1", "same");
    let (watcher, mut events, _) = watch(&dir).await;
    let reloads = watcher.reloads();

    // touch, a rewrite of the same bytes, and a rename (a manifest's generation ignores its file).
    fs::File::options().append(true).open(dir.join("x.yaml")).unwrap().set_modified(SystemTime::now()).unwrap();
    write_manifest(&dir, "x.yaml", "inc-1", "same");
    fs::rename(dir.join("x.yaml"), dir.join("y.yaml")).unwrap();

    assert_quiet(&mut events).await;
    assert!(watcher.reloads() > reloads, "the events were seen, and the set found unchanged");

    drop(watcher);
    assert!(events.recv().await.is_none(), "dropping the watcher stops it");
}

#[tokio::test]
async fn deleting_the_directory_reports_a_failed_load_and_its_return_a_change() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    fs::create_dir(&dir).unwrap();
    write_manifest(&dir, "x.yaml", "inc-1", "there");
    let (_watcher, mut events, _) = watch(&dir).await;

    fs::remove_dir_all(&dir).unwrap();
    match next_event(&mut events).await {
        WatchEvent::LoadFailed(why) => assert!(why.contains(&dir.display().to_string()), "{why}"),
        other => panic!("expected a failed load, got {other:?}"),
    }
    assert_quiet(&mut events).await;

    fs::create_dir(&dir).unwrap();
    write_manifest(&dir, "x.yaml", "inc-1", "back");
    let changed = next_change(&mut events).await;
    assert_eq!(contents(&changed), pairs(&[("inc-1", "back")]));

    // The new directory is watched too.
    write_manifest(&dir, "y.yaml", "inc-2", "new");
    let changed = next_change(&mut events).await;
    assert_eq!(contents(&changed), pairs(&[("inc-1", "back"), ("inc-2", "new")]));
}

#[tokio::test]
async fn a_directory_that_does_not_exist_yet_is_a_failed_load_until_it_does() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    let (_watcher, mut events) = ManifestWatcher::start(dir.clone(), DEBOUNCE).unwrap();
    assert!(matches!(next_event(&mut events).await, WatchEvent::LoadFailed(_)));

    let staging = root.path().join("staging");
    fs::create_dir(&staging).unwrap();
    write_manifest(&staging, "x.yaml", "inc-1", "arrived");
    fs::rename(&staging, &dir).unwrap();
    assert_eq!(contents(&next_change(&mut events).await), pairs(&[("inc-1", "arrived")]));
}

#[tokio::test]
async fn events_beside_the_directory_are_ignored() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("manifests");
    let sibling = root.path().join("manifests-old");
    fs::create_dir(&dir).unwrap();
    fs::create_dir(&sibling).unwrap();
    write_manifest(&dir, "x.yaml", "inc-1", "here");
    let (watcher, mut events, _) = watch(&dir).await;
    let reloads = watcher.reloads();

    write_manifest(&sibling, "x.yaml", "inc-1", "beside");
    write_manifest(root.path(), "y.yaml", "inc-2", "in the parent");
    fs::create_dir(root.path().join("other")).unwrap();
    write_manifest(&root.path().join("other"), "z.yaml", "inc-3", "below a sibling");
    // Hidden entries below the directory are skipped by the loader, so by the watch too.
    write_manifest(&dir, ".x.yaml.swp", "inc-4", "an editor's swap file");

    assert_quiet(&mut events).await;
    assert_eq!(watcher.reloads(), reloads, "no reload at all: not even a hint");
}

#[tokio::test]
async fn a_manifest_dir_without_a_parent_or_runtime_is_refused() {
    assert!(ManifestWatcher::start(PathBuf::from("/"), DEBOUNCE).is_err());
    let root = tempfile::tempdir().unwrap();
    assert!(ManifestWatcher::start(root.path().join("no-such-parent/manifests"), DEBOUNCE).is_err());
}

#[test]
fn starting_outside_a_runtime_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let error = ManifestWatcher::start(root.path().join("manifests"), DEBOUNCE).unwrap_err();
    assert!(error.to_string().contains("Tokio runtime"), "{error}");
}

mod debouncer {
    use super::*;

    const QUIET: Duration = Duration::from_millis(500);
    const MAX_WAIT: Duration = Duration::from_secs(5);

    #[tokio::test(start_paused = true)]
    async fn a_burst_fires_once_after_the_quiet_period() {
        let mut debouncer = Debouncer::new(QUIET, MAX_WAIT);
        assert_eq!(debouncer.due(), None);
        assert!(!debouncer.fire(Instant::now()));
        let start = Instant::now();
        for _ in 0..10 {
            debouncer.hint(Instant::now());
            advance(Duration::from_millis(100)).await;
        }
        let last_hint = start + Duration::from_millis(900);
        assert_eq!(debouncer.due(), Some(last_hint + QUIET));
        assert!(!debouncer.fire(Instant::now()), "not yet quiet for long enough");

        advance(Duration::from_millis(399)).await;
        assert!(!debouncer.fire(Instant::now()));
        advance(Duration::from_millis(1)).await;
        assert!(debouncer.fire(Instant::now()));
        assert!(!debouncer.fire(Instant::now()), "fires once");
        assert_eq!(debouncer.due(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_trickle_fires_at_the_maximum_wait() {
        let mut debouncer = Debouncer::new(QUIET, MAX_WAIT);
        let start = Instant::now();
        let mut fired = Vec::new();
        // A hint every 200 ms for 12 s: never quiet for 500 ms.
        while Instant::now() < start + Duration::from_secs(12) {
            debouncer.hint(Instant::now());
            advance(Duration::from_millis(200)).await;
            if debouncer.fire(Instant::now()) {
                fired.push(Instant::now() - start);
            }
        }
        // The first hint at 0 s fires at 5 s, the next (5.0 s) at 10 s.
        assert_eq!(fired, [Duration::from_secs(5), Duration::from_secs(10)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_loop_sleeping_until_due_reloads_once_per_burst() {
        let mut debouncer = Debouncer::new(QUIET, MAX_WAIT);
        let start = Instant::now();
        // Two bursts of hints (at 0-40 ms and at 3 s-3.04 s), as a watcher task would see them.
        let mut hints: Vec<Instant> = (0..5).map(|n| start + Duration::from_millis(10 * n)).collect();
        hints.extend((0..5).map(|n| start + Duration::from_millis(3000 + 10 * n)));
        let mut hints = hints.into_iter().peekable();
        let mut reloads = Vec::new();
        loop {
            let wake = match (hints.peek(), debouncer.due()) {
                (Some(hint), Some(due)) => (*hint).min(due),
                (Some(hint), None) => *hint,
                (None, Some(due)) => due,
                (None, None) => break,
            };
            tokio::time::sleep_until(wake).await;
            while hints.peek().is_some_and(|hint| *hint <= Instant::now()) {
                debouncer.hint(hints.next().unwrap());
            }
            if debouncer.fire(Instant::now()) {
                reloads.push(Instant::now() - start);
            }
        }
        assert_eq!(reloads, [Duration::from_millis(540), Duration::from_millis(3540)]);
    }
}

mod schedule {
    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).expect("a test time").with_timezone(&Utc)
    }

    fn firings(expression: &str, after: &str, count: usize) -> Vec<DateTime<Utc>> {
        let schedule = ResyncSchedule::parse(expression).expect("a test expression");
        let mut at = utc(after);
        let mut firings = Vec::new();
        for _ in 0..count {
            at = schedule.next_after(at).expect("the schedule fires again");
            firings.push(at);
        }
        firings
    }

    #[test]
    fn the_default_fires_every_five_minutes() {
        let schedule = ResyncSchedule::parse("0 */5 * * * *").unwrap();
        assert_eq!(schedule.next_after(utc("2026-05-04T10:02:30Z")), Some(utc("2026-05-04T10:05:00Z")));
        // Strictly after: a firing time is not its own next firing.
        assert_eq!(schedule.next_after(utc("2026-05-04T10:05:00Z")), Some(utc("2026-05-04T10:10:00Z")));
        let now = utc("2026-05-04T10:02:30.5Z");
        assert_eq!(schedule.until_next(now), Duration::from_millis(149_500));
    }

    #[test]
    fn across_daylight_saving_changes_firings_stay_24_hours_apart_in_utc() {
        // Europe/Berlin goes from UTC+1 to UTC+2 at 2026-03-29T01:00Z.
        let berlin = firings("0 30 2 * * *", "2026-03-27T12:00:00Z", 3);
        assert_eq!(berlin, [utc("2026-03-28T02:30:00Z"), utc("2026-03-29T02:30:00Z"), utc("2026-03-30T02:30:00Z")]);
        let (winter, summer) = (FixedOffset::east_opt(3600).unwrap(), FixedOffset::east_opt(7200).unwrap());
        assert_eq!(berlin[0], winter.with_ymd_and_hms(2026, 3, 28, 3, 30, 0).unwrap());
        assert_eq!(berlin[1], summer.with_ymd_and_hms(2026, 3, 29, 4, 30, 0).unwrap());
        // America/New_York goes from UTC-5 to UTC-4 at 2026-03-08T07:00Z.
        let new_york = firings("0 30 2 * * *", "2026-03-06T12:00:00Z", 3);
        assert_eq!(new_york, [utc("2026-03-07T02:30:00Z"), utc("2026-03-08T02:30:00Z"), utc("2026-03-09T02:30:00Z")]);
        let (est, edt) = (FixedOffset::west_opt(5 * 3600).unwrap(), FixedOffset::west_opt(4 * 3600).unwrap());
        assert_eq!(new_york[1], est.with_ymd_and_hms(2026, 3, 7, 21, 30, 0).unwrap());
        assert_eq!(new_york[2], edt.with_ymd_and_hms(2026, 3, 8, 22, 30, 0).unwrap());
        for pair in berlin.windows(2).chain(new_york.windows(2)) {
            assert_eq!(pair[1] - pair[0], chrono::TimeDelta::hours(24));
        }
        // In the hour that does not exist in Berlin's local time (02:00-03:00 on 29 March) too.
        assert_eq!(firings("0 30 1 29 3 *", "2026-01-01T00:00:00Z", 1), [utc("2026-03-29T01:30:00Z")]);
    }

    /// The days of one week (from Saturday 2026-03-28) on which `expression` fires, Monday first.
    fn weekdays(expression: &str) -> Vec<Weekday> {
        let mut days: Vec<Weekday> = firings(expression, "2026-03-28T00:00:00Z", 7)
            .into_iter()
            .take_while(|at| *at < utc("2026-04-04T00:00:00Z"))
            .map(|at| at.weekday())
            .collect();
        days.sort_by_key(|day| day.num_days_from_monday());
        days
    }

    #[test]
    fn day_of_week_names_and_numbers() {
        use Weekday::*;
        let monday_to_friday = [Mon, Tue, Wed, Thu, Fri];
        assert_eq!(weekdays("0 0 9 * * MON-FRI"), monday_to_friday);
        assert_eq!(weekdays("0 0 9 * * mon-fri"), monday_to_friday);
        assert_eq!(weekdays("0 0 9 * * Monday-Friday"), monday_to_friday);
        // The 6-field form counts 1 = Sunday.
        assert_eq!(weekdays("0 0 9 * * 2-6"), monday_to_friday);
        assert_eq!(weekdays("0 0 9 * * SUN"), [Sun]);
        assert_eq!(weekdays("0 0 9 * * 1"), [Sun]);
        assert_eq!(weekdays("0 0 9 * * MON,WED,FRI"), [Mon, Wed, Fri]);
        assert_eq!(weekdays("0 0 9 * * SAT,SUN"), [Sat, Sun]);
        assert_eq!(firings("0 0 9 * * MON", "2026-03-28T00:00:00Z", 1), [utc("2026-03-30T09:00:00Z")]);
    }

    #[test]
    fn five_field_crontab_lines_run_at_second_zero_with_crontab_day_numbers() {
        use Weekday::*;
        assert_eq!(
            firings("*/5 * * * *", "2026-05-04T10:02:30Z", 3),
            firings("0 */5 * * * *", "2026-05-04T10:02:30Z", 3)
        );
        assert_eq!(firings("30 2 * * *", "2026-03-27T12:00:00Z", 1), [utc("2026-03-28T02:30:00Z")]);
        // In crontab, 0 and 7 = Sunday, 1 = Monday.
        assert_eq!(weekdays("0 9 * * 1-5"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 9 * * MON-FRI"), [Mon, Tue, Wed, Thu, Fri]);
        assert_eq!(weekdays("0 9 * * 0"), [Sun]);
        assert_eq!(weekdays("0 9 * * 7"), [Sun]);
        assert_eq!(weekdays("0 9 * * 5-7"), [Fri, Sat, Sun]);
        assert_eq!(weekdays("0 9 * * 1-5/2"), [Mon, Wed, Fri]);
        assert_eq!(weekdays("0 9 * * */3"), [Wed, Sat, Sun]);
        assert_eq!(weekdays("0 9 * * 6,0"), [Sat, Sun]);
        // Shorthands.
        assert_eq!(firings("@daily", "2026-03-28T10:00:00Z", 1), [utc("2026-03-29T00:00:00Z")]);
        assert_eq!(firings("@weekly", "2026-03-28T10:00:00Z", 1), [utc("2026-03-29T00:00:00Z")]);
    }

    #[test]
    fn bad_expressions_are_refused_saying_what_is_wrong_and_what_is_accepted() {
        let error = |expression: &str| ResyncSchedule::parse(expression).unwrap_err().to_string();
        for (expression, reason) in [
            ("", "empty"),
            ("* * *", "3 fields"),
            ("0 0 0 0 * * * *", "8 fields"),
            ("0 0 9 * * 0", "the day-of-week field \"0\": Days of Week must be greater than or equal to 1"),
            ("0 0 9 * * FUNDAY", "the day-of-week field \"FUNDAY\": 'FUNDAY' is not a valid day of the week"),
            ("0 61 * * * *", "the minute field \"61\": Minutes must be at most 59"),
            ("61 * * * *", "the minute field \"61\": Minutes must be at most 59"),
            ("0 0 9 * * MON-", "the day-of-week field \"MON-\": cannot be read"),
            ("0 0 25 * * *", "the hour field \"25\""),
            ("0 9 * * 8", "days are 0 to 7"),
            ("0 9 * * 5-1", "runs backwards"),
            ("0 9 * * 1/0", "at least 1"),
            ("every five minutes", "3 fields"),
        ] {
            let message = error(expression);
            assert!(message.contains(&format!("{expression:?}")), "{message}");
            assert!(message.contains(reason), "{expression:?}: {message}");
            assert!(message.contains("1 = Sunday") && message.contains("UTC"), "{message}");
        }
    }

    #[test]
    fn a_schedule_that_never_fires_again_has_no_next_firing() {
        let now = utc("2026-05-04T10:00:00Z");
        for expression in ["0 0 0 1 1 * 2020", "0 0 0 30 2 *"] {
            let schedule = ResyncSchedule::parse(expression).unwrap();
            assert_eq!(schedule.next_after(now), None, "{expression}");
            assert_eq!(schedule.until_next(now), Duration::MAX);
        }
    }

    /// A wall clock that follows tokio's (paused) clock from `base`, shifted by `step` once
    /// `step_at` has passed.
    fn clock(base: &str, step_at: Duration, step: chrono::TimeDelta) -> impl Fn() -> DateTime<Utc> {
        let (base, start) = (utc(base), Instant::now());
        move || {
            let elapsed = Instant::now() - start;
            let shift = if elapsed >= step_at { step } else { chrono::TimeDelta::zero() };
            base + chrono::TimeDelta::from_std(elapsed).expect("a short time") + shift
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_until_next_wakes_at_each_firing() {
        let schedule = ResyncSchedule::parse("0 30 2 * * *").unwrap();
        let start = Instant::now();
        let wall = clock("2026-03-29T02:29:00Z", Duration::MAX, chrono::TimeDelta::zero());
        assert_eq!(schedule.sleep_until_next(&wall).await, utc("2026-03-29T02:30:00Z"));
        assert_eq!(Instant::now() - start, Duration::from_secs(60));
        assert_eq!(schedule.sleep_until_next(&wall).await, utc("2026-03-30T02:30:00Z"));
        assert_eq!(Instant::now() - start, Duration::from_secs(60 + 24 * 3600));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_until_next_follows_a_stepped_wall_clock() {
        let schedule = ResyncSchedule::parse("0 30 2 * * *").unwrap();
        // Stepped back 30 s after 50 s: does not fire early, but when the wall clock says so.
        let start = Instant::now();
        let wall = clock("2026-03-29T02:29:00Z", Duration::from_secs(50), chrono::TimeDelta::seconds(-30));
        assert_eq!(schedule.sleep_until_next(&wall).await, utc("2026-03-29T02:30:00Z"));
        assert_eq!(Instant::now() - start, Duration::from_secs(90));
        // Stepped forward 30 minutes after 5 s, with the firing 31 minutes away: at most a
        // minute late, not 30 minutes.
        let start = Instant::now();
        let wall = clock("2026-03-29T01:59:00Z", Duration::from_secs(5), chrono::TimeDelta::minutes(30));
        assert_eq!(schedule.sleep_until_next(&wall).await, utc("2026-03-29T02:30:00Z"));
        assert_eq!(Instant::now() - start, Duration::from_secs(60));
    }
}
