//! The userspace classifier: the kernel programs' twin, built on etherparse.
//!
//! It decides the same class and produces the same events as `agent-ebpf` for the
//! same Ethernet frame, so that `replay` needs no kernel, and so that the two can be
//! checked against each other frame by frame (tests/differential). Header parsing is
//! etherparse's; the decisions (what is DTLS, a large packet, an ICMP error, how far
//! to walk) are `agent_common`'s, shared with the kernel.

mod dtls;
mod flows;
mod l3;
pub mod link;
mod transport;

use agent_common::{
    Class, Direction, EventHeader, EventInfo, KernelConfig,
    event::{IP_FLAG_DF, snap_cap},
    flow::DEFAULT_FLOW_ENTRIES,
    proto::*,
};

pub use flows::FlowTable;

use crate::event::Event;

/// What the classifier decided about one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    /// The packet's class.
    pub class: Class,
    /// A header ended early (the kernel counts these as `truncated`).
    pub truncated: bool,
    /// The event the kernel would emit, if any.
    pub event: Option<Event>,
}

/// Parse state, the same fields as the kernel's.
#[derive(Default)]
pub(crate) struct Parsed {
    pub class: Option<Class>,
    pub event: u8,
    pub truncated: bool,
    pub vlan_depth: u8,
    pub ip_version: u8,
    pub l4_proto: u8,
    pub ip_flags: u8,
    pub tcp_flags: u8,
    pub l3_off: usize,
    pub ip_len: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload_len: usize,
    pub snap_off: usize,
    pub snap_end: usize,
    pub info: EventInfo,
}

/// Where the IP layer left off (as in the kernel).
pub(crate) struct L3 {
    pub l4_off: usize,
    pub end: usize,
    pub claimed_end: usize,
}

/// The userspace classifier, with its flow table for large-segment retransmissions.
pub struct Classifier {
    cfg: Box<KernelConfig>,
    flows: FlowTable,
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(KernelConfig::new(), DEFAULT_FLOW_ENTRIES as usize)
    }
}

impl Classifier {
    /// A classifier with `cfg` and room for `flow_capacity` flows.
    pub fn new(cfg: KernelConfig, flow_capacity: usize) -> Classifier {
        Classifier { cfg: Box::new(cfg), flows: FlowTable::new(flow_capacity) }
    }

    /// Replaces the configuration (as SIGHUP does for the kernel map).
    pub fn set_config(&mut self, cfg: KernelConfig) {
        *self.cfg = cfg;
    }

    /// The flow table (for its occupancy and evictions).
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// Classifies one Ethernet frame seen in `direction` on `ifindex` at `ts_ns`.
    pub fn classify(&mut self, frame: &[u8], direction: Direction, ifindex: u32, ts_ns: u64) -> Classified {
        let mut p = Parsed::default();
        if let Some(l3) = l3::parse_l2_l3(frame, &mut p) {
            match p.l4_proto {
                IPPROTO_UDP => transport::udp(frame, &self.cfg, &mut p, &l3),
                IPPROTO_TCP => transport::tcp(frame, &self.cfg, &mut self.flows, &mut p, &l3),
                IPPROTO_ICMP if p.ip_version == 4 => transport::icmp(frame, &mut p, &l3),
                IPPROTO_ICMPV6 if p.ip_version == 6 => transport::icmp(frame, &mut p, &l3),
                _ => {}
            }
        }
        let class = match p.class {
            Some(c) => c,
            None if self.cfg.is_large(p.ip_len, p.ip_flags & IP_FLAG_DF != 0) => Class::LargeDf,
            None => Class::Other,
        };
        let event = (p.event != 0).then(|| make_event(frame, &p, class, direction, ifindex, ts_ns));
        Classified { class, truncated: p.truncated, event }
    }
}

/// Builds the event exactly as `agent-ebpf/src/emit.rs` fills the record.
fn make_event(frame: &[u8], p: &Parsed, class: Class, direction: Direction, ifindex: u32, ts_ns: u64) -> Event {
    let avail = p.snap_end.saturating_sub(p.snap_off);
    let snap_len = avail.min(snap_cap(p.event));
    let mut header = EventHeader {
        ts_ns,
        ifindex,
        wire_len: frame.len() as u32,
        kind: p.event,
        direction: direction as u8,
        class: class as u8,
        ip_version: p.ip_version,
        l4_proto: p.l4_proto,
        ip_flags: p.ip_flags,
        tcp_flags: p.tcp_flags,
        vlan_depth: p.vlan_depth,
        src_port: p.src_port,
        dst_port: p.dst_port,
        ip_len: p.ip_len.min(0xffff) as u16,
        l4_payload_len: p.payload_len.min(0xffff) as u16,
        snap_len: snap_len as u16,
        snap_offset: p.snap_off as u16,
        info: p.info,
        ..Default::default()
    };
    let (src, dst) = l3::addresses(frame, p);
    header.src_addr = src;
    header.dst_addr = dst;
    Event { header, snap: frame[p.snap_off..p.snap_off + snap_len].to_vec() }
}
