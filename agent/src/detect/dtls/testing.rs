//! Hand-built events for the DTLS detector's tests: what the kernel would report for
//! DTLS and TLS hellos between 198.18.0.`client` and 198.18.1.`server`.

use agent_common::{EventHeader, EventInfo, EventKind, proto::HS_CLIENT_HELLO};

use crate::{
    detect::{Detectors, Finding, FindingKind},
    event::Event,
};

/// An event time (ns since the epoch) to start from.
pub const T0: u64 = 1_700_000_000_000_000_000;

fn event(ts: u64, kind: EventKind, (src, sport): ([u8; 4], u16), (dst, dport): ([u8; 4], u16)) -> Event {
    let (mut src_addr, mut dst_addr) = ([0u8; 16], [0u8; 16]);
    src_addr[..4].copy_from_slice(&src);
    dst_addr[..4].copy_from_slice(&dst);
    let header = EventHeader {
        ts_ns: ts,
        kind: kind as u8,
        ip_version: 4,
        src_addr,
        dst_addr,
        src_port: sport,
        dst_port: dport,
        ..Default::default()
    };
    Event { header, snap: Vec::new() }
}

/// A DTLS 1.2 ClientHello from 198.18.0.`client`:`client_port` to 198.18.1.1:443
/// whose record carries sequence number `seq` (a retransmission takes the next one).
pub fn dtls_hello(ts: u64, client: u8, client_port: u16, seq: u8) -> Event {
    let mut ev = event(ts, EventKind::Dtls, ([198, 18, 0, client], client_port), ([198, 18, 1, 1], 443));
    // Record header: handshake, DTLS 1.2, epoch 0, sequence number, length; then the
    // handshake header of a ClientHello (type 1) and the first bytes of its body.
    ev.snap = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, seq, 0, 60, 1, 0, 0, 48, 0, 0, 0, 0, 0, 0, 0, 48, 0xfe, 0xfd];
    ev.header.snap_len = ev.snap.len() as u16;
    ev.header.l4_payload_len = 73;
    ev.header.wire_len = 115;
    ev.header.info = EventInfo {
        handshake_mask: 1 << HS_CLIENT_HELLO,
        dtls_records: 1,
        dtls_content_mask: 1 << (22 - 20),
        ..Default::default()
    };
    ev
}

/// A DTLS handshake record (a ServerHello) from 198.18.1.1:443 back to the client.
pub fn dtls_reply(ts: u64, client: u8, client_port: u16) -> Event {
    let mut ev = event(ts, EventKind::Dtls, ([198, 18, 1, 1], 443), ([198, 18, 0, client], client_port));
    ev.header.info =
        EventInfo { handshake_mask: 1 << 2, dtls_records: 1, dtls_content_mask: 1 << (22 - 20), ..Default::default() };
    ev
}

/// A TLS ClientHello on TCP from 198.18.0.`client`:`client_port` to
/// 198.18.1.`server`:`port`.
pub fn tls_hello(ts: u64, client: u8, client_port: u16, server: u8, port: u16) -> Event {
    let mut ev = event(ts, EventKind::Tls, ([198, 18, 0, client], client_port), ([198, 18, 1, server], port));
    ev.header.info = EventInfo { handshake_mask: 1 << HS_CLIENT_HELLO, ..Default::default() };
    ev
}

/// The findings of `kind` due now (all of them after `finish` in a replay).
pub fn found(d: &mut Detectors, kind: FindingKind) -> Vec<Finding> {
    d.take_due().into_iter().filter(|f| f.kind == kind).collect()
}
