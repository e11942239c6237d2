//! Reading the kernel's per-CPU counters: summed over CPUs when asked, never per packet.

use agent_common::{
    Class, Direction,
    class::{CLASS_SLOTS, Counter, MAX_IFACE_SLOTS, counter_index},
    flow::FlowSet,
    names::{MAP_COUNTERS, MAP_FLOWS, MAP_STATS},
    stats::NUM_STATS,
};
use aya::maps::{Array, MapData, PerCpuArray, PerCpuValues};

use super::{Kernel, KernelError};

/// Packets and bytes per (slot, direction, class), summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Indexed by [`counter_index`].
    pub cells: Vec<Counter>,
}

/// Packets and bytes per direction and class: one interface's, or a total.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassCounts(pub [[Counter; CLASS_SLOTS as usize]; 2]);

impl ClassCounts {
    /// The counter for one direction and class.
    pub fn get(&self, direction: Direction, class: Class) -> Counter {
        self.0[direction as usize][class as usize]
    }

    /// Adds `other`, cell by cell.
    pub fn add(&mut self, other: &ClassCounts) {
        for (mine, theirs) in self.0.iter_mut().zip(&other.0) {
            for (m, t) in mine.iter_mut().zip(theirs) {
                m.packets += t.packets;
                m.bytes += t.bytes;
            }
        }
    }
}

impl CounterSnapshot {
    /// The counters of one slot.
    pub fn slot(&self, slot: u32) -> ClassCounts {
        let mut out = ClassCounts::default();
        for direction in Direction::ALL {
            for class in Class::ALL {
                out.0[direction as usize][class as usize] = self.get(slot, direction, class);
            }
        }
        out
    }

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
                    // Assigned, not added: a slot asked for twice is summed once.
                    cells[index as usize] = per_cpu.iter().fold(Counter::default(), |sum, c| Counter {
                        packets: sum.packets + c.packets,
                        bytes: sum.bytes + c.bytes,
                    });
                }
            }
        }
        Ok(CounterSnapshot { cells })
    }

    /// Sets every per-CPU counter of `slot` to zero, before the slot counts for
    /// another interface. Nothing may count in it meanwhile (no watched interface
    /// maps to it), or those counts are lost.
    pub fn clear_slot(&mut self, slot: u32) -> Result<(), KernelError> {
        let map = self.ebpf_mut().map_mut(MAP_COUNTERS).expect("COUNTERS map is in the object");
        let mut array: PerCpuArray<&mut MapData, Counter> =
            PerCpuArray::try_from(map).map_err(|e| KernelError::from_any("opening the COUNTERS map", e))?;
        for direction in 0..2 {
            for class in 0..CLASS_SLOTS {
                let index = counter_index(slot, direction, class);
                let cpus = array.get(&index, 0).map_err(|e| KernelError::from_any("reading COUNTERS", e))?.len();
                let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus])
                    .map_err(|e| KernelError::from_any("zeroing COUNTERS", e))?;
                array.set(index, zeros, 0).map_err(|e| KernelError::from_any("zeroing COUNTERS", e))?;
            }
        }
        Ok(())
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

    /// Flows held in the kernel's large-segment cache (at most its sets times two):
    /// reads every set, one syscall each, for the summary, not per scrape.
    pub fn flow_count(&self) -> Result<u64, KernelError> {
        let map = self.ebpf().map(MAP_FLOWS).expect("FLOWS map is in the object");
        let sets: Array<&MapData, FlowSet> =
            Array::try_from(map).map_err(|e| KernelError::from_any("opening the FLOWS map", e))?;
        let mut held = 0;
        for set in sets.iter() {
            let set = set.map_err(|e| KernelError::from_any("reading the FLOWS map", e))?;
            held += set.ways.iter().filter(|w| w.tag != 0).count() as u64;
        }
        Ok(held)
    }
}
