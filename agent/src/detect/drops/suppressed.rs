//! `local_icmp_suppressed`: ICMP errors this host made (frag-needed for a packet it
//! could not forward, port unreachable for a datagram nobody listens for) that its own
//! firewall dropped on the way out. Each one is a sender left to time out instead of
//! being told; for frag-needed, a PMTU black hole made here. Named as soon as
//! `drops.icmp_suppressed_min` fall within `drops.icmp_suppressed_window_s`, before any
//! flow stalls for want of them.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
};

use serde_json::{Map, Value, json};

use super::{NETFILTER_DROP, interface_of};
use crate::{
    config::Config,
    detect::{
        finding::{Finding, FindingBook, Severity, rfc3339},
        kind::FindingKind,
        pending::Pending,
        table::Table,
    },
    drops::{DropEvent, DropHook},
};
use agent_common::drop::DropClass;

/// Distinct ICMP types counted per reporter; any more share one entry.
const TYPES: usize = 16;
/// Distinct destinations remembered per reporter (more are counted, not kept).
const DESTINATIONS: usize = 64;

/// One ICMP error type (and code, where the code is what matters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IcmpKind {
    v6: bool,
    icmp_type: u8,
    code: u8,
}

impl IcmpKind {
    /// The kind of an ICMP (`v6` false) or ICMPv6 error.
    pub fn new(v6: bool, icmp_type: u8, code: u8) -> IcmpKind {
        // Codes of time exceeded, parameter problem and packet too big change nothing
        // a remedy says: one kind each.
        let code = match (v6, icmp_type) {
            (false, 3) | (true, 1) => code,
            _ => 0,
        };
        IcmpKind { v6, icmp_type, code }
    }

    /// Its name in evidence (`frag_needed`, `port_unreachable`, `packet_too_big`, ...).
    pub fn name(self) -> String {
        let known = match (self.v6, self.icmp_type, self.code) {
            (false, 3, 0) => "net_unreachable",
            (false, 3, 1) => "host_unreachable",
            (false, 3, 2) => "protocol_unreachable",
            (false, 3, 3) | (true, 1, 4) => "port_unreachable",
            (false, 3, 4) => "frag_needed",
            (false, 3, 9 | 10 | 13) | (true, 1, 1) => "admin_prohibited",
            (false, 11, _) | (true, 3, _) => "time_exceeded",
            (false, 12, _) | (true, 4, _) => "parameter_problem",
            (true, 1, 0) => "no_route",
            (true, 1, 3) => "address_unreachable",
            (true, 2, _) => "packet_too_big",
            _ => return format!("type_{}_code_{}", self.icmp_type, self.code),
        };
        known.to_string()
    }

    /// The nftables match for it (`icmp type destination-unreachable icmp code
    /// frag-needed`).
    pub fn nft_match(self) -> String {
        let (fam, code_name) = if self.v6 { ("icmpv6", v6_code(self.code)) } else { ("icmp", v4_code(self.code)) };
        let dest_unreach = if self.v6 { 1 } else { 3 };
        let type_name = match (self.v6, self.icmp_type) {
            (_, t) if t == dest_unreach => "destination-unreachable".to_string(),
            (false, 11) | (true, 3) => "time-exceeded".to_string(),
            (false, 12) | (true, 4) => "parameter-problem".to_string(),
            (true, 2) => "packet-too-big".to_string(),
            (_, t) => t.to_string(),
        };
        if self.icmp_type == dest_unreach {
            let code = code_name.map_or_else(|| self.code.to_string(), str::to_string);
            format!("{fam} type {type_name} {fam} code {code}")
        } else {
            format!("{fam} type {type_name}")
        }
    }
}

fn v4_code(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "net-unreachable",
        1 => "host-unreachable",
        2 => "prot-unreachable",
        3 => "port-unreachable",
        4 => "frag-needed",
        9 => "net-prohibited",
        10 => "host-prohibited",
        13 => "admin-prohibited",
        _ => return None,
    })
}

fn v6_code(code: u8) -> Option<&'static str> {
    Some(match code {
        0 => "no-route",
        1 => "admin-prohibited",
        3 => "addr-unreachable",
        4 => "port-unreachable",
        _ => return None,
    })
}

/// The ICMP errors one reporter (this host's address) had dropped.
struct Reporter {
    first: u64,
    last: u64,
    total: u64,
    /// Times of the latest `min` drops: enough to tell whether `min` fell in a window.
    recent: VecDeque<u64>,
    by_kind: BTreeMap<IcmpKind, u64>,
    /// Drops of kinds past the [`TYPES`] kept.
    other_kinds: u64,
    destinations: Vec<IpAddr>,
    destination_count: u64,
    reason: String,
    hook: DropHook,
    interface: String,
    /// Once the threshold was reached, every later drop updates the finding.
    reported: bool,
}

/// The `local_icmp_suppressed` detector.
pub struct SuppressedIcmp {
    min: u64,
    window_ns: u64,
    reporters: Table<IpAddr, Reporter>,
    pending: Pending<IpAddr>,
}

impl SuppressedIcmp {
    /// A detector with `cfg`'s threshold, window and caps.
    pub fn new(cfg: &Config) -> SuppressedIcmp {
        SuppressedIcmp {
            min: cfg.drops.icmp_suppressed_min.0,
            window_ns: cfg.drops.icmp_suppressed_window_s.ns(),
            reporters: Table::new("icmp_suppressed_reporters", cfg.drops.tallies_cap.0),
            pending: Pending::new("pending_local_icmp_suppressed", cfg.output.pending_cap.0),
        }
    }

    /// Applies a new configuration without losing state.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.min = cfg.drops.icmp_suppressed_min.0;
        self.window_ns = cfg.drops.icmp_suppressed_window_s.ns();
        self.reporters.resize(cfg.drops.tallies_cap.0);
        self.pending.resize(cfg.output.pending_cap.0);
    }

    /// A drop: counted when it is an ICMP error this host made (output hook) that a
    /// netfilter rule dropped.
    pub fn record(&mut self, d: &DropEvent) {
        if d.class != DropClass::IcmpError || d.hook != DropHook::Output || d.reason != NETFILTER_DROP {
            return;
        }
        let p = &d.packet;
        let now = p.header.ts_ns;
        let (reporter, destination) = (p.src_ip(), p.dst_ip());
        let (icmp_type, code) = match &d.icmp {
            Some(i) => (i.icmp_type, i.code),
            None => (p.header.info.icmp_type, p.header.info.icmp_code),
        };
        let kind = IcmpKind::new(p.header.ip_version == 6, icmp_type, code);
        let min = self.min as usize;
        let r = self.reporters.entry(reporter, || Reporter {
            first: now,
            last: now,
            total: 0,
            recent: VecDeque::with_capacity(min),
            by_kind: BTreeMap::new(),
            other_kinds: 0,
            destinations: Vec::new(),
            destination_count: 0,
            reason: String::new(),
            hook: d.hook,
            interface: String::new(),
            reported: false,
        });
        r.total += 1;
        r.last = r.last.max(now);
        r.recent.push_back(now);
        while r.recent.len() > min {
            r.recent.pop_front();
        }
        if r.by_kind.contains_key(&kind) || r.by_kind.len() < TYPES {
            *r.by_kind.entry(kind).or_default() += 1;
        } else {
            r.other_kinds += 1;
        }
        if !r.destinations.contains(&destination) {
            r.destination_count += 1;
            if r.destinations.len() < DESTINATIONS {
                r.destinations.push(destination);
            }
        }
        if r.reason != d.reason {
            r.reason = d.reason.clone();
        }
        r.hook = d.hook;
        r.interface = interface_of(d);
        let in_window = r.recent.len() >= min
            && r.recent.back().zip(r.recent.front()).is_some_and(|(b, f)| b.saturating_sub(*f) <= self.window_ns);
        r.reported |= in_window;
        if r.reported {
            self.pending.mark(&reporter, now);
        }
    }

    /// Whether the table of marked findings is full.
    pub fn pending_full(&self) -> bool {
        self.pending.is_full()
    }

    /// Tables, for `tracked` and `evictions`.
    pub fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        vec![(self.reporters.name(), self.reporters.len(), self.reporters.evictions()), self.pending.occupancy()]
    }

    /// Builds the findings whose evidence changed since the last flush.
    pub fn flush(&mut self, book: &mut FindingBook) {
        for (reporter, at) in self.pending.drain() {
            if let Some(r) = self.reporters.peek(&reporter) {
                let (finding, material) = finding(reporter, r, at);
                book.upsert(finding, material, at);
            }
        }
    }
}

/// The finding for one reporter, and what, changed, is worth printing it again for.
fn finding(reporter: IpAddr, r: &Reporter, now: u64) -> (Finding, String) {
    let mut by_type: Map<String, Value> = Map::new();
    for (kind, n) in &r.by_kind {
        let name = kind.name();
        let sum = by_type.get(&name).and_then(Value::as_u64).unwrap_or(0) + n;
        by_type.insert(name, json!(sum));
    }
    if r.other_kinds > 0 {
        by_type.insert("other".into(), json!(r.other_kinds));
    }
    let mut subject = Map::new();
    subject.insert("reporter".into(), json!(reporter.to_string()));
    let mut evidence = Map::new();
    evidence.insert("suppressed".into(), json!(r.total));
    evidence.insert("by_type".into(), Value::Object(by_type.clone()));
    evidence.insert("drop_reason".into(), json!(r.reason));
    evidence.insert("drop_hook".into(), json!(r.hook.name()));
    if !r.interface.is_empty() {
        evidence.insert("drop_interface".into(), json!(r.interface));
    }
    evidence.insert("destinations".into(), json!(r.destination_count));
    evidence.insert("first".into(), json!(rfc3339(r.first)));
    evidence.insert("last".into(), json!(rfc3339(r.last)));
    let types: Vec<String> = by_type.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let why = if r.reason == NETFILTER_DROP { "netfilter" } else { r.reason.as_str() };
    let hook = r.hook.name();
    let summary = format!(
        "{reporter} sent {} ICMP error{} ({}) to {} destination{} and this host's firewall dropped them ({why}, \
         {hook} hook): the senders are never told why their packets fail",
        r.total,
        if r.total == 1 { "" } else { "s" },
        types.join(", "),
        r.destination_count,
        if r.destination_count == 1 { "" } else { "s" },
    );
    let rules: Vec<String> =
        r.by_kind.keys().map(|k| format!("`nft insert rule inet filter {hook} {} accept`", k.nft_match())).collect();
    let remedy = format!(
        "Allow the ICMP errors this host sends out of its {hook} chain (nftables: {}). Dropped, a frag-needed or \
         packet-too-big makes a PMTU black hole, and an unreachable leaves its sender waiting for a timeout.",
        rules.join(", ")
    );
    let finding = Finding {
        kind: FindingKind::LocalIcmpSuppressed,
        severity: Severity::Warning,
        first_seen_ns: r.first,
        last_seen_ns: now.max(r.last),
        summary,
        subject,
        evidence,
        remedy,
    };
    let material = by_type.keys().cloned().collect::<Vec<_>>().join(",");
    (finding, material)
}
