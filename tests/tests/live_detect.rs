//! Live detection acceptance: real traffic through a gateway namespace, the agent
//! (`pathwatch run`) attached to both gateway interfaces, findings read from its JSON
//! lines. Each test builds its own client/gateway/server namespaces (`pwt-<tag>-`)
//! with the lab's helpers, and every guard (agent, daemons, namespaces, files) is
//! dropped on panic too.

use std::{
    path::PathBuf,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime},
};

use pathwatch::lab::{
    AGENT_CONFIG,
    agent::{Agent, AgentReport},
    netns::netns_with_prefix,
    nft,
    pki::Pki,
    resolver::Resolver,
    topology::{CLIENT_V4, GW_CLIENT_V4, SERVER_V4, Topology},
    traffic,
    workdir::WorkDir,
};
use pathwatch_tests::{bin, lab_tools, privileged, rfc3339_secs};
use serde_json::Value;

/// One live test at a time, whatever the test threads: the periodic DNS check has a
/// 100 ms tolerance, and five labs at once on two cores would eat it.
static SERIAL: Mutex<()> = Mutex::new(());

/// One test's lab: files, namespaces (declared in drop order: agent first, the
/// serializing guard last).
struct Live {
    agent: Option<Agent>,
    topo: Topology,
    dir: WorkDir,
    prefix: String,
    _serial: MutexGuard<'static, ()>,
}

impl Live {
    fn new(tag: &str) -> Live {
        Live::with_config(tag, AGENT_CONFIG)
    }

    /// A lab whose agent runs with `config` (TOML) instead of the lab's.
    fn with_config(tag: &str, config: &str) -> Live {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        lab_tools();
        let dir = WorkDir::at(&std::env::temp_dir().join(format!("pathwatch-live-{tag}-{}", std::process::id())))
            .expect("work dir");
        std::fs::write(dir.path().join("agent.toml"), config).expect("agent config");
        let prefix = format!("pwt-{tag}-");
        let topo = Topology::build(&prefix).expect("topology");
        Live { agent: None, topo, dir, prefix, _serial: serial }
    }

    /// Tears the lab down and checks that nothing of it is left.
    fn finish(self) {
        let Live { agent, topo, dir, prefix, _serial } = self;
        let path = dir.path().to_path_buf();
        drop(agent);
        drop(topo);
        drop(dir);
        assert!(netns_with_prefix(&prefix).is_empty(), "namespaces left: {:?}", netns_with_prefix(&prefix));
        assert!(!path.exists(), "{} left", path.display());
    }

    fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    fn start_agent(&mut self) {
        let config = self.dir.path().join("agent.toml");
        let ifs = self.topo.gw_interfaces();
        self.agent = Some(Agent::start(&self.topo.gw, &bin(), &ifs, Some(&config), self.dir.path()).expect("agent"));
    }

    fn stop_agent(&mut self) -> AgentReport {
        let r = self.agent.take().expect("agent running").stop();
        assert_eq!(r.exit, Some(0), "agent exit: {}", r.log);
        assert!(r.summary.is_some(), "no summary line: {}", r.log);
        r
    }
}

fn secs_since_epoch(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).expect("clock").as_secs_f64()
}

#[test]
fn servfail_every_second_is_a_periodic_dns_probe_storm_within_ten_seconds() {
    if !privileged("servfail_every_second_is_a_periodic_dns_probe_storm_within_ten_seconds") {
        return;
    }
    let mut live = Live::new("dns");
    let resolver = Resolver::start(&live.topo.server, &live.path(), SERVER_V4).expect("unbound + dnsmasq");
    live.start_agent();
    let (first_wall, first) = (SystemTime::now(), Instant::now());
    let (digs, seen) = std::thread::scope(|s| {
        let client = &live.topo.client;
        let digger = s
            .spawn(move || traffic::dig_every(client, SERVER_V4, "probe.example.com", "A", Duration::from_secs(1), 10));
        let seen = live
            .agent
            .as_mut()
            .expect("agent running")
            .wait_finding(Duration::from_secs(10), |f| {
                f["kind"] == "dns_probe_storm" && f["evidence"]["pattern"] == "periodic"
            })
            .expect("agent running");
        (digger.join().expect("dig thread").expect("dig"), seen)
    });
    assert!(digs.iter().all(|d| d.status == "SERVFAIL"), "{digs:?}");
    let (line, at) = seen.expect("no periodic dns_probe_storm finding within 10 s of the first query");
    let after = at.duration_since(first);
    assert!(after <= Duration::from_secs(10), "finding after {after:?}");
    assert_eq!(line["subject"]["client"], CLIENT_V4);
    assert_eq!(line["subject"]["qname"], "probe.example.com");
    let period = line["evidence"]["period_s"].as_f64().expect("period_s");
    assert!((period - 1.0).abs() <= 0.1, "period_s {period}");
    // The line's own time agrees: first_seen is the first query, on the wall clock.
    let first_seen = rfc3339_secs(line["first_seen"].as_str().expect("first_seen")).expect("RFC 3339");
    let skew = first_seen - secs_since_epoch(first_wall);
    assert!((-0.5..=1.0).contains(&skew), "first_seen {} is {skew:.3} s from the first query", line["first_seen"]);
    let report = live.stop_agent();
    let storm = report.of_kind("dns_probe_storm");
    assert_eq!(storm.len(), 1, "{:#?}", report.findings);
    let e = &storm[0]["evidence"];
    assert_eq!(e["queries"], 10);
    assert_eq!(e["rcodes"]["SERVFAIL"], 10);
    assert_eq!(e["pattern"], "periodic");
    assert!((e["period_s"].as_f64().unwrap_or(0.0) - 1.0).abs() <= 0.1, "{e}");
    drop(resolver);
    live.finish();
}

/// Waits for a finding of `kind` for port `port`, while `openssl s_client` sends
/// DTLS ClientHellos for `hello_for` from the client.
fn dtls_finding(live: &mut Live, port: u16, hello_for: Duration, kind: &str, wait: Duration) -> Option<Value> {
    std::thread::scope(|s| {
        let client = &live.topo.client;
        let hellos = s.spawn(move || traffic::dtls_hellos(client, SERVER_V4, port, hello_for));
        let seen = live
            .agent
            .as_mut()
            .expect("agent running")
            .wait_finding(wait, |f| f["kind"] == kind && f["subject"]["port"] == port)
            .expect("agent running");
        hellos.join().expect("openssl thread").expect("openssl s_client");
        seen.map(|(f, _)| f)
    })
}

#[test]
fn dtls_hellos_dropped_on_the_path_are_dtls_blocked() {
    if !privileged("dtls_hellos_dropped_on_the_path_are_dtls_blocked") {
        return;
    }
    let mut live = Live::new("dtb");
    nft::apply(&live.topo.gw, &nft::drop_udp_forward(4433)).expect("nft");
    live.start_agent();
    let t0 = Instant::now();
    let f = dtls_finding(&mut live, 4433, Duration::from_secs(6), "dtls_blocked", Duration::from_secs(12))
        .expect("no dtls_blocked finding");
    assert!(t0.elapsed() < Duration::from_secs(12));
    assert_eq!(f["subject"]["client"], CLIENT_V4);
    assert_eq!(f["subject"]["server"], SERVER_V4);
    assert_eq!(f["evidence"]["server_records"], 0);
    assert!(f["evidence"]["client_hellos"].as_u64().unwrap_or(0) >= 2, "{f:#}");
    assert!(nft::counters(&live.topo.gw).iter().sum::<u64>() >= 2, "the gateway dropped nothing");
    let report = live.stop_agent();
    assert!(report.of_kind("dtls_port_unreachable").is_empty(), "{:#?}", report.findings);
    assert!(report.event("dtls_client_hello") >= 2);
    live.finish();
}

#[test]
fn dtls_hellos_to_a_closed_port_are_dtls_port_unreachable() {
    if !privileged("dtls_hellos_to_a_closed_port_are_dtls_port_unreachable") {
        return;
    }
    let mut live = Live::new("dtu");
    live.start_agent();
    // Nothing listens on UDP 4434 at the server: its kernel answers ICMP port unreachable.
    let f = dtls_finding(&mut live, 4434, Duration::from_secs(3), "dtls_port_unreachable", Duration::from_secs(8))
        .expect("no dtls_port_unreachable finding");
    assert_eq!(f["subject"]["client"], CLIENT_V4);
    assert_eq!(f["subject"]["server"], SERVER_V4);
    assert_eq!(f["evidence"]["icmp_from"], SERVER_V4);
    assert!(f["evidence"]["icmp_count"].as_u64().unwrap_or(0) >= 1, "{f:#}");
    // Past dtls.timeout_s (3 s in the test config) the flow must not turn "blocked".
    std::thread::sleep(Duration::from_millis(3500));
    let report = live.stop_agent();
    assert!(report.of_kind("dtls_blocked").is_empty(), "{:#?}", report.findings);
    assert!(report.event("icmp_port_unreachable") >= 1);
    live.finish();
}

#[test]
fn dtls_hellos_rejected_by_the_gateway_are_dtls_port_unreachable_from_the_gateway() {
    if !privileged("dtls_hellos_rejected_by_the_gateway_are_dtls_port_unreachable_from_the_gateway") {
        return;
    }
    let mut live = Live::new("dtr");
    // A firewall that rejects: the gateway answers ICMP port unreachable itself, from
    // its own address, and the agent sees that ICMP only at the gateway's TC egress.
    nft::apply(&live.topo.gw, &nft::reject_udp_forward(4433)).expect("nft");
    live.start_agent();
    let f = dtls_finding(&mut live, 4433, Duration::from_secs(3), "dtls_port_unreachable", Duration::from_secs(8))
        .expect("no dtls_port_unreachable finding");
    assert_eq!(f["subject"]["client"], CLIENT_V4);
    assert_eq!(f["subject"]["server"], SERVER_V4);
    assert_eq!(f["evidence"]["icmp_from"], GW_CLIENT_V4, "{f:#}");
    assert!(f["summary"].as_str().unwrap_or("").contains("firewall"), "{f:#}");
    assert!(f["remedy"].as_str().unwrap_or("").contains(&format!("{GW_CLIENT_V4} rejects UDP 4433")), "{f:#}");
    assert!(nft::counters(&live.topo.gw).iter().sum::<u64>() >= 1, "the gateway rejected nothing");
    std::thread::sleep(Duration::from_millis(3500));
    let report = live.stop_agent();
    assert!(report.of_kind("dtls_blocked").is_empty(), "{:#?}", report.findings);
    assert!(report.event("icmp_port_unreachable") >= 1);
    live.finish();
}

const FAR_MTU: u32 = 1400;

fn upload(live: &Live) -> traffic::Transfer {
    live.topo.client.ip(&["route", "flush", "cache"]).expect("flush route cache");
    traffic::bulk_upload(
        &live.topo.client,
        &live.topo.server,
        SERVER_V4,
        5001,
        4_000_000,
        Duration::from_secs(5),
        &live.path(),
    )
    .expect("upload")
}

#[test]
fn a_bulk_upload_whose_frag_needed_is_dropped_is_a_pmtu_black_hole() {
    if !privileged("a_bulk_upload_whose_frag_needed_is_dropped_is_a_pmtu_black_hole") {
        return;
    }
    let mut live = Live::new("pbh");
    live.topo.narrow_far_link(FAR_MTU).expect("mtu");
    nft::apply(&live.topo.gw, &nft::drop_own_frag_needed()).expect("nft");
    live.start_agent();
    let t = upload(&live);
    assert!(!t.completed, "the upload went through: {t:?}");
    let report = live.stop_agent();
    let holes = report.of_kind("pmtu_black_hole");
    assert_eq!(holes.len(), 1, "{:#?}", report.findings);
    let e = &holes[0]["evidence"];
    assert_eq!(holes[0]["subject"]["sender"], CLIENT_V4);
    assert_eq!(holes[0]["subject"]["receiver"], SERVER_V4);
    assert_eq!(e["icmp_seen"], false);
    assert!(e["retransmissions"].as_u64().unwrap_or(0) >= 3, "{e}");
    assert!(e["segment_size"].as_u64().unwrap_or(0) > u64::from(FAR_MTU - 40), "{e}");
    assert!(report.of_kind("pmtu_signal").is_empty(), "{:#?}", report.findings);
    live.finish();
}

#[test]
fn a_bulk_upload_with_frag_needed_allowed_is_a_pmtu_signal_and_completes() {
    if !privileged("a_bulk_upload_with_frag_needed_allowed_is_a_pmtu_signal_and_completes") {
        return;
    }
    let mut live = Live::new("pok");
    live.topo.narrow_far_link(FAR_MTU).expect("mtu");
    live.start_agent();
    let t = upload(&live);
    assert!(t.completed, "the upload stalled: {t:?}");
    let report = live.stop_agent();
    let signals = report.of_kind("pmtu_signal");
    assert_eq!(signals.len(), 1, "{:#?}", report.findings);
    assert_eq!(signals[0]["evidence"]["next_hop_mtu"], FAR_MTU);
    assert_eq!(signals[0]["subject"]["sender"], CLIENT_V4);
    assert!(report.of_kind("pmtu_black_hole").is_empty(), "{:#?}", report.findings);
    assert!(report.event("icmp_frag_needed") >= 1);
    live.finish();
}

/// The lab's agent config with `extra` lines added to its `[dtls]` table and a
/// `[pmtu]` table of `pmtu` lines.
fn lab_config_with(dtls: &str, pmtu: &str) -> String {
    let mut config = AGENT_CONFIG.replacen("[dtls]\n", &format!("[dtls]\n{dtls}"), 1);
    if !pmtu.is_empty() {
        config.push_str(&format!("\n[pmtu]\n{pmtu}"));
    }
    config
}

/// Opens a connection from the client to the server's `port` and sends `bytes`.
fn connect_and_send(live: &Live, port: u16, bytes: u64) -> traffic::Transfer {
    traffic::bulk_upload(
        &live.topo.client,
        &live.topo.server,
        SERVER_V4,
        port,
        bytes,
        Duration::from_secs(3),
        &live.path(),
    )
    .expect("connection")
}

#[test]
fn a_syn_whose_mss_exceeds_the_tunnel_mtu_is_mss_exceeds_path_mtu() {
    if !privileged("a_syn_whose_mss_exceeds_the_tunnel_mtu_is_mss_exceeds_path_mtu") {
        return;
    }
    // The path MTU from the config: a DTLS tunnel of 1418 bytes, as in the field notes.
    let mut live = Live::with_config("mss", &lab_config_with("", "tunnel_mtu = 1418\n"));
    live.start_agent();
    let t = connect_and_send(&live, 5002, 1000);
    assert!(t.completed, "{t:?}");
    let report = live.stop_agent();
    let found = report.of_kind("mss_exceeds_path_mtu");
    assert_eq!(found.len(), 1, "{:#?}", report.findings);
    let f = found[0];
    assert_eq!(f["subject"]["client"], CLIENT_V4);
    assert_eq!(f["subject"]["server"], SERVER_V4);
    // Linux advertises the interface MTU (1500) less 40.
    assert_eq!(f["evidence"]["mss"], 1460, "{f:#}");
    assert_eq!(f["evidence"]["path_mtu"], 1418, "{f:#}");
    assert_eq!(f["evidence"]["path_mtu_source"], "config", "{f:#}");
    assert!(f["remedy"].as_str().unwrap_or("").contains("maxseg size set 1378"), "{f:#}");
    assert!(report.event("tcp_syn") >= 1);
    live.finish();
}

#[test]
fn a_syn_after_frag_needed_that_the_client_never_got_is_mss_exceeds_path_mtu() {
    if !privileged("a_syn_after_frag_needed_that_the_client_never_got_is_mss_exceeds_path_mtu") {
        return;
    }
    let mut live = Live::new("mssi");
    live.topo.narrow_far_link(FAR_MTU).expect("mtu");
    // The gateway sends frag-needed (the agent sees it leave), but the client's own
    // firewall drops it: the client never learns, and keeps advertising MSS 1460.
    nft::apply(
        &live.topo.client,
        "table inet pwlab {\n  chain input_filter {\n    type filter hook input priority 0; policy accept;\n    \
         icmp type destination-unreachable icmp code frag-needed counter drop\n  }\n}\n",
    )
    .expect("nft");
    live.start_agent();
    let first = connect_and_send(&live, 5002, 100_000);
    assert!(!first.completed, "the first upload went through: {first:?}");
    let second = connect_and_send(&live, 5003, 100);
    assert!(second.completed, "a connection that sends no large segment completes: {second:?}");
    assert!(nft::counters(&live.topo.client).iter().sum::<u64>() >= 1, "the client dropped no frag-needed");
    let report = live.stop_agent();
    let found = report.of_kind("mss_exceeds_path_mtu");
    assert_eq!(found.len(), 1, "{:#?}", report.findings);
    let e = &found[0]["evidence"];
    assert_eq!(e["mss"], 1460, "{e}");
    assert_eq!(e["path_mtu"], FAR_MTU, "{e}");
    assert_eq!(e["path_mtu_source"], "icmp", "{e}");
    assert_eq!(report.of_kind("pmtu_signal").len(), 1, "the gateway's ICMP is seen: {:#?}", report.findings);
    assert!(report.event("tcp_syn") >= 2, "two connections, two SYNs");
    live.finish();
}

#[test]
fn a_syn_after_frag_needed_that_reached_the_client_fits_and_is_no_finding() {
    if !privileged("a_syn_after_frag_needed_that_reached_the_client_fits_and_is_no_finding") {
        return;
    }
    let mut live = Live::new("mssok");
    live.topo.narrow_far_link(FAR_MTU).expect("mtu");
    live.start_agent();
    let first = upload(&live);
    assert!(first.completed, "{first:?}");
    // The client learned 1400: its next SYN advertises 1360 and fits.
    let second = connect_and_send(&live, 5003, 100);
    assert!(second.completed, "{second:?}");
    let report = live.stop_agent();
    assert!(report.of_kind("mss_exceeds_path_mtu").is_empty(), "{:#?}", report.findings);
    assert_eq!(report.of_kind("pmtu_signal").len(), 1, "{:#?}", report.findings);
    assert!(report.event("tcp_syn") >= 2, "two connections, two SYNs");
    live.finish();
}

/// Sessions one second apart, scaled down from the field's one a minute: the shortest
/// period and the span a rhythm must last come down with it (5 s for six sessions).
const RHYTHM_CONFIG: &str = "reconnect_min_period_s = 0.5\nreconnect_min_span_s = 4\n";

/// `sessions` real TLS sessions (`openssl s_client` to `openssl s_server` on 443), one
/// a second, from the client through the gateway, under an agent with `dtls` config
/// lines (and nothing else: the lab's own rhythm settings would clash); the agent's
/// report.
fn tls_sessions_every_second(tag: &str, dtls: &str, sessions: u64) -> (Live, AgentReport) {
    let mut live = Live::with_config(tag, &format!("[dtls]\n{dtls}"));
    let pki = Pki::create(&live.path(), SERVER_V4).expect("certificates");
    let (cert, key) = (pki.cert.display().to_string(), pki.key.display().to_string());
    let _server = live
        .topo
        .server
        .spawn(
            "openssl s_server",
            "openssl",
            &["s_server", "-accept", "443", "-cert", &cert, "-key", &key, "-quiet"],
            Some(&live.path().join("s_server.log")),
        )
        .expect("openssl s_server");
    live.start_agent();
    let start = Instant::now();
    for n in 0..sessions {
        let at = Duration::from_secs(n);
        std::thread::sleep(at.saturating_sub(start.elapsed()));
        let out = live
            .topo
            .client
            .cmd("timeout")
            .args(["3", "openssl", "s_client", "-connect", &format!("{SERVER_V4}:443")])
            .stdin(std::process::Stdio::null())
            .output()
            .expect("openssl s_client");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("BEGIN CERTIFICATE") || text.contains("Server certificate"), "no TLS session: {text}");
    }
    std::thread::sleep(Duration::from_millis(500));
    let report = live.stop_agent();
    (live, report)
}

#[test]
fn tls_sessions_at_a_steady_rhythm_to_a_vpn_port_are_a_vpn_reconnect_loop() {
    if !privileged("tls_sessions_at_a_steady_rhythm_to_a_vpn_port_are_a_vpn_reconnect_loop") {
        return;
    }
    // The VPN evidence: port 443 is configured as a VPN port.
    let sessions = 6;
    let (live, report) = tls_sessions_every_second("rcl", &format!("{RHYTHM_CONFIG}vpn_ports = [443]\n"), sessions);
    let found = report.of_kind("vpn_reconnect_loop");
    assert_eq!(found.len(), 1, "{:#?}", report.findings);
    let f = found[0];
    assert_eq!(f["subject"]["client"], CLIENT_V4);
    assert_eq!(f["subject"]["server"], SERVER_V4);
    assert_eq!(f["subject"]["port"], 443);
    assert_eq!(f["evidence"]["sessions"], sessions, "{f:#}");
    assert_eq!(f["evidence"]["vpn_evidence"], "config", "{f:#}");
    let period = f["evidence"]["period_s"].as_f64().unwrap_or(0.0);
    assert!((period - 1.0).abs() <= 0.2, "period_s {period}: {f:#}");
    let span = f["evidence"]["span_s"].as_f64().unwrap_or(0.0);
    assert!((span - 5.0).abs() <= 0.5, "span_s {span}: {f:#}");
    live.finish();
}

#[test]
fn tls_sessions_at_a_steady_rhythm_without_vpn_evidence_are_no_loop() {
    if !privileged("tls_sessions_at_a_steady_rhythm_without_vpn_evidence_are_no_loop") {
        return;
    }
    // The same sessions, and nothing says 443 is a VPN: a poller, not a loop.
    let sessions = 6;
    let (live, report) = tls_sessions_every_second("rcln", RHYTHM_CONFIG, sessions);
    assert!(report.of_kind("vpn_reconnect_loop").is_empty(), "{:#?}", report.findings);
    assert!(report.event("tls_hello") >= 2 * sessions, "the sessions were seen: {:?}", report.summary);
    live.finish();
}
