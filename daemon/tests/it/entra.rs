//! The Entra ID provider against the Graph simulator (tests/graph-sim) over real HTTP, spawned
//! in-process on loopback. Each test has its own simulator (its own tenant, users and log).
//!
//! What the simulator's log shows is the proof: which requests reached "Graph", in which order,
//! with which answer, and when. No test sleeps to make a point about time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use remedy::entra::{
    sync_reverted, DeltaFrom, DeltaRound, EntraDirectory, EntraError, EntraLookup, GraphDirectory, GraphOptions,
    RetryPolicy, RiskReads,
};
use remedy_graph_sim::{spawn, Fault, LoggedRequest, ReplicaLag, Sim, SimConfig, SimUser};
use remedy_policies::config::EntraConfig;
use remedy_policies::observed::{EntraUser, ProviderView, RiskState};
use remedy_policies::{Action, Identity};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cret~Value.only-in-the-file";

struct Env {
    sim: Sim,
    dir: tempfile::TempDir,
    config: EntraConfig,
}

async fn start(users: Vec<SimUser>) -> Env {
    start_with(SimConfig { users, ..SimConfig::new(TENANT, CLIENT_ID, SECRET) }).await
}

async fn start_with(sim_config: SimConfig) -> Env {
    let sim = spawn(sim_config).await.expect("simulator starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    write_secret(dir.path(), "client-secret", SECRET);
    let config = EntraConfig {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        client_secret_file: Some("client-secret".into()),
        client_certificate_file: None,
        federated_token_file: None,
        authority_host: sim.url(),
        graph_url: sim.url(),
        ca_file: None,
        request_timeout: Duration::from_secs(10),
        delta_interval: Duration::from_secs(30),
        confirmation_deadline: Duration::from_secs(300),
    };
    Env { sim, dir, config }
}

fn write_secret(dir: &Path, name: &str, value: &str) {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).expect("secret file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod 600");
    }
}

/// Quick re-reads for verification; everything else as in production.
fn options() -> GraphOptions {
    GraphOptions { verify_delay: Duration::from_millis(100), ..GraphOptions::default() }
}

impl Env {
    fn directory(&self) -> GraphDirectory {
        GraphDirectory::with_options(&self.config, self.dir.path(), options()).expect("provider builds")
    }

    fn id(&self, upn: &str) -> String {
        self.sim.user(upn).expect("user exists").id
    }
}

fn upn(text: &str) -> Identity {
    Identity::user_principal_name(text).expect("a UPN")
}

/// Observes users by UPN, without their risk state, and returns them, in order; panics unless
/// every one is found.
async fn observe(directory: &GraphDirectory, upns: &[String]) -> Vec<EntraUser> {
    observe_risk(directory, upns, RiskReads::None).await
}

async fn observe_risk(directory: &GraphDirectory, upns: &[String], risk: RiskReads<'_>) -> Vec<EntraUser> {
    let lookups: Vec<(Identity, EntraLookup)> = upns.iter().map(|u| (upn(u), EntraLookup::Upn(u.clone()))).collect();
    let views = directory.observe_with_risk(&lookups, risk).await.expect("observation");
    upns.iter()
        .map(|u| match &views[&upn(u)] {
            ProviderView::Found(user) => user.clone(),
            other => panic!("{u}: {other:?}"),
        })
        .collect()
}

fn staff(n: usize) -> Vec<SimUser> {
    (0..n).map(|i| SimUser::new(format!("staff{i:04}@remedy.test"))).collect()
}

fn upns(users: &[SimUser]) -> Vec<String> {
    users.iter().map(|u| u.user_principal_name.clone()).collect()
}

fn is_token_request(entry: &LoggedRequest) -> bool {
    entry.path.ends_with("/oauth2/v2.0/token")
}

fn is_identity_protection(entry: &LoggedRequest) -> bool {
    entry.path.starts_with("/v1.0/identityProtection/")
}

fn patches_of<'a>(log: &'a [LoggedRequest], id: &str) -> Vec<&'a LoggedRequest> {
    let path = format!("/v1.0/users/{id}");
    log.iter().filter(|e| e.method == "PATCH" && e.path == path).collect()
}

#[tokio::test]
async fn suspend_is_applied_and_verified() {
    let env = start(vec![SimUser::new("alice@remedy.test")]).await;
    let directory = env.directory();
    let alice = observe(&directory, &["alice@remedy.test".into()]).await.remove(0);
    assert!(alice.account_enabled);
    env.sim.clear_log();

    let change = directory.apply(&alice, Action::SuspendUser, Utc::now()).await.expect("suspended");
    assert!(change.before.account_enabled);
    assert!(!change.after.account_enabled, "the read-back shows the suspension");
    assert!(!env.sim.user("alice@remedy.test").unwrap().account_enabled);
    let log = env.sim.log();
    let patches = patches_of(&log, &alice.id);
    assert_eq!(patches.len(), 1, "{log:#?}");
    assert_eq!(patches[0].status, 204);
    assert!(patches[0].in_batch, "writes go through $batch");
    assert_eq!(patches[0].body, Some(serde_json::json!({"accountEnabled": false})));

    // Idempotent: applying it again writes nothing and still verifies.
    env.sim.clear_log();
    let again = directory.apply(&change.after, Action::SuspendUser, Utc::now()).await.expect("still suspended");
    assert!(!again.after.account_enabled);
    assert!(patches_of(&env.sim.log(), &alice.id).is_empty(), "no second PATCH for a user already suspended");
}

#[tokio::test]
async fn unsuspend_restores_the_account() {
    let mut bob = SimUser::new("bob@remedy.test");
    bob.account_enabled = false;
    let env = start(vec![bob]).await;
    let directory = env.directory();
    let bob = observe(&directory, &["bob@remedy.test".into()]).await.remove(0);
    assert!(!bob.account_enabled);
    let change = directory.apply(&bob, Action::UnsuspendUser, Utc::now()).await.expect("unsuspended");
    assert!(change.after.account_enabled);
    assert!(env.sim.user("bob@remedy.test").unwrap().account_enabled);
    let log = env.sim.log();
    let patches = patches_of(&log, &bob.id);
    assert_eq!(patches.len(), 1);
    assert_eq!(patches[0].body, Some(serde_json::json!({"accountEnabled": true})));
}

#[tokio::test]
async fn sessions_are_revoked_once() {
    let env = start(vec![SimUser::new("carol@remedy.test")]).await;
    let directory = env.directory();
    let carol = observe(&directory, &["carol@remedy.test".into()]).await.remove(0);
    assert_eq!(carol.sign_in_sessions_valid_from, None);
    env.sim.clear_log();
    let before = Utc::now() - chrono::Duration::seconds(1);

    let change = directory.apply(&carol, Action::RevokeSessions, Utc::now()).await.expect("revoked");
    let valid_from = change.after.sign_in_sessions_valid_from.expect("set by the revocation");
    assert!(valid_from >= before, "{valid_from} is the time of this revocation");
    // Graph serves the property with whole seconds; the simulator keeps more.
    let stored = env.sim.user("carol@remedy.test").unwrap().sign_in_sessions_valid_from.unwrap();
    assert_eq!(stored.timestamp(), valid_from.timestamp());
    let log = env.sim.log();
    let revocations: Vec<_> = log.iter().filter(|e| e.path.ends_with("/revokeSignInSessions")).collect();
    assert_eq!(revocations.len(), 1, "{log:#?}");
    assert_eq!(revocations[0].method, "POST");
    assert_eq!(revocations[0].path, format!("/v1.0/users/{}/revokeSignInSessions", carol.id));
    assert!((200..300).contains(&revocations[0].status));
}

#[tokio::test]
async fn compromise_is_confirmed_for_one_user_and_for_two_in_one_request() {
    let env = start(staff(3)).await;
    let directory = env.directory();
    let users = observe_risk(&directory, &upns(&env.sim.state()), RiskReads::All).await;
    assert!(users.iter().all(|u| u.risk_state == RiskState::None));

    env.sim.clear_log();
    let one = directory.apply(&users[0], Action::ConfirmCompromised, Utc::now()).await.expect("confirmed");
    assert_eq!(one.after.risk_state, RiskState::ConfirmedCompromised);
    assert!(one.after.risk_last_updated.is_some());
    let confirms: Vec<_> = env
        .sim
        .log()
        .into_iter()
        .filter(|e| e.path == "/v1.0/identityProtection/riskyUsers/confirmCompromised")
        .collect();
    assert_eq!(confirms.len(), 1);
    assert!(!confirms[0].in_batch, "confirmations have their own lane, outside $batch");

    env.sim.clear_log();
    let items = vec![(users[1].clone(), Action::ConfirmCompromised), (users[2].clone(), Action::ConfirmCompromised)];
    let results = directory.apply_many(&items, Utc::now()).await;
    for result in &results {
        assert_eq!(result.as_ref().expect("confirmed").after.risk_state, RiskState::ConfirmedCompromised);
    }
    let log = env.sim.log();
    let confirms: Vec<_> =
        log.iter().filter(|e| e.path == "/v1.0/identityProtection/riskyUsers/confirmCompromised").collect();
    assert_eq!(confirms.len(), 1, "both users in one request: {log:#?}");
    assert_eq!(confirms[0].status, 204);
    assert_eq!(confirms[0].body, Some(serde_json::json!({"userIds": [users[1].id, users[2].id]})));
    for user in &users {
        assert_eq!(env.sim.user(&user.id).unwrap().risk_state, "confirmedCompromised");
    }
}

#[tokio::test]
async fn confirmations_keep_to_one_request_per_second_and_split_a_bad_id_out() {
    let env = start(staff(3)).await;
    let directory = env.directory();
    let users = observe(&directory, &upns(&env.sim.state())).await;
    let mut ghost = users[0].clone();
    ghost.id = "00000000-dead-beef-0000-000000000000".into();
    env.sim.clear_log();
    // Three callers at once: one request for all of them, refused for the unknown id, then each
    // user alone, never two requests within a second (the simulator would answer 429).
    let (a, b, c) = tokio::join!(
        directory.apply(&users[0], Action::ConfirmCompromised, Utc::now()),
        directory.apply(&ghost, Action::ConfirmCompromised, Utc::now()),
        directory.apply(&users[1], Action::ConfirmCompromised, Utc::now()),
    );
    assert_eq!(a.expect("confirmed").after.risk_state, RiskState::ConfirmedCompromised);
    assert_eq!(c.expect("confirmed").after.risk_state, RiskState::ConfirmedCompromised);
    let error = b.expect_err("unknown user");
    assert_eq!(error.status(), Some(404), "{error}");
    assert!(!error.is_transient());
    let log = env.sim.log();
    let confirms: Vec<_> =
        log.iter().filter(|e| e.path == "/v1.0/identityProtection/riskyUsers/confirmCompromised").collect();
    assert!(confirms.len() >= 3, "one for all, then each alone: {confirms:#?}");
    // Confirmations and the risk reads that verify them share Identity Protection's quota of one
    // request per second: paced, never throttled.
    let protection: Vec<_> = log.iter().filter(|e| is_identity_protection(e)).collect();
    assert!(protection.iter().all(|e| e.status != 429), "paced: never throttled: {protection:#?}");
    for pair in protection.windows(2) {
        let gap = pair[1].at - pair[0].at;
        assert!(gap >= chrono::Duration::milliseconds(1000), "{gap} between two Identity Protection requests");
    }
}

#[tokio::test]
async fn directory_sync_undoing_a_suspension_is_detected() {
    let env = start(vec![SimUser::new("dave@remedy.test").synced()]).await;
    let directory = env.directory();
    let dave = observe(&directory, &["dave@remedy.test".into()]).await.remove(0);
    assert!(dave.on_premises_sync_enabled);
    let change = directory.apply(&dave, Action::SuspendUser, Utc::now()).await.expect("suspended in the cloud");
    assert!(!change.after.account_enabled);
    let suspended_at = Utc::now();
    assert_eq!(sync_reverted(&change.after, Some(suspended_at)), None, "not reverted yet");

    // AD still says enabled: the next sync cycle puts accountEnabled back.
    env.sim.run_directory_sync();
    let dave = observe(&directory, &["dave@remedy.test".into()]).await.remove(0);
    assert!(dave.account_enabled && dave.on_premises_sync_enabled);
    let revert = sync_reverted(&dave, Some(suspended_at)).expect("reported as drift caused by sync");
    assert_eq!(revert.id, dave.id);
    assert!(revert.to_string().contains("reverted by directory sync"), "{revert}");

    // Once AD's disable has synced, the suspension holds.
    env.sim.set_on_premises_enabled("dave@remedy.test", false);
    env.sim.run_directory_sync();
    let dave = observe(&directory, &["dave@remedy.test".into()]).await.remove(0);
    assert!(!dave.account_enabled);
    assert_eq!(sync_reverted(&dave, Some(suspended_at)), None);
}

#[tokio::test]
async fn unknown_users_are_not_found() {
    let env = start(vec![SimUser::new("erin@remedy.test")]).await;
    let directory = env.directory();
    let erin_id = env.id("erin@remedy.test");
    let lookups = vec![
        (upn("nobody@remedy.test"), EntraLookup::Upn("nobody@remedy.test".into())),
        (Identity::sam_account_name("ghost").unwrap(), EntraLookup::Id("9d4f0b1e-0000-4000-8000-000000000000".into())),
        (upn("erin@remedy.test"), EntraLookup::Id(erin_id.clone())),
    ];
    let views = directory.observe(&lookups).await.expect("observation");
    assert_eq!(views[&upn("nobody@remedy.test")], ProviderView::NotFound);
    assert_eq!(views[&upn("erin@remedy.test")].found().unwrap().risk_state, RiskState::None, "read, as observe() does");
    assert_eq!(views[&Identity::sam_account_name("ghost").unwrap()], ProviderView::NotFound);
    assert!(matches!(&views[&upn("erin@remedy.test")], ProviderView::Found(u) if u.id == erin_id));

    // A user deleted between observation and action: Graph's 404, permanent.
    let mut gone = views[&upn("erin@remedy.test")].found().unwrap().clone();
    gone.id = "9d4f0b1e-0000-4000-8000-000000000000".into();
    let error = directory.apply(&gone, Action::SuspendUser, Utc::now()).await.expect_err("no such user");
    assert_eq!((error.status(), error.code()), (Some(404), Some("Request_ResourceNotFound")), "{error}");
    assert!(!error.is_transient());
}

#[tokio::test]
async fn observation_is_batched_with_select_and_reads_only_the_risk_asked_for() {
    let mut users = staff(45);
    users[7].risk_state = "atRisk".into();
    users[7].risk_level = "medium".into();
    users[8].on_premises_sync_enabled = true;
    let env = start(users).await;
    let directory = env.directory();
    let all = env.sim.state();
    // Half by object id, half by UPN.
    let lookups: Vec<(Identity, EntraLookup)> = all
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let lookup = if i % 2 == 0 {
                EntraLookup::Id(u.id.clone())
            } else {
                EntraLookup::Upn(u.user_principal_name.clone())
            };
            (upn(&u.user_principal_name), lookup)
        })
        .collect();
    env.sim.clear_log();
    // The risk of three of them: one found by id, two by UPN.
    let risky: BTreeSet<Identity> =
        ["staff0006@remedy.test", "staff0007@remedy.test", "staff0009@remedy.test"].into_iter().map(upn).collect();
    let views = directory.observe_with_risk(&lookups, RiskReads::For(&risky)).await.expect("observation");
    assert_eq!(views.len(), 45);
    assert_eq!(views[&upn("staff0007@remedy.test")].found().unwrap().risk_state, RiskState::AtRisk);
    assert_eq!(views[&upn("staff0006@remedy.test")].found().unwrap().risk_state, RiskState::None);
    assert_eq!(
        views[&upn("staff0010@remedy.test")].found().unwrap().risk_state,
        RiskState::UnknownFutureValue,
        "not read: unknown, never \"none\""
    );
    assert!(views[&upn("staff0008@remedy.test")].found().unwrap().on_premises_sync_enabled);
    let log = env.sim.log();
    let batches: Vec<_> = log.iter().filter(|e| e.path == "/v1.0/$batch").collect();
    assert_eq!(batches.len(), 3, "45 users in batches of 20");
    let user_reads: Vec<_> = log.iter().filter(|e| e.in_batch && e.path.starts_with("/v1.0/users/")).collect();
    assert_eq!(user_reads.len(), 45);
    for read in user_reads {
        assert!(
            read.path.ends_with("?$select=id,userPrincipalName,accountEnabled,onPremisesSyncEnabled,signInSessionsValidFromDateTime,lastPasswordChangeDateTime,userType"),
            "{}",
            read.path
        );
    }
    let risk_reads: Vec<_> = log.iter().filter(|e| is_identity_protection(e)).collect();
    assert_eq!(risk_reads.len(), 3, "{risk_reads:#?}");
    assert!(risk_reads.iter().all(|e| !e.in_batch && e.method == "GET" && e.status == 200));
    for pair in risk_reads.windows(2) {
        assert!(pair[1].at - pair[0].at >= chrono::Duration::milliseconds(1000), "paced at one per second");
    }
    let other: Vec<_> =
        log.iter().filter(|e| !e.in_batch && !is_token_request(e) && !is_identity_protection(e)).collect();
    assert!(other.iter().all(|e| e.path == "/v1.0/$batch"), "users only through $batch: {other:#?}");
}

#[tokio::test]
async fn a_denied_permission_is_permanent_and_keeps_graphs_words() {
    let mut admin = SimUser::new("admin@remedy.test");
    admin.privileged_role = true;
    let env = start(vec![admin]).await;
    let directory = env.directory();
    let admin = observe(&directory, &["admin@remedy.test".into()]).await.remove(0);
    let error = directory.apply(&admin, Action::SuspendUser, Utc::now()).await.expect_err("denied");
    assert!(!error.is_transient(), "{error}");
    assert_eq!(error.status(), Some(403));
    assert_eq!(error.code(), Some("Authorization_RequestDenied"));
    let request_id = error.request_id().expect("Graph's request id is kept").to_owned();
    let text = error.to_string();
    assert!(text.contains("Authorization_RequestDenied") && text.contains(&request_id), "{text}");
    assert!(text.contains("Insufficient privileges"), "{text}");
    assert!(env.sim.user("admin@remedy.test").unwrap().account_enabled);
    // Not retried: one PATCH.
    assert_eq!(patches_of(&env.sim.log(), &admin.id).len(), 1);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_transparently() {
    let users = staff(45);
    let env = start(users).await;
    let directory = env.directory();
    let users = observe(&directory, &upns(&env.sim.state())).await;
    env.sim.inject(Fault::ExpireTokens);
    env.sim.clear_log();

    // Three batches in flight are refused the same expired token at the same time.
    let items: Vec<(EntraUser, Action)> = users.iter().map(|u| (u.clone(), Action::SuspendUser)).collect();
    let results = directory.apply_many(&items, Utc::now()).await;
    assert!(results.iter().all(Result::is_ok), "{:?}", results.iter().find(|r| r.is_err()));
    let log = env.sim.log();
    let tokens = log.iter().filter(|e| is_token_request(e)).count();
    assert_eq!(tokens, 1, "exactly one extra token request: {log:#?}");
    assert!(log.iter().any(|e| e.path == "/v1.0/$batch" && e.status == 401), "the old token was refused");
    assert_eq!(directory.stats().token_requests, 2);
    for user in &users {
        assert_eq!(patches_of(&log, &user.id).iter().filter(|e| e.status == 204).count(), 1);
    }
}

#[tokio::test]
async fn an_invalid_client_secret_is_permanent_and_never_shown() {
    let env = start(vec![SimUser::new("frank@remedy.test")]).await;
    let wrong = "wr0ng~Secret.value-42";
    write_secret(env.dir.path(), "wrong-secret", wrong);
    let config = EntraConfig { client_secret_file: Some("wrong-secret".into()), ..env.config.clone() };
    let directory = GraphDirectory::with_options(&config, env.dir.path(), options()).unwrap();
    let error = directory.check().await.expect_err("refused");
    assert!(!error.is_transient(), "{error}");
    assert!(matches!(error, EntraError::Token { status: 401, .. }), "{error:?}");
    assert_eq!(error.code(), Some("invalid_client"));
    let lookups = vec![(upn("frank@remedy.test"), EntraLookup::Upn("frank@remedy.test".into()))];
    let observed = directory.observe(&lookups).await.expect_err("cannot observe without a token");
    for text in
        [error.to_string(), format!("{error:?}"), observed.to_string(), format!("{directory:?}"), format!("{config:?}")]
    {
        assert!(!text.contains(wrong), "the secret leaked: {text}");
        assert!(!text.contains(SECRET), "the secret leaked: {text}");
    }
    assert!(error.to_string().contains("AADSTS7000215"), "Entra's own words are kept: {error}");
    // Not retried: a wrong secret does not get better, and retrying could lock the app out.
    assert_eq!(env.sim.log().iter().filter(|e| is_token_request(e)).count(), 2, "one per call");
}

#[tokio::test]
async fn neither_the_secret_nor_a_token_shows_in_debug_output() {
    let env = start(vec![SimUser::new("gina@remedy.test")]).await;
    let directory = env.directory();
    let gina = observe(&directory, &["gina@remedy.test".into()]).await.remove(0);
    directory.apply(&gina, Action::SuspendUser, Utc::now()).await.unwrap();
    // Tokens issued by the simulator start with "graph-sim."; one is cached now.
    let debug = format!("{directory:?}");
    assert!(debug.contains("cached"), "{debug}");
    for text in [debug, format!("{:?}", env.config)] {
        assert!(!text.contains(SECRET), "{text}");
        assert!(!text.contains("graph-sim."), "an access token leaked: {text}");
    }
}

#[tokio::test]
async fn throttling_and_server_errors_lose_nothing_and_send_nothing_twice() {
    let users = staff(60);
    let env = start(users).await;
    let directory = env.directory();
    let users = observe(&directory, &upns(&env.sim.state())).await;
    env.sim.clear_log();
    env.sim.inject(Fault::Throttle { count: 30, retry_after: Duration::from_secs(1) });
    env.sim.inject(Fault::Status { status: 503, count: 12 });
    env.sim.inject(Fault::Throttle { count: 5, retry_after: Duration::from_secs(1) });
    env.sim.inject(Fault::Status { status: 503, count: 6 });

    let items: Vec<(EntraUser, Action)> = users.iter().map(|u| (u.clone(), Action::SuspendUser)).collect();
    let results = directory.apply_many(&items, Utc::now()).await;
    for (user, result) in users.iter().zip(&results) {
        assert!(result.is_ok(), "{}: {result:?}", user.user_principal_name);
        assert!(!env.sim.user(&user.id).unwrap().account_enabled);
    }

    let log = env.sim.log();
    let throttled = log.iter().filter(|e| e.status == 429).count();
    assert_eq!(throttled, 35, "every injected 429 was met");
    let mut retries_checked = 0;
    for user in &users {
        let patches = patches_of(&log, &user.id);
        let succeeded: Vec<_> = patches.iter().filter(|e| e.status == 204).collect();
        assert_eq!(succeeded.len(), 1, "{}: applied exactly once: {patches:#?}", user.user_principal_name);
        assert_eq!(patches.last().unwrap().status, 204, "nothing sent after the success");
        for pair in patches.windows(2) {
            if pair[0].status == 429 {
                let retry_after = pair[0].retry_after.expect("the 429 carried Retry-After");
                let gap = pair[1].at - pair[0].at;
                assert!(
                    gap >= chrono::Duration::seconds(retry_after as i64),
                    "{}: retried {gap} after a 429 that said Retry-After: {retry_after}",
                    user.user_principal_name
                );
                retries_checked += 1;
            }
        }
    }
    assert!(retries_checked >= 20, "{retries_checked} throttled PATCHes were retried");
    let stats = directory.stats();
    assert!(stats.throttled >= 35 && stats.retries > 0, "{stats:?}");
}

#[tokio::test]
async fn a_spent_retry_budget_is_a_transient_error() {
    let env = start(staff(2)).await;
    let options = GraphOptions {
        retry: RetryPolicy {
            max_attempts: 3,
            max_elapsed: Duration::from_secs(10),
            base_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        ..options()
    };
    let directory = GraphDirectory::with_options(&env.config, env.dir.path(), options).unwrap();
    let users = observe(&directory, &upns(&env.sim.state())).await;
    env.sim.clear_log();
    env.sim.inject(Fault::Status { status: 503, count: 1000 });
    let items: Vec<(EntraUser, Action)> = users.iter().map(|u| (u.clone(), Action::SuspendUser)).collect();
    for result in directory.apply_many(&items, Utc::now()).await {
        let error = result.expect_err("Graph is down");
        assert!(error.is_transient(), "{error}");
        assert!(matches!(error, EntraError::RetryBudgetExhausted { attempts: 3, .. }), "{error:?}");
        assert_eq!(error.status(), Some(503));
        assert!(error.request_id().is_some(), "{error}");
    }
    let log = env.sim.log();
    for user in &users {
        assert_eq!(patches_of(&log, &user.id).len(), 3, "three attempts, then the controller decides");
    }
    assert!(env.sim.state().iter().all(|u| u.account_enabled));
}

#[tokio::test]
async fn a_batch_that_partly_fails_reports_each_user_on_its_own() {
    let mut users = staff(4);
    users[2].privileged_role = true;
    let env = start(users).await;
    let directory = env.directory();
    let users = observe(&directory, &upns(&env.sim.state())).await;
    let items: Vec<(EntraUser, Action)> = users
        .iter()
        .flat_map(|u| [(u.clone(), Action::SuspendUser), (u.clone(), Action::RevokeSessions)])
        .chain([(users[0].clone(), Action::DisableAccount)])
        .collect();
    let results = directory.apply_many(&items, Utc::now()).await;
    assert_eq!(results.len(), items.len());
    let mut outcome: BTreeMap<(String, Action), bool> = BTreeMap::new();
    for ((user, action), result) in items.iter().zip(&results) {
        outcome.insert((user.user_principal_name.clone(), *action), result.is_ok());
    }
    assert!(!outcome[&("staff0002@remedy.test".to_owned(), Action::SuspendUser)], "privileged: denied");
    assert!(outcome[&("staff0002@remedy.test".to_owned(), Action::RevokeSessions)], "revocation is allowed");
    assert!(outcome[&("staff0001@remedy.test".to_owned(), Action::SuspendUser)]);
    assert!(matches!(results.last(), Some(Err(EntraError::NotAnEntraAction(Action::DisableAccount)))));
    // One batch to observe, one of 8 writes, one of 8 read-backs.
    assert_eq!(env.sim.log().iter().filter(|e| e.path == "/v1.0/$batch").count(), 3);
}

#[tokio::test]
async fn identity_protection_429s_without_retry_after_are_backed_off() {
    let env = start(staff(2)).await;
    // Two providers of the same tenant (two remedy processes, or remedy beside another app): each
    // paces itself, together they exceed one request per second and get bare 429s.
    let first = env.directory();
    let second = env.directory();
    let users = observe(&first, &upns(&env.sim.state())).await;
    env.sim.clear_log();
    let (a, b) = tokio::join!(
        first.apply(&users[0], Action::ConfirmCompromised, Utc::now()),
        second.apply(&users[1], Action::ConfirmCompromised, Utc::now()),
    );
    assert_eq!(a.expect("confirmed").after.risk_state, RiskState::ConfirmedCompromised);
    assert_eq!(b.expect("confirmed").after.risk_state, RiskState::ConfirmedCompromised);
    let log = env.sim.log();
    let throttled: Vec<_> = log.iter().filter(|e| is_identity_protection(e) && e.status == 429).collect();
    assert!(!throttled.is_empty(), "the two collided: {log:#?}");
    assert!(throttled.iter().all(|e| e.retry_after.is_none()), "Identity Protection sends no Retry-After");
    let confirmed = log.iter().filter(|e| e.path.ends_with("/confirmCompromised") && e.status == 204).count();
    assert_eq!(confirmed, 2, "each confirmation accepted once");
}

#[tokio::test]
async fn an_outage_spends_one_retry_budget_for_a_whole_observation() {
    // 200 users are 10 batches, 2 in flight: on a budget per batch, the late batches would each
    // retry as long as the first ones, and an outage would take five budgets to be reported.
    // Waits are 100-200 ms in a 1 s budget: a batch on a budget of its own makes at least 6
    // attempts (60 POSTs in all); on the shared one, the first two make at most 11 each and each
    // later one starts with at most 200 ms left, so makes at most 3 (46 in all).
    let env = start(staff(200)).await;
    let options = GraphOptions {
        concurrency: 2,
        retry: RetryPolicy {
            max_attempts: 50,
            max_elapsed: Duration::from_millis(1000),
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_millis(200),
        },
        ..options()
    };
    let directory = GraphDirectory::with_options(&env.config, env.dir.path(), options).unwrap();
    directory.check().await.expect("a token while Graph is up");
    env.sim.clear_log();
    env.sim.inject(Fault::Status { status: 503, count: 100_000 });

    let lookups: Vec<(Identity, EntraLookup)> =
        upns(&env.sim.state()).iter().map(|u| (upn(u), EntraLookup::Upn(u.clone()))).collect();
    let error = directory.observe_with_risk(&lookups, RiskReads::None).await.expect_err("Graph is down");
    assert!(error.is_transient(), "{error}");
    assert!(matches!(error, EntraError::RetryBudgetExhausted { .. }), "{error:?}");

    let batches = env.sim.log().iter().filter(|e| e.method == "POST" && e.path.ends_with("/$batch")).count();
    assert!(
        batches <= 46,
        "{batches} $batch POSTs: the batches that started late had only what was left of the budget"
    );
}

/// A round of change tracking that must succeed.
async fn delta(directory: &GraphDirectory, from: DeltaFrom) -> DeltaRound {
    directory.delta(from).await.expect("a delta round")
}

fn delta_requests(log: &[LoggedRequest]) -> Vec<&LoggedRequest> {
    log.iter().filter(|e| e.path.starts_with("/v1.0/users/delta")).collect()
}

#[tokio::test]
async fn delta_from_now_then_a_change_shows() {
    let env = start(staff(3)).await;
    let directory = env.directory();
    let start = delta(&directory, DeltaFrom::Latest).await;
    assert!(start.changed.is_empty(), "from now: no users");
    let log = env.sim.log();
    let request = &delta_requests(&log)[0].path;
    assert!(
        request.contains("$select=id,accountEnabled,onPremisesSyncEnabled,userPrincipalName")
            && request.contains("$deltatoken=latest"),
        "{request}"
    );

    let quiet = delta(&directory, DeltaFrom::Link(start.delta_link.clone())).await;
    assert!(quiet.changed.is_empty());
    let id = env.id("staff0001@remedy.test");
    assert!(env.sim.set_account_enabled(&id, false), "someone disabled it in the portal");
    let round = delta(&directory, DeltaFrom::Link(quiet.delta_link)).await;
    assert_eq!(round.changed.len(), 1, "{:?}", round.changed);
    let user = &round.changed[0];
    assert_eq!((user.id.as_str(), user.account_enabled, user.removed), (id.as_str(), Some(false), false));
    assert_eq!(user.user_principal_name.as_deref(), Some("staff0001@remedy.test"));

    env.sim.remove_user(&id, false);
    let round = delta(&directory, DeltaFrom::Link(round.delta_link)).await;
    assert!(round.changed[0].removed, "{:?}", round.changed);
    let stats = directory.stats();
    assert_eq!(stats.single_requests, 4, "counted with the other Graph requests: {stats:?}");
}

#[tokio::test]
async fn delta_follows_every_next_link() {
    let env =
        start_with(SimConfig { users: staff(12), page_size: 5, ..SimConfig::new(TENANT, CLIENT_ID, SECRET) }).await;
    let directory = env.directory();
    let start = delta(&directory, DeltaFrom::Latest).await;
    for user in env.sim.state() {
        env.sim.set_account_enabled(&user.id, false);
    }
    let round = delta(&directory, DeltaFrom::Link(start.delta_link)).await;
    assert_eq!(round.pages, 3, "12 users, 5 a page");
    let ids: BTreeSet<&str> = round.changed.iter().map(|u| u.id.as_str()).collect();
    assert_eq!(ids.len(), 12, "every changed user, once");
    assert!(round.changed.iter().all(|u| u.account_enabled == Some(false)));
    let log = env.sim.log();
    let pages: Vec<&str> = delta_requests(&log).iter().skip(1).map(|e| e.path.as_str()).collect();
    assert!(pages[0].contains("$deltatoken=") && pages[1].contains("$skiptoken=") && pages[2].contains("$skiptoken="));
}

#[tokio::test]
async fn an_expired_delta_link_asks_for_a_full_resync() {
    let env = start_with(SimConfig {
        users: staff(2),
        delta_token_lifetime: Duration::from_millis(200),
        ..SimConfig::new(TENANT, CLIENT_ID, SECRET)
    })
    .await;
    let directory = env.directory();
    let start = delta(&directory, DeltaFrom::Latest).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let error = directory.delta(DeltaFrom::Link(start.delta_link)).await.unwrap_err();
    assert!(matches!(error, EntraError::DeltaExpired { status: 400, .. }), "{error:?}");
    assert_eq!(error.code(), Some("syncStateNotFound"));
    assert!(!error.is_transient(), "never retried blindly");
    assert!(error.to_string().contains("a full resync is needed"), "{error}");
    assert!(!error.to_string().contains("deltatoken"), "the link's token is not shown: {error}");
    assert_eq!(delta_requests(&env.sim.log()).len(), 2, "the expired link was sent once");

    let start = delta(&directory, DeltaFrom::Latest).await;
    env.sim.inject(Fault::ResetDeltaTokens);
    let error = directory.delta(DeltaFrom::Link(start.delta_link)).await.unwrap_err();
    assert!(matches!(error, EntraError::DeltaExpired { status: 410, .. }), "{error:?}");
}

#[tokio::test]
async fn a_link_to_another_host_is_not_followed() {
    let env = start(staff(1)).await;
    let directory = env.directory();
    let start = delta(&directory, DeltaFrom::Latest).await;
    let elsewhere = start.delta_link.replace("127.0.0.1", "localhost");
    let error = directory.delta(DeltaFrom::Link(elsewhere)).await.unwrap_err();
    assert!(matches!(error, EntraError::UntrustedLink { .. }), "{error:?}");
    assert!(error.to_string().contains("would carry the access token"), "{error}");
    assert_eq!(delta_requests(&env.sim.log()).len(), 1, "nothing was sent");
}

#[tokio::test]
async fn a_sync_revert_shows_in_the_next_delta_round() {
    let env = start(vec![SimUser::new("erin@remedy.test").synced(), SimUser::new("frank@remedy.test")]).await;
    let directory = env.directory();
    let erin = observe(&directory, &["erin@remedy.test".into()]).await.remove(0);
    directory.apply(&erin, Action::SuspendUser, Utc::now()).await.expect("suspended in the cloud");
    let suspended = delta(&directory, DeltaFrom::Latest).await;

    // AD still says enabled: the next sync cycle undoes the suspension, and the next poll sees it.
    env.sim.run_directory_sync();
    let round = delta(&directory, DeltaFrom::Link(suspended.delta_link)).await;
    assert_eq!(round.changed.len(), 1, "{:?}", round.changed);
    let user = &round.changed[0];
    assert_eq!(user.id, erin.id);
    assert_eq!(user.account_enabled, Some(true));
    assert_eq!(user.on_premises_sync_enabled, Some(true));
}

#[tokio::test]
async fn a_throttled_delta_request_is_retried_after_retry_after() {
    let env = start(staff(2)).await;
    let directory = env.directory();
    let start = delta(&directory, DeltaFrom::Latest).await;
    env.sim.set_account_enabled("staff0000@remedy.test", false);
    env.sim.clear_log();
    env.sim.inject(Fault::Throttle { count: 1, retry_after: Duration::from_secs(1) });
    env.sim.inject(Fault::Status { status: 503, count: 1 });
    let round = delta(&directory, DeltaFrom::Link(start.delta_link)).await;
    assert_eq!(round.changed.len(), 1);
    let log = env.sim.log();
    let sent = delta_requests(&log);
    let statuses: Vec<u16> = sent.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [429, 503, 200]);
    assert!(sent[1].at - sent[0].at >= chrono::Duration::seconds(1), "Retry-After honoured");
    let stats = directory.stats();
    assert!(stats.throttled >= 1 && stats.retries >= 2, "{stats:?}");
}

// Entra ID as it really behaves (eventually consistent, guests, `$` UPNs, licences, a throttled
// `$batch`): the simulator's `replicaLag`, guests, and faults.

fn lagging(users: Vec<SimUser>, lag: ReplicaLag) -> SimConfig {
    SimConfig { users, replica_lag: Some(lag), ..SimConfig::new(TENANT, CLIENT_ID, SECRET) }
}

#[tokio::test]
async fn a_lagging_replica_does_not_fail_a_suspension_that_shows_within_the_reads() {
    // Lags of up to 150 ms: the third read, 200 ms after the write, always sees it.
    let lag = ReplicaLag { min: Duration::ZERO, max: Duration::from_millis(150) };
    let env = start_with(lagging(vec![SimUser::new("alice@remedy.test")], lag)).await;
    let directory = env.directory();
    let alice = observe(&directory, &["alice@remedy.test".into()]).await.remove(0);
    env.sim.clear_log();
    let change = directory.apply(&alice, Action::SuspendUser, Utc::now()).await.expect("suspended and confirmed");
    assert!(!change.after.account_enabled);
    assert_eq!(patches_of(&env.sim.log(), &alice.id).len(), 1, "written once, however many reads it took");
}

#[tokio::test]
async fn a_write_the_reads_do_not_show_yet_awaits_confirmation_and_is_not_sent_again() {
    let env =
        start_with(lagging(vec![SimUser::new("alice@remedy.test")], ReplicaLag::fixed(Duration::from_secs(3600))))
            .await;
    let directory = env.directory();
    let alice = observe(&directory, &["alice@remedy.test".into()]).await.remove(0);
    env.sim.clear_log();
    let error = directory.apply(&alice, Action::SuspendUser, Utc::now()).await.expect_err("not visible yet");
    assert!(matches!(error, EntraError::NotVisibleYet { action: Action::SuspendUser, .. }), "{error:?}");
    assert!(error.to_string().contains("accepted by Graph"), "{error}");
    assert!(error.to_string().contains("accountEnabled reads back true"), "{error}");
    let log = env.sim.log();
    assert_eq!(patches_of(&log, &alice.id).len(), 1, "sent once: {log:#?}");
    let reads = log.iter().filter(|e| e.method == "GET" && e.path.contains(&alice.id)).count();
    assert_eq!(reads, 3, "the quick reads, then it is the controller's to confirm later");
    assert!(!env.sim.user("alice@remedy.test").unwrap().account_enabled, "Graph has it");
}

#[tokio::test]
async fn revoking_a_guests_sessions_is_not_applicable_and_not_sent() {
    let env = start(vec![SimUser::new("partner_fabrikam.com#EXT#@remedy.test").guest()]).await;
    let directory = env.directory();
    let guest = observe(&directory, &["partner_fabrikam.com#EXT#@remedy.test".into()]).await.remove(0);
    assert!(guest.guest, "userType Guest is read");
    env.sim.clear_log();
    let error = directory.apply(&guest, Action::RevokeSessions, Utc::now()).await.expect_err("not applicable");
    assert!(matches!(error, EntraError::NotApplicable { .. }), "{error:?}");
    assert!(error.to_string().contains("not applicable: the user is a guest"), "{error}");
    assert!(!error.is_transient());
    assert!(env.sim.log().iter().all(|e| !e.path.ends_with("/revokeSignInSessions")), "nothing sent");
    // A guest can still be suspended in this tenant.
    directory.apply(&guest, Action::SuspendUser, Utc::now()).await.expect("suspended");
}

#[tokio::test]
async fn a_upn_starting_with_a_dollar_is_addressed_the_documented_way() {
    let env = start(vec![SimUser::new("$svc-backup@remedy.test")]).await;
    let directory = env.directory();
    env.sim.clear_log();
    let user = observe(&directory, &["$svc-backup@remedy.test".into()]).await.remove(0);
    assert_eq!(user.user_principal_name, "$svc-backup@remedy.test");
    let log = env.sim.log();
    let read = log.iter().find(|e| e.in_batch && e.method == "GET").expect("the read");
    assert!(read.path.starts_with("/v1.0/users('%24svc-backup@remedy.test')?"), "{read:?}");
    assert_eq!(read.status, 200);
}

#[tokio::test]
async fn risky_users_refused_without_entra_id_p2_name_the_licence() {
    let env = start_with(SimConfig {
        users: vec![SimUser::new("alice@remedy.test")],
        identity_protection_licensed: false,
        ..SimConfig::new(TENANT, CLIENT_ID, SECRET)
    })
    .await;
    let directory = env.directory();
    // Reading: the user is found, its risk unknown (suspension does not wait for a licence).
    let alice = observe_risk(&directory, &["alice@remedy.test".into()], RiskReads::All).await.remove(0);
    assert_eq!(alice.risk_state, RiskState::UnknownFutureValue);
    // Confirming: a permanent error that says what is missing.
    let error = directory.apply(&alice, Action::ConfirmCompromised, Utc::now()).await.expect_err("refused");
    assert_eq!(error.status(), Some(403), "{error}");
    assert!(!error.is_transient());
    assert!(error.to_string().contains("needs a Microsoft Entra ID P2 licence"), "{error}");
}

#[tokio::test]
async fn a_batch_throttled_as_a_whole_is_sent_again_after_retry_after() {
    let env = start(staff(3)).await;
    let directory = env.directory();
    env.sim.clear_log();
    env.sim.inject(Fault::BatchThrottle { count: 1, retry_after: Duration::from_secs(1) });
    let users = observe(&directory, &upns(&env.sim.state())).await;
    assert_eq!(users.len(), 3);
    let log = env.sim.log();
    let batches: Vec<_> = log.iter().filter(|e| e.path == "/v1.0/$batch").collect();
    assert_eq!(batches.iter().map(|e| e.status).collect::<Vec<_>>(), [429, 200], "{log:#?}");
    assert!(batches[1].at - batches[0].at >= chrono::Duration::seconds(1), "Retry-After honoured");
    assert_eq!(log.iter().filter(|e| e.in_batch).count(), 3, "each user read once");
    assert!(directory.stats().throttled >= 1);
}

#[tokio::test]
async fn a_read_answered_202_without_the_user_is_read_again() {
    let env = start(staff(2)).await;
    let directory = env.directory();
    env.sim.clear_log();
    env.sim.inject(Fault::AcceptedGets { count: 1 });
    let users = observe(&directory, &upns(&env.sim.state())).await;
    assert_eq!(users.len(), 2, "both read, none taken from an empty answer");
    let log = env.sim.log();
    let reads: Vec<u16> = log.iter().filter(|e| e.in_batch).map(|e| e.status).collect();
    assert_eq!(reads.iter().filter(|s| **s == 202).count(), 1, "{log:#?}");
    assert_eq!(reads.iter().filter(|s| **s == 200).count(), 2, "{log:#?}");
}
