//! `pathwatch run` (live).
use crate::cli::RunArgs;

/// Runs the agent live; returns the exit code.
pub fn main(_args: RunArgs) -> u8 {
    eprintln!("run: not built yet");
    1
}
