//! The manifests coming in: the watcher's reports, taken in through the admission rule
//! ([`remedy_policies::admission::Admission::admit`]), with the guard against an empty (unmounted) manifest directory and the
//! git commit the set was read at.

use remedy_policies::load::ManifestSet;

use super::Controller;
use crate::watch::WatchEvent;

impl Controller {
    /// Takes in the watcher's report; returns whether the manifests in force changed.
    pub(super) async fn on_manifests(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::LoadFailed(why) => {
                tracing::error!(error = %why, manifests = self.admission.in_force().len(), "the manifest set cannot be read: the last good set stays in force");
                self.progress.send_modify(|p| p.load_error = Some(why));
                false
            }
            WatchEvent::Changed(set) => {
                if set.manifests.is_empty() && set.rejected.is_empty() && self.looks_unmounted().await {
                    let why = format!(
                        "{} is empty (not even a .git), while manifests were in force: an unmounted volume or a \
                         checkout not there yet? Nothing is released from an empty directory; the last good set stays \
                         in force. To release every manifest, remove them with a commit (the checkout keeps its .git)",
                        self.settings.manifest_dir.display()
                    );
                    tracing::error!(error = %why, "the manifest directory is empty");
                    self.progress.send_modify(|p| p.load_error = Some(why));
                    return false;
                }
                self.commit = git_commit(&self.settings.manifest_dir).await;
                let changed = self.admit(set);
                self.progress.send_modify(|p| {
                    p.loaded = true;
                    p.load_error = None;
                });
                changed
            }
        }
    }

    /// Takes in a loaded set ([`remedy_policies::admission::Admission::admit`]); logs what it rejected.
    fn admit(&mut self, set: ManifestSet) -> bool {
        let changed = self.admission.admit(set);
        for (name, diagnostics) in self.admission.invalid() {
            tracing::error!(manifest = %name, problems = %diagnostics.join("; "), "invalid manifest");
        }
        for problem in self.admission.unattributed() {
            tracing::error!(%problem, "a rejected document names no manifest: no manifest is released until it is fixed");
        }
        let unattributed = self.admission.unattributed().to_vec();
        let names = self.admission.names();
        self.progress.send_modify(|p| {
            p.unattributed_rejections = unattributed;
            p.manifest_names = names;
        });
        changed
    }

    /// Whether the manifest directory has no entry at all (hidden ones included) while remedy
    /// knows manifests: an empty mount point, not a repository whose manifests were removed.
    async fn looks_unmounted(&self) -> bool {
        let dir = self.settings.manifest_dir.clone();
        let store = self.store.clone();
        let knows_manifests = !self.admission.in_force().is_empty();
        let check = tokio::task::spawn_blocking(move || {
            let empty = std::fs::read_dir(&dir).map(|mut entries| entries.next().is_none()).unwrap_or(false);
            empty && (knows_manifests || store.known_manifests().map(|k| !k.is_empty()).unwrap_or(true))
        });
        check.await.unwrap_or(false)
    }
}

/// The git commit checked out in `dir`, when it is a git work tree.
pub(super) async fn git_commit(dir: &std::path::Path) -> Option<String> {
    let output = tokio::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !commit.is_empty()).then_some(commit)
}
