//! DTLS, recognised by its record headers on any port.
//!
//! The records must chain exactly to the end of the datagram (as Wireshark's heuristic
//! requires), or run past the end of a capture cut short. Handshake records of epoch 0
//! have their message types collected; later epochs are encrypted.
//!
//! The result is packed in one `u64` so that the kernel can return it from a separately
//! verified global function: bits 0-7 records, 8-15 content mask (bit `t - 20`), 16-31
//! the first record's version, 32-63 the handshake mask.

use super::{Packet, be16};
use crate::proto::{
    CT_HANDSHAKE, DTLS_HANDSHAKE_HLEN, DTLS_RECORD_HLEN, MAX_DTLS_HANDSHAKE_MSGS, MAX_DTLS_RECORDS, MAX_PARSE_OFFSET,
    is_dtls_content_type, is_dtls_version,
};

/// Field offsets.
pub mod field {
    /// Record: content type.
    pub const CONTENT_TYPE: usize = 0;
    /// Record: protocol version.
    pub const VERSION: usize = 1;
    /// Record: epoch (then 6 bytes of sequence number).
    pub const EPOCH: usize = 3;
    /// Record: length of the record body.
    pub const LENGTH: usize = 11;
    /// Handshake message: type (then length, message sequence, fragment offset).
    pub const HS_TYPE: usize = 0;
    /// Handshake message: fragment length (24 bits).
    pub const HS_FRAGMENT_LEN: usize = 9;
}

/// Records walked (bits 0-7 of a packed walk).
#[inline(always)]
pub const fn records(packed: u64) -> u8 {
    packed as u8
}
/// Content types seen, bit `t - 20` (bits 8-15).
#[inline(always)]
pub const fn content_mask(packed: u64) -> u8 {
    (packed >> 8) as u8
}
/// The first record's version (bits 16-31).
#[inline(always)]
pub const fn version(packed: u64) -> u16 {
    (packed >> 16) as u16
}
/// Handshake message types seen in epoch 0, bit `h` (bits 32-63).
#[inline(always)]
pub const fn handshake_mask(packed: u64) -> u32 {
    (packed >> 32) as u32
}

#[inline(always)]
const fn pack(records: u64, content_mask: u64, version: u64, hs_mask: u64) -> u64 {
    records | (content_mask << 8) | (version << 16) | (hs_mask << 32)
}

/// The DTLS walk of the payload `[payload_off, end)` of a datagram that claims to end at
/// `claimed_end`: 0 when it is not DTLS. Settles the two common cases from the first
/// record header without the walk: a payload that starts with no DTLS record header
/// (most UDP), and a single record of anything but a cleartext handshake that fills the
/// datagram (DTLS bulk traffic). With `ONE_MESSAGE`, also a cleartext handshake record
/// that fills the datagram with one whole message (a ClientHello as clients send it):
/// the fast path's case only, as the full walk's verification has no room for more
/// branches.
#[inline(always)]
pub fn classify<P: Packet, const ONE_MESSAGE: bool>(
    pkt: &P,
    payload_off: usize,
    end: usize,
    claimed_end: usize,
) -> u64 {
    if payload_off + DTLS_RECORD_HLEN > end {
        return 0;
    }
    let Some(rec) = pkt.array_at::<DTLS_RECORD_HLEN>(payload_off) else {
        return 0;
    };
    let (ct, version) = (rec[field::CONTENT_TYPE], be16(rec, field::VERSION));
    let (epoch, rec_len) = (be16(rec, field::EPOCH), be16(rec, field::LENGTH) as usize);
    if !is_dtls_content_type(ct) || !is_dtls_version(version) {
        return 0;
    }
    let fills = payload_off + DTLS_RECORD_HLEN + rec_len == claimed_end;
    if (ct != CT_HANDSHAKE || epoch != 0) && fills {
        return pack(1, 1 << (ct - 20), version as u64, 0);
    }
    if ONE_MESSAGE && fills {
        let hs_mask = single_message(pkt, payload_off + DTLS_RECORD_HLEN, end, rec_len);
        if hs_mask != 0 {
            return pack(1, 1 << (CT_HANDSHAKE - 20), version as u64, hs_mask);
        }
    }
    pkt.dtls_walk(payload_off, end, claimed_end)
}

/// The handshake mask of a cleartext handshake record at `body` holding exactly one
/// whole message (a ClientHello as a client sends it, a HelloVerifyRequest), as
/// [`handshake_types`] finds it; 0 for any other record, which the walk then reads.
#[inline(always)]
fn single_message<P: Packet>(pkt: &P, body: usize, end: usize, rec_len: usize) -> u64 {
    if body + DTLS_HANDSHAKE_HLEN > end || body > MAX_PARSE_OFFSET {
        return 0;
    }
    let Some(hs) = pkt.array_at::<DTLS_HANDSHAKE_HLEN>(body) else {
        return 0;
    };
    let f = field::HS_FRAGMENT_LEN;
    let frag_len = ((hs[f] as usize) << 16) | ((hs[f + 1] as usize) << 8) | hs[f + 2] as usize;
    let t = hs[field::HS_TYPE];
    if DTLS_HANDSHAKE_HLEN + frag_len != rec_len || t >= 32 {
        return 0;
    }
    1 << t
}

/// Walks the records in `[payload_off, end)`; `claimed_end` is where the UDP header
/// says the datagram ends. The packed result, 0 when the payload is not DTLS.
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
        let Some(hdr) = pkt.array_at::<DTLS_RECORD_HLEN>(off) else {
            break;
        };
        let ct = hdr[field::CONTENT_TYPE];
        let v = u16::from_be_bytes([hdr[field::VERSION], hdr[field::VERSION + 1]]);
        if !is_dtls_content_type(ct) || !is_dtls_version(v) {
            return 0;
        }
        let epoch = u16::from_be_bytes([hdr[field::EPOCH], hdr[field::EPOCH + 1]]);
        let rec_len = u16::from_be_bytes([hdr[field::LENGTH], hdr[field::LENGTH + 1]]) as usize;
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
        if off == claimed_end {
            return pack(records, content_mask, version, hs_mask);
        }
        if off > claimed_end {
            return 0;
        }
    }
    // No exact fill: accept only a chain cut by the end of the capture.
    if records != 0 && end < claimed_end && off >= end {
        return pack(records, content_mask, version, hs_mask);
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
        let Some(t) = pkt.u8_at(off + field::HS_TYPE) else { break };
        if t < 32 {
            mask |= 1 << t;
        }
        if off + DTLS_HANDSHAKE_HLEN > end {
            break;
        }
        let Some(frag) = pkt.array_at::<3>(off + field::HS_FRAGMENT_LEN) else { break };
        let frag_len = ((frag[0] as usize) << 16) | ((frag[1] as usize) << 8) | frag[2] as usize;
        off += DTLS_HANDSHAKE_HLEN + frag_len;
    }
    mask
}

#[cfg(test)]
mod tests {
    use std::{vec, vec::Vec};

    use super::*;
    use crate::proto::{DTLS_1_0, DTLS_1_2, DTLS_CISCO};

    fn record(ct: u8, version: u16, epoch: u16, body: &[u8]) -> Vec<u8> {
        let mut r = vec![ct];
        r.extend_from_slice(&version.to_be_bytes());
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0; 6]);
        r.extend_from_slice(&(body.len() as u16).to_be_bytes());
        r.extend_from_slice(body);
        r
    }

    fn handshake(t: u8, body_len: usize) -> Vec<u8> {
        let mut h = vec![t, 0, 0, body_len as u8, 0, 0, 0, 0, 0, 0, 0, body_len as u8];
        h.resize(12 + body_len, 0xaa);
        h
    }

    fn walk(d: &[u8], end: usize, claimed_end: usize) -> Option<(u8, u8, u16, u32)> {
        let w = walk_packed(&d, 0, end, claimed_end);
        (w != 0).then(|| (records(w), content_mask(w), version(w), handshake_mask(w)))
    }

    #[test]
    fn client_hello_filling_the_datagram() {
        let d = record(22, DTLS_1_2, 0, &handshake(1, 40));
        assert_eq!(walk(&d, d.len(), d.len()), Some((1, 0b100, DTLS_1_2, 1 << 1)));
        assert_eq!(classify::<_, false>(&&d[..], 0, d.len(), d.len()), walk_packed(&&d[..], 0, d.len(), d.len()));
    }

    #[test]
    fn flight_of_three_records_collects_every_type() {
        let mut d = record(22, DTLS_CISCO, 0, &handshake(2, 10));
        d.extend(record(22, DTLS_CISCO, 0, &handshake(11, 20)));
        d.extend(record(20, DTLS_CISCO, 0, &[1]));
        assert_eq!(walk(&d, d.len(), d.len()), Some((3, 0b101, DTLS_CISCO, (1 << 2) | (1 << 11))));
    }

    #[test]
    fn encrypted_handshake_is_not_read_for_types() {
        let d = record(22, DTLS_1_0, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(walk(&d, d.len(), d.len()).map(|w| w.3), Some(0));
    }

    #[test]
    fn single_application_data_record_without_the_walk() {
        let d = record(23, DTLS_1_2, 1, &[0; 30]);
        let w = classify::<_, true>(&&d[..], 0, d.len(), d.len());
        assert_eq!((records(w), content_mask(w), version(w)), (1, 0b1000, DTLS_1_2));
    }

    #[test]
    fn trailing_garbage_or_overrun_or_wrong_version_is_not_dtls() {
        let mut d = record(23, DTLS_1_2, 1, &[0; 8]);
        d.push(0);
        assert_eq!(walk(&d, d.len(), d.len()), None);
        let d = record(23, 0x0303, 1, &[0; 8]);
        assert_eq!(walk(&d, d.len(), d.len()), None);
        assert_eq!(classify::<_, true>(&&d[..], 0, d.len(), d.len()), 0);
        let d = record(23, DTLS_1_2, 1, &[0; 8]);
        assert_eq!(walk(&d, d.len(), d.len() - 1), None);
    }

    #[test]
    fn the_one_message_shortcut_answers_as_the_walk() {
        let hello = record(22, DTLS_1_2, 0, &handshake(1, 40));
        let mut two = handshake(1, 10);
        two.extend(handshake(11, 5));
        let mut fragment = handshake(1, 40);
        fragment[11] = 20;
        fragment.truncate(12 + 20);
        let mut bad_len = handshake(1, 40);
        bad_len[11] = 39;
        let mut high_type = handshake(40, 8);
        high_type[0] = 40;
        let datagrams = [
            hello.clone(),
            record(22, DTLS_CISCO, 0, &handshake(3, 20)),
            record(22, DTLS_1_2, 0, &two),
            record(22, DTLS_1_2, 0, &fragment),
            record(22, DTLS_1_2, 0, &bad_len),
            record(22, DTLS_1_2, 0, &high_type),
            record(22, DTLS_1_2, 0, &handshake(1, 0)),
            record(22, DTLS_1_2, 0, &[1, 0, 0]),
            {
                let mut d = hello.clone();
                d.extend(record(20, DTLS_1_2, 0, &[1]));
                d
            },
        ];
        for (i, d) in datagrams.iter().enumerate() {
            for end in [d.len(), 13 + 11, 13 + 12, 20] {
                let end = end.min(d.len());
                let shortcut = classify::<_, true>(&&d[..end], 0, end, d.len());
                assert_eq!(shortcut, walk_packed(&&d[..end], 0, end, d.len()), "datagram {i} cut at {end}");
            }
        }
        assert_eq!(handshake_mask(classify::<_, true>(&&hello[..], 0, hello.len(), hello.len())), 1 << 1);
    }

    #[test]
    fn capture_cut_inside_a_record_still_counts() {
        let d = record(22, DTLS_1_2, 0, &handshake(1, 200));
        assert!(walk(&d[..60], 60, d.len()).is_some());
    }
}
