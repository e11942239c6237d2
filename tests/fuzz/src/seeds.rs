//! The seed corpus, generated from the captures in `tests/pcaps` by the target
//! binaries themselves, so that the seeds are exactly what each target takes:
//!
//! | target                   | one seed is                                          |
//! |--------------------------|------------------------------------------------------|
//! | `capture`                | a whole file (a larger one cut after its last record within 64 KiB) |
//! | `classify`, `differential` | one frame, converted to Ethernet                   |
//! | `decoders`               | the snap of a DNS, DTLS or ICMP-error event          |
//! | `event`                  | a ring-buffer record (header, then snap)             |
//! | `detectors`              | a run of event-bearing frames ([`crate::sequence`])  |
//! | `config`                 | the commented default file and a few variations     |
//!
//! `cargo xtask fuzz` runs each binary once with `PATHWATCH_FUZZ_SEEDS=DIR` before
//! fuzzing: [`init`] then writes the seeds into DIR and exits instead of fuzzing.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

use agent_common::{Direction, EventKind, event::HEADER_LEN};
use pathwatch::{
    capture::Capture,
    classify::{Classifier, link::to_ethernet},
    config::DEFAULT_TOML,
    event::Event,
};

use crate::{build, sequence};

/// Set to a directory: write the seeds there and exit.
pub const OUT_ENV: &str = "PATHWATCH_FUZZ_SEEDS";
/// Overrides where the captures are (default: `tests/pcaps` beside this crate).
pub const PCAPS_ENV: &str = "PATHWATCH_FUZZ_PCAPS";
/// Largest capture seed.
const CAPTURE_SEED_MAX: usize = 64 << 10;
/// Frames taken from one capture for the frame targets.
const FRAMES_PER_FILE: usize = 256;
/// Event-bearing frames in one `detectors` seed, and seeds per capture.
const RUN_LEN: usize = 48;
const RUNS_PER_FILE: usize = 4;

/// Called from each target's `init`: writes `target`'s seeds and exits when
/// [`OUT_ENV`] is set; otherwise does nothing.
pub fn init(target: &str) {
    let Some(out) = std::env::var_os(OUT_ENV) else { return };
    let pcaps = std::env::var_os(PCAPS_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../pcaps"));
    let seeds = generate(target, &pcaps);
    let out = PathBuf::from(out);
    if let Err(e) = write(&out, &seeds) {
        eprintln!("seeds: cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    eprintln!("seeds: {} inputs for `{target}` from {} in {}", seeds.len(), pcaps.display(), out.display());
    std::process::exit(0);
}

/// The seeds of `target`, de-duplicated, from the captures under `pcaps`.
pub fn generate(target: &str, pcaps: &Path) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = match target {
        "config" => config_seeds(),
        "detectors" => vec![
            sequence::encode(false, &build::scenario(1_600_000_000_000_000_000)),
            sequence::encode(true, &build::scenario(1_600_000_000_000_000_000)),
        ],
        _ => Vec::new(),
    };
    if target != "config" {
        for path in captures(pcaps) {
            seeds.extend(from_capture(target, &path));
        }
    }
    let mut seen = HashSet::new();
    seeds.retain(|s| seen.insert(s.clone()));
    seeds
}

fn write(dir: &Path, seeds: &[Vec<u8>]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for s in seeds {
        std::fs::write(dir.join(format!("seed-{:016x}", fnv1a(s))), s)?;
    }
    Ok(())
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ *b as u64).wrapping_mul(0x100_0000_01b3))
}

/// Every `.pcap` / `.pcapng` under `dir`, sorted.
fn captures(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "pcap" || x == "pcapng") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The record bytes of `ev`, as the ring buffer holds them.
pub fn record(ev: &Event) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    // SAFETY: EventHeader is repr(C) plain old data of exactly HEADER_LEN bytes.
    unsafe { std::ptr::write_unaligned(out.as_mut_ptr().cast(), ev.header) };
    out.extend_from_slice(&ev.snap);
    out
}

fn from_capture(target: &str, path: &Path) -> Vec<Vec<u8>> {
    let Ok(capture) = Capture::open(path) else { return Vec::new() };
    let Ok(frames) = capture.frames() else { return Vec::new() };
    let frames: Vec<_> = frames.map_while(Result::ok).collect();
    if target == "capture" {
        let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
        let cut = frames.iter().map(|f| f.offset as usize).take_while(|o| *o <= CAPTURE_SEED_MAX).last();
        let keep = if bytes.len() <= CAPTURE_SEED_MAX { bytes.len() } else { cut.unwrap_or(0) };
        return if keep > 0 { vec![bytes[..keep].to_vec()] } else { Vec::new() };
    }
    let mut classifier = Classifier::default();
    let mut out = Vec::new();
    let mut run: Vec<(u64, Vec<u8>)> = Vec::new();
    for f in &frames {
        let Some(eth) = to_ethernet(f.link, &f.data) else { continue };
        let c = classifier.classify(&eth, Direction::Ingress, 0, f.ts_ns);
        match target {
            "classify" | "differential" if out.len() < FRAMES_PER_FILE => out.push(eth.to_vec()),
            "decoders" => {
                if let Some(ev) =
                    c.event.filter(|e| matches!(e.kind(), EventKind::Dns | EventKind::Dtls | EventKind::IcmpError))
                {
                    out.push(ev.snap);
                }
            }
            "event" => out.extend(c.event.map(|e| record(&e))),
            "detectors" if c.event.is_some() && out.len() < RUNS_PER_FILE => {
                run.push((f.ts_ns, eth.to_vec()));
                if run.len() == RUN_LEN {
                    out.push(sequence::encode(out.len() % 2 == 1, &std::mem::take(&mut run)));
                }
            }
            _ => {}
        }
    }
    if !run.is_empty() && out.len() < RUNS_PER_FILE {
        out.push(sequence::encode(false, &run));
    }
    out
}

fn config_seeds() -> Vec<Vec<u8>> {
    [
        DEFAULT_TOML,
        "",
        "[dns]\nports = [5353, 5300]\ntimeout_s = 2.5\n[[dns.known_probes]]\nqname = \"probe.example\"\nname = \"p\"\nremedy = \"r\"\n",
        "[pmtu]\ntunnel_mtu = 1418\nblack_hole_min_retransmits = 2\n[dtls]\ntimeout_s = 1\n",
        "[output]\nfinding_interval_s = 0.001\nfindings_cap = 1\n[dns]\nnames_cap = 1\ntransactions_cap = 1\n",
        "[dns]\nwindow_s = 1e9\nstorm_min_queries = 2\nstorm_min_failed_ratio = 0.0\n",
        "[kernel]\nringbuf_bytes = 4096\n[metrics]\nlisten = \"127.0.0.1:9100\"\n",
        "[dns]\n\"quoted key\" = 1\n",
        "[[dns.known_probes]]\nqname = \"bell\\u0007.example\"\nname = 'bell'\nremedy = \"r\"\n",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}
