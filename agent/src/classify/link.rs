//! Capture link types to Ethernet frames.
//!
//! The kernel programs see Ethernet, so replay turns every frame into one before
//! classifying: Linux cooked headers (SLL, SLL2) and BSD loopback give their
//! EtherType to a synthetic 14-byte Ethernet header, raw IP gets one from its version
//! nibble. Both classifiers then see byte-identical input.

use agent_common::proto::{ETH_P_IPV4, ETH_P_IPV6, PPP_IPV4, PPP_IPV6};

/// The link types replay understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_LINUX_SLL (113).
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276).
    LinuxSll2,
    /// LINKTYPE_RAW (101), DLT_RAW (12, 14), LINKTYPE_IPV4 (228), LINKTYPE_IPV6 (229).
    RawIp,
    /// LINKTYPE_NULL (0) and LINKTYPE_LOOP (108): a 4-byte address family.
    Loopback,
    /// LINKTYPE_PPP (9) and LINKTYPE_PPP_HDLC (50): an optional `ff 03` address and
    /// control, then the PPP protocol (one byte when compressed).
    Ppp,
    /// LINKTYPE_NFLOG (239): what `tcpdump -i nflog:N` writes from an nftables
    /// `log group N` rule; the packet is a TLV among others, from the IP header on.
    Nflog,
}

impl LinkType {
    /// The link type with pcap number `n`, if replay supports it. Only the low 16
    /// bits name the link type; the upper ones carry FCS information (pcap spec).
    pub fn from_pcap(n: u32) -> Option<LinkType> {
        match n & 0xffff {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            0 | 108 => Some(LinkType::Loopback),
            9 | 50 => Some(LinkType::Ppp),
            239 => Some(LinkType::Nflog),
            _ => None,
        }
    }
}

const ZERO_MACS: [u8; 12] = [0; 12];

fn with_ethertype(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + payload.len());
    frame.extend_from_slice(&ZERO_MACS);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// NFLOG: the 4-byte header (address family, version, resource id), then TLVs of
/// a 16-bit length (header included) and type, in the capturing host's byte order,
/// each padded to 4 bytes. Type 9 (NFULA_PAYLOAD) is the packet.
const NFLOG_HLEN: usize = 4;
const NFULA_PAYLOAD: u16 = 9;
/// TLVs read before giving up on finding the payload.
const MAX_NFLOG_TLVS: usize = 32;

/// The packet inside an NFLOG record, and its address family.
fn nflog_payload(data: &[u8]) -> Option<(u8, &[u8])> {
    let family = *data.first()?;
    let mut off = NFLOG_HLEN;
    for _ in 0..MAX_NFLOG_TLVS {
        let tlv = data.get(off..off + 4)?;
        // Host byte order: the reading whose length fits the record (the little-endian
        // one when neither does, a capture cut inside its payload).
        let le = (u16::from_le_bytes([tlv[0], tlv[1]]), u16::from_le_bytes([tlv[2], tlv[3]]));
        let be = (u16::from_be_bytes([tlv[0], tlv[1]]), u16::from_be_bytes([tlv[2], tlv[3]]));
        let fits = |len: u16| len >= 4 && off + usize::from(len) <= data.len();
        let (len, kind) = if fits(le.0) || !fits(be.0) { le } else { be };
        let len = usize::from(len);
        if len < 4 {
            return None;
        }
        if kind & 0x7fff == NFULA_PAYLOAD {
            // A capture cut short keeps what it has of the packet.
            let end = (off + len).min(data.len());
            return Some((family, &data[off + 4..end]));
        }
        off += len.div_ceil(4) * 4;
    }
    None
}

/// The EtherType of a PPP frame's payload and where it starts: IPv4 and IPv6, else
/// none (LCP, IPCP and the like are counted as `other`).
fn ppp_payload(data: &[u8]) -> Option<(u16, &[u8])> {
    let data = if data.starts_with(&[0xff, 0x03]) { &data[2..] } else { data };
    let first = *data.first()?;
    // Protocol field compression: an odd first byte is the whole (one-byte) field.
    let (proto, rest) = if first & 1 == 1 {
        (u16::from(first), &data[1..])
    } else {
        (u16::from_be_bytes([first, *data.get(1)?]), &data[2..])
    };
    let ethertype = match proto {
        PPP_IPV4 => ETH_P_IPV4,
        PPP_IPV6 => ETH_P_IPV6,
        _ => 0,
    };
    Some((ethertype, rest))
}

/// The frame as Ethernet, or `None` when the link header itself is cut short.
pub fn to_ethernet(link: LinkType, data: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    match link {
        LinkType::Ethernet => Some(Cow::Borrowed(data)),
        LinkType::LinuxSll => {
            let proto = u16::from_be_bytes([*data.get(14)?, *data.get(15)?]);
            Some(Cow::Owned(with_ethertype(proto, &data[16..])))
        }
        LinkType::LinuxSll2 => {
            let proto = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
            data.get(19)?;
            Some(Cow::Owned(with_ethertype(proto, &data[20..])))
        }
        LinkType::RawIp => {
            let ethertype = match data.first()? >> 4 {
                6 => ETH_P_IPV6,
                _ => ETH_P_IPV4,
            };
            Some(Cow::Owned(with_ethertype(ethertype, data)))
        }
        LinkType::Loopback => {
            let family = data.get(..4)?;
            // The family is in the capturing host's byte order: take the reading that
            // is a small number.
            let le = u32::from_le_bytes(family.try_into().ok()?);
            let family = if le < 256 { le } else { u32::from_be_bytes(family.try_into().ok()?) };
            let ethertype = match family {
                2 => ETH_P_IPV4,
                24 | 28 | 30 => ETH_P_IPV6,
                // Some writers put an EtherType in the last two bytes instead of an
                // address family (Wireshark reads it so).
                _ => match u16::from_be_bytes([data[2], data[3]]) {
                    t @ (ETH_P_IPV4 | ETH_P_IPV6) => t,
                    _ => 0,
                },
            };
            Some(Cow::Owned(with_ethertype(ethertype, &data[4..])))
        }
        LinkType::Ppp => {
            let (ethertype, payload) = ppp_payload(data)?;
            Some(Cow::Owned(with_ethertype(ethertype, payload)))
        }
        LinkType::Nflog => {
            let (family, payload) = nflog_payload(data)?;
            let ethertype = match family {
                AF_INET => ETH_P_IPV4,
                AF_INET6 => ETH_P_IPV6,
                _ => 0,
            };
            Some(Cow::Owned(with_ethertype(ethertype, payload)))
        }
    }
}

/// Linux's address family numbers, as NFLOG records them.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sll_keeps_the_protocol_and_drops_the_16_byte_header() {
        let mut sll = vec![0u8; 16];
        sll[14..16].copy_from_slice(&0x0800u16.to_be_bytes());
        sll.extend_from_slice(&[0x45, 1, 2]);
        let eth = to_ethernet(LinkType::LinuxSll, &sll).unwrap();
        assert_eq!(&eth[12..], &[0x08, 0x00, 0x45, 1, 2]);
    }

    #[test]
    fn raw_ip_version_picks_the_ethertype() {
        assert_eq!(&to_ethernet(LinkType::RawIp, &[0x60, 0]).unwrap()[12..14], &[0x86, 0xdd]);
        assert_eq!(&to_ethernet(LinkType::RawIp, &[0x45, 0]).unwrap()[12..14], &[0x08, 0x00]);
        assert!(to_ethernet(LinkType::RawIp, &[]).is_none());
    }

    #[test]
    fn loopback_family_in_either_byte_order() {
        assert_eq!(&to_ethernet(LinkType::Loopback, &[2, 0, 0, 0, 0x45]).unwrap()[12..14], &[8, 0]);
        assert_eq!(&to_ethernet(LinkType::Loopback, &[0, 0, 0, 30, 0x60]).unwrap()[12..14], &[0x86, 0xdd]);
        assert!(to_ethernet(LinkType::LinuxSll2, &[0; 19]).is_none());
    }

    #[test]
    fn loopback_header_holding_an_ethertype_is_read_as_one() {
        assert_eq!(&to_ethernet(LinkType::Loopback, &[0x0f, 0, 8, 0, 0x45]).unwrap()[12..14], &[8, 0]);
        assert_eq!(&to_ethernet(LinkType::Loopback, &[0x0f, 0, 0x12, 0x34, 0x45]).unwrap()[12..14], &[0, 0]);
    }

    #[test]
    fn ppp_with_and_without_address_control_and_compressed_protocol() {
        assert_eq!(&to_ethernet(LinkType::Ppp, &[0xff, 0x03, 0x00, 0x21, 0x45, 7]).unwrap()[12..], &[8, 0, 0x45, 7]);
        assert_eq!(&to_ethernet(LinkType::Ppp, &[0x00, 0x57, 0x60]).unwrap()[12..], &[0x86, 0xdd, 0x60]);
        assert_eq!(&to_ethernet(LinkType::Ppp, &[0x21, 0x45]).unwrap()[12..], &[8, 0, 0x45]);
        // LCP: not IP, so no EtherType pathwatch reads.
        assert_eq!(&to_ethernet(LinkType::Ppp, &[0xff, 0x03, 0xc0, 0x21, 1]).unwrap()[12..], &[0, 0, 1]);
        assert!(to_ethernet(LinkType::Ppp, &[0xff, 0x03]).is_none());
    }

    /// An NFLOG record as the kernel writes it on a little-endian host: prefix and
    /// hardware-header TLVs, then the payload.
    fn nflog(family: u8, payload: &[u8]) -> Vec<u8> {
        let mut r = vec![family, 0, 0, 5];
        let tlv = |r: &mut Vec<u8>, kind: u16, value: &[u8]| {
            r.extend_from_slice(&((value.len() + 4) as u16).to_le_bytes());
            r.extend_from_slice(&kind.to_le_bytes());
            r.extend_from_slice(value);
            r.resize(r.len().div_ceil(4) * 4, 0);
        };
        tlv(&mut r, 1, &[0x08, 0x00, 3, 0]);
        tlv(&mut r, 10, b"drop-dtls\0");
        tlv(&mut r, NFULA_PAYLOAD, payload);
        r
    }

    #[test]
    fn nflog_finds_the_payload_tlv_after_others() {
        let v4 = nflog(2, &[0x45, 0, 0, 20, 9]);
        assert_eq!(&to_ethernet(LinkType::Nflog, &v4).unwrap()[12..], &[8, 0, 0x45, 0, 0, 20, 9]);
        let v6 = nflog(10, &[0x60, 1]);
        assert_eq!(&to_ethernet(LinkType::Nflog, &v6).unwrap()[12..], &[0x86, 0xdd, 0x60, 1]);
    }

    #[test]
    fn nflog_cut_inside_the_payload_keeps_what_there_is_and_without_one_is_none() {
        let whole = nflog(2, &[0x45; 40]);
        let eth = to_ethernet(LinkType::Nflog, &whole[..whole.len() - 10]).unwrap();
        assert_eq!(eth.len(), 14 + 30);
        let no_payload = &whole[..4 + 8 + 16];
        assert!(to_ethernet(LinkType::Nflog, no_payload).is_none());
    }
}
