//! Running commands with a heading, and small helpers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

/// Changes to the repository root (the parent of this crate's folder).
pub(crate) fn cd_repo_root() -> anyhow::Result<()> {
    let root = repo_root();
    std::env::set_current_dir(&root).with_context(|| format!("cd {}", root.display()))
}

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

/// The cargo that runs us (so the toolchain is the same).
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs a command, printing a heading and how long it took; fails on a non-zero exit.
pub(crate) fn run(name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    println!("\n==> {name}");
    println!("    $ {}", describe(cmd));
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{name} failed ({status}) after {secs:.1} s");
    }
    println!("    {name}: ok in {secs:.1} s");
    Ok(())
}

/// Runs a command and returns its stdout, or `None` if it cannot run or fails.
pub(crate) fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// A list of timed steps, printed as a table at the end.
#[derive(Debug, Default)]
pub(crate) struct Steps {
    done: Vec<(String, f64, bool)>,
}

impl Steps {
    /// Runs one step; on failure prints the summary and returns the error.
    pub(crate) fn step(
        &mut self,
        name: &str,
        f: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        let res = f();
        self.done
            .push((name.to_owned(), start.elapsed().as_secs_f64(), res.is_ok()));
        if res.is_err() {
            self.print();
        }
        res
    }

    pub(crate) fn print(&self) {
        println!("\n==> summary");
        for (name, secs, ok) in &self.done {
            println!(
                "    {:<40} {:>8.1} s  {}",
                name,
                secs,
                if *ok { "PASS" } else { "FAIL" }
            );
        }
    }
}
