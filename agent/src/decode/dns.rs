//! DNS messages from event snaps: header and first question, with hickory-proto.
//!
//! Only the header and the question are read: responses are often cut (by the
//! event's snap or the capture), and the detectors need no more.

use hickory_proto::{
    op::{Header, MessageType, Query},
    rr::RecordType,
    serialize::binary::{BinDecodable, BinDecoder},
};

use super::name::DnsName;

/// What the detectors need of a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsMessage {
    /// Transaction id.
    pub id: u16,
    /// QR set.
    pub is_response: bool,
    /// RCODE (low 4 bits of the header).
    pub rcode: u8,
    /// The first question, when it could be read.
    pub question: Option<Question>,
}

/// A question.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Question {
    /// QNAME.
    pub name: DnsName,
    /// QTYPE.
    pub qtype: u16,
}

/// Decodes the header and first question of `bytes`; `None` when not even the
/// 12-byte header is there.
pub fn decode(bytes: &[u8]) -> Option<DnsMessage> {
    let mut decoder = BinDecoder::new(bytes);
    let header = Header::read(&mut decoder).ok()?;
    let question = if header.counts.queries > 0 {
        plain_question(&bytes[HEADER_LEN..]).or_else(|| {
            Query::read(&mut decoder)
                .ok()
                .map(|q| Question { name: DnsName::from_labels(q.name().iter()), qtype: u16::from(q.query_type()) })
        })
    } else {
        None
    };
    Some(DnsMessage {
        id: header.metadata.id,
        is_response: header.metadata.message_type == MessageType::Response,
        rcode: bytes[3] & 0x0f,
        question,
    })
}

/// Length of the DNS header, where the first question starts.
const HEADER_LEN: usize = 12;

/// The longest question name [`plain_question`] reads itself, as encoded (length
/// bytes and the root's zero included): well inside hickory's 255, so that every name
/// it accepts hickory accepts too.
const PLAIN_NAME_MAX: usize = 128;

/// The common question read without hickory: a name of plain labels (no compression
/// pointer, each at most 63 bytes, at most [`PLAIN_NAME_MAX`] encoded) followed by
/// QTYPE and QCLASS, which is every question a client sends. This runs for every DNS
/// event, and hickory's `Name` is a second copy of the name built only to be copied
/// again into a [`DnsName`]. Anything else (`None`) is left to hickory, so the result
/// is hickory's for every input: same labels, and QTYPE through `RecordType` as there.
fn plain_question(rest: &[u8]) -> Option<Question> {
    let mut at = 0;
    loop {
        let len = usize::from(*rest.get(at)?);
        if len == 0 {
            break;
        }
        if len > 63 || at + 1 + len + 1 > PLAIN_NAME_MAX {
            return None;
        }
        at += 1 + len;
    }
    let fixed = rest.get(at + 1..at + 5)?;
    let qtype = u16::from(RecordType::from(u16::from_be_bytes([fixed[0], fixed[1]])));
    Some(Question { name: DnsName::from_wire_labels(&rest[..at]), qtype })
}

/// The mnemonic of a query type (`A`, `AAAA`, …), or `TYPE<n>` (RFC 3597).
pub fn qtype_name(qtype: u16) -> String {
    match qtype {
        1 => "A".into(),
        2 => "NS".into(),
        5 => "CNAME".into(),
        6 => "SOA".into(),
        12 => "PTR".into(),
        15 => "MX".into(),
        16 => "TXT".into(),
        28 => "AAAA".into(),
        33 => "SRV".into(),
        35 => "NAPTR".into(),
        43 => "DS".into(),
        44 => "SSHFP".into(),
        46 => "RRSIG".into(),
        48 => "DNSKEY".into(),
        64 => "SVCB".into(),
        65 => "HTTPS".into(),
        255 => "ANY".into(),
        n => format!("TYPE{n}"),
    }
}

/// The mnemonic of an RCODE (`NOERROR`, `SERVFAIL`, …), or `RCODE<n>`.
pub fn rcode_name(rcode: u8) -> String {
    rcode_mnemonic(rcode).map_or_else(|| format!("RCODE{rcode}"), str::to_string)
}

/// The mnemonic of an RCODE that has one: [`rcode_name`] without allocating, for
/// counting every response.
pub fn rcode_mnemonic(rcode: u8) -> Option<&'static str> {
    Some(match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `A mus.cisco.com`, id 0x03a7, as the AnyConnect seed capture sends it.
    const MUS_QUERY: &[u8] =
        b"\x03\xa7\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03mus\x05cisco\x03com\x00\x00\x01\x00\x01";

    #[test]
    fn query_header_and_question() {
        let m = decode(MUS_QUERY).unwrap();
        assert_eq!((m.id, m.is_response, m.rcode), (0x03a7, false, 0));
        let q = m.question.unwrap();
        assert_eq!((q.name.to_string(), q.qtype), ("mus.cisco.com".to_string(), 1));
    }

    #[test]
    fn servfail_response_and_case_folding() {
        let mut r = MUS_QUERY.to_vec();
        r[2] = 0x81;
        r[3] = 0x82;
        r[13] = b'M';
        let m = decode(&r).unwrap();
        assert!(m.is_response);
        assert_eq!(rcode_name(m.rcode), "SERVFAIL");
        assert_eq!(m.question.unwrap().name, DnsName::from_dotted("mus.cisco.com"));
    }

    #[test]
    fn truncated_messages_keep_what_they_have() {
        assert!(decode(&MUS_QUERY[..11]).is_none());
        let m = decode(&MUS_QUERY[..20]).unwrap();
        assert_eq!(m.id, 0x03a7);
        assert!(m.question.is_none());
    }

    #[test]
    fn compression_loop_and_lying_counts_do_not_hang() {
        // qdcount 0xffff, name is a pointer to itself.
        let m = b"\x00\x01\x01\x00\xff\xff\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01";
        let d = decode(m).unwrap();
        assert!(d.question.is_none());
    }

    /// The question as hickory alone reads it.
    fn hickory_question(message: &[u8]) -> Option<Question> {
        let mut decoder = BinDecoder::new(message);
        Header::read(&mut decoder).ok()?;
        let q = Query::read(&mut decoder).ok()?;
        Some(Question { name: DnsName::from_labels(q.name().iter()), qtype: u16::from(q.query_type()) })
    }

    #[test]
    fn the_plain_question_reader_agrees_with_hickory_wherever_it_answers() {
        let mut long = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00".to_vec();
        for _ in 0..4 {
            long.push(63);
            long.extend_from_slice(&[b'Q'; 63]);
        }
        long.extend_from_slice(b"\x00\x00\x01\x00\x01");
        let pointer = b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03mus\xc0\x00\x00\x01\x00\x01";
        let mut messages = vec![MUS_QUERY.to_vec(), long, pointer.to_vec()];
        // Every byte of the question set to values that mean a length, a pointer, a
        // reserved label type, a capital and a type hickory renumbers (ANAME, 65305).
        for at in 12..MUS_QUERY.len() {
            for b in [0u8, 1, 2, 3, 5, 15, 63, 64, 0x80, 0xc0, 0xff, b'M'] {
                let mut m = MUS_QUERY.to_vec();
                m[at] = b;
                messages.push(m);
            }
        }
        let mut aname = MUS_QUERY.to_vec();
        let n = aname.len();
        aname[n - 4..n - 2].copy_from_slice(&65305u16.to_be_bytes());
        messages.push(aname);
        let mut plain = 0;
        for m in &messages {
            for end in 12..=m.len() {
                let m = &m[..end];
                let hickory = hickory_question(m);
                if let Some(q) = plain_question(&m[12..]) {
                    assert_eq!(Some(q), hickory, "{m:02x?}");
                    plain += 1;
                }
                assert_eq!(decode(m).and_then(|d| d.question), hickory, "{m:02x?}");
            }
        }
        assert!(plain > 100, "the plain reader answered {plain} times");
    }

    #[test]
    fn control_bytes_in_labels_survive_and_are_escaped() {
        let q = b"\x00\x02\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03\x01\x02\x03\x03com\x00\x00\x01\x00\x01";
        let m = decode(q).unwrap();
        assert_eq!(m.question.unwrap().name.to_string(), "\\001\\002\\003.com");
    }
}
