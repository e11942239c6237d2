//! Every crafted frame cut at every length: a correct partial classification.

use agent_common::{
    Class, EventKind,
    proto::{self, ETH_HLEN},
};
use pathwatch::kernel::testrun::MIN_FRAME;
use pathwatch_tests::privileged;

use super::all_cases;
use super::expect::{Case, claimed_ip_len};
use super::frames::Link;
use super::rig::{Rig, Seen};

/// Every crafted frame (all the cases above, under every link layer) cut at every
/// length from MIN_FRAME to one byte short, through XDP and TC (except the TC runs
/// the kernel refuses: untagged IP frames cut inside the fixed IP header, see
/// `skb_test_run_refuses`). Frames that `before` a case are sent whole first, so a
/// cut retransmission is still a retransmission.
///
/// A cut frame is the same packet seen with fewer bytes; its headers still claim the
/// full lengths. A *correct partial classification* of it is, precisely:
/// 1. the hook passes it (XDP_PASS / TC_ACT_OK), and the kernel and the userspace
///    classifier agree on its class, `truncated` and events (checked in `step`);
/// 2. its class is the full frame's, or `other` (the bytes that decide the class are
///    gone), or `large_df` when the full frame's IP header claims a large DF packet
///    (the class the IP header alone decides) -- never another class, with one
///    deliberate exception, declared per case (`Case::cut_may_be`): a class the cut
///    bytes outranked or ruled out. A TFO SYN whose ClientHello is cut off is a plain
///    `tcp_syn`; a DTLS record followed by a stray byte (not DTLS: the records do not
///    fill the datagram) cut before that byte is indistinguishable from a DTLS
///    datagram cut by the capture, which the DTLS rule accepts;
/// 3. it has no event, or one event of the full frame's kind whose header equals the
///    full frame's event header except `wire_len` (the cut length), `l4_payload_len`
///    and `snap_len` (at most the full values: only bytes present are counted) and,
///    for DTLS, the records walked before the cut (`dtls_records` at most the full
///    count, content and handshake masks subsets of the full ones) -- or, for a
///    declared fallback class, that class's event;
/// 4. its snap is the cut frame's bytes at `snap_offset` and ends within the cut
///    frame; unless it is a fallback's, it is a prefix of the full frame's snap, at
///    the same offset.
#[test]
fn every_truncation_of_every_crafted_frame() {
    if !privileged("every_truncation_of_every_crafted_frame") {
        return;
    }
    let cases = all_cases();
    // Independent rigs (each its own programs and maps) share the cases out.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let tallies: Vec<[u64; 3]> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                let cases = &cases;
                scope.spawn(move || {
                    let mut rig = Rig::new();
                    let mut tally = [0u64; 3];
                    for case in cases.iter().skip(t).step_by(threads) {
                        let (cuts, events) = check_truncations(&mut rig, case);
                        tally[0] += cuts;
                        tally[1] += events;
                    }
                    tally[2] = rig.tc_refused;
                    tally
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("a truncation worker failed (its panic is above)")).collect()
    });
    let [cuts, events, refused] = tallies.iter().fold([0; 3], |a, t| [a[0] + t[0], a[1] + t[1], a[2] + t[2]]);
    eprintln!(
        "{} cases: {cuts} cut frames, {events} partial events, {refused} TC runs refused by the kernel",
        cases.len()
    );
}

/// Every cut of `case` under every link layer; returns (cut frames, events they raised).
fn check_truncations(rig: &mut Rig, case: &Case) -> (u64, u64) {
    let (mut cuts, mut events) = (0, 0);
    rig.configure(case.config());
    // Whether the IP header claims a large DF packet: a cut that loses the transport
    // header still has that, and is `large_df`.
    let large_ip = {
        let f = &case.frame;
        let ip_len = claimed_ip_len(f) as u32;
        let v4_df = f[12..14] == proto::ETH_P_IPV4.to_be_bytes() && f[ETH_HLEN + 6] & 0x40 != 0;
        let v6 = f[12..14] == proto::ETH_P_IPV6.to_be_bytes();
        rig.cfg.is_large(ip_len, v4_df || v6)
    };
    for link in Link::ALL {
        let Some(frame) = link.apply(&case.frame) else { continue };
        let before: Vec<Vec<u8>> = case.before.iter().map(|f| link.apply(f).expect("same link")).collect();
        let name = format!("{} over {link:?}", case.name);
        let full = rig.run_case(&before, &frame, &name);
        for cut in MIN_FRAME..frame.len() {
            let what = format!("{name} cut to {cut} of {} bytes", frame.len());
            let part = &frame[..cut];
            let seen = rig.run_case(&before, part, &what);
            assert_partial(case, &full, &seen, part, large_ip, &what);
            cuts += 1;
            events += seen.events.len() as u64;
        }
    }
    (cuts, events)
}

/// See `every_truncation_of_every_crafted_frame` for the rule.
fn assert_partial(case: &Case, full: &Seen, cut: &Seen, part: &[u8], large_ip: bool, what: &str) {
    let fallback = cut.class != full.class && case.cut_may_be.contains(&cut.class);
    let allowed =
        cut.class == full.class || cut.class == Class::Other || (cut.class == Class::LargeDf && large_ip) || fallback;
    assert!(allowed, "{what}: class {:?}, but the whole frame is {:?}", cut.class, full.class);
    assert!(cut.events.len() <= 1, "{what}: more than one event");
    let Some(ev) = cut.events.first() else { return };
    let at = ev.header.snap_offset as usize;
    assert_eq!(ev.snap.len(), ev.header.snap_len as usize, "{what}: snap_len");
    assert!(at + ev.snap.len() <= part.len(), "{what}: snap [{at}, +{}) runs past the cut", ev.snap.len());
    assert_eq!(&ev.snap[..], &part[at..at + ev.snap.len()], "{what}: snap is not the frame's bytes");
    assert_eq!(ev.header.wire_len as usize, part.len(), "{what}: wire_len");
    if fallback {
        // The event of the class the cut fell back to: nothing of the whole frame's to compare.
        assert_eq!(ev.header.class, cut.class as u8, "{what}: event class");
        return;
    }
    let Some(whole) = full.events.first() else {
        panic!("{what}: event {ev:?}, but the whole frame has none");
    };
    let (h, w) = (&ev.header, &whole.header);
    assert!(h.l4_payload_len <= w.l4_payload_len, "{what}: l4_payload_len {} > {}", h.l4_payload_len, w.l4_payload_len);
    assert!(h.snap_len <= w.snap_len, "{what}: snap_len");
    if h.kind == EventKind::Dtls as u8 {
        let (i, wi) = (&h.info, &w.info);
        assert!(i.dtls_records >= 1 && i.dtls_records <= wi.dtls_records, "{what}: dtls_records {}", i.dtls_records);
        assert_eq!(i.dtls_content_mask & !wi.dtls_content_mask, 0, "{what}: content mask not a subset");
        assert_eq!(i.handshake_mask & !wi.handshake_mask, 0, "{what}: handshake mask not a subset");
    }
    // Everything else is the whole frame's.
    let mut same = *h;
    same.wire_len = w.wire_len;
    same.l4_payload_len = w.l4_payload_len;
    same.snap_len = w.snap_len;
    if h.kind == EventKind::Dtls as u8 {
        same.info.dtls_records = w.info.dtls_records;
        same.info.dtls_content_mask = w.info.dtls_content_mask;
        same.info.handshake_mask = w.info.handshake_mask;
    }
    assert_eq!(same, *w, "{what}: event header differs from the whole frame's beyond what the cut explains");
    assert_eq!(&ev.snap[..], &whole.snap[..ev.snap.len()], "{what}: snap is not a prefix of the whole frame's");
}
