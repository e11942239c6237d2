//! An independent oracle for the findings: DESIGN.md's detection rules applied to
//! tshark's dissection of every capture, compared with what `pathwatch replay` finds.
//!
//! The oracle shares no code with pathwatch: tshark parses the packets, and the rules
//! below are written from DESIGN.md ("Detection semantics", defaults) in the simplest
//! form that states them, with no bounded tables and no event-time machinery. Where
//! the two disagree, one of them is wrong about a real capture.
//!
//! - A lookup is a transaction's query packets (client, resolver, client port, id,
//!   qname in lower case, qtype) on port 53; it failed when its first answer is
//!   SERVFAIL, NXDOMAIN or REFUSED, when an ICMP error quotes it, or when it got no
//!   answer for 5 s before the capture ended.
//! - `dns_resolver_outage`: a resolver's lookups in the 60 s up to one of them with at
//!   least 3 names failing and at least half failed (NXDOMAIN is an answer here); a
//!   resolver never seen answering only when at least half the failed lookups were
//!   resent. Its failures, from the first to the last in such a window, make no storm.
//! - `dns_probe_storm`: per (client, resolver, qname, qtype), at least 4 query packets
//!   in the 300 s up to one of them, spanning more than 5 s, at least half of their
//!   lookups failed.
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

/// (client, resolver, qname, qtype).
type Series = (String, String, String, String);

/// A lookup: the query packets of one transaction (client, resolver, client port, id,
/// qname, qtype), and what became of it.
struct Lookup {
    client: String,
    resolver: String,
    name: String,
    qtype: String,
    /// Send times of its packets, in order.
    sent: Vec<f64>,
    /// RCODE of its first answer after its first packet.
    answer: Option<u32>,
    /// An ICMP error quoted one of its packets.
    icmp: bool,
}

impl Lookup {
    /// Unanswered (and not answered by ICMP) for 5 s before the capture ended.
    fn timed_out(&self, end: f64) -> bool {
        self.answer.is_none() && !self.icmp && self.sent[0] + 5.0 <= end
    }
    /// Failed, for a storm: SERVFAIL, NXDOMAIN, REFUSED, ICMP, timeout.
    fn storm_failed(&self, end: f64) -> bool {
        match self.answer {
            Some(r) => matches!(r, 2 | 3 | 5),
            None => self.icmp || self.timed_out(end),
        }
    }
    /// Failed, for an outage: NXDOMAIN is an answer.
    fn outage_failed(&self, end: f64) -> bool {
        match self.answer {
            Some(r) => matches!(r, 2 | 5),
            None => self.icmp || self.timed_out(end),
        }
    }
}

/// Every lookup on port 53, and the resolvers that answered anything.
fn lookups(frames: &[Frame]) -> (Vec<Lookup>, BTreeSet<String>) {
    type Txn = (String, String, String, String, String, String);
    let mut by_txn: BTreeMap<Txn, Lookup> = BTreeMap::new();
    let mut answers: Vec<(f64, Txn, u32)> = Vec::new();
    let mut icmp: Vec<(f64, Txn)> = Vec::new();
    let mut answering = BTreeSet::new();
    for f in frames {
        let (Some(id), Some(name), Some(qtype)) = (f.first("dns.id"), f.first("dns.qry.name"), f.first("dns.qry.type"))
        else {
            continue;
        };
        let response = matches!(f.first("dns.flags.response"), Some("1" | "True"));
        let name = name.to_ascii_lowercase();
        if f.is_icmp() {
            // An ICMP error quoting a query: the quoted (inner) addresses and ports.
            let inner = |v4: &str, v6: &str| f.all(v4).get(1).or(f.all(v6).get(1)).cloned();
            let (Some(src), Some(dst), Some(sport), Some(dport)) = (
                inner("ip.src", "ipv6.src"),
                inner("ip.dst", "ipv6.dst"),
                f.first("udp.srcport"),
                f.first("udp.dstport"),
            ) else {
                continue;
            };
            if !response && dport == "53" {
                icmp.push((f.time(), (src, dst, sport.to_string(), id.to_string(), name, qtype.to_string())));
            }
            continue;
        }
        let (Some((src, dst)), Some((sport, dport))) = (f.addrs(), f.ports()) else { continue };
        // DNS is port 53 (DESIGN.md); tshark also fills dns.* for mDNS and LLMNR.
        if sport != "53" && dport != "53" {
            continue;
        }
        if response {
            let rcode = f.first("dns.flags.rcode").and_then(|r| r.parse().ok()).unwrap_or(0);
            answering.insert(src.clone());
            answers.push((f.time(), (dst, src, dport, id.to_string(), name, qtype.to_string()), rcode));
        } else {
            let txn = (src.clone(), dst.clone(), sport, id.to_string(), name.clone(), qtype.to_string());
            let l = by_txn.entry(txn).or_insert_with(|| Lookup {
                client: src,
                resolver: dst,
                name,
                qtype: qtype_name(qtype),
                sent: Vec::new(),
                answer: None,
                icmp: false,
            });
            l.sent.push(f.time());
        }
    }
    for (t, txn, rcode) in answers {
        if let Some(l) = by_txn.get_mut(&txn).filter(|l| l.answer.is_none() && l.sent[0] <= t) {
            l.answer = Some(rcode);
        }
    }
    for (t, txn) in icmp {
        if let Some(l) = by_txn.get_mut(&txn).filter(|l| l.sent[0] <= t) {
            l.icmp = true;
        }
    }
    (by_txn.into_values().collect(), answering)
}

/// Every resolver in an outage, with the spans its failures are taken from the names:
/// a resolver's lookups sent in the 60 s up to one of them, with at least 3 names
/// failing and at least half the lookups failed (and, for a resolver never seen
/// answering, at least half the failed lookups resent by their clients), are an
/// outage from the first to the last failure among them.
fn dns_outages(lookups: &[Lookup], answering: &BTreeSet<String>, end: f64) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut by_resolver: BTreeMap<&str, Vec<&Lookup>> = BTreeMap::new();
    for l in lookups {
        by_resolver.entry(&l.resolver).or_default().push(l);
    }
    let mut out = BTreeMap::new();
    for (resolver, mut ls) in by_resolver {
        ls.sort_by(|a, b| a.sent[0].total_cmp(&b.sent[0]));
        let mut spans = Vec::new();
        for last in &ls {
            let t = last.sent[0];
            let window: Vec<&&Lookup> = ls.iter().filter(|l| l.sent[0] >= t - 60.0 && l.sent[0] <= t).collect();
            let failed: Vec<&&&Lookup> = window.iter().filter(|l| l.outage_failed(end)).collect();
            let names: BTreeSet<(&str, &str)> = failed.iter().map(|l| (l.name.as_str(), l.qtype.as_str())).collect();
            let names: BTreeSet<&str> = names.into_iter().map(|(n, _)| n).collect();
            let resent = failed.iter().filter(|l| l.sent.len() > 1).count();
            let heard = answering.contains(resolver) || 2 * resent >= failed.len();
            if names.len() >= 3 && 2 * failed.len() >= window.len() && heard {
                let first = failed.first().expect("failed").sent[0];
                let last = failed.last().expect("failed").sent[0];
                spans.push((first, last));
            }
        }
        if !spans.is_empty() {
            out.insert(resolver.to_string(), spans);
        }
    }
    out
}

/// (client, resolver, qname, qtype) of every storm the rules predict: at least 4
/// query packets in the 300 s up to one of them, spanning more than 5 s, at least half
/// of their lookups failed, none of them inside an outage of their resolver.
fn dns_storms(lookups: &[Lookup], outages: &BTreeMap<String, Vec<(f64, f64)>>, end: f64) -> BTreeSet<Series> {
    // Per series: (send time, first packet of its lookup, lookup failed).
    let mut series: BTreeMap<Series, Vec<(f64, bool, bool)>> = BTreeMap::new();
    for l in lookups {
        let spans = outages.get(&l.resolver).map(Vec::as_slice).unwrap_or(&[]);
        let key = (l.client.clone(), l.resolver.clone(), l.name.clone(), l.qtype.clone());
        for (i, t) in l.sent.iter().enumerate() {
            if !spans.iter().any(|(a, b)| a <= t && t <= b) {
                series.entry(key.clone()).or_default().push((*t, i == 0, l.storm_failed(end)));
            }
        }
    }
    series
        .into_iter()
        .filter(|(_, qs)| {
            let mut qs = qs.clone();
            qs.sort_by(|a, b| a.0.total_cmp(&b.0));
            qs.iter().any(|(t1, _, _)| {
                let window: Vec<&(f64, bool, bool)> =
                    qs.iter().filter(|(t, _, _)| *t >= t1 - 300.0 && t <= t1).collect();
                let lookups = window.iter().filter(|q| q.1).count();
                let failed = window.iter().filter(|q| q.1 && q.2).count();
                let span = t1 - window.first().map_or(*t1, |q| q.0);
                window.len() >= 4 && lookups > 0 && 2 * failed >= lookups && span > 5.0
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
    storms: BTreeSet<Series>,
    outages: BTreeSet<String>,
    blocked: BTreeSet<(String, String, String)>,
    signals: BTreeSet<(String, String)>,
}

fn replay(path: &Path) -> Found {
    let (code, stdout, stderr) = pathwatch(&["replay", "--json", "-", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{}: {stderr}", path.display());
    let mut found =
        Found { storms: BTreeSet::new(), outages: BTreeSet::new(), blocked: BTreeSet::new(), signals: BTreeSet::new() };
    let s = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    for line in json_lines(&stdout).iter().filter(|l| l["type"] == "finding") {
        let sub = &line["subject"];
        match line["kind"].as_str().unwrap_or("") {
            "dns_probe_storm" => {
                found.storms.insert((
                    s(&sub["client"]),
                    s(&sub["resolver"]),
                    s(&sub["qname"]).to_ascii_lowercase(),
                    s(&sub["qtype"]),
                ));
            }
            "dns_resolver_outage" => {
                found.outages.insert(s(&sub["resolver"]));
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
    let results: Vec<(String, Vec<String>, [usize; 4])> = std::thread::scope(|s| {
        let halves: Vec<_> = paths
            .chunks(paths.len().div_ceil(2))
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|path| {
                            let frames = dissect(path);
                            let end = frames.iter().map(Frame::time).fold(f64::MIN, f64::max);
                            let (lookups, answering) = lookups(&frames);
                            let outage_spans = dns_outages(&lookups, &answering, end);
                            let outages: BTreeSet<String> = outage_spans.keys().cloned().collect();
                            let storms = dns_storms(&lookups, &outage_spans, end);
                            let (blocked, signals) = (dtls_blocked(&frames), pmtu_signals(&frames));
                            let found = replay(path);
                            let mut problems = Vec::new();
                            if found.storms != storms {
                                problems.push(format!(
                                    "dns_probe_storm: oracle {storms:?}\n    pathwatch {:?}",
                                    found.storms
                                ));
                            }
                            if found.outages != outages {
                                problems.push(format!(
                                    "dns_resolver_outage: oracle {outages:?}\n    pathwatch {:?}",
                                    found.outages
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
                            (rel(path), problems, [storms.len(), outages.len(), blocked.len(), signals.len()])
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves.into_iter().flat_map(|h| h.join().expect("oracle thread")).collect()
    });
    let totals = results.iter().fold([0; 4], |acc, (_, _, n)| [0, 1, 2, 3].map(|i| acc[i] + n[i]));
    eprintln!(
        "{} captures: the oracle predicts {} dns_probe_storm, {} dns_resolver_outage, {} dtls_blocked, {} pmtu_signal",
        results.len(),
        totals[0],
        totals[1],
        totals[2],
        totals[3]
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
