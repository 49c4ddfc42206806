//! The web action center at `/ui/` over real HTTP(S), as a browser talks to it (the browser test
//! itself is `scripts/ui-check`): the controller, the watcher and the API in this process, Entra
//! ID on graph-sim, no Active Directory. Asserts what a person and an attacker's page would see:
//! the session cookie's attributes, the headers of every answer, sign-in and sign-out, expiry
//! on the server, CSRF and role refusals, and escaping.

use std::sync::Arc;
use std::time::Duration;

use remedy::api::ui::{UiOptions, CONTENT_SECURITY_POLICY};
use remedy::api::{ApiState, Tokens};
use remedy::controller::{Clock, Controller, ControllerHandle};
use remedy::entra::{GraphOptions, RetryPolicy};
use remedy::providers::Providers;
use remedy::store::Store;
use remedy::watch::ManifestWatcher;
use remedy_graph_sim::{Sim, SimConfig, SimUser};
use remedy_policies::config::Config;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::support::{entra_yaml, http_client, settings, token_yaml};

const TENANT: &str = "7c0ffee0-0000-4000-8000-0000000a9200";
const CLIENT_ID: &str = "5e1ec7ed-0000-4000-8000-0000000a9201";
const SECRET: &str = "ui-test-secret-not-a-real-one";
const READER: &str = "reader-token-ui-5a1c";
const OPERATOR: &str = "operator-token-ui-9e2b";

/// A reason that would run a script if it were not escaped.
const HOSTILE_REASON: &str = "<script>alert('owned')</script> & \"quoted\"";

/// Three cloud users, one manifest each: one more change than `maxChangesPerReconcile` allows,
/// so the plan is held.
const THREE: [&str; 3] = ["a@x.test", "b@x.test", "c@x.test"];

struct Daemon {
    base: String,
    client: reqwest::Client,
    sim: Sim,
    handle: ControllerHandle,
    stop: watch::Sender<bool>,
    controller: JoinHandle<()>,
    api: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

/// An answer, with the headers the tests read.
#[derive(Debug)]
struct Reply {
    status: u16,
    location: Option<String>,
    set_cookie: Vec<String>,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The CSRF token of the page's forms.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.text.find(marker).unwrap_or_else(|| panic!("no CSRF field: {}", self.text)) + marker.len();
        self.text[start..start + 64].to_owned()
    }
}

fn manifest(name: &str, upn: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: {reason:?}\n  \
         target:\n    userPrincipalName: {upn}\n  entraId:\n    suspended: true\n",
        reason = HOSTILE_REASON
    )
}

impl Daemon {
    async fn start(options: UiOptions) -> Daemon {
        Daemon::start_in(tempfile::tempdir().expect("temporary directory"), false, options).await.0
    }

    async fn start_tls() -> Daemon {
        let dir = tempfile::tempdir().expect("temporary directory");
        let certified =
            rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).expect("cert");
        std::fs::write(dir.path().join("api-cert.pem"), certified.cert.pem()).expect("certificate file");
        std::fs::write(dir.path().join("api-key.pem"), certified.signing_key.serialize_pem()).expect("key file");
        let der = certified.cert.der().clone();
        let (mut daemon, _) = Daemon::start_in(dir, true, UiOptions::default()).await;
        daemon.client = http_client(&[der]);
        daemon
    }

    async fn start_in(dir: tempfile::TempDir, tls: bool, options: UiOptions) -> (Daemon, ()) {
        let sim = remedy_graph_sim::spawn(SimConfig {
            users: THREE.iter().map(|upn| SimUser::new(*upn)).collect(),
            ..SimConfig::new(TENANT, CLIENT_ID, SECRET)
        })
        .await
        .expect("graph-sim starts");
        let manifests = dir.path().join("manifests");
        std::fs::create_dir(&manifests).expect("manifest directory");
        for (index, upn) in THREE.iter().enumerate() {
            let name = format!("inc-{}", index + 1);
            std::fs::write(manifests.join(format!("{name}.yaml")), manifest(&name, upn)).expect("manifest");
        }
        std::fs::write(dir.path().join("graph.secret"), SECRET).expect("secret file");
        let tls_yaml = if tls { "  tls:\n    certFile: api-cert.pem\n    keyFile: api-key.pem\n" } else { "" };
        let yaml = format!(
            "manifests:\n  path: {manifests}\n  debounce: 100ms\nguardrails:\n  allowedScopes: [\"OU=Tests,DC=x,DC=test\"]\n  \
             maxChangesPerReconcile: 2\nresync: \"0 0 * * * *\"\nstore:\n  path: {store}\n{entra}api:\n  \
             listen: \"127.0.0.1:0\"\n{tls_yaml}  tokens:\n{}{}",
            token_yaml("otto", "security-operator", OPERATOR),
            token_yaml("rita", "security-reader", READER),
            manifests = manifests.display(),
            store = dir.path().join("store").display(),
            entra = entra_yaml(TENANT, CLIENT_ID, "graph.secret", &sim.url(), Some("5s")),
        );
        let config = Config::from_yaml("remedy.yaml", &yaml).unwrap_or_else(|e| panic!("config: {e:?}\n{yaml}"));
        let (store, _) = Store::open(dir.path().join("store")).expect("store opens");
        let graph = GraphOptions {
            verify_delay: Duration::from_millis(100),
            retry: RetryPolicy {
                max_attempts: 2,
                max_elapsed: Duration::from_secs(1),
                base_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_millis(200),
            },
            ..GraphOptions::default()
        };
        let providers = Providers::with_graph_options(&config, dir.path(), graph).expect("providers");
        let settings = settings(&config, manifests.clone());
        let (watcher, events) = ManifestWatcher::start(manifests, config.manifests.debounce).expect("watcher starts");
        let bound = remedy::api::serve(&config.api, dir.path()).await.expect("the API listens");
        let (controller, handle) = Controller::new(settings, store.clone(), providers, Clock::System);
        let (stop, shutdown) = watch::channel(false);
        let state = ApiState {
            store,
            handle: handle.clone(),
            tokens: Arc::new(Tokens::new(&config.api.tokens)),
            notifications: Default::default(),
            ha: None,
        };
        let base = format!("{}://{}", if tls { "https" } else { "http" }, bound.address());
        let api = tokio::spawn(bound.run(remedy::api::router_with(state, options), shutdown.clone()));
        let controller = tokio::spawn(async move {
            controller.run(events, move || watcher.rescan(), shutdown).await.expect("the controller stops cleanly");
        });
        let daemon = Daemon { base, client: http_client(&[]), sim, handle, stop, controller, api, _dir: dir };
        if tokio::time::timeout(Duration::from_secs(10), daemon.handle.wait_for(|p| p.loaded && p.passes >= 1))
            .await
            .is_err()
        {
            panic!("no first reconcile within 10 s: {:#?}", daemon.handle.progress().borrow());
        }
        (daemon, ())
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(15), self.controller)
            .await
            .expect("controller stops")
            .expect("no panic");
        tokio::time::timeout(Duration::from_secs(5), self.api)
            .await
            .expect("the API stops")
            .expect("no panic")
            .expect("no I/O error");
    }

    /// The plan held for approval (the first pass holds it: three changes, two allowed).
    async fn held_plan(&self) -> String {
        let wait = self.handle.wait_for(|p| p.held_plan.is_some());
        tokio::time::timeout(Duration::from_secs(10), wait).await.expect("a plan is held within 10 s");
        self.handle.progress().borrow().held_plan.clone().expect("held").to_string()
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        headers: &[(&str, &str)],
        form: Option<&[(&str, &str)]>,
    ) -> Reply {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.parse().expect("method"), &url);
        if let Some(cookie) = cookie {
            request = request.header("Cookie", format!("remedy_session={cookie}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(form) = form {
            let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
            request = request.header("Content-Type", "application/x-www-form-urlencoded").body(body.join("&"));
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let headers = response.headers().clone();
        Reply {
            status: response.status().as_u16(),
            location: headers.get("location").and_then(|v| v.to_str().ok()).map(str::to_owned),
            set_cookie: headers
                .get_all("set-cookie")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(str::to_owned)
                .collect(),
            headers,
            text: response.text().await.expect("a body"),
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send("GET", path, cookie, &[], None).await
    }

    /// Signs in with `token`; the session id from the cookie.
    async fn sign_in(&self, token: &str) -> String {
        let reply = self.send("POST", "/ui/sign-in", None, &[], Some(&[("token", token)])).await;
        assert_eq!((reply.status, reply.location.as_deref()), (303, Some("/ui/")), "{reply:#?}");
        let cookie = reply.set_cookie.first().unwrap_or_else(|| panic!("no cookie: {reply:#?}"));
        let value =
            cookie.split(';').next().and_then(|pair| pair.strip_prefix("remedy_session=")).expect("the session cookie");
        value.to_owned()
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn assert_to_sign_in(reply: &Reply, what: &str) {
    assert_eq!((reply.status, reply.location.as_deref()), (303, Some("/ui/sign-in")), "{what}: {reply:#?}");
}

#[tokio::test]
async fn ui_sign_in_gives_an_http_only_strict_cookie_without_the_token_and_sign_out_ends_it() {
    let daemon = Daemon::start(UiOptions::default()).await;
    // No session: every page leads to the sign-in page, which needs no session.
    for path in ["/ui/", "/ui/history", "/ui/approvals", "/ui/health", "/ui/manifests/inc-1"] {
        assert_to_sign_in(&daemon.get(path, None).await, path);
    }
    assert_eq!(daemon.get("/ui", None).await.location.as_deref(), Some("/ui/"));
    let page = daemon.get("/ui/sign-in", None).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains("<label for=\"token\">"), "{}", page.text);

    // A token nobody was given: no session.
    let wrong = daemon.send("POST", "/ui/sign-in", None, &[], Some(&[("token", "not-a-token")])).await;
    assert_eq!(wrong.status, 401, "{wrong:#?}");
    assert!(wrong.set_cookie.is_empty(), "{wrong:#?}");

    let reply = daemon.send("POST", "/ui/sign-in", None, &[], Some(&[("token", OPERATOR)])).await;
    assert_eq!(reply.status, 303, "{reply:#?}");
    let cookie = &reply.set_cookie[0];
    let id = cookie.split(';').next().and_then(|p| p.strip_prefix("remedy_session=")).expect("session cookie");
    assert_eq!(id.len(), 64, "a 256-bit random id in hex: {cookie}");
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()), "{cookie}");
    assert!(!cookie.contains(OPERATOR), "the token is not in the cookie: {cookie}");
    let attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    assert_eq!(attributes, ["Path=/ui", "Max-Age=28800", "HttpOnly", "SameSite=Strict"], "plain HTTP: no Secure");

    let home = daemon.get("/ui/", Some(id)).await;
    assert_eq!(home.status, 200, "{home:#?}");
    assert!(home.text.contains("otto (security-operator)"), "{}", home.text);
    assert!(!home.text.contains(OPERATOR), "the token is not in the page");
    // Signed in, the sign-in page leads home.
    assert_eq!(daemon.get("/ui/sign-in", Some(id)).await.location.as_deref(), Some("/ui/"));

    // Signing out needs the CSRF token too; then the cookie is cleared and the session gone.
    let csrf = home.csrf();
    let refused = daemon.send("POST", "/ui/sign-out", Some(id), &[], Some(&[("csrf", "0")])).await;
    assert_eq!(refused.status, 403, "{refused:#?}");
    assert_eq!(daemon.get("/ui/", Some(id)).await.status, 200, "a refused sign-out ends nothing");
    let out = daemon.send("POST", "/ui/sign-out", Some(id), &[], Some(&[("csrf", &csrf)])).await;
    assert_to_sign_in(&out, "sign-out");
    assert!(out.set_cookie[0].starts_with("remedy_session=;") && out.set_cookie[0].contains("Max-Age=0"), "{out:#?}");
    assert_to_sign_in(&daemon.get("/ui/", Some(id)).await, "the signed-out session");
    assert_to_sign_in(&daemon.get("/ui/", Some(&"ab".repeat(32))).await, "an unknown session");
    daemon.stop().await;
}

#[tokio::test]
async fn ui_cookie_is_secure_on_a_tls_listener() {
    let daemon = Daemon::start_tls().await;
    let reply =
        daemon.send("POST", "/ui/sign-in", None, &[("Origin", daemon.base.as_str())], Some(&[("token", READER)])).await;
    assert_eq!(reply.status, 303, "{reply:#?}");
    assert!(reply.set_cookie[0].ends_with("; HttpOnly; SameSite=Strict; Secure"), "{reply:#?}");
    // Over TLS, an origin with the http scheme is another origin.
    let plain = daemon.base.replace("https://", "http://");
    let refused =
        daemon.send("POST", "/ui/sign-in", None, &[("Origin", plain.as_str())], Some(&[("token", READER)])).await;
    assert_eq!(refused.status, 403, "{refused:#?}");
    assert!(refused.set_cookie.is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn ui_every_answer_has_the_strict_csp_and_pages_are_not_stored() {
    let daemon = Daemon::start(UiOptions::default()).await;
    let id = daemon.sign_in(READER).await;
    assert_eq!(
        CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    );
    let pages =
        ["/ui/sign-in", "/ui/", "/ui/manifests/inc-1", "/ui/history", "/ui/approvals", "/ui/health", "/ui/nope"];
    for path in pages {
        let reply = daemon.get(path, Some(&id)).await;
        let expected = if path == "/ui/nope" {
            404
        } else if path == "/ui/sign-in" {
            303
        } else {
            200
        };
        assert_eq!(reply.status, expected, "{path}: {reply:#?}");
        assert_eq!(reply.header("content-security-policy"), Some(CONTENT_SECURITY_POLICY), "{path}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
        assert_eq!(reply.header("referrer-policy"), Some("same-origin"), "{path}");
        assert_eq!(reply.header("cache-control"), Some("no-store"), "{path}");
        if expected != 303 {
            assert!(reply.header("content-type").is_some_and(|t| t.starts_with("text/html")), "{path}");
            // No inline script or style, nothing from elsewhere: the CSP would refuse it.
            for inline in ["<script>", "<style", " style=", "onclick", "http://", "https://"] {
                assert!(!reply.text.contains(inline), "{path} holds {inline:?}: {}", reply.text);
            }
        }
    }
    for (path, content_type) in [("/ui/static/style.css", "text/css"), ("/ui/static/live.js", "text/javascript")] {
        let reply = daemon.get(path, None).await;
        assert_eq!(reply.status, 200, "{path}");
        assert!(reply.header("content-type").is_some_and(|t| t.starts_with(content_type)), "{path}: {reply:#?}");
        assert_eq!(reply.header("content-security-policy"), Some(CONTENT_SECURITY_POLICY), "{path}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"), "{path}");
    }
    // The API keeps its own answers: JSON errors, not pages.
    let api = daemon.get("/v1/manifests", None).await;
    assert_eq!(api.status, 401);
    assert!(api.header("content-security-policy").is_none(), "{api:#?}");
    daemon.stop().await;
}

#[tokio::test]
async fn ui_approve_needs_a_session_the_csrf_token_this_origin_and_a_role_that_acts() {
    let daemon = Daemon::start(UiOptions::default()).await;
    let plan = daemon.held_plan().await;
    let action = format!("/ui/approvals/{plan}");

    // A reader sees the held plan and no Approve button; the server refuses the reader anyway.
    let reader = daemon.sign_in(READER).await;
    let page = daemon.get("/ui/approvals", Some(&reader)).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains(&plan), "{}", page.text);
    assert!(
        !page.text.contains("Approve plan") && !page.text.contains(&format!("action=\"{action}\"")),
        "{}",
        page.text
    );
    let reader_csrf = page.csrf();
    let forged = daemon.send("POST", &action, Some(&reader), &[], Some(&[("csrf", &reader_csrf)])).await;
    assert_eq!(forged.status, 403, "{forged:#?}");
    assert!(forged.text.contains("may read but not act"), "{}", forged.text);

    let operator = daemon.sign_in(OPERATOR).await;
    let page = daemon.get("/ui/approvals", Some(&operator)).await;
    assert!(page.text.contains(&format!("action=\"{action}\"")) && page.text.contains("Approve plan"), "{}", page.text);
    let csrf = page.csrf();
    let zeros = "0".repeat(64);
    // (what, extra headers, form), each from the operator's session.
    let no_headers: Vec<(&str, &str)> = Vec::new();
    let refusals = [
        ("no CSRF token", no_headers.clone(), vec![("comment", "x")]),
        ("a wrong CSRF token", no_headers.clone(), vec![("csrf", zeros.as_str())]),
        ("another session's CSRF token", no_headers, vec![("csrf", reader_csrf.as_str())]),
        ("another origin", vec![("Origin", "http://evil.test")], vec![("csrf", csrf.as_str())]),
        ("another site's page", vec![("Referer", "http://evil.test/ui/")], vec![("csrf", csrf.as_str())]),
    ];
    for (what, headers, form) in &refusals {
        let reply = daemon.send("POST", &action, Some(&operator), headers, Some(form)).await;
        assert_eq!(reply.status, 403, "{what}: {reply:#?}");
    }
    assert_to_sign_in(&daemon.send("POST", &action, None, &[], Some(&[("csrf", &csrf)])).await, "no session");
    assert_eq!(daemon.handle.progress().borrow().held_plan.as_ref().map(ToString::to_string), Some(plan.clone()));
    assert!(THREE.iter().all(|upn| daemon.sim.user(upn).expect("user").account_enabled), "nothing applied yet");

    let origin = daemon.base.clone();
    let approved = daemon
        .send(
            "POST",
            &action,
            Some(&operator),
            &[("Origin", origin.as_str())],
            Some(&[("csrf", &csrf), ("comment", "INC-1 ok")]),
        )
        .await;
    assert_eq!((approved.status, approved.location.clone()), (303, Some(format!("/ui/approvals?approved={plan}"))));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while THREE.iter().any(|upn| daemon.sim.user(upn).expect("user").account_enabled) {
        assert!(tokio::time::Instant::now() < deadline, "the approved plan was not applied within 15 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = daemon.get("/ui/history", Some(&reader)).await;
    assert!(history.text.contains(&format!("plan {plan} approved by otto: INC-1 ok")), "{}", history.text);
    daemon.stop().await;
}

#[tokio::test]
async fn ui_escapes_what_manifests_and_requests_say() {
    let daemon = Daemon::start(UiOptions::default()).await;
    daemon.held_plan().await;
    let id = daemon.sign_in(READER).await;
    let escaped = "&lt;script&gt;alert(&#39;owned&#39;)&lt;/script&gt; &amp; &quot;quoted&quot;";
    for path in ["/ui/history", "/ui/manifests/inc-1", "/ui/approvals"] {
        let page = daemon.get(path, Some(&id)).await;
        assert_eq!(page.status, 200, "{path}");
        assert!(page.text.contains(escaped), "{path}: the reason is shown, escaped: {}", page.text);
        assert!(!page.text.contains("<script>alert"), "{path}: {}", page.text);
    }
    // A filter value comes back in the form, escaped.
    let page = daemon.get("/ui/history?manifest=inc-1&identity=%22%3E%3Cscript%3E", Some(&id)).await;
    assert_eq!(page.status, 400, "not an identity");
    assert!(page.text.contains("value=\"&quot;&gt;&lt;script&gt;\""), "{}", page.text);
    assert!(!page.text.contains("\"><script>"), "{}", page.text);
    daemon.stop().await;
}

#[tokio::test]
async fn ui_sessions_expire_on_the_server() {
    let daemon = Daemon::start(UiOptions { session_lifetime: Duration::from_secs(1) }).await;
    let id = daemon.sign_in(READER).await;
    assert_eq!(daemon.get("/ui/", Some(&id)).await.status, 200);
    assert_eq!(daemon.get("/ui/history/feed?after=0", Some(&id)).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    // The browser would still send the cookie: the server refuses it.
    assert_to_sign_in(&daemon.get("/ui/", Some(&id)).await, "an expired session");
    assert_eq!(daemon.get("/ui/history/feed?after=0", Some(&id)).await.status, 401, "the live feed answers 401");
    daemon.stop().await;
}

#[tokio::test]
async fn ui_pages_show_held_manifests_and_the_live_feed_only_newer_records() {
    let daemon = Daemon::start(UiOptions::default()).await;
    let plan = daemon.held_plan().await;
    let id = daemon.sign_in(READER).await;
    let list = daemon.get("/ui/", Some(&id)).await;
    for name in ["inc-1", "inc-2", "inc-3"] {
        assert!(list.text.contains(&format!("<a href=\"/ui/manifests/{name}\">{name}</a>")), "{}", list.text);
    }
    assert_eq!(list.text.matches("<span class=\"badge warn\">Held</span>").count(), 3, "{}", list.text);
    let one = daemon.get("/ui/manifests/inc-2", Some(&id)).await;
    assert!(one.text.contains("upn:b@x.test") && one.text.contains(&plan), "{}", one.text);
    let health = daemon.get("/ui/health", Some(&id)).await;
    assert!(health.text.contains("<span class=\"badge good\">Verified</span>"), "{}", health.text);
    assert!(health.text.contains("entra-id"), "{}", health.text);

    let feed = daemon.get("/ui/history/feed?after=0&outcome=held", Some(&id)).await;
    let body: serde_json::Value = serde_json::from_str(&feed.text).expect("JSON");
    let rows = body["rows"].as_array().expect("rows");
    assert!(rows.len() >= 3 && rows.iter().all(|r| r["outcome"] == "held"), "{body:#}");
    let newest = rows[0]["id"].as_u64().expect("id");
    let later = daemon.get(&format!("/ui/history/feed?after={newest}&outcome=held"), Some(&id)).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&later.text).expect("JSON")["rows"], serde_json::json!([]));
    daemon.stop().await;
}
