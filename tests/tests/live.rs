//! The agent live in namespaces of its own (198.18.0.0/15 only): what it counts equals
//! what tcpdump captured on the same interface over the same interval, and a
//! `kill -9` leaves nothing attached.
//!
//! Topology (each test has its own names):
//!   client 198.18.11.2 ──c0/g0── gateway ──g1/s0 (MTU 1400)── server 198.18.12.2
//! The server runs dnsmasq and `openssl s_server -dtls1_2`; the agent and tcpdump
//! watch the gateway's client-side interface g0.

use std::{path::Path, process::Command, time::Duration};

use pathwatch::lab::netns::{Daemon, NetNs, veth, wait_for};
use pathwatch_tests::{TempDir, bin, json_lines, netns::ifindex_in, privileged};

struct Net {
    client: NetNs,
    gw: NetNs,
    server: NetNs,
}

fn topology(tag: &str) -> Net {
    let client = NetNs::new(&format!("pwt-{tag}-c")).unwrap();
    let gw = NetNs::new(&format!("pwt-{tag}-g")).unwrap();
    let server = NetNs::new(&format!("pwt-{tag}-s")).unwrap();
    veth(&client, "c0", &gw, "g0").unwrap();
    veth(&gw, "g1", &server, "s0").unwrap();
    client.ip(&["addr", "add", "198.18.11.2/24", "dev", "c0"]).unwrap();
    gw.ip(&["addr", "add", "198.18.11.1/24", "dev", "g0"]).unwrap();
    gw.ip(&["addr", "add", "198.18.12.1/24", "dev", "g1"]).unwrap();
    server.ip(&["addr", "add", "198.18.12.2/24", "dev", "s0"]).unwrap();
    gw.ip(&["link", "set", "g1", "mtu", "1400"]).unwrap();
    server.ip(&["link", "set", "s0", "mtu", "1400"]).unwrap();
    client.ip(&["route", "add", "default", "via", "198.18.11.1"]).unwrap();
    server.ip(&["route", "add", "default", "via", "198.18.12.1"]).unwrap();
    gw.sysctl("net.ipv4.ip_forward", "1").unwrap();
    Net { client, gw, server }
}

/// Starts `program args` (the agent, or a shell that execs it and writes `log`) in
/// `ns`; returns once the agent says it is watching.
fn agent(ns: &NetNs, program: &str, args: &[&str], log: &Path) -> Daemon {
    let own_log = program != "sh";
    let mut a = ns.spawn("pathwatch", program, args, own_log.then_some(log)).unwrap();
    let ready =
        wait_for(Duration::from_secs(10), || std::fs::read_to_string(log).unwrap_or_default().contains("watching"));
    assert!(ready && a.running(), "agent did not start:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    a
}

fn tshark_count(pcap: &Path, filter: &str) -> u64 {
    let out = Command::new("tshark")
        .args(["-r", pcap.to_str().unwrap(), "-Y", filter, "-T", "fields", "-e", "frame.number"])
        .output()
        .unwrap();
    assert!(out.status.success(), "tshark: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).count() as u64
}

fn self_signed(dir: &Path) -> (String, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=pathwatch-test",
        ])
        .args(["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn live_counts_equal_tcpdump_on_the_same_interface() {
    if !privileged("live_counts_equal_tcpdump_on_the_same_interface") {
        return;
    }
    let dir = TempDir::new("live-counts");
    let net = topology("cnt");
    let (cert, key) = self_signed(&dir.0);
    let _dns = net
        .server
        .spawn(
            "dnsmasq",
            "dnsmasq",
            &[
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address=198.18.12.2",
                "--address=/ok.test/198.18.12.9",
                "--user=root",
                "--pid-file=",
            ],
            Some(&dir.0.join("dnsmasq.log")),
        )
        .unwrap();
    let _dtls = net
        .server
        .spawn(
            "openssl s_server",
            "openssl",
            &["s_server", "-dtls1_2", "-accept", "4433", "-cert", &cert, "-key", &key, "-quiet"],
            Some(&dir.0.join("s_server.log")),
        )
        .unwrap();
    let pcap = dir.0.join("g0.pcap");
    let tcpdump_log = dir.0.join("tcpdump.log");
    let mut tcpdump = net
        .gw
        .spawn(
            "tcpdump",
            "tcpdump",
            &["-i", "g0", "--immediate-mode", "-U", "-n", "-w", pcap.to_str().unwrap()],
            Some(&tcpdump_log),
        )
        .unwrap();
    assert!(wait_for(Duration::from_secs(10), || std::fs::read_to_string(&tcpdump_log)
        .unwrap_or_default()
        .contains("listening on")));
    // `run --json -`, as the acceptance asks: the JSON lines on standard output, the
    // human lines on standard error, each to its own file (`exec` keeps the agent's pid).
    let json = dir.0.join("agent.json");
    let log = dir.0.join("agent.log");
    let bin = bin();
    let script = format!("exec '{}' run -i g0 --json - > '{}' 2> '{}'", bin.display(), json.display(), log.display());
    let mut agent = agent(&net.gw, "sh", &["-c", &script], &log);

    for i in 0..5 {
        let name = if i % 2 == 0 { "ok.test" } else { "nope.test" };
        let _ = net.client.exec("dig", &["+tries=1", "+time=2", "@198.18.12.2", name]);
    }
    for _ in 0..2 {
        let _ = net
            .client
            .cmd("timeout")
            .args(["5", "openssl", "s_client", "-dtls1_2", "-connect", "198.18.12.2:4433"])
            .stdin(std::process::Stdio::null())
            .output();
    }
    let _ = net.client.exec("ping", &["-M", "do", "-s", "1472", "-c", "3", "-i", "0.3", "-W", "1", "198.18.12.2"]);
    std::thread::sleep(Duration::from_secs(1));

    assert_eq!(
        agent.stop(libc::SIGTERM, Duration::from_secs(10)),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    tcpdump.stop(libc::SIGINT, Duration::from_secs(5));

    let lines = json_lines(&std::fs::read_to_string(&json).unwrap());
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let g0 = &summary["interfaces"]["g0"];
    let both = |class: &str| {
        g0["ingress"]["packets"][class].as_u64().unwrap() + g0["egress"]["packets"][class].as_u64().unwrap()
    };
    let dns = tshark_count(&pcap, "udp.port == 53");
    let dtls = tshark_count(&pcap, "dtls && !icmp");
    let client_hellos = tshark_count(&pcap, "dtls.handshake.type == 1 && !icmp");
    let server_hellos = tshark_count(&pcap, "dtls.handshake.type == 2 && !icmp");
    let frag_needed = tshark_count(&pcap, "icmp.type == 3 && icmp.code == 4");
    eprintln!(
        "tcpdump: dns {dns}, dtls {dtls} (client hellos {client_hellos}, server hellos {server_hellos}), \
         frag-needed {frag_needed}; agent: {g0}, events {}",
        summary["events"]
    );
    assert!(
        dns >= 10 && dtls >= 4 && frag_needed >= 1,
        "the traffic did not happen: dns {dns} dtls {dtls} frag {frag_needed}"
    );
    assert_eq!(both("dns"), dns, "DNS packets");
    assert_eq!(both("dtls"), dtls, "DTLS datagrams");
    assert!(client_hellos >= 2 && server_hellos >= 2, "the DTLS handshakes did not happen");
    assert_eq!(summary["events"]["dtls_record"].as_u64().unwrap(), dtls, "DTLS records (packets carrying them)");
    assert_eq!(summary["events"]["dtls_client_hello"].as_u64().unwrap(), client_hellos, "DTLS ClientHellos");
    assert_eq!(summary["events"]["dtls_server_hello"].as_u64().unwrap(), server_hellos, "DTLS ServerHellos");
    assert_eq!(summary["events"]["icmp_frag_needed"].as_u64().unwrap(), frag_needed, "ICMP frag-needed");
    assert_eq!(
        summary["events"]["dns_query"].as_u64().unwrap() + summary["events"]["dns_response"].as_u64().unwrap(),
        dns
    );
    assert_eq!(summary["events"]["events_lost"], 0);
}

/// bpf links (`link_type`, `ifindex`) that any process holds on an interface with
/// index `ifindex`, from /proc/*/fdinfo: a link exists exactly as long as one does.
fn links_on(ifindex: u32) -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else { continue };
        for fd in fds.flatten() {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
            if let (Some(t), Some(i)) = (field("link_type:"), field("ifindex:"))
                && i == ifindex.to_string()
            {
                out.push(format!("{t} (pid {})", p.file_name().to_string_lossy()));
            }
        }
    }
    out
}

/// What `ip link` and `tc filter` show of programs on `iface`. Neither shows tcx
/// links (nor does Debian 12's bpftool), so the tests also ask the kernel which
/// processes hold links on the interface ([`links_on`]).
fn shown_attached(ns: &NetNs, iface: &str) -> Vec<String> {
    let mut found = Vec::new();
    let link = ns
        .exec("ip", &["-d", "link", "show", "dev", iface])
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if link.contains("xdp") {
        found.push(format!("ip link: {link}"));
    }
    for dir in ["ingress", "egress"] {
        let tc = ns
            .exec("tc", &["filter", "show", "dev", iface, dir])
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if !tc.trim().is_empty() {
            found.push(format!("tc filter {dir}: {tc}"));
        }
    }
    found
}

#[test]
fn kill_9_leaves_nothing_attached_and_a_new_agent_starts_at_once() {
    if !privileged("kill_9_leaves_nothing_attached_and_a_new_agent_starts_at_once") {
        return;
    }
    let dir = TempDir::new("kill9");
    let a = NetNs::new("pwt-k9-a").unwrap();
    let b = NetNs::new("pwt-k9-b").unwrap();
    veth(&a, "k0", &b, "k1").unwrap();
    let bin = bin();
    let bin = bin.to_str().unwrap();
    let first = agent(&a, bin, &["run", "-i", "k0"], &dir.0.join("first.log"));
    let k0 = ifindex_in(&a, "k0");
    let pid = first.pid();
    let held = links_on(k0);
    let shown = shown_attached(&a, "k0");
    assert!(shown.iter().any(|l| l.starts_with("ip link")), "XDP shows in ip link while running: {shown:?}");
    assert!(
        held.iter().any(|l| l.starts_with("xdp")) && held.iter().any(|l| l.starts_with("tcx")),
        "xdp and tcx links while running: {held:?}"
    );
    first.signal(libc::SIGKILL);
    drop(first);
    assert!(
        wait_for(Duration::from_secs(5), || shown_attached(&a, "k0").is_empty()
            && !links_on(k0).iter().any(|l| l.contains(&format!("pid {pid}")))),
        "still attached after kill -9: {:?} {:?}",
        shown_attached(&a, "k0"),
        links_on(k0)
    );
    let mut second = agent(&a, bin, &["run", "-i", "k0"], &dir.0.join("second.log"));
    assert_eq!(second.stop(libc::SIGTERM, Duration::from_secs(10)), Some(0));
    assert!(shown_attached(&a, "k0").is_empty(), "detached after SIGTERM");
}
