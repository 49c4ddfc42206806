//! `remedy serve`: the daemon. Watches the manifest directory and keeps the directories as the
//! manifests declare, until SIGTERM or SIGINT (see [`crate::controller`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use remedy_policies::config::{Config, HaConfig};
use tokio::sync::watch;

use super::inputs::{config_relative, prepare_kerberos, read_config};
use crate::api::{ApiState, Tokens};
use crate::controller::{Backoff, Clock, Controller, Settings, Surface};
use crate::coord::etcd::EtcdCoordination;
use crate::ha::{Ha, HaSettings, Term};
use crate::providers::Providers;
use crate::schedule::ResyncSchedule;
use crate::store::Store;
use crate::watch::ManifestWatcher;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long, default_value = "remedy.yaml")]
    config: PathBuf,
    /// The manifest directory; default: `manifests.path` from the configuration.
    #[arg(long)]
    manifests: Option<PathBuf>,
}

pub fn run(args: &ServeArgs) -> Result<ExitCode> {
    let config = read_config(&args.config)?;
    let config_dir = args.config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let manifest_dir = args.manifests.clone().unwrap_or_else(|| config_relative(&args.config, &config.manifests.path));
    let store_path = config_relative(&args.config, &config.store.path);
    let resync = ResyncSchedule::parse(&config.resync).with_context(|| format!("{}: resync", args.config.display()))?;
    prepare_kerberos(&config, &args.config)?;
    let runtime =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let (store, report) =
            Store::open(&store_path).with_context(|| format!("cannot open the store {}", store_path.display()))?;
        if report.unsettled_intents > 0 {
            tracing::warn!(intents = report.unsettled_intents, "actions were interrupted by the last stop: they are re-checked against the directories before anything is planned");
        }
        let setup = Setup { config, config_dir, manifest_dir, resync, store_moved_aside: report.moved_aside.clone() };
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        if setup.config.api.tokens.is_empty() {
            tracing::warn!("api.tokens is empty: the API answers only /healthz and /readyz");
        }
        match setup.config.ha.clone() {
            None => serve_one(setup, store, &store_path, shutdown).await,
            Some(ha) => serve_several(setup, &ha, store, &store_path, shutdown).await,
        }
    })
}

/// What both ways of serving start from.
struct Setup {
    config: Config,
    config_dir: PathBuf,
    manifest_dir: PathBuf,
    resync: ResyncSchedule,
    store_moved_aside: Option<PathBuf>,
}

impl Setup {
    fn settings(&self) -> Settings {
        Settings {
            guardrails: self.config.guardrails.clone(),
            resync: self.resync.clone(),
            manifest_dir: self.manifest_dir.clone(),
            backoff: Backoff::default(),
            store_moved_aside: self.store_moved_aside.clone(),
            contest: self.config.contest.limits(),
        }
    }

    fn watch_manifests(&self) -> Result<(ManifestWatcher, tokio::sync::mpsc::Receiver<crate::watch::WatchEvent>)> {
        ManifestWatcher::start(self.manifest_dir.clone(), self.config.manifests.debounce)
            .with_context(|| format!("cannot watch the manifest directory {}", self.manifest_dir.display()))
    }

    fn started(&self, listener: &crate::api::Bound, store_path: &Path) {
        let scheme = if listener.is_tls() { "https" } else { "http" };
        tracing::info!(
            manifests = %self.manifest_dir.display(), store = %store_path.display(), resync = %self.config.resync,
            api = %format!("{scheme}://{}", listener.address()), "remedy serve started"
        );
    }
}

/// One instance: the controller runs for the life of the process.
async fn serve_one(setup: Setup, store: Store, store_path: &Path, shutdown: watch::Receiver<bool>) -> Result<ExitCode> {
    let config = &setup.config;
    let providers = Providers::new(config, &setup.config_dir)?;
    let (watcher, events) = setup.watch_manifests()?;
    let listener = crate::api::serve(&config.api, &setup.config_dir).await?;
    let (mut controller, handle) = Controller::new(setup.settings(), store.clone(), providers, Clock::System);
    if let Some(wiring) = crate::drift::start(config, &setup.config_dir, &store, handle.metrics()).await? {
        controller = controller.with_drift(wiring);
    }
    let notifier = crate::notify::Notifier::new(&config.notifications, &setup.config_dir, &store, &handle)
        .context("cannot set up notifications")?;
    setup.started(&listener, store_path);
    let notifications = notifier.as_ref().map(|n| n.status()).unwrap_or_default();
    let notify = notifier.map(|notifier| tokio::spawn(notifier.run(shutdown.clone())));
    let state = ApiState { store, handle, tokens: Arc::new(Tokens::new(&config.api.tokens)), notifications, ha: None };
    let api = tokio::spawn(listener.run(crate::api::router(state), shutdown.clone()));
    controller.run(events, || watcher.rescan(), shutdown).await.context("the store failed")?;
    stop_api(api).await;
    if let Some(notify) = notify {
        stop_notifications(notify).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Several instances on etcd: every instance serves the API from its replica of the store; the
/// one elected leader runs a controller (and the watchers and notifier) for each term it wins.
async fn serve_several(
    setup: Setup,
    ha_config: &HaConfig,
    store: Store,
    store_path: &Path,
    shutdown: watch::Receiver<bool>,
) -> Result<ExitCode> {
    let config = &setup.config;
    let instance_id = ha_config.instance_id_or(&hostname());
    let coord = EtcdCoordination::from_config(&ha_config.etcd, &setup.config_dir)
        .context("cannot set up the etcd client (ha.etcd)")?;
    let settings = HaSettings {
        instance_id: instance_id.clone(),
        prefix: ha_config.etcd.prefix.clone(),
        lease_ttl: ha_config.lease_ttl,
        send_timeout: ha_config.send_timeout,
    };
    let (ha, store) = Ha::new(coord, settings, store).context("cannot prepare the store as a replica")?;
    let ha = Arc::new(ha);
    let listener = crate::api::serve(&config.api, &setup.config_dir).await?;
    let surface = Surface::new(setup.store_moved_aside.clone());
    let handle = surface.handle(store.clone(), Clock::System);
    let notifications = crate::notify::NotifyStatus::default();
    let state = ApiState {
        store: store.clone(),
        handle: handle.clone(),
        tokens: Arc::new(Tokens::new(&config.api.tokens)),
        notifications: notifications.clone(),
        ha: Some(ha.view()),
    };
    setup.started(&listener, store_path);
    tracing::info!(instance = %instance_id, etcd = ?ha_config.etcd.endpoints, prefix = %ha_config.etcd.prefix, "several instances: standing by until elected");
    let api = tokio::spawn(listener.run(crate::api::router(state), shutdown.clone()));
    let setup = &setup;
    let lead = |term: Term| {
        let (store, surface, handle, notifications, ha) =
            (store.clone(), surface.clone(), handle.clone(), notifications.clone(), Arc::clone(&ha));
        async move {
            let result = lead_term(setup, &ha, store, surface.clone(), handle, notifications, term).await;
            surface.stand_by();
            result
        }
    };
    ha.run(lead, shutdown).await;
    stop_api(api).await;
    Ok(ExitCode::SUCCESS)
}

/// One term of leadership: the controller, the watchers, the notifier and the queue of requests
/// from standbys, until the term ends. A lost lease abandons the pass in flight at once (its
/// sends are refused and its writes fenced anyway); a shutdown lets it finish, as with one
/// instance.
async fn lead_term(
    setup: &Setup,
    ha: &Ha,
    store: Store,
    surface: Surface,
    handle: crate::controller::ControllerHandle,
    notifications: crate::notify::NotifyStatus,
    term: Term,
) -> Result<()> {
    let config = &setup.config;
    let providers = Providers::new(config, &setup.config_dir)?.with_gate(ha.gate());
    let (watcher, events) = setup.watch_manifests()?;
    let mut controller = Controller::on(setup.settings(), store.clone(), providers, Clock::System, surface);
    if let Some(wiring) = crate::drift::start(config, &setup.config_dir, &store, handle.metrics()).await? {
        controller = controller.with_drift(wiring);
    }
    let notifier = crate::notify::Notifier::new(&config.notifications, &setup.config_dir, &store, &handle)
        .context("cannot set up notifications")?
        .map(|notifier| notifier.sharing(&notifications));
    let notify = notifier.map(|notifier| tokio::spawn(notifier.run(term.ended.clone())));
    let requests = ha.serve_requests(handle.clone(), term.ended.clone());
    let run = controller.run(events, || watcher.rescan(), term.ended.clone());
    let lost = {
        let mut ended = term.ended.clone();
        let shutdown = term.shutdown.clone();
        async move {
            let _ = ended.wait_for(|ended| *ended).await;
            if *shutdown.borrow() {
                std::future::pending::<()>().await;
            }
        }
    };
    let result = tokio::select! {
        result = run => result.context("the store failed"),
        () = requests => Ok(()),
        () = lost => {
            tracing::warn!("the lease is lost: the pass in flight (if any) is abandoned; its journaled intents are settled by the next leader");
            Ok(())
        }
    };
    if let Some(notify) = notify {
        stop_notifications(notify).await;
    }
    result
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "remedy".to_owned())
}

async fn stop_api(api: tokio::task::JoinHandle<Result<(), std::io::Error>>) {
    match tokio::time::timeout(std::time::Duration::from_secs(5), api).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(error))) => tracing::error!(%error, "the API server failed"),
        Ok(Err(join)) => tracing::error!(%join, "the API server task failed"),
        Err(_) => tracing::warn!("the API server did not stop within 5 s"),
    }
}

async fn stop_notifications(notify: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(std::time::Duration::from_secs(10), notify).await.is_err() {
        tracing::warn!("notifications did not stop within 10 s; undelivered ones are sent after the next start");
    }
}

/// Returns on SIGTERM or SIGINT.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::error!(%error, "cannot listen for SIGTERM; only SIGINT stops remedy");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
