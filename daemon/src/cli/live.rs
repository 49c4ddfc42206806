//! The live directories for the one-shot commands (`plan` without a snapshot, `apply`).

use std::path::Path;

use anyhow::{Context, Result};
use remedy_policies::observed::ObservedState;
use std::collections::BTreeSet;

use remedy_policies::manifest::Target;
use remedy_policies::Identity;

use super::plan::Inputs;
use crate::ad::LdapDirectory;
use crate::entra::GraphDirectory;

/// A runtime for one command: small, since one command talks to one or two servers.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Connects to the configured AD, if any. A connection failure is returned (the command cannot do
/// what it was asked), with the DC's answer.
pub async fn connect_ad(inputs: &Inputs) -> Result<Option<LdapDirectory>> {
    let Some(config) = &inputs.config.active_directory else {
        return Ok(None);
    };
    if config.is_insecure() {
        tracing::warn!(url = %config.url, "allowInsecure is set: the action account's password may travel unencrypted or to an unverified server");
    }
    let config_dir = inputs.config_path.parent().unwrap_or(Path::new("."));
    let directory = LdapDirectory::connect(config, config_dir)
        .await
        .with_context(|| format!("cannot connect to Active Directory at {}", config.url))?;
    Ok(Some(directory.with_protected_groups(&inputs.config.guardrails.protected_groups)))
}

/// Builds the Graph client, if Entra ID is configured (no request is sent yet).
pub fn connect_entra(inputs: &Inputs) -> Result<Option<GraphDirectory>> {
    let Some(config) = &inputs.config.entra_id else {
        return Ok(None);
    };
    let config_dir = inputs.config_path.parent().unwrap_or(Path::new("."));
    let directory = GraphDirectory::new(config, config_dir)
        .with_context(|| format!("cannot set up the Microsoft Graph client for tenant {}", config.tenant_id))?;
    Ok(Some(directory))
}

/// Observes the targets in every configured provider.
pub fn observe(inputs: &Inputs, targets: &[Target], risk_for: &BTreeSet<Identity>) -> Result<ObservedState> {
    runtime()?.block_on(async {
        let ad = connect_ad(inputs).await?;
        let entra = connect_entra(inputs)?;
        Ok(crate::observe::observe(targets, risk_for, ad.as_ref(), entra.as_ref()).await)
    })
}
