//! The DNS detector on hand-built events: one test per behaviour.

use agent_common::{EventHeader, EventKind};
use serde_json::{Value, json};

use crate::{
    config::{Cap, Config},
    detect::{Detectors, Emission, Finding, FindingKind, Severity},
    event::Event,
};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * S;
const A: u16 = 1;
const SOA: u16 = 6;

fn v4(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[..4].copy_from_slice(&[198, 18, 0, last]);
    a
}

fn ip(last: u8) -> String {
    format!("198.18.0.{last}")
}

/// A DNS message for `name` / `qtype` with `id`: a query, or a response with `rcode`.
fn dns_bytes(id: u16, name: &str, qtype: u16, response: Option<u8>) -> Vec<u8> {
    let flags = match response {
        None => [0x01, 0x00],
        Some(rcode) => [0x81, 0x80 | rcode],
    };
    let mut snap = id.to_be_bytes().to_vec();
    snap.extend_from_slice(&flags);
    snap.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        snap.push(label.len() as u8);
        snap.extend_from_slice(label.as_bytes());
    }
    snap.push(0);
    snap.extend_from_slice(&qtype.to_be_bytes());
    snap.extend_from_slice(&[0, 1]);
    snap
}

/// One DNS packet between client `198.18.0.<client>` (port `port`) and resolver
/// `198.18.0.<resolver>`.
#[derive(Clone, Copy)]
struct Q<'a> {
    client: u8,
    resolver: u8,
    port: u16,
    id: u16,
    name: &'a str,
    qtype: u16,
}

impl Q<'_> {
    fn event(&self, ts: u64, response: Option<u8>) -> Event {
        let snap = dns_bytes(self.id, self.name, self.qtype, response);
        let (c, r) = ((v4(self.client), self.port), (v4(self.resolver), 53));
        let ((src, sport), (dst, dport)) = if response.is_none() { (c, r) } else { (r, c) };
        let header = EventHeader {
            ts_ns: ts,
            kind: EventKind::Dns as u8,
            ip_version: 4,
            src_addr: src,
            dst_addr: dst,
            src_port: sport,
            dst_port: dport,
            snap_len: snap.len() as u16,
            ..Default::default()
        };
        Event { header, snap }
    }
    fn query(&self, ts: u64) -> Event {
        self.event(ts, None)
    }
    fn answer(&self, ts: u64, rcode: u8) -> Event {
        self.event(ts, Some(rcode))
    }
    /// An ICMP error (type 3, `code`) from `198.18.<from>` about this query, quoting
    /// `dns_quoted` bytes of its DNS message.
    fn icmp(&self, ts: u64, from: [u8; 2], code: u8, dns_quoted: usize) -> Event {
        let dns = dns_bytes(self.id, self.name, self.qtype, None);
        let mut snap = vec![3, code, 0, 0, 0, 0, 0, 0];
        let total = (20 + 8 + dns.len()) as u16;
        snap.extend_from_slice(&[0x45, 0, (total >> 8) as u8, total as u8, 0, 0, 0, 0, 64, 17, 0, 0]);
        snap.extend_from_slice(&v4(self.client)[..4]);
        snap.extend_from_slice(&v4(self.resolver)[..4]);
        snap.extend_from_slice(&self.port.to_be_bytes());
        snap.extend_from_slice(&53u16.to_be_bytes());
        snap.extend_from_slice(&((8 + dns.len()) as u16).to_be_bytes());
        snap.extend_from_slice(&[0, 0]);
        snap.extend_from_slice(&dns[..dns_quoted.min(dns.len())]);
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[198, 18, from[0], from[1]]);
        let mut header = EventHeader {
            ts_ns: ts,
            kind: EventKind::IcmpError as u8,
            ip_version: 4,
            src_addr: src,
            dst_addr: v4(self.client),
            snap_len: snap.len() as u16,
            ..Default::default()
        };
        header.info.icmp_type = 3;
        header.info.icmp_code = code;
        Event { header, snap }
    }
}

fn q(client: u8, resolver: u8, id: u16, name: &str) -> Q<'_> {
    Q { client, resolver, port: 40000 + id, id, name, qtype: A }
}

/// Replays `events` (sorted by time) and returns every finding at `end`.
fn run(cfg: &Config, mut events: Vec<Event>, end: u64) -> (Vec<Finding>, Detectors) {
    events.sort_by_key(|e| e.header.ts_ns);
    let mut d = Detectors::new(cfg, Emission::AtEnd);
    for e in &events {
        d.on_event(e);
    }
    d.finish(end);
    (d.take_due(), d)
}

fn of_kind(f: &[Finding], kind: FindingKind) -> Vec<&Finding> {
    f.iter().filter(|f| f.kind == kind).collect()
}

/// `n` lookups of `name` every `every` s from `start` s, each answered `rcode` after
/// 1 s (`None`: never).
fn asked(
    (client, resolver, name): (u8, u8, &str),
    first_id: u16,
    n: u16,
    start: u64,
    every: u64,
    rcode: Option<u8>,
) -> Vec<Event> {
    let mut out = Vec::new();
    for i in 0..n {
        let qq = q(client, resolver, first_id + i, name);
        let t = T0 + start * S + u64::from(i) * every * S;
        out.push(qq.query(t));
        if let Some(r) = rcode {
            out.push(qq.answer(t + S, r));
        }
    }
    out
}

#[test]
fn one_name_asked_of_two_resolvers_names_the_one_that_fails() {
    let mut events = asked((2, 10, "svc.example.com"), 100, 8, 0, 15, Some(0));
    events.extend(asked((2, 11, "svc.example.com"), 200, 8, 1, 15, Some(5)));
    let (f, _) = run(&Config::default(), events, T0 + 300 * S);
    assert_eq!(f.len(), 1, "{f:#?}");
    let storm = &f[0];
    assert_eq!(storm.kind, FindingKind::DnsProbeStorm);
    assert_eq!(storm.subject["resolver"], ip(11));
    assert_eq!(storm.evidence["rcodes"], json!({"REFUSED": 8}));
    assert!(
        storm
            .summary
            .starts_with("198.18.0.2 asks 198.18.0.11 for A svc.example.com every 15.0 s; 8/8 answered REFUSED"),
        "{}",
        storm.summary
    );
    assert!(storm.remedy.contains("198.18.0.11") && !storm.remedy.contains("198.18.0.10"), "{}", storm.remedy);
}

#[test]
fn queries_answered_by_icmp_from_a_router_name_the_path_not_a_silent_resolver() {
    let mut events = Vec::new();
    for i in 0..6u16 {
        let qq = q(2, 10, 300 + i, "api.example.com");
        let t = T0 + u64::from(i) * 10 * S;
        events.push(qq.query(t));
        // Half the routers quote the whole query, half stop after the UDP header: the
        // socket still names the query.
        let quoted = if i % 2 == 0 { 64 } else { 0 };
        events.push(qq.icmp(t + S / 100, [1, 1], 1, quoted));
    }
    let (f, _) = run(&Config::default(), events.clone(), T0 + 300 * S);
    assert_eq!(f.len(), 1, "{f:#?}");
    let e = &f[0].evidence;
    assert_eq!((&e["icmp_errors"], &e["icmp_from"], &e["timeouts"]), (&json!(6), &json!("198.18.1.1"), &json!(0)));
    assert!(f[0].summary.ends_with("; 6/6 answered by ICMP host unreachable from 198.18.1.1"), "{}", f[0].summary);
    assert!(f[0].remedy.contains("198.18.1.1") && f[0].remedy.contains("path is broken"), "{}", f[0].remedy);

    // Port unreachable from the resolver itself: nothing serves DNS there.
    let events: Vec<Event> = (0..6u16)
        .flat_map(|i| {
            let qq = q(2, 10, 400 + i, "api.example.com");
            let t = T0 + u64::from(i) * 10 * S;
            [qq.query(t), qq.icmp(t + S / 100, [0, 10], 3, 64)]
        })
        .collect();
    let (f, _) = run(&Config::default(), events, T0 + 300 * S);
    assert_eq!(f[0].evidence["icmp_from"], ip(10));
    assert!(f[0].remedy.contains("nothing serves DNS there"), "{}", f[0].remedy);
}

/// Two clients asking one resolver for `names` every 10 s from `from` to `to` s; the
/// resolver answers NOERROR outside [stall_from, stall_to) and not at all inside.
fn stall(names: &[&str], from: u64, to: u64, stall_from: u64, stall_to: u64) -> Vec<Event> {
    let mut events = Vec::new();
    let mut id = 1000u16;
    for t in (from..to).step_by(10) {
        for (n, name) in names.iter().enumerate() {
            for client in [2u8, 3] {
                id += 1;
                let qq = q(client, 10, id, name);
                let at = T0 + t * S + n as u64 * S / 10;
                events.push(qq.query(at));
                if (stall_from..stall_to).contains(&t) {
                    // The stub resends the same id once; nothing comes back.
                    events.push(qq.query(at + 2 * S));
                } else {
                    events.push(qq.answer(at + S / 50, 0));
                }
            }
        }
    }
    events
}

#[test]
fn a_resolver_that_stalls_is_one_outage_and_no_name_storms() {
    let names = ["a.example.com", "b.example.com", "c.example.net", "d.example.org"];
    let mut events = stall(&names, 0, 600, 200, 380);
    // A name that keeps failing after the outage ended is still a storm of its own.
    events.extend(asked((2, 10, "broken.example.com"), 5000, 8, 450, 15, Some(2)));
    let (f, _) = run(&Config::default(), events, T0 + 700 * S);
    let outages = of_kind(&f, FindingKind::DnsResolverOutage);
    assert_eq!(outages.len(), 1, "{f:#?}");
    let o = outages[0];
    assert_eq!(o.subject, json!({"resolver": ip(10)}).as_object().unwrap().clone());
    assert_eq!(o.severity, Severity::Warning);
    let e = &o.evidence;
    assert_eq!((&e["clients"], &e["names"], &e["episodes"]), (&json!(2), &json!(4), &json!(1)), "{e:?}");
    // 18 rounds of 4 names from 2 clients, every lookup sent twice.
    assert_eq!((&e["failed"], &e["lookups"], &e["queries"]), (&json!(144), &json!(144), &json!(288)), "{e:?}");
    assert_eq!(e["timeouts"], 144);
    // From the first failed lookup (round 200 s) to the last (round 370 s, 4th name).
    assert_eq!(
        (&e["start"], &e["end"]),
        (&json!("2023-11-14T22:16:40.000000Z"), &json!("2023-11-14T22:19:30.300000Z"))
    );
    assert_eq!(e["duration_s"], 170.3);
    assert!(
        o.summary.starts_with("resolver 198.18.0.10 failed 144/144 lookups of 4 names from 2 clients for"),
        "{}",
        o.summary
    );
    assert!(o.summary.ends_with("(timeouts)"), "{}", o.summary);
    let storms = of_kind(&f, FindingKind::DnsProbeStorm);
    let names: Vec<&Value> = storms.iter().map(|s| &s.subject["qname"]).collect();
    assert_eq!(names, [&json!("broken.example.com")], "{storms:#?}");
}

#[test]
fn late_noerror_answers_and_retries_of_one_id_are_no_storm() {
    let mut events = Vec::new();
    for i in 0..10u16 {
        let qq = q(2, 10, 600 + i, "slow.example.com");
        let t = T0 + u64::from(i) * 20 * S;
        // One lookup: sent at +0, +1, +3 s; answered NOERROR at +7 s, after the 5 s timeout.
        for dt in [0, 1, 3] {
            events.push(qq.query(t + dt * S));
        }
        events.push(qq.answer(t + 7 * S, 0));
    }
    let (f, d) = run(&Config::default(), events, T0 + 400 * S);
    assert!(f.is_empty(), "{f:#?}");
    assert_eq!(d.dns.rcode_totals["NOERROR"], 10);
}

#[test]
fn bursts_every_five_minutes_are_episodes_and_a_storm_warns_only_once_it_persists() {
    let bursts = |n: u64| -> Vec<Event> {
        (0..n)
            .flat_map(|b| asked((2, 10, "telemetry.example.com"), 700 + 10 * b as u16, 4, b * 320, 5, Some(2)))
            .collect()
    };
    let (f, _) = run(&Config::default(), bursts(2), T0 + 2000 * S);
    assert_eq!(f.len(), 1, "{f:#?}");
    let e = &f[0].evidence;
    assert_eq!((&e["pattern"], &e["episodes"], &e["queries"]), (&json!("episodes"), &json!(2), &json!(8)), "{e:?}");
    assert_eq!(f[0].severity, Severity::Info, "two episodes are fewer than three periods");
    assert!(f[0].summary.contains(" 8 times in 2 episodes; 8/8 answered SERVFAIL"), "{}", f[0].summary);
    let (f, _) = run(&Config::default(), bursts(4), T0 + 2000 * S);
    assert_eq!((f.len(), f[0].severity), (1, Severity::Warning), "{f:#?}");

    // A periodic storm warns once it spans 30 s and three periods, not before.
    let (f, _) = run(&Config::default(), asked((2, 10, "p.example.com"), 800, 4, 0, 3, Some(2)), T0 + 100 * S);
    assert_eq!((f.len(), f[0].severity), (1, Severity::Info), "{f:#?}");
    let (f, _) = run(&Config::default(), asked((2, 10, "p.example.com"), 800, 12, 0, 3, Some(2)), T0 + 100 * S);
    assert_eq!(f[0].severity, Severity::Warning, "{f:#?}");
}

#[test]
fn four_nxdomain_in_75_ms_for_soa_local_is_no_storm() {
    let mut events = Vec::new();
    for i in 0..4u16 {
        let qq = Q { qtype: SOA, ..q(2, 10, 900 + i, "local") };
        let t = T0 + u64::from(i) * 25_000_000;
        events.push(qq.query(t));
        events.push(qq.answer(t + 1_000_000, 3));
    }
    let (f, _) = run(&Config::default(), events, T0 + 100 * S);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn negative_by_design_names_stay_info() {
    for (name, qtype) in [("printer.lan", A), ("_ipp._tcp.local", 12), ("wpad.example.com", A)] {
        let storm = |n: u16| {
            let events: Vec<Event> = asked((2, 10, name), 1000, n, 0, 10, Some(3))
                .into_iter()
                .map(|mut e| {
                    let at = e.snap.len() - 4;
                    e.snap[at..at + 2].copy_from_slice(&qtype.to_be_bytes());
                    e
                })
                .collect();
            run(&Config::default(), events, T0 + 1000 * S).0
        };
        // 20 NXDOMAIN over 190 s: a storm by any other name, but expected for this one.
        let f = storm(20);
        assert_eq!((f.len(), f[0].severity), (1, Severity::Info), "{name}: {f:#?}");
        assert_eq!(f[0].evidence["negative_by_design"], true);
        // Persisting past 300 s, it warns.
        let f = storm(32);
        assert_eq!(f[0].severity, Severity::Warning, "{name}: {f:#?}");
    }
}

#[test]
fn a_name_that_resolved_before_stays_info_until_it_keeps_failing() {
    let failing_for = |secs: u64| {
        let mut events = asked((2, 10, "api.example.com"), 1100, 3, 0, 15, Some(0));
        events.extend(asked((2, 10, "api.example.com"), 1200, (secs / 15) as u16 + 1, 60, 15, Some(2)));
        run(&Config::default(), events, T0 + 2000 * S).0
    };
    let f = failing_for(300);
    assert_eq!((f.len(), f[0].severity), (1, Severity::Info), "{f:#?}");
    assert_eq!(f[0].evidence["resolved_before"], true);
    let f = failing_for(660);
    assert_eq!(f[0].severity, Severity::Warning, "{f:#?}");
}

#[test]
fn a_capture_of_one_direction_makes_no_outage() {
    // Queries only: 3 clients, 12 names, each lookup sent once (their answers went
    // another way). Every lookup "times out", yet nothing says the resolver failed.
    let mut events = Vec::new();
    for round in 0..20u64 {
        for n in 0..12u16 {
            let client = 2 + (n % 3) as u8;
            let name = format!("host{n}.example.com");
            let id = 2000 + round as u16 * 12 + n;
            events.push(Q { name: &name, ..q(client, 10, id, "x") }.query(T0 + round * 30 * S + u64::from(n) * S));
        }
    }
    let (f, _) = run(&Config::default(), events, T0 + 1000 * S);
    assert!(of_kind(&f, FindingKind::DnsResolverOutage).is_empty(), "{f:#?}");

    // The same resolver with clients resending each id: they say it never answered.
    let (f, _) = run(&Config::default(), stall(&["a.example", "b.example", "c.example"], 0, 120, 0, 120), T0 + 300 * S);
    assert_eq!(of_kind(&f, FindingKind::DnsResolverOutage).len(), 1, "{f:#?}");
    assert!(of_kind(&f, FindingKind::DnsProbeStorm).is_empty(), "{f:#?}");
}

#[test]
fn a_query_whose_deadline_is_evicted_goes_with_its_transaction_and_stays_answerable() {
    let mut cfg = Config::default();
    cfg.dns.transactions_cap = Cap(2);
    let mut d = Detectors::new(&cfg, Emission::AtEnd);
    // Four queries within the timeout; room for two deadlines: ids 1 and 2 lose
    // theirs, with their transactions.
    for id in 1..=4u16 {
        d.on_event(&q(2, 1, id, "lost.example").query(T0 + u64::from(id) * 1_000_000));
    }
    assert_eq!(d.evictions()["dns_deadlines"], 2);
    assert_eq!(d.evictions()["dns_transactions"], 2);
    assert_eq!((d.tracked()["dns_deadlines"], d.tracked()["dns_transactions"]), (2, 2));
    // id 1 is still answered (late, without a latency: its transaction is gone).
    d.on_event(&q(2, 1, 1, "lost.example").answer(T0 + 2 * S, 2));
    // A retransmission of id 4 later makes the queries span more than the timeout.
    d.on_event(&q(2, 1, 4, "lost.example").query(T0 + 8 * S));
    d.finish(T0 + 60 * S);
    let f = d.take_due();
    assert_eq!(f.len(), 1, "{f:?}");
    let e = &f[0].evidence;
    // ids 3 and 4 timed out (4 twice); 2 can no longer time out and is not left
    // pending forever.
    assert_eq!(
        (&e["queries"], &e["responses"], &e["timeouts"], &e["pending"]),
        (&5.into(), &1.into(), &3.into(), &0.into()),
        "{e:?}"
    );
    assert_eq!(e["median_latency_s"], Value::Null);
    assert_eq!(d.tracked()["dns_deadlines"], 0);
}

#[test]
fn a_full_table_of_storm_marks_is_built_at_once_and_no_storm_is_lost() {
    let mut cfg = Config::default();
    cfg.output.pending_cap = Cap(1);
    let mut d = Detectors::new(&cfg, Emission::AtEnd);
    for client in [2u8, 3] {
        for id in 1..=4u16 {
            let t = T0 + u64::from(client) * 100 * S + u64::from(id) * 15 * S;
            d.on_event(&q(client, 1, id, "fail.example").query(t));
            d.on_event(&q(client, 1, id, "fail.example").answer(t + S, 2));
        }
    }
    assert_eq!(d.evictions()["pending_dns_probe_storm"], 0, "a full table is flushed, not evicted from");
    d.finish(T0 + 1000 * S);
    let f = d.take_due();
    let clients: Vec<_> = f.iter().map(|f| f.subject["client"].clone()).collect();
    assert_eq!(clients, ["198.18.0.2", "198.18.0.3"], "{f:?}");
    // Built early or not, each storm has its final evidence.
    assert!(f.iter().all(|f| f.evidence["queries"] == 4 && f.evidence["responses"] == 4), "{f:?}");
    assert_eq!(d.tracked()["pending_dns_probe_storm"], 0);
}

#[test]
fn two_short_stalls_of_a_name_that_resolves_are_info_not_a_day_of_failing() {
    // The name resolves, fails for 2 min, resolves for hours, fails for 2 min again,
    // then resolves: its storm spans hours, but it never failed longer than 2 min.
    let name = (2, 10, "plug.example.cn");
    let mut events = asked(name, 100, 3, 0, 600, Some(0));
    events.extend(asked(name, 200, 13, 2000, 10, None));
    events.extend(asked(name, 300, 3, 2200, 600, Some(0)));
    events.extend(asked(name, 400, 13, 9000, 10, Some(2)));
    events.extend(asked(name, 500, 3, 9200, 600, Some(0)));
    let (f, _) = run(&Config::default(), events, T0 + 20_000 * S);
    let storms = of_kind(&f, FindingKind::DnsProbeStorm);
    assert_eq!(storms.len(), 1, "{f:#?}");
    let e = &storms[0].evidence;
    assert_eq!(storms[0].severity, Severity::Info, "{e:?}");
    assert_eq!((&e["resolved_before"], &e["resolved_again"]), (&json!(true), &json!(true)), "{e:?}");
    assert_eq!(e["longest_failing_s"], 120.0, "{e:?}");
}

#[test]
fn a_stall_answered_late_by_a_flush_is_a_passing_stall() {
    // Asked every second; the resolver stalls for 2 min and then answers every
    // query at once, some NOERROR, most SERVFAIL (the field capture of a home
    // router): the name works, it does not warn.
    let mut events = Vec::new();
    for i in 0..120u16 {
        let qq = q(2, 10, 600 + i, "iot.example.com");
        events.push(qq.query(T0 + u64::from(i) * S));
        events.push(qq.answer(T0 + 125 * S, if i % 5 == 0 { 0 } else { 2 }));
    }
    let (f, _) = run(&Config::default(), events, T0 + 200 * S);
    let storms = of_kind(&f, FindingKind::DnsProbeStorm);
    assert!(storms.iter().all(|s| s.severity == Severity::Info), "{storms:#?}");
    assert!(storms.iter().all(|s| s.evidence["resolved_again"] == true), "{storms:#?}");
}

#[test]
fn a_storm_printed_live_is_taken_back_when_an_outage_of_its_resolver_covers_it() {
    // The resolver stops answering one name after another, 8 s apart: the first
    // name's storm is printed before three names fail and make the outage.
    let names = ["a.example.com", "b.example.com", "c.example.net", "d.example.org"];
    let mut events = Vec::new();
    let mut id = 3000u16;
    for t in (0..200u64).step_by(2) {
        for (n, name) in names.iter().enumerate() {
            id += 1;
            let qq = q(2, 10, id, name);
            let at = T0 + t * S + n as u64 * S / 10;
            events.push(qq.query(at));
            if t < 100 + 8 * n as u64 {
                events.push(qq.answer(at + S / 50, 0));
            }
        }
    }
    events.sort_by_key(|e| e.header.ts_ns);
    let mut d = Detectors::new(&Config::default(), Emission::Live { interval_ns: S });
    let mut printed = Vec::new();
    for e in &events {
        d.on_event(e);
        d.tick(e.header.ts_ns);
        printed.extend(d.take_due());
    }
    d.finish(T0 + 500 * S);
    printed.extend(d.take_due());
    assert!(
        printed.iter().any(|f| f.kind == FindingKind::DnsResolverOutage),
        "{:#?}",
        printed.iter().map(|f| (f.kind, &f.summary)).collect::<Vec<_>>()
    );
    // The storms came first: each name failed before three of them did.
    assert!(printed.iter().any(|f| f.kind == FindingKind::DnsProbeStorm), "no storm was printed first");
    let book = d.book.all();
    assert_eq!(of_kind(&book, FindingKind::DnsResolverOutage).len(), 1, "{book:#?}");
    assert!(of_kind(&book, FindingKind::DnsProbeStorm).is_empty(), "{book:#?}");
}
