//! Recognises a UDP payload made of DTLS records, by header, on any port.
//!
//! The records must chain exactly to the end of the datagram (as Wireshark's heuristic
//! requires), or run past the end of a capture cut short. Handshake records of epoch 0
//! have their message types collected; later epochs are encrypted.

use agent_common::proto::*;

use crate::packet::Packet;

/// Walks the records in `[payload_off, end)`; `claimed_end` is where the UDP header
/// says the datagram ends. Returns, packed for a separately verified global function:
/// bits 0-7 records, 8-15 content mask (bit `t - 20`), 16-31 first record version,
/// 32-63 handshake mask; 0 when the payload is not DTLS.
#[inline(always)]
pub fn walk_packed<P: Packet>(pkt: &P, payload_off: usize, end: usize, claimed_end: usize) -> u64 {
    let mut off = payload_off;
    let mut records: u64 = 0;
    let mut content_mask: u64 = 0;
    let mut hs_mask: u64 = 0;
    let mut version: u64 = 0;
    for _ in 0..MAX_DTLS_RECORDS {
        if off + DTLS_RECORD_HLEN > end || off > MAX_PARSE_OFFSET {
            break;
        }
        let Some(hdr) = pkt.ptr_at::<[u8; DTLS_RECORD_HLEN]>(off) else {
            break;
        };
        let hdr = unsafe { *hdr };
        let ct = hdr[0];
        let v = u16::from_be_bytes([hdr[1], hdr[2]]);
        if !is_dtls_content_type(ct) || !is_dtls_version(v) {
            return 0;
        }
        let epoch = u16::from_be_bytes([hdr[3], hdr[4]]);
        let rec_len = u16::from_be_bytes([hdr[11], hdr[12]]) as usize;
        if records == 0 {
            version = v as u64;
        }
        records += 1;
        content_mask |= 1 << (ct - 20);
        let body = off + DTLS_RECORD_HLEN;
        let rec_end = body + rec_len;
        if ct == CT_HANDSHAKE && epoch == 0 {
            hs_mask |= handshake_types(pkt, body, if rec_end < end { rec_end } else { end }) as u64;
        }
        off = rec_end;
        let packed = records | (content_mask << 8) | (version << 16) | (hs_mask << 32);
        if off == claimed_end {
            return packed;
        }
        if off > claimed_end {
            return 0;
        }
    }
    // No exact fill: accept only a chain cut by the end of the capture.
    if records != 0 && end < claimed_end && off >= end {
        return records | (content_mask << 8) | (version << 16) | (hs_mask << 32);
    }
    0
}

/// Types of the handshake messages in `[off, end)`, as a bit mask.
#[inline(always)]
fn handshake_types<P: Packet>(pkt: &P, mut off: usize, end: usize) -> u32 {
    let mut mask = 0u32;
    for _ in 0..MAX_DTLS_HANDSHAKE_MSGS {
        if off + 1 > end || off > MAX_PARSE_OFFSET {
            break;
        }
        let Some(t) = pkt.u8_at(off) else { break };
        if t < 32 {
            mask |= 1 << t;
        }
        if off + DTLS_HANDSHAKE_HLEN > end {
            break;
        }
        let Some(frag) = pkt.ptr_at::<[u8; 3]>(off + 9) else { break };
        let frag = unsafe { *frag };
        let frag_len = ((frag[0] as usize) << 16) | ((frag[1] as usize) << 8) | frag[2] as usize;
        off += DTLS_HANDSHAKE_HLEN + frag_len;
    }
    mask
}
