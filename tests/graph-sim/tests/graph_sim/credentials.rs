//! Credentials other than a valid secret at the token endpoint: certificate assertions
//! (`private_key_jwt`), federated tokens, an expired secret, and the endpoint's outages.

use std::time::{Duration, Instant};

use chrono::Utc;
use remedy_graph_sim::testdata::{certificate, valid_certificate, APP_KEY, ISSUER_KEY, OTHER_KEY};
use remedy_graph_sim::{sign_jwt, spawn, thumbprint_sha256, Fault, FederatedCredential, Sim, SimConfig};
use serde_json::{json, Map, Value};

use crate::support::*;

const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const ISSUER: &str = "https://oidc.prod-aks.azure.com/0000-test/";
const SUBJECT: &str = "system:serviceaccount:remedy:remedy";

/// Sends a client assertion; the status and the body.
async fn with_assertion(sim: &Sim, assertion_type: &str, assertion: &str) -> (u16, Value) {
    let response = http()
        .post(token_url(sim))
        .form(&[
            ("client_id", CLIENT),
            ("scope", "https://graph.microsoft.com/.default"),
            ("grant_type", "client_credentials"),
            ("client_assertion_type", assertion_type),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

fn token_url(sim: &Sim) -> String {
    format!("{}/{TENANT}/oauth2/v2.0/token", sim.url())
}

/// The claims Microsoft's page asks for, valid now, with `changes` on top (`null` removes one).
fn claims(sim: &Sim, changes: Value) -> Value {
    let now = Utc::now().timestamp();
    let mut claims = json!({
        "aud": token_url(sim), "iss": CLIENT, "sub": CLIENT, "jti": uuid::Uuid::new_v4().to_string(),
        "nbf": now, "iat": now, "exp": now + 600,
    });
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn header(certificate_pem: &str, alg: &str) -> Map<String, Value> {
    let mut header = Map::new();
    header.insert("alg".into(), alg.into());
    header.insert("x5t#S256".into(), thumbprint_sha256(certificate_pem).unwrap().into());
    header
}

fn assert_refused(answer: &(u16, Value), status: u16, code: u64, words: &str) {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["error_codes"][0], code, "{body}");
    let description = body["error_description"].as_str().unwrap();
    assert!(description.starts_with(&format!("AADSTS{code}: ")), "{body}");
    assert!(description.contains(words), "{words:?} in {body}");
    for field in ["timestamp", "trace_id", "correlation_id"] {
        assert!(body[field].is_string(), "{field} in {body}");
    }
}

#[tokio::test]
async fn a_certificate_assertion_gets_a_token_in_rs256_and_ps256_and_is_never_logged() {
    let registered = valid_certificate(APP_KEY);
    let sim = spawn(SimConfig { client_certificates: vec![registered.clone()], ..config() }).await.unwrap();
    for alg in ["RS256", "PS256"] {
        let assertion = sign_jwt(APP_KEY, header(&registered, alg), &claims(&sim, json!({}))).unwrap();
        let (status, body) = with_assertion(&sim, JWT_BEARER, &assertion).await;
        assert_eq!(status, 200, "{alg}: {body}");
        assert!(body["access_token"].is_string());
    }
    // The older SHA-1 thumbprint (`x5t`) names the certificate too.
    let mut sha1 = Map::new();
    let der = x509_der(&registered);
    sha1.insert("x5t".into(), base64url(ring_sha1(&der)).into());
    let assertion = sign_jwt(APP_KEY, sha1, &claims(&sim, json!({}))).unwrap();
    assert_eq!(with_assertion(&sim, JWT_BEARER, &assertion).await.0, 200);
    for entry in sim.log() {
        assert_eq!(entry.body.as_ref().unwrap()["client_assertion"], "<redacted>");
    }
}

fn x509_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64_standard(&body)
}

fn base64_standard(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}

fn base64url(bytes: Vec<u8>) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ring_sha1(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, bytes).as_ref().to_vec()
}

#[tokio::test]
async fn bad_certificate_assertions_are_refused_with_the_identity_platforms_codes() {
    let registered = valid_certificate(APP_KEY);
    let unregistered = valid_certificate(OTHER_KEY);
    let sim = spawn(SimConfig { client_certificates: vec![registered.clone()], ..config() }).await.unwrap();
    let now = Utc::now().timestamp();
    let good_header = || header(&registered, "RS256");
    let cases: Vec<(&str, String, u16, u64, &str)> = vec![
        (
            "a certificate that is not registered",
            sign_jwt(OTHER_KEY, header(&unregistered, "RS256"), &claims(&sim, json!({}))).unwrap(),
            401,
            700027,
            "The key was not found.",
        ),
        (
            "the registered thumbprint, another key's signature",
            sign_jwt(OTHER_KEY, good_header(), &claims(&sim, json!({}))).unwrap(),
            401,
            700027,
            "signature",
        ),
        (
            "expired an hour ago",
            sign_jwt(APP_KEY, good_header(), &claims(&sim, json!({"exp": now - 3600, "nbf": now - 4200}))).unwrap(),
            401,
            700024,
            "not within its valid time range",
        ),
        (
            "valid only in an hour",
            sign_jwt(APP_KEY, good_header(), &claims(&sim, json!({"nbf": now + 3600, "exp": now + 4000}))).unwrap(),
            401,
            700024,
            "not within its valid time range",
        ),
        (
            "for another audience",
            sign_jwt(
                APP_KEY,
                good_header(),
                &claims(&sim, json!({"aud": "https://login.microsoftonline.com/other/oauth2/v2.0/token"})),
            )
            .unwrap(),
            401,
            50027,
            "aud",
        ),
        (
            "a sub that is not the client",
            sign_jwt(APP_KEY, good_header(), &claims(&sim, json!({"sub": "someone-else"}))).unwrap(),
            401,
            50027,
            "sub",
        ),
        ("no exp", sign_jwt(APP_KEY, good_header(), &claims(&sim, json!({"exp": null}))).unwrap(), 401, 50027, "exp"),
        ("no thumbprint", sign_jwt(APP_KEY, Map::new(), &claims(&sim, json!({}))).unwrap(), 401, 50027, "x5t#S256"),
        ("not a JWT", "not-a-jwt".to_owned(), 401, 50027, "JWT token is invalid or malformed"),
    ];
    for (case, assertion, status, code, words) in cases {
        let answer = with_assertion(&sim, JWT_BEARER, &assertion).await;
        eprintln!("{case}: {}", answer.1["error_description"]);
        assert_refused(&answer, status, code, words);
    }
    let good = sign_jwt(APP_KEY, good_header(), &claims(&sim, json!({}))).unwrap();
    assert_refused(&with_assertion(&sim, "urn:other", &good).await, 400, 50027, "client_assertion_type");
}

#[tokio::test]
async fn an_expired_registered_certificate_is_refused() {
    let now = Utc::now();
    let expired = certificate(APP_KEY, now - chrono::Duration::days(400), now - chrono::Duration::days(35)).unwrap();
    let sim = spawn(SimConfig { client_certificates: vec![expired.clone()], ..config() }).await.unwrap();
    let assertion = sign_jwt(APP_KEY, header(&expired, "RS256"), &claims(&sim, json!({}))).unwrap();
    assert_refused(&with_assertion(&sim, JWT_BEARER, &assertion).await, 401, 700027, "The key used is expired.");
}

#[tokio::test]
async fn federated_tokens_must_match_a_federated_credential_and_its_issuers_key() {
    let issuer_certificate = valid_certificate(ISSUER_KEY);
    let credential = FederatedCredential::new(ISSUER, SUBJECT, issuer_certificate);
    let sim = spawn(SimConfig { federated_credentials: vec![credential], ..config() }).await.unwrap();
    let now = Utc::now().timestamp();
    let federated = |key: &str, changes: Value| {
        let mut claims = json!({"iss": ISSUER, "sub": SUBJECT, "aud": ["api://AzureADTokenExchange"], "iat": now, "nbf": now, "exp": now + 3600});
        for (name, value) in changes.as_object().unwrap() {
            claims[name] = value.clone();
        }
        sign_jwt(key, Map::new(), &claims).unwrap()
    };
    let (status, body) = with_assertion(&sim, JWT_BEARER, &federated(ISSUER_KEY, json!({}))).await;
    assert_eq!(status, 200, "{body}");

    let answer =
        with_assertion(&sim, JWT_BEARER, &federated(ISSUER_KEY, json!({"sub": "system:serviceaccount:x:y"}))).await;
    assert_refused(&answer, 401, 70021, "Assertion Subject: 'system:serviceaccount:x:y'");
    let answer =
        with_assertion(&sim, JWT_BEARER, &federated(ISSUER_KEY, json!({"iss": "https://elsewhere.test/"}))).await;
    assert_refused(&answer, 401, 70021, "Assertion Issuer: 'https://elsewhere.test/'");
    let answer = with_assertion(&sim, JWT_BEARER, &federated(ISSUER_KEY, json!({"aud": "api://other"}))).await;
    assert_refused(&answer, 401, 70021, "Assertion Audience: 'api://other'");
    let answer = with_assertion(&sim, JWT_BEARER, &federated(OTHER_KEY, json!({}))).await;
    assert_refused(&answer, 401, 700027, "signature");
    let answer = with_assertion(&sim, JWT_BEARER, &federated(ISSUER_KEY, json!({"exp": now - 3600}))).await;
    assert_refused(&answer, 401, 700024, "not within its valid time range");
}

#[tokio::test]
async fn an_expired_secret_is_refused_with_7000222_and_a_wrong_one_with_7000215() {
    let sim = spawn(SimConfig { client_secret_expired: true, ..config() }).await.unwrap();
    let expired = token(&http(), &sim, SECRET).await;
    assert_refused(&expired, 401, 7000222, "are expired");
    assert!(expired.1["error_description"].as_str().unwrap().contains("certificate credentials"));
    assert_refused(&token(&http(), &sim, "wrong").await, 401, 7000215, "Invalid client secret");
}

#[tokio::test]
async fn a_token_outage_answers_its_status_until_it_ends_and_leaves_graph_alone() {
    let env = start(config()).await;
    let started = Instant::now();
    env.sim.inject(Fault::TokenOutage { status: 503, duration: Duration::from_millis(500) });
    let (status, body) = token(&env.http, &env.sim, SECRET).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable");
    assert_eq!(env.get(&format!("/v1.0/users/{CLOUD}")).await.status, 200, "Graph still answers");
    let mut answers = vec![status];
    loop {
        let (status, _) = token(&env.http, &env.sim, SECRET).await;
        answers.push(status);
        if status == 200 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the outage ends: {answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(500), "503 until the outage ended: {answers:?}");
    assert!(answers[..answers.len() - 1].iter().all(|&s| s == 503), "{answers:?}");
}

#[test]
fn a_seed_with_an_unreadable_certificate_is_refused() {
    let seed = "tenantId: t\nclientId: c\nclientSecret: s\nclientCertificates: [\"not a certificate\"]\nfederatedCredentials:\n  - {issuer: i, subject: s, issuerCertificate: nope}\n";
    let problems = SimConfig::from_yaml(seed).unwrap_err();
    assert!(problems.contains("clientCertificates[0]"), "{problems}");
    assert!(problems.contains("federatedCredentials[0].issuerCertificate"), "{problems}");
}
