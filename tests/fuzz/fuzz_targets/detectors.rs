//! A short capture (see `pathwatch_fuzz::sequence`) through the classifier, the
//! detectors and both renderers, as `replay` or `run` drive them: every line that
//! would be printed (decoded events, findings, the summary, JSON and human) is
//! printable ASCII, and every JSON line parses.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pathwatch::config::Config;
use pathwatch_fuzz::{pipeline, seeds, sequence, small_config};

static CONFIG: LazyLock<Config> = LazyLock::new(small_config);

fuzz_target!(init: seeds::init("detectors"), |data: &[u8]| {
    let s = sequence::decode(data);
    pipeline::run(&CONFIG, s.live, &s.frames, pipeline::Check::Printable);
});
