//! The running agent: the loop that reads events as the kernel wakes it, keeps the
//! detectors on time, prints `stats` lines, follows interfaces that come and go and
//! reloads on SIGHUP; then the shutdown, which detaches, reads what is left and
//! prints the summary.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use tokio::{
    io::unix::AsyncFd,
    signal::unix::{SignalKind, signal},
};

use super::{
    EventClock, RunError, Shared,
    attach::{Attachments, glob_match, is_glob},
    guard::AttachGuard,
    links, reload, stats,
};
use crate::{cli::RunArgs, config::Config, event::Event, output::Output, render};

/// A run once the programs are attached: what the loop and the shutdown work on.
pub struct Live {
    /// The command line (`-i` patterns for interfaces that appear, `--duration`).
    pub args: RunArgs,
    /// The running configuration (SIGHUP replaces it).
    pub config: Config,
    /// Kernel programs, counters and detectors.
    pub shared: Arc<Shared>,
    /// Kernel time to wall-clock time.
    pub clock: EventClock,
    /// When the run started, for the `stats` lines and the summary.
    pub started: Instant,
    /// The interfaces watched now; detached on the way out, however the run ends.
    pub attachments: AttachGuard,
    /// The event ring buffer, readable when the kernel wakes us.
    pub ring: AsyncFd<RingBuf<MapData>>,
    /// The drop ring buffer, when the drop program is attached.
    pub drop_ring: Option<AsyncFd<RingBuf<MapData>>>,
    /// Link notifications, when they could be subscribed to.
    pub link_watch: Option<AsyncFd<links::LinkWatch>>,
}

impl Live {
    /// Reads and handles events until SIGINT, SIGTERM or the end of `--duration`.
    pub async fn consume(&mut self, out: &mut Output) -> Result<(), RunError> {
        let (mut sigint, mut sigterm, mut sighup) =
            match (signal(SignalKind::interrupt()), signal(SignalKind::terminate()), signal(SignalKind::hangup())) {
                (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                _ => return Err(RunError::Signals),
            };
        let Live { args, config, shared, clock, started, attachments, ring, drop_ring, link_watch } = self;
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
                    let read = drain(guard.get_inner_mut(), shared, clock, out);
                    guard.clear_ready();
                    follow_up = next_follow_up(read);
                }
                guard = async { drop_ring.as_mut().expect("guarded").readable_mut().await }, if drop_ring.is_some() => {
                    let Ok(mut guard) = guard else { *drop_ring = None; continue };
                    super::drops::drain(guard.get_inner_mut(), shared, clock);
                    guard.clear_ready();
                }
                _ = async { tokio::time::sleep_until(follow_up.expect("guarded")).await }, if follow_up.is_some() => {
                    let read = drain(ring.get_mut(), shared, clock, out);
                    follow_up = next_follow_up(read);
                }
                _ = timers.tick() => {
                    // Events still in the ring come first: a response waiting there must
                    // not let its query time out.
                    if let Some(d) = drop_ring.as_mut() {
                        super::drops::drain(d.get_mut(), shared, clock);
                    }
                    if drain(ring.get_mut(), shared, clock, out) > 0 && follow_up.is_none() {
                        follow_up = next_follow_up(1);
                    }
                    let mut st = shared.state.lock().expect("state lock");
                    st.detectors.tick(clock.now());
                    for f in st.detectors.take_due() {
                        out.finding(&f);
                    }
                }
                _ = report.tick() => {
                    let line = stats::stats_line(shared, clock, *started);
                    out.json(&line);
                    out.human(&stats::render(&line));
                }
                _ = sighup.recv() => {
                    let every = config.output.report_interval_s;
                    reload::reload(args, config, shared, out);
                    if config.output.report_interval_s != every {
                        report = report_timer(config.output.report_interval_s);
                    }
                }
                guard = async { link_watch.as_mut().expect("guarded").readable_mut().await }, if link_watch.is_some() => {
                    let Ok(mut guard) = guard else { *link_watch = None; continue };
                    loop {
                        match guard.get_inner_mut().read() {
                            Ok(changes) => on_links(&changes, &args.interfaces, attachments, shared, out),
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
        Ok(())
    }

    /// Detaches first so no new events arrive, then reads what is left, lets the
    /// detectors finish and prints the summary.
    pub fn shutdown(mut self, out: &mut Output) {
        self.attachments.detach_all();
        if let Some(d) = self.drop_ring.as_mut() {
            super::drops::drain(d.get_mut(), &self.shared, &self.clock);
        }
        drain(self.ring.get_mut(), &self.shared, &self.clock, out);
        let summary = {
            let mut st = self.shared.state.lock().expect("state lock");
            st.detectors.finish(self.clock.now());
            for f in st.detectors.take_due() {
                out.finding(&f);
            }
            drop(st);
            stats::summary_line(&self.shared, &self.clock, self.started)
        };
        out.json(&summary);
        for line in stats::render_summary(&summary, &self.shared) {
            out.human(&line);
        }
    }
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
fn drain(ring: &mut RingBuf<MapData>, shared: &Shared, clock: &EventClock, out: &mut Output) -> u64 {
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
