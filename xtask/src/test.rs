//! `cargo xtask test`: every check CI runs.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail, ensure};
use clap::Args;

use crate::setup::{self, Needs};
use crate::util::{self, Steps, cargo};

#[derive(Debug, Args)]
pub(crate) struct TestArgs {
    /// Skip the browser tests (and their set-up).
    #[arg(long)]
    no_browser: bool,
    /// Skip clippy.
    #[arg(long)]
    no_clippy: bool,
    /// Skip the set-up (assume everything is installed).
    #[arg(long)]
    skip_setup: bool,
}

pub(crate) fn run(args: &TestArgs) -> anyhow::Result<()> {
    let mut steps = Steps::default();
    if !args.skip_setup {
        steps.step("set-up", || {
            setup::all(Needs {
                wasm: true,
                browser: !args.no_browser,
                ffmpeg: true,
                npm: true,
            })
        })?;
    }
    steps.step("cargo fmt --check", || {
        util::run(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--check"]),
        )
    })?;
    if !args.no_clippy {
        steps.step("cargo clippy", || {
            util::run(
                "cargo clippy",
                cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--locked",
                    "--",
                    "-D",
                    "warnings",
                ]),
            )
        })?;
    }
    steps.step("cargo test", || {
        util::run(
            "cargo test",
            cargo().args(["test", "--workspace", "--locked"]),
        )
    })?;
    steps.step("wasm32 build + wasm-bindgen + package", wasm)?;
    steps.step("fuzz targets build", fuzz_build)?;
    steps.step("tracker interop (npm bittorrent-tracker)", interop)?;
    if !args.no_browser {
        steps.step("browser tests", browser)?;
    }
    steps.print();
    Ok(())
}

fn wasm() -> anyhow::Result<()> {
    package()?;
    let out = Path::new(PACKAGE_DIR);
    let wasm = out.join("swarmcdn_wasm_bg.wasm");
    ensure!(
        out.join("swarmcdn_wasm.js").is_file(),
        "wasm-bindgen wrote no JS"
    );
    let bytes = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let modules = wasm_import_modules(&bytes)?;
    if modules.iter().any(|m| m == "env") {
        bail!(
            "{} imports from \"env\" (an unresolved native symbol): {modules:?}",
            wasm.display()
        );
    }
    println!(
        "    {}: {} bytes, imports only from {modules:?}",
        wasm.display(),
        bytes.len()
    );
    Ok(())
}

/// Where `cargo xtask package` writes the npm package.
pub(crate) const PACKAGE_DIR: &str = "target/npm/swarmcdn";

/// Builds the browser client (wasm32, the `wasm` profile), runs wasm-bindgen, and assembles
/// the npm package: the JS module and its types, the wasm-bindgen glue and the `.wasm`. Prints
/// the sizes.
pub(crate) fn package() -> anyhow::Result<()> {
    util::run(
        "cargo build --target wasm32-unknown-unknown --profile wasm",
        cargo().args([
            "build",
            "--locked",
            "--profile",
            "wasm",
            "--target",
            "wasm32-unknown-unknown",
            "-p",
            "swarmcdn-core",
            "-p",
            "swarmcdn-wasm",
        ]),
    )?;
    let out = Path::new(PACKAGE_DIR);
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    util::run(
        "wasm-bindgen",
        Command::new("wasm-bindgen").args([
            "--target",
            "web",
            // Function names and the toolchain's signature are of no use to viewers.
            "--remove-name-section",
            "--remove-producers-section",
            "--out-dir",
            PACKAGE_DIR,
            "target/wasm32-unknown-unknown/wasm/swarmcdn_wasm.wasm",
        ]),
    )?;
    for f in ["swarmcdn.js", "swarmcdn.d.ts", "package.json", "README.md"] {
        std::fs::copy(Path::new("wasm-client/js").join(f), out.join(f))
            .with_context(|| format!("copying wasm-client/js/{f}"))?;
    }
    let _ = std::fs::remove_file(out.join(".gitignore"));
    let mut raw = 0u64;
    let mut gzipped = 0u64;
    for f in ["swarmcdn.js", "swarmcdn_wasm.js", "swarmcdn_wasm_bg.wasm"] {
        let path = out.join(f);
        raw += std::fs::metadata(&path)?.len();
        let gz = Command::new("gzip")
            .args(["-9", "-c"])
            .arg(&path)
            .output()
            .context("running gzip")?;
        ensure!(gz.status.success(), "gzip failed on {}", path.display());
        gzipped += gz.stdout.len() as u64;
    }
    println!(
        "    package {PACKAGE_DIR}: {} KB ({} KB gzipped) of JS and wasm (goal: at most 300 KB gzipped)",
        raw / 1000,
        gzipped / 1000
    );
    Ok(())
}

fn fuzz_build() -> anyhow::Result<()> {
    if !Path::new("fuzz/Cargo.toml").is_file() {
        return Ok(());
    }
    util::run(
        "cargo build (fuzz targets)",
        cargo()
            .args([
                "build",
                "--locked",
                "--manifest-path",
                "fuzz/Cargo.toml",
                "--bins",
            ])
            .env("CARGO_TARGET_DIR", "target/fuzz-build"),
    )
}

fn interop() -> anyhow::Result<()> {
    util::run(
        "build the tracker",
        cargo().args([
            "build",
            "--locked",
            "-p",
            "swarmcdn-tracker",
            "--bin",
            "swarmcdn-tracker",
        ]),
    )?;
    let root = std::env::current_dir()?;
    util::run(
        "tracker interop tests",
        Command::new("node")
            .current_dir("tracker/tests/interop")
            .args(["--test", "--test-concurrency=1"])
            .env("TRACKER_BIN", root.join("target/debug/swarmcdn-tracker")),
    )
}

fn browser() -> anyhow::Result<()> {
    util::run(
        "build the binaries the browser tests start",
        cargo().args([
            "build",
            "--locked",
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
    let root = std::env::current_dir()?;
    util::run(
        "browser tests",
        Command::new("node")
            .current_dir("tests/browser")
            .args(["--test", "--test-concurrency=1"])
            .env("ORIGIN_BIN", root.join("target/debug/swarmcdn-origin"))
            .env("CHROMIUM", setup::chromium()),
    )
}

/// The module names of a wasm binary's imports.
fn wasm_import_modules(b: &[u8]) -> anyhow::Result<Vec<String>> {
    ensure!(b.len() >= 8 && &b[..4] == b"\0asm", "not a wasm module");
    let mut r = Reader { b, pos: 8 };
    let mut modules = Vec::new();
    while r.pos < b.len() {
        let id = r.byte()?;
        let size = r.leb()? as usize;
        let end = r.pos + size;
        ensure!(end <= b.len(), "section runs past the end");
        if id == 2 {
            let count = r.leb()?;
            for _ in 0..count {
                let module = r.name()?;
                let _field = r.name()?;
                match r.byte()? {
                    0 => {
                        r.leb()?;
                    }
                    1 => {
                        r.byte()?;
                        r.limits()?;
                    }
                    2 => r.limits()?,
                    3 => {
                        r.byte()?;
                        r.byte()?;
                    }
                    4 => {
                        r.byte()?;
                        r.leb()?;
                    }
                    k => bail!("unknown import kind {k}"),
                }
                if !modules.contains(&module) {
                    modules.push(module);
                }
            }
        }
        r.pos = end;
    }
    Ok(modules)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> anyhow::Result<u8> {
        let v = *self.b.get(self.pos).context("truncated wasm")?;
        self.pos += 1;
        Ok(v)
    }

    fn leb(&mut self) -> anyhow::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.byte()?;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(v);
            }
        }
        bail!("bad LEB128 in wasm")
    }

    fn name(&mut self) -> anyhow::Result<String> {
        let len = self.leb()? as usize;
        let s = self
            .b
            .get(self.pos..self.pos + len)
            .context("truncated name")?;
        self.pos += len;
        Ok(String::from_utf8_lossy(s).into_owned())
    }

    fn limits(&mut self) -> anyhow::Result<()> {
        let flags = self.byte()?;
        self.leb()?;
        if flags & 1 != 0 {
            self.leb()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_import_modules() {
        // (module (import "env" "f" (func)) (import "wbg" "g" (func)))
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        let body: Vec<u8> = [
            vec![2], // two imports
            vec![3],
            b"env".to_vec(),
            vec![1],
            b"f".to_vec(),
            vec![0, 0],
            vec![3],
            b"wbg".to_vec(),
            vec![1],
            b"g".to_vec(),
            vec![0, 0],
        ]
        .concat();
        m.push(2);
        m.push(body.len() as u8);
        m.extend(body);
        assert_eq!(wasm_import_modules(&m).unwrap(), ["env", "wbg"]);
        assert!(wasm_import_modules(b"nope").is_err());
    }
}
