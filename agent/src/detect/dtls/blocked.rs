//! DTLS flows that never come up: `dtls_blocked` and `dtls_port_unreachable`.
//!
//! A DTLS flow starts with a ClientHello. A client whose handshake is dropped on the
//! path retransmits it (RFC 6347 4.2.4: after 1 s, then 2, 4, ...), so a flow is
//! blocked when its client sent at least two ClientHellos and no DTLS record came back
//! from the server within `dtls.timeout_s` of the first. One ClientHello with no answer
//! is not enough: captures cut short, or stitched from samples, show exactly that on a
//! healthy path. A copy of one ClientHello (the same bytes, moments later: a SPAN port,
//! a bridge seen on two interfaces, a merged capture) is not a second try; a real
//! retransmission differs, if only in its record sequence number. An ICMP port
//! unreachable quoting the flow says instead that nothing listens on that port (or a
//! firewall rejects it), after one ClientHello as well as after ten.
//!
//! New flows wait for their timeout in a queue bounded by `flows_cap`. When more new
//! flows arrive within `timeout_s` than that, the oldest waiting flow is evicted from
//! the queue and from the flow table (both counted): it can no longer be found
//! blocked, and starts over if it says ClientHello again.

use std::{
    hash::{DefaultHasher, Hash, Hasher},
    net::IpAddr,
};

use agent_common::proto::{
    HS_CLIENT_HELLO, ICMP_DEST_UNREACH, ICMP_PORT_UNREACH, ICMPV6_DEST_UNREACH, ICMPV6_PORT_UNREACH,
};
use serde_json::{Map, json};

use super::{Subject, reconnect::Reconnect};
use crate::{
    config::Config,
    decode::icmp::IcmpError,
    detect::{
        finding::{Finding, FindingBook, Severity},
        kind::FindingKind,
        pending::Pending,
        queue::BoundedQueue,
        table::Table,
        util::{intervals, round3, secs},
    },
    event::Event,
};

/// ClientHello times remembered per flow.
const HELLO_TIMES: usize = 16;
/// The same ClientHello bytes again within this long are a copy of the datagram, not a
/// retransmission: above the kernel tick that stamps live events (1-4 ms), far below
/// any DTLS retransmission timer (RFC 6347 starts at 1 s; the shortest in use are tens
/// of milliseconds), and a retransmission carries a new record sequence number anyway.
const COPY_WINDOW_NS: u64 = 10_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    client: IpAddr,
    client_port: u16,
    server: IpAddr,
    port: u16,
}

impl FlowKey {
    fn subject(&self) -> Subject {
        Subject { client: self.client, server: self.server, port: self.port }
    }
}

#[derive(Default)]
struct Flow {
    /// Times of the first [`HELLO_TIMES`] ClientHellos (copies left out).
    hellos: Vec<u64>,
    /// ClientHellos (copies left out).
    hello_count: u64,
    /// The latest ClientHello: its time and a fingerprint of its bytes.
    last_hello: (u64, u64),
    server_records: u64,
    /// `timeout_s` passed since the first ClientHello with no answer.
    timed_out: bool,
    blocked: bool,
    icmp_count: u64,
}

impl Flow {
    /// Whether nothing came back: no DTLS record, no ICMP.
    fn unanswered(&self) -> bool {
        self.server_records == 0 && self.icmp_count == 0
    }
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

/// The DTLS flows, and the subjects found blocked or unreachable.
pub(super) struct Blocked {
    timeout_ns: u64,
    flows: Table<FlowKey, Flow>,
    subjects: Table<Subject, Agg>,
    /// Flows with ClientHellos and no answer yet, in order of first ClientHello.
    waiting: BoundedQueue<(u64, FlowKey)>,
    pending_blocked: Pending<Subject>,
    pending_unreachable: Pending<Subject>,
}

/// What tells two ClientHellos apart: the datagram's length and its leading bytes (the
/// record header with its sequence number, then the handshake).
fn fingerprint(ev: &Event) -> u64 {
    let mut h = DefaultHasher::new();
    (ev.header.wire_len, ev.header.l4_payload_len, &ev.snap).hash(&mut h);
    h.finish()
}

impl Blocked {
    pub(super) fn new(cfg: &Config) -> Blocked {
        Blocked {
            timeout_ns: cfg.dtls.timeout_s.ns(),
            flows: Table::new("dtls_flows", cfg.dtls.flows_cap.0),
            subjects: Table::new("dtls_subjects", cfg.dtls.flows_cap.0),
            waiting: BoundedQueue::new("dtls_waiting", cfg.dtls.flows_cap.0),
            pending_blocked: Pending::new("pending_dtls_blocked", cfg.output.pending_cap.0),
            pending_unreachable: Pending::new("pending_dtls_port_unreachable", cfg.output.pending_cap.0),
        }
    }

    pub(super) fn reconfigure(&mut self, cfg: &Config) {
        self.timeout_ns = cfg.dtls.timeout_s.ns();
        self.flows.resize(cfg.dtls.flows_cap.0);
        self.subjects.resize(cfg.dtls.flows_cap.0);
        for evicted in self.waiting.resize(cfg.dtls.flows_cap.0) {
            self.forget(evicted);
        }
        self.pending_blocked.resize(cfg.output.pending_cap.0);
        self.pending_unreachable.resize(cfg.output.pending_cap.0);
    }

    pub(super) fn occupancy(&self) -> Vec<(&'static str, usize, u64)> {
        vec![
            (self.flows.name(), self.flows.len(), self.flows.evictions()),
            (self.subjects.name(), self.subjects.len(), self.subjects.evictions()),
            (self.waiting.name(), self.waiting.len(), self.waiting.evictions()),
            self.pending_blocked.occupancy(),
            self.pending_unreachable.occupancy(),
        ]
    }

    pub(super) fn pending_full(&self) -> bool {
        self.pending_blocked.is_full() || self.pending_unreachable.is_full()
    }

    /// A waiting flow evicted from the queue: the flow goes too (unless it was started
    /// again after it), so that no flow is held that can never time out.
    fn forget(&mut self, (first_hello, key): (u64, FlowKey)) {
        if self.flows.peek(&key).is_some_and(|f| f.hellos.first().is_some_and(|&t| t <= first_hello)) {
            self.flows.evict(&key);
        }
    }

    /// A datagram of DTLS records: a ClientHello from the client, or anything from the
    /// server side, which answers the flow.
    pub(super) fn on_dtls(&mut self, ev: &Event) {
        let now = ev.header.ts_ns;
        let (src, dst, sport, dport) = (ev.src_ip(), ev.dst_ip(), ev.header.src_port, ev.header.dst_port);
        if ev.header.info.handshake_mask & (1 << HS_CLIENT_HELLO) == 0 {
            let key = FlowKey { client: dst, client_port: dport, server: src, port: sport };
            if let Some(flow) = self.flows.get_mut(&key) {
                flow.server_records += 1;
            }
            return;
        }
        let key = FlowKey { client: src, client_port: sport, server: dst, port: dport };
        let print = fingerprint(ev);
        let mut new = false;
        let flow = self.flows.entry(key, || {
            new = true;
            Flow::default()
        });
        let (last_at, last_print) = flow.last_hello;
        if flow.hello_count > 0 && last_print == print && now.saturating_sub(last_at) <= COPY_WINDOW_NS {
            return;
        }
        flow.hello_count += 1;
        flow.last_hello = (now, print);
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
        } else if flow.timed_out && flow.unanswered() {
            // A retry after the timeout of a lone ClientHello: the client kept trying.
            self.block(key, now);
        }
        if new && let Some(evicted) = self.waiting.push_back((now, key)) {
            self.forget(evicted);
        }
    }

    /// An ICMP error: a port unreachable quoting a DTLS flow.
    pub(super) fn on_icmp(&mut self, ev: &Event, icmp: &IcmpError) {
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

    /// Flows whose ClientHellos went unanswered for `timeout_s` time out; those whose
    /// client retried are blocked.
    pub(super) fn expire(&mut self, now: u64) {
        while self.waiting.front().is_some_and(|(t, _)| now.saturating_sub(*t) >= self.timeout_ns) {
            let (_, key) = self.waiting.pop_front().expect("checked");
            let Some(flow) = self.flows.get_mut(&key) else { continue };
            flow.timed_out = true;
            if flow.unanswered() && !flow.blocked && flow.hello_count >= 2 {
                self.block(key, now);
            }
        }
    }

    /// Names an unanswered flow blocked, into its subject's totals.
    fn block(&mut self, key: FlowKey, now: u64) {
        let Some(flow) = self.flows.get_mut(&key) else { return };
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

    /// Builds the findings whose evidence changed since the last flush; `tls` says
    /// whether a subject's client used TLS to the same server (the fallback).
    pub(super) fn flush(&mut self, book: &mut FindingBook, tls: &Reconnect) {
        for (s, at) in self.pending_blocked.drain() {
            self.report_blocked(s, at, tls.tls_seen(s.client, s.server, at), book);
        }
        for (s, at) in self.pending_unreachable.drain() {
            self.report_unreachable(s, at, book);
        }
    }

    fn report_blocked(&self, s: Subject, now: u64, tls: bool, book: &mut FindingBook) {
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

    fn report_unreachable(&self, s: Subject, now: u64, book: &mut FindingBook) {
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

#[cfg(test)]
mod tests {
    use super::super::testing::{T0, dtls_hello, dtls_reply, found};
    use crate::{
        config::{Cap, Config},
        detect::{Detectors, Emission, FindingKind},
    };

    const MS: u64 = 1_000_000;

    fn blocked_clients(d: &mut Detectors) -> Vec<String> {
        let mut c: Vec<String> = found(d, FindingKind::DtlsBlocked)
            .iter()
            .map(|f| f.subject["client"].as_str().unwrap().to_string())
            .collect();
        c.sort();
        c
    }

    #[test]
    fn a_lone_client_hello_is_no_blocked_dtls_and_a_retry_is() {
        let mut d = Detectors::new(&Config::default(), Emission::AtEnd);
        // Client 1: one ClientHello, copied 3 us later (a doubled frame), never answered.
        let lone = dtls_hello(T0, 1, 50001, 0);
        d.on_event(&lone);
        let mut copy = lone.clone();
        copy.header.ts_ns += 3_000;
        d.on_event(&copy);
        // Client 2: the same ClientHello retransmitted after 1 s (a new record sequence
        // number), never answered.
        d.on_event(&dtls_hello(T0, 2, 50002, 0));
        d.on_event(&dtls_hello(T0 + 1000 * MS, 2, 50002, 1));
        // Client 3: a lone ClientHello past its timeout, then a retry: it kept trying.
        d.on_event(&dtls_hello(T0, 3, 50003, 0));
        d.on_event(&dtls_hello(T0 + 12_000 * MS, 3, 50003, 1));
        // Client 4: retried and answered.
        d.on_event(&dtls_hello(T0, 4, 50004, 0));
        d.on_event(&dtls_hello(T0 + 1000 * MS, 4, 50004, 1));
        d.on_event(&dtls_reply(T0 + 1010 * MS, 4, 50004));
        d.finish(T0 + 60_000 * MS);
        let f = found(&mut d, FindingKind::DtlsBlocked);
        assert_eq!(
            f.iter().map(|f| f.subject["client"].as_str().unwrap()).collect::<Vec<_>>(),
            ["198.18.0.2", "198.18.0.3"],
            "{f:#?}"
        );
        let two = f.iter().find(|f| f.subject["client"] == "198.18.0.2").unwrap();
        assert_eq!(two.evidence["client_hellos"], 2);
        assert_eq!(two.evidence["retransmit_intervals_s"], serde_json::json!([1.0]));
    }

    #[test]
    fn a_copy_of_a_retransmission_is_not_another_retry() {
        let mut d = Detectors::new(&Config::default(), Emission::AtEnd);
        for (t, seq) in [(0, 0), (1000, 1), (3000, 2)] {
            let hello = dtls_hello(T0 + t * MS, 1, 50001, seq);
            let mut copy = hello.clone();
            copy.header.ts_ns += 3_000;
            d.on_event(&hello);
            d.on_event(&copy);
        }
        d.finish(T0 + 60_000 * MS);
        let f = found(&mut d, FindingKind::DtlsBlocked);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].evidence["client_hellos"], 3);
        assert_eq!(f[0].evidence["retransmit_intervals_s"], serde_json::json!([1.0, 2.0]));
    }

    #[test]
    fn a_flow_evicted_from_the_waiting_queue_is_forgotten_not_held_forever() {
        let mut cfg = Config::default();
        cfg.dtls.flows_cap = Cap(2);
        let mut d = Detectors::new(&cfg, Emission::AtEnd);
        // A and B start; A retries (so B is the least recently used flow); C starts:
        // the flow table drops B, the full waiting queue drops A, the oldest waiting.
        // (100 ms apart: a retry is slower than a copy of one packet.)
        for (t, client, seq) in [(0, 0xa, 0), (1, 0xb, 0), (2, 0xa, 1), (3, 0xc, 0)] {
            d.on_event(&dtls_hello(T0 + t * 100 * MS, client, 50000, seq));
        }
        assert_eq!(d.evictions()["dtls_waiting"], 1);
        assert_eq!(d.evictions()["dtls_flows"], 2, "B by the LRU, A with its waiting entry");
        assert_eq!((d.tracked()["dtls_flows"], d.tracked()["dtls_waiting"]), (1, 2));
        // A, forgotten, starts over with its next hello (and B's stale entry goes).
        d.on_event(&dtls_hello(T0 + 400 * MS, 0xa, 50000, 2));
        assert_eq!((d.tracked()["dtls_flows"], d.evictions()["dtls_waiting"]), (2, 2));
        // Both retry: A's new flow and C are blocked.
        d.on_event(&dtls_hello(T0 + 1004 * MS, 0xa, 50000, 3));
        d.on_event(&dtls_hello(T0 + 1004 * MS, 0xc, 50000, 1));
        d.finish(T0 + 60_000 * MS);
        assert_eq!(blocked_clients(&mut d), ["198.18.0.10", "198.18.0.12"]);
    }
}
