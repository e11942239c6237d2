//! Shared pieces of the pathwatch fuzz targets: the output checks every target
//! applies, the frame-sequence input format, frame builders, and the seed corpus.
//!
//! Each target in `fuzz_targets/` is a few lines over these. The checks panic, so
//! that libFuzzer records the input as a crash.

pub mod build;
pub mod pipeline;
pub mod seeds;
pub mod sequence;

use pathwatch::config::Config;
use serde_json::Value;

/// Table capacities of [`small_config`]: above anything one input can fill, far
/// below the defaults, whose tables cost more to allocate than an input to run.
const SMALL_CAPS: &str = "[dns]\ntransactions_cap = 512\nnames_cap = 512\n[dtls]\nflows_cap = 512\n\
[pmtu]\nflows_cap = 512\nkernel_flow_entries = 512\n[output]\nfindings_cap = 512\n";

/// The default configuration with small tables (see [`SMALL_CAPS`]).
pub fn small_config() -> Config {
    Config::parse(SMALL_CAPS, std::path::Path::new("small-caps.toml")).expect("valid")
}

/// Panics unless `text` is printable ASCII (0x20-0x7e): what every line the agent
/// prints from packet data must be (no C0 control, no ESC, no DEL, no C1 control
/// smuggled in as UTF-8, nothing a terminal would interpret).
pub fn assert_printable(what: &str, text: &str) {
    if let Some((i, b)) = text.bytes().enumerate().find(|(_, b)| !(0x20..=0x7e).contains(b)) {
        panic!("{what}: byte {b:#04x} at {i} is not printable ASCII: {text:?}");
    }
}

/// Panics unless `text` holds no control character: C0 (below 0x20, ESC among them),
/// DEL, or a C1 control (U+0080-U+009F). Non-ASCII letters are allowed (they can come
/// from a configuration file).
pub fn assert_no_controls(what: &str, text: &str) {
    if let Some(c) = text.chars().find(|c| c.is_control()) {
        panic!("{what}: control character {:?} in {text:?}", c);
    }
}

/// Serialises `value` as the agent writes a JSON line, checks it has no control
/// character and parses back, and returns it.
pub fn json_line(what: &str, value: &Value) -> String {
    let line = value.to_string();
    assert_no_controls(what, &line);
    if let Err(e) = serde_json::from_str::<Value>(&line) {
        panic!("{what}: not valid JSON ({e}): {line}");
    }
    line
}
