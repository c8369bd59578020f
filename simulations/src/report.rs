//! Runs of a scenario over several seeds (and their CDN-only controls), and what they write:
//! a JSON file of raw counters per run (which `merge` sums across shards), `summary.json`
//! (per-seed figures, mean and 95% confidence interval over seeds, the control run and the
//! deltas), a CSV series per seed and an SVG plot.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Context;
use serde_json::{Value, json};

use crate::metrics::{Counters, Summary, mean_ci};
use crate::scenario::Scenario;
use crate::sim::{Options, Run};

/// How to run a scenario.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Seeds to run.
    pub seeds: Vec<u64>,
    /// Also run the CDN-only control of each seed.
    pub control: bool,
    /// Shard `i` of `n`.
    pub shard: (u32, u32),
    /// Runs at once.
    pub threads: usize,
    /// Show a progress bar.
    pub progress: bool,
}

/// How many parts to split each of `runs` runs into so that `threads` threads have work:
/// none while the runs alone keep them busy, nor beyond the shard's channels.
pub fn parts_for(sc: &Scenario, shard: (u32, u32), runs: usize, threads: usize) -> u32 {
    let channels = (0..sc.stream.channels)
        .filter(|c| c % shard.1 == shard.0)
        .count();
    if runs >= threads {
        return 1;
    }
    threads.div_ceil(runs.max(1)).min(channels.max(1)) as u32
}

/// Runs every (seed, control) pair of the plan, `threads` at a time. When there are fewer
/// runs than threads, each run is split by channel into parts run side by side (see
/// [`parts_for`]) and merged back: the counters are those of the unsplit run (sums of
/// floating-point figures to rounding), and its wall time is that of its parts together.
pub fn run_all(sc: &Scenario, plan: &Plan) -> anyhow::Result<Vec<Counters>> {
    let mut runs: Vec<Options> = Vec::new();
    for &seed in &plan.seeds {
        for control in [false, true] {
            if control && !plan.control {
                continue;
            }
            runs.push(Options {
                shard: plan.shard,
                ..Options::new(seed, control)
            });
        }
    }
    let threads = plan.threads.max(1);
    let parts = parts_for(sc, plan.shard, runs.len(), threads);
    let jobs: Vec<(usize, Options)> = runs
        .iter()
        .enumerate()
        .flat_map(|(i, o)| {
            (0..parts).map(move |j| {
                (
                    i,
                    Options {
                        part: (j, parts),
                        ..*o
                    },
                )
            })
        })
        .collect();
    let bar = if plan.progress {
        let b = indicatif::ProgressBar::new(jobs.len() as u64 * sc.duration_secs);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} virtual s ({eta} left) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b.set_message(sc.name.clone());
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    // Popped from the end: the first run's parts first.
    let queue = Mutex::new(jobs.into_iter().rev().collect::<Vec<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| -> anyhow::Result<()> {
        let mut handles = Vec::new();
        for _ in 0..threads {
            handles.push(s.spawn(|| -> anyhow::Result<()> {
                loop {
                    let Some((i, opts)) = queue.lock().expect("not poisoned").pop() else {
                        return Ok(());
                    };
                    let started = Instant::now();
                    let run = Run::new(sc, opts)?;
                    let mut last = 0;
                    let counters = run.run(|t| {
                        bar.inc(t.saturating_sub(last));
                        last = t;
                    });
                    bar.inc(sc.duration_secs.saturating_sub(last));
                    let span = (started, Instant::now());
                    results
                        .lock()
                        .expect("not poisoned")
                        .push((i, opts.part.0, span, counters));
                }
            }));
        }
        for h in handles {
            h.join().expect("a run panicked")?;
        }
        Ok(())
    })?;
    bar.finish_and_clear();
    let mut results = results.into_inner().expect("not poisoned");
    // Merged in part order, so the floating-point sums do not depend on which part ended
    // first.
    results.sort_by_key(|(i, j, _, _)| (*i, *j));
    let mut merged: Vec<(Counters, Instant, Instant)> = Vec::new();
    for (i, _, (start, end), c) in results {
        match merged.get_mut(i) {
            Some((whole, first, last)) => {
                whole.merge(&c);
                *first = (*first).min(start);
                *last = (*last).max(end);
            }
            None => merged.push((c, start, end)),
        }
    }
    Ok(merged
        .into_iter()
        .map(|(mut c, first, last)| {
            if parts > 1 {
                c.shards = vec![plan.shard];
                c.wall_seconds = (last - first).as_secs_f64();
            }
            c
        })
        .collect())
}

fn run_file_name(c: &Counters) -> String {
    let kind = if c.control { "control" } else { "p2p" };
    let shard = match c.shards.as_slice() {
        [(0, 1)] => String::new(),
        [(i, n)] => format!("-shard-{i}-of-{n}"),
        _ => "-merged".into(),
    };
    format!("seed-{}-{kind}{shard}.json", c.seed)
}

/// Writes the raw counters of each run into `dir/runs`.
pub fn write_runs(dir: &Path, runs: &[Counters]) -> anyhow::Result<()> {
    let runs_dir = dir.join("runs");
    std::fs::create_dir_all(&runs_dir).with_context(|| format!("create {}", runs_dir.display()))?;
    for c in runs {
        let path = runs_dir.join(run_file_name(c));
        std::fs::write(&path, serde_json::to_vec(c)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

/// Reads run files (or the `runs` folders of output directories) and sums the shards of each
/// (seed, control) pair.
pub fn merge(inputs: &[PathBuf]) -> anyhow::Result<Vec<Counters>> {
    let mut files = Vec::new();
    for p in inputs {
        if p.is_dir() {
            let dir = if p.join("runs").is_dir() {
                p.join("runs")
            } else {
                p.clone()
            };
            for e in std::fs::read_dir(&dir).with_context(|| format!("read {}", dir.display()))? {
                let path = e?.path();
                if path.extension().is_some_and(|x| x == "json") {
                    files.push(path);
                }
            }
        } else {
            files.push(p.clone());
        }
    }
    files.sort();
    let mut by_run: BTreeMap<(u64, bool), Counters> = BTreeMap::new();
    for f in files {
        let c: Counters = serde_json::from_slice(
            &std::fs::read(&f).with_context(|| format!("read {}", f.display()))?,
        )
        .with_context(|| format!("parse {}", f.display()))?;
        match by_run.get_mut(&(c.seed, c.control)) {
            Some(acc) => {
                anyhow::ensure!(
                    acc.scenario == c.scenario,
                    "{} is of scenario {}, not {}",
                    f.display(),
                    c.scenario,
                    acc.scenario
                );
                anyhow::ensure!(
                    !acc.shards.iter().any(|s| c.shards.contains(s)),
                    "{} repeats shard {:?}",
                    f.display(),
                    c.shards
                );
                acc.merge(&c);
            }
            None => {
                by_run.insert((c.seed, c.control), c);
            }
        }
    }
    anyhow::ensure!(!by_run.is_empty(), "no run files found");
    Ok(by_run.into_values().collect())
}

/// The figures compared across seeds and against the control.
const KEYS: [&str; 14] = [
    "offload",
    "offload_bound",
    "offload_ratio",
    "origin_egress_mbps_mean",
    "origin_egress_mbps_p95",
    "origin_copies_per_segment",
    "rebuffering_ratio",
    "startup_p50_secs",
    "startup_p95_secs",
    "live_latency_p50_secs",
    "live_latency_p95_secs",
    "tracker_messages_per_sec_mean",
    "ice_failure_ratio",
    "deadline_fallbacks",
];

fn field(s: &Summary, key: &str) -> f64 {
    serde_json::to_value(s)
        .ok()
        .and_then(|v| v.get(key).and_then(Value::as_f64))
        .unwrap_or(0.0)
}

fn aggregate(summaries: &[Summary]) -> Value {
    let mut out = serde_json::Map::new();
    for k in KEYS {
        let v: Vec<f64> = summaries.iter().map(|s| field(s, k)).collect();
        let (m, ci) = mean_ci(&v);
        out.insert(k.into(), json!({ "mean": m, "ci95": ci }));
    }
    Value::Object(out)
}

/// Writes `summary.json`, the CSV series and the plot; returns the summary.
pub fn write_report(dir: &Path, sc_name: &str, runs: &[Counters]) -> anyhow::Result<Value> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let p2p: Vec<&Counters> = runs.iter().filter(|c| !c.control).collect();
    let control: Vec<&Counters> = runs.iter().filter(|c| c.control).collect();
    let p2p_sum: Vec<Summary> = p2p.iter().map(|c| c.summary()).collect();
    let control_sum: Vec<Summary> = control.iter().map(|c| c.summary()).collect();
    let mut per_seed = Vec::new();
    for c in &p2p {
        let s = c.summary();
        let ctl = control
            .iter()
            .find(|k| k.seed == c.seed)
            .map(|k| k.summary());
        per_seed.push(json!({
            "seed": c.seed,
            "p2p": s,
            "control": ctl,
            "occupancy": c.occupancy,
            "viewer_sessions": c.sessions,
            "peers_created": c.peers_created,
        }));
        let csv = dir.join(format!("timeseries-seed-{}.csv", c.seed));
        std::fs::write(&csv, c.csv()).with_context(|| format!("write {}", csv.display()))?;
    }
    let agg = aggregate(&p2p_sum);
    let agg_control = aggregate(&control_sum);
    let delta = if control_sum.is_empty() {
        Value::Null
    } else {
        let pairs: Vec<(Summary, Summary)> = p2p
            .iter()
            .filter_map(|c| {
                control
                    .iter()
                    .find(|k| k.seed == c.seed)
                    .map(|k| (c.summary(), k.summary()))
            })
            .collect();
        let d = |f: &dyn Fn(&Summary, &Summary) -> f64| {
            let v: Vec<f64> = pairs.iter().map(|(a, b)| f(a, b)).collect();
            let (m, ci) = mean_ci(&v);
            json!({ "mean": m, "ci95": ci })
        };
        json!({
            "origin_egress_saving": d(&|a, b| if b.origin_egress_mbps_mean > 0.0 {
                1.0 - a.origin_egress_mbps_mean / b.origin_egress_mbps_mean
            } else { 0.0 }),
            "rebuffering_ratio": d(&|a, b| a.rebuffering_ratio - b.rebuffering_ratio),
            "startup_p50_secs": d(&|a, b| a.startup_p50_secs - b.startup_p50_secs),
            "startup_p95_secs": d(&|a, b| a.startup_p95_secs - b.startup_p95_secs),
        })
    };
    let summary = json!({
        "scenario": sc_name,
        "seeds": p2p.iter().map(|c| c.seed).collect::<Vec<_>>(),
        "p2p": agg,
        "control": if control_sum.is_empty() { Value::Null } else { agg_control },
        "p2p_minus_control": delta,
        "runs": per_seed,
    });
    let path = dir.join("summary.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("write {}", path.display()))?;
    if let Some(first) = p2p.first() {
        let ctl = control.iter().find(|k| k.seed == first.seed).copied();
        crate::plot::write(&dir.join("plot.svg"), sc_name, first, ctl)?;
    }
    Ok(summary)
}

/// A short table of the summary for the terminal.
pub fn table(summary: &Value) -> String {
    let mut s = format!(
        "{} (seeds {})\n",
        summary["scenario"].as_str().unwrap_or("?"),
        summary["seeds"]
    );
    s.push_str(&format!(
        "{:<32} {:>22} {:>22}\n",
        "", "p2p", "cdn-only control"
    ));
    for k in KEYS {
        let cell = |v: &Value| {
            if v.is_null() {
                "-".to_string()
            } else {
                format!(
                    "{:.4} ± {:.4}",
                    v[k]["mean"].as_f64().unwrap_or(0.0),
                    v[k]["ci95"].as_f64().unwrap_or(0.0)
                )
            }
        };
        s.push_str(&format!(
            "{k:<32} {:>22} {:>22}\n",
            cell(&summary["p2p"]),
            cell(&summary["control"])
        ));
    }
    if let Some(d) = summary["p2p_minus_control"].as_object() {
        for (k, v) in d {
            s.push_str(&format!(
                "delta {k:<26} {:>22}\n",
                format!(
                    "{:.4} ± {:.4}",
                    v["mean"].as_f64().unwrap_or(0.0),
                    v["ci95"].as_f64().unwrap_or(0.0)
                )
            ));
        }
    }
    s
}
