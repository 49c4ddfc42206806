//! `remedy doctor`: the pre-flight of a configuration against the live estate. Each DC is
//! reached, its certificate verified for its name, the action account bound and the DC's clock
//! compared with this host's; then, on the first DC that answers, what the action account may
//! write on the users of each allowed scope and on the protected accounts, and whether the
//! protected groups resolve; then a Graph token, its permissions and a read. One line per check
//! (ok / warn / fail, and the fix when it is not ok), or JSON. Read only: nothing is written.
//!
//! The judgements are [`remedy_policies::doctor`]'s; this module does the reading.

use crate::coord::etcd::EtcdCoordination;
use crate::coord::{CoordError, Coordination};
use remedy_policies::config::HaConfig;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::Utc;
use remedy_policies::config::{ActiveDirectoryConfig, Config, EntraConfig};
use remedy_policies::doctor::{self, Check, Protected, Rights};
use remedy_policies::plan::protection_of;
use remedy_policies::privilege;

use super::inputs::read_config;
use super::output::{print_structured, Format};
use crate::ad::preflight::protected_accounts_filter;
use crate::ad::{AdError, LdapDirectory};
use crate::entra::{EntraError, GraphDirectory, GraphRequest};
use crate::providers::daemon_graph_options;

#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// The daemon configuration to check.
    #[arg(long, default_value = "remedy.yaml")]
    config: PathBuf,
    /// text: one line per check, the fix below those not ok; json or yaml: an array of
    /// {check, target, status, detail, fix}.
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    format: Format,
}

pub fn run(args: &DoctorArgs) -> Result<ExitCode> {
    let config = read_config(&args.config)?;
    let config_dir = args.config.parent().unwrap_or(Path::new(".")).to_path_buf();
    // Before the runtime's threads start, as every command that binds with Kerberos does.
    super::inputs::prepare_kerberos(&config, &args.config)?;
    let checks = super::live::runtime()?.block_on(checks(&config, &config_dir));
    if !print_structured(args.format, &checks)? {
        let mut out = std::io::stdout().lock();
        out.write_all(doctor::render_text(&checks).as_bytes())?;
        out.flush()?;
    }
    Ok(if doctor::any_failed(&checks) { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}

/// Every check of the configuration, in the order shown.
pub async fn checks(config: &Config, config_dir: &Path) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(ad) = &config.active_directory {
        check_ad(config, ad, config_dir, &mut checks).await;
    }
    if let Some(entra) = &config.entra_id {
        check_entra(entra, config_dir, &mut checks).await;
    }
    if let Some(ha) = &config.ha {
        check_etcd(ha, config_dir, &mut checks).await;
    }
    if checks.is_empty() {
        checks.push(Check::warn(
            "config",
            "remedy.yaml",
            "neither activeDirectory nor entraId is configured: there is nothing to check",
            "configure the providers remedy is to act on (docs/configuration.md)",
        ));
    }
    checks
}

async fn check_ad(config: &Config, ad: &ActiveDirectoryConfig, config_dir: &Path, checks: &mut Vec<Check>) {
    let mut bound: Option<LdapDirectory> = None;
    let mut refused: Option<String> = None;
    for url in ad.dc_urls() {
        if let Some(first) = &refused {
            checks.push(Check::fail(
                "dc.bind",
                url,
                format!("not tried: the DC at {first} refused the action account's credentials, and every further try counts towards its lockout"),
                "fix the credentials (see the line above), then run remedy doctor again",
            ));
            continue;
        }
        let one =
            ActiveDirectoryConfig { url: url.to_owned(), domain_controllers: Vec::new(), connections: 1, ..ad.clone() };
        match LdapDirectory::connect(&one, config_dir).await {
            Ok(directory) => {
                checks.push(connected(ad, url));
                checks.push(Check::ok("dc.bind", url, format!("bound as {}", ad.bind_user)));
                match directory.root_dse().await {
                    Ok(root) => match root.current_time {
                        Some(dc_time) => checks.push(doctor::judge_skew(url, dc_time - Utc::now())),
                        None => checks.push(Check::warn(
                            "dc.clock",
                            url,
                            "the rootDSE has no currentTime: the DC's clock cannot be compared",
                            "check the DC's time by hand (w32tm /query /status)",
                        )),
                    },
                    Err(error) => checks.push(Check::fail(
                        "dc.clock",
                        url,
                        format!("cannot read the rootDSE: {error}"),
                        "check that the DC answers searches",
                    )),
                }
                if bound.is_none() {
                    bound = Some(directory.with_protected_groups(&config.guardrails.protected_groups));
                }
            }
            Err(error) => {
                if let AdError::Ldap { operation: "bind", code, message, .. } = &error {
                    checks.push(connected(ad, url));
                    checks.push(Check::fail(
                        "dc.bind",
                        url,
                        format!("the DC refused the bind as {} (LDAP result {code}): {message}", ad.bind_user),
                        doctor::bind_fix(*code, message),
                    ));
                    if *code == 49 {
                        refused = Some(url.to_owned());
                    }
                } else if let AdError::Kerberos { principal, message, transient } = &error {
                    checks.push(Check::fail(
                        "dc.bind",
                        url,
                        format!("no Kerberos ticket for {principal} to bind to this DC: {message}"),
                        doctor::kerberos_fix(message),
                    ));
                    // As the pool does: a keytab that cannot work is not tried on every DC in turn.
                    if !transient {
                        refused = Some(url.to_owned());
                    }
                } else {
                    checks.push(not_connected(url, &error));
                }
            }
        }
    }
    match bound {
        Some(directory) => check_rights(config, ad, &directory, checks).await,
        None => checks.push(Check::fail(
            "ad.rights",
            &ad.bind_user,
            "not checked: no DC could be bound to",
            "fix the DC lines above",
        )),
    }
}

fn connected(ad: &ActiveDirectoryConfig, url: &str) -> Check {
    let lower = url.to_ascii_lowercase();
    let tls = lower.starts_with("ldaps://") || ad.start_tls;
    if !tls && ad.kerberos.is_some() {
        return Check::ok(
            "dc.connect",
            url,
            "plain ldap:// with a Kerberos bind: every message after the bind is signed and sealed (no password crosses)",
        );
    }
    if !tls {
        return Check::warn(
            "dc.connect",
            url,
            "connected in clear (ldap:// without startTls): the password and every change cross the network readable",
            "use ldaps:// (636) or startTls: true, and remove allowInsecure",
        );
    }
    if ad.ca_file.is_none() && ad.allow_insecure {
        return Check::warn(
            "dc.connect",
            url,
            "connected over TLS without verifying the DC's certificate (allowInsecure, no caFile)",
            "set activeDirectory.caFile to the CA that signs the DCs' certificates and remove allowInsecure",
        );
    }
    let trust = match &ad.ca_file {
        Some(ca) => format!("caFile {ca}"),
        None => "the system's CA certificates".to_owned(),
    };
    Check::ok("dc.connect", url, format!("TLS certificate valid for the URL's host, verified against {trust}"))
}

fn not_connected(url: &str, error: &AdError) -> Check {
    let fix = match error {
        AdError::Tls { message, .. } if message.contains("subjectAltName") => {
            "put a name or address the certificate has in the URL (the detail lists them), or reissue the DC's \
             certificate with this name in its subjectAltName"
                .to_owned()
        }
        AdError::Tls { message, .. } if message.contains("not signed by") => {
            "set activeDirectory.caFile to the PEM of the CA that signed the DC's certificate".to_owned()
        }
        AdError::Tls { .. } => "renew or correct the DC's certificate (the detail says what was rejected)".to_owned(),
        AdError::Config(_) => "correct activeDirectory in remedy.yaml (the detail says which setting)".to_owned(),
        _ => "check that the DC is up and that this host reaches its address and port (DNS, routing, firewall; \
              636 for ldaps://, 389 for ldap://)"
            .to_owned(),
    };
    Check::fail("dc.connect", url, error.to_string(), fix)
}

async fn check_rights(config: &Config, ad: &ActiveDirectoryConfig, directory: &LdapDirectory, checks: &mut Vec<Check>) {
    let guardrails = &config.guardrails;
    let account = ad.bind_user.as_str();
    let (naming_context, domain_sid) = match directory.domain().await {
        Ok(domain) => domain,
        Err(error) => {
            checks.push(Check::fail(
                "ad.domain",
                &ad.base_dn,
                format!("cannot read the domain's SID: {error}"),
                "check that the action account may read the domain's head object",
            ));
            return;
        }
    };
    let groups = match directory.privileged_groups_of_domain(&domain_sid).await {
        Ok(groups) => groups,
        Err(error) => {
            checks.push(Check::fail(
                "ad.protected-groups",
                &naming_context,
                format!("cannot read the protected groups: {error}"),
                "check that the action account may read groups and their memberOf (any authenticated user can, by default)",
            ));
            return;
        }
    };
    let well_known = |sid: &str| {
        privilege::PROTECTED_DOMAIN_RIDS.iter().any(|(rid, _)| sid == format!("{domain_sid}-{rid}"))
            || privilege::PROTECTED_BUILTIN_RIDS
                .iter()
                .any(|(rid, _)| sid == format!("{}-{rid}", privilege::BUILTIN_DOMAIN_SID))
    };
    let in_own_right = groups.iter().filter(|g| well_known(&g.object_sid)).count();
    checks.push(Check::ok(
        "ad.protected-groups",
        &naming_context,
        format!(
            "{in_own_right} AdminSDHolder group(s) found by SID in domain {domain_sid}; {} protected group(s) with those \
             nested in them",
            groups.len()
        ),
    ));
    for entry in &guardrails.protected_groups {
        let resolved = groups.iter().find(|g| privilege::names_group(entry, g));
        checks.push(doctor::judge_protected_group(entry, resolved.map(|g| (g.dn.as_str(), g.object_sid.as_str()))));
    }
    let filter = protected_accounts_filter(&domain_sid, &groups, guardrails);
    match directory.writable_users(&naming_context, Some(&filter)).await {
        Ok(found) => {
            let found = found.unwrap_or_default();
            let protected: Vec<Protected<'_>> = found
                .iter()
                .filter_map(|w| {
                    protection_of(&w.account, guardrails, &groups)
                        .map(|why| Protected { rights: Rights { dn: &w.account.dn, writable: &w.writable }, why })
                })
                .collect();
            checks.push(doctor::judge_protected(&naming_context, account, &protected));
        }
        Err(error) => checks.push(Check::fail(
            "ad.protected",
            &naming_context,
            format!("cannot read the protected accounts: {error}"),
            "check that the action account may read user accounts",
        )),
    }
    for scope in &guardrails.allowed_scopes {
        match directory.writable_users(scope, None).await {
            Ok(found) => {
                let rights: Option<Vec<Rights<'_>>> = found.as_ref().map(|found| {
                    found
                        .iter()
                        .filter(|w| protection_of(&w.account, guardrails, &groups).is_none())
                        .map(|w| Rights { dn: &w.account.dn, writable: &w.writable })
                        .collect()
                });
                checks.push(doctor::judge_scope(scope, account, rights.as_deref()));
            }
            Err(error) => checks.push(Check::fail(
                "ad.scope",
                scope,
                format!("cannot read the user accounts: {error}"),
                "check that the action account may read user accounts below this base",
            )),
        }
    }
}

async fn check_entra(entra: &EntraConfig, config_dir: &Path, checks: &mut Vec<Check>) {
    let tenant = entra.tenant_id.as_str();
    let graph = match GraphDirectory::with_options(entra, config_dir, daemon_graph_options()) {
        Ok(graph) => graph,
        Err(error) => {
            checks.push(Check::fail(
                "entra.token",
                tenant,
                error.to_string(),
                "correct entraId in remedy.yaml (the detail says which setting)",
            ));
            return;
        }
    };
    let token = match graph.access_token().await {
        Ok(token) => token,
        Err(error) => {
            let fix = match &error {
                EntraError::Token { fix: Some(fix), .. } => fix.clone(),
                EntraError::Connection { .. } | EntraError::Timeout { .. } => {
                    "check that this host reaches entraId.authorityHost over HTTPS (proxy, firewall, DNS)".to_owned()
                }
                _ => "check entraId.tenantId, clientId and the credential file against the app registration".to_owned(),
            };
            checks.push(Check::fail("entra.token", tenant, error.to_string(), fix));
            return;
        }
    };
    let kind = entra.credential().map(|c| c.key().to_owned()).unwrap_or_default();
    checks.push(Check::ok(
        "entra.token",
        tenant,
        format!("a token for application {} was issued ({kind})", entra.client_id),
    ));
    let roles = roles_of(token.expose());
    checks.push(doctor::judge_permissions(&entra.client_id, roles.as_deref()));
    let request = GraphRequest::get("/users?$top=1&$select=id".to_owned());
    let check = match graph.send(&request).await {
        Ok(response) if response.is_success() => {
            Check::ok("entra.graph", &entra.graph_url, "GET /users answers with the token")
        }
        Ok(response) => Check::fail(
            "entra.graph",
            &entra.graph_url,
            response.error(&request).to_string(),
            "grant the application permissions above with admin consent; check entraId.graphUrl",
        ),
        Err(error) => Check::fail(
            "entra.graph",
            &entra.graph_url,
            error.to_string(),
            "check that this host reaches entraId.graphUrl over HTTPS (proxy, firewall, DNS)",
        ),
    };
    checks.push(check);
}

/// Several instances: etcd answers with quorum, over the configured TLS, and remedy may write
/// under its prefix (a key written and deleted again).
async fn check_etcd(ha: &HaConfig, config_dir: &Path, checks: &mut Vec<Check>) {
    let target = ha.etcd.endpoints.join(",");
    let coord = match EtcdCoordination::from_config(&ha.etcd, config_dir) {
        Ok(coord) => coord,
        Err(error) => {
            checks.push(Check::fail(
                "etcd",
                &target,
                error.to_string(),
                "correct ha.etcd in remedy.yaml (the detail says which setting)",
            ));
            return;
        }
    };
    let fix = |error: &CoordError| {
        match error {
        CoordError::Tls { .. } | CoordError::TlsFile { .. } => {
            "check ha.etcd.tls: the CA that signed the members' certificates, and the client certificate the members trust (--trusted-ca-file)".to_owned()
        }
        CoordError::Unavailable { .. } => {
            "check that the members run and have quorum (etcdctl endpoint health --cluster) and that this host reaches their client URLs".to_owned()
        }
        _ => "check ha.etcd.endpoints and, with etcd's authentication, remedy's rights on ha.etcd.prefix".to_owned(),
    }
    };
    match coord.observe_leader().await {
        Ok(leader) => {
            let who = leader
                .map_or_else(|| "no instance leads now".to_owned(), |l| format!("instance {} leads", l.instance_id));
            checks.push(Check::ok("etcd", &target, format!("the cluster answers with quorum; {who}")));
        }
        Err(error) => {
            let fix = fix(&error);
            checks.push(Check::fail("etcd", &target, error.to_string(), fix));
            return;
        }
    }
    let key = format!("{}doctor/{:016x}", ha.etcd.prefix, fastrand::u64(..));
    let written = match coord.put(&key, b"remedy doctor").await {
        Ok(()) => coord.delete(&key).await.map(drop),
        Err(error) => Err(error),
    };
    match written {
        Ok(()) => {
            checks.push(Check::ok("etcd.write", &ha.etcd.prefix, "a key under the prefix was written and deleted"))
        }
        Err(error) => {
            let fix = fix(&error);
            checks.push(Check::fail("etcd.write", &ha.etcd.prefix, error.to_string(), fix));
        }
    }
}

/// The `roles` claim of an access token that is a JWT (app-only tokens from Entra ID carry the
/// application permissions granted there; a token granting none has no `roles` claim at all).
/// `None` when the token is not a JWT whose payload can be read. The token is only read, never
/// verified: it was just issued to remedy, which trusts nothing else in it.
fn roles_of(token: &str) -> Option<Vec<String>> {
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let claims = claims.as_object()?;
    match claims.get("roles") {
        None => Some(Vec::new()),
        Some(roles) => roles.as_array()?.iter().map(|r| r.as_str().map(str::to_owned)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!("{}.{}.c2ln", URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#), URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn roles_are_read_from_a_jwt_and_only_from_one() {
        assert_eq!(
            roles_of(&jwt(r#"{"roles":["User.ReadWrite.All","User.RevokeSessions.All"]}"#)),
            Some(vec!["User.ReadWrite.All".to_owned(), "User.RevokeSessions.All".to_owned()])
        );
        assert_eq!(roles_of(&jwt(r#"{"aud":"https://graph.microsoft.com"}"#)), Some(Vec::new()));
        assert_eq!(roles_of("graph-sim.opaque"), None);
        assert_eq!(roles_of("a.b.c"), None);
        assert_eq!(roles_of(&jwt(r#"{"roles":"User.ReadWrite.All"}"#)), None);
    }
}
