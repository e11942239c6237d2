//! The black-hole rule through the whole detector, from hand-built events.

use agent_common::{
    EventHeader, EventInfo, EventKind,
    proto::{IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_SYN},
};
use serde_json::Value;

use crate::{
    config::Config,
    detect::{Detectors, Emission, Finding, FindingKind},
    event::Event,
};

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;
const SEQ: u32 = 1_000_000;
const SEG: u16 = 1448;
const CLIENT: [u8; 4] = [198, 18, 0, 2];
const SERVER: [u8; 4] = [198, 19, 0, 2];
const SPORT: u16 = 40000;

fn addr(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&a);
    out
}

fn tcp_event(kind: EventKind, ts: u64, from_client: bool, flags: u8, info: EventInfo, ip_len: u16) -> Event {
    let (src, dst, sport, dport) =
        if from_client { (CLIENT, SERVER, SPORT, 5001) } else { (SERVER, CLIENT, 5001, SPORT) };
    Event {
        header: EventHeader {
            ts_ns: ts,
            kind: kind as u8,
            ip_version: 4,
            l4_proto: IPPROTO_TCP,
            tcp_flags: flags,
            src_addr: addr(src),
            dst_addr: addr(dst),
            src_port: sport,
            dst_port: dport,
            ip_len,
            info,
            ..Default::default()
        },
        snap: Vec::new(),
    }
}

/// The client resends the segment at `seq` of `len` bytes at `ts`.
fn retransmit(ts: u64, seq: u32, len: u16) -> Event {
    let info = EventInfo { tcp_seq: seq, seg_len: len, ..Default::default() };
    tcp_event(EventKind::TcpLargeRetransmit, ts, true, TCP_ACK, info, len + 52)
}

/// The server's FIN, acknowledging everything before `ack`.
fn server_fin(ts: u64, ack: u32) -> Event {
    let info = EventInfo { tcp_seq: 77, tcp_ack: ack, ..Default::default() };
    tcp_event(EventKind::TcpFin, ts, false, TCP_FIN | TCP_ACK, info, 52)
}

/// RTO back-off from 200 ms: the times of `n` retransmissions.
fn rto_times(n: u32) -> Vec<u64> {
    (0..n).map(|i| T0 + 200 * MS * ((1 << (i + 1)) - 1)).collect()
}

fn detectors() -> Detectors {
    Detectors::new(&Config::default(), Emission::AtEnd)
}

/// The black holes at the end of an input that stops while the sender is still
/// backing off (half a second after the last event).
fn black_holes(mut d: Detectors) -> Vec<Finding> {
    d.finish(d.now() + 500 * MS);
    d.book.all().into_iter().filter(|f| f.kind == FindingKind::PmtuBlackHole).collect()
}

fn evidence(f: &Finding, key: &str) -> Value {
    f.evidence.get(key).cloned().unwrap_or(Value::Null)
}

#[test]
fn the_receivers_fin_acknowledging_the_segment_withdraws_the_black_hole() {
    let mut d = Detectors::new(&Config::default(), Emission::Live { interval_ns: 0 });
    for t in rto_times(4) {
        d.on_event(&retransmit(t, SEQ, SEG));
    }
    assert_eq!(d.take_due().len(), 1, "four retransmissions at RTO back-off are a black hole until acknowledged");
    d.on_event(&server_fin(T0 + 4000 * MS, SEQ + u32::from(SEG)));
    assert!(black_holes(d).is_empty(), "the receiver acknowledged the segment");
}

#[test]
fn a_fin_acknowledging_a_smaller_segment_raises_the_largest_acknowledged_size() {
    let mut d = detectors();
    for t in rto_times(3) {
        d.on_event(&retransmit(t, SEQ, 1200));
    }
    let next = SEQ + 1200;
    d.on_event(&server_fin(T0 + 1500 * MS, next));
    for t in rto_times(4) {
        d.on_event(&retransmit(t + 2000 * MS, next, SEG));
    }
    let holes = black_holes(d);
    assert_eq!(holes.len(), 1, "{holes:#?}");
    assert_eq!(evidence(&holes[0], "largest_acked_size"), 1200);
    assert_eq!(evidence(&holes[0], "segment_size"), SEG);
    assert_eq!(evidence(&holes[0], "retransmissions"), 4);
}

#[test]
fn a_fin_short_of_the_segment_confirms_it() {
    let mut d = detectors();
    for t in rto_times(4) {
        d.on_event(&retransmit(t, SEQ, SEG));
    }
    d.on_event(&server_fin(T0 + 4000 * MS, SEQ));
    let holes = black_holes(d);
    assert_eq!(holes.len(), 1, "{holes:#?}");
    assert_eq!(evidence(&holes[0], "retransmissions"), 4);
    assert_eq!(evidence(&holes[0], "largest_acked_size"), 0);
}

#[test]
fn retransmissions_that_stop_early_were_acknowledged_and_five_stand() {
    // Three retransmissions at back-off, then silence for a minute: the receiver's
    // ACK got through (ACK-only packets are no events); no stack gives up that soon.
    let mut d = detectors();
    for t in rto_times(3) {
        d.on_event(&retransmit(t, SEQ, SEG));
    }
    d.finish(T0 + 60_000 * MS);
    assert!(d.book.all().iter().all(|f| f.kind != FindingKind::PmtuBlackHole), "{:#?}", d.book.all());
    // Five, then silence: the sender may have given up; the hole stands.
    let mut d = detectors();
    for t in rto_times(5) {
        d.on_event(&retransmit(t, SEQ, SEG));
    }
    d.finish(T0 + 600_000 * MS);
    let holes: Vec<Finding> = d.book.all().into_iter().filter(|f| f.kind == FindingKind::PmtuBlackHole).collect();
    assert_eq!(holes.len(), 1);
    assert_eq!(evidence(&holes[0], "retransmissions"), 5);
}

#[test]
fn many_segments_each_retransmitted_once_are_no_black_hole() {
    let mut d = detectors();
    for (i, t) in rto_times(10).into_iter().enumerate() {
        d.on_event(&retransmit(t, SEQ + i as u32 * u32::from(SEG), SEG));
    }
    assert!(black_holes(d).is_empty());
}

#[test]
fn shrinking_gaps_are_not_a_retransmission_timer() {
    let mut d = detectors();
    let mut t = T0;
    for gap in [1600, 800, 400, 200, 100] {
        t += gap * MS;
        d.on_event(&retransmit(t, SEQ, SEG));
    }
    assert!(black_holes(d).is_empty());
    // Steady gaps are one (a retransmission timer that stopped backing off).
    let mut d = detectors();
    for i in 1..=4 {
        d.on_event(&retransmit(T0 + i * 1000 * MS, SEQ, SEG));
    }
    assert_eq!(black_holes(d).len(), 1);
}

#[test]
fn copies_microseconds_apart_are_one_transmission() {
    const COPY: u64 = 3_000;
    let once = {
        let mut d = detectors();
        for t in rto_times(4) {
            d.on_event(&retransmit(t, SEQ, SEG));
        }
        black_holes(d)
    };
    assert_eq!(once.len(), 1);
    assert_eq!(evidence(&once[0], "retransmissions"), 4);
    // Doubled: the copy of the original transmission comes as a first
    // "retransmission"; every retransmission then comes twice, the copy as a
    // duplicate. The doubling shows first either on a SYN or on the data itself.
    for syn_first in [false, true] {
        let mut d = detectors();
        if syn_first {
            let syn = tcp_event(EventKind::TcpSyn, T0 - 10 * MS, true, TCP_SYN, EventInfo::default(), 60);
            d.on_event(&syn);
            d.pmtu.on_duplicate(&Event { header: EventHeader { ts_ns: T0 - 10 * MS + COPY, ..syn.header }, ..syn });
        }
        d.on_event(&retransmit(T0 + COPY, SEQ, SEG));
        for t in rto_times(4) {
            d.on_event(&retransmit(t, SEQ, SEG));
            d.pmtu.on_duplicate(&retransmit(t + COPY, SEQ, SEG));
        }
        let twice = black_holes(d);
        assert_eq!(twice.len(), 1, "syn first: {syn_first}: {twice:#?}");
        assert_eq!(twice[0].evidence, once[0].evidence, "syn first: {syn_first}");
        assert_eq!(twice[0].first_seen_ns, once[0].first_seen_ns, "syn first: {syn_first}");
    }
}
