//! How the Entra ID provider proves the app's identity, against the Graph simulator over HTTP:
//! a certificate (signed client assertion), a federated token file, an expired client secret,
//! and a token endpoint that is down for a while. The simulator verifies what it is sent as the
//! identity platform does and answers with its AADSTS errors; its log shows every token request.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use remedy::entra::{EntraDirectory, EntraError, EntraLookup, GraphDirectory, GraphOptions, RetryPolicy};
use remedy_graph_sim::testdata::{certificate, valid_certificate, APP_KEY, ISSUER_KEY, OTHER_KEY};
use remedy_graph_sim::{sign_jwt, spawn, spawn_on, Fault, FederatedCredential, LoggedRequest, Sim, SimConfig, SimUser};
use remedy_policies::config::EntraConfig;
use remedy_policies::observed::ProviderView;
use remedy_policies::Identity;
use serde_json::json;

use crate::support::write_private;

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cret~Value.only-in-the-file";
const ISSUER: &str = "https://oidc.prod-aks.azure.com/0000-test/";
const SUBJECT: &str = "system:serviceaccount:remedy:remedy";
const USER: &str = "staff0001@remedy.test";

fn sim_config() -> SimConfig {
    SimConfig { users: vec![SimUser::new(USER)], ..SimConfig::new(TENANT, CLIENT_ID, SECRET) }
}

/// An `entraId` section for `url` with the credential `set` fills in.
fn entra_config(url: &str, set: impl FnOnce(&mut EntraConfig)) -> EntraConfig {
    let mut config = EntraConfig {
        tenant_id: TENANT.into(),
        client_id: CLIENT_ID.into(),
        client_secret_file: None,
        client_certificate_file: None,
        federated_token_file: None,
        authority_host: url.into(),
        graph_url: url.into(),
        ca_file: None,
        request_timeout: Duration::from_secs(10),
        delta_interval: Duration::from_secs(30),
        confirmation_deadline: Duration::from_secs(300),
    };
    set(&mut config);
    config
}

/// Quick retries: a token endpoint outage of a second or two is ridden out within the budget.
fn options() -> GraphOptions {
    GraphOptions {
        retry: RetryPolicy {
            max_attempts: 30,
            max_elapsed: Duration::from_secs(20),
            base_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(400),
        },
        verify_delay: Duration::from_millis(100),
        ..GraphOptions::default()
    }
}

fn token_requests(sim: &Sim) -> Vec<LoggedRequest> {
    sim.log().into_iter().filter(|e| e.path.ends_with("/oauth2/v2.0/token")).collect()
}

/// Reads the test user: proof that the token works for Graph.
async fn read_user(directory: &GraphDirectory) -> Result<(), EntraError> {
    let identity = Identity::user_principal_name(USER).expect("a UPN");
    let views = directory.observe(&[(identity.clone(), EntraLookup::Upn(USER.into()))]).await?;
    assert!(matches!(views[&identity], ProviderView::Found(_)), "{views:?}");
    Ok(())
}

/// A federated token as the issuer would write it to the file.
fn federated_token(subject: &str, expires_in: i64) -> String {
    let now = Utc::now().timestamp();
    let claims = json!({"iss": ISSUER, "sub": subject, "aud": "api://AzureADTokenExchange", "iat": now - 60, "nbf": now - 60, "exp": now + expires_in});
    sign_jwt(ISSUER_KEY, serde_json::Map::new(), &claims).expect("signed")
}

#[tokio::test]
async fn a_certificate_gets_tokens_end_to_end_without_a_secret() {
    let registered = valid_certificate(APP_KEY);
    let sim = spawn(SimConfig { client_certificates: vec![registered.clone()], ..sim_config() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("remedy-entra.pem"), &format!("{APP_KEY}{registered}"));
    let config = entra_config(&sim.url(), |c| c.client_certificate_file = Some("remedy-entra.pem".into()));
    let directory =
        GraphDirectory::with_options(&config, dir.path(), options()).expect("the key and certificate are read");
    directory.check().await.expect("a token for the certificate");
    read_user(&directory).await.expect("Graph accepts the token");

    let sent = token_requests(&sim);
    assert_eq!(sent.len(), 1);
    let form = sent[0].body.as_ref().unwrap();
    assert_eq!(form["client_assertion_type"], "urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
    assert!(form.get("client_secret").is_none(), "{form}");
    let debug = format!("{directory:?}");
    assert!(debug.contains("ClientCertificate") && debug.contains("[redacted]"), "{debug}");
    assert!(!debug.contains("PRIVATE KEY") && !debug.contains(&APP_KEY[40..80]), "the key leaked: {debug}");
}

#[tokio::test]
async fn a_certificate_the_app_does_not_know_is_refused_once_naming_aadsts_and_the_fix() {
    // The app registration holds another certificate than the one remedy signs with.
    let sim =
        spawn(SimConfig { client_certificates: vec![valid_certificate(OTHER_KEY)], ..sim_config() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("remedy-entra.pem"), &format!("{APP_KEY}{}", valid_certificate(APP_KEY)));
    let config = entra_config(&sim.url(), |c| c.client_certificate_file = Some("remedy-entra.pem".into()));
    let directory = GraphDirectory::with_options(&config, dir.path(), options()).unwrap();
    let error = directory.check().await.expect_err("refused");
    assert!(!error.is_transient(), "a person must act: {error}");
    assert_eq!(error.code(), Some("invalid_client"));
    let text = error.to_string();
    assert!(text.contains("AADSTS700027") && text.contains("The key was not found."), "{text}");
    assert!(text.contains("To fix:") && text.contains("upload the certificate"), "{text}");
    assert_eq!(token_requests(&sim).len(), 1, "not retried");
}

#[tokio::test]
async fn a_certificate_file_that_cannot_work_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("mismatched.pem", format!("{APP_KEY}{}", valid_certificate(OTHER_KEY)), "is not the private key's"),
        ("no-certificate.pem", APP_KEY.to_owned(), "no certificate"),
        ("no-key.pem", valid_certificate(APP_KEY), "no private key"),
        (
            "expired.pem",
            format!(
                "{APP_KEY}{}",
                certificate(APP_KEY, Utc::now() - chrono::Duration::days(400), Utc::now() - chrono::Duration::days(1))
                    .unwrap()
            ),
            "expired",
        ),
    ];
    for (file, content, words) in cases {
        write_private(&dir.path().join(file), &content);
        let config =
            entra_config("https://login.microsoftonline.com", |c| c.client_certificate_file = Some(file.into()));
        let error = GraphDirectory::with_options(&config, dir.path(), options()).expect_err(file);
        assert!(matches!(error, EntraError::Config(_)), "{file}: {error:?}");
        let text = error.to_string();
        assert!(text.contains("clientCertificateFile") && text.contains(words), "{file}: {text}");
        assert!(!text.contains("PRIVATE KEY-----"), "{text}");
    }
    // Two credentials are a configuration error naming both keys.
    write_private(&dir.path().join("secret"), SECRET);
    let both = entra_config("https://login.microsoftonline.com", |c| {
        c.client_secret_file = Some("secret".into());
        c.client_certificate_file = Some("expired.pem".into());
    });
    let error = GraphDirectory::with_options(&both, dir.path(), options()).expect_err("two credentials");
    assert!(error.to_string().contains("clientSecretFile and clientCertificateFile are set"), "{error}");
}

#[tokio::test]
async fn the_federated_token_file_is_read_again_for_every_token_request() {
    let credential = FederatedCredential::new(ISSUER, SUBJECT, valid_certificate(ISSUER_KEY));
    let sim = spawn(SimConfig { federated_credentials: vec![credential], ..sim_config() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("azure-identity-token");
    let config = entra_config(&sim.url(), |c| c.federated_token_file = Some("azure-identity-token".into()));

    // The token in the file has expired: Entra ID refuses it and remedy says what to check.
    write_private(&file, &federated_token(SUBJECT, -3600));
    let directory = GraphDirectory::with_options(&config, dir.path(), options()).unwrap();
    let error = directory.check().await.expect_err("an expired federated token");
    assert!(!error.is_transient(), "{error}");
    let text = error.to_string();
    assert!(text.contains("AADSTS700024") && text.contains("federatedTokenFile"), "{text}");
    assert!(text.contains("rotates"), "{text}");

    // The kubelet rotates the file: the same provider uses the new token at its next request.
    rotate(&file, &federated_token(SUBJECT, 3600));
    directory.check().await.expect("the rotated token is read");
    read_user(&directory).await.expect("Graph accepts the token");

    // Rotated again, to a token for a subject the app does not trust: the next token request
    // (forced by Graph refusing the current access token) reads it, and is refused.
    rotate(&file, &federated_token("system:serviceaccount:other:intruder", 3600));
    sim.inject(Fault::ExpireTokens);
    let error = read_user(&directory).await.expect_err("the new file's token is not trusted");
    let text = error.to_string();
    assert!(text.contains("AADSTS70021") && text.contains("system:serviceaccount:other:intruder"), "{text}");
    assert!(text.contains("az ad app federated-credential create"), "{text}");
    assert_eq!(token_requests(&sim).len(), 3, "one token request per token, each reading the file");
}

/// Replaces the file as Kubernetes does: a new file renamed over the old one.
fn rotate(file: &Path, token: &str) {
    let next = file.with_extension("next");
    write_private(&next, token);
    std::fs::rename(&next, file).expect("rename over the token file");
}

#[tokio::test]
async fn an_expired_secret_is_not_retried_and_says_to_make_a_new_one_or_move_to_a_certificate() {
    let sim = spawn(SimConfig { client_secret_expired: true, ..sim_config() }).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("secret"), SECRET);
    let config = entra_config(&sim.url(), |c| c.client_secret_file = Some("secret".into()));
    let directory = GraphDirectory::with_options(&config, dir.path(), options()).unwrap();
    let error = directory.check().await.expect_err("the secret has expired");
    assert!(!error.is_transient(), "waiting does not renew a secret: {error}");
    assert!(matches!(error, EntraError::Token { status: 401, .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("AADSTS7000222"), "{text}");
    assert!(text.contains("New client secret") && text.contains("clientCertificateFile"), "{text}");
    assert!(!text.contains(SECRET), "{text}");
    assert_eq!(token_requests(&sim).len(), 1, "not retried");
}

#[tokio::test]
async fn a_token_endpoint_outage_is_retried_with_backoff_and_recovers() {
    let sim = spawn(sim_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("secret"), SECRET);
    let config = entra_config(&sim.url(), |c| c.client_secret_file = Some("secret".into()));
    let directory = GraphDirectory::with_options(&config, dir.path(), options()).unwrap();
    sim.inject(Fault::TokenOutage { status: 503, duration: Duration::from_millis(1500) });
    directory.check().await.expect("a token once the endpoint is back");
    read_user(&directory).await.expect("and Graph works");

    let sent = token_requests(&sim);
    let (last, failed) = sent.split_last().unwrap();
    assert_eq!(last.status, 200);
    assert!(failed.len() >= 2 && failed.iter().all(|e| e.status == 503), "{sent:#?}");
    // Backoff: never sooner than half the base wait (100 ms, equal jitter), and the waits grow.
    let gaps: Vec<i64> = sent.windows(2).map(|w| (w[1].at - w[0].at).num_milliseconds()).collect();
    assert!(gaps.iter().all(|&gap| gap >= 50), "{gaps:?}");
    assert!(gaps.last() > gaps.first(), "the waits grow: {gaps:?}");
}

#[tokio::test]
async fn a_token_endpoint_that_refuses_connections_is_retried_until_it_is_back() {
    let address = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("http://{address}");
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("secret"), SECRET);
    let config = entra_config(&url, |c| c.client_secret_file = Some("secret".into()));
    let directory = GraphDirectory::with_options(&config, dir.path(), options()).unwrap();
    let started = tokio::time::Instant::now();
    let comes_back = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        spawn_on(sim_config(), address).await.expect("the endpoint is back")
    });
    directory.check().await.expect("a token once the endpoint listens again");
    assert!(started.elapsed() >= Duration::from_millis(800));
    let sim = comes_back.await.unwrap();
    read_user(&directory).await.expect("and Graph works");
    assert_eq!(token_requests(&sim).len(), 1, "one request reached it: the earlier ones were refused connections");
    assert!(directory.stats().token_requests >= 2, "{:?}", directory.stats());
}

#[tokio::test]
async fn an_outage_longer_than_the_retry_budget_is_a_transient_error_and_nothing_is_sent() {
    let sim = spawn(sim_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_private(&dir.path().join("secret"), SECRET);
    let config = entra_config(&sim.url(), |c| c.client_secret_file = Some("secret".into()));
    let short = GraphOptions {
        retry: RetryPolicy { max_attempts: 3, max_elapsed: Duration::from_secs(5), ..options().retry },
        ..options()
    };
    let directory = GraphDirectory::with_options(&config, dir.path(), short).unwrap();
    sim.inject(Fault::TokenOutage { status: 503, duration: Duration::from_secs(600) });
    let error = read_user(&directory).await.expect_err("the token endpoint is down");
    assert!(error.is_transient(), "the controller retries later: {error}");
    assert!(matches!(error, EntraError::RetryBudgetExhausted { attempts: 3, .. }), "{error:?}");
    assert_eq!(error.status(), Some(503));
    assert_eq!(error.code(), Some("temporarily_unavailable"));
    let log = sim.log();
    assert!(log.iter().all(|e| e.path.ends_with("/oauth2/v2.0/token")), "no Graph request without a token: {log:#?}");
}
