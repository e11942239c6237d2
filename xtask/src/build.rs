//! `cargo xtask build`: a release build of everything, after setup.
//!
//! Exists so that a release build works on a fresh machine with one command: the
//! agent's build script compiles the eBPF programs, which needs setup's toolchain.

use std::time::Instant;

use anyhow::Result;

use crate::{setup, sh};

/// Runs setup, then `cargo build --release --workspace` (without the bpfel-only
/// `agent-ebpf`, which agent/build.rs builds and embeds).
pub fn run() -> Result<()> {
    let start = Instant::now();
    let ready = setup::run()?;
    sh::run("build:", sh::cargo().args(["build", "--release", "--workspace", "--exclude", "agent-ebpf"]))?;
    let bin = sh::target_dir().join("release/pathwatch");
    println!(
        "build: {} (eBPF programs by {} rustc {}, bpf-linker {}); {}",
        bin.display(),
        ready.toolchain,
        ready.rustc,
        ready.linker,
        sh::fmt_duration(start.elapsed())
    );
    Ok(())
}
