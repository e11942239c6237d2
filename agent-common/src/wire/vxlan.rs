//! VXLAN (RFC 7348, UDP destination port 4789): an Ethernet frame after an 8-byte header.

use super::{Inner, Packet, Parsed};
use crate::{proto::ETH_P_TEB, stats};

/// The header's length (flags, reserved, VNI, reserved).
pub const HLEN: usize = 8;

/// The VXLAN header at `off` (the UDP payload).
#[inline(always)]
pub fn parse<P: Packet>(pkt: &P, p: &mut Parsed, off: usize) -> Option<Inner> {
    if pkt.array_at::<HLEN>(off).is_none() {
        p.truncated = true;
        return None;
    }
    Some(Inner { ethertype: ETH_P_TEB, off: off + HLEN, stat: stats::ENCAP_VXLAN })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ethernet_frame_follows_eight_bytes_unless_cut() {
        let h: &[u8] = &[0x08, 0, 0, 0, 0, 0, 0x64, 0];
        let mut p = Parsed::new();
        assert_eq!(parse(&h, &mut p, 0), Some(Inner { ethertype: ETH_P_TEB, off: 8, stat: stats::ENCAP_VXLAN }));
        assert_eq!((parse(&&h[..7], &mut p, 0), p.truncated), (None, true));
    }
}
