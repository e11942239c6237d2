//! Puts one event in the ring buffer: the header, then up to `snap_cap(kind)` bytes of
//! the packet, in the smallest of four record sizes that holds them (`record_len`). A
//! full ring buffer is counted (`stats::RINGBUF_FULL`), never waited on. The consumer
//! is woken only when this CPU has written `KernelConfig::wakeup_bytes` since it last
//! woke it, or `WAKEUP_INTERVAL_NS` has passed since then: a wakeup per event would
//! cost more than everything else here together. The rule is kept per CPU
//! (`maps::WAKEUP`) rather than asked of the ring buffer (`bpf_ringbuf_query`), which
//! reads the consumer's position and cost every event ~10 ns.
//!
//! Not inlined into the packet path: the header walk keeps only what every packet
//! needs, and the header writer it shares with replay (`wire::record::write_header`)
//! reads the rest again from the packet, for the few packets that raise an event.

use agent_common::{
    Direction, EventHeader, KernelConfig,
    config::{KCFG_PRECISE_TIME, WAKEUP_INTERVAL_NS},
    event::{
        HEADER_LEN, RECORD_BARE, RECORD_LARGE, RECORD_MEDIUM, RECORD_SMALL, SNAP_LARGE, SNAP_MEDIUM, SNAP_SMALL,
        snap_cap,
    },
    proto::MAX_PARSE_OFFSET,
    stats,
    wire::{
        Packet, Parsed, helper_len,
        record::{Snap, write_header},
    },
};
use aya_ebpf::{
    bindings::{BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
};

use crate::{
    maps::{EVENTS, WAKEUP, stat},
    packet::Linear,
};

/// Writes the event for `p`.
#[inline(never)]
pub fn emit<P: Packet + Linear>(pkt: &P, cfg: &KernelConfig, p: &Parsed, ifindex: u32, direction: Direction) {
    let kind = p.event;
    let (snap_off, snap_end) = p.snap();
    let avail = snap_end.saturating_sub(snap_off).min(snap_cap(kind));
    let off = snap_off & MAX_PARSE_OFFSET;
    if avail == 0 {
        emit_sized::<P, RECORD_BARE, 0>(pkt, cfg, p, ifindex, direction, off, 0);
    } else if avail <= SNAP_SMALL {
        emit_sized::<P, RECORD_SMALL, SNAP_SMALL>(pkt, cfg, p, ifindex, direction, off, avail);
    } else if avail <= SNAP_MEDIUM {
        emit_sized::<P, RECORD_MEDIUM, SNAP_MEDIUM>(pkt, cfg, p, ifindex, direction, off, avail);
    } else {
        emit_sized::<P, RECORD_LARGE, SNAP_LARGE>(pkt, cfg, p, ifindex, direction, off, avail);
    }
}

#[inline(always)]
fn emit_sized<P: Packet + Linear, const RECORD: usize, const CAP: usize>(
    pkt: &P,
    cfg: &KernelConfig,
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
    if CAP > 0 {
        let direct =
            CAP <= SNAP_MEDIUM && copy_small::<P, CAP>(pkt, snap_off, unsafe { buf.add(HEADER_LEN) }, snap_len);
        if !direct {
            if let Some(len) = helper_len(snap_len, CAP) {
                if !pkt.load_raw(snap_off as u32, unsafe { buf.add(HEADER_LEN) }, len) {
                    copied = 0;
                    stat(stats::SNAP_COPY_FAILED);
                }
            }
        }
    }
    let ts_ns = if cfg.flags & KCFG_PRECISE_TIME != 0 {
        unsafe { bpf_ktime_get_ns() }
    } else {
        unsafe { bpf_ktime_get_coarse_ns() }
    };
    // SAFETY: the record is `RECORD` (at least a header) bytes, 8-aligned, ours until submitted.
    let h = unsafe { &mut *(buf as *mut EventHeader) };
    write_header(pkt, p, h, ts_ns, ifindex, direction, Snap { offset: snap_off, len: copied });
    let wakeup_bytes = cfg.wakeup_bytes as u64;
    let mut wake = true;
    if let Some(w) = WAKEUP.get_ptr_mut(0) {
        // SAFETY: this CPU's entry, valid for this program run; no other CPU writes it
        // (a program is not preempted on its CPU while it runs).
        let w = unsafe { &mut *w };
        let pending = w.pending_bytes + (RECORD + RINGBUF_RECORD_HLEN) as u64;
        wake = pending >= wakeup_bytes || ts_ns.wrapping_sub(w.last_ns) >= WAKEUP_INTERVAL_NS;
        if wake {
            w.pending_bytes = 0;
            w.last_ns = ts_ns;
        } else {
            w.pending_bytes = pending;
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

/// Bytes the kernel puts before each ring buffer record (`BPF_RINGBUF_HDR_SZ`).
const RINGBUF_RECORD_HLEN: usize = 8;

/// Copies `len` (8 to `SNAP_MEDIUM`) bytes at `off` straight from the linear packet data
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
fn copy_small<P: Linear, const CAP: usize>(pkt: &P, off: usize, dst: *mut u8, len: usize) -> bool {
    if len < 8 || len > CAP || CAP > SNAP_MEDIUM || off > MAX_PARSE_OFFSET {
        return false;
    }
    let tail = core::hint::black_box(len - 8);
    if tail > CAP.saturating_sub(8) {
        return false;
    }
    let Some(last) = pkt.ptr_at::<u64>(off + tail) else {
        return false;
    };
    macro_rules! words {
        ($($i:literal)*) => {$(
            if ($i + 1) * 8 <= CAP && ($i + 1) * 8 <= len {
                let Some(w) = pkt.ptr_at::<u64>(off + $i * 8) else { return false };
                unsafe { core::ptr::write(dst.add($i * 8) as *mut u64, core::ptr::read(w)) };
            }
        )*};
    }
    words!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15);
    unsafe { core::ptr::write(dst.add(tail) as *mut u64, core::ptr::read(last)) };
    true
}
