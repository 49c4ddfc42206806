//! `remedy serve`: the daemon. Watches the manifest directory and keeps the directories as the
//! manifests declare, until SIGTERM or SIGINT (see [`crate::controller`]).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::sync::watch;

use super::inputs::{config_relative, prepare_kerberos, read_config};
use crate::api::{ApiState, Tokens};
use crate::controller::{Backoff, Clock, Controller, Settings};
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
        let providers = Providers::new(&config, &config_dir)?;
        let (watcher, events) = ManifestWatcher::start(manifest_dir.clone(), config.manifests.debounce)
            .with_context(|| format!("cannot watch the manifest directory {}", manifest_dir.display()))?;
        let settings = Settings {
            guardrails: config.guardrails.clone(),
            resync,
            manifest_dir: manifest_dir.clone(),
            backoff: Backoff::default(),
            store_moved_aside: report.moved_aside.clone(),
            contest: config.contest.limits(),
        };
        let listener = crate::api::serve(&config.api, &config_dir).await?;
        let (mut controller, handle) = Controller::new(settings, store.clone(), providers, Clock::System);
        if let Some(wiring) = crate::drift::start(&config, &config_dir, &store, handle.metrics()).await? {
            controller = controller.with_drift(wiring);
        }
        let notifier = crate::notify::Notifier::new(&config.notifications, &config_dir, &store, &handle)
            .context("cannot set up notifications")?;
        let (stop, shutdown) = watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop.send(true);
        });
        if config.api.tokens.is_empty() {
            tracing::warn!("api.tokens is empty: the API answers only /healthz and /readyz");
        }
        let scheme = if listener.is_tls() { "https" } else { "http" };
        tracing::info!(
            manifests = %manifest_dir.display(), store = %store_path.display(), resync = %config.resync,
            api = %format!("{scheme}://{}", listener.address()), "remedy serve started"
        );
        let notifications = notifier.as_ref().map(|n| n.status()).unwrap_or_default();
        let notify = notifier.map(|notifier| tokio::spawn(notifier.run(shutdown.clone())));
        let state = ApiState { store, handle, tokens: Arc::new(Tokens::new(&config.api.tokens)), notifications };
        let api = tokio::spawn(listener.run(crate::api::router(state), shutdown.clone()));
        controller.run(events, || watcher.rescan(), shutdown).await.context("the store failed")?;
        match tokio::time::timeout(std::time::Duration::from_secs(5), api).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => tracing::error!(%error, "the API server failed"),
            Ok(Err(join)) => tracing::error!(%join, "the API server task failed"),
            Err(_) => tracing::warn!("the API server did not stop within 5 s"),
        }
        if let Some(notify) = notify {
            if tokio::time::timeout(std::time::Duration::from_secs(10), notify).await.is_err() {
                tracing::warn!("notifications did not stop within 10 s; undelivered ones are sent after the next start");
            }
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })
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
