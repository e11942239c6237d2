//! Decoded events as one human line each (`-v`). Every value from a packet is
//! escaped (names) or formatted from numbers (addresses, ports).

use agent_common::EventKind;

use crate::{
    decode::{dns, icmp},
    event::Event,
};

/// One line describing `ev`.
pub fn event_line(ev: &Event) -> String {
    let h = &ev.header;
    let flow = format!("{} {}:{} > {}:{}", ev.direction().name(), ev.src_ip(), h.src_port, ev.dst_ip(), h.dst_port);
    match ev.kind() {
        EventKind::Dns => match dns::decode(&ev.snap) {
            Some(m) => {
                let q = m
                    .question
                    .map(|q| format!("{} {}", dns::qtype_name(q.qtype), q.name))
                    .unwrap_or_else(|| "(no question)".into());
                if m.is_response {
                    format!("dns response {flow} id {:#06x} {q} {}", m.id, dns::rcode_name(m.rcode))
                } else {
                    format!("dns query {flow} id {:#06x} {q}", m.id)
                }
            }
            None => format!("dns (undecodable) {flow}"),
        },
        EventKind::Dtls => format!(
            "dtls {flow} records {} version {:#06x} handshake types {:#x}",
            h.info.dtls_records, h.info.record_version, h.info.handshake_mask
        ),
        EventKind::Tls => format!("tls {flow} handshake types {:#x}", h.info.handshake_mask),
        EventKind::IcmpError => {
            let i = icmp::decode(h.info.icmp_type, h.info.icmp_code, h.info.icmp_mtu, &ev.snap);
            let quoted = i
                .quoted
                .map(|q| {
                    format!(" quoting {}:{} > {}:{}", q.src, q.src_port.unwrap_or(0), q.dst, q.dst_port.unwrap_or(0))
                })
                .unwrap_or_default();
            format!(
                "icmp error {} {} > {} type {} code {} mtu {}{quoted}",
                ev.direction().name(),
                ev.src_ip(),
                ev.dst_ip(),
                i.icmp_type,
                i.code,
                i.mtu
            )
        }
        EventKind::TcpSyn => format!("tcp syn {flow} flags {:#04x} mss {}", h.tcp_flags, h.info.tcp_mss),
        EventKind::TcpLargeRetransmit => format!(
            "tcp large retransmit {flow} seq {} len {} largest acked {} retransmits {}",
            h.info.tcp_seq, h.info.seg_len, h.info.largest_acked, h.info.retransmits
        ),
        EventKind::TcpFin => {
            format!("tcp fin {flow} flags {:#04x} seq {} ack {}", h.tcp_flags, h.info.tcp_seq, h.info.tcp_ack)
        }
    }
}
