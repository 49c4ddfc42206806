//! # remedy-graph-sim: a Microsoft Graph TEST DOUBLE
//!
//! **This is not Microsoft Graph.** It is a small HTTP server, for remedy's tests and demo, that follows
//! the documented wire contract of the few Microsoft Graph and Microsoft identity platform endpoints
//! remedy's Entra ID provider uses, closely enough that a client passing its tests against the
//! simulator works against the real service by configuration alone. Where the documentation is silent
//! the simulator says so in a comment ("Assumption") next to the code that guesses.
//!
//! One simulator is one tenant with one app registration (client credentials with a secret, and
//! optionally certificates and federated identity credentials). Its URL serves as both the identity
//! platform's authority host and the Graph URL:
//!
//! | endpoint | what it does |
//! |---|---|
//! | `POST /{tenant}/oauth2/v2.0/token` | client credentials grant (secret, certificate assertion or federated token) → opaque bearer token |
//! | `GET /v1.0/users/{id or userPrincipalName}` | `$select` |
//! | `GET /v1.0/users` | `$filter` (`id`/`userPrincipalName` with `eq`, `in`, `or`), `$select`, `$top`, nextLink paging |
//! | `GET /v1.0/users/delta` | change tracking: `$select`, nextLink/deltaLink, `$deltatoken=latest`, `@removed`, expiry |
//! | `PATCH /v1.0/users/{id}` | `accountEnabled`, `passwordProfile` |
//! | `POST /v1.0/users/{id}/revokeSignInSessions` | sets `signInSessionsValidFromDateTime` |
//! | `GET /v1.0/identityProtection/riskyUsers/{id}` | risk state, level, last update |
//! | `POST /v1.0/identityProtection/riskyUsers/confirmCompromised` | rate-limited per second |
//! | `POST /v1.0/$batch` | up to 20 sub-requests, `dependsOn`, per-sub-request throttling |
//!
//! Every Graph answer carries `request-id` and `client-request-id`; every error is Graph's OData error
//! body. Directory sync (Entra Connect) is simulated on demand ([`Sim::run_directory_sync`]) or on an
//! interval: synced users get back the `accountEnabled` that on-premises AD has.
//!
//! Separate from Graph, `/_sim/*` lets a script inspect and steer the simulator: `GET /_sim/state`,
//! `GET /_sim/log` (`DELETE` clears it), `POST /_sim/sync`, `POST /_sim/faults` (a JSON [`Fault`]),
//! `POST /_sim/on-premises/{id}` (`{"accountEnabled": bool}`), `POST /_sim/users/{id}`
//! (`{"accountEnabled": bool}`: changed out of band, as in the portal), `DELETE /_sim/users/{id}`
//! (`?permanent=true`: not restorable). These need no authentication, which is
//! acceptable only because the simulator listens on loopback: never expose it on a network.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use remedy_graph_sim::{spawn, SimConfig, SimUser};
//! let sim = spawn(SimConfig { users: vec![SimUser::new("staff0042@remedy.test").synced()], ..SimConfig::new("tenant", "app", "secret") }).await?;
//! let authority_host_and_graph_url = sim.url();
//! # Ok(()) }
//! ```

mod assertion;
mod batch;
mod delta;
mod graph;
mod inspect;
mod model;
mod odata;
mod state;
pub mod testdata;
mod token;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use assertion::{sign_jwt, thumbprint_sha256};
pub use model::{
    format_duration, parse_duration, Fault, FederatedCredential, LoggedRequest, ReplicaLag, SimConfig, SimUser,
    Throttle, FEDERATED_AUDIENCE, RISK_LEVELS, RISK_STATES, USER_TYPES,
};

use state::Shared;

/// A running simulator. Dropping it (or [`Sim::shutdown`]) stops the server.
pub struct Sim {
    shared: Arc<Shared>,
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
    directory_sync: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("url", &self.url())
            .field("tenant_id", &self.shared.config.tenant_id)
            .finish_non_exhaustive()
    }
}

/// Starts a simulator on a free port of 127.0.0.1.
pub async fn spawn(config: SimConfig) -> std::io::Result<Sim> {
    spawn_on(config, SocketAddr::from(([127, 0, 0, 1], 0))).await
}

/// Starts a simulator on `address` (keep it a loopback address: `/_sim` has no authentication).
pub async fn spawn_on(config: SimConfig, address: SocketAddr) -> std::io::Result<Sim> {
    let problems = config.problems();
    if !problems.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, problems.join("; ")));
    }
    let sync_interval = config.directory_sync_interval;
    let shared = Arc::new(Shared::new(config));
    let listener = tokio::net::TcpListener::bind(address).await?;
    let address = listener.local_addr()?;
    let router = Router::new()
        .route("/{tenant}/oauth2/v2.0/token", post(token::token))
        .merge(inspect::routes())
        .fallback(graph::gateway)
        .with_state(shared.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serving = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stopped.await;
        });
        if let Err(error) = serving.await {
            tracing::error!(%error, "graph-sim server stopped");
        }
    });
    let directory_sync = sync_interval.filter(|i| !i.is_zero()).map(|interval| {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                shared.lock().directory_sync();
            }
        })
    });
    Ok(Sim { shared, address, stop: Some(stop), server: Some(server), directory_sync })
}

impl Sim {
    /// `http://127.0.0.1:PORT`: both the authority host (token endpoint) and the Graph URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The address the server listens on.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Current users, sorted by userPrincipalName.
    pub fn state(&self) -> Vec<SimUser> {
        self.shared.lock().users.clone()
    }

    /// One user, by object id or userPrincipalName (case-insensitive).
    pub fn user(&self, id_or_upn: &str) -> Option<SimUser> {
        let inner = self.shared.lock();
        inner.find_user(id_or_upn).map(|index| inner.users[index].clone())
    }

    /// Queues a fault for the next Graph requests (see [`Fault`]).
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().inject(fault);
    }

    /// One simulated Entra Connect cycle: every synced user's accountEnabled becomes what AD says
    /// (`on_premises_account_enabled`), undoing cloud-side changes to it.
    pub fn run_directory_sync(&self) {
        self.shared.lock().directory_sync();
    }

    /// Records what on-premises AD says about the user (takes effect at the next directory sync).
    pub fn set_on_premises_enabled(&self, id_or_upn: &str, enabled: bool) {
        set_on_premises(&self.shared, id_or_upn, enabled);
    }

    /// Sets the user's accountEnabled out of band, as someone in the portal (or an attacker with a
    /// privileged role) would: no Graph request, no permission check, but a change `/users/delta`
    /// shows. `false` when there is no such user.
    pub fn set_account_enabled(&self, id_or_upn: &str, enabled: bool) -> bool {
        set_account_enabled(&self.shared, id_or_upn, enabled)
    }

    /// Deletes the user: soft (restorable in Entra ID, `@removed` reason `changed`) or for good
    /// (reason `deleted`). `false` when there is no such user.
    pub fn remove_user(&self, id_or_upn: &str, permanently: bool) -> bool {
        remove_user(&self.shared, id_or_upn, permanently)
    }

    /// Every request so far (token and Graph, and each `$batch` sub-request flagged `in_batch`), in
    /// arrival order. `/_sim` requests are not logged. A request still being answered shows status 0.
    pub fn log(&self) -> Vec<LoggedRequest> {
        self.shared.lock().log()
    }

    pub fn clear_log(&self) {
        self.shared.lock().clear_log();
    }

    /// Grows by one (or more) with each change to the users; lets a caller notice changes cheaply.
    pub fn users_version(&self) -> u64 {
        self.shared.lock().users_version
    }

    /// Stops the server, letting requests in flight finish (for at most a second).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let abort = server.abort_handle();
            if tokio::time::timeout(Duration::from_secs(1), server).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        for task in [self.server.take(), self.directory_sync.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

fn set_account_enabled(shared: &Shared, id_or_upn: &str, enabled: bool) -> bool {
    let mut inner = shared.lock();
    let Some(index) = inner.find_user(id_or_upn) else {
        return false;
    };
    inner.set_account_enabled(index, enabled);
    true
}

fn remove_user(shared: &Shared, id_or_upn: &str, permanently: bool) -> bool {
    let mut inner = shared.lock();
    let Some(index) = inner.find_user(id_or_upn) else {
        return false;
    };
    inner.remove_user(index, permanently);
    true
}

fn set_on_premises(shared: &Shared, id_or_upn: &str, enabled: bool) -> bool {
    let mut inner = shared.lock();
    let Some(index) = inner.find_user(id_or_upn) else {
        return false;
    };
    if inner.users[index].on_premises_account_enabled != enabled {
        inner.users[index].on_premises_account_enabled = enabled;
        inner.users_changed();
    }
    true
}
