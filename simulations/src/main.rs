//! `swarmcdn-sim`: runs scenario files, merges shards, and measures the simulator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use swarmcdn_sim::report::{self, Plan};
use swarmcdn_sim::scenario::Scenario;

/// The system allocator, counting the bytes allocated and not yet freed, so that `bench` can
/// report the heap per simulated peer (RSS also counts the allocator's free lists).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            let live = LIVE.fetch_add(new_size, Ordering::Relaxed) + new_size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

#[derive(Parser)]
#[command(version, about = "SwarmCDN swarm simulations (docs/simulations.md)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs a scenario over several seeds, each with its CDN-only control, and writes
    /// summary.json, runs/*.json, timeseries-seed-*.csv and plot.svg.
    Run {
        /// The scenario file.
        scenario: PathBuf,
        /// Seeds 1..=N (default: the scenario's `seeds`).
        #[arg(long)]
        seeds: Option<u64>,
        /// Run only this seed.
        #[arg(long, conflicts_with = "seeds")]
        seed: Option<u64>,
        /// Output folder (default target/sim/<scenario file name>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run shard i of n (channels with channel % n == i); merge the shards with `merge`.
        #[arg(long, default_value = "0/1", value_parser = parse_shard)]
        shard: (u32, u32),
        /// Skip the CDN-only control runs.
        #[arg(long)]
        no_control: bool,
        /// Runs at once (default: available cores).
        #[arg(long)]
        threads: Option<usize>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        /// Override a scenario value: `--set population.arrivals.count=50` (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Measures the simulator: a live event of `viewers` viewers over `channels` swarms for
    /// `minutes` virtual minutes (residential capacities and NAT), and prints events/s, wall
    /// time, virtual seconds per wall second and memory per peer.
    Bench {
        /// Viewers (all join in the first minute and stay).
        #[arg(long, default_value_t = 10_000)]
        viewers: u64,
        /// Virtual minutes.
        #[arg(long, default_value_t = 2)]
        minutes: u64,
        /// Swarms the viewers are spread over.
        #[arg(long, default_value_t = 10)]
        channels: u32,
    },
    /// Sums the shards of runs (folders written by `run --shard`, or run files) and writes
    /// the summary, series and plot of the whole.
    Merge {
        /// Output folders of the shards, or run files.
        inputs: Vec<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (i, n) = s.split_once('/').ok_or("expected i/n, e.g. 0/4")?;
    let i: u32 = i.parse().map_err(|e| format!("{e}"))?;
    let n: u32 = n.parse().map_err(|e| format!("{e}"))?;
    if n == 0 || i >= n {
        return Err("shard i/n needs 0 <= i < n".into());
    }
    Ok((i, n))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Run {
            scenario,
            seeds,
            seed,
            out,
            shard,
            no_control,
            threads,
            quiet,
            overrides,
        } => {
            let sc = Scenario::load_with(&scenario, &overrides)?;
            let seeds = match (seed, seeds) {
                (Some(s), _) => vec![s],
                (None, Some(n)) => (1..=n).collect(),
                (None, None) => (1..=sc.seeds).collect(),
            };
            if seeds.is_empty() {
                bail!("no seed to run");
            }
            let out = out.unwrap_or_else(|| {
                let stem = scenario
                    .file_stem()
                    .map_or("scenario".into(), |s| s.to_string_lossy().into_owned());
                PathBuf::from("target/sim").join(stem)
            });
            let plan = Plan {
                seeds,
                control: !no_control,
                shard,
                threads: threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
                progress: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let runs = report::run_all(&sc, &plan)?;
            report::write_runs(&out, &runs)?;
            let summary = report::write_report(&out, &sc.name, &runs)?;
            print!("{}", report::table(&summary));
            println!("wrote {}", out.display());
        }
        Command::Bench {
            viewers,
            minutes,
            channels,
        } => bench(viewers, minutes, channels)?,
        Command::Merge { inputs, out } => {
            let runs = report::merge(&inputs)?;
            let name = runs[0].scenario.clone();
            report::write_runs(&out, &runs).context("write merged runs")?;
            let summary = report::write_report(&out, &name, &runs)?;
            print!("{}", report::table(&summary));
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}

fn bench(viewers: u64, minutes: u64, channels: u32) -> anyhow::Result<()> {
    let text = format!(
        r#"
        name = "bench"
        duration_secs = {duration}
        warmup_secs = 60
        [stream]
        kind = "live"
        segment_secs = 4
        ladder = [2.0]
        channels = {channels}
        [population]
        arrivals = {{ kind = "static", count = {viewers}, spread_secs = 60 }}
        capacity = {{ kind = "profile", name = "RES-US-2024" }}
        nat = {{ kind = "mix", name = "NAT-RES" }}
        "#,
        duration = minutes * 60 + 1,
    );
    let sc: Scenario = toml::from_str(&text).context("bench scenario")?;
    sc.check()?;
    let before = peak_rss_kib();
    let run = swarmcdn_sim::sim::Run::new(
        &sc,
        swarmcdn_sim::sim::Options {
            seed: 1,
            control: false,
            shard: (0, 1),
        },
    )?;
    let heap_before = LIVE.load(Ordering::Relaxed);
    // The run ends by summing and dropping the nodes: read the heap just before, at the last
    // sample of the series.
    let mut heap_at_end = 0;
    let end = minutes * 60;
    let counters = run.run(|t| {
        if t == end {
            heap_at_end = LIVE.load(Ordering::Relaxed);
        }
    });
    let after = peak_rss_kib();
    let s = counters.summary();
    let growth = after.saturating_sub(before) as f64 * 1024.0;
    let per_peer = growth / viewers as f64;
    // Segment bytes in memory: the nodes share equal copies, so each segment counts once.
    let cached = counters.segment_bytes_held_at_end as f64;
    let per_peer_state = (growth - cached).max(0.0) / viewers as f64;
    println!(
        "sim bench: {viewers} viewers x {minutes} min live over {channels} swarms (byte scale {})",
        sc.scale()
    );
    println!("  events            {}", s.events);
    println!("  events/s          {:.0}", s.events_per_sec);
    println!("  wall              {:.1} s", s.wall_seconds);
    println!("  virtual/wall      {:.2}x", s.speedup);
    println!(
        "  peer-seconds/s    {:.0}",
        viewers as f64 * (minutes * 60) as f64 / s.wall_seconds
    );
    println!("  peak RSS          {} MiB", after / 1024);
    let heap = heap_at_end.saturating_sub(heap_before) as f64;
    let arriving = counters.arriving_bytes_at_end as f64;
    let kib_per_peer = |b: f64| b.max(0.0) / viewers as f64 / 1024.0;
    println!(
        "  heap at the end   {:.1} KiB per peer, {:.1} KiB beyond segment bytes cached, {:.1} KiB \
         beyond those and the {:.1} KiB of segments arriving (peak heap {} MiB)",
        kib_per_peer(heap),
        kib_per_peer(heap - cached),
        kib_per_peer(heap - cached - arriving),
        kib_per_peer(arriving),
        PEAK.load(Ordering::Relaxed) >> 20
    );
    println!(
        "  memory per peer   {:.1} KiB (peak RSS growth / viewers), {:.1} KiB beyond the {:.1} KiB of segment bytes held",
        per_peer / 1024.0,
        per_peer_state / 1024.0,
        cached / viewers as f64 / 1024.0
    );
    println!(
        "  segments          {:.1} KiB cached per peer, held once: {:.1} MiB in all",
        counters.cached_bytes_at_end as f64 / viewers as f64 / 1024.0,
        cached / (1 << 20) as f64
    );
    println!(
        "  offload           {:.3} (bound {:.3})",
        s.offload, s.offload_bound
    );
    println!("  rebuffering       {:.5}", s.rebuffering_ratio);
    Ok(())
}

/// Peak resident set size of this process in KiB (Linux), 0 elsewhere.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
