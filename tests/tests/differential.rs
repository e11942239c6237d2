//! The kernel programs and the userspace classifier against each other, and both
//! against tshark: every frame of every capture in `tests/pcaps`. Both run the same
//! header walk (`agent_common::wire`); what this guards is what differs between them:
//! the kernel's byte access, its separately verified DTLS and MSS functions, the
//! `FLOWS` map against replay's flow table, and writing the ring-buffer record.
//!
//! - `classifier_counts_match_tshark`: per file, the userspace classifier's counts
//!   equal EXPECTED.tsv for every column it covers (no root needed).
//! - `kernel_and_userspace_agree_on_every_frame`: each frame through `pathwatch_xdp`
//!   and `pathwatch_tc` with BPF_PROG_TEST_RUN gives the same class and byte-identical
//!   events as the userspace classifier.

use std::collections::BTreeMap;

use agent_common::{Class, Direction};
use pathwatch::{
    capture::Capture,
    classify::{Classifier, link::to_ethernet},
    counts::EventCounts,
    event::Event,
    kernel::testrun::{Hook, MAX_FRAME, MIN_FRAME, TestRunner},
};
use pathwatch_tests::{all_pcaps, expected, privileged, rel};

/// Counts of one capture in EXPECTED.tsv's column names.
fn tally(packets: u64, c: &EventCounts) -> BTreeMap<String, u64> {
    [
        ("packets", packets),
        ("dns_queries", c.dns_query),
        ("dns_responses", c.dns_response),
        ("dns_servfail", c.dns_servfail),
        ("dns_nxdomain", c.dns_nxdomain),
        ("dtls_records", c.dtls_record),
        ("dtls_client_hello", c.dtls_client_hello),
        ("dtls_hello_verify", c.dtls_hello_verify),
        ("dtls_server_hello", c.dtls_server_hello),
        ("icmp_frag_needed", c.icmp_frag_needed),
        ("icmpv6_ptb", c.icmpv6_packet_too_big),
        ("icmp_port_unreach", c.icmp_port_unreachable),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn classifier_counts_match_tshark() {
    let expected = expected();
    let mut problems = Vec::new();
    for path in all_pcaps() {
        let name = rel(&path);
        let capture = Capture::open(&path).unwrap();
        let mut classifier = Classifier::default();
        let mut counts = EventCounts::default();
        let mut packets = 0;
        for frame in capture.frames().unwrap() {
            let frame = frame.unwrap_or_else(|e| panic!("{e}"));
            packets += 1;
            let Some(eth) = to_ethernet(frame.link, &frame.data) else { continue };
            let c = classifier.classify(&eth, Direction::Ingress, 0, frame.ts_ns);
            counts.count_class(c.class);
            if let Some(ev) = &c.event {
                counts.count(ev);
            }
        }
        let got = tally(packets, &counts);
        let want = expected.get(&name).unwrap_or_else(|| panic!("{name} is not in EXPECTED.tsv"));
        for (column, want) in want {
            if got[column] != *want {
                problems.push(format!("{name}: {column} = {} (tshark {want})", got[column]));
            }
        }
    }
    assert!(problems.is_empty(), "{} mismatches:\n{}", problems.len(), problems.join("\n"));
}

fn normalise(mut ev: Event) -> Event {
    // The kernel stamps its own clock and, under BPF_PROG_TEST_RUN, the test device's
    // ifindex; the userspace classifier is given neither.
    ev.header.ts_ns = 0;
    ev.header.ifindex = 0;
    ev
}

#[test]
fn kernel_and_userspace_agree_on_every_frame() {
    if !privileged("kernel_and_userspace_agree_on_every_frame") {
        return;
    }
    let mut runner = TestRunner::new(&Default::default()).expect("load kernel programs");
    let mut problems = Vec::new();
    let (mut frames, mut skipped, mut cut, mut events) = (0u64, 0u64, 0u64, 0u64);
    for path in all_pcaps() {
        let name = rel(&path);
        let capture = Capture::open(&path).unwrap();
        for (hook, direction) in [(Hook::Xdp, Direction::Ingress), (Hook::Tc, Direction::Egress)] {
            runner.reset_flows().unwrap();
            let mut classifier = Classifier::default();
            for frame in capture.frames().unwrap() {
                let frame = frame.unwrap();
                let Some(eth) = to_ethernet(frame.link, &frame.data) else { continue };
                if eth.len() < MIN_FRAME {
                    skipped += 1;
                    continue;
                }
                // Larger frames than a test run takes are cut, for both sides.
                if eth.len() > MAX_FRAME {
                    cut += 1;
                }
                let eth = &eth[..eth.len().min(MAX_FRAME)];
                frames += 1;
                let user = classifier.classify(eth, direction, 0, 0);
                let kernel = runner.run(hook, eth, true).unwrap();
                let kernel_events: Vec<Event> = kernel.events.into_iter().map(normalise).collect();
                let user_events: Vec<Event> = user.event.into_iter().map(normalise).collect();
                events += kernel_events.len() as u64;
                if kernel.class != Some(user.class) || kernel_events != user_events {
                    problems.push(format!(
                        "{name} frame {} ({hook:?}): kernel class {:?} events {:?}\n    userspace class {:?} events {:?}",
                        frame.number,
                        kernel.class.map(Class::name),
                        kernel_events,
                        user.class.name(),
                        user_events
                    ));
                }
            }
        }
    }
    eprintln!(
        "{frames} frame runs compared, {events} kernel events; {cut} cut to {MAX_FRAME} bytes, {skipped} shorter than {MIN_FRAME}"
    );
    assert!(
        problems.is_empty(),
        "{} differences:\n{}",
        problems.len(),
        problems.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}
