//! Least privilege as the systemd unit grants it: user nobody with CAP_BPF,
//! CAP_NET_ADMIN and CAP_PERFMON is enough, and less is refused by name.

use std::{net::SocketAddr, time::Duration};

use pathwatch_tests::{TempDir, bin, dns_query, json_lines, netns::udp_send, privileged, proc::Proc, procfs::links_of};

use super::{agent, pair};

/// setpriv as the systemd unit runs the agent: user and group nobody (65534), no
/// supplementary groups, no_new_privs, and CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON as
/// the only capabilities (ambient, so they survive the exec; the bounding set holds
/// nothing else).
const SETPRIV_CAPS: &[&str] = &[
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--no-new-privs",
    "--inh-caps=-all,+bpf,+net_admin,+perfmon",
    "--ambient-caps=-all,+bpf,+net_admin,+perfmon",
    "--bounding-set=-all,+bpf,+net_admin,+perfmon",
];

#[test]
fn runs_unprivileged_with_three_capabilities() {
    if !privileged("runs_unprivileged_with_three_capabilities") {
        return;
    }
    let dir = TempDir::new("ops3");
    // A copy user nobody can reach, whatever the permissions on the way to target/.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    let program = dir.0.join("pathwatch");
    std::fs::copy(bin(), &program).unwrap();
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
    let net = pair(3);
    let args = ["run", "-i", net.a_if.as_str(), "--json", "-"];

    let mut a = agent(&net.a, SETPRIV_CAPS, &program, &args, &dir.0);
    let status = std::fs::read_to_string(format!("/proc/{}/status", a.pid())).unwrap();
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap_or("").trim().to_string();
    assert_eq!(field("Uid:"), "65534\t65534\t65534\t65534", "runs as nobody");
    let allowed: u64 = (1 << 39) | (1 << 12) | (1 << 38);
    let eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    assert_eq!(eff & !allowed, 0, "no capability beyond CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON: CapEff {eff:x}");
    let links = links_of(a.pid());
    assert!(
        links.iter().any(|l| l.link_type() == Some("xdp")) && links.iter().any(|l| l.link_type() == Some("tcx")),
        "{links:?}"
    );

    // Three DNS queries (nobody answers: ICMP port unreachable goes back) and two
    // other datagrams.
    let to = |port| SocketAddr::from((net.a_ip, port));
    let queries: Vec<Vec<u8>> = (0..3).map(|i| dns_query(0x300 + i, "caps.test")).collect();
    udp_send(net.b.name(), net.b_ip, to(53), queries, None, Duration::from_millis(20));
    udp_send(net.b.name(), net.b_ip, to(9), vec![b"x".to_vec(); 2], None, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
    let lines = json_lines(&a.stdout());
    let summary = lines.last().expect("a summary line");
    assert_eq!(summary["type"], "summary", "{}", a.logs());
    let i = &summary["interfaces"][&net.a_if];
    eprintln!("unprivileged agent counted on {}: {i}", net.a_if);
    assert_eq!(i["ingress"]["packets"]["dns"].as_u64(), Some(3), "DNS queries in");
    assert!(i["ingress"]["packets"]["other"].as_u64().unwrap() >= 2, "the other datagrams");
    assert_eq!(summary["events"]["dns_query"].as_u64(), Some(3));
    assert!(summary["events"]["icmp_port_unreachable"].as_u64().unwrap() >= 1, "the port unreachables going back");

    // The same user without capabilities, and without CAP_NET_ADMIN alone.
    let cases: [(&[&str], &[&str]); 2] = [
        (
            &["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"],
            &["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"],
        ),
        (
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all,+bpf,+perfmon",
                "--ambient-caps=-all,+bpf,+perfmon",
                "--bounding-set=-all,+bpf,+perfmon",
            ],
            &["CAP_NET_ADMIN"],
        ),
    ];
    for (k, (wrapper, missing)) in cases.iter().enumerate() {
        let mut p = Proc::spawn(&net.a, wrapper, &program, &args, &dir.0, &format!("nocaps{k}"));
        let code = p.wait(Duration::from_secs(20));
        let err = p.stderr();
        assert_eq!(code, Some(2), "{wrapper:?}: exit code\n{}", p.logs());
        for m in *missing {
            assert!(err.contains(m), "{wrapper:?}: stderr does not name {m}:\n{err}");
        }
        assert!(p.stdout().trim().is_empty(), "nothing on stdout when it cannot start: {}", p.stdout());
        eprintln!("{wrapper:?}: {}", err.trim());
    }
    // Nothing stayed attached.
    let shown = net.a.exec("ip", &["-d", "link", "show", "dev", &net.a_if]).unwrap();
    assert!(!String::from_utf8_lossy(&shown.stdout).contains("xdp"), "XDP left attached");
}
