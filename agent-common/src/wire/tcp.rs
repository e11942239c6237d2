//! TCP: DNS over TCP (counted only), TLS handshakes, SYN with its MSS, FIN and RST, and
//! retransmissions of large DF segments (the PMTU black-hole symptom).

use super::{L3, LargeSegments, Packet, Parsed, be16, be32, helper_len, ipv4, ipv6, native, tls};
use crate::{
    Class, EventKind, KernelConfig,
    event::IP_FLAG_DF,
    flow::{flow_hash, flow_set_index, flow_tag},
    proto::{MAX_PARSE_OFFSET, MAX_TCP_OPTION_BYTES, TCP_SYN, TCP_SYN_FIN_RST, TCPOPT_EOL, TCPOPT_MSS, TCPOPT_NOP},
};

/// Field offsets.
pub mod field {
    /// Source port.
    pub const SRC_PORT: usize = 0;
    /// Destination port.
    pub const DST_PORT: usize = 2;
    /// Sequence number.
    pub const SEQ: usize = 4;
    /// Acknowledgment number.
    pub const ACK: usize = 8;
    /// Data offset in 32-bit words (high nibble).
    pub const DATA_OFF: usize = 12;
    /// Flags.
    pub const FLAGS: usize = 13;
    /// Window.
    pub const WINDOW: usize = 14;
}

/// The fixed header's length.
pub const HLEN: usize = 20;

/// Reads the TCP header at `l3.l4_off` and decides the class and event; a large DF
/// segment is accounted in `flows` when the hook reports the packet.
#[inline(always)]
pub fn parse<P: Packet, F: LargeSegments>(pkt: &P, cfg: &KernelConfig, flows: &mut F, p: &mut Parsed, l3: &L3) {
    let (l4_off, end) = (l3.l4_off, l3.end);
    let Some(hdr) = pkt.array_at::<HLEN>(l4_off) else {
        p.truncated = true;
        return;
    };
    if l4_off + HLEN > end {
        p.truncated = true;
        return;
    }
    let doff = ((hdr[field::DATA_OFF] >> 4) as usize) * 4;
    if doff < HLEN {
        return;
    }
    let payload_off = l4_off + doff;
    if payload_off > end || payload_off > MAX_PARSE_OFFSET {
        p.truncated = true;
        return;
    }
    segment(pkt, cfg, flows, p, hdr, l3, payload_off);
}

/// The segment whose header `hdr` is at `l3.l4_off` and whose payload starts at
/// `payload_off` (within `l3.end`): DNS, TLS, SYN, FIN/RST, large DF.
#[inline(always)]
pub(super) fn segment<P: Packet, F: LargeSegments>(
    pkt: &P,
    cfg: &KernelConfig,
    flows: &mut F,
    p: &mut Parsed,
    hdr: &[u8; HLEN],
    l3: &L3,
    payload_off: usize,
) {
    let (l4_off, end) = (l3.l4_off, l3.end);
    p.payload_off = payload_off;
    p.payload_end = end;
    let (src_port, dst_port) = (be16(hdr, field::SRC_PORT), be16(hdr, field::DST_PORT));
    if cfg.is_dns_port(src_port) || cfg.is_dns_port(dst_port) {
        p.class = Class::Dns;
        return;
    }
    if tls::parse(pkt, p, payload_off, end) {
        return;
    }
    // One test of the flags byte for SYN, FIN and RST together: an ACK or a data
    // segment (nearly all of them) pays this branch and nothing more.
    let flags = hdr[field::FLAGS];
    if flags & TCP_SYN_FIN_RST != 0 {
        if flags & TCP_SYN != 0 {
            p.class = Class::TcpSyn;
            p.event = EventKind::TcpSyn as u8;
            p.extra = pkt.mss_option(l4_off + HLEN, payload_off) as u64;
            return;
        }
        // FIN or RST: the acknowledgment number says what the peer received. A large
        // retransmission below replaces it (it carries the same number).
        p.event = EventKind::TcpFin as u8;
    }
    if cfg.is_large(p.ip_len, p.ip_flags & IP_FLAG_DF != 0) {
        p.class = Class::LargeDf;
        let claimed_len = l3.claimed_end.saturating_sub(payload_off);
        // Only the hook that reports the packet tracks it: a forwarded segment passes
        // XDP on its way in and TC on its way out, and must not look retransmitted.
        if claimed_len > 0 && pkt.raises_events() {
            let seg_len = if claimed_len > 0xffff { 0xffff } else { claimed_len as u16 };
            let tail = u64::from(src_port) | u64::from(dst_port) << 16 | u64::from(p.ip_version) << 32;
            large_segment(pkt, cfg, flows, p, be32(hdr, field::SEQ), seg_len, tail);
        }
    }
}

/// The MSS option in the TCP options `[off, end)`, 0 when absent.
///
/// The options are copied to the stack and walked at constant positions: the next
/// option's start is a plain value compared with each position, never an offset, so
/// the verifier checks the walk once instead of once per NOP/option combination. An
/// option may start at 0..=`MSS_LAST_START`; EOL, a length below 2, or running out of
/// options stops the walk, and unknown kinds are stepped over.
#[inline(always)]
pub fn mss_option<P: Packet>(pkt: &P, off: usize, end: usize) -> u16 {
    // Zeroed by five volatile 64-bit stores, and read in place: LLVM turns a
    // `[0u8; 40]`, a `[0u64; 5]` or a copy of known zeros into a call to a
    // byte-by-byte `memset`.
    let mut buf = core::mem::MaybeUninit::<[u64; MAX_TCP_OPTION_BYTES / 8]>::uninit();
    let words = buf.as_mut_ptr().cast::<u64>();
    for i in 0..MAX_TCP_OPTION_BYTES / 8 {
        // SAFETY: `i` is within the array.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: every byte was written above; the same 40 bytes, as bytes.
    let opts: &mut [u8; MAX_TCP_OPTION_BYTES] = unsafe { &mut *buf.as_mut_ptr().cast() };
    let Some(len) = helper_len(end.saturating_sub(off), MAX_TCP_OPTION_BYTES) else {
        return 0;
    };
    if !pkt.load(off, opts, len) {
        return 0;
    }
    let opts: &[u8; MAX_TCP_OPTION_BYTES] = opts;
    let len = len as usize;
    let mut next = 0usize;
    // One step per byte position, unrolled by the macro so that every read is at a
    // constant offset; only `next` (a plain value) carries state between steps.
    macro_rules! step {
        ($($j:literal)*) => {$(
            if next == $j {
                let kind = opts[$j];
                if kind == TCPOPT_EOL || $j + 1 >= len {
                    return 0;
                }
                if kind == TCPOPT_NOP {
                    next = $j + 1;
                } else {
                    let opt_len = opts[($j + 1) % MAX_TCP_OPTION_BYTES] as usize;
                    if opt_len < 2 {
                        return 0;
                    }
                    if kind == TCPOPT_MSS {
                        if opt_len == 4 && $j + 4 <= len {
                            return u16::from_be_bytes([
                                opts[($j + 2) % MAX_TCP_OPTION_BYTES],
                                opts[($j + 3) % MAX_TCP_OPTION_BYTES],
                            ]);
                        }
                        return 0;
                    }
                    next = $j + opt_len;
                }
            }
        )*};
    }
    #[allow(unused_assignments, reason = "the last step's `next` is not read")]
    #[allow(clippy::int_plus_one, reason = "`$j + 4 <= len`: the 4-byte option fits")]
    {
        step!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38);
    }
    0
}

/// Asks `flows` about a large segment (`tail`: the key's last word, ports and IP
/// version); a retransmission becomes a `TcpLargeRetransmit`
/// event with `seg_len | largest_acked << 16 | retransmits << 32` in `p.extra`.
///
/// Every large DF segment of a bulk transfer comes here, so the flow is hashed from
/// five 64-bit words (the `FlowKey` layout: the addresses as [`super::addr_words`],
/// then the ports and the IP version) read straight from the packet, and looked up by
/// its hash in the flow cache ([`crate::flow`]): no key is built or compared.
#[inline(always)]
fn large_segment<P: Packet, F: LargeSegments>(
    pkt: &P,
    cfg: &KernelConfig,
    flows: &mut F,
    p: &mut Parsed,
    seq: u32,
    seg_len: u16,
    tail: u64,
) {
    // The words of `addr_words`, spelled out: built through its `Option` they cost the
    // packet path ~140 more instructions.
    let words: [u64; 5] = if p.ip_version == 4 {
        let Some(a) = pkt.array_at::<8>(p.l3_off + ipv4::field::ADDRS) else { return };
        [u64::from(native::<u32, 8>(a, 0)), 0, u64::from(native::<u32, 8>(a, 4)), 0, tail]
    } else {
        let Some(a) = pkt.array_at::<32>(p.l3_off + ipv6::field::ADDRS) else { return };
        [native(a, 0), native(a, 8), native(a, 16), native(a, 24), tail]
    };
    let hash = flow_hash(&words, cfg.flow_seed);
    if let Some(state) = flows.on_large_segment(flow_set_index(hash, cfg.flow_set_mask), flow_tag(hash), seq, seg_len) {
        p.event = EventKind::TcpLargeRetransmit as u8;
        p.extra = seg_len as u64 | (state.largest_acked as u64) << 16 | (state.retransmits as u64) << 32;
    }
}

const _: () = assert!(cfg!(target_endian = "little"), "the flow key is built from little-endian words");
const _: () = assert!(core::mem::size_of::<crate::FlowKey>() == 40);
const _: () = assert!(MAX_TCP_OPTION_BYTES.is_multiple_of(8));
const _: () = assert!(core::mem::offset_of!(crate::FlowKey, dst_addr) == 16);
const _: () = assert!(core::mem::offset_of!(crate::FlowKey, src_port) == 32);
const _: () = assert!(core::mem::offset_of!(crate::FlowKey, dst_port) == 34);
const _: () = assert!(core::mem::offset_of!(crate::FlowKey, ip_version) == 36);

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;
    use crate::FlowState;

    fn mss(opts: &[u8]) -> u16 {
        mss_option(&opts, 0, opts.len())
    }

    #[test]
    fn mss_after_nops_and_unknown_options() {
        assert_eq!(mss(&[2, 4, 0x05, 0xb4]), 1460);
        assert_eq!(mss(&[1, 1, 30, 3, 9, 2, 4, 0x05, 0x8a, 0]), 1418);
    }

    #[test]
    fn no_mss_when_absent_malformed_or_after_eol() {
        assert_eq!(mss(&[]), 0);
        assert_eq!(mss(&[0, 2, 4, 5, 180]), 0);
        assert_eq!(mss(&[2, 3, 5, 180]), 0);
        assert_eq!(mss(&[30, 1, 2, 4, 5, 180]), 0);
        assert_eq!(mss(&[2, 4, 5]), 0);
    }

    /// A table that remembers one flow (its set and tag) and calls every later segment
    /// of it a retransmission.
    #[derive(Default)]
    struct OneFlow(Option<(u32, u64)>);

    impl LargeSegments for OneFlow {
        fn on_large_segment(&mut self, set: u32, tag: u64, seq: u32, len: u16) -> Option<FlowState> {
            let key = (set, tag);
            match self.0 {
                Some(k) if k == key => {
                    Some(FlowState { largest_acked: 100, retransmits: 2, ..FlowState::first(seq, len) })
                }
                _ => {
                    self.0 = Some(key);
                    None
                }
            }
        }
    }

    /// An IPv4 header (DF, total `total`) then a TCP header with `flags` and `opts`.
    fn segment(flags: u8, opts: &[u8], payload: usize) -> Vec<u8> {
        let doff = (20 + opts.len()) / 4;
        let total = (20 + 20 + opts.len() + payload) as u16;
        let mut f = vec![0x45, 0];
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
        f.extend_from_slice(&[0x04, 0xd2, 0x01, 0xbb, 0, 0, 0x10, 0, 0, 0, 0, 0, (doff as u8) << 4, flags, 0xff, 0xff]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(opts);
        f.resize(total as usize, 0);
        f
    }

    fn tcp(f: &[u8], flows: &mut OneFlow) -> Parsed {
        let mut p = Parsed::new();
        let l3 = ipv4::parse(&f, &mut p, 0).unwrap();
        p.l4_off = l3.l4_off;
        parse(&f, &KernelConfig::new(), flows, &mut p, &l3);
        p
    }

    #[test]
    fn syn_carries_its_mss() {
        let p = tcp(&segment(TCP_SYN, &[2, 4, 0x05, 0xb4], 0), &mut OneFlow::default());
        assert_eq!((p.class, p.event, p.extra), (Class::TcpSyn, EventKind::TcpSyn as u8, 1460));
    }

    #[test]
    fn fin_is_an_event_plain_ack_is_not() {
        let p = tcp(&segment(0x11, &[], 0), &mut OneFlow::default());
        assert_eq!((p.class, p.event), (Class::Other, EventKind::TcpFin as u8));
        let p = tcp(&segment(0x10, &[], 10), &mut OneFlow::default());
        assert_eq!((p.event, p.payload_off, p.payload_end), (0, 40, 50));
    }

    #[test]
    fn second_large_segment_of_a_flow_is_a_retransmission() {
        let mut flows = OneFlow::default();
        let f = segment(0x10, &[], 1460);
        let p = tcp(&f, &mut flows);
        assert_eq!((p.class, p.event), (Class::LargeDf, 0));
        // The flow as its key words: the addresses, then ports and IP version.
        let words = [
            u64::from(u32::from_le_bytes([198, 18, 0, 1])),
            0,
            u64::from(u32::from_le_bytes([198, 18, 0, 2])),
            0,
            1234 | 443 << 16 | 4 << 32,
        ];
        let hash = crate::flow::flow_hash(&words, 0);
        let cfg = KernelConfig::new();
        assert_eq!(flows.0, Some((flow_set_index(hash, cfg.flow_set_mask), flow_tag(hash))));
        let p = tcp(&f, &mut flows);
        assert_eq!((p.event, p.extra), (EventKind::TcpLargeRetransmit as u8, 1460 | 100 << 16 | 2 << 32));
    }

    #[test]
    fn header_cut_or_options_past_the_end_are_truncated_bad_offset_is_not() {
        let f = segment(0x10, &[], 0);
        assert!(tcp(&f[..35], &mut OneFlow::default()).truncated);
        let mut f = segment(0x10, &[1, 1, 1, 1], 0);
        f[32] = 0xf0;
        assert!(tcp(&f, &mut OneFlow::default()).truncated);
        f[32] = 0x40;
        let p = tcp(&f, &mut OneFlow::default());
        assert_eq!((p.truncated, p.event), (false, 0));
    }
}
