//! The drop program: on the kernel's `kfree_skb` tracepoint (BTF-typed, `tp_btf`), which
//! fires only when the kernel frees a packet as dropped, with its reason. A packet that
//! is not dropped never runs it.
//!
//! It copies the start of the skb and the dropped packet's headers (from the network
//! header on) into a per-CPU scratch frame behind a made-up Ethernet header, walks them
//! with the classifiers' own walk (`agent_common::wire::walk`), counts the drop per
//! (reason, class), and for the classes a detector reads writes a drop record (a
//! [`DropInfo`], the event header, the snap) to `DROP_EVENTS`, at most
//! `DROP_EVENTS_PER_PERIOD` per period per CPU; the rest are counted as suppressed.
//! The kernel's structure offsets come from the agent, read from the kernel's BTF
//! (`DropConfig`): nothing here depends on one kernel's layout.

use agent_common::{
    Direction, EventHeader, FlowState,
    drop::{
        DROP_COPY, DROP_COUNTER_ENTRIES, DROP_EVENT_PERIOD_NS, DROP_EVENTS_PER_PERIOD, DROP_F_ROUTED, DROP_INFO_LEN,
        DROP_L3_OFF, DROP_RECORD_LEN, DROP_SNAP, DropClass, DropConfig, DropInfo, DropRate, drop_class,
        drop_counter_index,
    },
    event::HEADER_LEN,
    proto::{ETH_P_IPV4, ETH_P_IPV6},
    wire::{self, Inner, LargeSegments, Packet, Parsed, helper_len, record::Snap, record::write_header},
};
use aya_ebpf::{
    helpers::generated::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use core::ffi::c_void;

use crate::maps;

/// Drops per (reason, class), per CPU.
#[map(name = "DROP_COUNTERS")]
pub static DROP_COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_COUNTER_ENTRIES, 0);

/// The kernel's offsets and the program's settings, entry 0; the agent writes it.
#[map(name = "DROP_CONFIG")]
pub static DROP_CONFIG: Array<DropConfig> = Array::with_max_entries(1, 0);

/// Drop records for the agent.
#[map(name = "DROP_EVENTS")]
pub static DROP_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// This CPU's rate limit of drop events, and what it suppressed.
#[map(name = "DROP_RATE")]
pub static DROP_RATE: PerCpuArray<DropRate> = PerCpuArray::with_max_entries(1, 0);

/// Where this CPU copies the skb and the dropped packet (too big for the stack).
#[map(name = "DROP_SCRATCH")]
static DROP_SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// Bytes of `struct sk_buff` copied (the agent checks every offset it uses is inside).
const SKB_COPY: usize = 256;
/// The scratch frame: the made-up Ethernet header, then the copied network packet.
const FRAME_CAP: usize = DROP_L3_OFF + DROP_COPY;
/// Offsets into the frame are masked with this (see `ScratchPacket::array_at`).
const FRAME_MASK: usize = 1023;
/// The most bytes one read takes; the frame has this many beyond the mask.
const FRAME_SLACK: usize = 64;

const _: () = assert!(FRAME_CAP <= FRAME_MASK + 1);

#[repr(C)]
struct Scratch {
    parsed: Parsed,
    skb: [u8; SKB_COPY],
    frame: [u8; FRAME_MASK + 1 + FRAME_SLACK],
}

/// The drop program.
#[btf_tracepoint(function = "kfree_skb")]
pub fn pathwatch_drop(ctx: BtfTracePointContext) -> i32 {
    on_drop(&ctx);
    0
}

#[inline(always)]
fn on_drop(ctx: &BtfTracePointContext) {
    let Some(dcfg) = DROP_CONFIG.get(0) else { return };
    if dcfg.ready == 0 {
        return;
    }
    if maps::config().is_none() {
        return;
    }
    let Some(scratch) = DROP_SCRATCH.get_ptr_mut(0) else { return };
    // SAFETY: this CPU's entry; the program does not run nested on one CPU.
    let scratch = unsafe { &mut *scratch };
    let skb: u64 = ctx.arg(0);
    let reason = ctx.arg::<u64>(2) as u32;
    if !read_kernel(scratch.skb.as_mut_ptr(), SKB_COPY as u32, skb) {
        return;
    }
    if dcfg.netns_inum != 0 && netns_inum(&scratch.skb, dcfg) != dcfg.netns_inum {
        return;
    }
    let protocol = u16::from_be(field::<u16>(&scratch.skb, dcfg.skb_protocol));
    let (frame_len, wire_len) =
        if protocol == ETH_P_IPV4 || protocol == ETH_P_IPV6 { copy_network(scratch, dcfg, protocol) } else { (0, 0) };
    let lengths = frame_len as u64 | (wire_len as u64) << 32;
    let parsed =
        if frame_len > DROP_L3_OFF && pathwatch_walk_drop(lengths) != 0 { scratch.parsed } else { Parsed::new() };
    let Some(pkt) = scratch_packet(lengths) else { return };
    let (sport, dport) = ports(&pkt, &parsed);
    let class = drop_class(dcfg, parsed.class, sport, dport, reason);
    if let Some(c) = DROP_COUNTERS.get_ptr_mut(drop_counter_index(reason, class)) {
        unsafe { *c += 1 };
    }
    if class.raises_event() && allowed() {
        if frame_len <= DROP_L3_OFF {
            scratch.parsed = Parsed::new();
        }
        pathwatch_emit_drop(lengths, (class as u64) << 32 | reason as u64);
    }
}

/// Walks the scratch frame with the classifiers' walk and leaves the result in the
/// scratch (`parsed`); 0 when there is nothing to walk. A global function: the
/// verifier checks the walk once, on its own, and the caller goes on from one state
/// rather than from each of the walk's many ends.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_walk_drop(lengths: u64) -> u64 {
    let (Some(cfg), Some(s)) = (maps::config(), DROP_SCRATCH.get_ptr_mut(0)) else { return 0 };
    let Some(pkt) = scratch_packet(lengths) else { return 0 };
    let parsed = wire::walk(&pkt, cfg, &mut NoFlows);
    // SAFETY: this CPU's entry, valid for this run.
    unsafe { (*s).parsed = parsed };
    1
}

/// Writes the drop record for the walked packet in the scratch (global, see
/// [`pathwatch_walk_drop`]); `class_reason` is the [`DropClass`] above the reason.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_emit_drop(lengths: u64, class_reason: u64) -> u64 {
    let (Some(dcfg), Some(s)) = (DROP_CONFIG.get(0), DROP_SCRATCH.get_ptr(0)) else { return 0 };
    let Some(pkt) = scratch_packet(lengths) else { return 0 };
    // SAFETY: this CPU's entry, valid for this run.
    let s = unsafe { &*s };
    emit(&pkt, &s.parsed, dcfg, &s.skb, class_reason);
    1
}

/// The network namespace (inode number) of the device the skb is on, or else of its
/// route's device; 0 when it has neither.
#[inline(always)]
fn netns_inum(skb: &[u8; SKB_COPY], dcfg: &DropConfig) -> u32 {
    let mut dev = field::<u64>(skb, dcfg.skb_dev);
    if dev == 0 {
        let dst = field::<u64>(skb, dcfg.skb_refdst) & !1u64;
        if dst != 0 {
            dev = read_u64(dst + dcfg.dst_dev as u64);
        }
    }
    if dev == 0 {
        return 0;
    }
    let net = read_u64(dev + dcfg.dev_nd_net as u64);
    if net == 0 {
        return 0;
    }
    read_u32(net + dcfg.net_inum as u64)
}

/// Copies the packet from its network header into the scratch frame behind a made-up
/// Ethernet header; returns the frame's readable length and its length as the skb has it.
#[inline(always)]
fn copy_network(scratch: &mut Scratch, dcfg: &DropConfig, protocol: u16) -> (usize, usize) {
    let head = field::<u64>(&scratch.skb, dcfg.skb_head);
    let data = field::<u64>(&scratch.skb, dcfg.skb_data);
    let network = field::<u16>(&scratch.skb, dcfg.skb_network_header) as u64;
    let len = field::<u32>(&scratch.skb, dcfg.skb_len) as u64;
    let data_len = field::<u32>(&scratch.skb, dcfg.skb_data_len) as u64;
    if network == 0xffff || head == 0 || data < head {
        return (0, 0);
    }
    let l3 = head + network;
    let linear_end = data + len.saturating_sub(data_len);
    if l3 >= linear_end || l3 < head {
        return (0, 0);
    }
    let skb_end = data + len;
    let wire = (skb_end - l3) as usize;
    let avail = (linear_end - l3) as usize;
    let copy = if avail > DROP_COPY { DROP_COPY } else { avail };
    let Some(n) = helper_len(copy, DROP_COPY) else { return (0, 0) };
    let dst = unsafe { scratch.frame.as_mut_ptr().add(DROP_L3_OFF) };
    if !read_kernel(dst, n, l3) {
        return (0, 0);
    }
    // The made-up Ethernet header: no addresses, the skb's protocol. Written as words:
    // a slice fill would become a call to a byte loop.
    let words = scratch.frame.as_mut_ptr() as *mut u32;
    unsafe {
        words.write_unaligned(0);
        words.add(1).write_unaligned(0);
        words.add(2).write_unaligned(0);
    }
    scratch.frame[12] = (protocol >> 8) as u8;
    scratch.frame[13] = protocol as u8;
    // The walk reads no further than `wire_len`: make it what was copied.
    let copied = n as usize;
    (DROP_L3_OFF + copied, DROP_L3_OFF + if wire < copied { wire } else { copied })
}

/// The packet's ports, for the VPN-port class.
#[inline(always)]
fn ports(pkt: &ScratchPacket, p: &Parsed) -> (u16, u16) {
    if p.l4_proto != agent_common::proto::IPPROTO_TCP && p.l4_proto != agent_common::proto::IPPROTO_UDP {
        return (0, 0);
    }
    match pkt.array_at::<4>(p.l4_off & agent_common::proto::MAX_PARSE_OFFSET) {
        Some(b) => (wire::be16(b, 0), wire::be16(b, 2)),
        None => (0, 0),
    }
}

/// Whether this CPU may write another drop event in this period; counts it if not.
#[inline(always)]
fn allowed() -> bool {
    let Some(r) = DROP_RATE.get_ptr_mut(0) else { return false };
    // SAFETY: this CPU's entry, valid for this run.
    let r = unsafe { &mut *r };
    // The precise clock: the coarse one, cheaper in a VM, is refused to tracing
    // programs by the verifier.
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(r.period_start) >= DROP_EVENT_PERIOD_NS {
        r.period_start = now;
        r.used = 0;
    }
    if r.used >= DROP_EVENTS_PER_PERIOD as u64 {
        r.suppressed += 1;
        r.suppressed_since += 1;
        return false;
    }
    r.used += 1;
    true
}

/// Writes the drop record.
#[inline(always)]
fn emit(pkt: &ScratchPacket, p: &Parsed, dcfg: &DropConfig, skb: &[u8; SKB_COPY], class_reason: u64) {
    let reason = class_reason as u32;
    let class = DropClass::from_u8((class_reason >> 32) as u8);
    let Some(mut entry) = DROP_EVENTS.reserve_bytes(DROP_RECORD_LEN, 0) else {
        if let Some(r) = DROP_RATE.get_ptr_mut(0) {
            unsafe { (*r).ring_full += 1 };
        }
        return;
    };
    let buf = entry.as_mut_ptr();
    let in_ifindex = field::<u32>(skb, dcfg.skb_iif);
    let dev = field::<u64>(skb, dcfg.skb_dev);
    let dst = field::<u64>(skb, dcfg.skb_refdst) & !1u64;
    let dev_ifindex = if dev != 0 { read_u32(dev + dcfg.dev_ifindex as u64) } else { 0 };
    let route_dev = if dst != 0 { read_u64(dst + dcfg.dst_dev as u64) } else { 0 };
    let (route_ifindex, route_mtu) = if route_dev != 0 {
        (read_u32(route_dev + dcfg.dev_ifindex as u64), read_u32(route_dev + dcfg.dev_mtu as u64))
    } else {
        (0, 0)
    };
    let suppressed_before = match DROP_RATE.get_ptr_mut(0) {
        Some(r) => unsafe {
            let n = (*r).suppressed_since;
            (*r).suppressed_since = 0;
            n as u32
        },
        None => 0,
    };
    // SAFETY: the record is DROP_RECORD_LEN bytes, 8-aligned, ours until submitted.
    let info = unsafe { &mut *(buf as *mut DropInfo) };
    info.reason = reason;
    info.in_ifindex = in_ifindex;
    info.dev_ifindex = dev_ifindex;
    info.route_ifindex = route_ifindex;
    info.route_mtu = route_mtu;
    info.class = class as u8;
    info.flags = if dst != 0 { DROP_F_ROUTED } else { 0 };
    info._pad = 0;
    info.suppressed_before = suppressed_before;
    info._pad2 = 0;

    let (snap_off, snap_end) = p.snap();
    let snap_off = snap_off & agent_common::proto::MAX_PARSE_OFFSET;
    let avail = snap_end.saturating_sub(snap_off);
    let mut copied = 0u16;
    if avail > 0 && snap_off < FRAME_CAP {
        if let Some(n) = helper_len(avail, DROP_SNAP) {
            let src = pkt.frame as u64 + snap_off as u64;
            if read_kernel(unsafe { buf.add(DROP_INFO_LEN + HEADER_LEN) }, n, src) {
                copied = n as u16;
            }
        }
    }
    let ifindex = if in_ifindex != 0 { in_ifindex } else { dev_ifindex };
    let direction = if in_ifindex != 0 { Direction::Ingress } else { Direction::Egress };
    // SAFETY: as above; the header follows the DropInfo, 8-aligned.
    let h = unsafe { &mut *(buf.add(DROP_INFO_LEN) as *mut EventHeader) };
    write_header(pkt, p, h, unsafe { bpf_ktime_get_ns() }, ifindex, direction, Snap { offset: snap_off, len: copied });
    entry.submit(0);
}

/// The `T` at `off` in the copied skb (0 when outside it).
#[inline(always)]
fn field<T: Copy + Default>(skb: &[u8; SKB_COPY], off: u32) -> T {
    let off = off as usize;
    if off > SKB_COPY - core::mem::size_of::<T>() {
        return T::default();
    }
    // SAFETY: inside the array (checked above); read_unaligned needs no alignment.
    unsafe { core::ptr::read_unaligned(skb.as_ptr().add(off) as *const T) }
}

#[inline(always)]
fn read_kernel(dst: *mut u8, len: u32, src: u64) -> bool {
    unsafe { bpf_probe_read_kernel(dst as *mut c_void, len, src as *const c_void) == 0 }
}

#[inline(always)]
fn read_u32(src: u64) -> u32 {
    let mut v = 0u32;
    if read_kernel(&mut v as *mut u32 as *mut u8, 4, src) { v } else { 0 }
}

#[inline(always)]
fn read_u64(src: u64) -> u64 {
    let mut v = 0u64;
    if read_kernel(&mut v as *mut u64 as *mut u8, 8, src) { v } else { 0 }
}

/// A dropped packet's flows are not tracked: the classifiers track them.
struct NoFlows;

impl LargeSegments for NoFlows {
    #[inline(always)]
    fn on_large_segment(&mut self, _set: u32, _tag: u64, _seq: u32, _len: u16) -> Option<FlowState> {
        None
    }
}

/// The scratch frame, as the walk reads it.
struct ScratchPacket {
    frame: *const u8,
    len: usize,
    wire_len: usize,
}

impl Packet for ScratchPacket {
    #[inline(always)]
    fn wire_len(&self) -> usize {
        self.wire_len
    }
    #[inline(always)]
    fn readable_len(&self) -> usize {
        self.len
    }
    #[inline(always)]
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        // The offset is masked, not compared: the walk bounds what it reads by the
        // packet's length (`wire_len`, at most what was copied), and a compare against
        // a length the verifier cannot know splits its states at every read, past its
        // limit. Masked, every read is inside the frame whatever the offset.
        if N > FRAME_SLACK {
            return None;
        }
        let off = off & FRAME_MASK;
        // SAFETY: `off + N` <= FRAME_MASK + 1 + FRAME_SLACK, the frame's size.
        Some(unsafe { &*(self.frame.add(off) as *const [u8; N]) })
    }
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize, dst: &mut [u8; N], len: u32) -> bool {
        let l = len as usize;
        if off > FRAME_CAP || l > N || off + l > self.len {
            return false;
        }
        read_kernel(dst.as_mut_ptr(), len, self.frame as u64 + off as u64)
    }
    #[inline(always)]
    fn dtls_walk(&self, payload_off: usize, end: usize, claimed_end: usize) -> u64 {
        pathwatch_dtls_drop(payload_off as u64, end as u64, claimed_end as u64, self.lengths())
    }
    #[inline(always)]
    fn decapsulate(&self, first: Inner, barrier: usize) -> u64 {
        let at = first.ethertype as u64 | (first.off as u64) << 16 | (first.stat as u64) << 32;
        pathwatch_decap_drop(at, barrier as u64, self.lengths())
    }
    #[inline(always)]
    fn mss_option(&self, off: usize, end: usize) -> u16 {
        pathwatch_mss_drop(off as u64, end as u64, self.lengths()) as u16
    }
}

impl ScratchPacket {
    /// Both lengths in one word, for the global functions below: an argument a callee
    /// does not read may be left unset by the caller, which the verifier refuses.
    #[inline(always)]
    fn lengths(&self) -> u64 {
        self.len as u64 | (self.wire_len as u64) << 32
    }
}

/// The scratch frame of this CPU, as the global functions below see it again.
#[inline(always)]
fn scratch_packet(lengths: u64) -> Option<ScratchPacket> {
    // An opaque use: where the walk reads neither length (the DTLS walk reads the
    // masked frame only), LLVM would count the argument as dead and let callers leave
    // its register unset, which the verifier refuses for a global function's argument.
    let lengths = core::hint::black_box(lengths);
    let s = DROP_SCRATCH.get_ptr(0)?;
    let wire_len = lengths >> 32;
    let len = lengths as u32 as usize;
    let len = if len > FRAME_CAP { FRAME_CAP } else { len };
    // SAFETY: this CPU's entry, valid for this run.
    Some(ScratchPacket { frame: unsafe { (*s).frame.as_ptr() }, len, wire_len: wire_len as usize })
}

/// The DTLS record walk over the scratch frame. A global function, as for the
/// classifiers (`packet::pathwatch_dtls_xdp`): the verifier checks it once, on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_dtls_drop(payload_off: u64, end: u64, claimed_end: u64, lengths: u64) -> u64 {
    match scratch_packet(lengths) {
        Some(pkt) => wire::dtls::walk_packed(&pkt, payload_off as usize, end as usize, claimed_end as usize),
        None => 0,
    }
}

/// The TCP MSS option walk over the scratch frame (global, see [`pathwatch_dtls_drop`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_mss_drop(off: u64, end: u64, lengths: u64) -> u64 {
    match scratch_packet(lengths) {
        Some(pkt) => wire::tcp::mss_option(&pkt, off as usize, end as usize) as u64,
        None => 0,
    }
}

/// Tunnels inside a tunnel, over the scratch frame (global, see [`pathwatch_dtls_drop`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_decap_drop(first: u64, barrier: u64, lengths: u64) -> u64 {
    let inner = Inner {
        ethertype: first as u16,
        off: (first >> 16) as usize & agent_common::proto::MAX_PARSE_OFFSET,
        stat: (first >> 32) as u32,
    };
    match scratch_packet(lengths) {
        Some(pkt) => wire::tunnel::decapsulate_packed(&pkt, inner, barrier as usize),
        None => 0,
    }
}
