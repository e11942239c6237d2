//! Every crafted frame, whole, under every link layer: its class and its event, and
//! what the IP layer's walk counts on the way.

use std::collections::BTreeSet;

use agent_common::{Class, proto::MAX_IPV6_EXT_HEADERS, stats};

use super::all_cases;
use super::cases_app::{dns_cases, dtls_cases, icmp_cases, tls_cases};
use super::cases_tcp_ip::{
    ipv4_header_cases, ipv6_ext_cases, large_df_cases, other_cases, tcp_fin_cases, tcp_syn_cases,
};
use super::cases_tunnel::tunnel_cases;
use super::frames::Link;
use super::rig::rig;

/// DNS: UDP/53 queries and responses are `dns` with a `Dns` event whose snap is the
/// DNS message; UDP/53 with under 4 payload bytes, TCP/53 (data or SYN) are `dns`
/// without event; a configured extra port (5353) is DNS too.
#[test]
fn dns_frames() {
    let Some(mut rig) = rig("dns_frames") else { return };
    rig.check_all(&dns_cases());
}

/// DTLS: ClientHellos in versions 0xfeff, 0xfefd and 0x0100 on UDP/443 and a
/// HelloVerifyRequest give a `Dtls` event with one record and the handshake type; a
/// three-record server flight sets bits 2, 11 and 14 of the handshake mask; an
/// encrypted alert is reported with no handshake types; application data alone is
/// `dtls` without event.
#[test]
fn dtls_frames() {
    let Some(mut rig) = rig("dtls_frames") else { return };
    rig.check_all(&dtls_cases());
}

/// TLS: a TCP segment starting with a handshake record carrying a ClientHello or
/// ServerHello is `tls` with a `Tls` event (type bit, record version, TCP fields,
/// snap = the records); another handshake message is `tls` without event.
#[test]
fn tls_frames() {
    let Some(mut rig) = rig("tls_frames") else { return };
    rig.check_all(&tls_cases());
}

/// ICMP errors: v4 frag-needed (next-hop MTU in `icmp_mtu`), port unreachable and time
/// exceeded; v6 packet too big (MTU), port unreachable and hop limit exceeded. Each is
/// `icmp_error` with an event whose snap is the ICMP message with its quote (capped at
/// SNAP_MEDIUM for a packet-too-big signal: its quoted headers are what is read).
#[test]
fn icmp_error_frames() {
    let Some(mut rig) = rig("icmp_error_frames") else { return };
    rig.check_all(&icmp_cases());
}

/// TCP SYN: `tcp_syn` with a `TcpSyn` event carrying the MSS option (1460 after NOPs
/// and SACK-permitted, 1418 at the last position it fits, 1418 on a SYN-ACK), or 0
/// when there is none.
#[test]
fn tcp_syn_frames() {
    let Some(mut rig) = rig("tcp_syn_frames") else { return };
    rig.check_all(&tcp_syn_cases());
}

/// FIN and RST: a `TcpFin` event with the sequence and acknowledgment numbers and the
/// flags, in the segment's own class (`other`, or `large_df` for a large DF one sent the
/// first time); a SYN-FIN is a SYN, a large FIN sent again a `TcpLargeRetransmit`, and
/// a FIN on TCP/53 stays DNS without event.
#[test]
fn tcp_fin_frames() {
    let Some(mut rig) = rig("tcp_fin_frames") else { return };
    rig.check_all(&tcp_fin_cases());
}

/// Large DF packets: a TCP segment over `large_packet_bytes` is `large_df` without
/// event the first time; sent again it gives `TcpLargeRetransmit` with `seg_len` and
/// `retransmits` 1 (2 the third time); resent after a full-size segment went through,
/// `largest_acked` is that size. Large DF UDP is `large_df` without event.
#[test]
fn large_df_frames() {
    let Some(mut rig) = rig("large_df_frames") else { return };
    rig.check_all(&large_df_cases());
}

/// `other`: ARP, large IPv4 UDP or TCP without DF, small TCP ACKs and data, small
/// non-DTLS UDP, UDP/5353 when not configured, ICMP echo. No event for any.
#[test]
fn other_frames() {
    let Some(mut rig) = rig("other_frames") else { return };
    rig.check_all(&other_cases());
}

/// IPv6 extension headers: hop-by-hop + routing + destination options, a first or
/// atomic fragment, and exactly MAX_IPV6_EXT_HEADERS headers are walked to UDP/53
/// (`dns`, event at the right offset, fragment flags); a non-first fragment has no
/// transport layer (`other`, or `large_df` when large; NON_FIRST_FRAGMENT counted);
/// one header more than the limit stops the walk (`other`; IPV6_EXT_LIMIT counted).
#[test]
fn ipv6_extension_header_chains() {
    let Some(mut rig) = rig("ipv6_extension_header_chains") else { return };
    for case in ipv6_ext_cases() {
        let (frag0, limit0) = (rig.stat(stats::NON_FIRST_FRAGMENT), rig.stat(stats::IPV6_EXT_LIMIT));
        rig.check(&case);
        let runs = 2 * Link::ALL.len() as u64;
        let non_first = if case.name.contains("non-first") { runs } else { 0 };
        let over_limit = if case.name.contains(&format!("{} extension", MAX_IPV6_EXT_HEADERS + 1)) { runs } else { 0 };
        assert_eq!(rig.stat(stats::NON_FIRST_FRAGMENT) - frag0, non_first, "{}: NON_FIRST_FRAGMENT", case.name);
        assert_eq!(rig.stat(stats::IPV6_EXT_LIMIT) - limit0, over_limit, "{}: IPV6_EXT_LIMIT", case.name);
    }
}

/// IPv4 header: options (IHL 6 to 15) are stepped over to UDP/53 (`dns`, event at the
/// right offset); IHL 0 to 4 is not IPv4 we read (`other`); a first fragment is
/// parsed (MF and fragment flags in the event); a non-first fragment has no
/// transport layer (`other`, NON_FIRST_FRAGMENT counted).
#[test]
fn ipv4_options_and_fragments() {
    let Some(mut rig) = rig("ipv4_options_and_fragments") else { return };
    for case in ipv4_header_cases() {
        let frag0 = rig.stat(stats::NON_FIRST_FRAGMENT);
        rig.check(&case);
        let non_first = if case.name.contains("non-first") { 2 * Link::ALL.len() as u64 } else { 0 };
        assert_eq!(rig.stat(stats::NON_FIRST_FRAGMENT) - frag0, non_first, "{}: NON_FIRST_FRAGMENT", case.name);
    }
}

/// Tunnels: a DNS query inside GRE (plain; checksum, key and sequence; Ethernet with
/// an 802.1Q tag inside; MPLS inside), ERSPAN I, II, III (with and without the
/// subheader), PPTP's enhanced GRE with PPP, IP in IP in all four version pairs, VXLAN and Geneve (with options),
/// over IPv4 and IPv6, under MPLS labels, and VXLAN carrying GRE: `dns` with the
/// inner query's event (its addresses, ports, IP length and VLAN tags), each
/// encapsulation counted in its statistic. Three IP-in-IP deep is `other` without
/// event, counted as `tunnel_depth_limit`. DTLS behind a CAPWAP preamble of type 1
/// (UDP 5246, 5247) is `dtls`, the snap starting at the records.
#[test]
fn tunnel_frames() {
    let Some(mut rig) = rig("tunnel_frames") else { return };
    for case in tunnel_cases() {
        let before: Vec<u64> = (0..stats::NUM_STATS).map(|s| rig.stat(s)).collect();
        rig.check(&case);
        let runs = 2 * Link::ALL.iter().filter(|l| l.apply(&case.frame).is_some()).count() as u64;
        for s in stats::ENCAP_GRE..stats::NUM_STATS {
            let want = case.counts.iter().filter(|&&c| c == s).count() as u64 * runs;
            let got = rig.stat(s) - before[s as usize];
            assert_eq!(got, want, "{}: {} counted {got} times in {runs} runs", case.name, stats::NAMES[s as usize]);
        }
    }
}

/// The catalogue itself: every class is covered over both IP versions where it
/// exists for both (other: also without IP), and case names are unique.
#[test]
fn crafted_frames_cover_every_class() {
    let cases = all_cases();
    let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    for class in Class::ALL {
        for ip in ["V4", "V6"] {
            assert!(
                cases.iter().any(|c| c.class == class && c.name.starts_with(ip)),
                "no {ip} case of class {}",
                class.name()
            );
        }
    }
}
