//! The kernel programs as the agent sees them: load the embedded object, configure it,
//! read its counters, and (in `testrun`) drive it with BPF_PROG_TEST_RUN.

pub mod counters;
pub mod drops;
pub mod layout;
pub mod testrun;

use agent_common::{
    KernelConfig,
    class::IFINDEX_LIMIT,
    flow::{DEFAULT_FLOW_ENTRIES, flow_sets},
    names::{MAP_CONFIG, MAP_EVENTS, MAP_FLOWS, MAP_IFACE_SLOTS, PROG_TC, PROG_XDP, PROG_XDP_BASELINE},
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, MapData, RingBuf},
    programs::{ProgramError, SchedClassifier, Xdp},
};

/// The compiled kernel programs, embedded at build time by `build.rs`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/pathwatch-ebpf"));

/// Sizes fixed at load time.
#[derive(Clone, Copy, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ringbuf_bytes: u32,
    /// Flows the large-segment cache holds (at least; see `agent_common::flow::flow_sets`).
    pub flow_entries: u32,
    /// Seeds the flow hash for this load (`KernelConfig::flow_seed`): random for the
    /// agent, 0 where the kernel must agree with replay (tests, `replay --kernel`).
    pub flow_seed: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            ringbuf_bytes: agent_common::config::DEFAULT_RINGBUF_BYTES,
            flow_entries: DEFAULT_FLOW_ENTRIES,
            flow_seed: 0,
        }
    }
}

/// Why the kernel programs could not be loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// The process may not create BPF maps or programs.
    #[error(
        "not allowed to load eBPF programs: {}; run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON \
         (e.g. `sudo setcap cap_bpf,cap_net_admin,cap_perfmon+ep $(command -v pathwatch)`); `pathwatch doctor` checks this host",
        missing_caps_text()
    )]
    Permission(String),
    /// Any other failure, with the verifier log when there is one.
    #[error("{context}: {source}")]
    Other {
        /// What was being done.
        context: String,
        /// The underlying error (its message carries the verifier log for load failures).
        #[source]
        source: anyhow::Error,
    },
}

impl KernelError {
    fn from_any(context: impl Into<String>, err: impl Into<anyhow::Error>) -> KernelError {
        let source: anyhow::Error = err.into();
        if is_permission_error(&source) {
            return KernelError::Permission(format!("{}: {}", context.into(), source));
        }
        KernelError::Other { context: context.into(), source }
    }
}

fn missing_caps_text() -> String {
    let missing = crate::caps::missing();
    if missing.is_empty() {
        "the kernel refused (EPERM) although CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON are effective (a LSM or sysctl?)"
            .into()
    } else {
        format!("missing capability {}", missing.join(", "))
    }
}

/// Whether an error chain bottoms out in EPERM or EACCES from the bpf() syscall.
fn is_permission_error(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::EPERM)
            || e.to_string().contains("Operation not permitted")
    })
}

/// The loaded kernel programs and their maps.
pub struct Kernel {
    ebpf: Ebpf,
    /// The flow cache's shape, fixed at load: every configuration written carries it.
    flow_set_mask: u32,
    flow_seed: u64,
}

impl Kernel {
    /// Loads and verifies both programs and the baseline program, with `cfg` in the
    /// configuration map.
    pub fn load(opts: &LoadOptions, cfg: &KernelConfig) -> Result<Kernel, KernelError> {
        let mut ebpf = EbpfLoader::new()
            .map_max_entries(MAP_EVENTS, opts.ringbuf_bytes)
            .map_max_entries(MAP_FLOWS, flow_sets(opts.flow_entries))
            .load(OBJECT)
            .map_err(|e| KernelError::from_any("loading the eBPF object", e))?;
        for name in [PROG_XDP, PROG_XDP_BASELINE] {
            let prog: &mut Xdp = program(&mut ebpf, name)?;
            prog.load().map_err(|e| load_error(name, e))?;
        }
        let tc: &mut SchedClassifier = program(&mut ebpf, PROG_TC)?;
        tc.load().map_err(|e| load_error(PROG_TC, e))?;
        let mut kernel = Kernel { ebpf, flow_set_mask: flow_sets(opts.flow_entries) - 1, flow_seed: opts.flow_seed };
        kernel.set_config(cfg)?;
        Ok(kernel)
    }

    /// Writes the run-time configuration, with the flow cache's shape fixed at load; the
    /// programs use it from the next packet on.
    pub fn set_config(&mut self, cfg: &KernelConfig) -> Result<(), KernelError> {
        let cfg = &KernelConfig { flow_set_mask: self.flow_set_mask, flow_seed: self.flow_seed, ..*cfg };
        let map = self.ebpf.map_mut(MAP_CONFIG).expect("CONFIG map is in the object");
        let mut array: Array<&mut MapData, KernelConfig> =
            Array::try_from(map).map_err(|e| KernelError::from_any("opening the CONFIG map", e))?;
        array.set(0, *cfg, 0).map_err(|e| KernelError::from_any("writing the CONFIG map", e))
    }

    /// Marks `ifindex` as watched, with its own counters in `slot` (1-63) or in the
    /// shared slot 0.
    pub fn watch_interface(&mut self, ifindex: u32, slot: u32) -> Result<(), KernelError> {
        if ifindex >= IFINDEX_LIMIT {
            return Ok(());
        }
        let map = self.ebpf.map_mut(MAP_IFACE_SLOTS).expect("IFACE_SLOTS map is in the object");
        let mut array: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(|e| KernelError::from_any("opening the IFACE_SLOTS map", e))?;
        let value = if slot == 0 { WATCHED_NO_SLOT } else { slot };
        array.set(ifindex, value, 0).map_err(|e| KernelError::from_any("writing the IFACE_SLOTS map", e))
    }

    /// Forgets `ifindex`.
    pub fn unwatch_interface(&mut self, ifindex: u32) -> Result<(), KernelError> {
        if ifindex >= IFINDEX_LIMIT {
            return Ok(());
        }
        let map = self.ebpf.map_mut(MAP_IFACE_SLOTS).expect("IFACE_SLOTS map is in the object");
        let mut array: Array<&mut MapData, u32> =
            Array::try_from(map).map_err(|e| KernelError::from_any("opening the IFACE_SLOTS map", e))?;
        array.set(ifindex, 0, 0).map_err(|e| KernelError::from_any("writing the IFACE_SLOTS map", e))
    }

    /// Takes the event ring buffer out of the object (once).
    pub fn take_events(&mut self) -> Result<RingBuf<MapData>, KernelError> {
        self.take_ring(MAP_EVENTS)
    }

    /// Takes the ring buffer map `name` out of the object (once).
    fn take_ring(&mut self, name: &str) -> Result<RingBuf<MapData>, KernelError> {
        let map = self.ebpf.take_map(name).ok_or_else(|| KernelError::Other {
            context: format!("taking the {name} ring buffer"),
            source: anyhow::anyhow!("already taken"),
        })?;
        RingBuf::try_from(map).map_err(|e| KernelError::from_any(format!("opening the {name} ring buffer"), e))
    }

    /// The XDP program.
    pub fn xdp(&mut self) -> &mut Xdp {
        program(&mut self.ebpf, PROG_XDP).expect("loaded")
    }

    /// The XDP_PASS baseline program. Public for `pathwatch-bench` (tests/bench), which
    /// measures every frame beside it and attaches it alone in the flood benchmark.
    pub fn xdp_baseline(&mut self) -> &mut Xdp {
        program(&mut self.ebpf, PROG_XDP_BASELINE).expect("loaded")
    }

    /// The TC program.
    pub fn tc(&mut self) -> &mut SchedClassifier {
        program(&mut self.ebpf, PROG_TC).expect("loaded")
    }

    /// The loaded object, for the counter readers.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The loaded object, mutably: the counter and flow-table readers, and
    /// `pathwatch-bench` (tests/bench), which loads the floor programs from it.
    pub fn ebpf_mut(&mut self) -> &mut Ebpf {
        &mut self.ebpf
    }
}

/// `IFACE_SLOTS` value for a watched interface without counters of its own.
pub const WATCHED_NO_SLOT: u32 = 1 << 31;

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, KernelError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
{
    let prog = ebpf.program_mut(name).ok_or_else(|| KernelError::Other {
        context: format!("finding program {name}"),
        source: anyhow::anyhow!("not in the embedded object"),
    })?;
    prog.try_into().map_err(|e| KernelError::from_any(format!("program {name}"), e))
}

fn load_error(name: &str, e: ProgramError) -> KernelError {
    // The verifier log is part of the error's message; keep all of it.
    KernelError::from_any(format!("loading {name} (the verifier's log follows)"), e)
}
