//! The drop program live, in namespaces of its own (198.18.0.0/15 only): what it counts
//! per (reason, class) equals what the kernel's other books say — the counters of the
//! nftables rules that dropped the packets (output, forward and input hooks), the
//! kernel's own SNMP counters (`nstat`: `IpFragFails` for too-big packets, on a
//! narrower link and on a route MTU, `UdpNoPorts`) — and a drop flood is counted in
//! full while the events it raises stay bounded.
//!
//! Topology (each test has its own names):
//!   client 198.18.21.2 ──c0/g0── gateway ──g1/s0 (MTU 1400)── server 198.18.22.2

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use pathwatch::lab::netns::{NetNs, veth};
use pathwatch_tests::{
    TempDir, json_lines,
    netns::{in_netns, udp_send},
    privileged,
    proc::{Proc, agent},
};
use serde_json::Value;

struct Net {
    client: NetNs,
    gw: NetNs,
    _server: NetNs,
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 2);
const GW_IN: Ipv4Addr = Ipv4Addr::new(198, 18, 21, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(198, 18, 22, 2);

fn topology(tag: &str) -> Net {
    let client = NetNs::new(&format!("pwd-{tag}-c")).unwrap();
    let gw = NetNs::new(&format!("pwd-{tag}-g")).unwrap();
    let server = NetNs::new(&format!("pwd-{tag}-s")).unwrap();
    veth(&client, "c0", &gw, "g0").unwrap();
    veth(&gw, "g1", &server, "s0").unwrap();
    client.ip(&["addr", "add", "198.18.21.2/24", "dev", "c0"]).unwrap();
    gw.ip(&["addr", "add", "198.18.21.1/24", "dev", "g0"]).unwrap();
    gw.ip(&["addr", "add", "198.18.22.1/24", "dev", "g1"]).unwrap();
    server.ip(&["addr", "add", "198.18.22.2/24", "dev", "s0"]).unwrap();
    gw.ip(&["link", "set", "g1", "mtu", "1400"]).unwrap();
    server.ip(&["link", "set", "s0", "mtu", "1400"]).unwrap();
    client.ip(&["route", "add", "default", "via", "198.18.21.1"]).unwrap();
    server.ip(&["route", "add", "default", "via", "198.18.22.1"]).unwrap();
    gw.sysctl("net.ipv4.ip_forward", "1").unwrap();
    // Every ICMP error the gateway owes is sent (the kernel rate-limits them per peer
    // otherwise), so the output hook's counter and the drop program see each.
    gw.sysctl("net.ipv4.icmp_ratelimit", "0").unwrap();
    gw.sysctl("net.ipv4.icmp_msgs_per_sec", "100000").unwrap();
    Net { client, gw, _server: server }
}

/// Loads `ruleset` into `ns`'s nftables.
fn nft(ns: &NetNs, ruleset: &str) {
    let out = ns.exec_with_input("nft", &["-f", "-"], ruleset.as_bytes()).unwrap();
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
}

/// Packets counted by each named counter of `ns`'s ruleset (`nft -j list counters`).
fn nft_counters(ns: &NetNs) -> BTreeMap<String, u64> {
    let out = ns.exec("nft", &["-j", "list", "counters"]).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut m = BTreeMap::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("counter") {
            m.insert(c["name"].as_str().unwrap().to_string(), c["packets"].as_u64().unwrap());
        }
    }
    m
}

/// One kernel SNMP counter of `ns` (`nstat -az NAME`).
fn nstat(ns: &NetNs, name: &str) -> u64 {
    let out = ns.exec("nstat", &["-az", "--json", name]).unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["kernel"][name].as_u64().unwrap_or(0)
}

/// The agent's summary drops as (reason, class) → count, and the whole `drops` object.
fn agent_drops(agent: &mut Proc) -> (BTreeMap<(String, String), u64>, Value) {
    assert_eq!(agent.stop(libc::SIGINT, Duration::from_secs(20)), Some(0), "{}", agent.logs());
    let lines = json_lines(&agent.stdout());
    let summary = lines.iter().rev().find(|l| l["type"] == "summary").expect("a summary line").clone();
    let drops = summary["drops"].clone();
    assert_eq!(drops["watching"], true, "the drop program is attached: {}", agent.logs());
    let mut m = BTreeMap::new();
    for r in drops["by_reason_class"].as_array().unwrap() {
        m.insert(
            (r["reason"].as_str().unwrap().to_string(), r["class"].as_str().unwrap().to_string()),
            r["count"].as_u64().unwrap(),
        );
    }
    (m, drops)
}

fn get(m: &BTreeMap<(String, String), u64>, reason: &str, class: &str) -> u64 {
    m.get(&(reason.to_string(), class.to_string())).copied().unwrap_or(0)
}

fn dns_query(id: u16) -> Vec<u8> {
    pathwatch_tests::dns_query(id, "drop.example")
}

/// A DTLS 1.2 record holding the start of a ClientHello (what the walk classes DTLS).
fn dtls_client_hello(seq: u8) -> Vec<u8> {
    let body_len = 12u16 + 2 + 32;
    let mut r = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, seq];
    r.extend_from_slice(&body_len.to_be_bytes());
    r.extend_from_slice(&[1, 0, 0, 34, 0, 0, 0, 0, 0, 0, 0, 34]);
    r.extend_from_slice(&[0xfe, 0xfd]);
    r.extend_from_slice(&[seq; 32]);
    r
}

#[test]
fn netfilter_drops_in_each_hook_count_as_nft_counts_them() {
    if !privileged("netfilter_drops_in_each_hook_count_as_nft_counts_them") {
        return;
    }
    let net = topology("nf");
    nft(
        &net.gw,
        "table inet pwd {\n\
           counter in_dns {}\n counter fwd_dtls {}\n counter fwd_vpn {}\n counter out_icmp {}\n\
           chain input { type filter hook input priority 0; udp dport 53 counter name in_dns drop; }\n\
           chain forward { type filter hook forward priority 0; udp dport 4433 counter name fwd_dtls drop; \
             udp dport 8443 counter name fwd_vpn drop; }\n\
           chain output { type filter hook output priority 0; icmp type destination-unreachable counter name out_icmp drop; }\n\
         }\n",
    );
    let dir = TempDir::new("drops-nf");
    let cfg = dir.0.join("pathwatch.toml");
    std::fs::write(&cfg, "[dtls]\nvpn_ports = [8443]\n").unwrap();
    let no_ports_before = nstat(&net.gw, "UdpNoPorts");
    let mut a =
        agent(&net.gw, &["run", "-i", "g0", "-i", "g1", "--json", "-", "--config", cfg.to_str().unwrap()], &dir.0);
    let gap = Duration::from_millis(2);
    let c = net.client.name().to_string();
    // input: DNS queries to the gateway itself.
    udp_send(&c, CLIENT, SocketAddr::from((GW_IN, 53)), (0..17).map(dns_query).collect(), None, gap);
    // forward: DTLS ClientHellos to the server.
    udp_send(&c, CLIENT, SocketAddr::from((SERVER, 4433)), (0..23).map(dtls_client_hello).collect(), None, gap);
    // forward, a VPN port of the config: datagrams of no other class.
    udp_send(&c, CLIENT, SocketAddr::from((SERVER, 8443)), vec![b"vpn".to_vec(); 5], None, gap);
    // output: datagrams to a closed port of the gateway: each dropped for want of a
    // socket (NO_SOCKET), and the port unreachable the gateway sends back dropped by
    // its output hook.
    udp_send(&c, CLIENT, SocketAddr::from((GW_IN, 9)), vec![b"x".to_vec(); 11], None, gap);
    std::thread::sleep(Duration::from_millis(300));
    let (drops, _) = agent_drops(&mut a);
    let nft = nft_counters(&net.gw);
    let no_ports = nstat(&net.gw, "UdpNoPorts") - no_ports_before;
    eprintln!("agent {drops:?}\nnft {nft:?}\nUdpNoPorts {no_ports}");
    assert_eq!(
        (nft["in_dns"], nft["fwd_dtls"], nft["fwd_vpn"], nft["out_icmp"]),
        (17, 23, 5, 11),
        "every packet was sent and dropped"
    );
    assert_eq!(get(&drops, "NETFILTER_DROP", "vpn_port"), nft["fwd_vpn"], "forward hook, VPN port");
    assert_eq!(get(&drops, "NETFILTER_DROP", "dns"), nft["in_dns"], "input hook");
    assert_eq!(get(&drops, "NETFILTER_DROP", "dtls"), nft["fwd_dtls"], "forward hook");
    assert_eq!(get(&drops, "NETFILTER_DROP", "icmp_error"), nft["out_icmp"], "output hook");
    assert_eq!(get(&drops, "NO_SOCKET", "other"), no_ports, "UdpNoPorts");
}

/// Sends `count` UDP datagrams of `size` bytes (IP) with DF set whatever the path MTU
/// (IP_PMTUDISC_PROBE), from `from` in `ns` to `to`.
fn send_df(ns: &str, from: Ipv4Addr, to: SocketAddrV4, size: usize, count: usize) {
    in_netns(ns, move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(from, 0)).unwrap();
        let probe: libc::c_int = libc::IP_PMTUDISC_PROBE;
        // SAFETY: setsockopt on a socket we own with an int option value.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&probe as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0);
        let payload = vec![0x5a; size - 28];
        for _ in 0..count {
            sock.send_to(&payload, to).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    });
}

#[test]
fn too_big_df_packets_count_as_the_kernel_counts_them() {
    if !privileged("too_big_df_packets_count_as_the_kernel_counts_them") {
        return;
    }
    let net = topology("big");
    let dir = TempDir::new("drops-big");
    let fails_before = nstat(&net.gw, "IpFragFails");
    let mut a = agent(&net.gw, &["run", "-i", "g0", "-i", "g1", "--json", "-"], &dir.0);
    let c = net.client.name().to_string();
    // A link narrower than the packets: g1 has MTU 1400.
    send_df(&c, CLIENT, SocketAddrV4::new(SERVER, 7000), 1450, 13);
    // A route MTU below the link's: 1300 on the route to one more address.
    net.gw.ip(&["route", "add", "198.18.22.9/32", "dev", "g1", "mtu", "lock", "1300"]).unwrap();
    send_df(&c, CLIENT, SocketAddrV4::new(Ipv4Addr::new(198, 18, 22, 9), 7000), 1350, 7);
    std::thread::sleep(Duration::from_millis(300));
    let (drops, _) = agent_drops(&mut a);
    let fails = nstat(&net.gw, "IpFragFails") - fails_before;
    eprintln!("agent {drops:?}\nIpFragFails {fails}");
    assert_eq!(fails, 20, "the gateway refused every too-big DF packet");
    assert_eq!(get(&drops, "PKT_TOO_BIG", "large_df"), fails);
}

/// Resident memory of a process (`VmRSS`), in KiB.
fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User and system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

#[test]
fn a_drop_flood_is_counted_in_full_and_its_events_stay_bounded() {
    if !privileged("a_drop_flood_is_counted_in_full_and_its_events_stay_bounded") {
        return;
    }
    let net = topology("flood");
    nft(
        &net.gw,
        "table inet pwd {\n counter flood {}\n\
           chain input { type filter hook input priority 0; udp dport 53 counter name flood drop; }\n}\n",
    );
    let dir = TempDir::new("drops-flood");
    let mut a = agent(&net.gw, &["run", "-i", "g0", "--json", "-"], &dir.0);
    let pid = a.pid();
    let ticks_before = cpu_ticks(pid);
    let rss_before = vm_rss_kib(pid);
    // 100 k dropped packets a second for 5 s, paced per millisecond.
    const RATE: u64 = 100_000;
    const SECS: u64 = 5;
    let sent = in_netns(net.client.name(), move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(CLIENT, 0)).unwrap();
        let q = pathwatch_tests::dns_query(7, "flood.example");
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < Duration::from_secs(SECS) {
            let due = (start.elapsed().as_micros() as u64 * RATE / 1_000_000).min(RATE * SECS);
            while sent < due {
                if sock.send_to(&q, (GW_IN, 53)).is_ok() {
                    sent += 1;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        sent
    });
    std::thread::sleep(Duration::from_millis(300));
    let ticks = cpu_ticks(pid) - ticks_before;
    let rss = vm_rss_kib(pid);
    let (drops, obj) = agent_drops(&mut a);
    let nft = nft_counters(&net.gw)["flood"];
    let counted = get(&drops, "NETFILTER_DROP", "dns");
    let (events, suppressed, ring_full) =
        (obj["events"].as_u64().unwrap(), obj["suppressed"].as_u64().unwrap(), obj["ring_full"].as_u64().unwrap());
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    eprintln!(
        "sent {sent}, nft {nft}, agent {counted}; drop events {events}, suppressed {suppressed}, ring full \
         {ring_full}; agent CPU {:.2} s over {SECS} s, RSS {} MiB before, {} MiB after",
        ticks as f64 / hz as f64,
        rss_before / 1024,
        rss / 1024
    );
    assert!(nft as f64 >= 0.8 * (RATE * SECS) as f64, "the flood ran: {nft} of {} dropped", RATE * SECS);
    assert_eq!(counted, nft, "no drop lost to the counters");
    let evented: u64 =
        drops.iter().filter(|((_, class), _)| class != "other" && class != "tcp_syn").map(|(_, n)| n).sum();
    assert_eq!(events + suppressed + ring_full, evented, "every drop either raised an event or was counted as not");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let bound = agent_common::drop::DROP_EVENTS_PER_PERIOD as u64
        * (SECS * 1_000_000_000 / agent_common::drop::DROP_EVENT_PERIOD_NS + 2)
        * cpus;
    assert!(events <= bound, "drop events bounded by the rate limit: {events} > {bound}");
    assert!(ticks < SECS * hz / 2, "the agent used under half a CPU: {ticks} ticks");
    assert!(rss < rss_before + 8 * 1024, "RSS grew under the flood: {rss_before} -> {rss} KiB");
}

#[test]
fn with_drops_turned_off_the_agent_says_it_does_not_watch_them() {
    if !privileged("with_drops_turned_off_the_agent_says_it_does_not_watch_them") {
        return;
    }
    let net = topology("off");
    let dir = TempDir::new("drops-off");
    let cfg = dir.0.join("pathwatch.toml");
    std::fs::write(&cfg, "[kernel]\ndrops = false\n").unwrap();
    let mut a = agent(&net.gw, &["run", "-i", "g0", "--json", "-", "--config", cfg.to_str().unwrap()], &dir.0);
    udp_send(net.client.name(), CLIENT, SocketAddr::from((GW_IN, 9)), vec![b"x".to_vec(); 3], None, Duration::ZERO);
    assert_eq!(a.stop(libc::SIGINT, Duration::from_secs(20)), Some(0), "{}", a.logs());
    let lines = json_lines(&a.stdout());
    let summary = lines.iter().rev().find(|l| l["type"] == "summary").expect("a summary line");
    assert_eq!(summary["drops"], serde_json::json!({"watching": false}));
    assert!(!a.stderr().contains("counting this host's own drops"), "{}", a.logs());
}
