//! The daemon's configuration file (`remedy.yaml`): its schema and validation.
//!
//! Guardrails live here and not in the manifest set on purpose: a commit to the manifest
//! repository must not be able to lift them.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::diagnostic::Diagnostic;
use crate::load::{self, Subject};
use crate::notify::{EventFilter, EventKind, EventSeverity};

/// The whole `remedy.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    pub manifests: ManifestSource,
    pub guardrails: Guardrails,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_directory: Option<ActiveDirectoryConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entra_id: Option<EntraConfig>,
    /// Cron expression (UTC) for full resyncs; validated by the daemon, which owns the scheduler.
    #[serde(default = "default_resync")]
    pub resync: String,
    #[serde(default)]
    pub store: StoreConfig,
    /// The HTTP API `remedy serve` offers (status, history, reconcile, approve, metrics).
    #[serde(default)]
    pub api: ApiConfig,
    /// When an account that keeps being changed back counts as contested, and how remedy's
    /// corrections of it are spaced then.
    #[serde(default)]
    pub contest: ContestConfig,
    /// Where remedy tells people what happened (webhook, Slack, Microsoft Teams).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<NotificationSink>,
    /// Several instances, one leading, coordinated through etcd; absent: one instance on its own
    /// store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ha: Option<HaConfig>,
}

/// High availability: several `remedy serve` instances elect a leader through etcd; the leader
/// acts, the others stand by with a replica of its store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HaConfig {
    /// This instance's name in the election, in status and in history; unique per instance.
    /// Absent: the host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// The leader's etcd lease: a leader that stops renewing it (crashed, paused, cut off) is
    /// replaced after at most this long. Whole seconds, at least 2s.
    #[serde(default = "default_lease_ttl", with = "duration_text")]
    pub lease_ttl: Duration,
    /// Every AD or Graph send of the leader is cut at this, and none starts with less lease left:
    /// at most half of `leaseTtl`.
    #[serde(default = "default_send_timeout", with = "duration_text")]
    pub send_timeout: Duration,
    pub etcd: EtcdConfig,
}

/// The etcd cluster the instances share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdConfig {
    /// The members' client URLs, `https://host:port` (or `http://host:port` with
    /// `insecurePlaintext: true`).
    pub endpoints: Vec<String>,
    /// The keys of this deployment start with it; starts and ends with `/`.
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    /// How long one request to one member may take; less than `leaseTtl`.
    #[serde(default = "default_etcd_request_timeout", with = "duration_text")]
    pub request_timeout: Duration,
    /// How remedy checks the members (and, with a client certificate, proves itself to them):
    /// required for `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<EtcdTls>,
    /// Must be written as true to talk to an `http://` endpoint (leadership and the operation log
    /// would travel in clear and unauthenticated); refused when every endpoint is `https://`.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

/// TLS to etcd's client URLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EtcdTls {
    /// PEM file of the CA(s) that sign the members' certificates: the only roots trusted.
    pub ca_file: String,
    /// PEM file of remedy's client certificate (chain), for etcd's `--client-cert-auth`; with
    /// `keyFile`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<String>,
    /// PEM file of the client certificate's private key (unencrypted; only its owner may read it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<String>,
}

fn default_lease_ttl() -> Duration {
    Duration::from_secs(8)
}
fn default_send_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_etcd_prefix() -> String {
    "/remedy/".to_owned()
}
fn default_etcd_request_timeout() -> Duration {
    Duration::from_secs(2)
}

/// The longest `ha.instanceId`: a DNS label's length.
pub const MAX_INSTANCE_ID_LEN: usize = 63;

impl HaConfig {
    /// The instance id: `instanceId`, else `hostname`.
    pub fn instance_id_or(&self, hostname: &str) -> String {
        self.instance_id.clone().unwrap_or_else(|| hostname.to_owned())
    }

    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let Some(id) = &self.instance_id {
            if let Err(why) = check_instance_id(id) {
                problems.push(("ha.instanceId", why));
            }
        }
        let ttl = self.lease_ttl;
        if ttl.subsec_nanos() != 0 || ttl < Duration::from_secs(2) {
            problems.push((
                "ha.leaseTtl",
                format!(
                    "{} must be whole seconds, at least 2s (etcd leases count seconds)",
                    duration_text::format(&ttl)
                ),
            ));
        }
        if self.send_timeout.is_zero() {
            problems.push(("ha.sendTimeout", "must be more than 0s".to_owned()));
        } else if self.send_timeout > ttl / 2 {
            problems.push((
                "ha.sendTimeout",
                format!(
                    "{} is more than half of leaseTtl ({}): a send could outlast the leadership it started under",
                    duration_text::format(&self.send_timeout),
                    duration_text::format(&ttl)
                ),
            ));
        }
        problems.extend(self.etcd.problems(ttl));
        problems
    }
}

/// Whether `id` may name an instance: 1 to 63 of `A-Z a-z 0-9 . _ -`.
pub fn check_instance_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("is empty: leave it out to use the host name".to_owned());
    }
    if let Some(bad) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("{id:?} has {bad:?}: use only letters, digits, '.', '_' and '-'"));
    }
    if id.len() > MAX_INSTANCE_ID_LEN {
        return Err(format!("is {} characters long: at most {MAX_INSTANCE_ID_LEN}", id.len()));
    }
    Ok(())
}

/// The scheme of an etcd client URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdScheme {
    Http,
    Https,
}

/// Checks an etcd client URL, `http[s]://host:port` (a trailing `/` allowed, no path): its scheme,
/// or what is wrong.
pub fn etcd_endpoint_scheme(url: &str) -> Result<EtcdScheme, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("https", rest)) => (EtcdScheme::Https, rest),
        Some(("http", rest)) => (EtcdScheme::Http, rest),
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) || authority.chars().any(char::is_whitespace) {
        return Err(format!("{url:?} must be scheme://host:port alone (no path, query or user)"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once("]:") {
            Some((host, port)) => (host, Some(port)),
            None => (bracketed.trim_end_matches(']'), None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Err(format!("{url:?} names no host"));
    }
    match port.map(str::parse::<u16>) {
        Some(Ok(port)) if port > 0 => Ok(scheme),
        Some(_) => Err(format!("{url:?} has no valid port (1 to 65535)")),
        None => Err(format!("{url:?} names no port: write host:port, e.g. etcd1.example:2379")),
    }
}

impl EtcdConfig {
    fn problems(&self, lease_ttl: Duration) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.endpoints.is_empty() {
            problems
                .push(("ha.etcd.endpoints", "name at least one member's client URL (best: all of them)".to_owned()));
        }
        let mut seen = std::collections::BTreeSet::new();
        let (mut http, mut https, mut unreadable) = (false, false, false);
        for url in &self.endpoints {
            if !seen.insert(url.trim_end_matches('/').to_ascii_lowercase()) {
                problems.push(("ha.etcd.endpoints", format!("{url:?} is listed twice")));
            }
            match etcd_endpoint_scheme(url) {
                Ok(EtcdScheme::Http) => http = true,
                Ok(EtcdScheme::Https) => https = true,
                Err(why) => {
                    unreadable = true;
                    problems.push(("ha.etcd.endpoints", why));
                }
            }
        }
        if http && !self.insecure_plaintext {
            problems.push((
                "ha.etcd.endpoints",
                "an http:// endpoint carries leadership and the operation log in clear, unauthenticated: use https:// with tls, or write insecurePlaintext: true to accept it"
                    .to_owned(),
            ));
        }
        // Whether tls or insecurePlaintext is pointless is only known once every endpoint is read.
        let known = !unreadable && !self.endpoints.is_empty();
        if self.insecure_plaintext && !http && known {
            problems.push((
                "ha.etcd.insecurePlaintext",
                "every endpoint is https://: insecurePlaintext is pointless, remove it".to_owned(),
            ));
        }
        match &self.tls {
            None if https => problems.push((
                "ha.etcd.tls",
                "https:// endpoints need tls.caFile, the CA that signs the members' certificates".to_owned(),
            )),
            Some(_) if !https && known => problems.push((
                "ha.etcd.tls",
                "no endpoint is https://: tls would not be used, remove it (or use https:// endpoints)".to_owned(),
            )),
            Some(tls) => problems.extend(tls.problems()),
            None => {}
        }
        if !self.prefix.starts_with('/') || !self.prefix.ends_with('/') {
            problems
                .push(("ha.etcd.prefix", format!("{:?} must start and end with \"/\", e.g. /remedy/", self.prefix)));
        }
        if self.request_timeout.is_zero() {
            problems.push(("ha.etcd.requestTimeout", "must be more than 0s".to_owned()));
        } else if self.request_timeout >= lease_ttl {
            problems.push((
                "ha.etcd.requestTimeout",
                format!(
                    "{} must be less than leaseTtl ({}): one slow request would outlast the lease",
                    duration_text::format(&self.request_timeout),
                    duration_text::format(&lease_ttl)
                ),
            ));
        }
        problems
    }
}

impl EtcdTls {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.ca_file.trim().is_empty() {
            problems.push((
                "ha.etcd.tls.caFile",
                "name the PEM file of the CA that signs the members' certificates".to_owned(),
            ));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => problems
                .push(("ha.etcd.tls.keyFile", "certFile is given without keyFile: give both or neither".to_owned())),
            (None, Some(_)) => problems
                .push(("ha.etcd.tls.certFile", "keyFile is given without certFile: give both or neither".to_owned())),
            _ => {}
        }
        for (key, file) in [("ha.etcd.tls.certFile", &self.cert_file), ("ha.etcd.tls.keyFile", &self.key_file)] {
            if file.as_deref().is_some_and(|f| f.trim().is_empty()) {
                problems.push((key, "must name a file".to_owned()));
            }
        }
        problems
    }
}

/// One receiver of notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NotificationSink {
    /// Names the sink in logs, metrics and `/readyz`, and keys its delivery state in the store.
    pub name: String,
    pub kind: SinkKind,
    /// File holding the URL to post to (a secret: whoever has it can post to the channel).
    pub url_file: String,
    /// The events to send; absent: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventKind>>,
    /// Only events of this severity or above.
    #[serde(default)]
    pub min_severity: EventSeverity,
    /// `kind: webhook` only: file holding the key of the `Remedy-Signature` HMAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hmac_secret_file: Option<String>,
    /// How long one delivery may take (connect, send, answer) before it counts as failed.
    #[serde(default = "default_notify_timeout", with = "duration_text")]
    pub timeout: Duration,
}

/// What a sink's URL expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SinkKind {
    /// remedy's own JSON, signed with HMAC-SHA256.
    Webhook,
    /// A Slack incoming webhook.
    Slack,
    /// A Microsoft Teams Workflows webhook (an Adaptive Card).
    Teams,
}

impl NotificationSink {
    /// Which events it wants.
    pub fn filter(&self) -> EventFilter<'_> {
        EventFilter { events: self.events.as_deref(), min_severity: self.min_severity }
    }
}

fn default_notify_timeout() -> Duration {
    Duration::from_secs(10)
}

fn notification_problems(sinks: &[NotificationSink]) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let mut names = std::collections::BTreeSet::new();
    for sink in sinks {
        let name = &sink.name;
        if name.trim().is_empty() || name.chars().any(|c| c.is_control() || c == '"') {
            problems.push(("notifications.name", format!("{name:?} is not a usable name")));
        } else if !names.insert(name.as_str()) {
            problems.push(("notifications.name", format!("{name} is listed twice")));
        }
        if sink.url_file.trim().is_empty() {
            problems.push(("notifications.urlFile", format!("{name}: name the file that holds the URL")));
        }
        match (sink.kind, &sink.hmac_secret_file) {
            (SinkKind::Webhook, Some(file)) if file.trim().is_empty() => {
                problems.push(("notifications.hmacSecretFile", format!("{name}: name the file that holds the key")))
            }
            (SinkKind::Slack | SinkKind::Teams, Some(_)) => problems.push((
                "notifications.hmacSecretFile",
                format!("{name}: only a webhook sink signs its requests (Slack and Teams do not check a signature)"),
            )),
            _ => {}
        }
        if let Some(events) = &sink.events {
            if events.is_empty() {
                problems.push((
                    "notifications.events",
                    format!("{name}: an empty list sends nothing: leave events out to send every event"),
                ));
            }
            if !events.iter().any(|&kind| kind.severity() >= sink.min_severity) && !events.is_empty() {
                problems.push((
                    "notifications.minSeverity",
                    format!(
                        "{name}: none of the events listed is {} or above: the sink would get nothing",
                        sink.min_severity.name()
                    ),
                ));
            }
        }
        if sink.timeout.is_zero() {
            problems.push(("notifications.timeout", format!("{name}: must be more than 0s")));
        }
    }
    problems
}

/// Fights over an account (see [`crate::contest`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContestConfig {
    /// Corrections within `window` that make an account contested.
    #[serde(default = "default_contest_corrections")]
    pub corrections: usize,
    #[serde(default = "default_contest_window", with = "duration_text")]
    pub window: Duration,
    /// The wait before the first correction beyond `corrections`; each further one waits twice
    /// as long, up to `maxWait`.
    #[serde(default = "default_contest_first_wait", with = "duration_text")]
    pub first_wait: Duration,
    #[serde(default = "default_contest_max_wait", with = "duration_text")]
    pub max_wait: Duration,
}

impl Default for ContestConfig {
    fn default() -> Self {
        ContestConfig {
            corrections: default_contest_corrections(),
            window: default_contest_window(),
            first_wait: default_contest_first_wait(),
            max_wait: default_contest_max_wait(),
        }
    }
}

impl ContestConfig {
    /// The limits as [`crate::contest`] counts them.
    pub fn limits(&self) -> crate::contest::ContestLimits {
        let span = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        crate::contest::ContestLimits {
            corrections: self.corrections.max(1),
            window: span(self.window),
            first_wait: span(self.first_wait),
            max_wait: span(self.max_wait),
        }
    }
}

fn default_contest_corrections() -> usize {
    3
}
fn default_contest_window() -> Duration {
    Duration::from_secs(600)
}
fn default_contest_first_wait() -> Duration {
    Duration::from_secs(5)
}
fn default_contest_max_wait() -> Duration {
    Duration::from_secs(300)
}

/// The HTTP API's listener and who may call it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiConfig {
    /// `address:port`; default `127.0.0.1:8470` (loopback only).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// Serve HTTPS with this certificate (PEM chain) and key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ApiTls>,
    /// Must be written as true to serve plain HTTP on an address other than loopback (bearer
    /// tokens would travel in clear).
    #[serde(default)]
    pub allow_insecure: bool,
    /// Bearer tokens, by name, role and SHA-256 hash (the token itself is never written here).
    #[serde(default)]
    pub tokens: Vec<ApiToken>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig { listen: default_listen(), tls: None, allow_insecure: false, tokens: Vec::new() }
    }
}

fn default_listen() -> String {
    "127.0.0.1:8470".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiTls {
    pub cert_file: String,
    pub key_file: String,
}

/// One caller of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiToken {
    /// Who it is: recorded in the history with every change they ask for.
    pub name: String,
    pub role: Role,
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
}

/// The roles of Microsoft Defender for Identity's action model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// May trigger reconciles and approve held plans, and read everything.
    SecurityAdministrator,
    /// May trigger reconciles and approve held plans, and read everything.
    SecurityOperator,
    /// May read status, history and metrics; may not act.
    SecurityReader,
}

impl Role {
    /// Whether the role may ask remedy to act (reconcile, approve).
    pub fn may_act(self) -> bool {
        matches!(self, Role::SecurityAdministrator | Role::SecurityOperator)
    }
}

impl ApiConfig {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        match self.listen.parse::<std::net::SocketAddr>() {
            Ok(address) if !address.ip().is_loopback() && self.tls.is_none() && !self.allow_insecure => {
                problems.push((
                    "api.listen",
                    format!(
                        "{address} is not a loopback address: configure api.tls, or write allowInsecure: true to send \
                     bearer tokens in clear"
                    ),
                ))
            }
            Ok(_) => {}
            Err(_) => {
                problems.push(("api.listen", format!("{:?} is not address:port, e.g. 127.0.0.1:8470", self.listen)))
            }
        }
        let mut names = std::collections::BTreeSet::new();
        let mut hashes = std::collections::BTreeSet::new();
        for token in &self.tokens {
            if token.name.trim().is_empty() || token.name.chars().any(char::is_control) {
                problems.push(("api.tokens.name", format!("{:?} is not a usable name", token.name)));
            }
            if !names.insert(token.name.as_str()) {
                problems.push(("api.tokens.name", format!("{} is listed twice", token.name)));
            }
            let hash = token.sha256.to_ascii_lowercase();
            if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
                problems.push((
                    "api.tokens.sha256",
                    format!("{}: expected 64 hexadecimal digits (the SHA-256 of the token), not the token", token.name),
                ));
            } else if !hashes.insert(hash) {
                problems.push(("api.tokens.sha256", format!("{}: the same token is listed twice", token.name)));
            }
        }
        problems
    }
}

fn default_resync() -> String {
    "0 */5 * * * *".to_owned()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ManifestSource {
    /// The directory of manifests (a git checkout, typically). Relative paths are relative to the
    /// config file.
    pub path: String,
    /// How long the daemon waits after the last change in the directory before it reads the set
    /// again (a `git pull` or an editor's save is a burst of events).
    #[serde(default = "default_debounce", with = "duration_text")]
    pub debounce: Duration,
}

fn default_debounce() -> Duration {
    Duration::from_millis(500)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StoreConfig {
    pub path: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { path: "remedy-store".to_owned() }
    }
}

/// Limits on what remedy may do, whatever the manifests say.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Guardrails {
    /// Accounts never touched, by sAMAccountName, userPrincipalName or DN (case-insensitive).
    /// The built-in Administrator (RID 500), krbtgt (RID 502) and the action account are always
    /// protected, whatever this list says.
    #[serde(default = "default_protected_accounts")]
    pub protected_accounts: Vec<String>,
    /// Groups whose members are never touched, by SID, DN, sAMAccountName or CN, in addition to the
    /// AdminSDHolder set ([`crate::privilege::PROTECTED_DOMAIN_RIDS`] and
    /// [`crate::privilege::PROTECTED_BUILTIN_RIDS`], matched by SID whatever they are called),
    /// which is always protected. Membership counts nested and through the primary group;
    /// adminCount=1 counts as membership.
    #[serde(default = "default_protected_groups")]
    pub protected_groups: Vec<String>,
    /// Base DNs under which remedy may change AD accounts. Required: there is no "everywhere".
    pub allowed_scopes: Vec<String>,
    /// A plan with more new changes than this is held for approval instead of applied.
    #[serde(default = "default_max_changes")]
    pub max_changes_per_reconcile: usize,
    /// Protected accounts that an operator explicitly allows remedy to act on (by the same names
    /// as `protectedAccounts`). The action account and krbtgt cannot be exempted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_protected: Vec<String>,
    /// The account remedy binds as; filled from `activeDirectory.bindUser` when loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_account: Option<String>,
}

pub const DEFAULT_MAX_CHANGES: usize = 25;

fn default_protected_accounts() -> Vec<String> {
    vec!["Administrator".to_owned(), "krbtgt".to_owned()]
}

fn default_protected_groups() -> Vec<String> {
    Vec::new()
}

fn default_max_changes() -> usize {
    DEFAULT_MAX_CHANGES
}

impl Guardrails {
    /// Guardrails with the documented defaults and the given scopes.
    pub fn with_scopes(scopes: &[&str]) -> Self {
        Guardrails {
            protected_accounts: default_protected_accounts(),
            protected_groups: default_protected_groups(),
            allowed_scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            max_changes_per_reconcile: DEFAULT_MAX_CHANGES,
            allow_protected: Vec::new(),
            action_account: None,
        }
    }
}

/// How remedy reaches Active Directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ActiveDirectoryConfig {
    /// `ldaps://host[:port]`, or `ldap://host[:port]` with `startTls: true`: the one DC. Exactly
    /// one of `url` and `domainControllers` is given.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// Several DCs of the domain, most preferred first (same URL rules as `url`): remedy uses the
    /// first that answers, moves to the next when it fails, and returns to a more preferred one
    /// once it has answered for `returnAfter`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domain_controllers: Vec<String>,
    /// How long a more preferred DC must answer again before remedy returns to it.
    #[serde(default = "default_return_after", with = "duration_text")]
    pub return_after: Duration,
    #[serde(default)]
    pub start_tls: bool,
    /// PEM file of the CA(s) that sign the DC's certificate; the system roots when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// Plain LDAP without TLS, or TLS without certificate checks: only when written in so many words.
    #[serde(default)]
    pub allow_insecure: bool,
    /// The action account, e.g. `svc-remedy@contoso.com` or its DN: the simple bind's name, and
    /// with Kerberos the account that remedy recognises as its own (never touched).
    pub bind_user: String,
    /// File holding the action account's password (never the password itself): a simple bind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<String>,
    /// A Kerberos (SASL GSSAPI) bind from a keytab instead of a password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kerberos: Option<KerberosConfig>,
    pub base_dn: String,
    #[serde(default = "default_connect_timeout", with = "duration_text")]
    pub connect_timeout: Duration,
    #[serde(default = "default_operation_timeout", with = "duration_text")]
    pub operation_timeout: Duration,
    /// Bound connections kept open to the DC.
    #[serde(default = "default_connections")]
    pub connections: usize,
    /// Page size for searches (Windows AD caps pages at 1,000 entries).
    #[serde(default = "default_page_size")]
    pub page_size: usize,
    /// How remedy notices changes to the managed accounts between resyncs.
    #[serde(default)]
    pub watch: AdWatchConfig,
}

/// A Kerberos bind: tickets for `principal` got from `keytab` by remedy itself, kept in its own
/// in-memory ticket cache and got again before they expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KerberosConfig {
    /// The keytab holding the action account's keys (exported, or kept current by gmsad/msktutil).
    pub keytab: String,
    /// The action account's principal in the keytab, e.g. `svc-remedy@CONTOSO.COM` or
    /// `gmsa-remedy$@CONTOSO.COM`.
    pub principal: String,
    /// The Kerberos configuration file (`krb5.conf`); absent: `KRB5_CONFIG`, else `/etc/krb5.conf`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub krb5_config: Option<String>,
}

/// How remedy notices changes to the managed accounts as they happen (see
/// [`crate::coverage`] and [`crate::usn`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdWatchConfig {
    /// LDAP change notification (`LDAP_SERVER_NOTIFICATION_OID`) on long-lived connections.
    #[serde(default = "default_true")]
    pub notification: bool,
    /// Long-lived connections that may carry notification searches (five searches each).
    #[serde(default = "default_watch_connections")]
    pub connections: usize,
    /// Whether one subtree search at the domain's root may replace container searches that do
    /// not fit on `connections` (every change in the domain is then sent to remedy).
    #[serde(default)]
    pub domain_wide: bool,
    /// How often the DC is polled by `uSNChanged` where notification is off, refused or does not
    /// cover an account; `0s` turns polling off (the resync schedule is then the only backstop).
    #[serde(default = "default_poll_interval", with = "duration_text")]
    pub poll_interval: Duration,
}

impl Default for AdWatchConfig {
    fn default() -> Self {
        AdWatchConfig {
            notification: true,
            connections: default_watch_connections(),
            domain_wide: false,
            poll_interval: default_poll_interval(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_watch_connections() -> usize {
    1
}
fn default_poll_interval() -> Duration {
    Duration::from_secs(1)
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_operation_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_return_after() -> Duration {
    Duration::from_secs(60)
}

fn default_connections() -> usize {
    4
}
fn default_page_size() -> usize {
    500
}

/// How remedy reaches Entra ID through Microsoft Graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EntraConfig {
    pub tenant_id: String,
    pub client_id: String,
    /// How the app registration proves who it is: exactly one of the three `*File` keys (see
    /// [`EntraConfig::credential`]). File holding the app registration's client secret (never the
    /// secret itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_file: Option<String>,
    /// PEM file holding the private key (RSA, PKCS#8 or PKCS#1, unencrypted) and the certificate
    /// uploaded to the app registration: remedy signs a client assertion with it
    /// (`private_key_jwt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate_file: Option<String>,
    /// File holding a token from an identity provider the app registration trusts (workload
    /// identity federation, e.g. the service account token AKS mounts at
    /// `AZURE_FEDERATED_TOKEN_FILE`); read again for every token request, as it rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_token_file: Option<String>,
    #[serde(default = "default_authority_host")]
    pub authority_host: String,
    #[serde(default = "default_graph_url")]
    pub graph_url: String,
    /// PEM file of extra CA(s) to trust (a proxy, or the simulator's test CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default = "default_operation_timeout", with = "duration_text")]
    pub request_timeout: Duration,
    /// How often users' changes are asked for by Graph delta query (`/users/delta`); `0s` turns
    /// it off (the resync schedule is then the only backstop).
    #[serde(default = "default_delta_interval", with = "duration_text")]
    pub delta_interval: Duration,
    /// How long a write Graph accepted (2xx) may stay invisible in Graph's reads before it is
    /// reported not effective. Entra ID is eventually consistent (a revocation may take minutes):
    /// until then the action awaits confirmation, re-read at later passes and never sent again.
    #[serde(default = "default_confirmation_deadline", with = "duration_text")]
    pub confirmation_deadline: Duration,
}

/// The one credential `entraId` names, by kind, with the file it is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntraCredential<'a> {
    ClientSecret(&'a str),
    ClientCertificate(&'a str),
    FederatedToken(&'a str),
}

impl EntraConfig {
    /// The credential configured: exactly one of `clientSecretFile`, `clientCertificateFile` and
    /// `federatedTokenFile`. Otherwise, what is wrong, naming the keys.
    pub fn credential(&self) -> Result<EntraCredential<'_>, String> {
        let named: Vec<EntraCredential<'_>> = [
            self.client_secret_file.as_deref().map(EntraCredential::ClientSecret),
            self.client_certificate_file.as_deref().map(EntraCredential::ClientCertificate),
            self.federated_token_file.as_deref().map(EntraCredential::FederatedToken),
        ]
        .into_iter()
        .flatten()
        .collect();
        match named.as_slice() {
            [one] if one.file().trim().is_empty() => Err(format!("{} must name a file", one.key())),
            [one] => Ok(*one),
            [] => Err("name the app registration's credential: one of clientSecretFile, clientCertificateFile \
                       (preferred over a secret) or federatedTokenFile"
                .to_owned()),
            many => Err(format!(
                "{} are set: name exactly one credential (clientSecretFile, clientCertificateFile or federatedTokenFile)",
                many.iter().map(EntraCredential::key).collect::<Vec<_>>().join(" and ")
            )),
        }
    }
}

impl EntraCredential<'_> {
    /// The configuration key that names it.
    pub fn key(&self) -> &'static str {
        match self {
            EntraCredential::ClientSecret(_) => "clientSecretFile",
            EntraCredential::ClientCertificate(_) => "clientCertificateFile",
            EntraCredential::FederatedToken(_) => "federatedTokenFile",
        }
    }

    /// The file it is read from, as configured.
    pub fn file(&self) -> &str {
        match self {
            EntraCredential::ClientSecret(file)
            | EntraCredential::ClientCertificate(file)
            | EntraCredential::FederatedToken(file) => file,
        }
    }
}

fn default_delta_interval() -> Duration {
    Duration::from_secs(30)
}

/// The default of [`EntraConfig::confirmation_deadline`]: 5 minutes.
pub fn default_confirmation_deadline() -> Duration {
    Duration::from_secs(5 * 60)
}

fn default_authority_host() -> String {
    "https://login.microsoftonline.com".to_owned()
}
fn default_graph_url() -> String {
    "https://graph.microsoft.com".to_owned()
}

/// Durations written as `500ms`, `5s`, `2m`, `1h`.
pub mod duration_text {
    use super::*;

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (digits, unit) = text.split_at(split);
        let too_long = || format!("{text:?} is longer than remedy can wait: write at most {}ms", u64::MAX);
        let value: u64 = digits.parse().map_err(|e: std::num::ParseIntError| match e.kind() {
            std::num::IntErrorKind::PosOverflow => too_long(),
            _ => format!("{text:?} is not a duration: write e.g. 500ms, 5s, 2m or 1h"),
        })?;
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return Err(format!("{text:?} has no known unit: write e.g. 500ms, 5s, 2m or 1h")),
        };
        // Checked: a number of hours can be too many milliseconds to count.
        let millis = value.checked_mul(millis_per_unit).ok_or_else(too_long)?;
        Ok(Duration::from_millis(millis))
    }

    pub fn format(duration: &Duration) -> String {
        let millis = duration.as_millis();
        if millis % 1_000 == 0 {
            format!("{}s", millis / 1_000)
        } else {
            format!("{millis}ms")
        }
    }

    pub fn serialize<S: serde::Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(duration))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Config {
    /// Parses and checks `remedy.yaml`. Every problem found is returned, located: at the field it
    /// is about (a field inside a list: at the list), or at 0:0 for a file over the size limit,
    /// which is refused whole.
    ///
    /// The file has the limits of a manifest file, checked before serde builds anything: at most
    /// [`MAX_FILE_BYTES`](load::MAX_FILE_BYTES), nesting at most [`MAX_DEPTH`](load::MAX_DEPTH)
    /// levels deep, no anchors or aliases (an alias bomb is refused before it is expanded), no
    /// duplicate keys.
    pub fn from_yaml(file: &str, text: &str) -> Result<Config, Vec<Diagnostic>> {
        let screened = load::screen(file, text, Subject::Configuration)?;
        let mut config: Config = serde_yaml::from_str(screened.text)
            .map_err(|e| vec![load::diagnostic(file, screened.locate_error(&e), "", e.to_string())])?;
        let error = |path: &str, message: String| load::diagnostic(file, screened.locate(path), path, message);
        let mut problems = Vec::new();
        if config.guardrails.allowed_scopes.is_empty() {
            problems.push(error(
                "guardrails.allowedScopes",
                "name at least one base DN under which remedy may act (there is no default: remedy never acts everywhere)".into(),
            ));
        }
        if config.guardrails.max_changes_per_reconcile == 0 {
            problems.push(error("guardrails.maxChangesPerReconcile", "must be at least 1".into()));
        }
        problems.extend(config.api.problems().into_iter().map(|(path, message)| error(path, message)));
        if let Some(ad) = &config.active_directory {
            problems.extend(ad.problems().into_iter().map(|(path, message)| error(path, message)));
            config.guardrails.action_account = Some(ad.bind_user.clone());
        }
        if let Some(entra) = &config.entra_id {
            if let Err(message) = entra.credential() {
                problems.push(error("entraId", message));
            }
        }
        problems.extend(
            notification_problems(&config.notifications).into_iter().map(|(path, message)| error(path, message)),
        );
        if let Some(ha) = &config.ha {
            problems.extend(ha.problems().into_iter().map(|(path, message)| error(path, message)));
        }
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }
}

impl ActiveDirectoryConfig {
    /// Transport rules: TLS with certificate checks unless `allowInsecure: true` says otherwise.
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let key = if self.url.is_empty() { "activeDirectory.domainControllers" } else { "activeDirectory.url" };
        match (self.url.is_empty(), self.domain_controllers.is_empty()) {
            (true, true) => problems.push((
                "activeDirectory.url",
                "name the DC: url (one DC) or domainControllers (several, most preferred first)".to_owned(),
            )),
            (false, false) => problems.push((
                "activeDirectory.domainControllers",
                "give url or domainControllers, not both (put the url first in domainControllers)".to_owned(),
            )),
            _ => {}
        }
        let mut seen = std::collections::BTreeSet::new();
        for url in self.dc_urls() {
            if !seen.insert(url.to_ascii_lowercase()) {
                problems.push((key, format!("{url:?} is listed twice")));
            }
            let lower = url.to_ascii_lowercase();
            if lower.starts_with("ldaps://") {
                if self.start_tls {
                    problems.push((
                        "activeDirectory.startTls",
                        "startTls is for ldap:// URLs; ldaps:// is TLS already".to_owned(),
                    ));
                }
            } else if lower.starts_with("ldap://") {
                // Kerberos on plain LDAP signs and seals the connection: neither credentials nor
                // changes travel in clear.
                if !self.start_tls && !self.allow_insecure && self.kerberos.is_none() {
                    problems.push((
                        key,
                        "plain ldap:// sends the action account's password in clear: use ldaps://, or startTls: true, or a kerberos bind, or write allowInsecure: true to accept it".to_owned(),
                    ));
                }
            } else {
                problems.push((key, format!("{url:?} must start with ldaps:// or ldap://")));
            }
        }
        match (&self.password_file, &self.kerberos) {
            (Some(_), Some(_)) => problems.push((
                "activeDirectory.kerberos",
                "write either passwordFile (a simple bind) or kerberos (a keytab), not both".to_owned(),
            )),
            (None, None) => problems.push((
                "activeDirectory.bindUser",
                "say how the action account binds: passwordFile (a simple bind) or kerberos (a keytab)".to_owned(),
            )),
            (None, Some(kerberos)) => {
                // Each DC's name is checked; the keytab and principal once.
                for problem in self.dc_urls().into_iter().flat_map(|url| kerberos_problems(url, kerberos)) {
                    if !problems.contains(&problem) {
                        problems.push(problem);
                    }
                }
            }
            (Some(_), None) => {}
        }
        if self.connections == 0 {
            problems.push(("activeDirectory.connections", "must be at least 1".to_owned()));
        }
        if !(1..=1000).contains(&self.page_size) {
            problems.push(("activeDirectory.pageSize", "must be between 1 and 1000 (AD's MaxPageSize)".to_owned()));
        }
        problems
    }

    /// The DCs to use, most preferred first: `url` alone, or `domainControllers`.
    pub fn dc_urls(&self) -> Vec<&str> {
        if self.url.is_empty() {
            self.domain_controllers.iter().map(|u| u.trim()).collect()
        } else {
            vec![self.url.trim()]
        }
    }

    /// The DCs as one line for logs and errors (`a`, or `a, b, c`).
    pub fn dc_list(&self) -> String {
        self.dc_urls().join(", ")
    }

    /// Whether the configured transport is unencrypted or unverified (the daemon warns at start).
    pub fn is_insecure(&self) -> bool {
        self.allow_insecure
    }
}

/// The host of an `ldap://` or `ldaps://` URL: what follows the scheme, up to the port or path.
pub fn url_host(url: &str) -> &str {
    let rest = url.trim().split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    }
}

/// Kerberos asks the KDC for a ticket to `ldap/<host of the URL>`: the DC's DNS name, which its
/// service principal names carry; an address has no such name.
fn kerberos_problems(url: &str, kerberos: &KerberosConfig) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let host = url_host(url);
    if host.parse::<std::net::IpAddr>().is_ok() {
        problems.push((
            "activeDirectory.url",
            format!(
                "a kerberos bind asks for a ticket to ldap/<host of the url>, and {host} is an address: name the DC by its DNS name (e.g. ldaps://dc1.contoso.com)"
            ),
        ));
    } else if !host.contains('.') {
        problems.push((
            "activeDirectory.url",
            format!("a kerberos bind asks for a ticket to ldap/{host}: name the DC by its fully qualified DNS name (e.g. ldaps://dc1.contoso.com)"),
        ));
    }
    if kerberos.keytab.trim().is_empty() {
        problems.push(("activeDirectory.kerberos.keytab", "name the keytab file".to_owned()));
    }
    match kerberos.principal.rsplit_once('@') {
        Some((name, realm)) if !name.is_empty() && !realm.is_empty() => {}
        _ => problems.push((
            "activeDirectory.kerberos.principal",
            format!("{:?} is not a principal: write name@REALM, e.g. svc-remedy@CONTOSO.COM", kerberos.principal),
        )),
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "manifests: {path: m}\nguardrails:\n  allowedScopes: [\"OU=Staff,DC=x\"]\n";

    #[test]
    fn defaults_are_safe() {
        let config = Config::from_yaml("remedy.yaml", MINIMAL).unwrap();
        assert_eq!(config.guardrails.max_changes_per_reconcile, 25);
        // The AdminSDHolder set needs no configuration: protectedGroups only adds to it.
        assert!(config.guardrails.protected_groups.is_empty());
        assert!(crate::privilege::PROTECTED_DOMAIN_RIDS
            .iter()
            .any(|(rid, name)| *rid == 512 && *name == "Domain Admins"));
        assert!(crate::privilege::PROTECTED_BUILTIN_RIDS.iter().any(|(rid, _)| *rid == 544));
        assert!(config.guardrails.protected_accounts.iter().any(|g| g == "krbtgt"));
    }

    #[test]
    fn scopes_are_required() {
        let errors =
            Config::from_yaml("r.yaml", "manifests: {path: m}\nguardrails: {allowedScopes: []}\n").unwrap_err();
        assert!(errors[0].to_string().contains("guardrails.allowedScopes"), "{errors:?}");
    }

    #[test]
    fn unknown_fields_are_located() {
        let errors = Config::from_yaml("r.yaml", &format!("{MINIMAL}colour: blue\n")).unwrap_err();
        assert_eq!((errors[0].line, errors[0].column), (4, 1), "{errors:?}");
        assert!(errors[0].message.contains("colour"));
    }

    #[test]
    fn plain_ldap_needs_consent() {
        let ad = "activeDirectory:\n  url: ldap://dc:389\n  bindUser: svc@x\n  passwordFile: /p\n  baseDn: DC=x\n";
        let errors = Config::from_yaml("r.yaml", &format!("{MINIMAL}{ad}")).unwrap_err();
        assert!(errors[0].message.contains("allowInsecure"), "{errors:?}");
        let config = Config::from_yaml("r.yaml", &format!("{MINIMAL}{ad}  allowInsecure: true\n")).unwrap();
        assert!(config.active_directory.unwrap().is_insecure());
        let tls = Config::from_yaml("r.yaml", &format!("{MINIMAL}{ad}  startTls: true\n")).unwrap();
        assert_eq!(tls.guardrails.action_account.as_deref(), Some("svc@x"));
    }

    #[test]
    fn a_kerberos_bind_needs_the_dc_by_name_and_no_password() {
        let ad = "activeDirectory:\n  bindUser: svc@x.com\n  baseDn: DC=x\n";
        let keytab = "  kerberos: {keytab: /etc/remedy/remedy.keytab, principal: svc@X.COM}\n";
        let with = |url: &str, rest: &str| format!("{MINIMAL}{ad}  url: {url}\n{rest}");
        // Sealed by Kerberos, plain ldap:// needs no allowInsecure.
        let config = Config::from_yaml("r.yaml", &with("ldap://dc1.x.com", keytab)).expect("valid");
        let ad_config = config.active_directory.expect("ad");
        assert_eq!(ad_config.kerberos.expect("kerberos").principal, "svc@X.COM");
        assert_eq!(config.guardrails.action_account.as_deref(), Some("svc@x.com"));
        assert!(Config::from_yaml("r.yaml", &with("ldaps://dc1.x.com:636", keytab)).is_ok());
        for url in ["ldaps://127.0.0.1", "ldap://[::1]:389", "ldaps://dc1"] {
            let errors = Config::from_yaml("r.yaml", &with(url, keytab)).expect_err(url);
            assert!(
                errors[0].to_string().contains("activeDirectory.url") && errors[0].message.contains("DNS name"),
                "{errors:?}"
            );
        }
        let both = format!("{keytab}  passwordFile: /p\n");
        let errors = Config::from_yaml("r.yaml", &with("ldaps://dc1.x.com", &both)).expect_err("both");
        assert!(errors[0].message.contains("not both"), "{errors:?}");
        let errors = Config::from_yaml("r.yaml", &with("ldaps://dc1.x.com", "")).expect_err("neither");
        assert!(errors[0].message.contains("passwordFile") && errors[0].message.contains("kerberos"), "{errors:?}");
        let realmless = "  kerberos: {keytab: k, principal: svc}\n";
        let errors = Config::from_yaml("r.yaml", &with("ldaps://dc1.x.com", realmless)).expect_err("no realm");
        assert!(errors[0].to_string().contains("activeDirectory.kerberos.principal"), "{errors:?}");
        let unknown = "  kerberos: {keytab: k, principal: svc@X.COM, ccache: FILE:/tmp/x}\n";
        assert!(Config::from_yaml("r.yaml", &with("ldaps://dc1.x.com", unknown)).is_err(), "unknown keys are refused");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_text::parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration_text::parse("2m"), Ok(Duration::from_secs(120)));
        assert!(duration_text::parse("5").is_err());
        assert!(duration_text::parse("s").is_err());
    }

    #[test]
    fn durations_too_long_to_count_are_refused() {
        assert_eq!(duration_text::parse("18446744073709551615ms"), Ok(Duration::from_millis(u64::MAX)));
        for text in ["5124095576030432h", "99999999999999999h", "18446744073709551616ms"] {
            let refused = duration_text::parse(text).expect_err(text);
            assert!(refused.contains("longer than remedy can wait"), "{text}: {refused}");
        }
    }

    #[test]
    fn the_api_listens_on_loopback_by_default_and_refuses_clear_tokens_elsewhere() {
        let base = "manifests: {path: m}\nguardrails: {allowedScopes: [\"OU=S,DC=x\"]}\n";
        let config = Config::from_yaml("remedy.yaml", base).expect("valid");
        assert_eq!(config.api.listen, "127.0.0.1:8470");
        let open = format!("{base}api: {{listen: \"0.0.0.0:8470\"}}\n");
        let problems = Config::from_yaml("remedy.yaml", &open).expect_err("plain HTTP off loopback");
        assert!(problems[0].to_string().contains("api.listen"), "{problems:?}");
        let consented = format!("{base}api: {{listen: \"0.0.0.0:8470\", allowInsecure: true}}\n");
        assert!(Config::from_yaml("remedy.yaml", &consented).is_ok());
        let tls = format!("{base}api: {{listen: \"[::]:8470\", tls: {{certFile: c.pem, keyFile: k.pem}}}}\n");
        assert!(Config::from_yaml("remedy.yaml", &tls).is_ok());
    }

    #[test]
    fn api_tokens_are_hashes_with_unique_names_and_a_known_role() {
        let base = "manifests: {path: m}\nguardrails: {allowedScopes: [\"OU=S,DC=x\"]}\napi:\n  tokens:\n";
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let good = format!("{base}  - {{name: alice, role: security-operator, sha256: {hash}}}\n");
        let config = Config::from_yaml("remedy.yaml", &good).expect("valid");
        assert_eq!(config.api.tokens[0].role, Role::SecurityOperator);
        assert!(config.api.tokens[0].role.may_act() && !Role::SecurityReader.may_act());
        let plain = format!("{base}  - {{name: alice, role: security-reader, sha256: my-secret-token}}\n");
        let problems = Config::from_yaml("remedy.yaml", &plain).expect_err("a token, not its hash");
        assert!(problems[0].to_string().contains("not the token"), "{problems:?}");
        assert!(!problems[0].to_string().contains("my-secret-token"), "the token is not echoed: {problems:?}");
        let twice = format!(
            "{base}  - {{name: a, role: security-reader, sha256: {hash}}}\n  - {{name: a, role: security-reader, sha256: {hash}}}\n"
        );
        assert_eq!(Config::from_yaml("remedy.yaml", &twice).expect_err("duplicates").len(), 2);
        let role = format!("{base}  - {{name: a, role: global-admin, sha256: {hash}}}\n");
        assert!(Config::from_yaml("remedy.yaml", &role).is_err(), "unknown role");
    }

    #[test]
    fn entra_names_exactly_one_credential() {
        let entra = "entraId:\n  tenantId: t\n  clientId: c\n";
        for (key, kind) in [
            ("clientSecretFile", "clientSecretFile"),
            ("clientCertificateFile", "clientCertificateFile"),
            ("federatedTokenFile", "federatedTokenFile"),
        ] {
            let config = Config::from_yaml("r.yaml", &format!("{MINIMAL}{entra}  {key}: /etc/remedy/x\n")).unwrap();
            let credential = config.entra_id.as_ref().unwrap().credential().unwrap();
            assert_eq!((credential.key(), credential.file()), (kind, "/etc/remedy/x"));
        }
        let none = Config::from_yaml("r.yaml", &format!("{MINIMAL}{entra}")).unwrap_err();
        assert_eq!(none.len(), 1, "{none:?}");
        assert_eq!(none[0].path, "entraId");
        for key in ["clientSecretFile", "clientCertificateFile", "federatedTokenFile"] {
            assert!(none[0].message.contains(key), "{none:?}");
        }
        let two = format!("{MINIMAL}{entra}  clientSecretFile: /s\n  federatedTokenFile: /f\n");
        let two = Config::from_yaml("r.yaml", &two).unwrap_err();
        assert!(two[0].message.starts_with("clientSecretFile and federatedTokenFile are set"), "{two:?}");
        let empty =
            Config::from_yaml("r.yaml", &format!("{MINIMAL}{entra}  clientCertificateFile: \"\"\n")).unwrap_err();
        assert!(empty[0].message.contains("clientCertificateFile must name a file"), "{empty:?}");
    }

    #[test]
    fn notification_sinks_are_checked_and_located() {
        let base = format!("{MINIMAL}notifications:\n");
        let good = format!(
            "{base}  - {{name: soc, kind: webhook, urlFile: /etc/remedy/soc.url, hmacSecretFile: /etc/remedy/soc.key}}\n  - name: chat\n    kind: teams\n    urlFile: /etc/remedy/teams.url\n    events: [held-for-approval, action-failed]\n    minSeverity: warning\n    timeout: 5s\n"
        );
        let config = Config::from_yaml("remedy.yaml", &good).expect("valid");
        assert_eq!(config.notifications.len(), 2);
        let soc = &config.notifications[0];
        assert_eq!(
            (soc.kind, soc.min_severity, soc.timeout),
            (SinkKind::Webhook, EventSeverity::Info, Duration::from_secs(10))
        );
        assert!(EventKind::ALL.iter().all(|&kind| soc.filter().wants(kind)), "no events: every event");
        let chat = &config.notifications[1];
        assert!(chat.filter().wants(EventKind::ActionFailed) && !chat.filter().wants(EventKind::Contested));
        for (bad, path, words) in [
            (
                "  - {name: a, kind: slack, urlFile: u, hmacSecretFile: k}\n",
                "notifications.hmacSecretFile",
                "only a webhook",
            ),
            (
                "  - {name: a, kind: slack, urlFile: u}\n  - {name: a, kind: teams, urlFile: v}\n",
                "notifications.name",
                "twice",
            ),
            ("  - {name: a, kind: webhook, urlFile: \"\"}\n", "notifications.urlFile", "holds the URL"),
            ("  - {name: a, kind: webhook, urlFile: u, events: []}\n", "notifications.events", "leave events out"),
            (
                "  - {name: a, kind: webhook, urlFile: u, events: [drift-corrected], minSeverity: critical}\n",
                "notifications.minSeverity",
                "get nothing",
            ),
        ] {
            let problems = Config::from_yaml("remedy.yaml", &format!("{base}{bad}")).expect_err(bad);
            assert!(
                problems[0].to_string().contains(path) && problems[0].message.contains(words),
                "{bad}: {problems:?}"
            );
            assert_eq!(problems[0].line, 4, "located at the list: {problems:?}");
        }
        for unknown in [
            "  - {name: a, kind: webhook, url: https://x}\n",
            "  - {name: a, kind: email, urlFile: u}\n",
            "  - {name: a, kind: webhook, urlFile: u, events: [everything]}\n",
            "  - {name: a, kind: webhook, urlFile: u, minSeverity: urgent}\n",
        ] {
            assert!(Config::from_yaml("remedy.yaml", &format!("{base}{unknown}")).is_err(), "refused: {unknown}");
        }
    }

    const HA_TLS: &str =
        "ha:\n  etcd:\n    endpoints: [https://e1.x:2379, https://e2.x:2379]\n    tls: {caFile: ca.pem}\n";

    #[test]
    fn ha_is_off_unless_configured_and_has_the_documented_defaults() {
        assert_eq!(Config::from_yaml("r.yaml", MINIMAL).expect("valid").ha, None);
        let config = Config::from_yaml("r.yaml", &format!("{MINIMAL}{HA_TLS}")).expect("valid");
        let ha = config.ha.expect("ha");
        assert_eq!((ha.lease_ttl, ha.send_timeout), (Duration::from_secs(8), Duration::from_secs(3)));
        assert_eq!((ha.etcd.prefix.as_str(), ha.etcd.request_timeout), ("/remedy/", Duration::from_secs(2)));
        assert!(!ha.etcd.insecure_plaintext);
        assert_eq!(ha.instance_id_or("host-1"), "host-1");
        let named = format!("{MINIMAL}ha:\n  instanceId: remedy-a\n  etcd: {{endpoints: [\"http://127.0.0.1:2379\"], insecurePlaintext: true}}\n");
        let ha = Config::from_yaml("r.yaml", &named).expect("valid").ha.expect("ha");
        assert_eq!(ha.instance_id_or("host-1"), "remedy-a");
        let full = format!(
            "{MINIMAL}ha:\n  instanceId: a\n  leaseTtl: 10s\n  sendTimeout: 5s\n  etcd:\n    endpoints: [\"https://[::1]:2379/\"]\n    prefix: /remedy/prod/\n    requestTimeout: 9s\n    tls: {{caFile: ca.pem, certFile: c.pem, keyFile: k.pem}}\n"
        );
        let ha = Config::from_yaml("r.yaml", &full).expect("valid").ha.expect("ha");
        assert_eq!(ha.etcd.tls.expect("tls").key_file.as_deref(), Some("k.pem"));
    }

    /// One line per rule: the `ha:` section (inside `etcd:` where the key is), the key path the
    /// problem must name, and words of its message.
    #[test]
    fn every_ha_rule_is_checked_and_named_by_its_key() {
        let etcd = |rest: &str| format!("ha:\n  etcd:\n{rest}");
        let https = "    endpoints: [https://e1.x:2379]\n";
        let ca = "    tls: {caFile: ca.pem}\n";
        let http = "    endpoints: [http://127.0.0.1:2379]\n";
        let cases: Vec<(String, &str, &str)> = vec![
            (etcd("    endpoints: []\n"), "ha.etcd.endpoints", "at least one"),
            (
                etcd(&format!("    endpoints: [https://e1.x:2379, \"https://E1.x:2379/\"]\n{ca}")),
                "ha.etcd.endpoints",
                "listed twice",
            ),
            (
                etcd(&format!("    endpoints: [grpc://e1.x:2379]\n{ca}")),
                "ha.etcd.endpoints",
                "not an http:// or https://",
            ),
            (etcd(&format!("    endpoints: [e1.x:2379]\n{ca}")), "ha.etcd.endpoints", "not an http:// or https://"),
            (etcd(&format!("    endpoints: [\"https://:2379\"]\n{ca}")), "ha.etcd.endpoints", "no host"),
            (etcd(&format!("    endpoints: [https://e1.x]\n{ca}")), "ha.etcd.endpoints", "no port"),
            (etcd(&format!("    endpoints: [\"https://[::1]\"]\n{ca}")), "ha.etcd.endpoints", "no port"),
            (etcd(&format!("    endpoints: [\"https://e1.x:99999\"]\n{ca}")), "ha.etcd.endpoints", "valid port"),
            (etcd(&format!("    endpoints: [\"https://e1.x:0\"]\n{ca}")), "ha.etcd.endpoints", "valid port"),
            (etcd(&format!("    endpoints: [https://e1.x:2379/v3]\n{ca}")), "ha.etcd.endpoints", "no path"),
            (
                etcd(&format!("    endpoints: [\"https://u@e1.x:2379\"]\n{ca}")),
                "ha.etcd.endpoints",
                "no path, query or user",
            ),
            (etcd(http), "ha.etcd.endpoints", "insecurePlaintext: true"),
            (
                etcd(&format!("    endpoints: [https://e1.x:2379, http://e2.x:2379]\n{ca}")),
                "ha.etcd.endpoints",
                "insecurePlaintext: true",
            ),
            (etcd(&format!("{https}{ca}    insecurePlaintext: true\n")), "ha.etcd.insecurePlaintext", "pointless"),
            (etcd(https), "ha.etcd.tls", "caFile"),
            (etcd(&format!("{http}    insecurePlaintext: true\n{ca}")), "ha.etcd.tls", "would not be used"),
            (etcd(&format!("{https}    tls: {{caFile: \"\"}}\n")), "ha.etcd.tls.caFile", "name the PEM file"),
            (
                etcd(&format!("{https}    tls: {{caFile: ca.pem, certFile: c.pem}}\n")),
                "ha.etcd.tls.keyFile",
                "both or neither",
            ),
            (
                etcd(&format!("{https}    tls: {{caFile: ca.pem, keyFile: k.pem}}\n")),
                "ha.etcd.tls.certFile",
                "both or neither",
            ),
            (
                etcd(&format!("{https}    tls: {{caFile: ca.pem, certFile: \"\", keyFile: k.pem}}\n")),
                "ha.etcd.tls.certFile",
                "must name a file",
            ),
            (etcd(&format!("{https}{ca}    prefix: remedy/\n")), "ha.etcd.prefix", "start and end"),
            (etcd(&format!("{https}{ca}    prefix: /remedy\n")), "ha.etcd.prefix", "start and end"),
            (etcd(&format!("{https}{ca}    requestTimeout: 0s\n")), "ha.etcd.requestTimeout", "more than 0s"),
            (etcd(&format!("{https}{ca}    requestTimeout: 8s\n")), "ha.etcd.requestTimeout", "less than leaseTtl"),
            (
                format!("ha:\n  leaseTtl: 1s\n  sendTimeout: 500ms\n  etcd:\n{https}{ca}    requestTimeout: 500ms\n"),
                "ha.leaseTtl",
                "at least 2s",
            ),
            (
                format!("ha:\n  leaseTtl: 2500ms\n  sendTimeout: 1s\n  etcd:\n{https}{ca}"),
                "ha.leaseTtl",
                "whole seconds",
            ),
            (format!("ha:\n  sendTimeout: 0s\n  etcd:\n{https}{ca}"), "ha.sendTimeout", "more than 0s"),
            (
                format!("ha:\n  sendTimeout: 4001ms\n  etcd:\n{https}{ca}"),
                "ha.sendTimeout",
                "more than half of leaseTtl",
            ),
            (
                format!("ha:\n  leaseTtl: 4s\n  sendTimeout: 3s\n  etcd:\n{https}{ca}"),
                "ha.sendTimeout",
                "more than half of leaseTtl",
            ),
            (format!("ha:\n  instanceId: \"\"\n  etcd:\n{https}{ca}"), "ha.instanceId", "empty"),
            (format!("ha:\n  instanceId: remedy a\n  etcd:\n{https}{ca}"), "ha.instanceId", "only letters"),
            (format!("ha:\n  instanceId: remedy/a\n  etcd:\n{https}{ca}"), "ha.instanceId", "only letters"),
            (format!("ha:\n  instanceId: {}\n  etcd:\n{https}{ca}", "a".repeat(64)), "ha.instanceId", "at most 63"),
        ];
        for (ha, path, words) in &cases {
            let text = format!("{MINIMAL}{ha}");
            let problems = Config::from_yaml("r.yaml", &text).expect_err(ha);
            assert!(
                problems.iter().any(|p| p.path == *path && p.message.contains(words)),
                "{ha}: expected {path}: {words}; got {problems:?}"
            );
            assert!(problems.iter().all(|p| p.line > 3), "located in the ha section: {problems:?}");
        }
        // A mistyped endpoint is reported alone, not also as making tls pointless.
        let typo = format!("{MINIMAL}{}", etcd(&format!("    endpoints: [htps://e1.x:2379]\n{ca}")));
        assert_eq!(Config::from_yaml("r.yaml", &typo).expect_err("typo").len(), 1);
        // The edges that are allowed.
        for ha in [
            format!("ha:\n  leaseTtl: 2s\n  sendTimeout: 1s\n  etcd:\n{https}{ca}    requestTimeout: 1999ms\n"),
            format!("ha:\n  sendTimeout: 4s\n  etcd:\n{https}{ca}    prefix: /\n"),
            format!("ha:\n  instanceId: {}\n  etcd:\n{https}{ca}", "A.b_c-9".repeat(9)),
            etcd(&format!("    endpoints: [https://e1.x:2379, http://e2.x:2379]\n{ca}    insecurePlaintext: true\n")),
        ] {
            assert!(Config::from_yaml("r.yaml", &format!("{MINIMAL}{ha}")).is_ok(), "{ha}");
        }
    }

    #[test]
    fn unknown_ha_keys_are_refused() {
        for unknown in [
            "ha:\n  leader: true\n  etcd: {endpoints: [\"https://e:1\"], tls: {caFile: c}}\n",
            "ha:\n  etcd: {endpoints: [\"https://e:1\"], tls: {caFile: c}, username: root}\n",
            "ha:\n  etcd: {endpoints: [\"https://e:1\"], tls: {caFile: c, insecureSkipVerify: true}}\n",
            "ha:\n  leaseTtl: 8\n  etcd: {endpoints: [\"https://e:1\"], tls: {caFile: c}}\n",
            "ha:\n  instanceId: a\n",
        ] {
            assert!(Config::from_yaml("r.yaml", &format!("{MINIMAL}{unknown}")).is_err(), "refused: {unknown}");
        }
    }
}
