//! `peer-node`: the SwarmCDN seed node, its key generator, and a headless viewer.
//!
//! - `peer-node keygen --out seed.key`: writes an ed25519 key pair (`seed.key`, `seed.key.pub`).
//! - `peer-node seed --config seed.toml`: runs a seed (`--print-config` prints the defaults).
//! - `peer-node view <playlist-url> --tracker ws://…`: plays a stream headless and prints a
//!   JSON report (startup time, stalls, bytes from HTTP and from peers).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use swarmcdn_core::integrity::{PublicKey, TrustedKeys};
use swarmcdn_core::node::{IntegrityMode, NodeConfig, NodeRole};
use swarmcdn_peer_node::config::Config;
use swarmcdn_peer_node::driver::{self, LoopConfig};
use swarmcdn_peer_node::http::{HttpClient, Timeouts};
use swarmcdn_peer_node::rtc::RtcConfig;
use swarmcdn_peer_node::viewer::{self, PlayerConfig};
use swarmcdn_peer_node::{puller, seed, tracker};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "SwarmCDN seed node and headless viewer")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new ed25519 key pair for signing segment digests.
    Keygen {
        /// The secret key file to create (the public key goes to FILE.pub).
        #[arg(long, default_value = "seed.key")]
        out: PathBuf,
    },
    /// Run a seed node.
    Seed {
        /// The TOML configuration.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print the configuration (with every default) and exit.
        #[arg(long)]
        print_config: bool,
        /// Test helper: serve corrupt bytes to other seeds of the mesh.
        #[arg(long, hide = true)]
        mesh_lie_bytes: bool,
        /// Test helper: announce wrong digests to other seeds of the mesh.
        #[arg(long, hide = true)]
        mesh_lie_digests: bool,
    },
    /// Play a stream headless and report.
    View(ViewArgs),
    /// Measure DataChannel throughput on loopback: one sender to N receivers in this process.
    BenchDatachannels {
        /// Receivers.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Seconds of sending.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Message size in bytes (at most 262144).
        #[arg(long, default_value_t = 65536)]
        message: usize,
    },
}

#[derive(Debug, clap::Args)]
struct ViewArgs {
    /// The master (or media) playlist URL.
    url: String,
    /// Tracker WebSocket URL (repeat for several; rendezvous hashing picks one).
    #[arg(long = "tracker")]
    trackers: Vec<String>,
    /// A seed's public key (hex) whose digests are trusted (repeatable).
    #[arg(long = "trusted-key")]
    trusted_keys: Vec<String>,
    /// Accept digests from anyone (each chunk is still checked against its digest).
    #[arg(long, conflicts_with = "trusted_keys")]
    unverified: bool,
    /// Seconds to play.
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Which variant of the master playlist to play (0 = first).
    #[arg(long, default_value_t = 0)]
    rendition: usize,
    /// The operator's content id of the stream (must match the seeds').
    #[arg(long)]
    content_id: Option<String>,
    /// Local UDP address for WebRTC host candidates.
    #[arg(long, default_value = "0.0.0.0:0")]
    udp: String,
    /// Do not upload to peers.
    #[arg(long)]
    no_upload: bool,
    /// A join token for the stream's swarm, for trackers that require one
    /// (`swarmcdn-tracker token`).
    #[arg(long)]
    token: Option<String>,
    /// Write the JSON report here too.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Test helper: corrupt every segment chunk this viewer uploads.
    #[arg(long, hide = true)]
    corrupt_uploads: bool,
}

fn init_logs(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default.into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.command {
        Command::Keygen { out } => {
            let public = swarmcdn_peer_node::config::keygen(&out)?;
            println!("{public}");
            eprintln!(
                "secret key written to {} (keep it private); public key to {}.pub",
                out.display(),
                out.display()
            );
            Ok(())
        }
        Command::Seed {
            config,
            print_config,
            mesh_lie_bytes,
            mesh_lie_digests,
        } => {
            let mut config = match &config {
                Some(p) => Config::load(p)?,
                None if print_config => Config::default(),
                None => anyhow::bail!("--config is required (see --print-config)"),
            };
            if print_config {
                print!("{}", toml::to_string(&config)?);
                return Ok(());
            }
            config.mesh.lie_bytes = mesh_lie_bytes;
            config.mesh.lie_digests = mesh_lie_digests;
            init_logs(&config.log);
            rt.block_on(async {
                let shutdown = CancellationToken::new();
                spawn_signal_handler(shutdown.clone());
                let (tx, rx) = tokio::sync::oneshot::channel();
                let task = tokio::spawn(seed::run(config, shutdown.clone(), Some(tx)));
                if let Ok(addr) = rx.await {
                    // Scripts wait for this line (`/metrics`, `/stats`, `/health` are there).
                    println!("listening on http://{addr}");
                }
                task.await.context("seed task")?
            })
        }
        Command::BenchDatachannels {
            connections,
            seconds,
            message,
        } => {
            init_logs("error");
            anyhow::ensure!(
                (1..=262_144).contains(&message),
                "--message must be 1..=262144"
            );
            let r = rt.block_on(swarmcdn_peer_node::bench::run(
                connections,
                seconds,
                message,
            ))?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        Command::View(v) => {
            init_logs(&swarmcdn_peer_node::config::DEFAULT_LOG.replacen("info", "warn", 1));
            rt.block_on(view(v))
        }
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down");
        shutdown.cancel();
    });
}

async fn view(v: ViewArgs) -> anyhow::Result<()> {
    let url = url::Url::parse(&v.url).with_context(|| format!("bad URL {:?}", v.url))?;
    let integrity = if v.unverified {
        IntegrityMode::Unverified
    } else {
        anyhow::ensure!(
            !v.trusted_keys.is_empty(),
            "give the seeds' public keys with --trusted-key, or --unverified"
        );
        let keys: Vec<PublicKey> = v
            .trusted_keys
            .iter()
            .map(|k| {
                k.parse()
                    .map_err(|e| anyhow::anyhow!("--trusted-key {k:?}: {e}"))
            })
            .collect::<anyhow::Result<_>>()?;
        IntegrityMode::Verify(TrustedKeys::new(keys))
    };
    let http = HttpClient::new(Timeouts::default());
    let pulls = std::sync::Arc::new(puller::PullStats::default());
    let stream = puller::load_stream(&http, &url, v.content_id.as_deref(), 3, &pulls).await?;
    let rendition = stream
        .renditions
        .get(v.rendition)
        .with_context(|| format!("the stream has {} renditions", stream.renditions.len()))?
        .clone();
    // A media playlist that cannot be used is an error now, not a silent wait.
    puller::load_media(&http, &rendition, 3, &pulls).await?;
    let mut nc = NodeConfig::new(
        swarmcdn_peer_node::random_peer_id()?,
        stream.swarm,
        NodeRole::Viewer,
        integrity,
    );
    nc.upload.enabled = !v.no_upload;
    nc.join_token = v.token.clone();
    // Lets a tracker ask a seed on standby to join this swarm.
    nc.stream = Some(swarmcdn_core::ids::strip_query(url.as_str()).to_string());
    let lc = LoopConfig {
        trackers: tracker::ranked(&stream.swarm, &v.trackers),
        rtc: RtcConfig {
            udp_addrs: vec![v.udp.clone()],
            corrupt_uploads: v.corrupt_uploads,
            ..RtcConfig::default()
        },
        offer_timeout: Duration::from_secs(60),
        mesh: None,
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    let (node, task) = driver::spawn(nc, lc, http.clone(), shutdown.clone())?;
    let (latest_tx, latest_rx) = tokio::sync::watch::channel(None);
    tokio::spawn(puller::follow(
        http.clone(),
        rendition,
        node.inputs(),
        Some(latest_tx),
        pulls,
        shutdown.clone(),
    ));
    let report = viewer::play(
        node,
        http,
        latest_rx,
        PlayerConfig {
            duration: Duration::from_secs(v.duration),
            ..PlayerConfig::default()
        },
        shutdown.clone(),
    )
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
    let json = serde_json::to_string(&report)?;
    if let Some(p) = &v.report {
        std::fs::write(p, &json).with_context(|| format!("cannot write {}", p.display()))?;
    }
    println!("{json}");
    eprintln!(
        "startup {} ms, {} stalls ({} ms), {} segments, {} bytes from HTTP, {} from peers ({:.1}% P2P), {} uploaded, {} integrity failures",
        report.startup_ms.map_or("-".into(), |s| s.to_string()),
        report.stalls,
        report.stall_ms,
        report.segments.len(),
        report.http_bytes,
        report.p2p_bytes,
        report.p2p_share() * 100.0,
        report.uploaded_bytes,
        report.integrity_failures
    );
    Ok(())
}
