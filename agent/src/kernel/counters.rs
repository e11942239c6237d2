//! Reading the kernel's per-CPU counters: summed over CPUs when asked, never per packet.

use agent_common::{
    Class, Direction,
    class::{CLASS_SLOTS, Counter, MAX_IFACE_SLOTS, counter_index},
    names::{MAP_COUNTERS, MAP_FLOWS, MAP_STATS},
    stats::NUM_STATS,
};
use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray};

use super::{Kernel, KernelError};

/// Packets and bytes per (slot, direction, class), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Indexed by [`counter_index`].
    pub cells: Vec<Counter>,
}

impl CounterSnapshot {
    /// The counter for one cell.
    pub fn get(&self, slot: u32, direction: Direction, class: Class) -> Counter {
        self.cells.get(counter_index(slot, direction as u32, class as u32) as usize).copied().unwrap_or_default()
    }

    /// Packets per class in `direction` over every slot.
    pub fn packets_by_class(&self, direction: Direction) -> [u64; CLASS_SLOTS as usize] {
        let mut out = [0u64; CLASS_SLOTS as usize];
        for slot in 0..MAX_IFACE_SLOTS {
            for class in Class::ALL {
                out[class as usize] += self.get(slot, direction, class).packets;
            }
        }
        out
    }
}

impl Kernel {
    /// Sums the per-CPU counters for the given slots (all 64 when `slots` is empty).
    pub fn counters(&self, slots: &[u32]) -> Result<CounterSnapshot, KernelError> {
        let map = self.ebpf().map(MAP_COUNTERS).expect("COUNTERS map is in the object");
        let array: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(map).map_err(|e| KernelError::from_any("opening the COUNTERS map", e))?;
        let mut cells = vec![Counter::default(); (MAX_IFACE_SLOTS * 2 * CLASS_SLOTS) as usize];
        let all: Vec<u32> = (0..MAX_IFACE_SLOTS).collect();
        for &slot in if slots.is_empty() { &all[..] } else { slots } {
            for direction in 0..2 {
                for class in 0..CLASS_SLOTS {
                    let index = counter_index(slot, direction, class);
                    let per_cpu = array.get(&index, 0).map_err(|e| KernelError::from_any("reading COUNTERS", e))?;
                    let cell = &mut cells[index as usize];
                    for c in per_cpu.iter() {
                        cell.packets += c.packets;
                        cell.bytes += c.bytes;
                    }
                }
            }
        }
        Ok(CounterSnapshot { cells })
    }

    /// The kernel statistics (see `agent_common::stats`), summed over CPUs.
    pub fn stats(&self) -> Result<[u64; NUM_STATS as usize], KernelError> {
        let map = self.ebpf().map(MAP_STATS).expect("STATS map is in the object");
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| KernelError::from_any("opening the STATS map", e))?;
        let mut out = [0u64; NUM_STATS as usize];
        for (i, v) in out.iter_mut().enumerate() {
            let per_cpu = array.get(&(i as u32), 0).map_err(|e| KernelError::from_any("reading STATS", e))?;
            *v = per_cpu.iter().sum();
        }
        Ok(out)
    }

    /// Flows held in the kernel's large-segment table (an LRU hash: at most
    /// `pmtu.kernel_flow_entries`). Walks the keys, one syscall each: for the summary,
    /// not per scrape.
    pub fn flow_count(&self) -> Result<u64, KernelError> {
        let map = self.ebpf().map(MAP_FLOWS).expect("FLOWS map is in the object");
        let flows: BpfHashMap<&MapData, agent_common::FlowKey, agent_common::FlowState> =
            BpfHashMap::try_from(map).map_err(|e| KernelError::from_any("opening the FLOWS map", e))?;
        Ok(flows.keys().filter(Result::is_ok).count() as u64)
    }
}
