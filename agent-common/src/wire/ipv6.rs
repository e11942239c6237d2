//! IPv6: the fixed header, then a bounded chain of extension headers (hop-by-hop,
//! routing, fragment, destination options) to the transport header.

use super::{L3, Packet, Parsed, be16};
use crate::{
    event::{IP_FLAG_DF, IP_FLAG_FRAGMENT, IP_FLAG_MF},
    proto::{IPPROTO_FRAGMENT, MAX_IPV6_EXT_HEADERS, MAX_PARSE_OFFSET, is_ipv6_skippable_ext},
    stats,
};

/// Field offsets.
pub mod field {
    /// Version in the high nibble.
    pub const VERSION: usize = 0;
    /// Payload length (0 for a jumbogram).
    pub const PAYLOAD_LEN: usize = 4;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Source then destination address.
    pub const ADDRS: usize = 8;
    /// In an extension header: the next header.
    pub const EXT_NEXT_HEADER: usize = 0;
    /// In an extension header other than the fragment header: its length in 8-byte
    /// units, not counting the first.
    pub const EXT_LEN: usize = 1;
    /// In the fragment header: offset (13 bits), reserved (2), M (1).
    pub const FRAG_OFFSET_M: usize = 2;
}

/// The fixed header's length.
pub const HLEN: usize = 40;
/// The part of every extension header that is read.
const EXT_HLEN: usize = 8;

/// Reads the IPv6 header at `off` and its extension headers. `None` when it is not
/// IPv6, is cut (`p.truncated`), is a non-first fragment, or has more extension headers
/// than are walked.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<L3> {
    // The version is checked once 8 bytes are there: a header that is not IPv6 is
    // not a truncated one.
    let Some(hdr) = pkt.array_at::<8>(off) else {
        p.truncated = true;
        return None;
    };
    if hdr[field::VERSION] >> 4 != 6 {
        return None;
    }
    if pkt.array_at::<HLEN>(off).is_none() {
        p.truncated = true;
        return None;
    }
    let payload_len = be16(hdr, field::PAYLOAD_LEN) as usize;
    p.ip_version = 6;
    p.ip_len = HLEN as u32 + payload_len as u32;
    p.ip_flags |= IP_FLAG_DF;
    let len = pkt.wire_len();
    let claimed_end = if payload_len == 0 { len } else { off + HLEN + payload_len };
    let end = if claimed_end < len { claimed_end } else { len };
    let mut next = hdr[field::NEXT_HEADER];
    let mut l4 = off + HLEN;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        if !is_ipv6_skippable_ext(next) {
            break;
        }
        // Only these 8 bytes need be present to step over the header; one cut later
        // fails at the next step.
        let Some(ext) = pkt.array_at::<EXT_HLEN>(l4) else {
            p.truncated = true;
            return None;
        };
        if next == IPPROTO_FRAGMENT {
            let frag = be16(ext, field::FRAG_OFFSET_M);
            p.ip_flags |= IP_FLAG_FRAGMENT;
            if frag & 1 != 0 {
                p.ip_flags |= IP_FLAG_MF;
            }
            if frag >> 3 != 0 {
                p.l4_proto = ext[field::EXT_NEXT_HEADER];
                pkt.stat(stats::NON_FIRST_FRAGMENT);
                return None;
            }
            l4 += EXT_HLEN;
        } else {
            l4 += (ext[field::EXT_LEN] as usize + 1) * 8;
        }
        next = ext[field::EXT_NEXT_HEADER];
        if l4 > MAX_PARSE_OFFSET {
            return None;
        }
    }
    p.l4_proto = next;
    if is_ipv6_skippable_ext(next) {
        pkt.stat(stats::IPV6_EXT_LIMIT);
        return None;
    }
    Some(L3 { l4_off: l4, end, claimed_end })
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;
    use crate::proto::{IPPROTO_DSTOPTS, IPPROTO_HOPOPTS, IPPROTO_UDP};

    fn header(next: u8, payload_len: u16) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&payload_len.to_be_bytes());
        h.extend_from_slice(&[next, 64]);
        h.extend_from_slice(&[0xfd; 32]);
        h
    }

    fn ip(h: &[u8]) -> (Option<L3>, Parsed) {
        let mut p = Parsed::new();
        (parse(&h, &mut p, 0), p)
    }

    #[test]
    fn udp_after_hop_by_hop_and_destination_options() {
        let mut h = header(IPPROTO_HOPOPTS, 40);
        h.extend_from_slice(&[IPPROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&[IPPROTO_UDP, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        h.extend_from_slice(&[0; 16]);
        let (l3, p) = ip(&h);
        assert_eq!(l3, Some(L3 { l4_off: 64, end: 80, claimed_end: 80 }));
        assert_eq!((p.ip_version, p.ip_len, p.l4_proto, p.ip_flags), (6, 80, IPPROTO_UDP, IP_FLAG_DF));
    }

    #[test]
    fn fragment_header_first_and_later_fragments() {
        let mut h = header(IPPROTO_FRAGMENT, 16);
        h.extend_from_slice(&[IPPROTO_UDP, 0, 0, 1, 0, 0, 0, 7]);
        h.extend_from_slice(&[0; 8]);
        let (l3, p) = ip(&h);
        assert_eq!(l3.map(|l| l.l4_off), Some(48));
        assert_eq!(p.ip_flags, IP_FLAG_DF | IP_FLAG_FRAGMENT | IP_FLAG_MF);
        h[42..44].copy_from_slice(&[0, 0x10]);
        let (l3, p) = ip(&h);
        assert_eq!((l3, p.l4_proto, p.truncated), (None, IPPROTO_UDP, false));
    }

    #[test]
    fn jumbogram_ends_with_the_packet_and_chains_past_the_limit_stop() {
        let mut h = header(IPPROTO_UDP, 0);
        h.extend_from_slice(&[0; 8]);
        assert_eq!(ip(&h).0, Some(L3 { l4_off: 40, end: 48, claimed_end: 48 }));
        let mut h = header(IPPROTO_DSTOPTS, 64);
        for _ in 0..MAX_IPV6_EXT_HEADERS {
            h.extend_from_slice(&[IPPROTO_DSTOPTS, 0, 0, 0, 0, 0, 0, 0]);
        }
        h.extend_from_slice(&[0; 16]);
        assert_eq!(ip(&h).0, None);
    }

    #[test]
    fn cut_headers_are_truncated_other_versions_are_not() {
        let h = header(IPPROTO_UDP, 0);
        assert!(ip(&h[..39]).1.truncated);
        assert!(ip(&h[..7]).1.truncated);
        let mut v4 = h.clone();
        v4[0] = 0x45;
        assert!(!ip(&v4[..20]).1.truncated);
        let mut h = header(IPPROTO_HOPOPTS, 8);
        h.extend_from_slice(&[IPPROTO_UDP, 0, 0]);
        assert!(ip(&h).1.truncated);
    }
}
