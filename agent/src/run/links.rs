//! Interfaces coming and going, from the kernel's rtnetlink link notifications (no
//! polling): a VPN server creates a tun device per session, and an interface the
//! agent watches may be deleted and created again.

use std::os::fd::{AsRawFd, RawFd};

use netlink_packet_core::{NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage, LinkXdp},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// rtnetlink multicast group for link changes (RTNLGRP_LINK).
const RTNLGRP_LINK: u32 = 1;

/// A link change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    /// A link exists (new, or changed state) with this name and index.
    Up {
        /// Interface name.
        name: String,
        /// Interface index.
        ifindex: u32,
    },
    /// A link was deleted.
    Gone {
        /// Interface name.
        name: String,
        /// Interface index.
        ifindex: u32,
    },
}

/// A non-blocking rtnetlink socket subscribed to link changes.
pub struct LinkWatch {
    socket: Socket,
    buf: Vec<u8>,
}

impl AsRawFd for LinkWatch {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

impl LinkWatch {
    /// Subscribes to link notifications in this network namespace.
    pub fn new() -> std::io::Result<LinkWatch> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        socket.add_membership(RTNLGRP_LINK)?;
        socket.set_non_blocking(true)?;
        Ok(LinkWatch { socket, buf: vec![0; 64 * 1024] })
    }

    /// Reads every pending notification; `WouldBlock` when there is none left.
    pub fn read(&mut self) -> std::io::Result<Vec<LinkChange>> {
        let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
        Ok(parse(&self.buf[..n]))
    }
}

/// The ids of the XDP programs attached to interface `ifindex` of this network
/// namespace (RTM_GETLINK, IFLA_XDP): empty when there is none or the interface is
/// gone. Program ids are global, so unlike an ifindex they tell which process holds
/// the interface when other namespaces use the same index.
pub fn xdp_prog_ids(ifindex: u32) -> std::io::Result<Vec<u32>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut link = LinkMessage::default();
    link.header.index = ifindex;
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::GetLink(link));
    req.header.flags = NLM_F_REQUEST;
    req.header.sequence_number = 1;
    req.finalize();
    let mut out = vec![0u8; req.buffer_len()];
    req.serialize(&mut out);
    socket.send(&out, 0)?;
    let mut buf = vec![0u8; 64 * 1024];
    let n = socket.recv(&mut &mut buf[..], 0)?;
    let mut ids = Vec::new();
    let attributes = match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..n]).map(|m| m.payload) {
        Ok(NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m))) => m.attributes,
        _ => Vec::new(),
    };
    for xdp in attributes.iter().filter_map(|a| match a {
        LinkAttribute::Xdp(x) => Some(x),
        _ => None,
    }) {
        for x in xdp {
            if let LinkXdp::ProgId(id) | LinkXdp::DrvProgId(id) | LinkXdp::SkbProgId(id) | LinkXdp::HwProgId(id) = x
                && *id != 0
                && !ids.contains(id)
            {
                ids.push(*id);
            }
        }
    }
    Ok(ids)
}

fn name_of(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// The link changes in one datagram of netlink messages.
pub fn parse(mut buf: &[u8]) -> Vec<LinkChange> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len < 16 || len > buf.len() {
            break;
        }
        if let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[..len]) {
            match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(m)) => {
                    if let Some(name) = name_of(&m) {
                        out.push(LinkChange::Up { name, ifindex: m.header.index });
                    }
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(m)) => {
                    if let Some(name) = name_of(&m) {
                        out.push(LinkChange::Gone { name, ifindex: m.header.index });
                    }
                }
                _ => {}
            }
        }
        // Messages are 4-byte aligned.
        buf = &buf[((len + 3) & !3).min(buf.len())..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_short_datagrams_give_nothing() {
        assert!(parse(&[]).is_empty());
        assert!(parse(&[0xff; 15]).is_empty());
        assert!(parse(&[0x10, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_empty());
        let mut lying = vec![0u8; 20];
        lying[0] = 200;
        assert!(parse(&lying).is_empty());
    }
}
