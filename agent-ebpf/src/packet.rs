//! The two hooks' packets, as the shared header walk reads them
//! ([`agent_common::wire::Packet`]): bounds-checked direct reads of the linear data in
//! the form the verifier understands, helper-based copies, and the separately verified
//! global functions the walk calls for DTLS records, TCP options and tunnels.

use agent_common::wire::{self, Inner, Packet};
use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::generated::{bpf_skb_load_bytes, bpf_xdp_load_bytes},
    programs::{TcContext, XdpContext},
};
use core::ffi::c_void;

use crate::maps::{iface_slot, stat};

/// What differs between the hooks: where the linear data is, the packet's length, the
/// copy helper, and whether the hook reports events.
pub trait Linear {
    /// First byte of the linear packet data.
    fn start(&self) -> usize;
    /// One past the last byte of the linear packet data.
    fn end(&self) -> usize;
    /// Copies `len` bytes at `offset` to `dst`; false on failure.
    fn load_raw(&self, offset: u32, dst: *mut u8, len: u32) -> bool;

    /// Pointer to a `T` at `offset`, if all of it is inside the linear data.
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
    fn byte_at(&self, offset: usize) -> Option<u8> {
        // For a one-byte read LLVM rewrites `p + 1 > end` as `p >= end`, from which the
        // verifier learns nothing; hiding the end-of-access pointer behind black_box
        // keeps the compare in the form the verifier understands.
        let p = core::hint::black_box(self.start() + offset);
        let access_end = core::hint::black_box(p + 1);
        if access_end > self.end() {
            return None;
        }
        // SAFETY: `p` is inside the linear data (checked above).
        Some(unsafe { *(p as *const u8) })
    }
}

/// The shared walk's view of a hook's packet; the rest is the hook's own.
macro_rules! impl_packet {
    ([$($gen:tt)*] $ty:ty, $dtls:ident, $mss:ident, $decap:ident, $ctx:ident) => {
        impl<$($gen)*> Packet for $ty {
            #[inline(always)]
            fn wire_len(&self) -> usize {
                self.hook_len()
            }
            #[inline(always)]
            fn readable_len(&self) -> usize {
                self.end() - self.start()
            }
            #[inline(always)]
            fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
                // SAFETY: the bytes are inside the linear data, which outlives `self`.
                self.ptr_at::<[u8; N]>(off).map(|p| unsafe { &*p })
            }
            #[inline(always)]
            fn load<const N: usize>(&self, off: usize, dst: &mut [u8; N], len: u32) -> bool {
                // `len` comes from `helper_len` with a cap of at most `N`.
                self.load_raw(off as u32, dst.as_mut_ptr(), len)
            }
            #[inline(always)]
            fn has(&self, off: usize) -> bool {
                self.start() + off <= self.end()
            }
            #[inline(always)]
            fn u8_at(&self, off: usize) -> Option<u8> {
                self.byte_at(off)
            }
            #[inline(always)]
            fn raises_events(&self) -> bool {
                self.hook_raises_events()
            }
            #[inline(always)]
            fn stat(&self, index: u32) {
                stat(index)
            }
            #[inline(always)]
            fn dtls_walk(&self, payload_off: usize, end: usize, claimed_end: usize) -> u64 {
                $dtls(self.$ctx(), payload_off as u64, end as u64, claimed_end as u64)
            }
            #[inline(always)]
            fn decapsulate(&self, first: Inner, barrier: usize) -> u64 {
                let at = first.ethertype as u64 | (first.off as u64) << 16 | (first.stat as u64) << 32;
                $decap(self.$ctx(), at, barrier as u64)
            }
            #[inline(always)]
            fn mss_option(&self, off: usize, end: usize) -> u16 {
                $mss(self.$ctx(), off as u64, end as u64) as u16
            }
        }
    };
}

/// An XDP frame. `OPAQUE`: the context pointer goes through `black_box` at each read
/// of `data` and `data_end`, as [`SkbPacket`]'s always does. That costs the reads a
/// store and a load each, but the verifier then walks the full walk's paths in less
/// than half the instructions (386 k instead of 963 k of its 1 M limit, measured), so
/// the full walk reads that way and the fast path, the common shapes, the plain way.
pub struct XdpPacket<'a, const OPAQUE: bool = false> {
    ctx: &'a XdpContext,
}

impl<'a> XdpPacket<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a XdpContext) -> Self {
        XdpPacket { ctx }
    }
}

impl<'a, const OPAQUE: bool> XdpPacket<'a, OPAQUE> {
    /// The same frame, read plainly (the fast path's way).
    #[inline(always)]
    pub fn plain(&self) -> XdpPacket<'a, false> {
        XdpPacket { ctx: self.ctx }
    }
    /// The same frame, read through an opaque context pointer (the full walk's way).
    #[inline(always)]
    pub fn opaque(&self) -> XdpPacket<'a, true> {
        XdpPacket { ctx: self.ctx }
    }
    #[inline(always)]
    fn ctx_ptr(&self) -> *mut xdp_md {
        if OPAQUE { core::hint::black_box(self.ctx.ctx) } else { self.ctx.ctx }
    }
    #[inline(always)]
    fn raw(&self) -> *mut xdp_md {
        self.ctx.ctx
    }
    #[inline(always)]
    fn hook_len(&self) -> usize {
        // A 64-bit pointer difference (allowed to privileged programs); narrowing
        // before subtracting would be 32-bit arithmetic on pkt_end, which is not.
        self.end() - self.start()
    }
    #[inline(always)]
    fn hook_raises_events(&self) -> bool {
        true
    }
}

// `data` and `data_end` are re-read (volatile) at every use. When LLVM keeps the
// 32-bit context field in a register across a spill it zero-extends it again with a
// shift, and the verifier rejects any arithmetic on `pkt_end`.
impl<const OPAQUE: bool> Linear for XdpPacket<'_, OPAQUE> {
    #[inline(always)]
    fn start(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx_ptr()).data) as usize }
    }
    #[inline(always)]
    fn end(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx_ptr()).data_end) as usize }
    }
    #[inline(always)]
    fn load_raw(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_xdp_load_bytes(self.ctx.ctx, offset, dst as *mut c_void, len) == 0 }
    }
}

impl_packet!([const OPAQUE: bool] XdpPacket<'_, OPAQUE>, pathwatch_dtls_xdp, pathwatch_mss_xdp, pathwatch_decap_xdp, raw);

/// A socket buffer at TC. `OPAQUE` (the default): the context pointer goes through
/// `black_box` at each read of `data` and `data_end` (see the `Linear` impl below).
/// The fast path reads plainly ([`SkbPacket::plain`]): its few reads leave LLVM no
/// reason to keep a derived pointer, and each read saves a store and a load (TC's
/// non-matching rows, 1.5-3 ns side by side). The kernel tests load the programs, so
/// an LLVM that does keep one fails them, not an agent.
pub struct SkbPacket<'a, const OPAQUE: bool = true> {
    ctx: &'a TcContext,
}

impl<'a> SkbPacket<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        SkbPacket { ctx }
    }
}

impl<'a, const OPAQUE: bool> SkbPacket<'a, OPAQUE> {
    /// The same socket buffer, read plainly (the fast path's way).
    #[inline(always)]
    pub fn plain(&self) -> SkbPacket<'a, false> {
        SkbPacket { ctx: self.ctx }
    }
    /// The same socket buffer, read through an opaque context pointer (the full walk's way).
    #[inline(always)]
    pub fn opaque(&self) -> SkbPacket<'a, true> {
        SkbPacket { ctx: self.ctx }
    }
    #[inline(always)]
    fn ctx_ptr(&self) -> *mut __sk_buff {
        if OPAQUE { core::hint::black_box(self.ctx.skb.skb) } else { self.ctx.skb.skb }
    }
    #[inline(always)]
    fn raw(&self) -> *mut __sk_buff {
        self.ctx.skb.skb
    }
    #[inline(always)]
    fn hook_len(&self) -> usize {
        self.ctx.len() as usize
    }
    /// Only for packets this host originated (`ingress_ifindex == 0`) or that came in
    /// on an interface we do not watch: a forwarded packet already raised its event
    /// at XDP ingress.
    #[inline(always)]
    fn hook_raises_events(&self) -> bool {
        let ingress = unsafe { (*self.ctx.skb.skb).ingress_ifindex };
        ingress == 0 || iface_slot(ingress) == 0
    }
}

// As for XDP, and (when `OPAQUE`) the context pointer itself goes through `black_box`:
// `data` and `data_end` are not at offset 0 of `__sk_buff`, and LLVM would otherwise
// keep `&skb->data` (the context plus 76) in a register or on the stack for later
// reads, and the verifier rejects any access through a modified context pointer.
impl<const OPAQUE: bool> Linear for SkbPacket<'_, OPAQUE> {
    #[inline(always)]
    fn start(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx_ptr()).data) as usize }
    }
    #[inline(always)]
    fn end(&self) -> usize {
        unsafe { core::ptr::read_volatile(&(*self.ctx_ptr()).data_end) as usize }
    }
    #[inline(always)]
    fn load_raw(&self, offset: u32, dst: *mut u8, len: u32) -> bool {
        unsafe { bpf_skb_load_bytes(self.ctx.skb.skb as *const c_void, offset, dst as *mut c_void, len) == 0 }
    }
}

impl_packet!([const OPAQUE: bool] SkbPacket<'_, OPAQUE>, pathwatch_dtls_skb, pathwatch_mss_skb, pathwatch_decap_skb, raw);

/// The DTLS record walk for XDP. A global function: the verifier checks it once, on its
/// own, instead of once for every path that reaches it.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_dtls_xdp(ctx: *mut xdp_md, payload_off: u64, end: u64, claimed_end: u64) -> u64 {
    if ctx.is_null() {
        return 0;
    }
    let xdp = XdpContext::new(ctx);
    wire::dtls::walk_packed(&XdpPacket::new(&xdp), payload_off as usize, end as usize, claimed_end as usize)
}

/// The DTLS record walk for TC (see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_dtls_skb(skb: *mut __sk_buff, payload_off: u64, end: u64, claimed_end: u64) -> u64 {
    if skb.is_null() {
        return 0;
    }
    let tc = TcContext::new(skb);
    wire::dtls::walk_packed(&SkbPacket::new(&tc), payload_off as usize, end as usize, claimed_end as usize)
}

/// The TCP MSS option walk for XDP (global, see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_mss_xdp(ctx: *mut xdp_md, off: u64, end: u64) -> u64 {
    if ctx.is_null() {
        return 0;
    }
    let xdp = XdpContext::new(ctx);
    wire::tcp::mss_option(&XdpPacket::new(&xdp), off as usize, end as usize) as u64
}

/// The TCP MSS option walk for TC (global, see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_mss_skb(skb: *mut __sk_buff, off: u64, end: u64) -> u64 {
    if skb.is_null() {
        return 0;
    }
    let tc = TcContext::new(skb);
    wire::tcp::mss_option(&SkbPacket::new(&tc), off as usize, end as usize) as u64
}

/// `first` as [`Inner`] again, from the word the global functions take.
#[inline(always)]
fn inner(first: u64) -> Inner {
    Inner {
        ethertype: first as u16,
        off: (first >> 16) as usize & agent_common::proto::MAX_PARSE_OFFSET,
        stat: (first >> 32) as u32,
    }
}

/// The tunnels inside a tunnel, for XDP (global, see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_decap_xdp(ctx: *mut xdp_md, first: u64, barrier: u64) -> u64 {
    if ctx.is_null() {
        return 0;
    }
    let xdp = XdpContext::new(ctx);
    wire::tunnel::decapsulate_packed(&XdpPacket::new(&xdp), inner(first), barrier as usize)
}

/// The tunnels inside a tunnel, for TC (global, see [`pathwatch_dtls_xdp`]).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn pathwatch_decap_skb(skb: *mut __sk_buff, first: u64, barrier: u64) -> u64 {
    if skb.is_null() {
        return 0;
    }
    let tc = TcContext::new(skb);
    wire::tunnel::decapsulate_packed(&SkbPacket::new(&tc), inner(first), barrier as usize)
}
