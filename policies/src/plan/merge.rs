//! Step 1: which manifests count, which account each is about, and what they want together.
//!
//! Manifests are sorted by name before anything else, so nothing downstream can depend on the
//! order they came in. Declared identities are grouped by the account they resolved to: two
//! identities belong together when they resolved to the same AD objectGUID or the same Entra
//! object id (transitively), so a UPN and a sAMAccountName of one account merge.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};

use super::{ActiveManifest, Conflict, ConflictSide, PlanInput};
use crate::action::Action;
use crate::identity::Identity;
use crate::manifest::{Manifest, ManifestName, OnRelease};
use crate::observed::{AdAccount, EntraUser, Observation, ObservedState, ProviderView};

/// A manifest that no longer asks for anything: deleted (departed) or expired.
#[derive(Debug, Clone)]
pub(super) struct Release {
    pub name: ManifestName,
    pub on_release: OnRelease,
    /// Why it was released, for the notes and the restore actions' reason.
    pub why: String,
}

/// All manifests about one account, and what was observed about it.
#[derive(Debug)]
pub(super) struct Group<'a> {
    /// The first declared identity by sort order.
    pub identity: Identity,
    pub also_declared_as: Vec<Identity>,
    /// Sorted by name.
    pub active: Vec<&'a ActiveManifest>,
    pub suspended: Vec<&'a ActiveManifest>,
    pub released: Vec<Release>,
    pub ad: ProviderView<AdAccount>,
    pub entra: ProviderView<EntraUser>,
}

impl Group<'_> {
    /// Whether `identity` is one of the names this group was declared by.
    pub fn declares(&self, identity: &Identity) -> bool {
        &self.identity == identity || self.also_declared_as.contains(identity)
    }

    /// Whether a recorded change's identity is about this group's account: one of its declared
    /// names, or a name the observed state resolves to the same AD or Entra account.
    pub fn is_about(&self, identity: &Identity, observed: &ObservedState) -> bool {
        if self.declares(identity) {
            return true;
        }
        let Some(observation) = observed.get(identity) else {
            return false;
        };
        let same_ad = match (observation.active_directory.found(), self.ad_account()) {
            (Some(a), Some(b)) => a.object_guid == b.object_guid,
            _ => false,
        };
        let same_entra = match (observation.entra_id.found(), self.entra_user()) {
            (Some(a), Some(b)) => a.id.eq_ignore_ascii_case(&b.id),
            _ => false,
        };
        same_ad || same_entra
    }

    pub fn manifest_names(&self) -> Vec<ManifestName> {
        let active = self.active.iter().chain(&self.suspended).map(|m| m.manifest.name.clone());
        let released = self.released.iter().map(|r| r.name.clone());
        active.chain(released).collect::<BTreeSet<_>>().into_iter().collect()
    }

    pub fn ad_account(&self) -> Option<&AdAccount> {
        self.ad.found()
    }

    pub fn entra_user(&self) -> Option<&EntraUser> {
        self.entra.found()
    }
}

enum Role<'a> {
    Active(&'a ActiveManifest),
    Suspended(&'a ActiveManifest),
    Released(Release),
}

pub(super) fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Sorts the manifests into roles and groups them by account.
pub(super) fn group<'a>(input: &PlanInput<'a>, warnings: &mut Vec<String>) -> Vec<Group<'a>> {
    let mut manifests: Vec<&ActiveManifest> = input.manifests.iter().collect();
    manifests.sort_by(|a, b| {
        (&a.manifest.name, &a.manifest.generation, a.effective_since).cmp(&(
            &b.manifest.name,
            &b.manifest.generation,
            b.effective_since,
        ))
    });
    // A departed manifest whose name is still present is the same manifest pointed at another
    // account (spec.target edited): its old target is released, the new one is current.
    let present: BTreeSet<(&ManifestName, &Identity)> =
        manifests.iter().map(|m| (&m.manifest.name, &m.manifest.target().identity)).collect();

    let mut declared: Vec<(Identity, Role<'a>)> = Vec::new();
    for active in manifests {
        let manifest = &active.manifest;
        let role = if manifest.spec.suspend {
            Role::Suspended(active)
        } else if let Some(expires) = manifest.spec.expires.filter(|_| manifest.is_expired(input.now)) {
            Role::Released(Release {
                name: manifest.name.clone(),
                on_release: manifest.spec.on_release,
                why: format!("expired at {}", time(expires)),
            })
        } else {
            Role::Active(active)
        };
        declared.push((manifest.target().identity.clone(), role));
    }
    let mut departed: Vec<_> = input.departed.iter().collect();
    departed.sort_by(|a, b| (&a.name, &a.target, &a.reason).cmp(&(&b.name, &b.target, &b.reason)));
    let mut seen_departed = BTreeSet::new();
    for gone in departed {
        if present.contains(&(&gone.name, &gone.target.identity)) {
            warnings.push(format!(
                "departed manifest {} is also in the current set with the same target: it is planned as current, \
                 not released",
                gone.name
            ));
            continue;
        }
        if !seen_departed.insert((&gone.name, &gone.target.identity)) {
            continue;
        }
        declared.push((
            gone.target.identity.clone(),
            Role::Released(Release { name: gone.name.clone(), on_release: gone.on_release, why: gone.reason.clone() }),
        ));
    }

    let identities: BTreeSet<Identity> = declared.iter().map(|(identity, _)| identity.clone()).collect();
    let components = components(&identities, input);

    let mut groups: Vec<Group<'a>> = components
        .into_iter()
        .map(|members| {
            let observations: Vec<Observation> = members.iter().map(|id| observation(input, id)).collect();
            let ad = combine(
                observations.iter().map(|o| &o.active_directory),
                |a| a.object_guid.to_string(),
                |a| a.dn.clone(),
            );
            let entra = combine(
                observations.iter().map(|o| &o.entra_id),
                |u| u.id.clone(),
                |u| format!("{} ({})", u.user_principal_name, u.id),
            );
            let mut members = members.into_iter();
            let identity = members.next().expect("a component has at least one member");
            Group {
                identity,
                also_declared_as: members.collect(),
                active: Vec::new(),
                suspended: Vec::new(),
                released: Vec::new(),
                ad,
                entra,
            }
        })
        .collect();

    let index: BTreeMap<Identity, usize> = groups
        .iter()
        .enumerate()
        .flat_map(|(i, g)| std::iter::once(&g.identity).chain(&g.also_declared_as).map(move |id| (id.clone(), i)))
        .collect();
    for (identity, role) in declared {
        let Some(group) = index.get(&identity).map(|&i| &mut groups[i]) else {
            continue;
        };
        match role {
            Role::Active(m) => group.active.push(m),
            Role::Suspended(m) => group.suspended.push(m),
            Role::Released(r) => group.released.push(r),
        }
    }
    groups.sort_by(|a, b| a.identity.cmp(&b.identity));
    groups
}

fn observation(input: &PlanInput<'_>, identity: &Identity) -> Observation {
    input.observed.get(identity).cloned().unwrap_or_else(|| {
        let error = format!("no observation of {identity} was supplied");
        Observation {
            active_directory: ProviderView::Unavailable { error: error.clone() },
            entra_id: ProviderView::Unavailable { error },
        }
    })
}

/// Connected components of declared identities, linked by resolved AD objectGUID and Entra id.
/// Each component is sorted; components are in the order of their first member.
fn components(identities: &BTreeSet<Identity>, input: &PlanInput<'_>) -> Vec<Vec<Identity>> {
    let list: Vec<&Identity> = identities.iter().collect();
    let mut parent: Vec<usize> = (0..list.len()).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    let mut first_with_key: BTreeMap<String, usize> = BTreeMap::new();
    for (index, identity) in list.iter().enumerate() {
        let Some(observation) = input.observed.get(identity) else {
            continue;
        };
        let keys = [
            observation.active_directory.found().map(|a| format!("ad:{}", a.object_guid)),
            observation.entra_id.found().map(|u| format!("entra:{}", u.id.to_ascii_lowercase())),
        ];
        for key in keys.into_iter().flatten() {
            let other = *first_with_key.entry(key).or_insert(index);
            let (a, b) = (root(&mut parent, index), root(&mut parent, other));
            // The smaller index becomes the root, so roots are the first members.
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: BTreeMap<usize, Vec<Identity>> = BTreeMap::new();
    for (index, identity) in list.iter().enumerate() {
        let r = root(&mut parent, index);
        by_root.entry(r).or_default().push((*identity).clone());
    }
    by_root.into_values().collect()
}

/// One view of a provider for a group of declared identities. Found wins (when every found view
/// is the same account); several different accounts make the group ambiguous; otherwise the most
/// telling non-answer: ambiguous, unavailable, not found, not configured.
fn combine<'v, T: Clone + 'v>(
    views: impl Iterator<Item = &'v ProviderView<T>>,
    key: impl Fn(&T) -> String,
    label: impl Fn(&T) -> String,
) -> ProviderView<T> {
    let views: Vec<&ProviderView<T>> = views.collect();
    let mut found: BTreeMap<String, &T> = BTreeMap::new();
    let mut candidates = BTreeSet::new();
    let mut errors = BTreeSet::new();
    let mut not_found = false;
    for view in &views {
        match view {
            ProviderView::Found(t) => {
                found.entry(key(t)).or_insert(t);
            }
            ProviderView::Ambiguous { candidates: c } => candidates.extend(c.iter().cloned()),
            ProviderView::Unavailable { error } => {
                errors.insert(error.clone());
            }
            ProviderView::NotFound => not_found = true,
            ProviderView::NotConfigured => {}
        }
    }
    if found.len() == 1 {
        // The view of the first declared identity that found it.
        let first = views.iter().find_map(|v| v.found()).expect("one found view");
        return ProviderView::Found(first.clone());
    }
    if found.len() > 1 {
        candidates.extend(found.values().map(|t| label(t)));
    }
    if !candidates.is_empty() {
        ProviderView::Ambiguous { candidates: candidates.into_iter().collect() }
    } else if !errors.is_empty() {
        ProviderView::Unavailable { error: errors.into_iter().collect::<Vec<_>>().join("; ") }
    } else if not_found {
        ProviderView::NotFound
    } else {
        ProviderView::NotConfigured
    }
}

/// A state item (held continuously) and the manifests that ask for the winning value.
#[derive(Debug, Clone)]
pub(super) struct StateWant {
    pub value: bool,
    pub provenance: Vec<ManifestName>,
}

/// A one-shot item: satisfied by an event after `since`, the latest effective time of the
/// manifests that ask for it (an event after it satisfies them all).
#[derive(Debug, Clone)]
pub(super) struct OneShot {
    pub since: DateTime<Utc>,
    pub provenance: Vec<ManifestName>,
}

/// The merged desired state of the active manifests of one group.
#[derive(Debug, Default)]
pub(super) struct Desired {
    pub disabled: Option<StateWant>,
    pub must_change_password: Option<OneShot>,
    /// Manifests that allow clearing DONT_EXPIRE_PASSWORD (any one of them suffices).
    pub clear_never_expires: Vec<ManifestName>,
    pub suspended: Option<StateWant>,
    pub revoke_sessions: Option<OneShot>,
    pub confirm_compromised: Option<OneShot>,
    reasons: BTreeMap<ManifestName, String>,
    /// Effective time per active manifest, never later than `now`.
    effective: BTreeMap<ManifestName, DateTime<Utc>>,
}

impl Desired {
    /// The `spec.reason`s of the given manifests, joined with "; " (each distinct text once).
    pub fn reason(&self, provenance: &[ManifestName]) -> String {
        let mut seen = BTreeSet::new();
        provenance
            .iter()
            .filter_map(|name| self.reasons.get(name))
            .filter(|reason| seen.insert(reason.as_str()))
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The effective time of an active manifest of this group.
    pub fn effective_since(&self, name: &ManifestName) -> Option<DateTime<Utc>> {
        self.effective.get(name).copied()
    }

    pub fn has_ad_items(&self) -> bool {
        self.disabled.is_some() || self.must_change_password.is_some()
    }

    pub fn has_entra_items(&self) -> bool {
        self.suspended.is_some() || self.revoke_sessions.is_some() || self.confirm_compromised.is_some()
    }
}

/// Merges the desired state of the group's active manifests. Disagreements on a state item are
/// settled for the safer value and reported as [`Conflict`]s.
pub(super) fn desired(group: &Group<'_>, now: DateTime<Utc>, conflicts: &mut Vec<Conflict>) -> Desired {
    let mut desired = Desired::default();
    for active in &group.active {
        let name = active.manifest.name.clone();
        desired.reasons.insert(name.clone(), active.manifest.spec.reason.clone());
        // A first-seen time in the future (clock skew) would make one-shots unsatisfiable.
        desired.effective.insert(name, active.effective_since.min(now));
    }
    let manifests = &group.active;
    let by = |pick: &dyn Fn(&Manifest) -> Option<bool>| -> Vec<(ManifestName, bool)> {
        manifests.iter().filter_map(|a| pick(&a.manifest).map(|v| (a.manifest.name.clone(), v))).collect()
    };
    desired.disabled = state(group, "activeDirectory.disabled", by(&|m| m.spec.active_directory.disabled), conflicts);
    desired.suspended = state(group, "entraId.suspended", by(&|m| m.spec.entra_id.suspended), conflicts);
    desired.must_change_password = one_shot(&desired, manifests, |m| m.spec.active_directory.must_change_password);
    desired.revoke_sessions = one_shot(&desired, manifests, |m| m.spec.entra_id.revoke_sessions);
    desired.confirm_compromised = one_shot(&desired, manifests, |m| m.spec.entra_id.confirm_compromised);
    desired.clear_never_expires = manifests
        .iter()
        .filter(|a| {
            let ad = &a.manifest.spec.active_directory;
            ad.must_change_password && ad.clear_password_never_expires
        })
        .map(|a| a.manifest.name.clone())
        .collect();
    desired
}

fn state(
    group: &Group<'_>,
    field: &str,
    values: Vec<(ManifestName, bool)>,
    conflicts: &mut Vec<Conflict>,
) -> Option<StateWant> {
    let (yes, no): (Vec<_>, Vec<_>) = values.into_iter().partition(|(_, value)| *value);
    let names = |side: Vec<(ManifestName, bool)>| side.into_iter().map(|(name, _)| name).collect::<Vec<_>>();
    let (yes, no) = (names(yes), names(no));
    match (yes.is_empty(), no.is_empty()) {
        (true, true) => None,
        (true, false) => Some(StateWant { value: false, provenance: no }),
        (false, no_empty) => {
            if !no_empty {
                conflicts.push(Conflict {
                    identity: group.identity.clone(),
                    field: field.to_owned(),
                    safer: ConflictSide { manifests: yes.clone(), value: true },
                    overruled: ConflictSide { manifests: no, value: false },
                });
            }
            Some(StateWant { value: true, provenance: yes })
        }
    }
}

fn one_shot(desired: &Desired, manifests: &[&ActiveManifest], asks: impl Fn(&Manifest) -> bool) -> Option<OneShot> {
    let askers: Vec<&ManifestName> =
        manifests.iter().map(|a| &a.manifest).filter(|m| asks(m)).map(|m| &m.name).collect();
    let since = askers.iter().filter_map(|name| desired.effective_since(name)).max()?;
    Some(OneShot { since, provenance: askers.into_iter().cloned().collect() })
}

/// The active or suspended manifests of the group that ask for the state `action` produces: a
/// release does not undo what another manifest still wants (a suspended one included: it asks
/// for the account to be left alone).
pub(super) fn wanted_by(group: &Group<'_>, action: Action) -> Vec<ManifestName> {
    group
        .active
        .iter()
        .chain(&group.suspended)
        .map(|a| &a.manifest)
        .filter(|m| {
            let (ad, entra) = (&m.spec.active_directory, &m.spec.entra_id);
            match action {
                Action::DisableAccount => ad.disabled == Some(true),
                Action::EnableAccount => ad.disabled == Some(false),
                // Setting "password never expires" again would silently defeat any manifest's
                // forced password change, whether or not that manifest allows clearing the flag.
                Action::ClearPasswordNeverExpires => ad.must_change_password,
                Action::ForcePasswordChange => ad.must_change_password,
                Action::SuspendUser => entra.suspended == Some(true),
                Action::UnsuspendUser => entra.suspended == Some(false),
                Action::SetPasswordNeverExpires
                | Action::CancelForcedPasswordChange
                | Action::RevokeSessions
                | Action::ConfirmCompromised => false,
            }
        })
        .map(|m| m.name.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}
