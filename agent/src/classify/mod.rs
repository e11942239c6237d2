//! Replay's classifier: the kernel programs' header walk (`agent_common::wire::walk`)
//! run on a frame in memory, with a userspace flow table, and the event assembled as
//! the kernel writes it.
//!
//! The walk is the kernel's own code, so `replay` without `--kernel` decides what the
//! kernel would for the same Ethernet frame. What stays here is only what userspace
//! does differently: the flow table ([`FlowTable`], the kernel's `FLOWS` LRU map) and
//! building an [`Event`] instead of a ring-buffer record (`emit`).

mod emit;
mod flows;
pub mod link;

use agent_common::{Class, Direction, KernelConfig, flow::DEFAULT_FLOW_ENTRIES, wire};

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
        let p = wire::walk(&frame, &self.cfg, &mut self.flows);
        let event = (p.event != 0).then(|| emit::event(frame, &p, direction, ifindex, ts_ns));
        Classified { class: p.class, truncated: p.truncated, event }
    }
}
