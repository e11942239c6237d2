//! One frame through the real kernel programs (BPF_PROG_TEST_RUN, XDP and TC) and the
//! userspace classifier: the class and the events must be identical, compared as
//! tests/tests/differential.rs compares them. Each frame runs twice per hook, so that
//! a large segment is also seen as its own retransmission. Needs root (or CAP_BPF).
#![no_main]

use std::cell::RefCell;

use agent_common::{Direction, KernelConfig};
use libfuzzer_sys::fuzz_target;
use pathwatch::{
    classify::Classifier,
    event::Event,
    kernel::testrun::{Hook, MAX_FRAME, MIN_FRAME, TestRunner},
};
use pathwatch_fuzz::seeds;

thread_local! {
    /// Loaded once per process: a load costs milliseconds, a test run microseconds.
    static RUNNER: RefCell<Option<TestRunner>> = const { RefCell::new(None) };
}

fn load() {
    seeds::init("differential");
    let runner = TestRunner::new(&Default::default())
        .unwrap_or_else(|e| panic!("the differential target needs the kernel programs: {e}"));
    RUNNER.with(|r| *r.borrow_mut() = Some(runner));
}

fn normalise(mut ev: Event) -> Event {
    ev.header.ts_ns = 0;
    ev.header.ifindex = 0;
    ev
}

/// Whether the kernel refuses a TC test run of `frame` (EINVAL): Linux 6.18's
/// `bpf_prog_test_run_skb` wants the whole IPv4 or IPv6 header in a frame whose
/// EtherType names one. XDP test runs take such frames; only TC is skipped.
fn tc_refuses(frame: &[u8]) -> bool {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        0x0800 => frame.len() < 14 + 20,
        0x86dd => frame.len() < 14 + 40,
        _ => false,
    }
}

fuzz_target!(init: load(), |data: &[u8]| {
    if data.len() < MIN_FRAME {
        return;
    }
    let frame = &data[..data.len().min(MAX_FRAME)];
    RUNNER.with(|r| {
        let mut r = r.borrow_mut();
        let runner = r.as_mut().expect("loaded in init");
        for (hook, direction) in [(Hook::Xdp, Direction::Ingress), (Hook::Tc, Direction::Egress)] {
            if hook == Hook::Tc && tc_refuses(frame) {
                continue;
            }
            runner.reset_flows().expect("reset the kernel flow table");
            let mut classifier = Classifier::new(KernelConfig::new(), 64);
            for run in 0..2 {
                let user = classifier.classify(frame, direction, 0, 0);
                let kernel = runner.run(hook, frame, true).unwrap_or_else(|e| panic!("{hook:?}: {e:#}"));
                let kernel_events: Vec<Event> = kernel.events.into_iter().map(normalise).collect();
                let user_events: Vec<Event> = user.event.into_iter().map(normalise).collect();
                assert!(
                    kernel.class == Some(user.class) && kernel_events == user_events,
                    "{hook:?} run {run}: kernel class {:?} events {kernel_events:?}\n  userspace class {:?} events {user_events:?}",
                    kernel.class,
                    user.class,
                );
            }
        }
    });
});
