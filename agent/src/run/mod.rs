//! `pathwatch run`: attach to live interfaces, read events from the ring buffer as
//! they come (tokio AsyncFd: no polling), feed the detectors on kernel time, print
//! findings as they happen and `stats` lines every `output.report_interval_s`.
//! SIGINT/SIGTERM detach and print the summary; SIGHUP reloads the configuration
//! (without re-attaching) and reopens the `--json` file.
//!
//! The steps, in order: `prepare` (configuration, outputs), `load` (programs and
//! event ring), `attach_all`, `serve_metrics`, `watch_links` and `drop_capabilities`,
//! then the loop (`Live::consume`) and `Live::shutdown`. A step that cannot go on
//! returns a [`RunError`], whose exit code [`main`] returns; the attachments are held
//! by an `AttachGuard`, so every way out detaches them.

mod attach;
mod clock;
mod consume;
mod drops;
mod error;
mod guard;
pub mod links;
pub mod metrics;
mod reload;
mod slots;
mod stats;

pub use attach::{InterfaceSet, Listed, glob_match, ifindex, interface_names, xdp_holder};
pub use clock::{EventClock, monotonic_ns};
pub use error::RunError;

use std::{
    sync::{Arc, Mutex},
    time::Instant,
};

use aya::maps::{MapData, RingBuf};
use tokio::io::unix::AsyncFd;

use crate::{
    cli::RunArgs,
    config::Config,
    counts::EventCounts,
    detect::{Detectors, Emission},
    kernel::{Kernel, LoadOptions},
    output::{JsonTarget, Output},
};
use attach::{Attachments, is_glob};
use consume::Live;
use guard::AttachGuard;

/// Shared with the metrics endpoint.
pub struct Shared {
    /// The kernel programs (maps read at scrape time).
    pub kernel: Mutex<Kernel>,
    /// Everything userspace counts.
    pub state: Mutex<LiveState>,
    /// The drop program's facts, when it is attached.
    pub drops: Option<drops::DropWatch>,
}

/// Userspace counters and the detectors, for stats, the summary and metrics.
pub struct LiveState {
    /// Event counters.
    pub counts: EventCounts,
    /// Ring-buffer records that could not be decoded.
    pub undecodable: u64,
    /// Detectors and findings.
    pub detectors: Detectors,
    /// The interfaces counters are reported for.
    pub interfaces: InterfaceSet,
    /// Drop records read from the drop program.
    pub drop_events: u64,
}

/// Runs the agent live; returns the exit code (DESIGN.md: 0 ok, 1 runtime failure,
/// 2 usage or input error), after printing why when it is not 0.
pub fn main(args: RunArgs) -> u8 {
    let (config, mut out) = match prepare(&args) {
        Ok(ready) => ready,
        Err(e) => {
            // No outputs yet: straight to standard error, as the other commands do.
            eprintln!("error: {e}");
            return e.exit_code();
        }
    };
    let result = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt.block_on(run(args, config, &mut out)),
        Err(e) => Err(RunError::Runtime(e)),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            out.error(&format!("error: {e}"));
            e.exit_code()
        }
    }
}

/// The configuration (`--config`, else the defaults) and the outputs.
fn prepare(args: &RunArgs) -> Result<(Config, Output), RunError> {
    let config = match &args.output.config {
        None => Config::default(),
        Some(p) => Config::load(p)?,
    };
    let out = Output::new(JsonTarget::from_arg(args.output.json.as_deref()), args.output.verbose)
        .map_err(RunError::Output)?;
    Ok((config, out))
}

/// The steps of a live run, in order. Attachments are let go when the guard that
/// holds them drops, on every return.
async fn run(args: RunArgs, config: Config, out: &mut Output) -> Result<(), RunError> {
    let clock = EventClock::new();
    let started = Instant::now();
    let (shared, ring, drop_ring) = load(&config, out)?;
    let attachments = attach_all(&args, &shared, out)?;
    serve_metrics(&args, &config, &shared, clock, out).await?;
    let link_watch = watch_links(out);
    drop_capabilities(out);
    let ring = watch_ring(ring)?;
    let drop_ring = match drop_ring {
        Some(r) => Some(watch_ring(r)?),
        None => None,
    };
    let mut live = Live { args, config, shared, clock, started, attachments, ring, drop_ring, link_watch };
    live.consume(out).await?;
    live.shutdown(out);
    Ok(())
}

/// Loads the kernel programs with the configured sizes and takes their event ring, and
/// the drop program's when it could be attached; the detectors start with nothing to
/// report on.
#[allow(clippy::type_complexity)]
fn load(
    config: &Config,
    out: &mut Output,
) -> Result<(Arc<Shared>, RingBuf<MapData>, Option<RingBuf<MapData>>), RunError> {
    let opts = LoadOptions {
        ringbuf_bytes: config.kernel.ringbuf_bytes.0,
        flow_entries: config.pmtu.kernel_flow_entries.0 as u32,
        // Random per run (std's per-process hash keys), so that nobody can send flows
        // chosen to share the flow cache's sets.
        flow_seed: std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), std::process::id()),
    };
    let mut kernel = Kernel::load(&opts, &config.kernel_config()).map_err(RunError::Load)?;
    let ring = kernel.take_events().map_err(RunError::Events)?;
    let (watch, drop_ring) = match drops::start(&mut kernel, config, out) {
        Some((w, r)) => (Some(w), Some(r)),
        None => (None, None),
    };
    let mut detectors = Detectors::new(config, Emission::Live { interval_ns: config.output.finding_interval_s.ns() });
    detectors.set_drops_watched(watch.is_some());
    let shared = Arc::new(Shared {
        kernel: Mutex::new(kernel),
        state: Mutex::new(LiveState {
            counts: EventCounts::default(),
            undecodable: 0,
            detectors,
            interfaces: InterfaceSet::default(),
            drop_events: 0,
        }),
        drops: watch,
    });
    Ok((shared, ring, drop_ring))
}

/// Attaches to every interface the `-i` arguments name (a glob matches the
/// interfaces that exist now; one that matches none waits for interfaces to
/// appear) and says what is watched. An interface that cannot be watched ends the
/// run.
fn attach_all(args: &RunArgs, shared: &Arc<Shared>, out: &mut Output) -> Result<AttachGuard, RunError> {
    let mut attachments = AttachGuard::new(Attachments::new(args.xdp_mode, !args.no_egress), shared.clone());
    let mut names = Vec::new();
    for arg in &args.interfaces {
        if is_glob(arg) {
            names.extend(interface_names().into_iter().filter(|n| glob_match(arg, n)));
        } else {
            names.push(arg.clone());
        }
    }
    for name in &names {
        let attached = attachments.attach(&mut shared.kernel.lock().expect("kernel lock"), name);
        if let Some(n) = attached? {
            out.error(&format!("notice: {n}"));
        }
    }
    let described: Vec<String> = attachments
        .by_name
        .values()
        .map(|a| {
            format!(
                "{} (ifindex {}, XDP {}{})",
                a.name,
                a.ifindex,
                a.xdp_mode,
                if args.no_egress { "" } else { ", TC egress" }
            )
        })
        .collect();
    out.error(&format!(
        "pathwatch: watching {}",
        if described.is_empty() { "no interface yet (waiting for matches)".to_string() } else { described.join(", ") }
    ));
    shared.state.lock().expect("state lock").interfaces = attachments.interface_set();
    Ok(attachments)
}

/// The metrics endpoint, when `--metrics` or `metrics.listen` asks for one; an
/// address that is not one or cannot be bound ends the run.
async fn serve_metrics(
    args: &RunArgs,
    config: &Config,
    shared: &Arc<Shared>,
    clock: EventClock,
    out: &mut Output,
) -> Result<(), RunError> {
    let Some(arg) = args.metrics.as_ref().or(config.metrics.listen.as_ref()) else { return Ok(()) };
    let addr = metrics::parse_listen(arg).map_err(RunError::MetricsAddress)?;
    let listener =
        tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::MetricsBind { addr, source })?;
    out.error(&format!("pathwatch: metrics on http://{addr}/metrics"));
    tokio::spawn(metrics::serve(listener, shared.clone(), clock));
    Ok(())
}

/// Interfaces that come and go: rtnetlink notifications, no polling. Without them
/// the run goes on with the interfaces it has.
fn watch_links(out: &mut Output) -> Option<AsyncFd<links::LinkWatch>> {
    let registered = links::LinkWatch::new().and_then(|w| {
        // SAFETY: `register` needs the fd to stay open and the same for as long as the
        // AsyncFd holds it. The LinkWatch owns its netlink socket (closed only when the
        // LinkWatch drops), its `as_raw_fd` always returns that socket's fd, and the
        // AsyncFd owns the LinkWatch.
        unsafe { AsyncFd::register(w) }.map_err(std::io::Error::from)
    });
    match registered {
        Ok(w) => Some(w),
        Err(e) => {
            out.error(&format!("warning: cannot watch for interfaces coming and going: {e}"));
            None
        }
    }
}

/// Loading and attaching are done: keep only what re-attaching needs.
fn drop_capabilities(out: &mut Output) {
    match crate::caps::keep_only_attach() {
        Ok(kept) if kept.is_empty() => out.error("pathwatch: dropped all capabilities"),
        Ok(kept) => out.error(&format!(
            "pathwatch: keeping {} (to attach to interfaces that appear), dropped every other capability",
            kept.join(" and ")
        )),
        Err(e) => out.error(&format!("warning: could not drop capabilities: {e}")),
    }
}

/// The event ring buffer, registered with the runtime so that a kernel wakeup wakes
/// the loop.
fn watch_ring(ring: RingBuf<MapData>) -> Result<AsyncFd<RingBuf<MapData>>, RunError> {
    // SAFETY: `register` needs the fd to stay open and the same for as long as the
    // AsyncFd holds it. The RingBuf owns its map (MapData holds the map's OwnedFd, closed
    // only when the RingBuf drops), its `as_raw_fd` always returns that map's fd, and
    // the AsyncFd owns the RingBuf; the Kernel gave the map away in `take_events` and
    // does not touch it again.
    unsafe { AsyncFd::register(ring) }.map_err(|e| RunError::Ring(e.into()))
}
