//! `cargo xtask demo`: starts the demo processes (origin with the demo pages, tracker, a seed
//! node) and prints the page to open.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::setup::{self, Needs};
use crate::util::{self, cargo};

#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port of the origin (which also serves the demo page).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Port of the tracker.
    #[arg(long, default_value_t = 8000)]
    tracker_port: u16,
}

/// The demo's child processes; killed when dropped.
#[derive(Default)]
struct Children(Vec<(String, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (name, child) in &mut self.0 {
            if matches!(child.try_wait(), Ok(None)) {
                // SIGTERM first, for a clean shutdown; SIGKILL if it lingers.
                let _ = Command::new("kill").arg(child.id().to_string()).status();
                for _ in 0..20 {
                    if matches!(child.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = child.kill();
                let _ = child.wait();
                println!("    stopped {name}");
            }
        }
    }
}

/// Starts a process that prints `listening on <url>` and returns its URL.
fn start(children: &mut Children, name: &str, cmd: &mut Command) -> anyhow::Result<String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().expect("piped above");
    children.0.push((name.to_owned(), child));
    let (tx, rx) = mpsc::sync_channel(1);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("listening on ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(url) => Ok(url),
        Err(_) => bail!("{name} did not start (see its log above)"),
    }
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<()> {
    setup::all(Needs {
        wasm: true,
        browser: false,
        ffmpeg: false,
        npm: true,
    })?;
    // The browser client and the demo page beside it, served by the origin under /dist.
    crate::test::package()?;
    let dist = std::path::Path::new("tests/browser/dist");
    std::fs::create_dir_all(dist).context("creating tests/browser/dist")?;
    for f in ["swarmcdn.js", "swarmcdn_wasm.js", "swarmcdn_wasm_bg.wasm"] {
        std::fs::copy(
            std::path::Path::new(crate::test::PACKAGE_DIR).join(f),
            dist.join(f),
        )
        .with_context(|| format!("staging {f}"))?;
    }
    std::fs::copy("wasm-client/demo/index.html", dist.join("index.html"))
        .context("staging the demo page")?;
    util::run(
        "build the demo",
        cargo().args([
            "build",
            "-p",
            "swarmcdn-tests",
            "--bin",
            "swarmcdn-origin",
            "-p",
            "swarmcdn-tracker",
            "--bin",
            "swarmcdn-tracker",
            "-p",
            "swarmcdn-peer-node",
            "--bin",
            "peer-node",
        ]),
    )?;
    // The seed's signing key: made once, kept in target/demo.
    let demo_dir = std::path::Path::new("target/demo");
    std::fs::create_dir_all(demo_dir).context("creating target/demo")?;
    let key = demo_dir.join("seed.key");
    if !key.exists() {
        util::run(
            "make the demo seed's key",
            Command::new("target/debug/peer-node")
                .args(["keygen", "--out"])
                .arg(&key)
                .stdout(Stdio::null()),
        )?;
    }
    let public_key = std::fs::read_to_string(demo_dir.join("seed.key.pub"))
        .context("reading the demo seed's public key")?
        .trim()
        .to_owned();
    let (stop_tx, stop_rx) = mpsc::sync_channel::<()>(1);
    ctrlc::set_handler(move || {
        let _ = stop_tx.try_send(());
    })
    .context("installing the Ctrl-C handler")?;

    let mut children = Children::default();
    let origin = start(
        &mut children,
        "origin",
        Command::new("target/debug/swarmcdn-origin").args([
            "--listen",
            &format!("{}:{}", args.host, args.port),
            "--static",
            "tests/browser",
            // The live stream starts with half a minute of segments listed, so a page opened
            // at once joins a few segments behind the edge (with time for peers to deliver),
            // not at the edge where every segment is due the moment it appears.
            "--live-start-offset",
            "30",
        ]),
    )?;
    let tracker = start(
        &mut children,
        "tracker",
        Command::new("target/debug/swarmcdn-tracker")
            .args(["--listen", &format!("{}:{}", args.host, args.tracker_port)]),
    )?;
    let seed_config = demo_dir.join("seed.toml");
    std::fs::write(
        &seed_config,
        format!(
            "trackers = [{tracker:?}]\nkey_file = {:?}\nmetrics_listen = \"{}:0\"\n\n[[streams]]\nurl = \"{origin}/live/master.m3u8\"\n\n[webrtc]\nudp = [\"{}:0\"]\n",
            key.canonicalize().unwrap_or(key.clone()),
            args.host,
            args.host
        ),
    )
    .context("writing the demo seed's config")?;
    let seed = start(
        &mut children,
        "seed",
        Command::new("target/debug/peer-node")
            .args(["seed", "--config"])
            .arg(&seed_config),
    )?;
    let tracker_http = tracker.replacen("ws://", "http://", 1);
    println!();
    println!("  SwarmCDN demo is running.");
    println!();
    println!(
        "  Open the demo page (in two tabs to see P2P):\n    {origin}/dist/index.html?tracker={tracker}&key={public_key}"
    );
    println!("  Origin only:         {origin}/pages/live.html");
    println!("  Live playlist:       {origin}/live/master.m3u8");
    println!("  VOD playlist:        {origin}/vod/master.m3u8");
    println!("  Origin counters:     {origin}/stats");
    println!("  Tracker (WebSocket): {tracker}");
    println!("  Tracker stats:       {tracker_http}/stats   metrics: {tracker_http}/metrics");
    println!("  Seed node:           {seed}/stats   metrics: {seed}/metrics");
    println!("  Seed public key:     {public_key}");
    println!();
    println!("  A headless viewer (run several to see P2P):");
    println!(
        "    target/debug/peer-node view {origin}/live/master.m3u8 --tracker {tracker} --trusted-key {public_key} --udp {}:0",
        args.host
    );
    println!();
    println!("  Press Ctrl-C to stop.");
    // Wait for Ctrl-C / SIGTERM, or for a child to die.
    loop {
        if stop_rx.recv_timeout(Duration::from_millis(500)).is_ok() {
            break;
        }
        for (name, child) in &mut children.0 {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{name} exited ({status})");
            }
        }
    }
    println!("\n  stopping...");
    drop(children);
    Ok(())
}
