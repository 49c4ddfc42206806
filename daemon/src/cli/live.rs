//! The live directories for the one-shot commands (`plan` without a snapshot, `apply`): the
//! daemon's [`Providers`], with the Graph client's default retry budget (a command waits out a
//! throttle rather than reporting it), and AD connected at once.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result};
use remedy_policies::manifest::Target;
use remedy_policies::observed::ObservedState;
use remedy_policies::Identity;

use super::inputs::Inputs;
use crate::entra::GraphOptions;
use crate::providers::Providers;

/// A runtime for one command: small, since one command talks to one or two servers.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Sets up the configured providers and connects to AD, if it is configured. A connection failure
/// is returned (the command cannot do what it was asked), with the DC's answer.
pub async fn connect(inputs: &Inputs) -> Result<Providers> {
    let config_dir = inputs.config_path.parent().unwrap_or(Path::new("."));
    let mut providers = Providers::with_graph_options(&inputs.config, config_dir, GraphOptions::default())?;
    providers.connect_ad().await?;
    Ok(providers)
}

/// Observes the targets in every configured provider.
pub fn observe(inputs: &Inputs, targets: &[Target], risk_for: &BTreeSet<Identity>) -> Result<ObservedState> {
    super::inputs::prepare_kerberos(&inputs.config, &inputs.config_path)?;
    runtime()?.block_on(async {
        let mut providers = connect(inputs).await?;
        Ok(providers.observe(targets, risk_for).await)
    })
}
