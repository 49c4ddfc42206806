//! One store kept by several instances (issue 18), without etcd: a store replicated through an
//! in-memory write log, and a second store that applies the log's entries, must hold the same
//! history chain, journal, approvals and statuses; a write the log refuses is written nowhere.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use remedy::model::{ActionOutcome, ApprovalEvent, Event, ReconcileRequestEvent};
use remedy::store::{layout, LogRefusal, Store, StoreError, WriteLog};
use remedy_policies::plan::PlanId;
use remedy_policies::Action;

use crate::store::{action_record, all_records, at, intended, name, open, settling_record};

/// A log in memory: entry `n` at index `n - 1`; refuses while `refuse` is set.
#[derive(Debug, Default)]
struct MemoryLog {
    entries: Mutex<Vec<Vec<u8>>>,
    refuse: Mutex<Option<LogRefusal>>,
}

impl WriteLog for MemoryLog {
    fn append(&self, seq: u64, entry: &[u8]) -> Result<(), LogRefusal> {
        if let Some(refusal) = self.refuse.lock().expect("the log's lock").clone() {
            return Err(refusal);
        }
        let mut entries = self.entries.lock().expect("the log's lock");
        if seq != entries.len() as u64 + 1 {
            return Err(LogRefusal { detail: format!("entry {seq} is taken"), ambiguous: false });
        }
        entries.push(entry.to_vec());
        Ok(())
    }
}

impl MemoryLog {
    fn apply_to(&self, replica: &Store) {
        for (index, entry) in self.entries.lock().expect("the log's lock").iter().enumerate() {
            replica.apply_log_entry(index as u64 + 1, entry).expect("the entry applies");
        }
    }
}

/// Everything a leader writes in a pass and around it: journal, settle, append, approval,
/// statuses.
fn leader_writes(store: &Store) {
    let changes: Vec<_> = (1..=5).map(intended).collect();
    let ids = store.journal_intents(&changes).expect("journaled");
    let settlements: Vec<_> = ids
        .iter()
        .zip(&changes)
        .take(3)
        .map(|(id, change)| (*id, at(100), settling_record(change, ActionOutcome::Succeeded)))
        .collect();
    store.settle_all(&settlements).expect("settled");
    store.mark_unconfirmed(&[(ids[3], "no answer".into())]).expect("marked");
    store
        .append(
            at(200),
            Event::ReconcileRequest(ReconcileRequestEvent { by: "jdoe".into(), manifest: None, comment: None }),
        )
        .expect("appended");
    let plan: PlanId =
        serde_json::from_value(serde_json::json!("0123456789abcdef0123456789abcdef")).expect("a plan id");
    store
        .append_approval(at(300), ApprovalEvent { plan_id: plan, by: "jdoe".into(), comment: Some("ok".into()) })
        .expect("approved");
    store
        .append_all(&[(
            at(400),
            Event::Action(action_record("sam:zoe", Action::DisableAccount, ActionOutcome::Held, &["inc-9"])),
        )])
        .expect("appended");
    store.set_open_notices(&BTreeSet::from(["sam:zoe/disable".to_owned()])).expect("notices");
}

#[test]
fn a_replica_that_applies_the_log_holds_the_same_chain_journal_and_approvals() {
    let (leader_dir, replica_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let log = Arc::new(MemoryLog::default());
    let leader = open(leader_dir.path()).replicated_through(log.clone());
    leader_writes(&leader);
    let replica = open(replica_dir.path());
    log.apply_to(&replica);

    let (ours, theirs) = (all_records(&leader), all_records(&replica));
    assert_eq!(ours.len(), 6, "3 settled, a request, an approval, a held action");
    assert_eq!(ours, theirs, "the same records, ids and hashes");
    assert_eq!(
        leader.verify_history().expect("verified").head_hash,
        replica.verify_history().expect("verified").head_hash
    );
    assert_eq!(
        leader.unsettled().expect("journal"),
        replica.unsettled().expect("journal"),
        "the same 2 unsettled intents"
    );
    assert_eq!(replica.unsettled().expect("journal").len(), 2);
    assert_eq!(leader.approvals().expect("approvals"), replica.approvals().expect("approvals"));
    assert_eq!(replica.open_notices().expect("notices").len(), 1);
    assert_eq!(leader.replica_applied().expect("seq"), replica.replica_applied().expect("seq"));

    // Applying again changes nothing: each entry once.
    log.apply_to(&replica);
    assert_eq!(all_records(&replica), ours);
}

#[test]
fn a_write_the_log_refuses_is_written_nowhere() {
    let dir = tempfile::tempdir().expect("dir");
    let log = Arc::new(MemoryLog::default());
    let leader = open(dir.path()).replicated_through(log.clone());
    leader_writes(&leader);
    let before = all_records(&leader);
    *log.refuse.lock().expect("the log's lock") =
        Some(LogRefusal { detail: "not the leader any more".into(), ambiguous: false });
    let refused = leader.append(
        at(900),
        Event::Action(action_record("sam:eve", Action::DisableAccount, ActionOutcome::Succeeded, &["inc-1"])),
    );
    assert!(
        matches!(&refused, Err(StoreError::Replication { detail, .. }) if detail.contains("not the leader")),
        "{refused:?}"
    );
    let journaled = leader.journal_intents(&[intended(50)]);
    assert!(matches!(journaled, Err(StoreError::Replication { .. })), "{journaled:?}");
    assert_eq!(all_records(&leader), before, "no record appended locally");
    assert_eq!(leader.unsettled().expect("journal").len(), 2, "no intent journaled locally: nothing may be sent");
}

#[test]
fn entries_apply_in_order_only_and_a_half_applied_replica_is_rebuilt() {
    let (leader_dir, replica_dir) = (tempfile::tempdir().expect("dir"), tempfile::tempdir().expect("dir"));
    let log = Arc::new(MemoryLog::default());
    let leader = open(leader_dir.path()).replicated_through(log.clone());
    leader_writes(&leader);
    let entries = log.entries.lock().expect("the log's lock").clone();
    let replica = open(replica_dir.path());
    let gap = replica.apply_log_entry(2, &entries[1]);
    assert!(matches!(gap, Err(StoreError::Replication { .. })), "entry 2 before entry 1: {gap:?}");
    assert!(all_records(&replica).is_empty());

    // A stop half-way through an entry (the marker left behind) makes the replica rebuild.
    replica.apply_log_entry(1, &entries[0]).expect("entry 1");
    drop(replica);
    {
        let db = sled::open(replica_dir.path()).expect("sled");
        let meta = db.open_tree(layout::META).expect("meta");
        meta.insert(layout::REPLICA_APPLYING_KEY, b"2".to_vec()).expect("marked");
        db.flush().expect("flushed");
    }
    let replica = open(replica_dir.path());
    assert!(replica.replica_needs_rebuild().expect("read"));
    replica.clear_replica().expect("cleared");
    assert_eq!(replica.replica_applied().expect("seq"), 0);
    assert!(replica.unsettled().expect("journal").is_empty());
    log.apply_to(&replica);
    assert_eq!(all_records(&replica), all_records(&leader));
    assert!(!replica.replica_needs_rebuild().expect("read"));
}

#[test]
fn a_store_written_by_one_instance_is_told_apart_from_a_replica() {
    let dir = tempfile::tempdir().expect("dir");
    let single = open(dir.path());
    assert!(!single.written_without_log().expect("read"), "an empty store may become a replica");
    single
        .append(
            at(1),
            Event::ReconcileRequest(ReconcileRequestEvent {
                by: "jdoe".into(),
                manifest: Some(name("inc-1")),
                comment: None,
            }),
        )
        .expect("appended");
    assert!(single.written_without_log().expect("read"), "its history did not come from a log");
}
