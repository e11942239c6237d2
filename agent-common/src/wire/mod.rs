//! The header walk, written once for the kernel programs and for replay.
//!
//! [`walk`] reads Ethernet (with VLAN tags, PPPoE, MPLS), IPv4 or IPv6, then UDP, TCP or
//! ICMP, and decides the packet's class, whether it becomes an event, and where the
//! event's bytes are; the most common shape takes a shorter way ([`fast`]). A tunnel (GRE, ERSPAN, IP in IP, VXLAN, Geneve; [`tunnel`]) is
//! decapsulated by walking the link and IP layers again from where its payload
//! starts, up to [`MAX_TUNNEL_DEPTH`] times: the innermost packet is the one classified. It is generic over [`Packet`], the few ways of reading bytes it
//! needs: `agent-ebpf` implements it for the XDP and TC contexts (bounds checks the
//! verifier understands, helper-based copies), and a plain `&[u8]` implements it here
//! for replay and the tests. The layout follows xdp-tools' `parsing_helpers.h` (one
//! small function per layer, returning what the next layer needs) and smoltcp's
//! `wire/` (one protocol a file, its field offsets named, byte-literal tests beside it).
//!
//! The code runs in the kernel, so it keeps the verifier's rules: no panicking index,
//! every loop bounded by a named constant, offsets masked with
//! [`MAX_PARSE_OFFSET`](crate::proto::MAX_PARSE_OFFSET) where they grow, and
//! `#[inline(always)]` everywhere the kernel's cost is measured.

pub mod capwap;
pub mod dtls;
pub mod erspan;
pub mod ethernet;
pub mod fast;
pub mod geneve;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod record;
pub mod tcp;
pub mod tls;
pub mod tunnel;
pub mod udp;
pub mod vxlan;

use crate::{
    Class, FlowState, KernelConfig,
    event::{EventKind, IP_FLAG_DF, SNAP_MEDIUM},
    proto::{
        ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ETH_P_MPLS_MC, ETH_P_MPLS_UC, ETH_P_TEB, ICMP_HLEN,
        IPPROTO_GRE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_TCP, IPPROTO_UDP,
        MAX_PARSE_OFFSET,
    },
    stats,
};

/// The bytes of one packet, as the walk reads them.
///
/// Every read is bounds-checked and returns `None` past what can be read. The kernel
/// overrides the methods whose default would not pass the verifier, or would cost
/// more than a separately verified function.
pub trait Packet {
    /// The packet's length as the hook sees it (XDP: the linear frame; TC: `skb->len`).
    fn wire_len(&self) -> usize;
    /// How many bytes from the start can be read directly (the linear data).
    fn readable_len(&self) -> usize;
    /// The `N` bytes at `off`, if all of them can be read.
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]>;
    /// Copies `len` (at most `N`) bytes at `off` into `dst`; false on failure. Unlike
    /// [`array_at`](Packet::array_at) it reaches bytes beyond the linear data.
    fn load<const N: usize>(&self, off: usize, dst: &mut [u8; N], len: u32) -> bool;

    /// Whether the first `off` bytes can all be read directly.
    #[inline(always)]
    fn has(&self, off: usize) -> bool {
        off <= self.readable_len()
    }
    /// The byte at `off`.
    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.array_at::<1>(off).map(|b| b[0])
    }
    /// The big-endian `u16` at `off`.
    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.array_at::<2>(off).map(|b| be16(b, 0))
    }
    /// The big-endian `u32` at `off`.
    #[inline(always)]
    fn be32_at(&self, off: usize) -> Option<u32> {
        self.array_at::<4>(off).map(|b| be32(b, 0))
    }
    /// Whether this hook reports events for the packet (the kernel's TC egress hook
    /// leaves forwarded packets to XDP ingress). Only a hook that reports a packet
    /// tracks its flow.
    #[inline(always)]
    fn raises_events(&self) -> bool {
        true
    }
    /// Counts one of [`crate::stats`] (why the walk stopped early); nothing by default.
    #[inline(always)]
    fn stat(&self, _index: u32) {}
    /// [`dtls::walk_packed`]; the kernel runs it in a separately verified function.
    #[inline(always)]
    fn dtls_walk(&self, payload_off: usize, end: usize, claimed_end: usize) -> u64
    where
        Self: Sized,
    {
        dtls::walk_packed(self, payload_off, end, claimed_end)
    }
    /// [`tunnel::decapsulate_packed`]; the kernel runs it in a separately verified function.
    #[inline(always)]
    fn decapsulate(&self, first: Inner, barrier: usize) -> u64
    where
        Self: Sized,
    {
        tunnel::decapsulate_packed(self, first, barrier)
    }
    /// [`tcp::mss_option`]; the kernel runs it in a separately verified function.
    #[inline(always)]
    fn mss_option(&self, off: usize, end: usize) -> u16
    where
        Self: Sized,
    {
        tcp::mss_option(self, off, end)
    }
}

/// A frame in memory (replay, tests): everything is readable.
impl Packet for &[u8] {
    #[inline]
    fn wire_len(&self) -> usize {
        self.len()
    }
    #[inline]
    fn readable_len(&self) -> usize {
        self.len()
    }
    #[inline]
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.get(off..)?.first_chunk::<N>()
    }
    #[inline]
    fn load<const N: usize>(&self, off: usize, dst: &mut [u8; N], len: u32) -> bool {
        let len = len as usize;
        match (dst.get_mut(..len), self.get(off..).and_then(|s| s.get(..len))) {
            (Some(d), Some(s)) => {
                d.copy_from_slice(s);
                true
            }
            _ => false,
        }
    }
}

/// The flow cache the walk asks about large DF TCP segments (the kernel's `FLOWS`
/// array, replay's `FlowTable`), both of [`crate::flow::FlowSet`]s.
pub trait LargeSegments {
    /// Accounts the segment `[seq, seq + len)` of the flow tagged `tag`
    /// ([`crate::flow::flow_tag`]) in set `set` ([`crate::flow::flow_set_index`]),
    /// inserting the flow when new; the flow's state when the segment is a
    /// retransmission.
    fn on_large_segment(&mut self, set: u32, tag: u64, seq: u32, len: u16) -> Option<FlowState>;
}

/// What the walk found: only what the packet path needs, so that a packet that raises
/// no event costs as little as possible. The event's other fields (ports, TCP and ICMP
/// fields, addresses) are read from the packet again by whoever writes the event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    /// The packet's class.
    pub class: Class,
    /// [`EventKind`] as `u8`, 0 for none.
    pub event: u8,
    /// A header ended before the packet said it would.
    pub truncated: bool,
    /// VLAN tags in front of the IP header (of the innermost Ethernet frame).
    pub vlan_depth: u8,
    /// Encapsulations decapsulated in front of the packet classified (MPLS not counted).
    pub tunnels: u8,
    /// 4 or 6; 0 before the IP header.
    pub ip_version: u8,
    /// The transport protocol (after IPv6 extension headers).
    pub l4_proto: u8,
    /// `IP_FLAG_*` bits.
    pub ip_flags: u8,
    /// IP length as the header claims it.
    pub ip_len: u32,
    /// IP header offset.
    pub l3_off: usize,
    /// Transport header offset.
    pub l4_off: usize,
    /// Transport payload (UDP: bounded by the UDP length; ICMP: after the 8-byte header).
    pub payload_off: usize,
    /// End of the transport payload present in the packet.
    pub payload_end: usize,
    /// What the event needs that was costly to find: the packed DTLS walk
    /// ([`dtls::walk_packed`]), the TLS handshake type, the SYN's MSS, or a
    /// retransmission's `seg_len | largest_acked << 16 | retransmits << 32`.
    pub extra: u64,
}

impl Parsed {
    /// Nothing found yet: class `Other`, no event.
    #[inline(always)]
    pub const fn new() -> Parsed {
        Parsed {
            class: Class::Other,
            event: 0,
            truncated: false,
            vlan_depth: 0,
            tunnels: 0,
            ip_version: 0,
            l4_proto: 0,
            ip_flags: 0,
            ip_len: 0,
            l3_off: 0,
            l4_off: 0,
            payload_off: 0,
            payload_end: 0,
            extra: 0,
        }
    }

    /// A packet no protocol rule classified becomes `large_df` when it is large with DF
    /// set (`KernelConfig::is_large`): the one place of that rule for every walk.
    #[inline(always)]
    pub fn large_df_if_unclassified(&mut self, cfg: &KernelConfig) {
        if self.class as u8 == Class::Other as u8 && cfg.is_large(self.ip_len, self.ip_flags & IP_FLAG_DF != 0) {
            self.class = Class::LargeDf;
        }
    }

    /// Where the event's snap starts and ends in the packet: the ICMP message with its
    /// header (for a packet-too-big signal, only its first [`SNAP_MEDIUM`] bytes: the
    /// quoted IP and transport headers are all the detectors read of it), nothing for
    /// the TCP kinds, the payload otherwise.
    #[inline(always)]
    pub fn snap(&self) -> (usize, usize) {
        let kind = self.event;
        if kind == EventKind::IcmpError as u8 {
            let start = self.payload_off.saturating_sub(ICMP_HLEN);
            let end = if icmp::is_pmtu(self) && self.payload_end > start + SNAP_MEDIUM {
                start + SNAP_MEDIUM
            } else {
                self.payload_end
            };
            (start, end)
        } else if kind == EventKind::TcpSyn as u8
            || kind == EventKind::TcpLargeRetransmit as u8
            || kind == EventKind::TcpFin as u8
        {
            (0, 0)
        } else {
            (self.payload_off, self.payload_end)
        }
    }
}

impl Parsed {
    /// Forgets the outer packet's network layer: the next pass reads the packet inside
    /// `tunnels` encapsulations.
    #[inline(always)]
    fn decapsulated(&mut self, tunnels: u8) {
        self.tunnels = tunnels;
        self.vlan_depth = 0;
        self.ip_version = 0;
        self.l4_proto = 0;
        self.ip_flags = 0;
        self.ip_len = 0;
    }
}

impl Default for Parsed {
    fn default() -> Parsed {
        Parsed::new()
    }
}

/// Where the IP layer left off: what the transport layer needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L3 {
    /// Transport header offset.
    pub l4_off: usize,
    /// End of the IP packet, bounded by the packet's length.
    pub end: usize,
    /// End of the IP packet as the header claims it.
    pub claimed_end: usize,
}

/// Where a network layer starts: the frame itself, or a tunnel's payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inner {
    /// What starts at `off`: an EtherType, [`ETH_P_TEB`] for an Ethernet frame.
    pub ethertype: u16,
    /// Its offset in the packet.
    pub off: usize,
    /// The [`stats`] counter of the encapsulation that carried it.
    pub stat: u32,
}

impl Inner {
    /// The packet itself: an Ethernet frame at 0.
    pub const FRAME: Inner = Inner { ethertype: ETH_P_TEB, off: 0, stat: 0 };
}

/// Walks the headers of `pkt`: the class, the event if any, and where its bytes are.
/// Large DF TCP segments are looked up in `flows`. The common shape (untagged
/// Ethernet, plain IPv4, TCP or UDP) is read by [`fast::walk`], everything else by
/// [`walk_full`]; both give the same answer.
#[inline(always)]
pub fn walk<P: Packet, F: LargeSegments>(pkt: &P, cfg: &KernelConfig, flows: &mut F) -> Parsed {
    if let Some(p) = fast::walk(pkt, cfg, flows) {
        return p;
    }
    walk_full(pkt, cfg, flows)
}

/// [`walk`] without its fast path: every shape, layer by layer.
#[inline(always)]
pub fn walk_full<P: Packet, F: LargeSegments>(pkt: &P, cfg: &KernelConfig, flows: &mut F) -> Parsed {
    let mut p = Parsed::new();
    let barrier = cfg.verifier_barrier as usize;
    if let Some(outer) = l2_l3(pkt, &mut p, Inner::FRAME, barrier) {
        let l3 = behind_barrier(&mut p, outer, barrier);
        if let Some(inner) = transport(pkt, cfg, flows, &mut p, &l3) {
            // The encapsulations inside are followed in a function the kernel verifies
            // on its own (`Packet::decapsulate`); the innermost packet is walked here.
            pkt.stat(inner.stat);
            let (at, tunnels) = tunnel::unpack(pkt.decapsulate(inner, barrier));
            p.decapsulated(tunnels);
            if let Some(innermost) = l2_l3(pkt, &mut p, at, barrier) {
                let l3 = behind_barrier(&mut p, innermost, barrier);
                if transport(pkt, cfg, flows, &mut p, &l3).is_some() {
                    pkt.stat(stats::TUNNEL_DEPTH_LIMIT);
                    p.class = Class::Other;
                    return p;
                }
            }
        }
    }
    p.large_df_if_unclassified(cfg);
    p
}

/// The transport layer after `l3`, or the encapsulated packet found there instead
/// (tested on the IP protocol and UDP port the walk branches on anyway).
#[inline(always)]
fn transport<P: Packet, F: LargeSegments>(
    pkt: &P,
    cfg: &KernelConfig,
    flows: &mut F,
    p: &mut Parsed,
    l3: &L3,
) -> Option<Inner> {
    match p.l4_proto {
        IPPROTO_UDP => return udp::parse(pkt, cfg, p, l3),
        IPPROTO_TCP => tcp::parse(pkt, cfg, flows, p, l3),
        IPPROTO_ICMP if p.ip_version == 4 => icmp::parse(pkt, p, l3),
        IPPROTO_ICMPV6 if p.ip_version == 6 => icmp::parse(pkt, p, l3),
        IPPROTO_GRE => return gre::parse(pkt, p, l3),
        IPPROTO_IPIP | IPPROTO_IPV6 => return Some(tunnel::ip_in_ip(p, l3)),
        _ => {}
    }
    None
}

/// `l3` and `p`'s offsets as the verifier sees them past
/// [`KernelConfig::verifier_barrier`] (0 at run time): what follows the IP header (a
/// tunnel's header, the transport layer) is verified once, not once per
/// VLAN/PPPoE/MPLS/IPv4-options/IPv6-extension variant.
#[inline(always)]
pub(super) fn behind_barrier(p: &mut Parsed, mut l3: L3, barrier: usize) -> L3 {
    p.l3_off = (p.l3_off + barrier) & MAX_PARSE_OFFSET;
    l3.l4_off = (l3.l4_off + barrier) & MAX_PARSE_OFFSET;
    l3.end += barrier;
    l3.claimed_end += barrier;
    p.l4_off = l3.l4_off;
    l3
}

/// Ethernet, VLAN, PPPoE, MPLS, then IP, from `at` (`barrier`: see `behind_barrier`). `None` when there is no transport
/// header to read (non-IP, truncated, non-first fragment); the class is then settled
/// already.
#[inline(always)]
fn l2_l3<P: Packet>(pkt: &P, p: &mut Parsed, at: Inner, barrier: usize) -> Option<L3> {
    let (mut ethertype, mut off) = (at.ethertype, at.off);
    if ethertype == ETH_P_TEB {
        let l2 = ethernet::parse(pkt, p, off)?;
        (ethertype, off) = (l2.ethertype, l2.l3_off);
    }
    p.l3_off = off;
    match ethertype {
        ETH_P_IPV4 => ipv4::parse(pkt, p, off),
        ETH_P_IPV6 => ipv6::parse(pkt, p, off),
        // Tested after IP, so that IP pays nothing for it. The IP layer after the
        // labels is verified once, whatever their number (see `behind_barrier`).
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => {
            let l2 = mpls::parse(pkt, p, off)?;
            let off = (l2.l3_off + barrier) & MAX_PARSE_OFFSET;
            p.l3_off = off;
            if l2.ethertype == ETH_P_IPV4 { ipv4::parse(pkt, p, off) } else { ipv6::parse(pkt, p, off) }
        }
        ETH_P_8021Q | ETH_P_8021AD => {
            pkt.stat(stats::UNSUPPORTED_L2);
            None
        }
        _ => None,
    }
}

/// The source and destination addresses as four 64-bit words in memory order, IPv4 in
/// the first four bytes of each address and the rest zero: the layout of `FlowKey` and
/// `EventHeader`. Read as one load a word in the kernel.
#[inline(always)]
pub fn addr_words<P: Packet>(pkt: &P, p: &Parsed) -> Option<[u64; 4]> {
    let l3 = p.l3_off & MAX_PARSE_OFFSET;
    if p.ip_version == 4 {
        let a = pkt.array_at::<8>(l3 + ipv4::field::ADDRS)?;
        Some([u64::from(native::<u32, 8>(a, 0)), 0, u64::from(native::<u32, 8>(a, 4)), 0])
    } else {
        let a = pkt.array_at::<32>(l3 + ipv6::field::ADDRS)?;
        Some([native(a, 0), native(a, 8), native(a, 16), native(a, 24)])
    }
}

/// The `T` at `b[at..]` in memory order, 0 when it does not fit (`at` is a constant
/// wherever the walk calls this, so the test folds away).
///
/// In the kernel it is one load of the full width: header fields need not be aligned,
/// but BPF has no alignment traps where pathwatch runs (the verifier allows the access
/// where the CPU does), and an aligned-typed load keeps LLVM from splitting it into
/// byte loads.
#[inline(always)]
pub fn native<T: Copy + Default, const N: usize>(b: &[u8; N], at: usize) -> T {
    if at + core::mem::size_of::<T>() > N {
        return T::default();
    }
    let p = b.as_ptr().wrapping_add(at) as *const T;
    #[cfg(target_arch = "bpf")]
    // SAFETY: in bounds (checked above); unaligned loads are allowed on BPF (see above).
    return unsafe { core::ptr::read(p) };
    #[cfg(not(target_arch = "bpf"))]
    // SAFETY: in bounds (checked above).
    unsafe {
        core::ptr::read_unaligned(p)
    }
}

/// The big-endian `u16` at `b[at..at + 2]`, as one load in the kernel (see [`native`]).
#[inline(always)]
pub fn be16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_be(native(b, at))
}

/// The big-endian `u32` at `b[at..at + 4]`, as one load in the kernel (see [`native`]).
#[inline(always)]
pub fn be32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_be(native(b, at))
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

#[cfg(test)]
mod tests;
