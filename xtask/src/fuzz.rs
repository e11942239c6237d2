//! `cargo xtask fuzz [TARGET] [--time SECS]`: libFuzzer (through cargo-fuzz) on the
//! capture reader, the classifier, the decoders, the event records, the configuration
//! and the detectors, and the kernel programs against the classifier.
//!
//! The fuzz project is `tests/fuzz` (its own workspace). Steps: setup (the agent's
//! build script builds the eBPF programs), cargo-fuzz installed if missing, a
//! toolchain that accepts libFuzzer's unstable flags chosen (below), every target
//! built once, each target's corpus seeded from `tests/pcaps` (the target binary
//! writes its own seeds: `tests/fuzz/src/seeds.rs`), then each target fuzzed for
//! `--time` seconds. A crash stops that target and fails the command; the input is in
//! `tests/fuzz/artifacts/TARGET/`. The end prints executions, coverage and crashes
//! per target.

use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context, Result, bail};

use crate::{setup, sh};

const P: &str = "fuzz:";
/// Overrides the toolchain choice (any rustup toolchain name).
const TOOLCHAIN_ENV: &str = "PATHWATCH_FUZZ_TOOLCHAIN";
/// Toolchains tried in order: a nightly takes libFuzzer's `-Z` flags as they are;
/// stable and Debian's rustc-web (which `cargo xtask setup` links) take them with
/// `RUSTC_BOOTSTRAP=1`. Fuzzing needs no `rust-src`, so any nightly will do.
const CANDIDATES: [&str; 3] = ["nightly", "stable", "debian-web"];

/// One fuzz target.
struct Target {
    name: &'static str,
    /// libFuzzer's `-max_len`.
    max_len: usize,
    /// A dictionary under `tests/fuzz/dicts`.
    dict: Option<&'static str>,
    /// Loads the kernel programs (root or CAP_BPF).
    needs_bpf: bool,
}

const TARGETS: [Target; 7] = [
    Target { name: "capture", max_len: 65536, dict: None, needs_bpf: false },
    Target { name: "classify", max_len: 4096, dict: None, needs_bpf: false },
    Target { name: "decoders", max_len: 1024, dict: None, needs_bpf: false },
    Target { name: "event", max_len: 1024, dict: None, needs_bpf: false },
    Target { name: "config", max_len: 4096, dict: Some("config.dict"), needs_bpf: false },
    Target { name: "detectors", max_len: 16384, dict: None, needs_bpf: false },
    Target { name: "differential", max_len: 4096, dict: None, needs_bpf: true },
];

/// Arguments for `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct Args {
    /// The target to fuzz (all, one after the other, when omitted).
    #[arg(value_parser = TARGETS.map(|t| t.name))]
    pub(crate) target: Option<String>,
    /// Seconds to fuzz each target.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub(crate) time: u64,
    /// Passed to libFuzzer after the project's own flags (e.g. `-- -jobs=2`).
    #[arg(last = true, value_name = "LIBFUZZER_ARGS")]
    pub(crate) libfuzzer_args: Vec<String>,
}

/// The toolchain cargo-fuzz runs with, whether it needs `RUSTC_BOOTSTRAP=1`, and
/// whether it ships AddressSanitizer's runtime (Debian's rustc-web does not: its
/// targets are then built without a sanitizer, which safe Rust mostly does not need).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Choice {
    name: String,
    bootstrap: bool,
    asan: bool,
}

/// The override if set, else the first of [`CANDIDATES`] whose `rustc -V` works
/// (`versions`: each candidate's version line, or `None` when it is missing).
fn choose(override_name: Option<&str>, versions: &[(&str, Option<String>)]) -> Option<Choice> {
    let is_nightly = |v: &Option<String>| v.as_deref().is_some_and(|v| v.contains("-nightly"));
    if let Some(name) = override_name {
        let version = versions.iter().find(|(n, _)| *n == name).and_then(|(_, v)| v.clone());
        return Some(Choice { name: name.to_string(), bootstrap: !is_nightly(&version), asan: true });
    }
    versions.iter().find(|(_, v)| v.is_some()).map(|(name, v)| Choice {
        name: name.to_string(),
        bootstrap: !is_nightly(v),
        asan: true,
    })
}

/// What libFuzzer's final report said.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Stats {
    execs: Option<u64>,
    exec_per_sec: Option<u64>,
    cov: Option<u64>,
    ft: Option<u64>,
    corpus: Option<String>,
    new_units: Option<u64>,
    artifacts: Vec<String>,
}

impl Stats {
    /// Reads one line of libFuzzer's output into the stats.
    fn line(&mut self, line: &str) {
        let field = |key: &str| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == key).and(words.next()).map(str::to_string)
        };
        if line.contains(" cov: ") && line.starts_with('#') {
            self.cov = field("cov:").and_then(|v| v.parse().ok());
            self.ft = field("ft:").and_then(|v| v.parse().ok()).or(self.ft);
            self.corpus = field("corp:").or(self.corpus.take());
        }
        let stat = |key: &str| line.strip_prefix(key).and_then(|v| v.trim().parse::<u64>().ok());
        self.execs = stat("stat::number_of_executed_units:").or(self.execs);
        self.exec_per_sec = stat("stat::average_exec_per_sec:").or(self.exec_per_sec);
        self.new_units = stat("stat::new_units_added:").or(self.new_units);
        if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifacts.push(path.trim().to_string());
        }
    }
}

fn fmt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Runs setup, builds the targets, seeds their corpora and fuzzes them.
pub fn run(args: &Args) -> Result<()> {
    setup::run()?;
    ensure_cargo_fuzz()?;
    let override_name = std::env::var(TOOLCHAIN_ENV).ok().filter(|v| !v.is_empty());
    let versions: Vec<(&str, Option<String>)> = override_name
        .iter()
        .map(String::as_str)
        .chain(CANDIDATES)
        .map(|n| (n, sh::capture("rustup", &["run", n, "rustc", "-V"])))
        .collect();
    let Some(mut choice) = choose(override_name.as_deref(), &versions) else {
        bail!("no toolchain for cargo-fuzz: none of {} is installed (run `cargo xtask setup`)", CANDIDATES.join(", "));
    };
    choice.asan = has_asan_runtime(&choice.name);
    println!(
        "{P} toolchain {}{}{} ({})",
        choice.name,
        if choice.bootstrap { " with RUSTC_BOOTSTRAP=1" } else { "" },
        if choice.asan { "" } else { ", no AddressSanitizer runtime: --sanitizer none" },
        match &override_name {
            Some(_) => TOOLCHAIN_ENV.to_string(),
            None => format!("first present of {}", CANDIDATES.join(", ")),
        }
    );
    let targets: Vec<&Target> = TARGETS.iter().filter(|t| args.target.as_deref().is_none_or(|n| n == t.name)).collect();
    let mut runnable = Vec::new();
    for t in targets {
        if t.needs_bpf && !sh::is_root() {
            if std::env::var_os("PATHWATCH_REQUIRE_BPF").is_some() {
                bail!("target {} loads the kernel programs: run as root (PATHWATCH_REQUIRE_BPF is set)", t.name);
            }
            println!(
                "{P} SKIP {}: loads the kernel programs and needs root; set PATHWATCH_REQUIRE_BPF=1 to make this a failure",
                t.name
            );
            continue;
        }
        runnable.push(t);
    }
    let root = sh::workspace_root();
    let fuzz_dir = root.join("tests/fuzz");
    let mut build = cargo_fuzz(&choice, "build");
    if let [one] = runnable.as_slice() {
        build.arg(one.name);
    }
    sh::run(P, &mut build)?;

    let mut results = Vec::new();
    for t in runnable {
        let corpus = fuzz_dir.join("corpus").join(t.name);
        sh::run(
            P,
            cargo_fuzz(&choice, "run")
                .arg(t.name)
                .args(["--", "-runs=0"])
                .env("PATHWATCH_FUZZ_SEEDS", &corpus)
                .env("PATHWATCH_FUZZ_PCAPS", root.join("tests/pcaps")),
        )
        .with_context(|| format!("seeding {}", corpus.display()))?;
        let started = Instant::now();
        let (ok, stats) = fuzz_one(&choice, t, &fuzz_dir, args)?;
        results.push((t.name, ok, stats, started.elapsed()));
    }

    println!(
        "{P} {:<13} {:>8} {:>12} {:>8} {:>7} {:>7} {:>12}  result",
        "target", "time", "execs", "exec/s", "cov", "ft", "corpus"
    );
    let mut failed = Vec::new();
    for (name, ok, s, took) in &results {
        let result = match (ok, s.artifacts.is_empty()) {
            (true, _) => "ok".to_string(),
            (false, false) => format!("CRASH {}", s.artifacts.join(" ")),
            (false, true) => "FAILED (no crash input: see the log)".to_string(),
        };
        println!(
            "{P} {name:<13} {:>8} {:>12} {:>8} {:>7} {:>7} {:>12}  {result}",
            sh::fmt_duration(*took),
            fmt(s.execs),
            fmt(s.exec_per_sec),
            fmt(s.cov),
            fmt(s.ft),
            s.corpus.as_deref().unwrap_or("-"),
        );
        if !ok {
            failed.push(*name);
        }
    }
    if !failed.is_empty() {
        bail!(
            "{} failed; reproduce a crash with `rustup run {} cargo fuzz run --fuzz-dir tests/fuzz -a TARGET ARTIFACT`, \
             and turn the input into a byte-literal regression test",
            failed.join(", "),
            choice.name
        );
    }
    Ok(())
}

/// `rustup run TOOLCHAIN cargo fuzz SUBCOMMAND --fuzz-dir tests/fuzz -a`: debug
/// assertions (overflow checks) on, so arithmetic that would wrap is a crash.
fn cargo_fuzz(choice: &Choice, subcommand: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.current_dir(sh::workspace_root());
    cmd.args(["run", &choice.name, "cargo", "fuzz", subcommand, "--fuzz-dir", "tests/fuzz", "-a"]);
    if !choice.asan {
        cmd.args(["--sanitizer", "none"]);
    }
    if choice.bootstrap {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    cmd
}

/// Whether `toolchain`'s sysroot has `librustc-*_rt.asan.a` for some target.
fn has_asan_runtime(toolchain: &str) -> bool {
    let Some(sysroot) = sh::capture("rustup", &["run", toolchain, "rustc", "--print", "sysroot"]) else {
        return false;
    };
    let Ok(targets) = std::fs::read_dir(Path::new(&sysroot).join("lib/rustlib")) else {
        return false;
    };
    targets.flatten().any(|t| {
        std::fs::read_dir(t.path().join("lib"))
            .map(|libs| libs.flatten().any(|l| l.file_name().to_string_lossy().ends_with("_rt.asan.a")))
            .unwrap_or(false)
    })
}

/// Fuzzes one target for `args.time` seconds; its full output goes to
/// `tests/fuzz/artifacts/TARGET/fuzz.log`, the lines worth reading to the console.
fn fuzz_one(choice: &Choice, t: &Target, fuzz_dir: &Path, args: &Args) -> Result<(bool, Stats)> {
    let artifacts = fuzz_dir.join("artifacts").join(t.name);
    std::fs::create_dir_all(&artifacts)?;
    let log_path = artifacts.join("fuzz.log");
    let mut log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = cargo_fuzz(choice, "run");
    cmd.arg(t.name).arg("--").args([
        format!("-max_total_time={}", args.time),
        format!("-max_len={}", t.max_len),
        "-timeout=10".into(),
        "-print_final_stats=1".into(),
    ]);
    if let Some(dict) = t.dict {
        cmd.arg(format!("-dict={}", fuzz_dir.join("dicts").join(dict).display()));
    }
    cmd.args(&args.libfuzzer_args);
    println!("{P} == {} for {} s ==", t.name, args.time);
    println!("{P}  $ {}", sh::display(&cmd));
    let mut child = cmd.stderr(Stdio::piped()).spawn().context("starting cargo fuzz run")?;
    let mut stats = Stats::default();
    for line in BufReader::new(child.stderr.take().expect("piped")).lines() {
        let line = line.unwrap_or_default();
        writeln!(log, "{line}")?;
        stats.line(&line);
        // Every new input prints a NEW / REDUCE (/ NEW_FUNC) line: thousands in a long run.
        let noise = (line.starts_with('#') && (line.contains("\tNEW ") || line.contains("\tREDUCE ")))
            || line.trim_start().starts_with("NEW_FUNC[");
        if !noise {
            println!("{P}   {line}");
        }
    }
    let status = child.wait()?;
    println!("{P} {} {} (log: {})", t.name, if status.success() { "done" } else { "FAILED" }, rel(&log_path));
    Ok((status.success(), stats))
}

fn rel(p: &Path) -> String {
    p.strip_prefix(sh::workspace_root()).unwrap_or(p).display().to_string()
}

/// Installs cargo-fuzz unless `cargo fuzz --version` works.
fn ensure_cargo_fuzz() -> Result<()> {
    if let Some(v) = sh::capture("cargo", &["fuzz", "--version"]) {
        println!("{P} {v}");
        return Ok(());
    }
    println!("{P} cargo-fuzz is missing; installing it (about a minute)");
    sh::run(P, sh::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    let _: PathBuf = sh::which("cargo-fuzz").context("cargo-fuzz installed but not on PATH")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn nightly_first_then_stable_with_bootstrap_then_debian() {
        let all = [
            ("nightly", v("rustc 1.97.0-nightly (e50aa6fba 2026-05-19)")),
            ("stable", v("rustc 1.95.0 (x)")),
            ("debian-web", v("rustc 1.96.0")),
        ];
        assert_eq!(choose(None, &all), Some(Choice { name: "nightly".into(), bootstrap: false, asan: true }));
        assert_eq!(choose(None, &all[1..]), Some(Choice { name: "stable".into(), bootstrap: true, asan: true }));
        let debian_only = [("nightly", None), ("stable", None), ("debian-web", v("rustc 1.96.0"))];
        assert_eq!(choose(None, &debian_only), Some(Choice { name: "debian-web".into(), bootstrap: true, asan: true }));
        assert_eq!(choose(None, &[("nightly", None), ("stable", None)]), None);
    }

    #[test]
    fn override_wins_and_bootstraps_unless_nightly() {
        let all = [("nightly", v("rustc 1.97.0-nightly (x)")), ("stable", v("rustc 1.95.0 (x)"))];
        assert_eq!(choose(Some("stable"), &all), Some(Choice { name: "stable".into(), bootstrap: true, asan: true }));
        assert_eq!(
            choose(Some("nightly"), &all),
            Some(Choice { name: "nightly".into(), bootstrap: false, asan: true })
        );
        assert!(choose(Some("1.95.0"), &all).unwrap().bootstrap);
    }

    #[test]
    fn target_and_time_parse_and_unknown_targets_are_refused() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: Args,
        }
        let parse =
            |a: &[&str]| <Cli as clap::Parser>::try_parse_from(std::iter::once("fuzz").chain(a.iter().copied()));
        let a = parse(&["capture", "--time", "600", "--", "-jobs=2"]).unwrap().args;
        assert_eq!(
            (a.target.as_deref(), a.time, a.libfuzzer_args.as_slice()),
            (Some("capture"), 600, &["-jobs=2".to_string()][..])
        );
        let a = parse(&[]).unwrap().args;
        assert_eq!((a.target, a.time), (None, 60));
        assert!(parse(&["nonsense"]).is_err());
    }

    #[test]
    fn final_stats_and_artifacts_are_read() {
        let mut s = Stats::default();
        for line in [
            "#85\tINITED cov: 555 ft: 1217 corp: 24/323Kb exec/s: 0 rss: 45Mb",
            "#1000\tNEW    cov: 600 ft: 1300 corp: 30/330Kb lim: 4096 exec/s: 500 rss: 50Mb L: 12/40 MS: 1 ChangeBit-",
            "#244032\tDONE   cov: 1211 ft: 2786 corp: 388/325Kb lim: 65395 exec/s: 22184 rss: 491Mb",
            "stat::number_of_executed_units: 244032",
            "stat::average_exec_per_sec:     22184",
            "stat::new_units_added:          364",
            "artifact_prefix='/x/'; Test unit written to /x/crash-84905c1d",
        ] {
            s.line(line);
        }
        assert_eq!(
            (s.cov, s.ft, s.execs, s.exec_per_sec, s.new_units),
            (Some(1211), Some(2786), Some(244032), Some(22184), Some(364))
        );
        assert_eq!(s.corpus.as_deref(), Some("388/325Kb"));
        assert_eq!(s.artifacts, ["/x/crash-84905c1d"]);
    }
}
