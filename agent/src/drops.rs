//! Drops as the agent holds them: a drop record from the kernel's drop program decoded
//! into the dropped packet (an [`Event`], as the classifiers would have made it), why the
//! kernel dropped it, and where (the netfilter hook, the interfaces).
//!
//! The hook is inferred from the skb as it was freed: a packet this host made (no
//! input interface) was dropped on its way out (`output`); a received packet without a
//! route yet before routing (`prerouting`); one routed to an address of this host in
//! `input`; any other in `forward`. A too-big packet is dropped by the forwarding
//! code itself (`forward`).

use std::{collections::BTreeSet, net::IpAddr};

use agent_common::{
    EventHeader,
    drop::{DROP_F_ROUTED, DROP_INFO_LEN, DROP_SNAP, DropClass, DropInfo},
    event::HEADER_LEN,
};

use crate::{
    decode::icmp::{self, IcmpError},
    event::Event,
};

/// Where on this host a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropHook {
    /// Received, before the routing decision (netfilter prerouting, the IP input checks).
    Prerouting,
    /// Received for this host (netfilter input).
    Input,
    /// Received for another host (netfilter forward, or the forwarding code itself).
    Forward,
    /// Made by this host (netfilter output or postrouting).
    Output,
}

impl DropHook {
    /// The name used in evidence and summaries.
    pub const fn name(self) -> &'static str {
        match self {
            DropHook::Prerouting => "prerouting",
            DropHook::Input => "input",
            DropHook::Forward => "forward",
            DropHook::Output => "output",
        }
    }
}

/// One packet the kernel dropped, as a detector sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DropEvent {
    /// The dropped packet (its header's `kind` is 0 when the packet raises no event of
    /// its own, as a large DF segment seen once); `ts_ns` is the drop's time.
    pub packet: Event,
    /// The kernel's drop reason, by name (`NETFILTER_DROP`, `PKT_TOO_BIG`, ...).
    pub reason: String,
    /// What the packet was.
    pub class: DropClass,
    /// Where it was dropped.
    pub hook: DropHook,
    /// The interface it came in on (0: made here).
    pub in_ifindex: u32,
    /// Its name, when the agent could resolve it (`run` fills it in).
    pub in_ifname: Option<String>,
    /// The interface its route leads out of (0: no route yet).
    pub out_ifindex: u32,
    /// Its name, when the agent could resolve it (`run` fills it in).
    pub out_ifname: Option<String>,
    /// That interface's MTU (0: unknown).
    pub out_mtu: u32,
    /// Drop events the kernel suppressed on this CPU (over the rate) before this one.
    pub suppressed_before: u32,
    /// The packet's ICMP error, decoded, when it is one.
    pub icmp: Option<IcmpError>,
}

/// Why a drop record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DropRecordError {
    /// Shorter than a drop record's fixed part.
    #[error("drop record of {0} bytes is shorter than its fixed part")]
    Short(usize),
    /// The snap runs past the record.
    #[error("drop record snap of {0} bytes runs past the record")]
    SnapOverrun(usize),
}

impl DropEvent {
    /// Decodes a drop record; `reason_name` names the kernel's reason values, `is_local`
    /// tells whether an address belongs to this host (for the hook).
    pub fn from_record(
        record: &[u8],
        reason_name: impl Fn(u32) -> String,
        is_local: impl Fn(IpAddr) -> bool,
    ) -> Result<DropEvent, DropRecordError> {
        if record.len() < DROP_INFO_LEN + HEADER_LEN {
            return Err(DropRecordError::Short(record.len()));
        }
        // SAFETY: DropInfo and EventHeader are plain old data (repr(C), integers and
        // byte arrays), the record holds both; read_unaligned needs no alignment.
        let info: DropInfo = unsafe { std::ptr::read_unaligned(record.as_ptr().cast()) };
        let header: EventHeader = unsafe { std::ptr::read_unaligned(record[DROP_INFO_LEN..].as_ptr().cast()) };
        let snap_len = header.snap_len as usize;
        let start = DROP_INFO_LEN + HEADER_LEN;
        if snap_len > DROP_SNAP || start + snap_len > record.len() {
            return Err(DropRecordError::SnapOverrun(snap_len));
        }
        let packet = Event { header, snap: record[start..start + snap_len].to_vec() };
        let reason = reason_name(info.reason);
        let hook = infer_hook(&info, &reason, &packet, is_local);
        let icmp = (header.kind == agent_common::EventKind::IcmpError as u8).then(|| {
            let i = header.info;
            icmp::decode(i.icmp_type, i.icmp_code, i.icmp_mtu, &packet.snap)
        });
        Ok(DropEvent {
            packet,
            reason,
            class: DropClass::from_u8(info.class),
            hook,
            in_ifindex: info.in_ifindex,
            in_ifname: None,
            out_ifindex: info.route_ifindex,
            out_ifname: None,
            out_mtu: info.route_mtu,
            suppressed_before: info.suppressed_before,
            icmp,
        })
    }
}

/// Where the packet was dropped (see the module's comment).
fn infer_hook(info: &DropInfo, reason: &str, packet: &Event, is_local: impl Fn(IpAddr) -> bool) -> DropHook {
    if info.in_ifindex == 0 {
        DropHook::Output
    } else if reason == "PKT_TOO_BIG" {
        DropHook::Forward
    } else if info.flags & DROP_F_ROUTED == 0 {
        DropHook::Prerouting
    } else if is_local(packet.dst_ip()) {
        DropHook::Input
    } else {
        DropHook::Forward
    }
}

/// The name of interface `ifindex` in the agent's network namespace (`if_indextoname`).
pub fn interface_name(ifindex: u32) -> Option<String> {
    if ifindex == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` holds IF_NAMESIZE bytes, as if_indextoname requires; on success it
    // holds a NUL-terminated name.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: NUL-terminated by if_indextoname (checked above).
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(crate::printable::text(&name.to_string_lossy()))
}

/// The addresses of this host's interfaces (in the agent's network namespace), read
/// once: `getifaddrs`.
pub fn local_addresses() -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below; each entry's address
    // pointer is null or points to a sockaddr of the family it names.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut cur = head;
        while !cur.is_null() {
            let sa = (*cur).ifa_addr;
            if !sa.is_null() {
                match (*sa).sa_family as i32 {
                    libc::AF_INET => {
                        let sin = &*(sa as *const libc::sockaddr_in);
                        out.insert(IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(sa as *const libc::sockaddr_in6);
                        out.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
        libc::freeifaddrs(head);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::EventKind;

    fn record(info: DropInfo, header: EventHeader, snap: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; DROP_INFO_LEN + HEADER_LEN];
        // SAFETY: the buffer holds both; write_unaligned needs no alignment.
        unsafe {
            std::ptr::write_unaligned(out.as_mut_ptr().cast(), info);
            std::ptr::write_unaligned(out[DROP_INFO_LEN..].as_mut_ptr().cast(), header);
        }
        out.extend_from_slice(snap);
        out.resize(DROP_INFO_LEN + HEADER_LEN + DROP_SNAP, 0xee);
        out
    }

    fn header(dst: [u8; 4]) -> EventHeader {
        let mut dst_addr = [0u8; 16];
        dst_addr[..4].copy_from_slice(&dst);
        EventHeader { kind: EventKind::Dns as u8, ip_version: 4, dst_addr, snap_len: 3, ..Default::default() }
    }

    fn decode(info: DropInfo, dst: [u8; 4]) -> DropEvent {
        let names = |v: u32| if v == 12 { "NETFILTER_DROP".to_string() } else { "PKT_TOO_BIG".to_string() };
        let local = |a: IpAddr| a == IpAddr::from([198, 18, 0, 1]);
        DropEvent::from_record(&record(info, header(dst), b"abc"), names, local).unwrap()
    }

    #[test]
    fn the_hook_follows_from_the_interfaces_the_route_and_the_address() {
        let made_here = DropInfo { reason: 12, in_ifindex: 0, flags: DROP_F_ROUTED, ..Default::default() };
        assert_eq!(decode(made_here, [198, 18, 1, 2]).hook, DropHook::Output);
        let unrouted = DropInfo { reason: 12, in_ifindex: 3, flags: 0, ..Default::default() };
        assert_eq!(decode(unrouted, [198, 18, 0, 1]).hook, DropHook::Prerouting);
        let to_us = DropInfo { reason: 12, in_ifindex: 3, flags: DROP_F_ROUTED, ..Default::default() };
        assert_eq!(decode(to_us, [198, 18, 0, 1]).hook, DropHook::Input);
        assert_eq!(decode(to_us, [198, 18, 1, 2]).hook, DropHook::Forward);
        let too_big = DropInfo { reason: 93, in_ifindex: 3, flags: 0, route_mtu: 1400, ..Default::default() };
        let d = decode(too_big, [198, 18, 1, 2]);
        assert_eq!((d.hook, d.reason.as_str(), d.out_mtu), (DropHook::Forward, "PKT_TOO_BIG", 1400));
        assert_eq!(d.packet.snap, b"abc");
    }

    #[test]
    fn short_and_overrunning_records_are_refused() {
        let names = |_| String::new();
        assert_eq!(DropEvent::from_record(&[0; 40], names, |_| false), Err(DropRecordError::Short(40)));
        let mut h = header([1, 2, 3, 4]);
        h.snap_len = 400;
        let r = record(DropInfo::default(), h, b"");
        assert_eq!(DropEvent::from_record(&r, |_| String::new(), |_| false), Err(DropRecordError::SnapOverrun(400)));
    }
}
