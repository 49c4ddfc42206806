//! The daemon's metrics for `GET /metrics`, in the Prometheus text exposition format (version
//! 0.0.4), made by the Prometheus client's registry and encoder (`prometheus-client`). Counters
//! only grow; the controller updates them after every pass.
//!
//! The names, types, labels and HELP texts are the ones docs/api.md documents. The client names a
//! counter's family without its `_total` (it adds the suffix) and ends each HELP text with a period
//! of its own, so the names and texts registered here have neither.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use remedy_policies::Provider;

use crate::ad::{AdStats, ChangeWatcherStats};
use crate::entra::{GraphDirectory, GraphStats};
use crate::model::ActionOutcome;

/// The `Content-Type` of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the reconcile duration histogram's buckets.
const DURATION_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];

/// Upper bounds (seconds) of the re-containment histogram's buckets.
const RECONTAINMENT_BUCKETS: [f64; 12] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

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
    const ALL: [PassOutcome; 5] =
        [PassOutcome::Converged, PassOutcome::Progressing, PassOutcome::Failed, PassOutcome::Held, PassOutcome::Error];

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

type Labels<const N: usize> = [(&'static str, String); N];

/// Shared between the controller (writes) and the API (renders).
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels<1>, Counter>,
    actions: Family<Labels<2>, Counter>,
    provider_errors: Family<Labels<1>, Counter>,
    duration: Histogram,
    queue_depth: Gauge,
    manifests: Gauge,
    last_successful_resync: Gauge<f64, std::sync::atomic::AtomicU64>,
    recontainment: Family<Labels<1>, Histogram>,
    contests: Counter,
    contested: Gauge,
    notifications_delivered: Family<Labels<1>, Counter>,
    notifications_failed: Family<Labels<1>, Counter>,
    notifications_expired: Family<Labels<1>, Counter>,
    notifications_pending: Family<Labels<1>, Gauge>,
    providers: Arc<ProviderCounters>,
    /// Held while a pass is recorded and while the text is made, so that a scrape never sees a
    /// pass counted in `remedy_reconciles_total` but not yet in the histogram.
    pass: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels<1>, Counter>::default();
        // Every outcome is shown from the start, at 0.
        for outcome in PassOutcome::ALL {
            let _ = reconciles.get_or_create(&[("outcome", outcome.label().to_owned())]);
        }
        registry.register("remedy_reconciles", "Reconcile passes, by how they ended", reconciles.clone());
        let actions = Family::<Labels<2>, Counter>::default();
        registry.register("remedy_actions", "Actions recorded, by provider and outcome", actions.clone());
        let provider_errors = Family::<Labels<1>, Counter>::default();
        for provider in [Provider::ActiveDirectory, Provider::EntraId] {
            let _ = provider_errors.get_or_create(&[("provider", provider.to_string())]);
        }
        registry.register(
            "remedy_provider_errors",
            "Passes in which a provider could not be asked or an action of it failed",
            provider_errors.clone(),
        );
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register("remedy_reconcile_duration_seconds", "How long reconcile passes took", duration.clone());
        let queue_depth = Gauge::default();
        registry.register("remedy_queue_depth", "Accounts waiting for a retry", queue_depth.clone());
        let manifests = Gauge::default();
        registry.register("remedy_manifests", "Manifests in force", manifests.clone());
        let last_successful_resync = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "remedy_last_successful_resync_timestamp_seconds",
            "When the last scheduled resync ended without a failure (Unix time; 0: none yet)",
            last_successful_resync.clone(),
        );
        let recontainment =
            Family::<Labels<1>, Histogram>::new_with_constructor(|| Histogram::new(RECONTAINMENT_BUCKETS));
        registry.register(
            "remedy_recontainment_seconds",
            "From a change to a managed account being noticed (by source: notification, poll, delta) to its correction confirmed by read-back",
            recontainment.clone(),
        );
        let contests = Counter::default();
        registry.register(
            "remedy_contests",
            "Accounts that became contested (changed back again and again)",
            contests.clone(),
        );
        let contested = Gauge::default();
        registry.register("remedy_contested_accounts", "Accounts contested now", contested.clone());
        let notifications_delivered = Family::<Labels<1>, Counter>::default();
        registry.register(
            "remedy_notifications_delivered",
            "Notifications a sink's receiver accepted (2xx), by sink",
            notifications_delivered.clone(),
        );
        let notifications_failed = Family::<Labels<1>, Counter>::default();
        registry.register(
            "remedy_notifications_failed",
            "Failed attempts to deliver a notification (each retry counts), by sink",
            notifications_failed.clone(),
        );
        let notifications_expired = Family::<Labels<1>, Counter>::default();
        registry.register(
            "remedy_notifications_expired",
            "Notifications dropped undelivered after 7 days of retries, by sink",
            notifications_expired.clone(),
        );
        let notifications_pending = Family::<Labels<1>, Gauge>::default();
        registry.register(
            "remedy_notifications_pending",
            "Notifications written for a sink and not delivered yet, by sink",
            notifications_pending.clone(),
        );
        let providers = Arc::new(ProviderCounters::default());
        registry.register_collector(Box::new(Arc::clone(&providers)));
        Metrics {
            registry,
            reconciles,
            actions,
            provider_errors,
            duration,
            queue_depth,
            manifests,
            last_successful_resync,
            recontainment,
            contests,
            contested,
            notifications_delivered,
            notifications_failed,
            notifications_expired,
            notifications_pending,
            providers,
            pass: Mutex::new(()),
        }
    }
}

impl Metrics {
    pub fn record_pass(&self, outcome: PassOutcome, duration: Duration) {
        let _pass = self.pass.lock().unwrap_or_else(PoisonError::into_inner);
        self.reconciles.get_or_create(&[("outcome", outcome.label().to_owned())]).inc();
        self.duration.observe(duration.as_secs_f64());
    }

    pub fn record_action(&self, provider: Provider, outcome: ActionOutcome) {
        let outcome = serde_json::to_value(outcome).ok().and_then(|o| o.as_str().map(str::to_owned));
        self.actions
            .get_or_create(&[("provider", provider.to_string()), ("outcome", outcome.unwrap_or_default())])
            .inc();
    }

    pub fn record_provider_error(&self, provider: Provider) {
        self.provider_errors.get_or_create(&[("provider", provider.to_string())]).inc();
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth.set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn set_manifests(&self, count: usize) {
        self.manifests.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn resync_succeeded(&self, at: DateTime<Utc>) {
        self.last_successful_resync.set(at.timestamp_millis() as f64 / 1000.0);
    }

    /// The AD provider's request counters (they count from the provider's first connection,
    /// which lasts as long as the daemon).
    pub fn set_ldap(&self, stats: AdStats) {
        self.providers.with(|p| p.ldap = Some(stats));
    }

    /// One change corrected, `latency` after it was noticed.
    /// `source` is how it was noticed: `notification`, `poll` or `delta`.
    pub fn record_recontainment(&self, source: &str, latency: Duration) {
        self.recontainment.get_or_create(&[("source", source.to_owned())]).observe(latency.as_secs_f64());
    }

    pub fn record_contests(&self, count: usize) {
        self.contests.inc_by(count as u64);
    }

    pub fn set_contested(&self, count: usize) {
        self.contested.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    /// The AD change watcher's requests, read at each scrape and added to the provider's.
    pub fn watch_ldap(&self, watcher: ChangeWatcherStats) {
        self.providers.with(|p| p.watcher = Some(watcher));
    }

    /// The Graph delta client's requests, read at each scrape and added to the provider's.
    pub fn watch_graph(&self, graph: Arc<GraphDirectory>) {
        self.providers.with(|p| p.graph_watcher = Some(graph));
    }

    /// The Graph client's request counters.
    pub fn set_graph(&self, stats: GraphStats) {
        self.providers.with(|p| p.graph = Some(stats));
    }

    /// A notification sink: its series are shown from the start, at 0.
    pub fn notification_sink(&self, sink: &str) {
        let label = [("sink", sink.to_owned())];
        let _ = self.notifications_delivered.get_or_create(&label);
        let _ = self.notifications_failed.get_or_create(&label);
        let _ = self.notifications_expired.get_or_create(&label);
        let _ = self.notifications_pending.get_or_create(&label);
    }

    pub fn notification_delivered(&self, sink: &str) {
        self.notifications_delivered.get_or_create(&[("sink", sink.to_owned())]).inc();
    }

    pub fn notification_failed(&self, sink: &str) {
        self.notifications_failed.get_or_create(&[("sink", sink.to_owned())]).inc();
    }

    pub fn notification_expired(&self, sink: &str) {
        self.notifications_expired.get_or_create(&[("sink", sink.to_owned())]).inc();
    }

    pub fn set_notifications_pending(&self, sink: &str, pending: u64) {
        self.notifications_pending
            .get_or_create(&[("sink", sink.to_owned())])
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// The Prometheus text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let _pass = self.pass.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        // Writing into a String cannot fail, and every metric here encodes in this format.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The providers' own request counters, copied from them after each pass: shown only once the
/// provider has reported (AD after its first connection, Graph when Entra ID is configured).
#[derive(Debug, Default)]
struct ProviderCounters {
    latest: Mutex<ProviderStats>,
}

#[derive(Default, Clone)]
struct ProviderStats {
    ldap: Option<AdStats>,
    graph: Option<GraphStats>,
    watcher: Option<ChangeWatcherStats>,
    graph_watcher: Option<Arc<GraphDirectory>>,
}

impl std::fmt::Debug for ProviderStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderStats").field("ldap", &self.ldap).field("graph", &self.graph).finish_non_exhaustive()
    }
}

impl ProviderCounters {
    fn with<T>(&self, f: impl FnOnce(&mut ProviderStats) -> T) -> T {
        f(&mut self.latest.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Writes a counter family of one sample without labels.
fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> Result<(), std::fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Counter)?)
}

/// Writes a counter family of one sample per value of `label`.
fn labelled_counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    samples: &[(&str, u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, count) in samples {
        ConstCounter::new(*count).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

impl Collector for ProviderCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let ProviderStats { ldap, graph, watcher, graph_watcher } = self.with(|p| p.clone());
        let graph = match (graph, graph_watcher.map(|g| g.stats())) {
            (Some(client), Some(delta)) => Some(client + delta),
            (graph, delta) => graph.or(delta),
        };
        let ldap = match (ldap, watcher.map(|w| w.stats())) {
            (Some(pool), Some(watch)) => Some(pool + watch),
            (ldap, watch) => ldap.or(watch),
        };
        if let Some(ldap) = ldap {
            labelled_counters(
                &mut encoder,
                "remedy_ldap_operations",
                "LDAP requests sent to Active Directory: connections opened and bound, search requests (one per result page), modifies.",
                "operation",
                &[("connect", ldap.connects), ("search", ldap.pages), ("modify", ldap.modifies)],
            )?;
            counter(
                &mut encoder,
                "remedy_ldap_entries",
                "Entries Active Directory's searches returned.",
                ldap.entries,
            )?;
            counter(
                &mut encoder,
                "remedy_ldap_dc_switches",
                "Times remedy's connections moved to another domain controller (activeDirectory.domainControllers).",
                ldap.dc_switches,
            )?;
        }
        if let Some(graph) = graph {
            labelled_counters(
                &mut encoder,
                "remedy_graph_requests",
                "HTTP requests sent to Microsoft Graph and its token endpoint, re-sends included.",
                "kind",
                &[("token", graph.token_requests), ("batch", graph.batches), ("single", graph.single_requests)],
            )?;
            counter(
                &mut encoder,
                "remedy_graph_batched_requests",
                "Requests sent inside $batch requests, re-sends included.",
                graph.sub_requests,
            )?;
            counter(
                &mut encoder,
                "remedy_graph_throttled",
                "429 answers from Graph, top-level or per sub-request.",
                graph.throttled,
            )?;
            counter(&mut encoder, "remedy_graph_retries", "Re-sends of a request or of a sub-request.", graph.retries)?;
        }
        Ok(())
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
        metrics.set_ldap(AdStats { connects: 4, searches: 3, pages: 7, entries: 900, modifies: 2, dc_switches: 1 });
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
            // The same series with the same value (the encoder writes a float gauge's 0 as `0.0`).
            let (series, value) = line.rsplit_once(' ').unwrap_or_default();
            let value: f64 = value.parse().unwrap_or(f64::NAN);
            assert!(
                text.lines().any(|l| l.rsplit_once(' ').is_some_and(|(s, v)| s == series && v.parse() == Ok(value))),
                "missing {line:?} in\n{text}"
            );
        }
        // What a scraper reads besides the samples: the families' names (with `_total`), types and
        // HELP texts as docs/api.md has them, in the 0.0.4 format (no OpenMetrics `# EOF`).
        for line in [
            "# HELP remedy_reconciles_total Reconcile passes, by how they ended.",
            "# TYPE remedy_reconciles_total counter",
            "# HELP remedy_actions_total Actions recorded, by provider and outcome.",
            "# TYPE remedy_actions_total counter",
            "# TYPE remedy_provider_errors_total counter",
            "# HELP remedy_reconcile_duration_seconds How long reconcile passes took.",
            "# TYPE remedy_reconcile_duration_seconds histogram",
            "# TYPE remedy_queue_depth gauge",
            "# TYPE remedy_last_successful_resync_timestamp_seconds gauge",
            "# HELP remedy_ldap_entries_total Entries Active Directory's searches returned.",
            "# TYPE remedy_ldap_operations_total counter",
            "# HELP remedy_graph_batched_requests_total Requests sent inside $batch requests, re-sends included.",
            "# TYPE remedy_graph_retries_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("..\n") && !text.contains("# EOF") && !text.contains("_total_total"), "{text}");
        assert!(CONTENT_TYPE.starts_with("text/plain; version=0.0.4"), "{CONTENT_TYPE}");
    }
}
