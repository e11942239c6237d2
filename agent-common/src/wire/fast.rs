//! The common shapes in few reads: an Ethernet frame with at most one VLAN tag, a
//! 20-byte IPv4 header (not a fragment) or an IPv6 header without extension headers,
//! then TCP, UDP or ICMP; or a frame of a network protocol the walk does not read (ARP).
//!
//! Most of what a gateway carries has this shape. The full walk ([`super::walk`])
//! handles every shape (VLAN tags, PPPoE, MPLS, IPv4 options, IPv6 extension headers,
//! tunnels) and carries each layer's results to the next; in BPF, with four registers
//! that survive a call, those results live on the stack, and a plain TCP segment paid
//! for every shape it was not. Here each header is read with one bounds check at a
//! place known from the layer before, and the transport layer is settled by the same functions
//! the full walk calls ([`tcp::segment`], [`udp::dns`], [`udp::records_at`],
//! [`icmp::parse`]), so a
//! packet gets the same [`Parsed`] either way: anything else (another shape, a header
//! cut short, a tunnel, CAPWAP) is left to the full walk. `walk_vs_etherparse` and
//! the unit tests below hold the two to the same answers.

use super::{L3, LargeSegments, Packet, Parsed, be16, ethernet, icmp, ipv4, ipv6, tcp, udp};
use crate::{
    KernelConfig,
    event::IP_FLAG_DF,
    proto::{
        ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, ETH_P_MPLS_MC, ETH_P_MPLS_UC, ETH_P_PPPOE_SESSION,
        ICMP_HLEN, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, VLAN_HLEN,
    },
    wire::capwap,
};

/// Version 4, header length 5 words.
const VER_IHL_PLAIN: u8 = 0x45;
/// The flags/fragment field's bits that make a fragment (MF, offset).
const FRAGMENT_BITS: u16 = ipv4::field::MF | ipv4::field::FRAG_OFFSET;

/// The walk of a packet of the common shape, or `None` when it has another (the full
/// walk then reads it).
#[inline(always)]
pub fn walk<P: Packet, F: LargeSegments>(pkt: &P, cfg: &KernelConfig, flows: &mut F) -> Option<Parsed> {
    let mut p = Parsed::new();
    // Ethernet and at most one VLAN tag (a trunk port's frames).
    let eth = pkt.array_at::<{ ETH_HLEN + VLAN_HLEN }>(0)?;
    let mut ethertype = be16(eth, ethernet::field::ETHERTYPE);
    let mut l3_off = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16(eth, ETH_HLEN + ethernet::field::VLAN_ETHERTYPE);
        l3_off = ETH_HLEN + VLAN_HLEN;
        p.vlan_depth = 1;
    }
    let len = pkt.wire_len();
    let (l4_off, claimed_end) = if ethertype == ETH_P_IPV4 {
        let ip = pkt.array_at::<{ ipv4::HLEN }>(l3_off)?;
        let frag = be16(ip, ipv4::field::FLAGS_FRAG);
        if ip[ipv4::field::VER_IHL] != VER_IHL_PLAIN || frag & FRAGMENT_BITS != 0 {
            return None;
        }
        let total = be16(ip, ipv4::field::TOTAL_LEN) as usize;
        p.ip_version = 4;
        p.ip_len = total as u32;
        p.l4_proto = ip[ipv4::field::PROTOCOL];
        p.ip_flags = if frag & ipv4::field::DF != 0 { IP_FLAG_DF } else { 0 };
        (l3_off + ipv4::HLEN, l3_off + total)
    } else if ethertype == ETH_P_IPV6 {
        // Without extension headers: the transport right after the fixed header.
        let ip = pkt.array_at::<{ ipv6::HLEN }>(l3_off)?;
        let next = ip[ipv6::field::NEXT_HEADER];
        if ip[ipv6::field::VERSION] >> 4 != 6 || (next != IPPROTO_TCP && next != IPPROTO_UDP && next != IPPROTO_ICMPV6)
        {
            return None;
        }
        let payload_len = be16(ip, ipv6::field::PAYLOAD_LEN) as usize;
        p.ip_version = 6;
        p.ip_len = (ipv6::HLEN + payload_len) as u32;
        p.l4_proto = next;
        p.ip_flags = IP_FLAG_DF;
        (l3_off + ipv6::HLEN, if payload_len == 0 { len } else { l3_off + ipv6::HLEN + payload_len })
    } else if ethertype == ETH_P_8021Q
        || ethertype == ETH_P_8021AD
        || ethertype == ETH_P_PPPOE_SESSION
        || ethertype == ETH_P_MPLS_UC
        || ethertype == ETH_P_MPLS_MC
    {
        return None;
    } else {
        // Not a network layer the walk reads (ARP, LLDP, ...): class `other`, as the
        // full walk leaves it, without walking the link layer a second time.
        p.l3_off = l3_off;
        return Some(p);
    };
    let end = if claimed_end < len { claimed_end } else { len };
    p.l3_off = l3_off;
    p.l4_off = l4_off;
    // Past the barrier (0 at run time) the verifier checks the transport layer once
    // for the four shapes, as in the full walk (`behind_barrier`).
    let l3 = super::behind_barrier(&mut p, L3 { l4_off, end, claimed_end }, cfg.verifier_barrier as usize);
    let l4_off = l3.l4_off;
    let end = l3.end;
    if p.l4_proto == IPPROTO_TCP {
        let seg = pkt.array_at::<{ tcp::HLEN }>(l4_off)?;
        let payload_off = l4_off + ((seg[tcp::field::DATA_OFF] >> 4) as usize) * 4;
        // A header cut short, or a data offset below the header: the full walk's cases.
        if l4_off + tcp::HLEN > end || payload_off < l4_off + tcp::HLEN || payload_off > end {
            return None;
        }
        tcp::segment(pkt, cfg, flows, &mut p, seg, &l3, payload_off);
        return Some(p);
    }
    if p.l4_proto == IPPROTO_ICMP || p.l4_proto == IPPROTO_ICMPV6 {
        // ICMP errors (frag-needed, packet too big, unreachable) are what a gateway's
        // diagnoses hang on: read by the same function as in the full walk. A header
        // cut short, or the other version's ICMP, is the full walk's case.
        let own = if p.ip_version == 4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
        if p.l4_proto != own || l4_off + ICMP_HLEN > end {
            return None;
        }
        icmp::parse(pkt, &mut p, &l3);
        p.large_df_if_unclassified(cfg);
        return Some(p);
    }
    if p.l4_proto != IPPROTO_UDP || l4_off + udp::HLEN > end {
        return None;
    }
    let hdr = pkt.array_at::<{ udp::HLEN }>(l4_off)?;
    let (src_port, dst_port) = (be16(hdr, udp::field::SRC_PORT), be16(hdr, udp::field::DST_PORT));
    if udp::is_tunnel_port(dst_port) || capwap::is_port(src_port, dst_port) {
        return None;
    }
    let (payload_end, udp_end) = udp::payload(&mut p, hdr, &l3);
    if cfg.is_dns_port(src_port) || cfg.is_dns_port(dst_port) {
        udp::dns(&mut p);
    } else {
        let payload_off = p.payload_off;
        udp::records_at::<P, true>(pkt, &mut p, payload_off, payload_end, udp_end);
        p.large_df_if_unclassified(cfg);
    }
    Some(p)
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;
    use crate::{FlowState, wire};

    /// Every segment is new.
    struct NoFlows;

    impl LargeSegments for NoFlows {
        fn on_large_segment(&mut self, _: u32, _: u64, _: u32, _: u16) -> Option<FlowState> {
            None
        }
    }

    /// The full walk, without the fast path.
    fn full(f: &[u8]) -> Parsed {
        wire::walk_full(&f, &KernelConfig::new(), &mut NoFlows)
    }

    fn fast(f: &[u8]) -> Option<Parsed> {
        walk(&f, &KernelConfig::new(), &mut NoFlows)
    }

    /// Ethernet, IPv4 (`frag` in the flags/fragment field), then `l4` under `proto`.
    fn frame(proto: u8, frag: u16, l4: &[u8]) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&frag.to_be_bytes());
        f.extend_from_slice(&[64, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(l4);
        f
    }

    fn tcp_seg(dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0x9c, 0x40];
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0x10, 0, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(payload);
        t
    }

    fn udp_dgram(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = sport.to_be_bytes().to_vec();
        u.extend_from_slice(&dport.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    #[test]
    fn plain_tcp_and_udp_are_settled_here_as_the_full_walk_settles_them() {
        let dtls_app = [23, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4];
        let dtls_hello = [22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1];
        let frames = [
            frame(6, 0x4000, &tcp_seg(443, 0x10, &[0x5a; 1400])),
            frame(6, 0, &tcp_seg(443, 0x18, &[0x17, 3, 3, 0, 10])),
            frame(6, 0x4000, &tcp_seg(443, 0x18, &[22, 3, 1, 0, 10, 1, 0])),
            frame(6, 0x4000, &tcp_seg(443, 0x02, &[])),
            frame(6, 0x4000, &tcp_seg(443, 0x11, &[])),
            frame(6, 0x4000, &tcp_seg(53, 0x18, &[0; 30])),
            frame(17, 0, &udp_dgram(40000, 5001, &[0x5a; 1400])),
            frame(17, 0x4000, &udp_dgram(40000, 443, &dtls_app)),
            frame(17, 0x4000, &udp_dgram(40000, 443, &dtls_hello)),
            frame(17, 0, &udp_dgram(40000, 53, &[0xab, 0xcd, 1, 0, 0, 1])),
            frame(17, 0, &udp_dgram(53, 40000, &[0xab])),
            {
                let mut arp = frame(6, 0, &[]);
                arp[12..14].copy_from_slice(&[0x08, 0x06]);
                arp
            },
        ];
        for (i, f) in frames.iter().enumerate() {
            assert_eq!(fast(f), Some(full(f)), "frame {i}");
            let mut tagged = f.clone();
            tagged.splice(12..12, [0x81, 0x00, 0, 7]);
            assert_eq!(fast(&tagged), Some(full(&tagged)), "frame {i} behind a VLAN tag");
            assert_eq!(fast(&tagged).unwrap().vlan_depth, 1);
            if f[12..14] == [0x08, 0x00] {
                let v6 = as_ipv6(f);
                assert_eq!(fast(&v6), Some(full(&v6)), "frame {i} over IPv6");
            }
        }
    }

    #[test]
    fn icmp_errors_and_echoes_are_settled_as_the_full_walk_settles_them() {
        // A quoted IPv4/UDP header after the ICMP header, as an error carries.
        let mut quote = vec![0x45, 0, 0, 60, 0, 1, 0x40, 0, 64, 17, 0, 0, 198, 18, 0, 2, 198, 18, 1, 2];
        quote.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 40, 0, 0]);
        let with = |t: u8, code: u8, rest: [u8; 4]| {
            let mut m = vec![t, code, 0, 0];
            m.extend_from_slice(&rest);
            m.extend_from_slice(&quote);
            m
        };
        let v4 = [
            frame(1, 0, &with(3, 4, [0, 0, 5, 0x78])),
            frame(1, 0, &with(3, 3, [0; 4])),
            frame(1, 0x4000, &with(11, 0, [0; 4])),
            frame(1, 0, &with(8, 0, [0, 1, 0, 1])),
        ];
        let v6 = [
            as_ipv6(&frame(58, 0, &with(2, 0, [0, 0, 5, 0x78]))),
            as_ipv6(&frame(58, 0, &with(1, 4, [0; 4]))),
            as_ipv6(&frame(58, 0, &with(128, 0, [0, 1, 0, 1]))),
        ];
        for (i, f) in v4.iter().chain(&v6).enumerate() {
            assert_eq!(fast(f), Some(full(f)), "frame {i}");
        }
        assert_eq!(fast(&v4[0]).unwrap().event, crate::EventKind::IcmpError as u8);
        assert!(wire::icmp::is_pmtu(&fast(&v6[0]).unwrap()));
        assert_eq!(fast(&v4[3]).unwrap().event, 0, "an echo request is no event");
    }

    /// `f` (Ethernet, IPv4 without options) with an IPv6 header instead.
    fn as_ipv6(f: &[u8]) -> Vec<u8> {
        let payload = &f[34..];
        let mut v6 = f[..12].to_vec();
        v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        v6.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v6.extend_from_slice(&[f[23], 64]);
        v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        v6.extend_from_slice(payload);
        v6
    }

    #[test]
    fn other_shapes_cuts_and_tunnels_are_left_to_the_full_walk() {
        let tcp = frame(6, 0x4000, &tcp_seg(443, 0x10, &[0x5a; 100]));
        let mut qinq = tcp.clone();
        qinq.splice(12..12, [0x88, 0xa8, 0, 7, 0x81, 0x00, 0, 8]);
        let mut options = tcp.clone();
        options[14] = 0x46;
        let mut bad_doff = tcp.clone();
        bad_doff[14 + 20 + 12] = 0x40;
        let left = [
            qinq,
            {
                let mut pppoe = tcp.clone();
                pppoe[12..14].copy_from_slice(&[0x88, 0x64]);
                pppoe
            },
            {
                let mut mpls = tcp.clone();
                mpls[12..14].copy_from_slice(&[0x88, 0x47]);
                mpls
            },
            options,
            bad_doff,
            tcp[..50].to_vec(),
            frame(6, 0x2000, &tcp_seg(443, 0x10, &[0x5a; 100])),
            frame(6, 0x0010, &[0; 40]),
            // ICMPv6 in IPv4, and an ICMP header cut short.
            frame(58, 0, &[2, 0, 0, 0, 0, 0, 5, 0]),
            frame(1, 0, &[3, 4, 0, 0, 0, 0, 5, 0])[..14 + 20 + 4].to_vec(),
            frame(47, 0, &[0, 0, 0x08, 0, 0x45]),
            as_ipv6(&frame(1, 0, &[3, 4, 0, 0, 0, 0, 5, 0])),
            {
                // An IPv6 hop-by-hop header before TCP.
                let mut v6 = as_ipv6(&tcp);
                v6[20] = 0;
                v6
            },
            frame(17, 0, &udp_dgram(40000, 4789, &[8, 0, 0, 0, 0, 0, 1, 0])),
            frame(17, 0, &udp_dgram(40000, 6081, &[0, 0, 0x65, 0x58, 0, 0, 1, 0])),
            frame(17, 0, &udp_dgram(5246, 40000, &[1, 0, 0, 0, 22, 0xfe, 0xfd])),
        ];
        for (i, f) in left.iter().enumerate() {
            assert_eq!(fast(f), None, "frame {i}");
        }
    }
}
