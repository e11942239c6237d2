//! `pathwatch lab`.

pub mod netns;
use crate::cli::LabArgs;

/// Runs the lab; returns the exit code.
pub fn main(_args: LabArgs) -> u8 {
    eprintln!("lab: not built yet");
    1
}
