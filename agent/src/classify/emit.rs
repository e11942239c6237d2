//! The event for a walked frame, field for field as `agent-ebpf/src/emit.rs` writes the
//! ring-buffer record: the walk leaves offsets and `extra`, and the rest (ports, TCP
//! and ICMP fields, addresses) is read from the frame again.

use agent_common::{
    Direction, EventHeader, EventInfo, EventKind,
    event::snap_cap,
    proto::{ICMP_HLEN, IPPROTO_TCP, IPPROTO_UDP, icmp_mtu},
    wire::{Packet, Parsed, be16, be32, dtls, icmp, ipv4, ipv6, tcp},
};

use crate::event::Event;

/// The event the kernel would write for `p`, found in `frame`.
pub(super) fn event(frame: &[u8], p: &Parsed, direction: Direction, ifindex: u32, ts_ns: u64) -> Event {
    let (snap_off, snap_end) = p.snap();
    let snap_len = snap_end.saturating_sub(snap_off).min(snap_cap(p.event));
    let (mut src_addr, mut dst_addr) = ([0u8; 16], [0u8; 16]);
    if p.ip_version == 4 {
        if let Some(a) = frame.array_at::<8>(p.l3_off + ipv4::field::ADDRS) {
            src_addr[..4].copy_from_slice(&a[..4]);
            dst_addr[..4].copy_from_slice(&a[4..]);
        }
    } else if let Some(a) = frame.array_at::<32>(p.l3_off + ipv6::field::ADDRS) {
        src_addr.copy_from_slice(&a[..16]);
        dst_addr.copy_from_slice(&a[16..]);
    }
    let ports = match p.l4_proto {
        IPPROTO_TCP | IPPROTO_UDP => frame.array_at::<4>(p.l4_off).map(|h| (be16(h, 0), be16(h, 2))),
        _ => None,
    };
    let tcp = if p.l4_proto == IPPROTO_TCP { frame.array_at::<16>(p.l4_off) } else { None };
    let (sport, dport) = ports.unwrap_or((0, 0));
    let header = EventHeader {
        ts_ns,
        ifindex,
        wire_len: frame.len() as u32,
        kind: p.event,
        direction: direction as u8,
        class: p.class as u8,
        ip_version: p.ip_version,
        l4_proto: p.l4_proto,
        ip_flags: p.ip_flags,
        tcp_flags: tcp.map_or(0, |t| t[tcp::field::FLAGS]),
        vlan_depth: p.vlan_depth,
        src_addr,
        dst_addr,
        src_port: sport,
        dst_port: dport,
        ip_len: p.ip_len.min(0xffff) as u16,
        l4_payload_len: p.payload_end.saturating_sub(p.payload_off).min(0xffff) as u16,
        snap_len: snap_len as u16,
        snap_offset: snap_off as u16,
        _pad: 0,
        info: info(frame, p, tcp),
    };
    Event { header, snap: frame[snap_off..snap_off + snap_len].to_vec() }
}

/// The kind-specific fields; those a kind does not use stay zero.
fn info(frame: &[u8], p: &Parsed, tcp: Option<&[u8; 16]>) -> EventInfo {
    let (kind, x) = (p.event, p.extra);
    let mut i = EventInfo::default();
    if let Some(t) = tcp {
        i.tcp_seq = be32(t, tcp::field::SEQ);
        i.tcp_ack = be32(t, tcp::field::ACK);
        i.tcp_window = be16(t, tcp::field::WINDOW);
    }
    if kind == EventKind::TcpSyn as u8 {
        i.tcp_mss = x as u16;
    } else if kind == EventKind::TcpLargeRetransmit as u8 {
        i.seg_len = x as u16;
        i.largest_acked = (x >> 16) as u16;
        i.retransmits = (x >> 32) as u32;
    } else if kind == EventKind::IcmpError as u8 {
        if let Some(c) = frame.array_at::<ICMP_HLEN>(p.l4_off) {
            let (t, code) = (c[icmp::field::TYPE], c[icmp::field::CODE]);
            i.icmp_type = t;
            i.icmp_code = code;
            i.icmp_mtu = icmp_mtu(p.ip_version, t, code, [c[4], c[5], c[6], c[7]]);
        }
    } else if kind == EventKind::Dtls as u8 {
        i.dtls_records = dtls::records(x);
        i.dtls_content_mask = dtls::content_mask(x);
        i.record_version = dtls::version(x);
        i.handshake_mask = dtls::handshake_mask(x);
    } else if kind == EventKind::Tls as u8 {
        i.handshake_mask = 1 << (x & 31);
        i.record_version = frame.be16_at(p.payload_off + 1).unwrap_or(0);
    }
    i
}
