//! Hostile input end to end: captures written by this test (no opaque blobs) whose
//! names carry terminal escapes and control bytes, whose DNS lies about itself, whose
//! headers would loop a naive parser, and files that cannot be read to the end.
//!
//! For every file of the table, `pathwatch replay` runs in human mode, in `--json -`
//! mode and with `-v` (decoded events). The table states the exit code and the
//! finding kinds; the test checks that nothing but printable ASCII and newlines
//! reaches standard output or standard error, that every JSON line parses, and, for a
//! damaged file, that standard error names the file, the frame and the byte offset
//! while the findings from before the damage are still printed.
//!
//! Inputs the fuzzers (`cargo xtask fuzz`) crashed on are kept at the end as byte
//! literals.

use pathwatch_tests::{TempDir, dns_query, json_lines, udp4, write_pcap};
use serde_json::Value;

const S: u64 = 1_000_000_000;
/// 2020-09-13T12:26:40Z, in ns.
const T0: u64 = 1_600_000_000 * S;
const CLIENT: [u8; 4] = [198, 18, 0, 2];
const RESOLVER: [u8; 4] = [198, 18, 0, 1];

/// A name on the wire from raw labels (each cut to 63 bytes only if the caller does).
fn wire_name(labels: &[&[u8]]) -> Vec<u8> {
    let mut n = Vec::new();
    for l in labels {
        n.push(l.len() as u8);
        n.extend_from_slice(l);
    }
    n.push(0);
    n
}

/// A DNS message: id, flags, the four counts as given (they may lie), then `body`.
fn dns_msg(id: u16, flags: u16, counts: [u16; 4], body: &[u8]) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        m.extend_from_slice(&c.to_be_bytes());
    }
    m.extend_from_slice(body);
    m
}

/// QNAME (wire bytes, possibly malformed) + QTYPE A + QCLASS IN.
fn question(name: &[u8]) -> Vec<u8> {
    let mut q = name.to_vec();
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// `n` queries for `q` every 15 s, each answered SERVFAIL a second later: a storm
/// when the question can be read.
fn storm(q: &[u8], counts: [u16; 4], n: u64) -> Vec<(u64, Vec<u8>)> {
    let mut frames = Vec::new();
    for i in 0..n {
        let id = 0x4000 + i as u16;
        let at = T0 + i * 15 * S;
        frames.push((at, udp4(CLIENT, RESOLVER, 40000, 53, &dns_msg(id, 0x0100, counts, q))));
        frames.push((at + S, udp4(RESOLVER, CLIENT, 53, 40000, &dns_msg(id, 0x8182, counts, q))));
    }
    frames
}

/// Ethernet + IPv4 (IHL 5, DF) around `l4`.
fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0];
    f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&CLIENT);
    f.extend_from_slice(&RESOLVER);
    f.extend_from_slice(l4);
    f
}

/// Ethernet + IPv6 whose first next-header is `next`, then `rest` (extension headers
/// and what follows them).
fn ipv6(next: u8, rest: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0];
    f.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    f.extend_from_slice(&[next, 64]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    f.extend_from_slice(rest);
    f
}

/// A TCP SYN to port 443 whose option bytes are `opts` (the data offset covers them).
fn syn(opts: &[u8]) -> Vec<u8> {
    let doff = (20 + opts.len()).div_ceil(4) as u8;
    let mut t = vec![0x9c, 0x40, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, doff << 4, 0x02, 0xff, 0xff, 0, 0, 0, 0];
    t.extend_from_slice(opts);
    t.resize(doff as usize * 4, 0);
    ipv4(6, &t)
}

/// A pcap file (microsecond, little-endian) of `linktype` with these raw records.
fn pcap_raw(linktype: u32, records: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0];
    f.extend_from_slice(&linktype.to_le_bytes());
    for (incl_len, data) in records {
        f.extend_from_slice(&1_600_000_000u32.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&incl_len.to_le_bytes());
        f.extend_from_slice(&(data.len() as u32).to_le_bytes());
        f.extend_from_slice(data);
    }
    f
}

/// A pcapng block: type, total length (or `lie` instead), body padded to 4, length.
fn block(kind: u32, body: &[u8], lie: Option<u32>) -> Vec<u8> {
    let mut body = body.to_vec();
    body.resize(body.len().div_ceil(4) * 4, 0);
    let len = (12 + body.len()) as u32;
    let mut b = kind.to_le_bytes().to_vec();
    b.extend_from_slice(&lie.unwrap_or(len).to_le_bytes());
    b.extend_from_slice(&body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

/// A pcapng file: section header, one Ethernet interface (microseconds), then an
/// enhanced packet block per frame (`units`: the timestamp in microseconds).
fn pcapng(frames: &[(u64, Vec<u8>)]) -> Vec<u8> {
    let mut f =
        block(0x0a0d0d0a, &[0x4d, 0x3c, 0x2b, 0x1a, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], None);
    f.extend(block(1, &[1, 0, 0, 0, 0xff, 0xff, 0, 0], None));
    for (units, data) in frames {
        f.extend(epb(0, *units, data, None));
    }
    f
}

fn epb(iface: u32, units: u64, data: &[u8], lie: Option<u32>) -> Vec<u8> {
    let mut body = iface.to_le_bytes().to_vec();
    body.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(units as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(&(data.len() as u32).to_le_bytes());
    body.extend_from_slice(data);
    block(6, &body, lie)
}

/// Frame number and byte offset the error must name.
#[derive(Clone, Copy, Debug)]
struct Damage {
    frame: u64,
    offset: usize,
}

/// What one hostile file is and what replaying it must give.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    exit: i32,
    kinds: &'static [&'static str],
    /// A finding must carry this `subject.qname` (the hostile name, escaped).
    qname: Option<&'static str>,
    damage: Option<Damage>,
}

fn pcap_bytes(frames: Vec<(u64, Vec<u8>)>) -> Vec<u8> {
    let dir = TempDir::new("hostile-pcap-bytes");
    let p = dir.0.join("f.pcap");
    write_pcap(&p, frames);
    std::fs::read(&p).unwrap()
}

/// Byte offsets of the records of a pcap file (of either byte order).
fn record_offsets(pcap: &[u8]) -> Vec<usize> {
    let big = pcap[0] == 0xa1;
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        out.push(at);
        let len: [u8; 4] = pcap[at + 8..at + 12].try_into().unwrap();
        at += 16 + if big { u32::from_be_bytes(len) } else { u32::from_le_bytes(len) } as usize;
    }
    out
}

/// The escaped name of the hostile storm, as the agent must print it (RFC 1035 §5.1
/// presentation: printable ASCII kept, `.` and `\` escaped, all else `\DDD`).
const HOSTILE_QNAME: &str = "\\027[31mred\\027]0;title\\007.q\"uo\\\\te\\.dot.nul\\000\\255\\127\\155\\013\\010.com";

fn hostile_name() -> Vec<u8> {
    wire_name(&[b"\x1b[31mred\x1b]0;title\x07", b"q\"uo\\te.dot", b"nul\x00\xff\x7f\x9b\r\n", b"com"])
}

fn table() -> Vec<Case> {
    let good = |name, bytes, kinds| Case { name, bytes, exit: 0, kinds, qname: None, damage: None };
    let mut cases = Vec::new();

    // Names with terminal escapes, quotes, backslashes, NUL, DEL, C1 and non-UTF-8
    // bytes, failing four times: a storm whose finding carries the escaped name.
    cases.push(Case {
        qname: Some(HOSTILE_QNAME),
        ..good(
            "escape-storm.pcap",
            pcap_bytes(storm(&question(&hostile_name()), [1, 0, 0, 0], 4)),
            &["dns_probe_storm"],
        )
    });

    // One query each for names a terminal would act on.
    let names: [&[&[u8]]; 5] = [
        &[b"\x1b]0;pwned\x07", b"example"],
        &[b"\x1b[2J\x1b[H", b"clear"],
        &[b"\xc3\x28\xa0\xa1", b"\xf0\x28\x8c\x28"],
        &[b"tab\there", b"\x00\x00\x00"],
        &[b"\"},{\"type\":\"finding\"", b"json"],
    ];
    let frames = names.iter().enumerate().map(|(i, n)| {
        let m = dns_msg(i as u16, 0x0100, [1, 0, 0, 0], &question(&wire_name(n)));
        (T0 + i as u64 * S, udp4(CLIENT, RESOLVER, 40000, 53, &m))
    });
    cases.push(good("escape-names.pcap", pcap_bytes(frames.collect()), &[]));

    // Over-long labels and names, reserved label types, names running off the end.
    let long_label = [b'a'; 63];
    let many: Vec<&[u8]> = std::iter::repeat_n(&long_label[..], 5).collect();
    let bodies: Vec<Vec<u8>> = vec![
        question(&wire_name(&many)),                     // 320 bytes: past the 255 limit
        question(&[&[0x7f][..], &[b'x'; 127]].concat()), // label type 01 (reserved), 127 bytes
        question(&[0x40, b'a', b'b', 0]),                // extended label type
        question(&[0x3f, b'a', b'b']),                   // label longer than the message
        vec![0x05, b'a'],                                // question cut inside its name
    ];
    let frames = bodies.iter().enumerate().map(|(i, b)| {
        (T0 + i as u64 * S, udp4(CLIENT, RESOLVER, 40001, 53, &dns_msg(i as u16, 0x0100, [1, 0, 0, 0], b)))
    });
    cases.push(good("long-names.pcap", pcap_bytes(frames.collect()), &[]));

    // Compression loops (to itself, after a label, mutual through bytes after the
    // question) and a pointer past the end, each failing four times: no question can
    // be read, so no storm.
    let mutual = [question(&[0xc0, 0x12]), vec![0xc0, 0x0c]].concat();
    let bodies = [
        question(&[0xc0, 0x0c]),
        question(&[0x01, b'a', 0xc0, 0x0c]),
        question(&[0x01, b'b', 0xc0, 0x0e]),
        mutual,
        question(&[0xc0, 0xff]),
    ];
    let mut frames = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        frames.extend(storm(body, [1, 0, 0, 0], 4).into_iter().map(|(t, f)| (t + i as u64, f)));
    }
    frames.sort_by_key(|f| f.0);
    cases.push(good("compression-loops.pcap", pcap_bytes(frames), &[]));

    // Counts that lie: 65535 questions, answers and authorities promised, one given.
    // Only the first question is read, so the failing name is still a storm.
    cases.push(good(
        "lying-counts.pcap",
        pcap_bytes(storm(&question(&wire_name(&[b"liar", b"example"])), [0xffff, 0xffff, 0xffff, 0xffff], 4)),
        &["dns_probe_storm"],
    ));

    // TCP options that would loop or overrun: zero and one-byte lengths, 40 NOPs, an
    // MSS past the last start the kernel looks at, a length past the header, and a
    // data offset past the end of the frame.
    let mut opts_39_nops = vec![1u8; 39];
    opts_39_nops.push(2);
    let mut cut = syn(&[1; 40]);
    cut.truncate(14 + 20 + 30);
    let frames = [
        syn(&[3, 0, 2, 4, 5, 0xb4]),
        syn(&[8, 1, 2, 4, 5, 0xb4]),
        syn(&[1; 40]),
        syn(&opts_39_nops),
        syn(&[5, 0xff, 2, 4]),
        cut,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, f)| (T0 + i as u64 * S, f));
    cases.push(good("tcp-options.pcap", pcap_bytes(frames.collect()), &[]));

    // IPv6 extension chains longer than the kernel walks (6), around a DNS query,
    // and one whose last header claims 2 KiB that are not there.
    let query = udp4(CLIENT, RESOLVER, 40002, 53, &dns_query(7, "chain.example"))[34..].to_vec();
    let chain = |n: usize, last_len: u8| {
        let mut rest = Vec::new();
        for i in 0..n {
            let next = if i + 1 == n { 17 } else { 60 };
            let len = if i + 1 == n { last_len } else { 0 };
            rest.extend_from_slice(&[next, len, 0, 0, 0, 0, 0, 0]);
        }
        rest.extend_from_slice(&query);
        ipv6(60, &rest)
    };
    let frames =
        [chain(7, 0), chain(40, 0), chain(3, 0xff)].into_iter().enumerate().map(|(i, f)| (T0 + i as u64 * S, f));
    cases.push(good("ipv6-ext-chain.pcap", pcap_bytes(frames.collect()), &[]));

    // ICMP errors quoting garbage: not IP, an IPv4 header cut at 12 bytes, an IPv6
    // version nibble in an ICMPv4 quote, nothing at all.
    let quotes: [&[u8]; 4] = [&[0x99; 28], &[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 17, 0, 0], &[0x60; 28], &[]];
    let mut frames = Vec::new();
    for (i, q) in quotes.iter().enumerate() {
        for (t, code) in [(3u8, 4u8), (3, 3), (11, 0)] {
            let mut m = vec![t, code, 0, 0, 0, 0, 0x05, 0x78];
            m.extend_from_slice(q);
            frames.push((T0 + (i * 3 + t as usize) as u64 * S, ipv4(1, &m)));
        }
    }
    cases.push(good("icmp-garbage.pcap", pcap_bytes(frames), &[]));

    // Timestamps at the end of time (pcapng microseconds, the last frame within a
    // second of the largest nanosecond time, its deadlines overflowing): the storm is
    // still named. Its queries span more than the 5 s timeout, as a storm's must.
    let end_of_time: Vec<(u64, Vec<u8>)> = storm(&question(&wire_name(&[b"late", b"example"])), [1, 0, 0, 0], 4)
        .into_iter()
        .map(|(t, f)| (u64::MAX / 1000 - 47_000_000 + (t - T0) / 1000, f))
        .collect();
    cases.push(good("end-of-time.pcapng", pcapng(&end_of_time), &["dns_probe_storm"]));

    // Files that cannot be read (to the end).
    let bad = |name, bytes, kinds, damage| Case { name, bytes, exit: 2, kinds, qname: None, damage };
    cases.push(bad("bad-magic.pcap", b"GIF89a\x01\x00\x01\x00\x00\xff\x00,".to_vec(), &[], None));
    cases.push(bad("empty.pcap", Vec::new(), &[], None));
    let frame = udp4(CLIENT, RESOLVER, 40000, 53, &dns_query(1, "user0.example"));
    cases.push(bad(
        "unknown-linktype.pcap",
        pcap_raw(147, &[(frame.len() as u32, frame)]),
        &[],
        Some(Damage { frame: 1, offset: 24 }),
    ));

    let storm_frames = storm(&question(&wire_name(&[b"before", b"damage"])), [1, 0, 0, 0], 4);
    let mut huge = pcap_bytes(storm_frames.clone());
    let huge_at = huge.len();
    huge.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xf0, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff, 1, 2, 3, 4]);
    cases.push(bad("huge-incl-len.pcap", huge, &["dns_probe_storm"], Some(Damage { frame: 9, offset: huge_at })));

    let mut cut = pcap_bytes([storm_frames.clone(), storm(&question(&wire_name(&[b"x"])), [1, 0, 0, 0], 1)].concat());
    let last = *record_offsets(&cut).last().unwrap();
    cut.truncate(last + 16 + 10);
    cases.push(bad("cut-mid-record.pcap", cut, &["dns_probe_storm"], Some(Damage { frame: 10, offset: last })));

    let micros: Vec<(u64, Vec<u8>)> = storm_frames.iter().map(|(t, f)| (t / 1000, f.clone())).collect();
    let mut ng = pcapng(&micros);
    let lie_at = ng.len();
    ng.extend(epb(0, T0 / 1000, &micros[0].1, Some(0x7fff_fff0)));
    cases.push(bad(
        "pcapng-lying-block-length.pcapng",
        ng,
        &["dns_probe_storm"],
        Some(Damage { frame: 9, offset: lie_at }),
    ));

    let mut ng = pcapng(&micros);
    let stranger_at = ng.len();
    ng.extend(epb(5, T0 / 1000, &micros[0].1, None));
    cases.push(bad(
        "pcapng-unknown-interface.pcapng",
        ng,
        &["dns_probe_storm"],
        Some(Damage { frame: 9, offset: stranger_at }),
    ));
    cases
}

/// Panics unless `out` is printable ASCII lines.
fn assert_clean(case: &str, mode: &str, stream: &str, out: &[u8]) {
    if let Some(i) = out.iter().position(|b| *b != b'\n' && !(0x20..=0x7e).contains(b)) {
        let from = i.saturating_sub(60);
        panic!(
            "{case} ({mode}): byte {:#04x} at {i} of {stream}: {:?}",
            out[i],
            String::from_utf8_lossy(&out[from..(i + 20).min(out.len())])
        );
    }
}

/// How long one `pathwatch` run may take before the test kills it: a hang must fail
/// the test, not stall CI.
const RUN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs `pathwatch ARGS` to completion within [`RUN_DEADLINE`]: (exit code, stdout,
/// stderr). A run still going at the deadline is killed by its PID and fails the test.
fn run(args: &[&str]) -> (i32, Vec<u8>, Vec<u8>) {
    use std::{io::Read, process::Stdio, time::Instant};
    let mut child = std::process::Command::new(pathwatch_tests::bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pathwatch");
    // Both pipes are drained while the child runs, so a full pipe cannot block it.
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for pathwatch") {
            break status;
        }
        if started.elapsed() > RUN_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            let err = err.join().unwrap_or_default();
            panic!(
                "pathwatch {args:?} still running after {} s: killed (pid {}); stderr so far:\n{}",
                RUN_DEADLINE.as_secs(),
                child.id(),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    (status.code().unwrap_or(-1), out.join().expect("stdout reader"), err.join().expect("stderr reader"))
}

#[test]
fn hostile_captures_give_clean_output_and_the_table_s_findings() {
    let dir = TempDir::new("hostile");
    let mut problems = Vec::new();
    for case in table() {
        let path = dir.0.join(case.name);
        std::fs::write(&path, &case.bytes).unwrap();
        let p = path.to_str().unwrap();
        for mode in [
            &["replay", p][..],
            &["replay", "--json", "-", p],
            &["replay", "-v", p],
            &["replay", "-v", "--json", "-", p],
        ] {
            let label = mode[1..mode.len() - 1].join(" ");
            let (code, stdout, stderr) = run(mode);
            assert_clean(case.name, &label, "stdout", &stdout);
            assert_clean(case.name, &label, "stderr", &stderr);
            let (stdout, stderr) = (String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap());
            if code != case.exit {
                problems.push(format!("{} ({label}): exit {code}, expected {}: {stderr}", case.name, case.exit));
            }
            if let Some(d) = case.damage {
                let want = format!("frame {} at byte offset {}", d.frame, d.offset);
                if !(stderr.contains(case.name) && stderr.contains(&want)) {
                    problems
                        .push(format!("{} ({label}): stderr does not name the file and `{want}`: {stderr}", case.name));
                }
            } else if case.exit == 2 && !stderr.contains(case.name) {
                problems.push(format!("{} ({label}): stderr does not name the file: {stderr}", case.name));
            }
            let human = if mode.contains(&"--json") { &stderr } else { &stdout };
            if let Some(q) = case.qname.filter(|q| !human.contains(q)) {
                problems.push(format!(
                    "{} ({label}): the escaped name {q} is not in the human output:\n{human}",
                    case.name
                ));
            }
            if mode.contains(&"-v") && case.exit == 0 && !case.kinds.is_empty() && !human.contains("dns query") {
                problems.push(format!("{} ({label}): no decoded event lines:\n{human}", case.name));
            }
            if !mode.contains(&"--json") {
                continue;
            }
            let lines = json_lines(&stdout);
            let mut kinds: Vec<&str> =
                lines.iter().filter(|l| l["type"] == "finding").map(|l| l["kind"].as_str().unwrap()).collect();
            kinds.sort_unstable();
            if kinds != case.kinds {
                problems.push(format!("{} ({label}): findings {kinds:?}, expected {:?}", case.name, case.kinds));
            }
            if let Some(q) =
                case.qname.filter(|q| !lines.iter().any(|l| l["type"] == "finding" && l["subject"]["qname"] == *q))
            {
                problems.push(format!("{} ({label}): no finding with qname {q}", case.name));
            }
            let last = lines.last().map(|l| l["type"].clone());
            if last != Some(Value::from("summary")) {
                problems.push(format!("{} ({label}): the last JSON line is not the summary", case.name));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_hostile_configuration_file_gets_a_printable_error() {
    let dir = TempDir::new("hostile-config");
    let path = dir.0.join("evil.toml");
    std::fs::write(&path, "[dns]\n\"\\u001b]0;title\\u0007\\u001b[2J\" = 1\n").unwrap();
    let p = path.to_str().unwrap();
    for args in [&["config", "check", p][..], &["replay", "--config", p, "/dev/null"]] {
        let (code, stdout, stderr) = run(args);
        assert_eq!(code, 2, "{args:?}: {}", String::from_utf8_lossy(&stderr));
        assert_clean("evil.toml", &args.join(" "), "stdout", &stdout);
        assert_clean("evil.toml", &args.join(" "), "stderr", &stderr);
        let stderr = String::from_utf8(stderr).unwrap();
        assert!(stderr.contains("evil.toml:2:1: unknown field"), "{stderr}");
    }
}

#[test]
fn hostile_file_names_are_escaped_in_errors() {
    let dir = TempDir::new("hostile-paths");
    let garbage = dir.0.join("not\u{1b}[2Ja.pcap");
    std::fs::write(&garbage, b"this is not a capture").unwrap();
    let missing = dir.0.join("gone\r\u{7}.pcap");
    let config = dir.0.join("cfg\u{1b}]0;x\u{7}.toml");
    std::fs::write(&config, "[dns]\nbogus = 1\n").unwrap();
    let cases: [(Vec<&str>, &str); 3] = [
        (vec!["replay", garbage.to_str().unwrap()], "not\\u{1b}[2Ja.pcap: not a pcap or pcapng file"),
        (vec!["replay", missing.to_str().unwrap()], "gone\\r\\u{7}.pcap: "),
        (vec!["config", "check", config.to_str().unwrap()], "cfg\\u{1b}]0;x\\u{7}.toml:2:1: unknown field"),
    ];
    for (args, want) in cases {
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 2, "{args:?}");
        assert_clean("path", &args[0..1].join(" "), "stdout", &stdout);
        assert_clean("path", &args[0..1].join(" "), "stderr", &stderr);
        let stderr = String::from_utf8(stderr).unwrap();
        assert!(stderr.contains(want), "{args:?}: wanted `{want}` in: {stderr}");
    }
}

#[test]
fn a_json_target_with_a_hostile_name_that_fails_is_named_escaped() {
    let dir = TempDir::new("hostile-json-target");
    let capture = dir.0.join("one.pcap");
    write_pcap(&capture, [(T0, udp4(CLIENT, RESOLVER, 40000, 53, &dns_query(1, "a.example")))]);
    // A JSON target whose name carries a terminal escape, and whose writes fail
    // (a link to /dev/full: ENOSPC on the first line).
    let target = dir.0.join("out\u{1b}[2Jx\r.json");
    std::os::unix::fs::symlink("/dev/full", &target).unwrap();
    let args = ["replay", "--json", target.to_str().unwrap(), capture.to_str().unwrap()];
    let (_, stdout, stderr) = run(&args);
    assert_clean("json-target", "replay --json", "stdout", &stdout);
    assert_clean("json-target", "replay --json", "stderr", &stderr);
    let stderr = String::from_utf8(stderr).unwrap();
    let want = "cannot write JSON lines to ";
    let line = stderr.lines().find(|l| l.contains(want)).unwrap_or_else(|| panic!("no {want:?} in: {stderr}"));
    assert!(line.contains("out\\u{1b}[2Jx\\r.json: No space left on device"), "{line}");
}

/// Inputs the fuzz targets crashed on, replayed through the same library calls.
mod fuzz_regressions {
    use std::path::Path;

    use pathwatch::{
        config::Config,
        detect::{Detectors, Emission},
        event::Event,
    };

    /// `event` target: a DNS event stamped 2^64 - 232 ns; its query's timeout
    /// deadline overflowed `now + timeout` (detect/dns.rs).
    #[test]
    fn dns_deadline_at_the_end_of_time() {
        const RECORD: &[u8] = b"\x18\xff\xff\xff\xff\xff\xff\xff\x1f\x00\x00\x00\x5f\x00\x00\x00\
\x01\x00\x01\x06\x11\x01\x00\x01\x00\x04\x00\x05\x00\x00\x00\x00\
\x00\x00\x00\x00\x00\x00\x00\x06\x00\x02\x00\x00\x00\x00\x00\x00\
\x00\x00\x00\x00\x00\x00\x00\x01\x35\x00\x35\x00\x4d\x00\x1d\x00\
\x6c\x00\x42\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07\x65\x78\x61\
\x6d\x70\x00\x00\x00\x00\x00\x06\x00\x02\x00\x00\x00\x00\x00\x00\
\x00\x00\x00\x00\x00\x00\x00\x01\x35\x00\x35\x00\x4d\x00\x1d\x00\
\x6c\x00\x42\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x0b\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\
\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07\x65\x78\x61\
\x6c\x65\x03\x63\x6f\x6d\x00\x00\x01\x00\x01";
        let ev = Event::from_record(RECORD).expect("a DNS event");
        let mut d = Detectors::new(&Config::default(), Emission::Live { interval_ns: 0 });
        d.on_event(&ev);
        d.on_event(&ev);
        d.finish(ev.header.ts_ns);
        let _ = d.take_due();
    }

    /// `config` target check (control characters in errors): a quoted key with an
    /// escape sequence came back raw in "unknown field `...`", to a terminal.
    #[test]
    fn config_errors_escape_what_they_quote() {
        const TOML: &[u8] = b"[dns]\n\"\\u001b[31mred\" = 1\n";
        let e = Config::parse(std::str::from_utf8(TOML).unwrap(), Path::new("evil.toml")).unwrap_err();
        let shown = e.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.starts_with("evil.toml:2:1: unknown field `\\u{1b}[31mred`"), "{shown}");
    }
}
