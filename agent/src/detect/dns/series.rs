//! One series: a client asking one resolver for one name and type, its recent query
//! packets with what became of each, and the window in which it is a storm.
//!
//! A lookup is one (client port, id): its first packet and the retransmissions of
//! the same id. Packets count as `queries` and `timeouts`; lookups decide whether a
//! window failed, so that a stub resolver resending one query four times is one
//! failure, and a late NOERROR makes its lookup a slow success.

use std::{
    collections::{BTreeMap, VecDeque},
    hash::{Hash, Hasher},
    net::IpAddr,
};

use crate::{decode::name::DnsName, detect::hashing::write_addr_pair};

/// Query packets remembered per series (the storm's evidence beyond them is kept as
/// settled counts).
pub const RECENT_QUERIES: usize = 32;
/// Latencies remembered per series for the median.
pub const RECENT_LATENCIES: usize = 32;

/// A series: (client, resolver, name, type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesKey {
    /// Who asks.
    pub client: IpAddr,
    /// Whom it asks.
    pub resolver: IpAddr,
    /// [`DnsName::key`] of the name (the name itself is kept once, in the series).
    pub qname: u64,
    /// QTYPE.
    pub qtype: u16,
}

/// A transaction: one lookup's packets and its answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxnKey {
    /// Who asks.
    pub client: IpAddr,
    /// Whom it asks.
    pub resolver: IpAddr,
    /// The client's source port.
    pub client_port: u16,
    /// DNS id.
    pub id: u16,
    /// Name key.
    pub qname: u64,
    /// QTYPE.
    pub qtype: u16,
}

// Hashed in whole words (every field, as `Eq` compares them): looked up several
// times for every DNS event.
impl Hash for SeriesKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        write_addr_pair(h, self.client, self.resolver);
        h.write_u64(self.qname);
        h.write_u16(self.qtype);
    }
}

impl Hash for TxnKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        write_addr_pair(h, self.client, self.resolver);
        h.write_u64(self.qname);
        h.write_u64(u64::from(self.client_port) | u64::from(self.id) << 16 | u64::from(self.qtype) << 32);
    }
}

impl TxnKey {
    /// The series this transaction belongs to.
    pub fn series(&self) -> SeriesKey {
        SeriesKey { client: self.client, resolver: self.resolver, qname: self.qname, qtype: self.qtype }
    }
}

/// What became of a query packet (or, on a lookup's first packet, of the lookup).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Not answered, not yet due.
    Pending,
    /// Unanswered for `timeout_s`.
    TimedOut,
    /// Answered with this RCODE (late or not).
    Answered(u8),
    /// Answered by an ICMP error.
    Icmp,
    /// Its deadline was evicted before it was due: whether it would have timed out
    /// is unknown (an answer still counts).
    Untracked,
}

/// Whether a lookup with this outcome failed a storm's count.
pub fn fails(o: Outcome) -> bool {
    matches!(o, Outcome::TimedOut | Outcome::Icmp | Outcome::Answered(2 | 3 | 5))
}

/// One query packet.
#[derive(Clone, Copy, Debug)]
pub struct QueryPacket {
    /// When it was sent.
    pub ts: u64,
    /// DNS id.
    pub id: u16,
    /// Client port.
    pub port: u16,
    /// What became of this packet.
    pub outcome: Outcome,
    /// The first packet of its lookup (not a retransmission).
    pub first: bool,
    /// What became of its lookup (on the first packet only).
    pub lookup: Outcome,
    /// When its outcome was decided (answer, ICMP error or timeout), in ms after it
    /// was sent (saturating), else 0. Small, so that a series stays small.
    pub decided_ms: u32,
}

impl QueryPacket {
    /// When its outcome was decided (or it was sent), ns.
    pub fn decided_at(&self) -> u64 {
        self.ts.saturating_add(u64::from(self.decided_ms) * 1_000_000)
    }

    fn decide(&mut self, outcome: Outcome, at: u64) {
        self.outcome = outcome;
        self.decided_ms = u32::try_from(at.saturating_sub(self.ts) / 1_000_000).unwrap_or(u32::MAX);
    }
}

/// The storm rule's thresholds.
pub struct Rule {
    /// `dns.window_s`.
    pub window_ns: u64,
    /// `dns.timeout_s`: a storm's packets span more than this.
    pub timeout_ns: u64,
    /// `dns.storm_min_queries`.
    pub min_queries: u64,
    /// `dns.storm_min_failed_ratio`.
    pub min_failed: f64,
}

/// Counts over a storm's packets: its evidence.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Query packets.
    pub queries: u64,
    /// Packets answered.
    pub responses: u64,
    /// Answers by RCODE.
    pub rcodes: BTreeMap<u8, u64>,
    /// Packets unanswered for `timeout_s`.
    pub timeouts: u64,
    /// Packets not yet due.
    pub pending: u64,
    /// Packets answered by an ICMP error.
    pub icmp_errors: u64,
    /// Lookups.
    pub lookups: u64,
    /// Lookups that failed.
    pub failed: u64,
    /// First and last packet times.
    pub first_ts: Option<u64>,
    /// Latest packet time.
    pub last_ts: u64,
    /// Latest evidence: a packet, or what became of it.
    pub last_evidence: u64,
}

impl Counts {
    fn add(&mut self, p: &QueryPacket) {
        self.queries += 1;
        match p.outcome {
            Outcome::Answered(r) => {
                self.responses += 1;
                *self.rcodes.entry(r).or_default() += 1;
            }
            Outcome::TimedOut => self.timeouts += 1,
            Outcome::Pending => self.pending += 1,
            Outcome::Icmp => self.icmp_errors += 1,
            Outcome::Untracked => {}
        }
        if p.first {
            self.lookups += 1;
            self.failed += u64::from(fails(p.lookup));
        }
        self.first_ts.get_or_insert(p.ts);
        self.last_ts = self.last_ts.max(p.ts);
        self.last_evidence = self.last_evidence.max(p.decided_at());
    }
}

/// Whether `ts` falls in one of a resolver's outages (`(start, end)`, an ongoing one
/// ending at `u64::MAX`): such a failure belongs to the outage, not to the name.
pub fn covered(outages: &[(u64, u64)], ts: u64) -> bool {
    outages.iter().any(|&(a, b)| a <= ts && ts <= b)
}

/// How an ICMP error reported a query: its reporter and (IP version, type, code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpReport {
    /// The address that sent the ICMP error.
    pub from: IpAddr,
    /// 4 or 6.
    pub ip_version: u8,
    /// ICMP type.
    pub icmp_type: u8,
    /// ICMP code.
    pub code: u8,
}

/// One (client, resolver, name, type).
pub struct Series {
    /// The name asked.
    pub name: DnsName,
    /// Recent query packets, oldest first.
    pub recent: VecDeque<QueryPacket>,
    /// Recent latencies (s).
    pub latencies: VecDeque<f64>,
    /// Lookups in `recent` that failed (a storm is only looked for when some did).
    failing: u32,
    /// Send time of the earliest lookup answered NOERROR.
    pub noerror_since: Option<u64>,
    /// Send time of the latest lookup answered NOERROR (late answers included).
    pub noerror_last: Option<u64>,
    /// Send time of the first lookup of the current run of failures (none since the
    /// latest NOERROR answer: `None`).
    failing_since: Option<u64>,
    /// The longest run of failures without a NOERROR answer between, first to last
    /// lookup sent: how long the name really failed, where it also resolves.
    pub longest_failing_ns: u64,
    /// Start of its storm (first packet of the first window that held), once it held.
    pub storm: Option<u64>,
    /// The storm's packets that left `recent`.
    pub settled: Option<Box<Counts>>,
    /// The latest ICMP error about one of its queries.
    pub icmp: Option<IcmpReport>,
}

impl Series {
    /// An empty series for `name`.
    pub fn new(name: DnsName) -> Series {
        Series {
            name,
            recent: VecDeque::new(),
            latencies: VecDeque::new(),
            failing: 0,
            noerror_since: None,
            noerror_last: None,
            failing_since: None,
            longest_failing_ns: 0,
            storm: None,
            settled: None,
            icmp: None,
        }
    }

    /// A query packet sent at `ts`, the `first` of its lookup or a retransmission;
    /// `outages` are the resolver's (for what leaves the window of attention during a
    /// storm).
    pub fn push(&mut self, ts: u64, id: u16, port: u16, first: bool, outages: &[(u64, u64)]) {
        if self.recent.len() == RECENT_QUERIES
            && let Some(old) = self.recent.pop_front()
        {
            if old.first && fails(old.lookup) {
                self.failing -= 1;
            }
            if self.storm.is_some_and(|start| old.ts >= start) && !covered(outages, old.ts) {
                self.settled.get_or_insert_default().add(&old);
            }
        }
        self.recent.push_back(QueryPacket {
            ts,
            id,
            port,
            outcome: Outcome::Pending,
            first,
            lookup: Outcome::Pending,
            decided_ms: 0,
        });
    }

    /// Sets the outcome of the lookup (id, port) by `update`, keeping `failing` true.
    fn set_lookup(&mut self, id: u16, port: u16, update: impl FnOnce(Outcome) -> Outcome) {
        let Some(p) = self.recent.iter_mut().rev().find(|p| p.first && p.id == id && p.port == port) else { return };
        let (was, now) = (fails(p.lookup), update(p.lookup));
        p.lookup = now;
        match (was, fails(now)) {
            (false, true) => self.failing += 1,
            (true, false) => self.failing -= 1,
            _ => {}
        }
        if fails(now) {
            let since = *self.failing_since.get_or_insert(p.ts);
            self.longest_failing_ns = self.longest_failing_ns.max(p.ts.saturating_sub(since));
        } else if now == Outcome::Answered(0) && self.failing_since.is_some_and(|since| p.ts >= since) {
            self.failing_since = None;
        }
    }

    /// An answer with `rcode` to (id, port), `latency` after its first packet when
    /// that is known. A late answer turns timed-out packets back into answered ones.
    pub fn answer(&mut self, id: u16, port: u16, rcode: u8, latency: Option<f64>, now: u64) {
        if let Some(l) = latency {
            if self.latencies.len() == RECENT_LATENCIES {
                self.latencies.pop_front();
            }
            self.latencies.push_back(l);
        }
        for p in self.recent.iter_mut().filter(|p| p.id == id && p.port == port) {
            if !matches!(p.outcome, Outcome::Answered(_)) {
                p.decide(Outcome::Answered(rcode), now);
            }
        }
        self.set_lookup(id, port, |o| if matches!(o, Outcome::Answered(_)) { o } else { Outcome::Answered(rcode) });
        if rcode == 0
            && let Some(p) = self.recent.iter().find(|p| p.first && p.id == id && p.port == port)
        {
            self.noerror_since = Some(self.noerror_since.map_or(p.ts, |t| t.min(p.ts)));
            self.noerror_last = Some(self.noerror_last.map_or(p.ts, |t| t.max(p.ts)));
        }
    }

    /// The packet (id, port) sent at `sent` is due unanswered; whether it timed out.
    pub fn time_out(&mut self, id: u16, port: u16, sent: u64, at: u64) -> bool {
        let Some(p) = self.recent.iter_mut().find(|p| p.id == id && p.port == port && p.ts == sent) else {
            return false;
        };
        if p.outcome != Outcome::Pending {
            return false;
        }
        p.decide(Outcome::TimedOut, at);
        self.set_lookup(id, port, |o| if o == Outcome::Pending { Outcome::TimedOut } else { o });
        true
    }

    /// An ICMP error about (id, port): its latest unanswered packet failed.
    pub fn icmp_error(&mut self, id: u16, port: u16, report: IcmpReport, now: u64) -> bool {
        let unanswered = |o: Outcome| matches!(o, Outcome::Pending | Outcome::TimedOut | Outcome::Untracked);
        let Some(p) = self.recent.iter_mut().rev().find(|p| p.id == id && p.port == port && unanswered(p.outcome))
        else {
            return false;
        };
        p.decide(Outcome::Icmp, now);
        self.icmp = Some(report);
        self.set_lookup(id, port, |o| if matches!(o, Outcome::Answered(_)) { o } else { Outcome::Icmp });
        true
    }

    /// The packet (id, port) sent at `sent` lost its deadline: it can no longer time
    /// out. Whether it was still pending.
    pub fn untrack(&mut self, id: u16, port: u16, sent: u64) -> bool {
        match self.recent.iter_mut().find(|p| p.id == id && p.port == port && p.ts == sent) {
            Some(p) if p.outcome == Outcome::Pending => {
                p.outcome = Outcome::Untracked;
                true
            }
            _ => false,
        }
    }

    /// Whether any recent lookup failed (cheap: no storm without one).
    pub fn any_failing(&self) -> bool {
        self.failing > 0
    }

    /// The storm in `recent`, outside `outages`: indices of the first failed lookup
    /// of the first window where the rule held, and of the last packet of the last
    /// one.
    pub fn storm_range(&self, rule: &Rule, outages: &[(u64, u64)]) -> Option<(usize, usize)> {
        let v = &self.recent;
        let (mut i, mut n, mut lookups, mut failed) = (0usize, 0u64, 0u64, 0u64);
        let (mut first, mut last) = (None, None);
        for j in 0..v.len() {
            let pj = &v[j];
            if covered(outages, pj.ts) {
                continue;
            }
            n += 1;
            if pj.first {
                lookups += 1;
                failed += u64::from(fails(pj.lookup));
            }
            while i < j && (covered(outages, v[i].ts) || pj.ts - v[i].ts > rule.window_ns) {
                let pi = &v[i];
                if !covered(outages, pi.ts) {
                    n -= 1;
                    if pi.first {
                        lookups -= 1;
                        failed -= u64::from(fails(pi.lookup));
                    }
                }
                i += 1;
            }
            let holds = n >= rule.min_queries
                && lookups > 0
                && failed as f64 >= rule.min_failed * lookups as f64
                && pj.ts.saturating_sub(v[i].ts) > rule.timeout_ns;
            if holds && first.is_none() {
                // The storm begins with the window's first failure, not with the
                // answers before it.
                let failing = |k: &usize| !covered(outages, v[*k].ts) && v[*k].first && fails(v[*k].lookup);
                first = Some((i..=j).find(failing).unwrap_or(i));
            }
            if holds {
                last = Some(j);
            }
        }
        Some((first?, last?))
    }

    /// The storm's packets and counts (settled ones included), when it is one.
    pub fn storm_view(&mut self, rule: &Rule, outages: &[(u64, u64)]) -> Option<(Vec<QueryPacket>, Counts)> {
        let mut counts = self.settled.as_deref().cloned().unwrap_or_default();
        let Some((a, b)) = self.storm_range(rule, outages) else {
            // The storm left `recent`: what it settled must still be one (an outage
            // found since may have taken its failures).
            let span = counts.last_ts.saturating_sub(counts.first_ts.unwrap_or(counts.last_ts));
            let holds = counts.queries >= rule.min_queries
                && counts.lookups > 0
                && counts.failed as f64 >= rule.min_failed * counts.lookups as f64
                && span > rule.timeout_ns;
            if !holds {
                self.storm = None;
                self.settled = None;
                return None;
            }
            return Some((Vec::new(), counts));
        };
        let start = *self.storm.get_or_insert(self.recent[a].ts);
        let packets: Vec<QueryPacket> = self
            .recent
            .range(..=b)
            .filter(|p| p.ts >= start.min(self.recent[a].ts) && !covered(outages, p.ts))
            .copied()
            .collect();
        for p in &packets {
            counts.add(p);
        }
        Some((packets, counts))
    }
}
