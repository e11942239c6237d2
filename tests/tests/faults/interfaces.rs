//! Interfaces that come and go under a running agent: one deleted and re-created, a
//! glob following devices, and more devices than the kernel has counter slots.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use pathwatch::lab::netns::{veth, wait_for};
use pathwatch_tests::{
    TempDir, dns_query,
    http::get_in,
    json_lines,
    metrics::metric,
    netns::{ifindex_in, in_netns, ipv4_only, send_frames},
    privileged,
    proc::agent,
    procfs::{BpfFd, bpf_fds, link_types_on, watched},
};

use super::{FLOOD_DST_MAC, dns_in, pair, queries, second_link, summary_of, u};

#[test]
fn an_interface_that_goes_and_comes_back_counts_on_in_its_slot() {
    if !privileged("an_interface_that_goes_and_comes_back_counts_on_in_its_slot") {
        return;
    }
    const PORT: u16 = 9464;
    let dir = TempDir::new("flt3");
    let p = pair(3);
    let (a1, a1_ip, b1_ip) = second_link(&p, 3);
    let b1 = "f3b1";
    let json = dir.0.join("agent.json");
    let mut a = agent(
        &p.a,
        &["run", "-i", &p.a_if, "-i", &a1, "--metrics", &PORT.to_string(), "--json", json.to_str().unwrap()],
        &dir.0,
    );
    let ns = p.a.name().to_string();
    let count = |iface: &str| dns_in(&ns, PORT, iface);
    let old_index = ifindex_in(&p.a, &a1);
    assert!(watched(a.pid(), old_index), "{:?}", bpf_fds(a.pid()));

    queries(p.b.name(), p.b_ip, p.a_ip, "before.test", 3, Duration::ZERO);
    queries(p.b.name(), b1_ip, a1_ip, "before.test", 3, Duration::ZERO);
    assert!(
        wait_for(Duration::from_secs(3), || count(&p.a_if) == Some(3) && count(&a1) == Some(3)),
        "before: {:?} {:?}",
        count(&p.a_if),
        count(&a1)
    );

    // Deleted: said on stderr, links released, the other interface counts on.
    p.a.ip(&["link", "del", &a1]).unwrap();
    let said = format!("pathwatch: {a1} went away; watching the others, and it again when it returns");
    assert!(wait_for(Duration::from_secs(3), || a.stderr().contains(&said)), "no {said:?}:\n{}", a.logs());
    assert!(link_types_on(a.pid(), old_index).is_empty(), "links on the deleted interface: {:?}", bpf_fds(a.pid()));
    queries(p.b.name(), p.b_ip, p.a_ip, "during.test", 4, Duration::ZERO);
    assert!(wait_for(Duration::from_secs(3), || count(&p.a_if) == Some(7)), "{} during: {:?}", p.a_if, count(&p.a_if));
    assert!(a.running(), "{}", a.logs());

    // Re-created with the same name: watched again, counting on from 3 in its slot.
    veth(&p.a, &a1, &p.b, b1).unwrap();
    p.a.ip(&["addr", "add", &format!("{a1_ip}/24"), "dev", &a1]).unwrap();
    p.b.ip(&["addr", "add", &format!("{b1_ip}/24"), "dev", b1]).unwrap();
    let new_index = ifindex_in(&p.a, &a1);
    let said = format!("pathwatch: {a1} appeared: watching it (ifindex {new_index}");
    assert!(wait_for(Duration::from_secs(3), || a.stderr().contains(&said)), "no {said:?}:\n{}", a.logs());
    assert!(wait_for(Duration::from_secs(2), || watched(a.pid(), new_index)), "{:?}", bpf_fds(a.pid()));
    queries(p.b.name(), b1_ip, a1_ip, "after.test", 5, Duration::ZERO);
    assert!(wait_for(Duration::from_secs(3), || count(&a1) == Some(8)), "{a1} after: {:?} (3 before + 5)", count(&a1));

    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
    let s = summary_of(&std::fs::read_to_string(&json).unwrap());
    eprintln!("summary interfaces: {}", s["interfaces"]);
    assert_eq!(u(&s["interfaces"][&p.a_if]["ingress"]["packets"]["dns"]), 7);
    assert_eq!(
        u(&s["interfaces"][&a1]["ingress"]["packets"]["dns"]),
        8,
        "the re-created interface counts on in its slot"
    );
    assert_eq!(u(&s["interfaces"][&a1]["ifindex"]), new_index as u64);
    assert_eq!(u(&s["events"]["dns_query"]), 15);
}

#[test]
fn a_glob_follows_tun_and_veth_devices_as_they_come_and_go() {
    if !privileged("a_glob_follows_tun_and_veth_devices_as_they_come_and_go") {
        return;
    }
    let dir = TempDir::new("flt4");
    let a = ipv4_only("pwt-flt4-a");
    let b = ipv4_only("pwt-flt4-b");
    let mut agent = agent(&a, &["run", "-i", "vpns*"], &dir.0);
    assert!(agent.stderr().contains("watching no interface yet"), "{}", agent.logs());
    let pid = agent.pid();

    // Each device that appears is watched within a second of its creation (netlink,
    // not a poll); a device that does not match is left alone.
    let appear = |what: &str, create: &dyn Fn()| -> (u32, Duration) {
        let t0 = Instant::now();
        create();
        let index = ifindex_in(&a, what);
        let ok = wait_for(Duration::from_secs(3), || watched(pid, index));
        let took = t0.elapsed();
        assert!(ok, "{what} not watched: {:?}\n{}", bpf_fds(pid), agent.logs());
        let said = format!("pathwatch: {what} appeared: watching it (ifindex {index}");
        assert!(wait_for(Duration::from_secs(2), || agent.stderr().contains(&said)), "no {said:?}:\n{}", agent.logs());
        eprintln!("{what} (ifindex {index}) watched {} ms after it was created", took.as_millis());
        assert!(took < Duration::from_millis(1000), "{what}: {took:?}");
        (index, took)
    };
    let (tun, _) = appear("vpns0", &|| {
        a.ip(&["tuntap", "add", "dev", "vpns0", "mode", "tun"]).unwrap();
        a.ip(&["link", "set", "vpns0", "up"]).unwrap();
    });
    let (veth1, _) = appear("vpns1", &|| veth(&a, "vpns1", &b, "f4b1").unwrap());
    // Linux lets an interface name carry control characters: one that would turn
    // the operator's terminal red is shown escaped, and nothing raw reaches any output.
    let hostile = "vpns\u{1b}[31mx";
    a.ip(&["tuntap", "add", "dev", hostile, "mode", "tun"]).unwrap();
    a.ip(&["link", "set", hostile, "up"]).unwrap();
    let hostile_index = ifindex_in(&a, hostile);
    assert!(wait_for(Duration::from_secs(3), || watched(pid, hostile_index)), "{}", agent.logs());
    let said = "pathwatch: vpns\\u{1b}[31mx appeared: watching it";
    assert!(wait_for(Duration::from_secs(2), || agent.stderr().contains(said)), "no {said:?}:\n{}", agent.logs());
    a.ip(&["link", "del", hostile]).unwrap();
    let said = "pathwatch: vpns\\u{1b}[31mx went away";
    assert!(wait_for(Duration::from_secs(2), || agent.stderr().contains(said)), "no {said:?}:\n{}", agent.logs());
    veth(&a, "other4", &b, "f4b2").unwrap();
    let other = ifindex_in(&a, "other4");
    std::thread::sleep(Duration::from_millis(300));
    assert!(link_types_on(pid, other).is_empty(), "a device that does not match vpns* is watched");
    assert!(agent.running(), "{}", agent.logs());

    // Each device that goes is let go of, within a second.
    for (name, index) in [("vpns0", tun), ("vpns1", veth1)] {
        let t0 = Instant::now();
        a.ip(&["link", "del", name]).unwrap();
        let ok = wait_for(Duration::from_secs(3), || link_types_on(pid, index).is_empty());
        let took = t0.elapsed();
        assert!(ok, "{name} still held: {:?}", bpf_fds(pid));
        let said = format!("pathwatch: {name} went away");
        assert!(wait_for(Duration::from_secs(2), || agent.stderr().contains(&said)), "no {said:?}:\n{}", agent.logs());
        eprintln!("{name} let go of {} ms after it was deleted", took.as_millis());
        assert!(took < Duration::from_millis(1000), "{name}: {took:?}");
    }
    // No interface is held any more; the drop program's link to the kfree_skb
    // tracepoint belongs to no interface and lives as long as the agent.
    let interface_links = |fds: &[BpfFd]| fds.iter().any(|f| matches!(f, BpfFd::Link(t, ..) if t != "raw_tracepoint"));
    assert!(!interface_links(&bpf_fds(pid)), "links left: {:?}", bpf_fds(pid));
    assert_eq!(agent.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", agent.logs());
    for (stream, text) in [("stdout", agent.stdout()), ("stderr", agent.stderr())] {
        assert!(!text.contains('\u{1b}'), "a raw escape reached {stream}:\n{}", agent.logs());
    }
}

// ---------------------------------------------------------------------------------
// More interfaces than counter slots, coming and going.

#[test]
fn slots_of_gone_interfaces_are_reused_zeroed_and_their_counts_kept() {
    if !privileged("slots_of_gone_interfaces_are_reused_zeroed_and_their_counts_kept") {
        return;
    }
    // 80 devices, ten at a time, then one more: the kernel has 63 counter slots.
    const DEVICES: usize = 80;
    const BATCH: usize = 10;
    const PORT: u16 = 9464;
    let dir = TempDir::new("flt12");
    let a = ipv4_only("pwt-flt12-a");
    let b = ipv4_only("pwt-flt12-b");
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(&config, "[output]\nreport_interval_s = 0.5\n").unwrap();
    let json = dir.0.join("agent.json");
    let port = PORT.to_string();
    let args = [
        "run",
        "-i",
        "vpnr*",
        "--config",
        config.to_str().unwrap(),
        "--metrics",
        &port,
        "--json",
        json.to_str().unwrap(),
    ];
    let mut agent = agent(&a, &args, &dir.0);
    let pid = agent.pid();
    let ns = a.name().to_string();
    let scrape = || {
        let (status, text) = get_in(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)), "/metrics").unwrap();
        assert_eq!(status, 200);
        text
    };
    let dns = |text: &str, iface: &str| {
        metric(text, "pathwatch_packets_total", &[("iface", iface), ("direction", "ingress"), ("class", "dns")])
    };
    // Device k gets 1-4 DNS queries, sent from its peer in `b` (frames addressed to
    // no one: XDP counts them, the stack drops them, nothing answers).
    let queries_for = |k: usize| 1 + k % 4;
    let frame = |k: usize| {
        let src = [198, 18, 72, 2];
        pathwatch_tests::udp4(src, [198, 18, 72, 1], 40000 + k as u16, 53, &dns_query(k as u16, "slot.test"))
    };
    let device = |k: usize| (format!("vpnr{k}"), format!("f12p{k}"));
    let mut sent = 0;
    let bring_up_and_count = |k: usize| {
        let (name, peer) = device(k);
        veth(&a, &name, &b, &peer).unwrap();
        (name, peer, queries_for(k))
    };

    let mut reclaimed_from = Vec::new();
    for first in (0..DEVICES).step_by(BATCH) {
        let batch: Vec<(String, String, usize)> = (first..first + BATCH).map(bring_up_and_count).collect();
        // Said once its slot is mapped (its links exist a moment before).
        for (name, _, _) in &batch {
            let said = format!("pathwatch: {name} appeared: watching it");
            assert!(
                wait_for(Duration::from_secs(3), || agent.stderr().contains(&said)),
                "no {said:?}:\n{}",
                agent.logs()
            );
            assert!(watched(pid, ifindex_in(&a, name)), "{name}: {:?}", bpf_fds(pid));
        }
        for (_, peer, n) in &batch {
            let frames: Vec<Vec<u8>> = (0..*n).map(|_| frame(*n)).collect();
            let peer = peer.clone();
            let went = in_netns(b.name(), move || send_frames(&peer, FLOOD_DST_MAC, &frames, Duration::from_secs(5)));
            assert_eq!(went, *n);
            sent += n;
        }
        // Each device counts exactly its own queries: a reused slot starts at zero.
        let exact = || {
            let text = scrape();
            batch.iter().all(|(name, _, n)| dns(&text, name) == *n as u64)
        };
        assert!(wait_for(Duration::from_secs(3), exact), "batch from {first}:\n{}", {
            let text = scrape();
            batch.iter().map(|(name, _, n)| format!("{name}: {} of {n}\n", dns(&text, name))).collect::<String>()
        });
        for (name, _, _) in &batch {
            a.ip(&["link", "del", name]).unwrap();
        }
        for (name, _, _) in &batch {
            let said = format!("pathwatch: {name} went away");
            assert!(wait_for(Duration::from_secs(3), || agent.stderr().contains(&said)), "no {said:?}");
        }
        // A gone device keeps its series, final, while its slot is not needed.
        let text = scrape();
        let (name, _, n) = &batch[0];
        if first + BATCH <= 63 {
            assert_eq!(dns(&text, name), *n as u64, "{name} gone: its final count");
        }
        let before = first.saturating_sub(63);
        reclaimed_from.extend((before..(first + BATCH).saturating_sub(63)).map(|k| device(k).0));
    }
    assert!(agent.running(), "{}", agent.logs());

    // One more, after 80 came and went: its own slot, its own counts.
    let (last, peer, _) = bring_up_and_count(DEVICES);
    reclaimed_from.push(device(DEVICES - 63).0);
    let said = format!("pathwatch: {last} appeared: watching it");
    assert!(wait_for(Duration::from_secs(3), || agent.stderr().contains(&said)), "no {said:?}:\n{}", agent.logs());
    let frames: Vec<Vec<u8>> = (0..5).map(frame).collect();
    assert_eq!(in_netns(b.name(), move || send_frames(&peer, FLOOD_DST_MAC, &frames, Duration::from_secs(5))), 5);
    sent += 5;
    assert!(wait_for(Duration::from_secs(3), || dns(&scrape(), &last) == 5), "{last}: {} of 5", dns(&scrape(), &last));
    let text = scrape();
    let present: Vec<String> =
        (0..=DEVICES).map(|k| device(k).0).filter(|n| text.contains(&format!("iface=\"{n}\""))).collect();
    eprintln!("after {} devices: {} on /metrics, slots taken back from {reclaimed_from:?}", DEVICES + 1, present.len());
    assert_eq!(present.len(), 63, "one series set per slot: {present:?}");
    assert!(
        reclaimed_from.iter().all(|n| !present.contains(n)),
        "a device whose slot went to another still has series"
    );

    assert_eq!(agent.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", agent.logs());
    let text = std::fs::read_to_string(&json).unwrap();
    let s = summary_of(&text);
    let interfaces = s["interfaces"].as_object().unwrap();
    eprintln!("summary: {} interfaces, classes {}", interfaces.len(), s["classes"]);
    assert_eq!(interfaces.len(), 63);
    assert_eq!(u(&s["interfaces"][&last]["ingress"]["packets"]["dns"]), 5);
    assert_eq!(s["interfaces"][&last]["gone"], false);
    let (gone, n) = (device(DEVICES - 1).0, queries_for(DEVICES - 1));
    assert_eq!(s["interfaces"][&gone]["gone"], true, "{}", s["interfaces"]);
    assert_eq!(u(&s["interfaces"][&gone]["ingress"]["packets"]["dns"]), n as u64);
    // The run's totals keep every device's counts, also of those whose slots went.
    assert_eq!(u(&s["classes"]["dns"]), sent as u64, "every query sent to any device, once");
    let totals: Vec<u64> =
        json_lines(&text).iter().filter(|l| l["type"] == "stats").map(|l| u(&l["classes"]["dns"])).collect();
    assert!(totals.len() >= 4 && totals.windows(2).all(|w| w[0] <= w[1]), "dns totals went back: {totals:?}");
}

#[test]
fn interfaces_past_the_counter_slots_are_reported_together_once() {
    if !privileged("interfaces_past_the_counter_slots_are_reported_together_once") {
        return;
    }
    // 63 tun devices take the 63 slots; two veth devices after them share slot 0.
    const PORT: u16 = 9465;
    let dir = TempDir::new("flt13");
    let a = ipv4_only("pwt-flt13-a");
    let b = ipv4_only("pwt-flt13-b");
    let json = dir.0.join("agent.json");
    let port = PORT.to_string();
    let args = ["run", "-i", "vpnq*", "--metrics", &port, "--json", json.to_str().unwrap()];
    let mut agent = agent(&a, &args, &dir.0);
    for k in 0..63 {
        let name = format!("vpnq{k}");
        a.ip(&["tuntap", "add", "dev", &name, "mode", "tun"]).unwrap();
        let said = format!("pathwatch: {name} appeared: watching it");
        assert!(wait_for(Duration::from_secs(3), || agent.stderr().contains(&said)), "no {said:?}:\n{}", agent.logs());
    }
    let mut sent = 0;
    for (k, n) in [(63usize, 3usize), (64, 4)] {
        let (name, peer) = (format!("vpnq{k}"), format!("f13p{k}"));
        veth(&a, &name, &b, &peer).unwrap();
        let said = format!("pathwatch: {name} appeared: watching it");
        assert!(wait_for(Duration::from_secs(3), || agent.stderr().contains(&said)), "no {said:?}:\n{}", agent.logs());
        let frames: Vec<Vec<u8>> = (0..n)
            .map(|i| {
                let query = dns_query(i as u16, "shared.test");
                pathwatch_tests::udp4([198, 18, 73, 2], [198, 18, 73, 1], 40000 + k as u16, 53, &query)
            })
            .collect();
        assert_eq!(in_netns(b.name(), move || send_frames(&peer, FLOOD_DST_MAC, &frames, Duration::from_secs(5))), n);
        sent += n as u64;
    }
    let ns = a.name().to_string();
    let scrape = || get_in(&ns, SocketAddr::from((Ipv4Addr::LOCALHOST, PORT)), "/metrics").unwrap().1;
    let shared_dns = |text: &str| {
        metric(text, "pathwatch_packets_total", &[("iface", "(shared)"), ("direction", "ingress"), ("class", "dns")])
    };
    assert!(wait_for(Duration::from_secs(3), || shared_dns(&scrape()) == sent), "{}", scrape());
    let text = scrape();
    for name in ["vpnq63", "vpnq64"] {
        assert!(!text.contains(&format!("iface=\"{name}\"")), "{name} has series of its own, holding shared counts");
    }
    assert_eq!(agent.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", agent.logs());
    let s = summary_of(&std::fs::read_to_string(&json).unwrap());
    let interfaces = s["interfaces"].as_object().unwrap();
    assert_eq!(interfaces.len(), 64, "63 with slots of their own, and the shared entry");
    assert_eq!(u(&s["interfaces"]["(shared)"]["ingress"]["packets"]["dns"]), sent);
    let per_iface: u64 = interfaces.values().map(|i| u(&i["ingress"]["packets"]["dns"])).sum();
    assert_eq!(per_iface, sent, "a sum over the interfaces counts each packet once");
    assert_eq!(u(&s["classes"]["dns"]), sent);
}
