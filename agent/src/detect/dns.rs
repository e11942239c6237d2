//! DNS: transactions, rcodes, latency and timeouts, and `dns_probe_storm`.
//!
//! A storm is a client re-asking one name that keeps failing: at least
//! `storm_min_queries` queries for the same (client, name, type) inside `window_s`,
//! at least `storm_min_failed_ratio` of them failed (SERVFAIL, NXDOMAIN, REFUSED or
//! no answer within `timeout_s`). Its pattern is `periodic` (every gap within
//! `periodic_tolerance` of the median: AnyConnect asking every 15 s), `backoff`
//! (retransmissions of one id at growing gaps: a stub resolver's 1, 2, 4 s) or
//! `burst`. Timeouts count query packets; a late answer turns one back into a
//! response, and a query younger than `timeout_s` at the end is `pending`.
//!
//! Every query packet waits for its timeout in a bounded queue. When more queries
//! arrive within `timeout_s` than `transactions_cap`, the oldest waiting query is
//! evicted with its transaction (both counted): it can no longer time out, so it is
//! neither pending nor a timeout, though a late answer still counts.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
};

use serde_json::{Map, Value, json};

use super::{
    Detector,
    finding::{Finding, FindingBook, Severity},
    kind::FindingKind,
    pending::Pending,
    queue::BoundedQueue,
    table::Table,
    util::{intervals, is_backoff, median, regularity, round3, secs},
};
use agent_common::EventKind;

use crate::{
    config::{Config, KnownProbe},
    decode::{
        dns::{self, qtype_name, rcode_name},
        icmp::IcmpError,
        name::DnsName,
    },
    event::Event,
};

/// Query packets remembered per (client, name, type) for the pattern.
const RECENT_QUERIES: usize = 32;
/// Latencies remembered per series for the median.
const RECENT_LATENCIES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SeriesKey {
    client: IpAddr,
    /// [`DnsName::key`] of the name (the name itself is kept once, in the series).
    qname: u64,
    qtype: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TxnKey {
    client: IpAddr,
    resolver: IpAddr,
    client_port: u16,
    id: u16,
    qname: u64,
    qtype: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Pending,
    TimedOut,
    Answered(u8),
    /// Its deadline was evicted before it was due: whether it would have timed out
    /// is unknown (an answer still counts).
    Untracked,
}

#[derive(Clone, Copy, Debug)]
struct QueryPacket {
    ts: u64,
    id: u16,
    port: u16,
    outcome: Outcome,
}

struct Series {
    name: DnsName,
    resolver: IpAddr,
    first_seen: u64,
    last_seen: u64,
    queries: u64,
    responses: u64,
    rcodes: BTreeMap<u8, u64>,
    timeouts: u64,
    recent: VecDeque<QueryPacket>,
    latencies: VecDeque<f64>,
    storm: bool,
}

/// Time-ordered deadlines of query packets.
struct Deadline {
    at: u64,
    sent: u64,
    txn: TxnKey,
}

impl Deadline {
    /// Whether `p` is the query packet this deadline was set for.
    fn is_for(&self, p: &QueryPacket) -> bool {
        p.id == self.txn.id && p.port == self.txn.client_port && p.ts == self.sent
    }
}

impl TxnKey {
    fn series(&self) -> SeriesKey {
        SeriesKey { client: self.client, qname: self.qname, qtype: self.qtype }
    }
}

/// The DNS detector.
pub struct DnsDetector {
    timeout_ns: u64,
    window_ns: u64,
    min_queries: u64,
    min_failed: f64,
    tolerance: f64,
    probes: Vec<(DnsName, KnownProbe)>,
    transactions: Table<TxnKey, u64>,
    series: Table<SeriesKey, Series>,
    deadlines: BoundedQueue<Deadline>,
    pending: Pending<SeriesKey>,
    /// Responses by rcode name, since start (for metrics).
    pub rcode_totals: BTreeMap<String, u64>,
    /// Query packets that went unanswered for `timeout_s`, since start (for metrics).
    pub timeouts_total: u64,
}

fn is_failure(o: Outcome) -> bool {
    matches!(o, Outcome::TimedOut | Outcome::Answered(2 | 3 | 5))
}

impl DnsDetector {
    /// A detector with `cfg`'s thresholds and caps.
    pub fn new(cfg: &Config) -> DnsDetector {
        DnsDetector {
            timeout_ns: cfg.dns.timeout_s.ns(),
            window_ns: cfg.dns.window_s.ns(),
            min_queries: cfg.dns.storm_min_queries.0,
            min_failed: cfg.dns.storm_min_failed_ratio.0,
            tolerance: cfg.dns.periodic_tolerance.0,
            probes: cfg.known_probe_names(),
            transactions: Table::new("dns_transactions", cfg.dns.transactions_cap.0),
            series: Table::new("dns_names", cfg.dns.names_cap.0),
            deadlines: BoundedQueue::new("dns_deadlines", cfg.dns.transactions_cap.0),
            pending: Pending::new("pending_dns_probe_storm", cfg.output.pending_cap.0),
            rcode_totals: BTreeMap::new(),
            timeouts_total: 0,
        }
    }

    /// Applies a new configuration (SIGHUP): thresholds at once, caps by resizing.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.timeout_ns = cfg.dns.timeout_s.ns();
        self.window_ns = cfg.dns.window_s.ns();
        self.min_queries = cfg.dns.storm_min_queries.0;
        self.min_failed = cfg.dns.storm_min_failed_ratio.0;
        self.tolerance = cfg.dns.periodic_tolerance.0;
        self.probes = cfg.known_probe_names();
        self.transactions.resize(cfg.dns.transactions_cap.0);
        self.series.resize(cfg.dns.names_cap.0);
        for d in self.deadlines.resize(cfg.dns.transactions_cap.0) {
            self.abandon(d);
        }
        self.pending.resize(cfg.output.pending_cap.0);
    }

    /// Tables, for `tracked` and `evictions`.
    pub fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        vec![
            (self.transactions.name(), self.transactions.len(), self.transactions.evictions()),
            (self.series.name(), self.series.len(), self.series.evictions()),
            (self.deadlines.name(), self.deadlines.len(), self.deadlines.evictions()),
            self.pending.occupancy(),
        ]
    }

    /// One DNS event.
    pub fn on_dns(&mut self, ev: &Event) {
        let Some(msg) = dns::decode(&ev.snap) else { return };
        let Some(q) = msg.question else { return };
        let now = ev.header.ts_ns;
        self.expire(now);
        if msg.is_response {
            self.on_response(ev, msg.id, msg.rcode, q, now);
        } else {
            self.on_query(ev, msg.id, q, now);
        }
    }

    fn on_query(&mut self, ev: &Event, id: u16, q: dns::Question, now: u64) {
        let (client, resolver, port) = (ev.src_ip(), ev.dst_ip(), ev.header.src_port);
        let qname = q.name.key();
        let txn = TxnKey { client, resolver, client_port: port, id, qname, qtype: q.qtype };
        // The deadline first: at the cap it evicts the oldest query with its
        // transaction, which may be this one's earlier packet.
        let deadline = Deadline { at: now.saturating_add(self.timeout_ns), sent: now, txn };
        if let Some(evicted) = self.deadlines.push_back(deadline) {
            self.abandon(evicted);
        }
        self.transactions.entry(txn, || now);
        let key = SeriesKey { client, qname, qtype: q.qtype };
        let s = self.series.entry(key, || Series {
            name: q.name,
            resolver,
            first_seen: now,
            last_seen: now,
            queries: 0,
            responses: 0,
            rcodes: BTreeMap::new(),
            timeouts: 0,
            recent: VecDeque::new(),
            latencies: VecDeque::new(),
            storm: false,
        });
        s.queries += 1;
        s.last_seen = now;
        if s.recent.len() == RECENT_QUERIES {
            // A packet leaving the window of attention unanswered is final.
            if s.recent.pop_front().is_some_and(|p| p.outcome == Outcome::Pending) {
                s.timeouts += 1;
            }
        }
        s.recent.push_back(QueryPacket { ts: now, id, port, outcome: Outcome::Pending });
        self.evaluate(&key, now);
    }

    fn on_response(&mut self, ev: &Event, id: u16, rcode: u8, q: dns::Question, now: u64) {
        *self.rcode_totals.entry(rcode_name(rcode)).or_default() += 1;
        let (client, resolver, port) = (ev.dst_ip(), ev.src_ip(), ev.header.dst_port);
        let qname = q.name.key();
        let txn = TxnKey { client, resolver, client_port: port, id, qname, qtype: q.qtype };
        let sent = self.transactions.peek(&txn).copied();
        let key = SeriesKey { client, qname, qtype: q.qtype };
        let Some(s) = self.series.get_mut(&key) else { return };
        s.responses += 1;
        *s.rcodes.entry(rcode).or_default() += 1;
        s.last_seen = now;
        if let Some(sent) = sent {
            if s.latencies.len() == RECENT_LATENCIES {
                s.latencies.pop_front();
            }
            s.latencies.push_back(secs(now.saturating_sub(sent)));
        }
        for p in s.recent.iter_mut().filter(|p| p.id == id && p.port == port) {
            if p.outcome == Outcome::TimedOut {
                s.timeouts -= 1;
            }
            if matches!(p.outcome, Outcome::Pending | Outcome::TimedOut | Outcome::Untracked) {
                p.outcome = Outcome::Answered(rcode);
            }
        }
        self.evaluate(&key, now);
    }

    /// Times out query packets whose deadline passed.
    pub fn expire(&mut self, now: u64) {
        while self.deadlines.front().is_some_and(|d| d.at <= now) {
            let d = self.deadlines.pop_front().expect("checked");
            let series = d.txn.series();
            let Some(s) = self.series.get_mut(&series) else { continue };
            let mut changed = false;
            for p in s.recent.iter_mut().filter(|p| d.is_for(p)) {
                if p.outcome == Outcome::Pending {
                    p.outcome = Outcome::TimedOut;
                    s.timeouts += 1;
                    self.timeouts_total += 1;
                    changed = true;
                }
            }
            if changed {
                self.evaluate(&series, d.at);
            }
        }
    }

    /// A query whose deadline was evicted: its transaction goes too (unless it was
    /// started again after this packet), and the packet can no longer time out.
    fn abandon(&mut self, d: Deadline) {
        if self.transactions.peek(&d.txn).is_some_and(|&first_sent| first_sent <= d.sent) {
            self.transactions.evict(&d.txn);
        }
        let series = d.txn.series();
        let Some(s) = self.series.peek_mut(&series) else { return };
        let mut changed = false;
        for p in s.recent.iter_mut().filter(|p| d.is_for(p)) {
            if p.outcome == Outcome::Pending {
                p.outcome = Outcome::Untracked;
                changed = true;
            }
        }
        if changed && s.storm {
            // Its `pending` count changed.
            self.pending.mark(&series, s.last_seen);
        }
    }

    /// Re-checks one series; a storm is marked for its finding to be rebuilt.
    fn evaluate(&mut self, key: &SeriesKey, now: u64) {
        let Some(s) = self.series.get_mut(key) else { return };
        if !s.storm {
            let in_window = s.recent.iter().filter(|p| now.saturating_sub(p.ts) <= self.window_ns);
            let (n, failed) = in_window.fold((0u64, 0u64), |(n, f), p| (n + 1, f + u64::from(is_failure(p.outcome))));
            if n < self.min_queries || (failed as f64) < self.min_failed * n as f64 {
                return;
            }
            s.storm = true;
        }
        self.pending.mark(key, now);
    }

    /// Whether a table of marked findings is full: build them before the next mark.
    pub fn pending_full(&self) -> bool {
        self.pending.is_full()
    }

    /// Builds the findings of the storms that changed since the last flush.
    pub fn flush(&mut self, book: &mut FindingBook) {
        for (key, at) in self.pending.drain() {
            let Some(s) = self.series.peek(&key) else { continue };
            let in_window: Vec<QueryPacket> =
                s.recent.iter().filter(|p| at.saturating_sub(p.ts) <= self.window_ns).copied().collect();
            let probe = self.probes.iter().find(|(n, _)| *n == s.name).map(|(_, p)| p.clone());
            let (finding, material) = storm_finding(&key, s, &in_window, self.tolerance, probe);
            book.upsert(finding, material, at);
        }
    }
}

impl Detector for DnsDetector {
    fn on_event(&mut self, ev: &Event, _icmp: Option<&IcmpError>) {
        if ev.kind() == EventKind::Dns {
            self.on_dns(ev);
        }
    }
    fn expire(&mut self, now_ns: u64) {
        DnsDetector::expire(self, now_ns);
    }
    fn flush(&mut self, book: &mut FindingBook) {
        DnsDetector::flush(self, book);
    }
    fn reconfigure(&mut self, cfg: &Config) {
        DnsDetector::reconfigure(self, cfg);
    }
    fn pending_full(&self) -> bool {
        DnsDetector::pending_full(self)
    }
    fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        DnsDetector::occupancy(self)
    }
}

/// The shape of the queries in the window.
struct Pattern {
    name: &'static str,
    period: Option<f64>,
    jitter: Option<f64>,
    /// Retry gaps of the most retried transaction (`backoff`), for the summary.
    gaps: Vec<f64>,
}

/// The pattern of the queries in the window, with period and jitter when they apply.
fn pattern(window: &[QueryPacket], tolerance: f64) -> Pattern {
    let times: Vec<u64> = window.iter().map(|p| p.ts).collect();
    let gaps = intervals(&times);
    if gaps.len() >= 2
        && let Some((true, period, jitter)) = regularity(&gaps, tolerance)
    {
        return Pattern { name: "periodic", period: Some(period), jitter: Some(jitter), gaps: Vec::new() };
    }
    let mut txns: BTreeMap<(u16, u16), Vec<u64>> = BTreeMap::new();
    for p in window {
        txns.entry((p.id, p.port)).or_default().push(p.ts);
    }
    let retried: Vec<&Vec<u64>> = txns.values().filter(|t| t.len() >= 3).collect();
    if !retried.is_empty() && retried.iter().all(|t| is_backoff(&intervals(t))) {
        let gaps = intervals(retried.iter().max_by_key(|t| t.len()).expect("not empty"));
        let mut starts: Vec<u64> = txns.values().map(|t| t[0]).collect();
        starts.sort_unstable();
        let (period, jitter) = match regularity(&intervals(&starts), tolerance) {
            Some((_, period, jitter)) => (Some(period), Some(jitter)),
            None => (None, None),
        };
        return Pattern { name: "backoff", period, jitter, gaps };
    }
    Pattern { name: "burst", period: None, jitter: None, gaps: Vec::new() }
}

fn storm_finding(
    key: &SeriesKey,
    s: &Series,
    window: &[QueryPacket],
    tolerance: f64,
    probe: Option<KnownProbe>,
) -> (Finding, String) {
    let shape = pattern(window, tolerance);
    let (pattern, period, jitter) = (shape.name, shape.period, shape.jitter);
    let pending = s.recent.iter().filter(|p| p.outcome == Outcome::Pending).count() as u64;
    let mut lat: Vec<f64> = s.latencies.iter().copied().collect();
    let median_latency = median(&mut lat);
    let qtype = qtype_name(key.qtype);
    let qname = s.name.to_string();
    let rcodes: Map<String, Value> = s.rcodes.iter().map(|(r, n)| (rcode_name(*r), json!(n))).collect();

    let mut subject = Map::new();
    subject.insert("client".into(), json!(key.client.to_string()));
    subject.insert("resolver".into(), json!(s.resolver.to_string()));
    subject.insert("qname".into(), json!(qname));
    subject.insert("qtype".into(), json!(qtype));

    let mut evidence = Map::new();
    evidence.insert("queries".into(), json!(s.queries));
    evidence.insert("responses".into(), json!(s.responses));
    evidence.insert("rcodes".into(), Value::Object(rcodes));
    evidence.insert("timeouts".into(), json!(s.timeouts));
    evidence.insert("pending".into(), json!(pending));
    evidence.insert("pattern".into(), json!(pattern));
    evidence.insert("period_s".into(), json!(period.map(round3)));
    evidence.insert("jitter_s".into(), json!(jitter.map(round3)));
    evidence.insert("median_latency_s".into(), json!(median_latency.map(round3)));
    evidence.insert("known_probe".into(), json!(probe.as_ref().map(|p| p.name.clone())));

    let failures = describe_failures(s);
    let how = match (pattern, period) {
        ("periodic", Some(p)) => format!(" every {p:.1} s"),
        ("backoff", _) => format!(
            ", retrying with growing back-off ({} s)",
            shape.gaps.iter().map(|g| format!("{g:.0}")).collect::<Vec<_>>().join(", ")
        ),
        _ => format!(" {} times", s.queries),
    };
    let summary = format!("{} asks {qtype} {qname}{how}; {failures}", key.client);
    let remedy = match &probe {
        Some(p) => p.remedy.clone(),
        None => format!(
            "Find out why {} cannot resolve {qname} ({}) and fix the name or the resolver; \
             if the name should not exist, stop the client from asking for it.",
            s.resolver,
            if s.responses == 0 { "it never answers".to_string() } else { "it answers with errors".to_string() }
        ),
    };
    let finding = Finding {
        kind: FindingKind::DnsProbeStorm,
        severity: Severity::Warning,
        first_seen_ns: s.first_seen,
        last_seen_ns: s.last_seen,
        summary,
        subject,
        evidence,
        remedy,
    };
    let material = format!("{pattern}|{:?}|{}", s.rcodes.keys().collect::<Vec<_>>(), s.responses == 0);
    (finding, material)
}

fn describe_failures(s: &Series) -> String {
    let servfail = s.rcodes.get(&2).copied().unwrap_or(0);
    let nxdomain = s.rcodes.get(&3).copied().unwrap_or(0);
    let refused = s.rcodes.get(&5).copied().unwrap_or(0);
    let mut parts = Vec::new();
    for (n, what) in [(servfail, "SERVFAIL"), (nxdomain, "NXDOMAIN"), (refused, "REFUSED")] {
        if n > 0 {
            parts.push(format!("{n}/{} answered {what}", s.queries));
        }
    }
    if s.responses == 0 {
        parts.push(format!("0/{} answered", s.queries));
    }
    if s.timeouts > 0 {
        parts.push(format!("{} timed out", s.timeouts));
    }
    parts.join(", ")
}

/// Clients with a storm for the same name, for the summary's `fleet` lines.
pub fn fleet(findings: &[Finding]) -> Vec<Value> {
    let mut by_name: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.kind == FindingKind::DnsProbeStorm) {
        let s = |k: &str| f.subject.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let e = by_name.entry((s("qname"), s("qtype"))).or_default();
        e.0.push(s("client"));
        if !e.1.contains(&s("resolver")) {
            e.1.push(s("resolver"));
        }
    }
    by_name
        .into_iter()
        .filter(|(_, (clients, _))| clients.len() >= 2)
        .map(|((qname, qtype), (clients, resolvers))| {
            json!({"kind": "dns_probe_storm", "qname": qname, "qtype": qtype, "clients": clients.len(), "resolvers": resolvers})
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use agent_common::{EventHeader, EventKind};

    use crate::{
        config::{Cap, Config},
        detect::{Detectors, Emission},
        event::Event,
    };

    const S: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * S;

    fn v4(last: u8) -> [u8; 16] {
        let mut a = [0u8; 16];
        a[..4].copy_from_slice(&[198, 18, 0, last]);
        a
    }

    /// A DNS message `A name` with `id`, as a query or a response with `rcode`.
    fn dns_event(ts: u64, client: u8, id: u16, name: &str, response: Option<u8>) -> Event {
        let flags = match response {
            None => [0x01, 0x00],
            Some(rcode) => [0x81, 0x80 | rcode],
        };
        let mut snap = id.to_be_bytes().to_vec();
        snap.extend_from_slice(&flags);
        snap.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            snap.push(label.len() as u8);
            snap.extend_from_slice(label.as_bytes());
        }
        snap.extend_from_slice(&[0, 0, 1, 0, 1]);
        let (c, r) = ((v4(client), 40000 + id), (v4(1), 53));
        let ((src, sport), (dst, dport)) = if response.is_none() { (c, r) } else { (r, c) };
        let header = EventHeader {
            ts_ns: ts,
            kind: EventKind::Dns as u8,
            ip_version: 4,
            src_addr: src,
            dst_addr: dst,
            src_port: sport,
            dst_port: dport,
            snap_len: snap.len() as u16,
            ..Default::default()
        };
        Event { header, snap }
    }

    #[test]
    fn a_query_whose_deadline_is_evicted_goes_with_its_transaction_and_stays_answerable() {
        let mut cfg = Config::default();
        cfg.dns.transactions_cap = Cap(2);
        let mut d = Detectors::new(&cfg, Emission::AtEnd);
        // Four queries within the timeout; room for two deadlines: ids 1 and 2 lose
        // theirs, with their transactions.
        for id in 1..=4u16 {
            d.on_event(&dns_event(T0 + u64::from(id) * 1_000_000, 2, id, "lost.example", None));
        }
        assert_eq!(d.evictions()["dns_deadlines"], 2);
        assert_eq!(d.evictions()["dns_transactions"], 2);
        assert_eq!((d.tracked()["dns_deadlines"], d.tracked()["dns_transactions"]), (2, 2));
        // id 1 is still answered (late, without a latency: its transaction is gone).
        d.on_event(&dns_event(T0 + 2 * S, 2, 1, "lost.example", Some(2)));
        d.finish(T0 + 60 * S);
        let f = d.take_due();
        assert_eq!(f.len(), 1, "{f:?}");
        let e = &f[0].evidence;
        // ids 3 and 4 timed out; 2 can no longer time out and is not left pending forever.
        assert_eq!(
            (&e["queries"], &e["responses"], &e["timeouts"], &e["pending"]),
            (&4.into(), &1.into(), &2.into(), &0.into()),
            "{e:?}"
        );
        assert_eq!(e["median_latency_s"], serde_json::Value::Null);
        assert_eq!(d.tracked()["dns_deadlines"], 0);
    }

    #[test]
    fn a_full_table_of_storm_marks_is_built_at_once_and_no_storm_is_lost() {
        let mut cfg = Config::default();
        cfg.output.pending_cap = Cap(1);
        let mut d = Detectors::new(&cfg, Emission::AtEnd);
        for client in [2u8, 3] {
            for id in 1..=4u16 {
                let t = T0 + u64::from(client) * 100 * S + u64::from(id) * 15 * S;
                d.on_event(&dns_event(t, client, id, "fail.example", None));
                d.on_event(&dns_event(t + S, client, id, "fail.example", Some(2)));
            }
        }
        assert_eq!(d.evictions()["pending_dns_probe_storm"], 0, "a full table is flushed, not evicted from");
        d.finish(T0 + 1000 * S);
        let f = d.take_due();
        let clients: Vec<_> = f.iter().map(|f| f.subject["client"].clone()).collect();
        assert_eq!(clients, ["198.18.0.2", "198.18.0.3"], "{f:?}");
        // Built early or not, each storm has its final evidence.
        assert!(f.iter().all(|f| f.evidence["queries"] == 4 && f.evidence["responses"] == 4), "{f:?}");
        assert_eq!(d.tracked()["pending_dns_probe_storm"], 0);
    }
}
