//! Builds the kernel programs (`agent-ebpf`) with aya-build and embeds them.
//!
//! The eBPF target needs a compiler that can build `core` from source: a rustup
//! nightly with `rust-src`, or Debian's `rustc-web` + `rust-web-src` linked as the
//! rustup toolchain `debian-web` and driven with `RUSTC_BOOTSTRAP=1`. `cargo xtask
//! setup` installs the latter when the former is missing; this script picks whichever
//! is present (or `PATHWATCH_EBPF_TOOLCHAIN`).

use std::{path::Path, process::Command};

const TOOLCHAIN_ENV: &str = "PATHWATCH_EBPF_TOOLCHAIN";

fn sysroot_has_core_src(toolchain: &str) -> bool {
    let Ok(out) = Command::new("rustup").args(["run", toolchain, "rustc", "--print", "sysroot"]).output() else {
        return false;
    };
    if !out.status.success() {
        return false;
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&sysroot).join("lib/rustlib/src/rust/library/core/src/lib.rs").exists()
}

fn is_nightly(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["run", toolchain, "rustc", "-V"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("nightly"))
        .unwrap_or(false)
}

fn main() {
    println!("cargo:rerun-if-env-changed={TOOLCHAIN_ENV}");
    let toolchain = match std::env::var(TOOLCHAIN_ENV) {
        Ok(t) if !t.is_empty() => t,
        _ => {
            if sysroot_has_core_src("nightly") {
                "nightly".to_string()
            } else if sysroot_has_core_src("debian-web") {
                "debian-web".to_string()
            } else {
                panic!(
                    "no toolchain can build the eBPF programs: need rustup nightly with rust-src, \
                     or Debian rustc-web + rust-web-src linked as `debian-web`. Run `cargo xtask setup`."
                );
            }
        }
    };
    if which_bpf_linker().is_none() {
        panic!("bpf-linker is not on PATH. Run `cargo xtask setup`.");
    }
    if !is_nightly(&toolchain) {
        // A stable compiler accepts `-Z build-std` only with RUSTC_BOOTSTRAP; aya-build
        // reads this variable to decide to pass it.
        // SAFETY: set_var is unsafe because another thread could read the environment
        // at the same time; this build script has started no thread (aya-build starts
        // its cargo child only below), so nothing else reads or writes it now.
        unsafe { std::env::set_var("RUSTC_BOOTSTRAP", "1") };
    }
    let package = aya_build::Package {
        name: "agent-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../agent-ebpf"),
        ..Default::default()
    };
    if let Err(e) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(&toolchain)) {
        panic!("building the eBPF programs with toolchain `{toolchain}` failed: {e:#}");
    }
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("bpf-linker")).find(|p| p.exists())
}
