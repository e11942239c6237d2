//! `pathwatch replay`: captures through the classifier (userspace by default, the
//! real kernel programs with `--kernel`) into the detectors, on capture time.
//!
//! Several files are merged in timestamp order. A file that cannot be read to the
//! end is reported with its frame number and byte offset after every finding from
//! the frames before the damage has been printed, and the exit code is 2.

use std::{cmp::Reverse, collections::BinaryHeap, path::PathBuf};

use agent_common::{Class, Direction};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, json};

use crate::{
    capture::{Capture, Frame, Frames},
    classify::{Classifier, link::to_ethernet},
    config::Config,
    counts::EventCounts,
    detect::{Detectors, Emission, finding::rfc3339},
    event::Event,
    kernel::{
        KernelError,
        testrun::{Hook, MAX_FRAME, MIN_FRAME, TestRunner},
    },
    output::Output,
    report,
};

/// What `replay` was asked to do.
pub struct ReplayArgs {
    /// Capture files.
    pub files: Vec<PathBuf>,
    /// Use the kernel programs (BPF_PROG_TEST_RUN) instead of the userspace classifier.
    pub kernel: bool,
    /// Configuration.
    pub config: Config,
}

/// Where events come from.
enum Source {
    User(Classifier),
    Kernel(Box<TestRunner>),
}

impl Source {
    /// Classifies one Ethernet frame; the class is known per frame only in userspace.
    fn frame(&mut self, eth: &[u8], ts_ns: u64) -> Result<(Option<Class>, Vec<Event>), KernelError> {
        match self {
            Source::User(c) => {
                let r = c.classify(eth, Direction::Ingress, 0, ts_ns);
                Ok((Some(r.class), r.event.into_iter().collect()))
            }
            Source::Kernel(runner) => {
                if eth.len() < MIN_FRAME {
                    return Ok((Some(Class::Other), Vec::new()));
                }
                let eth = &eth[..eth.len().min(MAX_FRAME)];
                let mut r = runner.run(Hook::Xdp, eth, false)?;
                for ev in &mut r.events {
                    ev.header.ts_ns = ts_ns;
                    ev.header.ifindex = 0;
                }
                Ok((None, r.events))
            }
        }
    }

    /// Flows held in the large-segment table (the kernel's, or the userspace
    /// classifier's), and flows evicted from it (for the kernel's: inserted and no
    /// longer held).
    fn flow_table(&mut self) -> (u64, u64) {
        match self {
            Source::User(c) => (c.flows().len() as u64, c.flows().evictions()),
            Source::Kernel(r) => {
                let held = r.flow_count().unwrap_or(0);
                let inserted = r.stat(agent_common::stats::FLOWS_INSERTED).unwrap_or(0);
                (held, inserted.saturating_sub(held))
            }
        }
    }
}

struct Head<'a> {
    frame: Frame<'a>,
    file: usize,
}

impl PartialEq for Head<'_> {
    fn eq(&self, o: &Self) -> bool {
        (self.frame.ts_ns, self.file, self.frame.number) == (o.frame.ts_ns, o.file, o.frame.number)
    }
}
impl Eq for Head<'_> {}
impl PartialOrd for Head<'_> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Head<'_> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.frame.ts_ns, self.file, self.frame.number).cmp(&(o.frame.ts_ns, o.file, o.frame.number))
    }
}

/// Runs a replay; returns the exit code.
pub fn replay(args: ReplayArgs, out: &mut Output) -> u8 {
    let mut errors: Vec<String> = Vec::new();
    let mut source = if args.kernel {
        match TestRunner::new(&args.config.kernel_config()) {
            Ok(r) => Source::Kernel(Box::new(r)),
            Err(e) => {
                out.error(&format!("error: replay --kernel: {e}"));
                return match e {
                    KernelError::Permission(_) => 2,
                    _ => 1,
                };
            }
        }
    } else {
        Source::User(Classifier::new(args.config.kernel_config(), args.config.pmtu.kernel_flow_entries.0 as usize))
    };

    let captures: Vec<Capture> = args
        .files
        .iter()
        .filter_map(|p| match Capture::open(p) {
            Ok(c) => Some(c),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        })
        .collect();
    let mut iters: Vec<Option<Frames<'_>>> = captures
        .iter()
        .map(|c| match c.frames() {
            Ok(f) => Some(f),
            Err(e) => {
                errors.push(e.to_string());
                None
            }
        })
        .collect();

    let total_bytes: u64 = captures.iter().map(|c| c.bytes().len() as u64).sum();
    let progress =
        (out.human_is_terminal() && std::io::IsTerminal::is_terminal(&std::io::stderr()) && total_bytes > 16 << 20)
            .then(|| {
                let pb = ProgressBar::new(total_bytes);
                pb.set_style(
                    ProgressStyle::with_template("{spinner} {bytes}/{total_bytes} {wide_bar} {eta}")
                        .expect("static template"),
                );
                pb
            });

    let mut detectors = Detectors::new(&args.config, Emission::AtEnd);
    let mut counts = EventCounts::default();
    let mut classes = [0u64; 8];
    let (mut packets, mut first_ts, mut last_ts) = (0u64, u64::MAX, 0u64);
    let mut heap: BinaryHeap<Reverse<Head<'_>>> = BinaryHeap::new();
    for file in 0..iters.len() {
        pull(file, &mut iters, &mut heap, &mut errors);
    }
    let mut bytes_done = 0u64;
    while let Some(Reverse(Head { frame, file })) = heap.pop() {
        pull(file, &mut iters, &mut heap, &mut errors);
        packets += 1;
        first_ts = first_ts.min(frame.ts_ns);
        last_ts = last_ts.max(frame.ts_ns);
        if let Some(pb) = &progress {
            bytes_done += frame.data.len() as u64 + 16;
            if packets % 4096 == 0 {
                pb.set_position(bytes_done);
            }
        }
        let Some(eth) = to_ethernet(frame.link, frame.data) else {
            classes[Class::Other as usize] += 1;
            continue;
        };
        let (class, events) = match source.frame(&eth, frame.ts_ns) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("{}: frame {}: {e}", crate::printable::path(captures[file].path()), frame.number));
                break;
            }
        };
        if let Some(class) = class {
            classes[class as usize] += 1;
        }
        for ev in &events {
            counts.count(ev);
            if out.verbose() > 0 {
                out.human(&crate::render::event_line(ev));
            }
            detectors.on_event(ev);
        }
        detectors.tick(frame.ts_ns);
        if out.stdout_closed() {
            break;
        }
    }
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    if let Source::Kernel(runner) = &mut source {
        // `classes` holds the frames the kernel never saw (too short, or no Ethernet
        // to give it), counted as `other` by hand; the kernel counted the rest.
        match runner.kernel().counters(&[0]) {
            Ok(c) => {
                for (held, kernel) in classes.iter_mut().zip(c.packets_by_class(Direction::Ingress)) {
                    *held += kernel;
                }
            }
            Err(e) => errors.push(format!("reading the kernel counters: {e}")),
        }
    }
    counts.dtls_record = classes[Class::Dtls as usize];
    detectors.finish(last_ts);
    for f in detectors.take_due() {
        if out.stdout_closed() {
            // The reader went away (`| head`): nothing more to say, and no error.
            return 0;
        }
        out.finding(&f);
    }
    let mut head = Map::new();
    head.insert("source".into(), json!(if args.kernel { "kernel" } else { "userspace" }));
    head.insert("files".into(), json!(args.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>()));
    head.insert("start".into(), json!((packets > 0).then(|| rfc3339(first_ts))));
    head.insert("end".into(), json!((packets > 0).then(|| rfc3339(last_ts))));
    head.insert("errors".into(), json!(errors));
    let (held, evicted) = source.flow_table();
    let summary =
        report::summary_json(head, packets, &classes, &counts, &detectors, &[("kernel_flows", held, Some(evicted))]);
    out.json(&summary);
    for line in report::render_summary(packets, &classes, &counts, &detectors) {
        out.human(&line);
    }
    for e in &errors {
        out.error(&format!("error: {e}"));
    }
    if !errors.is_empty() {
        2
    } else if out.json_errors > 0 {
        1
    } else {
        0
    }
}

/// Moves the next frame of `file` onto the heap (or ends the file, keeping its error).
fn pull<'a>(
    file: usize,
    iters: &mut [Option<Frames<'a>>],
    heap: &mut BinaryHeap<Reverse<Head<'a>>>,
    errors: &mut Vec<String>,
) {
    let Some(it) = iters[file].as_mut() else { return };
    match it.next() {
        Some(Ok(frame)) => heap.push(Reverse(Head { frame, file })),
        Some(Err(e)) => {
            errors.push(e.to_string());
            iters[file] = None;
        }
        None => iters[file] = None,
    }
}
