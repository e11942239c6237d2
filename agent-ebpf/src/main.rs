//! pathwatch kernel programs.
//!
//! `pathwatch_xdp` runs at XDP ingress and `pathwatch_tc` at TC egress; both walk the
//! headers with the walk replay also runs (`agent_common::wire::walk`, reading the
//! packet through [`packet`]), count the packet by (interface, direction, class), and
//! put a compact event in the ring buffer ([`emit`]) only for packets the detectors
//! need. Both fail open: whatever happens, the packet passes. `pathwatch_drop` ([`drop`])
//! runs on the `kfree_skb` tracepoint, only for packets the kernel drops, and walks
//! them the same way.
//!
//! Modules depend one way: the programs here use `drop`, `emit`, `flows` and `packet`,
//! which use `maps`.
#![no_std]
#![no_main]

mod drop;
mod emit;
mod flows;
mod maps;
mod packet;

use agent_common::{Direction, class, stats, wire};
use aya_ebpf::{
    bindings::{TC_ACT_OK, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{
    flows::KernelFlows,
    maps::{count_packet, iface_slot, stat},
    packet::{Linear, SkbPacket, XdpPacket},
};

/// XDP ingress: classify, count, maybe emit; always `XDP_PASS`.
///
/// `inline(always)` reaches the body the macro wraps: left to LLVM it stays a function
/// of its own, and every packet pays a BPF-to-BPF call (a frame, four saved registers,
/// a return through the return thunk) that the floor programs do not.
#[xdp]
#[inline(always)]
pub fn pathwatch_xdp(ctx: XdpContext) -> u32 {
    let pkt = XdpPacket::new(&ctx);
    let ifindex = ctx.ingress_ifindex() as u32;
    handle(&pkt.plain(), &pkt.opaque(), ifindex, Direction::Ingress);
    xdp_action::XDP_PASS
}

/// TC egress: classify and count every packet; emit only for packets this host
/// originated or that came in on an interface we do not watch, so that a forwarded
/// packet raises its event once (at XDP ingress). Always `TC_ACT_OK`. Inlined into the
/// macro's wrapper, as [`pathwatch_xdp`] is.
#[classifier]
#[inline(always)]
pub fn pathwatch_tc(ctx: TcContext) -> i32 {
    let pkt = SkbPacket::new(&ctx);
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    handle(&pkt.plain(), &pkt.opaque(), ifindex, Direction::Egress);
    TC_ACT_OK
}

/// The benchmark baseline: does nothing but pass.
#[xdp]
pub fn pathwatch_xdp_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The TC benchmark baseline, loaded only by `pathwatch-bench`: does nothing but
/// pass, so the TC rows are measured over what a classifier costs at all.
#[classifier]
pub fn pathwatch_tc_pass(_ctx: TcContext) -> i32 {
    TC_ACT_OK
}

/// A benchmark floor, loaded only by `pathwatch-bench`: what counting a packet costs
/// with no header walk at all (the interface's slot, then one per-CPU counter), the
/// least any program that counts per interface can pay.
#[xdp]
pub fn pathwatch_xdp_count_floor(ctx: XdpContext) -> u32 {
    count_only(&ctx);
    xdp_action::XDP_PASS
}

/// A benchmark floor, loaded only by `pathwatch-bench`: counting as
/// [`pathwatch_xdp_count_floor`], then the smallest event pathwatch writes (reserve a
/// small record, a coarse timestamp, the header's first cache line, submit without
/// a wakeup), the least any evented packet can pay.
#[xdp]
pub fn pathwatch_xdp_event_floor(ctx: XdpContext) -> u32 {
    count_only(&ctx);
    emit::emit_floor();
    xdp_action::XDP_PASS
}

/// The TC floor beside [`pathwatch_xdp_count_floor`], loaded only by `pathwatch-bench`:
/// a socket buffer's counting floor, over which the TC rows' costs are read.
#[classifier]
pub fn pathwatch_tc_count_floor(ctx: TcContext) -> i32 {
    count_skb_only(&ctx);
    TC_ACT_OK
}

/// The TC floor beside [`pathwatch_xdp_event_floor`], loaded only by `pathwatch-bench`.
#[classifier]
pub fn pathwatch_tc_event_floor(ctx: TcContext) -> i32 {
    count_skb_only(&ctx);
    emit::emit_floor();
    TC_ACT_OK
}

#[inline(always)]
fn count_only(ctx: &XdpContext) {
    let pkt = XdpPacket::new(ctx);
    count_other(ctx.ingress_ifindex() as u32, Direction::Ingress, wire::Packet::wire_len(&pkt));
}

#[inline(always)]
fn count_skb_only(ctx: &TcContext) {
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    count_other(ifindex, Direction::Egress, ctx.len() as usize);
}

/// Counts a packet of class `other` on `ifindex`, with no header walk.
#[inline(always)]
fn count_other(ifindex: u32, direction: Direction, len: usize) {
    let slot = iface_slot(ifindex) & (class::MAX_IFACE_SLOTS - 1);
    count_packet(slot, direction as u32, agent_common::Class::Other as u32, len as u64);
}

/// Walks, counts and reports one packet: `wire::walk`, with the fast path reading
/// `pkt` and the full walk `full`, the same packet read the way the verifier
/// checks in fewer steps (see [`XdpPacket`]).
#[inline(always)]
fn handle<P: wire::Packet + Linear, Q: wire::Packet>(pkt: &P, full: &Q, ifindex: u32, direction: Direction) {
    let Some(cfg) = maps::config() else {
        return;
    };
    let parsed = match wire::fast::walk(pkt, cfg, &mut KernelFlows) {
        Some(p) => p,
        None => wire::walk_full(full, cfg, &mut KernelFlows),
    };
    let slot = iface_slot(ifindex) & (class::MAX_IFACE_SLOTS - 1);
    count_packet(slot, direction as u32, parsed.class as u32, pkt.wire_len() as u64);
    if parsed.truncated {
        stat(stats::TRUNCATED);
    }
    if parsed.event != 0 && pkt.raises_events() {
        emit::emit(pkt, cfg, &parsed, ifindex, direction);
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
