//! The store on real sled directories (tempdirs). Two tests re-execute this binary as a child
//! process (hidden, ignored tests selected by name, told what to do by environment variables): the
//! lock is per process, and a crash is a `kill -9` of a real process.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use remedy::model::{
    ActionOutcome, ActionRecord, ApprovalEvent, ConditionReason, ConditionStatus, ConditionType, Event, HistoryRecord,
    IntendedChange, IntentId, ManifestRef, ManifestStatus, ReconcileRequestEvent, RecordId,
};
use remedy::store::{layout, ChainFault, HistoryQuery, Store, StoreError, FORMAT_VERSION, WRITE_CHUNK};
use remedy_policies::manifest::{
    ActiveDirectoryIntent, EntraIntent, Generation, OnRelease, Origin, RemediationSpec, Target,
};
use remedy_policies::plan::{Cause, RecordedChange, Resolved};
use remedy_policies::{Action, Identity, Manifest, ManifestName, Provider};

const CRASH_CHILD_ENV: &str = "REMEDY_STORE_TEST_CRASH_CHILD";
const LOCK_CHILD_ENV: &str = "REMEDY_STORE_TEST_LOCK_CHILD";

pub(crate) fn at(seconds: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0).single().expect("a valid time") + chrono::Duration::seconds(seconds)
}

pub(crate) fn identity(text: &str) -> Identity {
    text.parse().expect("an identity")
}

pub(crate) fn name(text: &str) -> ManifestName {
    ManifestName::new(text).expect("a manifest name")
}

pub(crate) fn generation(text: &str) -> Generation {
    serde_json::from_value(serde_json::json!(text)).expect("a generation")
}

pub(crate) fn manifest_ref(manifest: &str) -> ManifestRef {
    ManifestRef { name: name(manifest), generation: generation("0123456789abcdef"), commit: Some("3f2a1c9".into()) }
}

pub(crate) fn action_record(who: &str, action: Action, outcome: ActionOutcome, manifests: &[&str]) -> ActionRecord {
    ActionRecord {
        intent: None,
        manifests: manifests.iter().map(|m| manifest_ref(m)).collect(),
        reason: "INC-4711".into(),
        identity: identity(who),
        resolved: Resolved {
            ad_dn: Some(format!("CN={who},OU=Users,DC=contoso,DC=com")),
            ad_object_guid: None,
            entra_id: None,
        },
        provider: action.provider(),
        action,
        cause: Cause::Desired,
        before: "0x200".into(),
        after: "0x202".into(),
        outcome,
        error: (outcome == ActionOutcome::Failed).then(|| "LDAP 50 insufficientAccessRights".into()),
        note: None,
        duration_ms: 42,
        acting_account: Some("CN=svc-remedy,OU=Service,DC=contoso,DC=com".into()),
        domain_controller: None,
    }
}

pub(crate) fn open(dir: &Path) -> Store {
    let (store, report) = Store::open(dir).expect("the store opens");
    assert_eq!(report.moved_aside, None);
    store
}

pub(crate) fn all_records(store: &Store) -> Vec<HistoryRecord> {
    let mut records = Vec::new();
    let mut query = HistoryQuery { limit: HistoryQuery::MAX_LIMIT, ..Default::default() };
    loop {
        let page = store.query_history(&query).expect("a page");
        records.extend(page.records);
        match page.next_after_id {
            Some(after) => query.after_id = Some(after),
            None => return records,
        }
    }
}

/// sled, opened as a program other than remedy would. Its lock may outlive the store a moment (a
/// child process of another test between fork and exec holds a copy): it is waited for.
fn raw_db(dir: &Path) -> sled::Db {
    let mut tries = 0;
    loop {
        match sled::open(dir) {
            Ok(db) => return db,
            Err(sled::Error::Io(error)) if error.to_string().contains("could not acquire lock") && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(error) => panic!("sled opens {}: {error}", dir.display()),
        }
    }
}

/// Opens the sled directory directly, as an attacker or a recovery tool would.
fn raw_tree(dir: &Path, tree: &str, change: impl FnOnce(&sled::Tree)) {
    let db = raw_db(dir);
    change(&db.open_tree(tree).expect("the tree"));
    db.flush().expect("flushed");
}

fn sample_history(store: &Store) {
    use ActionOutcome::*;
    let actions = [
        ("sam:alice", Action::DisableAccount, Succeeded, vec!["inc-1"]),
        ("sam:bob", Action::DisableAccount, Failed, vec!["inc-2"]),
        ("upn:alice@contoso.com", Action::SuspendUser, Succeeded, vec!["inc-1"]),
        ("sam:alice", Action::ForcePasswordChange, Denied, vec!["inc-1", "inc-3"]),
        ("sam:bob", Action::DisableAccount, Succeeded, vec!["inc-2"]),
        ("sam:carol", Action::RevokeSessions, Held, vec!["inc-4"]),
    ];
    let mut second = 0;
    for round in 0..3 {
        for (who, action, outcome, manifests) in &actions {
            store
                .append(at(second), Event::Action(action_record(who, *action, *outcome, manifests)))
                .expect("appended");
            second += 10;
        }
        store
            .append(
                at(second),
                Event::ReconcileRequest(ReconcileRequestEvent {
                    by: "jdoe".into(),
                    manifest: (round == 1).then(|| name("inc-2")),
                    comment: None,
                }),
            )
            .expect("appended");
        second += 10;
    }
    store
        .append(
            at(second),
            Event::Approval(ApprovalEvent {
                plan_id: "3c4870c969751ef083340ab9d7c97fd0".parse().expect("a plan id"),
                by: "jdoe".into(),
                comment: Some("INC-4711 confirmed by the SOC".into()),
            }),
        )
        .expect("appended");
}

#[test]
fn append_then_query_with_filters_and_paging() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    sample_history(&store);

    let everything = all_records(&store);
    assert_eq!(everything.len(), 22);
    assert_eq!(everything.iter().map(|r| r.id.0).collect::<Vec<_>>(), (1..=22).collect::<Vec<_>>());

    let ids = |query: HistoryQuery| -> Vec<u64> {
        store.query_history(&query).expect("a page").records.iter().map(|r| r.id.0).collect()
    };
    assert_eq!(ids(HistoryQuery { identity: Some(identity("sam:bob")), ..Default::default() }), [2, 5, 9, 12, 16, 19]);
    assert_eq!(
        ids(HistoryQuery { manifest: Some(name("inc-2")), ..Default::default() }),
        [2, 5, 9, 12, 14, 16, 19],
        "inc-2's actions and the reconcile requested for it"
    );
    assert_eq!(ids(HistoryQuery { manifest: Some(name("inc-3")), ..Default::default() }), [4, 11, 18]);
    assert_eq!(ids(HistoryQuery { action: Some(Action::SuspendUser), ..Default::default() }), [3, 10, 17]);
    assert_eq!(ids(HistoryQuery { outcome: Some(ActionOutcome::Held), ..Default::default() }), [6, 13, 20]);
    assert_eq!(
        ids(HistoryQuery {
            identity: Some(identity("sam:alice")),
            outcome: Some(ActionOutcome::Succeeded),
            ..Default::default()
        }),
        [1, 8, 15]
    );
    // Record n is at (n-1)*10 s: since is inclusive, until exclusive.
    assert_eq!(ids(HistoryQuery { since: Some(at(50)), until: Some(at(90)), ..Default::default() }), [6, 7, 8, 9]);

    // Paging: pages of 5 put together are the whole history, and the last page says so.
    let mut paged = Vec::new();
    let mut query = HistoryQuery { limit: 5, ..Default::default() };
    let mut pages = 0;
    loop {
        let page = store.query_history(&query).expect("a page");
        pages += 1;
        assert!(page.records.len() <= 5);
        paged.extend(page.records);
        match page.next_after_id {
            Some(after) => query.after_id = Some(after),
            None => break,
        }
    }
    assert_eq!(paged, everything);
    assert_eq!(pages, 5);
    // Paging within a filter.
    let page = store
        .query_history(&HistoryQuery { identity: Some(identity("sam:bob")), limit: 4, ..Default::default() })
        .expect("a page");
    assert_eq!(page.next_after_id, Some(RecordId(12)));
    let rest = store
        .query_history(&HistoryQuery {
            identity: Some(identity("sam:bob")),
            after_id: page.next_after_id,
            limit: 4,
            ..Default::default()
        })
        .expect("a page");
    assert_eq!(rest.records.iter().map(|r| r.id.0).collect::<Vec<_>>(), [16, 19]);
    assert_eq!(rest.next_after_id, None);

    let report = store.verify_history().expect("the chain holds");
    assert_eq!(report.records, 22);
    assert_eq!(report.head_hash, everything[21].hash);
}

#[test]
fn store_an_approval_is_recorded_and_kept_across_a_reopen_until_it_is_done_with() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let plan: remedy_policies::plan::PlanId = "0123456789abcdef0123456789abcdef".parse().expect("a plan id");
    {
        let store = open(dir.path());
        assert!(store.approvals().expect("approvals").is_empty());
        let approval = ApprovalEvent { plan_id: plan.clone(), by: "ops".into(), comment: None };
        let record = store.append_approval(at(1), approval).expect("recorded");
        assert!(matches!(record.event, Event::Approval(ref a) if a.plan_id == plan), "{record:?}");
    }
    let store = open(dir.path());
    assert_eq!(store.approvals().expect("approvals"), BTreeSet::from([plan]), "kept across a reopen");
    assert_eq!(store.verify_history().expect("the chain holds").records, 1);
    store.set_approvals(&BTreeSet::new()).expect("forgotten");
    drop(store);
    assert!(open(dir.path()).approvals().expect("approvals").is_empty(), "forgotten for good");
}

#[test]
fn the_latest_records_come_newest_first_with_the_same_filters() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    sample_history(&store);
    let ids = |query: HistoryQuery| -> Vec<u64> {
        store.latest_history(&query).expect("records").iter().map(|r| r.id.0).collect()
    };
    assert_eq!(ids(HistoryQuery { limit: 3, ..Default::default() }), [22, 21, 20]);
    assert_eq!(
        ids(HistoryQuery { identity: Some(identity("sam:bob")), limit: 4, ..Default::default() }),
        [19, 16, 12, 9]
    );
    assert_eq!(ids(HistoryQuery { outcome: Some(ActionOutcome::Held), ..Default::default() }), [20, 13, 6]);
    // After an id (the web page's live feed): only newer records, newest first.
    assert_eq!(
        ids(HistoryQuery { manifest: Some(name("inc-2")), after_id: Some(RecordId(12)), ..Default::default() }),
        [19, 16, 14]
    );
    assert_eq!(ids(HistoryQuery { after_id: Some(RecordId(22)), ..Default::default() }), Vec::<u64>::new());
}

#[test]
fn records_round_trip_as_readable_json_and_nothing_else_is_written() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let record = action_record("sam:bob", Action::DisableAccount, ActionOutcome::Failed, &["inc-2"]);
    let stored = {
        let store = open(dir.path());
        store.append(at(0), Event::Action(record.clone())).expect("appended")
    };
    let store = open(dir.path());
    assert_eq!(store.history_record(RecordId(1)).expect("read"), Some(stored.clone()));
    assert_eq!(stored.event, Event::Action(record));

    // The API's JSON: camelCase, kebab-case actions and outcomes, RFC 3339 times.
    let json = serde_json::to_value(&stored).expect("serialises");
    assert_eq!(json["at"], "2025-03-01T12:00:00Z");
    assert_eq!(json["event"]["kind"], "action");
    assert_eq!(json["event"]["action"], "disable-account");
    assert_eq!(json["event"]["provider"], "active-directory");
    assert_eq!(json["event"]["outcome"], "failed");
    assert_eq!(json["event"]["identity"], "sam:bob");
    assert_eq!(json["event"]["durationMs"], 42);
    assert_eq!(json["event"]["resolved"]["adDn"], "CN=sam:bob,OU=Users,DC=contoso,DC=com");
    assert_eq!(json["event"]["manifests"][0]["generation"], "0123456789abcdef");
    assert_eq!(json["prevHash"], "0".repeat(64));
    assert_eq!(json["hash"].as_str().map(str::len), Some(64));
    drop(store);

    // Exactly these keys exist, and the history holds exactly the record's JSON.
    let db = raw_db(dir.path());
    let mut contents: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for tree_name in db.tree_names() {
        let tree = db.open_tree(&tree_name).expect("the tree");
        let keys: Vec<Vec<u8>> = tree.iter().keys().map(|k| k.expect("a key").to_vec()).collect();
        if !keys.is_empty() {
            contents.insert(String::from_utf8_lossy(&tree_name).into_owned(), keys);
        }
    }
    let mut change_key = b"sam:bob\0".to_vec();
    change_key.extend_from_slice(&1u64.to_be_bytes());
    let expected: BTreeMap<String, Vec<Vec<u8>>> = [
        (layout::META, vec![b"format_version".to_vec(), b"history_head".to_vec()]),
        (layout::HISTORY, vec![1u64.to_be_bytes().to_vec()]),
    ]
    .into_iter()
    .map(|(tree, keys)| (tree.to_owned(), keys))
    .collect();
    assert_eq!(contents, expected, "a failed action changes nothing, so it is not in the change index");
    let history = db.open_tree(layout::HISTORY).expect("the tree");
    let value = history.get(1u64.to_be_bytes()).expect("read").expect("record 1");
    assert_eq!(value.as_ref(), serde_json::to_vec(&stored).expect("serialises").as_slice());
    let meta = db.open_tree(layout::META).expect("the tree");
    assert_eq!(meta.get("format_version").expect("read").expect("a version").as_ref(), b"1");
    assert!(db.open_tree(layout::CHANGES_BY_IDENTITY).expect("the tree").get(&change_key).expect("read").is_none());
    // Beside sled's own files, remedy writes its lock (a pid) and its watermark (two numbers).
    let watermark = std::fs::read_to_string(dir.path().join(layout::WATERMARK_FILE)).expect("the watermark");
    assert_eq!(watermark, r#"{"historyLastId":1,"nextIntentId":1}"#);
    let lock = std::fs::read_to_string(dir.path().join(layout::LOCK_FILE)).expect("the lock file");
    assert!(lock.chars().all(|c| c.is_ascii_digit()), "{lock:?}");
}

#[test]
fn verify_detects_an_edited_record() {
    let dir = tempfile::tempdir().expect("a tempdir");
    drop({
        let store = open(dir.path());
        sample_history(&store);
        store
    });
    // Change record 3's reason, leave its hash.
    let original = std::cell::RefCell::new(Vec::new());
    raw_tree(dir.path(), layout::HISTORY, |history| {
        let value = history.get(3u64.to_be_bytes()).expect("read").expect("record 3");
        original.replace(value.to_vec());
        let edited = String::from_utf8(value.to_vec()).expect("utf-8").replace("INC-4711", "INC-0000");
        history.insert(3u64.to_be_bytes(), edited.as_bytes()).expect("written");
    });
    let store = open(dir.path());
    match store.verify_history() {
        Err(StoreError::ChainBroken(broken)) => {
            assert_eq!(broken.at_id, RecordId(3));
            assert_eq!(broken.fault, ChainFault::Edited);
            assert_ne!(broken.expected, broken.found);
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }
    drop(store);

    // The same edit with record 3's hash recomputed: record 4 no longer links to it.
    raw_tree(dir.path(), layout::HISTORY, |history| {
        let mut record: HistoryRecord = serde_json::from_slice(&original.borrow()).expect("a record");
        if let Event::Action(action) = &mut record.event {
            action.reason = "INC-0000".into();
        }
        record.hash = recompute_hash(&record);
        history.insert(3u64.to_be_bytes(), serde_json::to_vec(&record).expect("json")).expect("written");
    });
    let store = open(dir.path());
    match store.verify_history() {
        Err(StoreError::ChainBroken(broken)) => {
            assert_eq!((broken.at_id, broken.fault), (RecordId(4), ChainFault::Unlinked));
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }
    drop(store);

    // Whitespace only: the values are the same, the bytes are not what remedy wrote.
    raw_tree(dir.path(), layout::HISTORY, |history| {
        let mut bytes = original.borrow().clone();
        bytes.push(b' ');
        history.insert(3u64.to_be_bytes(), bytes).expect("written");
    });
    let store = open(dir.path());
    match store.verify_history() {
        Err(StoreError::ChainBroken(broken)) => {
            assert_eq!((broken.at_id, broken.fault), (RecordId(3), ChainFault::NotCanonical));
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

/// The hash as the store computes it (documented in `store::history`).
fn recompute_hash(record: &HistoryRecord) -> String {
    use sha2::{Digest, Sha256};
    let bytes = format!(
        "{{\"id\":{},\"at\":{},\"event\":{},\"prevHash\":{}}}",
        record.id,
        serde_json::to_string(&record.at).expect("json"),
        serde_json::to_string(&record.event).expect("json"),
        serde_json::to_string(&record.prev_hash).expect("json"),
    );
    hex::encode(Sha256::digest(bytes.as_bytes()))
}

#[test]
fn verify_detects_a_deleted_record() {
    let dir = tempfile::tempdir().expect("a tempdir");
    drop({
        let store = open(dir.path());
        sample_history(&store);
        store
    });
    raw_tree(dir.path(), layout::HISTORY, |history| {
        history.remove(7u64.to_be_bytes()).expect("removed");
    });
    let store = open(dir.path());
    match store.verify_history() {
        Err(StoreError::ChainBroken(broken)) => {
            assert_eq!((broken.at_id, broken.fault), (RecordId(7), ChainFault::Missing));
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }
}

#[test]
fn verify_detects_that_the_newest_record_was_deleted() {
    let dir = tempfile::tempdir().expect("a tempdir");
    drop({
        let store = open(dir.path());
        sample_history(&store);
        store
    });
    raw_tree(dir.path(), layout::HISTORY, |history| {
        history.remove(22u64.to_be_bytes()).expect("removed");
    });
    let store = open(dir.path());
    match store.verify_history() {
        Err(StoreError::ChainBroken(broken)) => {
            assert_eq!((broken.at_id, broken.fault), (RecordId(22), ChainFault::Missing));
        }
        other => panic!("expected a broken chain, got {other:?}"),
    }
    // An append must not reuse the chain: it goes on after the head, and the gap stays visible.
    let record = store
        .append(
            at(1000),
            Event::Action(action_record("sam:dave", Action::DisableAccount, ActionOutcome::Succeeded, &["inc-5"])),
        )
        .expect("appended");
    assert_eq!(record.id, RecordId(23));
    assert!(matches!(store.verify_history(), Err(StoreError::ChainBroken(_))));
}

#[test]
fn a_newer_format_is_refused_and_left_in_place() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let path = dir.path().join("store");
    drop(open(&path));
    raw_tree(&path, layout::META, |meta| {
        meta.insert(layout::FORMAT_VERSION_KEY, b"2").expect("written");
    });
    let error = Store::open(&path).expect_err("refused");
    assert!(matches!(error, StoreError::NewerFormat { found: 2, supported: FORMAT_VERSION, .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("store format 2 is newer than this remedy (1): upgrade remedy or restore a backup"),
        "{error}"
    );
    assert_eq!(siblings(&path), ["store"], "nothing was moved aside");
}

fn siblings(path: &Path) -> Vec<String> {
    let parent = path.parent().expect("a parent");
    let mut names: Vec<String> = std::fs::read_dir(parent)
        .expect("listed")
        .map(|entry| entry.expect("an entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn assert_moved_aside_and_fresh(path: &Path) {
    let (store, report) = Store::open(path).expect("a fresh store");
    let moved = report.moved_aside.expect("the corrupt store was moved aside");
    assert!(report.created);
    assert!(moved.is_dir(), "{} is kept for an operator", moved.display());
    let moved_name = moved.file_name().expect("a name").to_string_lossy().into_owned();
    assert!(moved_name.starts_with("store.corrupt-"), "{moved_name}");
    assert!(moved.join("db").is_file());
    assert_eq!(all_records(&store), []);
    store.verify_history().expect("an empty chain holds");
    store
        .append(
            at(0),
            Event::ReconcileRequest(ReconcileRequestEvent { by: "jdoe".into(), manifest: None, comment: None }),
        )
        .expect("the fresh store works");
    drop(store);
    // Opened again: no longer corrupt, nothing more moved.
    let (_store, report) = Store::open(path).expect("opens");
    assert_eq!(report.moved_aside, None);
    assert!(!report.created);
    assert_eq!(siblings(path).len(), 2);
}

#[test]
fn an_unreadable_meta_value_moves_the_store_aside() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let path = dir.path().join("store");
    drop({
        let store = open(&path);
        sample_history(&store);
        store
    });
    raw_tree(&path, layout::META, |meta| {
        meta.insert(layout::FORMAT_VERSION_KEY, b"\xff\xfegarbage").expect("written");
    });
    assert_moved_aside_and_fresh(&path);
}

#[test]
fn an_undecodable_journal_entry_moves_the_store_aside() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let path = dir.path().join("store");
    drop(open(&path));
    raw_tree(&path, layout::JOURNAL, |journal| {
        journal.insert(1u64.to_be_bytes(), b"{\"id\": \"not an intent\"}").expect("written");
    });
    assert_moved_aside_and_fresh(&path);
}

#[test]
fn garbage_in_the_sled_files_moves_the_store_aside() {
    for file in ["db", "conf"] {
        let dir = tempfile::tempdir().expect("a tempdir");
        let path = dir.path().join("store");
        drop({
            let store = open(&path);
            sample_history(&store);
            store
        });
        let size = std::fs::metadata(path.join(file)).expect("the file").len().max(64);
        let mut rng = fastrand::Rng::with_seed(7);
        let garbage: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
        std::fs::write(path.join(file), garbage).expect("written");
        assert_moved_aside_and_fresh(&path);
    }
}

/// sled reads a damaged stretch of its log as the end of the log and drops what follows without
/// an error: the watermark beside sled's files notices.
#[test]
fn a_log_that_sled_reads_short_moves_the_store_aside() {
    for (from, to) in [(100, 200), (5_000, 5_100), (20_000, 20_100)] {
        let dir = tempfile::tempdir().expect("a tempdir");
        let path = dir.path().join("store");
        drop({
            let store = open(&path);
            sample_history(&store);
            store
        });
        let mut bytes = std::fs::read(path.join("db")).expect("the log");
        assert!(bytes.len() > to, "the log is {} bytes", bytes.len());
        for byte in &mut bytes[from..to] {
            *byte ^= 0x5a;
        }
        std::fs::write(path.join("db"), bytes).expect("written");
        assert_moved_aside_and_fresh(&path);
    }
}

#[test]
fn a_second_open_fails_while_the_store_is_in_use() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    // In this process.
    let error = Store::open(dir.path()).expect_err("locked");
    assert!(matches!(error, StoreError::Locked { .. }), "{error:?}");
    assert!(error.to_string().contains("is in use by another remedy process"), "{error}");
    // From another process, as a second daemon would.
    let output = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "store::lock_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD_ENV, dir.path())
        .output()
        .expect("the child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("OPEN-RESULT: locked:"),
        "child said:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("is in use by another remedy process"), "{stdout}");
    // The store was not disturbed, and once released it opens elsewhere.
    store.verify_history().expect("holds");
    drop(store);
    let output = Command::new(std::env::current_exe().expect("this test binary"))
        .args(["--exact", "store::lock_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(LOCK_CHILD_ENV, dir.path())
        .output()
        .expect("the child runs");
    assert!(String::from_utf8_lossy(&output.stdout).contains("OPEN-RESULT: opened"));
}

/// Run by `a_second_open_fails_while_the_store_is_in_use` in a child process.
#[test]
#[ignore = "a child process of a_second_open_fails_while_the_store_is_in_use"]
fn lock_child() {
    let Some(path) = std::env::var_os(LOCK_CHILD_ENV) else {
        return;
    };
    match Store::open(PathBuf::from(path)) {
        Ok(_) => println!("OPEN-RESULT: opened"),
        Err(error @ StoreError::Locked { .. }) => println!("OPEN-RESULT: locked: {error}"),
        Err(error) => println!("OPEN-RESULT: other error: {error}"),
    }
}

pub(crate) fn intended(i: u64) -> IntendedChange {
    IntendedChange {
        at: at(i as i64),
        identity: identity(&format!("sam:user{}", i % 7)),
        resolved: Resolved::default(),
        provider: Provider::ActiveDirectory,
        action: Action::DisableAccount,
        manifests: vec![manifest_ref("inc-1")],
        before: "0x200".into(),
        after: "0x202".into(),
        cause: Cause::Desired,
        reason: "incident 1".into(),
        unconfirmed: None,
        awaiting_until: None,
    }
}

pub(crate) fn settling_record(change: &IntendedChange, outcome: ActionOutcome) -> ActionRecord {
    let mut record = action_record(&change.identity.to_string(), change.action, outcome, &["inc-1"]);
    record.error = (outcome == ActionOutcome::Failed)
        .then(|| "interrupted by a restart before it was confirmed; not applied".into());
    record
}

/// Run by `kill_9_at_any_moment_loses_no_record_and_duplicates_none`: settles what a killed
/// predecessor left (as the controller does on start), then journals, appends and settles for ever,
/// printing each step once it returned.
#[test]
#[ignore = "a child process of kill_9_at_any_moment_loses_no_record_and_duplicates_none"]
fn crash_child() {
    use std::io::Write;
    let Some(path) = std::env::var_os(CRASH_CHILD_ENV) else {
        return;
    };
    let (store, _report) = Store::open(PathBuf::from(path)).expect("the store opens");
    let mut out = std::io::stdout().lock();
    for intent in store.unsettled().expect("the journal") {
        let record = settling_record(&intent.change, ActionOutcome::Failed);
        let stored = store.settle(intent.id, at(0), &record).expect("settled");
        writeln!(out, "S {} {}", intent.id, stored.id).expect("printed");
    }
    writeln!(out, "READY").expect("printed");
    for i in 0u64.. {
        let change = intended(i);
        let id = store.journal_intent(&change).expect("journaled");
        writeln!(out, "J {id}").expect("printed");
        if i % 3 == 0 {
            let event =
                Event::ReconcileRequest(ReconcileRequestEvent { by: format!("op{i}"), manifest: None, comment: None });
            let stored = store.append(at(i as i64), event).expect("appended");
            writeln!(out, "A {}", stored.id).expect("printed");
        }
        let stored =
            store.settle(id, at(i as i64), &settling_record(&change, ActionOutcome::Succeeded)).expect("settled");
        writeln!(out, "S {id} {}", stored.id).expect("printed");
    }
}

#[test]
#[cfg(unix)]
fn kill_9_at_any_moment_loses_no_record_and_duplicates_none() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().expect("a tempdir");
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut journaled: BTreeSet<u64> = BTreeSet::new();
    let mut settled: BTreeMap<u64, u64> = BTreeMap::new();
    let mut appended: BTreeSet<u64> = BTreeSet::new();
    let (mut left_unsettled, mut settled_unreported) = (0, BTreeSet::<u64>::new());
    // Created here: a kill in the first milliseconds of a store's life is not what is tested.
    drop(open(dir.path()));
    for round in 0..20 {
        let mut child = Command::new(std::env::current_exe().expect("this test binary"))
            .args(["--exact", "store::crash_child", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CRASH_CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the child starts");
        std::thread::sleep(Duration::from_millis(rng.u64(30..400)));
        if let Some(status) = child.try_wait().expect("the child's state") {
            let mut stderr = String::new();
            child.stderr.take().expect("piped").read_to_string(&mut stderr).expect("read");
            panic!("round {round}: the child ended by itself ({status}):\n{stderr}");
        }
        child.kill().expect("SIGKILL sent");
        let status = child.wait().expect("the child ended");
        assert_eq!(status.signal(), Some(9), "round {round}");
        let mut stdout = String::new();
        child.stdout.take().expect("piped").read_to_string(&mut stdout).expect("read");
        for line in stdout.lines() {
            let fields: Vec<u64> = line.split(' ').skip(1).filter_map(|f| f.parse().ok()).collect();
            match (line.split(' ').next(), fields.as_slice()) {
                (Some("J"), [intent]) => assert!(journaled.insert(*intent), "intent {intent} journaled twice"),
                (Some("S"), [intent, record]) => {
                    assert_eq!(settled.insert(*intent, *record), None, "intent {intent} settled twice")
                }
                (Some("A"), [record]) => assert!(appended.insert(*record)),
                _ => {} // the test harness's own lines, or a line cut by the kill
            }
        }

        // What survived, as a restarted daemon sees it.
        let store = open(dir.path());
        let report = store.verify_history().unwrap_or_else(|e| panic!("round {round}: {e}"));
        let records = all_records(&store);
        assert_eq!(report.records, records.len() as u64);
        let mut records_per_intent: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
        let mut record_ids = BTreeSet::new();
        for record in &records {
            record_ids.insert(record.id.0);
            if let Event::Action(action) = &record.event {
                let intent = action.intent.expect("every action here settles an intent");
                records_per_intent.entry(intent.0).or_default().push(record.id.0);
            }
        }
        let unsettled: BTreeSet<u64> = store.unsettled().expect("the journal").iter().map(|i| i.id.0).collect();
        // Every intent is either unsettled or settled by exactly one record, never both.
        for (intent, ids) in &records_per_intent {
            assert_eq!(ids.len(), 1, "round {round}: intent {intent} settled by records {ids:?}");
            assert!(!unsettled.contains(intent), "round {round}: intent {intent} settled and still journaled");
        }
        // What the child was told is done, is.
        for (intent, record) in &settled {
            assert_eq!(records_per_intent.get(intent), Some(&vec![*record]), "round {round}: intent {intent}");
        }
        for intent in &journaled {
            assert!(
                unsettled.contains(intent) || records_per_intent.contains_key(intent),
                "round {round}: journaled intent {intent} was lost"
            );
        }
        for record in &appended {
            assert!(record_ids.contains(record), "round {round}: appended record {record} was lost");
        }
        // Unsettled intents are exactly the journaled ones without a record.
        let known: BTreeSet<u64> = unsettled.union(&records_per_intent.keys().copied().collect()).copied().collect();
        let expected_unsettled: BTreeSet<u64> =
            known.iter().copied().filter(|intent| !records_per_intent.contains_key(intent)).collect();
        assert_eq!(unsettled, expected_unsettled);
        assert!(unsettled.len() <= 1, "round {round}: one intent at a time is in flight: {unsettled:?}");
        left_unsettled += unsettled.len();
        settled_unreported.extend(records_per_intent.keys().filter(|intent| !settled.contains_key(intent)).copied());
    }
    println!(
        "{} intents settled as reported, {left_unsettled} left unsettled by a kill, {} settled without the \
         child living to report it",
        settled.len(),
        settled_unreported.len()
    );
    assert!(settled.len() >= 40, "the children made progress: {} intents settled", settled.len());
}

#[test]
fn settle_is_once_and_for_the_intended_change() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let change = intended(1);
    let intent = store.journal_intent(&change).expect("journaled");
    assert_eq!(intent, IntentId(1));
    assert_eq!(store.unsettled().expect("journal").len(), 1);
    let mut wrong = settling_record(&change, ActionOutcome::Succeeded);
    wrong.action = Action::EnableAccount;
    assert!(matches!(store.settle(intent, at(2), &wrong), Err(StoreError::IntentMismatch { .. })));
    assert_eq!(store.unsettled().expect("journal").len(), 1, "a refused settle leaves the intent");
    let stored = store.settle(intent, at(2), &settling_record(&change, ActionOutcome::Succeeded)).expect("settled");
    assert!(matches!(&stored.event, Event::Action(a) if a.intent == Some(intent)));
    assert!(matches!(
        store.settle(intent, at(3), &settling_record(&change, ActionOutcome::Succeeded)),
        Err(StoreError::UnknownIntent(IntentId(1)))
    ));
    assert_eq!(store.unsettled().expect("journal"), []);
    assert_eq!(all_records(&store).len(), 1);
    // Ids are not reused after a restart.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.journal_intent(&change).expect("journaled"), IntentId(2));
}

#[test]
fn concurrent_appends_keep_one_chain() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    std::thread::scope(|scope| {
        for thread in 0..4 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..15 {
                    let event = Event::ReconcileRequest(ReconcileRequestEvent {
                        by: format!("t{thread}-{i}"),
                        manifest: None,
                        comment: None,
                    });
                    store.append(at(i), event).expect("appended");
                }
            });
        }
    });
    assert_eq!(store.verify_history().expect("the chain holds").records, 60);
}

fn status_with_ready(
    status: ConditionStatus,
    reason: ConditionReason,
    message: &str,
    now: DateTime<Utc>,
) -> ManifestStatus {
    let mut manifest_status = ManifestStatus::new(name("inc-1"));
    manifest_status.observed_generation = Some(generation("0123456789abcdef"));
    manifest_status.last_reconcile_time = Some(now);
    manifest_status.set_condition(ConditionType::Ready, status, reason, message, now);
    manifest_status
}

#[test]
fn a_condition_transition_time_changes_only_when_its_status_flips() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let ready = |s: &ManifestStatus| s.condition(ConditionType::Ready).cloned().expect("a Ready condition");

    let stored = store
        .put_status(&status_with_ready(ConditionStatus::False, ConditionReason::NeedsApproval, "held", at(10)))
        .expect("stored");
    assert_eq!(ready(&stored).last_transition_time, at(10));
    // Same status, another reason and message, built afresh: the transition time stays.
    let stored = store
        .put_status(&status_with_ready(ConditionStatus::False, ConditionReason::ProviderUnavailable, "DC down", at(20)))
        .expect("stored");
    assert_eq!(ready(&stored).last_transition_time, at(10));
    assert_eq!(ready(&stored).reason, ConditionReason::ProviderUnavailable);
    assert_eq!(stored.last_reconcile_time, Some(at(20)));
    // Status flips: the time moves.
    let stored = store
        .put_status(&status_with_ready(ConditionStatus::True, ConditionReason::Succeeded, "converged", at(30)))
        .expect("stored");
    assert_eq!(ready(&stored).last_transition_time, at(30));
    assert_eq!(store.get_status(&name("inc-1")).expect("read"), Some(stored.clone()));

    // set_condition itself follows the same rule.
    let mut in_memory = stored.clone();
    in_memory.set_condition(ConditionType::Ready, ConditionStatus::True, ConditionReason::Succeeded, "still", at(40));
    in_memory.set_condition(ConditionType::Stalled, ConditionStatus::False, ConditionReason::Succeeded, "", at(40));
    assert_eq!(ready(&in_memory).last_transition_time, at(30));
    assert_eq!(in_memory.condition(ConditionType::Stalled).expect("set").last_transition_time, at(40));

    let json = serde_json::to_value(&stored).expect("json");
    assert_eq!(json["conditions"][0]["type"], "Ready");
    assert_eq!(json["conditions"][0]["status"], "True");
    assert_eq!(json["conditions"][0]["reason"], "Succeeded");
    assert_eq!(json["conditions"][0]["lastTransitionTime"], "2025-03-01T12:00:30Z");
    assert_eq!(json["observedGeneration"], "0123456789abcdef");

    store.put_status(&ManifestStatus::new(name("inc-2"))).expect("stored");
    let names: Vec<String> = store.list_status().expect("listed").iter().map(|s| s.name.to_string()).collect();
    assert_eq!(names, ["inc-1", "inc-2"]);
    assert!(store.remove_status(&name("inc-1")).expect("removed"));
    assert!(!store.remove_status(&name("inc-1")).expect("removed"));
    assert_eq!(store.get_status(&name("inc-1")).expect("read"), None);
}

#[test]
fn a_pass_worth_of_statuses_is_stored_at_once_keeping_transition_times_and_naming_the_rest() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let ready = |s: &ManifestStatus| s.condition(ConditionType::Ready).cloned().expect("a Ready condition");
    let mut departed = ManifestStatus::new(name("inc-0"));
    departed.set_condition(ConditionType::Ready, ConditionStatus::True, ConditionReason::Succeeded, "", at(5));
    store.put_status(&departed).expect("stored");
    let first = status_with_ready(ConditionStatus::False, ConditionReason::NeedsApproval, "held", at(10));
    assert_eq!(store.put_statuses(std::slice::from_ref(&first)).expect("stored"), [name("inc-0")]);

    // The next pass: inc-1's Ready is still False (its time stays), inc-2 is new, inc-0 is not
    // written and is named as no longer written.
    let again = status_with_ready(ConditionStatus::False, ConditionReason::ProviderUnavailable, "DC down", at(20));
    let mut other = ManifestStatus::new(name("inc-2"));
    other.set_condition(ConditionType::Ready, ConditionStatus::True, ConditionReason::Succeeded, "", at(20));
    let stale = store.put_statuses(&[again, other.clone()]).expect("stored");
    assert_eq!(stale, [name("inc-0")]);
    let stored = store.get_status(&name("inc-1")).expect("read").expect("there");
    assert_eq!(ready(&stored).last_transition_time, at(10), "unchanged status, unchanged time");
    assert_eq!(ready(&stored).reason, ConditionReason::ProviderUnavailable);
    assert_eq!(stored.last_reconcile_time, Some(at(20)));
    assert_eq!(store.get_status(&name("inc-2")).expect("read"), Some(other));
    assert!(store.get_status(&name("inc-0")).expect("read").is_some(), "named, not removed: the caller decides");

    let flipped = status_with_ready(ConditionStatus::True, ConditionReason::Succeeded, "converged", at(30));
    store.put_statuses(&[flipped]).expect("stored");
    let stored = store.get_status(&name("inc-1")).expect("read").expect("there");
    assert_eq!(ready(&stored).last_transition_time, at(30), "a flip moves the time");
}

fn manifest(manifest_name: &str, reason: &str, on_release: OnRelease) -> Manifest {
    let spec = RemediationSpec {
        reason: reason.into(),
        target: Target { identity: identity("sam:alice"), entra_object_id: None },
        active_directory: ActiveDirectoryIntent { disabled: Some(true), ..Default::default() },
        entra_id: EntraIntent::default(),
        expires: None,
        on_release,
        suspend: false,
    };
    let origin = Origin { file: format!("{manifest_name}.yaml"), document: 0, line: 1, column: 1 };
    Manifest::new(name(manifest_name), BTreeMap::new(), BTreeMap::new(), spec, origin).expect("a valid manifest")
}

#[test]
fn first_seen_keeps_the_earliest_time_per_generation() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let one = manifest("inc-1", "INC-1", OnRelease::Leave);
    let changed = manifest("inc-1", "INC-1 (updated)", OnRelease::Leave);
    assert_ne!(one.generation, changed.generation);

    assert_eq!(store.effective_since(&one.name, &one.generation).expect("read"), None);
    assert_eq!(store.record_first_seen(&one.name, &one.generation, at(50)).expect("recorded"), at(50));
    assert_eq!(store.record_first_seen(&one.name, &one.generation, at(90)).expect("recorded"), at(50));
    assert_eq!(store.record_first_seen(&one.name, &one.generation, at(20)).expect("recorded"), at(20));
    assert_eq!(store.effective_since(&one.name, &one.generation).expect("read"), Some(at(20)));
    // Another generation has its own time.
    assert_eq!(store.record_first_seen(&changed.name, &changed.generation, at(100)).expect("recorded"), at(100));
    assert_eq!(store.effective_since(&one.name, &one.generation).expect("read"), Some(at(20)));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.effective_since(&changed.name, &changed.generation).expect("read"), Some(at(100)));
    store.forget_manifest(&one.name).expect("forgotten");
    assert_eq!(store.effective_since(&one.name, &one.generation).expect("read"), None);
    assert_eq!(store.effective_since(&changed.name, &changed.generation).expect("read"), None);
}

#[test]
fn a_deleted_manifest_is_known_as_departed() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let kept = manifest("inc-1", "INC-1", OnRelease::Leave);
    let deleted = manifest("inc-2", "INC-2", OnRelease::Restore);
    store.remember_manifest(&kept).expect("remembered");
    store.remember_manifest(&deleted).expect("remembered");
    drop(store);
    let store = open(dir.path());
    let current: BTreeSet<ManifestName> = [kept.name.clone()].into();
    let departed = store.departed_manifests(&current, "deleted in commit 3f2a1c").expect("read");
    assert_eq!(departed.len(), 1);
    assert_eq!(departed[0].name, deleted.name);
    assert_eq!(departed[0].target, deleted.spec.target);
    assert_eq!(departed[0].on_release, OnRelease::Restore);
    assert_eq!(departed[0].reason, "deleted in commit 3f2a1c");
    assert_eq!(store.known_manifest(&deleted.name).expect("read").expect("known").reason, "INC-2");
    store.forget_manifest(&deleted.name).expect("forgotten");
    assert_eq!(store.departed_manifests(&current, "x").expect("read"), []);
}

#[test]
fn recorded_changes_are_remedys_own_changes_per_identity() {
    use ActionOutcome::*;
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let mut restored = action_record("sam:alice", Action::EnableAccount, Restored, &["inc-1"]);
    restored.cause = Cause::Release { manifest: name("inc-1") };
    let events = [
        action_record("sam:alice", Action::DisableAccount, Succeeded, &["inc-1", "inc-3"]),
        action_record("sam:alice", Action::ForcePasswordChange, Failed, &["inc-1"]),
        action_record("sam:alice", Action::ForcePasswordChange, Denied, &["inc-1"]),
        action_record("sam:bob", Action::DisableAccount, Succeeded, &["inc-2"]),
        action_record("sam:alice", Action::DisableAccount, DriftCorrected, &["inc-1"]),
        action_record("sam:alice", Action::DisableAccount, Held, &["inc-1"]),
        restored,
    ];
    for (i, event) in events.into_iter().enumerate() {
        store.append(at(i as i64 * 10), Event::Action(event)).expect("appended");
    }
    // And through the journal.
    let mut change = intended(0);
    change.identity = identity("sam:alice");
    change.action = Action::SuspendUser;
    change.provider = Provider::EntraId;
    let intent = store.journal_intent(&change).expect("journaled");
    store
        .settle(intent, at(100), &action_record("sam:alice", Action::SuspendUser, Succeeded, &["inc-1"]))
        .expect("settled");

    let recorded = |manifest: &str, action, seconds| RecordedChange {
        manifest: name(manifest),
        identity: identity("sam:alice"),
        action,
        at: at(seconds),
        dc: None,
    };
    assert_eq!(
        store.recorded_changes(&identity("sam:alice")).expect("read"),
        [
            recorded("inc-1", Action::DisableAccount, 0),
            recorded("inc-3", Action::DisableAccount, 0),
            recorded("inc-1", Action::DisableAccount, 40),
            recorded("inc-1", Action::EnableAccount, 60),
            recorded("inc-1", Action::SuspendUser, 100),
        ]
    );
    let bob = store.recorded_changes(&identity("sam:bob")).expect("read");
    assert_eq!(bob.len(), 1);
    assert_eq!(store.recorded_changes(&identity("sam:nobody")).expect("read"), []);
    // A name that is a prefix of another does not see the other's changes.
    assert_eq!(store.recorded_changes(&identity("sam:ali")).expect("read"), []);
    assert_eq!(store.all_recorded_changes().expect("read").len(), 6);
}

/// The records of `ids`, read back from the store.
fn read_back(store: &Store, ids: Vec<RecordId>) -> Vec<HistoryRecord> {
    ids.into_iter().map(|id| store.history_record(id).expect("read").expect("stored")).collect()
}

fn unsettled_ids(store: &Store) -> Vec<u64> {
    store.unsettled().expect("the journal").iter().map(|intent| intent.id.0).collect()
}

fn request(by: &str) -> Event {
    Event::ReconcileRequest(ReconcileRequestEvent { by: by.into(), manifest: None, comment: None })
}

#[test]
fn journal_intents_continue_the_ids_and_never_reuse_them() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    assert_eq!(store.journal_intent(&intended(1)).expect("journaled"), IntentId(1));
    let batch = [intended(2), intended(3), intended(4)];
    assert_eq!(store.journal_intents(&batch).expect("journaled"), [IntentId(2), IntentId(3), IntentId(4)]);
    assert_eq!(store.journal_intents(&[]).expect("nothing to journal"), []);
    let unsettled = store.unsettled().expect("the journal");
    assert_eq!(unsettled.iter().map(|i| i.id.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(unsettled[1..].iter().map(|i| i.change.clone()).collect::<Vec<_>>(), batch);
    // After a restart, batches and single intents go on from the highest id ever given.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.journal_intents(&[intended(5), intended(6)]).expect("journaled"), [IntentId(5), IntentId(6)]);
    assert_eq!(store.journal_intent(&intended(7)).expect("journaled"), IntentId(7));
    assert_eq!(unsettled_ids(&store), [1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn settle_all_appends_one_record_per_intent_in_order() {
    use ActionOutcome::*;
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let first = store.append(at(0), request("jdoe")).expect("appended");
    let changes = [intended(1), intended(2), intended(3), intended(4)];
    let ids = store.journal_intents(&changes).expect("journaled");
    assert_eq!(store.settle_all(&[]).expect("nothing to settle"), []);
    let outcomes = [Succeeded, Failed, Succeeded];
    let settlements: Vec<_> =
        (0..3).map(|i| (ids[i], at(10 + i as i64), settling_record(&changes[i], outcomes[i]))).collect();
    let stored = read_back(&store, store.settle_all(&settlements).expect("settled"));

    assert_eq!(stored.iter().map(|r| r.id.0).collect::<Vec<_>>(), [2, 3, 4]);
    for (record, (intent, when, action)) in stored.iter().zip(&settlements) {
        let mut expected = action.clone();
        expected.intent = Some(*intent);
        assert_eq!((record.at, &record.event), (*when, &Event::Action(expected)));
    }
    let mut everything = vec![first];
    everything.extend(stored.clone());
    assert_eq!(all_records(&store), everything);
    assert_eq!(unsettled_ids(&store), [ids[3].0], "only the intent left out is still journaled");
    let report = store.verify_history().expect("the chain holds");
    assert_eq!((report.records, report.head_hash), (4, stored[2].hash.clone()));
    // The succeeded ones are remedy's changes; the failed one is not.
    let changed = |i: usize| store.recorded_changes(&changes[i].identity).expect("read");
    assert_eq!(changed(0).iter().map(|c| c.at).collect::<Vec<_>>(), [at(10)]);
    assert_eq!(changed(1), []);
    assert_eq!(changed(2).iter().map(|c| c.at).collect::<Vec<_>>(), [at(12)]);
    // Settled for good: after a restart, a second settle is refused.
    drop(store);
    let store = open(dir.path());
    assert!(matches!(store.settle_all(&settlements[..1]), Err(StoreError::UnknownIntent(id)) if id == ids[0]));
    assert_eq!(all_records(&store).len(), 4);
}

#[test]
fn settle_all_settles_all_or_nothing() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let first = store.append(at(0), request("jdoe")).expect("appended");
    let changes = [intended(1), intended(2), intended(3)];
    let ids = store.journal_intents(&changes).expect("journaled");
    let settle = |i: usize| (ids[i], at(10), settling_record(&changes[i], ActionOutcome::Succeeded));
    let unchanged = |store: &Store, case: &str| {
        assert_eq!(all_records(store), std::slice::from_ref(&first), "{case}: nothing appended");
        assert_eq!(unsettled_ids(store), [1, 2, 3], "{case}: nothing settled");
        assert_eq!(store.verify_history().expect("the chain holds").records, 1, "{case}");
        for change in &changes {
            assert_eq!(store.recorded_changes(&change.identity).expect("read"), [], "{case}");
        }
    };

    let unknown = (IntentId(99), at(10), settling_record(&changes[0], ActionOutcome::Succeeded));
    let result = store.settle_all(&[settle(0), unknown, settle(2)]);
    assert!(matches!(result, Err(StoreError::UnknownIntent(IntentId(99)))), "{result:?}");
    unchanged(&store, "an unknown intent");

    let result = store.settle_all(&[settle(0), settle(0)]);
    assert!(matches!(result, Err(StoreError::UnknownIntent(id)) if id == ids[0]), "{result:?}");
    unchanged(&store, "an intent settled twice in one batch");

    let mut wrong_action = settle(1);
    wrong_action.2.action = Action::EnableAccount;
    let result = store.settle_all(&[settle(0), wrong_action]);
    assert!(matches!(result, Err(StoreError::IntentMismatch { intent, .. }) if intent == ids[1]), "{result:?}");
    unchanged(&store, "another action");

    let mut wrong_identity = settle(2);
    wrong_identity.2.identity = identity("sam:mallory");
    let result = store.settle_all(&[settle(0), settle(1), wrong_identity]);
    assert!(matches!(result, Err(StoreError::IntentMismatch { intent, .. }) if intent == ids[2]), "{result:?}");
    unchanged(&store, "another identity");

    // Nothing of the refused batches reached the disk, and the history goes on without a gap.
    drop(store);
    let store = open(dir.path());
    unchanged(&store, "after a restart");
    let stored = read_back(&store, store.settle_all(&[settle(0), settle(1), settle(2)]).expect("settled"));
    assert_eq!(stored.iter().map(|r| r.id.0).collect::<Vec<_>>(), [2, 3, 4]);
    assert!(unsettled_ids(&store).is_empty());
    assert_eq!(store.verify_history().expect("the chain holds").records, 4);
}

#[test]
fn a_pass_larger_than_one_transaction_is_journaled_and_settled_in_order_on_one_chain() {
    // More intents than two chunks: written as several transactions, read back as one run.
    let count = 2 * WRITE_CHUNK + 3;
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let first = store.append(at(0), request("jdoe")).expect("appended");
    let changes: Vec<IntendedChange> = (1..=count as u64).map(intended).collect();
    let ids = store.journal_intents(&changes).expect("journaled");
    assert_eq!(ids, (1..=count as u64).map(IntentId).collect::<Vec<_>>(), "one run of ids, in order");
    let settle = |i: usize| (ids[i], at(10), settling_record(&changes[i], ActionOutcome::Succeeded));

    // A wrong settlement in the last chunk is found before the first chunk is written.
    let mut settlements: Vec<_> = (0..count).map(settle).collect();
    settlements[count - 1].2.action = Action::EnableAccount;
    let result = store.settle_all(&settlements);
    assert!(matches!(result, Err(StoreError::IntentMismatch { intent, .. }) if intent == ids[count - 1]), "{result:?}");
    assert_eq!(all_records(&store), std::slice::from_ref(&first), "nothing settled");
    assert_eq!(unsettled_ids(&store).len(), count);

    let settlements: Vec<_> = (0..count).map(settle).collect();
    let stored = read_back(&store, store.settle_all(&settlements).expect("settled"));
    assert_eq!(stored.iter().map(|r| r.id.0).collect::<Vec<_>>(), (2..=count as u64 + 1).collect::<Vec<_>>());
    let intents: Vec<Option<IntentId>> = stored
        .iter()
        .map(|r| match &r.event {
            Event::Action(record) => record.intent,
            other => panic!("not an action: {other:?}"),
        })
        .collect();
    assert_eq!(intents, ids.iter().copied().map(Some).collect::<Vec<_>>(), "each record names its intent");
    drop(store);
    let store = open(dir.path());
    assert!(unsettled_ids(&store).is_empty());
    let report = store.verify_history().expect("the chain holds across the chunks");
    assert_eq!((report.records, report.head_hash), (count as u64 + 1, stored[count - 1].hash.clone()));
}

#[test]
fn a_pass_worth_of_statuses_larger_than_one_batch_is_stored_whole() {
    let count = 2 * WRITE_CHUNK + 3;
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let statuses: Vec<ManifestStatus> = (0..count).map(|i| ManifestStatus::new(name(&format!("inc-{i:04}")))).collect();
    assert_eq!(store.put_statuses(&statuses).expect("stored"), []);
    assert_eq!(store.list_status().expect("listed").len(), count);
    // The next pass leaves out the first and the last: both named, whichever chunk they were in.
    let stale = store.put_statuses(&statuses[1..count - 1]).expect("stored");
    assert_eq!(stale, [statuses[0].name.clone(), statuses[count - 1].name.clone()]);
}

#[test]
fn append_all_appends_in_order_on_one_chain() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let first = store.append(at(0), request("jdoe")).expect("appended");
    assert_eq!(store.append_all(&[]).expect("nothing to append"), []);
    assert_eq!(all_records(&store), std::slice::from_ref(&first), "an empty batch appends nothing");
    assert_eq!(store.verify_history().expect("the chain holds").head_hash, first.hash);

    let action = action_record("sam:alice", Action::DisableAccount, ActionOutcome::Succeeded, &["inc-1"]);
    let events = [(at(10), Event::Action(action)), (at(20), request("op1")), (at(30), request("op2"))];
    let stored = store.append_all(&events).expect("appended");
    assert_eq!(stored.iter().map(|r| (r.id.0, r.at, r.event.clone())).collect::<Vec<_>>(), {
        let expected = events.iter().zip(2..).map(|((when, event), id)| (id, *when, event.clone()));
        expected.collect::<Vec<_>>()
    });
    let records = all_records(&store);
    assert_eq!(records[1..], stored[..]);
    for pair in records.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "record {} links to the one before", pair[1].id);
    }
    let report = store.verify_history().expect("the chain holds");
    assert_eq!((report.records, report.head_hash), (4, stored[2].hash.clone()));
    assert_eq!(store.recorded_changes(&identity("sam:alice")).expect("read").len(), 1);
    // Durable, and the next append goes on after the batch.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.append(at(40), request("op3")).expect("appended").id, RecordId(5));
    assert_eq!(store.verify_history().expect("the chain holds").records, 5);
}

#[test]
fn a_forgotten_manifest_takes_its_changes_out_of_the_plans_input_but_not_out_of_the_history() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    store
        .append(
            at(1),
            Event::Action(action_record(
                "sam:alice",
                Action::DisableAccount,
                ActionOutcome::Succeeded,
                &["inc-1", "inc-3"],
            )),
        )
        .expect("appended");
    store
        .append(
            at(2),
            Event::Action(action_record("sam:bob", Action::DisableAccount, ActionOutcome::Succeeded, &["inc-1"])),
        )
        .expect("appended");
    store.forget_manifest(&name("inc-1")).expect("forgotten");
    let changes = store.all_recorded_changes().expect("read");
    assert_eq!(changes.len(), 1, "only inc-3's change is left: {changes:?}");
    assert_eq!((changes[0].manifest.as_str(), changes[0].identity.to_string()), ("inc-3", "sam:alice".to_owned()));
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.verify_history().expect("the chain still verifies").records, 2, "the history keeps both");
    assert_eq!(store.all_recorded_changes().expect("read").len(), 1, "durable");
}

#[test]
fn a_whole_set_is_remembered_at_once_keeping_earlier_first_seen_times() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let one = manifest("inc-1", "INC-1", OnRelease::Leave);
    let two = manifest("inc-2", "INC-2", OnRelease::Restore);
    assert_eq!(store.remember_manifests(std::slice::from_ref(&one), at(10)).expect("remembered"), vec![at(10)]);
    let times = store.remember_manifests(&[one.clone(), two.clone()], at(20)).expect("remembered");
    assert_eq!(times, vec![at(10), at(20)], "inc-1 keeps the time it was first seen");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.effective_since(&two.name, &two.generation).expect("read"), Some(at(20)));
    assert_eq!(store.known_manifest(&two.name).expect("read").expect("known").reason, "INC-2");
}

#[test]
fn an_unconfirmed_intent_stays_unsettled_with_its_error() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    let id = store.journal_intent(&intended(1)).expect("journaled");
    store.mark_unconfirmed(&[(id, "operation timed out after 15000ms".into())]).expect("marked");
    drop(store);
    let store = open(dir.path());
    let unsettled = store.unsettled().expect("read");
    assert_eq!(unsettled.len(), 1);
    assert_eq!(unsettled[0].change.unconfirmed.as_deref(), Some("operation timed out after 15000ms"));
    assert!(matches!(store.mark_unconfirmed(&[(IntentId(99), "x".into())]), Err(StoreError::UnknownIntent(_))));
}

/// The notification outbox: it starts after the history written before notifications were
/// configured, feeds records with their events in one step, keeps entries and cursors across a
/// reopen, prunes what every sink is done with, and forgets everything when notifications are
/// turned off.
#[test]
fn store_outbox_feeds_from_the_history_keeps_cursors_and_prunes() {
    let dir = tempfile::tempdir().expect("a tempdir");
    let store = open(dir.path());
    sample_history(&store);
    let head = all_records(&store).last().expect("records").id;
    assert_eq!(store.outbox_start().expect("started"), head, "nothing written before is sent");
    assert!(store.outbox_unfed(100).expect("read").records.is_empty());
    let failed =
        |who: &str| Event::Action(action_record(who, Action::DisableAccount, ActionOutcome::Failed, &["inc-9"]));
    store.append(at(5000), failed("sam:dan")).expect("appended");
    store.append(at(5010), failed("sam:erin")).expect("appended");
    let unfed = store.outbox_unfed(1).expect("read");
    assert_eq!(unfed.records.iter().map(|r| r.id.0).collect::<Vec<_>>(), vec![head.0 + 1], "at most the limit");
    assert_eq!(unfed.fault, None, "the records link to the chain");
    let unfed = store.outbox_unfed(100).expect("read");
    let events = remedy::notify::event::from_records(&unfed.records);
    assert_eq!(events.len(), 2);
    store.outbox_feed(unfed.records[1].id, &events).expect("fed");
    assert!(store.outbox_unfed(100).expect("read").records.is_empty(), "fed once");
    let pushed = remedy::notify::event::provider_recovered("entra-id", Utc::now());
    assert_eq!(store.outbox_push(&pushed).expect("pushed"), 3);
    store.set_notify_cursor("soc", 1).expect("cursor");
    store.set_notify_cursor("chat", 2).expect("cursor");
    drop(store);

    let store = open(dir.path());
    let entries = store.outbox_after(0, 100).expect("entries");
    assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3], "durable, in order");
    assert_eq!(entries[0].notification, events[0]);
    assert_eq!(entries[2].notification, pushed);
    assert_eq!((store.notify_cursor("soc").expect("read"), store.notify_cursor("new").expect("read")), (Some(1), None));
    assert_eq!(store.outbox_after(1, 100).expect("entries").len(), 2, "what soc has not had");
    assert_eq!(store.outbox_prune(1).expect("pruned"), 1);
    assert_eq!(store.outbox_after(0, 100).expect("entries")[0].seq, 2);
    store.retain_notify_cursors(&["chat"]).expect("retained");
    assert_eq!(store.notify_cursor("soc").expect("read"), None, "a removed sink is forgotten");
    assert_eq!(store.outbox_last_seq().expect("read"), 3);

    store.outbox_clear().expect("cleared");
    assert!(store.outbox_after(0, 100).expect("entries").is_empty());
    assert_eq!(store.notify_cursor("chat").expect("read"), None);
    store.append(at(6000), failed("sam:fay")).expect("appended");
    assert!(store.outbox_unfed(100).expect("read").records.is_empty(), "off: nothing is fed");
    let head = all_records(&store).last().expect("records").id;
    assert_eq!(store.outbox_start().expect("started"), head, "on again: from now on, no backlog");
    assert_eq!(store.outbox_push(&pushed).expect("pushed"), 4, "sequence numbers are never reused");
}
