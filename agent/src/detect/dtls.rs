//! DTLS and the VPN around it: `dtls_blocked`, `dtls_port_unreachable`,
//! `vpn_reconnect_loop`.
//!
//! A DTLS flow starts with a ClientHello. If no DTLS record comes back from the
//! server within `dtls.timeout_s`, DTLS is blocked on the path; an ICMP port
//! unreachable quoting the flow says instead that nothing listens on that port. A TLS
//! ClientHello from the same client to the same server marks the fallback to TLS.
//! TLS sessions from one client to one server at a regular interval are a VPN that
//! keeps reconnecting.
//!
//! New flows wait for their timeout in a queue bounded by `flows_cap`. When more new
//! flows arrive within `timeout_s` than that, the oldest waiting flow is evicted from
//! the queue and from the flow table (both counted): it can no longer be found
//! blocked, and starts over if it says ClientHello again.

use std::{collections::VecDeque, net::IpAddr};

use agent_common::proto::{
    HS_CLIENT_HELLO, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH,
};
use serde_json::{Map, json};

use super::{
    Detector,
    finding::{Finding, FindingBook, Severity},
    kind::FindingKind,
    pending::Pending,
    queue::BoundedQueue,
    table::Table,
    util::{intervals, regularity, round3, secs},
};
use agent_common::EventKind;

use crate::{config::Config, decode::icmp::IcmpError, event::Event};

/// ClientHello times remembered per flow.
const HELLO_TIMES: usize = 16;
/// TLS session starts remembered per (client, server, port).
const SESSION_TIMES: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    client: IpAddr,
    client_port: u16,
    server: IpAddr,
    port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Subject {
    client: IpAddr,
    server: IpAddr,
    port: u16,
}

struct Flow {
    hellos: Vec<u64>,
    hello_count: u64,
    server_records: u64,
    blocked: bool,
    icmp_count: u64,
}

/// What the blocked / unreachable flows of one subject add up to.
#[derive(Default)]
struct Agg {
    blocked_flows: u64,
    blocked_hellos: u64,
    first: u64,
    last: u64,
    retransmits: Vec<u64>,
    icmp_count: u64,
    icmp_from: Option<IpAddr>,
    icmp_hellos: u64,
}

#[derive(Default)]
struct Tls {
    starts: VecDeque<u64>,
    sessions: u64,
    /// Sessions came at a regular interval (a reconnect loop), every `period` s.
    looping: bool,
    period: f64,
}

/// The DTLS / VPN detector.
pub struct DtlsDetector {
    timeout_ns: u64,
    tls_window_ns: u64,
    min_sessions: u64,
    tolerance: f64,
    min_period_s: f64,
    flows: Table<FlowKey, Flow>,
    subjects: Table<Subject, Agg>,
    tls: Table<Subject, Tls>,
    /// Latest TLS ClientHello per (client, server), any port.
    tls_last: Table<(IpAddr, IpAddr), u64>,
    /// Flows with ClientHellos and no answer yet, in order of first ClientHello.
    waiting: BoundedQueue<(u64, FlowKey)>,
    pending_blocked: Pending<Subject>,
    pending_unreachable: Pending<Subject>,
    pending_reconnect: Pending<Subject>,
}

impl DtlsDetector {
    /// A detector with `cfg`'s thresholds and caps.
    pub fn new(cfg: &Config) -> DtlsDetector {
        DtlsDetector {
            timeout_ns: cfg.dtls.timeout_s.ns(),
            tls_window_ns: cfg.dtls.tls_window_s.ns(),
            min_sessions: cfg.dtls.reconnect_min_sessions.0,
            tolerance: cfg.dtls.reconnect_tolerance.0,
            min_period_s: cfg.dtls.reconnect_min_period_s.0,
            flows: Table::new("dtls_flows", cfg.dtls.flows_cap.0),
            subjects: Table::new("dtls_subjects", cfg.dtls.flows_cap.0),
            tls: Table::new("tls_sessions", cfg.dtls.flows_cap.0),
            tls_last: Table::new("tls_pairs", cfg.dtls.flows_cap.0),
            waiting: BoundedQueue::new("dtls_waiting", cfg.dtls.flows_cap.0),
            pending_blocked: Pending::new("pending_dtls_blocked", cfg.output.pending_cap.0),
            pending_unreachable: Pending::new("pending_dtls_port_unreachable", cfg.output.pending_cap.0),
            pending_reconnect: Pending::new("pending_vpn_reconnect_loop", cfg.output.pending_cap.0),
        }
    }

    /// Applies a new configuration.
    pub fn reconfigure(&mut self, cfg: &Config) {
        self.timeout_ns = cfg.dtls.timeout_s.ns();
        self.tls_window_ns = cfg.dtls.tls_window_s.ns();
        self.min_sessions = cfg.dtls.reconnect_min_sessions.0;
        self.tolerance = cfg.dtls.reconnect_tolerance.0;
        self.min_period_s = cfg.dtls.reconnect_min_period_s.0;
        self.flows.resize(cfg.dtls.flows_cap.0);
        self.subjects.resize(cfg.dtls.flows_cap.0);
        self.tls.resize(cfg.dtls.flows_cap.0);
        self.tls_last.resize(cfg.dtls.flows_cap.0);
        for evicted in self.waiting.resize(cfg.dtls.flows_cap.0) {
            self.forget(evicted);
        }
        for p in [&mut self.pending_blocked, &mut self.pending_unreachable, &mut self.pending_reconnect] {
            p.resize(cfg.output.pending_cap.0);
        }
    }

    /// Tables, for `tracked` and `evictions`.
    pub fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        vec![
            (self.flows.name(), self.flows.len(), self.flows.evictions()),
            (self.subjects.name(), self.subjects.len(), self.subjects.evictions()),
            (self.tls.name(), self.tls.len(), self.tls.evictions()),
            (self.tls_last.name(), self.tls_last.len(), self.tls_last.evictions()),
            (self.waiting.name(), self.waiting.len(), self.waiting.evictions()),
            self.pending_blocked.occupancy(),
            self.pending_unreachable.occupancy(),
            self.pending_reconnect.occupancy(),
        ]
    }

    /// A waiting flow evicted from the queue: the flow goes too (unless it was started
    /// again after it), so that no flow is held that can never time out.
    fn forget(&mut self, (first_hello, key): (u64, FlowKey)) {
        if self.flows.peek(&key).is_some_and(|f| f.hellos.first().is_some_and(|&t| t <= first_hello)) {
            self.flows.evict(&key);
        }
    }

    /// A datagram of DTLS handshake, alert or CCS records.
    pub fn on_dtls(&mut self, ev: &Event) {
        let now = ev.header.ts_ns;
        self.expire(now);
        let (src, dst, sport, dport) = (ev.src_ip(), ev.dst_ip(), ev.header.src_port, ev.header.dst_port);
        if ev.header.info.handshake_mask & (1 << HS_CLIENT_HELLO) != 0 {
            let key = FlowKey { client: src, client_port: sport, server: dst, port: dport };
            let mut new = false;
            let flow = self.flows.entry(key, || {
                new = true;
                Flow { hellos: Vec::new(), hello_count: 0, server_records: 0, blocked: false, icmp_count: 0 }
            });
            flow.hello_count += 1;
            if flow.hellos.len() < HELLO_TIMES {
                flow.hellos.push(now);
            }
            if flow.blocked {
                let times = flow.hellos.clone();
                let agg = self.subjects.entry(key.subject(), Agg::default);
                agg.blocked_hellos += 1;
                agg.last = now;
                if times.len() >= agg.retransmits.len() {
                    agg.retransmits = times;
                }
                self.pending_blocked.mark(&key.subject(), now);
            }
            if new && let Some(evicted) = self.waiting.push_back((now, key)) {
                self.forget(evicted);
            }
        } else {
            // Records from the server side answer the flow.
            let key = FlowKey { client: dst, client_port: dport, server: src, port: sport };
            if let Some(flow) = self.flows.get_mut(&key) {
                flow.server_records += 1;
            }
        }
    }

    /// A TLS ClientHello or ServerHello on TCP.
    pub fn on_tls(&mut self, ev: &Event) {
        if ev.header.info.handshake_mask & (1 << HS_CLIENT_HELLO) == 0 {
            return;
        }
        let now = ev.header.ts_ns;
        self.expire(now);
        let subject = Subject { client: ev.src_ip(), server: ev.dst_ip(), port: ev.header.dst_port };
        *self.tls_last.entry((subject.client, subject.server), || now) = now;
        let (min_sessions, tolerance, min_period) = (self.min_sessions as usize, self.tolerance, self.min_period_s);
        let tls = self.tls.entry(subject, Tls::default);
        tls.sessions += 1;
        if tls.starts.len() == SESSION_TIMES {
            tls.starts.pop_front();
        }
        tls.starts.push_back(now);
        if tls.starts.len() >= min_sessions {
            let recent: Vec<u64> = tls.starts.iter().skip(tls.starts.len() - min_sessions).copied().collect();
            if let Some((true, period, _)) = regularity(&intervals(&recent), tolerance)
                && period >= min_period
            {
                tls.looping = true;
                tls.period = period;
            }
        }
        if tls.looping {
            self.pending_reconnect.mark(&subject, now);
        }
    }

    fn report_reconnect(&mut self, subject: Subject, now: u64, book: &mut FindingBook) {
        let Some(tls) = self.tls.peek(&subject) else { return };
        let (sessions, period) = (tls.sessions, tls.period);
        let first = tls.starts.front().copied().unwrap_or(now);
        let mut evidence = Map::new();
        evidence.insert("sessions".into(), json!(sessions));
        evidence.insert("period_s".into(), json!(round3(period)));
        let finding = Finding {
            kind: FindingKind::VpnReconnectLoop,
            severity: Severity::Warning,
            first_seen_ns: first,
            last_seen_ns: now,
            summary: format!(
                "{} opens a new TLS session to {}:{} every {:.0} s ({} sessions): the VPN keeps reconnecting",
                subject.client, subject.server, subject.port, period, sessions
            ),
            subject: subject.to_json(),
            evidence,
            remedy: "A VPN that reconnects at a steady rhythm has usually lost its DTLS tunnel and falls back to TLS \
                     with a smaller MTU: look for dtls_blocked / dtls_port_unreachable for this client, let the VPN's \
                     UDP port through, and check that the server's DTLS port matches the one it announces."
                .into(),
        };
        book.upsert(finding, format!("{:.0}", period / 10.0), now);
    }

    /// Whether a table of marked findings is full: build them before the next mark.
    pub fn pending_full(&self) -> bool {
        self.pending_blocked.is_full() || self.pending_unreachable.is_full() || self.pending_reconnect.is_full()
    }

    /// Builds the findings whose evidence changed since the last flush.
    pub fn flush(&mut self, book: &mut FindingBook) {
        for (s, at) in self.pending_blocked.drain() {
            self.report_blocked(s, at, book);
        }
        for (s, at) in self.pending_unreachable.drain() {
            self.report_unreachable(s, at, book);
        }
        for (s, at) in self.pending_reconnect.drain() {
            self.report_reconnect(s, at, book);
        }
    }

    /// An ICMP error: a port unreachable quoting a DTLS flow.
    pub fn on_icmp(&mut self, ev: &Event, icmp: &IcmpError) {
        let unreachable = (ev.header.ip_version == 4
            && icmp.icmp_type == ICMP_DEST_UNREACH
            && icmp.code == ICMP_PORT_UNREACH)
            || (ev.header.ip_version == 6 && icmp.icmp_type == ICMPV6_DEST_UNREACH && icmp.code == ICMPV6_PORT_UNREACH);
        let Some(q) = icmp.quoted else { return };
        if !unreachable || q.proto != 17 {
            return;
        }
        let (Some(sport), Some(dport)) = (q.src_port, q.dst_port) else { return };
        let now = ev.header.ts_ns;
        let key = FlowKey { client: q.src, client_port: sport, server: q.dst, port: dport };
        let Some(flow) = self.flows.get_mut(&key) else { return };
        if flow.hello_count == 0 {
            return;
        }
        flow.icmp_count += 1;
        let first_icmp = flow.icmp_count == 1;
        let (hellos, first_hello) = (flow.hello_count, flow.hellos.first().copied().unwrap_or(now));
        let agg = self.subjects.entry(key.subject(), Agg::default);
        agg.icmp_count += 1;
        agg.icmp_from = Some(ev.src_ip());
        agg.last = now;
        if first_icmp {
            agg.icmp_hellos += hellos;
            agg.first = if agg.first == 0 { first_hello } else { agg.first.min(first_hello) };
        }
        self.pending_unreachable.mark(&key.subject(), now);
    }

    /// Flows whose ClientHellos went unanswered for `timeout_s` become blocked.
    pub fn expire(&mut self, now: u64) {
        while self.waiting.front().is_some_and(|(t, _)| now.saturating_sub(*t) >= self.timeout_ns) {
            let (_, key) = self.waiting.pop_front().expect("checked");
            let Some(flow) = self.flows.get_mut(&key) else { continue };
            if flow.server_records == 0 && flow.icmp_count == 0 && !flow.blocked {
                flow.blocked = true;
                let (hellos, times) = (flow.hello_count, flow.hellos.clone());
                let agg = self.subjects.entry(key.subject(), Agg::default);
                agg.blocked_flows += 1;
                agg.blocked_hellos += hellos;
                let (first, last) = (times.first().copied().unwrap_or(now), times.last().copied().unwrap_or(now));
                agg.first = if agg.first == 0 { first } else { agg.first.min(first) };
                agg.last = agg.last.max(last);
                if times.len() > agg.retransmits.len() {
                    agg.retransmits = times;
                }
                self.pending_blocked.mark(&key.subject(), now);
            }
        }
    }

    fn tls_seen(&self, s: Subject, now: u64) -> bool {
        self.tls_last.peek(&(s.client, s.server)).is_some_and(|&last| now.abs_diff(last) <= self.tls_window_ns)
    }

    fn report_blocked(&mut self, s: Subject, now: u64, book: &mut FindingBook) {
        let tls = self.tls_seen(s, now);
        let Some(agg) = self.subjects.peek(&s) else { return };
        if agg.blocked_flows == 0 {
            return;
        }
        let hellos = agg.blocked_hellos;
        let retransmits: Vec<f64> = intervals(&agg.retransmits).into_iter().map(round3).collect();
        let mut evidence = Map::new();
        evidence.insert("client_hellos".into(), json!(hellos));
        evidence.insert("server_records".into(), json!(0));
        evidence.insert("retransmit_intervals_s".into(), json!(retransmits));
        evidence.insert("tls_session_seen".into(), json!(tls));
        evidence.insert("flows".into(), json!(agg.blocked_flows));
        let finding = Finding {
            kind: FindingKind::DtlsBlocked,
            severity: Severity::Warning,
            first_seen_ns: agg.first,
            last_seen_ns: agg.last,
            summary: format!(
                "{} sends DTLS ClientHellos to {}:{} ({hellos} in {:.1} s{}) and gets no DTLS record back{}",
                s.client,
                s.server,
                s.port,
                secs(agg.last.saturating_sub(agg.first)),
                if retransmits.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", retried after {} s",
                        retransmits.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(", ")
                    )
                },
                if tls { "; it runs over TLS to the same server instead" } else { "" }
            ),
            subject: s.to_json(),
            evidence,
            remedy: format!(
                "DTLS (UDP {}) is blocked between {} and {}: allow UDP {} to the VPN server on every firewall on the \
                 path. Until then the VPN falls back to TLS over TCP, with a smaller MTU and reconnects about once a \
                 minute.",
                s.port, s.client, s.server, s.port
            ),
        };
        let material = format!("{tls}|{}", agg.blocked_flows);
        book.upsert(finding, material, now);
    }

    fn report_unreachable(&mut self, s: Subject, now: u64, book: &mut FindingBook) {
        let Some(agg) = self.subjects.peek(&s) else { return };
        let from = agg.icmp_from.unwrap_or(s.server);
        let icmp_count = agg.icmp_count;
        let mut evidence = Map::new();
        evidence.insert("icmp_from".into(), json!(from.to_string()));
        evidence.insert("icmp_count".into(), json!(icmp_count));
        evidence.insert("client_hellos".into(), json!(agg.icmp_hellos));
        // The server's own ICMP means nothing listens there; anyone else's means a
        // firewall on the path rejects the datagrams (nftables `reject`, an ACL).
        let (cause, remedy) = if from == s.server {
            (
                "nothing listens on that port".to_string(),
                format!(
                    "The server does not listen for DTLS on UDP {}: make the VPN server's DTLS port (ASA: `dtls port`, \
                     ocserv: `udp-port`) match the port it tells clients, or open that port.",
                    s.port
                ),
            )
        } else {
            (
                format!("a firewall at {from} rejects it before it reaches the server"),
                format!(
                    "{from} rejects UDP {} to {}: allow UDP {} to the VPN server there (and on every firewall on the \
                     path). Until then the VPN falls back to TLS over TCP, with a smaller MTU and reconnects.",
                    s.port, s.server, s.port
                ),
            )
        };
        let finding = Finding {
            kind: FindingKind::DtlsPortUnreachable,
            severity: Severity::Warning,
            first_seen_ns: agg.first,
            last_seen_ns: now,
            summary: format!(
                "{} sends DTLS to {}:{} and {from} answers ICMP port unreachable ({icmp_count}x): {cause}",
                s.client, s.server, s.port
            ),
            subject: s.to_json(),
            evidence,
            remedy,
        };
        book.upsert(finding, from.to_string(), now);
    }
}

impl FlowKey {
    fn subject(&self) -> Subject {
        Subject { client: self.client, server: self.server, port: self.port }
    }
}

impl Subject {
    fn to_json(self) -> Map<String, serde_json::Value> {
        let mut m = Map::new();
        m.insert("client".into(), json!(self.client.to_string()));
        m.insert("server".into(), json!(self.server.to_string()));
        m.insert("port".into(), json!(self.port));
        m
    }
}

impl Detector for DtlsDetector {
    fn on_event(&mut self, ev: &Event, icmp: Option<&IcmpError>) {
        match (ev.kind(), icmp) {
            (EventKind::Dtls, _) => self.on_dtls(ev),
            (EventKind::Tls, _) => self.on_tls(ev),
            (EventKind::IcmpError, Some(icmp)) => self.on_icmp(ev, icmp),
            _ => {}
        }
    }
    fn expire(&mut self, now_ns: u64) {
        DtlsDetector::expire(self, now_ns);
    }
    fn flush(&mut self, book: &mut FindingBook) {
        DtlsDetector::flush(self, book);
    }
    fn reconfigure(&mut self, cfg: &Config) {
        DtlsDetector::reconfigure(self, cfg);
    }
    fn pending_full(&self) -> bool {
        DtlsDetector::pending_full(self)
    }
    fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        DtlsDetector::occupancy(self)
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{EventHeader, EventInfo, EventKind, proto::HS_CLIENT_HELLO};

    use crate::{
        config::{Cap, Config},
        detect::{Detectors, Emission, FindingKind},
        event::Event,
    };

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000_000_000;

    /// A DTLS ClientHello from 198.18.0.`client` to 198.18.1.1:443.
    fn hello(ts: u64, client: u8) -> Event {
        let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
        src[..4].copy_from_slice(&[198, 18, 0, client]);
        dst[..4].copy_from_slice(&[198, 18, 1, 1]);
        let info = EventInfo {
            handshake_mask: 1 << HS_CLIENT_HELLO,
            dtls_records: 1,
            dtls_content_mask: 1 << (22 - 20),
            ..Default::default()
        };
        let header = EventHeader {
            ts_ns: ts,
            kind: EventKind::Dtls as u8,
            ip_version: 4,
            src_addr: src,
            dst_addr: dst,
            src_port: 50000,
            dst_port: 443,
            info,
            ..Default::default()
        };
        Event { header, snap: Vec::new() }
    }

    fn blocked_clients(d: &mut Detectors) -> Vec<String> {
        let mut c: Vec<String> = d
            .take_due()
            .iter()
            .filter(|f| f.kind == FindingKind::DtlsBlocked)
            .map(|f| f.subject["client"].as_str().unwrap().to_string())
            .collect();
        c.sort();
        c
    }

    #[test]
    fn a_flow_evicted_from_the_waiting_queue_is_forgotten_not_held_forever() {
        let mut cfg = Config::default();
        cfg.dtls.flows_cap = Cap(2);
        let mut d = Detectors::new(&cfg, Emission::AtEnd);
        // A and B start; A retries (so B is the least recently used flow); C starts:
        // the flow table drops B, the full waiting queue drops A, the oldest waiting.
        // (100 ms apart: a retry is slower than a copy of one packet.)
        for (t, client) in [(0, 0xa), (1, 0xb), (2, 0xa), (3, 0xc)] {
            d.on_event(&hello(T0 + t * 100 * MS, client));
        }
        assert_eq!(d.evictions()["dtls_waiting"], 1);
        assert_eq!(d.evictions()["dtls_flows"], 2, "B by the LRU, A with its waiting entry");
        assert_eq!((d.tracked()["dtls_flows"], d.tracked()["dtls_waiting"]), (1, 2));
        // A, forgotten, starts over with its next hello (and B's stale entry goes).
        d.on_event(&hello(T0 + 400 * MS, 0xa));
        assert_eq!((d.tracked()["dtls_flows"], d.evictions()["dtls_waiting"]), (2, 2));
        d.finish(T0 + 60_000 * MS);
        assert_eq!(blocked_clients(&mut d), ["198.18.0.10", "198.18.0.12"]);
    }
}
