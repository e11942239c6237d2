//! Puts one event in the ring buffer: the header, then up to `snap_cap(kind)` bytes of
//! the packet. A small record is used when the bytes fit it. A full ring buffer is counted
//! (`stats::RINGBUF_FULL`), never waited on. The consumer is woken only when
//! `KernelConfig::wakeup_bytes` have piled up or `WAKEUP_INTERVAL_NS` has passed
//! since the last wakeup: a wakeup per event would cost more than everything else
//! here together.
//!
//! Not inlined into the packet path: the header walk keeps only what every packet
//! needs, and this function reads the rest (ports, TCP and ICMP fields) again from the
//! packet, for the few packets that raise an event.

use agent_common::{
    Direction, EventHeader, EventKind,
    config::{KCFG_PRECISE_TIME, WAKEUP_INTERVAL_NS},
    event::{HEADER_LEN, RECORD_LARGE, RECORD_SMALL, SNAP_LARGE, SNAP_SMALL, snap_cap},
    proto::{ICMP_HLEN, IPPROTO_TCP, IPPROTO_UDP, MAX_PARSE_OFFSET, TLS_RECORD_HLEN, icmp_mtu},
    stats,
};
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};

use agent_common::wire::{Packet, Parsed, helper_len};

use crate::{
    maps::{EVENTS, LAST_WAKEUP, stat},
    packet::Linear,
};

/// Writes the event for `p`.
#[inline(never)]
pub fn emit<P: Packet + Linear>(pkt: &P, p: &Parsed, ifindex: u32, direction: Direction) {
    let kind = p.event;
    let (snap_off, snap_end) = p.snap();
    let avail = snap_end.saturating_sub(snap_off).min(snap_cap(kind));
    if avail > SNAP_SMALL {
        emit_sized::<P, RECORD_LARGE, SNAP_LARGE>(pkt, p, ifindex, direction, snap_off & MAX_PARSE_OFFSET, avail);
    } else {
        emit_sized::<P, RECORD_SMALL, SNAP_SMALL>(pkt, p, ifindex, direction, snap_off & MAX_PARSE_OFFSET, avail);
    }
}

#[inline(always)]
fn emit_sized<P: Packet + Linear, const RECORD: usize, const CAP: usize>(
    pkt: &P,
    p: &Parsed,
    ifindex: u32,
    direction: Direction,
    snap_off: usize,
    avail: usize,
) {
    let Some(mut entry) = EVENTS.reserve_bytes(RECORD, 0) else {
        stat(stats::RINGBUF_FULL);
        return;
    };
    let buf = entry.as_mut_ptr();
    let snap_len = if avail > CAP { CAP } else { avail };
    let mut copied = snap_len as u16;
    let direct = CAP == SNAP_SMALL && copy_small(pkt, snap_off, unsafe { buf.add(HEADER_LEN) }, snap_len);
    if !direct {
        if let Some(len) = helper_len(snap_len, CAP) {
            if !pkt.load_raw(snap_off as u32, unsafe { buf.add(HEADER_LEN) }, len) {
                copied = 0;
                stat(stats::SNAP_COPY_FAILED);
            }
        }
    }
    let l4 = p.l4_off & MAX_PARSE_OFFSET;
    let kind = p.event;
    let ports = if p.l4_proto == IPPROTO_TCP || p.l4_proto == IPPROTO_UDP { pkt.ptr_at::<[u8; 4]>(l4) } else { None };
    let tcp = if p.l4_proto == IPPROTO_TCP { pkt.ptr_at::<[u8; 16]>(l4) } else { None };
    let icmp = if kind == EventKind::IcmpError as u8 { pkt.ptr_at::<[u8; ICMP_HLEN]>(l4) } else { None };
    // The header is written field by field straight into the reserved record: no
    // copy on the stack, and no memset/memcpy calls (the BPF backend turns unaligned
    // block copies into calls to a byte loop).
    let h = buf as *mut EventHeader;
    let cfg = crate::maps::config();
    unsafe {
        (*h).ts_ns = match cfg {
            Some(c) if c.flags & KCFG_PRECISE_TIME != 0 => bpf_ktime_get_ns(),
            _ => bpf_ktime_get_coarse_ns(),
        };
        (*h).ifindex = ifindex;
        (*h).wire_len = Packet::len(pkt) as u32;
        (*h).kind = kind;
        (*h).direction = direction as u8;
        (*h).class = p.class as u8;
        (*h).ip_version = p.ip_version;
        (*h).l4_proto = p.l4_proto;
        (*h).ip_flags = p.ip_flags;
        (*h).vlan_depth = p.vlan_depth;
        write_addrs(pkt, p, &mut (*h).src_addr, &mut (*h).dst_addr);
        let (sport, dport) = match ports {
            Some(b) => (u16::from_be_bytes([(*b)[0], (*b)[1]]), u16::from_be_bytes([(*b)[2], (*b)[3]])),
            None => (0, 0),
        };
        (*h).src_port = sport;
        (*h).dst_port = dport;
        (*h).ip_len = if p.ip_len > 0xffff { 0xffff } else { p.ip_len as u16 };
        let payload_len = p.payload_end.saturating_sub(p.payload_off);
        (*h).l4_payload_len = if payload_len > 0xffff { 0xffff } else { payload_len as u16 };
        (*h).snap_len = copied;
        (*h).snap_offset = snap_off as u16;
        (*h)._pad = 0;

        let i = &mut (*h).info;
        match tcp {
            Some(t) => {
                let t = *t;
                (*h).tcp_flags = t[13];
                i.tcp_seq = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
                i.tcp_ack = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
                i.tcp_window = u16::from_be_bytes([t[14], t[15]]);
            }
            None => {
                (*h).tcp_flags = 0;
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
                let c = *c;
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
            i.dtls_records = x as u8;
            i.dtls_content_mask = (x >> 8) as u8;
            i.record_version = (x >> 16) as u16;
            i.handshake_mask = (x >> 32) as u32;
        } else if kind == EventKind::Tls as u8 {
            i.dtls_records = 0;
            i.dtls_content_mask = 0;
            i.handshake_mask = 1 << (x & 31);
            i.record_version = match pkt.ptr_at::<[u8; 2]>((p.payload_off & MAX_PARSE_OFFSET) + 1) {
                Some(v) => u16::from_be_bytes(*v),
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
    let wakeup_bytes = match cfg {
        Some(c) => c.wakeup_bytes as u64,
        None => 0,
    };
    // Counts this record too: the reservation already moved the producer position.
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    // Only the record that crosses the threshold wakes: a consumer already woken but
    // not yet reading must not be woken again for every record after it.
    let mut wake = waiting >= wakeup_bytes && waiting < wakeup_bytes + (RECORD + RINGBUF_RECORD_HLEN) as u64;
    if let Some(last) = LAST_WAKEUP.get_ptr_mut(0) {
        // Racy across CPUs on purpose: the worst case is one extra wakeup.
        let now = unsafe { (*h).ts_ns };
        unsafe {
            if now.wrapping_sub(*last) >= WAKEUP_INTERVAL_NS {
                wake = true;
            }
            if wake {
                *last = now;
            }
        }
    }
    entry.submit(if wake { BPF_RB_FORCE_WAKEUP } else { BPF_RB_NO_WAKEUP } as u64);
    stat(stats::EVENTS_SUBMITTED);
}

/// The benchmark's event floor (`pathwatch_xdp_event_floor`): a small record reserved,
/// stamped with the coarse clock, its first 64 bytes written, submitted without a
/// wakeup.
#[inline(never)]
pub fn emit_floor() {
    let Some(mut entry) = EVENTS.reserve_bytes(RECORD_SMALL, 0) else {
        stat(stats::RINGBUF_FULL);
        return;
    };
    let words = entry.as_mut_ptr() as *mut u64;
    unsafe {
        words.write(bpf_ktime_get_coarse_ns());
        for i in 1..8 {
            core::ptr::write_volatile(words.add(i), 0);
        }
    }
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}

const _: () = assert!(TLS_RECORD_HLEN == 5);

/// Bytes the kernel puts before each ring buffer record (`BPF_RINGBUF_HDR_SZ`).
const RINGBUF_RECORD_HLEN: usize = 8;

/// Copies `len` (8 to `SNAP_SMALL`) bytes at `off` straight from the linear packet data
/// as 8-byte words, the last one overlapping the one before: a fraction of the cost of
/// `bpf_*_load_bytes` for the short snaps most events carry. False (nothing copied
/// that matters) when the bytes are not all in the linear data; the caller then uses
/// the helper.
///
/// The words are read and written with 8-byte-aligned access on purpose: packet data
/// and the record need not be aligned, but BPF has no alignment traps on the
/// architectures pathwatch runs on (the verifier allows it where the CPU does), and
/// LLVM would otherwise split every unaligned word into eight byte moves.
#[inline(always)]
fn copy_small<P: Linear>(pkt: &P, off: usize, dst: *mut u8, len: usize) -> bool {
    if len < 8 || len > SNAP_SMALL || off > MAX_PARSE_OFFSET {
        return false;
    }
    let tail = core::hint::black_box(len - 8);
    if tail > SNAP_SMALL - 8 {
        return false;
    }
    let Some(last) = pkt.ptr_at::<u64>(off + tail) else {
        return false;
    };
    macro_rules! words {
        ($($i:literal)*) => {$(
            if ($i + 1) * 8 <= len {
                let Some(w) = pkt.ptr_at::<u64>(off + $i * 8) else { return false };
                unsafe { core::ptr::write(dst.add($i * 8) as *mut u64, core::ptr::read(w)) };
            }
        )*};
    }
    words!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    unsafe { core::ptr::write(dst.add(tail) as *mut u64, core::ptr::read(last)) };
    true
}

/// Writes the packet's addresses into an event as 64-bit words (IPv4 in the first
/// four bytes, the rest zero). Aligned stores: a ring-buffer record starts 8-aligned
/// and so do both addresses in it, and the BPF backend splits an unaligned 64-bit
/// store into eight byte stores.
#[inline(always)]
fn write_addrs<P: Linear>(pkt: &P, p: &Parsed, src: &mut [u8; 16], dst: &mut [u8; 16]) {
    let (s, d) = (src.as_mut_ptr() as *mut u64, dst.as_mut_ptr() as *mut u64);
    let l3 = p.l3_off & MAX_PARSE_OFFSET;
    unsafe {
        if p.ip_version == 4 {
            let (a, b) = match pkt.ptr_at::<[u32; 2]>(l3 + 12) {
                Some(a) => ((*a)[0] as u64, (*a)[1] as u64),
                None => (0, 0),
            };
            s.write(a);
            s.add(1).write(0);
            d.write(b);
            d.add(1).write(0);
        } else {
            let w = match pkt.ptr_at::<[u64; 4]>(l3 + 8) {
                Some(a) => *a,
                None => [0; 4],
            };
            s.write(w[0]);
            s.add(1).write(w[1]);
            d.write(w[2]);
            d.add(1).write(w[3]);
        }
    }
}

const _: () = assert!(core::mem::offset_of!(EventHeader, src_addr) % 8 == 0);
const _: () = assert!(core::mem::offset_of!(EventHeader, dst_addr) % 8 == 0);
