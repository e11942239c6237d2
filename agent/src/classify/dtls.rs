//! DTLS records by header, on any port. Mirrors `agent-ebpf/src/dtls.rs`: records
//! must chain exactly to the end of the datagram, or run past the end of a capture
//! cut short; handshake message types are collected from epoch-0 records.

use agent_common::proto::*;

/// What the walk found in a DTLS datagram.
#[derive(Default, Debug, PartialEq, Eq)]
pub(crate) struct DtlsSummary {
    pub records: u8,
    pub content_mask: u8,
    pub first_version: u16,
    pub handshake_mask: u32,
}

fn be16(b: &[u8], at: usize) -> usize {
    u16::from_be_bytes([b[at], b[at + 1]]) as usize
}

/// Walks `frame[payload_off..end]`; `claimed_end` is where the UDP header says the
/// datagram ends.
pub(crate) fn walk(frame: &[u8], payload_off: usize, end: usize, claimed_end: usize) -> Option<DtlsSummary> {
    let mut s = DtlsSummary::default();
    let mut off = payload_off;
    for _ in 0..MAX_DTLS_RECORDS {
        if off + DTLS_RECORD_HLEN > end || off > MAX_PARSE_OFFSET {
            break;
        }
        let hdr = &frame[off..off + DTLS_RECORD_HLEN];
        let ct = hdr[0];
        let version = be16(hdr, 1) as u16;
        if !is_dtls_content_type(ct) || !is_dtls_version(version) {
            return None;
        }
        let epoch = be16(hdr, 3);
        let rec_len = be16(hdr, 11);
        if s.records == 0 {
            s.first_version = version;
        }
        s.records += 1;
        s.content_mask |= 1 << (ct - 20);
        let body = off + DTLS_RECORD_HLEN;
        let rec_end = body + rec_len;
        if ct == CT_HANDSHAKE && epoch == 0 {
            s.handshake_mask |= handshake_types(frame, body, rec_end.min(end));
        }
        off = rec_end;
        if off == claimed_end {
            return Some(s);
        }
        if off > claimed_end {
            return None;
        }
    }
    (s.records != 0 && end < claimed_end && off >= end).then_some(s)
}

fn handshake_types(frame: &[u8], mut off: usize, end: usize) -> u32 {
    let mut mask = 0u32;
    for _ in 0..MAX_DTLS_HANDSHAKE_MSGS {
        if off + 1 > end || off > MAX_PARSE_OFFSET {
            break;
        }
        let t = frame[off];
        if t < 32 {
            mask |= 1 << t;
        }
        if off + DTLS_HANDSHAKE_HLEN > end {
            break;
        }
        let f = &frame[off + 9..off + 12];
        let frag_len = ((f[0] as usize) << 16) | ((f[1] as usize) << 8) | f[2] as usize;
        off += DTLS_HANDSHAKE_HLEN + frag_len;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn client_hello_filling_the_datagram() {
        let d = record(22, DTLS_1_2, 0, &handshake(1, 40));
        let s = walk(&d, 0, d.len(), d.len()).unwrap();
        assert_eq!((s.records, s.content_mask, s.first_version, s.handshake_mask), (1, 0b100, DTLS_1_2, 1 << 1));
    }

    #[test]
    fn flight_of_three_records_collects_every_type() {
        let mut d = record(22, DTLS_CISCO, 0, &handshake(2, 10));
        d.extend(record(22, DTLS_CISCO, 0, &handshake(11, 20)));
        d.extend(record(20, DTLS_CISCO, 0, &[1]));
        let s = walk(&d, 0, d.len(), d.len()).unwrap();
        assert_eq!(s.records, 3);
        assert_eq!(s.handshake_mask, (1 << 2) | (1 << 11));
        assert_eq!(s.content_mask, 0b101);
    }

    #[test]
    fn encrypted_handshake_is_not_read_for_types() {
        let d = record(22, DTLS_1_0, 1, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
        assert_eq!(walk(&d, 0, d.len(), d.len()).unwrap().handshake_mask, 0);
    }

    #[test]
    fn trailing_garbage_or_overrun_or_wrong_version_is_not_dtls() {
        let mut d = record(23, DTLS_1_2, 1, &[0; 8]);
        d.push(0);
        assert_eq!(walk(&d, 0, d.len(), d.len()), None);
        let d = record(23, 0x0303, 1, &[0; 8]);
        assert_eq!(walk(&d, 0, d.len(), d.len()), None);
        let d = record(23, DTLS_1_2, 1, &[0; 8]);
        assert_eq!(walk(&d, 0, d.len(), d.len() - 1), None);
    }

    #[test]
    fn capture_cut_inside_a_record_still_counts() {
        let d = record(22, DTLS_1_2, 0, &handshake(1, 200));
        let cut = &d[..60];
        assert!(walk(cut, 0, cut.len(), d.len()).is_some());
    }
}
