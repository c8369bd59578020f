//! `cargo xtask bench`: criterion benchmarks, the tracker benchmark against the npm
//! bittorrent-tracker server and aquatic_ws, the seed's DataChannel benchmark, and the simulator's.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::setup::{self, Needs};
use crate::util::{self, cargo};

/// Kills a child process when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn start(cmd: &mut Command) -> anyhow::Result<(Killed, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("starting a server")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .context("reading its first line")?;
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .to_owned();
    Ok((Killed(child), url))
}

fn figure(report: &str, key: &str) -> Option<f64> {
    report.lines().find_map(|l| {
        let i = l.find(key)?;
        l[i + key.len()..].split_whitespace().next()?.parse().ok()
    })
}

/// The soft limit on open files of this process.
fn nofile_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// `program`, run with at least `files` open files allowed (through `prlimit`, which raising
/// the hard limit needs root for, when the current limit is lower).
fn with_files(program: &str, files: u64) -> Command {
    if files <= nofile_limit() {
        return Command::new(program);
    }
    let mut c = Command::new("prlimit");
    c.arg(format!("--nofile={files}:{files}"))
        .arg("--")
        .arg(program);
    c
}

/// Same load against our tracker and against bittorrent-tracker; prints both and the ratios.
/// `--connections` above the open-file limit raises the limit for the servers and the load
/// generator (root needed); the load generator spreads connections over 127.0.0.x addresses.
pub(crate) fn tracker(args: &[String]) -> anyhow::Result<()> {
    let connections: u64 = args
        .iter()
        .position(|a| a == "--connections")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let files = connections + 4096;
    setup::all(Needs {
        wasm: false,
        browser: false,
        ffmpeg: false,
        npm: true,
    })?;
    util::run(
        "build the tracker and the load generator (release)",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "swarmcdn-tracker",
            "--bins",
        ]),
    )?;
    let config = std::env::temp_dir().join("swarmcdn-bench-tracker.toml");
    // No per-connection rate limit: the closed loop sends as fast as replies come back. One
    // thread, as bittorrent-tracker (one Node.js event loop): the least CPU per message.
    std::fs::write(
        &config,
        "log = \"warn\"\nthreads = 1\n[limits]\nmessages_per_second = 1000000.0\nmessage_burst = 1000000\n\
         max_connections_per_ip = 1000000\nmax_connections = 10000000\n",
    )?;
    // Each server's figure moves by a fifth or more between runs on a shared two-core
    // machine (how the load generator and the server share the cores decides how many
    // messages each system call carries): the servers take turns, and medians are compared.
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    let with_aquatic = !args.iter().any(|a| a == "--no-aquatic");
    let load_args: Vec<String> = {
        let mut v = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "--rounds" {
                it.next();
            } else if a != "--no-aquatic" {
                v.push(a.clone());
            }
        }
        v
    };
    // aquatic_ws, the fastest WebTorrent tracker known to us (the yardstick), built
    // from crates.io into target/bench-tools once. Without it the benchmark still runs.
    let mut aquatic = if with_aquatic {
        match install_aquatic() {
            Ok(path) => Some(path),
            Err(e) => {
                eprintln!("aquatic_ws left out: {e:#}");
                None
            }
        }
    } else {
        None
    };
    let load = |name: &str, url: &str, pid: u32, extra: &[&str]| -> anyhow::Result<String> {
        let out = with_files("target/release/swarmcdn-tracker-load", files)
            .args([
                "--url",
                url,
                "--server-pid",
                &pid.to_string(),
                "--name",
                name,
            ])
            .args(&load_args)
            .args(extra)
            .output()
            .context("running the load generator")?;
        if !out.status.success() {
            bail!(
                "load generator failed against {name}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{report}");
        Ok(report)
    };

    println!(
        "\n==> tracker benchmark ({rounds} rounds, same load, one server at a time; the load generator shares the machine)"
    );
    let (mut ours, mut theirs, mut aquatics) = (Vec::new(), Vec::new(), Vec::new());
    for round in 1..=rounds {
        println!("-- round {round} of {rounds}");
        let (server, url) = start(
            with_files("target/release/swarmcdn-tracker", files)
                .args(["--config"])
                .arg(&config)
                .args(["--listen", "127.0.0.1:0"]),
        )?;
        ours.push(load("swarmcdn-tracker", &url, server.0.id(), &[])?);
        drop(server);

        let (server, url) = start(
            with_files("node", files)
                .current_dir(Path::new("tracker/tests/interop"))
                .arg("bench-server.mjs"),
        )?;
        theirs.push(load("bittorrent-tracker (npm)", &url, server.0.id(), &[])?);
        drop(server);

        if let Some(program) = &aquatic {
            // aquatic_ws answers each answer with an announce response too: counted as
            // responses, without starting another announce of the closed loop.
            let run = start_aquatic(program, files).and_then(|(server, url)| {
                load(
                    "aquatic_ws 0.9.0",
                    &url,
                    server.0.id(),
                    &["--answers-get-responses"],
                )
            });
            match run {
                Ok(report) => aquatics.push(report),
                // It may not run here (io_uring refused, a locked-memory limit): the
                // comparison with bittorrent-tracker still stands.
                Err(e) => {
                    eprintln!("aquatic_ws left out: {e:#}");
                    aquatic = None;
                }
            }
        }
    }

    let median = |reports: &[String], key: &str| -> Option<f64> {
        let mut v: Vec<f64> = reports.iter().filter_map(|r| figure(r, key)).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(v[v.len() / 2])
    };
    for (other, reports) in [("bittorrent-tracker", &theirs), ("aquatic_ws", &aquatics)] {
        if reports.is_empty() {
            continue;
        }
        println!("\n==> ratio of the medians over {rounds} rounds (swarmcdn-tracker / {other})");
        for key in [
            "responses/s ",
            "responses per server CPU-second ",
            "announces/s ",
        ] {
            if let (Some(x), Some(y)) = (median(&ours, key), median(reports, key)) {
                println!(
                    "    {:<36} {:>10.0} vs {:>10.0}  = {:.2}x",
                    key.trim(),
                    x,
                    y,
                    x / y
                );
            }
        }
        let key = "server memory per idle connection ";
        if let (Some(x), Some(y)) = (median(&ours, key), median(reports, key)) {
            println!(
                "    {:<36} {:>8.2} KiB vs {:>8.2} KiB",
                "memory per idle connection", x, y
            );
        }
    }
    Ok(())
}

/// The aquatic_ws version the benchmark measures against.
const AQUATIC_VERSION: &str = "0.9.0";

/// `target/bench-tools/bin/aquatic_ws`, built with `cargo install` the first time (a few
/// minutes; its own target directory, so the workspace's lock file is not involved). A failed
/// install is not tried again on every run (it takes minutes before it fails): its error is
/// kept in `target/bench-tools/aquatic_ws-<version>.failed`, to delete for another try.
fn install_aquatic() -> anyhow::Result<std::path::PathBuf> {
    let root = Path::new("target/bench-tools");
    let program = root.join("bin/aquatic_ws");
    let stamp = root.join(format!("aquatic_ws-{AQUATIC_VERSION}"));
    if program.exists() && stamp.exists() {
        return Ok(program);
    }
    let failed = root.join(format!("aquatic_ws-{AQUATIC_VERSION}.failed"));
    if failed.exists() {
        bail!(
            "its install failed before (the error is in {}; delete that file to try again)",
            failed.display()
        );
    }
    // Not `--locked`: the release's lock file pins metrics 0.22.3, which this Rust refuses
    // (E0521); cargo takes the newest compatible versions instead.
    let installed = util::run(
        "install aquatic_ws (the fastest known WebTorrent tracker, for comparison)",
        cargo().args([
            "install",
            "aquatic_ws",
            "--version",
            AQUATIC_VERSION,
            "--force",
            "--root",
            "target/bench-tools",
            "--target-dir",
            "target/bench-tools/build",
        ]),
    );
    if let Err(e) = installed {
        std::fs::create_dir_all(root)?;
        std::fs::write(&failed, format!("{e:#}\n"))?;
        return Err(e);
    }
    std::fs::write(&stamp, "")?;
    Ok(program)
}

/// aquatic_ws on a free loopback port, with its defaults (one socket worker and one swarm
/// worker, at most 10 offers per announce); it prints no address, so the port is chosen here
/// and waited for.
fn start_aquatic(program: &Path, files: u64) -> anyhow::Result<(Killed, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = std::env::temp_dir().join(format!(
        "swarmcdn-bench-aquatic-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        format!("log_level = \"warn\"\n[network]\naddress = \"127.0.0.1:{port}\"\n"),
    )?;
    let child = with_files(program.to_str().context("a UTF-8 path")?, files)
        .arg("-c")
        .arg(&config)
        .spawn()
        .context("starting aquatic_ws")?;
    let mut server = Killed(child);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(addr).is_err() {
        if let Some(status) = server.0.try_wait()? {
            bail!("aquatic_ws exited ({status})");
        }
        if std::time::Instant::now() > deadline {
            bail!("aquatic_ws did not listen on {addr}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok((server, format!("ws://{addr}")))
}

/// DataChannel egress of this build: one sender to 1, 10 and 100 receivers on loopback.
pub(crate) fn seed(args: &[String]) -> anyhow::Result<()> {
    let seconds = args
        .windows(2)
        .find(|w| w[0] == "--seconds")
        .and_then(|w| w[1].parse::<u64>().ok())
        .unwrap_or(6);
    util::run(
        "build the peer node (release)",
        cargo().args([
            "build",
            "--release",
            "--locked",
            "-p",
            "swarmcdn-peer-node",
            "--bin",
            "peer-node",
        ]),
    )?;
    println!();
    println!(
        "  DataChannel egress on loopback, sender and receivers in one process on this machine"
    );
    println!("  (so the receivers' CPU is counted too), webrtc-rs with the seed's settings:");
    println!();
    println!(
        "  {:>11} {:>9} {:>11} {:>10} {:>14} {:>9}",
        "connections", "message", "Mbit/s", "setup s", "RSS/pair KiB", "CPU/s"
    );
    for (n, message) in [
        (1usize, 65536usize),
        (1, 262_144),
        (10, 65536),
        (100, 65536),
    ] {
        let out = Command::new("target/release/peer-node")
            .args(["bench-datachannels", "--connections", &n.to_string()])
            .args([
                "--seconds",
                &seconds.to_string(),
                "--message",
                &message.to_string(),
            ])
            .stderr(Stdio::inherit())
            .output()
            .context("running peer-node bench-datachannels")?;
        if !out.status.success() {
            bail!("peer-node bench-datachannels failed ({})", out.status);
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let f = |k: &str| json_number(&text, k).unwrap_or(f64::NAN);
        println!(
            "  {:>11} {:>9} {:>11.0} {:>10.2} {:>14.0} {:>9.2}",
            n,
            message,
            f("mbit_per_s"),
            f("setup_seconds"),
            f("rss_per_pair_kib"),
            f("cpu_per_s")
        );
    }
    Ok(())
}

/// The number after `"key":` in a flat JSON object.
fn json_number(text: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let i = text.find(&pat)? + pat.len();
    let rest = &text[i..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// The simulator: the event-queue micro-benchmark (timing wheel against a binary heap), then
/// a live run of many viewers (`swarmcdn-sim bench`, default 10k viewers x 2 min; pass
/// `--viewers 100000 --minutes 10` for the goal size).
pub(crate) fn sim(args: &[String]) -> anyhow::Result<()> {
    util::run(
        "event queue: timing wheel vs binary heap (criterion)",
        cargo().args([
            "bench",
            "--locked",
            "-p",
            "swarmcdn-sim",
            "--bench",
            "kernel",
        ]),
    )?;
    util::run(
        "simulated viewers",
        cargo()
            .args([
                "run",
                "--release",
                "--locked",
                "-p",
                "swarmcdn-sim",
                "--",
                "bench",
            ])
            .args(args),
    )
}
