//! The store's memory when a pass settles many actions: remedy's `Store` (writes in chunks of
//! `WRITE_CHUNK`) against the same writes as one sled transaction each, as remedy did before.
//!
//!     cargo bench -p remedy --bench store_memory -- [--actions N]
//!
//! Default: 10,000 actions, the size of `scripts/bench scale`'s first pass. Each side runs in a
//! child process of its own on a fresh store in a temporary directory, so that each peak RSS
//! (`VmHWM` of `/proc/self/status`) is that side's alone:
//! - remedy: `Store::journal_intents` of N disables, then `Store::settle_all` of N records;
//! - the baseline: sled opened with remedy's settings and trees, the same N changes journaled in
//!   one transaction, then settled in one transaction (each intent removed, its record appended
//!   to the history and to the per-identity index, the chain head updated), as JSON of the same
//!   changes and records. remedy's store also wraps each intent with its id and each record with its
//!   chain hashes, so the baseline writes slightly less: its peak is, if anything, low.
//!
//! It prints both peaks and their ratio. `--actions 2000` is the CI smoke size. A benchmark: it
//! fails only when a step fails, never on the figures.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use remedy::model::{ActionOutcome, ActionRecord, IntendedChange, IntentId, ManifestRef};
use remedy::store::{layout, sled_config, Store};
use remedy_policies::manifest::Generation;
use remedy_policies::plan::{Cause, Resolved};
use remedy_policies::{Action, Identity, ManifestName, Provider};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

const CHILD_FLAG: &str = "--child";

fn main() {
    let mut args = std::env::args().skip(1);
    let mut actions = 10_000usize;
    let mut child = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--actions" => {
                let value = args.next().unwrap_or_else(|| usage("--actions needs a value"));
                actions = value.parse().unwrap_or_else(|_| usage(&format!("--actions {value:?} is not a number")));
            }
            CHILD_FLAG => child = Some(args.next().unwrap_or_else(|| usage("--child needs a side"))),
            // cargo bench passes `--bench`.
            "--bench" => {}
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    match child.as_deref() {
        Some(side) => run_child(side, actions),
        None => compare(actions),
    }
}

fn usage(problem: &str) -> ! {
    eprintln!("store_memory: {problem}\nusage: cargo bench -p remedy --bench store_memory -- [--actions N]");
    std::process::exit(2)
}

fn compare(actions: usize) {
    println!("store memory: {actions} actions journaled, then settled, on a fresh store");
    let remedy = measure("remedy", actions);
    let baseline = measure("one-transaction", actions);
    println!();
    println!("| side | actions | peak RSS (VmHWM) | journal + settle |");
    println!("|---|---:|---:|---:|");
    println!("| remedy `Store` (chunks) | {actions} | {:.1} MiB | {:.2} s |", remedy.0, remedy.1);
    println!("| sled, one transaction each | {actions} | {:.1} MiB | {:.2} s |", baseline.0, baseline.1);
    println!();
    println!("ratio: {:.2}x (baseline peak / remedy peak)", baseline.0 / remedy.0);
}

/// Runs one side in a child process: its peak RSS in MiB and the seconds it took.
fn measure(side: &str, actions: usize) -> (f64, f64) {
    let exe = std::env::current_exe().expect("the bench's own path");
    let output = Command::new(exe)
        .args([CHILD_FLAG, side, "--actions", &actions.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot start the {side} side: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the {side} side failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let field = |name: &str| -> f64 {
        stdout
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or_else(|| panic!("the {side} side printed no {name}:\n{stdout}"))
    };
    (field("peak-mib:"), field("seconds:"))
}

fn run_child(side: &str, actions: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let changes: Vec<IntendedChange> = (0..actions).map(intended).collect();
    let started = Instant::now();
    match side {
        "remedy" => remedy_side(dir.path(), &changes),
        "one-transaction" => one_transaction_side(dir.path(), &changes),
        other => usage(&format!("unknown side {other:?}")),
    }
    println!("seconds: {:.3}", started.elapsed().as_secs_f64());
    println!("peak-mib: {:.1}", peak_rss_mib());
}

fn remedy_side(path: &Path, changes: &[IntendedChange]) {
    let (store, _) = Store::open(path.join("store")).expect("the store opens");
    let ids = store.journal_intents(changes).expect("journaled");
    let settlements: Vec<_> = ids.iter().zip(changes).map(|(id, change)| (*id, at(), record(change))).collect();
    let settled = store.settle_all(&settlements).expect("settled");
    assert_eq!(settled.len(), changes.len());
}

/// The baseline: remedy's trees and values, each phase as one transaction.
fn one_transaction_side(path: &Path, changes: &[IntendedChange]) {
    let db = sled_config(&path.join("sled")).open().expect("sled opens");
    let tree = |name: &str| db.open_tree(name).expect("a tree");
    let (meta, journal, history, by_identity) =
        (tree(layout::META), tree(layout::JOURNAL), tree(layout::HISTORY), tree(layout::CHANGES_BY_IDENTITY));
    (&meta, &journal)
        .transaction(|(meta, journal)| {
            for (id, change) in (1u64..).zip(changes) {
                journal.insert(&id.to_be_bytes(), json(change))?;
            }
            meta.insert(layout::NEXT_INTENT_ID_KEY, json(&(changes.len() as u64 + 1)))?;
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .expect("journaled");
    db.flush().expect("flushed");
    (&meta, &journal, &history, &by_identity)
        .transaction(|(meta, journal, history, by_identity)| {
            for (id, change) in (1u64..).zip(changes) {
                journal.remove(&id.to_be_bytes())?;
                let mut record = record(change);
                record.intent = Some(IntentId(id));
                history.insert(&id.to_be_bytes(), json(&record))?;
                let mut key = change.identity.to_string().into_bytes();
                key.push(0);
                key.extend_from_slice(&id.to_be_bytes());
                by_identity.insert(key, json(&(at(), change.action)))?;
                meta.insert(layout::HISTORY_HEAD_KEY, json(&(id, format!("{id:064x}"))))?;
            }
            Ok::<_, ConflictableTransactionError<()>>(())
        })
        .expect("settled");
    db.flush().expect("flushed");
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("JSON")
}

fn at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).single().expect("a valid time")
}

fn manifest_ref(i: usize) -> ManifestRef {
    ManifestRef {
        name: ManifestName::new(&format!("bench-{i:05}")).expect("a manifest name"),
        generation: serde_json::from_value::<Generation>(serde_json::json!("0123456789abcdef")).expect("a generation"),
        commit: Some("3f2a1c9d5e7b".into()),
    }
}

fn intended(i: usize) -> IntendedChange {
    let identity: Identity = format!("sam:bench{i:05}").parse().expect("an identity");
    IntendedChange {
        at: at(),
        identity,
        resolved: Resolved {
            ad_dn: Some(format!("CN=bench{i:05},OU=bench-scale,OU=Tests,OU=Remedy,DC=remedy,DC=test")),
            ad_object_guid: None,
            entra_id: None,
        },
        provider: Provider::ActiveDirectory,
        action: Action::DisableAccount,
        manifests: vec![manifest_ref(i)],
        before: "0x200".into(),
        after: "0x202".into(),
        cause: Cause::Desired,
        reason: format!("INC-{i}: disable the account"),
        unconfirmed: None,
        awaiting_until: None,
    }
}

fn record(change: &IntendedChange) -> ActionRecord {
    ActionRecord {
        duration_ms: 7,
        acting_account: Some("CN=svc-remedy,OU=Service,DC=remedy,DC=test".into()),
        domain_controller: None,
        ..change.settled(ActionOutcome::Succeeded, change.after.clone(), None)
    }
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmHWM line");
    kib / 1024.0
}
