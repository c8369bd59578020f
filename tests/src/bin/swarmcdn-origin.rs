//! `swarmcdn-origin`: the test and demo HLS origin (VOD and looping live, from the sample media).
//!
//! Prints `listening on http://<addr>` on stdout once bound, then serves until SIGINT/SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use swarmcdn_tests::origin::{OriginConfig, default_media_dir, run};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Parser)]
#[command(version, about = "SwarmCDN test and demo HLS origin")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The media folder (master.m3u8 and one folder per rendition).
    #[arg(long, default_value_os_t = default_media_dir())]
    media: PathBuf,
    /// Seconds per segment (must divide the clip's length).
    #[arg(long, default_value_t = 2)]
    segment_duration: u32,
    /// Segments in the live playlist window.
    #[arg(long, default_value_t = 6)]
    window: usize,
    /// Media time, in seconds, the live clock starts at.
    #[arg(long, default_value_t = 0.0)]
    live_start_offset: f64,
    /// A folder served at `/` for every other path (demo pages, scripts).
    #[arg(long = "static")]
    static_dir: Option<PathBuf>,
    /// Send segment bodies at this many bytes per second (a slow origin).
    #[arg(long)]
    pace_bytes_per_sec: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let config = OriginConfig {
        media_dir: args.media,
        segment_duration: args.segment_duration,
        window: args.window,
        live_start_offset: args.live_start_offset,
        static_dir: args.static_dir,
        pace_bytes_per_sec: args.pace_bytes_per_sec,
    };
    let shutdown = CancellationToken::new();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(run(config, args.listen, shutdown.clone(), tx));
    let Ok((addr, _stats)) = rx.await else {
        // The server failed before binding: report its error.
        return server.await.context("origin task")?;
    };
    println!("listening on http://{addr}");
    use std::io::Write;
    std::io::stdout().flush().ok();
    tracing::info!(%addr, "origin up: /vod/master.m3u8, /live/master.m3u8, /stats");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
    server.await.context("origin task")?
}
