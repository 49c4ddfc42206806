//! Which notifications remedy's records and observations make: pure functions, table-tested.

use chrono::{DateTime, Utc};
use remedy_policies::notify::EventKind;

use crate::model::{ActionOutcome, ActionRecord, Event, HistoryRecord, Notification};

/// The id of the notification of history record `record`: stable across restarts and
/// deliveries, and unlike any other store's (the record's hash is part of it).
pub fn record_event_id(record: &HistoryRecord) -> String {
    format!("rec-{}-{}", record.id, record.hash.get(..12).unwrap_or(&record.hash))
}

fn base(kind: EventKind, id: String, at: DateTime<Utc>, summary: String) -> Notification {
    Notification {
        id,
        kind,
        severity: kind.severity(),
        at,
        summary,
        history_record: None,
        manifests: Vec::new(),
        identities: Vec::new(),
        count: 1,
        action: None,
        provider: None,
        detail: None,
    }
}

fn of_action(kind: EventKind, record: &HistoryRecord, action: &ActionRecord, summary: String) -> Notification {
    let mut n = base(kind, record_event_id(record), record.at, summary);
    n.history_record = Some(record.id);
    n.manifests = action.manifests.iter().map(|m| m.name.to_string()).collect();
    n.identities = vec![action.identity.to_string()];
    n.action = Some(action.action.to_string());
    n.provider = Some(action.provider.to_string());
    n
}

/// The notifications of history records, in their order. The held actions of one plan among
/// `records` (the same `error`, which names the plan) make one `held-for-approval` notification,
/// at the place of the first, counted.
pub fn from_records(records: &[HistoryRecord]) -> Vec<Notification> {
    let mut out: Vec<Notification> = Vec::new();
    let mut held: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for record in records {
        match &record.event {
            Event::Action(action) if action.outcome == ActionOutcome::Held => {
                let why = action.error.clone().unwrap_or_default();
                if let Some(&at) = held.get(&why) {
                    join_held(&mut out[at], action);
                    continue;
                }
                let mut n = of_action(
                    EventKind::HeldForApproval,
                    record,
                    action,
                    format!("{} of {} held until an operator approves the plan", action.action, action.identity),
                );
                n.detail = action.error.clone();
                held.insert(why, out.len());
                out.push(n);
            }
            Event::Action(action) if action.outcome == ActionOutcome::Failed => {
                let mut n = of_action(
                    EventKind::ActionFailed,
                    record,
                    action,
                    format!("{} of {} in {} failed", action.action, action.identity, action.provider),
                );
                n.detail = action.error.clone();
                out.push(n);
            }
            Event::Action(action) if action.outcome == ActionOutcome::DriftCorrected => {
                let mut n = of_action(
                    EventKind::DriftCorrected,
                    record,
                    action,
                    format!(
                        "{} of {} was undone in {} and remedy put it back ({} → {})",
                        action.action, action.identity, action.provider, action.before, action.after
                    ),
                );
                n.detail = action.note.clone();
                out.push(n);
            }
            Event::Contested(contest) => {
                let mut n = base(
                    EventKind::Contested,
                    record_event_id(record),
                    record.at,
                    format!(
                        "{} keeps being changed back: corrected {} times within {} s; remedy spaces its corrections",
                        contest.identity, contest.corrections, contest.window_seconds
                    ),
                );
                n.history_record = Some(record.id);
                n.manifests = contest.manifests.iter().map(ToString::to_string).collect();
                n.identities = vec![contest.identity.to_string()];
                n.detail = contest.source.as_ref().map(|source| format!("noticed by {source}"));
                out.push(n);
            }
            _ => {}
        }
    }
    out
}

/// Counts one more held action of a plan into its notification.
fn join_held(n: &mut Notification, action: &ActionRecord) {
    n.count += 1;
    let identity = action.identity.to_string();
    if n.identities.len() < Notification::MAX_IDENTITIES && !n.identities.contains(&identity) {
        n.identities.push(identity);
    }
    for manifest in &action.manifests {
        let name = manifest.name.to_string();
        if !n.manifests.contains(&name) {
            n.manifests.push(name);
        }
    }
    if n.action.as_deref() != Some(action.action.to_string().as_str()) {
        n.action = None;
    }
    if n.provider.as_deref() != Some(action.provider.to_string().as_str()) {
        n.provider = None;
    }
    n.summary = format!("{} actions held until an operator approves the plan", n.count);
}

/// A provider that could not be asked in the latest pass (`name` as `/readyz` shows it).
pub fn provider_unavailable(name: &str, why: &str, at: DateTime<Utc>) -> Notification {
    let mut n = base(
        EventKind::ProviderUnavailable,
        new_id(),
        at,
        format!("{name} could not be asked: accounts are not contained there until it answers"),
    );
    n.provider = Some(name.to_owned());
    n.detail = Some(why.to_owned());
    n.count = 0;
    n
}

/// A provider that answers again.
pub fn provider_recovered(name: &str, at: DateTime<Utc>) -> Notification {
    let mut n = base(EventKind::ProviderRecovered, new_id(), at, format!("{name} answers again"));
    n.provider = Some(name.to_owned());
    n.count = 0;
    n
}

/// The history's hash chain does not verify.
pub fn chain_failure(fault: &str, at: DateTime<Utc>) -> Notification {
    let mut n = base(
        EventKind::ChainVerificationFailed,
        new_id(),
        at,
        "the history's hash chain does not verify: records were edited or removed".to_owned(),
    );
    n.detail = Some(fault.to_owned());
    n.count = 0;
    n
}

fn new_id() -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    bytes[8..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    format!("evt-{}", uuid::Builder::from_random_bytes(bytes).into_uuid())
}

#[cfg(test)]
mod tests {
    use remedy_policies::plan::{Cause, Resolved};
    use remedy_policies::{Action, Identity, ManifestName, Provider};

    use super::*;
    use crate::model::{ContestedEvent, ManifestRef, RecordId};

    fn action(id: u64, identity: &str, outcome: ActionOutcome, error: Option<&str>) -> HistoryRecord {
        let manifest = ManifestRef {
            name: ManifestName::new("inc-1").unwrap(),
            generation: serde_json::from_value(serde_json::json!("0123456789abcdef")).unwrap(),
            commit: None,
        };
        HistoryRecord {
            id: RecordId(id),
            at: Utc::now(),
            event: Event::Action(ActionRecord {
                intent: None,
                manifests: vec![manifest],
                reason: "spray".to_owned(),
                identity: identity.parse::<Identity>().unwrap(),
                resolved: Resolved::default(),
                provider: Provider::ActiveDirectory,
                action: Action::DisableAccount,
                cause: Cause::Desired,
                before: "enabled".to_owned(),
                after: "disabled".to_owned(),
                outcome,
                error: error.map(str::to_owned),
                note: None,
                duration_ms: 3,
                acting_account: None,
                domain_controller: None,
            }),
            prev_hash: "0".repeat(64),
            hash: format!("{id:064x}"),
        }
    }

    #[test]
    fn each_record_makes_its_event_or_none() {
        let plan = Some("held until plan p-1 is approved (too many changes at once)");
        let records = vec![
            action(1, "sam:alice", ActionOutcome::Succeeded, None),
            action(2, "sam:bob", ActionOutcome::Failed, Some("insufficient access")),
            action(3, "sam:carol", ActionOutcome::DriftCorrected, None),
            action(4, "sam:dan", ActionOutcome::Held, plan),
            action(5, "sam:erin", ActionOutcome::Held, plan),
            action(6, "sam:fay", ActionOutcome::Held, plan),
            action(7, "sam:gus", ActionOutcome::Denied, Some("denied")),
            action(8, "sam:hal", ActionOutcome::Held, plan),
            action(9, "sam:ida", ActionOutcome::AwaitingConfirmation, None),
            action(
                10,
                "sam:jo",
                ActionOutcome::Held,
                Some("held until plan p-2 is approved (too many changes at once)"),
            ),
        ];
        let events = from_records(&records);
        let kinds: Vec<_> = events.iter().map(|n| (n.kind, n.count, n.history_record.map(|r| r.0))).collect();
        assert_eq!(
            kinds,
            vec![
                (EventKind::ActionFailed, 1, Some(2)),
                (EventKind::DriftCorrected, 1, Some(3)),
                // The held actions of plan p-1, though a denial came between: one event.
                (EventKind::HeldForApproval, 4, Some(4)),
                // Another plan: another event.
                (EventKind::HeldForApproval, 1, Some(10)),
            ]
        );
        assert_eq!(events[0].detail.as_deref(), Some("insufficient access"));
        assert_eq!(events[0].severity, remedy_policies::notify::EventSeverity::Critical);
        assert_eq!(events[2].identities.len(), 4);
        assert!(events[2].summary.starts_with("4 actions held"), "{}", events[2].summary);
        assert_eq!(events[0].id, format!("rec-2-{}", &format!("{:064x}", 2)[..12]));
        assert_eq!(from_records(&records), events, "the same records make the same ids");
    }

    #[test]
    fn a_contest_names_the_account_and_its_manifests() {
        let record = HistoryRecord {
            id: RecordId(9),
            at: Utc::now(),
            event: Event::Contested(ContestedEvent {
                identity: "sam:alice".parse::<Identity>().unwrap(),
                manifests: vec![ManifestName::new("inc-1").unwrap()],
                corrections: 3,
                window_seconds: 600,
                since: Utc::now(),
                when_changed: None,
                source: Some("notification".to_owned()),
                next_correction: None,
            }),
            prev_hash: "0".repeat(64),
            hash: "ab".repeat(32),
        };
        let events = from_records(&[record]);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, EventKind::Contested);
        assert_eq!(events[0].manifests, vec!["inc-1".to_owned()]);
        assert!(events[0].summary.contains("3 times"), "{}", events[0].summary);
    }

    #[test]
    fn provider_and_chain_events_have_fresh_ids_and_their_severity() {
        let now = Utc::now();
        let down = provider_unavailable("active-directory", "connection refused", now);
        let up = provider_recovered("active-directory", now);
        assert_eq!(down.severity, remedy_policies::notify::EventSeverity::Critical);
        assert_eq!(up.severity, remedy_policies::notify::EventSeverity::Info);
        assert_ne!(down.id, up.id);
        assert!(chain_failure("record 3 was changed", now).id.starts_with("evt-"));
    }
}
