//! Kernel cost per packet: BPF_PROG_TEST_RUN, 1e6 repeats, the minimum of 5 runs, for
//! each benchmark frame through `pathwatch_xdp`, beside the same frame through an
//! XDP program that only returns XDP_PASS, in the same run; and each frame through
//! `pathwatch_tc` beside a classifier that only returns TC_ACT_OK, since a test run at
//! TC builds a socket buffer and costs more than one at XDP before any program runs.
//!
//! Evented kinds are measured with a thread draining the ring buffer in batches, as
//! the agent does, and in calls of [`CHUNK`] repeats with a pause for it after each,
//! so that reservations succeed (a full ring would measure the cheaper failure path);
//! the failed reservations are reported and must be 0. The ring is
//! 16 MiB, room for several drain pauses of the largest events: a far larger ring
//! would make every event write a cache miss the agent's ring does not pay.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use agent_common::{
    KernelConfig,
    config::wakeup_bytes_for,
    names::{PROG_TC_BASELINE, PROG_TC_COUNT_FLOOR, PROG_TC_EVENT_FLOOR, PROG_XDP_COUNT_FLOOR, PROG_XDP_EVENT_FLOOR},
    stats,
};
use aya::programs::{SchedClassifier, Xdp};
use serde_json::{Map, Value, json};

use crate::frames;
use pathwatch::kernel::{Kernel, LoadOptions, testrun::Hook};

/// Repeats per BPF_PROG_TEST_RUN call.
pub const REPEATS: u32 = 1_000_000;
/// Calls per measurement; the minimum is kept.
pub const ROUNDS: usize = 5;

/// One kernel benchmark's figures.
pub struct KernelBench {
    /// The XDP_PASS baseline (ns/packet), minimum over all frames and rounds.
    pub baseline_ns: f64,
    /// ns/packet per kind.
    pub ns: Vec<(&'static str, f64)>,
    /// The TC_ACT_OK baseline (ns/packet), minimum over all frames and rounds.
    pub tc_baseline_ns: f64,
    /// ns/packet per kind through `pathwatch_tc` (a packet this host sends).
    pub tc_ns: Vec<(&'static str, f64)>,
    /// Extra figures outside the fixed JSON keys.
    pub extra: Vec<(&'static str, f64)>,
    /// The floor programs' ns/packet (see [`FLOORS`]).
    pub floors: Vec<(&'static str, f64)>,
    /// The TC floor programs' ns/packet (see [`TC_FLOORS`]).
    pub tc_floors: Vec<(&'static str, f64)>,
    /// Failed ring-buffer reservations during the evented measurements.
    pub ringbuf_full: u64,
    /// Events the drain thread consumed.
    pub drained: u64,
}

/// The floor programs: what any design pays to count a packet per interface, and to
/// count it and put the smallest event in the ring buffer. They tell how much of
/// pathwatch's cost over XDP_PASS is the header walk and the event's contents, and
/// how much no program that counts and reports could avoid.
const FLOORS: [(&str, &str); 2] = [("floor_count", PROG_XDP_COUNT_FLOOR), ("floor_event", PROG_XDP_EVENT_FLOOR)];

/// The same floors as classifiers, over the TC_ACT_OK baseline: what counting a
/// socket buffer, and counting it and reporting it, cost at TC.
const TC_FLOORS: [(&str, &str); 2] = [("floor_count", PROG_TC_COUNT_FLOOR), ("floor_event", PROG_TC_EVENT_FLOOR)];

/// Loads a floor program (once) and returns it.
fn floor<'a>(kernel: &'a mut Kernel, name: &str) -> anyhow::Result<&'a mut Xdp> {
    let prog: &mut Xdp = kernel
        .ebpf_mut()
        .program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("program {name} is not in the embedded object"))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load()?;
    }
    Ok(prog)
}

/// Loads the TC baseline classifier (once) and returns it. Only the benchmark loads
/// it: the agent never runs it.
fn tc_baseline(kernel: &mut Kernel) -> anyhow::Result<&mut SchedClassifier> {
    tc_program(kernel, PROG_TC_BASELINE)
}

/// Loads a classifier only the benchmark runs (once) and returns it.
fn tc_program<'a>(kernel: &'a mut Kernel, name: &str) -> anyhow::Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = kernel
        .ebpf_mut()
        .program_mut(name)
        .ok_or_else(|| anyhow::anyhow!("program {name} is not in the embedded object"))?
        .try_into()?;
    if prog.fd().is_err() {
        prog.load()?;
    }
    Ok(prog)
}

/// ns/packet of a floor program on `frame` (minimum of [`ROUNDS`]).
fn floor_ns(kernel: &mut Kernel, name: &str, frame: &[u8]) -> anyhow::Result<f64> {
    best_ns(floor(kernel, name)?, frame)
}

/// Repeats per BPF_PROG_TEST_RUN call: a round of [`REPEATS`] runs in calls of this
/// many, with a pause after each for the drain thread to empty the ring. 20 000 of the
/// largest records (472 bytes with the ring's header) fill 9 MiB of the 16 MiB ring,
/// so an evented kind never meets a full ring and measures the reservation that
/// succeeds, as the agent's events do.
const CHUNK: u32 = 20_000;

/// The pause after each call: far longer than the drain thread needs to read what a
/// call wrote (20 000 records at tens of ns each).
const SETTLE: std::time::Duration = std::time::Duration::from_millis(2);

/// The fastest of [`ROUNDS`] runs of [`REPEATS`] repeats of `frame` through `prog`
/// (each the mean of its calls of [`CHUNK`] repeats).
fn best_ns<P>(prog: &P, frame: &[u8]) -> anyhow::Result<f64>
where
    P: for<'a> aya::programs::TestRun<Opts<'a> = aya::programs::TestRunOptions<'a>, Result = aya::TestRunResult>,
{
    let mut best = f64::MAX;
    for _ in 0..ROUNDS {
        let mut total_ns = 0.0;
        for _ in 0..REPEATS / CHUNK {
            let opts = aya::programs::TestRunOptions {
                data_in: Some(frame),
                repeat: CHUNK,
                ..aya::programs::TestRunOptions::new()
            };
            // The kernel reports the mean per repeat, in whole ns; BPF_PROG_TEST_RUN does
            // not return the total to recompute it from.
            total_ns += prog.test_run(opts)?.duration.as_nanos() as f64;
            thread::sleep(SETTLE);
        }
        best = best.min(total_ns / f64::from(REPEATS / CHUNK));
    }
    Ok(best)
}

fn min_ns(kernel: &mut Kernel, hook: Hook, frame: &[u8]) -> anyhow::Result<f64> {
    match hook {
        Hook::Xdp => best_ns(kernel.xdp(), frame),
        Hook::Baseline => best_ns(kernel.xdp_baseline(), frame),
        Hook::Tc => best_ns(kernel.tc(), frame),
    }
}

/// Pause between two reads of the ring buffer by the drain thread: at ~100 ns per
/// event, ~10 000 events (a few MiB of the 16 MiB ring) per read.
const DRAIN_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// A thread reading the ring buffer in batches while frames run through the program.
struct Drain {
    stop: Arc<AtomicBool>,
    drained: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

impl Drain {
    fn start(mut ring: aya::maps::RingBuf<aya::maps::MapData>) -> Drain {
        let stop = Arc::new(AtomicBool::new(false));
        let drained = Arc::new(AtomicU64::new(0));
        let thread = {
            let (stop, drained) = (stop.clone(), drained.clone());
            thread::spawn(move || {
                loop {
                    // Checked before the read, so the read after the stop takes the
                    // events written last.
                    let last = stop.load(Ordering::Relaxed);
                    let mut n = 0;
                    while ring.next().is_some() {
                        n += 1;
                    }
                    drained.fetch_add(n, Ordering::Relaxed);
                    if last {
                        break;
                    }
                    // Read in batches, as the agent does (it is woken per
                    // `wakeup_bytes` or per WAKEUP_INTERVAL_NS, not per event): a
                    // consumer spinning on the ring would move its cache lines between
                    // the cores on every event and measure that instead of the program.
                    thread::sleep(DRAIN_PAUSE);
                }
            })
        };
        Drain { stop, drained, thread }
    }

    /// Stops the thread; returns the events it read.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.drained.load(Ordering::Relaxed)
    }
}

/// The programs as the benchmark loads them: a 16 MiB ring and the agent's wakeup rule.
fn load() -> anyhow::Result<Kernel> {
    let ringbuf_bytes = 16 << 20;
    let opts = LoadOptions { ringbuf_bytes, ..LoadOptions::default() };
    let config = KernelConfig { wakeup_bytes: wakeup_bytes_for(ringbuf_bytes), ..KernelConfig::new() };
    Ok(Kernel::load(&opts, &config)?)
}

/// Single runs per in-order measurement.
pub const SINGLE_RUNS: u32 = 20_000;

/// ns/packet of in-order bulk segments. Each must differ from the one before, so they
/// cannot be repeated in one BPF_PROG_TEST_RUN call: they run one per call, beside the
/// same segment without DF (`tcp_nonmatch`, which skips the flow cache) one per call
/// too, and the difference of the two minima over [`SINGLE_RUNS`] is what the flow
/// cache adds. That is added to `tcp_nonmatch_ns` (measured repeated, as every other
/// kind), so it reads like the others.
///
/// Returns that, and the older measure beside it: the single-run minimum less
/// XDP_PASS's single-run minimum. That one also charges the bulk segment with what a
/// single call costs any program beyond a pass (its code and maps cold after the
/// syscall), which a packet in a stream does not pay, so it overstates the flow
/// path by that much.
fn bulk_inorder_ns(kernel: &mut Kernel, baseline_ns: f64, tcp_nonmatch_ns: f64) -> anyhow::Result<(f64, f64)> {
    // Minimum single-run ns of: XDP_PASS, pathwatch on the non-DF segment, on the DF one.
    let mut best = [u64::MAX; 3];
    for n in 0..SINGLE_RUNS {
        let bulk = frames::tcp_bulk_segment(n);
        let mut plain = bulk.clone();
        plain[14 + 6] &= !0x40;
        for (i, (hook, frame)) in
            [(Hook::Baseline, &bulk), (Hook::Xdp, &plain), (Hook::Xdp, &bulk)].into_iter().enumerate()
        {
            let opts = aya::programs::TestRunOptions {
                data_in: Some(frame),
                repeat: 1,
                ..aya::programs::TestRunOptions::new()
            };
            let res = match hook {
                Hook::Baseline => aya::programs::TestRun::test_run(kernel.xdp_baseline(), opts),
                _ => aya::programs::TestRun::test_run(kernel.xdp(), opts),
            }?;
            best[i] = best[i].min(res.duration.as_nanos() as u64);
        }
    }
    let over_nonmatch = best[2] as f64 - best[1] as f64;
    Ok((tcp_nonmatch_ns + over_nonmatch, best[2] as f64 - best[0] as f64 + baseline_ns))
}

/// Runs the kernel benchmark.
pub fn run() -> anyhow::Result<KernelBench> {
    let mut kernel = load()?;
    let drain = Drain::start(kernel.take_events()?);
    let mut baseline = f64::MAX;
    let mut ns = Vec::new();
    let (mut tc_baseline_ns, mut tc_ns) = (f64::MAX, Vec::new());
    for (key, frame) in frames::all() {
        baseline = baseline.min(min_ns(&mut kernel, Hook::Baseline, &frame)?);
        ns.push((key, min_ns(&mut kernel, Hook::Xdp, &frame)?));
        tc_baseline_ns = tc_baseline_ns.min(best_ns(tc_baseline(&mut kernel)?, &frame)?);
        tc_ns.push((key, min_ns(&mut kernel, Hook::Tc, &frame)?));
    }
    let tcp_nonmatch_ns = ns.iter().find(|(k, _)| *k == "tcp_nonmatch").map_or(baseline, |(_, v)| *v);
    let (bulk, bulk_over_pass) = bulk_inorder_ns(&mut kernel, baseline, tcp_nonmatch_ns)?;
    let extra = vec![
        ("tcp_bulk_inorder", bulk),
        ("tcp_bulk_inorder_single_over_pass", bulk_over_pass),
        ("tcp_large_df_retransmit", min_ns(&mut kernel, Hook::Xdp, &frames::tcp_large_df_retransmit())?),
        ("l2_only_arp", min_ns(&mut kernel, Hook::Xdp, &frames::arp())?),
        ("l3_only_ipv4_gre", min_ns(&mut kernel, Hook::Xdp, &frames::ipv4_gre())?),
    ];
    let mut floors = Vec::new();
    for (key, name) in FLOORS {
        floors.push((key, floor_ns(&mut kernel, name, &frames::tcp_nonmatch())?));
    }
    let mut tc_floors = Vec::new();
    for (key, name) in TC_FLOORS {
        tc_floors.push((key, best_ns(tc_program(&mut kernel, name)?, &frames::tcp_nonmatch())?));
    }
    let drained = drain.finish();
    let ringbuf_full = kernel.stats()?[stats::RINGBUF_FULL as usize];
    Ok(KernelBench {
        baseline_ns: baseline,
        ns,
        tc_baseline_ns,
        tc_ns,
        extra,
        floors,
        tc_floors,
        ringbuf_full,
        drained,
    })
}

/// Runs one kind's frame through `pathwatch_xdp` (`xdp_pass` for the baseline; `tc_`
/// and the kind through `pathwatch_tc`, `tc_pass` for its baseline) for `secs`, with the ring drained as in [`run`], for a profiler to watch
/// (`perf record -a -- pathwatch-bench kernel --profile dns_query`); in calls of
/// [`CHUNK`] with the drain's pause, so no reservation fails. `tcp_bulk_inorder` runs
/// the in-order segments one per call. Returns the packets run.
pub fn profile(kind: &str, secs: f64) -> anyhow::Result<u64> {
    if kind == "tcp_bulk_inorder" {
        let mut kernel = load()?;
        let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
        let mut n = 0;
        while std::time::Instant::now() < until {
            let frame = frames::tcp_bulk_segment(n);
            let opts = aya::programs::TestRunOptions {
                data_in: Some(&frame),
                repeat: 1,
                ..aya::programs::TestRunOptions::new()
            };
            aya::programs::TestRun::test_run(kernel.xdp(), opts)?;
            n += 1;
        }
        return Ok(u64::from(n));
    }
    let (hook, frame) = match kind {
        "xdp_pass" => (Some(Hook::Baseline), frames::tcp_nonmatch()),
        "tc_pass" => (None, frames::tcp_nonmatch()),
        "tcp_large_df_retransmit" => (Some(Hook::Xdp), frames::tcp_large_df_retransmit()),
        _ => {
            let (hook, kind) = match kind.strip_prefix("tc_") {
                Some(k) => (Hook::Tc, k),
                None => (Hook::Xdp, kind),
            };
            let frame = frames::all().into_iter().find(|(k, _)| *k == kind).map(|(_, f)| f);
            (Some(hook), frame.ok_or_else(|| anyhow::anyhow!("no benchmark frame named {kind:?}"))?)
        }
    };
    let mut kernel = load()?;
    if hook.is_none() {
        tc_baseline(&mut kernel)?;
    }
    let drain = Drain::start(kernel.take_events()?);
    let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut packets = 0;
    while std::time::Instant::now() < until {
        let opts = aya::programs::TestRunOptions {
            data_in: Some(&frame),
            repeat: CHUNK,
            ..aya::programs::TestRunOptions::new()
        };
        match hook {
            Some(Hook::Baseline) => aya::programs::TestRun::test_run(kernel.xdp_baseline(), opts)?,
            Some(Hook::Xdp) => aya::programs::TestRun::test_run(kernel.xdp(), opts)?,
            Some(Hook::Tc) => aya::programs::TestRun::test_run(kernel.tc(), opts)?,
            None => aya::programs::TestRun::test_run(tc_baseline(&mut kernel)?, opts)?,
        };
        thread::sleep(SETTLE);
        packets += u64::from(CHUNK);
    }
    drain.finish();
    Ok(packets)
}

impl KernelBench {
    /// `{"baseline_ns": …, "ns": {…}}` with the fixed keys, plus `extra_ns` and the
    /// reservation check.
    pub fn to_json(&self) -> Value {
        let ns: Map<String, Value> = self.ns.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
        let tc: Map<String, Value> = self.tc_ns.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
        let extra: Map<String, Value> = self.extra.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
        let floors: Map<String, Value> = self.floors.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
        let tc_floors: Map<String, Value> = self.tc_floors.iter().map(|(k, v)| ((*k).to_string(), json!(v))).collect();
        json!({
            "baseline_ns": self.baseline_ns,
            "ns": ns,
            "tc_baseline_ns": self.tc_baseline_ns,
            "goals_over_baseline_ns": self
                .ns
                .iter()
                .chain(self.extra.iter())
                .filter_map(|(k, _)| self.goal(k).map(|g| ((*k).to_string(), json!(g))))
                .collect::<Map<String, Value>>(),
            "tc_ns": tc,
            "tc_goals_over_baseline_ns": self
                .tc_ns
                .iter()
                .filter_map(|(k, _)| self.tc_goal(k).map(|g| ((*k).to_string(), json!(g))))
                .collect::<Map<String, Value>>(),
            "tc_floor_ns": tc_floors,
            "extra_ns": extra,
            "floor_ns": floors,
            "ringbuf_full": self.ringbuf_full,
            "repeats": REPEATS,
            "rounds": ROUNDS,
            "single_runs": SINGLE_RUNS,
        })
    }

    /// The goal for `kind` over its hook's baseline (the line-rate issue's): evented
    /// kinds at most 20 ns over `floor_event` (what any evented packet pays), in-order
    /// bulk TCP +20, the non-matching kinds +10; `None` for the rows that only explain.
    pub fn goal(&self, kind: &str) -> Option<f64> {
        Self::goal_over(kind, &self.floors, self.baseline_ns, &self.ns)
    }

    /// The goal for `kind` at TC over TC_ACT_OK: the same goals, the evented kinds' over
    /// the TC `floor_event` (what an evented socket buffer pays at TC).
    pub fn tc_goal(&self, kind: &str) -> Option<f64> {
        Self::goal_over(kind, &self.tc_floors, self.tc_baseline_ns, &self.tc_ns)
    }

    fn goal_over(kind: &str, floors: &[(&str, f64)], baseline_ns: f64, rows: &[(&str, f64)]) -> Option<f64> {
        let floor_event = floors.iter().find(|(k, _)| *k == "floor_event").map(|(_, v)| v - baseline_ns)?;
        match kind {
            "tcp_bulk_inorder" => Some(20.0),
            "tcp_nonmatch" | "udp_nonmatch" | "dtls_app_data" => Some(10.0),
            k if frames::evented(k) && rows.iter().any(|(n, _)| *n == k) => Some(floor_event + 20.0),
            _ => None,
        }
    }

    /// A table: kind, ns, over baseline, goal, met.
    pub fn table(&self) -> Vec<String> {
        let mut out = vec![
            format!(
                "XDP_PASS baseline: {:.1} ns/packet (BPF_PROG_TEST_RUN, {REPEATS} repeats, min of {ROUNDS})",
                self.baseline_ns
            ),
            format!("{:<26} {:>8} {:>10} {:>8} {:>5}", "kind", "ns", "+baseline", "goal", "met"),
        ];
        let row = |name: &str, v: f64, over: f64, goal: Option<f64>| {
            let (goal, met) = match goal {
                Some(g) => (format!("+{g:.0}"), if over <= g { "yes" } else { "NO" }),
                None => ("-".into(), ""),
            };
            format!("{name:<26} {v:>8.1} {over:>+10.1} {goal:>8} {met:>5}")
        };
        for (k, v) in self.ns.iter().chain(self.extra.iter()) {
            out.push(row(k, *v, v - self.baseline_ns, self.goal(k)));
        }
        for (k, v) in &self.floors {
            out.push(row(k, *v, v - self.baseline_ns, None));
        }
        out.push(format!(
            "TC_ACT_OK baseline: {:.1} ns/packet; pathwatch_tc on a packet this host sends:",
            self.tc_baseline_ns
        ));
        for (k, v) in &self.tc_ns {
            out.push(row(&format!("tc_{k}"), *v, v - self.tc_baseline_ns, self.tc_goal(k)));
        }
        for (k, v) in &self.tc_floors {
            out.push(row(&format!("tc_{k}"), *v, v - self.tc_baseline_ns, None));
        }
        out.push(format!("ring buffer: {} events drained, {} reservations failed", self.drained, self.ringbuf_full));
        out
    }
}
