//! Whole frames through [`walk`]: the layers in order, and what the walk leaves for the
//! event writer.

use std::{vec, vec::Vec};

use super::*;
use crate::proto::{self, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_ICMP, IPPROTO_TCP};

/// No flow table: every segment is new.
struct NoFlows;

impl LargeSegments for NoFlows {
    fn on_large_segment(&mut self, _: u32, _: u64, _: u32, _: u16) -> Option<FlowState> {
        None
    }
}

fn walk_frame(f: &[u8]) -> Parsed {
    walk(&f, &KernelConfig::new(), &mut NoFlows)
}

/// Ethernet, a VLAN tag, IPv4 (`total` bytes, DF) with protocol `proto`, then `l4`.
fn frame(proto: u8, total: u16, l4: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x81, 0x00, 0, 7, 0x08, 0x00, 0x45, 0];
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    f.extend_from_slice(l4);
    f
}

#[test]
fn icmp_frag_needed_behind_a_vlan_tag() {
    let icmp = [3, 4, 0, 0, 0, 0, 0x05, 0x78, 0x45, 0, 0, 20];
    let p = walk_frame(&frame(IPPROTO_ICMP, 32, &icmp));
    assert_eq!((p.class, p.event, p.vlan_depth), (Class::IcmpError, EventKind::IcmpError as u8, 1));
    assert_eq!((p.l3_off, p.l4_off, p.payload_off, p.payload_end), (18, 38, 46, 50));
    assert_eq!(p.snap(), (38, 50));
}

#[test]
fn dns_query_snap_is_the_udp_payload() {
    let udp = [0x30, 0x39, 0, 53, 0, 20, 0, 0, 0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    let p = walk_frame(&frame(IPPROTO_UDP, 40, &udp));
    assert_eq!((p.class, p.event, p.l4_proto, p.ip_len), (Class::Dns, EventKind::Dns as u8, IPPROTO_UDP, 40));
    assert_eq!(p.snap(), (46, 58));
}

#[test]
fn large_df_packet_of_another_protocol_is_large_df() {
    let mut f = frame(47, 1400, &[]);
    f.resize(18 + 1400, 0);
    let p = walk_frame(&f);
    assert_eq!((p.class, p.event, p.truncated), (Class::LargeDf, 0, false));
}

#[test]
fn arp_and_a_cut_ethernet_header() {
    let p = walk_frame(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x06, 0, 1]);
    assert_eq!((p.class, p.truncated, p.ip_version), (Class::Other, false, 0));
    assert!(walk_frame(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08]).truncated);
}

#[test]
fn syn_event_header_is_read_from_the_frame() {
    let tcp = [0x04, 0xd2, 0x01, 0xbb, 0, 0, 0, 9, 0, 0, 0, 0, 0x60, 0x02, 0xfa, 0xf0, 0, 0, 0, 0, 2, 4, 0x05, 0xb4];
    let f = frame(IPPROTO_TCP, 44, &tcp);
    let p = walk_frame(&f);
    assert_eq!((p.class, p.event, p.extra, p.snap()), (Class::TcpSyn, EventKind::TcpSyn as u8, 1460, (0, 0)));
    let mut h = crate::EventHeader::default();
    let snap = record::Snap { offset: 0, len: 0 };
    record::write_header(&&f[..], &p, &mut h, 7, 3, crate::Direction::Egress, snap);
    assert_eq!((h.ts_ns, h.ifindex, h.wire_len, h.kind, h.direction), (7, 3, 62, EventKind::TcpSyn as u8, 1));
    assert_eq!((h.src_port, h.dst_port, h.tcp_flags, h.vlan_depth, h.ip_len), (1234, 443, 0x02, 1, 44));
    assert_eq!((h.info.tcp_seq, h.info.tcp_window, h.info.tcp_mss), (9, 0xfaf0, 1460));
    assert_eq!((&h.src_addr[..5], &h.dst_addr[..5]), (&[198, 18, 0, 1, 0][..], &[198, 18, 0, 2, 0][..]));
}

#[test]
fn big_endian_reads() {
    let b = [1, 2, 3, 4, 5];
    assert_eq!((be16(&b, 1), be32(&b, 1), be16(&b, 4)), (0x0203, 0x0203_0405, 0));
    assert_eq!((&b[..]).be16_at(3), Some(0x0405));
    assert_eq!((&b[..]).be32_at(2), None);
    assert_eq!((helper_len(0, 40), helper_len(41, 40), helper_len(40, 40)), (None, None, Some(40)));
}

#[test]
fn slice_load_copies_or_fails_whole() {
    let b: &[u8] = &[1, 2, 3, 4];
    let mut dst = [0u8; 8];
    assert!(b.load(1, &mut dst, 3));
    assert_eq!(dst[..4], [2, 3, 4, 0]);
    assert!(!b.load(2, &mut dst, 3));
    assert!(!b.load(0, &mut dst, 9));
}

/// An IPv4 header (DF) of `total` bytes carrying `proto`.
fn ipv4(proto: u8, total: usize) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    h
}

/// An IPv4 packet carrying `inner` as `proto`.
fn ipv4_around(proto: u8, inner: &[u8]) -> Vec<u8> {
    let mut h = ipv4(proto, 20 + inner.len());
    h.extend_from_slice(inner);
    h
}

/// A UDP datagram from 49152 to `dport`.
fn udp_around(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut d = vec![0xc0, 0x00];
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend_from_slice(payload);
    d
}

/// An untagged Ethernet frame of `ethertype` around `body`.
fn ethernet(ethertype: u16, body: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(body);
    f
}

const DNS: [u8; 12] = [0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];

fn dns_packet() -> Vec<u8> {
    ipv4_around(IPPROTO_UDP, &udp_around(53, &DNS))
}

#[test]
fn dns_inside_gre_with_a_key_is_the_inner_packet() {
    let mut gre = vec![0x20, 0x00, 0x08, 0x00, 0, 0, 0, 7];
    gre.extend_from_slice(&dns_packet());
    let f = ethernet(ETH_P_IPV4, &ipv4_around(proto::IPPROTO_GRE, &gre));
    let p = walk_frame(&f);
    assert_eq!((p.class, p.event, p.tunnels), (Class::Dns, EventKind::Dns as u8, 1));
    // Outer IPv4 (20) and GRE with a key (8) in front of the inner IPv4 header.
    assert_eq!((p.l3_off, p.l4_off, p.snap()), (42, 62, (70, 82)));
}

#[test]
fn dns_inside_vxlan_inside_ipv6_uses_the_inner_vlan_tag() {
    let inner = ethernet(0x8100, &[&[0, 9, 0x08, 0x00][..], &dns_packet()].concat());
    let vxlan = udp_around(proto::VXLAN_PORT, &[&[0x08, 0, 0, 0, 0, 0, 1, 0][..], &inner].concat());
    let mut v6 = vec![0x60, 0, 0, 0];
    v6.extend_from_slice(&(vxlan.len() as u16).to_be_bytes());
    v6.extend_from_slice(&[IPPROTO_UDP, 64]);
    v6.extend_from_slice(&[0xfd; 32]);
    v6.extend_from_slice(&vxlan);
    let p = walk_frame(&ethernet(ETH_P_IPV6, &v6));
    assert_eq!((p.class, p.tunnels, p.vlan_depth, p.ip_version), (Class::Dns, 1, 1, 4));
    assert_eq!(p.l3_off, 14 + 40 + 8 + 8 + 18);
}

#[test]
fn mpls_labels_then_ip_are_not_a_tunnel() {
    let f = ethernet(proto::ETH_P_MPLS_UC, &[&[0, 1, 0x00, 64, 0, 2, 0x01, 64][..], &dns_packet()].concat());
    let p = walk_frame(&f);
    assert_eq!((p.class, p.tunnels, p.l3_off), (Class::Dns, 0, 22));
}

#[test]
fn two_encapsulations_are_followed_a_third_is_other() {
    let two = ipv4_around(proto::IPPROTO_IPIP, &ipv4_around(proto::IPPROTO_IPIP, &dns_packet()));
    let p = walk_frame(&ethernet(ETH_P_IPV4, &two));
    assert_eq!((p.class, p.tunnels), (Class::Dns, 2));
    let three = ipv4_around(proto::IPPROTO_IPIP, &two);
    let p = walk_frame(&ethernet(ETH_P_IPV4, &three));
    assert_eq!((p.class, p.event, p.tunnels), (Class::Other, 0, 2));
}

#[test]
fn a_tunnel_cut_inside_the_inner_headers_is_truncated_and_other() {
    let mut f = ethernet(ETH_P_IPV4, &ipv4_around(proto::IPPROTO_IPV6, &[0x60, 0, 0, 0, 0, 20, 17, 64]));
    f.resize(f.len() + 10, 0);
    let p = walk_frame(&f);
    assert_eq!((p.class, p.truncated, p.tunnels, p.ip_version), (Class::Other, true, 1, 0));
}

#[test]
fn a_large_outer_packet_is_judged_by_its_inner_one() {
    let mut inner = ipv4(IPPROTO_UDP, 1400);
    inner[6] = 0;
    inner.extend_from_slice(&udp_around(9, &[0; 1372]));
    let f = ethernet(ETH_P_IPV4, &ipv4_around(proto::IPPROTO_IPIP, &inner));
    assert_eq!(walk_frame(&f).class, Class::Other);
}
