//! Notifications: the events remedy tells people about, the fixed severity of each, and which
//! sink of `notifications:` wants which (its `events` and `minSeverity`).

use serde::{Deserialize, Serialize};

/// What a notification is about: the closed set of events a sink can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Actions held until an operator approves their plan (blast radius): someone must decide.
    HeldForApproval,
    /// An action was sent (or maybe sent) and not confirmed: an account may not be contained.
    ActionFailed,
    /// Someone undid remedy's change and remedy put it back.
    DriftCorrected,
    /// An account keeps being changed back: a fight with a person or a sync.
    Contested,
    /// A provider (Active Directory, Entra ID) could not be asked: nothing is contained there.
    ProviderUnavailable,
    /// A provider that could not be asked answers again.
    ProviderRecovered,
    /// The history's hash chain does not verify: records were edited or removed.
    ChainVerificationFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::HeldForApproval,
        EventKind::ActionFailed,
        EventKind::DriftCorrected,
        EventKind::Contested,
        EventKind::ProviderUnavailable,
        EventKind::ProviderRecovered,
        EventKind::ChainVerificationFailed,
    ];

    /// The fixed severity of each event (docs/operations.md lists them).
    pub fn severity(self) -> EventSeverity {
        match self {
            EventKind::DriftCorrected | EventKind::ProviderRecovered => EventSeverity::Info,
            EventKind::HeldForApproval | EventKind::Contested => EventSeverity::Warning,
            EventKind::ActionFailed | EventKind::ProviderUnavailable | EventKind::ChainVerificationFailed => {
                EventSeverity::Critical
            }
        }
    }

    /// Its name in `events:` and in the webhook's `type` field.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::HeldForApproval => "held-for-approval",
            EventKind::ActionFailed => "action-failed",
            EventKind::DriftCorrected => "drift-corrected",
            EventKind::Contested => "contested",
            EventKind::ProviderUnavailable => "provider-unavailable",
            EventKind::ProviderRecovered => "provider-recovered",
            EventKind::ChainVerificationFailed => "chain-verification-failed",
        }
    }

    /// A title for people (chat messages).
    pub fn title(self) -> &'static str {
        match self {
            EventKind::HeldForApproval => "Held for approval",
            EventKind::ActionFailed => "Action failed",
            EventKind::DriftCorrected => "Drift corrected",
            EventKind::Contested => "Account contested",
            EventKind::ProviderUnavailable => "Provider unavailable",
            EventKind::ProviderRecovered => "Provider recovered",
            EventKind::ChainVerificationFailed => "History chain verification failed",
        }
    }
}

/// How urgent an event is; a sink gets events of its `minSeverity` and above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventSeverity {
    #[default]
    Info,
    Warning,
    Critical,
}

impl EventSeverity {
    pub fn name(self) -> &'static str {
        match self {
            EventSeverity::Info => "info",
            EventSeverity::Warning => "warning",
            EventSeverity::Critical => "critical",
        }
    }
}

/// What one sink asks for: the events it names (all when `None`) at `min_severity` or above.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter<'a> {
    pub events: Option<&'a [EventKind]>,
    pub min_severity: EventSeverity,
}

impl EventFilter<'_> {
    pub fn wants(&self, kind: EventKind) -> bool {
        self.events.is_none_or(|events| events.contains(&kind)) && kind.severity() >= self.min_severity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_has_its_documented_severity() {
        use EventKind::*;
        use EventSeverity::*;
        let table = [
            (HeldForApproval, Warning),
            (ActionFailed, Critical),
            (DriftCorrected, Info),
            (Contested, Warning),
            (ProviderUnavailable, Critical),
            (ProviderRecovered, Info),
            (ChainVerificationFailed, Critical),
        ];
        assert_eq!(table.len(), EventKind::ALL.len());
        for (kind, severity) in table {
            assert_eq!(kind.severity(), severity, "{kind:?}");
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name(), "the name is the serde form");
        }
    }

    #[test]
    fn a_sink_gets_the_events_it_names_at_its_severity_and_above() {
        let all = EventFilter { events: None, min_severity: EventSeverity::Info };
        assert!(EventKind::ALL.iter().all(|&kind| all.wants(kind)));
        let warnings = EventFilter { events: None, min_severity: EventSeverity::Warning };
        assert!(!warnings.wants(EventKind::DriftCorrected) && !warnings.wants(EventKind::ProviderRecovered));
        assert!(warnings.wants(EventKind::Contested) && warnings.wants(EventKind::ActionFailed));
        let named = [EventKind::DriftCorrected, EventKind::ActionFailed];
        let only = EventFilter { events: Some(&named), min_severity: EventSeverity::Info };
        assert!(only.wants(EventKind::DriftCorrected) && !only.wants(EventKind::Contested));
        let both = EventFilter { events: Some(&named), min_severity: EventSeverity::Critical };
        assert!(both.wants(EventKind::ActionFailed) && !both.wants(EventKind::DriftCorrected));
    }
}
