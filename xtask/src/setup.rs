//! Installs what the machine lacks, and only that.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

use crate::util::{cargo, on_path, output, run};

/// What a command needs installed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Needs {
    pub(crate) wasm: bool,
    pub(crate) browser: bool,
    pub(crate) ffmpeg: bool,
    pub(crate) npm: bool,
}

impl Needs {
    pub(crate) fn everything() -> Self {
        Self {
            wasm: true,
            browser: true,
            ffmpeg: true,
            npm: true,
        }
    }
}

pub(crate) fn all(needs: Needs) -> anyhow::Result<()> {
    println!("==> set-up");
    if needs.wasm {
        wasm_target()?;
        wasm_bindgen_cli()?;
    }
    let mut apt = Vec::new();
    if needs.browser && !Path::new(&chromium()).is_file() {
        apt.push("chromium");
    }
    if needs.ffmpeg && !on_path("ffmpeg") {
        apt.push("ffmpeg");
    }
    if apt.is_empty() {
        if needs.browser {
            println!("    chromium: found at {}", chromium());
        }
        if needs.ffmpeg {
            println!("    ffmpeg: found");
        }
    } else {
        apt_install(&apt)?;
    }
    if needs.npm {
        npm_ci(Path::new("tests/browser"))?;
        npm_ci(Path::new("tracker/tests/interop"))?;
    }
    Ok(())
}

pub(crate) fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

fn wasm_target() -> anyhow::Result<()> {
    let installed = output("rustup", &["target", "list", "--installed"]).unwrap_or_default();
    if installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        println!("    wasm32-unknown-unknown: found");
        return Ok(());
    }
    run(
        "install the wasm32 target",
        Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]),
    )
}

/// The version of a package recorded in Cargo.lock.
pub(crate) fn locked_version(package: &str) -> anyhow::Result<String> {
    let lock = std::fs::read_to_string("Cargo.lock").context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line.trim() == format!("name = \"{package}\"")
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
                .and_then(|v| v.strip_suffix('"'))
        {
            return Ok(v.to_owned());
        }
    }
    bail!("{package} is not in Cargo.lock")
}

fn wasm_bindgen_cli() -> anyhow::Result<()> {
    let want = locked_version("wasm-bindgen")?;
    let have = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want.as_str()) {
        println!("    wasm-bindgen-cli {want}: found");
        return Ok(());
    }
    // Another install may be running (a previous, interrupted set-up): wait for it.
    while output("pgrep", &["-f", "cargo install wasm-bindgen-cli"]).is_some() {
        println!("    waiting for a wasm-bindgen-cli install already running...");
        std::thread::sleep(std::time::Duration::from_secs(15));
    }
    let have = output("wasm-bindgen", &["--version"]).unwrap_or_default();
    if have.split_whitespace().nth(1) == Some(want.as_str()) {
        println!("    wasm-bindgen-cli {want}: found");
        return Ok(());
    }
    println!(
        "    installing wasm-bindgen-cli {want} (pinned to Cargo.lock's wasm-bindgen; about 10 minutes)"
    );
    // Without --locked: a dependency it locks is not served by the registry here.
    run(
        "install wasm-bindgen-cli",
        cargo().args(["install", "wasm-bindgen-cli", "--version", &want]),
    )
}

fn is_root() -> bool {
    output("id", &["-u"]).is_some_and(|s| s.trim() == "0")
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    if !is_root() {
        bail!(
            "missing {}: install them (e.g. `sudo apt-get install -y {}`) or run as root",
            packages.join(" and "),
            packages.join(" ")
        );
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("apt-get install {}", packages.join(" ")),
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages),
    )
}

/// `npm ci` when node_modules is missing or was installed from another lock file. Install
/// scripts are skipped: none of our packages needs one, and some try to download prebuilt
/// binaries, which this network does not allow.
pub(crate) fn npm_ci(dir: &Path) -> anyhow::Result<()> {
    let lock = dir.join("package-lock.json");
    if !lock.is_file() {
        println!(
            "    {}: no package-lock.json, nothing to install",
            dir.display()
        );
        return Ok(());
    }
    let stamp = dir.join("node_modules").join(".xtask-lock");
    let lock_text = std::fs::read_to_string(&lock).context("reading package-lock.json")?;
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == lock_text) {
        println!("    npm packages of {}: found", dir.display());
        return Ok(());
    }
    if !on_path("npm") {
        bail!("npm is missing: install Node.js 20 and npm");
    }
    run(
        &format!("npm ci in {}", dir.display()),
        Command::new("npm").current_dir(dir).args([
            "ci",
            "--ignore-scripts",
            "--no-audit",
            "--no-fund",
        ]),
    )?;
    std::fs::write(&stamp, lock_text).context("writing the npm stamp")?;
    Ok(())
}

pub(crate) fn cargo_fuzz() -> anyhow::Result<()> {
    if output("cargo-fuzz", &["--version"]).is_some() {
        return Ok(());
    }
    run(
        "install cargo-fuzz",
        cargo().args(["install", "cargo-fuzz"]),
    )
}
