//! Tunnels inside tunnels. The walk finds the first encapsulation where it branches
//! anyway (the IP protocol, the UDP destination port: [`super::transport`]), so a
//! packet without one pays nothing more; what is inside it is followed here, in a
//! function the kernel verifies on its own. IP in IP is decided here too; each other
//! encapsulation has its own file.

use super::{Inner, L3, Packet, Parsed, behind_barrier, gre, l2_l3, udp};
use crate::{
    proto::{
        ETH_P_IPV4, ETH_P_IPV6, IPPROTO_GRE, IPPROTO_IPIP, IPPROTO_IPV6, IPPROTO_UDP, MAX_PARSE_OFFSET,
        MAX_TUNNEL_DEPTH,
    },
    stats,
};

/// Follows the encapsulations inside the packet that starts at `first` (itself
/// inside one) while [`MAX_TUNNEL_DEPTH`] allows, counting each it follows. Returns,
/// packed for [`unpack`], where the innermost packet reached starts and how many
/// encapsulations are in front of it; the caller walks that packet again (a cut
/// header or a further tunnel is found there once more).
///
/// One function for the kernel to verify on its own: its inputs are unknown to the
/// verifier, so it is checked once however the outer packet was framed.
#[inline(always)]
pub fn decapsulate_packed<P: Packet>(pkt: &P, first: Inner, barrier: usize) -> u64 {
    let mut at = first;
    let mut tunnels: u8 = 1;
    // The packets passed through are walked without counting: the caller walks the
    // innermost one again, and counts what stops it there.
    let quiet = Quiet(pkt);
    for _ in 1..MAX_TUNNEL_DEPTH {
        let mut scratch = Parsed::new();
        let Some(l3) = l2_l3(&quiet, &mut scratch, at, barrier) else { break };
        let l3 = behind_barrier(&mut scratch, l3, barrier);
        let Some(inner) = next(&quiet, &mut scratch, &l3) else { break };
        pkt.stat(inner.stat);
        tunnels += 1;
        at = Inner { off: (inner.off + barrier) & MAX_PARSE_OFFSET, ..inner };
    }
    pack(at, tunnels)
}

/// `P` read the same way, counting no statistic.
struct Quiet<'a, P>(&'a P);

impl<P: Packet> Packet for Quiet<'_, P> {
    #[inline(always)]
    fn wire_len(&self) -> usize {
        self.0.wire_len()
    }
    #[inline(always)]
    fn readable_len(&self) -> usize {
        self.0.readable_len()
    }
    #[inline(always)]
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.0.array_at(off)
    }
    #[inline(always)]
    fn load<const N: usize>(&self, off: usize, dst: &mut [u8; N], len: u32) -> bool {
        self.0.load(off, dst, len)
    }
    #[inline(always)]
    fn has(&self, off: usize) -> bool {
        self.0.has(off)
    }
    #[inline(always)]
    fn u8_at(&self, off: usize) -> Option<u8> {
        self.0.u8_at(off)
    }
    #[inline(always)]
    fn be16_at(&self, off: usize) -> Option<u16> {
        self.0.be16_at(off)
    }
    #[inline(always)]
    fn be32_at(&self, off: usize) -> Option<u32> {
        self.0.be32_at(off)
    }
}

/// `at` and the count of encapsulations in one word.
#[inline(always)]
fn pack(at: Inner, tunnels: u8) -> u64 {
    at.ethertype as u64 | ((at.off & MAX_PARSE_OFFSET) as u64) << 16 | (tunnels as u64) << 32
}

/// What [`decapsulate_packed`] found: where the innermost packet starts, and behind
/// how many encapsulations (at most [`MAX_TUNNEL_DEPTH`]).
#[inline(always)]
pub fn unpack(packed: u64) -> (Inner, u8) {
    let at = Inner { ethertype: packed as u16, off: (packed >> 16) as usize & MAX_PARSE_OFFSET, stat: 0 };
    let tunnels = (packed >> 32) as u8;
    (at, if tunnels > MAX_TUNNEL_DEPTH { MAX_TUNNEL_DEPTH } else { tunnels })
}

/// The encapsulated packet that follows the IP header `l3` of the packet `p`
/// describes, if any: the transport layer's choice ([`super::transport`]) without the
/// transport layer.
#[inline(always)]
pub fn next<P: Packet>(pkt: &P, p: &mut Parsed, l3: &L3) -> Option<Inner> {
    match p.l4_proto {
        IPPROTO_UDP => udp::tunnel(pkt, p, l3),
        IPPROTO_GRE => gre::parse(pkt, p, l3),
        IPPROTO_IPIP | IPPROTO_IPV6 => Some(ip_in_ip(p, l3)),
        _ => None,
    }
}

/// IPv4 or IPv6 right after the IP header (protocol 4 or 41).
#[inline(always)]
pub fn ip_in_ip(p: &Parsed, l3: &L3) -> Inner {
    if p.l4_proto == IPPROTO_IPIP {
        let stat = if p.ip_version == 4 { stats::ENCAP_IPIP } else { stats::ENCAP_IP6 };
        Inner { ethertype: ETH_P_IPV4, off: l3.l4_off, stat }
    } else {
        Inner { ethertype: ETH_P_IPV6, off: l3.l4_off, stat: stats::ENCAP_IP6 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn after(version: u8, proto: u8, l4: &[u8]) -> Option<Inner> {
        let mut p = Parsed { ip_version: version, l4_proto: proto, ..Parsed::new() };
        next(&l4, &mut p, &L3 { l4_off: 0, end: l4.len(), claimed_end: l4.len() })
    }

    #[test]
    fn ip_in_ip_in_every_combination() {
        let inner = |ethertype, stat| Some(Inner { ethertype, off: 0, stat });
        assert_eq!(after(4, IPPROTO_IPIP, &[]), inner(ETH_P_IPV4, stats::ENCAP_IPIP));
        assert_eq!(after(6, IPPROTO_IPIP, &[]), inner(ETH_P_IPV4, stats::ENCAP_IP6));
        assert_eq!(after(4, IPPROTO_IPV6, &[]), inner(ETH_P_IPV6, stats::ENCAP_IP6));
        assert_eq!(after(6, IPPROTO_IPV6, &[]), inner(ETH_P_IPV6, stats::ENCAP_IP6));
    }

    #[test]
    fn decapsulation_stops_at_the_depth_limit_or_the_first_packet_without_a_tunnel() {
        // IPv4 in IPv4 in IPv4: the second header (at 0) leads to the third (at 20).
        let mut b = [0u8; 60];
        for ip in [0, 20, 40] {
            b[ip..ip + 4].copy_from_slice(&[0x45, 0, 0, 20]);
            b[ip + 9] = IPPROTO_IPIP;
        }
        let first = Inner { ethertype: ETH_P_IPV4, off: 0, stat: stats::ENCAP_IPIP };
        let (at, tunnels) = unpack(decapsulate_packed(&&b[..], first, 0));
        assert_eq!((at.ethertype, at.off, tunnels), (ETH_P_IPV4, 20, MAX_TUNNEL_DEPTH));
        b[9] = IPPROTO_UDP;
        let (at, tunnels) = unpack(decapsulate_packed(&&b[..], first, 0));
        assert_eq!((at.ethertype, at.off, tunnels), (ETH_P_IPV4, 0, 1));
    }

    #[test]
    fn udp_by_destination_port_only() {
        let vxlan = [0xc0, 0x00, 0x12, 0xb5, 0, 16, 0, 0, 0x08, 0, 0, 0, 0, 0, 1, 0];
        assert!(matches!(after(4, IPPROTO_UDP, &vxlan), Some(Inner { off: 16, .. })));
        let from_vxlan = [0x12, 0xb5, 0xc0, 0x00, 0, 16, 0, 0, 0x08, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(after(4, IPPROTO_UDP, &from_vxlan), None);
        assert_eq!(after(4, IPPROTO_UDP, &vxlan[..3]), None);
        assert_eq!(after(4, 6, &vxlan), None);
    }
}
