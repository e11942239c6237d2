//! An independent oracle for the findings: DESIGN.md's detection rules applied to
//! tshark's dissection of every capture, compared with what `pathwatch replay` finds.
//!
//! The oracle shares no code with pathwatch: tshark parses the packets, and the rules
//! below are written from DESIGN.md ("Detection semantics", defaults) in the simplest
//! form that states them, with no bounded tables and no event-time machinery. Where
//! the two disagree, one of them is wrong about a real capture.
//!
//! - `dns_probe_storm`: DNS on port 53; per (client, qname in lower case, qtype), at
//!   least 4 queries within 300 s, at least half of them failed (SERVFAIL, NXDOMAIN or
//!   REFUSED as the first answer to their transaction, or no answer at all).
//! - `dtls_blocked`: a DTLS ClientHello from client to server:port, and no DTLS record
//!   back on that flow within 10 s, in a capture that lasts 10 s past the hello; and the
//!   client tried again: ClientHellos with at least two record sequence numbers on the
//!   flow (a retransmission takes a new one, a doubled frame repeats it).
//! - `pmtu_signal`: an ICMPv4 fragmentation-needed or ICMPv6 packet-too-big, as
//!   (reporter, sender of the quoted packet).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::Command,
};

use pathwatch_tests::{all_pcaps, json_lines, pathwatch, rel};

/// tshark's fields per frame, in this order.
const FIELDS: &[&str] = &[
    "frame.time_epoch",
    "ip.src",
    "ipv6.src",
    "ip.dst",
    "ipv6.dst",
    "udp.srcport",
    "udp.dstport",
    "tcp.srcport",
    "tcp.dstport",
    "dns.id",
    "dns.flags.response",
    "dns.flags.rcode",
    "dns.qry.name",
    "dns.qry.type",
    "dtls.record.content_type",
    "dtls.record.sequence_number",
    "dtls.handshake.type",
    "icmp.type",
    "icmp.code",
    "icmpv6.type",
];

/// One frame as tshark dissects it: each field's occurrences, outermost first.
struct Frame(Vec<Vec<String>>);

impl Frame {
    fn all(&self, field: &str) -> &[String] {
        let i = FIELDS.iter().position(|f| *f == field).expect("a listed field");
        &self.0[i]
    }
    fn first(&self, field: &str) -> Option<&str> {
        self.all(field).first().map(String::as_str)
    }
    fn time(&self) -> f64 {
        self.first("frame.time_epoch").and_then(|t| t.parse().ok()).expect("every frame has a time")
    }
    /// Outer source and destination address.
    fn addrs(&self) -> Option<(String, String)> {
        let src = self.first("ip.src").or(self.first("ipv6.src"))?;
        let dst = self.first("ip.dst").or(self.first("ipv6.dst"))?;
        Some((src.to_string(), dst.to_string()))
    }
    fn ports(&self) -> Option<(String, String)> {
        let src = self.first("udp.srcport").or(self.first("tcp.srcport"))?;
        let dst = self.first("udp.dstport").or(self.first("tcp.dstport"))?;
        Some((src.to_string(), dst.to_string()))
    }
    fn is_icmp(&self) -> bool {
        self.first("icmp.type").is_some() || self.first("icmpv6.type").is_some()
    }
}

/// Every frame of `path`, dissected by tshark.
fn dissect(path: &Path) -> Vec<Frame> {
    let mut cmd = Command::new("tshark");
    cmd.args(["-r", path.to_str().unwrap(), "-T", "fields", "-E", "separator=/t", "-E", "occurrence=a"]);
    // Occurrences joined by a byte no name in these captures carries.
    cmd.args(["-E", "aggregator=;"]);
    for f in FIELDS {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("tshark (installed by `cargo xtask setup`)");
    assert!(out.status.success(), "tshark on {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut cols: Vec<Vec<String>> = line
                .split('\t')
                .map(|c| if c.is_empty() { Vec::new() } else { c.split(';').map(str::to_string).collect() })
                .collect();
            cols.resize(FIELDS.len(), Vec::new());
            Frame(cols)
        })
        .collect()
}

/// The mnemonic pathwatch prints for a query type number.
fn qtype_name(n: &str) -> String {
    let name = match n {
        "1" => "A",
        "2" => "NS",
        "5" => "CNAME",
        "6" => "SOA",
        "12" => "PTR",
        "15" => "MX",
        "16" => "TXT",
        "28" => "AAAA",
        "33" => "SRV",
        "35" => "NAPTR",
        "65" => "HTTPS",
        "255" => "ANY",
        other => return format!("TYPE{other}"),
    };
    name.to_string()
}

/// (client, qname, qtype) of every storm the rules predict.
fn dns_storms(frames: &[Frame]) -> BTreeSet<(String, String, String)> {
    type Txn = (String, String, String, String, String, String);
    let mut queries: Vec<(f64, Txn)> = Vec::new();
    let mut answers: BTreeMap<Txn, Vec<(f64, u32)>> = BTreeMap::new();
    for f in frames.iter().filter(|f| !f.is_icmp()) {
        let (Some(id), Some(name), Some(qtype)) = (f.first("dns.id"), f.first("dns.qry.name"), f.first("dns.qry.type"))
        else {
            continue;
        };
        let (Some((src, dst)), Some((sport, dport))) = (f.addrs(), f.ports()) else { continue };
        // DNS is port 53 (DESIGN.md); tshark also fills dns.* for mDNS and LLMNR.
        if sport != "53" && dport != "53" {
            continue;
        }
        let name = name.to_ascii_lowercase();
        let response = matches!(f.first("dns.flags.response"), Some("1" | "True"));
        if response {
            let rcode = f.first("dns.flags.rcode").and_then(|r| r.parse().ok()).unwrap_or(0);
            let txn = (dst, src, dport, id.to_string(), name, qtype.to_string());
            answers.entry(txn).or_default().push((f.time(), rcode));
        } else {
            queries.push((f.time(), (src, dst, sport, id.to_string(), name, qtype.to_string())));
        }
    }
    let mut series: BTreeMap<(String, String, String), Vec<(f64, bool)>> = BTreeMap::new();
    for (t, txn) in queries {
        let first_answer =
            answers.get(&txn).into_iter().flatten().filter(|(at, _)| *at >= t).min_by(|a, b| a.0.total_cmp(&b.0));
        let failed = match first_answer {
            Some((_, rcode)) => matches!(rcode, 2 | 3 | 5),
            None => true,
        };
        let (client, _, _, _, name, qtype) = txn;
        series.entry((client, name, qtype_name(&qtype))).or_default().push((t, failed));
    }
    series
        .into_iter()
        .filter(|(_, qs)| {
            qs.iter().any(|(t0, _)| {
                let window: Vec<bool> = qs.iter().filter(|(t, _)| *t >= *t0 && *t <= t0 + 300.0).map(|q| q.1).collect();
                window.len() >= 4 && 2 * window.iter().filter(|f| **f).count() >= window.len()
            })
        })
        .map(|(k, _)| k)
        .collect()
}

/// A UDP flow: source, source port, destination, destination port.
type Flow = (String, String, String, String);

/// (client, server, port) of every flow the rules call blocked.
fn dtls_blocked(frames: &[Frame]) -> BTreeSet<(String, String, String)> {
    let end = frames.iter().map(Frame::time).fold(f64::MIN, f64::max);
    // Per flow: the first ClientHello's time, and the record sequence numbers of all.
    let mut hellos: BTreeMap<Flow, (f64, BTreeSet<String>)> = BTreeMap::new();
    let mut records: BTreeMap<Flow, Vec<f64>> = BTreeMap::new();
    for f in frames.iter().filter(|f| !f.is_icmp() && !f.all("dtls.record.content_type").is_empty()) {
        let (Some((src, dst)), Some((sport, dport))) = (f.addrs(), f.ports()) else { continue };
        let flow = (src, sport, dst, dport);
        if f.all("dtls.handshake.type").iter().any(|t| t == "1") {
            let seq = f.first("dtls.record.sequence_number").unwrap_or("").to_string();
            hellos.entry(flow.clone()).or_insert((f.time(), BTreeSet::new())).1.insert(seq);
        }
        records.entry(flow).or_default().push(f.time());
    }
    hellos
        .into_iter()
        .filter(|((client, cport, server, sport), (t0, seqs))| {
            let back = (server.clone(), sport.clone(), client.clone(), cport.clone());
            let answered = records.get(&back).into_iter().flatten().any(|t| *t >= *t0 && *t <= t0 + 10.0);
            !answered && end >= t0 + 10.0 && seqs.len() >= 2
        })
        .map(|((client, _, server, port), _)| (client, server, port))
        .collect()
}

/// (reporter, sender) of every PMTU signal.
fn pmtu_signals(frames: &[Frame]) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for f in frames {
        let v4 = f.first("icmp.type") == Some("3") && f.first("icmp.code") == Some("4");
        let v6 = f.first("icmpv6.type") == Some("2");
        let srcs = if v4 {
            f.all("ip.src")
        } else if v6 {
            f.all("ipv6.src")
        } else {
            continue;
        };
        if let [reporter, sender, ..] = srcs {
            out.insert((reporter.clone(), sender.clone()));
        }
    }
    out
}

/// What pathwatch found in `path`, as the oracle states it.
struct Found {
    storms: BTreeSet<(String, String, String)>,
    blocked: BTreeSet<(String, String, String)>,
    signals: BTreeSet<(String, String)>,
}

fn replay(path: &Path) -> Found {
    let (code, stdout, stderr) = pathwatch(&["replay", "--json", "-", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: {stderr}", path.display());
    let mut found = Found { storms: BTreeSet::new(), blocked: BTreeSet::new(), signals: BTreeSet::new() };
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for line in json_lines(&stdout).iter().filter(|l| l["type"] == "finding") {
        let sub = &line["subject"];
        match line["kind"].as_str().unwrap_or("") {
            "dns_probe_storm" => {
                found.storms.insert((s(&sub["client"]), s(&sub["qname"]).to_ascii_lowercase(), s(&sub["qtype"])));
            }
            "dtls_blocked" => {
                found.blocked.insert((s(&sub["client"]), s(&sub["server"]), s(&sub["port"])));
            }
            "pmtu_signal" => {
                found.signals.insert((s(&sub["reporter"]), s(&sub["sender"])));
            }
            _ => {}
        }
    }
    found
}

#[test]
fn tshark_and_the_design_rules_predict_every_finding_of_every_capture() {
    let paths = all_pcaps();
    assert!(paths.len() >= 80, "only {} captures", paths.len());
    // Two at a time: tshark's start-up dominates.
    let results: Vec<(String, Vec<String>, [usize; 3])> = std::thread::scope(|s| {
        let halves: Vec<_> = paths
            .chunks(paths.len().div_ceil(2))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|path| {
                            let frames = dissect(path);
                            let (storms, blocked, signals) =
                                (dns_storms(&frames), dtls_blocked(&frames), pmtu_signals(&frames));
                            let found = replay(path);
                            let mut problems = Vec::new();
                            if found.storms != storms {
                                problems.push(format!(
                                    "dns_probe_storm: oracle {storms:?}\n    pathwatch {:?}",
                                    found.storms
                                ));
                            }
                            if found.blocked != blocked {
                                problems.push(format!(
                                    "dtls_blocked: oracle {blocked:?}\n    pathwatch {:?}",
                                    found.blocked
                                ));
                            }
                            if found.signals != signals {
                                problems.push(format!(
                                    "pmtu_signal: oracle {signals:?}\n    pathwatch {:?}",
                                    found.signals
                                ));
                            }
                            (rel(path), problems, [storms.len(), blocked.len(), signals.len()])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().expect("oracle thread")).collect()
    });
    let totals = results.iter().fold([0; 3], |acc, (_, _, n)| [acc[0] + n[0], acc[1] + n[1], acc[2] + n[2]]);
    eprintln!(
        "{} captures: the oracle predicts {} dns_probe_storm, {} dtls_blocked, {} pmtu_signal",
        results.len(),
        totals[0],
        totals[1],
        totals[2]
    );
    // The oracle must have something to say, or agreement proves nothing.
    assert!(totals.iter().all(|n| *n > 0), "{totals:?}");
    let problems: Vec<String> = results
        .into_iter()
        .filter(|(_, p, _)| !p.is_empty())
        .map(|(name, p, _)| format!("{name}:\n  {}", p.join("\n  ")))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
