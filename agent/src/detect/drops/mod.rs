//! This host's own drops, as evidence: the drop program says which packets the kernel
//! freed as dropped, why and where. A finding built from packets seen on the wire
//! cannot tell whether they died on this host or beyond it; this ledger can, and the
//! findings about those packets say so (`dropped_here`, see [`evidence`]).
//!
//! Drops are tallied by what a finding's subject names: a large DF segment by its TCP
//! flow, DTLS and VPN traffic by address pair and port, DNS by address pair, an ICMP
//! frag-needed / packet-too-big by the sender and receiver it quotes. ICMP errors this
//! host made and its own firewall dropped are a finding of their own
//! ([`suppressed`], `local_icmp_suppressed`).

mod evidence;
mod suppressed;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use agent_common::{
    drop::DropClass,
    proto::{ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMPV6_PACKET_TOO_BIG},
};

use super::{Detector, finding::FindingBook, table::Table};
use crate::{
    config::Config,
    decode::icmp::IcmpError,
    drops::{DropEvent, DropHook},
    event::Event,
};
pub use evidence::ANNOTATED;

/// The kernel's reason for a netfilter rule's drop.
pub(crate) const NETFILTER_DROP: &str = "NETFILTER_DROP";
/// The kernel's reason for a packet too big for its next hop.
pub(crate) const PKT_TOO_BIG: &str = "PKT_TOO_BIG";

/// What a tally counts drops of: the packets a finding's subject names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum DropKey {
    /// Large DF segments of one TCP flow, as sent.
    Segment { src: IpAddr, sport: u16, dst: IpAddr, dport: u16 },
    /// DTLS or VPN-port datagrams between two addresses (either way) on one port.
    Vpn { lo: IpAddr, hi: IpAddr, port: u16 },
    /// DNS between two addresses, either way.
    Dns { lo: IpAddr, hi: IpAddr },
    /// ICMP frag-needed / packet-too-big about packets from `sender` to `receiver`.
    TooBigIcmp { sender: IpAddr, receiver: IpAddr },
}

/// The two addresses in a fixed order, so that either direction finds one tally.
fn ordered(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b { (a, b) } else { (b, a) }
}

/// Drops of one kind of packet: how many, when, and where the latest was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Drops counted.
    pub count: u64,
    /// Time of the first.
    pub first: u64,
    /// Time of the latest.
    pub last: u64,
    /// The latest drop's reason (kernel name).
    pub reason: String,
    /// The latest drop's hook.
    pub hook: DropHook,
    /// The interface of the latest drop (name, else ifindex; empty if none).
    pub interface: String,
    /// The route device's MTU, for a drop as too big (0: unknown).
    pub mtu: u32,
}

impl Tally {
    fn new(d: &DropEvent) -> Tally {
        Tally {
            count: 0,
            first: d.packet.header.ts_ns,
            last: 0,
            reason: String::new(),
            hook: d.hook,
            interface: String::new(),
            mtu: 0,
        }
    }

    fn add(&mut self, d: &DropEvent) {
        self.count += 1;
        self.last = self.last.max(d.packet.header.ts_ns);
        if self.reason != d.reason {
            self.reason = d.reason.clone();
        }
        self.hook = d.hook;
        self.interface = interface_of(d);
        if d.reason == PKT_TOO_BIG && d.out_mtu != 0 {
            self.mtu = d.out_mtu;
        }
    }

    /// The reason in words for a summary: `netfilter` for a firewall rule, else the
    /// kernel's name.
    pub fn why(&self) -> &str {
        if self.is_firewall() { "netfilter" } else { &self.reason }
    }

    /// Whether a netfilter rule dropped them.
    pub fn is_firewall(&self) -> bool {
        self.reason == NETFILTER_DROP
    }
}

/// The interface a drop happened at: the one it came in on for a received packet
/// dropped before routing or on its way to this host, else the one its route leads
/// out of (where a too-big packet did not fit, where an output rule stopped it).
fn interface_of(d: &DropEvent) -> String {
    let (index, name) = match d.hook {
        DropHook::Prerouting | DropHook::Input => (d.in_ifindex, &d.in_ifname),
        DropHook::Forward | DropHook::Output if d.out_ifindex != 0 => (d.out_ifindex, &d.out_ifname),
        DropHook::Forward | DropHook::Output => (d.in_ifindex, &d.in_ifname),
    };
    match (name, index) {
        (Some(n), _) => n.clone(),
        (None, 0) => String::new(),
        (None, i) => i.to_string(),
    }
}

/// Whether `icmp` (from an IPv4 or IPv6 packet) says a packet was too big.
fn is_too_big(v4: bool, icmp: &IcmpError) -> bool {
    if v4 {
        icmp.icmp_type == ICMP_DEST_UNREACH && icmp.code == ICMP_FRAG_NEEDED
    } else {
        icmp.icmp_type == ICMPV6_PACKET_TOO_BIG
    }
}

/// This host's drops, tallied for the findings, and the suppressed-ICMP detector.
pub struct DropLedger {
    watched: bool,
    tallies: Table<DropKey, Tally>,
    suppressed: suppressed::SuppressedIcmp,
    /// A tally changed since the findings were last annotated.
    changed: bool,
}

impl DropLedger {
    /// An empty ledger, not watching (until [`DropLedger::set_watched`]).
    pub fn new(cfg: &Config) -> DropLedger {
        DropLedger {
            watched: false,
            tallies: Table::new("drop_tallies", cfg.drops.tallies_cap.0),
            suppressed: suppressed::SuppressedIcmp::new(cfg),
            changed: false,
        }
    }

    /// Whether this host's drops are watched: without, no finding can say whether
    /// this host dropped its packets (`dropped_here: "unknown"`).
    pub fn set_watched(&mut self, watched: bool) {
        self.changed |= self.watched != watched;
        self.watched = watched;
    }

    /// Whether this host's drops are watched.
    pub fn watched(&self) -> bool {
        self.watched
    }

    /// One packet this host's kernel dropped.
    pub fn record(&mut self, d: &DropEvent) {
        let p = &d.packet;
        let (src, dst) = (p.src_ip(), p.dst_ip());
        let (sport, dport) = (p.header.src_port, p.header.dst_port);
        let (lo, hi) = ordered(src, dst);
        let mut keys: [Option<DropKey>; 2] = [None, None];
        match d.class {
            DropClass::LargeDf => keys[0] = Some(DropKey::Segment { src, sport, dst, dport }),
            DropClass::Dtls | DropClass::VpnPort => {
                keys[0] = Some(DropKey::Vpn { lo, hi, port: sport });
                keys[1] = (dport != sport).then_some(DropKey::Vpn { lo, hi, port: dport });
            }
            DropClass::Dns => keys[0] = Some(DropKey::Dns { lo, hi }),
            DropClass::IcmpError => {
                if let Some(icmp) = &d.icmp
                    && let (true, Some(q)) = (is_too_big(p.header.ip_version == 4, icmp), icmp.quoted)
                {
                    keys[0] = Some(DropKey::TooBigIcmp { sender: q.src, receiver: q.dst });
                }
                self.suppressed.record(d);
            }
            DropClass::Other | DropClass::Tls | DropClass::TcpSyn => {}
        }
        for key in keys.into_iter().flatten() {
            self.tallies.entry(key, || Tally::new(d)).add(d);
            self.changed = true;
        }
    }

    /// Whether a tally changed since the last call: every finding it could speak to
    /// is then annotated again.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    fn tally(&self, key: &DropKey) -> Option<&Tally> {
        self.tallies.peek(key)
    }

    /// Drops of the large DF segments of one TCP flow.
    pub fn segments(&self, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Option<&Tally> {
        self.tally(&DropKey::Segment { src, sport, dst, dport })
    }

    /// Drops of DTLS or VPN-port datagrams between `a` and `b` on `port` (either way).
    pub fn vpn(&self, a: IpAddr, b: IpAddr, port: u16) -> Option<&Tally> {
        let (lo, hi) = ordered(a, b);
        self.tally(&DropKey::Vpn { lo, hi, port })
    }

    /// Drops of DNS between `a` and `b` (either way).
    pub fn dns(&self, a: IpAddr, b: IpAddr) -> Option<&Tally> {
        let (lo, hi) = ordered(a, b);
        self.tally(&DropKey::Dns { lo, hi })
    }

    /// Drops of ICMP frag-needed / packet-too-big about packets from `sender` to
    /// `receiver`.
    pub fn too_big_icmp(&self, sender: IpAddr, receiver: IpAddr) -> Option<&Tally> {
        self.tally(&DropKey::TooBigIcmp { sender, receiver })
    }

    /// Adds this host's drop evidence to a finding of an [`ANNOTATED`] kind; returns
    /// what, changed, is worth printing the finding again for (`None` for other kinds).
    pub fn annotate(&self, f: &mut super::Finding) -> Option<String> {
        evidence::annotate(self, f)
    }
}

impl Detector for DropLedger {
    fn on_event(&mut self, _ev: &Event, _icmp: Option<&IcmpError>) {}
    fn expire(&mut self, _now_ns: u64) {}
    fn flush(&mut self, book: &mut FindingBook) {
        self.suppressed.flush(book);
    }
    fn reconfigure(&mut self, cfg: &Config) {
        self.tallies.resize(cfg.drops.tallies_cap.0);
        self.suppressed.reconfigure(cfg);
    }
    fn pending_full(&self) -> bool {
        self.suppressed.pending_full()
    }
    /// Nothing when drops are not watched: those tables stay empty, and a replay's
    /// summary stays what it was before the drop program existed.
    fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        if !self.watched {
            return Vec::new();
        }
        let mut out = vec![(self.tallies.name(), self.tallies.len(), self.tallies.evictions())];
        out.extend(self.suppressed.occupancy());
        out
    }
}
