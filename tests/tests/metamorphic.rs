//! Metamorphic tests: over every capture in tests/pcaps (and the wild corpus when it
//! is assembled), a change to the capture that a network operator would call "the
//! same traffic" leaves the diagnosis as it was: the same findings (kind, subject,
//! severity) with the same counting evidence. Timing evidence may move.
//!
//! The transformations: every frame doubled 3 µs later (a SPAN port, `tcpdump -i
//! any` on a bridge), unrelated healthy traffic of other hosts merged in, every
//! timestamp shifted by a year and a bit. A fourth, every other DNS response dropped,
//! must change some diagnosis: it shows the comparison can fail.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use pathwatch_tests::{
    TempDir, all_pcaps,
    diagnosis::{Diagnosis, par_map, replay},
    pcaps_dir,
    transform::{self, Frame},
    wild::{captures_in, corpus_dir},
};

/// The captures: tests/pcaps (shared and seed), and the wild corpus when present.
fn captures() -> Vec<PathBuf> {
    let mut all = all_pcaps();
    match corpus_dir() {
        Some(dir) => all.extend(captures_in(&dir)),
        None => eprintln!("metamorphic: wild corpus not assembled (run cargo xtask wild); tests/pcaps only"),
    }
    all
}

/// `dns/x.pcap` for tests/pcaps, `wild/x.pcap` for the wild corpus.
fn name(path: &Path) -> String {
    match path.strip_prefix(pcaps_dir()) {
        Ok(rel) => rel.display().to_string(),
        Err(_) => format!("wild/{}", path.file_name().unwrap_or_default().to_string_lossy()),
    }
}

/// One capture's outcome: its name, findings compared, what differed, and both
/// diagnoses.
struct Outcome {
    name: String,
    compared: usize,
    differences: Vec<String>,
    before: Diagnosis,
    after: Diagnosis,
}

/// Replays every capture as it is and as `change` makes it, in two threads; returns
/// the outcome of each capture that could be read.
fn compare(test: &str, change: impl Fn(&[Frame]) -> Vec<Frame> + Sync) -> Vec<Outcome> {
    let dir = TempDir::new(test);
    let paths = captures();
    let outcomes = par_map(&paths, 2, |path| {
        let name = name(path);
        let frames = match transform::read(path) {
            Ok(f) if !f.is_empty() => f,
            Ok(_) => return None,
            Err(e) => {
                eprintln!("{test}: {name}: not rewritten ({e})");
                return None;
            }
        };
        let before = replay(&[path]);
        let out = dir.0.join(format!("{}.pcap", name.replace('/', "_")));
        transform::write(&out, &change(&frames));
        let after = replay(&[&out]);
        let _ = std::fs::remove_file(&out);
        let differences = before.differences(&after);
        Some(Outcome { name, compared: before.findings.len(), differences, before, after })
    });
    let outcomes: Vec<Outcome> = outcomes.into_iter().flatten().collect();
    let differ: Vec<&str> = outcomes.iter().filter(|o| !o.differences.is_empty()).map(|o| o.name.as_str()).collect();
    println!(
        "{test}: {} captures checked, {} findings compared, {} diagnoses changed{}",
        outcomes.len(),
        outcomes.iter().map(|o| o.compared).sum::<usize>(),
        differ.len(),
        if differ.is_empty() { String::new() } else { format!(": {}", differ.join(", ")) }
    );
    assert!(outcomes.len() >= 80, "{test}: only {} captures could be rewritten", outcomes.len());
    outcomes
}

/// Fails naming every changed diagnosis, with its first few differences.
fn assert_unchanged(test: &str, outcomes: &[Outcome]) {
    const SHOWN: usize = 6;
    let report: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.differences.is_empty())
        .map(|o| {
            let more = o.differences.len().saturating_sub(SHOWN);
            let tail = if more > 0 { format!("\n  ... {more} more") } else { String::new() };
            format!("{}:\n{}{tail}", o.name, o.differences[..o.differences.len().min(SHOWN)].join("\n"))
        })
        .collect();
    assert!(report.is_empty(), "{test}: {} diagnoses changed:\n{}", report.len(), report.join("\n"));
}

#[test]
fn rewriting_a_capture_as_an_ethernet_pcap_keeps_its_diagnosis() {
    // The other transformations rewrite the capture this way too: this shows that the
    // rewriting alone changes nothing.
    let test = "rewritten";
    assert_unchanged(test, &compare(test, |f| f.to_vec()));
}

#[test]
fn every_frame_doubled_3us_later_keeps_the_diagnosis() {
    let test = "doubled";
    let mut outcomes = compare(test, |f| transform::doubled(f, 3_000));
    // Every copy of an event is a duplicate: at least the copies of the DNS, SYN and
    // FIN/RST events (one frame may raise more than one event, so there is no upper
    // bound in frames). (A copy of a large original segment is
    // no duplicate: the original raised no event, its copy looks like a retransmission
    // and is taken back by the PMTU detector instead.)
    for o in &mut outcomes {
        let s = &o.before.summary;
        let n = |k: &str| s["events"][k].as_u64().unwrap_or(0);
        let at_least = n("dns_query") + n("dns_response") + n("tcp_syn") + n("tcp_fin");
        let got = o.after.summary["duplicates"].as_u64().unwrap_or(0);
        if got < at_least {
            o.differences.push(format!("  duplicates {got}, expected at least {at_least}"));
        }
    }
    assert_unchanged(test, &outcomes);
}

#[test]
fn unrelated_healthy_traffic_merged_in_keeps_the_diagnosis() {
    let test = "merged";
    assert_unchanged(
        test,
        &compare(test, |f| {
            let (start, end) = (f.iter().map(|x| x.ts).min().unwrap_or(0), f.iter().map(|x| x.ts).max().unwrap_or(0));
            let noise = transform::healthy_traffic(start, end, transform::unused_prefix(f), 300);
            transform::merged(f, &noise)
        }),
    );
}

/// A healthy capture of the wild corpus (16 s of browsing: DNS, TLS and bulk TCP
/// with full-size DF segments; no finding), merged in where the addresses allow.
const REAL_NOISE: &str = "pcapplusplus-pcapexamples-example.pcap";

#[test]
fn a_real_healthy_capture_merged_in_keeps_the_diagnosis() {
    let test = "merged-real";
    let Some(dir) = corpus_dir() else {
        eprintln!("{test}: skipped: wild corpus not assembled (run cargo xtask wild)");
        return;
    };
    let noise = transform::read(&dir.join(REAL_NOISE)).expect("the real healthy capture");
    assert!(replay(&[&dir.join(REAL_NOISE)]).findings.is_empty(), "{REAL_NOISE} is no longer healthy: pick another");
    let noise_hosts = transform::addresses(&noise);
    let (real, made_up) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let outcomes = compare(test, |f| {
        if transform::addresses(f).is_disjoint(&noise_hosts) {
            real.fetch_add(1, Ordering::Relaxed);
            transform::merged(f, &transform::placed_within(f, &noise))
        } else {
            // Shared hosts would make the noise part of the diagnosis: made-up hosts.
            made_up.fetch_add(1, Ordering::Relaxed);
            let (start, end) = (f.iter().map(|x| x.ts).min().unwrap_or(0), f.iter().map(|x| x.ts).max().unwrap_or(0));
            transform::merged(f, &transform::healthy_traffic(start, end, transform::unused_prefix(f), 300))
        }
    });
    println!(
        "{test}: {REAL_NOISE} merged into {} captures, made-up traffic into {}",
        real.into_inner(),
        made_up.into_inner()
    );
    assert_unchanged(test, &outcomes);
}

#[test]
fn every_timestamp_shifted_by_a_constant_keeps_the_diagnosis() {
    let test = "shifted";
    // 365 days and 12.345678 s: a different year, day, second and sub-second phase.
    let by = 365 * 86_400 * 1_000_000_000 + 12_345_678_000;
    assert_unchanged(test, &compare(test, |f| transform::shifted(f, by)));
}

#[test]
fn the_comparison_sees_every_other_dns_response_dropped() {
    let test = "dropped-responses";
    let outcomes = compare(test, transform::every_other_dns_response_dropped);
    let changed = outcomes.iter().filter(|o| !o.differences.is_empty()).count();
    assert!(changed >= 1, "dropping half the DNS responses changed no diagnosis: the comparison cannot fail");
    assert!(
        outcomes.iter().any(|o| o.name == "seed/anyconnect-mus-servfail.pcap" && !o.differences.is_empty()),
        "the seed storm's 8/8 SERVFAIL should become 4 answered and 4 timed out"
    );
}
