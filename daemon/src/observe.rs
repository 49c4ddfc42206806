//! Gathering the observed state of the identities a manifest set names, from every configured
//! provider, batched: one set of requests per provider for the whole set.

use std::collections::{BTreeMap, BTreeSet};

use remedy_policies::manifest::Target;
use remedy_policies::observed::{AdAccount, Observation, ObservedState, ProviderView};
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
        let observed = match ad.observe(&identities).await {
            Ok(views) => {
                // Who is privileged is part of what AD must say: an account whose protection
                // cannot be decided is not observed, so nothing is done to it.
                let accounts: Vec<&AdAccount> = views.values().filter_map(ProviderView::found).collect();
                match ad.privileged_groups(&accounts).await {
                    Ok(groups) => Ok((views, groups)),
                    Err(error) => {
                        Err(format!("cannot tell who is privileged (the protected groups could not be read): {error}"))
                    }
                }
            }
            Err(error) => Err(error.to_string()),
        };
        match observed {
            Ok((mut views, groups)) => {
                for (identity, observation) in &mut state.accounts {
                    observation.active_directory = views.remove(identity).unwrap_or(ProviderView::NotFound);
                }
                state.privileged_groups = Some(groups);
            }
            Err(error) => {
                tracing::warn!(error = %error, identities = identities.len(), "Active Directory observation failed");
                for observation in state.accounts.values_mut() {
                    observation.active_directory = ProviderView::Unavailable { error: error.clone() };
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};
    use remedy_policies::observed::{AdGroup, PasswordLastSet};
    use remedy_policies::Action;

    use super::*;
    use crate::ad::{AdChange, AdError};
    use crate::entra::GraphDirectory;

    /// A DC that finds every account and then cannot say who is privileged.
    struct GroupsUnreadable;

    impl AdDirectory for GroupsUnreadable {
        async fn observe(
            &self,
            identities: &[Identity],
        ) -> Result<BTreeMap<Identity, ProviderView<AdAccount>>, AdError> {
            Ok(identities
                .iter()
                .map(|identity| {
                    let account = AdAccount {
                        dn: format!("CN={identity},OU=Staff,DC=x"),
                        object_guid: uuid::Uuid::from_u128(1),
                        object_sid: "S-1-5-21-1-2-3-1200".into(),
                        sam_account_name: identity.to_string(),
                        user_principal_name: None,
                        user_account_control: 0x200,
                        pwd_last_set: PasswordLastSet::Zero,
                        user_account_control_computed: 0,
                        member_of: vec![],
                        primary_group_id: Some(513),
                        admin_count: false,
                        when_changed: None,
                        usn_changed: None,
                    };
                    (identity.clone(), ProviderView::Found(account))
                })
                .collect())
        }

        async fn privileged_groups(&self, _: &[&AdAccount]) -> Result<Vec<AdGroup>, AdError> {
            Err(AdError::Timeout { operation: "search".into(), after: std::time::Duration::from_secs(1) })
        }

        async fn apply(&self, _: &AdAccount, _: Action, _: DateTime<Utc>) -> Result<AdChange, AdError> {
            unreachable!("observation only")
        }
    }

    #[tokio::test]
    async fn accounts_whose_protection_cannot_be_decided_are_not_observed() {
        let target = Target { identity: "sam:eve".parse().expect("identity"), entra_object_id: None };
        let state =
            observe(std::slice::from_ref(&target), &BTreeSet::new(), Some(&GroupsUnreadable), None::<&GraphDirectory>)
                .await;
        match &state.get(&target.identity).expect("observed").active_directory {
            ProviderView::Unavailable { error } => {
                assert!(error.starts_with("cannot tell who is privileged"), "{error}")
            }
            view => panic!("an account found while its protection is unknown must not count as found: {view:?}"),
        }
        assert_eq!(state.privileged_groups, None);
    }
}
