//! GRE (RFC 2784, with RFC 2890's key and sequence number): the optional fields
//! stepped over, then IPv4, IPv6, Ethernet (transparent Ethernet bridging, NVGRE),
//! MPLS, or ERSPAN ([`super::erspan`]) inside. PPTP's enhanced GRE (version 1, RFC
//! 2637) is followed through its PPP header to IPv4 or IPv6.

use super::{Inner, L3, Packet, Parsed, be16, erspan};
use crate::{
    proto::{
        ETH_P_ERSPAN, ETH_P_ERSPAN3, ETH_P_IPV4, ETH_P_IPV6, ETH_P_MPLS_MC, ETH_P_MPLS_UC, ETH_P_TEB, PPP_IPV4,
        PPP_IPV6,
    },
    stats,
};

/// Field offsets and bits.
pub mod field {
    /// Flags (C, R, K, S, ...) and version (the low 3 bits).
    pub const FLAGS_VERSION: usize = 0;
    /// The payload's EtherType.
    pub const PROTOCOL: usize = 2;
    /// A checksum (and reserved word) follows.
    pub const CHECKSUM: u16 = 0x8000;
    /// RFC 1701 source routing: not followed.
    pub const ROUTING: u16 = 0x4000;
    /// A key follows.
    pub const KEY: u16 = 0x2000;
    /// A sequence number follows.
    pub const SEQUENCE: u16 = 0x1000;
    /// Version: 0 is GRE, 1 PPTP's enhanced GRE (PPP inside).
    pub const VERSION: u16 = 0x0007;
    /// Enhanced GRE: an acknowledgment number follows (after the sequence number).
    pub const ACK: u16 = 0x0080;
}

/// Enhanced GRE's version.
const VERSION_PPTP: u16 = 1;
/// Enhanced GRE's protocol: PPP.
const PROTO_PPP: u16 = 0x880b;
/// PPP's address and control bytes, when not compressed away.
const PPP_ADDRESS_CONTROL: [u8; 2] = [0xff, 0x03];

/// The fixed header's length.
pub const HLEN: usize = 4;
/// Each optional field (checksum + reserved, key, sequence number).
const OPTION_LEN: usize = 4;

/// Reads the GRE header at `l3.l4_off`: its payload, or [`None`] for GRE
/// that is not followed (a version or payload this walk does not read).
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, l3: &L3) -> Option<Inner> {
    let Some(hdr) = pkt.array_at::<HLEN>(l3.l4_off) else {
        p.truncated = true;
        return None;
    };
    let flags = be16(hdr, field::FLAGS_VERSION);
    if flags & field::VERSION == VERSION_PPTP && be16(hdr, field::PROTOCOL) == PROTO_PPP {
        return pptp(pkt, flags, l3.l4_off + HLEN);
    }
    if flags & (field::ROUTING | field::VERSION) != 0 {
        return None;
    }
    let mut off = l3.l4_off + HLEN;
    if flags & field::CHECKSUM != 0 {
        off += OPTION_LEN;
    }
    if flags & field::KEY != 0 {
        off += OPTION_LEN;
    }
    if flags & field::SEQUENCE != 0 {
        off += OPTION_LEN;
    }
    match be16(hdr, field::PROTOCOL) {
        ETH_P_IPV4 => Some(Inner { ethertype: ETH_P_IPV4, off, stat: stats::ENCAP_GRE }),
        ETH_P_IPV6 => Some(Inner { ethertype: ETH_P_IPV6, off, stat: stats::ENCAP_GRE }),
        ETH_P_TEB => Some(Inner { ethertype: ETH_P_TEB, off, stat: stats::ENCAP_GRE }),
        ETH_P_MPLS_UC | ETH_P_MPLS_MC => Some(Inner { ethertype: ETH_P_MPLS_UC, off, stat: stats::ENCAP_GRE }),
        // Type I has no ERSPAN header, and GRE no sequence number (how tshark tells it).
        ETH_P_ERSPAN if flags & field::SEQUENCE == 0 => {
            Some(Inner { ethertype: ETH_P_TEB, off, stat: stats::ENCAP_ERSPAN })
        }
        ETH_P_ERSPAN => erspan::type2(pkt, p, off),
        ETH_P_ERSPAN3 => erspan::type3(pkt, p, off),
        _ => None,
    }
}

/// Enhanced GRE after its fixed header at `off`: the key (payload length and call
/// id), the sequence and acknowledgment numbers when present, then PPP (address and
/// control optional, the protocol field compressed or not) carrying IPv4 or IPv6. An
/// acknowledgment alone carries nothing.
#[inline(always)]
fn pptp<P: Packet>(pkt: &P, flags: u16, off: usize) -> Option<Inner> {
    let mut off = off + OPTION_LEN;
    if flags & field::SEQUENCE != 0 {
        off += OPTION_LEN;
    }
    if flags & field::ACK != 0 {
        off += OPTION_LEN;
    }
    let mut ppp = pkt.array_at::<4>(off)?;
    if ppp[..2] == PPP_ADDRESS_CONTROL {
        off += 2;
        ppp = pkt.array_at::<4>(off)?;
    }
    // A protocol field with its low bit set is one byte (compressed).
    let (proto, len) = if ppp[0] & 1 != 0 { (ppp[0] as u16, 1) } else { (be16(ppp, 0), 2) };
    let ethertype = match proto {
        PPP_IPV4 => ETH_P_IPV4,
        PPP_IPV6 => ETH_P_IPV6,
        _ => return None,
    };
    Some(Inner { ethertype, off: off + len, stat: stats::ENCAP_GRE })
}

#[cfg(test)]
mod tests {
    use std::vec::Vec;

    use super::*;

    fn gre(b: &[u8]) -> (Option<Inner>, Parsed) {
        let mut p = Parsed::new();
        let l3 = L3 { l4_off: 0, end: b.len(), claimed_end: b.len() };
        (parse(&b, &mut p, &l3), p)
    }

    fn header(flags: u16, proto: u16, options: usize) -> Vec<u8> {
        let mut h = flags.to_be_bytes().to_vec();
        h.extend_from_slice(&proto.to_be_bytes());
        h.resize(HLEN + options * OPTION_LEN, 0xaa);
        h
    }

    #[test]
    fn plain_gre_carrying_ipv4_and_ipv6() {
        let (next, _) = gre(&header(0, ETH_P_IPV4, 0));
        assert_eq!(next, Some(Inner { ethertype: ETH_P_IPV4, off: 4, stat: stats::ENCAP_GRE }));
        let (next, _) = gre(&header(0, ETH_P_IPV6, 0));
        assert_eq!(next, Some(Inner { ethertype: ETH_P_IPV6, off: 4, stat: stats::ENCAP_GRE }));
    }

    #[test]
    fn checksum_key_and_sequence_are_stepped_over() {
        let flags = field::CHECKSUM | field::KEY | field::SEQUENCE;
        let (next, _) = gre(&header(flags, ETH_P_TEB, 3));
        assert_eq!(next, Some(Inner { ethertype: ETH_P_TEB, off: 16, stat: stats::ENCAP_GRE }));
        let (next, _) = gre(&header(field::KEY, ETH_P_TEB, 1));
        assert_eq!(next, Some(Inner { ethertype: ETH_P_TEB, off: 8, stat: stats::ENCAP_GRE }));
    }

    #[test]
    fn pptp_ppp_with_and_without_address_control_and_compression() {
        // Version 1, key and sequence, PPP (0x880b): address/control, protocol 0x0021.
        let mut h = header(0x3001, PROTO_PPP, 2);
        h.extend_from_slice(&[0xff, 0x03, 0x00, 0x21, 0x45, 0]);
        assert_eq!(gre(&h).0, Some(Inner { ethertype: ETH_P_IPV4, off: 16, stat: stats::ENCAP_GRE }));
        // Sequence and acknowledgment, compressed protocol 0x57.
        let mut h = header(0x3081, PROTO_PPP, 3);
        h.extend_from_slice(&[0x57, 0x60, 0, 0]);
        assert_eq!(gre(&h).0, Some(Inner { ethertype: ETH_P_IPV6, off: 17, stat: stats::ENCAP_GRE }));
        // LCP, and an acknowledgment alone.
        let mut h = header(0x3001, PROTO_PPP, 2);
        h.extend_from_slice(&[0xff, 0x03, 0xc0, 0x21, 1, 0]);
        assert_eq!(gre(&h).0, None);
        assert_eq!(gre(&header(0x2081, PROTO_PPP, 2)).0, None);
    }

    #[test]
    fn mpls_inside_is_followed_routing_and_unknown_payloads_are_not() {
        let (next, _) = gre(&header(0, ETH_P_MPLS_MC, 0));
        assert_eq!(next, Some(Inner { ethertype: ETH_P_MPLS_UC, off: 4, stat: stats::ENCAP_GRE }));
        assert_eq!(gre(&header(0x2001, 0x0800, 1)).0, None);
        assert_eq!(gre(&header(field::ROUTING, ETH_P_IPV4, 2)).0, None);
        assert_eq!(gre(&header(0, 0x0806, 0)).0, None);
    }

    #[test]
    fn erspan_type_one_has_no_header() {
        let (next, _) = gre(&header(0, ETH_P_ERSPAN, 0));
        assert_eq!(next, Some(Inner { ethertype: ETH_P_TEB, off: 4, stat: stats::ENCAP_ERSPAN }));
    }

    #[test]
    fn a_cut_header_is_truncated() {
        let (next, p) = gre(&header(0, ETH_P_IPV4, 0)[..3]);
        assert_eq!((next, p.truncated), (None, true));
    }
}
