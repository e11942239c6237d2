//! Operating the agent ("Operate it"): what an operator relies on once it is deployed.
//!
//! - A real Prometheus scrapes `pathwatch run --metrics ADDR:PORT` every second while
//!   known traffic flows; its answers equal what was sent and what the agent's own
//!   summary says; `promtool check metrics` is silent on `/metrics`.
//! - Every expression of the Grafana dashboard and of the alert rules runs on that
//!   Prometheus against the live agent's data.
//! - The agent runs as an unprivileged user with exactly CAP_BPF, CAP_NET_ADMIN and
//!   CAP_PERFMON (as the systemd unit runs it), and without them exits 2 naming what
//!   is missing.
//! - Configuration mistakes are pointed at with FILE:LINE:COL and what is allowed.
//! - SIGHUP reloads the configuration without re-attaching (same bpf_link ids), keeps
//!   the old settings when the new file is broken, and reopens the `--json` file
//!   (logrotate) without losing or repeating a line.
//! - Shell completions and the man page.
//!
//! Each live test builds two namespaces of its own (`pwt-ops<N>-a`, where the agent
//! runs, and `pwt-ops<N>-b`, its peer) joined by a veth pair, with addresses in
//! 198.18.4<N>.0/24 only. Every traffic loop is bounded; namespaces, daemons and the
//! agent are removed by name and PID when the test ends, also when it fails.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use pathwatch::lab::netns::{Daemon, NetNs, veth, wait_for};
use pathwatch_tests::{TempDir, bin, dns_query, json_lines, pathwatch, privileged, samples, unbounded_labels};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// Namespaces, processes, sockets.

/// Two namespaces joined by a veth pair: `a` (the agent's side, `a_if`, 198.18.4N.1)
/// and `b` (the peer, `b_if`, 198.18.4N.2).
struct Pair {
    a: NetNs,
    b: NetNs,
    a_if: String,
    a_ip: Ipv4Addr,
    b_ip: Ipv4Addr,
}

fn pair(n: u8) -> Pair {
    let a = NetNs::new(&format!("pwt-ops{n}-a")).unwrap();
    let b = NetNs::new(&format!("pwt-ops{n}-b")).unwrap();
    let (a_if, b_if) = (format!("pwo{n}a"), format!("pwo{n}b"));
    veth(&a, &a_if, &b, &b_if).unwrap();
    let (a_ip, b_ip) = (Ipv4Addr::new(198, 18, 40 + n, 1), Ipv4Addr::new(198, 18, 40 + n, 2));
    a.ip(&["addr", "add", &format!("{a_ip}/24"), "dev", &a_if]).unwrap();
    b.ip(&["addr", "add", &format!("{b_ip}/24"), "dev", &b_if]).unwrap();
    Pair { a, b, a_if, a_ip, b_ip }
}

/// Runs `f` on a new thread inside network namespace `ns`: the sockets it opens live
/// there. The calling thread stays where it is.
fn spawn_in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        // SAFETY: setns(2) moves only this thread, into a namespace file we hold open.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    match spawn_in_netns(ns, f).join() {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e),
    }
}

/// `GET path` from `addr` inside `ns` over HTTP/1.0: (status, body).
fn http_get(ns: &str, addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let path = path.to_string();
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    })
}

/// Sends UDP datagrams from `from` (inside `ns`) to `to`, `gap` apart; with `reply`,
/// waits that long for one answer to each. Returns the number of answers.
fn udp_send(
    ns: &str,
    from: Ipv4Addr,
    to: SocketAddr,
    payloads: Vec<Vec<u8>>,
    reply: Option<Duration>,
    gap: Duration,
) -> usize {
    in_netns(ns, move || udp_send_here(from, to, &payloads, reply, gap))
}

fn udp_send_here(
    from: Ipv4Addr,
    to: SocketAddr,
    payloads: &[Vec<u8>],
    reply: Option<Duration>,
    gap: Duration,
) -> usize {
    let sock = UdpSocket::bind(SocketAddrV4::new(from, 0)).expect("bind UDP");
    let mut answers = 0;
    let mut buf = [0u8; 2048];
    for p in payloads {
        sock.send_to(p, to).expect("send UDP");
        if let Some(t) = reply {
            sock.set_read_timeout(Some(t)).unwrap();
            if sock.recv_from(&mut buf).is_ok() {
                answers += 1;
            }
        }
        std::thread::sleep(gap);
    }
    answers
}

fn unix_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// A process started in a namespace, stdout and stderr in files of their own, killed
/// by its PID when dropped.
struct Proc {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Proc {
    /// `wrapper... program args...` inside `ns`. `ip netns exec` and `setpriv` exec
    /// their command, so the PID is the program's own.
    fn spawn(ns: &NetNs, wrapper: &[&str], program: &Path, args: &[&str], dir: &Path, tag: &str) -> Proc {
        let (out, err) = (dir.join(format!("{tag}.out")), dir.join(format!("{tag}.err")));
        let mut c = match wrapper.split_first() {
            Some((w, rest)) => {
                let mut c = ns.cmd(w);
                c.args(rest).arg(program);
                c
            }
            None => ns.cmd(program.to_str().unwrap()),
        };
        c.args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        let child = c.spawn().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        Proc { child: Some(child), out, err }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own child's PID.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits up to `timeout` for the exit code (`Some(-1)`: killed by a signal);
    /// kills the process and returns None if it is still running then.
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self, sig: i32, timeout: Duration) -> Option<i32> {
        self.signal(sig);
        self.wait(timeout)
    }

    fn logs(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", self.stdout(), self.stderr())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `pathwatch ARGS` in `ns` (behind `wrapper`, e.g. setpriv) and waits until it
/// says it is watching.
fn agent(ns: &NetNs, wrapper: &[&str], program: &Path, args: &[&str], dir: &Path) -> Proc {
    let mut a = Proc::spawn(ns, wrapper, program, args, dir, "agent");
    let ready = wait_for(Duration::from_secs(20), || a.stderr().contains("pathwatch: watching") || !a.running());
    assert!(ready && a.running(), "the agent did not start:\n{}", a.logs());
    a
}

/// bpf links a process holds, from /proc/PID/fdinfo: "link_type link_id prog_id ifindex".
fn links_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).unwrap().flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        let field = |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        if let (Some(t), Some(id)) = (field("link_type:"), field("link_id:")) {
            out.push(format!(
                "{t} link_id {id} prog_id {} ifindex {}",
                field("prog_id:").unwrap_or_default(),
                field("ifindex:").unwrap_or_default()
            ));
        }
    }
    out.sort();
    out
}

/// The sum of the samples of metric `name` whose labels include every pair of `want`
/// (Prometheus text format; the agent's label values hold no commas or quotes).
fn metric(text: &str, name: &str, want: &[(&str, &str)]) -> u64 {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (n, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if n != name {
            continue;
        }
        let pairs: Vec<(&str, &str)> = labels
            .split(',')
            .filter(|p| !p.is_empty())
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k, v.trim_matches('"')))
            .collect();
        if want.iter().all(|w| pairs.contains(w)) {
            sum += value.parse::<f64>().expect("sample value");
        }
    }
    sum as u64
}

/// The path of `tool`, installing Debian `package` with apt-get when it is missing.
fn ensure_tool(tool: &str, package: &str) -> String {
    let find =
        || ["/usr/bin", "/usr/sbin", "/bin", "/sbin"].iter().map(|d| Path::new(d).join(tool)).find(|p| p.exists());
    if let Some(p) = find() {
        return p.display().to_string();
    }
    // One apt-get at a time (the tests may run in parallel threads).
    static APT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _apt = APT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = find() {
        return p.display().to_string();
    }
    let install = || {
        Command::new("timeout")
            .args(["900", "apt-get", "install", "-y", "-q", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let _ = Command::new("timeout")
            .args(["900", "apt-get", "update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(install(), "apt-get install {package} failed");
    }
    find().unwrap_or_else(|| panic!("installed {package} but {tool} is still missing")).display().to_string()
}

// ---------------------------------------------------------------------------------
// Prometheus in the agent's namespace.

const PROM_PORT: u16 = 9090;
const METRICS_PORT: u16 = 9464;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Prometheus inside `ns` on 127.0.0.1:9090, scraping job `pathwatch` at `target`
/// every second, with the deployed rules loaded; returns once it is ready.
fn prometheus(ns: &NetNs, dir: &Path, target: SocketAddr) -> Daemon {
    let prom = ensure_tool("prometheus", "prometheus");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: pathwatch\n    static_configs:\n      - targets: ['{target}']\n",
            repo().join("deploy/prometheus/pathwatch-rules.yml").display()
        ),
    )
    .unwrap();
    let log = dir.join("prometheus.log");
    let mut d = ns
        .spawn(
            "prometheus",
            &prom,
            &[
                &format!("--config.file={}", config.display()),
                &format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
                &format!("--web.listen-address=127.0.0.1:{PROM_PORT}"),
                "--storage.tsdb.retention.time=1h",
            ],
            Some(&log),
        )
        .unwrap();
    let ready = wait_for(Duration::from_secs(60), || {
        matches!(http_get(ns.name(), prom_addr(), "/-/ready"), Ok((200, _))) || !d.running()
    });
    assert!(ready && d.running(), "prometheus is not ready:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    d
}

fn prom_addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, PROM_PORT))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/api/v1/PATH` of the Prometheus in `ns`, parsed.
fn prom_api(ns: &str, path: &str) -> Value {
    let (status, body) =
        http_get(ns, prom_addr(), &format!("/api/v1/{path}")).unwrap_or_else(|e| panic!("GET /api/v1/{path}: {e}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /api/v1/{path}: HTTP {status}, not JSON ({e}): {body}"))
}

/// An instant query; the whole answer (status checked by the caller).
fn prom_query(ns: &str, expr: &str) -> Value {
    prom_api(ns, &format!("query?query={}", url_encode(expr)))
}

/// The single value of an instant query that must succeed with one sample.
fn prom_value(ns: &str, expr: &str) -> f64 {
    let v = prom_query(ns, expr);
    assert_eq!(v["status"], "success", "{expr}: {v}");
    let r = v["data"]["result"].as_array().unwrap_or_else(|| panic!("{expr}: {v}"));
    assert_eq!(r.len(), 1, "{expr}: expected one sample: {v}");
    r[0]["value"][1].as_str().unwrap().parse().unwrap()
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
        wait_for(Duration::from_secs(15), || prom_query(net.a.name(), "up{job=\"pathwatch\"} == 1")["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())),
        "prometheus never scraped the agent: {}",
        prom_query(net.a.name(), "up")
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
        let v = prom_query(net.a.name(), "timestamp(up{job=\"pathwatch\"})");
        v["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok()).is_some_and(|t| t > t0 + 1.05)
    });
    assert!(scraped_twice, "no two scrapes after the traffic");
    Scraped { agent, prom, _dnsmasq: dns, net, json }
}

// ---------------------------------------------------------------------------------
// 1. Prometheus scrapes the live agent.

#[test]
fn prometheus_scrapes_the_live_agent() {
    if !privileged("prometheus_scrapes_the_live_agent") {
        return;
    }
    let promtool = ensure_tool("promtool", "prometheus");
    let dir = TempDir::new("ops1");
    let mut s = scraped(1, &dir.0);
    let ns = s.net.a.name().to_string();
    let iface = s.net.a_if.clone();

    let dns_prom = prom_value(&ns, "sum(pathwatch_packets_total{class=\"dns\"})") as u64;
    let dns_iface = prom_value(&ns, &format!("sum(pathwatch_packets_total{{class=\"dns\",iface=\"{iface}\"}})")) as u64;
    let queries = prom_value(&ns, "pathwatch_events_total{kind=\"dns_query\"}") as u64;
    let responses = prom_value(&ns, "pathwatch_events_total{kind=\"dns_response\"}") as u64;
    let nxdomain = prom_value(&ns, "pathwatch_dns_responses_total{rcode=\"NXDOMAIN\"}") as u64;
    let up = prom_value(&ns, "up{job=\"pathwatch\"}");
    let dns_rate = prom_value(&ns, "sum(rate(pathwatch_packets_total{class=\"dns\"}[1m]))");
    eprintln!(
        "prometheus: dns packets {dns_prom} (on {iface}: {dns_iface}), dns_query {queries}, dns_response {responses}, NXDOMAIN {nxdomain}, up {up}, dns rate {dns_rate:.3}/s"
    );
    assert_eq!(up, 1.0, "up{{job=\"pathwatch\"}}");
    assert_eq!(dns_prom, 2 * QUERIES as u64, "DNS packets on {iface}: {QUERIES} queries in, {QUERIES} answers out");
    assert_eq!(dns_iface, dns_prom);
    assert_eq!(queries, QUERIES as u64, "pathwatch_events_total{{kind=\"dns_query\"}}");
    assert_eq!(responses, QUERIES as u64, "pathwatch_events_total{{kind=\"dns_response\"}}");
    assert_eq!(nxdomain, 2, "NXDOMAIN answers");
    assert!(dns_rate > 0.0, "rate() sees the DNS traffic arrive");

    // /metrics itself: what Prometheus stored, and clean for promtool.
    let metrics_addr = SocketAddr::from((s.net.a_ip, METRICS_PORT));
    let (status, text) = http_get(&ns, metrics_addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        metric(&text, "pathwatch_packets_total", &[("class", "dns")]),
        dns_prom,
        "/metrics and Prometheus disagree"
    );
    let mut check = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let check = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success() && said.is_empty(), "promtool check metrics ({}):\n{said}", check.status);
    // Labels carry bounded values only: none of the addresses or names that went by.
    let [_, _, net_octet, _] = s.net.a_ip.octets();
    let sent: Vec<String> = [
        s.net.a_ip.to_string(),
        s.net.b_ip.to_string(),
        Ipv4Addr::new(198, 18, net_octet, 9).to_string(),
        "ok.test".into(),
        "nx.test".into(),
    ]
    .into();
    let problems = unbounded_labels(&text, &sent);
    assert!(problems.is_empty(), "/metrics labels:\n{}", problems.join("\n"));
    assert!(samples(&text).len() > 50, "too few samples to say anything:\n{text}");
    // Lost events by source: ringbuf, queue (no userspace queue: always 0) and
    // undecodable records; none in this run.
    let lost: Vec<(String, f64)> = samples(&text)
        .into_iter()
        .filter(|x| x.name == "pathwatch_events_lost_total")
        .map(|x| (x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","), x.value))
        .collect();
    let want = ["source=ringbuf", "source=queue", "source=undecodable"].map(|l| (l.to_string(), 0.0));
    assert_eq!(lost, want, "pathwatch_events_lost_total");
    let help = text.lines().find(|l| l.starts_with("# HELP pathwatch_events_lost_total ")).expect("HELP");
    assert!(help.contains("queue = ") && help.contains("always 0") && help.contains("undecodable = "), "{help}");
    let (status, body) = http_get(&ns, metrics_addr, "/healthz").unwrap();
    assert_eq!((status, body.trim()), (200, "ok"), "/healthz");
    let (status, _) = http_get(&ns, metrics_addr, "/nothing-here").unwrap();
    assert_eq!(status, 404, "a path other than /metrics and /healthz");

    // The agent's own summary for the same interface.
    assert_eq!(s.agent.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", s.agent.logs());
    let lines = json_lines(&std::fs::read_to_string(&s.json).unwrap());
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let i = &summary["interfaces"][&iface];
    let dns_summary =
        i["ingress"]["packets"]["dns"].as_u64().unwrap() + i["egress"]["packets"]["dns"].as_u64().unwrap();
    assert_eq!(dns_summary, dns_prom, "summary vs Prometheus, DNS packets on {iface}");
    assert_eq!(summary["classes"]["dns"].as_u64(), Some(dns_prom));
    assert_eq!(summary["events"]["dns_query"].as_u64(), Some(queries));
    assert_eq!(summary["events"]["dns_response"].as_u64(), Some(responses));
    drop(s.prom);
}

// ---------------------------------------------------------------------------------
// 2. The dashboard's and the rules' expressions on the live agent's data.

fn exprs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                match (k.as_str(), x) {
                    ("expr", Value::String(s)) => out.push((at.to_string(), s.clone())),
                    _ => exprs(x, &format!("{at}.{k}"), out),
                }
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| exprs(x, &format!("{at}[{i}]"), out)),
        _ => {}
    }
}

fn substitute(expr: &str) -> String {
    let s = expr
        .replace("${instance}", ".*")
        .replace("$instance", ".*")
        .replace("${iface}", ".*")
        .replace("$iface", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    assert!(!s.contains('$'), "a Grafana variable the test does not know in: {expr}");
    s
}

#[test]
fn dashboard_and_rules_run_on_the_live_agent() {
    if !privileged("dashboard_and_rules_run_on_the_live_agent") {
        return;
    }
    let dir = TempDir::new("ops2");
    let s = scraped(2, &dir.0);
    let ns = s.net.a.name().to_string();

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(repo().join("deploy/grafana/pathwatch.json")).unwrap()).unwrap();
    let mut found = Vec::new();
    exprs(&dashboard, "$", &mut found);
    assert!(found.len() >= 10, "only {} expressions in the dashboard", found.len());
    let mut empty = Vec::new();
    for (at, expr) in &found {
        let q = substitute(expr);
        let v = prom_query(&ns, &q);
        assert_eq!(v["status"], "success", "{at}: the dashboard query\n    {q}\nfails on the live agent's data: {v}");
        let result = v["data"]["result"].as_array().cloned().unwrap_or_default();
        if result.is_empty() {
            empty.push(q.clone());
        }
        // The packets panel shows the DNS traffic that was sent.
        if q.starts_with("sum by (direction, class) (rate(pathwatch_packets_total") {
            let dns_in = result.iter().find(|r| r["metric"]["class"] == "dns" && r["metric"]["direction"] == "ingress");
            let rate: f64 = dns_in.and_then(|r| r["value"][1].as_str()).and_then(|x| x.parse().ok()).unwrap_or(0.0);
            assert!(rate > 0.0, "{at}: no DNS ingress rate on the packets panel: {v}");
        }
    }
    // Only the firing-alerts panel may be empty on a healthy agent.
    assert!(empty.iter().all(|q| q.starts_with("ALERTS")), "dashboard queries that find no live data: {empty:#?}");
    // The template variables (`label_values(SELECTOR, LABEL)`) find this agent and
    // its interface.
    for v in dashboard["templating"]["list"].as_array().unwrap().iter().filter(|v| v["type"] == "query") {
        let query = v["query"].as_str().or_else(|| v["query"]["query"].as_str()).expect("variable query");
        let inner =
            query.trim().strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).expect("label_values(...)");
        let (selector, label) = inner.rsplit_once(',').expect("label_values(SELECTOR, LABEL)");
        let (selector, label) = (substitute(selector.trim()), label.trim());
        let r = prom_query(&ns, &selector);
        let values: Vec<&str> =
            r["data"]["result"].as_array().unwrap().iter().filter_map(|x| x["metric"][label].as_str()).collect();
        assert!(!values.is_empty(), "variable {}: {selector} finds no {label}", v["name"]);
        if label == "iface" {
            assert!(values.contains(&s.net.a_if.as_str()), "variable iface: {values:?}");
        }
    }

    // The rules as Prometheus loaded them: every one evaluated healthy on live data.
    let mut rules = Vec::new();
    let evaluated = wait_for(Duration::from_secs(15), || {
        let v = prom_api(&ns, "rules");
        rules = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        !rules.is_empty() && rules.iter().all(|r| r["health"] != "unknown")
    });
    assert!(evaluated, "rules not evaluated: {rules:?}");
    for r in &rules {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["health"], "ok", "rule {name}: {}", r["lastError"]);
        let q = r["query"].as_str().unwrap();
        let v = prom_query(&ns, q);
        assert_eq!(v["status"], "success", "rule {name}: {q}: {v}");
    }
    // The recording rule for packets carries the live interface.
    let recorded = wait_for(Duration::from_secs(10), || {
        prom_query(
            &ns,
            &format!("iface_direction_class:pathwatch_packets:rate5m{{class=\"dns\",iface=\"{}\"}} > 0", s.net.a_if),
        )["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
    });
    assert!(recorded, "the recording rule never saw the DNS traffic");
    // A healthy agent fires nothing (the probe storm etc. need minutes; up == 1).
    let firing = prom_query(&ns, "ALERTS{alertname=~\"Pathwatch.*\",alertstate=\"firing\"}");
    assert_eq!(firing["data"]["result"].as_array().map(Vec::len), Some(0), "{firing}");
    eprintln!("{} dashboard expressions and {} rules ran on the live agent's data", found.len(), rules.len());
}

// ---------------------------------------------------------------------------------
// 3. Unprivileged, with exactly the three capabilities of the systemd unit.

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
    assert!(links.iter().any(|l| l.starts_with("xdp")) && links.iter().any(|l| l.starts_with("tcx")), "{links:?}");

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

// ---------------------------------------------------------------------------------
// 4. Configuration errors.

#[test]
fn config_errors_point_at_file_line_and_column() {
    let dir = TempDir::new("ops4");
    let cases = [
        (
            "unknown-key.toml",
            "[dns]\ntimeout_s = 5.0\ntimout = 3\n",
            "3:1",
            "unknown field `timout`, expected one of `ports`, `timeout_s`",
        ),
        ("wrong-type.toml", "[dtls]\ntimeout_s = \"ten\"\n", "2:13", "expected a positive number of seconds"),
        (
            "negative.toml",
            "[output]\nreport_interval_s = 10\n\n[dns]\ntimeout_s = -5\n",
            "5:13",
            "-5 is not allowed here: expected a positive number of seconds",
        ),
        (
            "cap-zero.toml",
            "[dns]\ntimeout_s = 5.0\n\n[pmtu]\nflows_cap = 0\n",
            "5:13",
            "0 is not allowed here: expected a capacity from 1 to 100000000",
        ),
    ];
    let pcap = dir.0.join("never-read.pcap");
    for (name, text, at, allowed) in cases {
        let file = dir.0.join(name);
        std::fs::write(&file, text).unwrap();
        let f = file.to_str().unwrap();
        let want = format!("{f}:{at}: ");
        for args in [
            vec!["run", "-i", "lo", "--config", f],
            vec!["replay", "--config", f, pcap.to_str().unwrap()],
            vec!["config", "check", f],
        ] {
            let (code, out, err) = pathwatch(&args);
            assert_eq!(code, 2, "pathwatch {args:?}: exit code\n{err}");
            assert!(err.contains(&want), "pathwatch {args:?}: stderr lacks {want:?}:\n{err}");
            assert!(err.contains(allowed), "pathwatch {args:?}: stderr does not say {allowed:?}:\n{err}");
            assert!(out.trim().is_empty(), "pathwatch {args:?}: stdout: {out}");
        }
        eprintln!("{}", pathwatch(&["config", "check", f]).2.trim());
    }
}

// ---------------------------------------------------------------------------------
// 5. SIGHUP reloads the configuration without re-attaching: the DNS ports (kernel),
//    a detector threshold, and the stats interval.

/// The test's configuration: `ports`, `storm_min_queries` and `report_interval_s`
/// vary; queries time out after 0.3 s.
fn hup_config(ports: &str, storm_min_queries: u32, report_interval_s: f64) -> String {
    format!(
        "[dns]\nports = [{ports}]\ntimeout_s = 0.3\nstorm_min_queries = {storm_min_queries}\n\n\
         [output]\nreport_interval_s = {report_interval_s}\n"
    )
}

#[test]
fn sighup_reloads_dns_ports_without_reattaching() {
    if !privileged("sighup_reloads_dns_ports_without_reattaching") {
        return;
    }
    let dir = TempDir::new("ops5");
    let net = pair(5);
    let config = dir.0.join("pathwatch.toml");
    // Stats every minute (none during the test), storms from 50 queries.
    std::fs::write(&config, hup_config("", 50, 60.0)).unwrap();
    let cfg = config.to_str().unwrap().to_string();
    let mut a = agent(
        &net.a,
        &[],
        &bin(),
        &["run", "-i", &net.a_if, "--metrics", &METRICS_PORT.to_string(), "--config", &cfg],
        &dir.0,
    );
    let ns = net.a.name().to_string();
    let metrics_at = SocketAddr::from((Ipv4Addr::LOCALHOST, METRICS_PORT));
    let count = |class: &str| {
        let (status, text) = http_get(&ns, metrics_at, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        metric(
            &text,
            "pathwatch_packets_total",
            &[("iface", net.a_if.as_str()), ("direction", "ingress"), ("class", class)],
        )
    };
    let scrape = |name: &str, labels: &[(&str, &str)]| {
        let (status, text) = http_get(&ns, metrics_at, "/metrics").expect("GET /metrics");
        assert_eq!(status, 200);
        metric(&text, name, labels)
    };
    let storms = || scrape("pathwatch_findings_total", &[("kind", "dns_probe_storm")]);
    let stats_lines = |a: &Proc| a.stdout().lines().filter(|l| l.starts_with("stats: ")).count();
    // Queries to port 53, where nobody listens: each fails, answered by ICMP port
    // unreachable or (past the kernel's ICMP rate limit) timing out after 0.3 s. They
    // are 0.2 s apart, so that three of them span more than the timeout, as a storm
    // must.
    let failing = |name: &str, n: u16| {
        let p: Vec<Vec<u8>> = (0..n).map(|i| dns_query(0x700 + i, name)).collect();
        let to = SocketAddr::from((net.a_ip, 53));
        udp_send(net.b.name(), net.b_ip, to, p, None, Duration::from_millis(200));
    };

    let to = SocketAddr::from((net.a_ip, 5353));
    let mut id = 0x500u16;
    let mut send = |n: usize| {
        let p: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                id += 1;
                dns_query(id, "hup.test")
            })
            .collect();
        udp_send(net.b.name(), net.b_ip, to, p, None, Duration::ZERO);
    };

    // Port 5353 is not DNS yet.
    send(3);
    assert!(
        wait_for(Duration::from_secs(3), || count("other") >= 3),
        "5353 traffic not counted as other: {}",
        count("other")
    );
    assert_eq!(count("dns"), 0, "5353 is not a DNS port yet");
    let links = links_of(a.pid());
    assert!(links.iter().any(|l| l.starts_with("xdp")) && links.iter().any(|l| l.starts_with("tcx")), "{links:?}");

    // Four failing queries for one name are no storm while 50 are needed.
    failing("quiet.test", 4);
    let failed = || {
        scrape("pathwatch_dns_timeouts_total", &[])
            + scrape("pathwatch_events_total", &[("kind", "icmp_port_unreachable")])
    };
    assert!(
        wait_for(Duration::from_secs(3), || failed() >= 4),
        "the queries never failed (timeouts + ICMP port unreachable): {}",
        failed()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(storms(), 0, "a storm below the threshold:\n{}", a.logs());
    assert_eq!(stats_lines(&a), 0, "a stats line before the 60 s interval:\n{}", a.logs());

    // Now it is, within a second of the SIGHUP; storms need 3 queries, and stats
    // lines come every 0.25 s.
    std::fs::write(&config, hup_config("5353", 3, 0.25)).unwrap();
    let stats_before = stats_lines(&a);
    let dns_before = count("dns");
    let t0 = Instant::now();
    a.signal(libc::SIGHUP);
    let mut took = None;
    for _ in 0..40 {
        send(1);
        if count("dns") > dns_before {
            took = Some(t0.elapsed());
            break;
        }
        if t0.elapsed() > Duration::from_secs(2) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let took = took.unwrap_or_else(|| panic!("5353 never counted as DNS after SIGHUP:\n{}", a.logs()));
    eprintln!("5353 classified as DNS {} ms after SIGHUP", took.as_millis());
    assert!(took < Duration::from_secs(1), "took {took:?}");
    assert!(
        wait_for(Duration::from_secs(2), || a.stderr().contains(&format!("notice: SIGHUP: reloaded {cfg}"))),
        "{}",
        a.logs()
    );
    assert_eq!(links_of(a.pid()), links, "the bpf links changed across SIGHUP");
    assert!(!a.stderr().contains("apply only at the next start"), "{}", a.logs());

    // The new stats interval: lines every 0.25 s from the reload on.
    assert!(
        wait_for(Duration::from_secs(3), || stats_lines(&a) >= stats_before + 4),
        "stats lines after SIGHUP set report_interval_s = 0.25: {} in {:?}\n{}",
        stats_lines(&a) - stats_before,
        t0.elapsed(),
        a.logs()
    );
    let (took, seen) = (t0.elapsed(), stats_lines(&a) - stats_before);
    eprintln!("{seen} stats lines in {} ms after SIGHUP (interval 250 ms)", took.as_millis());
    assert!(seen as f64 <= took.as_secs_f64() / 0.25 + 1.0, "{seen} stats lines in {took:?}: faster than the interval");

    // The new threshold: three failing queries for a new name are a storm now.
    failing("loud.test", 3);
    let named = |a: &Proc| a.stdout().lines().any(|l| l.contains("dns_probe_storm") && l.contains("loud.test"));
    assert!(
        wait_for(Duration::from_secs(3), || named(&a) && storms() >= 1),
        "no storm for loud.test with storm_min_queries = 3 ({} storms):\n{}",
        storms(),
        a.logs()
    );

    // A broken file: reported with line and column, old settings kept.
    std::fs::write(&config, "[dns]\nports = [5353]\ntimeout_s = \"soon\"\n").unwrap();
    a.signal(libc::SIGHUP);
    let want = format!("error: SIGHUP: {cfg}:3:13: ");
    assert!(wait_for(Duration::from_secs(3), || a.stderr().contains(&want)), "no {want:?} on stderr:\n{}", a.logs());
    assert!(a.stderr().contains("old settings kept"), "{}", a.logs());
    assert!(a.running(), "the agent stopped on a broken config:\n{}", a.logs());
    let before = count("dns");
    send(2);
    assert!(
        wait_for(Duration::from_secs(3), || count("dns") >= before + 2),
        "5353 no longer DNS after a broken reload: {}",
        count("dns")
    );
    assert_eq!(links_of(a.pid()), links, "the bpf links changed across the broken SIGHUP");
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
}

// ---------------------------------------------------------------------------------
// 6. `--json FILE` is reopened on SIGHUP (logrotate) without losing a line.

#[test]
fn json_file_reopens_on_sighup_without_losing_lines() {
    if !privileged("json_file_reopens_on_sighup_without_losing_lines") {
        return;
    }
    const INTERVAL: f64 = 0.5;
    const SENT: usize = 60;
    let dir = TempDir::new("ops6");
    let net = pair(6);
    let config = dir.0.join("pathwatch.toml");
    std::fs::write(&config, format!("[output]\nreport_interval_s = {INTERVAL}\n")).unwrap();
    let json = dir.0.join("findings.jsonl");
    let rotated = dir.0.join("findings.jsonl.1");
    let mut a = agent(
        &net.a,
        &[],
        &bin(),
        &["run", "-i", &net.a_if, "--config", config.to_str().unwrap(), "--json", json.to_str().unwrap()],
        &dir.0,
    );
    // Steady DNS queries, one every 50 ms for 3 s.
    let (from, to) = (net.b_ip, SocketAddr::from((net.a_ip, 53)));
    let traffic = spawn_in_netns(net.b.name(), move || {
        let p: Vec<Vec<u8>> = (0..SENT).map(|i| dns_query(0x600 + i as u16, "rotate.test")).collect();
        udp_send_here(from, to, &p, None, Duration::from_millis(50));
    });
    std::thread::sleep(Duration::from_millis(1600));
    std::fs::rename(&json, &rotated).unwrap();
    a.signal(libc::SIGHUP);
    assert!(wait_for(Duration::from_secs(3), || json.exists()), "the JSON file was not reopened:\n{}", a.logs());
    traffic.join().unwrap();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(a.stop(libc::SIGTERM, Duration::from_secs(15)), Some(0), "{}", a.logs());
    assert!(!a.stderr().contains("error"), "{}", a.logs());

    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = std::fs::read_to_string(&json).unwrap();
    assert!(old.ends_with('\n') && new.ends_with('\n'), "a file ends with a partial line");
    let (old, new) = (json_lines(&old), json_lines(&new));
    assert!(!old.is_empty() && !new.is_empty(), "old {} lines, new {}", old.len(), new.len());
    assert!(old.iter().all(|l| l["type"] != "summary"), "a summary in the rotated file");
    let summary = new.last().unwrap();
    assert_eq!(summary["type"], "summary", "the summary is the new file's last line");
    assert_eq!(new.iter().filter(|l| l["type"] == "summary").count(), 1);

    // The stats lines, across both files: periodic, none lost, none repeated.
    let stats: Vec<&Value> = old.iter().chain(&new).filter(|l| l["type"] == "stats").collect();
    let uptimes: Vec<f64> = stats.iter().map(|l| l["uptime_s"].as_f64().unwrap()).collect();
    let gaps: Vec<f64> = uptimes.windows(2).map(|w| w[1] - w[0]).collect();
    let in_old = old.iter().filter(|l| l["type"] == "stats").count();
    eprintln!("{} stats lines ({in_old} before the rotation), uptimes {uptimes:?}", stats.len());
    assert!(in_old >= 2 && stats.len() - in_old >= 2, "stats lines on both sides of the rotation");
    for (k, g) in gaps.iter().enumerate() {
        assert!(
            *g > 0.0 && *g < 1.5 * INTERVAL,
            "stats lines {k} and {} are {g:.3} s apart (interval {INTERVAL} s): lost or repeated around the rotation",
            k + 1
        );
    }
    // The human output (stdout, never rotated) printed one `stats:` line per JSON one.
    let human = a.stdout().lines().filter(|l| l.starts_with("stats: ")).count();
    assert_eq!(stats.len(), human, "JSON stats lines across both files vs stats lines on stdout");
    let duration = summary["duration_s"].as_f64().unwrap();
    let last = uptimes.last().unwrap();
    assert!(duration - last < 1.5 * INTERVAL, "stats stopped {:.3} s before the end", duration - last);
    // Cumulative counters never go back; every query is in the summary.
    let queries: Vec<u64> = stats.iter().map(|l| l["events"]["dns_query"].as_u64().unwrap()).collect();
    assert!(queries.windows(2).all(|w| w[0] <= w[1]), "dns_query went back: {queries:?}");
    assert_eq!(summary["events"]["dns_query"].as_u64(), Some(SENT as u64), "{summary}");
    assert_eq!(summary["interfaces"][&net.a_if]["ingress"]["packets"]["dns"].as_u64(), Some(SENT as u64));
}

// ---------------------------------------------------------------------------------
// 7. Shell completions and the man page.

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = pathwatch(&["completions", shell]);
        assert_eq!(code, 0, "completions {shell}: {err}");
        assert!(!out.trim().is_empty(), "completions {shell}: empty");
        assert!(out.contains("pathwatch"), "completions {shell} never name pathwatch");
        if shell == "bash" {
            assert!(out.contains("complete ") && out.contains("_pathwatch"), "bash completion registers nothing");
        }
    }
    assert_eq!(pathwatch(&["completions", "nosuchshell"]).0, 2);

    let (code, man, err) = pathwatch(&["man"]);
    assert_eq!(code, 0, "man: {err}");
    // clap_mangen puts two string definitions (`.ie`/`.el .ds Aq`) before `.TH`.
    let th = man.lines().position(|l| l.starts_with(".TH pathwatch 1")).unwrap_or_else(|| panic!("no .TH:\n{man}"));
    assert!(
        th <= 2 && man.lines().take(th).all(|l| l.starts_with(".ie") || l.starts_with(".el")),
        "before .TH:\n{man}"
    );
    for section in [".SH NAME", ".SH SYNOPSIS", ".SH SUBCOMMANDS"] {
        assert!(man.contains(section), "the man page has no {section}");
    }

    // Installed the documented way, into a scratch prefix.
    let dir = TempDir::new("ops7");
    let man1 = dir.0.join("share/man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let page = man1.join("pathwatch.1");
    let sh = format!("'{}' man > '{}'", bin().display(), page.display());
    let st = Command::new("sh").args(["-c", &sh]).status().unwrap();
    assert!(st.success(), "{sh}");
    assert_eq!(std::fs::read_to_string(&page).unwrap(), man);
    if ["/usr/bin/man", "/bin/man"].iter().any(|p| Path::new(p).exists()) {
        let manpath = dir.0.join("share/man").display().to_string();
        for args in [vec!["-l", page.to_str().unwrap()], vec!["-M", manpath.as_str(), "pathwatch"]] {
            let out = Command::new("timeout")
                .arg("60")
                .arg("man")
                .args(&args)
                .env("MANPAGER", "cat")
                .env("PAGER", "cat")
                .env("MANWIDTH", "80")
                .env("LC_ALL", "C")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "man {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            assert!(
                text.contains("NAME") && text.contains("SYNOPSIS") && text.contains("pathwatch"),
                "man {args:?}:\n{text}"
            );
        }
    }
}
