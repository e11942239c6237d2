//! `cargo xtask test`: the project's one test command (README and CI call it).
//!
//! It exists because `cargo test` alone is not enough on a fresh clone: the agent's
//! build script needs setup's eBPF toolchain, and the integration tests in `tests/`
//! run the debug `pathwatch` binary, which `cargo test` does not build for them.
//! Phases: setup, `cargo build --bins`, `cargo test`, each timed; the environment
//! (notably `PATHWATCH_REQUIRE_BPF`) passes through to every test. Clippy is not part
//! of this command for now; it can join as a fourth phase when the tree is clean.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::{setup, sh};

const P: &str = "test:";
/// Cargo's workspace selection: everything but `agent-ebpf`, which only builds for
/// bpfel (agent/build.rs builds and embeds it).
const WORKSPACE: &[&str] = &["--workspace", "--exclude", "agent-ebpf"];

/// Arguments for `cargo xtask test`.
#[derive(clap::Args)]
pub struct Args {
    /// Passed to the test binaries, after `--` (e.g. `-- --skip live`, `-- --nocapture`).
    #[arg(last = true, value_name = "TEST_ARGS")]
    pub(crate) test_args: Vec<String>,
}

/// One timed phase and how it ended.
struct Phase {
    name: &'static str,
    took: Duration,
    ok: bool,
    note: String,
}

/// Runs the phases in order, stopping at the first failure, then prints the timings.
pub fn run(args: &Args) -> Result<()> {
    let start = Instant::now();
    match std::env::var("PATHWATCH_REQUIRE_BPF") {
        Ok(v) => {
            println!("{P} PATHWATCH_REQUIRE_BPF={v}: tests that need BPF fail instead of skipping")
        }
        Err(_) => println!("{P} PATHWATCH_REQUIRE_BPF unset: tests that need root/BPF may skip"),
    }
    let mut phases = Vec::new();
    let result = run_phases(args, &mut phases);
    println!("{P} phase timings:");
    for p in &phases {
        let status = if p.ok { "ok" } else { "FAILED" };
        println!("{P}   {:<6} {:>8}  {status}{}", p.name, sh::fmt_duration(p.took), p.note);
    }
    println!("{P}   {:<6} {:>8}", "total", sh::fmt_duration(start.elapsed()));
    result
}

fn run_phases(args: &Args, phases: &mut Vec<Phase>) -> Result<()> {
    timed(phases, "setup", || {
        let r = setup::run()?;
        Ok(format!("  (eBPF: {}, rustc {}, bpf-linker {})", r.toolchain, r.rustc, r.linker))
    })?;
    timed(phases, "build", || {
        // The integration tests run target/debug/pathwatch: build the binaries first.
        sh::run(P, sh::cargo().arg("build").args(WORKSPACE).arg("--bins"))?;
        Ok(format!("  ({})", sh::target_dir().join("debug/pathwatch").display()))
    })?;
    timed(phases, "test", || {
        let mut cmd = sh::cargo();
        // Every test binary runs even when an earlier one fails, so one run shows all failures.
        cmd.arg("test").args(WORKSPACE).arg("--no-fail-fast");
        if !args.test_args.is_empty() {
            cmd.arg("--").args(&args.test_args);
        }
        sh::run(P, &mut cmd)?;
        Ok(String::new())
    })?;
    Ok(())
}

/// Runs `f` as phase `name`, recording its time and outcome.
/// `f` returns a note for the timings table.
fn timed(phases: &mut Vec<Phase>, name: &'static str, f: impl FnOnce() -> Result<String>) -> Result<()> {
    println!("{P} == {name} ==");
    let start = Instant::now();
    let result = f();
    let took = start.elapsed();
    let note = result.as_ref().map(String::clone).unwrap_or_default();
    phases.push(Phase { name, took, ok: result.is_ok(), note });
    match result {
        Ok(_) => {
            println!("{P} {name} ok ({})", sh::fmt_duration(took));
            Ok(())
        }
        Err(e) => bail!("phase `{name}` failed after {}: {e:#}", sh::fmt_duration(took)),
    }
}
