//! `swarmcdn-tracker`: the WebTorrent-compatible tracker.
//!
//! Prints `listening on ws://<addr>` on stdout once bound; serves until SIGINT or SIGTERM, then
//! closes every client with a close frame and exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
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
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Make an ed25519 key pair for signing join tokens: prints the secret (keep it in the
    /// issuing backend) and the public key (for `tokens.keys`).
    Keygen,
    /// Issue a join token (for tests and small deployments; backends sign their own).
    Token {
        /// The issuer's secret key, as 64 hex digits.
        #[arg(long, env = "SWARMCDN_TOKEN_SECRET")]
        secret: String,
        /// The swarm id, as 40 hex digits.
        #[arg(long)]
        swarm: String,
        /// Seconds until it expires.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
        /// Bind it to this peer id (40 hex digits).
        #[arg(long)]
        peer: Option<String>,
        /// A seed token: its holder may announce with the role `seed` (the operator's seeds).
        /// A token for the all-zero swarm id grants it anyway.
        #[arg(long)]
        seed: bool,
    },
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn command(cmd: Cmd) -> anyhow::Result<()> {
    use swarmcdn_core::integrity::DigestSigner;
    use swarmcdn_core::token::JoinToken;
    match cmd {
        Cmd::Keygen => {
            let mut secret = [0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
            let public = DigestSigner::from_secret(secret).public_key();
            println!("secret = \"{}\"", hex::encode(secret));
            println!("public = \"{public}\"");
        }
        Cmd::Token {
            secret,
            swarm,
            ttl,
            peer,
            seed,
        } => {
            let mut key = [0u8; 32];
            hex::decode_to_slice(secret.trim(), &mut key).context("--secret: 64 hex digits")?;
            let token = JoinToken {
                swarm: swarm.parse().context("--swarm: 40 hex digits")?,
                expires: unix_now() + ttl,
                peer: peer
                    .map(|p| p.parse())
                    .transpose()
                    .context("--peer: 40 hex digits")?,
                seed,
            };
            println!("{}", token.sign(&key));
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(cmd) = args.command {
        return command(cmd);
    }
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
        print!("{}", config.to_toml_redacted());
        return Ok(());
    }
    let runtime = match config.threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .context("starting the runtime")?;
    runtime.block_on(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
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
