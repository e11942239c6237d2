//! Frames through the real kernel programs with BPF_PROG_TEST_RUN: `replay --kernel`,
//! the differential tests and the kernel benchmark all come through here.

use agent_common::{Class, Direction, KernelConfig, names::MAP_FLOWS};
use aya::{
    maps::{HashMap as BpfHashMap, MapData, RingBuf},
    programs::{TestRun, TestRunOptions},
};

use super::{Kernel, KernelError, LoadOptions};
use crate::event::Event;

/// Smallest frame the kernel accepts for a test run (an Ethernet header).
pub const MIN_FRAME: usize = 14;
/// Largest frame an XDP test run accepts without multi-buffer support
/// (a page minus the XDP headroom and the shared-info tail).
pub const MAX_FRAME: usize = 4096 - 256 - 320;

/// Which program to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `pathwatch_xdp`.
    Xdp,
    /// `pathwatch_tc`.
    Tc,
    /// The XDP_PASS baseline.
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

    /// Empties the flow table, so that one capture's flows do not leak into the next.
    pub fn reset_flows(&mut self) -> Result<(), KernelError> {
        let map = self.kernel.ebpf_mut().map_mut(MAP_FLOWS).expect("FLOWS map is in the object");
        let mut flows: BpfHashMap<&mut MapData, agent_common::FlowKey, agent_common::FlowState> =
            BpfHashMap::try_from(map).map_err(|e| KernelError::from_any("opening the FLOWS map", e))?;
        let keys: Vec<_> = flows.keys().filter_map(Result::ok).collect();
        for k in keys {
            let _ = flows.remove(&k);
        }
        Ok(())
    }

    /// Flows in the kernel's large-segment table.
    pub fn flow_count(&mut self) -> Result<u64, KernelError> {
        let map = self.kernel.ebpf_mut().map_mut(MAP_FLOWS).expect("FLOWS map is in the object");
        let flows: BpfHashMap<&mut MapData, agent_common::FlowKey, agent_common::FlowState> =
            BpfHashMap::try_from(map).map_err(|e| KernelError::from_any("opening the FLOWS map", e))?;
        Ok(flows.keys().filter(Result::is_ok).count() as u64)
    }

    fn class_counts(&self, direction: Direction) -> Result<[u64; 8], KernelError> {
        Ok(self.kernel.counters(&[0])?.packets_by_class(direction))
    }
}
