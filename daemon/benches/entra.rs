//! The Entra ID provider's batched path against one request at a time, on the Graph simulator.
//!
//!     cargo bench -p remedy --bench entra -- [--users N] [--latency-ms MS]
//!
//! Defaults: 1,000 suspensions, 50 ms of latency per HTTP request (the simulator adds it once to
//! every request; a `$batch` is one request). The simulator runs in-process on loopback with 2N
//! users; in the same run, with the same provider (same HTTP client, same cached token):
//! - N users are suspended through `apply_many`: `$batch`es of 20 PATCHes, several in flight, each
//!   followed by a batched read-back that verifies every suspension;
//! - N other users are suspended one `PATCH /users/{id}` at a time, sequentially, without any
//!   read-back (the baseline is spared the verification the batched path does).
//!
//! It prints both times, the requests each needed, and the ratio (the aim is at least 15x).
//! `--users 60` is the CI smoke size.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use remedy::entra::{user_path, EntraDirectory, EntraLookup, GraphDirectory, GraphOptions, GraphRequest, RiskReads};
use remedy_graph_sim::{spawn, SimConfig, SimUser};
use remedy_policies::config::EntraConfig;
use remedy_policies::observed::{EntraUser, ProviderView};
use remedy_policies::{Action, Identity};

const AIM: f64 = 15.0;

struct Args {
    users: usize,
    latency: Duration,
}

fn parse_args() -> Args {
    let mut args = Args { users: 1000, latency: Duration::from_millis(50) };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut number = |name: &str| -> u64 {
            let value = iter.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
            value.parse().unwrap_or_else(|_| usage(&format!("{name} {value:?} is not a number")))
        };
        match arg.as_str() {
            "--users" => args.users = number("--users") as usize,
            "--latency-ms" => args.latency = Duration::from_millis(number("--latency-ms")),
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if args.users == 0 {
        usage("--users must be at least 1");
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}\nusage: cargo bench -p remedy --bench entra -- [--users N] [--latency-ms MS]");
    std::process::exit(2);
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn main() {
    let args = parse_args();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(run(args));
}

async fn run(args: Args) {
    let n = args.users;
    let users: Vec<SimUser> = (0..2 * n).map(|i| SimUser::new(format!("bench{i:05}@remedy.test"))).collect();
    let sim = spawn(SimConfig {
        users,
        latency: args.latency,
        ..SimConfig::new("bench-tenant", "bench-app", "bench-secret")
    })
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().expect("temporary directory");
    write_secret(dir.path(), "bench-secret");
    let config = EntraConfig {
        tenant_id: "bench-tenant".into(),
        client_id: "bench-app".into(),
        client_secret_file: Some("client-secret".into()),
        client_certificate_file: None,
        federated_token_file: None,
        authority_host: sim.url(),
        graph_url: sim.url(),
        ca_file: None,
        request_timeout: Duration::from_secs(30),
        delta_interval: Duration::from_secs(30),
        confirmation_deadline: Duration::from_secs(300),
    };
    let directory = GraphDirectory::new(&config, dir.path()).expect("provider");
    directory.check().await.expect("token");

    let all = sim.state();
    let (batched_users, baseline_users) = all.split_at(n);
    eprintln!("observing the {n} users of the batched run ...");
    let lookups: Vec<(Identity, EntraLookup)> = batched_users
        .iter()
        .map(|u| (Identity::user_principal_name(&u.user_principal_name).expect("UPN"), EntraLookup::Id(u.id.clone())))
        .collect();
    let started = Instant::now();
    let views = directory.observe_with_risk(&lookups, RiskReads::None).await.expect("observation");
    let observe_time = started.elapsed();
    let observed: Vec<EntraUser> = lookups
        .iter()
        .map(|(identity, _)| match &views[identity] {
            ProviderView::Found(user) => user.clone(),
            other => panic!("{identity}: {other:?}"),
        })
        .collect();

    eprintln!("suspending {n} users through the batched path ...");
    sim.clear_log();
    let items: Vec<(EntraUser, Action)> = observed.into_iter().map(|u| (u, Action::SuspendUser)).collect();
    let started = Instant::now();
    let results = directory.apply_many(&items, Utc::now()).await;
    let batched_time = started.elapsed();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failed.is_empty(), "{} batched suspensions failed, first: {}", failed.len(), failed[0]);
    let batched_requests = sim.log().iter().filter(|e| !e.in_batch).count();

    eprintln!("suspending {n} other users one PATCH at a time ...");
    sim.clear_log();
    let started = Instant::now();
    for user in baseline_users {
        let request = GraphRequest {
            method: reqwest::Method::PATCH,
            path: user_path(&user.id),
            body: Some(serde_json::json!({"accountEnabled": false})),
        };
        let response = directory.send(&request).await.expect("PATCH");
        assert_eq!(response.status, 204, "{}", response.error(&request));
    }
    let baseline_time = started.elapsed();
    let baseline_requests = sim.log().iter().filter(|e| !e.in_batch).count();

    let still_enabled = sim.state().iter().filter(|u| u.account_enabled).count();
    assert_eq!(still_enabled, 0, "every user is suspended");
    let ratio = baseline_time.as_secs_f64() / batched_time.as_secs_f64().max(f64::EPSILON);
    let stats = directory.stats();

    println!();
    println!("Entra ID suspensions: {n} users, {} ms of simulated latency per HTTP request", args.latency.as_millis());
    println!();
    println!("| path | time | HTTP requests | per user |");
    println!("|---|---|---|---|");
    println!(
        "| remedy: $batch of 20, {} in flight, verified by a batched read-back | {} | {batched_requests} | {:.1} ms |",
        GraphOptions::default().concurrency,
        secs(batched_time),
        batched_time.as_secs_f64() * 1000.0 / n as f64
    );
    println!(
        "| baseline: one PATCH at a time, no read-back | {} | {baseline_requests} | {:.1} ms |",
        secs(baseline_time),
        baseline_time.as_secs_f64() * 1000.0 / n as f64
    );
    println!();
    println!("ratio: {ratio:.1}x (aim: at least {AIM:.0}x: {})", if ratio >= AIM { "met" } else { "NOT met" });
    println!("observation of the {n} batched users ($batch, no risk reads): {}", secs(observe_time));
    println!("provider counters: {stats:?}");
}

fn write_secret(dir: &Path, value: &str) {
    let path = dir.join("client-secret");
    std::fs::write(&path, value).expect("secret file");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
}
