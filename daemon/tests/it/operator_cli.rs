//! The operator commands (`status`, `history`, `reconcile`, `approve`) as an operator runs them:
//! the real `remedy` binary against a real `remedy serve` (a child process) whose Entra ID is the
//! Graph simulator (in-process, loopback HTTP). No Active Directory: the manifests suspend cloud
//! users by userPrincipalName.
//!
//! Every command's output, and the daemon's log, is kept and checked for the tokens at the end.

use std::cell::RefCell;
use std::io::{BufRead, BufReader};
use std::process::{Command as StdCommand, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use remedy_graph_sim::{spawn, Sim, SimConfig, SimUser};
use serde_json::Value;

use crate::support::serve::{Serve, Tokens, Who};
use crate::support::{condition, entra_yaml, free_port, write_private};

const TENANT: &str = "11111111-2222-3333-4444-555555555555";
const CLIENT_ID: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
const SECRET: &str = "s3cret~Value.only-in-the-file";
const OPERATOR_TOKEN: &str = "op-7f3c9a1e5b2d4c6f8a0b1c2d3e4f5a6b";
const READER_TOKEN: &str = "rd-1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d";
const WRONG_TOKEN: &str = "wrong-9e8d7c6b5a4f3e2d1c0b9a8f7e6d";
const OPERATOR: &str = "ops-olivia";
const READER: &str = "reader-rita";

/// What a command did.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// The simulator and `remedy serve`, in a directory of their own.
struct Daemon {
    // First: `remedy serve` is killed (if the test did not stop it) before its directory goes.
    serve: Serve,
    sim: Sim,
    // Declared after `sim`: the simulator's server stops before its runtime goes.
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    server: String,
    tokens: Tokens,
    /// Everything the commands printed.
    outputs: RefCell<Vec<String>>,
}

fn manifest(name: &str, upn: &str) -> String {
    format!(
        "apiVersion: remedy.dev/v1\nkind: Remediation\nmetadata:\n  name: {name}\nspec:\n  reason: \"{name}: \
         sign-ins from an anonymising proxy\"\n  target:\n    userPrincipalName: {upn}\n  entraId:\n    \
         suspended: true\n"
    )
}

impl Daemon {
    /// Starts the simulator with `users`, writes the manifests, and starts `remedy serve`.
    fn start(users: &[&str], manifests: &[(&str, &str)], max_changes: usize) -> Daemon {
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
        let config = SimConfig {
            users: users.iter().map(|u| SimUser::new(*u)).collect(),
            ..SimConfig::new(TENANT, CLIENT_ID, SECRET)
        };
        let sim = runtime.block_on(spawn(config)).expect("simulator starts");
        let dir = tempfile::tempdir().expect("temporary directory");
        write_private(&dir.path().join("client-secret"), &format!("{SECRET}\n"));
        let tokens = Tokens::write(dir.path(), (OPERATOR, OPERATOR_TOKEN), (READER, READER_TOKEN), WRONG_TOKEN);
        std::fs::create_dir(dir.path().join("manifests")).expect("mkdir");
        for (name, upn) in manifests {
            std::fs::write(dir.path().join("manifests").join(format!("{name}.yaml")), manifest(name, upn))
                .expect("manifest");
        }
        let port = free_port();
        let config = format!(
            "manifests:\n  path: manifests\n  debounce: 100ms\nguardrails:\n  allowedScopes: [\"OU=Staff,DC=remedy,DC=test\"]\n  \
             maxChangesPerReconcile: {max_changes}\n{entra}resync: \"0 0 * * * *\"\nstore:\n  path: store\napi:\n  \
             listen: 127.0.0.1:{port}\n  tokens:\n{tokens}",
            entra = entra_yaml(TENANT, CLIENT_ID, "client-secret", &sim.url(), Some("10s")),
            tokens = tokens.yaml(),
        );
        let config_path = dir.path().join("remedy.yaml");
        std::fs::write(&config_path, config).expect("remedy.yaml");
        let mut serve = Serve::start(&config_path, dir.path().join("serve.log"), "info", false);
        runtime.block_on(serve.wait_for_port(port, Duration::from_secs(30)));
        Daemon {
            serve,
            sim,
            runtime,
            dir,
            server: format!("http://127.0.0.1:{port}"),
            tokens,
            outputs: RefCell::new(Vec::new()),
        }
    }

    fn log(&self) -> String {
        self.serve.log()
    }

    /// `remedy ARGS` as `who`, against this daemon.
    fn command(&self, who: Who, args: &[&str]) -> Command {
        let mut command = Command::from_std(self.std_command(who, args));
        command.timeout(Duration::from_secs(60));
        command
    }

    fn std_command(&self, who: Who, args: &[&str]) -> StdCommand {
        self.tokens.command(&self.server, who, args)
    }

    /// Runs `remedy ARGS` as `who` with its standard output a pipe that is closed before it writes
    /// (`remedy ARGS | head -0`); returns its exit code and standard error.
    fn run_into_closed_pipe(&self, who: Who, args: &[&str]) -> (i32, String) {
        let mut child = self
            .std_command(who, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("remedy runs");
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("remedy ends");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        self.outputs.borrow_mut().push(stderr.clone());
        (output.status.code().expect("exited, not killed by a signal"), stderr)
    }

    /// Runs `remedy ARGS` as `who` and keeps what it printed.
    fn run(&self, who: Who, args: &[&str]) -> Out {
        let output = self.command(who, args).output().expect("remedy runs");
        let out = Out {
            code: output.status.code().expect("exited"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        self.outputs.borrow_mut().push(format!("{}{}", out.stdout, out.stderr));
        out
    }

    /// Runs `remedy ARGS` and checks its exit code.
    fn expect(&self, who: Who, args: &[&str], code: i32) -> Out {
        let out = self.run(who, args);
        assert_eq!(out.code, code, "remedy {}\nstdout:\n{}\nstderr:\n{}", args.join(" "), out.stdout, out.stderr);
        out
    }

    /// Stops the daemon with SIGTERM; asserts no token was ever printed by a command or the daemon.
    /// `kill -9` of `remedy serve`, and a new one on the same configuration and store.
    fn kill_9_and_restart(&mut self) {
        self.serve.kill_9();
        let port: u16 = self.server.rsplit(':').next().and_then(|p| p.parse().ok()).expect("the API's port");
        let config = self.dir.path().join("remedy.yaml");
        self.serve = Serve::start(&config, self.dir.path().join("serve-restarted.log"), "info", false);
        self.runtime.block_on(self.serve.wait_for_port(port, Duration::from_secs(30)));
    }

    fn stop(mut self) {
        let status = self.runtime.block_on(self.serve.terminate(Duration::from_secs(20)));
        assert!(status.success(), "remedy serve exited with {status}:\n{}", self.log());
        let mut everything = self.outputs.borrow().join("\n");
        everything.push_str(&self.log());
        for token in [OPERATOR_TOKEN, READER_TOKEN, WRONG_TOKEN] {
            assert!(!everything.contains(token), "a token was printed:\n{everything}");
        }
    }
}

/// The records of `remedy history -o json` that are of `kind`.
fn of_kind<'a>(records: &'a Value, kind: &str) -> Vec<&'a Value> {
    records.as_array().expect("an array").iter().filter(|r| r["event"]["kind"] == kind).collect()
}

#[test]
fn status_history_reconcile_and_refusals_against_a_running_daemon() {
    let daemon = Daemon::start(
        &["alice@remedy.test", "bob@remedy.test"],
        &[("inc-1-alice", "alice@remedy.test"), ("inc-2-ghost", "ghost@remedy.test")],
        25,
    );

    // status NAME --wait: converges.
    let out = daemon.expect(Who::Operator, &["status", "inc-1-alice", "--wait", "--timeout", "30s"], 0);
    assert!(out.stdout.starts_with("NAME"), "{}", out.stdout);
    assert!(out.stdout.contains("inc-1-alice") && out.stdout.contains("Succeeded"), "{}", out.stdout);
    assert!(!daemon.sim.user("alice@remedy.test").expect("alice").account_enabled, "alice is suspended");
    assert!(out.stderr.is_empty(), "no progress line in a pipe: {}", out.stderr);

    // The table: every manifest, one line each.
    let out = daemon.expect(Who::Reader, &["status"], 0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "REASON", "MESSAGE", "AGE"]);
    let alice: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&alice[..3], ["inc-1-alice", "True", "Succeeded"], "{}", lines[1]);
    assert!(alice.last().is_some_and(|age| age.ends_with('s') || age.ends_with('m')), "{}", lines[1]);
    let ghost: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(&ghost[..3], ["inc-2-ghost", "False", "NotFound"], "{}", lines[2]);

    // -o json: the statuses as the API returns them.
    let statuses = daemon.expect(Who::Reader, &["status", "-o", "json"], 0).json();
    let statuses = statuses.as_array().expect("an array of statuses");
    assert_eq!(statuses.len(), 2);
    let alice = &statuses[0];
    assert_eq!(alice["name"], "inc-1-alice");
    assert_eq!(condition(alice, "Ready")["status"], "True");
    assert_eq!(condition(alice, "Ready")["reason"], "Succeeded");
    assert_eq!(condition(alice, "Stalled")["status"], "False");
    assert!(alice["lastReconcileTime"].as_str().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()));
    assert!(alice["observedGeneration"].is_string(), "{alice}");
    assert_eq!(alice["identities"][0]["identity"], "upn:alice@remedy.test");
    let one = daemon.expect(Who::Reader, &["status", "inc-2-ghost", "-o", "json"], 0).json();
    assert_eq!(condition(&one, "Stalled")["reason"], "NotFound");
    // An operator alerting on logs sees it: one WARN line when it begins, naming the target.
    let log = daemon.log();
    let not_found: Vec<&str> = log.lines().filter(|l| l.contains("not found: no account matches")).collect();
    assert!(
        not_found.len() == 1
            && not_found[0].contains(" WARN ")
            && not_found[0].contains("identity=upn:ghost@remedy.test"),
        "{log}"
    );
    let yaml = daemon.expect(Who::Reader, &["status", "inc-1-alice", "-o", "yaml"], 0);
    assert!(yaml.stdout.contains("name: inc-1-alice"), "{}", yaml.stdout);

    // A stalled manifest ends waiting at once, with its reason and message.
    let started = Instant::now();
    let out = daemon.expect(Who::Reader, &["status", "inc-2-ghost", "--wait", "--timeout", "30s"], 1);
    assert!(started.elapsed() < Duration::from_secs(10), "not at once: {:?}", started.elapsed());
    assert!(out.stderr.contains("inc-2-ghost is stalled: NotFound: upn:ghost@remedy.test"), "{}", out.stderr);
    // A manifest without a status is waited for, until the timeout.
    let out = daemon.expect(Who::Reader, &["status", "inc-9-later", "--wait", "--timeout", "1s"], 1);
    assert!(out.stderr.contains("timed out after 1s still waiting for inc-9-later (no status yet)"), "{}", out.stderr);
    // Without --wait, no such manifest is a "no".
    let out = daemon.expect(Who::Reader, &["status", "inc-9-later"], 1);
    assert!(out.stderr.starts_with("error: 404 not-found: no manifest named inc-9-later"), "{}", out.stderr);

    // history: filters, -o json, the table.
    let all = daemon.expect(Who::Reader, &["history", "-o", "json"], 0).json();
    let actions = of_kind(&all, "action");
    assert!(!actions.is_empty(), "{all}");
    let suspended = actions
        .iter()
        .find(|r| r["event"]["action"] == "suspend-user" && r["event"]["outcome"] == "succeeded")
        .unwrap_or_else(|| panic!("no suspension of alice in {all}"));
    assert_eq!(suspended["event"]["identity"], "upn:alice@remedy.test");
    assert_eq!(suspended["event"]["manifests"][0]["name"], "inc-1-alice");
    assert_eq!(suspended["hash"].as_str().map(str::len), Some(64));
    let filtered = daemon
        .expect(
            Who::Reader,
            &[
                "history",
                "--identity",
                "alice@remedy.test",
                "--manifest",
                "inc-1-alice",
                "--action",
                "suspend-user",
                "--outcome",
                "succeeded",
                "--since",
                "1h",
                "-o",
                "json",
            ],
            0,
        )
        .json();
    assert_eq!(filtered.as_array().map(Vec::len), Some(1), "{filtered}");
    assert_eq!(filtered[0]["id"], suspended["id"]);
    let none = daemon.expect(Who::Reader, &["history", "--outcome", "failed", "-o", "json"], 0).json();
    assert_eq!(none, serde_json::json!([]));
    let past = daemon
        .expect(
            Who::Reader,
            &["history", "--since", "2001-01-01T00:00:00Z", "--until", "2001-01-02T00:00:00+01:00", "-o", "json"],
            0,
        )
        .json();
    assert_eq!(past, serde_json::json!([]));
    let first = daemon.expect(Who::Reader, &["history", "--limit", "1", "-o", "json"], 0).json();
    assert_eq!(first.as_array().map(Vec::len), Some(1));
    assert_eq!(first[0]["id"], 1);
    let table = daemon.expect(Who::Reader, &["history", "--identity", "upn:alice@remedy.test"], 0);
    let header: Vec<&str> = table.stdout.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["ID", "TIME", "IDENTITY", "ACTION", "OUTCOME", "BEFORE→AFTER", "MANIFEST(S)"]);
    // BY/ERROR goes whole on its own lines below each row; in a pipe the table fits 120 columns.
    assert_eq!(table.stdout.lines().nth(1), Some("    BY/ERROR"), "{}", table.stdout);
    assert!(table.stdout.lines().all(|l| l.chars().count() <= 120), "{}", table.stdout);
    // -o wide: every column on the row's one line.
    let wide = daemon.expect(Who::Reader, &["history", "--identity", "upn:alice@remedy.test", "-o", "wide"], 0);
    let header: Vec<&str> = wide.stdout.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["ID", "TIME", "IDENTITY", "ACTION", "OUTCOME", "BEFORE→AFTER", "MANIFEST(S)", "BY/ERROR"]);
    assert!(
        table.stdout.lines().any(|l| l.contains("upn:alice@remedy.test")
            && l.contains("suspend-user")
            && l.contains("succeeded")
            && l.contains("inc-1-alice")),
        "{}",
        table.stdout
    );
    // Into a pipe the reader closed (`remedy history | head`): a quiet success, as ripgrep.
    for args in [&["history"][..], &["history", "-o", "json"], &["status"], &["history", "verify"]] {
        let (code, stderr) = daemon.run_into_closed_pipe(Who::Reader, args);
        assert_eq!((code, stderr.as_str()), (0, ""), "remedy {} into a closed pipe", args.join(" "));
    }
    // No colour in a pipe, even without NO_COLOR (inc-2-ghost's Ready=False would be marked).
    for args in [&["history"][..], &["status"]] {
        let output = daemon.std_command(Who::Reader, args).env_remove("NO_COLOR").output().expect("remedy runs");
        assert!(output.status.success());
        assert!(!output.stdout.contains(&0x1b), "ANSI codes in a pipe:\n{}", String::from_utf8_lossy(&output.stdout));
    }
    let bad = daemon.expect(Who::Reader, &["history", "--since", "yesterday"], 2);
    assert!(bad.stderr.contains("neither an RFC 3339 time"), "{}", bad.stderr);

    // history verify.
    let out = daemon.expect(Who::Reader, &["history", "verify"], 0);
    let text = out.stdout.trim();
    let rest = text.strip_prefix("verified ").unwrap_or_else(|| panic!("{text}"));
    let (count, head) = rest.split_once(" records, head ").unwrap_or_else(|| panic!("{text}"));
    assert!(count.parse::<u64>().is_ok_and(|n| n >= 1), "{text}");
    assert!(head.len() == 64 && head.chars().all(|c| c.is_ascii_hexdigit()), "{text}");

    // history --follow prints new records as they come.
    let mut follower = StdCommand::new(env!("CARGO_BIN_EXE_remedy"))
        .args(["history", "--follow", "-o", "json", "--manifest", "inc-1-alice"])
        .env("REMEDY_SERVER", &daemon.server)
        .env_remove("REMEDY_TOKEN")
        .env("REMEDY_TOKEN_FILE", daemon.dir.path().join("reader.token"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("history --follow starts");
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first_line = lines.recv_timeout(Duration::from_secs(20)).expect("the records so far");
    daemon.outputs.borrow_mut().push(first_line.clone());
    let record: Value = serde_json::from_str(&first_line).expect("one JSON record a line");
    assert_eq!(record["event"]["kind"], "action");

    // reconcile NAME --wait, as the operator (token in REMEDY_TOKEN).
    let out = daemon.expect(Who::OperatorEnv, &["reconcile", "inc-1-alice", "--wait", "--timeout", "30s"], 0);
    assert!(out.stdout.starts_with(&format!("reconcile of inc-1-alice requested by {OPERATOR}")), "{}", out.stdout);
    assert!(out.stdout.contains("Succeeded"), "{}", out.stdout);
    let history = daemon.expect(Who::Reader, &["history", "--manifest", "inc-1-alice", "-o", "json"], 0).json();
    let requests = of_kind(&history, "reconcile-request");
    assert_eq!(requests.len(), 1, "{history}");
    assert_eq!(requests[0]["event"]["by"], OPERATOR);
    assert_eq!(requests[0]["event"]["manifest"], "inc-1-alice");
    let table = daemon.expect(Who::Reader, &["history", "--manifest", "inc-1-alice"], 0);
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(
        rows.windows(2).any(|l| l[0].contains("reconcile") && l[1] == format!("    by {OPERATOR}")),
        "{}",
        table.stdout
    );
    // ... which the follower printed too.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("the new record");
        daemon.outputs.borrow_mut().push(line.clone());
        let record: Value = serde_json::from_str(&line).expect("one JSON record a line");
        if record["event"]["kind"] == "reconcile-request" {
            assert_eq!(record["event"]["by"], OPERATOR);
            break;
        }
    }
    let _ = follower.kill();
    let _ = follower.wait();

    // Refusals and failures, with their exit codes.
    let out = daemon.expect(Who::Reader, &["reconcile", "inc-1-alice"], 1);
    assert!(out.stderr.starts_with("error: 403 forbidden: "), "{}", out.stderr);
    assert!(out.stderr.contains(READER), "{}", out.stderr);
    let out = daemon.expect(Who::Operator, &["reconcile", "inc-9-later"], 1);
    assert!(out.stderr.starts_with("error: 404 not-found: "), "{}", out.stderr);
    let out = daemon.expect(Who::Stranger, &["status"], 2);
    assert!(out.stderr.starts_with("error: 401 unauthorized: unknown token"), "{}", out.stderr);
    let out = daemon.expect(Who::Operator, &["approve", "0123456789abcdef0123456789abcdef"], 1);
    assert!(out.stderr.starts_with("error: 409 conflict: "), "{}", out.stderr);
    let out = daemon.expect(Who::Operator, &["status", "--server", "http://127.0.0.1:1"], 2);
    assert!(out.stderr.contains("cannot reach the remedy API at http://127.0.0.1:1/"), "{}", out.stderr);
    let mut no_token = daemon.command(Who::Reader, &["status"]);
    let output = no_token.env_remove("REMEDY_TOKEN_FILE").output().expect("remedy runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no API token"));
    let out = daemon.expect(Who::Operator, &["--log-format", "json", "status", "inc-1-alice"], 0);
    assert!(out.stdout.contains("inc-1-alice"), "{}", out.stdout);

    daemon.stop();
}

#[test]
fn a_held_plan_is_approved_and_every_manifest_converges() {
    let users = ["u1@remedy.test", "u2@remedy.test", "u3@remedy.test"];
    let later = ["u4@remedy.test", "u5@remedy.test", "u6@remedy.test"];
    let daemon = Daemon::start(
        &[users, later].concat(),
        &[("inc-11-u1", "u1@remedy.test"), ("inc-11-u2", "u2@remedy.test"), ("inc-11-u3", "u3@remedy.test")],
        2,
    );

    // Three changes, at most two at once: every manifest is Stalled / NeedsApproval.
    let out = daemon.expect(Who::Reader, &["status", "--wait", "--timeout", "30s"], 1);
    assert_eq!(out.stderr.matches("is stalled: NeedsApproval: plan ").count(), 3, "{}", out.stderr);
    assert!(out.stderr.contains("remedy approve "), "{}", out.stderr);
    let table = daemon.expect(Who::Reader, &["status"], 0);
    assert_eq!(table.stdout.lines().filter(|l| l.contains("NeedsApproval")).count(), 3, "{}", table.stdout);
    let statuses = daemon.expect(Who::Reader, &["status", "-o", "json"], 0).json();
    let message = condition(&statuses[0], "Stalled")["message"].as_str().expect("a message").to_owned();
    let plan_id: String = message
        .strip_prefix("plan ")
        .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect())
        .unwrap_or_else(|| panic!("no plan id in {message:?}"));
    assert_eq!(plan_id.len(), 32, "{message}");
    // An operator alerting on logs sees the hold: one WARN line for the plan, with its fields.
    let log = daemon.log();
    let held_lines: Vec<&str> = log.lines().filter(|l| l.contains("plan held for approval")).collect();
    assert!(
        held_lines.len() == 1
            && held_lines[0].contains(" WARN ")
            && held_lines[0].contains(&format!("plan={plan_id}"))
            && held_lines[0].contains("changes=3")
            && held_lines[0].contains("limit=2"),
        "{log}"
    );
    let held = daemon.expect(Who::Reader, &["history", "--outcome", "held", "-o", "json"], 0).json();
    assert_eq!(held.as_array().map(Vec::len), Some(3), "{held}");
    assert!(users.iter().all(|u| daemon.sim.user(u).expect("user").account_enabled), "nothing applied yet");

    // A reader may not approve; the operator may.
    let out = daemon.expect(Who::Reader, &["approve", &plan_id], 1);
    assert!(out.stderr.starts_with("error: 403 forbidden: "), "{}", out.stderr);
    let out = daemon.expect(Who::Operator, &["approve", &plan_id, "--comment", "INC-11: all three, checked"], 0);
    assert_eq!(out.stdout.trim(), format!("plan {plan_id} approved by {OPERATOR}"));

    // Right after the approval, `status --wait` does not end on the NeedsApproval written before
    // it: it waits for the reconcile the approval starts.
    let out = daemon.expect(Who::Reader, &["status", "--wait", "--timeout", "30s"], 0);
    assert_eq!(out.stdout.lines().filter(|l| l.contains("Succeeded")).count(), 3, "{}", out.stdout);
    assert!(users.iter().all(|u| !daemon.sim.user(u).expect("user").account_enabled), "all suspended");

    let history = daemon.expect(Who::Reader, &["history", "-o", "json"], 0).json();
    let approvals = of_kind(&history, "approval");
    assert_eq!(approvals.len(), 1, "{history}");
    assert_eq!(approvals[0]["event"]["planId"], plan_id.as_str());
    assert_eq!(approvals[0]["event"]["by"], OPERATOR);
    assert_eq!(approvals[0]["event"]["comment"], "INC-11: all three, checked");
    let table = daemon.expect(Who::Reader, &["history"], 0);
    // The row, and below it who approved which plan, whole.
    let rows: Vec<&str> = table.stdout.lines().collect();
    assert!(
        rows.windows(2).any(|l| l[0].contains("approve")
            && l[1] == format!("    by {OPERATOR} of plan {plan_id}: INC-11: all three, checked")),
        "{}",
        table.stdout
    );
    // The plan is no longer held: approving it again is a "no".
    let out = daemon.expect(Who::Operator, &["approve", &plan_id], 1);
    assert!(out.stderr.starts_with("error: 409 conflict: "), "{}", out.stderr);

    // A second held plan, approved with --wait: it returns once those manifests are Ready.
    for (n, upn) in later.iter().enumerate() {
        let name = format!("inc-12-u{}", n + 4);
        std::fs::write(daemon.dir.path().join("manifests").join(format!("{name}.yaml")), manifest(&name, upn))
            .expect("manifest");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let statuses = daemon.expect(Who::Reader, &["status", "-o", "json"], 0).json();
        let held: Vec<String> = statuses
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["heldPlanId"].as_str().map(str::to_owned))
            .collect();
        if held.len() == 3 {
            break held[0].clone();
        }
        assert!(Instant::now() < deadline, "the second plan is never held:\n{statuses}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let out = daemon.expect(Who::Operator, &["approve", &second, "--wait", "--timeout", "30s"], 0);
    assert_eq!(out.stdout.lines().filter(|l| l.contains("Succeeded")).count(), 3, "{}", out.stdout);
    assert!(later.iter().all(|u| !daemon.sim.user(u).expect("user").account_enabled), "all suspended");

    daemon.stop();
}

/// An approval is durable: given just before remedy is killed — before the approved plan sent
/// anything — it still counts for that plan after the restart; nobody has to approve again.
#[test]
fn an_approval_given_just_before_a_kill_9_counts_after_the_restart() {
    let users = ["u1@remedy.test", "u2@remedy.test", "u3@remedy.test"];
    let mut daemon = Daemon::start(
        &users,
        &[("inc-21-u1", "u1@remedy.test"), ("inc-21-u2", "u2@remedy.test"), ("inc-21-u3", "u3@remedy.test")],
        2,
    );
    let out = daemon.expect(Who::Reader, &["status", "--wait", "--timeout", "30s"], 1);
    assert_eq!(out.stderr.matches("is stalled: NeedsApproval: plan ").count(), 3, "{}", out.stderr);
    let statuses = daemon.expect(Who::Reader, &["status", "-o", "json"], 0).json();
    let message = condition(&statuses[0], "Stalled")["message"].as_str().expect("a message").to_owned();
    let plan_id: String = message
        .strip_prefix("plan ")
        .map(|rest| rest.chars().take_while(char::is_ascii_hexdigit).collect())
        .expect("id");

    // Every Graph request now takes 5 s: the pass the approval starts cannot send anything before
    // remedy is killed, right after the approval is recorded.
    daemon.sim.inject(remedy_graph_sim::Fault::Latency(Duration::from_secs(5)));
    daemon.expect(Who::Operator, &["approve", &plan_id, "--comment", "INC-21: checked"], 0);
    daemon.kill_9_and_restart();
    let patches = |daemon: &Daemon| daemon.sim.log().iter().filter(|e| e.method == "PATCH").count();
    assert_eq!(patches(&daemon), 0, "the window this test is about: nothing sent before the kill");
    daemon.sim.inject(remedy_graph_sim::Fault::Latency(Duration::ZERO));

    // The restarted remedy plans the same changes, finds them approved, and applies them.
    let out = daemon.expect(Who::Reader, &["status", "--wait", "--timeout", "60s"], 0);
    assert_eq!(out.stdout.lines().filter(|l| l.contains("Succeeded")).count(), 3, "{}", out.stdout);
    assert!(users.iter().all(|u| !daemon.sim.user(u).expect("user").account_enabled), "all suspended");
    let history = daemon.expect(Who::Reader, &["history", "-o", "json"], 0).json();
    assert_eq!(of_kind(&history, "approval").len(), 1, "approved once: {history}");
    daemon.stop();
}
