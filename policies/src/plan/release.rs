//! Step 3: released manifests (deleted or expired).
//!
//! `onRelease: leave` does nothing. `onRelease: restore` undoes remedy's own recorded changes for
//! that manifest and account, one attribute at a time, and only where it is safe: the account
//! still shows what remedy left (nobody changed it since) and no other manifest still wants it.

use std::collections::BTreeMap;

use super::engine::Work;
use super::merge::{time, wanted_by, Group, Release};
use super::{Cause, PlanInput, RecordedChange};
use crate::action::{Action, Provider};
use crate::manifest::OnRelease;
use crate::observed::ProviderView;

pub(super) fn plan_releases(group: &Group<'_>, input: &PlanInput<'_>, work: &mut Work) {
    for release in &group.released {
        match release.on_release {
            OnRelease::Leave => work.notes.push(format!(
                "{} released ({}); onRelease: leave: the account is left as it is",
                release.name, release.why
            )),
            OnRelease::Restore => restore(group, release, input, work),
        }
    }
}

/// Records of one attribute share a key: an action and its inverse.
fn attribute_key(action: Action) -> Action {
    action.inverse().map_or(action, |inverse| inverse.min(action))
}

/// The order of history records: by time, ties broken so that the order is total.
fn order(change: &RecordedChange) -> impl Ord + '_ {
    (change.at, change.action, &change.manifest, &change.identity)
}

fn restore(group: &Group<'_>, release: &Release, input: &PlanInput<'_>, work: &mut Work) {
    let header = format!("{} released ({}); onRelease: restore", release.name, release.why);
    let about_account: Vec<&RecordedChange> =
        input.remedy_changes.iter().filter(|change| group.is_about(&change.identity, input.observed)).collect();
    let mut records: Vec<&RecordedChange> =
        about_account.iter().copied().filter(|change| change.manifest == release.name).collect();
    if records.is_empty() {
        work.notes.push(format!("{header}: remedy recorded no change for it on this account, nothing to restore"));
        return;
    }
    records.sort_by(|a, b| order(a).cmp(&order(b)));
    // Per attribute (an action and its inverse): remedy's first change tells what was there
    // before remedy, its last one what remedy left.
    let mut history: BTreeMap<Action, (&RecordedChange, &RecordedChange)> = BTreeMap::new();
    for record in records {
        let key = attribute_key(record.action);
        history.entry(key).and_modify(|(_, last)| *last = record).or_insert((record, record));
    }
    for (first, last) in history.into_values() {
        let done = first.action;
        let Some(undo) = done.inverse() else {
            work.notes.push(format!("{header}: {done} at {} cannot be undone", time(first.at)));
            continue;
        };
        if matches!(done, Action::SetPasswordNeverExpires | Action::CancelForcedPasswordChange) {
            // remedy makes these only to restore; the change they undid is not in the history.
            work.notes
                .push(format!("{header}: {done} at {} was itself a restore, there is nothing to undo", time(first.at)));
            continue;
        }
        if last.action != done {
            work.notes.push(format!(
                "{header}: {done} at {} was already undone ({} at {})",
                time(first.at),
                last.action,
                time(last.at)
            ));
            continue;
        }
        // Only the manifest with remedy's latest change to the attribute may restore it. When
        // remedy wrote it since for another manifest (even the same value, as that manifest's
        // own restore may have), undoing it here would undo the other's change, and two
        // released manifests would undo each other for ever.
        let latest = about_account
            .iter()
            .filter(|change| attribute_key(change.action) == attribute_key(done))
            .max_by(|a, b| order(a).cmp(&order(b)));
        if let Some(other) = latest.filter(|change| change.manifest != release.name) {
            work.notes.push(format!(
                "{header}: {undo} not planned: remedy's latest change to {} was made for {} \
                 ({} at {}), so it is left as it is",
                done.attribute(),
                other.manifest,
                other.action,
                time(other.at)
            ));
            continue;
        }
        let holds = match done.provider() {
            Provider::ActiveDirectory => observed(&group.ad, |a| done.shows_on_ad(a)),
            Provider::EntraId => observed(&group.entra, |u| done.shows_on_entra(u, last.at)),
        };
        let holds = match holds {
            Ok(holds) => holds,
            Err(trouble) => {
                if trouble.unavailable {
                    work.unavailable = true;
                }
                work.notes.push(format!("{header}: {undo} cannot be planned: {} {}", done.provider(), trouble.text));
                continue;
            }
        };
        if !holds {
            work.notes.push(format!(
                "{header}: {undo} not planned: {} was changed since remedy's {done} at {} \
                 (now {}), so it is left as it is",
                done.attribute(),
                time(last.at),
                done.value_on(group.ad_account(), group.entra_user())
            ));
            continue;
        }
        let wanted = wanted_by(group, done);
        if !wanted.is_empty() {
            let names = wanted.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
            work.notes.push(format!("{header}: {undo} not planned: {} is still wanted by {names}", state_after(done)));
            continue;
        }
        if let Some(existing) = work.actions.iter_mut().find(|a| a.action == undo) {
            // Another released manifest restores the same thing: one action, both named.
            if !matches!(existing.cause, Cause::Release { .. }) {
                work.notes.push(format!("{header}: {undo} is planned anyway, as the current manifests ask"));
            } else if !existing.provenance.contains(&release.name) {
                existing.provenance.push(release.name.clone());
                existing.reason = format!("{}; {} released: {}", existing.reason, release.name, release.why);
            }
            continue;
        }
        work.add(
            undo,
            vec![release.name.clone()],
            format!("{} released: {}", release.name, release.why),
            Cause::Release { manifest: release.name.clone() },
        );
    }
}

/// The state an action leaves, in words.
fn state_after(done: Action) -> &'static str {
    match done {
        Action::DisableAccount => "the account being disabled",
        Action::EnableAccount => "the account being enabled",
        Action::ClearPasswordNeverExpires => "\"password never expires\" being cleared",
        Action::SetPasswordNeverExpires => "\"password never expires\" being set",
        Action::ForcePasswordChange => "a forced password change",
        Action::CancelForcedPasswordChange => "no forced password change",
        Action::SuspendUser => "the user being suspended",
        Action::UnsuspendUser => "the user being enabled",
        Action::RevokeSessions | Action::ConfirmCompromised => "what it did",
    }
}

struct Trouble {
    text: String,
    unavailable: bool,
}

fn observed<T>(view: &ProviderView<T>, holds: impl Fn(&T) -> bool) -> Result<bool, Trouble> {
    let (text, unavailable) = match view {
        ProviderView::Found(t) => return Ok(holds(t)),
        ProviderView::NotFound => ("no longer finds the account".to_owned(), false),
        ProviderView::Ambiguous { candidates } => {
            (format!("finds more than one account ({})", candidates.join("; ")), false)
        }
        ProviderView::NotConfigured => ("is not configured".to_owned(), false),
        ProviderView::Unavailable { error } => (format!("is unavailable ({error})"), true),
    };
    Err(Trouble { text, unavailable })
}
