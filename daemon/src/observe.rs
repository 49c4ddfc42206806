//! Gathering the observed state of the identities a manifest set names, from every configured
//! provider, batched: one set of requests per provider for the whole set.

use std::collections::{BTreeMap, BTreeSet};

use remedy_policies::manifest::Target;
use remedy_policies::observed::{Observation, ObservedState, ProviderView};
use remedy_policies::Identity;

use crate::ad::AdDirectory;
use crate::entra::{EntraDirectory, EntraLookup, RiskReads};

/// Observes the targets (identities named twice collapse; a target's `entraObjectId` is kept).
/// Identity Protection allows one request per second per tenant, so a user's risk state is read
/// only for the identities in `risk_for` (those whose manifests ask for `confirmCompromised`); the
/// others come back with `riskState: unknownFutureValue`, which never blocks anything.
/// AD is asked first, so that a target named by sAMAccountName, GUID or SID can be looked up in
/// Entra ID by its AD account's UPN. A provider that cannot be asked marks every identity
/// `Unavailable` with its error, so the plan says why and the other provider still plans.
pub async fn observe<A, E>(
    targets: &[Target],
    risk_for: &BTreeSet<Identity>,
    ad: Option<&A>,
    entra: Option<&E>,
) -> ObservedState
where
    A: AdDirectory + Sync,
    E: EntraDirectory + Sync,
{
    let mut distinct: BTreeMap<Identity, &Target> = BTreeMap::new();
    for target in targets {
        let kept = distinct.entry(target.identity.clone()).or_insert(target);
        if kept.entra_object_id.is_none() && target.entra_object_id.is_some() {
            *kept = target;
        }
    }
    let identities: Vec<Identity> = distinct.keys().cloned().collect();
    let mut state = ObservedState::default();
    for identity in &identities {
        state.accounts.insert(identity.clone(), Observation::default());
    }
    if let Some(ad) = ad {
        match ad.observe(&identities).await {
            Ok(mut views) => {
                for (identity, observation) in &mut state.accounts {
                    observation.active_directory = views.remove(identity).unwrap_or(ProviderView::NotFound);
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, identities = identities.len(), "Active Directory observation failed");
                for observation in state.accounts.values_mut() {
                    observation.active_directory = ProviderView::Unavailable { error: error.to_string() };
                }
            }
        }
    }
    if let Some(entra) = entra {
        let mut lookups = Vec::new();
        for (identity, target) in &distinct {
            let observation = state.accounts.get_mut(identity).expect("every identity has an observation");
            let ad_upn = observation.active_directory.found().and_then(|a| a.user_principal_name.clone());
            match EntraLookup::for_target(target, ad_upn.as_deref()) {
                Some(lookup) => lookups.push((identity.clone(), lookup)),
                // Nothing to look the user up by: no UPN in the manifest or in AD, no object id.
                None => observation.entra_id = ProviderView::NotFound,
            }
        }
        match entra.observe_with_risk(&lookups, RiskReads::For(risk_for)).await {
            Ok(mut views) => {
                for (identity, _) in &lookups {
                    if let Some(observation) = state.accounts.get_mut(identity) {
                        observation.entra_id = views.remove(identity).unwrap_or(ProviderView::NotFound);
                    }
                }
            }
            Err(error) => {
                tracing::warn!(error = %error, identities = lookups.len(), "Entra ID observation failed");
                for (identity, _) in &lookups {
                    if let Some(observation) = state.accounts.get_mut(identity) {
                        observation.entra_id = ProviderView::Unavailable { error: error.to_string() };
                    }
                }
            }
        }
    }
    state
}
