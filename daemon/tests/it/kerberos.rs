//! Kerberos binds from a keytab (issue 16), against the real Samba DC and its KDC, through the
//! real `remedy` binary (the Kerberos environment is the process's own): the action lands on the
//! DC over LDAPS and over plain LDAP signed and sealed; a keytab that cannot work is said plainly;
//! tickets that expire are got again from the keytab while `remedy serve` runs on.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::dc::{self, Dc, TestOu, TestUser};
use crate::support::free_port;
use crate::support::kerberos;
use crate::support::proxy::Proxy;
use crate::support::serve::Serve;

fn disable(name: &str, user: &TestUser) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: {name}\n  target:\n    \
         samAccountName: {}\n  activeDirectory:\n    disabled: true\n",
        user.sam
    )
}

/// A `remedy.yaml` in `dir` acting in `ou` with the given `activeDirectory:` section, and a
/// manifest disabling each of `users`.
fn setup(dir: &Path, ou: &TestOu, ad: &str, users: &[&TestUser]) -> std::path::PathBuf {
    let manifests = dir.join("manifests");
    fs::create_dir_all(&manifests).expect("mkdir");
    for (i, user) in users.iter().enumerate() {
        let name = format!("inc-krb-{i}");
        fs::write(manifests.join(format!("{name}.yaml")), disable(&name, user)).expect("manifest");
    }
    let config = dir.join("remedy.yaml");
    fs::write(
        &config,
        format!(
            "manifests:\n  path: manifests\n  debounce: 100ms\nguardrails:\n  allowedScopes: [\"{}\"]\n\
             resync: \"0 0 * * * *\"\nstore:\n  path: store\n{ad}",
            ou.dn
        ),
    )
    .expect("remedy.yaml");
    config
}

fn remedy(args: &[&str], config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_remedy"))
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .env_remove("KRB5CCNAME")
        .env_remove("KRB5_CONFIG")
        .env_remove("KRB5_CLIENT_KTNAME")
        .output()
        .expect("remedy runs")
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

async fn uac(dc: &Dc, user: &TestUser) -> u32 {
    let mut ldap = dc.admin().await;
    dc::read_user(&mut ldap, &user.dn).await.user_account_control
}

/// Waits until the DC shows the account disabled.
async fn wait_disabled(dc: &Dc, user: &TestUser, within: Duration, serve: &mut Serve) {
    let deadline = Instant::now() + within;
    while uac(dc, user).await & 0x2 == 0 {
        serve.assert_running();
        assert!(Instant::now() < deadline, "{} still enabled after {within:?}:\n{}", user.sam, serve.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn kerberos_over_ldaps_the_disable_lands_on_the_dc() {
    let dc = Dc::shared().await;
    let host = kerberos::dc_host(&dc).await;
    let ou = dc.ou("krb-ldaps").await;
    let user = ou.add_user("kl", 0x200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keytab = kerberos::export_keytab(&dc.env().action_bind, dir.path(), "remedy.keytab");
    let krb5 = kerberos::krb5_conf(&dc, dir.path(), None);
    let ad = kerberos::active_directory_yaml(&dc, &format!("ldaps://{host}:636"), &keytab, &krb5, 2);
    let config = setup(dir.path(), &ou, &ad, &[&user]);

    let output = remedy(&["apply"], &config);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("disable-account: done"), "{}", text(&output));
    assert_eq!(uac(&dc, &user).await & 0x2, 0x2, "the DC shows the account disabled");
}

/// On plain LDAP the Kerberos bind seals the connection: what crosses the wire says nothing of
/// the account acted on. The control: the same through a simple bind (allowInsecure) does.
#[tokio::test]
async fn kerberos_on_plain_ldap_seals_what_crosses_the_wire() {
    let dc = Dc::shared().await;
    let host = kerberos::dc_host(&dc).await;
    let ou = dc.ou("krb-seal").await;
    let user = ou.add_user("ks", 0x200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keytab = kerberos::export_keytab(&dc.env().action_bind, dir.path(), "remedy.keytab");
    let krb5 = kerberos::krb5_conf(&dc, dir.path(), None);
    let ldap: SocketAddr = dc.env().ldap_url.trim_start_matches("ldap://").parse().expect("the DC's LDAP address");

    let (sealed, wire) = Proxy::recording(ldap).await;
    let ad = kerberos::active_directory_yaml(&dc, &format!("ldap://{host}:{}", sealed.port), &keytab, &krb5, 1);
    let config = setup(dir.path(), &ou, &ad, &[&user]);
    let output = tokio::task::spawn_blocking(move || remedy(&["apply"], &config)).await.expect("apply");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert_eq!(uac(&dc, &user).await & 0x2, 0x2, "the DC shows the account disabled");
    let seen = wire.lock().expect("wire").clone();
    assert!(seen.len() > 1000, "the exchange went through the proxy: {} bytes", seen.len());
    for clear in [user.sam.as_bytes(), b"userAccountControl".as_slice(), ou.dn.as_bytes()] {
        assert!(
            !seen.windows(clear.len()).any(|w| w == clear),
            "{:?} crossed the wire in clear",
            String::from_utf8_lossy(clear)
        );
    }

    let (clear, wire) = Proxy::recording(ldap).await;
    let other = tempfile::tempdir().expect("tempdir");
    let env = dc.env();
    let ad = format!(
        "activeDirectory:\n  url: ldap://{host}:{}\n  allowInsecure: true\n  bindUser: {}\n  passwordFile: {}\n  \
         baseDn: {}\n  connections: 1\n",
        clear.port,
        env.action_bind,
        env.action_password_file.display(),
        env.base_dn
    );
    let config = setup(other.path(), &ou, &ad, &[&user]);
    let output = tokio::task::spawn_blocking(move || remedy(&["plan"], &config)).await.expect("plan");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let seen = wire.lock().expect("wire").clone();
    assert!(seen.windows(user.sam.len()).any(|w| w == user.sam.as_bytes()), "the control: a simple bind is in clear");
}

#[tokio::test]
async fn kerberos_a_keytab_that_cannot_work_is_said_plainly() {
    let dc = Dc::shared().await;
    let host = kerberos::dc_host(&dc).await;
    let realm = kerberos::realm(&dc);
    let ou = dc.ou("krb-bad").await;
    let user = ou.add_user("kb", 0x200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let krb5 = kerberos::krb5_conf(&dc, dir.path(), None);
    let url = format!("ldaps://{host}:636");

    // No keytab at all.
    let missing = dir.path().join("no-such.keytab");
    let config = setup(dir.path(), &ou, &kerberos::active_directory_yaml(&dc, &url, &missing, &krb5, 1), &[&user]);
    let output = remedy(&["plan"], &config);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains(&format!("cannot read the keytab {}", missing.display())), "{}", text(&output));

    // A keytab without the principal's key: another account's.
    let principal = format!("{}@{realm}", user.sam);
    let others = kerberos::export_keytab(&principal, dir.path(), "other.keytab");
    let config = setup(dir.path(), &ou, &kerberos::active_directory_yaml(&dc, &url, &others, &krb5, 1), &[&user]);
    let output = remedy(&["plan"], &config);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains(&format!("klist -k {}", others.display())), "{}", text(&output));
    assert!(text(&output).contains("Can't find client principal"), "the library's words are kept: {}", text(&output));

    // A stale keytab: the account's password changed after the export.
    let mut ldap = dc.admin().await;
    let quoted: Vec<u8> = format!("\"{}\"", dc::random_password()).encode_utf16().flat_map(u16::to_le_bytes).collect();
    ldap.modify(&user.dn, vec![ldap3::Mod::Replace(b"unicodePwd".to_vec(), [quoted].into())])
        .await
        .and_then(|r| r.success())
        .expect("a new password");
    let ad = kerberos::active_directory_yaml(&dc, &url, &others, &krb5, 1).replace(&dc.env().action_bind, &principal);
    let config = setup(dir.path(), &ou, &ad, &[&user]);
    let output = remedy(&["plan"], &config);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("export the keytab again"), "{}", text(&output));
    assert!(text(&output).contains("(Preauthentication failed)"), "the KDC's words are kept: {}", text(&output));
    // `remedy doctor` says it as a refused bind with the Kerberos fix, not as a DC out of reach.
    let output = remedy(&["doctor"], &config);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    let bind = text(&output).lines().find(|l| l.contains("dc.bind")).map(str::to_owned);
    let bind = bind.unwrap_or_else(|| panic!("no dc.bind line: {}", text(&output)));
    assert!(bind.contains("fail") && bind.contains("Preauthentication failed"), "{}", text(&output));
    assert!(text(&output).contains("export the keytab again"), "{}", text(&output));
    assert!(!text(&output).contains("firewall"), "not reported as a DC out of reach: {}", text(&output));
}

/// Tickets of three minutes (the shortest the test KDC serves): `remedy serve` outlives several of
/// them and goes on acting, its connections bound again with tickets got from the keytab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kerberos_serve_goes_on_after_its_tickets_expire() {
    let dc = Dc::shared().await;
    let host = kerberos::dc_host(&dc).await;
    let ou = dc.ou("krb-renew").await;
    let first = ou.add_user("kr1", 0x200).await;
    let second = ou.add_user("kr2", 0x200).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let keytab = kerberos::export_keytab(&dc.env().action_bind, dir.path(), "remedy.keytab");
    let krb5 = kerberos::krb5_conf(&dc, dir.path(), Some("3m"));
    let ad = kerberos::active_directory_yaml(&dc, &format!("ldaps://{host}:636"), &keytab, &krb5, 1);
    let port = free_port();
    let config = setup(dir.path(), &ou, &format!("{ad}api:\n  listen: 127.0.0.1:{port}\n"), &[&first]);
    let started = Instant::now();
    let mut serve = Serve::start(&config, dir.path().join("serve.log"), "info,remedy::ad=debug", false);
    wait_disabled(&dc, &first, Duration::from_secs(60), &mut serve).await;

    // Within the last tenth of the first ticket's life: the watcher has registered again, and the
    // pool binds a new connection for the correction, both with a new ticket.
    let lifetime = Duration::from_secs(3 * 60);
    tokio::time::sleep((lifetime * 19 / 20).saturating_sub(started.elapsed())).await;
    let mut ldap = dc.admin().await;
    dc::set_uac(&mut ldap, &first.dn, 0x200).await;
    wait_disabled(&dc, &first, Duration::from_secs(30), &mut serve).await;
    // Past the first ticket's end: remedy acts on.
    tokio::time::sleep((lifetime + Duration::from_secs(20)).saturating_sub(started.elapsed())).await;
    fs::write(dir.path().join("manifests/inc-krb-1.yaml"), disable("inc-krb-1", &second)).expect("manifest");
    wait_disabled(&dc, &second, Duration::from_secs(30), &mut serve).await;
    serve.assert_running();
    let log = serve.log();
    assert!(!log.contains("Ticket expired"), "no operation failed for an expired ticket:\n{log}");
    // Bound again before the ticket ran out, rather than cut off by the DC when it had (Samba
    // ends a session whose ticket expired: the notification search then ends
    // with "premature end of search stream").
    assert!(log.contains("Kerberos ticket is near its end: binding a new connection"), "the pool's:\n{log}");
    assert!(log.contains("Kerberos ticket is near its end: registering again"), "the watcher's:\n{log}");
    assert!(!log.contains("watching the DC for changes stopped"), "the watcher was not cut off:\n{log}");
    serve.terminate(Duration::from_secs(10)).await;
}

/// Two DCs, Kerberos binds: with dc1 stopped, the disable goes to dc2 — a DC that requires
/// strong authentication — with a ticket for `ldap/dc2.remedy.test` (the KDCs of both DCs are in
/// the lab's krb5.conf).
#[tokio::test]
async fn kerberos_with_two_dcs_and_dc1_down_the_disable_lands_on_dc2() {
    let dc = Dc::exclusive().await;
    let env = dc.env();
    let dc1 = kerberos::dc_host(&dc).await;
    let dc2 = std::env::var("REMEDY_TEST_DC2_NAME").expect("REMEDY_TEST_DC2_NAME (eval \"$(scripts/samba-dc env)\")");
    kerberos::ensure_ldap_spn(&dc, &dc2).await;
    let krb5 =
        std::env::var("REMEDY_TEST_KRB5_CONFIG").expect("REMEDY_TEST_KRB5_CONFIG: the lab's krb5.conf, both KDCs");
    let ou = dc.ou("krb-two-dcs").await;
    let user = ou.add_user("k2", 0x200).await;
    // The user (and dc2's new SPN) replicate to dc2 before dc1 goes.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut on_dc2 = dc::admin_on(&env.dc2_ldaps_url).await;
        if dc::try_read_uac(&mut on_dc2, &user.dn).await.is_some() {
            break;
        }
        assert!(Instant::now() < deadline, "{} did not replicate to dc2", user.sam);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let keytab = kerberos::export_keytab(&env.action_bind, dir.path(), "remedy.keytab");
    // Plain LDAP, signed and sealed by Kerberos: dc2 requires strong authentication, and Samba
    // then refuses a GSSAPI bind without sign or seal even over TLS ("SASL:[GSSAPI]: Sign or Seal
    // are required"), where Windows refuses sign and seal inside TLS.
    let ad = kerberos::active_directory_yaml(&dc, &format!("ldap://{dc1}:389"), &keytab, Path::new(&krb5), 2).replace(
        &format!("  url: ldap://{dc1}:389\n"),
        &format!("  domainControllers: [\"ldap://{dc1}:389\", \"ldap://{dc2}:389\"]\n"),
    );
    let config = setup(dir.path(), &ou, &ad, &[&user]);

    let stopped = dc.stop_one("dc1");
    let output = remedy(&["apply"], &config);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(text(&output).contains("disable-account: done"), "{}", text(&output));
    let mut on_dc2 = dc::admin_on(&env.dc2_ldaps_url).await;
    assert_eq!(dc::try_read_uac(&mut on_dc2, &user.dn).await.map(|uac| uac & 0x2), Some(0x2), "dc2 shows it disabled");
    stopped.start();
}
