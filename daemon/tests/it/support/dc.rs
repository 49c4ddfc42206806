//! The Samba AD DC of `scripts/samba-dc`, shared by every test of this binary that talks to it:
//! its coordinates from the environment, an administrator connection (ldap3 directly, not the
//! code under test), and a private OU per test under OU=Tests, with users in given states, deleted
//! again at the end.
//!
//! A test reaches the DC only through a [`Dc`], which holds a process-wide lock for as long as the
//! test (or an OU or daemon it made) still uses it: taken shared by every DC test
//! ([`Dc::shared`]), exclusively by the tests that stop the DC ([`Dc::exclusive`]). So no test ever
//! finds the DC stopped under its feet by another test of this binary, and a DC test cannot forget
//! to take it. Take one `Dc` per test, at its start; never a second one while holding the first
//! (a waiting outage test would make that deadlock).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ldap3::controls::RawControl;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, Mod, Scope, SearchEntry};
use remedy_policies::config::ActiveDirectoryConfig;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use uuid::Uuid;

/// The right to use the DC: shared by the tests that use it, exclusive for those that stop it.
/// Cheap to clone; the lock is released when the last clone goes (OUs and daemons keep one).
#[derive(Debug, Clone)]
pub struct Dc(Arc<Hold>);

/// Held only to be released when dropped.
#[derive(Debug)]
enum Hold {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

fn lock() -> Arc<RwLock<()>> {
    static LOCK: OnceLock<Arc<RwLock<()>>> = OnceLock::new();
    LOCK.get_or_init(|| Arc::new(RwLock::new(()))).clone()
}

impl Dc {
    /// For a test that uses the DC: waits while a test that stops it runs.
    pub async fn shared() -> Dc {
        Dc(Arc::new(Hold::Shared(lock().read_owned().await)))
    }

    /// For a test that stops the DC: waits until no other test of this binary uses it, and keeps
    /// them all out until it is released.
    pub async fn exclusive() -> Dc {
        Dc(Arc::new(Hold::Exclusive(lock().write_owned().await)))
    }

    /// The DC's coordinates; panics (never skips) when the environment does not name a DC.
    pub fn env(&self) -> &'static TestEnv {
        env()
    }

    /// The provider's configuration as an operator would write it: LDAPS, the test CA, the scoped
    /// action account svc-remedy.
    pub fn action_config(&self) -> ActiveDirectoryConfig {
        action_config()
    }

    /// An administrator connection over LDAPS, certificate verified.
    pub async fn admin(&self) -> Ldap {
        admin().await
    }

    /// The `activeDirectory:` section of `remedy.yaml` for this DC, binding as the action account
    /// with the password in `password_file`.
    pub fn active_directory_yaml(&self, password_file: &Path, connections: usize) -> String {
        let env = env();
        format!(
            "activeDirectory:\n  url: {}\n  caFile: {}\n  bindUser: {}\n  passwordFile: {}\n  baseDn: {}\n  \
             connections: {connections}\n  connectTimeout: 2s\n  operationTimeout: 10s\n",
            env.ldaps_url,
            env.ca_file.display(),
            env.action_bind,
            password_file.display(),
            env.base_dn,
        )
    }

    /// A private OU under OU=Tests for `test`, deleted with everything in it when dropped.
    pub async fn ou(&self, test: &str) -> TestOu {
        TestOu::create(self, test).await
    }

    /// Stops the DC (`scripts/samba-dc stop`); it starts again when the result is dropped, however
    /// the test ends, so that a failure does not take the DC away from the tests after it. Only
    /// with the exclusive hold.
    pub fn stop(&self) -> Stopped {
        assert!(matches!(*self.0, Hold::Exclusive(_)), "only a test holding Dc::exclusive() may stop the DC");
        samba_dc(&["stop"]);
        Stopped { started: false }
    }

    /// Stops one DC of the two (`dc1` or `dc2`), leaving the other up; both run again when the
    /// result is dropped. Only with the exclusive hold.
    pub fn stop_one(&self, which: &str) -> Stopped {
        assert!(matches!(*self.0, Hold::Exclusive(_)), "only a test holding Dc::exclusive() may stop a DC");
        samba_dc(&["stop", which]);
        Stopped { started: false }
    }
}

/// The DC stopped by [`Dc::stop`]; started again by [`Stopped::start`] or when dropped.
#[derive(Debug)]
pub struct Stopped {
    started: bool,
}

impl Stopped {
    pub fn start(mut self) {
        self.started = true;
        samba_dc(&["start"]);
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        if !self.started {
            samba_dc(&["start"]);
        }
    }
}

fn samba_dc(command: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/samba-dc");
    let mut process = Command::new(&script);
    process.args(command);
    // The DC the environment names, whichever checkout this test was built from.
    if let Ok(dir) = std::env::var("REMEDY_TEST_DC_DIR") {
        process.env("REMEDY_DC_DIR", dir);
    }
    let status = process.status().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "scripts/samba-dc {} failed: {status}", command.join(" "));
}

/// Where the DC is and who may bind to it (`eval "$(scripts/samba-dc env)"`).
#[derive(Debug)]
pub struct TestEnv {
    pub ldap_url: String,
    pub ldaps_url: String,
    pub base_dn: String,
    pub admin_bind: String,
    pub admin_password_file: PathBuf,
    pub action_bind: String,
    pub action_password_file: PathBuf,
    pub ca_file: PathBuf,
    pub staff_ou: String,
    pub other_ou: String,
    pub tests_ou: String,
    /// The second DC of the domain (joined, replicating with the first).
    pub dc2_ldaps_url: String,
    /// dc2 over plain LDAP: it requires strong authentication (no simple bind in clear).
    pub dc2_ldap_url: String,
}

fn var(name: &str) -> String {
    match std::env::var(name) {
        Ok(value) if !value.is_empty() => value,
        _ => panic!(
            "{name} is not set: these tests need the Samba AD DC. Run `scripts/test`, or \
             `scripts/samba-dc start && eval \"$(scripts/samba-dc env)\"` and then cargo test"
        ),
    }
}

fn env() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(|| TestEnv {
        ldap_url: var("REMEDY_TEST_LDAP_URL"),
        ldaps_url: var("REMEDY_TEST_LDAPS_URL"),
        base_dn: var("REMEDY_TEST_BASE_DN"),
        admin_bind: var("REMEDY_TEST_ADMIN_BIND"),
        admin_password_file: var("REMEDY_TEST_ADMIN_PASSWORD_FILE").into(),
        action_bind: var("REMEDY_TEST_ACTION_BIND"),
        action_password_file: var("REMEDY_TEST_ACTION_PASSWORD_FILE").into(),
        ca_file: var("REMEDY_TEST_CA_FILE").into(),
        staff_ou: var("REMEDY_TEST_STAFF_OU"),
        other_ou: var("REMEDY_TEST_OTHER_OU"),
        tests_ou: var("REMEDY_TEST_TESTS_OU"),
        dc2_ldaps_url: var("REMEDY_TEST_DC2_LDAPS_URL"),
        dc2_ldap_url: var("REMEDY_TEST_DC2_LDAP_URL"),
    })
}

pub fn read_password(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.trim_end_matches(['\r', '\n']).to_owned()
}

fn action_config() -> ActiveDirectoryConfig {
    let env = env();
    ActiveDirectoryConfig {
        url: env.ldaps_url.clone(),
        start_tls: false,
        ca_file: Some(env.ca_file.display().to_string()),
        allow_insecure: false,
        bind_user: env.action_bind.clone(),
        password_file: Some(env.action_password_file.display().to_string()),
        kerberos: None,
        base_dn: env.base_dn.clone(),
        connect_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(15),
        connections: 2,
        page_size: 500,
        watch: Default::default(),
        domain_controllers: Vec::new(),
        return_after: Duration::from_secs(60),
    }
}

async fn admin() -> Ldap {
    admin_on(&env().ldaps_url).await
}

/// An administrator connection over LDAPS to the DC at `url` (either DC of the domain).
pub async fn admin_on(url: &str) -> Ldap {
    let env = env();
    let tls = remedy::ad::tls::client_config(Some(&env.ca_file)).expect("test CA");
    let settings = LdapConnSettings::new().set_config(tls).set_conn_timeout(Duration::from_secs(10));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url} (is the DC running? scripts/samba-dc status): {e}"));
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    ldap.simple_bind(&env.admin_bind, &read_password(&env.admin_password_file))
        .await
        .and_then(|r| r.success())
        .expect("administrator bind");
    ldap
}

/// A user's state as the administrator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserState {
    pub user_account_control: u32,
    pub computed: u32,
    pub pwd_last_set: i64,
    pub guid: Uuid,
    pub sid: String,
}

/// The user's userAccountControl, or `None` while the DC does not have the user (yet).
pub async fn try_read_uac(ldap: &mut Ldap, dn: &str) -> Option<u32> {
    let (entries, _) =
        ldap.search(dn, Scope::Base, "(objectClass=*)", vec!["userAccountControl"]).await.ok()?.success().ok()?;
    let entry = SearchEntry::construct(entries.into_iter().next()?);
    entry.attrs.get("userAccountControl")?.first()?.parse().ok()
}

pub async fn read_user(ldap: &mut Ldap, dn: &str) -> UserState {
    let attrs =
        vec!["userAccountControl", "msDS-User-Account-Control-Computed", "pwdLastSet", "objectGUID", "objectSid"];
    let (entries, _) = ldap
        .search(dn, Scope::Base, "(objectClass=*)", attrs)
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("admin read of {dn}: {e}"));
    let entry = SearchEntry::construct(entries.into_iter().next().expect("one entry"));
    let number =
        |name: &str| -> i64 { entry.attrs.get(name).and_then(|v| v.first()).map_or(0, |v| v.parse().expect(name)) };
    let bytes = |name: &str| -> Vec<u8> {
        entry
            .bin_attrs
            .get(name)
            .and_then(|v| v.first().cloned())
            .or_else(|| entry.attrs.get(name).and_then(|v| v.first()).map(|s| s.as_bytes().to_vec()))
            .unwrap_or_else(|| panic!("{dn} has no {name}"))
    };
    UserState {
        user_account_control: number("userAccountControl") as u32,
        computed: number("msDS-User-Account-Control-Computed") as u32,
        pwd_last_set: number("pwdLastSet"),
        guid: Uuid::from_bytes_le(bytes("objectGUID").try_into().expect("16 bytes")),
        sid: remedy::ad::sid_from_bytes(&bytes("objectSid")).expect("binary SID"),
    }
}

pub async fn set_uac(ldap: &mut Ldap, dn: &str, value: u32) {
    ldap.modify(dn, vec![Mod::Replace("userAccountControl", HashSet::from([value.to_string().as_str()]))])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("admin set userAccountControl={value} on {dn}: {e}"));
}

/// A user created by a test.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub dn: String,
    pub sam: String,
    pub upn: String,
    pub password: String,
}

/// A private OU under OU=Tests, deleted with everything in it when dropped (also on panic).
#[derive(Debug)]
pub struct TestOu {
    pub dn: String,
    /// Random, short: appended to names so that parallel or leftover runs never collide.
    pub suffix: String,
    /// The DC stays usable until the OU is gone.
    _dc: Dc,
}

/// A password that satisfies AD's default complexity rules.
pub fn random_password() -> String {
    format!("Rm-{:016x}-Z9x", fastrand::u64(..))
}

impl TestOu {
    async fn create(dc: &Dc, test: &str) -> TestOu {
        let suffix = format!("{:06x}", fastrand::u32(..0x100_0000));
        let dn = format!("OU={test}-{suffix},{}", env().tests_ou);
        let mut ldap = admin().await;
        ldap.add(&dn, vec![("objectClass", HashSet::from(["organizationalUnit"]))])
            .await
            .and_then(|r| r.success())
            .unwrap_or_else(|e| panic!("cannot create {dn}: {e}"));
        TestOu { dn, suffix, _dc: dc.clone() }
    }

    /// A user with a real password (set over LDAPS, so the account is really usable) and the
    /// given userAccountControl. `name` is kept short: sAMAccountName allows 20 characters.
    pub async fn add_user(&self, name: &str, user_account_control: u32) -> TestUser {
        let mut ldap = admin().await;
        self.add_user_with(&mut ldap, name, user_account_control, true).await
    }

    pub async fn add_user_with(
        &self,
        ldap: &mut Ldap,
        name: &str,
        user_account_control: u32,
        with_password: bool,
    ) -> TestUser {
        let sam = format!("{name}-{}", self.suffix);
        assert!(sam.len() <= 20, "sAMAccountName {sam} is too long");
        let upn = format!("{sam}@remedy.test");
        let dn = format!("CN={sam},{}", self.dn);
        let password = random_password();
        let quoted: Vec<u8> = format!("\"{password}\"").encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut attrs: Vec<(Vec<u8>, HashSet<Vec<u8>>)> = vec![
            (b"objectClass".to_vec(), HashSet::from([b"user".to_vec()])),
            (b"sAMAccountName".to_vec(), HashSet::from([sam.clone().into_bytes()])),
            (b"userPrincipalName".to_vec(), HashSet::from([upn.clone().into_bytes()])),
            (b"userAccountControl".to_vec(), HashSet::from([user_account_control.to_string().into_bytes()])),
        ];
        if with_password {
            attrs.push((b"unicodePwd".to_vec(), HashSet::from([quoted])));
        }
        ldap.add(&dn, attrs).await.and_then(|r| r.success()).unwrap_or_else(|e| panic!("cannot create user {dn}: {e}"));
        TestUser { dn, sam, upn, password }
    }
}

impl TestOu {
    /// A global security group in this OU; its sAMAccountName is `name-suffix`.
    pub async fn add_group(&self, ldap: &mut Ldap, name: &str) -> String {
        let sam = format!("{name}-{}", self.suffix);
        let dn = format!("CN={sam},{}", self.dn);
        ldap.add(
            &dn,
            vec![("objectClass", HashSet::from(["group"])), ("sAMAccountName", HashSet::from([sam.as_str()]))],
        )
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("cannot create group {dn}: {e}"));
        dn
    }
}

/// Adds `member` (a DN) to `group`.
pub async fn add_member(ldap: &mut Ldap, group: &str, member: &str) {
    ldap.modify(group, vec![Mod::Add("member", HashSet::from([member]))])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("cannot add {member} to {group}: {e}"));
}

/// Replaces one attribute's value.
pub async fn replace(ldap: &mut Ldap, dn: &str, attribute: &str, value: &str) {
    ldap.modify(dn, vec![Mod::Replace(attribute, HashSet::from([value]))])
        .await
        .and_then(|r| r.success())
        .unwrap_or_else(|e| panic!("cannot set {attribute}={value} on {dn}: {e}"));
}

/// Sets an attribute of a shared object (outside the test's OU) for the length of a test, and puts
/// the old value back when dropped, also when the test panics.
pub struct Revert {
    dn: String,
    attribute: &'static str,
    original: String,
}

impl Revert {
    pub async fn set(ldap: &mut Ldap, dn: &str, attribute: &'static str, original: &str, value: &str) -> Revert {
        replace(ldap, dn, attribute, value).await;
        Revert { dn: dn.to_owned(), attribute, original: original.to_owned() }
    }
}

impl Drop for Revert {
    fn drop(&mut self) {
        let (dn, attribute, original) = (self.dn.clone(), self.attribute, self.original.clone());
        let reverted = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async {
                let mut ldap = admin().await;
                replace(&mut ldap, &dn, attribute, &original).await;
            })
        })
        .join();
        if reverted.is_err() {
            eprintln!("warning: could not set {} back to {:?} on {}", self.attribute, self.original, self.dn);
        }
    }
}

/// Deletes a subtree in one request (the tree-delete control, 1.2.840.113556.1.4.805).
pub async fn delete_tree(ldap: &mut Ldap, dn: &str) -> ldap3::result::Result<()> {
    let tree_delete = RawControl { ctype: "1.2.840.113556.1.4.805".to_owned(), crit: true, val: None };
    ldap.with_controls(tree_delete).delete(dn).await?.success()?;
    Ok(())
}

impl Drop for TestOu {
    fn drop(&mut self) {
        // Drop cannot await, and the test's runtime may be the one running this: clean up on a
        // thread with a runtime of its own. Best effort: a leftover OU only costs disk space.
        let dn = self.dn.clone();
        let outcome = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let mut ldap = admin().await;
                delete_tree(&mut ldap, &dn).await.map_err(|e| e.to_string())
            })
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(error)) => eprintln!("warning: could not delete test OU {}: {error}", self.dn),
            Err(_) => eprintln!("warning: could not delete test OU {} (cleanup panicked)", self.dn),
        }
    }
}
