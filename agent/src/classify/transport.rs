//! Transport layer: UDP (DNS, DTLS), TCP (DNS, TLS, SYN, FIN/RST, large segments) and ICMP
//! errors. Mirrors `agent-ebpf/src/parse.rs` and `agent-ebpf/src/tcp.rs`.

use agent_common::{Class, EventKind, FlowKey, KernelConfig, event::IP_FLAG_DF, proto::*};
use etherparse::{TcpHeaderSlice, UdpHeaderSlice};

use super::{FlowTable, L3, Parsed, dtls, l3};

pub(crate) fn udp(frame: &[u8], cfg: &KernelConfig, p: &mut Parsed, l3: &L3) {
    let Ok(udp) = UdpHeaderSlice::from_slice(&frame[l3.l4_off.min(l3.end)..l3.end]) else {
        p.truncated = true;
        return;
    };
    p.src_port = udp.source_port();
    p.dst_port = udp.destination_port();
    let udp_len = udp.length() as usize;
    let payload_off = l3.l4_off + 8;
    let claimed_end = if udp_len < 8 { payload_off } else { l3.l4_off + udp_len };
    let payload_end = claimed_end.min(l3.end);
    p.payload_len = payload_end.saturating_sub(payload_off);
    if cfg.is_dns_port(p.src_port) || cfg.is_dns_port(p.dst_port) {
        p.class = Some(Class::Dns);
        if p.payload_len >= DNS_MIN_LEN {
            p.event = EventKind::Dns as u8;
            p.snap_off = payload_off;
            p.snap_end = payload_end;
        }
        return;
    }
    if let Some(d) = dtls::walk(frame, payload_off, payload_end, claimed_end) {
        p.class = Some(Class::Dtls);
        p.info.dtls_records = d.records;
        p.info.dtls_content_mask = d.content_mask;
        p.info.record_version = d.first_version;
        p.info.handshake_mask = d.handshake_mask;
        if dtls_content_is_evented(d.content_mask) {
            p.event = EventKind::Dtls as u8;
            p.snap_off = payload_off;
            p.snap_end = payload_end;
        }
    }
}

pub(crate) fn tcp(frame: &[u8], cfg: &KernelConfig, flows: &mut FlowTable, p: &mut Parsed, l3: &L3) {
    let Ok(tcp) = TcpHeaderSlice::from_slice(&frame[l3.l4_off.min(l3.end)..l3.end]) else {
        // Too short for the fixed header or its options (truncated), or a data
        // offset below 5 (not truncated, just not TCP we can read).
        let fixed_present = l3.l4_off + 20 <= l3.end;
        let doff_ok = fixed_present && frame[l3.l4_off + 12] >> 4 >= 5;
        p.truncated = !fixed_present || doff_ok;
        return;
    };
    let payload_off = l3.l4_off + tcp.slice().len();
    if payload_off > MAX_PARSE_OFFSET {
        p.truncated = true;
        return;
    }
    p.src_port = tcp.source_port();
    p.dst_port = tcp.destination_port();
    p.tcp_flags = tcp.slice()[13];
    p.info.tcp_seq = tcp.sequence_number();
    p.info.tcp_ack = tcp.acknowledgment_number();
    p.info.tcp_window = tcp.window_size();
    p.payload_len = l3.end - payload_off;
    if cfg.is_dns_port(p.src_port) || cfg.is_dns_port(p.dst_port) {
        p.class = Some(Class::Dns);
        return;
    }
    let payload = &frame[payload_off..l3.end];
    if payload.len() >= TLS_RECORD_HLEN && is_tls_handshake_record(payload[0], payload[1], payload[2]) {
        p.class = Some(Class::Tls);
        if let Some(&hs) = payload.get(TLS_RECORD_HLEN)
            && tls_handshake_is_evented(hs)
        {
            p.event = EventKind::Tls as u8;
            p.info.handshake_mask = 1 << hs;
            p.info.record_version = u16::from_be_bytes([payload[1], payload[2]]);
            p.snap_off = payload_off;
            p.snap_end = l3.end;
        }
        return;
    }
    // As the kernel: one test of SYN, FIN and RST together, then which one.
    if p.tcp_flags & TCP_SYN_FIN_RST != 0 {
        if p.tcp_flags & TCP_SYN != 0 {
            p.class = Some(Class::TcpSyn);
            p.event = EventKind::TcpSyn as u8;
            p.info.tcp_mss = mss_option(&tcp.slice()[20..]);
            return;
        }
        // FIN or RST; a large retransmission below replaces it.
        p.event = EventKind::TcpFin as u8;
    }
    if cfg.is_large(p.ip_len, p.ip_flags & IP_FLAG_DF != 0) {
        p.class = Some(Class::LargeDf);
        let claimed_len = l3.claimed_end.saturating_sub(payload_off);
        if claimed_len > 0 {
            track_large_segment(frame, flows, p, claimed_len.min(0xffff) as u16);
        }
    }
}

/// The MSS option, walked as the kernel does: an option may start at positions
/// 0..=`MSS_LAST_START`; EOL, a length below 2, or running out of options stops it.
/// (etherparse's option iterator stops at option kinds it does not know, which the
/// kernel steps over, so the walk is spelled out here.)
pub(crate) fn mss_option(opts: &[u8]) -> u16 {
    let len = opts.len();
    let mut j = 0usize;
    while j <= MSS_LAST_START {
        let Some(&kind) = opts.get(j) else { return 0 };
        if kind == TCPOPT_EOL || j + 1 >= len {
            return 0;
        }
        if kind == TCPOPT_NOP {
            j += 1;
            continue;
        }
        let opt_len = opts[j + 1] as usize;
        if opt_len < 2 {
            return 0;
        }
        if kind == TCPOPT_MSS {
            if opt_len == 4 && j + 4 <= len {
                return u16::from_be_bytes([opts[j + 2], opts[j + 3]]);
            }
            return 0;
        }
        j += opt_len;
    }
    0
}

fn track_large_segment(frame: &[u8], flows: &mut FlowTable, p: &mut Parsed, seg_len: u16) {
    let (src_addr, dst_addr) = l3::addresses(frame, p);
    let key = FlowKey {
        src_addr,
        dst_addr,
        src_port: p.src_port,
        dst_port: p.dst_port,
        ip_version: p.ip_version,
        _pad: [0; 3],
    };
    if let Some(state) = flows.segment(key, p.info.tcp_seq, seg_len) {
        p.event = EventKind::TcpLargeRetransmit as u8;
        p.info.seg_len = seg_len;
        p.info.largest_acked = state.largest_acked;
        p.info.retransmits = state.retransmits;
    }
}

pub(crate) fn icmp(frame: &[u8], p: &mut Parsed, l3: &L3) {
    // The ICMPv4 and ICMPv6 headers share their layout, and their first 8 bytes are
    // all either classifier reads. Not etherparse's Icmpv4Slice: it also wants a
    // timestamp message (type 13/14, code 0) to be exactly 20 bytes, and would call a
    // cut or padded one truncated where the kernel, rightly, does not.
    let Some(hdr) = frame[l3.l4_off.min(l3.end)..l3.end].get(..ICMP_HLEN) else {
        p.truncated = true;
        return;
    };
    let (t, code, rest) = (hdr[0], hdr[1], [hdr[4], hdr[5], hdr[6], hdr[7]]);
    let is_error = if p.ip_version == 4 { is_icmpv4_error(t) } else { is_icmpv6_error(t) };
    if !is_error {
        return;
    }
    p.class = Some(Class::IcmpError);
    p.event = EventKind::IcmpError as u8;
    p.info.icmp_type = t;
    p.info.icmp_code = code;
    p.info.icmp_mtu = icmp_mtu(p.ip_version, t, code, rest);
    p.payload_len = l3.end - (l3.l4_off + ICMP_HLEN);
    p.snap_off = l3.l4_off;
    p.snap_end = l3.end;
}

#[cfg(test)]
mod tests {
    use super::mss_option;

    #[test]
    fn mss_after_nops_and_unknown_options() {
        assert_eq!(mss_option(&[2, 4, 0x05, 0xb4]), 1460);
        assert_eq!(mss_option(&[1, 1, 30, 3, 9, 2, 4, 0x05, 0x8a, 0]), 1418);
    }

    #[test]
    fn no_mss_when_absent_malformed_or_after_eol() {
        assert_eq!(mss_option(&[]), 0);
        assert_eq!(mss_option(&[0, 2, 4, 5, 180]), 0);
        assert_eq!(mss_option(&[2, 3, 5, 180]), 0);
        assert_eq!(mss_option(&[30, 1, 2, 4, 5, 180]), 0);
        assert_eq!(mss_option(&[2, 4, 5]), 0);
    }
}
