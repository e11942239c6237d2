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
    tcp::read_addrs,
};

#[inline(always)]
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
    let snap_len = if avail > CAP { CAP } else { avail };
    let mut hdr = EventHeader {
        ts_ns: unsafe { bpf_ktime_get_ns() },
        ifindex,
        wire_len: pkt.len() as u32,
        kind: p.event,
        direction: direction as u8,
        class: p.class as u8,
        ip_version: p.ip_version,
        l4_proto: p.l4_proto,
        ip_flags: p.ip_flags,
        tcp_flags: p.tcp_flags,
        vlan_depth: p.vlan_depth,
        src_addr: [0; 16],
        dst_addr: [0; 16],
        src_port: p.src_port,
        dst_port: p.dst_port,
        ip_len: if p.ip_len > 0xffff { 0xffff } else { p.ip_len as u16 },
        l4_payload_len: if p.payload_len > 0xffff { 0xffff } else { p.payload_len as u16 },
        snap_len: snap_len as u16,
        snap_offset: p.snap_off as u16,
        _pad: 0,
        info: p.info,
    };
    let (src, dst) = (&mut hdr.src_addr, &mut hdr.dst_addr);
    read_addrs(pkt, p, src, dst);
    let buf = entry.as_mut_ptr();
    if let Some(len) = helper_len(snap_len, CAP) {
        if !pkt.load(p.snap_off as u32, unsafe { buf.add(HEADER_LEN) }, len) {
            hdr.snap_len = 0;
            stat(stats::SNAP_COPY_FAILED);
        }
    }
    unsafe { core::ptr::write_unaligned(buf as *mut EventHeader, hdr) };
    entry.submit(0);
    stat(stats::EVENTS_SUBMITTED);
}
