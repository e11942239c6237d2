//! Replay's classifier: the kernel programs' header walk (`agent_common::wire::walk`)
//! run on a frame in memory, with a userspace flow table, and the event assembled as
//! the kernel writes it.
//!
//! The walk is the kernel's own code, so `replay` without `--kernel` decides what the
//! kernel would for the same Ethernet frame. What stays here is only what userspace
//! does differently: the flow cache ([`FlowTable`], the kernel's `FLOWS` array),
//! the statistics the walk counts (the kernel's `STATS` map, [`Counted`]) and
//! building an [`Event`] instead of a ring-buffer record (`emit`).

mod emit;
mod flows;
pub mod link;

use std::cell::Cell;

use agent_common::{
    Class, Direction, KernelConfig,
    flow::DEFAULT_FLOW_ENTRIES,
    stats::{self, NUM_STATS},
    wire::{self, Packet},
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

/// The userspace classifier, with its flow table for large-segment retransmissions.
pub struct Classifier {
    cfg: Box<KernelConfig>,
    flows: FlowTable,
    stats: Box<[Cell<u64>; NUM_STATS as usize]>,
}

/// A frame in memory whose walk counts the statistics the kernel would
/// (`agent_common::stats`: encapsulations, fragments, limits).
struct Counted<'a> {
    frame: &'a [u8],
    stats: &'a [Cell<u64>; NUM_STATS as usize],
}

impl Packet for Counted<'_> {
    fn wire_len(&self) -> usize {
        self.frame.len()
    }
    fn readable_len(&self) -> usize {
        self.frame.len()
    }
    fn array_at<const N: usize>(&self, off: usize) -> Option<&[u8; N]> {
        self.frame.array_at(off)
    }
    fn load<const N: usize>(&self, off: usize, dst: &mut [u8; N], len: u32) -> bool {
        self.frame.load(off, dst, len)
    }
    fn stat(&self, index: u32) {
        if let Some(c) = self.stats.get(index as usize) {
            c.set(c.get() + 1);
        }
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Classifier::new(KernelConfig::new(), DEFAULT_FLOW_ENTRIES as usize)
    }
}

impl Classifier {
    /// A classifier with `cfg` and room for `flow_capacity` flows.
    pub fn new(cfg: KernelConfig, flow_capacity: usize) -> Classifier {
        let flows = FlowTable::new(flow_capacity);
        let cfg = Box::new(KernelConfig { flow_set_mask: flows.set_mask(), ..cfg });
        Classifier { cfg, flows, stats: Default::default() }
    }

    /// Replaces the configuration (as SIGHUP does for the kernel map); the flow cache's
    /// size stays.
    pub fn set_config(&mut self, cfg: KernelConfig) {
        *self.cfg = KernelConfig { flow_set_mask: self.flows.set_mask(), ..cfg };
    }

    /// The flow table (for its occupancy and evictions).
    pub fn flows(&self) -> &FlowTable {
        &self.flows
    }

    /// The statistics the kernel would have counted for the frames classified so far.
    pub fn stats(&self) -> [u64; NUM_STATS as usize] {
        std::array::from_fn(|i| self.stats[i].get())
    }

    /// Classifies one Ethernet frame seen in `direction` on `ifindex` at `ts_ns`.
    pub fn classify(&mut self, frame: &[u8], direction: Direction, ifindex: u32, ts_ns: u64) -> Classified {
        let counted = Counted { frame, stats: &self.stats };
        let p = wire::walk(&counted, &self.cfg, &mut self.flows);
        if p.truncated {
            counted.stat(stats::TRUNCATED);
        }
        let event = (p.event != 0).then(|| emit::event(frame, &p, direction, ifindex, ts_ns));
        Classified { class: p.class, truncated: p.truncated, event }
    }
}
