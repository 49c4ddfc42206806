//! What the commands start from: `remedy.yaml`, read and checked, paths in it resolved against its
//! directory, and the manifest set it points to (`plan`, `apply`; `serve` reads the configuration
//! here and watches the set itself).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use remedy_policies::config::Config;
use remedy_policies::identity::Identity;
use remedy_policies::load;
use remedy_policies::manifest::{ManifestName, Target};
use remedy_policies::plan::{ActiveManifest, DepartedManifest};

use crate::manifest_dir;

/// Reads and checks `remedy.yaml`, reporting every problem with its location. A file larger than
/// the configuration may be is refused without being read whole.
pub fn read_config(path: &Path) -> Result<Config> {
    let text = manifest_dir::read_bounded(path, load::MAX_FILE_BYTES)
        .map_err(|message| anyhow::anyhow!("cannot read the configuration {}: {message}", path.display()))?;
    Config::from_yaml(&path.display().to_string(), &text).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid configuration:\n{}", lines.join("\n"))
    })
}

/// Sets the process up for a Kerberos bind, when `activeDirectory.kerberos` asks for one (see
/// [`crate::ad::kerberos::prepare_process`]): before the command starts its runtime's threads.
pub fn prepare_kerberos(config: &Config, config_path: &Path) -> Result<()> {
    if let Some(ad) = &config.active_directory {
        let dir = config_path.parent().unwrap_or(Path::new("."));
        crate::ad::kerberos::prepare_process(ad, dir)
            .with_context(|| format!("cannot set up the Kerberos bind to {}", ad.dc_urls().join(", ")))?;
    }
    Ok(())
}

/// A path from the configuration, relative to the configuration file's directory.
pub fn config_relative(config_path: &Path, value: &str) -> PathBuf {
    let dir = config_path.parent().unwrap_or(Path::new("."));
    dir.join(value)
}

/// The manifest set and configuration a plan is made from.
#[derive(Debug)]
pub struct Inputs {
    pub config: Config,
    pub config_path: PathBuf,
    pub set: remedy_policies::load::ManifestSet,
    pub manifest_dir: PathBuf,
}

/// Reads the configuration and the manifest set; prints the set's diagnostics to stderr.
pub fn read_inputs(config_path: &Path, manifests: Option<&Path>) -> Result<Inputs> {
    let config = read_config(config_path)?;
    let manifest_dir =
        manifests.map(Path::to_path_buf).unwrap_or_else(|| config_relative(config_path, &config.manifests.path));
    let set = manifest_dir::load_set(std::slice::from_ref(&manifest_dir))?;
    for diagnostic in set.diagnostics() {
        eprintln!("{diagnostic}");
    }
    Ok(Inputs { config, config_path: config_path.to_path_buf(), set, manifest_dir })
}

impl Inputs {
    /// The active manifests with their effective times: from `overrides` where given, else the
    /// time the manifest's file was last modified (without the daemon's store, that is the best
    /// evidence of when the manifest was written; a later password change then satisfies it).
    pub fn active(&self, overrides: &BTreeMap<ManifestName, DateTime<Utc>>, now: DateTime<Utc>) -> Vec<ActiveManifest> {
        self.set
            .manifests
            .iter()
            .map(|m| {
                let written = fs::metadata(self.manifest_dir.join(&m.origin.file))
                    .or_else(|_| fs::metadata(&self.manifest_dir))
                    .and_then(|meta| meta.modified())
                    .map(DateTime::<Utc>::from)
                    .unwrap_or(now);
                ActiveManifest {
                    manifest: m.clone(),
                    effective_since: overrides.get(&m.name).copied().unwrap_or(written.min(now)),
                }
            })
            .collect()
    }

    /// The identities whose risk state must be read (their manifests ask for confirmCompromised).
    pub fn risk_for(&self) -> BTreeSet<Identity> {
        self.set
            .manifests
            .iter()
            .filter(|m| m.spec.entra_id.confirm_compromised)
            .map(|m| m.spec.target.identity.clone())
            .collect()
    }

    /// Every target the set names (observations are made for these).
    pub fn targets(&self, departed: &[DepartedManifest]) -> Vec<Target> {
        self.set
            .manifests
            .iter()
            .map(|m| m.spec.target.clone())
            .chain(departed.iter().map(|d| d.target.clone()))
            .collect()
    }
}
