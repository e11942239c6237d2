//! `cargo xtask lab`: the zero-configuration demonstration, from a fresh clone.
//!
//! The lab itself is `pathwatch lab` (network namespaces, real daemons, the agent
//! live on the lab gateway); this command only makes sure the machine has the tools
//! and a release binary, then hands over to it.

use std::{os::unix::process::CommandExt, process::Command};

use anyhow::{Result, bail};

use crate::{setup, sh};

/// Arguments for `pathwatch lab`.
#[derive(clap::Args)]
pub struct Args {
    /// Passed to `pathwatch lab` unchanged (scenarios, `--json PATH|-`, `--keep`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    pub(crate) args: Vec<String>,
}

/// Runs setup, `cargo build --release -p pathwatch`, then execs
/// `target/release/pathwatch lab ARGS...`, whose exit code becomes ours.
pub fn run(args: &Args) -> Result<()> {
    setup::run()?;
    sh::run("lab:", sh::cargo().args(["build", "--release", "-p", "pathwatch"]))?;
    let bin = sh::target_dir().join("release/pathwatch");
    let mut cmd = Command::new(&bin);
    cmd.arg("lab").args(&args.args);
    println!("lab:  $ {} {}", bin.display(), sh::display(&cmd).split_once(' ').map_or("", |(_, rest)| rest));
    let err = cmd.exec();
    bail!("cannot run {}: {err}", bin.display())
}
