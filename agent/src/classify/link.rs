//! Capture link types to Ethernet frames.
//!
//! The kernel programs see Ethernet, so replay turns every frame into one before
//! classifying: Linux cooked headers (SLL, SLL2) and BSD loopback give their
//! EtherType to a synthetic 14-byte Ethernet header, raw IP gets one from its version
//! nibble. Both classifiers then see byte-identical input.

use agent_common::proto::{ETH_P_IPV4, ETH_P_IPV6};

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
                _ => 0,
            };
            Some(Cow::Owned(with_ethertype(ethertype, &data[4..])))
        }
    }
}

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
}
