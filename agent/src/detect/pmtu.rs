//! Path MTU: `pmtu_signal`, `pmtu_black_hole`, `mss_exceeds_path_mtu`.
//!
//! ICMPv4 "fragmentation needed" and ICMPv6 "packet too big" carry the MTU that did
//! not fit and quote the flow: discovery working (`pmtu_signal`). A flow whose sender's
//! retransmission timer keeps resending one DF segment larger than anything
//! acknowledged on it, which the receiver never acknowledges, and that gets no such
//! ICMP, is a black hole: the ICMP is being dropped somewhere ([`segments`] holds the
//! rule). A SYN whose MSS cannot fit a known path MTU predicts one.

mod segments;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use agent_common::{
    EventKind,
    proto::{ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, ICMPV6_PACKET_TOO_BIG, IPPROTO_TCP, TCP_ACK},
};
use serde_json::{Map, json};

use super::{
    Detector,
    finding::{Finding, FindingBook, Severity},
    kind::FindingKind,
    pending::Pending,
    table::Table,
};
use crate::{config::Config, decode::icmp::IcmpError, event::Event};
use segments::FlowSegments;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TcpFlow {
    sender: IpAddr,
    sport: u16,
    receiver: IpAddr,
    dport: u16,
}

impl TcpFlow {
    /// The flow `ev` travels on, from its source to its destination.
    fn of(ev: &Event) -> TcpFlow {
        TcpFlow { sender: ev.src_ip(), sport: ev.header.src_port, receiver: ev.dst_ip(), dport: ev.header.dst_port }
    }

    /// The other direction of the connection.
    fn reverse(self) -> TcpFlow {
        TcpFlow { sender: self.receiver, sport: self.dport, receiver: self.sender, dport: self.sport }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct SignalKey {
    reporter: IpAddr,
    sender: IpAddr,
    receiver: IpAddr,
}

struct Signal {
    first: u64,
    count: u64,
    mtu: u32,
    flows: Vec<TcpFlowish>,
    flow_count: u64,
}

/// A quoted flow (any protocol), for counting distinct flows per signal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TcpFlowish(IpAddr, Option<u16>, IpAddr, Option<u16>, u8);

/// Distinct quoted flows remembered per signal.
const SIGNAL_FLOWS: usize = 64;

/// The PMTU detector.
pub struct PmtuDetector {
    tunnel_mtu: Option<u32>,
    min_retransmits: u64,
    flows: Table<TcpFlow, FlowSegments>,
    /// Flows whose packets this vantage point sees twice (from `on_duplicate`).
    doubled: Table<TcpFlow, ()>,
    signals: Table<SignalKey, Signal>,
    /// Flows and paths an ICMP signal quoted: (sender, receiver) → smallest MTU.
    paths: Table<(IpAddr, IpAddr), u32>,
    signalled_flows: Table<TcpFlow, ()>,
    mss: Table<(IpAddr, IpAddr), MssInfo>,
    pending_signals: Pending<SignalKey>,
    pending_black_holes: Pending<TcpFlow>,
    pending_mss: Pending<(IpAddr, IpAddr)>,
    /// Reported black holes whose retransmissions would show, by stopping early, that
    /// their segment was acknowledged: flow → when that is due.
    overdue: Table<TcpFlow, u64>,
    /// The earliest of those times (`u64::MAX`: none), so time passing costs nothing.
    next_overdue: u64,
    /// Latest event time.
    now: u64,
}

/// The latest SYN of a client whose MSS does not fit the path.
struct MssInfo {
    first: u64,
    mss: u16,
    path_mtu: u32,
    source: &'static str,
}

fn ip_header_len(addr: IpAddr) -> u32 {
    if addr.is_ipv6() { 60 } else { 40 }
}

impl PmtuDetector {
    /// A detector with `cfg`'s thresholds and caps.
    pub fn new(cfg: &Config) -> PmtuDetector {
        let cap = cfg.pmtu.flows_cap.0;
        PmtuDetector {
            tunnel_mtu: cfg.pmtu.tunnel_mtu.map(|b| b.0),
            min_retransmits: cfg.pmtu.black_hole_min_retransmits.0,
            flows: Table::new("tcp_flows", cap),
            doubled: Table::new("tcp_doubled_flows", cap),
            signals: Table::new("icmp_signals", cap),
            paths: Table::new("icmp_paths", cap),
            signalled_flows: Table::new("icmp_flows", cap),
            mss: Table::new("mss_pairs", cap),
            pending_signals: Pending::new("pending_pmtu_signal", cfg.output.pending_cap.0),
            pending_black_holes: Pending::new("pending_pmtu_black_hole", cfg.output.pending_cap.0),
            pending_mss: Pending::new("pending_mss_exceeds_path_mtu", cfg.output.pending_cap.0),
            overdue: Table::new("tcp_overdue_checks", cap),
            next_overdue: u64::MAX,
            now: 0,
        }
    }

    /// Applies a new configuration.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.tunnel_mtu = cfg.pmtu.tunnel_mtu.map(|b| b.0);
        self.min_retransmits = cfg.pmtu.black_hole_min_retransmits.0;
        let cap = cfg.pmtu.flows_cap.0;
        self.flows.resize(cap);
        self.doubled.resize(cap);
        self.signals.resize(cap);
        self.paths.resize(cap);
        self.signalled_flows.resize(cap);
        self.mss.resize(cap);
        self.pending_signals.resize(cfg.output.pending_cap.0);
        self.pending_black_holes.resize(cfg.output.pending_cap.0);
        self.pending_mss.resize(cfg.output.pending_cap.0);
    }

    /// Tables, for `tracked` and `evictions`.
    pub fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        vec![
            (self.mss.name(), self.mss.len(), self.mss.evictions()),
            (self.flows.name(), self.flows.len(), self.flows.evictions()),
            (self.doubled.name(), self.doubled.len(), self.doubled.evictions()),
            (self.signals.name(), self.signals.len(), self.signals.evictions()),
            (self.paths.name(), self.paths.len(), self.paths.evictions()),
            (self.signalled_flows.name(), self.signalled_flows.len(), self.signalled_flows.evictions()),
            (self.overdue.name(), self.overdue.len(), self.overdue.evictions()),
            self.pending_signals.occupancy(),
            self.pending_black_holes.occupancy(),
            self.pending_mss.occupancy(),
        ]
    }

    /// An ICMP error: frag-needed / packet-too-big are PMTU signals.
    pub fn on_icmp(&mut self, ev: &Event, icmp: &IcmpError) {
        let v4 = ev.header.ip_version == 4;
        let is_signal = (v4 && icmp.icmp_type == ICMP_DEST_UNREACH && icmp.code == ICMP_FRAG_NEEDED)
            || (!v4 && icmp.icmp_type == ICMPV6_PACKET_TOO_BIG);
        let Some(q) = icmp.quoted else { return };
        if !is_signal {
            return;
        }
        let now = ev.header.ts_ns;
        let reporter = ev.src_ip();
        let path = self.paths.entry((q.src, q.dst), || icmp.mtu);
        if icmp.mtu != 0 && (icmp.mtu < *path || *path == 0) {
            *path = icmp.mtu;
        }
        if let (Some(sport), Some(dport)) = (q.src_port, q.dst_port) {
            self.signalled_flows.entry(TcpFlow { sender: q.src, sport, receiver: q.dst, dport }, || ());
        }
        let key = SignalKey { reporter, sender: q.src, receiver: q.dst };
        let s = self.signals.entry(key, || Signal {
            first: now,
            count: 0,
            mtu: icmp.mtu,
            flows: Vec::new(),
            flow_count: 0,
        });
        s.count += 1;
        if icmp.mtu != 0 && (icmp.mtu < s.mtu || s.mtu == 0) {
            s.mtu = icmp.mtu;
        }
        let f = TcpFlowish(q.src, q.src_port, q.dst, q.dst_port, q.proto);
        if !s.flows.contains(&f) {
            s.flow_count += 1;
            if s.flows.len() < SIGNAL_FLOWS {
                s.flows.push(f);
            }
        }
        self.pending_signals.mark(&key, now);
    }

    fn report_signal(&mut self, key: SignalKey, now: u64, book: &mut FindingBook) {
        let Some(s) = self.signals.peek(&key) else { return };
        let reporter = key.reporter;
        let v4 = key.sender.is_ipv4();
        let (src, dst) = (key.sender, key.receiver);
        let mut subject = Map::new();
        subject.insert("reporter".into(), json!(reporter.to_string()));
        subject.insert("sender".into(), json!(src.to_string()));
        subject.insert("receiver".into(), json!(dst.to_string()));
        let mut evidence = Map::new();
        let what = if v4 { "fragmentation needed" } else { "packet too big" };
        evidence.insert("icmp_type".into(), json!(if v4 { "frag_needed" } else { "packet_too_big" }));
        evidence.insert("next_hop_mtu".into(), json!(s.mtu));
        evidence.insert("count".into(), json!(s.count));
        evidence.insert("flows".into(), json!(s.flow_count));
        let finding = Finding {
            kind: FindingKind::PmtuSignal,
            severity: Severity::Info,
            first_seen_ns: s.first,
            last_seen_ns: now,
            summary: format!(
                "{reporter} tells {} that packets to {} must fit {} bytes (ICMP {what}, {}x, {} flow{})",
                src,
                dst,
                s.mtu,
                s.count,
                s.flow_count,
                if s.flow_count == 1 { "" } else { "s" }
            ),
            subject,
            evidence,
            remedy: format!(
                "Path MTU discovery is working: keep ICMP {what} allowed. If the path MTU of {} is permanent \
                 (a tunnel), clamp TCP MSS to {} on the gateway to save the first round trips.",
                s.mtu,
                s.mtu.saturating_sub(ip_header_len(src))
            ),
        };
        book.upsert(finding, format!("{}", s.mtu), now);
    }

    /// A retransmitted large DF TCP segment.
    pub fn on_retransmit(&mut self, ev: &Event) {
        let info = ev.header.info;
        let now = ev.header.ts_ns;
        let flow = TcpFlow::of(ev);
        let doubled = self.doubled.peek(&flow).is_some();
        let f = self.flows.entry(flow, FlowSegments::default);
        if doubled {
            f.doubling();
        }
        f.retransmitted(info.tcp_seq, info.seg_len, ev.header.ip_len, info.largest_acked, now);
        let Some(hole) = f.black_hole(self.min_retransmits, now) else { return };
        if self.signalled_flows.peek(&flow).is_some() {
            return;
        }
        match hole.overdue_at() {
            Some(at) => {
                *self.overdue.entry(flow, || at) = at;
                self.next_overdue = self.next_overdue.min(at);
            }
            None => {
                self.overdue.remove(&flow);
            }
        }
        self.pending_black_holes.mark(&flow, now);
    }

    /// A FIN or RST: from a flow's receiver, its acknowledgment number says which of
    /// the flow's segments got through.
    pub fn on_fin(&mut self, ev: &Event) {
        if ev.header.tcp_flags & TCP_ACK == 0 {
            return;
        }
        let flow = TcpFlow::of(ev).reverse();
        let Some(f) = self.flows.peek_mut(&flow) else { return };
        let reported = f.black_hole(self.min_retransmits, ev.header.ts_ns).is_some();
        f.receiver_acked(ev.header.info.tcp_ack);
        if reported {
            // The next flush rebuilds the finding, or takes it back if the receiver
            // acknowledged its segment.
            self.pending_black_holes.mark(&flow, ev.header.ts_ns);
        }
    }

    /// A copy of a packet seen moments ago: this vantage point doubles the flow's
    /// packets (both ways), so each segment's first "retransmission" was the copy of
    /// its original transmission.
    pub fn on_duplicate(&mut self, ev: &Event) {
        if ev.header.l4_proto != IPPROTO_TCP {
            return;
        }
        let flow = TcpFlow::of(ev);
        for flow in [flow, flow.reverse()] {
            if self.doubled.peek(&flow).is_some() {
                continue;
            }
            self.doubled.entry(flow, || ());
            if let Some(f) = self.flows.peek_mut(&flow) {
                f.doubling();
            }
        }
    }

    /// The finding's subject for `flow`.
    fn black_hole_subject(flow: TcpFlow) -> Map<String, serde_json::Value> {
        let mut subject = Map::new();
        subject.insert("sender".into(), json!(flow.sender.to_string()));
        subject.insert("receiver".into(), json!(flow.receiver.to_string()));
        subject.insert(
            "flow".into(),
            json!(format!("{} -> {}", sock(flow.sender, flow.sport), sock(flow.receiver, flow.dport))),
        );
        subject
    }

    fn report_black_hole(&mut self, flow: TcpFlow, now: u64, book: &mut FindingBook) {
        let subject = Self::black_hole_subject(flow);
        let hole =
            self.flows.peek(&flow).and_then(|f| Some((f.black_hole(self.min_retransmits, self.now)?, f.largest_acked)));
        let Some((hole, acked)) = hole else {
            // The receiver acknowledged it after all (or it was a copy): not a black hole.
            book.withdraw(FindingKind::PmtuBlackHole, &subject);
            return;
        };
        let hdr = ip_header_len(flow.sender);
        let (seg, oversized, first, packet_size) = (hole.len, hole.count, hole.first, hole.packet_size);
        let estimated = self
            .tunnel_mtu
            .or_else(|| self.paths.peek(&(flow.sender, flow.receiver)).copied().filter(|m| *m != 0))
            .or_else(|| (acked > 0).then(|| acked as u32 + hdr));
        let suggested_mss = estimated.map(|m| m.saturating_sub(hdr));
        let mut evidence = Map::new();
        evidence.insert("retransmissions".into(), json!(oversized));
        evidence.insert("segment_size".into(), json!(seg));
        evidence.insert("largest_acked_size".into(), json!(acked));
        evidence.insert("icmp_seen".into(), json!(false));
        evidence.insert("estimated_path_mtu".into(), json!(estimated));
        evidence.insert("suggested_mss".into(), json!(suggested_mss));
        let clamp = match suggested_mss {
            Some(mss) => format!(
                "clamp the MSS on the gateway (nftables: `nft add rule inet filter forward tcp flags syn tcp option maxseg size set {mss}`)"
            ),
            None => "clamp the MSS on the gateway to the path MTU minus 40 (IPv6: 60) bytes (nftables: \
                     `tcp flags syn tcp option maxseg size set rt mtu`)"
                .to_string(),
        };
        let finding = Finding {
            kind: FindingKind::PmtuBlackHole,
            severity: Severity::Critical,
            first_seen_ns: first,
            last_seen_ns: now,
            summary: format!(
                "{} retransmits a {seg}-byte segment to {} {oversized} times and no ICMP comes back \
                 (largest acknowledged: {acked} bytes): a PMTU black hole",
                sock(flow.sender, flow.sport),
                sock(flow.receiver, flow.dport)
            ),
            subject,
            evidence,
            remedy: format!(
                "Packets of {} bytes do not fit the path and the ICMP that would say so is dropped: let ICMP \
                 fragmentation-needed (IPv6: packet-too-big) through every firewall between {} and {}, or {clamp}.",
                packet_size, flow.sender, flow.receiver
            ),
        };
        book.upsert(finding, format!("{seg}|{acked}"), now);
    }

    /// A SYN: its MSS against the known path MTU.
    pub fn on_syn(&mut self, ev: &Event) {
        let info = ev.header.info;
        if ev.header.tcp_flags & TCP_ACK != 0 || info.tcp_mss == 0 {
            return;
        }
        let (client, server) = (ev.src_ip(), ev.dst_ip());
        let learned = self.paths.peek(&(client, server)).copied().filter(|m| *m != 0);
        let (path_mtu, source) = match (learned, self.tunnel_mtu) {
            (Some(m), _) => (m, "icmp"),
            (None, Some(m)) => (m, "config"),
            (None, None) => return,
        };
        let hdr = ip_header_len(client);
        if info.tcp_mss as u32 + hdr <= path_mtu {
            return;
        }
        let now = ev.header.ts_ns;
        let m = self.mss.entry((client, server), || MssInfo { first: now, mss: 0, path_mtu, source });
        (m.mss, m.path_mtu, m.source) = (info.tcp_mss, path_mtu, source);
        self.pending_mss.mark(&(client, server), now);
    }

    fn report_mss(&mut self, (client, server): (IpAddr, IpAddr), now: u64, book: &mut FindingBook) {
        let Some(m) = self.mss.peek(&(client, server)) else { return };
        let (mss, path_mtu, source, first) = (m.mss, m.path_mtu, m.source, m.first);
        let hdr = ip_header_len(client);
        let mut subject = Map::new();
        subject.insert("client".into(), json!(client.to_string()));
        subject.insert("server".into(), json!(server.to_string()));
        let mut evidence = Map::new();
        evidence.insert("mss".into(), json!(mss));
        evidence.insert("path_mtu".into(), json!(path_mtu));
        evidence.insert("path_mtu_source".into(), json!(source));
        let fit = path_mtu.saturating_sub(hdr);
        let finding = Finding {
            kind: FindingKind::MssExceedsPathMtu,
            severity: Severity::Warning,
            first_seen_ns: first,
            last_seen_ns: now,
            summary: format!(
                "{client} opens TCP to {server} with MSS {}: segments of {} bytes will not fit the {path_mtu}-byte path",
                mss,
                mss as u32 + hdr
            ),
            subject,
            evidence,
            remedy: format!(
                "Clamp the MSS of connections through the tunnel to {fit} (nftables: `nft add rule inet filter forward \
                 tcp flags syn tcp option maxseg size set {fit}`), or make sure ICMP fragmentation-needed reaches {client}."
            ),
        };
        book.upsert(finding, format!("{}|{path_mtu}", mss), now);
    }

    /// Time passes: reported black holes whose retransmissions stopped early are
    /// rebuilt, which takes them back.
    pub fn expire(&mut self, now: u64) {
        self.now = self.now.max(now);
        if self.next_overdue > now {
            return;
        }
        let due: Vec<TcpFlow> = self.overdue.iter().filter(|(_, at)| **at <= now).map(|(f, _)| *f).collect();
        for flow in due {
            self.overdue.remove(&flow);
            self.pending_black_holes.mark(&flow, now);
        }
        self.next_overdue = self.overdue.iter().map(|(_, at)| *at).min().unwrap_or(u64::MAX);
    }

    /// Whether a table of marked findings is full: build them before the next mark.
    pub fn pending_full(&self) -> bool {
        self.pending_signals.is_full() || self.pending_black_holes.is_full() || self.pending_mss.is_full()
    }

    /// Builds the findings whose evidence changed since the last flush.
    pub fn flush(&mut self, book: &mut FindingBook) {
        for (k, at) in self.pending_signals.drain() {
            self.report_signal(k, at, book);
        }
        for (k, at) in self.pending_black_holes.drain() {
            self.report_black_hole(k, at, book);
        }
        for (k, at) in self.pending_mss.drain() {
            self.report_mss(k, at, book);
        }
    }
}

fn sock(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

impl Detector for PmtuDetector {
    fn on_event(&mut self, ev: &Event, icmp: Option<&IcmpError>) {
        match (ev.kind(), icmp) {
            (EventKind::TcpSyn, _) => self.on_syn(ev),
            (EventKind::TcpLargeRetransmit, _) => self.on_retransmit(ev),
            (EventKind::TcpFin, _) => self.on_fin(ev),
            (EventKind::IcmpError, Some(icmp)) => self.on_icmp(ev, icmp),
            _ => {}
        }
    }
    fn on_duplicate(&mut self, ev: &Event) {
        PmtuDetector::on_duplicate(self, ev);
    }
    fn expire(&mut self, now_ns: u64) {
        PmtuDetector::expire(self, now_ns);
    }
    fn flush(&mut self, book: &mut FindingBook) {
        PmtuDetector::flush(self, book);
    }
    fn reconfigure(&mut self, cfg: &Config) {
        PmtuDetector::reconfigure(self, cfg);
    }
    fn pending_full(&self) -> bool {
        PmtuDetector::pending_full(self)
    }
    fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        PmtuDetector::occupancy(self)
    }
}
