//! Properties of `plan()` over generated worlds: a handful of accounts (seen by two declared
//! identities each, UPN and sAMAccountName), random manifests, departed manifests and history.
//!
//! (a) the plan does not depend on the order of its inputs;
//! (b) applying every allowed action and planning again leaves nothing to do;
//! (c) protected accounts never get an allowed action, out-of-scope ones no allowed AD action;
//! (d) a held plan allows no new change, and approving its id releases exactly those changes.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use remedy_policies::action::Action;
use remedy_policies::config::Guardrails;
use remedy_policies::identity::Identity;
use remedy_policies::manifest::{
    ActiveDirectoryIntent, EntraIntent, Manifest, ManifestName, OnRelease, Origin, RemediationSpec, Target,
};
use remedy_policies::observed::{
    uac, AdAccount, EntraUser, Observation, ObservedState, PasswordLastSet, ProviderView, RiskState,
};
use remedy_policies::plan::{
    plan, ActiveManifest, Approval, Cause, DepartedManifest, Disposition, Guardrail, Plan, PlanInput, RecordedChange,
};
use uuid::Uuid;

const ACCOUNTS: usize = 8;
const SCOPE: &str = "OU=Staff,DC=remedy,DC=test";
/// Account 6 is the action account (configured as `REMEDY\user6`), account 7 is in
/// protectedAccounts.
const ACTION_ACCOUNT: usize = 6;
const NAMED_PROTECTED: usize = 7;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).single().expect("a valid time")
}

fn sam(i: usize) -> Identity {
    Identity::sam_account_name(&format!("user{i}")).expect("valid sAMAccountName")
}

fn upn(i: usize) -> Identity {
    Identity::user_principal_name(&format!("user{i}@remedy.test")).expect("valid UPN")
}

fn name(text: &str) -> ManifestName {
    ManifestName::new(text).expect("valid manifest name")
}

fn minutes_before_now(minutes: i64) -> DateTime<Utc> {
    now() - Duration::minutes(minutes)
}

fn guardrails(limit: usize) -> Guardrails {
    let mut guardrails = Guardrails::with_scopes(&[SCOPE]);
    guardrails.protected_accounts.push(format!("user{NAMED_PROTECTED}"));
    guardrails.action_account = Some(format!("REMEDY\\user{ACTION_ACCOUNT}"));
    guardrails.max_changes_per_reconcile = limit;
    guardrails
}

// ---------- generated worlds ----------

/// An AD account as a DC reports it: UF_PASSWORD_EXPIRED exactly when pwdLastSet=0 without
/// DONT_EXPIRE_PASSWORD (the DC ignores pwdLastSet=0 on a never-expires account).
fn ad_account(i: usize) -> impl Strategy<Value = AdAccount> {
    let rid = prop_oneof![18 => Just(1100 + i as u32), 1 => Just(500u32), 1 => Just(502u32)];
    let ou = prop_oneof![
        10 => Just(SCOPE),
        1 => Just("OU=XStaff,DC=remedy,DC=test"),
        1 => Just("OU=Other,DC=remedy,DC=test"),
    ];
    let pwd = prop_oneof![
        1 => Just(PasswordLastSet::Zero),
        3 => (0i64..3000).prop_map(|m| PasswordLastSet::At(minutes_before_now(m))),
    ];
    let groups = prop_oneof![
        12 => Just(vec![]),
        1 => Just(vec!["CN=Domain Admins,CN=Users,DC=remedy,DC=test".to_owned()]),
    ];
    let flags = (any::<bool>(), prop::bool::weighted(0.3), prop::bool::weighted(0.05));
    (rid, ou, pwd, groups, flags).prop_map(
        move |(rid, ou, pwd_last_set, member_of, (disabled, never_expires, admin_count))| {
            let mut user_account_control = uac::NORMAL_ACCOUNT;
            if disabled {
                user_account_control |= uac::ACCOUNT_DISABLE;
            }
            if never_expires {
                user_account_control |= uac::DONT_EXPIRE_PASSWORD;
            }
            let expired = pwd_last_set == PasswordLastSet::Zero && !never_expires;
            AdAccount {
                dn: format!("CN=user{i},{ou}"),
                object_guid: Uuid::from_u128(0x1000 + i as u128),
                object_sid: format!("S-1-5-21-1-2-3-{rid}"),
                sam_account_name: format!("user{i}"),
                user_principal_name: Some(format!("user{i}@remedy.test")),
                user_account_control,
                pwd_last_set,
                user_account_control_computed: if expired { uac::PASSWORD_EXPIRED } else { 0 },
                member_of,
                primary_group_id: Some(513),
                admin_count,
                when_changed: None,
                usn_changed: None,
            }
        },
    )
}

fn entra_user(i: usize) -> impl Strategy<Value = EntraUser> {
    let time = prop::option::of((0i64..3000).prop_map(minutes_before_now));
    let risk = prop_oneof![
        Just(RiskState::None),
        Just(RiskState::AtRisk),
        Just(RiskState::ConfirmedCompromised),
        Just(RiskState::Remediated),
        Just(RiskState::Dismissed),
        Just(RiskState::ConfirmedSafe),
    ];
    (any::<bool>(), any::<bool>(), time.clone(), risk, time).prop_map(
        move |(enabled, synced, sessions, risk, risk_at)| EntraUser {
            id: format!("e-{i}"),
            user_principal_name: format!("user{i}@remedy.test"),
            account_enabled: enabled,
            on_premises_sync_enabled: synced,
            sign_in_sessions_valid_from: sessions,
            last_password_change: None,
            risk_state: risk,
            risk_last_updated: risk_at,
            guest: false,
        },
    )
}

fn view<T: Clone + std::fmt::Debug + 'static>(
    found: impl Strategy<Value = T>,
) -> impl Strategy<Value = ProviderView<T>> {
    prop_oneof![
        24 => found.prop_map(ProviderView::Found),
        1 => Just(ProviderView::NotFound),
        1 => Just(ProviderView::NotConfigured),
        1 => Just(ProviderView::Unavailable { error: "timeout".to_owned() }),
        1 => Just(ProviderView::Ambiguous { candidates: vec!["CN=a".to_owned(), "CN=b".to_owned()] }),
    ]
}

fn observed_state() -> impl Strategy<Value = ObservedState> {
    let accounts: Vec<_> = (0..ACCOUNTS).map(|i| (view(ad_account(i)), view(entra_user(i)))).collect();
    accounts.prop_map(|views| {
        let mut accounts = BTreeMap::new();
        for (i, (active_directory, entra_id)) in views.into_iter().enumerate() {
            let observation = Observation { active_directory, entra_id };
            accounts.insert(sam(i), observation.clone());
            accounts.insert(upn(i), observation);
        }
        ObservedState { accounts, privileged_groups: None }
    })
}

fn target() -> impl Strategy<Value = Identity> {
    (0..ACCOUNTS, any::<bool>()).prop_map(|(i, by_upn)| if by_upn { upn(i) } else { sam(i) })
}

fn on_release() -> impl Strategy<Value = OnRelease> {
    prop_oneof![Just(OnRelease::Leave), Just(OnRelease::Restore)]
}

fn spec() -> impl Strategy<Value = RemediationSpec> {
    let state = prop::option::of(any::<bool>());
    let expires = prop_oneof![
        4 => Just(None),
        1 => (-600i64..600).prop_map(|m| Some(minutes_before_now(m))),
    ];
    (
        target(),
        (state.clone(), any::<bool>(), any::<bool>()),
        (state, any::<bool>(), any::<bool>()),
        expires,
        on_release(),
        prop::bool::weighted(0.1),
        0..3usize,
    )
        .prop_map(
            |(
                identity,
                (disabled, must_change, clear),
                (suspended, revoke, confirm),
                expires,
                on_release,
                suspend,
                reason,
            )| {
                let mut active_directory = ActiveDirectoryIntent {
                    disabled,
                    must_change_password: must_change,
                    clear_password_never_expires: must_change && clear,
                };
                let entra_id = EntraIntent { suspended, revoke_sessions: revoke, confirm_compromised: confirm };
                if active_directory.is_empty() && entra_id.is_empty() {
                    active_directory.disabled = Some(true);
                }
                RemediationSpec {
                    reason: format!("INC-{reason}"),
                    target: Target { identity, entra_object_id: None },
                    active_directory,
                    entra_id,
                    expires,
                    on_release,
                    suspend,
                }
            },
        )
}

fn manifests() -> impl Strategy<Value = Vec<ActiveManifest>> {
    // Effective times up to ten hours back, and now and then a little in the future (clock skew).
    prop::collection::vec((spec(), -10i64..600), 0..7).prop_map(|specs| {
        specs
            .into_iter()
            .enumerate()
            .map(|(k, (spec, minutes))| {
                let origin = Origin { file: format!("m{k}.yaml"), document: 0, line: 1, column: 1 };
                let manifest = Manifest::new(name(&format!("m{k}")), BTreeMap::new(), BTreeMap::new(), spec, origin)
                    .expect("generated specs are valid");
                ActiveManifest { manifest, effective_since: minutes_before_now(minutes) }
            })
            .collect()
    })
}

fn departed() -> impl Strategy<Value = Vec<DepartedManifest>> {
    prop::collection::vec((target(), on_release()), 0..3).prop_map(|list| {
        list.into_iter()
            .enumerate()
            .map(|(k, (identity, on_release))| DepartedManifest {
                name: name(&format!("d{k}")),
                target: Target { identity, entra_object_id: None },
                on_release,
                reason: "deleted".to_owned(),
            })
            .collect()
    })
}

/// remedy's history: changes recorded for the generated manifests (current and departed), for
/// their own account (by either of its names), so that drift and restore have something to find;
/// plus a few unrelated records as noise.
fn history(owners: Vec<(ManifestName, Identity)>) -> impl Strategy<Value = Vec<RecordedChange>> {
    let action = || prop::sample::select(Action::ALL.to_vec());
    let owned = owners
        .into_iter()
        .map(|(manifest, identity)| {
            prop::collection::vec((action(), any::<bool>(), 1i64..1200), 0..3).prop_map(move |records| {
                records
                    .into_iter()
                    .map(|(action, other_name, minutes)| {
                        let identity = match (&identity, other_name) {
                            (Identity::SamAccountName(s), true) => upn(s[4..].parse().expect("userN")),
                            (Identity::UserPrincipalName(u), true) => {
                                sam(u[4..u.find('@').expect("@")].parse().expect("userN"))
                            }
                            (identity, _) => identity.clone(),
                        };
                        RecordedChange {
                            manifest: manifest.clone(),
                            identity,
                            action,
                            at: minutes_before_now(minutes),
                            dc: None,
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>();
    let noise = prop::collection::vec(((0..9usize), target(), action(), 1i64..3000), 0..3).prop_map(|list| {
        list.into_iter()
            .map(|(k, identity, action, minutes)| RecordedChange {
                manifest: name(&format!("m{k}")),
                identity,
                action,
                at: minutes_before_now(minutes),
                dc: None,
            })
            .collect::<Vec<_>>()
    });
    (owned, noise).prop_map(|(owned, noise)| owned.into_iter().flatten().chain(noise).collect())
}

#[derive(Debug, Clone)]
struct World {
    manifests: Vec<ActiveManifest>,
    departed: Vec<DepartedManifest>,
    history: Vec<RecordedChange>,
    observed: ObservedState,
}

fn world() -> impl Strategy<Value = World> {
    (manifests(), departed(), observed_state()).prop_flat_map(|(manifests, departed, observed)| {
        let owners = manifests
            .iter()
            .map(|m| (m.manifest.name.clone(), m.manifest.target().identity.clone()))
            .chain(departed.iter().map(|d| (d.name.clone(), d.target.identity.clone())))
            .collect();
        history(owners).prop_map(move |history| World {
            manifests: manifests.clone(),
            departed: departed.clone(),
            history,
            observed: observed.clone(),
        })
    })
}

fn plan_world(world: &World, guardrails: &Guardrails, approvals: &BTreeSet<remedy_policies::plan::PlanId>) -> Plan {
    plan(&PlanInput {
        manifests: &world.manifests,
        departed: &world.departed,
        remedy_changes: &world.history,
        observed: &world.observed,
        guardrails,
        approvals,
        now: now(),
    })
}

/// What the daemon would do with the allowed actions: apply them to every observation of the
/// account, and record them (per manifest, under the manifest's own target).
fn apply_allowed(world: &mut World, plan: &Plan) {
    let targets: BTreeMap<ManifestName, Identity> = world
        .manifests
        .iter()
        .map(|m| (m.manifest.name.clone(), m.manifest.target().identity.clone()))
        .chain(world.departed.iter().map(|d| (d.name.clone(), d.target.identity.clone())))
        .collect();
    for (identity, planned) in plan.allowed_actions() {
        for observation in world.observed.accounts.values_mut() {
            if let ProviderView::Found(account) = &mut observation.active_directory {
                if Some(account.object_guid) == identity.resolved.ad_object_guid {
                    planned.action.apply_to_ad(account, now());
                }
            }
            if let ProviderView::Found(user) = &mut observation.entra_id {
                if Some(&user.id) == identity.resolved.entra_id.as_ref() {
                    planned.action.apply_to_entra(user, now());
                }
            }
        }
        let manifests = match &planned.cause {
            Cause::Release { manifest } => vec![manifest.clone()],
            _ => planned.provenance.clone(),
        };
        for manifest in manifests {
            let target = targets.get(&manifest).cloned();
            world.history.push(RecordedChange {
                manifest,
                identity: target.unwrap_or_else(|| identity.identity.clone()),
                action: planned.action,
                at: now(),
                dc: None,
            });
        }
    }
}

fn is_protected(account: &AdAccount) -> bool {
    matches!(account.rid(), Some(500 | 502))
        || account.sam_account_name == format!("user{ACTION_ACCOUNT}")
        || account.sam_account_name == format!("user{NAMED_PROTECTED}")
        || account.admin_count
        || !account.member_of.is_empty()
}

fn nothing_held(plan: &Plan) -> bool {
    plan.actions().all(|(_, a)| !matches!(a.disposition, Disposition::Held { .. }))
}

/// 256 cases per property (a few seconds); `PROPTEST_CASES=20000` for a deeper run.
fn config() -> ProptestConfig {
    let mut config = ProptestConfig { failure_persistence: None, ..ProptestConfig::default() };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = 256;
    }
    config
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn order_of_inputs_does_not_matter(
        (world, shuffled) in world().prop_flat_map(|w| {
            let shuffled = (
                Just(w.manifests.clone()).prop_shuffle(),
                Just(w.departed.clone()).prop_shuffle(),
                Just(w.history.clone()).prop_shuffle(),
            );
            (Just(w), shuffled)
        })
    ) {
        let (manifests, departed, history) = shuffled;
        let reordered = World { manifests, departed, history, observed: world.observed.clone() };
        let guardrails = guardrails(3);
        let approvals = BTreeSet::new();
        prop_assert_eq!(plan_world(&world, &guardrails, &approvals), plan_world(&reordered, &guardrails, &approvals));
    }

    #[test]
    fn applying_the_allowed_actions_converges(mut world in world()) {
        let guardrails = guardrails(1000);
        let approvals = BTreeSet::new();
        let first = plan_world(&world, &guardrails, &approvals);
        apply_allowed(&mut world, &first);
        let second = plan_world(&world, &guardrails, &approvals);
        let left: Vec<String> = second
            .actions()
            .filter(|(_, a)| !matches!(a.disposition, Disposition::Denied { .. }))
            .map(|(i, a)| format!("{} {} ({:?})", i.identity, a.action, a.cause))
            .collect();
        prop_assert!(left.is_empty(), "still to do after applying {:#?}:\n{left:#?}\nsecond plan: {second:#?}", first);
    }

    #[test]
    fn protected_accounts_get_no_allowed_action(world in world()) {
        let plan = plan_world(&world, &guardrails(1000), &BTreeSet::new());
        let accounts: BTreeMap<Uuid, &AdAccount> = world
            .observed
            .accounts
            .values()
            .filter_map(|o| o.active_directory.found())
            .map(|a| (a.object_guid, a))
            .collect();
        for identity in &plan.identities {
            let allowed = |provider: Option<remedy_policies::Provider>| {
                identity.actions.iter().any(|a| {
                    a.disposition == Disposition::Allowed && provider.is_none_or(|p| a.provider == p)
                })
            };
            if let Some(account) = identity.resolved.ad_object_guid.and_then(|g| accounts.get(&g)) {
                if is_protected(account) {
                    prop_assert!(!allowed(None), "protected {} got an allowed action: {identity:#?}", account.dn);
                }
                if !account.dn.ends_with(&format!(",{SCOPE}")) {
                    prop_assert!(!allowed(Some(remedy_policies::Provider::ActiveDirectory)), "out of scope: {identity:#?}");
                }
            }
            // Whatever the reason, a protection denial leaves nothing allowed on either side.
            let protection = identity.actions.iter().any(|a| {
                matches!(&a.disposition, Disposition::Denied { guardrail, .. } if *guardrail != Guardrail::OutOfScope)
            });
            if protection {
                prop_assert!(!allowed(None), "denied identity got an allowed action: {identity:#?}");
            }
        }
    }

    #[test]
    fn a_held_plan_allows_no_new_change(world in world(), limit in 1usize..4) {
        let guardrails = guardrails(limit);
        let held = plan_world(&world, &guardrails, &BTreeSet::new());
        let new = |plan: &Plan| -> Vec<String> {
            plan.actions()
                .filter(|(_, a)| a.cause != Cause::DriftCorrection && !matches!(a.disposition, Disposition::Denied { .. }))
                .map(|(i, a)| format!("{} {}", i.identity, a.action))
                .collect()
        };
        match &held.approval {
            Approval::Required { plan_id, changes, limit: shown } => {
                prop_assert_eq!(*shown, limit);
                prop_assert_eq!(*changes, new(&held).len());
                prop_assert!(*changes > limit);
                for (_, action) in held.actions() {
                    if action.cause == Cause::DriftCorrection {
                        prop_assert!(!matches!(action.disposition, Disposition::Held { .. }), "drift correction held");
                    } else if !matches!(action.disposition, Disposition::Denied { .. }) {
                        prop_assert_eq!(&action.disposition, &Disposition::Held { plan_id: plan_id.clone() });
                    }
                }
                let approved = plan_world(&world, &guardrails, &BTreeSet::from([plan_id.clone()]));
                prop_assert_eq!(&approved.approval, &Approval::Granted { plan_id: plan_id.clone() });
                prop_assert_eq!(new(&approved), new(&held));
                prop_assert!(nothing_held(&approved));
            }
            Approval::NotNeeded => {
                prop_assert!(new(&held).len() <= limit);
                prop_assert!(nothing_held(&held));
            }
            Approval::Granted { .. } => return Err(TestCaseError::fail("granted without approvals")),
        }
    }
}
