//! What the API shows and does differently when several instances run on etcd (issue 18): the
//! readiness of a standby, operator requests made on a standby (queued through etcd for the
//! leader, [`crate::ha::requests`]), and the HA block of `/metrics`. With one instance
//! (`ApiState.ha` absent) none of this applies.

use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use remedy_policies::plan::PlanId;
use remedy_policies::ManifestName;
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ApiError;
use super::ApiState;
use crate::controller::{CommandError, Progress};
use crate::ha::requests::{QueuedRequest, RequestKind};
use crate::ha::{HaState, HaView, Role};
use crate::store::Store;

/// This instance's HA view when it does not lead now: its operator requests go to the leader.
pub(super) fn standby(state: &ApiState) -> Option<&HaView> {
    state.ha.as_ref().filter(|ha| !ha.is_leader())
}

/// Whether the instance is ready (`/readyz`, the web page's health page). One instance, or the
/// leader: a manifest set loaded, every provider asked, the store working, not shutting down. A
/// standby loads no manifests and asks no provider: it is ready once its store has every entry of
/// the log it knows of and etcd answers, so that it serves up-to-date reads and can queue requests.
pub fn ready(progress: &Progress, ha: Option<&HaState>) -> bool {
    let acting = progress.loaded
        && progress.unavailable_providers.is_empty()
        && progress.store_error.is_none()
        && !progress.shutting_down;
    match ha.map(|ha| (ha.role, ha)) {
        None | Some((Role::Leader, _)) => acting,
        Some((Role::Standby, ha)) => ha.caught_up && ha.etcd_error.is_none(),
        Some((Role::EtcdUnavailable, _)) => false,
    }
}

/// A request made on a standby, queued for the leader: what `202` answers there.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(super) struct Queued {
    /// Always `true`: the request is queued in etcd; the leader records it in the history (with
    /// `by`) when it takes it, within about a second while one leads.
    queued: bool,
    /// The instance that leads, as this standby last saw it; `null` when none leads now (the
    /// request waits for the next leader).
    #[schema(required = true)]
    leader: Option<String>,
    /// The caller's name, from `api.tokens`.
    by: String,
    /// The manifest to reconcile (`POST /v1/manifests/{name}/reconcile`).
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<ManifestName>,
    /// The plan approved (`POST /v1/approvals/{planId}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    plan_id: Option<PlanId>,
}

impl Queued {
    /// The leader's instance id, if one leads.
    pub(super) fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }
}

/// What a standby checks before it queues a request, from its replica of the store (the leader
/// checks again when it takes the request): the manifest must have a status, the plan must be
/// held by one.
pub(super) async fn check(store: &Store, kind: &RequestKind) -> Result<(), ApiError> {
    let store = store.clone();
    let statuses = super::blocking(move || store.list_status()).await?;
    let refused = match kind {
        RequestKind::Reconcile { manifest: None } => None,
        RequestKind::Reconcile { manifest: Some(name) } => {
            statuses.iter().all(|status| &status.name != name).then(|| CommandError::UnknownManifest(name.clone()))
        }
        RequestKind::Approve { plan_id } => {
            let held: Vec<String> =
                statuses.iter().filter_map(|s| s.held_plan_id.as_ref()).map(PlanId::to_string).collect();
            let held_here = statuses.iter().any(|s| s.held_plan_id.as_ref() == Some(plan_id));
            (!held_here).then(|| {
                let shown = if held.is_empty() { "none".to_owned() } else { dedup(held).join(", ") };
                CommandError::NotHeld(plan_id.clone(), shown)
            })
        }
    };
    match refused {
        Some(error) => Err(super::command_error(error)),
        None => Ok(()),
    }
}

fn dedup(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items.dedup();
    items
}

/// Queues `kind` for the leader through etcd, made by `by` on this standby. `503 unavailable`
/// with etcd's answer when etcd does not take it.
pub(super) async fn queue(
    ha: &HaView,
    by: &str,
    comment: Option<String>,
    kind: RequestKind,
) -> Result<Queued, ApiError> {
    let state = ha.state();
    let request = QueuedRequest {
        by: by.to_owned(),
        comment,
        at: Utc::now(),
        via: state.instance_id.clone(),
        kind: kind.clone(),
    };
    if let Err(error) = ha.queue(&request).await {
        tracing::warn!(by, request = ?kind, %error, "a request made on this standby could not be queued for the leader");
        return Err(ApiError::unavailable(format!(
            "this instance ({}) does not lead and cannot queue the request for the leader: etcd did not take it: {error}",
            state.instance_id
        )));
    }
    let leader = state.leader.map(|l| l.instance_id);
    tracing::info!(by, request = ?kind, leader = leader.as_deref().unwrap_or("none"), "a request made on this standby is queued for the leader");
    let (manifest, plan_id) = match kind {
        RequestKind::Reconcile { manifest } => (manifest, None),
        RequestKind::Approve { plan_id } => (None, Some(plan_id)),
    };
    Ok(Queued { queued: true, leader, by: by.to_owned(), manifest, plan_id })
}

type Instance = [(&'static str, String); 1];

/// The HA block of `/metrics`, labelled `instance="<id>"`: appended to the controller's metrics.
/// Made afresh from the state at each scrape (the runtime keeps the counts).
pub(super) fn metrics(ha: &HaView) -> String {
    let state = ha.state();
    let labels: Instance = [("instance", state.instance_id.clone())];
    let mut registry = Registry::default();
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: i64| {
        let family = Family::<Instance, Gauge>::default();
        family.get_or_create(&labels).set(value);
        registry.register(name, help, family);
    };
    let counter = |registry: &mut Registry, name: &str, help: &str, value: u64| {
        let family = Family::<Instance, Counter>::default();
        family.get_or_create(&labels).inc_by(value);
        registry.register(name, help, family);
    };
    gauge(
        &mut registry,
        "remedy_ha_leader",
        "Whether this instance leads now (1) or not (0)",
        i64::from(state.role == Role::Leader),
    );
    let lease = Family::<Instance, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    lease.get_or_create(&labels).set(state.lease_remaining_seconds.unwrap_or(0.0));
    registry.register(
        "remedy_ha_lease_remaining_seconds",
        "How much of this leader's lease surely remains (0 when it does not lead)",
        lease,
    );
    counter(&mut registry, "remedy_ha_terms", "Terms of leadership this instance won since it started", state.terms);
    gauge(
        &mut registry,
        "remedy_ha_replicated_seq",
        "The last entry of the shared write log applied to this instance's store",
        i64::try_from(state.replicated_through).unwrap_or(i64::MAX),
    );
    counter(
        &mut registry,
        "remedy_ha_sends_refused",
        "Sends to AD or Graph refused because the lease had sendTimeout or less left",
        ha.refused_sends(),
    );
    gauge(
        &mut registry,
        "remedy_ha_etcd_up",
        "Whether etcd answered this instance's last request (1) or not (0)",
        i64::from(state.etcd_error.is_none()),
    );
    let mut out = String::new();
    // Writing into a String cannot fail, and every metric here encodes in this format.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ha::LeaderView;

    fn state(role: Role, caught_up: bool, etcd_error: Option<&str>) -> HaState {
        HaState {
            instance_id: "remedy-b".into(),
            role,
            leader: Some(LeaderView { instance_id: "remedy-a".into(), since: None }),
            leading_since: None,
            lease_remaining_seconds: None,
            lease_ttl_seconds: 8,
            replicated_through: 12,
            caught_up,
            etcd_error: etcd_error.map(str::to_owned),
            terms: 0,
        }
    }

    #[test]
    fn a_standby_is_ready_once_caught_up_with_etcd_answering_a_leader_as_one_instance() {
        let idle = Progress::default();
        let acting = Progress { loaded: true, ..Progress::default() };
        assert!(!ready(&idle, None), "one instance without a manifest set");
        assert!(ready(&acting, None));
        assert!(ready(&idle, Some(&state(Role::Standby, true, None))), "a standby loads no manifests");
        assert!(!ready(&idle, Some(&state(Role::Standby, false, None))), "not caught up with the log");
        assert!(!ready(&idle, Some(&state(Role::Standby, true, Some("no quorum")))), "etcd does not answer");
        assert!(!ready(&acting, Some(&state(Role::EtcdUnavailable, true, Some("no quorum")))));
        assert!(!ready(&idle, Some(&state(Role::Leader, true, None))), "a leader without its manifest set yet");
        assert!(ready(&acting, Some(&state(Role::Leader, true, None))));
    }
}
