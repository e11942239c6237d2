//! `Config::parse` on arbitrary UTF-8: a configuration, or an error pointing at a line
//! and column inside the text, free of control characters. A configuration that parses then drives the detectors
//! over a scenario that gives each of them something to do.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use pathwatch::config::Config;
use pathwatch_fuzz::{assert_no_controls, build, pipeline, seeds};

/// Largest table capacity run through the detectors.
const MAX_CAP: u64 = 100_000;

fuzz_target!(init: seeds::init("config"), |data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match Config::parse(text, Path::new("fuzz.toml")) {
        Ok(cfg) => {
            let _ = cfg.kernel_config();
            let _ = cfg.known_probe_names();
            // The tables are allocated at their configured capacity (up to 1e8
            // entries, as documented): too slow to do per input, and not a bug.
            let caps = [
                cfg.dns.transactions_cap,
                cfg.dns.names_cap,
                cfg.dtls.flows_cap,
                cfg.pmtu.flows_cap,
                cfg.pmtu.kernel_flow_entries,
                cfg.output.findings_cap,
            ];
            if caps.iter().any(|c| c.0 > MAX_CAP) {
                return;
            }
            let frames = build::scenario(1_600_000_000_000_000_000);
            let frames: Vec<(u64, &[u8])> = frames.iter().map(|(t, f)| (*t, f.as_slice())).collect();
            pipeline::run(&cfg, text.len() % 2 == 0, &frames, pipeline::Check::JsonOnly);
        }
        Err(e) => {
            let lines = text.split('\n').collect::<Vec<_>>();
            assert!(e.line >= 1 && e.line <= lines.len(), "line {} of {}: {e}", e.line, lines.len());
            let width = lines[e.line - 1].chars().count();
            assert!(e.column >= 1 && e.column <= width + 1, "column {} of a {width}-char line: {e}", e.column);
            assert!(e.to_string().starts_with(&format!("fuzz.toml:{}:{}: ", e.line, e.column)), "{e}");
            // Printed to a terminal by `pathwatch config check`: a key or value quoted
            // back from the file must not carry its control characters along.
            assert_no_controls("config error", &e.to_string());
        }
    }
});
