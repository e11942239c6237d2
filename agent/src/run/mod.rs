//! `pathwatch run`: attach to live interfaces, read events from the ring buffer as
//! they come (tokio AsyncFd: no polling), feed the detectors on kernel time, print
//! findings as they happen and `stats` lines every `output.report_interval_s`.
//! SIGINT/SIGTERM detach and print the summary; SIGHUP reloads the configuration
//! (without re-attaching) and reopens the `--json` file.

mod attach;
mod clock;
pub mod links;
pub mod metrics;
mod slots;
mod stats;

pub use attach::{InterfaceSet, Listed, glob_match, ifindex, interface_names, xdp_holder};
pub use clock::{EventClock, monotonic_ns};

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use agent_common::stats as kstats;
use serde_json::{Map, json};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use crate::{
    cli::RunArgs,
    config::Config,
    counts::EventCounts,
    detect::{Detectors, Emission},
    event::Event,
    kernel::{Kernel, KernelError, LoadOptions},
    output::{JsonTarget, Output},
    render,
};
use attach::{AttachError, Attachments, is_glob};

/// Shared with the metrics endpoint.
pub struct Shared {
    /// The kernel programs (maps read at scrape time).
    pub kernel: Mutex<Kernel>,
    /// Everything userspace counts.
    pub state: Mutex<LiveState>,
    /// The largest count of kernel flow-table evictions reported so far: the count is
    /// derived from two reads the programs may move between, and a counter must never
    /// go back.
    pub kernel_flows_evicted: std::sync::atomic::AtomicU64,
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
}

/// Runs the agent live; returns the exit code.
pub fn main(args: RunArgs) -> u8 {
    let config = match &args.output.config {
        None => Config::default(),
        Some(p) => match Config::load(p) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e}");
                return 2;
            }
        },
    };
    let mut out = match Output::new(JsonTarget::from_arg(args.output.json.as_deref()), args.output.verbose) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return 2;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return 1;
        }
    };
    rt.block_on(run(args, config, &mut out))
}

async fn run(args: RunArgs, mut config: Config, out: &mut Output) -> u8 {
    let clock = EventClock::new();
    let started = Instant::now();
    let load = LoadOptions {
        ringbuf_bytes: config.kernel.ringbuf_bytes.0,
        flow_entries: config.pmtu.kernel_flow_entries.0 as u32,
    };
    let mut kernel = match Kernel::load(&load, &config.kernel_config()) {
        Ok(k) => k,
        Err(e @ KernelError::Permission(_)) => {
            out.error(&format!("error: {e}"));
            return 2;
        }
        Err(e) => {
            out.error(&format!("error: {e}"));
            return 1;
        }
    };
    let ring = match kernel.take_events() {
        Ok(r) => r,
        Err(e) => {
            out.error(&format!("error: {e}"));
            return 1;
        }
    };
    let mut attachments = Attachments::new(args.xdp_mode, !args.no_egress);
    let mut names = Vec::new();
    for arg in &args.interfaces {
        if is_glob(arg) {
            names.extend(interface_names().into_iter().filter(|n| glob_match(arg, n)));
        } else {
            names.push(arg.clone());
        }
    }
    for name in &names {
        match attachments.attach(&mut kernel, name) {
            Ok(notice) => {
                if let Some(n) = notice {
                    out.error(&format!("notice: {n}"));
                }
            }
            Err(e) => {
                out.error(&format!("error: {e}"));
                attachments.detach_all(&mut kernel);
                return match e {
                    AttachError::Other { .. } => 1,
                    _ => 2,
                };
            }
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

    let shared = Arc::new(Shared {
        kernel: Mutex::new(kernel),
        state: Mutex::new(LiveState {
            counts: EventCounts::default(),
            undecodable: 0,
            detectors: Detectors::new(&config, Emission::Live { interval_ns: config.output.finding_interval_s.ns() }),
            interfaces: attachments.interface_set(),
        }),
        kernel_flows_evicted: Default::default(),
    });

    // SAFETY: the ring buffer owns its fd for as long as the AsyncFd holds it; nothing
    // else closes it.
    let metrics_arg = args.metrics.clone().or_else(|| config.metrics.listen.clone());
    if let Some(arg) = metrics_arg {
        let addr = match metrics::parse_listen(&arg) {
            Ok(a) => a,
            Err(e) => {
                out.error(&format!("error: {e}"));
                attachments.detach_all(&mut shared.kernel.lock().expect("kernel lock"));
                return 2;
            }
        };
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                out.error(&format!("pathwatch: metrics on http://{addr}/metrics"));
                tokio::spawn(metrics::serve(l, shared.clone(), clock));
            }
            Err(e) => {
                out.error(&format!("error: --metrics {addr}: {e}"));
                attachments.detach_all(&mut shared.kernel.lock().expect("kernel lock"));
                return 2;
            }
        }
    }

    // Interfaces that come and go: rtnetlink notifications, no polling.
    // SAFETY (both registrations): the registered value owns its fd for as long as the
    // AsyncFd holds it; nothing else closes it.
    let mut link_watch = match links::LinkWatch::new().map(|w| unsafe { AsyncFd::register(w) }) {
        Ok(Ok(w)) => Some(w),
        Ok(Err(e)) => {
            out.error(&format!("warning: cannot watch for interfaces coming and going: {e}"));
            None
        }
        Err(e) => {
            out.error(&format!("warning: cannot watch for interfaces coming and going: {e}"));
            None
        }
    };

    // Loading and attaching are done: keep only what re-attaching needs.
    match crate::caps::keep_only_attach() {
        Ok(kept) if kept.is_empty() => out.error("pathwatch: dropped all capabilities"),
        Ok(kept) => out.error(&format!(
            "pathwatch: keeping {} (to attach to interfaces that appear), dropped every other capability",
            kept.join(" and ")
        )),
        Err(e) => out.error(&format!("warning: could not drop capabilities: {e}")),
    }

    let mut ring = match unsafe { AsyncFd::register(ring) } {
        Ok(r) => r,
        Err(e) => {
            out.error(&format!("error: cannot watch the ring buffer: {e}"));
            return 1;
        }
    };
    let (mut sigint, mut sigterm, mut sighup) =
        match (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
            (Ok(a), Ok(b), Ok(c)) => (a, b, c),
            _ => {
                out.error("error: cannot install signal handlers");
                return 1;
            }
        };
    let mut report = report_timer(config.output.report_interval_s);
    let mut timers = tokio::time::interval(Duration::from_millis(250));
    // The kernel does not wake us for an event that comes too soon after a wakeup
    // (agent_common::config::WAKEUP_INTERVAL_NS); after every read that found events
    // we read again a little later, until a read finds none. Idle, nothing ticks.
    let mut follow_up: Option<tokio::time::Instant> = None;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + Duration::from_secs_f64(d.max(0.0)));
    let sleep_until = async move {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::pin!(sleep_until);

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let Ok(mut guard) = guard else { break };
                let read = drain(guard.get_inner_mut(), &shared, &clock, out);
                guard.clear_ready();
                follow_up = next_follow_up(read);
            }
            _ = async { tokio::time::sleep_until(follow_up.expect("guarded")).await }, if follow_up.is_some() => {
                let read = drain(ring.get_mut(), &shared, &clock, out);
                follow_up = next_follow_up(read);
            }
            _ = timers.tick() => {
                // Events still in the ring come first: a response waiting there must
                // not let its query time out.
                if drain(ring.get_mut(), &shared, &clock, out) > 0 && follow_up.is_none() {
                    follow_up = next_follow_up(1);
                }
                let mut st = shared.state.lock().expect("state lock");
                st.detectors.tick(clock.now());
                for f in st.detectors.take_due() {
                    out.finding(&f);
                }
            }
            _ = report.tick() => {
                let line = stats::stats_line(&shared, &clock, started);
                out.json(&line);
                out.human(&stats::render(&line));
            }
            _ = sighup.recv() => {
                let every = config.output.report_interval_s;
                reload(&args, &mut config, &shared, out);
                if config.output.report_interval_s != every {
                    report = report_timer(config.output.report_interval_s);
                }
            }
            guard = async { link_watch.as_mut().expect("guarded").readable_mut().await }, if link_watch.is_some() => {
                let Ok(mut guard) = guard else { link_watch = None; continue };
                loop {
                    match guard.get_inner_mut().read() {
                        Ok(changes) => on_links(&changes, &args.interfaces, &mut attachments, &shared, out),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            out.error(&format!("warning: interface notifications: {e}"));
                            break;
                        }
                    }
                }
                guard.clear_ready();
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = &mut sleep_until => break,
        }
    }

    // Detach first so no new events arrive, then read what is left.
    {
        let mut k = shared.kernel.lock().expect("kernel lock");
        attachments.detach_all(&mut k);
    }
    drain(ring.get_mut(), &shared, &clock, out);
    let summary = {
        let mut st = shared.state.lock().expect("state lock");
        st.detectors.finish(clock.now());
        for f in st.detectors.take_due() {
            out.finding(&f);
        }
        drop(st);
        stats::summary_line(&shared, &clock, started)
    };
    out.json(&summary);
    for line in stats::render_summary(&summary, &shared) {
        out.human(&line);
    }
    0
}

/// The `stats` line timer: first tick one period from now.
fn report_timer(every: crate::config::Secs) -> tokio::time::Interval {
    let period = Duration::from_secs_f64(every.0);
    tokio::time::interval_at(tokio::time::Instant::now() + period, period)
}

/// When to read the ring buffer again after a read that found `read` records: soon
/// while events flow, never (until the kernel wakes us) once they stop.
fn next_follow_up(read: u64) -> Option<tokio::time::Instant> {
    (read > 0).then(|| tokio::time::Instant::now() + Duration::from_nanos(agent_common::config::FOLLOW_UP_READ_NS))
}

/// Reads every record in the ring buffer into the detectors; returns how many.
fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    shared: &Shared,
    clock: &EventClock,
    out: &mut Output,
) -> u64 {
    let mut st = shared.state.lock().expect("state lock");
    let mut read = 0;
    while let Some(item) = ring.next() {
        read += 1;
        match Event::from_record(&item) {
            Ok(mut ev) => {
                ev.header.ts_ns = clock.wall(ev.header.ts_ns);
                st.counts.count(&ev);
                if out.verbose() > 0 {
                    out.human(&render::event_line(&ev));
                }
                st.detectors.on_event(&ev);
            }
            Err(_) => st.undecodable += 1,
        }
    }
    for f in st.detectors.take_due() {
        out.finding(&f);
    }
    read
}

/// Whether interface `name` is one of the `-i` arguments (a name or a glob).
fn wanted(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| if is_glob(p) { glob_match(p, name) } else { p == name })
}

/// Attaches to watched interfaces that appear, lets go of those that go.
fn on_links(
    changes: &[links::LinkChange],
    patterns: &[String],
    att: &mut Attachments,
    shared: &Shared,
    out: &mut Output,
) {
    let mut changed = false;
    for c in changes {
        match c {
            links::LinkChange::Up { name, ifindex } if wanted(patterns, name) => {
                let mut k = shared.kernel.lock().expect("kernel lock");
                match att.by_name.get(name) {
                    Some(a) if a.ifindex == *ifindex => continue,
                    Some(_) => {
                        att.detach(&mut k, name);
                    }
                    None => {}
                }
                match att.attach(&mut k, name) {
                    Ok(notice) => {
                        if let Some(n) = notice {
                            out.error(&format!("notice: {n}"));
                        }
                        let a = &att.by_name[name];
                        out.error(&format!(
                            "pathwatch: {name} appeared: watching it (ifindex {}, XDP {})",
                            a.ifindex, a.xdp_mode
                        ));
                        changed = true;
                    }
                    Err(e) => out.error(&format!("error: {name} appeared but cannot be watched: {e}")),
                }
            }
            links::LinkChange::Gone { name, .. } => {
                let mut k = shared.kernel.lock().expect("kernel lock");
                if att.detach(&mut k, name).is_some() {
                    out.error(&format!(
                        "pathwatch: {name} went away; watching the others{}",
                        if patterns.iter().any(|p| p == name) { ", and it again when it returns" } else { "" }
                    ));
                    changed = true;
                }
            }
            _ => {}
        }
    }
    if changed {
        shared.state.lock().expect("state lock").interfaces = att.interface_set();
    }
}

/// SIGHUP: a new configuration reaches the kernel map, the detectors, the findings
/// book and the `stats` timer (the caller restarts it) without re-attaching; a bad
/// file leaves the old settings in place. What is fixed at start (the ring buffer and
/// kernel flow table sizes, the metrics address) keeps its running value, with a
/// notice naming each that changed in the file. The JSON file is reopened (logrotate).
fn reload(args: &RunArgs, config: &mut Config, shared: &Shared, out: &mut Output) {
    if let Err(e) = out.reopen() {
        out.error(&format!("error: SIGHUP: {e}; JSON lines keep going to the old file"));
    }
    let Some(path) = &args.output.config else {
        out.error("notice: SIGHUP: no --config file to reload; JSON output reopened");
        return;
    };
    let new = match Config::load(path) {
        Ok(new) => new,
        Err(e) => {
            out.error(&format!("error: SIGHUP: {e}; old settings kept"));
            return;
        }
    };
    let (applied, at_start) = settle_reload(config, new, args.metrics.is_some());
    // The kernel configuration is derived from the running ring size (wakeup_bytes).
    let kernel_result = shared.kernel.lock().expect("kernel lock").set_config(&applied.kernel_config());
    if let Err(e) = kernel_result {
        out.error(&format!("error: SIGHUP: {e}; old settings kept"));
        return;
    }
    shared.state.lock().expect("state lock").detectors.reconfigure(&applied);
    if !at_start.is_empty() {
        out.error(&format!(
            "notice: SIGHUP: {} changed in the file but apply only at the next start; running with the old value",
            at_start.join(", ")
        ));
    }
    *config = applied;
    out.error(&format!("notice: SIGHUP: reloaded {}", crate::printable::path(path)));
}

/// The configuration a reload runs with: `new`, except for the settings fixed at
/// start, which keep their `running` values; and the names of those the file changed.
/// `metrics_flag`: `--metrics` was given (it wins over `metrics.listen`).
fn settle_reload(running: &Config, mut new: Config, metrics_flag: bool) -> (Config, Vec<&'static str>) {
    let mut at_start = Vec::new();
    if new.kernel.ringbuf_bytes != running.kernel.ringbuf_bytes {
        at_start.push("kernel.ringbuf_bytes");
        new.kernel.ringbuf_bytes = running.kernel.ringbuf_bytes;
    }
    if new.pmtu.kernel_flow_entries != running.pmtu.kernel_flow_entries {
        at_start.push("pmtu.kernel_flow_entries");
        new.pmtu.kernel_flow_entries = running.pmtu.kernel_flow_entries;
    }
    if new.metrics.listen != running.metrics.listen {
        if !metrics_flag {
            at_start.push("metrics.listen");
        }
        new.metrics.listen = running.metrics.listen.clone();
    }
    (new, at_start)
}

/// `stats::NAMES` as JSON, for the stats and summary lines.
fn kernel_stats_json(stats: &[u64; kstats::NUM_STATS as usize]) -> serde_json::Value {
    let m: Map<String, serde_json::Value> =
        kstats::NAMES.iter().zip(stats).map(|(n, v)| ((*n).to_string(), json!(v))).collect();
    serde_json::Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Cap, RingBytes, Secs};

    #[test]
    fn a_reload_applies_run_time_settings_and_keeps_those_fixed_at_start() {
        let running = Config::default();
        let mut file = Config::default();
        file.output.report_interval_s = Secs(0.5);
        file.output.finding_interval_s = Secs(5.0);
        file.output.findings_cap = Cap(7);
        file.dns.timeout_s = Secs(1.0);
        file.kernel.ringbuf_bytes = RingBytes(1 << 24);
        file.pmtu.kernel_flow_entries = Cap(1024);
        file.metrics.listen = Some("9999".into());
        let (applied, at_start) = settle_reload(&running, file.clone(), false);
        assert_eq!(at_start, ["kernel.ringbuf_bytes", "pmtu.kernel_flow_entries", "metrics.listen"]);
        assert_eq!(applied.output, file.output, "[output] applies on SIGHUP");
        assert_eq!(applied.dns, file.dns);
        assert_eq!(applied.kernel.ringbuf_bytes, running.kernel.ringbuf_bytes);
        assert_eq!(applied.pmtu.kernel_flow_entries, running.pmtu.kernel_flow_entries);
        assert_eq!(applied.metrics.listen, None);
        // The kernel's wakeup threshold follows the ring it runs with, not the file's.
        assert_eq!(applied.kernel_config().wakeup_bytes, running.kernel_config().wakeup_bytes);
        // `--metrics` wins over metrics.listen: nothing to say about it.
        let (_, at_start) = settle_reload(&running, file, true);
        assert!(!at_start.contains(&"metrics.listen"), "{at_start:?}");
        let (_, at_start) = settle_reload(&running, Config::default(), false);
        assert!(at_start.is_empty());
    }
}
