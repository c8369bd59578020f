//! `swarmcdn-sim`: runs scenario files, merges shards, and measures the simulator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use swarmcdn_sim::report::{self, Plan};
use swarmcdn_sim::scenario::Scenario;

/// The system allocator, counting the bytes allocated and not yet freed, so that `bench` can
/// report the heap per simulated peer (RSS also counts the allocator's free lists). Each
/// thread counts in a slot of its own cache line: runs on several threads would otherwise
/// pass one counter's line back and forth at every allocation. A thread may free what
/// another allocated, so a slot can go negative; the sum is the heap.
struct Counting;

#[repr(align(64))]
struct Slot(AtomicIsize);

const SLOT_COUNT: usize = 64;
static SLOTS: [Slot; SLOT_COUNT] = [const { Slot(AtomicIsize::new(0)) }; SLOT_COUNT];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
/// The highest heap seen by [`note_peak`].
static PEAK: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static MY_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn count(delta: isize) {
    let i = MY_SLOT
        .try_with(|s| {
            if s.get() == usize::MAX {
                s.set(NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOT_COUNT);
            }
            s.get()
        })
        .unwrap_or(0);
    SLOTS[i].0.fetch_add(delta, Ordering::Relaxed);
}

/// Bytes allocated and not yet freed.
fn live() -> usize {
    let sum: isize = SLOTS.iter().map(|s| s.0.load(Ordering::Relaxed)).sum();
    sum.max(0) as usize
}

/// Records the heap now towards the peak.
fn note_peak() -> usize {
    let now = live();
    PEAK.fetch_max(now, Ordering::Relaxed);
    now
}

// SAFETY: every call is forwarded unchanged to the system allocator; only counters are added.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        count(-(layout.size() as isize));
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as isize);
        }
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            count(new_size as isize - layout.size() as isize);
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
        /// Threads, each simulating a part of the swarms (default: available cores, at most
        /// one per swarm). The figures are those of one run: the parts do not interact.
        #[arg(long)]
        threads: Option<usize>,
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
            threads,
        } => {
            let threads = threads
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            bench(viewers, minutes, channels, threads)?;
        }
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

fn bench(viewers: u64, minutes: u64, channels: u32, threads: usize) -> anyhow::Result<()> {
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
    let parts = threads.clamp(1, channels.max(1) as usize) as u32;
    let before = peak_rss_kib();
    let heap_before = live();
    let runs = (0..parts)
        .map(|j| {
            let opts = swarmcdn_sim::sim::Options {
                part: (j, parts),
                ..swarmcdn_sim::sim::Options::new(1, false)
            };
            swarmcdn_sim::sim::Run::new(&sc, opts)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // The runs end by summing and dropping their nodes: the heap is read once every part
    // has reached the last sample (they wait for each other there), before any drops.
    let heap_at_end = AtomicUsize::new(0);
    let end = minutes * 60;
    let at_end = std::sync::Barrier::new(parts as usize);
    let wall = std::time::Instant::now();
    let results: Vec<swarmcdn_sim::metrics::Counters> = std::thread::scope(|s| {
        let handles: Vec<_> = runs
            .into_iter()
            .map(|run| {
                let (at_end, heap_at_end) = (&at_end, &heap_at_end);
                s.spawn(move || {
                    run.run(|t| {
                        note_peak();
                        if t == end {
                            if at_end.wait().is_leader() {
                                heap_at_end.store(note_peak(), Ordering::Relaxed);
                            }
                            at_end.wait();
                        }
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a part panicked"))
            .collect()
    });
    let wall = wall.elapsed().as_secs_f64();
    let heap_at_end = heap_at_end.into_inner();
    let mut counters: Option<swarmcdn_sim::metrics::Counters> = None;
    for c in results {
        match &mut counters {
            Some(whole) => whole.merge(&c),
            None => counters = Some(c),
        }
    }
    let mut counters = counters.expect("at least one part");
    counters.wall_seconds = wall;
    let after = peak_rss_kib();
    let s = counters.summary();
    let growth = after.saturating_sub(before) as f64 * 1024.0;
    let per_peer = growth / viewers as f64;
    // Segment bytes in memory: the nodes share equal copies, so each segment counts once.
    let cached = counters.segment_bytes_held_at_end as f64;
    let per_peer_state = (growth - cached).max(0.0) / viewers as f64;
    println!(
        "sim bench: {viewers} viewers x {minutes} min live over {channels} swarms (byte scale {}), \
         {parts} thread{}",
        sc.scale(),
        if parts == 1 { "" } else { "s" }
    );
    println!("  events            {}", s.events);
    println!(
        "  by kind           {}",
        counters
            .events_by_kind
            .iter()
            .map(|(k, n)| format!("{k} {:.1}%", *n as f64 * 100.0 / s.events.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  events/s          {:.0}", s.events_per_sec);
    println!("  wall              {:.1} s", s.wall_seconds);
    println!("  virtual/wall      {:.2}x", s.speedup);
    println!(
        "  peer-seconds/s    {:.0}",
        viewers as f64 * (minutes * 60) as f64 / s.wall_seconds
    );
    println!("  peak RSS          {} MiB", after / 1024);
    let heap = heap_at_end.saturating_sub(heap_before) as f64;
    let peak_heap = PEAK.load(Ordering::Relaxed);
    let arriving = counters.arriving_bytes_at_end as f64;
    let kib_per_peer = |b: f64| b.max(0.0) / viewers as f64 / 1024.0;
    println!(
        "  heap at the end   {:.1} KiB per peer, {:.1} KiB beyond segment bytes cached, {:.1} KiB \
         beyond those and the {:.1} KiB of segments arriving (peak heap {} MiB)",
        kib_per_peer(heap),
        kib_per_peer(heap - cached),
        kib_per_peer(heap - cached - arriving),
        kib_per_peer(arriving),
        peak_heap >> 20
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
