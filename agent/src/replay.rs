//! `pathwatch replay`: captures through the classifier (userspace by default, the
//! real kernel programs with `--kernel`) into the detectors, on capture time.
//!
//! Several files are merged in timestamp order, each read as a stream (a file, `-`
//! for standard input, compressed or not). A file that cannot be read to the end is
//! reported with its frame number and byte offset after every finding from the
//! frames before the damage has been printed, and the exit code is 2.

use std::{
    cmp::Reverse,
    collections::BinaryHeap,
    path::PathBuf,
    time::{Duration, Instant},
};

use agent_common::{Class, Direction};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, json};

use crate::{
    capture::{Reader, input::is_stdin},
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
            // Like the kernel's, which never sees them: no walk, so no statistic.
            Source::User(_) if eth.len() < MIN_FRAME => Ok((Some(Class::Other), Vec::new())),
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

    /// The statistics (`agent_common::stats`) as the kernel counts them: the userspace
    /// classifier's own (the walk's only), or the kernel's.
    fn stats(&mut self) -> [u64; agent_common::stats::NUM_STATS as usize] {
        match self {
            Source::User(c) => c.stats(),
            Source::Kernel(r) => std::array::from_fn(|i| r.stat(i as u32).unwrap_or(0)),
        }
    }

    /// Flows held in the large-segment cache (the kernel's, or the userspace
    /// classifier's), and flows evicted from it.
    fn flow_table(&mut self) -> (u64, u64) {
        match self {
            Source::User(c) => (c.flows().len() as u64, c.flows().evictions()),
            Source::Kernel(r) => {
                let held = r.flow_count().unwrap_or(0);
                (held, r.stat(agent_common::stats::FLOW_EVICTIONS).unwrap_or(0))
            }
        }
    }
}

/// Where the next frame of a file is in the merge: earliest capture time first, then
/// the file given first, then file order.
type HeadKey = Reverse<(u64, usize, u64)>;

/// Work after which a progress bar appears (on a terminal): shorter replays finish
/// before one would be read.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

/// Runs a replay; returns the exit code.
pub fn replay(args: ReplayArgs, out: &mut Output) -> u8 {
    let mut errors: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
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

    let mut readers: Vec<Option<Reader>> = Vec::with_capacity(args.files.len());
    let mut stdin_taken = false;
    for path in &args.files {
        if is_stdin(path) && std::mem::replace(&mut stdin_taken, true) {
            errors.push("-: standard input can be read only once".to_string());
            readers.push(None);
            continue;
        }
        match Reader::open(path) {
            Ok(r) => readers.push(Some(r)),
            Err(e) => {
                errors.push(e.to_string());
                readers.push(None);
            }
        }
    }

    let progress = (out.human_is_terminal() && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
        let pb = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        pb.set_style(
            ProgressStyle::with_template("{spinner} {human_pos} packets, {per_sec:0}, {elapsed}")
                .expect("static template"),
        );
        pb
    });
    let started = Instant::now();

    let mut detectors = Detectors::new(&args.config, Emission::AtEnd);
    let mut counts = EventCounts::default();
    let mut classes = [0u64; 8];
    let (mut packets, mut first_ts, mut last_ts) = (0u64, u64::MAX, 0u64);
    let mut heap: BinaryHeap<HeadKey> = BinaryHeap::new();
    for file in 0..readers.len() {
        pull(file, &mut readers, &mut heap, &mut errors);
    }
    'frames: while let Some(Reverse((_, file, _))) = heap.pop() {
        let reader = readers[file].as_ref().expect("a file on the heap is open");
        let frame = reader.frame().expect("a file on the heap has a frame");
        packets += 1;
        first_ts = first_ts.min(frame.ts_ns);
        last_ts = last_ts.max(frame.ts_ns);
        if let Some(pb) = &progress
            && packets % 4096 == 0
        {
            pb.set_position(packets);
            if pb.is_hidden() && started.elapsed() > PROGRESS_AFTER {
                pb.set_draw_target(ProgressDrawTarget::stderr());
            }
        }
        // Frames link layers cannot make Ethernet count as `other` and tick nothing.
        'frame: {
            let Some(eth) = to_ethernet(frame.link, frame.data) else {
                classes[Class::Other as usize] += 1;
                break 'frame;
            };
            let (class, events) = match source.frame(&eth, frame.ts_ns) {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{}: frame {}: {e}", crate::printable::path(reader.path()), frame.number));
                    break 'frames;
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
        }
        pull(file, &mut readers, &mut heap, &mut errors);
        if out.stdout_closed() {
            break;
        }
    }
    for reader in readers.iter().flatten() {
        for s in reader.skipped() {
            warnings.push(format!(
                "{}: {} frame(s) of interface {} skipped: link type {} is not supported",
                crate::printable::path(reader.path()),
                s.frames,
                s.interface,
                s.linktype
            ));
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
    head.insert("warnings".into(), json!(warnings));
    head.insert("walk".into(), report::walk_stats_json(&source.stats()));
    let (held, evicted) = source.flow_table();
    let summary =
        report::summary_json(head, packets, &classes, &counts, &detectors, &[("kernel_flows", held, Some(evicted))]);
    out.json(&summary);
    for line in report::render_summary(packets, &classes, &counts, &detectors) {
        out.human(&line);
    }
    for w in &warnings {
        out.error(&format!("warning: {w}"));
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

/// Moves `file` to its next frame and puts it on the heap (or ends the file,
/// keeping its error).
fn pull(file: usize, readers: &mut [Option<Reader>], heap: &mut BinaryHeap<HeadKey>, errors: &mut Vec<String>) {
    let Some(reader) = readers[file].as_mut() else { return };
    match reader.advance() {
        Ok(true) => {
            let f = reader.frame().expect("advance found a frame");
            heap.push(Reverse((f.ts_ns, file, f.number)));
        }
        Ok(false) => {}
        Err(e) => errors.push(e.to_string()),
    }
}
