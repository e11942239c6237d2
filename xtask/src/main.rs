//! `cargo xtask`: the project's own commands, so that a fresh clone on a fresh machine
//! needs exactly one command to build, test or demonstrate pathwatch.
//!
//! The eBPF programs need a compiler that can build `core` from source and the
//! `bpf-linker`, which plain `cargo` cannot install; every subcommand therefore runs
//! [`setup`] first and then the ordinary cargo commands. One module per subcommand
//! (`setup`, `build`, `test`, `lab`, `bench`, `fuzz`, `wild`), with `precision` (the
//! wild-corpus figure `bench precision` measures) and the helpers `apt`, `sh` and
//! `toolchain` beside them.

mod apt;
mod bench;
mod build;
mod fuzz;
mod lab;
mod precision;
mod setup;
mod sh;
mod test;
mod toolchain;
mod wild;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// pathwatch developer commands.
#[derive(Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (Debian packages, eBPF toolchain,
    /// bpf-linker); idempotent, skips whatever is already there.
    Setup,
    /// Setup, then a release build of the whole workspace.
    Build,
    /// The project's test command: setup, debug build of the binaries, `cargo test`.
    Test(test::Args),
    /// Setup, release build of `pathwatch`, then `pathwatch lab ARGS...`.
    Lab(lab::Args),
    /// Setup, release build, then the benchmarks (BENCHMARKS.md rewritten when all run).
    Bench(bench::Args),
    /// libFuzzer on the parsers, decoders, detectors and kernel programs (cargo-fuzz,
    /// tests/fuzz), seeded from tests/pcaps; a crash fails the command.
    Fuzz(fuzz::Args),
    /// Assemble the wild corpus (tests/wild/SOURCES.tsv) from repository snapshots
    /// already on this machine into target/wild (or $PATHWATCH_WILD); no network.
    Wild(wild::Args),
}

fn main() -> ExitCode {
    sh::ensure_cargo_bin_on_path();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|_| ()),
        Command::Build => build::run(),
        Command::Test(args) => test::run(&args),
        Command::Lab(args) => lab::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Wild(args) => wild::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("cargo xtask").chain(args.iter().copied())).unwrap().command
    }

    #[test]
    fn test_args_after_double_dash_reach_the_test_binaries() {
        let Command::Test(t) = parse(&["test", "--", "--skip", "live", "--nocapture"]) else { panic!() };
        assert_eq!(t.test_args, ["--skip", "live", "--nocapture"]);
        let Command::Test(t) = parse(&["test"]) else { panic!() };
        assert!(t.test_args.is_empty());
    }

    #[test]
    fn lab_args_pass_through_unchanged() {
        let Command::Lab(l) = parse(&["lab", "dns", "--json", "-", "--keep"]) else { panic!() };
        assert_eq!(l.args, ["dns", "--json", "-", "--keep"]);
        let Command::Lab(l) = parse(&["lab", "--json", "-", "pmtu"]) else { panic!() };
        assert_eq!(l.args, ["--json", "-", "pmtu"]);
        let Command::Lab(l) = parse(&["lab", "--", "--help"]) else { panic!() };
        assert_eq!(l.args, ["--help"]);
        let Command::Lab(l) = parse(&["lab"]) else { panic!() };
        assert!(l.args.is_empty());
    }
}
