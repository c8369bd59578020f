//! `cargo xtask`: set-up and orchestration for SwarmCDN.
//!
//! - `cargo xtask setup`: installs what this machine lacks (and only that).
//! - `cargo xtask test`: set-up, then every check and test CI runs.
//! - `cargo xtask demo`: starts the demo (today: the origin and a page that plays it).
//! - `cargo xtask bench [args]`: the criterion benchmarks.
//! - `cargo xtask fuzz <target> [seconds]`: one fuzz target.

mod bench;
mod demo;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "SwarmCDN set-up and orchestration")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install what this machine lacks: the wasm32 target, wasm-bindgen-cli (pinned to
    /// Cargo.lock), Chromium and ffmpeg (apt, as root), the browser tests' npm packages.
    Setup,
    /// Build the browser client's npm package in target/npm/swarmcdn and print its size.
    Package,
    /// Set up, then run every check: fmt, clippy, all tests, the wasm32 build, the fuzz
    /// targets' build, the browser tests.
    Test(test::TestArgs),
    /// Start the demo and print the URL of its page.
    Demo(demo::DemoArgs),
    /// Run the criterion benchmarks (arguments go to `cargo bench`), `bench tracker [--rounds
    /// N] [--no-aquatic] [load generator options]` for the tracker against the npm
    /// bittorrent-tracker server and aquatic_ws (built from crates.io the first time; the
    /// servers take turns for N rounds, 3 by default, and medians are compared), or
    /// `bench seed [--seconds N]` for the seed's DataChannel egress.
    Bench {
        /// `tracker`, `seed`, `sim [--viewers N --minutes M --channels C]`, or arguments for
        /// `cargo bench` (e.g. `-p swarmcdn-core`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run one fuzz target with cargo-fuzz (installed when missing).
    Fuzz {
        /// The target (see fuzz/README.md).
        target: String,
        /// How long to run, in seconds.
        #[arg(default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    util::cd_repo_root()?;
    match cli.command {
        Command::Setup => setup::all(setup::Needs::everything()),
        Command::Package => {
            setup::all(setup::Needs {
                wasm: true,
                browser: false,
                ffmpeg: false,
                npm: false,
            })?;
            test::package()
        }
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench { args } if args.first().is_some_and(|a| a == "tracker") => {
            bench::tracker(&args[1..])
        }
        Command::Bench { args } if args.first().is_some_and(|a| a == "seed") => {
            bench::seed(&args[1..])
        }
        Command::Bench { args } if args.first().is_some_and(|a| a == "sim") => {
            bench::sim(&args[1..])
        }
        Command::Bench { args } => {
            let mut cmd = util::cargo();
            cmd.arg("bench").arg("--locked").args(&args);
            if args.is_empty() {
                cmd.arg("--workspace");
            }
            util::run("cargo bench", &mut cmd)
        }
        Command::Fuzz { target, seconds } => {
            setup::cargo_fuzz()?;
            let mut cmd = util::cargo();
            cmd.current_dir("fuzz").env("RUSTC_BOOTSTRAP", "1").args([
                "fuzz",
                "run",
                &target,
                "--",
                &format!("-max_total_time={seconds}"),
            ]);
            util::run(&format!("fuzz {target}"), &mut cmd)
        }
    }
}
