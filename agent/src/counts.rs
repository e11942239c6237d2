//! Event counters named as DESIGN.md's `summary` line names them. They count packets,
//! as tshark does in `tests/pcaps/EXPECTED.tsv`: a datagram carrying three DTLS
//! records adds one to `dtls_record` and one to each handshake type it carries.

use agent_common::{
    Class, EventKind,
    proto::{
        HS_CLIENT_HELLO, HS_HELLO_VERIFY_REQUEST, HS_SERVER_HELLO, ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED,
        ICMP_PORT_UNREACH, ICMPV6_PACKET_TOO_BIG,
    },
};
use serde::Serialize;

use crate::event::Event;

/// The `events` object of the summary line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventCounts {
    /// DNS queries (QR = 0) over UDP.
    pub dns_query: u64,
    /// DNS responses (QR = 1) over UDP.
    pub dns_response: u64,
    /// Responses with rcode SERVFAIL.
    pub dns_servfail: u64,
    /// Responses with rcode NXDOMAIN.
    pub dns_nxdomain: u64,
    /// Datagrams made of DTLS records (from the class counters).
    pub dtls_record: u64,
    /// Datagrams carrying a ClientHello.
    pub dtls_client_hello: u64,
    /// Datagrams carrying a HelloVerifyRequest.
    pub dtls_hello_verify: u64,
    /// Datagrams carrying a ServerHello.
    pub dtls_server_hello: u64,
    /// TLS ClientHello / ServerHello segments.
    pub tls_hello: u64,
    /// ICMPv4 fragmentation needed.
    pub icmp_frag_needed: u64,
    /// ICMPv6 packet too big.
    pub icmpv6_packet_too_big: u64,
    /// ICMPv4 port unreachable.
    pub icmp_port_unreachable: u64,
    /// TCP SYN and SYN-ACK.
    pub tcp_syn: u64,
    /// Retransmitted large DF TCP segments.
    pub tcp_large_retransmit: u64,
    /// TCP segments with FIN or RST that raised no other event.
    pub tcp_fin: u64,
    /// Events the kernel could not deliver (ring buffer full) or the agent dropped.
    pub events_lost: u64,
}

impl EventCounts {
    /// Counts one event.
    pub fn count(&mut self, ev: &Event) {
        match ev.kind() {
            EventKind::Dns => {
                let Some(&flags) = ev.snap.get(2) else { return };
                if flags & 0x80 == 0 {
                    self.dns_query += 1;
                } else {
                    self.dns_response += 1;
                    match ev.snap.get(3).map(|b| b & 0x0f) {
                        Some(2) => self.dns_servfail += 1,
                        Some(3) => self.dns_nxdomain += 1,
                        _ => {}
                    }
                }
            }
            EventKind::Dtls => {
                let mask = ev.header.info.handshake_mask;
                self.dtls_client_hello += u64::from(mask & (1 << HS_CLIENT_HELLO) != 0);
                self.dtls_hello_verify += u64::from(mask & (1 << HS_HELLO_VERIFY_REQUEST) != 0);
                self.dtls_server_hello += u64::from(mask & (1 << HS_SERVER_HELLO) != 0);
            }
            EventKind::Tls => self.tls_hello += 1,
            EventKind::IcmpError => {
                let (v, t, c) = (ev.header.ip_version, ev.header.info.icmp_type, ev.header.info.icmp_code);
                if v == 4 && t == ICMP_DEST_UNREACH && c == ICMP_FRAG_NEEDED {
                    self.icmp_frag_needed += 1;
                } else if v == 4 && t == ICMP_DEST_UNREACH && c == ICMP_PORT_UNREACH {
                    self.icmp_port_unreachable += 1;
                } else if v == 6 && t == ICMPV6_PACKET_TOO_BIG {
                    self.icmpv6_packet_too_big += 1;
                }
            }
            EventKind::TcpSyn => self.tcp_syn += 1,
            EventKind::TcpLargeRetransmit => self.tcp_large_retransmit += 1,
            EventKind::TcpFin => self.tcp_fin += 1,
        }
    }

    /// Counts one packet's class (for `dtls_record`, which includes datagrams of
    /// application data that raise no event).
    pub fn count_class(&mut self, class: Class) {
        if class == Class::Dtls {
            self.dtls_record += 1;
        }
    }
}
