//! Ethernet II, up to [`MAX_VLAN_TAGS`] 802.1Q/802.1ad tags, and a PPPoE session header
//! carrying IPv4 or IPv6.

use super::{Packet, Parsed};
use crate::proto::{
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ETH_P_PPPOE_SESSION, MAX_VLAN_TAGS, PPP_IPV4,
    PPP_IPV6, PPPOE_HLEN, VLAN_HLEN,
};

/// Field offsets.
pub mod field {
    /// The EtherType, after the two MAC addresses.
    pub const ETHERTYPE: usize = 12;
    /// The encapsulated EtherType in a VLAN tag (after the tag control information).
    pub const VLAN_ETHERTYPE: usize = 2;
    /// The PPP protocol field after the PPPoE session header (version/type, code,
    /// session id, length).
    pub const PPP_PROTOCOL: usize = 6;
}

/// Where the link layer left off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L2 {
    /// The network protocol's EtherType (a PPP protocol becomes its EtherType); still
    /// a VLAN EtherType when there were more tags than are walked.
    pub ethertype: u16,
    /// Offset of the network header.
    pub l3_off: usize,
}

/// Reads the link layer of the Ethernet frame at `start` (0, or an inner frame a
/// tunnel carries); `None` when it ends early (`p.truncated`) or carries PPP that is
/// not IP. Counts the VLAN tags in `p.vlan_depth`.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, start: usize) -> Option<L2> {
    let Some(mut ethertype) = pkt.be16_at(start + field::ETHERTYPE) else {
        p.truncated = true;
        return None;
    };
    let mut off = start + ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let Some(next) = pkt.be16_at(off + field::VLAN_ETHERTYPE) else {
            p.truncated = true;
            return None;
        };
        ethertype = next;
        off += VLAN_HLEN;
        p.vlan_depth += 1;
    }
    if ethertype == ETH_P_PPPOE_SESSION {
        let Some(ppp) = pkt.be16_at(off + field::PPP_PROTOCOL) else {
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
    Some(L2 { ethertype, l3_off: off })
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;

    fn link(frame: &[u8]) -> (Option<L2>, Parsed) {
        let mut p = Parsed::new();
        (parse(&frame, &mut p, 0), p)
    }

    const MACS: [u8; 12] = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];

    fn frame(rest: &[u8]) -> Vec<u8> {
        let mut f = MACS.to_vec();
        f.extend_from_slice(rest);
        f
    }

    #[test]
    fn plain_ipv4() {
        let (l2, p) = link(&frame(&[0x08, 0x00, 0x45]));
        assert_eq!(l2, Some(L2 { ethertype: ETH_P_IPV4, l3_off: 14 }));
        assert_eq!(p.vlan_depth, 0);
    }

    #[test]
    fn two_vlan_tags_then_ipv6() {
        let (l2, p) = link(&frame(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20, 0x86, 0xdd]));
        assert_eq!(l2, Some(L2 { ethertype: ETH_P_IPV6, l3_off: 22 }));
        assert_eq!(p.vlan_depth, 2);
    }

    #[test]
    fn a_third_tag_is_left_for_the_caller() {
        let (l2, p) = link(&frame(&[0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3, 0x08, 0]));
        assert_eq!(l2, Some(L2 { ethertype: ETH_P_8021Q, l3_off: 22 }));
        assert_eq!(p.vlan_depth, 2);
    }

    #[test]
    fn pppoe_session_carrying_ipv4_and_lcp() {
        let (l2, _) = link(&frame(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 20, 0x00, 0x21]));
        assert_eq!(l2, Some(L2 { ethertype: ETH_P_IPV4, l3_off: 22 }));
        let (l2, p) = link(&frame(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 20, 0xc0, 0x21]));
        assert_eq!((l2, p.truncated), (None, false));
    }

    #[test]
    fn an_inner_frame_is_read_from_its_start() {
        let mut f = vec![0xee; 8];
        f.extend_from_slice(&frame(&[0x81, 0x00, 0, 5, 0x86, 0xdd]));
        let mut p = Parsed::new();
        assert_eq!(parse(&&f[..], &mut p, 8), Some(L2 { ethertype: ETH_P_IPV6, l3_off: 26 }));
        assert_eq!(p.vlan_depth, 1);
        assert!(parse(&&f[..19], &mut p, 8).is_none());
        assert!(p.truncated);
    }

    #[test]
    fn cut_headers_are_truncated() {
        for f in [&MACS[..], &frame(&[0x81, 0x00, 0, 1])[..], &frame(&[0x88, 0x64, 0x11, 0, 0, 1, 0, 20])[..]] {
            let (l2, p) = link(f);
            assert_eq!((l2, p.truncated), (None, true), "{f:?}");
        }
    }
}
