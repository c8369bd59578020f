//! `swarmcdn-tracker`: the WebTorrent-compatible tracker.
//!
//! Prints `listening on ws://<addr>` on stdout once bound; serves until SIGINT or SIGTERM, then
//! closes every client with a close frame and exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use swarmcdn_tracker::{Config, Tracker};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "SwarmCDN tracker (WebTorrent WebSocket tracker protocol)"
)]
struct Args {
    /// A TOML configuration file (see `--print-config` for every field and its default).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (overrides the file and SWARMCDN_TRACKER_LISTEN).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            Config::from_toml(&text).with_context(|| format!("in {}", path.display()))?
        }
        None => Config::default(),
    };
    config.apply_env()?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    config.validate()?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&config.log)
                .with_context(|| format!("log filter {:?}", config.log))?,
        )
        .with_writer(std::io::stderr)
        .init();

    let tracker = Tracker::bind(config).await?;
    println!("listening on ws://{}", tracker.local_addr());
    use std::io::Write;
    std::io::stdout().flush().ok();

    let shutdown = CancellationToken::new();
    let server = tokio::spawn(tracker.run(shutdown.clone()));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("signal received");
    shutdown.cancel();
    server.await.context("tracker task")?
}
