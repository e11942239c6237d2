//! `cargo xtask setup`: make this machine able to build and test pathwatch.
//!
//! It exists because the eBPF build (agent/build.rs through aya-build) needs things
//! plain cargo cannot provide: a compiler that can build `core` for bpfel, bpf-linker
//! built against LLVM 22, and, for the tests and the lab, real daemons from apt. Every
//! step checks first and does nothing when the machine already has what it needs, so
//! the other subcommands run it unconditionally. Each step prints what it did or
//! skipped and how long it took.

use std::{path::Path, time::Instant};

use anyhow::{Context, Result, bail};

use crate::{
    apt, sh,
    toolchain::{self, BPF_LINKER_VERSION, Choice, DEBIAN_PREFIX, DEBIAN_TOOLCHAIN, LLVM_BIN, NIGHTLY, OVERRIDE_ENV},
};

const P: &str = "setup:";

/// What setup settled on, for the callers' logs.
pub struct Ready {
    /// The rustup toolchain that builds the eBPF programs.
    pub toolchain: String,
    /// Its rustc version, `X.Y.Z`.
    pub rustc: String,
    /// bpf-linker's version.
    pub linker: String,
}

/// What one step did, for its log line.
enum Did {
    Done(String),
    Skipped(String),
    Checked(String),
}

/// Runs `f` as a named step and prints `setup: <verb> <what>: <detail> (<time>)`.
fn step<T>(what: &str, f: impl FnOnce() -> Result<(Did, T)>) -> Result<T> {
    let start = Instant::now();
    let (did, value) = f().with_context(|| format!("setup step `{what}`"))?;
    let (verb, detail) = match did {
        Did::Done(d) => ("done ", d),
        Did::Skipped(d) => ("skip ", d),
        Did::Checked(d) => ("check", d),
    };
    println!("{P} {verb} {what}: {detail} ({})", sh::fmt_duration(start.elapsed()));
    Ok(value)
}

/// Runs every step; see the module comment.
pub fn run() -> Result<Ready> {
    let start = Instant::now();
    let override_name = std::env::var(OVERRIDE_ENV).ok().filter(|v| !v.is_empty());
    let choice = step("eBPF toolchain", || detect(override_name.as_deref()))?;

    let mut wanted = vec![apt::LLVM];
    if choice.needs_debian_compiler() {
        wanted.extend(apt::COMPILER);
    }
    wanted.extend(apt::RUNTIME);
    step("Debian packages", || ensure_packages(&wanted, choice.needs_debian_compiler()))?;

    if let Choice::DebianWeb { link } = choice {
        step(&format!("rustup toolchain link {DEBIAN_TOOLCHAIN} {DEBIAN_PREFIX}"), || {
            if !link {
                return Ok((Did::Skipped("already linked".into()), ()));
            }
            sh::run(
                P,
                std::process::Command::new("rustup").args(["toolchain", "link", DEBIAN_TOOLCHAIN, DEBIAN_PREFIX]),
            )?;
            Ok((Did::Done("linked".into()), ()))
        })?;
    }
    let name = choice.name().to_string();
    let rustc = step(&format!("{name} compiler"), || verify_compiler(&name))?;
    let linker = step("bpf-linker", ensure_bpf_linker)?;

    println!("{P} eBPF toolchain {name} (rustc {rustc}), bpf-linker {linker}; {}", sh::fmt_duration(start.elapsed()));
    Ok(Ready { toolchain: name, rustc, linker })
}

/// Probes rustup and decides, saying why and that agent/build.rs will agree.
fn detect(override_name: Option<&str>) -> Result<(Did, Choice)> {
    if sh::which("rustup").is_none() {
        bail!("rustup is not on PATH; the project builds with rustup's stable toolchain");
    }
    let nightly = toolchain::sysroot(NIGHTLY);
    let nightly_src = nightly.as_deref().is_some_and(toolchain::has_core_src);
    let linked = toolchain::toolchain_listed(&toolchain::rustup_toolchains(), DEBIAN_TOOLCHAIN);
    let choice = toolchain::choose(override_name, nightly_src, linked);
    let why = match (override_name, &nightly) {
        (Some(o), _) => format!("{OVERRIDE_ENV}={o}"),
        (None, None) => "no rustup nightly".to_string(),
        (None, Some(s)) if nightly_src => format!("nightly has rust-src in {}", s.display()),
        (None, Some(s)) => format!("nightly has no rust-src in {}", s.display()),
    };
    let linked_note = if linked { "debian-web linked" } else { "debian-web not linked yet" };
    let detail = format!("{} ({why}; {linked_note}); agent/build.rs makes the same choice", choice.name());
    Ok((Did::Checked(detail), choice))
}

/// Installs the missing packages of `wanted` (and a too-old rustc-web), as root only.
fn ensure_packages(wanted: &[&'static str], debian_compiler: bool) -> Result<(Did, ())> {
    let Some(status) = apt::query(wanted)? else {
        let detail =
            format!("no dpkg-query (not Debian): make sure the equivalents of {} are installed", wanted.join(" "));
        return Ok((Did::Skipped(detail), ()));
    };
    let mut todo = apt::missing(wanted, &status);
    let mut why = String::new();
    if debian_compiler && !todo.contains(&"rustc-web") {
        let version = sh::capture("/usr/bin/rustc", &["-V"]).and_then(|v| toolchain::parse_version(&v));
        if let Some(v) = version.filter(|v| *v < toolchain::MIN_DEBIAN_RUSTC) {
            why = format!(
                " (rustc-web {} is older than {})",
                toolchain::version_string(v),
                toolchain::version_string(toolchain::MIN_DEBIAN_RUSTC)
            );
            for p in apt::COMPILER {
                if !todo.contains(p) {
                    todo.push(p);
                }
            }
        }
    }
    if todo.is_empty() {
        return Ok((Did::Skipped(format!("all {} installed: {}", wanted.len(), wanted.join(" "))), ()));
    }
    if !sh::is_root() {
        bail!(
            "missing Debian packages{why}: {}\nsetup must run as root to install them; as root, run:\n  {}\nthen run `cargo xtask setup` again",
            todo.join(" "),
            apt::root_commands(&todo)
        );
    }
    println!("{P} installing {} missing package(s){why}: {}", todo.len(), todo.join(" "));
    let t = Instant::now();
    apt::update(P)?;
    println!("{P}  apt-get update took {}", sh::fmt_duration(t.elapsed()));
    if todo.contains(&"tshark") {
        apt::preseed_wireshark(P)?;
    }
    apt::install(P, &todo)?;
    let still = apt::missing(wanted, &apt::query(wanted)?.unwrap_or_default());
    if !still.is_empty() {
        bail!("apt-get install finished but these are still not installed: {}", still.join(" "));
    }
    Ok((Did::Done(format!("installed {}{why}", todo.join(" "))), ()))
}

/// Checks that `name`'s sysroot has the `core` sources; returns its rustc version.
fn verify_compiler(name: &str) -> Result<(Did, String)> {
    let Some(sysroot) = toolchain::sysroot(name) else {
        bail!("`rustup run {name} rustc` does not work; is the toolchain installed?");
    };
    if !toolchain::has_core_src(&sysroot) {
        let hint = match name {
            DEBIAN_TOOLCHAIN => "install rust-web-src".to_string(),
            _ => format!("`rustup component add rust-src --toolchain {name}`, or unset {OVERRIDE_ENV}"),
        };
        bail!(
            "{} is missing, so `{name}` cannot build core for bpfel: {hint}",
            sysroot.join(toolchain::CORE_SRC).display()
        );
    }
    let line = toolchain::rustc_version(name).unwrap_or_default();
    let version = toolchain::parse_version(&line).map(toolchain::version_string).unwrap_or_else(|| "unknown".into());
    Ok((Did::Checked(format!("{line}; core sources under {}", sysroot.display())), version))
}

/// Installs bpf-linker 0.13.0 (built on LLVM 22) unless `bpf-linker --version` says so.
fn ensure_bpf_linker() -> Result<(Did, String)> {
    let current = toolchain::bpf_linker_version();
    if current.as_deref().is_some_and(|v| toolchain::linker_is(v, BPF_LINKER_VERSION)) {
        let at = sh::which("bpf-linker").map(|p| p.display().to_string()).unwrap_or_default();
        return Ok((Did::Skipped(format!("{BPF_LINKER_VERSION} already at {at}")), BPF_LINKER_VERSION.into()));
    }
    if !Path::new(LLVM_BIN).join("llvm-config").exists() {
        bail!(
            "{LLVM_BIN}/llvm-config is missing: bpf-linker needs {} (as root: {})",
            apt::LLVM,
            apt::root_commands(&[apt::LLVM])
        );
    }
    let had = current.unwrap_or_else(|| "none".into());
    println!("{P} installing bpf-linker {BPF_LINKER_VERSION} (found: {had}); this builds for about a minute");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(std::iter::once(LLVM_BIN.into()).chain(std::env::split_paths(&path)))?;
    let install = |locked: bool| {
        let mut cmd = sh::cargo();
        cmd.args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
        ]);
        if locked {
            cmd.arg("--locked");
        }
        cmd.env("PATH", &path);
        sh::run(P, &mut cmd)
    };
    if let Err(e) = install(true) {
        println!("{P}  {e:#}; retrying without --locked");
        install(false)?;
    }
    let now = toolchain::bpf_linker_version().unwrap_or_default();
    if !toolchain::linker_is(&now, BPF_LINKER_VERSION) {
        let at = sh::which("bpf-linker").map(|p| p.display().to_string()).unwrap_or_else(|| "nowhere on PATH".into());
        bail!(
            "after cargo install, `bpf-linker --version` says `{now}` (from {at}); another bpf-linker comes first on PATH"
        );
    }
    Ok((Did::Done(format!("installed {BPF_LINKER_VERSION}")), BPF_LINKER_VERSION.into()))
}
