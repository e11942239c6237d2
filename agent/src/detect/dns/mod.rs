//! DNS: transactions, rcodes, latency and timeouts; `dns_probe_storm` and
//! `dns_resolver_outage`.
//!
//! A storm is a client re-asking one resolver for one name that keeps failing: at
//! least `storm_min_queries` query packets for the same (client, resolver, name,
//! type) inside `window_s`, spanning more than `timeout_s`, with at least
//! `storm_min_failed_ratio` of their lookups failed (SERVFAIL, NXDOMAIN, REFUSED, an
//! ICMP error quoting the query, or no answer within `timeout_s`; a lookup is an id
//! and its retransmissions, and a late NOERROR is a slow success). Its pattern is
//! [`pattern`]'s; it warns only once it persisted (`storm_min_span_s` and three
//! periods; longer for names negative by design, [`names`], and for names that
//! resolved before). Timeouts count query packets; a query younger than `timeout_s`
//! at the end is `pending`.
//!
//! Many names failing at one resolver at once is an [`outage`]: one finding for the
//! resolver, and the failures inside it make no storm.
//!
//! Every query packet waits for its timeout in a bounded queue. When more queries
//! arrive within `timeout_s` than `transactions_cap`, the oldest waiting query is
//! evicted with its transaction (both counted): it can no longer time out, so it is
//! neither pending nor a timeout, though a late answer still counts.

mod finding;
mod names;
mod outage;
mod pattern;
mod series;
#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, net::IpAddr};

use serde_json::{Value, json};

use self::{
    finding::{Persistence, StormFacts, outage_finding, storm_finding, storm_subject},
    outage::{LookupState, OutageRule, Resolver},
    series::{IcmpReport, Rule, Series, SeriesKey, TxnKey},
};
use super::{
    Detector,
    finding::{Finding, FindingBook},
    kind::FindingKind,
    pending::Pending,
    queue::BoundedQueue,
    table::Table,
    util::{median, secs},
};
use agent_common::EventKind;

use crate::{
    config::{Config, KnownProbe},
    decode::{
        dns::{self, rcode_mnemonic, rcode_name},
        icmp::{self, IcmpError},
        name::DnsName,
    },
    event::Event,
};

/// Resolvers tracked for outages (LRU).
const RESOLVERS_CAP: u64 = 1024;

/// A transaction: when its first packet was sent, and its lookup at the resolver.
#[derive(Clone, Copy, Debug)]
struct Txn {
    sent: u64,
    serial: u64,
}

/// Time-ordered deadlines of query packets.
struct Deadline {
    at: u64,
    sent: u64,
    txn: TxnKey,
    serial: u64,
}

/// The latest query on a (client, resolver, client port) socket, for an ICMP error
/// whose quote stops before the DNS question.
#[derive(Clone, Copy, Debug)]
struct SocketQuery {
    id: u16,
    qname: u64,
    qtype: u16,
}

/// The DNS detector.
pub struct DnsDetector {
    timeout_ns: u64,
    rule: Rule,
    outage_rule: OutageRule,
    persistence: Persistence,
    tolerance: f64,
    ports: Vec<u16>,
    probes: Vec<(DnsName, KnownProbe)>,
    transactions: Table<TxnKey, Txn>,
    sockets: Table<(IpAddr, IpAddr, u16), SocketQuery>,
    series: Table<SeriesKey, Series>,
    resolvers: Table<IpAddr, Resolver>,
    deadlines: BoundedQueue<Deadline>,
    pending: Pending<SeriesKey>,
    pending_outages: Pending<IpAddr>,
    /// Responses by rcode name, since start (for metrics).
    pub rcode_totals: BTreeMap<String, u64>,
    /// Query packets that went unanswered for `timeout_s`, since start (for metrics).
    pub timeouts_total: u64,
}

impl DnsDetector {
    /// A detector with `cfg`'s thresholds and caps.
    pub fn new(cfg: &Config) -> DnsDetector {
        let mut d = DnsDetector {
            timeout_ns: 0,
            rule: Rule { window_ns: 0, timeout_ns: 0, min_queries: 0, min_failed: 0.0 },
            outage_rule: OutageRule { window_ns: 0, min_names: 0, min_failed: 0.0 },
            persistence: Persistence { min_span_s: 0.0, negative_min_span_s: 0.0, resolved_before_min_span_s: 0.0 },
            tolerance: 0.0,
            ports: Vec::new(),
            probes: Vec::new(),
            transactions: Table::new("dns_transactions", cfg.dns.transactions_cap.0),
            sockets: Table::new("dns_sockets", cfg.dns.transactions_cap.0),
            series: Table::new("dns_names", cfg.dns.names_cap.0),
            resolvers: Table::new("dns_resolvers", RESOLVERS_CAP),
            deadlines: BoundedQueue::new("dns_deadlines", cfg.dns.transactions_cap.0),
            pending: Pending::new("pending_dns_probe_storm", cfg.output.pending_cap.0),
            pending_outages: Pending::new("pending_dns_resolver_outage", cfg.output.pending_cap.0),
            rcode_totals: BTreeMap::new(),
            timeouts_total: 0,
        };
        d.thresholds(cfg);
        d
    }

    fn thresholds(&mut self, cfg: &Config) {
        let c = &cfg.dns;
        self.timeout_ns = c.timeout_s.ns();
        self.rule = Rule {
            window_ns: c.window_s.ns(),
            timeout_ns: c.timeout_s.ns(),
            min_queries: c.storm_min_queries.0,
            min_failed: c.storm_min_failed_ratio.0,
        };
        self.outage_rule = OutageRule {
            window_ns: c.outage_window_s.ns(),
            min_names: c.outage_min_names.0,
            min_failed: c.outage_min_failed_ratio.0,
        };
        self.persistence = Persistence {
            min_span_s: c.storm_min_span_s.0,
            negative_min_span_s: c.negative_min_span_s.0,
            resolved_before_min_span_s: c.resolved_before_min_span_s.0,
        };
        self.tolerance = c.periodic_tolerance.0;
        self.ports = c.ports.iter().map(|p| p.0).collect();
        self.probes = cfg.known_probe_names();
    }

    /// Applies a new configuration (SIGHUP): thresholds at once, caps by resizing.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.thresholds(cfg);
        self.transactions.resize(cfg.dns.transactions_cap.0);
        self.sockets.resize(cfg.dns.transactions_cap.0);
        self.series.resize(cfg.dns.names_cap.0);
        for d in self.deadlines.resize(cfg.dns.transactions_cap.0) {
            self.abandon(d);
        }
        self.pending.resize(cfg.output.pending_cap.0);
        self.pending_outages.resize(cfg.output.pending_cap.0);
    }

    /// Tables, for `tracked` and `evictions`.
    pub fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        let (held, evicted) = self.resolvers.iter().fold((0, 0), |(h, e), (_, r)| (h + r.held(), e + r.evicted));
        vec![
            (self.transactions.name(), self.transactions.len(), self.transactions.evictions()),
            (self.sockets.name(), self.sockets.len(), self.sockets.evictions()),
            (self.series.name(), self.series.len(), self.series.evictions()),
            (self.resolvers.name(), self.resolvers.len(), self.resolvers.evictions()),
            ("dns_resolver_lookups", held, evicted),
            (self.deadlines.name(), self.deadlines.len(), self.deadlines.evictions()),
            self.pending.occupancy(),
            self.pending_outages.occupancy(),
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
        // transaction, which may be this one's earlier packet. Its lookup's serial
        // number is known once the transaction is.
        let deadline = Deadline { at: now.saturating_add(self.timeout_ns), sent: now, txn, serial: 0 };
        if let Some(evicted) = self.deadlines.push_back(deadline) {
            self.abandon(evicted);
        }
        let mut first = false;
        let t = self.transactions.entry(txn, || {
            first = true;
            Txn { sent: now, serial: 0 }
        });
        let r = self.resolvers.entry(resolver, Resolver::default);
        if first {
            t.serial = r.lookup(now, qname, client, &self.outage_rule);
        } else if r.update(t.serial, |_, packets| *packets += 1) {
            self.pending_outages.mark(&resolver, now);
        }
        if let Some(d) = self.deadlines.back_mut() {
            d.serial = t.serial;
        }
        if r.check(now, &self.outage_rule) {
            self.pending_outages.mark(&resolver, now);
        }
        *self.sockets.entry((client, resolver, port), || SocketQuery { id, qname, qtype: q.qtype }) =
            SocketQuery { id, qname, qtype: q.qtype };
        let key = txn.series();
        let outages = self.resolvers.peek(&resolver).map_or(&[][..], Resolver::outages);
        let s = self.series.entry(key, || Series::new(q.name));
        s.push(now, id, port, first, outages);
        if storm_changed(s, &self.rule, outages) {
            self.pending.mark(&key, now);
        }
    }

    fn on_response(&mut self, ev: &Event, id: u16, rcode: u8, q: dns::Question, now: u64) {
        // The counter is there after the first response of each rcode: no String
        // is made for the others.
        match rcode_mnemonic(rcode).and_then(|name| self.rcode_totals.get_mut(name)) {
            Some(n) => *n += 1,
            None => *self.rcode_totals.entry(rcode_name(rcode)).or_default() += 1,
        }
        let (client, resolver, port) = (ev.dst_ip(), ev.src_ip(), ev.header.dst_port);
        let qname = q.name.key();
        let txn = TxnKey { client, resolver, client_port: port, id, qname, qtype: q.qtype };
        let known = self.transactions.peek(&txn).copied();
        let r = self.resolvers.entry(resolver, Resolver::default);
        r.answered = true;
        if let Some(t) = known {
            let changed = r.update(t.serial, |state, _| {
                if !matches!(state, LookupState::Answered(_)) {
                    *state = LookupState::Answered(rcode);
                }
            });
            if r.check(now, &self.outage_rule) || changed {
                self.pending_outages.mark(&resolver, now);
            }
        }
        let key = txn.series();
        let Some(s) = self.series.get_mut(&key) else { return };
        s.answer(id, port, rcode, known.map(|t| secs(now.saturating_sub(t.sent))), now);
        let outages = self.resolvers.peek(&resolver).map_or(&[][..], Resolver::outages);
        if storm_changed(s, &self.rule, outages) {
            self.pending.mark(&key, now);
        }
    }

    /// An ICMP error quoting a DNS query: that query failed (it is no timeout).
    fn on_icmp(&mut self, ev: &Event, icmp: &IcmpError) {
        let Some(quoted) = icmp.quoted else { return };
        let (Some(port), Some(dport)) = (quoted.src_port, quoted.dst_port) else { return };
        if quoted.proto != 17 || !(dport == 53 || self.ports.contains(&dport)) {
            return;
        }
        let (client, resolver, now) = (quoted.src, quoted.dst, ev.header.ts_ns);
        self.expire(now);
        let payload = icmp::quoted_udp_payload(&ev.snap).unwrap_or(&[]);
        let (id, question) = match dns::decode(payload) {
            Some(m) if m.is_response => return,
            Some(m) => (Some(m.id), m.question),
            None => (payload.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])), None),
        };
        let (id, qname, qtype) = match (id, question) {
            (Some(id), Some(q)) => (id, q.name.key(), q.qtype),
            (id, None) => {
                let Some(sq) = self.sockets.peek(&(client, resolver, port)).copied() else { return };
                if id.is_some_and(|id| id != sq.id) {
                    return;
                }
                (sq.id, sq.qname, sq.qtype)
            }
            (None, Some(_)) => return,
        };
        let txn = TxnKey { client, resolver, client_port: port, id, qname, qtype };
        let report = IcmpReport {
            from: ev.src_ip(),
            ip_version: ev.header.ip_version,
            icmp_type: icmp.icmp_type,
            code: icmp.code,
        };
        let key = txn.series();
        let Some(s) = self.series.get_mut(&key) else { return };
        if !s.icmp_error(id, port, report, now) {
            return;
        }
        if let Some(t) = self.transactions.peek(&txn).copied()
            && let Some(r) = self.resolvers.get_mut(&resolver)
        {
            let changed = r.update(t.serial, |state, _| {
                if !matches!(state, LookupState::Answered(_)) {
                    *state = LookupState::Icmp;
                }
            });
            if r.check(now, &self.outage_rule) || changed {
                self.pending_outages.mark(&resolver, now);
            }
        }
        self.evaluate(&key, now);
    }

    /// Times out query packets whose deadline passed.
    pub fn expire(&mut self, now: u64) {
        while self.deadlines.front().is_some_and(|d| d.at <= now) {
            let d = self.deadlines.pop_front().expect("checked");
            let key = d.txn.series();
            let Some(s) = self.series.get_mut(&key) else { continue };
            if !s.time_out(d.txn.id, d.txn.client_port, d.sent, d.at) {
                continue;
            }
            self.timeouts_total += 1;
            if let Some(r) = self.resolvers.get_mut(&d.txn.resolver) {
                let changed = r.update(d.serial, |state, _| {
                    if *state == LookupState::Pending {
                        *state = LookupState::TimedOut;
                    }
                });
                if r.check(d.at, &self.outage_rule) || changed {
                    self.pending_outages.mark(&d.txn.resolver, d.at);
                }
            }
            self.evaluate(&key, d.at);
        }
    }

    /// A query whose deadline was evicted: its transaction goes too (unless it was
    /// started again after this packet), and the packet can no longer time out.
    fn abandon(&mut self, d: Deadline) {
        if self.transactions.peek(&d.txn).is_some_and(|t| t.sent <= d.sent) {
            self.transactions.evict(&d.txn);
        }
        let key = d.txn.series();
        let Some(s) = self.series.peek_mut(&key) else { return };
        if s.untrack(d.txn.id, d.txn.client_port, d.sent) && s.storm.is_some() {
            // Its `pending` count changed.
            self.pending.mark(&key, d.sent);
        }
    }

    /// Re-checks one series; a storm is marked for its finding to be rebuilt.
    fn evaluate(&mut self, key: &SeriesKey, now: u64) {
        let outages = self.resolvers.peek(&key.resolver).map_or(&[][..], Resolver::outages);
        let Some(s) = self.series.get_mut(key) else { return };
        if storm_changed(s, &self.rule, outages) {
            self.pending.mark(key, now);
        }
    }

    /// Whether a table of marked findings is full: build them before the next mark.
    pub fn pending_full(&self) -> bool {
        self.pending.is_full() || self.pending_outages.is_full()
    }

    /// Builds the findings of the storms and outages that changed since the last
    /// flush.
    pub fn flush(&mut self, book: &mut FindingBook) {
        // Outages first: an outage takes its failures away from the storms of its
        // resolver, so those storms are rebuilt (or taken back) after it.
        for (resolver, at) in self.pending_outages.drain() {
            let Some(r) = self.resolvers.peek(&resolver) else { continue };
            if r.evidence.episodes == 0 {
                continue;
            }
            let (finding, material) = outage_finding(resolver, &r.evidence, r.active());
            book.upsert(finding, material, at);
            let storms: Vec<SeriesKey> = self
                .series
                .iter()
                .filter(|(k, s)| k.resolver == resolver && s.storm.is_some())
                .map(|(k, _)| *k)
                .collect();
            for key in storms {
                self.pending.mark(&key, at);
            }
        }
        for (key, at) in self.pending.drain() {
            let outages = self.resolvers.peek(&key.resolver).map_or(&[][..], Resolver::outages);
            let Some(s) = self.series.peek_mut(&key) else { continue };
            let Some((packets, counts)) = s.storm_view(&self.rule, outages) else {
                // No storm after all: its failures belong to an outage of its resolver.
                book.withdraw(FindingKind::DnsProbeStorm, &storm_subject(&key, &s.name.to_string()));
                continue;
            };
            let mut lat: Vec<f64> = s.latencies.iter().copied().collect();
            let storm_start = counts.first_ts.unwrap_or(counts.last_ts);
            let facts = StormFacts {
                key: &key,
                qname: s.name.to_string(),
                pattern: pattern::pattern(&packets, self.tolerance),
                median_latency: median(&mut lat),
                probe: self.probes.iter().find(|(n, _)| *n == s.name).map(|(_, p)| p.clone()),
                negative: names::negative_by_design(&s.name, key.qtype),
                resolved_before: s.noerror_since.is_some_and(|t| t < storm_start),
                resolved_again: s.noerror_last.is_some_and(|t| t >= storm_start),
                longest_failing_s: secs(s.longest_failing_ns),
                icmp: s.icmp,
            };
            let (finding, material) = storm_finding(facts, &counts, &self.persistence);
            book.upsert(finding, material, at);
        }
    }
}

/// Whether `s` is (still) a storm whose finding is to be rebuilt. Cheap unless a
/// recent lookup failed.
fn storm_changed(s: &mut Series, rule: &Rule, outages: &[(u64, u64)]) -> bool {
    if s.storm.is_none() {
        // No storm without a failure, and none begins inside an outage (the windows
        // before it were looked at when their packets came).
        if !s.any_failing() || s.recent.back().is_none_or(|p| series::covered(outages, p.ts)) {
            return false;
        }
        let Some((first, _)) = s.storm_range(rule, outages) else { return false };
        s.storm = Some(s.recent[first].ts);
    }
    true
}

impl Detector for DnsDetector {
    fn on_event(&mut self, ev: &Event, icmp: Option<&IcmpError>) {
        match (ev.kind(), icmp) {
            (EventKind::Dns, _) => self.on_dns(ev),
            (EventKind::IcmpError, Some(i)) => self.on_icmp(ev, i),
            _ => {}
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

/// Clients with a storm for the same name, for the summary's `fleet` lines.
pub fn fleet(findings: &[Finding]) -> Vec<Value> {
    let mut by_name: BTreeMap<(String, String), (Vec<String>, Vec<String>)> = BTreeMap::new();
    for f in findings.iter().filter(|f| f.kind == FindingKind::DnsProbeStorm) {
        let s = |k: &str| f.subject.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let e = by_name.entry((s("qname"), s("qtype"))).or_default();
        if !e.0.contains(&s("client")) {
            e.0.push(s("client"));
        }
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
