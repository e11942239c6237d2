//! The drop program as the agent runs it: load it against the kernel's BTF, hand it the
//! kernel's offsets, attach it to `kfree_skb`, and read what it counted.

use std::collections::BTreeMap;

use agent_common::{
    drop::{DROP_CLASSES, DROP_COUNTER_ENTRIES, DROP_REASON_OVERFLOW, DropClass, DropConfig, DropRate},
    names::{MAP_DROP_CONFIG, MAP_DROP_COUNTERS, MAP_DROP_EVENTS, MAP_DROP_RATE, PROG_DROP, TRACEPOINT_DROP},
};
use aya::{
    Btf,
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::BtfTracePoint,
};

use super::{Kernel, KernelError, layout::KernelLayout, program};

/// What the drop program counted since it was attached.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    /// Drops per (reason name, class), nonzero ones only.
    pub by_reason_class: BTreeMap<(String, DropClass), u64>,
    /// Drop events suppressed by the rate limit.
    pub suppressed: u64,
    /// Drop events lost to a full drop ring buffer.
    pub ring_full: u64,
}

impl DropCounts {
    /// All drops counted.
    pub fn total(&self) -> u64 {
        self.by_reason_class.values().sum()
    }
}

impl Kernel {
    /// Loads the drop program against this kernel's BTF and attaches it to
    /// `kfree_skb`, with `vpn_ports` (at most 8 are used) as the VPN-port class. The
    /// link lives as long as the `Kernel`.
    pub fn attach_drops(&mut self, layout: &KernelLayout, vpn_ports: &[u16]) -> Result<(), KernelError> {
        self.load_drops()?;
        self.set_drop_config(layout, vpn_ports)?;
        let prog: &mut BtfTracePoint = program(&mut self.ebpf, PROG_DROP)?;
        prog.attach().map_err(|e| KernelError::from_any("attaching to the kfree_skb tracepoint", e))?;
        Ok(())
    }

    /// Loads the drop program against this kernel's BTF without attaching it: whether
    /// the verifier takes it here (`doctor` asks this and leaves the host as it was).
    pub fn load_drops(&mut self) -> Result<(), KernelError> {
        let btf = Btf::from_sys_fs().map_err(|e| KernelError::from_any("reading the kernel's BTF", e))?;
        let prog: &mut BtfTracePoint = program(&mut self.ebpf, PROG_DROP)?;
        prog.load(TRACEPOINT_DROP, &btf).map_err(|e| super::load_error(PROG_DROP, e))
    }

    /// Writes the drop program's configuration (offsets, VPN ports) and marks it ready.
    pub fn set_drop_config(&mut self, layout: &KernelLayout, vpn_ports: &[u16]) -> Result<(), KernelError> {
        let mut cfg = DropConfig { ready: 1, netns_inum: own_netns_inum(), ..layout.offsets };
        for (slot, port) in cfg.vpn_ports.iter_mut().zip(vpn_ports) {
            *slot = *port;
        }
        let map = self.ebpf.map_mut(MAP_DROP_CONFIG).expect("DROP_CONFIG map is in the object");
        let mut array: Array<&mut MapData, DropConfig> =
            Array::try_from(map).map_err(|e| KernelError::from_any("opening the DROP_CONFIG map", e))?;
        array.set(0, cfg, 0).map_err(|e| KernelError::from_any("writing the DROP_CONFIG map", e))
    }

    /// Takes the drop ring buffer out of the object (once).
    pub fn take_drop_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        self.take_ring(MAP_DROP_EVENTS)
    }

    /// What the drop program counted, summed over CPUs, reasons named by `layout`.
    pub fn drop_counts(&self, layout: &KernelLayout) -> Result<DropCounts, KernelError> {
        let map = self.ebpf.map(MAP_DROP_COUNTERS).expect("DROP_COUNTERS map is in the object");
        let counters: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| KernelError::from_any("opening the DROP_COUNTERS map", e))?;
        let mut out = DropCounts::default();
        for index in 0..DROP_COUNTER_ENTRIES {
            let values = counters.get(&index, 0).map_err(|e| KernelError::from_any("reading DROP_COUNTERS", e))?;
            let n: u64 = values.iter().sum();
            if n == 0 {
                continue;
            }
            let slot = index / DROP_CLASSES;
            let class = DropClass::from_u8((index % DROP_CLASSES) as u8);
            let reason =
                if slot == DROP_REASON_OVERFLOW { "OTHER_SUBSYSTEM".to_string() } else { layout.reason_name(slot) };
            *out.by_reason_class.entry((reason, class)).or_default() += n;
        }
        let map = self.ebpf.map(MAP_DROP_RATE).expect("DROP_RATE map is in the object");
        let rate: PerCpuArray<&MapData, DropRate> =
            PerCpuArray::try_from(map).map_err(|e| KernelError::from_any("opening the DROP_RATE map", e))?;
        let values = rate.get(&0, 0).map_err(|e| KernelError::from_any("reading DROP_RATE", e))?;
        for r in values.iter() {
            out.suppressed += r.suppressed;
            out.ring_full += r.ring_full;
        }
        Ok(out)
    }
}

/// The inode number of this process's network namespace (0 if it cannot be read, which
/// counts drops of every namespace).
pub fn own_netns_inum() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net").map(|m| m.ino() as u32).unwrap_or(0)
}
