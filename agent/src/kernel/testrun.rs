//! Frames through the real kernel programs with BPF_PROG_TEST_RUN: `replay --kernel`,
//! the differential tests and the kernel benchmark all come through here.

use agent_common::{
    Class, Direction, KernelConfig,
    class::{CLASS_SLOTS, Counter, counter_index},
    flow::FlowSet,
    names::{MAP_COUNTERS, MAP_FLOWS, MAP_STATS},
};
use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::{TestRun, TestRunOptions},
};

use super::{Kernel, KernelError, LoadOptions};
use crate::event::Event;

/// Smallest frame the kernel accepts for a test run (an Ethernet header).
pub const MIN_FRAME: usize = 14;
/// Largest frame an XDP test run accepts without multi-buffer support
/// (a page minus the XDP headroom and the shared-info tail).
pub const MAX_FRAME: usize = 4096 - 256 - 320;

/// Size of `struct __sk_buff` (the TC program's context) in Linux's UAPI.
const SK_BUFF_LEN: usize = 192;
/// Offset of `ingress_ifindex` in `struct __sk_buff`.
const SK_BUFF_INGRESS_IFINDEX: usize = 36;

/// Which program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `pathwatch_xdp`.
    Xdp,
    /// `pathwatch_tc`.
    Tc,
    /// The XDP_PASS baseline (the kernel benchmark measures every frame beside it).
    Baseline,
}

/// What one test run of one frame produced.
#[derive(Debug)]
pub struct RunResult {
    /// The program's return value.
    pub action: u32,
    /// The class the counters moved for, when asked for.
    pub class: Option<Class>,
    /// The events the run put in the ring buffer.
    pub events: Vec<Event>,
}

/// The kernel programs loaded for test runs, with their ring buffer.
pub struct TestRunner {
    kernel: Kernel,
    events: RingBuf<MapData>,
}

impl TestRunner {
    /// Loads the programs with `cfg`.
    pub fn new(cfg: &KernelConfig) -> Result<TestRunner, KernelError> {
        let mut kernel = Kernel::load(&LoadOptions::default(), cfg)?;
        let events = kernel.take_events()?;
        Ok(TestRunner { kernel, events })
    }

    /// Loads the programs with `opts` (e.g. a small ring buffer) and `cfg`.
    pub fn with_options(opts: &LoadOptions, cfg: &KernelConfig) -> Result<TestRunner, KernelError> {
        let mut kernel = Kernel::load(opts, cfg)?;
        let events = kernel.take_events()?;
        Ok(TestRunner { kernel, events })
    }

    /// The loaded programs.
    pub fn kernel(&mut self) -> &mut Kernel {
        &mut self.kernel
    }

    /// Runs `frame` once through `hook` and collects the events it emitted. With
    /// `want_class`, the class is read back from the counters it moved (slot 0).
    pub fn run(&mut self, hook: Hook, frame: &[u8], want_class: bool) -> Result<RunResult, KernelError> {
        let direction = if hook == Hook::Tc { Direction::Egress } else { Direction::Ingress };
        let before = if want_class { Some(self.class_counts(direction)?) } else { None };
        let result = self.run_repeat(hook, frame, 1)?;
        let class = match before {
            Some(before) => {
                let after = self.class_counts(direction)?;
                Class::ALL.into_iter().find(|c| after[*c as usize] != before[*c as usize])
            }
            None => None,
        };
        let mut events = Vec::new();
        while let Some(item) = self.events.next() {
            match Event::from_record(&item) {
                Ok(ev) => events.push(ev),
                Err(e) => {
                    return Err(KernelError::Other { context: "decoding a test-run event".into(), source: e.into() });
                }
            }
        }
        Ok(RunResult { action: result.0, class, events })
    }

    /// Runs `frame` once through the TC program as a packet that came in on
    /// `ingress_ifindex` (0: one this host originated), and collects the events it
    /// emitted. With `want_class`, the class is read back as in [`run`](Self::run).
    pub fn run_tc_from(
        &mut self,
        frame: &[u8],
        ingress_ifindex: u32,
        want_class: bool,
    ) -> Result<RunResult, KernelError> {
        // A `struct __sk_buff` with only `ingress_ifindex` (offset 36) set; the kernel
        // rejects a context with fields it does not let a test run set.
        let mut ctx = [0u8; SK_BUFF_LEN];
        ctx[SK_BUFF_INGRESS_IFINDEX..SK_BUFF_INGRESS_IFINDEX + 4].copy_from_slice(&ingress_ifindex.to_ne_bytes());
        let before = if want_class { Some(self.class_counts(Direction::Egress)?) } else { None };
        let opts = TestRunOptions { data_in: Some(frame), ctx_in: Some(&ctx), ..TestRunOptions::new() };
        let res = self.kernel.tc().test_run(opts).map_err(|e| {
            KernelError::from_any(format!("BPF_PROG_TEST_RUN of a {}-byte frame at TC", frame.len()), e)
        })?;
        let class = match before {
            Some(before) => {
                let after = self.class_counts(Direction::Egress)?;
                Class::ALL.into_iter().find(|c| after[*c as usize] != before[*c as usize])
            }
            None => None,
        };
        let mut events = Vec::new();
        while let Some(item) = self.events.next() {
            let ev = Event::from_record(&item)
                .map_err(|e| KernelError::Other { context: "decoding a test-run event".into(), source: e.into() })?;
            events.push(ev);
        }
        Ok(RunResult { action: res.return_value, class, events })
    }

    /// Runs `frame` `repeat` times; returns the action and the kernel's mean ns per run.
    pub fn run_repeat(&mut self, hook: Hook, frame: &[u8], repeat: u32) -> Result<(u32, u64), KernelError> {
        let opts = TestRunOptions { data_in: Some(frame), repeat, ..TestRunOptions::new() };
        let res = match hook {
            Hook::Xdp => self.kernel.xdp().test_run(opts),
            Hook::Baseline => self.kernel.xdp_baseline().test_run(opts),
            Hook::Tc => self.kernel.tc().test_run(opts),
        }
        .map_err(|e| KernelError::from_any(format!("BPF_PROG_TEST_RUN of a {}-byte frame", frame.len()), e))?;
        Ok((res.return_value, res.duration.as_nanos() as u64))
    }

    /// Drains the ring buffer, returning how many records were in it.
    pub fn drain(&mut self) -> usize {
        let mut n = 0;
        while self.events.next().is_some() {
            n += 1;
        }
        n
    }

    /// Empties the flow cache, so that one capture's flows do not leak into the next.
    pub fn reset_flows(&mut self) -> Result<(), KernelError> {
        let map = self.kernel.ebpf_mut().map_mut(MAP_FLOWS).expect("FLOWS map is in the object");
        let mut sets: Array<&mut MapData, FlowSet> =
            Array::try_from(map).map_err(|e| KernelError::from_any("opening the FLOWS map", e))?;
        for i in 0..sets.len() {
            let set = sets.get(&i, 0).map_err(|e| KernelError::from_any("reading the FLOWS map", e))?;
            if set != FlowSet::default() {
                sets.set(i, FlowSet::default(), 0).map_err(|e| KernelError::from_any("emptying the FLOWS map", e))?;
            }
        }
        Ok(())
    }

    /// Flows in the kernel's large-segment cache.
    pub fn flow_count(&mut self) -> Result<u64, KernelError> {
        self.kernel.flow_count()
    }

    /// One kernel statistic (see `agent_common::stats`), summed over CPUs.
    pub fn stat(&self, index: u32) -> Result<u64, KernelError> {
        let map = self.kernel.ebpf().map(MAP_STATS).expect("STATS map is in the object");
        let array: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(map).map_err(|e| KernelError::from_any("opening the STATS map", e))?;
        let per_cpu = array.get(&index, 0).map_err(|e| KernelError::from_any("reading STATS", e))?;
        Ok(per_cpu.iter().sum())
    }

    /// Packets per class in slot 0 for `direction`: only the eight cells a test run
    /// can move (a map lookup per cell is what a test run's class costs).
    fn class_counts(&self, direction: Direction) -> Result<[u64; CLASS_SLOTS as usize], KernelError> {
        let map = self.kernel.ebpf().map(MAP_COUNTERS).expect("COUNTERS map is in the object");
        let array: PerCpuArray<&MapData, Counter> =
            PerCpuArray::try_from(map).map_err(|e| KernelError::from_any("opening the COUNTERS map", e))?;
        let mut out = [0u64; CLASS_SLOTS as usize];
        for class in Class::ALL {
            let index = counter_index(0, direction as u32, class as u32);
            let per_cpu = array.get(&index, 0).map_err(|e| KernelError::from_any("reading COUNTERS", e))?;
            out[class as usize] = per_cpu.iter().map(|c| c.packets).sum();
        }
        Ok(out)
    }
}
