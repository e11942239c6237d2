//! One view of a packet for both hooks: bounds-checked direct reads of the linear
//! data, and a helper-based copy for the bytes an event carries.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use core::ffi::c_void;

/// What the parser needs from a hook's context.
pub trait Packet {
    /// First byte of the linear packet data.
    fn start(&self) -> usize;
    /// One past the last byte of the linear packet data.
    fn end(&self) -> usize;
    /// Packet length as the hook sees it (for XDP, the linear frame; for TC, `skb->len`).
    fn len(&self) -> usize;
    /// Copies `len` bytes at `offset` to `dst`; false on failure.
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool;
    /// Whether this hook reports events for the packet (see `pathwatch_tc`).
    fn raises_events(&self) -> bool;
    /// `dtls::walk_packed`, run in a separately verified function.
    fn dtls_walk(&self, payload_off: u64, end: u64, claimed_end: u64) -> u64;
    /// `tcp::mss_option`, run in a separately verified function.
    fn mss_option(&self, off: u64, end: u64) -> u16;

    /// Pointer to a `T` at `offset`, if all of it is inside the packet.
    #[inline(always)]
    fn ptr_at<T>(&self, offset: usize) -> Option<*const T> {
        let start = self.start();
        if start + offset + core::mem::size_of::<T>() > self.end() {
            return None;
        }
        Some((start + offset) as *const T)
    }

    /// The byte at `offset`.
    #[inline(always)]
    fn u8_at(&self, offset: usize) -> Option<u8> {
        // For a one-byte read LLVM rewrites `p + 1 > end` as `p >= end`, from which the
        // verifier learns nothing; hiding the end-of-access pointer behind black_box
        // keeps the compare in the form the verifier understands.
        let p = core::hint::black_box(self.start() + offset);
        let access_end = core::hint::black_box(p + 1);
        if access_end > self.end() {
            return None;
        }
        Some(unsafe { *(p as *const u8) })
    }

    /// The big-endian `u16` at `offset`.
    #[inline(always)]
    fn be16_at(&self, offset: usize) -> Option<u16> {
        self.ptr_at::<[u8; 2]>(offset).map(|p| unsafe { be16(p.cast(), 0) })
    }

    /// Whether the first `offset` bytes are all in the linear data.
    #[inline(always)]
    fn has(&self, offset: usize) -> bool {
        self.start() + offset <= self.end()
    }
}

/// The big-endian `u16` at `base + at`, read as one 16-bit load.
///
/// # Safety
/// `base + at .. + 2` must have been bounds-checked. Header fields need not be
/// aligned; BPF has no alignment traps where pathwatch runs (the verifier allows the
/// access where the CPU does), and an aligned-typed load keeps LLVM from splitting it
/// into byte loads.
#[inline(always)]
pub unsafe fn be16(base: *const u8, at: usize) -> u16 {
    u16::from_be(unsafe { core::ptr::read(base.add(at) as *const u16) })
}

/// The big-endian `u32` at `base + at`, as one 32-bit load (see [`be16`]).
///
/// # Safety
/// As for [`be16`], for 4 bytes.
#[inline(always)]
pub unsafe fn be32(base: *const u8, at: usize) -> u32 {
    u32::from_be(unsafe { core::ptr::read(base.add(at) as *const u32) })
}

/// An XDP frame.
pub struct XdpPacket<'a> {
    ctx: &'a XdpContext,
}

impl<'a> XdpPacket<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        XdpPacket { ctx }
    }
}

// `data` and `data_end` are re-read (volatile) at every use. When LLVM keeps the
// 32-bit context field in a register across a spill it zero-extends it again with a
// shift, and the verifier rejects any arithmetic on `pkt_end`.
impl Packet for XdpPacket<'_> {
    #[inline(always)]
    fn start(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx.ctx).data) as usize }
    }
    #[inline(always)]
    fn end(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx.ctx).data_end) as usize }
    }
    #[inline(always)]
    fn len(&self) -> usize {
        // A 64-bit pointer difference (allowed to privileged programs); narrowing
        // before subtracting would be 32-bit arithmetic on pkt_end, which is not.
        self.end() - self.start()
    }
    #[inline(always)]
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx.ctx, offset, dst as *mut c_void, len) == 0 }
    }
    #[inline(always)]
    fn raises_events(&self) -> bool {
        true
    }
    #[inline(always)]
    fn dtls_walk(&self, payload_off: u64, end: u64, claimed_end: u64) -> u64 {
        pathwatch_dtls_xdp(self.ctx.ctx, payload_off, end, claimed_end)
    }
    #[inline(always)]
    fn mss_option(&self, off: u64, end: u64) -> u16 {
        pathwatch_mss_xdp(self.ctx.ctx, off, end) as u16
    }
}

/// A socket buffer at TC.
pub struct SkbPacket<'a> {
    ctx: &'a TcContext,
}

impl<'a> SkbPacket<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        SkbPacket { ctx }
    }
}

impl Packet for SkbPacket<'_> {
    #[inline(always)]
    fn start(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx.skb.skb).data) as usize }
    }
    #[inline(always)]
    fn end(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx.skb.skb).data_end) as usize }
    }
    #[inline(always)]
    fn len(&self) -> usize {
        self.ctx.len() as usize
    }
    #[inline(always)]
    fn load(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_skb_load_bytes(self.ctx.skb.skb as *const c_void, offset, dst as *mut c_void, len) == 0 }
    }
    /// Only for packets this host originated (`ingress_ifindex == 0`) or that came in
    /// on an interface we do not watch: a forwarded packet already raised its event
    /// at XDP ingress.
    #[inline(always)]
    fn raises_events(&self) -> bool {
        let ingress = unsafe { (*self.ctx.skb.skb).ingress_ifindex };
        ingress == 0 || crate::maps::iface_slot(ingress) == 0
    }
    #[inline(always)]
    fn dtls_walk(&self, payload_off: u64, end: u64, claimed_end: u64) -> u64 {
        pathwatch_dtls_skb(self.ctx.skb.skb, payload_off, end, claimed_end)
    }
    #[inline(always)]
    fn mss_option(&self, off: u64, end: u64) -> u16 {
        pathwatch_mss_skb(self.ctx.skb.skb, off, end) as u16
    }
}

/// `len` as a helper size argument the verifier accepts: in `[1, cap]`, or `None`.
///
/// The two tests are kept apart on purpose. Written together, LLVM merges
/// `len == 0 || len > cap` into one unsigned compare of `len - 1`, and the verifier,
/// which tracks the register compared, learns nothing about `len` itself.
#[inline(always)]
pub fn helper_len(len: usize, cap: usize) -> Option<u32> {
    if len > cap {
        return None;
    }
    // A 64-bit spill: the verifier keeps the bounds of a full-register spill only.
    let len = core::hint::black_box(len as u64);
    if len == 0 {
        return None;
    }
    Some(len as u32)
}

/// The DTLS record walk for XDP. A global function: the verifier checks it once, on its
/// own, instead of once for every path that reaches it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_dtls_xdp(ctx: *mut xdp_md, payload_off: u64, end: u64, claimed_end: u64) -> u64 {
    if ctx.is_null() {
        return 0;
    }
    let xdp = XdpContext::new(ctx);
    crate::dtls::walk_packed(&XdpPacket::new(&xdp), payload_off as usize, end as usize, claimed_end as usize)
}

/// The DTLS record walk for TC (see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_dtls_skb(skb: *mut __sk_buff, payload_off: u64, end: u64, claimed_end: u64) -> u64 {
    if skb.is_null() {
        return 0;
    }
    let tc = TcContext::new(skb);
    crate::dtls::walk_packed(&SkbPacket::new(&tc), payload_off as usize, end as usize, claimed_end as usize)
}

/// The TCP MSS option walk for XDP (global, see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_mss_xdp(ctx: *mut xdp_md, off: u64, end: u64) -> u64 {
    if ctx.is_null() {
        return 0;
    }
    let xdp = XdpContext::new(ctx);
    crate::tcp::mss_option(&XdpPacket::new(&xdp), off as usize, end as usize) as u64
}

/// The TCP MSS option walk for TC (global, see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_mss_skb(skb: *mut __sk_buff, off: u64, end: u64) -> u64 {
    if skb.is_null() {
        return 0;
    }
    let tc = TcContext::new(skb);
    crate::tcp::mss_option(&SkbPacket::new(&tc), off as usize, end as usize) as u64
}
