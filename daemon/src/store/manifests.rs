//! What remedy remembers about manifests between runs: when it first saw each generation (the
//! plan's `effective_since`), and each manifest's last known content, so that a manifest deleted
//! from the repository (even while remedy was down) can still be released.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use remedy_policies::manifest::{Generation, OnRelease, Target};
use remedy_policies::plan::{DepartedManifest, RecordedChange};
use remedy_policies::{Manifest, ManifestName};
use serde::{Deserialize, Serialize};
use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::error::StoreError;
use super::{decode, encode, layout, transaction_result, Store, StoreOp, WRITE_CHUNK};

/// A manifest as remedy last saw it: enough to release it once it is gone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KnownManifest {
    pub name: ManifestName,
    pub generation: Generation,
    pub target: Target,
    #[serde(default)]
    pub on_release: OnRelease,
    /// The manifest's `spec.reason`.
    pub reason: String,
    /// Accounts the manifest named before its `spec.target` was edited, not yet released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<RetiredTarget>,
}

/// An account a manifest stopped naming (its target was edited): released like a deleted
/// manifest, under the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetiredTarget {
    pub target: Target,
    #[serde(default)]
    pub on_release: OnRelease,
}

impl KnownManifest {
    pub fn of(manifest: &Manifest) -> KnownManifest {
        KnownManifest {
            name: manifest.name.clone(),
            generation: manifest.generation.clone(),
            target: manifest.spec.target.clone(),
            on_release: manifest.spec.on_release,
            reason: manifest.spec.reason.clone(),
            retired: Vec::new(),
        }
    }

    /// What to remember for `manifest`, given what was remembered before: a target that changed
    /// is retired (to be released), a target named again is no longer.
    fn succeeding(previous: Option<&KnownManifest>, manifest: &Manifest) -> KnownManifest {
        let mut known = KnownManifest::of(manifest);
        if let Some(previous) = previous {
            known.retired = previous.retired.clone();
            if previous.target.identity != known.target.identity {
                known.retired.push(RetiredTarget { target: previous.target.clone(), on_release: previous.on_release });
            }
            known.retired.retain(|r| r.target.identity != known.target.identity);
            known.retired.dedup_by(|a, b| a.target.identity == b.target.identity);
        }
        known
    }

    /// The plan's input for this manifest once it left the set; `why` goes into the history
    /// (e.g. "deleted in commit 3f2a1c").
    pub fn departed(&self, why: impl Into<String>) -> DepartedManifest {
        DepartedManifest {
            name: self.name.clone(),
            target: self.target.clone(),
            on_release: self.on_release,
            reason: why.into(),
        }
    }
}

/// `<name>\0`: the prefix of a manifest's first-seen keys (a name never contains a NUL).
fn first_seen_prefix(name: &ManifestName) -> Vec<u8> {
    let mut key = name.as_str().as_bytes().to_vec();
    key.push(0);
    key
}

fn first_seen_key(name: &ManifestName, generation: &Generation) -> Vec<u8> {
    let mut key = first_seen_prefix(name);
    key.extend_from_slice(generation.as_str().as_bytes());
    key
}

impl Store {
    /// When remedy first saw this generation of the manifest.
    pub fn effective_since(
        &self,
        name: &ManifestName,
        generation: &Generation,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let key = first_seen_key(name, generation);
        self.first_seen
            .get(&key)?
            .map(|bytes| decode(layout::FIRST_SEEN, &String::from_utf8_lossy(&key), &bytes))
            .transpose()
    }

    /// Records that the generation was seen at `at`, keeping an earlier time; returns the time
    /// that holds (the earliest). Durable when it returns, if it wrote anything.
    pub fn record_first_seen(
        &self,
        name: &ManifestName,
        generation: &Generation,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        self.logged(
            || StoreOp::RecordFirstSeen { name: name.clone(), generation: generation.clone(), at },
            |store| store.record_first_seen_applied(name, generation, at),
        )
    }

    pub(super) fn record_first_seen_applied(
        &self,
        name: &ManifestName,
        generation: &Generation,
        at: DateTime<Utc>,
    ) -> Result<DateTime<Utc>, StoreError> {
        let abort = ConflictableTransactionError::Abort;
        let key = first_seen_key(name, generation);
        let result = self.first_seen.transaction(|tree| {
            let earlier: Option<DateTime<Utc>> = match tree.get(&key)? {
                Some(bytes) => Some(decode(layout::FIRST_SEEN, &String::from_utf8_lossy(&key), &bytes).map_err(abort)?),
                None => None,
            };
            match earlier {
                Some(earlier) if earlier <= at => Ok((earlier, false)),
                _ => {
                    tree.insert(key.as_slice(), encode(layout::FIRST_SEEN, &at).map_err(abort)?)?;
                    Ok((at, true))
                }
            }
        });
        let (since, wrote) = transaction_result(result)?;
        if wrote {
            self.db.flush()?;
        }
        Ok(since)
    }

    /// Remembers the manifest's content (target, onRelease, reason) for a release after it is
    /// deleted. Writes (and flushes) only when it changed.
    pub fn remember_manifest(&self, manifest: &Manifest) -> Result<(), StoreError> {
        self.logged(
            || StoreOp::RememberManifest { manifest: manifest.clone() },
            |store| store.remember_manifest_applied(manifest),
        )
    }

    pub(super) fn remember_manifest_applied(&self, manifest: &Manifest) -> Result<(), StoreError> {
        let previous = self.known_manifest(&manifest.name)?;
        let known = KnownManifest::succeeding(previous.as_ref(), manifest);
        let bytes = encode(layout::KNOWN_MANIFESTS, &known)?;
        let key = manifest.name.as_str();
        if self.known.get(key)?.is_some_and(|stored| stored.as_ref() == bytes.as_slice()) {
            return Ok(());
        }
        self.known.insert(key, bytes)?;
        self.db.flush()?;
        Ok(())
    }

    /// For a whole set at once: records each manifest's generation as seen at `at` (keeping an
    /// earlier time) and remembers its content; returns the time each generation was first seen,
    /// in order. Written in chunks of [`WRITE_CHUNK`] manifests, each one transaction and at most
    /// one flush (a chunk that changes nothing writes nothing); when a chunk fails, the chunks
    /// before it are remembered, which the next call finds and keeps.
    pub fn remember_manifests(
        &self,
        manifests: &[Manifest],
        at: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let mut times = Vec::with_capacity(manifests.len());
        for chunk in manifests.chunks(WRITE_CHUNK) {
            times.extend(self.logged(
                || StoreOp::RememberChunk { manifests: chunk.to_vec(), at },
                |store| store.remember_chunk_applied(chunk, at),
            )?);
        }
        Ok(times)
    }

    pub(super) fn remember_chunk_applied(
        &self,
        manifests: &[Manifest],
        at: DateTime<Utc>,
    ) -> Result<Vec<DateTime<Utc>>, StoreError> {
        let abort = ConflictableTransactionError::Abort;
        let prepared: Vec<(Vec<u8>, String, Vec<u8>)> = manifests
            .iter()
            .map(|m| {
                let known = KnownManifest::succeeding(self.known_manifest(&m.name)?.as_ref(), m);
                Ok((
                    first_seen_key(&m.name, &m.generation),
                    m.name.as_str().to_owned(),
                    encode(layout::KNOWN_MANIFESTS, &known)?,
                ))
            })
            .collect::<Result<_, StoreError>>()?;
        let result = (&self.first_seen, &self.known).transaction(|(first_seen, known)| {
            let mut times = Vec::with_capacity(prepared.len());
            let mut wrote = false;
            for (key, name, content) in &prepared {
                let earlier: Option<DateTime<Utc>> = match first_seen.get(key)? {
                    Some(bytes) => {
                        Some(decode(layout::FIRST_SEEN, &String::from_utf8_lossy(key), &bytes).map_err(abort)?)
                    }
                    None => None,
                };
                match earlier {
                    Some(earlier) if earlier <= at => times.push(earlier),
                    _ => {
                        first_seen.insert(key.as_slice(), encode(layout::FIRST_SEEN, &at).map_err(abort)?)?;
                        times.push(at);
                        wrote = true;
                    }
                }
                if known.get(name.as_str())?.is_none_or(|stored| stored.as_ref() != content.as_slice()) {
                    known.insert(name.as_str(), content.as_slice())?;
                    wrote = true;
                }
            }
            Ok((times, wrote))
        });
        let (times, wrote) = transaction_result(result)?;
        if wrote {
            self.db.flush()?;
        }
        Ok(times)
    }

    pub fn known_manifest(&self, name: &ManifestName) -> Result<Option<KnownManifest>, StoreError> {
        self.known.get(name.as_str())?.map(|bytes| decode(layout::KNOWN_MANIFESTS, name.as_str(), &bytes)).transpose()
    }

    /// Every remembered manifest, by name.
    pub fn known_manifests(&self) -> Result<Vec<KnownManifest>, StoreError> {
        self.known
            .iter()
            .map(|entry| {
                let (key, value) = entry?;
                decode(layout::KNOWN_MANIFESTS, &String::from_utf8_lossy(&key), &value)
            })
            .collect()
    }

    /// The remembered manifests that are not in `current`, and the retired targets of those that
    /// are, as the plan's departed manifests.
    pub fn departed_manifests(
        &self,
        current: &BTreeSet<ManifestName>,
        why: &str,
    ) -> Result<Vec<DepartedManifest>, StoreError> {
        let mut departed = Vec::new();
        for known in self.known_manifests()? {
            for retired in &known.retired {
                departed.push(DepartedManifest {
                    name: known.name.clone(),
                    target: retired.target.clone(),
                    on_release: retired.on_release,
                    reason: format!("retargeted: spec.target no longer names {}", retired.target.identity),
                });
            }
            if !current.contains(&known.name) {
                departed.push(known.departed(why));
            }
        }
        Ok(departed)
    }

    /// Forgets a retired target of a manifest once it has been released. Durable when it returns.
    pub fn forget_retired(&self, name: &ManifestName, target: &Target) -> Result<(), StoreError> {
        self.logged(
            || StoreOp::ForgetRetired { name: name.clone(), target: target.clone() },
            |store| store.forget_retired_applied(name, target),
        )
    }

    pub(super) fn forget_retired_applied(&self, name: &ManifestName, target: &Target) -> Result<(), StoreError> {
        let Some(mut known) = self.known_manifest(name)? else { return Ok(()) };
        let before = known.retired.len();
        known.retired.retain(|r| r.target.identity != target.identity);
        if known.retired.len() != before {
            self.known.insert(name.as_str(), encode(layout::KNOWN_MANIFESTS, &known)?)?;
            self.db.flush()?;
        }
        Ok(())
    }

    /// Forgets a manifest once it has been released: its content, every first-seen time, and the
    /// changes remedy made for it in the index the plan reads (so that a manifest of the same name
    /// added later starts afresh: its changes are new, counted by the blast-radius limit, and not
    /// taken for drift corrections). The history itself keeps every record. Durable when it
    /// returns.
    pub fn forget_manifest(&self, name: &ManifestName) -> Result<(), StoreError> {
        self.logged(|| StoreOp::ForgetManifest { name: name.clone() }, |store| store.forget_manifest_applied(name))
    }

    pub(super) fn forget_manifest_applied(&self, name: &ManifestName) -> Result<(), StoreError> {
        let first_seen_keys: Vec<sled::IVec> =
            self.first_seen.scan_prefix(first_seen_prefix(name)).keys().collect::<Result<_, _>>()?;
        let mut rewritten: Vec<(sled::IVec, Option<Vec<u8>>)> = Vec::new();
        for entry in self.changes.iter() {
            let (key, value) = entry?;
            let changes: Vec<RecordedChange> =
                decode(layout::CHANGES_BY_IDENTITY, &String::from_utf8_lossy(&key), &value)?;
            if !changes.iter().any(|c| c.manifest == *name) {
                continue;
            }
            let kept: Vec<RecordedChange> = changes.into_iter().filter(|c| c.manifest != *name).collect();
            let value = if kept.is_empty() { None } else { Some(encode(layout::CHANGES_BY_IDENTITY, &kept)?) };
            rewritten.push((key, value));
        }
        let result = (&self.known, &self.first_seen, &self.changes).transaction(|(known, first_seen, changes)| {
            known.remove(name.as_str())?;
            for key in &first_seen_keys {
                first_seen.remove(key)?;
            }
            for (key, value) in &rewritten {
                match value {
                    Some(value) => changes.insert(key, value.as_slice())?,
                    None => changes.remove(key)?,
                };
            }
            Ok(())
        });
        transaction_result::<()>(result)?;
        self.db.flush()?;
        Ok(())
    }
}
