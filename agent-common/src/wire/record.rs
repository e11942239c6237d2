//! The event header for a walked packet, written the same way by the kernel (into the
//! reserved ring-buffer record) and by replay (into an [`EventHeader`] it owns).
//!
//! The walk keeps only what every packet needs; this reads the rest (ports, TCP and
//! ICMP fields, addresses) from the packet again, for the few packets that raise an
//! event. The header is written field by field, in place: in the kernel there is no
//! copy on the stack, and no memset/memcpy calls (the BPF backend turns unaligned
//! block copies into calls to a byte loop).

use super::{Packet, Parsed, addr_words, be16, be32, dtls, tcp, tls};
use crate::{
    Direction, EventHeader, EventKind,
    proto::{ICMP_HLEN, IPPROTO_TCP, IPPROTO_UDP, MAX_PARSE_OFFSET, icmp_mtu},
};

/// Where the event's snap is, and how much of it was copied: the caller's part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snap {
    /// Offset in the packet.
    pub offset: usize,
    /// Bytes that follow the header.
    pub len: u16,
}

/// Writes every field of `h` for the walked packet `p`.
#[inline(always)]
pub fn write_header<P: Packet>(
    pkt: &P,
    p: &Parsed,
    h: &mut EventHeader,
    ts_ns: u64,
    ifindex: u32,
    direction: Direction,
    snap: Snap,
) {
    let l4 = p.l4_off & MAX_PARSE_OFFSET;
    let kind = p.event;
    let ports = if p.l4_proto == IPPROTO_TCP || p.l4_proto == IPPROTO_UDP { pkt.array_at::<4>(l4) } else { None };
    let tcp = if p.l4_proto == IPPROTO_TCP { pkt.array_at::<16>(l4) } else { None };
    let icmp = if kind == EventKind::IcmpError as u8 { pkt.array_at::<ICMP_HLEN>(l4) } else { None };
    h.ts_ns = ts_ns;
    h.ifindex = ifindex;
    h.wire_len = pkt.wire_len() as u32;
    h.kind = kind;
    h.direction = direction as u8;
    h.class = p.class as u8;
    h.ip_version = p.ip_version;
    h.l4_proto = p.l4_proto;
    h.ip_flags = p.ip_flags;
    h.vlan_depth = p.vlan_depth;
    write_addrs(pkt, p, h);
    let (sport, dport) = match ports {
        Some(b) => (be16(b, 0), be16(b, 2)),
        None => (0, 0),
    };
    h.src_port = sport;
    h.dst_port = dport;
    h.ip_len = if p.ip_len > 0xffff { 0xffff } else { p.ip_len as u16 };
    let payload_len = p.payload_end.saturating_sub(p.payload_off);
    h.l4_payload_len = if payload_len > 0xffff { 0xffff } else { payload_len as u16 };
    h.snap_len = snap.len;
    h.snap_offset = snap.offset as u16;
    h._pad = 0;

    let i = &mut h.info;
    match tcp {
        Some(t) => {
            h.tcp_flags = t[tcp::field::FLAGS];
            i.tcp_seq = be32(t, tcp::field::SEQ);
            i.tcp_ack = be32(t, tcp::field::ACK);
            i.tcp_window = be16(t, tcp::field::WINDOW);
        }
        None => {
            h.tcp_flags = 0;
            i.tcp_seq = 0;
            i.tcp_ack = 0;
            i.tcp_window = 0;
        }
    }
    let x = p.extra;
    i.tcp_mss = if kind == EventKind::TcpSyn as u8 { x as u16 } else { 0 };
    let retx = kind == EventKind::TcpLargeRetransmit as u8;
    i.seg_len = if retx { x as u16 } else { 0 };
    i.largest_acked = if retx { (x >> 16) as u16 } else { 0 };
    i.retransmits = if retx { (x >> 32) as u32 } else { 0 };
    match icmp {
        Some(c) => {
            i.icmp_type = c[0];
            i.icmp_code = c[1];
            i.icmp_mtu = icmp_mtu(p.ip_version, c[0], c[1], [c[4], c[5], c[6], c[7]]);
        }
        None => {
            i.icmp_type = 0;
            i.icmp_code = 0;
            i.icmp_mtu = 0;
        }
    }
    if kind == EventKind::Dtls as u8 {
        i.dtls_records = dtls::records(x);
        i.dtls_content_mask = dtls::content_mask(x);
        i.record_version = dtls::version(x);
        i.handshake_mask = dtls::handshake_mask(x);
    } else if kind == EventKind::Tls as u8 {
        i.dtls_records = 0;
        i.dtls_content_mask = 0;
        i.handshake_mask = 1 << (x & 31);
        i.record_version = match pkt.array_at::<2>((p.payload_off & MAX_PARSE_OFFSET) + tls::field::VERSION) {
            Some(v) => be16(v, 0),
            None => 0,
        };
    } else {
        i.dtls_records = 0;
        i.dtls_content_mask = 0;
        i.record_version = 0;
        i.handshake_mask = 0;
    }
    i._pad16 = 0;
    i._pad = 0;
}

/// The packet's addresses, as [`addr_words`]. Aligned stores: a ring-buffer record starts 8-aligned and so do both
/// addresses in it, and the BPF backend splits an unaligned 64-bit store into eight
/// byte stores.
#[inline(always)]
fn write_addrs<P: Packet>(pkt: &P, p: &Parsed, h: &mut EventHeader) {
    let w = addr_words(pkt, p).unwrap_or([0; 4]);
    let (s, d) = (h.src_addr.as_mut_ptr() as *mut u64, h.dst_addr.as_mut_ptr() as *mut u64);
    // SAFETY: both addresses are 16 bytes at 8-aligned offsets of an 8-aligned header.
    unsafe {
        s.write(w[0]);
        s.add(1).write(w[1]);
        d.write(w[2]);
        d.add(1).write(w[3]);
    }
}

const _: () = assert!(core::mem::offset_of!(EventHeader, src_addr) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(EventHeader, dst_addr) % 8 == 0);
const _: () = assert!(core::mem::align_of::<EventHeader>() == 8);
