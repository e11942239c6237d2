//! The rig: the kernel programs (under BPF_PROG_TEST_RUN) and the userspace classifier
//! side by side, each frame through both and through both hooks, every difference a
//! failure.

use agent_common::{
    Class, Direction, KernelConfig,
    proto::{self, ETH_HLEN},
    stats,
};
use pathwatch::{
    classify::Classifier,
    event::Event,
    kernel::{
        LoadOptions,
        testrun::{Hook, TestRunner},
    },
};
use pathwatch_tests::{normalise::normalise, privileged};

use super::expect::Case;
use super::frames::Link;

/// What one classifier made of one frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) class: Class,
    pub(crate) truncated: bool,
    pub(crate) events: Vec<Event>,
}

pub(crate) fn direction(hook: Hook) -> Direction {
    if hook == Hook::Tc { Direction::Egress } else { Direction::Ingress }
}

/// XDP_PASS for XDP, TC_ACT_OK for TC.
pub(crate) fn pass_action(hook: Hook) -> u32 {
    if hook == Hook::Tc { 0 } else { 2 }
}

/// Whether BPF_PROG_TEST_RUN refuses `frame` for a TC program (EINVAL): the kernel
/// builds the test skb with `eth_type_trans` and, for an untagged IPv4 or IPv6 frame,
/// insists that the whole fixed IP header is present (measured on Linux 6.18; tagged,
/// PPPoE and non-IP frames of any length from 14 bytes are accepted). XDP runs take
/// every frame from 14 bytes, and both hooks share the parsing code, so XDP's runs of
/// these cuts still cover it.
pub(crate) fn skb_test_run_refuses(frame: &[u8]) -> bool {
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    (ethertype == proto::ETH_P_IPV4 && frame.len() < ETH_HLEN + 20)
        || (ethertype == proto::ETH_P_IPV6 && frame.len() < ETH_HLEN + 40)
}

/// Flow-table size of the rig, kernel and userspace.
pub(crate) const FLOW_ENTRIES: usize = 64;

pub(crate) struct Rig {
    pub(crate) runner: TestRunner,
    pub(crate) cfg: KernelConfig,
    /// TC test runs the kernel refused (see `skb_test_run_refuses`).
    pub(crate) tc_refused: u64,
}

impl Rig {
    pub(crate) fn new() -> Rig {
        let cfg = KernelConfig::new();
        // A small flow table: emptying it (`fresh`, before every sequence) walks its
        // buckets, and no test holds more than a few flows.
        let opts = LoadOptions { flow_entries: FLOW_ENTRIES as u32, ..Default::default() };
        Rig { runner: TestRunner::with_options(&opts, &cfg).expect("load the kernel programs"), cfg, tc_refused: 0 }
    }

    /// Writes `cfg` to the kernel's CONFIG map; userspace classifiers made from now
    /// on use it too.
    pub(crate) fn configure(&mut self, cfg: KernelConfig) {
        self.runner.kernel().set_config(&cfg).expect("write CONFIG");
        self.cfg = cfg;
    }

    /// Empty flow state on both sides: the kernel's FLOWS map, a new classifier.
    pub(crate) fn fresh(&mut self) -> Classifier {
        self.runner.reset_flows().expect("reset FLOWS");
        Classifier::new(self.cfg, FLOW_ENTRIES)
    }

    pub(crate) fn stat(&mut self, index: u32) -> u64 {
        self.runner.stat(index).expect("read STATS")
    }

    /// `frame` through `hook` and through `user` (holding the same flow state as the
    /// kernel). Asserts that the hook passed the packet and that kernel and userspace
    /// agree on class, truncation and events.
    ///
    /// `None` when the kernel refuses to test-run the frame at TC at all (see
    /// `skb_test_run_refuses`).
    pub(crate) fn step(&mut self, hook: Hook, user: &mut Classifier, frame: &[u8], what: &str) -> Option<Seen> {
        let truncated_before = self.stat(stats::TRUNCATED);
        let run = match self.runner.run(hook, frame, true) {
            Ok(run) => run,
            Err(_) if hook == Hook::Tc && skb_test_run_refuses(frame) => return None,
            Err(e) => panic!("{what} ({hook:?}): test run: {e:#}"),
        };
        let truncated = self.stat(stats::TRUNCATED) != truncated_before;
        assert_eq!(run.action, pass_action(hook), "{what} ({hook:?}): the program must pass every packet");
        let kernel = Seen {
            class: run.class.unwrap_or_else(|| panic!("{what} ({hook:?}): no class counter moved")),
            truncated,
            events: run.events.into_iter().map(normalise).collect(),
        };
        let u = user.classify(frame, direction(hook), 0, 0);
        let userspace =
            Seen { class: u.class, truncated: u.truncated, events: u.event.into_iter().map(normalise).collect() };
        assert_eq!(kernel, userspace, "{what} ({hook:?}): kernel (left) and userspace classifier (right) differ");
        Some(kernel)
    }

    /// `before`, then `frame`, through each hook on fresh flow state. Asserts that
    /// XDP and TC see the same (up to the event's direction); returns what XDP saw of
    /// `frame`.
    ///
    /// Where the kernel refuses the TC test run (`skb_test_run_refuses`), only XDP's
    /// run is compared with userspace.
    pub(crate) fn run_case(&mut self, before: &[Vec<u8>], frame: &[u8], what: &str) -> Seen {
        let mut seen = Vec::new();
        for hook in [Hook::Xdp, Hook::Tc] {
            let mut user = self.fresh();
            for (i, f) in before.iter().enumerate() {
                let ran = self.step(hook, &mut user, f, &format!("{what} (frame {i} before it)"));
                assert!(ran.is_some(), "{what}: a whole frame is always test-run");
            }
            let Some(mut s) = self.step(hook, &mut user, frame, what) else {
                assert_eq!(hook, Hook::Tc);
                self.tc_refused += 1;
                continue;
            };
            for ev in &mut s.events {
                assert_eq!(ev.header.direction, direction(hook) as u8, "{what} ({hook:?}): event direction");
                ev.header.direction = Direction::Ingress as u8;
            }
            seen.push(s);
        }
        if let [xdp, tc] = &seen[..] {
            assert_eq!(xdp, tc, "{what}: XDP (left) and TC (right) differ");
        }
        seen.swap_remove(0)
    }

    /// Runs `case` under every link layer and asserts its class and event.
    pub(crate) fn check(&mut self, case: &Case) {
        self.configure(case.config());
        for link in Link::ALL {
            let Some(frame) = link.apply(&case.frame) else { continue };
            let before: Vec<Vec<u8>> = case.before.iter().map(|f| link.apply(f).expect("same link")).collect();
            let what = format!("{} over {link:?}", case.name);
            let refused = self.tc_refused;
            let seen = self.run_case(&before, &frame, &what);
            assert_eq!(self.tc_refused, refused, "{what}: the kernel refused a whole frame at TC");
            assert_eq!(seen.class, case.class, "{what}: class");
            assert!(!seen.truncated, "{what}: a whole frame is not truncated");
            match &case.event {
                None => assert!(seen.events.is_empty(), "{what}: no event expected, got {:?}", seen.events),
                Some(want) => {
                    assert_eq!(seen.events.len(), 1, "{what}: one event expected, got {:?}", seen.events);
                    let ev = &seen.events[0];
                    let header = want.header(case.class, &case.frame, link, Direction::Ingress);
                    assert_eq!(ev.header, header, "{what}: event header (left: got, right: expected)");
                    assert_eq!(ev.snap, want.snap, "{what}: snap bytes");
                    let at = ev.header.snap_offset as usize;
                    assert_eq!(
                        &frame[at..at + ev.snap.len()],
                        &ev.snap[..],
                        "{what}: snap is the frame's bytes at snap_offset"
                    );
                }
            }
        }
    }

    pub(crate) fn check_all(&mut self, cases: &[Case]) {
        for case in cases {
            self.check(case);
        }
    }
}

/// Loads the programs for a privileged test, or `None` when it is skipped.
pub(crate) fn rig(test: &str) -> Option<Rig> {
    privileged(test).then(Rig::new)
}
