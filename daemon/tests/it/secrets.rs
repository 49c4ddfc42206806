//! No secret is ever written anywhere an operator or an attacker with read access could see it.
//!
//! The real `remedy serve` (a child process, `REMEDY_LOG=trace`, text and JSON logs) reconciles
//! real accounts of the Samba DC and graph-sim users with known secrets: the AD action account's
//! password, the test users' passwords, Entra's client secret, the API tokens. Then it runs again
//! with a wrong AD password and a wrong client secret (bind and token errors), and the operator
//! commands and the HTTP API are driven, a wrong token included. None of the secrets, nor any
//! access token graph-sim issued, may appear in the daemon's logs, the commands' output, the API's
//! answers, the store's records or the store's raw files.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remedy::store::Store;
use remedy_graph_sim::{Sim, SimConfig, SimUser};
use tokio::process::Command;

use crate::support::dc::{self, Dc, TestUser};
use crate::support::serve::{Serve, Tokens, Who};
use crate::support::{entra_yaml, free_port, http_client, write_private};

const TENANT: &str = "5ec2e75a-0000-4000-8000-00000000c0de";
const CLIENT_ID: &str = "5ec2e75a-0000-4000-8000-0000000a9902";
const OPERATOR: &str = "ops-sam";
const READER: &str = "reader-rosa";
/// What every access token graph-sim issues starts with (then 64 letters and digits).
const GRAPH_TOKEN_PREFIX: &[u8] = b"graph-sim.";
/// Every remediation the two providers have.
const EVERYTHING: &str = "  activeDirectory:\n    disabled: true\n    mustChangePassword: true\n  entraId:\n    \
                          suspended: true\n    revokeSessions: true\n";

/// A secret nobody could mistake for anything else.
fn distinctive(prefix: &str) -> String {
    format!("{prefix}-{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

fn manifest(name: &str, target: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"{name}: \
         password spray, then a new MFA method\"\n  target:\n    {target}\n{EVERYTHING}"
    )
}

/// Everything that was printed or answered, by where it came from.
#[derive(Default)]
struct Seen(Vec<(String, Vec<u8>)>);

impl Seen {
    fn add(&mut self, origin: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.0.push((origin.into(), bytes.into()));
    }

    /// The origins where `needle` occurs.
    fn containing(&self, needle: &[u8]) -> Vec<&str> {
        self.0.iter().filter(|(_, bytes)| contains(bytes, needle)).map(|(origin, _)| origin.as_str()).collect()
    }

    /// The origins that hold something shaped like a graph-sim access token.
    fn with_access_tokens(&self) -> Vec<&str> {
        self.0.iter().filter(|(_, bytes)| has_access_token(bytes)).map(|(origin, _)| origin.as_str()).collect()
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn has_access_token(bytes: &[u8]) -> bool {
    (0..bytes.len()).filter(|&i| bytes[i..].starts_with(GRAPH_TOKEN_PREFIX)).any(|i| {
        let rest = &bytes[i + GRAPH_TOKEN_PREFIX.len()..];
        rest.len() >= 64 && rest[..64].iter().all(u8::is_ascii_alphanumeric)
    })
}

/// One run of `remedy serve` at trace level, its API on `port`; killed if the test ends without
/// stopping it.
struct Run {
    serve: Serve,
    port: u16,
}

impl Run {
    async fn start(config: &Path, log: PathBuf, port: u16, json: bool) -> Run {
        let mut serve = Serve::start(config, log, "trace", json);
        serve.wait_for_port(port, Duration::from_secs(20)).await;
        Run { serve, port }
    }

    fn log(&self) -> String {
        self.serve.log()
    }

    /// The log without others' trace and debug lines (for messages).
    fn notable_log(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> =
            log.lines().filter(|l| l.contains("remedy") || !(l.contains("TRACE") || l.contains("DEBUG"))).collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    fn server(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_for_log(&mut self, text: &str, timeout: Duration) {
        self.serve.wait_for_log(text, timeout).await;
    }

    /// SIGTERM; waits for a clean exit and returns the log.
    async fn stop(mut self) -> String {
        let status = self.serve.terminate(Duration::from_secs(20)).await;
        assert!(status.success(), "remedy serve exits 0 on SIGTERM ({status}):\n{}", self.log());
        // Under REMEDY_LOG=trace too: sled's debug and trace records could abort it on exit.
        let log = self.log();
        let sled_below_info =
            log.lines().find(|l| l.contains("sled::") && (l.contains("TRACE") || l.contains("DEBUG")));
        assert_eq!(sled_below_info, None, "sled is held at info whatever REMEDY_LOG says");
        log
    }
}

/// `remedy ARGS` as `who` against `serve` (also at trace level); what it printed goes into `seen`.
async fn remedy(seen: &mut Seen, serve: &Run, tokens: &Tokens, who: Who, args: &[&str], code: i32) -> String {
    let mut command = tokens.command(&serve.server(), who, args);
    command.env("REMEDY_LOG", "trace").stdin(Stdio::null());
    let mut command = Command::from(command);
    command.kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .unwrap_or_else(|_| panic!("remedy {} did not finish within 60 s", args.join(" ")))
        .expect("remedy runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let origin = format!("`remedy {}` as {who:?}", args.join(" "));
    seen.add(format!("{origin} (stdout)"), output.stdout);
    seen.add(format!("{origin} (stderr)"), output.stderr);
    assert_eq!(
        output.status.code(),
        Some(code),
        "{origin}\nstdout:\n{stdout}\nstderr:\n{stderr}\nthe daemon's log (info and up):\n{}",
        serve.notable_log()
    );
    format!("{stdout}{stderr}")
}

/// `METHOD path` with `token` (if any); the status line, headers and body go into `seen`.
async fn call(seen: &mut Seen, serve: &Run, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let method_value = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
    let mut request = http_client(&[]).request(method_value, format!("{}{path}", serve.server()));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let headers = format!("{:?}", response.headers());
    let body = response.text().await.expect("a body");
    seen.add(format!("{method} {path} (status {status}, headers)"), headers);
    seen.add(format!("{method} {path} (status {status}, body)"), body.clone());
    (status, body)
}

/// Every file below `dir`.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

struct Setup<'a> {
    dc: &'a Dc,
    dir: &'a Path,
    sim_url: &'a str,
    tokens: &'a Tokens,
}

/// A webhook receiver on loopback that answers 500 to its first two requests, then 200; returns
/// its port and how many requests it accepted.
async fn notification_receiver() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let port = listener.local_addr().expect("address").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (seen, done) = (Arc::clone(&requests), Arc::clone(&accepted));
    let app = axum::Router::new().fallback(move || {
        let (seen, done) = (Arc::clone(&seen), Arc::clone(&done));
        async move {
            if seen.fetch_add(1, Ordering::SeqCst) < 2 {
                axum::http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                done.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::OK
            }
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, accepted)
}

impl Setup<'_> {
    /// `remedy.yaml` for one run: the action account's password and the client secret from the
    /// files given, the API on `port`.
    fn config(&self, name: &str, password_file: &Path, secret_file: &Path, port: u16) -> PathBuf {
        let yaml = format!(
            "manifests:\n  path: manifests\n  debounce: 100ms\nguardrails:\n  allowedScopes: [\"{tests_ou}\"]\n  \
             maxChangesPerReconcile: 100\nresync: \"0 0 * * * *\"\nstore:\n  path: store\n{ad}{entra}api:\n  \
             listen: 127.0.0.1:{port}\n  tokens:\n{tokens}notifications:\n  - {{name: soc, kind: webhook, urlFile: \
             notify.url, hmacSecretFile: notify.key}}\n  - {{name: chat, kind: teams, urlFile: notify-teams.url}}\n",
            tests_ou = self.dc.env().tests_ou,
            ad = self.dc.active_directory_yaml(password_file, 2),
            entra = entra_yaml(TENANT, CLIENT_ID, secret_file.display(), self.sim_url, Some("5s")),
            tokens = self.tokens.yaml(),
        );
        let path = self.dir.join(name);
        std::fs::write(&path, yaml).expect("remedy.yaml");
        path
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_secret_or_token_appears_in_logs_output_answers_or_the_store() {
    let dc = Dc::shared().await;
    let started = Instant::now();
    let env = dc.env();
    let ou = dc.ou("secrets").await;
    let mut users: Vec<TestUser> = Vec::new();
    for name in ["s1", "s2", "s3", "s4", "s5"] {
        users.push(ou.add_user(name, 0x200).await);
    }
    // mustChangePassword counts a password set in the second the manifest took effect (times are
    // whole seconds) as changed after it: let that second pass before the manifests arrive.
    let subsec = chrono::Utc::now().timestamp_subsec_millis();
    tokio::time::sleep(Duration::from_millis(u64::from(1100 - subsec.min(999)))).await;
    let action_password = dc::read_password(&env.action_password_file);
    assert!(action_password.len() >= 8, "the action account's password is too short to search for");

    let client_secret = distinctive("CliSecret~Known");
    let wrong_client_secret = distinctive("CliSecret~Wrong");
    let wrong_ad_password = distinctive("AdPassword-Wrong");
    let dir = tempfile::tempdir().expect("temporary directory");
    // Not beside the manifest directory: the watcher watches its parent, and notify's trace lines
    // about a log file written there would be written to that log file, and so on.
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("log directory");
    let tokens = Tokens::write(
        dir.path(),
        (OPERATOR, &distinctive("op-token")),
        (READER, &distinctive("rd-token")),
        &distinctive("unknown-token"),
    );
    let secret_file = dir.path().join("client.secret");
    write_private(&secret_file, &format!("{client_secret}\n"));
    let wrong_secret_file = dir.path().join("wrong-client.secret");
    write_private(&wrong_secret_file, &format!("{wrong_client_secret}\n"));
    let wrong_password_file = dir.path().join("wrong-ad.password");
    write_private(&wrong_password_file, &format!("{wrong_ad_password}\n"));

    // Notification sinks whose URLs carry a token (path and query, as Slack's and Teams' do), and
    // a webhook's HMAC key.
    let (notify_port, notifications_accepted) = notification_receiver().await;
    let url_token = distinctive("HookToken");
    let query_token = distinctive("HookSig");
    let hmac_key = distinctive("whsec");
    write_private(&dir.path().join("notify.url"), &format!("http://127.0.0.1:{notify_port}/hooks/{url_token}\n"));
    write_private(
        &dir.path().join("notify-teams.url"),
        &format!("http://127.0.0.1:{notify_port}/workflows/run?api-version=1&sig={query_token}\n"),
    );
    write_private(&dir.path().join("notify.key"), &format!("{hmac_key}\n"));

    let sim_config = SimConfig {
        users: users.iter().map(|u| SimUser::new(&u.upn)).collect(),
        ..SimConfig::new(TENANT, CLIENT_ID, client_secret.as_str())
    };
    let sim: Sim = remedy_graph_sim::spawn(sim_config).await.expect("graph-sim starts");
    let sim_url = sim.url();
    let setup = Setup { dc: &dc, dir: dir.path(), sim_url: &sim_url, tokens: &tokens };

    // Accounts named both ways (by sAMAccountName: Entra ID is found through AD's UPN), one that
    // does not exist, and a file that is not a valid manifest.
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).expect("manifest directory");
    let write = |name: &str, target: String| {
        std::fs::write(manifests.join(format!("{name}.yaml")), manifest(name, &target)).expect("manifest");
    };
    write("inc-1-s1", format!("samAccountName: {}", users[0].sam));
    write("inc-2-s2", format!("userPrincipalName: {}", users[1].upn));
    write("inc-3-s3", format!("samAccountName: {}", users[2].sam));
    write("inc-4-ghost", format!("samAccountName: ghost-{}", ou.suffix));
    std::fs::write(
        manifests.join("inc-5-broken.yaml"),
        manifest("inc-5-broken", &format!("samAccountName: {}", users[3].sam))
            .replace("disabled: true", "disabled: maybe"),
    )
    .expect("manifest");
    let mut seen = Seen::default();
    let prepared = started.elapsed();

    // Run 1: text logs at trace level, the right secrets; every command and endpoint.
    let port = free_port();
    let config = setup.config("run-1.yaml", &env.action_password_file, &secret_file, port);
    let serve = Run::start(&config, logs.join("run-1.log"), port, false).await;
    for name in ["inc-1-s1", "inc-2-s2", "inc-3-s3"] {
        let out =
            remedy(&mut seen, &serve, &tokens, Who::Operator, &["status", name, "--wait", "--timeout", "30s"], 0).await;
        assert!(out.contains("Succeeded"), "{out}");
    }
    let out = remedy(&mut seen, &serve, &tokens, Who::Reader, &["status"], 0).await;
    assert!(out.contains("inc-4-ghost") && out.contains("NotFound"), "{out}");
    remedy(&mut seen, &serve, &tokens, Who::Reader, &["status", "-o", "json"], 0).await;
    remedy(&mut seen, &serve, &tokens, Who::Reader, &["status", "inc-4-ghost", "-o", "yaml"], 0).await;
    let out = remedy(&mut seen, &serve, &tokens, Who::Reader, &["history", "-o", "json"], 0).await;
    for action in ["disable-account", "force-password-change", "suspend-user", "revoke-sessions"] {
        assert!(out.contains(action), "no {action} in the history:\n{out}");
    }
    remedy(&mut seen, &serve, &tokens, Who::Reader, &["history"], 0).await;
    let out = remedy(&mut seen, &serve, &tokens, Who::Reader, &["history", "verify"], 0).await;
    assert!(out.starts_with("verified "), "{out}");
    let out = remedy(
        &mut seen,
        &serve,
        &tokens,
        Who::OperatorEnv,
        &["reconcile", "inc-1-s1", "--wait", "--timeout", "30s"],
        0,
    )
    .await;
    assert!(out.contains(&format!("requested by {OPERATOR}")), "{out}");
    let out =
        remedy(&mut seen, &serve, &tokens, Who::Operator, &["approve", "0123456789abcdef0123456789abcdef"], 1).await;
    assert!(out.contains("409 conflict"), "{out}");
    let out = remedy(&mut seen, &serve, &tokens, Who::Reader, &["reconcile", "inc-2-s2"], 1).await;
    assert!(out.contains("403 forbidden"), "{out}");
    let out = remedy(&mut seen, &serve, &tokens, Who::Stranger, &["status"], 2).await;
    assert!(out.contains("401 unauthorized"), "{out}");
    let out =
        remedy(&mut seen, &serve, &tokens, Who::Stranger, &["approve", "0123456789abcdef0123456789abcdef"], 2).await;
    assert!(out.contains("401 unauthorized"), "{out}");
    let (status, metrics) = call(&mut seen, &serve, "GET", "/metrics", Some(&tokens.reader)).await;
    assert_eq!(status, 200, "{metrics}");
    assert!(metrics.contains("remedy_"), "{metrics}");
    for path in ["/v1/manifests", "/v1/manifests/inc-4-ghost", "/v1/history", "/v1/history/verify", "/v1/history/1"] {
        let (status, body) = call(&mut seen, &serve, "GET", path, Some(&tokens.reader)).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    for path in ["/readyz", "/healthz"] {
        call(&mut seen, &serve, "GET", path, None).await;
    }
    for (method, path) in [("GET", "/metrics"), ("GET", "/v1/history"), ("POST", "/v1/reconcile")] {
        let (status, body) = call(&mut seen, &serve, method, path, Some(&tokens.wrong)).await;
        assert_eq!(status, 401, "{method} {path} with an unknown token: {body}");
        assert!(body.contains("unknown token"), "{body}");
    }
    // The client secret and the action account's password, sent as bearer tokens by mistake.
    for token in [&client_secret, &action_password] {
        let (status, _) = call(&mut seen, &serve, "GET", "/v1/manifests", Some(token)).await;
        assert_eq!(status, 401);
    }
    let (status, _) = call(&mut seen, &serve, "POST", "/v1/approvals/not-a-plan", Some(&tokens.operator)).await;
    assert_eq!(status, 400);
    let log_1 = serve.stop().await;
    let mut ldap = dc.admin().await;
    for user in &users[..3] {
        let state = dc::read_user(&mut ldap, &user.dn).await;
        assert_eq!(state.user_account_control & 2, 2, "{} disabled in AD", user.sam);
        assert_eq!(state.pwd_last_set, 0, "{} must change the password", user.sam);
        assert!(!sim.user(&user.upn).expect("in Entra").account_enabled, "{} suspended in Entra ID", user.upn);
    }
    let run_1 = started.elapsed();

    // Run 2: JSON logs, a manifest arrives while it runs.
    let port = free_port();
    let config = setup.config("run-2.yaml", &env.action_password_file, &secret_file, port);
    let serve = Run::start(&config, logs.join("run-2.log"), port, true).await;
    write("inc-6-s4", format!("userPrincipalName: {}", users[3].upn));
    remedy(&mut seen, &serve, &tokens, Who::Reader, &["status", "inc-6-s4", "--wait", "--timeout", "30s"], 0).await;
    remedy(&mut seen, &serve, &tokens, Who::Reader, &["history", "--manifest", "inc-6-s4", "-o", "json"], 0).await;
    remedy(&mut seen, &serve, &tokens, Who::Operator, &["--log-format", "json", "status"], 0).await;
    call(&mut seen, &serve, "GET", "/metrics", Some(&tokens.operator)).await;
    let log_2 = serve.stop().await;
    let run_2 = started.elapsed();

    // Run 3: a wrong AD password and a wrong client secret; what is unavailable, and why.
    let port = free_port();
    let config = setup.config("run-3.yaml", &wrong_password_file, &wrong_secret_file, port);
    write("inc-7-s5", format!("userPrincipalName: {}", users[4].upn));
    let mut serve = Run::start(&config, logs.join("run-3.log"), port, false).await;
    serve.wait_for_log("cannot connect to Active Directory", Duration::from_secs(20)).await;
    serve.wait_for_log("token request refused", Duration::from_secs(20)).await;
    serve.wait_for_log("reconciled", Duration::from_secs(20)).await;
    let out = remedy(&mut seen, &serve, &tokens, Who::Reader, &["status", "-o", "json"], 0).await;
    assert!(out.contains("ProviderUnavailable") || out.contains("provider-unavailable"), "{out}");
    remedy(&mut seen, &serve, &tokens, Who::Reader, &["status", "inc-7-s5", "-o", "yaml"], 0).await;
    remedy(&mut seen, &serve, &tokens, Who::Reader, &["history", "-o", "json"], 0).await;
    remedy(&mut seen, &serve, &tokens, Who::Operator, &["reconcile", "inc-7-s5"], 0).await;
    let (status, readyz) = call(&mut seen, &serve, "GET", "/readyz", None).await;
    assert_eq!(status, 503, "{readyz}");
    assert!(readyz.contains("active-directory") && readyz.contains("entra-id"), "{readyz}");
    call(&mut seen, &serve, "GET", "/metrics", Some(&tokens.reader)).await;
    call(&mut seen, &serve, "GET", "/v1/manifests", Some(&tokens.reader)).await;
    // The providers' unavailability is notified: refused twice, then delivered.
    serve.wait_for_log("notification delivered", Duration::from_secs(30)).await;
    call(&mut seen, &serve, "GET", "/readyz", None).await;
    let log_3 = serve.stop().await;
    assert!(notifications_accepted.load(std::sync::atomic::Ordering::SeqCst) >= 1, "notifications were delivered");
    let run_3 = started.elapsed();

    // The store, as the daemon left it: every record and status, and its raw files.
    let store_dir = dir.path().join("store");
    let (store, _) = Store::open(&store_dir).expect("store opens");
    let records = crate::support::daemon::all_history(&store);
    let statuses = store.list_status().expect("statuses readable");
    let known = store.known_manifests().expect("known manifests readable");
    let unsettled = store.unsettled().expect("journal readable");
    assert!(records.len() >= 16, "the runs acted and were recorded: {records:#?}");
    assert!(statuses.len() >= 6, "{statuses:#?}");
    let errors_recorded = serde_json::to_string(&statuses).expect("JSON");
    assert!(errors_recorded.contains("LDAP 49"), "the wrong password's bind failure is in a status: {errors_recorded}");
    seen.add("store: history", serde_json::to_string_pretty(&records).expect("JSON"));
    seen.add("store: statuses", serde_json::to_string_pretty(&statuses).expect("JSON"));
    seen.add("store: known manifests", serde_json::to_string_pretty(&known).expect("JSON"));
    seen.add("store: Debug of everything", format!("{records:?}{statuses:?}{known:?}{unsettled:?}"));
    drop(store);
    let store_files = files(&store_dir);
    assert!(!store_files.is_empty(), "the store has files");
    for file in &store_files {
        seen.add(format!("store file {}", file.display()), std::fs::read(file).expect("store file readable"));
    }

    // The logs say what happened, so that finding no secret in them means something.
    for (run, log) in [("run 1", &log_1), ("run 2", &log_2), ("run 3", &log_3)] {
        assert!(log.contains("reconciled"), "{run} logged no reconcile:\n{log}");
        assert!(log.contains(&env.action_bind), "{run} does not name the bind user:\n{log}");
        assert!(log.contains("TRACE"), "{run} is not at trace level:\n{log}");
    }
    assert!(log_1.contains("connected to Active Directory"), "{log_1}");
    assert!(log_1.contains("inc-5-broken"), "the invalid manifest is logged:\n{log_1}");
    assert!(log_2.lines().all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()), "JSON lines:\n{log_2}");
    assert!(log_3.contains("LDAP 49 (invalidCredentials)"), "run 3 logged no bind failure:\n{log_3}");
    assert!(log_3.contains("invalid_client"), "run 3 logged no token refusal:\n{log_3}");
    let log_bytes = log_1.len() + log_2.len() + log_3.len();
    seen.add("run 1 log (text)", log_1);
    seen.add("run 2 log (JSON)", log_2);
    seen.add("run 3 log (wrong secrets)", log_3);

    let mut secrets: Vec<(String, &str)> = vec![
        ("the AD action account's password".into(), &action_password),
        ("the client secret".into(), &client_secret),
        ("the wrong client secret".into(), &wrong_client_secret),
        ("the wrong AD password".into(), &wrong_ad_password),
        ("the operator's token".into(), &tokens.operator),
        ("the reader's token".into(), &tokens.reader),
        ("the unknown token".into(), &tokens.wrong),
        ("the notification URL's token".into(), &url_token),
        ("the Teams URL's signature".into(), &query_token),
        ("the webhook's HMAC key".into(), &hmac_key),
    ];
    for user in &users {
        secrets.push((format!("{}'s password", user.sam), &user.password));
    }
    let mut leaks = Vec::new();
    for (what, secret) in &secrets {
        for origin in seen.containing(secret.as_bytes()) {
            leaks.push(format!("{what} in {origin}"));
        }
    }
    for origin in seen.with_access_tokens() {
        leaks.push(format!("a Graph access token in {origin}"));
    }
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));

    println!(
        "searched {} secrets (and graph-sim access tokens) in {} outputs ({} KiB of daemon logs, {} history \
         records, {} statuses, {} store files): none found. Setup {:.1} s, run 1 {:.1} s, run 2 {:.1} s, run 3 \
         {:.1} s, total {:.1} s",
        secrets.len(),
        seen.0.len(),
        log_bytes / 1024,
        records.len(),
        statuses.len(),
        store_files.len(),
        prepared.as_secs_f64(),
        (run_1 - prepared).as_secs_f64(),
        (run_2 - run_1).as_secs_f64(),
        (run_3 - run_2).as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    drop(ldap);
    drop(ou);
}
