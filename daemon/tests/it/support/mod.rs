//! What more than one test module needs, each in one place: the Samba DC ([`dc`]), the in-process
//! daemon ([`daemon`]), `remedy serve` and the operator commands as child processes ([`serve`]),
//! a strict reader of the Prometheus text format ([`prometheus`]), and the pieces of
//! `remedy.yaml` and the controller's settings that tests build.

pub mod daemon;
pub mod dc;
pub mod etcd;
pub mod kerberos;
pub mod prometheus;
pub mod proxy;
pub mod serve;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use remedy::controller::{Backoff, Settings};
use remedy::schedule::ResyncSchedule;
use remedy_policies::config::Config;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The controller's settings as `remedy serve` derives them from `config`, with the tests' short
/// backoff (1 s, capped at 5 s).
pub fn settings(config: &Config, manifest_dir: PathBuf) -> Settings {
    Settings {
        guardrails: config.guardrails.clone(),
        resync: ResyncSchedule::parse(&config.resync).expect("schedule"),
        manifest_dir,
        backoff: Backoff { base: Duration::from_secs(1), cap: Duration::from_secs(5) },
        store_moved_aside: None,
        contest: config.contest.limits(),
    }
}

/// The `entraId:` section of `remedy.yaml` for a graph-sim at `url`.
pub fn entra_yaml(
    tenant: &str,
    client_id: &str,
    secret_file: impl std::fmt::Display,
    url: &str,
    request_timeout: Option<&str>,
) -> String {
    let mut yaml = format!(
        "entraId:\n  tenantId: {tenant}\n  clientId: {client_id}\n  clientSecretFile: {secret_file}\n  \
         authorityHost: {url}\n  graphUrl: {url}\n"
    );
    if let Some(timeout) = request_timeout {
        yaml.push_str(&format!("  requestTimeout: {timeout}\n"));
    }
    yaml
}

/// One entry of `api.tokens` (indented for the list under `tokens:`).
pub fn token_yaml(name: &str, role: &str, token: &str) -> String {
    format!("    - {{name: {name}, role: {role}, sha256: {}}}\n", sha256(token))
}

/// `git ARGS` in `repo`, apart from the user's and the system's git configuration; its output.
pub fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["-c", "user.name=remedy-test", "-c", "user.email=test@remedy.test", "-c", "init.defaultBranch=main"])
        .args(["-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("run git");
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).expect("git output is UTF-8").trim().to_owned()
}

pub fn sha256(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Writes a file only its owner may read, as secrets and tokens are kept.
pub fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").port()
}

/// The condition `kind` of a status object as the API and `-o json` show it.
pub fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or_else(|| panic!("no {kind} condition: {status:#}"))
}

/// An HTTP client on rustls (ring) trusting `roots` only (none: plain HTTP only, as on the API's
/// loopback listener), a 10 s timeout, redirects not followed (the web page's answers are looked at
/// as they come).
pub fn http_client(roots: &[rustls::pki_types::CertificateDer<'static>]) -> reqwest::Client {
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store.add(root.clone()).expect("a usable root certificate");
    }
    let tls =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(store)
            .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("HTTP client")
}
