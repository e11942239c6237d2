//! The drop rules through the whole set of detectors, from hand-built drop events.

use std::net::IpAddr;

use agent_common::{
    EventHeader, EventInfo, EventKind,
    drop::DropClass,
    proto::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK},
};
use serde_json::{Map, Value, json};

use crate::{
    config::{Cap, Config, Count, Secs},
    decode::icmp::{IcmpError, QuotedFlow},
    detect::{
        Detectors, Emission, Finding, FindingKind, Severity,
        dtls::testing::{T0, dtls_hello},
    },
    drops::{DropEvent, DropHook},
    event::Event,
};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
const CLIENT: [u8; 4] = [198, 18, 0, 2];
const GATEWAY: [u8; 4] = [198, 18, 0, 1];
const SERVER: [u8; 4] = [198, 19, 0, 2];
const SPORT: u16 = 40000;
const DPORT: u16 = 5001;

fn ip(a: [u8; 4]) -> IpAddr {
    IpAddr::from(a)
}

fn packet(ts: u64, kind: u8, proto: u8, (src, sport): ([u8; 4], u16), (dst, dport): ([u8; 4], u16)) -> Event {
    let (mut src_addr, mut dst_addr) = ([0u8; 16], [0u8; 16]);
    src_addr[..4].copy_from_slice(&src);
    dst_addr[..4].copy_from_slice(&dst);
    let header = EventHeader {
        ts_ns: ts,
        kind,
        ip_version: 4,
        l4_proto: proto,
        src_addr,
        dst_addr,
        src_port: sport,
        dst_port: dport,
        ..Default::default()
    };
    Event { header, snap: Vec::new() }
}

fn drop_of(packet: Event, reason: &str, class: DropClass, hook: DropHook) -> DropEvent {
    DropEvent {
        packet,
        reason: reason.into(),
        class,
        hook,
        in_ifindex: 0,
        in_ifname: None,
        out_ifindex: 0,
        out_ifname: None,
        out_mtu: 0,
        suppressed_before: 0,
        icmp: None,
    }
}

/// The gateway's forwarding code drops a 1500-byte DF segment of the flow: it does not
/// fit g1's MTU of 1400.
fn too_big(ts: u64) -> DropEvent {
    let p = packet(ts, 0, IPPROTO_TCP, (CLIENT, SPORT), (SERVER, DPORT));
    let mut d = drop_of(p, "PKT_TOO_BIG", DropClass::LargeDf, DropHook::Forward);
    (d.in_ifindex, d.in_ifname) = (2, Some("g0".into()));
    (d.out_ifindex, d.out_ifname, d.out_mtu) = (3, Some("g1".into()), 1400);
    d
}

/// An ICMP error the gateway made (to `to`, type/code, quoting client -> server) that
/// its own output chain dropped.
fn own_icmp(ts: u64, to: [u8; 4], icmp_type: u8, code: u8) -> DropEvent {
    let p = packet(ts, EventKind::IcmpError as u8, IPPROTO_ICMP, (GATEWAY, 0), (to, 0));
    let mut d = drop_of(p, "NETFILTER_DROP", DropClass::IcmpError, DropHook::Output);
    (d.out_ifindex, d.out_ifname) = (2, Some("g0".into()));
    let quoted = QuotedFlow {
        src: ip(CLIENT),
        dst: ip(SERVER),
        proto: IPPROTO_TCP,
        src_port: Some(SPORT),
        dst_port: Some(DPORT),
    };
    d.icmp = Some(IcmpError { icmp_type, code, mtu: if code == 4 { 1400 } else { 0 }, quoted: Some(quoted) });
    d
}

/// The client resends a 1448-byte segment: `n` times at RTO back-off from 200 ms.
fn black_hole_events(d: &mut Detectors, n: u32) {
    for i in 0..n {
        let ts = T0 + 200 * MS * ((1 << (i + 1)) - 1);
        let mut ev = packet(ts, EventKind::TcpLargeRetransmit as u8, IPPROTO_TCP, (CLIENT, SPORT), (SERVER, DPORT));
        ev.header.tcp_flags = TCP_ACK;
        ev.header.ip_len = 1500;
        ev.header.info = EventInfo { tcp_seq: 1_000_000, seg_len: 1448, ..Default::default() };
        d.on_event(&ev);
    }
}

fn detectors(watched: bool) -> Detectors {
    let mut d = Detectors::new(&Config::default(), Emission::AtEnd);
    d.set_drops_watched(watched);
    d
}

fn of_kind(d: &Detectors, kind: FindingKind) -> Vec<Finding> {
    d.book.all().into_iter().filter(|f| f.kind == kind).collect()
}

fn the_black_hole(mut d: Detectors) -> Finding {
    black_hole_events(&mut d, 4);
    d.finish(d.now() + 500 * MS);
    let mut holes = of_kind(&d, FindingKind::PmtuBlackHole);
    assert_eq!(holes.len(), 1, "{holes:#?}");
    holes.remove(0)
}

#[test]
fn a_black_hole_without_watched_drops_says_unknown_and_nothing_more() {
    let f = the_black_hole(detectors(false));
    assert_eq!(f.evidence["dropped_here"], "unknown");
    assert!(!f.evidence.contains_key("drop_reason") && !f.evidence.contains_key("icmp_dropped_here"));
    assert!(f.summary.ends_with("a PMTU black hole"), "{}", f.summary);
    let keys: Vec<&String> = f.evidence.keys().collect();
    assert_eq!(keys.last().map(|k| k.as_str()), Some("dropped_here"), "appended after the detector's own keys");
}

#[test]
fn a_black_hole_watched_with_no_drop_here_is_beyond_this_host() {
    let f = the_black_hole(detectors(true));
    assert_eq!(f.evidence["dropped_here"], false);
    assert!(f.summary.ends_with("; not dropped on this host: beyond it"), "{}", f.summary);
    assert!(!f.evidence.contains_key("drop_reason"));
}

#[test]
fn a_gateway_that_drops_the_segments_and_its_own_frag_needed_says_so() {
    let mut d = detectors(true);
    for i in 0..20 {
        d.on_drop(&too_big(T0 + i * 10 * MS));
        d.on_drop(&own_icmp(T0 + i * 10 * MS + 1000, CLIENT, 3, 4));
    }
    let f = the_black_hole(d);
    let e = &f.evidence;
    assert_eq!(e["dropped_here"], true);
    assert_eq!(
        (&e["drop_reason"], &e["drop_hook"], &e["drop_count"], &e["drop_interface"], &e["drop_interface_mtu"]),
        (&json!("PKT_TOO_BIG"), &json!("forward"), &json!(20), &json!("g1"), &json!(1400))
    );
    assert_eq!(
        (&e["icmp_dropped_here"], &e["icmp_drop_reason"], &e["icmp_drop_hook"]),
        (&json!(20), &json!("NETFILTER_DROP"), &json!("output"))
    );
    assert_eq!((&e["estimated_path_mtu"], &e["suggested_mss"]), (&json!(1400), &json!(1360)), "the kernel's MTU");
    assert!(
        f.summary.ends_with(
            "; here, g1 (MTU 1400) dropped 20 DF packets from 198.18.0.2 that were too big, and this host's firewall \
             dropped the 20 ICMP frag-needed it sent back (netfilter, output hook)"
        ),
        "{}",
        f.summary
    );
    assert!(
        f.remedy.contains(
            "`nft insert rule inet filter output icmp type destination-unreachable icmp code frag-needed accept`"
        ),
        "{}",
        f.remedy
    );
    assert!(
        f.remedy.contains(
            "`nft add rule inet filter forward oifname \"g1\" tcp flags syn tcp option maxseg size set 1360`"
        ),
        "{}",
        f.remedy
    );
    let plain = the_black_hole(detectors(false));
    assert_eq!((f.kind, &f.subject, f.severity), (plain.kind, &plain.subject, plain.severity), "evidence only");
}

#[test]
fn segments_dropped_here_whose_icmp_gets_out_are_lost_beyond_this_host() {
    let mut d = detectors(true);
    for i in 0..5 {
        d.on_drop(&too_big(T0 + i * MS));
    }
    let f = the_black_hole(d);
    assert_eq!((&f.evidence["dropped_here"], &f.evidence["icmp_dropped_here"]), (&json!(true), &json!(0)));
    assert!(!f.evidence.contains_key("icmp_drop_reason"));
    assert!(f.summary.contains("it is lost beyond this host"), "{}", f.summary);
    assert!(f.remedy.starts_with("g1 (MTU 1400) sends ICMP frag-needed back to 198.18.0.2"), "{}", f.remedy);
}

#[test]
fn drops_of_another_flow_are_not_this_flows() {
    let mut d = detectors(true);
    let mut other = too_big(T0);
    other.packet.header.src_port = SPORT + 1;
    d.on_drop(&other);
    assert_eq!(the_black_hole(d).evidence["dropped_here"], false);
}

#[test]
fn a_finding_printed_live_before_its_drops_were_seen_is_printed_again_with_them() {
    let mut d = Detectors::new(&Config::default(), Emission::Live { interval_ns: 0 });
    d.set_drops_watched(true);
    black_hole_events(&mut d, 4);
    let first = d.take_due();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].evidence["dropped_here"], false);
    d.on_drop(&too_big(d.now() + MS));
    let again = d.take_due();
    assert_eq!(again.len(), 1, "dropped_here changed");
    assert_eq!(again[0].evidence["dropped_here"], true);
    assert_eq!(again[0].summary.matches("; here,").count(), 1, "annotated once: {}", again[0].summary);
    d.on_drop(&too_big(d.now() + 2 * MS));
    assert!(d.take_due().is_empty(), "a count is no material change");
    assert_eq!(of_kind(&d, FindingKind::PmtuBlackHole)[0].evidence["drop_count"], 2, "but the evidence is current");
}

/// A DTLS subject blocked for 198.18.0.2 -> 198.18.1.1:443, with `drops` seen first.
fn blocked_dtls(drops: &[DropEvent], watched: bool) -> Finding {
    let mut d = detectors(watched);
    for dr in drops {
        d.on_drop(dr);
    }
    d.on_event(&dtls_hello(T0, 2, 50002, 0));
    d.on_event(&dtls_hello(T0 + 1000 * MS, 2, 50002, 1));
    d.finish(T0 + 60 * S);
    let mut f = of_kind(&d, FindingKind::DtlsBlocked);
    assert_eq!(f.len(), 1, "{f:#?}");
    f.remove(0)
}

fn dtls_drop(ts: u64, reason: &str, class: DropClass, hook: DropHook, from_server: bool) -> DropEvent {
    let (client, server) = (([198, 18, 0, 2], 50002), ([198, 18, 1, 1], 443));
    let (src, dst) = if from_server { (server, client) } else { (client, server) };
    let mut d = drop_of(packet(ts, EventKind::Dtls as u8, IPPROTO_UDP, src, dst), reason, class, hook);
    (d.out_ifindex, d.out_ifname) = (7, None);
    d
}

#[test]
fn dtls_blocked_by_this_hosts_firewall_says_where() {
    let drops = [
        dtls_drop(T0, "NETFILTER_DROP", DropClass::Dtls, DropHook::Forward, false),
        dtls_drop(T0 + S, "NETFILTER_DROP", DropClass::VpnPort, DropHook::Forward, true),
    ];
    let f = blocked_dtls(&drops, true);
    let e = &f.evidence;
    assert_eq!(
        (&e["dropped_here"], &e["drop_reason"], &e["drop_hook"], &e["drop_count"], &e["drop_interface"]),
        (&json!(true), &json!("NETFILTER_DROP"), &json!("forward"), &json!(2), &json!("7")),
        "both directions, the ifindex for want of a name"
    );
    assert!(!e.contains_key("drop_interface_mtu"), "not a too-big drop");
    assert!(f.summary.ends_with("; dropped by this host's firewall (netfilter, forward hook)"), "{}", f.summary);
    assert!(f.remedy.contains("`nft insert rule inet filter forward ip daddr 198.18.1.1 udp dport 443 accept`"));
    assert_eq!(f.severity, Severity::Warning);
}

#[test]
fn dtls_blocked_watched_without_drops_here_is_blocked_beyond() {
    let other_port = dtls_drop(T0, "NETFILTER_DROP", DropClass::Dtls, DropHook::Forward, false);
    let mut elsewhere = other_port.clone();
    elsewhere.packet.header.dst_port = 4443;
    elsewhere.packet.header.src_port = 50009;
    let f = blocked_dtls(&[elsewhere], true);
    assert_eq!(f.evidence["dropped_here"], false);
    assert!(f.summary.ends_with("; not dropped on this host: blocked beyond it"), "{}", f.summary);
    assert_eq!(blocked_dtls(&[other_port], false).evidence["dropped_here"], "unknown");
}

/// A storm finding as the DNS detector builds it (its subject's keys).
fn storm(client: &str, resolver: &str) -> Finding {
    let subject: Map<String, Value> =
        json!({"client": client, "resolver": resolver, "qname": "x.example", "qtype": "A"})
            .as_object()
            .unwrap()
            .clone();
    Finding {
        kind: FindingKind::DnsProbeStorm,
        severity: Severity::Info,
        first_seen_ns: T0,
        last_seen_ns: T0 + S,
        summary: "198.18.0.2 asks 198.18.1.1 for A x.example 4 times; no answer".into(),
        subject,
        evidence: json!({"queries": 4}).as_object().unwrap().clone(),
        remedy: "Find out why.".into(),
    }
}

#[test]
fn a_storm_whose_answers_this_host_dropped_says_so() {
    let mut d = detectors(true);
    let answer = packet(T0, EventKind::Dns as u8, IPPROTO_UDP, ([198, 18, 1, 1], 53), ([198, 18, 0, 2], 5353));
    let mut dr = drop_of(answer, "NETFILTER_DROP", DropClass::Dns, DropHook::Input);
    (dr.in_ifindex, dr.in_ifname) = (2, Some("eth0".into()));
    d.on_drop(&dr);
    d.on_drop(&dr);
    d.book.upsert(storm("198.18.0.2", "198.18.1.1"), "m".into(), T0 + S);
    d.book.upsert(storm("198.18.0.3", "198.18.1.1"), "m".into(), T0 + S);
    d.flush();
    let all = of_kind(&d, FindingKind::DnsProbeStorm);
    let (hit, miss) = (&all[0], &all[1]);
    assert_eq!(hit.subject["client"], "198.18.0.2");
    assert_eq!(
        (&hit.evidence["dropped_here"], &hit.evidence["drop_count"], &hit.evidence["drop_hook"]),
        (&json!(true), &json!(2), &json!("input"))
    );
    assert_eq!(hit.evidence["drop_interface"], "eth0", "received: the interface it came in on");
    assert!(
        hit.summary.ends_with("; this host dropped 2 of its DNS packets (netfilter, input hook)"),
        "{}",
        hit.summary
    );
    assert!(hit.remedy.starts_with("This host's firewall drops DNS between 198.18.0.2 and 198.18.1.1"));
    assert_eq!(
        (&miss.evidence["dropped_here"], miss.summary.as_str()),
        (&json!(false), storm("", "").summary.as_str())
    );
}

fn suppressed(d: &Detectors) -> Vec<Finding> {
    of_kind(d, FindingKind::LocalIcmpSuppressed)
}

#[test]
fn local_icmp_suppressed_needs_three_within_the_window_and_counts_by_type() {
    let mut d = detectors(true);
    d.on_drop(&own_icmp(T0, CLIENT, 3, 3));
    d.on_drop(&own_icmp(T0 + S, CLIENT, 3, 3));
    d.flush();
    assert!(suppressed(&d).is_empty(), "two are below the threshold");
    // Not this host's own, or not its firewall's: not counted.
    let mut forwarded = own_icmp(T0 + S, CLIENT, 3, 4);
    forwarded.hook = DropHook::Forward;
    let mut no_socket = own_icmp(T0 + S, CLIENT, 3, 4);
    no_socket.reason = "NO_SOCKET".into();
    d.on_drop(&forwarded);
    d.on_drop(&no_socket);
    d.flush();
    assert!(suppressed(&d).is_empty());
    d.on_drop(&own_icmp(T0 + 2 * S, [198, 18, 0, 9], 3, 4));
    d.finish(T0 + 3 * S);
    let f = suppressed(&d);
    assert_eq!(f.len(), 1, "{f:#?}");
    let f = &f[0];
    assert_eq!((f.severity, &f.subject), (Severity::Warning, json!({"reporter": "198.18.0.1"}).as_object().unwrap()));
    let e = &f.evidence;
    assert_eq!(
        (&e["suppressed"], &e["by_type"], &e["destinations"], &e["drop_reason"], &e["drop_hook"]),
        (
            &json!(3),
            &json!({"port_unreachable": 2, "frag_needed": 1}),
            &json!(2),
            &json!("NETFILTER_DROP"),
            &json!("output")
        )
    );
    assert_eq!(
        (&e["first"], &e["last"]),
        (&json!("2023-11-14T22:13:20.000000Z"), &json!("2023-11-14T22:13:22.000000Z"))
    );
    assert!(
        f.summary.starts_with(
            "198.18.0.1 sent 3 ICMP errors (port_unreachable 2, frag_needed 1) to 2 destinations and this host's \
             firewall dropped them (netfilter, output hook)"
        ),
        "{}",
        f.summary
    );
    assert!(f.remedy.contains(
        "`nft insert rule inet filter output icmp type destination-unreachable icmp code port-unreachable accept`"
    ));
    assert!(f.remedy.contains("icmp code frag-needed accept`"));
}

#[test]
fn local_icmp_suppressed_spread_wider_than_the_window_is_not_named_and_the_threshold_is_configurable() {
    let mut d = detectors(true);
    for i in 0..3 {
        d.on_drop(&own_icmp(T0 + i * 200 * S, CLIENT, 3, 4));
    }
    d.finish(T0 + 1000 * S);
    assert!(suppressed(&d).is_empty(), "three in 400 s, none three in 300 s");
    let mut cfg = Config::default();
    cfg.drops.icmp_suppressed_min = Count(2);
    cfg.drops.icmp_suppressed_window_s = Secs(10.0);
    let mut d = Detectors::new(&cfg, Emission::AtEnd);
    d.set_drops_watched(true);
    d.on_drop(&own_icmp(T0, CLIENT, 3, 4));
    d.on_drop(&own_icmp(T0 + 5 * S, CLIENT, 3, 4));
    d.finish(T0 + 6 * S);
    assert_eq!(suppressed(&d)[0].evidence["suppressed"], 2);
}

#[test]
fn drop_state_is_bounded_and_counts_what_it_evicts() {
    let mut cfg = Config::default();
    cfg.drops.tallies_cap = Cap(2);
    let mut d = Detectors::new(&cfg, Emission::AtEnd);
    d.set_drops_watched(true);
    for i in 0..5u8 {
        let mut seg = too_big(T0);
        seg.packet.header.src_port = 1000 + u16::from(i);
        d.on_drop(&seg);
        d.on_drop(&own_icmp(T0, CLIENT, 3, 3)); // one reporter only
        let mut other = own_icmp(T0, CLIENT, 3, 3);
        other.packet.header.src_addr[3] = 100 + i;
        d.on_drop(&other);
    }
    assert_eq!((d.tracked()["drop_tallies"], d.evictions()["drop_tallies"]), (2, 3));
    assert_eq!((d.tracked()["icmp_suppressed_reporters"], d.evictions()["icmp_suppressed_reporters"]), (2, 4));
    d.reconfigure(&Config::default());
    let mut seg = too_big(T0);
    seg.packet.header.src_port = 9;
    d.on_drop(&seg);
    assert_eq!(d.tracked()["drop_tallies"], 3, "a larger cap applies without losing state");
}

#[test]
fn unwatched_drop_tables_are_not_reported() {
    let d = detectors(false);
    assert!(!d.tracked().contains_key("drop_tallies") && !d.evictions().contains_key("icmp_suppressed_reporters"));
    assert!(detectors(true).tracked().contains_key("pending_local_icmp_suppressed"));
}

#[test]
fn port_unreachable_and_storms_say_true_false_or_unknown() {
    let unreachable = |client: &str| Finding {
        kind: FindingKind::DtlsPortUnreachable,
        subject: json!({"client": client, "server": "198.18.1.1", "port": 443}).as_object().unwrap().clone(),
        summary: "s".into(),
        ..storm(client, "198.18.1.1")
    };
    let mut d = detectors(true);
    d.on_drop(&dtls_drop(T0, "NO_SOCKET", DropClass::Dtls, DropHook::Input, false));
    d.book.upsert(unreachable("198.18.0.2"), "m".into(), T0);
    d.book.upsert(unreachable("198.18.0.3"), "m".into(), T0);
    d.flush();
    let all = of_kind(&d, FindingKind::DtlsPortUnreachable);
    assert_eq!(
        (&all[0].evidence["dropped_here"], &all[0].evidence["drop_reason"]),
        (&json!(true), &json!("NO_SOCKET"))
    );
    assert_eq!(all[0].summary, "s; dropped by this host (NO_SOCKET, input hook)");
    assert_eq!((&all[1].evidence["dropped_here"], all[1].summary.as_str()), (&json!(false), "s"));
    let mut d = detectors(false);
    d.book.upsert(storm("198.18.0.2", "198.18.1.1"), "m".into(), T0);
    d.book.upsert(unreachable("198.18.0.2"), "m".into(), T0);
    d.flush();
    for f in d.book.all() {
        assert_eq!(f.evidence["dropped_here"], "unknown", "{f:?}");
        assert_eq!(f.evidence.len(), 2, "nothing else is added: {f:?}");
    }
}
