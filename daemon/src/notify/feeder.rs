//! The feeder: writes what happened into the outbox — provider health from the controller's
//! progress, the history's new records, and chain faults — and prunes what every sink has had.

use std::collections::BTreeMap;

use chrono::Utc;

use super::{blocking, event, CHAIN_CHECK_EVERY, FEED_BATCH};
use crate::store::{Store, StoreError};

/// Writes what happened into the outbox.
pub(super) struct Feeder {
    store: Store,
    sinks: Vec<String>,
    /// Providers unavailable after the latest pass, as notified.
    down: BTreeMap<String, String>,
    last_fault: Option<String>,
    last_full_check: Option<std::time::Instant>,
}

impl Feeder {
    /// A feeder for the sinks named, nothing notified yet.
    pub(super) fn new(store: Store, sinks: Vec<String>) -> Feeder {
        Feeder { store, sinks, down: BTreeMap::new(), last_fault: None, last_full_check: None }
    }

    /// One round: provider health, new history records, the chain when due, pruning. Returns the
    /// newest outbox sequence number.
    pub(super) async fn round(&mut self, unavailable: BTreeMap<String, String>) -> Result<u64, StoreError> {
        let now = Utc::now();
        let mut health = Vec::new();
        for (name, why) in &unavailable {
            if !self.down.contains_key(name) {
                health.push(event::provider_unavailable(name, why, now));
            }
        }
        for name in self.down.keys() {
            if !unavailable.contains_key(name) {
                health.push(event::provider_recovered(name, now));
            }
        }
        let full_check = self.last_full_check.is_none_or(|at| at.elapsed() >= CHAIN_CHECK_EVERY);
        let store = self.store.clone();
        let sinks = self.sinks.clone();
        let last_fault = self.last_fault.clone();
        let reported = blocking(move || {
            for notification in &health {
                store.outbox_push(notification)?;
            }
            // A fault is told once (until another is found), before the records it casts doubt on.
            let mut reported = last_fault;
            let mut report = |fault: String| -> Result<(), StoreError> {
                if reported.as_ref() != Some(&fault) {
                    tracing::error!(%fault, "THE HISTORY'S HASH CHAIN DOES NOT VERIFY");
                    store.outbox_push(&event::chain_failure(&fault, Utc::now()))?;
                    reported = Some(fault);
                }
                Ok(())
            };
            let mut found = false;
            if full_check {
                match store.verify_history() {
                    Ok(_) => {}
                    Err(StoreError::ChainBroken(broken)) => {
                        found = true;
                        report(broken.to_string())?;
                    }
                    Err(error) => return Err(error),
                }
            }
            loop {
                let unfed = store.outbox_unfed(FEED_BATCH)?;
                let Some(last) = unfed.records.last() else { break };
                if let (Some(fault), false) = (unfed.fault, found) {
                    found = true;
                    report(fault)?;
                }
                store.outbox_feed(last.id, &event::from_records(&unfed.records))?;
            }
            let done = sinks
                .iter()
                .map(|sink| store.notify_cursor(sink).map(Option::unwrap_or_default))
                .collect::<Result<Vec<u64>, _>>()?;
            if let Some(&through) = done.iter().min() {
                store.outbox_prune(through)?;
            }
            Ok(reported)
        })
        .await?;
        // Only once written: a round the store failed is done again, transitions included.
        self.down = unavailable;
        self.last_fault = reported;
        if full_check {
            self.last_full_check = Some(std::time::Instant::now());
        }
        let store = self.store.clone();
        blocking(move || store.outbox_last_seq()).await
    }
}
