//! The kernel's maps in use: CONFIG read per packet, a full ring buffer, the flow
//! table at its cap, forwarded packets reported once, counter slots cleared.

use agent_common::{
    Class, Direction, KernelConfig,
    event::{RECORD_SMALL, record_len},
    proto::TCP_ACK,
    stats,
};
use pathwatch::kernel::{
    LoadOptions,
    counters::ClassCounts,
    testrun::{Hook, TestRunner},
};
use pathwatch_tests::{dns_query, privileged};

use super::cases_tcp_ip::large_segment;
use super::frames::{Host, Ip, LARGE_SEG, TCP_CLIENT_PORT, UDP_CLIENT_PORT, tcp, tcp_header, udp};
use super::rig::{pass_action, rig};

/// The CONFIG map is read per packet: with one loaded program set, UDP/5353 is
/// `other`, then `dns` (with its event) once 5353 is configured, then `other` again;
/// a 1000-byte DF datagram becomes `large_df` when `large_packet_bytes` drops to 900.
#[test]
fn config_change_reaches_the_kernel_without_reload() {
    let Some(mut rig) = rig("config_change_reaches_the_kernel_without_reload") else { return };
    let q = dns_query(99, "printer.local");
    let mdns = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 5353, &q);
    let big = udp(Ip::V6.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 4500, &[0; 1000]);
    let mut with_5353 = KernelConfig::new();
    with_5353.add_dns_port(5353);
    let mut small_threshold = KernelConfig::new();
    small_threshold.large_packet_bytes = 900;

    let steps: [(&str, KernelConfig, &[u8], Class, usize); 5] = [
        ("UDP/5353, default config", KernelConfig::new(), &mdns, Class::Other, 0),
        ("UDP/5353, 5353 configured", with_5353, &mdns, Class::Dns, 1),
        ("UDP/5353, 5353 removed", KernelConfig::new(), &mdns, Class::Other, 0),
        ("1040-byte IPv6 UDP, default threshold", KernelConfig::new(), &big, Class::Other, 0),
        ("1040-byte IPv6 UDP, threshold 900", small_threshold, &big, Class::LargeDf, 0),
    ];
    for (what, cfg, frame, class, events) in steps {
        rig.configure(cfg);
        let seen = rig.run_case(&[], frame, what);
        assert_eq!(seen.class, class, "{what}");
        assert_eq!(seen.events.len(), events, "{what}: events");
    }
}

/// A ring buffer too small for the events: with a 4096-byte ring buffer and nothing
/// draining it, 40 DNS queries through XDP fill it (16 small records of 248 bytes fit);
/// every frame that found no room is counted in RINGBUF_FULL, every one that did in
/// EVENTS_SUBMITTED, and after a drain there is room again.
#[test]
fn ringbuf_reservation_failures_are_counted() {
    if !privileged("ringbuf_reservation_failures_are_counted") {
        return;
    }
    let opts = LoadOptions { ringbuf_bytes: 4096, ..Default::default() };
    let mut runner = TestRunner::with_options(&opts, &KernelConfig::new()).expect("load with a small ring buffer");
    let frame = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(1, "mus.cisco.com"));
    const SENT: u64 = 40;
    for _ in 0..SENT {
        let (action, _) = runner.run_repeat(Hook::Xdp, &frame, 1).expect("test run");
        assert_eq!(action, 2);
    }
    let drained = runner.drain() as u64;
    // A 31-byte query goes in a small record (64 bytes of snap), after the ring
    // buffer's 8-byte header.
    assert_eq!(record_len(dns_query(1, "mus.cisco.com").len()), RECORD_SMALL);
    let per_record = (8 + RECORD_SMALL as u64).div_ceil(8) * 8;
    assert_eq!(drained, 4096 / per_record, "records that fit a 4096-byte ring buffer");
    let stats = runner.kernel().stats().expect("read STATS");
    assert_eq!(stats[stats::RINGBUF_FULL as usize], SENT - drained, "RINGBUF_FULL = sent - drained");
    assert_eq!(stats[stats::EVENTS_SUBMITTED as usize], drained, "EVENTS_SUBMITTED = drained");

    // Drained, the ring buffer takes events again.
    let run = runner.run(Hook::Tc, &frame, true).expect("test run");
    assert_eq!(run.events.len(), 1, "an event after the drain");
    assert_eq!(run.class, Some(Class::Dns));
    let stats = runner.kernel().stats().expect("read STATS");
    assert_eq!(stats[stats::RINGBUF_FULL as usize], SENT - drained, "no new loss after the drain");
}

/// The flow cache at its cap: with room for 8 flows (4 sets of two), the large
/// segments of 40 flows fill every way once (FLOWS_INSERTED = 8) and take the place of
/// another flow for the other 32 (FLOW_EVICTIONS); a segment of a flow still held
/// counts as neither. The agent reports FLOW_EVICTIONS as the cache's evictions.
#[test]
fn flow_cache_insertions_and_evictions_are_counted_at_the_cap() {
    if !privileged("flow_cache_insertions_and_evictions_are_counted_at_the_cap") {
        return;
    }
    const CAP: u32 = 8;
    const FLOWS: u16 = 40;
    let opts = LoadOptions { flow_entries: CAP, ..Default::default() };
    let mut runner = TestRunner::with_options(&opts, &KernelConfig::new()).expect("load with a small flow cache");
    let segment = |k: u16, seq: u32| {
        tcp(
            Ip::V4.headers(Host::Client, Host::Server),
            tcp_header(TCP_CLIENT_PORT + k, 443, seq, 777, TCP_ACK, &[]),
            &[0x5a; LARGE_SEG],
        )
    };
    for k in 0..FLOWS {
        let (action, _) = runner.run_repeat(Hook::Xdp, &segment(k, 10_000), 1).expect("test run");
        assert_eq!(action, 2);
    }
    let inserted = runner.stat(stats::FLOWS_INSERTED).unwrap();
    let evicted = runner.stat(stats::FLOW_EVICTIONS).unwrap();
    let held = runner.flow_count().expect("count FLOWS");
    assert_eq!(held, inserted, "the programs never delete a flow: what was inserted is held");
    assert!(held > 0 && held <= u64::from(CAP), "FLOWS holds {held}, cap {CAP}");
    assert_eq!(inserted + evicted, u64::from(FLOWS), "each new flow inserted or evicting another");
    // The newest flow is held: its next segment updates it in place, and a copy of it
    // is its retransmission.
    runner.run_repeat(Hook::Xdp, &segment(FLOWS - 1, 10_000 + LARGE_SEG as u32), 1).expect("test run");
    assert_eq!(
        runner.stat(stats::FLOWS_INSERTED).unwrap() + runner.stat(stats::FLOW_EVICTIONS).unwrap(),
        u64::from(FLOWS)
    );
    let run = runner.run(Hook::Xdp, &segment(FLOWS - 1, 10_000 + LARGE_SEG as u32), true).expect("test run");
    assert_eq!(run.events.len(), 1, "the held flow's retransmission is an event");
    assert_eq!(run.events[0].header.info.retransmits, 1);
}

/// One event per packet per host (DESIGN.md, "Data flow"). A packet forwarded between
/// watched interfaces passes XDP on its way in and TC on its way out: XDP reports it,
/// TC only counts it; TC does report packets this host originated (ingress_ifindex 0)
/// and ones that came in on an interface the agent does not watch. Only the reporting
/// hook accounts large segments in the flow table, so a forwarded flow's
/// retransmission, seen at both hooks, gives the same event as the userspace
/// classifier seeing each packet once.
#[test]
fn forwarded_packets_raise_events_once() {
    let Some(mut rig) = rig("forwarded_packets_raise_events_once") else { return };
    const WATCHED: u32 = 7;
    const UNWATCHED: u32 = 9;
    rig.runner.kernel().watch_interface(WATCHED, 0).expect("watch an interface");
    for ip in Ip::BOTH {
        let query = udp(ip.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(5, "mus.cisco.com"));
        for (ingress, events) in [(WATCHED, 0), (UNWATCHED, 1), (0, 1)] {
            let run = rig.runner.run_tc_from(&query, ingress, true).expect("TC test run");
            assert_eq!(run.action, pass_action(Hook::Tc));
            assert_eq!(run.class, Some(Class::Dns), "{ip:?} query in on ifindex {ingress}, out at TC");
            assert_eq!(run.events.len(), events, "{ip:?} query in on ifindex {ingress}: events at TC");
        }

        // The userspace classifier sees each segment once (in `step`, which asserts
        // that the kernel's XDP run agrees with it); the kernel also sees it at TC.
        let mut user = rig.fresh();
        let (a, b) = (large_segment(ip, 10_000), large_segment(ip, 10_000 + LARGE_SEG as u32));
        let mut kernel_events = Vec::new();
        for (i, seg) in [&a, &b, &a].into_iter().enumerate() {
            let what = format!("{ip:?} forwarded segment {i}");
            let seen = rig.step(Hook::Xdp, &mut user, seg, &what).expect("XDP test run");
            kernel_events.extend(seen.events);
            let out = rig.runner.run_tc_from(seg, WATCHED, true).expect("TC test run");
            assert_eq!(out.class, Some(Class::LargeDf), "{what} at TC");
            assert!(out.events.is_empty(), "{what}: no event at TC");
        }
        assert_eq!(kernel_events.len(), 1, "{ip:?}: one retransmission");
        let info = kernel_events[0].header.info;
        assert_eq!((info.retransmits, info.largest_acked, info.seg_len), (1, 0, LARGE_SEG as u16), "{ip:?}");
    }
}

/// A counter slot that goes to another interface is zeroed first (the agent reuses
/// the slots of interfaces that went), and a slot asked for twice is summed once.
#[test]
fn a_cleared_counter_slot_starts_at_zero_and_a_slot_is_summed_once() {
    let Some(mut rig) = rig("a_cleared_counter_slot_starts_at_zero_and_a_slot_is_summed_once") else { return };
    // An XDP test run comes in on the loopback device of this namespace.
    const LO: u32 = 1;
    const SLOT: u32 = 5;
    rig.runner.kernel().watch_interface(LO, SLOT).expect("watch lo");
    let query = udp(Ip::V4.headers(Host::Client, Host::Server), UDP_CLIENT_PORT, 53, &dns_query(9, "slot.test"));
    let dns_in = |runner: &mut TestRunner, slots: &[u32]| {
        runner.kernel().counters(slots).expect("read COUNTERS").get(SLOT, Direction::Ingress, Class::Dns).packets
    };
    rig.runner.run_repeat(Hook::Xdp, &query, 3).expect("test run");
    assert_eq!(dns_in(&mut rig.runner, &[SLOT]), 3);
    assert_eq!(dns_in(&mut rig.runner, &[SLOT, SLOT, SLOT]), 3, "a slot asked for three times");
    let shared = rig.runner.kernel().counters(&[0]).expect("read COUNTERS").slot(0);
    rig.runner.kernel().clear_slot(SLOT).expect("clear the slot");
    let cleared = rig.runner.kernel().counters(&[SLOT]).expect("read COUNTERS").slot(SLOT);
    assert_eq!(cleared, ClassCounts::default(), "every CPU's counters of the slot");
    assert_eq!(
        rig.runner.kernel().counters(&[0]).expect("read COUNTERS").slot(0),
        shared,
        "the shared slot is untouched"
    );
    rig.runner.run_repeat(Hook::Xdp, &query, 2).expect("test run");
    assert_eq!(dns_in(&mut rig.runner, &[SLOT]), 2, "counting on from zero");
    rig.runner.kernel().unwatch_interface(LO).expect("unwatch lo");
}
