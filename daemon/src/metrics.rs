//! The daemon's metrics, rendered in the Prometheus text exposition format (version 0.0.4) for
//! `GET /metrics`. Counters only grow; the controller updates them after every pass.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use remedy_policies::Provider;

use crate::ad::AdStats;
use crate::entra::GraphStats;
use crate::model::ActionOutcome;

/// Upper bounds (seconds) of the reconcile duration histogram's buckets.
const DURATION_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// How a pass ended, for `remedy_reconciles_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PassOutcome {
    /// Nothing left to do.
    Converged,
    /// Actions were sent and all confirmed, or items wait (blocked, denied...).
    Progressing,
    /// At least one action failed or a provider could not be asked.
    Failed,
    /// The plan waits for approval.
    Held,
    /// The store failed: the pass is retried.
    Error,
}

impl PassOutcome {
    fn label(self) -> &'static str {
        match self {
            PassOutcome::Converged => "converged",
            PassOutcome::Progressing => "progressing",
            PassOutcome::Failed => "failed",
            PassOutcome::Held => "held",
            PassOutcome::Error => "error",
        }
    }
}

#[derive(Debug, Default)]
struct Values {
    reconciles: BTreeMap<PassOutcome, u64>,
    actions: BTreeMap<(Provider, ActionOutcome), u64>,
    provider_errors: BTreeMap<Provider, u64>,
    duration_buckets: [u64; DURATION_BUCKETS.len()],
    duration_sum: f64,
    duration_count: u64,
    queue_depth: u64,
    manifests: u64,
    last_successful_resync: Option<DateTime<Utc>>,
    /// The AD provider's counters, once it has connected.
    ldap: Option<AdStats>,
    /// The Graph client's counters, when Entra ID is configured.
    graph: Option<GraphStats>,
}

/// Shared between the controller (writes) and the API (renders).
#[derive(Debug, Default)]
pub struct Metrics {
    values: Mutex<Values>,
}

impl Metrics {
    fn with<T>(&self, f: impl FnOnce(&mut Values) -> T) -> T {
        f(&mut self.values.lock().unwrap_or_else(PoisonError::into_inner))
    }

    pub fn record_pass(&self, outcome: PassOutcome, duration: Duration) {
        self.with(|v| {
            *v.reconciles.entry(outcome).or_default() += 1;
            let seconds = duration.as_secs_f64();
            for (bucket, bound) in v.duration_buckets.iter_mut().zip(DURATION_BUCKETS) {
                if seconds <= bound {
                    *bucket += 1;
                }
            }
            v.duration_sum += seconds;
            v.duration_count += 1;
        });
    }

    pub fn record_action(&self, provider: Provider, outcome: ActionOutcome) {
        self.with(|v| *v.actions.entry((provider, outcome)).or_default() += 1);
    }

    pub fn record_provider_error(&self, provider: Provider) {
        self.with(|v| *v.provider_errors.entry(provider).or_default() += 1);
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.with(|v| v.queue_depth = depth as u64);
    }

    pub fn set_manifests(&self, count: usize) {
        self.with(|v| v.manifests = count as u64);
    }

    pub fn resync_succeeded(&self, at: DateTime<Utc>) {
        self.with(|v| v.last_successful_resync = Some(at));
    }

    /// The AD provider's request counters (they count from the provider's first connection,
    /// which lasts as long as the daemon).
    pub fn set_ldap(&self, stats: AdStats) {
        self.with(|v| v.ldap = Some(stats));
    }

    /// The Graph client's request counters.
    pub fn set_graph(&self, stats: GraphStats) {
        self.with(|v| v.graph = Some(stats));
    }

    /// The Prometheus text format.
    pub fn render(&self) -> String {
        self.with(|v| {
            let mut out = String::new();
            let family = |out: &mut String, name: &str, kind: &str, help: &str| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            };
            family(&mut out, "remedy_reconciles_total", "counter", "Reconcile passes, by how they ended.");
            for outcome in [
                PassOutcome::Converged,
                PassOutcome::Progressing,
                PassOutcome::Failed,
                PassOutcome::Held,
                PassOutcome::Error,
            ] {
                let count = v.reconciles.get(&outcome).copied().unwrap_or(0);
                let _ = writeln!(out, "remedy_reconciles_total{{outcome=\"{}\"}} {count}", outcome.label());
            }
            family(&mut out, "remedy_actions_total", "counter", "Actions recorded, by provider and outcome.");
            for ((provider, outcome), count) in &v.actions {
                let outcome = serde_json::to_value(outcome).ok().and_then(|o| o.as_str().map(str::to_owned));
                let _ = writeln!(
                    out,
                    "remedy_actions_total{{provider=\"{provider}\",outcome=\"{}\"}} {count}",
                    outcome.unwrap_or_default()
                );
            }
            family(
                &mut out,
                "remedy_provider_errors_total",
                "counter",
                "Passes in which a provider could not be asked or an action of it failed.",
            );
            for provider in [Provider::ActiveDirectory, Provider::EntraId] {
                let count = v.provider_errors.get(&provider).copied().unwrap_or(0);
                let _ = writeln!(out, "remedy_provider_errors_total{{provider=\"{provider}\"}} {count}");
            }
            family(&mut out, "remedy_reconcile_duration_seconds", "histogram", "How long reconcile passes took.");
            for (bound, count) in DURATION_BUCKETS.iter().zip(v.duration_buckets) {
                let _ = writeln!(out, "remedy_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "remedy_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {}", v.duration_count);
            let _ = writeln!(out, "remedy_reconcile_duration_seconds_sum {}", v.duration_sum);
            let _ = writeln!(out, "remedy_reconcile_duration_seconds_count {}", v.duration_count);
            family(&mut out, "remedy_queue_depth", "gauge", "Accounts waiting for a retry.");
            let _ = writeln!(out, "remedy_queue_depth {}", v.queue_depth);
            family(&mut out, "remedy_manifests", "gauge", "Manifests in force.");
            let _ = writeln!(out, "remedy_manifests {}", v.manifests);
            family(
                &mut out,
                "remedy_last_successful_resync_timestamp_seconds",
                "gauge",
                "When the last scheduled resync ended without a failure (Unix time; 0: none yet).",
            );
            let at = v.last_successful_resync.map_or(0.0, |t| t.timestamp_millis() as f64 / 1000.0);
            let _ = writeln!(out, "remedy_last_successful_resync_timestamp_seconds {at}");
            if let Some(ldap) = v.ldap {
                family(
                    &mut out,
                    "remedy_ldap_operations_total",
                    "counter",
                    "LDAP requests sent to Active Directory: connections opened and bound, search requests (one per result page), modifies.",
                );
                for (operation, count) in [("connect", ldap.connects), ("search", ldap.pages), ("modify", ldap.modifies)] {
                    let _ = writeln!(out, "remedy_ldap_operations_total{{operation=\"{operation}\"}} {count}");
                }
                family(&mut out, "remedy_ldap_entries_total", "counter", "Entries Active Directory's searches returned.");
                let _ = writeln!(out, "remedy_ldap_entries_total {}", ldap.entries);
            }
            if let Some(graph) = v.graph {
                family(
                    &mut out,
                    "remedy_graph_requests_total",
                    "counter",
                    "HTTP requests sent to Microsoft Graph and its token endpoint, re-sends included.",
                );
                for (kind, count) in
                    [("token", graph.token_requests), ("batch", graph.batches), ("single", graph.single_requests)]
                {
                    let _ = writeln!(out, "remedy_graph_requests_total{{kind=\"{kind}\"}} {count}");
                }
                family(
                    &mut out,
                    "remedy_graph_batched_requests_total",
                    "counter",
                    "Requests sent inside $batch requests, re-sends included.",
                );
                let _ = writeln!(out, "remedy_graph_batched_requests_total {}", graph.sub_requests);
                family(&mut out, "remedy_graph_throttled_total", "counter", "429 answers from Graph, top-level or per sub-request.");
                let _ = writeln!(out, "remedy_graph_throttled_total {}", graph.throttled);
                family(&mut out, "remedy_graph_retries_total", "counter", "Re-sends of a request or of a sub-request.");
                let _ = writeln!(out, "remedy_graph_retries_total {}", graph.retries);
            }
            out
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histogram_and_gauges() {
        let metrics = Metrics::default();
        metrics.record_pass(PassOutcome::Converged, Duration::from_millis(300));
        metrics.record_pass(PassOutcome::Failed, Duration::from_secs(200));
        metrics.record_action(Provider::ActiveDirectory, ActionOutcome::Succeeded);
        metrics.record_action(Provider::ActiveDirectory, ActionOutcome::Succeeded);
        metrics.record_action(Provider::EntraId, ActionOutcome::DriftCorrected);
        metrics.record_provider_error(Provider::ActiveDirectory);
        metrics.set_queue_depth(3);
        let without_providers = metrics.render();
        assert!(!without_providers.contains("remedy_ldap_") && !without_providers.contains("remedy_graph_"));
        metrics.set_ldap(AdStats { connects: 4, searches: 3, pages: 7, entries: 900, modifies: 2 });
        metrics.set_graph(GraphStats {
            token_requests: 1,
            batches: 5,
            sub_requests: 100,
            single_requests: 2,
            throttled: 3,
            retries: 4,
        });
        let text = metrics.render();
        for line in [
            "remedy_reconciles_total{outcome=\"converged\"} 1",
            "remedy_reconciles_total{outcome=\"failed\"} 1",
            "remedy_reconciles_total{outcome=\"held\"} 0",
            "remedy_actions_total{provider=\"active-directory\",outcome=\"succeeded\"} 2",
            "remedy_actions_total{provider=\"entra-id\",outcome=\"drift-corrected\"} 1",
            "remedy_provider_errors_total{provider=\"active-directory\"} 1",
            "remedy_reconcile_duration_seconds_bucket{le=\"0.25\"} 0",
            "remedy_reconcile_duration_seconds_bucket{le=\"0.5\"} 1",
            "remedy_reconcile_duration_seconds_bucket{le=\"120\"} 1",
            "remedy_reconcile_duration_seconds_bucket{le=\"+Inf\"} 2",
            "remedy_reconcile_duration_seconds_count 2",
            "remedy_queue_depth 3",
            "remedy_last_successful_resync_timestamp_seconds 0",
            "remedy_ldap_operations_total{operation=\"connect\"} 4",
            "remedy_ldap_operations_total{operation=\"search\"} 7",
            "remedy_ldap_operations_total{operation=\"modify\"} 2",
            "remedy_ldap_entries_total 900",
            "remedy_graph_requests_total{kind=\"batch\"} 5",
            "remedy_graph_batched_requests_total 100",
            "remedy_graph_throttled_total 3",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
    }
}
