//! TCP: DNS over TCP (counted only), TLS ClientHello/ServerHello, SYN with its MSS,
//! FIN and RST with their acknowledgment number, and retransmissions of large
//! segments (the PMTU black-hole symptom).

use agent_common::{Class, EventKind, FlowKey, FlowState, KernelConfig, event::IP_FLAG_DF, proto::*, stats};

use crate::{
    maps::{FLOWS, stat},
    packet::{Packet, be16, be32, helper_len},
    parse::Parsed,
};

/// `bpf_map_update_elem` flag: insert only if the key is absent.
const BPF_NOEXIST: u64 = aya_ebpf::bindings::BPF_NOEXIST as u64;
/// The helper's error when the key is present (`-EEXIST`).
const EEXIST: i32 = -17;

#[inline(always)]
pub fn parse_tcp<P: Packet>(
    pkt: &P,
    cfg: &KernelConfig,
    p: &mut Parsed,
    l4_off: usize,
    end: usize,
    claimed_end: usize,
) {
    let Some(hdr) = pkt.ptr_at::<[u8; 20]>(l4_off) else {
        p.truncated = true;
        return;
    };
    if l4_off + 20 > end {
        p.truncated = true;
        return;
    }
    let hdr: *const u8 = hdr.cast();
    let doff = ((unsafe { *hdr.add(12) } >> 4) as usize) * 4;
    if doff < 20 {
        return;
    }
    let payload_off = l4_off + doff;
    if payload_off > end || payload_off > MAX_PARSE_OFFSET {
        p.truncated = true;
        return;
    }
    p.payload_off = payload_off;
    p.payload_end = end;
    let (src_port, dst_port) = unsafe { (be16(hdr, 0), be16(hdr, 2)) };
    if cfg.is_dns_port(src_port) || cfg.is_dns_port(dst_port) {
        p.class = Class::Dns;
        return;
    }
    if end - payload_off >= TLS_RECORD_HLEN {
        if let Some(rec) = pkt.ptr_at::<[u8; TLS_RECORD_HLEN]>(payload_off) {
            let rec = unsafe { *rec };
            if is_tls_handshake_record(rec[0], rec[1], rec[2]) {
                p.class = Class::Tls;
                if let Some(hs) = pkt.u8_at(payload_off + TLS_RECORD_HLEN) {
                    if payload_off + TLS_RECORD_HLEN < end && tls_handshake_is_evented(hs) {
                        p.event = EventKind::Tls as u8;
                        p.extra = hs as u64;
                    }
                }
                return;
            }
        }
    }
    // One test of the flags byte for SYN, FIN and RST together: an ACK or a data
    // segment (nearly all of them) pays this branch and nothing more.
    let flags = unsafe { *hdr.add(13) };
    if flags & TCP_SYN_FIN_RST != 0 {
        if flags & TCP_SYN != 0 {
            p.class = Class::TcpSyn;
            p.event = EventKind::TcpSyn as u8;
            p.extra = pkt.mss_option((l4_off + 20) as u64, payload_off as u64) as u64;
            return;
        }
        // FIN or RST: the acknowledgment number says what the peer received. A large
        // retransmission below replaces it (it carries the same number).
        p.event = EventKind::TcpFin as u8;
    }
    if cfg.is_large(p.ip_len, p.ip_flags & IP_FLAG_DF != 0) {
        p.class = Class::LargeDf;
        let claimed_len = claimed_end.saturating_sub(payload_off);
        // Only the hook that reports the packet tracks it: a forwarded segment passes
        // XDP on its way in and TC on its way out, and must not look retransmitted.
        if claimed_len > 0 && pkt.raises_events() {
            let seq = unsafe { be32(hdr, 4) };
            let seg_len = if claimed_len > 0xffff { 0xffff } else { claimed_len as u16 };
            track_large_segment(pkt, p, seq, seg_len, src_port, dst_port);
        }
    }
}

/// The MSS option in the TCP options `[off, end)`, 0 when absent.
///
/// The options are copied to the stack and walked at constant positions: the next
/// option's start is a plain value compared with each position, never an offset, so
/// the verifier checks the walk once instead of once per NOP/option combination.
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
    let Some(len) = helper_len(end.saturating_sub(off), MAX_TCP_OPTION_BYTES) else {
        return 0;
    };
    if !pkt.load(off as u32, words.cast(), len) {
        return 0;
    }
    // SAFETY: every byte was written above; the same 40 bytes, as bytes.
    let opts: &[u8; MAX_TCP_OPTION_BYTES] = unsafe { &*buf.as_ptr().cast() };
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
    {
        step!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38);
    }
    0
}

/// Looks the flow up in the LRU table; a segment that starts before the highest
/// sequence already sent becomes a `TcpLargeRetransmit` event.
///
/// Every large DF segment of a bulk transfer comes here, so the key is built as five
/// 64-bit words (the `FlowKey` layout: addresses as on the wire, IPv4 in the first
/// four bytes of each, then the ports and the IP version): no byte copies, no calls to fill
/// the gaps with zeros (LLVM turns runs of zero stores into a call to a byte-by-byte
/// `memset`).
#[inline(always)]
fn track_large_segment<P: Packet>(pkt: &P, p: &mut Parsed, seq: u32, seg_len: u16, src_port: u16, dst_port: u16) {
    let tail = u64::from(src_port) | u64::from(dst_port) << 16 | u64::from(p.ip_version) << 32;
    let words: [u64; 5] = if p.ip_version == 4 {
        let Some(a) = pkt.ptr_at::<[u32; 2]>(p.l3_off + 12) else { return };
        let [src, dst] = unsafe { core::ptr::read(a) };
        [u64::from(src), 0, u64::from(dst), 0, tail]
    } else {
        let Some(a) = pkt.ptr_at::<[u64; 4]>(p.l3_off + 8) else { return };
        let [s0, s1, d0, d1] = unsafe { core::ptr::read(a) };
        [s0, s1, d0, d1, tail]
    };
    // SAFETY: `FlowKey` is `repr(C)`, 40 bytes, align 2, every bit pattern valid; the
    // words are laid out as its fields on this little-endian target.
    let key: &FlowKey = unsafe { &*(words.as_ptr() as *const FlowKey) };
    match FLOWS.get_ptr_mut(key) {
        Some(state) => {
            let state = unsafe { &mut *state };
            if state.on_segment(seq, seg_len) {
                p.event = EventKind::TcpLargeRetransmit as u8;
                p.extra = seg_len as u64 | (state.largest_acked as u64) << 16 | (state.retransmits as u64) << 32;
            }
        }
        None => match FLOWS.insert(key, &FlowState::first(seq, seg_len), BPF_NOEXIST) {
            Ok(()) => stat(stats::FLOWS_INSERTED),
            // Another CPU inserted the same flow first: one insertion, not two.
            Err(EEXIST) => {}
            Err(_) => stat(stats::FLOW_INSERT_FAILED),
        },
    }
}

const _: () = assert!(core::mem::size_of::<FlowKey>() == 40);
const _: () = assert!(MAX_TCP_OPTION_BYTES % 8 == 0);
const _: () = assert!(core::mem::offset_of!(FlowKey, dst_addr) == 16);
const _: () = assert!(core::mem::offset_of!(FlowKey, src_port) == 32);
const _: () = assert!(core::mem::offset_of!(FlowKey, dst_port) == 34);
const _: () = assert!(core::mem::offset_of!(FlowKey, ip_version) == 36);
