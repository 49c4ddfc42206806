//! The Active Directory provider against the real Samba AD DC.
//!
//! Every test that changes accounts does it in its own OU under OU=Tests (see
//! `support::dc::TestOu`), as the scoped action account svc-remedy, and checks the outcome with
//! the administrator's own connection, not with the code under test.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use remedy::ad::{AdDirectory, AdError, LdapDirectory};
use remedy_policies::config::ActiveDirectoryConfig;
use remedy_policies::observed::{uac, AdAccount, PasswordLastSet, ProviderView};
use remedy_policies::{Action, Identity};

use crate::support::dc::{self, read_user, set_uac, Dc};

fn id(text: &str) -> Identity {
    text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
}

async fn provider(dc: &Dc) -> LdapDirectory {
    connect(&dc.action_config()).await
}

async fn connect(config: &ActiveDirectoryConfig) -> LdapDirectory {
    LdapDirectory::connect(config, Path::new("/")).await.unwrap_or_else(|e| panic!("connect to {}: {e}", config.url))
}

async fn observe_one(directory: &LdapDirectory, identity: &str) -> AdAccount {
    let identity = id(identity);
    let views = directory.observe(std::slice::from_ref(&identity)).await.expect("observe");
    match views.get(&identity) {
        Some(ProviderView::Found(account)) => account.clone(),
        other => panic!("{identity}: expected one account, got {other:?}"),
    }
}

#[tokio::test]
async fn disable_and_enable_are_conditional_and_verified_by_read_back() {
    let dc = Dc::shared().await;
    let ou = dc.ou("disable_enable").await;
    let user = ou.add_user("de", 512).await;
    let directory = provider(&dc).await;
    let mut admin = dc.admin().await;

    let account = observe_one(&directory, &format!("sam:{}", user.sam)).await;
    assert_eq!(account.user_account_control, 512);
    let change = directory.apply(&account, Action::DisableAccount, Utc::now()).await.expect("disable");
    assert_eq!(change.before, account);
    assert_eq!(change.after.user_account_control, 514);
    assert!(change.after.usn_changed > account.usn_changed, "uSNChanged must move on a real write");
    assert_eq!(read_user(&mut admin, &user.dn).await.user_account_control, 514);

    let change = directory.apply(&change.after, Action::EnableAccount, Utc::now()).await.expect("enable");
    assert_eq!(change.after.user_account_control, 512);
    assert_eq!(read_user(&mut admin, &user.dn).await.user_account_control, 512);

    // Other bits are kept: disabling a never-expires account keeps never-expires.
    set_uac(&mut admin, &user.dn, 66048).await;
    let account = observe_one(&directory, &format!("upn:{}", user.upn)).await;
    let change = directory.apply(&account, Action::DisableAccount, Utc::now()).await.expect("disable");
    assert_eq!(change.after.user_account_control, 66050);
    assert_eq!(read_user(&mut admin, &user.dn).await.user_account_control, 66050);
}

#[tokio::test]
async fn forced_password_change_counts_only_with_password_expired_in_the_computed_flags() {
    let dc = Dc::shared().await;
    let ou = dc.ou("force_change").await;
    let user = ou.add_user("fc", 512).await;
    let directory = provider(&dc).await;
    let mut admin = dc.admin().await;

    let account = observe_one(&directory, &format!("sam:{}", user.sam)).await;
    assert!(matches!(account.pwd_last_set, PasswordLastSet::At(_)), "a fresh password is set: {account:?}");
    assert!(!account.password_change_pending());
    let change = directory.apply(&account, Action::ForcePasswordChange, Utc::now()).await.expect("force");
    assert!(change.after.password_change_pending(), "{:?}", change.after);
    let state = read_user(&mut admin, &user.dn).await;
    assert_eq!(state.pwd_last_set, 0);
    assert_ne!(state.computed & uac::PASSWORD_EXPIRED, 0, "the DC itself must say the password is expired: {state:?}");

    // And withdrawn again (restore): pwdLastSet=-1 is "now".
    let change = directory.apply(&change.after, Action::CancelForcedPasswordChange, Utc::now()).await.expect("cancel");
    assert!(!change.after.password_change_pending());
    let state = read_user(&mut admin, &user.dn).await;
    assert!(state.pwd_last_set > 0, "{state:?}");
    assert_eq!(state.computed & uac::PASSWORD_EXPIRED, 0, "{state:?}");
}

#[tokio::test]
async fn never_expires_makes_a_forced_change_not_effective_until_cleared() {
    let dc = Dc::shared().await;
    let ou = dc.ou("never_expires").await;
    let user = ou.add_user("ne", 66048).await;
    let directory = provider(&dc).await;
    let mut admin = dc.admin().await;

    let account = observe_one(&directory, &format!("sam:{}", user.sam)).await;
    assert!(account.password_never_expires());
    let error = directory.apply(&account, Action::ForcePasswordChange, Utc::now()).await.expect_err("must not succeed");
    assert!(matches!(error, AdError::NotEffective { action: Action::ForcePasswordChange, .. }), "{error:?}");
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("DONT_EXPIRE_PASSWORD") && text.contains("0x800000") && text.contains("NOT forced"),
        "{text}"
    );
    // The DC took pwdLastSet=0 and ignores it: exactly the trap the verification exists for.
    let state = read_user(&mut admin, &user.dn).await;
    assert_eq!((state.pwd_last_set, state.computed & uac::PASSWORD_EXPIRED), (0, 0), "{state:?}");

    // The plan's order: clear never-expires, then force the change; both verified.
    let account = observe_one(&directory, &format!("sam:{}", user.sam)).await;
    let cleared = directory.apply(&account, Action::ClearPasswordNeverExpires, Utc::now()).await.expect("clear");
    assert_eq!(cleared.after.user_account_control, 512);
    let forced = directory.apply(&cleared.after, Action::ForcePasswordChange, Utc::now()).await.expect("force");
    assert!(forced.after.password_change_pending());
    let state = read_user(&mut admin, &user.dn).await;
    assert_eq!(state.user_account_control, 512);
    assert_ne!(state.computed & uac::PASSWORD_EXPIRED, 0, "{state:?}");

    // Restore: never-expires again, verified (the pending change is then ignored by the DC).
    let restored = directory.apply(&forced.after, Action::SetPasswordNeverExpires, Utc::now()).await.expect("set");
    assert_eq!(restored.after.user_account_control, 66048);
    assert_eq!(restored.after.user_account_control_computed & uac::PASSWORD_EXPIRED, 0);
}

#[tokio::test]
async fn a_concurrent_change_is_refused_and_nothing_is_overwritten() {
    let dc = Dc::shared().await;
    let ou = dc.ou("concurrent").await;
    let user = ou.add_user("cc", 512).await;
    let directory = provider(&dc).await;
    let mut admin = dc.admin().await;

    let account = observe_one(&directory, &format!("sam:{}", user.sam)).await;
    // Someone else sets password-never-expires between our observation and our action.
    set_uac(&mut admin, &user.dn, 66048).await;
    let error = directory.apply(&account, Action::DisableAccount, Utc::now()).await.expect_err("stale observation");
    assert!(matches!(error, AdError::ConcurrentChange { .. }), "{error:?}");
    assert!(error.is_transient(), "observe again and re-plan");
    assert!(error.to_string().contains("no matching attribute value"), "the DC's words are kept: {error}");
    assert_eq!(read_user(&mut admin, &user.dn).await.user_account_control, 66048, "their change must survive");

    // Observed afresh, the same action goes through and keeps their bit.
    let account = observe_one(&directory, &format!("sam:{}", user.sam)).await;
    let change = directory.apply(&account, Action::DisableAccount, Utc::now()).await.expect("disable");
    assert_eq!(change.after.user_account_control, 66050);

    // Samba quirk, measured: when the account already holds the value we would write, the
    // conditional modify succeeds although the deleted value does not match (Windows would say
    // 16). Nothing is overwritten either way; the read-back confirms the state.
    set_uac(&mut admin, &user.dn, 514).await;
    let stale = AdAccount { user_account_control: 512, ..change.after.clone() };
    match directory.apply(&stale, Action::DisableAccount, Utc::now()).await {
        Ok(change) => assert_eq!(change.after.user_account_control, 514),
        Err(error) => assert!(matches!(error, AdError::ConcurrentChange { .. }), "{error:?}"),
    }
    assert_eq!(read_user(&mut admin, &user.dn).await.user_account_control, 514);
}

#[tokio::test]
async fn the_action_account_is_refused_outside_its_scope_with_the_dcs_words() {
    let dc = Dc::shared().await;
    let directory = provider(&dc).await;
    let mut admin = dc.admin().await;
    let other = observe_one(&directory, "sam:other01").await;
    assert!(other.dn.ends_with(&dc.env().other_ou), "{}", other.dn);
    let administrator = observe_one(&directory, "sam:administrator").await;
    assert_eq!(administrator.rid(), Some(500));

    for account in [&other, &administrator] {
        let before = read_user(&mut admin, &account.dn).await;
        let action = if account.is_disabled() { Action::EnableAccount } else { Action::DisableAccount };
        let result = directory.apply(account, action, Utc::now()).await;
        if let Ok(change) = &result {
            // Never leave the domain's Administrator disabled if the ACL were ever wrong.
            let _ = directory.apply(&change.after, action.inverse().expect("inverse"), Utc::now()).await;
            panic!("svc-remedy could change {}: its rights are wider than OU=Staff and OU=Tests", account.dn);
        }
        let error = result.expect_err("checked above");
        assert_eq!(error.result_code(), Some(50), "{error:?}");
        assert!(!error.is_transient(), "insufficient access is permanent: {error}");
        let text = error.to_string();
        assert!(text.contains("insufficientAccessRights") && text.contains("00002098"), "{text}");
        assert!(text.contains("has no write property access"), "the DC's diagnostic is kept: {text}");
        assert_eq!(read_user(&mut admin, &account.dn).await, before, "{} must be unchanged", account.dn);
    }

    // And for the record: the same account may act in its own scope (OU=Staff, read-only here).
    let staff = observe_one(&directory, "sam:staff0001").await;
    assert!(staff.dn.ends_with(&dc.env().staff_ou));
}

#[tokio::test]
async fn every_identity_kind_resolves_to_the_same_account_and_misses_are_not_found() {
    let dc = Dc::shared().await;
    let ou = dc.ou("identity_kinds").await;
    let user = ou.add_user("ik", 512).await;
    let directory = provider(&dc).await;
    let state = read_user(&mut dc.admin().await, &user.dn).await;

    let kinds = [
        id(&format!("upn:{}", user.upn.to_uppercase())),
        id(&format!("sam:{}", user.sam)),
        id(&format!("guid:{}", state.guid)),
        id(&format!("sid:{}", state.sid)),
    ];
    let misses = [
        id(&format!("upn:nobody-{}@remedy.test", ou.suffix)),
        id(&format!("sam:nobody-{}", ou.suffix)),
        id(&format!("guid:{}", uuid::Uuid::from_u128(fastrand::u128(..)))),
        id(&format!("sid:{}-99999", state.sid.rsplit_once('-').expect("sid").0)),
    ];
    let all: Vec<Identity> = kinds.iter().chain(&misses).cloned().collect();
    let views = directory.observe(&all).await.expect("observe");
    assert_eq!(views.len(), 8);
    for identity in &kinds {
        let account = views[identity].found().unwrap_or_else(|| panic!("{identity}: {:?}", views[identity]));
        assert_eq!(account.dn, user.dn);
        assert_eq!(account.object_guid, state.guid);
        assert_eq!(account.object_sid, state.sid);
        assert_eq!(account.sam_account_name, user.sam);
        assert_eq!(account.user_principal_name.as_deref(), Some(user.upn.as_str()));
        assert_eq!(account.user_account_control, 512);
        assert!(account.when_changed.is_some() && account.usn_changed.is_some(), "{account:?}");
    }
    for identity in &misses {
        assert_eq!(views[identity], ProviderView::NotFound, "{identity}");
    }
    assert_eq!(directory.stats().searches, 1, "eight identities, one search");
}

#[tokio::test]
async fn observation_reads_states_computed_flags_and_groups() {
    let dc = Dc::shared().await;
    let ou = dc.ou("states").await;
    let mut admin = dc.admin().await;
    let enabled = ou.add_user("en", 512).await;
    let never_expires = ou.add_user("ne", 66048).await;
    let disabled = ou.add_user("di", 514).await;
    let both = ou.add_user("nd", 66050).await;
    // No password yet: the DC computes UF_PASSWORD_EXPIRED itself.
    let fresh = ou.add_user_with(&mut admin, "np", 512, false).await;
    let directory = provider(&dc).await;
    let users = [&enabled, &never_expires, &disabled, &both, &fresh];
    let mut ids: Vec<Identity> = users.iter().map(|u| id(&format!("sam:{}", u.sam))).collect();
    ids.push(id("sam:admin-alice"));
    let views = directory.observe(&ids).await.expect("observe");
    let get = |n: usize| views[&ids[n]].found().cloned().unwrap_or_else(|| panic!("{}: {:?}", ids[n], views[&ids[n]]));

    let account = get(0);
    assert_eq!(
        (account.user_account_control, account.is_disabled(), account.password_never_expires()),
        (512, false, false)
    );
    assert!(matches!(account.pwd_last_set, PasswordLastSet::At(at) if at <= Utc::now()), "{account:?}");
    assert_eq!(account.user_account_control_computed & uac::PASSWORD_EXPIRED, 0);
    assert!(get(1).password_never_expires() && !get(1).is_disabled());
    assert!(get(2).is_disabled() && !get(2).password_never_expires());
    assert_eq!(get(3).user_account_control, 66050);
    let fresh = get(4);
    assert_eq!(fresh.pwd_last_set, PasswordLastSet::Zero);
    assert!(fresh.password_change_pending(), "computed flags must be read: {fresh:?}");
    // The seeded admin-alice is a Domain Admin (read only: nothing changes her).
    let alice = get(5);
    assert!(
        alice.member_of.iter().any(|g| g.starts_with("CN=Domain Admins,")),
        "memberOf must be read: {:?}",
        alice.member_of
    );
}

#[tokio::test]
async fn computers_and_contacts_are_never_taken_for_user_accounts() {
    let dc = Dc::shared().await;
    let ou = dc.ou("not_users").await;
    let mut admin = dc.admin().await;
    let computer = format!("pc-{}", ou.suffix);
    admin
        .add(
            &format!("CN={computer},{}", ou.dn),
            vec![
                ("objectClass", HashSet::from(["computer"])),
                ("sAMAccountName", HashSet::from([format!("{computer}$").as_str()])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .expect("add computer");
    let directory = provider(&dc).await;
    let computer_id = id(&format!("sam:{computer}$"));
    let views = directory.observe(std::slice::from_ref(&computer_id)).await.expect("observe");
    assert_eq!(views[&computer_id], ProviderView::NotFound, "a computer object is not a person");
}

#[tokio::test]
async fn filter_values_are_escaped_so_wildcards_match_nothing_extra() {
    let dc = Dc::shared().await;
    let ou = dc.ou("escaping").await;
    let mut admin = dc.admin().await;
    let plain = ou.add_user_with(&mut admin, "ab", 512, false).await;
    // A UPN with the filter's special characters; unescaped, `a*` would also match `ab-...`.
    let tricky_upn = format!("a*(x)\\y-{}@remedy.test", ou.suffix);
    let tricky_dn = format!("CN=tricky-{},{}", ou.suffix, ou.dn);
    admin
        .add(
            &tricky_dn,
            vec![
                ("objectClass", HashSet::from(["user"])),
                ("sAMAccountName", HashSet::from([format!("t(x)-{}", ou.suffix).as_str()])),
                ("userPrincipalName", HashSet::from([tricky_upn.as_str()])),
            ],
        )
        .await
        .and_then(|r| r.success())
        .expect("add tricky user");
    let directory = provider(&dc).await;
    let ids = [
        id(&format!("upn:{tricky_upn}")),
        id(&format!("sam:t(x)-{}", ou.suffix)),
        id(&format!("upn:a*-{}@remedy.test", ou.suffix)),
    ];
    let views = directory.observe(&ids).await.expect("observe");
    assert_eq!(views[&ids[0]].found().map(|a| a.dn.as_str()), Some(tricky_dn.as_str()));
    assert_eq!(views[&ids[1]].found().map(|a| a.dn.as_str()), Some(tricky_dn.as_str()));
    assert_eq!(views[&ids[2]], ProviderView::NotFound, "`*` is a literal, not a wildcard (would match {})", plain.sam);
}

/// Samba, like Windows since 2012 R2, refuses a second account with a UPN already in use, even
/// with the relax control, and sAMAccountName is unique too: a real DC cannot be made to hold an
/// ambiguous identity. `Ambiguous` is therefore tested on the mapping (`ad::resolve` unit tests,
/// two entries matching one identity); this test pins down the DC behaviour that makes it so.
#[tokio::test]
async fn the_dc_refuses_duplicate_upns_so_ambiguity_is_tested_on_the_mapping() {
    let dc = Dc::shared().await;
    let ou = dc.ou("ambiguity").await;
    let mut admin = dc.admin().await;
    let first = ou.add_user_with(&mut admin, "d1", 512, false).await;
    let result = admin
        .add(
            &format!("CN=d2-{},{}", ou.suffix, ou.dn),
            vec![
                ("objectClass", HashSet::from(["user"])),
                ("sAMAccountName", HashSet::from([format!("d2-{}", ou.suffix).as_str()])),
                ("userPrincipalName", HashSet::from([first.upn.to_uppercase().as_str()])),
            ],
        )
        .await
        .expect("add answered");
    assert_eq!(
        result.rc, 19,
        "Samba refused a duplicate UPN until now; if it accepts one, test Ambiguous here: {result:?}"
    );
    assert!(result.text.contains("already in use"), "{result:?}");
    let directory = provider(&dc).await;
    let views = directory.observe(&[id(&format!("upn:{}", first.upn))]).await.expect("observe");
    assert!(matches!(views.values().next(), Some(ProviderView::Found(_))));
}

#[tokio::test]
async fn a_batch_of_300_resolves_with_small_pages_in_few_searches() {
    let dc = Dc::shared().await;
    // The seeded staff0001..staff0300, named by every kind in turn. Page size 7 makes paging
    // real: Samba has no 1,000-entry cap that would catch a client which forgot to page.
    let mut admin = dc.admin().await;
    let mut ids = Vec::new();
    for n in 1..=300 {
        let sam = format!("staff{n:04}");
        ids.push(match n % 4 {
            0 => id(&format!("sam:{sam}")),
            1 => id(&format!("upn:{sam}@remedy.test")),
            _ => {
                let state = read_user(&mut admin, &format!("CN={sam},{}", dc.env().staff_ou)).await;
                if n % 4 == 2 {
                    id(&format!("guid:{}", state.guid))
                } else {
                    id(&format!("sid:{}", state.sid))
                }
            }
        });
    }
    let directory = connect(&ActiveDirectoryConfig { page_size: 7, ..dc.action_config() }).await;
    let started = std::time::Instant::now();
    let views = directory.observe(&ids).await.expect("observe");
    let elapsed = started.elapsed();
    assert_eq!(views.len(), 300);
    for (n, identity) in (1..=300).zip(&ids) {
        let account = views[identity].found().unwrap_or_else(|| panic!("{identity}: {:?}", views[identity]));
        assert_eq!(account.sam_account_name, format!("staff{n:04}"));
    }
    let stats = directory.stats();
    let chunks = 300usize.div_ceil(remedy::ad::resolve::CHUNK_SIZE) as u64;
    assert_eq!(stats.searches, chunks, "one search per chunk of identities, not one per user: {stats:?}");
    assert!(stats.pages >= 300 / 7, "pages of 7 must have been fetched: {stats:?}");
    assert_eq!(stats.entries, 300);
    eprintln!("300 identities: {chunks} searches, {} pages, {elapsed:?}", stats.pages);
}

#[tokio::test]
async fn concurrent_applies_share_a_small_pool() {
    let dc = Dc::shared().await;
    let ou = dc.ou("pool").await;
    let mut admin = dc.admin().await;
    let mut users = Vec::new();
    for n in 0..12 {
        users.push(ou.add_user_with(&mut admin, &format!("p{n}"), 512, false).await);
    }
    let directory = provider(&dc).await;
    let ids: Vec<Identity> = users.iter().map(|u| id(&format!("sam:{}", u.sam))).collect();
    let views = directory.observe(&ids).await.expect("observe");
    let accounts: Vec<AdAccount> = ids.iter().map(|i| views[i].found().cloned().expect("found")).collect();
    let now = Utc::now();
    let results =
        futures::future::join_all(accounts.iter().map(|a| directory.apply(a, Action::DisableAccount, now))).await;
    for result in results {
        assert!(result.expect("disable").after.is_disabled());
    }
    assert!(directory.stats().connects <= 2, "the pool has two connections: {:?}", directory.stats());
    for user in &users {
        assert_eq!(read_user(&mut admin, &user.dn).await.user_account_control, 514);
    }
}

#[tokio::test]
async fn ldaps_is_verified_against_ca_file_and_relative_paths_follow_the_config_dir() {
    let dc = Dc::shared().await;
    let env = dc.env();
    let config_dir = env.ca_file.parent().expect("CA folder").to_owned();
    let password_dir = env.action_password_file.parent().expect("secrets folder");
    let relative_password = Path::new("..")
        .join(password_dir.file_name().expect("name"))
        .join(env.action_password_file.file_name().expect("name"));
    let config = ActiveDirectoryConfig {
        ca_file: Some(env.ca_file.file_name().expect("name").to_string_lossy().into_owned()),
        password_file: Some(relative_password.display().to_string()),
        ..dc.action_config()
    };
    let directory = LdapDirectory::connect(&config, &config_dir).await.expect("ldaps with the test CA");
    observe_one(&directory, "sam:staff0002").await;
}

#[tokio::test]
async fn starttls_is_verified_against_ca_file() {
    let dc = Dc::shared().await;
    let config = ActiveDirectoryConfig { url: dc.env().ldap_url.clone(), start_tls: true, ..dc.action_config() };
    let directory = connect(&config).await;
    observe_one(&directory, "sam:staff0003").await;
}

fn throwaway_ca(dir: &Path) -> String {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "not the remedy test CA");
    let cert = params.self_signed(&key).expect("self-signed CA");
    let path = dir.join("wrong-ca.pem");
    std::fs::write(&path, cert.pem()).expect("write CA");
    path.display().to_string()
}

#[tokio::test]
async fn a_wrong_ca_or_host_name_fails_with_a_certificate_verification_error() {
    let dc = Dc::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong_ca = throwaway_ca(dir.path());
    let cases = [
        ("ldaps, wrong CA", ActiveDirectoryConfig { ca_file: Some(wrong_ca.clone()), ..dc.action_config() }),
        (
            "StartTLS, wrong CA",
            ActiveDirectoryConfig {
                url: dc.env().ldap_url.clone(),
                start_tls: true,
                ca_file: Some(wrong_ca.clone()),
                ..dc.action_config()
            },
        ),
    ];
    for (case, config) in cases {
        let error = LdapDirectory::connect(&config, Path::new("/")).await.expect_err(case);
        assert!(matches!(error, AdError::Tls { .. }), "{case}: {error:?}");
        assert!(!error.is_transient(), "{case}: a CA mismatch does not heal by waiting");
        assert!(error.to_string().contains("certificate verification failed"), "{case}: {error}");
    }
}

/// A trusted CA but a certificate for another name: the error says which names it has, in a
/// sentence. The test DC's certificate names every loopback name (localhost, 127.0.0.1, ::1), so
/// these are servers whose certificates name only 127.0.0.1, or only a CN.
#[tokio::test]
async fn a_certificate_for_another_name_is_explained_with_the_names_it_has() {
    let dc = Dc::shared().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (
            tls_server(dir.path(), &["127.0.0.1"], None),
            "the DC's certificate has no subjectAltName for localhost (it names only IP:127.0.0.1)",
        ),
        (
            tls_server(dir.path(), &[], Some("dc1")),
            "the DC's certificate has no subjectAltName for localhost (it has no subjectAltName at all and names \
             only CN=dc1)",
        ),
    ];
    for ((port, ca), sentence) in cases {
        let config =
            ActiveDirectoryConfig { url: format!("ldaps://localhost:{port}"), ca_file: Some(ca), ..dc.action_config() };
        let error = LdapDirectory::connect(&config, Path::new("/")).await.expect_err("name mismatch");
        assert!(matches!(error, AdError::Tls { .. }), "{error:?}");
        let text = error.to_string();
        assert!(text.contains(sentence), "{text}");
        assert!(!text.contains('{') && !text.contains("NotValidForName"), "a debug dump: {text}");
    }
}

/// ldaps:// pointed at the DC's plain LDAP port: a hint about the scheme, not a parser's complaint.
#[tokio::test]
async fn ldaps_on_the_plain_ldap_port_says_so() {
    let dc = Dc::shared().await;
    let plain = dc.env().ldap_url.replace("ldap://", "ldaps://");
    let config = ActiveDirectoryConfig { url: plain, connect_timeout: Duration::from_secs(5), ..dc.action_config() };
    let error = LdapDirectory::connect(&config, Path::new("/")).await.expect_err("no TLS on 389");
    let text = error.to_string();
    assert!(text.contains("is this an ldap:// port (389) rather than an ldaps:// one (636)?"), "{text}: {error:?}");
    assert!(!text.contains('{'), "a debug dump: {text}");
}

#[tokio::test]
async fn plain_ldap_works_only_with_allow_insecure() {
    let dc = Dc::shared().await;
    let plain = ActiveDirectoryConfig { url: dc.env().ldap_url.clone(), ..dc.action_config() };
    let error = LdapDirectory::connect(&plain, Path::new("/")).await.expect_err("plain LDAP without consent");
    assert!(matches!(error, AdError::Config(_)) && error.to_string().contains("allowInsecure"), "{error}");
    // The one test that sends a bind in clear (on loopback), because an operator may say so.
    let consented = ActiveDirectoryConfig { allow_insecure: true, ca_file: None, ..plain };
    let directory = connect(&consented).await;
    observe_one(&directory, "sam:staff0004").await;
}

/// dc2 requires strong authentication, as Windows Server 2025 DCs do by default: a simple bind in
/// clear is refused, and remedy says why and what to do, with the DC's own words.
#[tokio::test]
async fn a_dc_that_requires_strong_auth_refuses_a_simple_bind_in_clear_and_remedy_says_why() {
    let dc = Dc::shared().await;
    let env = dc.env();
    let plain = ActiveDirectoryConfig {
        url: env.dc2_ldap_url.clone(),
        allow_insecure: true,
        ca_file: None,
        ..dc.action_config()
    };
    let error = LdapDirectory::connect(&plain, Path::new("/")).await.expect_err("dc2 requires strong auth");
    assert_eq!(error.result_code(), Some(8), "{error:?}");
    assert!(!error.is_transient(), "a person must change the configuration: {error:?}");
    let text = error.to_string();
    for said in
        ["strongerAuthRequired", "requires strong authentication", "ldaps://", "startTls: true", "kerberos bind"]
    {
        assert!(text.contains(said), "{said}: {text}");
    }
    // The same bind over TLS is taken.
    let tls = ActiveDirectoryConfig { url: env.dc2_ldaps_url.clone(), ..dc.action_config() };
    observe_one(&connect(&tls).await, "sam:staff0004").await;
}

#[tokio::test]
async fn wrong_credentials_are_permanent_and_keep_the_dcs_words() {
    let dc = Dc::shared().await;
    let ou = dc.ou("credentials").await;
    let user = ou.add_user("cr", 512).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = format!("Wrong-{}-Pw9", ou.suffix);
    std::fs::write(dir.path().join("pw"), &wrong).expect("write");
    let config =
        ActiveDirectoryConfig { bind_user: user.upn.clone(), password_file: Some("pw".into()), ..dc.action_config() };
    let error = LdapDirectory::connect(&config, dir.path()).await.expect_err("wrong password");
    assert_eq!(error.result_code(), Some(49), "{error:?}");
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("invalidCredentials") && text.contains("52e"),
        "the DC's reason (52e: bad password) is kept: {text}"
    );
    assert!(!text.contains(&wrong) && !format!("{error:?}").contains(&wrong));
}

/// Collects everything tracing writes, for asserting on what the logs contain.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn passwords_never_appear_in_logs_debug_output_or_errors() {
    let dc = Dc::shared().await;
    let logs = LogBuffer::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // tracing caches, per call site, whether anyone listens. With a single registered subscriber
    // that cache is filled from the default of whichever thread reaches the call site first: a
    // concurrent test's thread, which has none, would turn this test's call sites off for good.
    // A second registered (silent) dispatcher makes the cache consider every registered one.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    // The test runs on one thread (current-thread runtime), so a thread-local default sees all.
    let _guard = tracing::subscriber::set_default(subscriber);

    let ou = dc.ou("secrets").await;
    let user = ou.add_user("sc", 66048).await;
    // And a call site registered by another thread in the instant of that registration may
    // still hold a stale "never": those registrations are over by now, recompute once more.
    tracing::callsite::rebuild_interest_cache();
    let dir = tempfile::tempdir().expect("tempdir");
    let action_password = dc::read_password(&dc.env().action_password_file);
    std::fs::write(dir.path().join("wrong"), format!("{}-Wrong1", user.password)).expect("write");

    let config = dc.action_config();
    let directory = connect(&config).await;
    let account = observe_one(&directory, &format!("sam:{}", user.sam)).await;
    let not_effective =
        directory.apply(&account, Action::ForcePasswordChange, Utc::now()).await.expect_err("never expires");
    let disabled = directory.apply(&account, Action::DisableAccount, Utc::now()).await.expect("disable");
    let wrong = ActiveDirectoryConfig {
        bind_user: user.upn.clone(),
        password_file: Some("wrong".into()),
        ..dc.action_config()
    };
    let bind_error = LdapDirectory::connect(&wrong, dir.path()).await.expect_err("wrong password");
    let secret = remedy::secret::Secret::from_file(&dc.env().action_password_file).expect("secret");

    let texts = [
        format!("{directory:?}"),
        format!("{config:?}"),
        format!("{secret:?} {secret}"),
        format!("{not_effective} {not_effective:?}"),
        format!("{bind_error} {bind_error:?}"),
        format!("{disabled:?}"),
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|e| e.into_inner())).into_owned(),
    ];
    assert!(texts[0].contains("[redacted]"), "{}", texts[0]);
    assert!(
        texts[6].contains("applied and verified") && texts[6].contains("action failed"),
        "logs were captured: {}",
        texts[6]
    );
    for text in &texts {
        for password in [&action_password, &user.password, &format!("{}-Wrong1", user.password)] {
            assert!(!text.contains(password.as_str()), "a password leaked into: {text}");
        }
    }
}

/// A TLS server that completes handshakes (its certificate is signed by a CA the client trusts)
/// and then never answers: what a hung DC looks like.
fn silent_tls_server(dir: &Path) -> (u16, String) {
    tls_server(dir, &["127.0.0.1"], None)
}

/// As [`silent_tls_server`], with a certificate whose subjectAltNames are `names` (none: no
/// extension) and whose subject is `CN=common_name`.
fn tls_server(dir: &Path, names: &[&str], common_name: Option<&str>) -> (u16, String) {
    let ca_key = rcgen::KeyPair::generate().expect("key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
    if let Some(cn) = common_name {
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
    }
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let ca_path = dir.join(format!("ca-{}.pem", fastrand::u64(..)));
    std::fs::write(&ca_path, ca.pem()).expect("write");

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
        for stream in listener.incoming().take(4).flatten() {
            let server = server.clone();
            std::thread::spawn(move || {
                let mut stream = stream;
                let Ok(mut connection) = rustls::ServerConnection::new(server) else { return };
                let _ = connection.complete_io(&mut stream);
                // Handshake done (or failed): hold the connection open, answer nothing.
                std::thread::sleep(Duration::from_secs(5));
            });
        }
    });
    (port, ca_path.display().to_string())
}

#[tokio::test]
async fn connect_and_operation_timeouts_are_transient_errors() {
    let dc = Dc::shared().await;
    // Nothing answers: the TCP handshake completes (kernel backlog), TLS never starts.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let config = ActiveDirectoryConfig {
        url: format!("ldaps://127.0.0.1:{port}"),
        connect_timeout: Duration::from_millis(300),
        ..dc.action_config()
    };
    let started = std::time::Instant::now();
    let error = LdapDirectory::connect(&config, Path::new("/")).await.expect_err("no TLS answer");
    assert!(matches!(error, AdError::Timeout { .. }), "{error:?}");
    assert!(error.is_transient());
    assert!(started.elapsed() < Duration::from_secs(3), "the connect timeout bounds the wait");

    // TLS completes, then the bind gets no answer: the operation timeout. (A dummy password:
    // the real one is for the DC only.)
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, ca) = silent_tls_server(dir.path());
    std::fs::write(dir.path().join("pw"), "not-a-real-password").expect("write");
    let config = ActiveDirectoryConfig {
        url: format!("ldaps://127.0.0.1:{port}"),
        ca_file: Some(ca),
        password_file: Some(dir.path().join("pw").display().to_string()),
        operation_timeout: Duration::from_millis(300),
        ..dc.action_config()
    };
    let error = LdapDirectory::connect(&config, Path::new("/")).await.expect_err("no LDAP answer");
    assert!(matches!(&error, AdError::Timeout { operation, .. } if operation.starts_with("bind")), "{error:?}");
    assert!(error.is_transient());
    drop(silent);
}
