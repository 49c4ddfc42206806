//! The `graph-sim` binary with the example seed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::support::http;

#[tokio::test]
async fn binary_serves_the_example_seed_and_announces_itself() {
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/seed-example.yaml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_graph-sim"))
        .args(["--seed", seed, "--listen", "127.0.0.1:0", "--latency", "1ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let url = line
        .strip_prefix("graph-sim listening on ")
        .and_then(|rest| rest.strip_suffix(" (a Microsoft Graph TEST DOUBLE)\n"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let state: Vec<Value> = http().get(format!("{url}/_sim/state")).send().await.unwrap().json().await.unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let upns: Vec<&str> = state.iter().map(|u| u["userPrincipalName"].as_str().unwrap()).collect();
    for demo in ["staff0042@remedy.test", "staff0007@remedy.test", "staff0101@remedy.test", "staff0102@remedy.test"] {
        assert!(upns.contains(&demo), "{demo} in {upns:?}");
    }
    assert!(state.iter().any(|u| u["privilegedRole"] == true));
    assert!(
        state.iter().any(|u| u["onPremisesSyncEnabled"] == true)
            && state.iter().any(|u| u["onPremisesSyncEnabled"] == false)
    );
}
