//! `graph-sim`: runs the Microsoft Graph TEST DOUBLE as a process (for the demo and scripts).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::Parser;
use remedy_graph_sim::{parse_duration, spawn_on, Sim, SimConfig, SimUser};

/// A Microsoft Graph TEST DOUBLE for remedy's tests and demo. It is NOT Microsoft Graph: it imitates
/// the documented wire contract of the token endpoint, /v1.0/users, revokeSignInSessions,
/// identityProtection/riskyUsers and $batch for one simulated tenant.
///
/// When ready it prints one line, `graph-sim listening on http://ADDR (a Microsoft Graph TEST DOUBLE)`,
/// to stdout. Its URL is both the authority host and the Graph URL. /_sim/* (state, log, sync, faults,
/// on-premises) has no authentication, so it listens on loopback only.
#[derive(Debug, Parser)]
#[command(name = "graph-sim", version)]
struct Args {
    /// YAML seed: tenantId, clientId, clientSecret, users (see tests/graph-sim/seed-example.yaml).
    #[arg(long, value_name = "FILE.yaml")]
    seed: PathBuf,
    /// Loopback address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// Added to every Graph request, e.g. 50ms (overrides the seed's latency).
    #[arg(long, value_parser = parse_duration)]
    latency: Option<Duration>,
    /// Keeps the users here (JSON) across restarts: read at start if it exists (instead of the seed's
    /// users), rewritten after every change.
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if !args.listen.ip().is_loopback() {
        bail!("graph-sim listens on loopback addresses only: /_sim has no authentication (got {})", args.listen);
    }
    let seed = std::fs::read_to_string(&args.seed).with_context(|| format!("reading {}", args.seed.display()))?;
    let mut config = SimConfig::from_yaml(&seed).map_err(|e| anyhow::anyhow!("{}: {e}", args.seed.display()))?;
    if let Some(latency) = args.latency {
        config.latency = latency;
    }
    if let Some(path) = args.state_file.as_deref().filter(|p| p.exists()) {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        config.users =
            serde_json::from_str::<Vec<SimUser>>(&text).with_context(|| format!("parsing {}", path.display()))?;
    }
    let sim = spawn_on(config, args.listen).await.with_context(|| format!("starting on {}", args.listen))?;
    println!("graph-sim listening on {} (a Microsoft Graph TEST DOUBLE)", sim.url());

    match &args.state_file {
        Some(path) => {
            tokio::select! {
                result = keep_state_file(&sim, path) => result?,
                _ = tokio::signal::ctrl_c() => write_state(&sim, path)?,
            }
        }
        None => tokio::signal::ctrl_c().await?,
    }
    tracing::info!("stopping");
    sim.shutdown().await;
    Ok(())
}

/// Rewrites the state file whenever the users change.
async fn keep_state_file(sim: &Sim, path: &Path) -> anyhow::Result<()> {
    let mut written = None;
    loop {
        let version = sim.users_version();
        if written != Some(version) {
            write_state(sim, path)?;
            written = Some(version);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn write_state(sim: &Sim, path: &Path) -> anyhow::Result<()> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, serde_json::to_vec_pretty(&sim.state())?)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}
