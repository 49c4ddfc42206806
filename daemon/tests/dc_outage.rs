//! The DC goes away mid-run and comes back. This stops and restarts the shared test DC, which
//! would break every other DC test running at the same time: it lives in a test binary of its
//! own (cargo runs test binaries one after another) and holds a single test.

#[allow(dead_code)]
#[path = "it/dc.rs"]
mod dc;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::Utc;
use remedy::ad::{AdDirectory, LdapDirectory};
use remedy_policies::config::ActiveDirectoryConfig;
use remedy_policies::observed::ProviderView;
use remedy_policies::{Action, Identity};

fn samba_dc(command: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/samba-dc");
    let mut process = Command::new(&script);
    process.arg(command);
    // The DC the environment names, whichever checkout this test was built from.
    if let Ok(dir) = std::env::var("REMEDY_TEST_DC_DIR") {
        process.env("REMEDY_DC_DIR", dir);
    }
    let status = process.status().unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(status.success(), "scripts/samba-dc {command} failed: {status}");
}

/// Starts the DC again however the test ends, so that a failure here does not take the DC away
/// from everything that runs after it.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        samba_dc("start");
    }
}

#[tokio::test]
async fn a_dc_outage_gives_transient_errors_and_the_pool_reconnects() {
    let ou = dc::TestOu::create("outage").await;
    let user = ou.add_user("out", 512).await;
    let config = ActiveDirectoryConfig {
        connect_timeout: Duration::from_secs(2),
        operation_timeout: Duration::from_secs(5),
        ..dc::action_config()
    };
    let directory = LdapDirectory::connect(&config, Path::new("/")).await.expect("connect");
    let identity: Identity = format!("sam:{}", user.sam).parse().expect("identity");
    let ids = [identity.clone()];
    let views = directory.observe(&ids).await.expect("observe while up");
    let account = views[&identity].found().cloned().expect("found");

    let connects_before = directory.stats().connects;
    let restart = RestartOnDrop;
    samba_dc("stop");
    for attempt in 0..3 {
        let error = directory.observe(&ids).await.expect_err("the DC is down");
        assert!(error.is_transient(), "attempt {attempt}: {error:?}");
        eprintln!("while down: {error}");
    }
    let error = directory.apply(&account, Action::DisableAccount, Utc::now()).await.expect_err("the DC is down");
    assert!(error.is_transient(), "{error:?}");

    samba_dc("start");
    let started = Instant::now();
    let views = loop {
        match directory.observe(&ids).await {
            Ok(views) => break views,
            Err(error) => {
                assert!(error.is_transient(), "{error:?}");
                assert!(started.elapsed() < Duration::from_secs(90), "no reconnection within 90 s: {error}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    };
    eprintln!("reconnected {:?} after the restart; {:?}", started.elapsed(), directory.stats());
    assert!(matches!(views[&identity], ProviderView::Found(_)));
    assert!(directory.stats().connects > connects_before, "new connections were opened: {:?}", directory.stats());
    let change = directory.apply(&account, Action::DisableAccount, Utc::now()).await.expect("apply after reconnecting");
    assert!(change.after.is_disabled());
    drop(restart);
}
