//! The AD provider against OpenLDAP's command-line tools, on the same DC in the same run.
//!
//!     eval "$(scripts/samba-dc env)"
//!     cargo bench -p remedy --bench ad -- [--users N] [--observe N] [--connections N] [--chunk N] [--smoke]
//!
//! Defaults: 2,000 users disabled, 10,000 observed; `--smoke` (or REMEDY_BENCH_SMOKE=1) is
//! `--users 100 --observe 300`, for CI. It creates a fresh OU under OU=Tests with one `ldapadd`
//! (as the administrator), then, both as the scoped action account svc-remedy (the OU inherits
//! its rights from OU=Tests) over LDAPS:
//!
//! - disables N users through the provider (conditional modify + verified read-back each, over
//!   the connection pool) and N other users with `ldapmodify` (blind replaces), interleaved in
//!   rounds so that load from elsewhere on the machine falls on both alike;
//! - observes every user of the OU through the provider, by sAMAccountName, and with one paged
//!   `ldapsearch -E pr=500/noprompt` of the same attributes, alternately, best of each.
//!
//! It prints a markdown table and deletes what it created, entry by entry.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use ldap3::{LdapConnAsync, LdapConnSettings};
use remedy::ad::{AdDirectory, LdapDirectory, ATTRIBUTES};
use remedy_policies::config::ActiveDirectoryConfig;
use remedy_policies::observed::ProviderView;
use remedy_policies::{Action, Identity};

struct Args {
    users: usize,
    observe: usize,
    connections: usize,
    chunk: usize,
}

fn parse_args() -> Args {
    let smoke = std::env::var("REMEDY_BENCH_SMOKE").is_ok_and(|v| !v.is_empty() && v != "0");
    let mut args = if smoke {
        Args { users: 100, observe: 300, connections: 4, chunk: remedy::ad::resolve::CHUNK_SIZE }
    } else {
        Args { users: 2000, observe: 10_000, connections: 4, chunk: remedy::ad::resolve::CHUNK_SIZE }
    };
    let mut iter = std::env::args().skip(1);
    while let Some(arg) = iter.next() {
        let mut number = |name: &str| -> usize {
            let value = iter.next().unwrap_or_else(|| usage(&format!("{name} needs a value")));
            value.parse().unwrap_or_else(|_| usage(&format!("{name} {value:?} is not a number")))
        };
        match arg.as_str() {
            "--users" => args.users = number("--users"),
            "--observe" => args.observe = number("--observe"),
            "--connections" => args.connections = number("--connections"),
            "--chunk" => args.chunk = number("--chunk"),
            "--smoke" => {
                args.users = 100;
                args.observe = 300;
            }
            // cargo bench passes --bench to every bench target.
            "--bench" => {}
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    if args.users == 0 || args.connections == 0 {
        usage("--users and --connections must be at least 1");
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!("error: {problem}\nusage: cargo bench -p remedy --bench ad -- [--users N] [--observe N] [--connections N] [--chunk N] [--smoke]");
    std::process::exit(2);
}

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("error: {name} is not set: run `scripts/samba-dc start && eval \"$(scripts/samba-dc env)\"` first");
        std::process::exit(2);
    })
}

struct Dc {
    ldaps_url: String,
    base_dn: String,
    admin_bind: String,
    admin_password_file: PathBuf,
    action_bind: String,
    action_password_file: PathBuf,
    ca_file: PathBuf,
    tests_ou: String,
}

impl Dc {
    fn from_env() -> Dc {
        Dc {
            ldaps_url: var("REMEDY_TEST_LDAPS_URL"),
            base_dn: var("REMEDY_TEST_BASE_DN"),
            admin_bind: var("REMEDY_TEST_ADMIN_BIND"),
            admin_password_file: var("REMEDY_TEST_ADMIN_PASSWORD_FILE").into(),
            action_bind: var("REMEDY_TEST_ACTION_BIND"),
            action_password_file: var("REMEDY_TEST_ACTION_PASSWORD_FILE").into(),
            ca_file: var("REMEDY_TEST_CA_FILE").into(),
            tests_ou: var("REMEDY_TEST_TESTS_OU"),
        }
    }

    /// An ldap-utils command bound as `bind` over LDAPS, verifying the DC against the test CA.
    fn tool(&self, tool: &str, bind: &str, password_file: &Path) -> Command {
        let mut command = Command::new(tool);
        command
            .args(["-x", "-H", &self.ldaps_url, "-D", bind, "-y"])
            .arg(password_file)
            .env("LDAPTLS_CACERT", &self.ca_file)
            .env("LDAPTLS_REQCERT", "demand");
        command
    }
}

fn run(mut command: Command, what: &str) -> Result<Duration, String> {
    let started = Instant::now();
    let output = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {what} (ldap-utils installed? scripts/samba-dc install): {e}"))?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        return Err(format!("{what} failed: {}\n{}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    Ok(elapsed)
}

fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

async fn admin_connection(dc: &Dc) -> Result<ldap3::Ldap, String> {
    let tls = remedy::ad::tls::client_config(Some(&dc.ca_file)).map_err(|e| e.to_string())?;
    let settings = LdapConnSettings::new().set_config(tls).set_conn_timeout(Duration::from_secs(10));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &dc.ldaps_url).await.map_err(|e| e.to_string())?;
    tokio::spawn(async move {
        let _ = conn.drive().await;
    });
    let password = std::fs::read_to_string(&dc.admin_password_file).map_err(|e| e.to_string())?;
    ldap.simple_bind(&dc.admin_bind, password.trim_end_matches(['\r', '\n']))
        .await
        .and_then(|r| r.success())
        .map_err(|e| e.to_string())?;
    Ok(ldap)
}

/// Deletes what the benchmark created, entry by entry, leaves first. (A tree delete of thousands
/// of users holds Samba's single writer for minutes, starving every other client, and ends in
/// timeLimitExceeded.) An entry already gone counts as deleted; a dropped connection (the DC was
/// restarted) is reopened a few times.
async fn delete_all(dc: &Dc, dns: &[String]) {
    let mut remaining: Vec<&String> = dns.iter().collect();
    for attempt in 1..=3 {
        let ldap = match admin_connection(dc).await {
            Ok(ldap) => ldap,
            Err(error) => {
                eprintln!("warning: cleanup attempt {attempt}: {error}");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        let ldap = &ldap;
        let mut failed: Vec<&String> = Vec::new();
        let mut last_error = None;
        // A few deletes in flight on the one connection keep the DC busy without queueing
        // thousands of requests in front of anyone else's. Containers go last, one at a time.
        let (leaves, containers): (Vec<&String>, Vec<&String>) = remaining.iter().partition(|dn| dn.starts_with("CN="));
        let outcomes: Vec<(&String, Result<(), String>)> = futures::stream::iter(leaves)
            .map(|dn| async move { (dn, delete_one(ldap, dn).await) })
            .buffer_unordered(8)
            .collect()
            .await;
        for (dn, outcome) in outcomes {
            if let Err(error) = outcome {
                failed.push(dn);
                last_error = Some(error);
            }
        }
        for dn in containers {
            if let Err(error) = delete_one(ldap, dn).await {
                failed.push(dn);
                last_error = Some(error);
            }
        }
        if failed.is_empty() {
            return;
        }
        eprintln!(
            "warning: cleanup attempt {attempt}: {} entries left, e.g. {}",
            failed.len(),
            last_error.unwrap_or_default()
        );
        remaining = failed;
    }
    eprintln!("warning: could not delete everything the benchmark created: {} entries left", remaining.len());
}

async fn delete_one(ldap: &ldap3::Ldap, dn: &str) -> Result<(), String> {
    match ldap.clone().delete(dn).await {
        Ok(result) if result.rc == 0 || result.rc == 32 => Ok(()),
        Ok(result) => Err(format!("{dn}: {result}")),
        Err(error) => Err(format!("{dn}: {error}")),
    }
}

fn main() {
    let args = parse_args();
    let dc = Dc::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    runtime.block_on(bench(&dc, &args));
}

async fn bench(dc: &Dc, args: &Args) {
    let n = args.users;
    let extra = args.observe.saturating_sub(2 * n);
    let suffix = format!("{:06x}", fastrand::u32(..0x100_0000));
    let bench_ou = format!("OU=bench-{suffix},{}", dc.tests_ou);
    let scratch = tempfile::tempdir().expect("temp dir");

    // --- setup: one ldapadd as the administrator -------------------------------------------
    let mut ldif = String::new();
    let mut sets: Vec<(&str, usize, Vec<String>)> =
        vec![("remedy", n, vec![]), ("ldapmodify", n, vec![]), ("observe", extra, vec![])];
    let _ = writeln!(ldif, "dn: {bench_ou}\nobjectClass: organizationalUnit\n");
    for (set, count, sams) in &mut sets {
        let ou = format!("OU={set},{bench_ou}");
        let _ = writeln!(ldif, "dn: {ou}\nobjectClass: organizationalUnit\n");
        for i in 0..*count {
            let sam = format!("b{}{i:05}-{suffix}", &set[..1]);
            let _ = writeln!(
                ldif,
                "dn: CN={sam},{ou}\nobjectClass: user\nsAMAccountName: {sam}\nuserPrincipalName: {sam}@remedy.test\nuserAccountControl: 512\n"
            );
            sams.push(sam);
        }
    }
    let total_users: usize = sets.iter().map(|(_, count, _)| count).sum();
    eprintln!("creating {total_users} users in {bench_ou} with ldapadd ...");
    let mut add = dc.tool("ldapadd", &dc.admin_bind, &dc.admin_password_file);
    add.arg("-f").arg(write_file(scratch.path(), "add.ldif", &ldif));
    let ou = bench_ou.as_str();
    let mut created: Vec<String> =
        sets.iter().flat_map(|(set, _, sams)| sams.iter().map(move |sam| format!("CN={sam},OU={set},{ou}"))).collect();
    created.extend(sets.iter().map(|(set, _, _)| format!("OU={set},{bench_ou}")));
    created.push(bench_ou.clone());
    let add_time = match run(add, "ldapadd") {
        Ok(elapsed) => elapsed,
        Err(error) => {
            eprintln!("error: {error}");
            delete_all(dc, &created).await;
            std::process::exit(1);
        }
    };
    eprintln!("ldapadd: {} users in {}", total_users, secs(add_time));

    let result = std::panic::AssertUnwindSafe(measure(dc, args, &bench_ou, &sets, scratch.path(), add_time));
    let outcome = futures::FutureExt::catch_unwind(result).await;
    eprintln!("deleting the {total_users} benchmark users ...");
    delete_all(dc, &created).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn measure(
    dc: &Dc,
    args: &Args,
    bench_ou: &str,
    sets: &[(&str, usize, Vec<String>)],
    scratch: &Path,
    add_time: Duration,
) {
    let n = args.users;
    let config = ActiveDirectoryConfig {
        url: dc.ldaps_url.clone(),
        start_tls: false,
        ca_file: Some(dc.ca_file.display().to_string()),
        allow_insecure: false,
        bind_user: dc.action_bind.clone(),
        password_file: Some(dc.action_password_file.display().to_string()),
        kerberos: None,
        base_dn: dc.base_dn.clone(),
        connect_timeout: Duration::from_secs(5),
        operation_timeout: Duration::from_secs(60),
        connections: args.connections,
        page_size: 500,
        watch: Default::default(),
        domain_controllers: Vec::new(),
        return_after: Duration::from_secs(60),
    };
    let directory = LdapDirectory::connect(&config, Path::new("/"))
        .await
        .expect("connect as the action account")
        .with_chunk_size(args.chunk);
    let identities = |sams: &[String]| -> Vec<Identity> {
        sams.iter().map(|s| format!("sam:{s}").parse().expect("identity")).collect()
    };

    // --- disable: provider vs ldapmodify, interleaved in rounds so that load from anything
    // else on the machine falls on both sides alike -----------------------------------------
    let rounds = ROUNDS.min(n);
    let (mut remedy_disable, mut ldapmodify_disable) = (Duration::ZERO, Duration::ZERO);
    let mut read_back_searches = 0;
    for round in 0..rounds {
        let part = |sams: &[String]| -> Vec<String> { sams.iter().skip(round).step_by(rounds).cloned().collect() };
        let remedy_ids = identities(&part(&sets[0].2));
        let views = directory.observe(&remedy_ids).await.expect("observe the users to disable");
        let accounts: Vec<_> = remedy_ids
            .iter()
            .map(|id| match &views[id] {
                ProviderView::Found(account) => account.clone(),
                other => panic!("{id}: {other:?}"),
            })
            .collect();
        let now = Utc::now();
        let searches_before = directory.stats().searches;
        let started = Instant::now();
        let results =
            futures::future::join_all(accounts.iter().map(|a| directory.apply(a, Action::DisableAccount, now))).await;
        remedy_disable += started.elapsed();
        read_back_searches += directory.stats().searches - searches_before;
        let failures = results.iter().filter(|r| r.is_err()).count();
        if let Some(Err(error)) = results.iter().find(|r| r.is_err()) {
            panic!("{failures} of {} disables failed, e.g.: {error}", accounts.len());
        }

        let mut modify_ldif = String::new();
        for sam in part(&sets[1].2) {
            let _ = writeln!(
                modify_ldif,
                "dn: CN={sam},OU=ldapmodify,{bench_ou}\nchangetype: modify\nreplace: userAccountControl\nuserAccountControl: 514\n-\n"
            );
        }
        let mut modify = dc.tool("ldapmodify", &dc.action_bind, &dc.action_password_file);
        modify.arg("-f").arg(write_file(scratch, &format!("modify-{round}.ldif"), &modify_ldif));
        ldapmodify_disable += run(modify, "ldapmodify").unwrap_or_else(|e| panic!("{e}"));
    }

    // --- observe: provider vs one paged ldapsearch, alternating, best of each ---------------
    let all_sams: Vec<String> = sets.iter().flat_map(|(_, _, sams)| sams.iter().cloned()).collect();
    let observe_ids = identities(&all_sams);
    let (mut remedy_observe, mut ldapsearch_observe) = (Duration::MAX, Duration::MAX);
    let (mut searches, mut pages) = (0, 0);
    for _ in 0..ROUNDS {
        let before = directory.stats();
        let started = Instant::now();
        let views = directory.observe(&observe_ids).await.expect("observe");
        remedy_observe = remedy_observe.min(started.elapsed());
        let after = directory.stats();
        (searches, pages) = (after.searches - before.searches, after.pages - before.pages);
        let found = views.values().filter(|v| matches!(v, ProviderView::Found(_))).count();
        assert_eq!(found, observe_ids.len(), "every user must be found");

        let mut search = dc.tool("ldapsearch", &dc.action_bind, &dc.action_password_file);
        search
            .args(["-LLL", "-E", "pr=500/noprompt", "-b", bench_ou, "(&(objectCategory=person)(objectClass=user))"])
            .args(ATTRIBUTES);
        ldapsearch_observe = ldapsearch_observe.min(run(search, "ldapsearch").unwrap_or_else(|e| panic!("{e}")));
    }

    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!();
    println!(
        "AD provider vs ldap-utils, same DC, same run; both bound as the action account over LDAPS; {} pooled connections; setup: ldapadd of {} users in {}.",
        args.connections,
        all_sams.len(),
        secs(add_time)
    );
    println!();
    println!("| operation | users | remedy | ldap-utils | ratio remedy/ldap-utils |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| disable: remedy conditional modify + verified read-back ({read_back_searches} read-back searches) vs `ldapmodify` blind replace ({rounds} interleaved rounds, summed) | {n} | {} | {} | {:.2} |",
        secs(remedy_disable),
        secs(ldapmodify_disable),
        ratio(remedy_disable, ldapmodify_disable)
    );
    println!(
        "| observe: remedy by sAMAccountName ({searches} searches, {pages} pages) vs one `ldapsearch -E pr=500` of the OU (best of {ROUNDS}) | {} | {} | {} | {:.2} |",
        observe_ids.len(),
        secs(remedy_observe),
        secs(ldapsearch_observe),
        ratio(remedy_observe, ldapsearch_observe)
    );
    println!();
}

/// Rounds of each comparison; see `measure`.
const ROUNDS: usize = 2;
