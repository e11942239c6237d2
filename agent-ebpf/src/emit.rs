//! Puts one event in the ring buffer: the header, then up to `SNAP_LARGE` bytes of the
//! packet. A small record is used when the bytes fit it. A full ring buffer is counted
//! (`stats::RINGBUF_FULL`), never waited on.

use agent_common::{
    Direction, EventHeader,
    event::{HEADER_LEN, RECORD_LARGE, RECORD_SMALL, SNAP_LARGE, SNAP_SMALL},
    stats,
};
use aya_ebpf::helpers::generated::bpf_ktime_get_ns;

use crate::{
    maps::{EVENTS, stat},
    packet::{Packet, helper_len},
    parse::Parsed,
};

/// Not inlined: the common path (no event) then keeps its few values in registers
/// instead of spilling every parse result the event would need.
#[inline(never)]
pub fn emit<P: Packet>(pkt: &P, p: &Parsed, ifindex: u32, direction: Direction) {
    let avail = p.snap_end.saturating_sub(p.snap_off);
    if avail > SNAP_SMALL {
        emit_sized::<P, RECORD_LARGE, SNAP_LARGE>(pkt, p, ifindex, direction, avail);
    } else {
        emit_sized::<P, RECORD_SMALL, SNAP_SMALL>(pkt, p, ifindex, direction, avail);
    }
}

#[inline(always)]
fn emit_sized<P: Packet, const RECORD: usize, const CAP: usize>(
    pkt: &P,
    p: &Parsed,
    ifindex: u32,
    direction: Direction,
    avail: usize,
) {
    let Some(mut entry) = EVENTS.reserve_bytes(RECORD, 0) else {
        stat(stats::RINGBUF_FULL);
        return;
    };
    let buf = entry.as_mut_ptr();
    let snap_len = if avail > CAP { CAP } else { avail };
    let mut copied = snap_len as u16;
    if let Some(len) = helper_len(snap_len, CAP) {
        if !pkt.load(p.snap_off as u32, unsafe { buf.add(HEADER_LEN) }, len) {
            copied = 0;
            stat(stats::SNAP_COPY_FAILED);
        }
    }
    // The header is written field by field straight into the reserved record: no
    // copy on the stack, and no memset/memcpy calls (the BPF backend turns unaligned
    // block copies into calls to a byte loop).
    let h = buf as *mut EventHeader;
    unsafe {
        (*h).ts_ns = bpf_ktime_get_ns();
        (*h).ifindex = ifindex;
        (*h).wire_len = pkt.len() as u32;
        (*h).kind = p.event;
        (*h).direction = direction as u8;
        (*h).class = p.class as u8;
        (*h).ip_version = p.ip_version;
        (*h).l4_proto = p.l4_proto;
        (*h).ip_flags = p.ip_flags;
        (*h).tcp_flags = p.tcp_flags;
        (*h).vlan_depth = p.vlan_depth;
        write_addrs(pkt, p, &mut (*h).src_addr, &mut (*h).dst_addr);
        (*h).src_port = p.src_port;
        (*h).dst_port = p.dst_port;
        (*h).ip_len = if p.ip_len > 0xffff { 0xffff } else { p.ip_len as u16 };
        (*h).l4_payload_len = if p.payload_len > 0xffff { 0xffff } else { p.payload_len as u16 };
        (*h).snap_len = copied;
        (*h).snap_offset = p.snap_off as u16;
        (*h)._pad = 0;
        let i = &mut (*h).info;
        let q = &p.info;
        i.tcp_seq = q.tcp_seq;
        i.tcp_ack = q.tcp_ack;
        i.tcp_mss = q.tcp_mss;
        i.tcp_window = q.tcp_window;
        i.seg_len = q.seg_len;
        i.largest_acked = q.largest_acked;
        i.retransmits = q.retransmits;
        i.icmp_type = q.icmp_type;
        i.icmp_code = q.icmp_code;
        i.dtls_records = q.dtls_records;
        i.dtls_content_mask = q.dtls_content_mask;
        i.icmp_mtu = q.icmp_mtu;
        i.handshake_mask = q.handshake_mask;
        i.record_version = q.record_version;
        i.dtls_epoch = q.dtls_epoch;
        i._pad = 0;
    }
    entry.submit(0);
    stat(stats::EVENTS_SUBMITTED);
}

/// Writes the packet's addresses into an event as 64-bit words (IPv4 in the first
/// four bytes, the rest zero).
#[inline(always)]
fn write_addrs<P: Packet>(pkt: &P, p: &Parsed, src: &mut [u8; 16], dst: &mut [u8; 16]) {
    let (s, d) = (src.as_mut_ptr() as *mut u64, dst.as_mut_ptr() as *mut u64);
    unsafe {
        if p.ip_version == 4 {
            let (a, b) = match pkt.ptr_at::<[u32; 2]>(p.l3_off + 12) {
                Some(a) => ((*a)[0] as u64, (*a)[1] as u64),
                None => (0, 0),
            };
            s.write_unaligned(a);
            s.add(1).write_unaligned(0);
            d.write_unaligned(b);
            d.add(1).write_unaligned(0);
        } else {
            let w = match pkt.ptr_at::<[u64; 4]>(p.l3_off + 8) {
                Some(a) => *a,
                None => [0; 4],
            };
            s.write_unaligned(w[0]);
            s.add(1).write_unaligned(w[1]);
            d.write_unaligned(w[2]);
            d.add(1).write_unaligned(w[3]);
        }
    }
}
