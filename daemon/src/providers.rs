//! The live directories, set up from the configuration in one place for `remedy serve` and the
//! one-shot commands (`plan`, `apply`): the Graph client, and AD connected lazily by the daemon (a
//! DC that is down when remedy starts, or goes down later, is a provider state, not a reason to
//! exit) or at once by a command ([`Providers::connect_ad`]: it cannot do its work without it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use remedy_policies::config::{ActiveDirectoryConfig, Config};
use remedy_policies::manifest::Target;
use remedy_policies::observed::{ObservedState, ProviderView};
use remedy_policies::{Identity, Provider};

use crate::ad::LdapDirectory;
use crate::entra::{EntraLookup, GraphDirectory, GraphOptions, RetryPolicy};
use crate::ha::gate::SendGate;

pub struct Providers {
    ad_config: Option<ActiveDirectoryConfig>,
    config_dir: PathBuf,
    ad: Option<LdapDirectory>,
    entra: Option<GraphDirectory>,
    /// Why AD could not be connected to at the last attempt.
    ad_down: Option<String>,
    acting_ad: Option<String>,
    acting_entra: Option<String>,
    concurrency: usize,
    /// `entraId.confirmationDeadline`: how long a write Graph accepted may stay invisible.
    confirmation_deadline: Duration,
    /// `guardrails.protectedGroups`, for the AD provider to look up.
    protected_groups: Vec<String>,
    /// Asked before every send (several instances: the lease check).
    gate: SendGate,
}

impl std::fmt::Debug for Providers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Providers")
            .field("active_directory", &self.ad_config.as_ref().map(|c| c.dc_list()))
            .field("ad_connected", &self.ad.is_some())
            .field("entra_id", &self.entra.is_some())
            .finish_non_exhaustive()
    }
}

/// The daemon's Graph retry budget: short. Inside a pass, retries only ride out a brief throttle
/// (a 429 with a Retry-After of a few seconds); a longer outage ends the call as a transient
/// failure, the account is `ProviderUnavailable`, AD goes on without waiting, and the controller's
/// error policy retries with its own capped backoff. (With the provider's default budget of two
/// minutes per request, a Graph outage held up the whole pass, AD included, and no status said
/// why: found by `scripts/reliability graph-outage`.) 6 s, shared by all the batches of one
/// observation: a pass whose Graph is down ends, and says so, within about 7 s of its start.
pub fn daemon_graph_options() -> GraphOptions {
    GraphOptions {
        retry: RetryPolicy {
            max_attempts: 4,
            max_elapsed: Duration::from_secs(6),
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(4),
        },
        ..GraphOptions::default()
    }
}

impl Providers {
    /// Sets the providers up without talking to them (the Graph client sends nothing yet; AD is
    /// connected at the first observation).
    pub fn new(config: &Config, config_dir: &Path) -> Result<Providers> {
        Providers::with_graph_options(config, config_dir, daemon_graph_options())
    }

    /// As [`Providers::new`], with the Graph client's retry budget and pace given: tests shorten
    /// them, so that an unreachable Graph is reported in a second rather than after two minutes.
    pub fn with_graph_options(config: &Config, config_dir: &Path, options: GraphOptions) -> Result<Providers> {
        let entra =
            match &config.entra_id {
                Some(entra) => Some(GraphDirectory::with_options(entra, config_dir, options).with_context(|| {
                    format!("cannot set up the Microsoft Graph client for tenant {}", entra.tenant_id)
                })?),
                None => None,
            };
        if let Some(ad) = config.active_directory.as_ref().filter(|ad| ad.is_insecure()) {
            tracing::warn!(url = %ad.dc_list(), "allowInsecure is set: the action account's password may travel unencrypted or to an unverified server");
        }
        Ok(Providers {
            ad_config: config.active_directory.clone(),
            config_dir: config_dir.to_path_buf(),
            ad: None,
            entra,
            ad_down: None,
            acting_ad: config.active_directory.as_ref().map(|ad| ad.bind_user.clone()),
            acting_entra: config.entra_id.as_ref().map(|e| format!("application {}", e.client_id)),
            concurrency: config.active_directory.as_ref().map_or(1, |ad| ad.connections.max(1)),
            protected_groups: config.guardrails.protected_groups.clone(),
            gate: SendGate::open(),
            confirmation_deadline: config
                .entra_id
                .as_ref()
                .map_or_else(remedy_policies::config::default_confirmation_deadline, |e| e.confirmation_deadline),
        })
    }

    /// Connects to AD if it is configured and not connected yet; a failure is remembered and
    /// shown as the provider being unavailable.
    async fn ensure_ad(&mut self) {
        let Some(config) = &self.ad_config else { return };
        if self.ad.is_some() {
            return;
        }
        match LdapDirectory::connect(config, &self.config_dir).await {
            Ok(directory) => {
                let directory = directory.with_protected_groups(&self.protected_groups);
                if self.ad_down.take().is_some() {
                    tracing::info!(url = %config.dc_list(), "Active Directory is reachable again");
                }
                self.ad = Some(directory);
            }
            Err(error) => {
                tracing::warn!(url = %config.dc_list(), %error, "cannot connect to Active Directory");
                let text = error.to_string();
                self.ad_down = Some(if config.dc_urls().iter().any(|url| text.contains(url)) {
                    text
                } else {
                    format!("cannot connect to {}: {text}", config.dc_list())
                });
            }
        }
    }

    /// Connects to AD now, if it is configured and not connected yet. For a one-shot command, which
    /// cannot do what it was asked without it: a DC that cannot be reached is an error, with the
    /// DC's answer (the daemon instead shows AD as unavailable and tries again).
    pub async fn connect_ad(&mut self) -> Result<()> {
        let Some(config) = &self.ad_config else { return Ok(()) };
        if self.ad.is_some() {
            return Ok(());
        }
        let directory = LdapDirectory::connect(config, &self.config_dir)
            .await
            .with_context(|| format!("cannot connect to Active Directory at {}", config.dc_list()))?;
        self.ad = Some(directory.with_protected_groups(&self.protected_groups));
        Ok(())
    }

    /// Observes the targets in every configured provider (see [`crate::observe::observe`]).
    pub async fn observe(&mut self, targets: &[Target], risk_for: &BTreeSet<Identity>) -> ObservedState {
        self.ensure_ad().await;
        let mut state = crate::observe::observe(targets, risk_for, self.ad.as_ref(), self.entra.as_ref()).await;
        if let (Some(_), None, Some(error)) = (&self.ad_config, &self.ad, &self.ad_down) {
            for target in targets {
                let Some(observation) = state.accounts.get_mut(&target.identity) else { continue };
                observation.active_directory = ProviderView::Unavailable { error: error.clone() };
                // An identity Entra ID can only be looked up by its AD account's UPN is unknown
                // in Entra ID too while AD is down (not "not found").
                let needs_ad = EntraLookup::for_target(target, None).is_none();
                if needs_ad && self.entra.is_some() && observation.entra_id == ProviderView::NotFound {
                    observation.entra_id = ProviderView::Unavailable {
                        error: format!(
                            "looked up by its AD account's userPrincipalName, and AD is unavailable: {error}"
                        ),
                    };
                }
            }
        }
        state
    }

    /// The URL of the DC that serves Active Directory now, when AD is connected and several DCs are
    /// configured (with one DC there is no other DC to wait for).
    pub fn ad_dc(&self) -> Option<String> {
        let several = self.ad_config.as_ref().is_some_and(|c| c.dc_urls().len() > 1);
        self.ad.as_ref().filter(|_| several).map(LdapDirectory::current_dc)
    }

    pub fn ad(&self) -> Option<&LdapDirectory> {
        self.ad.as_ref()
    }

    pub fn entra(&self) -> Option<&GraphDirectory> {
        self.entra.as_ref()
    }

    pub fn is_configured(&self, provider: Provider) -> bool {
        match provider {
            Provider::ActiveDirectory => self.ad_config.is_some(),
            Provider::EntraId => self.entra.is_some(),
        }
    }

    /// The account remedy acts as in `provider` (bind user, application id).
    pub fn acting_account(&self, provider: Provider) -> Option<String> {
        match provider {
            Provider::ActiveDirectory => self.acting_ad.clone(),
            Provider::EntraId => self.acting_entra.clone(),
        }
    }

    /// How many accounts are worked on at once in AD.
    /// How long an action the directory accepted may stay invisible in its reads before it is
    /// settled as not effective (`entraId.confirmationDeadline`).
    pub fn confirmation_deadline(&self) -> Duration {
        self.confirmation_deadline
    }

    /// Sends go through `gate` (several instances: only the leader sends, within its lease).
    pub fn with_gate(mut self, gate: SendGate) -> Providers {
        self.gate = gate;
        self
    }

    /// What every send asks first.
    pub fn gate(&self) -> &SendGate {
        &self.gate
    }

    pub fn concurrency(&self) -> usize {
        self.concurrency
    }
}
