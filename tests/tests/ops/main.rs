//! Operating the agent ("Operate it"): what an operator relies on once it is deployed.
//!
//! - [`scrape`]: a real Prometheus scrapes `pathwatch run --metrics ADDR:PORT` every
//!   second while known traffic flows; its answers equal what was sent and what the
//!   agent's own summary says, the kernel's own drops (DNS to a closed port, counted
//!   by the drop program) included; `promtool check metrics` is silent on `/metrics`.
//!   Every expression of the Grafana dashboard and of the alert rules runs on that
//!   Prometheus against the live agent's data.
//! - [`privileges`]: the agent runs as an unprivileged user with exactly CAP_BPF,
//!   CAP_NET_ADMIN and CAP_PERFMON (as the systemd unit runs it), and without them
//!   exits 2 naming what is missing.
//! - [`config`]: configuration mistakes are pointed at with FILE:LINE:COL and what is
//!   allowed. SIGHUP reloads the configuration without re-attaching (same bpf_link
//!   ids), keeps the old settings when the new file is broken, and reopens the
//!   `--json` file (logrotate) without losing or repeating a line.
//! - [`cli`]: shell completions and the man page.
//! - [`doctor`]: `pathwatch doctor` as root says the host can run the agent, and
//!   whether the drop program can (or what findings lose without it).
//!
//! Each live test builds two namespaces of its own (`pwt-ops<N>-a`, where the agent
//! runs, and `pwt-ops<N>-b`, its peer) joined by a veth pair, with addresses in
//! 198.18.4<N>.0/24 only. Every traffic loop is bounded; namespaces, daemons and the
//! agent are removed by name and PID when the test ends, also when it fails. The
//! harness is `pathwatch_tests`'; what is here is this file's network plan and the
//! Prometheus beside the agent.

mod cli;
mod config;
mod doctor;
mod privileges;
mod scrape;

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pathwatch::lab::netns::{Daemon, NetNs, wait_for};
use pathwatch_tests::{
    bin, dns_query,
    netns::{Pair, udp_send},
    proc::{self, Proc},
    prometheus::{self, Api, rules_file},
    tools::ensure_tool,
};

/// Test `n`'s namespaces `pwt-ops<N>-a`/`-b` joined by `pwo<N>a` (198.18.4N.1) –
/// `pwo<N>b` (198.18.4N.2).
fn pair(n: u8) -> Pair {
    let a = NetNs::new(&format!("pwt-ops{n}-a")).unwrap();
    let b = NetNs::new(&format!("pwt-ops{n}-b")).unwrap();
    Pair::new(a, b, &format!("pwo{n}a"), &format!("pwo{n}b"), [198, 18, 40 + n])
}

/// Seconds since the epoch, now.
fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Starts `program ARGS` in `ns` (behind `wrapper`, e.g. setpriv) and waits until it
/// says it is watching.
fn agent(ns: &NetNs, wrapper: &[&str], program: &Path, args: &[&str], dir: &Path) -> Proc {
    proc::agent_with(ns, wrapper, program, args, dir, "agent")
}

// ---------------------------------------------------------------------------------
// Prometheus in the agent's namespace.

const PROM_PORT: u16 = 9090;
const METRICS_PORT: u16 = 9464;

/// The API of the Prometheus in namespace `ns`.
fn prom_api(ns: &str) -> Api {
    Api::in_netns(ns, SocketAddr::from((Ipv4Addr::LOCALHOST, PROM_PORT)))
}

/// Prometheus inside `ns` on 127.0.0.1:9090, scraping job `pathwatch` at `target`
/// every second, with the deployed rules loaded; returns once it is ready.
fn prometheus(ns: &NetNs, dir: &Path, target: SocketAddr) -> Daemon {
    let program = ensure_tool("prometheus", "prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, prometheus::config(&rules_file(), target)).unwrap();
    let log = dir.join("prometheus.log");
    let mut d = ns
        .spawn(
            "prometheus",
            &program,
            &[
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
                &format!("--web.listen-address=127.0.0.1:{PROM_PORT}"),
                "--storage.tsdb.retention.time=1h",
            ],
            Some(&log),
        )
        .unwrap();
    let ready = wait_for(Duration::from_secs(60), || prom_api(ns.name()).ready() || !d.running());
    assert!(ready && d.running(), "prometheus is not ready:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    d
}

/// The test network and agent for the Prometheus tests: dnsmasq and the agent in `a`,
/// Prometheus beside them scraping the agent at 198.18.4N.1:9464.
struct Scraped {
    agent: Proc,
    prom: Daemon,
    _dnsmasq: Daemon,
    net: Pair,
    json: PathBuf,
}

/// DNS queries the Prometheus tests send (all answered: 4 NOERROR, 2 NXDOMAIN).
const QUERIES: usize = 6;

fn scraped(n: u8, dir: &Path) -> Scraped {
    let dnsmasq = ensure_tool("dnsmasq", "dnsmasq-base");
    let net = pair(n);
    let a_ip = net.a_ip.to_string();
    let dns = net
        .a
        .spawn(
            "dnsmasq",
            &dnsmasq,
            &[
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={a_ip}"),
                &format!("--address=/ok.test/198.18.{}.9", 40 + n),
                "--address=/nx.test/",
                "--user=root",
                "--pid-file=",
            ],
            Some(&dir.join("dnsmasq.log")),
        )
        .unwrap();
    let listening = wait_for(Duration::from_secs(10), || {
        net.a.exec("ss", &["-Hlun"]).is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{a_ip}:53")))
    });
    assert!(
        listening,
        "dnsmasq is not listening:\n{}",
        std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap_or_default()
    );
    let json = dir.join("agent.json");
    let target = SocketAddr::from((net.a_ip, METRICS_PORT));
    let agent = agent(
        &net.a,
        &[],
        &bin(),
        &["run", "-i", &net.a_if, "--metrics", &target.to_string(), "--json", json.to_str().unwrap()],
        dir,
    );
    let prom = prometheus(&net.a, dir, target);
    // One scrape before the traffic, so that rates see it arrive.
    assert!(
        wait_for(Duration::from_secs(15), || {
            prom_api(net.a.name()).query("up{job=\"pathwatch\"} == 1")["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        }),
        "prometheus never scraped the agent: {}",
        prom_api(net.a.name()).query("up")
    );

    // The traffic: QUERIES DNS queries (each answered), then three non-DNS datagrams.
    let payloads: Vec<Vec<u8>> =
        (0..QUERIES).map(|i| dns_query(0x4000 + i as u16, if i % 3 == 2 { "nx.test" } else { "ok.test" })).collect();
    let answers = udp_send(
        net.b.name(),
        net.b_ip,
        SocketAddr::from((net.a_ip, 53)),
        payloads,
        Some(Duration::from_secs(2)),
        Duration::ZERO,
    );
    assert_eq!(answers, QUERIES, "dnsmasq answered {answers} of {QUERIES} queries");
    udp_send(
        net.b.name(),
        net.b_ip,
        SocketAddr::from((net.a_ip, 9)),
        vec![b"not dns".to_vec(); 3],
        None,
        Duration::ZERO,
    );

    // Two scrapes after the traffic.
    let t0 = unix_now();
    let scraped_twice = wait_for(Duration::from_secs(15), || {
        let v = prom_api(net.a.name()).query("timestamp(up{job=\"pathwatch\"})");
        v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(|t| t > t0 + 1.05)
    });
    assert!(scraped_twice, "no two scrapes after the traffic");
    Scraped { agent, prom, _dnsmasq: dns, net, json }
}
