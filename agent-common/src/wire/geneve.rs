//! Geneve (RFC 8926, UDP destination port 6081): a header of 8 bytes plus its
//! options, then the payload its protocol type names (Ethernet, 0x6558, in practice).

use super::{Inner, Packet, Parsed, be16};
use crate::{
    proto::{ETH_P_IPV4, ETH_P_IPV6, ETH_P_TEB},
    stats,
};

/// Field offsets.
pub mod field {
    /// Version (2 bits) and options length in 4-byte words (6 bits).
    pub const VER_OPT_LEN: usize = 0;
    /// The payload's EtherType.
    pub const PROTOCOL: usize = 2;
}

/// The fixed header's length.
pub const HLEN: usize = 8;

/// The Geneve header at `off` (the UDP payload); version 0 only.
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<Inner> {
    let Some(hdr) = pkt.array_at::<HLEN>(off) else {
        p.truncated = true;
        return None;
    };
    let vo = hdr[field::VER_OPT_LEN];
    if vo >> 6 != 0 {
        return None;
    }
    let inner = off + HLEN + ((vo & 0x3f) as usize) * 4;
    match be16(hdr, field::PROTOCOL) {
        ETH_P_TEB => Some(Inner { ethertype: ETH_P_TEB, off: inner, stat: stats::ENCAP_GENEVE }),
        ETH_P_IPV4 => Some(Inner { ethertype: ETH_P_IPV4, off: inner, stat: stats::ENCAP_GENEVE }),
        ETH_P_IPV6 => Some(Inner { ethertype: ETH_P_IPV6, off: inner, stat: stats::ENCAP_GENEVE }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geneve(h: &[u8]) -> (Option<Inner>, Parsed) {
        let mut p = Parsed::new();
        (parse(&h, &mut p, 0), p)
    }

    #[test]
    fn options_are_stepped_over() {
        let (next, _) = geneve(&[0x00, 0, 0x65, 0x58, 0, 0, 1, 0]);
        assert_eq!(next, Some(Inner { ethertype: ETH_P_TEB, off: 8, stat: stats::ENCAP_GENEVE }));
        let (next, _) = geneve(&[0x02, 0, 0x86, 0xdd, 0, 0, 1, 0]);
        assert_eq!(next, Some(Inner { ethertype: ETH_P_IPV6, off: 16, stat: stats::ENCAP_GENEVE }));
    }

    #[test]
    fn other_versions_and_payloads_are_not_followed_cut_headers_are_truncated() {
        assert_eq!(geneve(&[0x40, 0, 0x65, 0x58, 0, 0, 1, 0]).0, None);
        assert_eq!(geneve(&[0x00, 0, 0x08, 0x06, 0, 0, 1, 0]).0, None);
        let (next, p) = geneve(&[0x00, 0, 0x65, 0x58, 0, 0, 1]);
        assert_eq!((next, p.truncated), (None, true));
    }
}
