//! `pathwatch replay` end to end: the seed captures give exactly the findings of
//! tests/pcaps/seed/README.md, every public capture gives the findings tshark predicts
//! and a summary whose counters are tshark's (EXPECTED.tsv), the kernel classifier
//! gives byte-identical output, and damaged files lose nothing.

use std::collections::BTreeSet;

use pathwatch_tests::{
    SUMMARY_EVENT_COLUMNS, TempDir, all_pcaps, dns_query, dns_response, eth_to_sll, expected, json_lines, pathwatch,
    pcaps_dir, privileged, rel, udp4, write_pcap, write_pcap_linktype,
};
use serde_json::{Value, json};

fn replay(files: &[&str]) -> (i32, Vec<Value>, String) {
    let mut args = vec!["replay", "--json", "-"];
    args.extend_from_slice(files);
    let (code, out, err) = pathwatch(&args);
    (code, json_lines(&out), err)
}

fn seed(name: &str) -> String {
    pcaps_dir().join("seed").join(name).display().to_string()
}

fn findings(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|l| l["type"] == "finding").collect()
}

/// The evidence keys DESIGN.md requires of a `dns_probe_storm`, present even when
/// null (indexing a JSON object gives null for a missing key too).
const STORM_EVIDENCE: &[&str] = &[
    "queries",
    "responses",
    "rcodes",
    "timeouts",
    "pending",
    "pattern",
    "period_s",
    "jitter_s",
    "median_latency_s",
    "known_probe",
];

/// A storm's evidence, with every key DESIGN.md requires present.
fn storm_evidence(f: &Value) -> &serde_json::Map<String, Value> {
    let e = f["evidence"].as_object().expect("evidence is an object");
    let missing: Vec<&&str> = STORM_EVIDENCE.iter().filter(|k| !e.contains_key(**k)).collect();
    assert!(missing.is_empty(), "dns_probe_storm evidence lacks {missing:?}: {e:?}");
    e
}

#[test]
fn anyconnect_seed_is_one_periodic_servfail_storm_on_a_known_probe() {
    let (code, lines, err) = replay(&[&seed("anyconnect-mus-servfail.pcap")]);
    assert_eq!(code, 0, "{err}");
    let f = findings(&lines);
    assert_eq!(f.len(), 1, "{lines:#?}");
    let f = f[0];
    assert_eq!(f["kind"], "dns_probe_storm");
    assert_eq!(f["subject"]["client"], "10.31.121.202");
    assert_eq!(f["subject"]["resolver"], "10.88.240.69");
    assert_eq!(f["subject"]["qname"], "mus.cisco.com");
    assert_eq!(f["subject"]["qtype"], "A");
    let e = storm_evidence(f);
    assert_eq!(e["queries"], 8);
    assert_eq!(e["responses"], 8);
    assert_eq!(e["rcodes"], serde_json::json!({"SERVFAIL": 8}));
    assert_eq!((&e["timeouts"], &e["pending"]), (&json!(0), &json!(0)));
    assert_eq!(e["pattern"], "periodic");
    let period = e["period_s"].as_f64().unwrap();
    assert!((period - 15.0).abs() <= 0.2, "period {period}");
    let latency = e["median_latency_s"].as_f64().unwrap();
    assert!((11.0..=12.5).contains(&latency), "latency {latency}");
    assert_eq!(e["known_probe"], "cisco-anyconnect-mus");
    let remedy = f["remedy"].as_str().unwrap();
    assert!(remedy.contains("mus.cisco.com resolvable"), "{remedy}");
    assert!(remedy.contains("DNS entry") && remedy.contains("hosts"), "{remedy}");
    // The summary line comes last and carries the same finding, final.
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["findings"].as_array().unwrap().len(), 1);
    assert_eq!(summary["events"]["dns_servfail"], 8);
    assert_eq!(summary["packets"], 16);
}

#[test]
fn windows_seed_is_two_backoff_storms_with_timeouts_and_pending() {
    let (code, lines, err) = replay(&[&seed("windows-backoff-timeout.pcap")]);
    assert_eq!(code, 0, "{err}");
    let f = findings(&lines);
    assert_eq!(f.len(), 2, "{lines:#?}");
    for (qname, queries, timeouts, pending) in
        [("sls.update.microsoft.com", 9, 7, 2), ("settings-win.data.microsoft.com", 4, 4, 0)]
    {
        let f = f.iter().find(|f| f["subject"]["qname"] == qname).unwrap_or_else(|| panic!("no storm for {qname}"));
        assert_eq!(f["kind"], "dns_probe_storm");
        assert_eq!(f["subject"]["client"], "10.4.9.62");
        assert_eq!(f["subject"]["resolver"], "10.4.9.1");
        let e = storm_evidence(f);
        assert_eq!(e["pattern"], "backoff", "{qname}");
        assert_eq!(e["responses"], 0);
        assert_eq!(e.get("known_probe"), Some(&Value::Null), "{qname}: no known probe, and the key says so");
        assert_eq!(
            (e["queries"].as_u64(), e["timeouts"].as_u64(), e["pending"].as_u64()),
            (Some(queries), Some(timeouts), Some(pending)),
            "{qname}"
        );
    }
}

#[test]
fn qnames_match_case_insensitively_from_query_to_response_to_known_probe() {
    let dir = TempDir::new("qname-case");
    let pcap = dir.0.join("mus-mixed-case.pcap");
    let (client, resolver) = ([198, 18, 0, 2], [198, 18, 0, 1]);
    let asked = ["MUS.Cisco.COM", "mus.cisco.com", "Mus.CISCO.com", "mus.cisco.com"];
    let echoed = ["mus.cisco.com", "MUS.CISCO.COM", "mUs.CiScO.cOm", "MUS.cisco.com"];
    let mut frames = Vec::new();
    for i in 0..8u16 {
        let t = 1_600_000_000_000_000_000 + u64::from(i) * 15_000_000_000;
        let (port, q, r) = (50000 + i, asked[usize::from(i) % 4], echoed[usize::from(i) % 4]);
        frames.push((t, udp4(client, resolver, port, 53, &dns_query(0x1000 + i, q))));
        frames.push((t + 11_500_000_000, udp4(resolver, client, 53, port, &dns_response(0x1000 + i, r, 2))));
    }
    frames.sort_by_key(|(t, _)| *t);
    write_pcap(&pcap, frames);
    let (code, lines, err) = replay(&[pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let f = findings(&lines);
    assert_eq!(f.len(), 1, "one storm, whatever the case: {lines:#?}");
    let f = f[0];
    assert_eq!(f["kind"], "dns_probe_storm");
    assert_eq!(f["subject"]["qname"], "mus.cisco.com");
    let e = storm_evidence(f);
    assert_eq!(e["known_probe"], "cisco-anyconnect-mus");
    assert_eq!(
        (&e["queries"], &e["responses"], &e["timeouts"], &e["pending"]),
        (&json!(8), &json!(8), &json!(0), &json!(0))
    );
    assert_eq!(e["rcodes"], json!({"SERVFAIL": 8}));
    // Every response found the transaction of its query: latencies were measured.
    assert_eq!(e["median_latency_s"], json!(11.5));
    assert_eq!(e["pattern"], "periodic");
}

/// What each capture should produce, and why (from SOURCES.md and tshark), as
/// (kind, a subject field, its value). Captures not listed must give no finding.
/// One capture's expectation: file, wanted (kind, subject field, value), why.
type Expectation = (&'static str, Vec<(&'static str, &'static str, &'static str)>, &'static str);

fn expectations() -> Vec<Expectation> {
    vec![
        (
            "seed/anyconnect-mus-servfail.pcap",
            vec![("dns_probe_storm", "qname", "mus.cisco.com")],
            "8 queries every 15 s, all SERVFAIL",
        ),
        (
            "seed/windows-backoff-timeout.pcap",
            vec![
                ("dns_probe_storm", "qname", "sls.update.microsoft.com"),
                ("dns_probe_storm", "qname", "settings-win.data.microsoft.com"),
            ],
            "two names retried 1-2-4 s, never answered",
        ),
        (
            "dns/suricata-sip-srv-backoff.pcap",
            vec![
                ("dns_probe_storm", "qname", "_sip._udp.sip.cybercity.dk"),
                ("dns_probe_storm", "qname", "_sip._udp.voip.brujula.net"),
            ],
            "tshark: SRV re-asked for 26 min, 0 answers",
        ),
        (
            "dns/suricata-smb2-psexec-servfail.pcap",
            vec![("dns_probe_storm", "qname", "download.windowsupdate.com")],
            "tshark: A download.windowsupdate.com under 4 ids, 6 SERVFAIL",
        ),
        (
            "dns/suricata-windows-dns-no-response.pcap",
            vec![
                ("dns_probe_storm", "qname", "geo-prod.do.dsp.mp.microsoft.com"),
                ("dns_probe_storm", "qname", "sls.update.microsoft.com"),
            ],
            "tshark: 357 queries, 0 responses, ids retried +1 +1 +2 +4 s",
        ),
        (
            "misc/ndpi-fuzz-2006-06-26-2594.pcap",
            vec![("dns_probe_storm", "qname", "_sip._udp.sip.cybercity.dk")],
            "the SIP capture above, fuzzed",
        ),
        // Two captures that once gave dtls_blocked and give nothing now: the client never
        // retried, so nothing says its DTLS was blocked rather than the capture cut.
        (
            "dtls/ndpi-dtls.pcap",
            vec![],
            "tshark: the 'two' unanswered ClientHellos from 192.168.13.203 are one frame doubled (same time, \
             IP id 0x16d0, record sequence 0): one try, no retry",
        ),
        (
            "dtls/ndpi-stun-turn-dtls.pcap",
            vec![],
            "tshark: one ClientHello to UDP 8801 (record sequence 1), the last DTLS frame of a stitched sample: \
             one try, no retry",
        ),
        (
            "dtls/zeek-dtls13-cid.pcap",
            vec![("dtls_blocked", "client", "10.168.36.147")],
            "tshark: 3 flows' ClientHellos retried +1 +3 +7 s, unanswered",
        ),
        (
            "icmp/suricata-frag-needed-mtu1500.pcap",
            vec![("pmtu_signal", "sender", "172.16.133.54")],
            "tshark: 6 frag-needed, MTU 1500",
        ),
        (
            "icmp/suricata-icmp6-toobig-atomic-frag.pcap",
            vec![("pmtu_signal", "reporter", "2001:db8:2::2")],
            "tshark: packet too big, MTU 1200",
        ),
        (
            "icmp/zeek-icmp6-toobig.pcap",
            vec![("pmtu_signal", "reporter", "fe80::dead")],
            "tshark: packet too big, MTU 1280",
        ),
        (
            "icmp/zeek-smtp-pmtud-frag-needed.pcap",
            vec![("pmtu_signal", "reporter", "192.168.1.1")],
            "tshark: 4 frag-needed, MTU 1492; the sender adapts (no black hole)",
        ),
    ]
}

#[test]
fn every_capture_gives_the_findings_tshark_predicts_and_healthy_ones_none() {
    let table = expectations();
    let mut problems = Vec::new();
    for path in all_pcaps() {
        let name = rel(&path);
        let (code, lines, err) = replay(&[path.to_str().unwrap()]);
        if code != 0 {
            problems.push(format!("{name}: exit {code}: {err}"));
            continue;
        }
        let got = findings(&lines);
        let want = table.iter().find(|(f, _, _)| *f == name);
        match want {
            None if !got.is_empty() => problems.push(format!(
                "{name}: healthy capture, but {:?}",
                got.iter().map(|f| f["summary"].as_str().unwrap()).collect::<Vec<_>>()
            )),
            None => {}
            Some((_, wanted, why)) => {
                for (kind, field, value) in wanted {
                    let hit = got.iter().any(|f| {
                        f["kind"] == *kind
                            && (f["subject"][*field] == *value
                                || f["subject"][*field].as_u64().is_some_and(|n| n.to_string() == *value))
                    });
                    if !hit {
                        problems.push(format!("{name}: expected {kind} with {field}={value} ({why})"));
                    }
                }
                let kinds: BTreeSet<&str> = got.iter().map(|f| f["kind"].as_str().unwrap()).collect();
                let wanted_kinds: BTreeSet<&str> = wanted.iter().map(|(k, _, _)| *k).collect();
                if kinds != wanted_kinds {
                    problems.push(format!("{name}: kinds {kinds:?}, expected {wanted_kinds:?}"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn summary_counters_equal_tshark_counts_on_every_capture() {
    let expected = expected();
    let header: Vec<&String> = expected.values().next().expect("EXPECTED.tsv has rows").keys().collect();
    for (column, _) in SUMMARY_EVENT_COLUMNS.iter().chain(&[("packets", "")]) {
        assert!(header.iter().any(|h| h == column), "EXPECTED.tsv has no column {column}: {header:?}");
    }
    let (mut problems, mut checked) = (Vec::new(), 0);
    for path in all_pcaps() {
        let name = rel(&path);
        let Some(want) = expected.get(&name) else { continue };
        let (code, lines, err) = replay(&[path.to_str().unwrap()]);
        let Some(summary) = lines.last().filter(|l| code == 0 && l["type"] == "summary") else {
            problems.push(format!("{name}: exit {code}, no summary: {err}"));
            continue;
        };
        checked += 1;
        let got = |column: &str| match column {
            "packets" => summary["packets"].as_u64(),
            _ => SUMMARY_EVENT_COLUMNS
                .iter()
                .find(|(c, _)| *c == column)
                .and_then(|(_, key)| summary["events"][*key].as_u64()),
        };
        for (column, want) in want {
            let covered = column == "packets" || SUMMARY_EVENT_COLUMNS.iter().any(|(c, _)| c == column);
            if covered && got(column) != Some(*want) {
                problems.push(format!("{name}: {column} = {:?} in the summary, tshark {want}", got(column)));
            }
        }
    }
    assert!(checked >= 80, "only {checked} captures with an EXPECTED.tsv row");
    assert!(problems.is_empty(), "{} mismatches:\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn kernel_replay_is_byte_identical_on_every_capture() {
    if !privileged("kernel_replay_is_byte_identical_on_every_capture") {
        return;
    }
    let mut problems = Vec::new();
    for path in all_pcaps() {
        let p = path.to_str().unwrap();
        let (c1, user, _) = pathwatch(&["replay", "--json", "-", p]);
        let (c2, kernel, err) = pathwatch(&["replay", "--kernel", "--json", "-", p]);
        // The summary names its source; everything else must match byte for byte.
        let kernel = kernel.replace("\"source\":\"kernel\"", "\"source\":\"userspace\"");
        if c1 != c2 || user != kernel {
            problems.push(format!("{}: exit {c1}/{c2} {err}\n  user:   {user}\n  kernel: {kernel}", rel(&path)));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// DNS frames (query, SERVFAIL answer, twice) from 1 s after `t0`.
fn dns_exchange(t0: u64) -> Vec<(u64, Vec<u8>)> {
    let (client, resolver) = ([198, 18, 0, 2], [198, 18, 0, 1]);
    (0..2u16)
        .flat_map(|i| {
            let t = t0 + u64::from(i) * 1_000_000_000;
            [
                (t, udp4(client, resolver, 40000 + i, 53, &dns_query(i, "a.example"))),
                (t + 1_000_000, udp4(resolver, client, 53, 40000 + i, &dns_response(i, "a.example", 2))),
            ]
        })
        .collect()
}

#[test]
fn kernel_replay_counts_frames_it_cannot_run_as_other_like_userspace() {
    if !privileged("kernel_replay_counts_frames_it_cannot_run_as_other_like_userspace") {
        return;
    }
    let dir = TempDir::new("kernel-other");
    let t0 = 1_600_000_000_000_000_000u64;
    // Ethernet frames shorter than an Ethernet header never reach the kernel.
    let eth = dir.0.join("short.pcap");
    let mut frames = dns_exchange(t0);
    frames.extend([1usize, 6, 13].iter().enumerate().map(|(i, &n)| (t0 + 500_000_000 + i as u64, vec![0x45; n])));
    frames.sort_by_key(|(t, _)| *t);
    write_pcap(&eth, frames);
    // Cooked frames whose own header is cut short cannot be made Ethernet at all.
    let sll = dir.0.join("cut-sll.pcap");
    let mut frames: Vec<(u64, Vec<u8>)> =
        dns_exchange(t0 + 10_000_000_000).into_iter().map(|(t, f)| (t, eth_to_sll(&f))).collect();
    frames.extend([4usize, 15].iter().enumerate().map(|(i, &n)| (t0 + 10_500_000_000 + i as u64, vec![0; n])));
    frames.sort_by_key(|(t, _)| *t);
    write_pcap_linktype(&sll, 113, frames);

    let (eth, sll) = (eth.to_str().unwrap(), sll.to_str().unwrap());
    for (files, packets, other) in [(vec![eth], 7, 3), (vec![sll], 6, 2), (vec![eth, sll], 13, 5)] {
        let mut user_args = vec!["replay", "--json", "-"];
        user_args.extend(&files);
        let mut kernel_args = vec!["replay", "--kernel", "--json", "-"];
        kernel_args.extend(&files);
        let (c1, user, e1) = pathwatch(&user_args);
        let (c2, kernel, e2) = pathwatch(&kernel_args);
        assert_eq!((c1, c2), (0, 0), "{files:?}: {e1} {e2}");
        let kernel = kernel.replace("\"source\":\"kernel\"", "\"source\":\"userspace\"");
        assert_eq!(user, kernel, "{files:?}: userspace and kernel replay differ");
        let summary = json_lines(&kernel).pop().unwrap();
        let classes = summary["classes"].as_object().unwrap();
        let sum: u64 = classes.values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!((summary["packets"].as_u64(), sum), (Some(packets), packets), "{files:?}: {summary}");
        assert_eq!((classes["other"].as_u64(), classes["dns"].as_u64()), (Some(other), Some(packets - other)));
    }
}

#[test]
fn several_files_merge_in_time_order() {
    let (code, lines, _) = replay(&[&seed("windows-backoff-timeout.pcap"), &seed("anyconnect-mus-servfail.pcap")]);
    assert_eq!(code, 0);
    let f = findings(&lines);
    assert_eq!(f.len(), 3);
    let firsts: Vec<&str> = f.iter().map(|f| f["first_seen"].as_str().unwrap()).collect();
    let mut sorted = firsts.clone();
    sorted.sort();
    assert_eq!(firsts, sorted, "findings come in order of first evidence");
    assert_eq!(lines.last().unwrap()["packets"], 29);
}

#[test]
fn a_truncated_capture_names_file_frame_and_offset_and_keeps_earlier_findings() {
    let dir = TempDir::new("truncated");
    let bytes = std::fs::read(seed("anyconnect-mus-servfail.pcap")).unwrap();
    // 24-byte file header, then 16 records; cut the last record in half.
    let cut = dir.0.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 40]).unwrap();
    let (code, out, err) = pathwatch(&["replay", "--json", "-", cut.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cut.pcap") && err.contains("frame 16") && err.contains("byte offset"), "{err}");
    let lines = json_lines(&out);
    assert_eq!(findings(&lines).len(), 1, "the storm of the first 15 frames is still reported");
    assert_eq!(lines.last().unwrap()["packets"], 15);
}

#[test]
fn garbage_and_empty_files_are_input_errors() {
    let dir = TempDir::new("garbage");
    let junk = dir.0.join("junk.pcap");
    std::fs::write(&junk, b"this is not a capture at all").unwrap();
    let empty = dir.0.join("empty.pcap");
    std::fs::write(&empty, b"").unwrap();
    for f in [&junk, &empty] {
        let (code, _, err) = pathwatch(&["replay", f.to_str().unwrap()]);
        assert_eq!(code, 2);
        assert!(err.contains(f.file_name().unwrap().to_str().unwrap()) && err.contains("not a pcap"), "{err}");
    }
}

#[test]
fn a_million_distinct_names_stay_within_the_table_caps() {
    let dir = TempDir::new("million");
    let pcap = dir.0.join("names.pcap");
    let n = 1_000_000u64;
    write_pcap(
        &pcap,
        (0..n).map(|i| {
            let name = format!("n{i}.flood.example");
            (
                1_600_000_000_000_000_000 + i * 10_000,
                udp4([198, 18, 0, 2], [198, 18, 0, 1], 40000 + (i % 1000) as u16, 53, &dns_query(i as u16, &name)),
            )
        }),
    );
    let cfg = dir.0.join("caps.toml");
    std::fs::write(&cfg, "[dns]\nnames_cap = 5000\ntransactions_cap = 20000\n").unwrap();
    let (code, out, err) =
        pathwatch(&["replay", "--json", "-", "--config", cfg.to_str().unwrap(), pcap.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let summary = json_lines(&out).pop().unwrap();
    assert_eq!(summary["events"]["dns_query"], n);
    assert_eq!(summary["tracked"]["dns_names"], 5000);
    assert_eq!(summary["tracked"]["dns_transactions"], 20000);
    assert_eq!(summary["evictions"]["dns_names"], n - 5000);
    assert_eq!(summary["evictions"]["dns_transactions"], n - 20000);
    // 20000 queries fit in 0.2 s of this flood, well inside the 5 s timeout: every
    // older query lost its place in the deadline queue (with its transaction).
    assert_eq!(summary["tracked"]["dns_deadlines"], 20000);
    assert_eq!(summary["evictions"]["dns_deadlines"], n - 20000);
    assert_eq!(summary["tracked"]["pending_dns_probe_storm"], 0);
}

#[test]
fn a_reader_that_goes_away_ends_the_replay_quietly() {
    use std::io::{BufRead, BufReader};
    // 1500 clients each in a storm: far more output, JSON or human, than a pipe holds,
    // so the replay is still writing when the reader goes.
    let dir = TempDir::new("replay-head");
    let capture = dir.0.join("storms.pcap");
    let frames = (0..1500u32).flat_map(|c| {
        let client = [198, 18, 100 + (c / 250) as u8, (c % 250) as u8 + 2];
        (0..4u16).flat_map(move |q| {
            let t = u64::from(q) * 15_000_000_000 + u64::from(c) * 1_000_000;
            [
                (t, udp4(client, [198, 18, 0, 53], 40000, 53, &dns_query(q, "head.test"))),
                (t + 5_000_000, udp4([198, 18, 0, 53], client, 53, 40000, &dns_response(q, "head.test", 2))),
            ]
        })
    });
    let mut frames: Vec<(u64, Vec<u8>)> = frames.collect();
    frames.sort_by_key(|f| f.0);
    write_pcap(&capture, frames);
    // `pathwatch replay ... FILE | head -1`: the first line arrives, the reader closes
    // the pipe, and the replay ends at once with exit 0 and no error.
    for args in [vec!["replay", "--json", "-"], vec!["replay"], vec!["replay", "-v"]] {
        let mut child = std::process::Command::new(pathwatch_tests::bin())
            .args(&args)
            .arg(&capture)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        assert!(!first.is_empty(), "{args:?}: no first line");
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("error:"), "{args:?}: a closed pipe is no error: {stderr}");
        assert!(!stderr.contains("summary:"), "{args:?}: the replay went on to its summary: {stderr}");
    }
}
