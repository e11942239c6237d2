//! `pathwatch doctor`.

/// Checks the host; returns the exit code.
pub fn main() -> u8 {
    eprintln!("doctor: not built yet");
    1
}
