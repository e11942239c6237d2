//! Link and network layers: Ethernet, up to two VLAN tags, PPPoE, IPv4, IPv6 and its
//! extension headers. Mirrors `agent-ebpf/src/parse.rs`.

use agent_common::{
    event::{IP_FLAG_DF, IP_FLAG_FRAGMENT, IP_FLAG_MF},
    proto::*,
};
use etherparse::{
    EtherType, Ethernet2HeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice, SingleVlanHeaderSlice,
};

use super::{L3, Parsed};

/// Ethernet, VLAN, PPPoE, then IP; `None` when there is no transport header to read.
pub(crate) fn parse_l2_l3(frame: &[u8], p: &mut Parsed) -> Option<L3> {
    let Ok(eth) = Ethernet2HeaderSlice::from_slice(frame) else {
        p.truncated = true;
        return None;
    };
    let mut ethertype = eth.ether_type();
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != EtherType::VLAN_TAGGED_FRAME && ethertype != EtherType::PROVIDER_BRIDGING {
            break;
        }
        let Ok(vlan) = SingleVlanHeaderSlice::from_slice(&frame[off..]) else {
            p.truncated = true;
            return None;
        };
        ethertype = vlan.ether_type();
        off += VLAN_HLEN;
        p.vlan_depth += 1;
    }
    if ethertype.0 == ETH_P_PPPOE_SESSION {
        // etherparse has no PPPoE: version/type, code, session, length, then the PPP
        // protocol field.
        let Some(ppp) = frame.get(off + 6..off + 8) else {
            p.truncated = true;
            return None;
        };
        ethertype = match u16::from_be_bytes([ppp[0], ppp[1]]) {
            PPP_IPV4 => EtherType::IPV4,
            PPP_IPV6 => EtherType::IPV6,
            _ => return None,
        };
        off += PPPOE_HLEN;
    }
    p.l3_off = off;
    match ethertype {
        EtherType::IPV4 => ipv4(frame, p, off),
        EtherType::IPV6 => ipv6(frame, p, off),
        _ => None,
    }
}

fn ipv4(frame: &[u8], p: &mut Parsed, off: usize) -> Option<L3> {
    // The kernel rejects a total length below the IHL before it asks for the options;
    // etherparse asks for the options first, and would call such a header truncated
    // when it is also cut inside its options.
    if let Some(h) = frame.get(off..off + 20) {
        let ihl = ((h[0] & 0x0f) as usize) * 4;
        if h[0] >> 4 == 4 && ihl >= 20 && (u16::from_be_bytes([h[2], h[3]]) as usize) < ihl {
            return None;
        }
    }
    let ip = match Ipv4HeaderSlice::from_slice(&frame[off..]) {
        Ok(ip) => ip,
        Err(etherparse::err::ipv4::HeaderSliceError::Len(_)) => {
            p.truncated = true;
            return None;
        }
        Err(_) => return None,
    };
    let ihl = ip.slice().len();
    let total = ip.total_len() as usize;
    if total < ihl {
        return None;
    }
    p.ip_version = 4;
    p.ip_len = total as u32;
    p.l4_proto = ip.protocol().0;
    if ip.dont_fragment() {
        p.ip_flags |= IP_FLAG_DF;
    }
    if ip.more_fragments() {
        p.ip_flags |= IP_FLAG_MF | IP_FLAG_FRAGMENT;
    }
    if ip.fragments_offset().value() != 0 {
        p.ip_flags |= IP_FLAG_FRAGMENT;
        return None;
    }
    let claimed_end = off + total;
    Some(L3 { l4_off: off + ihl, end: claimed_end.min(frame.len()), claimed_end })
}

fn ipv6(frame: &[u8], p: &mut Parsed, off: usize) -> Option<L3> {
    // As in the kernel, the version is checked once 8 bytes are there: a header that
    // is not IPv6 is not a truncated one (etherparse wants all 40 bytes first).
    if frame.len() >= off + 8 && frame[off] >> 4 != 6 {
        return None;
    }
    let ip = match Ipv6HeaderSlice::from_slice(&frame[off..]) {
        Ok(ip) => ip,
        Err(etherparse::err::ipv6::HeaderSliceError::Len(_)) => {
            p.truncated = true;
            return None;
        }
        Err(_) => return None,
    };
    let payload_len = ip.payload_length() as usize;
    p.ip_version = 6;
    p.ip_len = 40 + payload_len as u32;
    p.ip_flags |= IP_FLAG_DF;
    let claimed_end = if payload_len == 0 { frame.len() } else { off + 40 + payload_len };
    let end = claimed_end.min(frame.len());
    let mut next = ip.next_header().0;
    let mut l4 = off + 40;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_skippable_ext(next) {
            break;
        }
        if frame.len() < l4 + 8 {
            p.truncated = true;
            return None;
        }
        if next == IPPROTO_FRAGMENT {
            let frag = Ipv6FragmentHeaderSlice::from_slice(&frame[l4..]).ok()?;
            p.ip_flags |= IP_FLAG_FRAGMENT;
            if frag.more_fragments() {
                p.ip_flags |= IP_FLAG_MF;
            }
            if frag.fragment_offset().value() != 0 {
                p.l4_proto = frag.next_header().0;
                return None;
            }
            next = frag.next_header().0;
            l4 += 8;
        } else {
            // Hop-by-hop, routing, destination options: next header and length are
            // the first two bytes. As in the kernel, only those 8 bytes need be
            // present to step over the header; one cut later fails at the next step.
            next = frame[l4];
            l4 += (frame[l4 + 1] as usize + 1) * 8;
        }
        if l4 > MAX_PARSE_OFFSET {
            return None;
        }
    }
    p.l4_proto = next;
    if is_ipv6_skippable_ext(next) {
        return None;
    }
    Some(L3 { l4_off: l4, end, claimed_end })
}

/// Source and destination addresses, as the kernel copies them into events.
pub(crate) fn addresses(frame: &[u8], p: &Parsed) -> ([u8; 16], [u8; 16]) {
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    if p.ip_version == 4 {
        if let Some(a) = frame.get(p.l3_off + 12..p.l3_off + 20) {
            src[..4].copy_from_slice(&a[..4]);
            dst[..4].copy_from_slice(&a[4..]);
        }
    } else if let Some(a) = frame.get(p.l3_off + 8..p.l3_off + 40) {
        src.copy_from_slice(&a[..16]);
        dst.copy_from_slice(&a[16..]);
    }
    (src, dst)
}
