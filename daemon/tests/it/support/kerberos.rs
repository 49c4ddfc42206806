//! Kerberos against the test DC: a krb5.conf for its realm, keytabs exported from it with
//! `samba-tool domain exportkeytab`, and the DC's `ldap/<dns name>` service principal name (Samba
//! registers it with `samba_spnupdate`, which the test DC does not run: it is added here, once, as
//! the DC's administrator, when it is missing).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use ldap3::{Mod, Scope, SearchEntry};
use tokio::sync::OnceCell;

use super::dc::Dc;

/// The DC's DNS name (its rootDSE `dnsHostName`), made sure to carry `ldap/<name>`.
pub async fn dc_host(dc: &Dc) -> &'static str {
    static HOST: OnceCell<String> = OnceCell::const_new();
    HOST.get_or_init(|| async {
        let mut ldap = dc.admin().await;
        let (root, _) = ldap
            .search("", Scope::Base, "(objectClass=*)", vec!["dnsHostName"])
            .await
            .and_then(|r| r.success())
            .expect("rootDSE");
        let root = SearchEntry::construct(root.into_iter().next().expect("the rootDSE"));
        let host = root.attrs.get("dnsHostName").and_then(|v| v.first()).expect("dnsHostName").to_ascii_lowercase();
        drop(ldap);
        ensure_ldap_spn(dc, &host).await;
        host
    })
    .await
}

/// The test realm: the action account's, upper case.
pub fn realm(dc: &Dc) -> String {
    let bind = &dc.env().action_bind;
    bind.rsplit_once('@').map(|(_, realm)| realm.to_ascii_uppercase()).expect("the action account is name@REALM")
}

/// A krb5.conf for the test realm, its KDC on the DC's address, in `dir`; with `ticket_lifetime`
/// when given (e.g. "3m": Samba's KDC refuses service tickets from a TGT with less than about two
/// minutes left, so three minutes is the shortest that works).
pub fn krb5_conf(dc: &Dc, dir: &Path, ticket_lifetime: Option<&str>) -> PathBuf {
    let realm = realm(dc);
    let kdc = dc.env().ldap_url.trim_start_matches("ldap://").split(':').next().expect("a host").to_owned();
    let lifetime = ticket_lifetime.map(|l| format!("    ticket_lifetime = {l}\n")).unwrap_or_default();
    let path = dir.join("krb5.conf");
    std::fs::write(
        &path,
        format!(
            "[libdefaults]\n    default_realm = {realm}\n    dns_lookup_kdc = false\n    dns_lookup_realm = false\n    \
             rdns = false\n{lifetime}[realms]\n    {realm} = {{\n        kdc = {kdc}:88\n    }}\n"
        ),
    )
    .expect("write krb5.conf");
    path
}

/// Exports `principal`'s keys from the DC's database into `dir/<file>` (as an administrator of a
/// real domain does with `ktpass`, or gmsad/msktutil keep current for a gMSA).
pub fn export_keytab(principal: &str, dir: &Path, file: &str) -> PathBuf {
    let dc_dir = std::env::var("REMEDY_TEST_DC_DIR").expect("REMEDY_TEST_DC_DIR (eval \"$(scripts/samba-dc env)\")");
    let path = dir.join(file);
    let output = Command::new("samba-tool")
        .args(["domain", "exportkeytab"])
        .arg(&path)
        .arg(format!("--principal={principal}"))
        .arg("-s")
        .arg(Path::new(&dc_dir).join("etc/smb.conf"))
        .output()
        .expect("samba-tool runs");
    assert!(
        output.status.success() && path.exists(),
        "samba-tool domain exportkeytab {principal}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    path
}

/// The `activeDirectory:` section of `remedy.yaml` binding as the action account with Kerberos
/// from `keytab`, to `url` (which names the DC by its DNS name).
pub fn active_directory_yaml(dc: &Dc, url: &str, keytab: &Path, krb5_conf: &Path, connections: usize) -> String {
    let env = dc.env();
    format!(
        "activeDirectory:\n  url: {url}\n  caFile: {ca}\n  bindUser: {bind}\n  kerberos:\n    keytab: {keytab}\n    \
         principal: {bind}\n    krb5Config: {krb5}\n  baseDn: {base}\n  connections: {connections}\n  \
         connectTimeout: 5s\n  operationTimeout: 10s\n",
        ca = env.ca_file.display(),
        bind = env.action_bind,
        keytab = keytab.display(),
        krb5 = krb5_conf.display(),
        base = env.base_dn,
    )
}

/// Makes sure the computer account of the DC named `host` carries `ldap/<host>` (the join of
/// dc2 adds it on a fresh estate; an estate joined before did not).
pub async fn ensure_ldap_spn(dc: &Dc, host: &str) {
    let mut ldap = dc.admin().await;
    let filter = format!("(&(objectClass=computer)(dNSHostName={host}))");
    let (computers, _) = ldap
        .search(&dc.env().base_dn, Scope::Subtree, &filter, vec!["servicePrincipalName"])
        .await
        .and_then(|r| r.success())
        .expect("the DC's computer account");
    let computer = SearchEntry::construct(computers.into_iter().next().expect("the DC's computer account"));
    let spn = format!("ldap/{host}");
    let has =
        computer.attrs.get("servicePrincipalName").is_some_and(|v| v.iter().any(|s| s.eq_ignore_ascii_case(&spn)));
    if !has {
        ldap.modify(&computer.dn, vec![Mod::Add("servicePrincipalName", HashSet::from([spn.as_str()]))])
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("cannot add {spn} to {}: {e}", computer.dn));
    }
}
