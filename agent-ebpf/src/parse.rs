//! The header walk: Ethernet, up to two VLAN tags, PPPoE, IPv4 or IPv6 (with a bounded
//! extension-header chain), then UDP, TCP or ICMP. It decides the packet's class and
//! whether it becomes an event, and records where the event's bytes are.
//!
//! Every read is bounds-checked against the end of the linear data; a packet that ends
//! early keeps the class decided so far and is marked `truncated`.

use agent_common::{
    Class, EventKind, KernelConfig,
    event::{IP_FLAG_DF, IP_FLAG_FRAGMENT, IP_FLAG_MF},
    proto::*,
    stats,
};

use crate::{
    maps::stat,
    packet::{Packet, be16},
    tcp,
};

/// The result of the header walk: only what the packet path needs, so that a packet
/// that raises no event costs as little as possible. The event writer reads the rest
/// (ports, TCP and ICMP fields) from the packet again, off the common path.
pub struct Parsed {
    pub class: Class,
    /// `EventKind as u8`, 0 for none.
    pub event: u8,
    pub truncated: bool,
    pub vlan_depth: u8,
    pub ip_version: u8,
    pub l4_proto: u8,
    pub ip_flags: u8,
    pub ip_len: u32,
    pub l3_off: usize,
    pub l4_off: usize,
    /// Transport payload (UDP: bounded by the UDP length; ICMP: after the 8-byte header).
    pub payload_off: usize,
    pub payload_end: usize,
    /// What the event needs that was costly to find: the packed DTLS walk
    /// (`dtls::walk_packed`), the TLS handshake type, the SYN's MSS, or a
    /// retransmission's `seg_len | largest_acked << 16 | retransmits << 32`.
    pub extra: u64,
}

impl Parsed {
    #[inline(always)]
    pub const fn new() -> Parsed {
        Parsed {
            class: Class::Other,
            event: 0,
            truncated: false,
            vlan_depth: 0,
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
}

/// Where the IP layer left off.
struct L3 {
    /// Transport header offset.
    l4_off: usize,
    /// End of the IP packet, bounded by the linear data.
    end: usize,
    /// End of the IP packet as the header claims it.
    claimed_end: usize,
}

/// Walks the headers of `pkt`.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, cfg: &KernelConfig) -> Parsed {
    let mut p = Parsed::new();
    if let Some(mut l3) = parse_l2_l3(pkt, &mut p) {
        // From here on the verifier sees offsets it cannot know (see
        // `KernelConfig::verifier_barrier`): the transport layer is verified once, not
        // once per VLAN/PPPoE/IPv4-options/IPv6-extension variant.
        let barrier = cfg.verifier_barrier as usize;
        p.l3_off = (p.l3_off + barrier) & MAX_PARSE_OFFSET;
        l3.l4_off = (l3.l4_off + barrier) & MAX_PARSE_OFFSET;
        l3.end += barrier;
        l3.claimed_end += barrier;
        p.l4_off = l3.l4_off;
        match p.l4_proto {
            IPPROTO_UDP => parse_udp(pkt, cfg, &mut p, &l3),
            IPPROTO_TCP => tcp::parse_tcp(pkt, cfg, &mut p, l3.l4_off, l3.end, l3.claimed_end),
            IPPROTO_ICMP if p.ip_version == 4 => parse_icmp(pkt, &mut p, &l3),
            IPPROTO_ICMPV6 if p.ip_version == 6 => parse_icmp(pkt, &mut p, &l3),
            _ => {}
        }
    }
    if p.class as u8 == Class::Other as u8 && cfg.is_large(p.ip_len, p.ip_flags & IP_FLAG_DF != 0) {
        p.class = Class::LargeDf;
    }
    p
}

/// Ethernet, VLAN, PPPoE, then IP. `None` when there is no transport header to read
/// (non-IP, truncated, non-first fragment); the class is then settled already.
#[inline(always)]
fn parse_l2_l3<P: Packet>(pkt: &P, p: &mut Parsed) -> Option<L3> {
    let Some(mut ethertype) = pkt.be16_at(12) else {
        p.truncated = true;
        return None;
    };
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(next) = pkt.be16_at(off + 2) else {
            p.truncated = true;
            return None;
        };
        ethertype = next;
        off += VLAN_HLEN;
        p.vlan_depth += 1;
    }
    if ethertype == ETH_P_PPPOE_SESSION {
        let Some(ppp) = pkt.be16_at(off + 6) else {
            p.truncated = true;
            return None;
        };
        ethertype = match ppp {
            PPP_IPV4 => ETH_P_IPV4,
            PPP_IPV6 => ETH_P_IPV6,
            _ => return None,
        };
        off += PPPOE_HLEN;
    }
    p.l3_off = off;
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(pkt, p, off),
        ETH_P_IPV6 => parse_ipv6(pkt, p, off),
        ETH_P_8021Q | ETH_P_8021AD => {
            stat(stats::UNSUPPORTED_L2);
            None
        }
        _ => None,
    }
}

#[inline(always)]
fn parse_ipv4<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<L3> {
    let Some(hdr) = pkt.ptr_at::<[u8; 20]>(off) else {
        p.truncated = true;
        return None;
    };
    let hdr: *const u8 = hdr.cast();
    let vihl = unsafe { *hdr };
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = ((vihl & 0x0f) as usize) * 4;
    let total = unsafe { be16(hdr, 2) } as usize;
    if ihl < 20 || total < ihl {
        return None;
    }
    if !pkt.has(off + ihl) {
        p.truncated = true;
        return None;
    }
    p.ip_version = 4;
    p.ip_len = total as u32;
    p.l4_proto = unsafe { *hdr.add(9) };
    let frag = unsafe { be16(hdr, 6) };
    if frag & 0x4000 != 0 {
        p.ip_flags |= IP_FLAG_DF;
    }
    if frag & 0x2000 != 0 {
        p.ip_flags |= IP_FLAG_MF | IP_FLAG_FRAGMENT;
    }
    if frag & 0x1fff != 0 {
        p.ip_flags |= IP_FLAG_FRAGMENT;
        stat(stats::NON_FIRST_FRAGMENT);
        return None;
    }
    let len = pkt.len();
    let claimed_end = off + total;
    let end = if claimed_end < len { claimed_end } else { len };
    Some(L3 { l4_off: off + ihl, end, claimed_end })
}

#[inline(always)]
fn parse_ipv6<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<L3> {
    let Some(hdr) = pkt.ptr_at::<[u8; 8]>(off) else {
        p.truncated = true;
        return None;
    };
    let hdr: *const u8 = hdr.cast();
    if unsafe { *hdr } >> 4 != 6 {
        return None;
    }
    if pkt.ptr_at::<[u8; 40]>(off).is_none() {
        p.truncated = true;
        return None;
    }
    let payload_len = unsafe { be16(hdr, 4) } as usize;
    p.ip_version = 6;
    p.ip_len = 40 + payload_len as u32;
    p.ip_flags |= IP_FLAG_DF;
    let len = pkt.len();
    let claimed_end = if payload_len == 0 { len } else { off + 40 + payload_len };
    let end = if claimed_end < len { claimed_end } else { len };
    let mut next = unsafe { *hdr.add(6) };
    let mut l4 = off + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_skippable_ext(next) {
            break;
        }
        let Some(ext) = pkt.ptr_at::<[u8; 8]>(l4) else {
            p.truncated = true;
            return None;
        };
        let ext = unsafe { *ext };
        if next == IPPROTO_FRAGMENT {
            let frag = u16::from_be_bytes([ext[2], ext[3]]);
            p.ip_flags |= IP_FLAG_FRAGMENT;
            if frag & 1 != 0 {
                p.ip_flags |= IP_FLAG_MF;
            }
            if frag >> 3 != 0 {
                p.l4_proto = ext[0];
                stat(stats::NON_FIRST_FRAGMENT);
                return None;
            }
            l4 += 8;
        } else {
            l4 += (ext[1] as usize + 1) * 8;
        }
        next = ext[0];
        if l4 > MAX_PARSE_OFFSET {
            return None;
        }
    }
    p.l4_proto = next;
    if is_ipv6_skippable_ext(next) {
        stat(stats::IPV6_EXT_LIMIT);
        return None;
    }
    Some(L3 { l4_off: l4, end, claimed_end })
}

#[inline(always)]
fn parse_udp<P: Packet>(pkt: &P, cfg: &KernelConfig, p: &mut Parsed, l3: &L3) {
    let Some(hdr) = pkt.ptr_at::<[u8; 8]>(l3.l4_off) else {
        p.truncated = true;
        return;
    };
    if l3.l4_off + 8 > l3.end {
        p.truncated = true;
        return;
    }
    let hdr: *const u8 = hdr.cast();
    let (src_port, dst_port, udp_len) = unsafe { (be16(hdr, 0), be16(hdr, 2), be16(hdr, 4) as usize) };
    let payload_off = l3.l4_off + 8;
    // The UDP length bounds the payload; a length below 8 leaves none.
    let claimed_end = if udp_len < 8 { payload_off } else { l3.l4_off + udp_len };
    let payload_end = if claimed_end < l3.end { claimed_end } else { l3.end };
    p.payload_off = payload_off;
    p.payload_end = if payload_end > payload_off { payload_end } else { payload_off };
    if cfg.is_dns_port(src_port) || cfg.is_dns_port(dst_port) {
        p.class = Class::Dns;
        if p.payload_end - payload_off >= DNS_MIN_LEN {
            p.event = EventKind::Dns as u8;
        }
        return;
    }
    // What the record walk would find, without calling it for the two common cases:
    // a payload whose first bytes are no DTLS record header (most UDP), and a single
    // record of application data (or anything but a cleartext handshake) that fills
    // the datagram (DTLS bulk traffic).
    if payload_off + DTLS_RECORD_HLEN > payload_end {
        return;
    }
    let Some(rec) = pkt.ptr_at::<[u8; DTLS_RECORD_HLEN]>(payload_off) else {
        return;
    };
    let rec: *const u8 = rec.cast();
    let (ct, version, epoch, rec_len) = unsafe { (*rec, be16(rec, 1), be16(rec, 3), be16(rec, 11) as usize) };
    if !is_dtls_content_type(ct) || !is_dtls_version(version) {
        return;
    }
    let walk = if (ct != CT_HANDSHAKE || epoch != 0) && payload_off + DTLS_RECORD_HLEN + rec_len == claimed_end {
        1 | (1u64 << (ct - 20)) << 8 | (version as u64) << 16
    } else {
        pkt.dtls_walk(payload_off as u64, payload_end as u64, claimed_end as u64)
    };
    if walk != 0 {
        p.class = Class::Dtls;
        p.extra = walk;
        if dtls_content_is_evented(((walk >> 8) & 0xff) as u8) {
            p.event = EventKind::Dtls as u8;
        }
    }
}

#[inline(always)]
fn parse_icmp<P: Packet>(pkt: &P, p: &mut Parsed, l3: &L3) {
    let Some(hdr) = pkt.ptr_at::<[u8; ICMP_HLEN]>(l3.l4_off) else {
        p.truncated = true;
        return;
    };
    if l3.l4_off + ICMP_HLEN > l3.end {
        p.truncated = true;
        return;
    }
    let hdr = unsafe { *hdr };
    let is_error = if p.ip_version == 4 { is_icmpv4_error(hdr[0]) } else { is_icmpv6_error(hdr[0]) };
    if !is_error {
        return;
    }
    p.class = Class::IcmpError;
    p.event = EventKind::IcmpError as u8;
    p.payload_off = l3.l4_off + ICMP_HLEN;
    p.payload_end = l3.end;
}
