//! `remedy doctor` as an operator runs it: the real binary against both Samba DCs and the Graph
//! simulator. Nothing here stops a DC: a DC that is down is a URL where nothing listens, a
//! certificate for another name is a TLS server of the test's own whose certificate lacks the
//! URL's name.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;

use assert_cmd::Command;
use remedy_graph_sim::{spawn, Sim, SimConfig};
use serde_json::Value;

use crate::support::dc::{Dc, TestEnv};
use crate::support::{entra_yaml, write_private};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cret~Value.only-in-the-file";
/// Where nothing listens (a DC that is down).
const NOBODY: &str = "ldaps://127.0.0.3:636";

const ALL_ROLES: [&str; 4] =
    ["User.ReadWrite.All", "User.RevokeSessions.All", "IdentityRiskyUser.Read.All", "IdentityRiskyUser.ReadWrite.All"];

struct Run {
    code: i32,
    stdout: String,
}

impl Run {
    fn json(&self) -> Vec<Value> {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// The one line of `check` on `target`.
fn line<'a>(checks: &'a [Value], check: &str, target: &str) -> &'a Value {
    let found: Vec<&Value> = checks.iter().filter(|c| c["check"] == check && c["target"] == target).collect();
    assert_eq!(found.len(), 1, "one {check} line for {target} in {checks:#?}");
    found[0]
}

fn status(checks: &[Value], check: &str, target: &str) -> String {
    line(checks, check, target)["status"].as_str().unwrap_or_default().to_owned()
}

fn text(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap_or_default().to_owned()
}

fn doctor(config: &Path, output: &str) -> Run {
    let assert = Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["doctor", "--config"])
        .arg(config)
        .args(["-o", output])
        .env("REMEDY_LOG", "error")
        .timeout(std::time::Duration::from_secs(120))
        .assert();
    let out = assert.get_output();
    Run { code: out.status.code().unwrap_or(-1), stdout: String::from_utf8_lossy(&out.stdout).into_owned() }
}

/// `remedy.yaml` in `dir`: AD with these DCs and scopes (binding with the password in
/// `password_file`), and Entra ID when a simulator is given.
fn write_config(
    env: Option<&TestEnv>,
    dir: &Path,
    dcs: &[&str],
    scopes: &[&str],
    protected_groups: &[&str],
    password_file: &Path,
    sim: Option<&Sim>,
) -> std::path::PathBuf {
    let quoted = |items: &[&str]| items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ");
    let mut yaml = format!(
        "manifests:\n  path: manifests\nguardrails:\n  allowedScopes: [{}]\n  protectedGroups: [{}]\n",
        quoted(scopes),
        quoted(protected_groups)
    );
    if let Some(env) = env.filter(|_| !dcs.is_empty()) {
        yaml.push_str(&format!(
            "activeDirectory:\n  domainControllers: [{}]\n  caFile: {}\n  bindUser: {}\n  passwordFile: {}\n  \
             baseDn: {}\n  connectTimeout: 2s\n  operationTimeout: 30s\n",
            quoted(dcs),
            env.ca_file.display(),
            env.action_bind,
            password_file.display(),
            env.base_dn
        ));
    }
    if let Some(sim) = sim {
        write_private(&dir.join("client-secret"), &format!("{SECRET}\n"));
        yaml.push_str(&entra_yaml(TENANT, CLIENT_ID, "client-secret", &sim.url(), Some("10s")));
    }
    let path = dir.join("remedy.yaml");
    std::fs::write(&path, yaml).expect("remedy.yaml");
    path
}

fn sim_config(roles: Option<&[&str]>) -> SimConfig {
    SimConfig {
        app_roles: roles.map(|roles| roles.iter().map(|r| (*r).to_owned()).collect()),
        ..SimConfig::new(TENANT, CLIENT_ID, SECRET)
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// A TLS server on loopback whose certificate, from a CA of its own, names only 127.0.0.1 (so
/// `ldaps://localhost:PORT` is a name it does not have); it completes handshakes and answers
/// nothing. Returns the port and the CA's PEM. (The lab DCs' certificates name every loopback
/// name, so a DC reached by a name its certificate lacks is played by this server.)
fn server_with_a_certificate_for_another_name() -> (u16, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("params")
        .signed_by(&key, &issuer)
        .expect("cert");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .expect("server config");
    let server = Arc::new(server);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().take(4).flatten() {
            let Ok(mut connection) = rustls::ServerConnection::new(server.clone()) else { return };
            let _ = connection.complete_io(&mut stream);
        }
    });
    (port, ca.pem())
}

/// Both DCs up, the action account's own scopes, Graph granting every permission: every check
/// is ok but the two findings the lab is known for, both warnings (exit 0): svc-remedy can write
/// admin-alice, a Domain Admin in OU=Staff (Samba does not run SDProp), and it was delegated
/// lockoutTime, which remedy does not need.
#[test]
fn doctor_passes_against_both_dcs_and_graph_sim_with_the_labs_two_findings() {
    let runtime = runtime();
    let dc = runtime.block_on(Dc::shared());
    let env = dc.env();
    let sim = runtime.block_on(spawn(sim_config(Some(&ALL_ROLES)))).expect("simulator");
    // A scope below OU=Tests with a user of its own: OU=Tests itself is empty on a fresh DC.
    let ou = runtime.block_on(dc.ou("doctor-scope"));
    runtime.block_on(ou.add_user("dr", 0x200));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        Some(env),
        dir.path(),
        &[&env.ldaps_url, &env.dc2_ldaps_url],
        &[&env.staff_ou, &ou.dn],
        &["Domain Admins"],
        &env.action_password_file,
        Some(&sim),
    );
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 0, "{checks:#?}");
    for url in [&env.ldaps_url, &env.dc2_ldaps_url] {
        for check in ["dc.connect", "dc.bind", "dc.clock"] {
            assert_eq!(status(&checks, check, url), "ok", "{check} {url}: {checks:#?}");
        }
    }
    // The lab delegates lockoutTime too, which remedy does not need (it does not unlock).
    for scope in [&env.staff_ou, &ou.dn] {
        let scope_line = line(&checks, "ad.scope", scope);
        assert_eq!(scope_line["status"], "warn", "{scope_line}");
        let detail = text(scope_line, "detail");
        assert!(detail.contains("can write userAccountControl, pwdLastSet on all"), "{detail}");
        assert!(detail.contains("and also lockoutTime: more than remedy needs"), "{detail}");
    }
    let group = line(&checks, "ad.protected-group", "Domain Admins");
    assert_eq!(group["status"], "ok");
    assert!(text(group, "detail").starts_with("CN=Domain Admins,CN=Users,"), "{group}");
    let protected = line(&checks, "ad.protected", &env.base_dn);
    assert_eq!(protected["status"], "warn", "{protected}");
    let detail = text(protected, "detail");
    assert!(
        detail.contains("CN=admin-alice,OU=Staff,") && detail.contains("member of Domain Admins (RID 512)"),
        "{detail}"
    );
    assert!(detail.contains("can write userAccountControl, pwdLastSet, lockoutTime"), "{detail}");
    assert!(!detail.contains("CN=Administrator,") && !detail.contains("CN=svc-remedy,"), "{detail}");
    assert!(text(protected, "fix").contains("deny it write-property"), "{protected}");
    assert_eq!(status(&checks, "entra.token", TENANT), "ok");
    assert_eq!(status(&checks, "entra.permissions", CLIENT_ID), "ok");
    assert_eq!(status(&checks, "entra.graph", &sim.url()), "ok");

    // The same in text: one line per check, the fix under the warning.
    let run = doctor(&config, "text");
    assert_eq!(run.code, 0, "{}", run.stdout);
    let first = format!("ok    dc.connect           {}: TLS certificate valid", env.ldaps_url);
    assert!(run.stdout.starts_with(&first), "{}", run.stdout);
    assert!(run.stdout.contains(&format!("\nwarn  ad.protected         {}: ", env.base_dn)), "{}", run.stdout);
    assert!(run.stdout.contains("\n      fix: move these accounts"), "{}", run.stdout);
    assert!(run.stdout.ends_with(" 3 warning(s), 0 failed\n"), "{}", run.stdout);
}

/// A DC that does not answer, and one reached by a name its certificate does not have: their
/// lines fail with the fix; the DC that works is ok, and the rights are checked on it.
#[test]
fn doctor_a_dc_down_or_with_a_certificate_for_another_name_fails_its_line_only() {
    let runtime = runtime();
    let dc = runtime.block_on(Dc::shared());
    let env = dc.env();
    let (port, other_ca) = server_with_a_certificate_for_another_name();
    let mismatch = format!("ldaps://localhost:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    // caFile trusts the DCs' CA and the other server's, so that only the name is wrong.
    let bundle = dir.path().join("cas.pem");
    let dc_ca = std::fs::read_to_string(&env.ca_file).expect("the DCs' CA");
    std::fs::write(&bundle, format!("{dc_ca}\n{other_ca}")).expect("CA bundle");
    let config = write_config(
        Some(env),
        dir.path(),
        &[&env.ldaps_url, NOBODY, &mismatch],
        &[&env.staff_ou],
        &[],
        &env.action_password_file,
        None,
    );
    let yaml = std::fs::read_to_string(&config).expect("remedy.yaml");
    let ca_line = format!("caFile: {}", env.ca_file.display());
    std::fs::write(&config, yaml.replace(&ca_line, &format!("caFile: {}", bundle.display()))).expect("remedy.yaml");
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 1, "{checks:#?}");
    for check in ["dc.connect", "dc.bind", "dc.clock"] {
        assert_eq!(status(&checks, check, &env.ldaps_url), "ok", "{checks:#?}");
    }
    let down = line(&checks, "dc.connect", NOBODY);
    assert_eq!(down["status"], "fail");
    assert!(text(down, "detail").contains("cannot reach ldaps://127.0.0.3:636"), "{down}");
    assert!(text(down, "fix").starts_with("check that the DC is up and that this host reaches"), "{down}");
    let wrong_name = line(&checks, "dc.connect", &mismatch);
    assert_eq!(wrong_name["status"], "fail");
    assert!(
        text(wrong_name, "detail")
            .contains("the DC's certificate has no subjectAltName for localhost (it names only IP:127.0.0.1)"),
        "{wrong_name}"
    );
    assert!(text(wrong_name, "fix").starts_with("put a name or address the certificate has in the URL"));
    assert!(checks.iter().all(|c| c["target"] != NOBODY || c["check"] == "dc.connect"), "{checks:#?}");
    assert_eq!(status(&checks, "ad.scope", &env.staff_ou), "warn");
}

/// A wrong password: the DC is reached, the bind fails with what to do; the second DC is not
/// tried (each try counts towards the account's lockout), and no rights can be checked.
#[test]
fn doctor_a_wrong_password_fails_the_bind_with_the_fix() {
    let runtime = runtime();
    let dc = runtime.block_on(Dc::shared());
    let env = dc.env();
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.password");
    write_private(&wrong, "not-the-password-1A!\n");
    let config =
        write_config(Some(env), dir.path(), &[&env.ldaps_url, &env.dc2_ldaps_url], &[&env.staff_ou], &[], &wrong, None);
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 1, "{checks:#?}");
    assert_eq!(status(&checks, "dc.connect", &env.ldaps_url), "ok");
    let bind = line(&checks, "dc.bind", &env.ldaps_url);
    assert_eq!(bind["status"], "fail");
    assert!(text(bind, "detail").contains("(LDAP result 49)"), "{bind}");
    assert!(text(bind, "fix").contains("passwordFile"), "{bind}");
    let second = line(&checks, "dc.bind", &env.dc2_ldaps_url);
    assert_eq!(second["status"], "fail");
    assert!(text(second, "detail").starts_with("not tried:"), "{second}");
    assert_eq!(status(&checks, "ad.rights", &env.action_bind), "fail");
    assert!(!run.stdout.contains("not-the-password"), "the password is never shown");
}

/// A scope the action account cannot write fails with the exact attributes missing; a scope
/// that does not exist and a protectedGroups entry that names no group fail too.
#[test]
fn doctor_a_scope_the_account_cannot_write_fails_with_the_missing_attributes() {
    let runtime = runtime();
    let dc = runtime.block_on(Dc::shared());
    let env = dc.env();
    let nowhere = format!("OU=Nowhere,{}", env.base_dn);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = write_config(
        Some(env),
        dir.path(),
        &[&env.ldaps_url],
        &[&env.other_ou, &nowhere],
        &["S-1-5-32-544", "No Such Group"],
        &env.action_password_file,
        None,
    );
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 1, "{checks:#?}");
    let other = line(&checks, "ad.scope", &env.other_ou);
    assert_eq!(other["status"], "fail");
    let detail = text(other, "detail");
    assert!(
        detail.starts_with(&format!("{} cannot write userAccountControl, pwdLastSet on ", env.action_bind)),
        "{detail}"
    );
    assert!(text(other, "fix").contains("write-property on userAccountControl, pwdLastSet for descendant user objects"));
    let missing = line(&checks, "ad.scope", &nowhere);
    assert_eq!((text(missing, "status"), text(missing, "detail")), ("fail".into(), "no such object on the DC".into()));
    let administrators = line(&checks, "ad.protected-group", "S-1-5-32-544");
    assert_eq!(administrators["status"], "ok");
    assert!(text(administrators, "detail").starts_with("CN=Administrators,CN=Builtin,"), "{administrators}");
    assert_eq!(status(&checks, "ad.protected-group", "No Such Group"), "fail");
}

/// Graph: a permission the app lacks fails naming it; a token whose roles cannot be read is a
/// warning; a configuration that does not load exits 2.
#[test]
fn doctor_a_missing_graph_permission_fails_naming_it() {
    let runtime = runtime();
    let dir = tempfile::tempdir().expect("tempdir");
    let password = dir.path().join("unused");
    let sim = runtime.block_on(spawn(sim_config(Some(&ALL_ROLES[1..])))).expect("simulator");
    let config = write_config(None, dir.path(), &[], &["OU=Staff,DC=remedy,DC=test"], &[], &password, Some(&sim));
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 1, "{checks:#?}");
    let permissions = line(&checks, "entra.permissions", CLIENT_ID);
    assert_eq!(permissions["status"], "fail");
    assert!(
        text(permissions, "detail").starts_with(
            "the token lacks User.ReadWrite.All (to read users and suspend them); it grants: User.RevokeSessions.All, "
        ),
        "{permissions}"
    );
    assert!(text(permissions, "fix").contains("add User.ReadWrite.All, then Grant admin consent"));
    assert_eq!(status(&checks, "entra.token", TENANT), "ok");

    let opaque = runtime.block_on(spawn(sim_config(None))).expect("simulator");
    let config = write_config(None, dir.path(), &[], &["OU=Staff,DC=remedy,DC=test"], &[], &password, Some(&opaque));
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 0, "{checks:#?}");
    assert_eq!(status(&checks, "entra.permissions", CLIENT_ID), "warn");

    std::fs::write(&config, "guardrails: [").expect("write");
    assert_eq!(doctor(&config, "text").code, 2);
}

/// Several instances: doctor checks that etcd answers with quorum and takes a write under the
/// prefix, and fails the line (with what to check) when no member answers.
#[test]
fn doctor_checks_etcd_for_several_instances_and_fails_a_cluster_that_does_not_answer() {
    let endpoints = std::env::var("REMEDY_TEST_ETCD_ENDPOINTS")
        .expect("REMEDY_TEST_ETCD_ENDPOINTS is not set: start the etcd cluster with `scripts/ha start` and `eval \"$(scripts/ha env)\"`");
    let runtime = runtime();
    let sim = runtime.block_on(spawn(sim_config(Some(&ALL_ROLES)))).expect("simulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let config =
        write_config(None, dir.path(), &[], &["OU=Staff,DC=example,DC=com"], &[], Path::new("unused"), Some(&sim));
    let base = std::fs::read_to_string(&config).expect("remedy.yaml");
    let quoted = |list: &str| list.split(',').map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
    let with_ha = |endpoints: &str| {
        format!(
            "{base}ha:\n  instanceId: doctor\n  etcd:\n    endpoints: [{}]\n    prefix: /remedy-test/doctor/\n    insecurePlaintext: true\n",
            quoted(endpoints)
        )
    };

    std::fs::write(&config, with_ha(&endpoints)).expect("remedy.yaml");
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 0, "{checks:#?}");
    assert_eq!(status(&checks, "etcd", &endpoints), "ok", "{checks:#?}");
    assert!(text(line(&checks, "etcd", &endpoints), "detail").contains("quorum"), "{checks:#?}");
    assert_eq!(status(&checks, "etcd.write", "/remedy-test/doctor/"), "ok", "{checks:#?}");

    let nobody = "http://127.0.0.1:9";
    std::fs::write(&config, with_ha(nobody)).expect("remedy.yaml");
    let run = doctor(&config, "json");
    let checks = run.json();
    assert_eq!(run.code, 1, "a cluster that does not answer fails doctor: {checks:#?}");
    let etcd = line(&checks, "etcd", nobody);
    assert_eq!(text(etcd, "status"), "fail");
    assert!(text(etcd, "detail").contains("cannot connect"), "{etcd:#}");
    assert!(text(etcd, "fix").contains("quorum"), "{etcd:#}");
    assert!(checks.iter().all(|c| c["check"] != "etcd.write"), "no write tried without quorum: {checks:#?}");
}
